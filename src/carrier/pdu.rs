//! Building submit_sm PDUs for a message: addresses with the right TON/NPI,
//! data_coding, UDHI, registered_delivery and a relative validity period.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use rusmpp::pdus::SubmitSm;
use rusmpp::types::{AnyOctetString, COctetString, EmptyOrFullCOctetString, OctetString};
use rusmpp::values::{DataCoding, EsmClass, MessagePayload, Npi, RegisteredDelivery, Ton};

use rusmpp::tlvs::MessageSubmissionRequestTlvValue as Tlv;

use super::profile::{
    CarrierProfile, DefaultAlphabet, Gsm7Packing, LongMessages, fill_bits, pack_septets,
};
use crate::compliance::rules::SenderType;
use crate::encoding::{self, EncodedSegment, Encoding};
use crate::message::Message;

/// Why a message could not be turned into PDUs (a permanent failure).
#[derive(Debug, thiserror::Error)]
pub enum PduError {
    /// The text could not be encoded.
    #[error("cannot encode text: {0}")]
    Encode(String),
    /// An address or field does not fit SMPP limits.
    #[error("invalid SMPP field {field}: {reason}")]
    Field {
        /// Field name.
        field: &'static str,
        /// What was wrong.
        reason: String,
    },
}

/// An SMPP address with its type of number and numbering plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    /// Type of number.
    pub ton: Ton,
    /// Numbering plan indicator.
    pub npi: Npi,
    /// Digits (no `+`) or alphanumeric text.
    pub addr: String,
}

/// TON/NPI chosen from the address's shape (the same classification the
/// country rules use): alphanumeric 5/0, international 1/1, short code 3/0.
pub fn address_for(addr: &str) -> Address {
    let digits = addr.strip_prefix('+').unwrap_or(addr);
    match SenderType::of(addr) {
        SenderType::Alphanumeric => Address {
            ton: Ton::Alphanumeric,
            npi: Npi::Unknown,
            addr: addr.to_owned(),
        },
        SenderType::Numeric => Address {
            ton: Ton::International,
            npi: Npi::Isdn,
            addr: digits.to_owned(),
        },
        SenderType::Shortcode => Address {
            ton: Ton::NetworkSpecific,
            npi: Npi::Unknown,
            addr: digits.to_owned(),
        },
    }
}

/// SMPP relative time `YYMMDDhhmmss000R` for the time left until `until`
/// (at least one second). Carriers drop the message when it runs out.
pub fn relative_validity(now: DateTime<Utc>, until: DateTime<Utc>) -> String {
    let secs = (until - now).num_seconds().max(1);
    let days = (secs / 86_400).min(99);
    let rem = secs % 86_400;
    format!(
        "0000{:02}{:02}{:02}{:02}000R",
        days,
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// One submit_sm and the segments of its message it carries: one segment,
/// or all of them when the carrier takes long text in `message_payload`.
#[derive(Debug)]
pub struct PartPdu {
    /// Segment indexes (0-based) the PDU carries.
    pub segments: Vec<u32>,
    /// The PDU.
    pub pdu: SubmitSm,
}

/// The submit_sm PDUs for the given segments of a message for an SMSC that
/// follows the book (the default [`CarrierProfile`]).
pub fn submit_sms(
    m: &Message,
    segments: &[u32],
    now: DateTime<Utc>,
) -> Result<Vec<PartPdu>, PduError> {
    submit_sms_for(m, segments, now, &CarrierProfile::default())
}

/// The submit_sm PDUs for the given segments of a message, written in the
/// carrier's dialect: GSM text as packed septets or Latin-1 octets when its
/// profile says so, parts marked by SAR TLVs instead of a UDH, or the whole
/// text in one `message_payload` PDU; TON/NPI forced.
/// Segmentation never changes (the segment count was promised at admission):
/// a carrier whose data_coding 0 is Latin-1 converts to GSM 7-bit for the air
/// interface, so its parts hold as many characters.
pub fn submit_sms_for(
    m: &Message,
    segments: &[u32],
    now: DateTime<Utc>,
    profile: &CarrierProfile,
) -> Result<Vec<PartPdu>, PduError> {
    let plan = encoding::plan(&m.text);
    let encoded: Vec<EncodedSegment> = encoding::encode(&m.text, plan, m.concat_ref)
        .map_err(|e| PduError::Encode(e.to_string()))?;
    let source = forced(address_for(&m.from), profile.source_ton, profile.source_npi);
    let dest = forced(address_for(&m.to), profile.dest_ton, profile.dest_npi);
    let template = SubmitSm::builder()
        .source_addr_ton(source.ton)
        .source_addr_npi(source.npi)
        .source_addr(COctetString::from_str(&source.addr).map_err(field("source_addr"))?)
        .dest_addr_ton(dest.ton)
        .dest_addr_npi(dest.npi)
        .destination_addr(COctetString::from_str(&dest.addr).map_err(field("destination_addr"))?)
        .validity_period(
            EmptyOrFullCOctetString::from_str(&relative_validity(now, m.expires_at))
                .map_err(field("validity_period"))?,
        )
        // Final receipt on success or failure (no intermediate notifications).
        .registered_delivery(RegisteredDelivery::from(0x01))
        .data_coding(match m.encoding {
            Encoding::Gsm7 => DataCoding::McSpecific,
            Encoding::Ucs2 => DataCoding::Ucs2,
        })
        // Not EsmClass::default(): in rusmpp 0.4.0 that sets an ANSI-41 bit (0x08).
        .esm_class(EsmClass::from(0x00))
        .build();
    let part = |i: u32| {
        encoded.get(i as usize).ok_or_else(|| PduError::Field {
            field: "segment",
            reason: format!("segment {i} out of range"),
        })
    };
    // Text (no UDH) in the carrier's alphabet, packed after `udh_len` octets.
    let in_alphabet = |body: &[u8], udh_len: usize| match m.encoding {
        Encoding::Gsm7 => gsm_payload(body, udh_len, profile),
        Encoding::Ucs2 => body.to_vec(),
    };
    if profile.long_messages == LongMessages::Payload && encoded.len() > 1 {
        // The parts' texts joined (before any packing): segmentation never
        // splits an escape sequence or a surrogate pair.
        let mut whole = Vec::new();
        for &i in segments {
            whole.extend_from_slice(without_udh(part(i)?));
        }
        let mut pdu = template;
        pdu.push_tlv(Tlv::MessagePayload(MessagePayload::new(
            AnyOctetString::from_vec(in_alphabet(&whole, 0)),
        )));
        return Ok(vec![PartPdu {
            segments: segments.to_vec(),
            pdu,
        }]);
    }
    let total = encoded.len();
    segments
        .iter()
        .map(|&i| {
            let seg = part(i)?;
            let sar = seg.udhi && profile.long_messages == LongMessages::Sar;
            let udh = if seg.udhi && !sar {
                &seg.short_message[..encoding::CONCAT_UDH_LEN]
            } else {
                &[][..]
            };
            let mut bytes = udh.to_vec();
            bytes.extend_from_slice(&in_alphabet(without_udh(seg), udh.len()));
            let mut pdu = template.clone();
            pdu.set_short_message(
                OctetString::<0, 255>::from_vec(bytes).map_err(field("short_message"))?,
            );
            if !udh.is_empty() {
                pdu.esm_class = EsmClass::from(0x40);
            }
            if sar {
                // At most 255 parts (encoding refuses more), so the casts cannot truncate.
                pdu.push_tlv(Tlv::SarMsgRefNum(u16::from(m.concat_ref)));
                pdu.push_tlv(Tlv::SarTotalSegments(total as u8));
                pdu.push_tlv(Tlv::SarSegmentSeqnum(i as u8 + 1));
            }
            Ok(PartPdu {
                segments: vec![i],
                pdu,
            })
        })
        .collect()
}

/// A part's text octets after its concatenation UDH (if it has one).
fn without_udh(seg: &EncodedSegment) -> &[u8] {
    let udh = if seg.udhi {
        encoding::CONCAT_UDH_LEN
    } else {
        0
    };
    &seg.short_message[udh..]
}

/// An address with the profile's forced TON/NPI.
fn forced(mut a: Address, ton: Option<u8>, npi: Option<u8>) -> Address {
    if let Some(ton) = ton {
        a.ton = Ton::from(ton);
    }
    if let Some(npi) = npi {
        a.npi = Npi::from(npi);
    }
    a
}

/// GSM text (unpacked septets) as the carrier takes data_coding 0: as it
/// is, packed after a UDH of `udh_len` octets, or as Latin-1 octets (a
/// character Latin-1 lacks becomes `?`).
fn gsm_payload(septets: &[u8], udh_len: usize, profile: &CarrierProfile) -> Vec<u8> {
    match (profile.data_coding_0, profile.gsm7) {
        (DefaultAlphabet::Latin1, _) => encoding::decode(0x00, septets)
            .chars()
            .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
            .collect(),
        (DefaultAlphabet::Gsm, Gsm7Packing::Packed) => pack_septets(septets, fill_bits(udh_len)),
        (DefaultAlphabet::Gsm, Gsm7Packing::Unpacked) => septets.to_vec(),
    }
}

/// Maps a field-conversion error to [`PduError::Field`].
fn field<E: std::fmt::Display>(field: &'static str) -> impl Fn(E) -> PduError {
    move |e| PduError::Field {
        field,
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_get_ton_npi_from_their_shape() {
        assert_eq!(address_for("ACME").ton, Ton::Alphanumeric);
        let intl = address_for("+447400123456");
        assert_eq!(
            (intl.ton, intl.npi, intl.addr.as_str()),
            (Ton::International, Npi::Isdn, "447400123456")
        );
        assert_eq!(address_for("12345").ton, Ton::NetworkSpecific);
        assert_eq!(address_for("447400123456").ton, Ton::International);
    }

    #[test]
    fn relative_validity_is_smpp_relative_time() {
        let now = Utc::now();
        assert_eq!(
            relative_validity(now, now + chrono::Duration::seconds(300)),
            "000000000500000R"
        );
        assert_eq!(
            relative_validity(now, now + chrono::Duration::seconds(86_400 + 3_661)),
            "000001010101000R"
        );
        assert_eq!(relative_validity(now, now), "000000000001000R");
    }

    use crate::message::{Kind, sample};

    /// A message whose text plans to `segments` GSM parts.
    fn message(text: &str) -> Message {
        sample(text, Kind::Transactional, encoding::plan(text).segments)
    }

    fn long() -> Message {
        message(&"Your parcel is on its way. ".repeat(19))
    }

    fn sar_tlvs(pdu: &SubmitSm) -> Vec<(u16, u8, u8)> {
        use rusmpp::tlvs::TlvValue;
        let (mut r, mut t, mut s) = (None, None, None);
        for tlv in pdu.tlvs() {
            match tlv.value() {
                Some(TlvValue::SarMsgRefNum(v)) => r = Some(*v),
                Some(TlvValue::SarTotalSegments(v)) => t = Some(*v),
                Some(TlvValue::SarSegmentSeqnum(v)) => s = Some(*v),
                _ => {}
            }
        }
        r.into_iter().map(|r| (r, t.unwrap(), s.unwrap())).collect()
    }

    #[test]
    fn the_default_profile_sends_unpacked_gsm_with_a_udh() {
        let m = long();
        let pdus = submit_sms(&m, &[0, 1, 2, 3], Utc::now()).unwrap();
        assert_eq!(pdus.len(), 4);
        let first = &pdus[0].pdu;
        assert_eq!(u8::from(first.esm_class), 0x40);
        assert_eq!(&first.short_message()[..6], [0x05, 0x00, 0x03, 1, 4, 1]);
        assert_eq!(first.short_message().len(), 6 + 153);
        assert!(sar_tlvs(first).is_empty());
        assert_eq!(u8::from(first.data_coding), 0x00);
    }

    #[test]
    fn sar_profile_marks_parts_with_tlvs_and_no_udh() {
        let profile = CarrierProfile {
            long_messages: LongMessages::Sar,
            ..CarrierProfile::default()
        };
        let m = long();
        let pdus = submit_sms_for(&m, &[0, 3], Utc::now(), &profile).unwrap();
        let (i, last) = (&pdus[1].segments, &pdus[1].pdu);
        assert_eq!(i, &[3]);
        assert_eq!(u8::from(last.esm_class), 0x00);
        assert_eq!(sar_tlvs(last), [(u16::from(m.concat_ref), 4, 4)]);
        assert_eq!(last.short_message().len(), 513 - 3 * 153);
        // A single-part message has nothing to mark.
        let short = message("Hello");
        let single = &submit_sms_for(&short, &[0], Utc::now(), &profile).unwrap()[0].pdu;
        assert!(sar_tlvs(single).is_empty());
        assert_eq!(single.short_message().as_ref(), b"Hello");
    }

    fn message_payload(pdu: &SubmitSm) -> Option<Vec<u8>> {
        use rusmpp::tlvs::TlvValue;
        pdu.tlvs().iter().find_map(|t| match t.value() {
            Some(TlvValue::MessagePayload(p)) => Some(p.value.as_ref().to_vec()),
            _ => None,
        })
    }

    #[test]
    fn payload_profile_sends_the_whole_text_in_one_pdu() {
        let profile = CarrierProfile {
            long_messages: LongMessages::Payload,
            ..CarrierProfile::default()
        };
        let m = long();
        let pdus = submit_sms_for(&m, &[0, 1, 2, 3], Utc::now(), &profile).unwrap();
        assert_eq!(pdus.len(), 1, "one PDU for four segments");
        assert_eq!(pdus[0].segments, [0, 1, 2, 3]);
        let pdu = &pdus[0].pdu;
        assert!(pdu.short_message().is_empty());
        assert_eq!(u8::from(pdu.esm_class), 0x00, "no UDH");
        let body = message_payload(pdu).expect("message_payload TLV");
        assert_eq!(profile.decode(0x00, &body, 0), m.text);
        // UCS-2 text (with a surrogate pair) joins the same way.
        let text = "Ваш код 😀 ".repeat(12);
        let plan = encoding::plan(&text);
        assert_eq!(plan.encoding, Encoding::Ucs2);
        let mut ucs = sample(&text, Kind::Transactional, plan.segments);
        ucs.encoding = Encoding::Ucs2;
        assert!(ucs.segments.len() > 1);
        let all: Vec<u32> = (0..ucs.segments.len() as u32).collect();
        let pdus = submit_sms_for(&ucs, &all, Utc::now(), &profile).unwrap();
        assert_eq!(pdus.len(), 1);
        let body = message_payload(&pdus[0].pdu).expect("message_payload TLV");
        assert_eq!(encoding::decode(0x08, &body), text);
        // A text that fits one part goes in short_message as usual.
        let short = &submit_sms_for(&message("Hello"), &[0], Utc::now(), &profile).unwrap()[0];
        assert_eq!(short.pdu.short_message().as_ref(), b"Hello");
        assert!(message_payload(&short.pdu).is_none());
    }

    #[test]
    fn packed_profile_packs_septets_after_the_udh() {
        let profile = CarrierProfile {
            gsm7: Gsm7Packing::Packed,
            ..CarrierProfile::default()
        };
        let one = message(&"a".repeat(160));
        let pdu = &submit_sms_for(&one, &[0], Utc::now(), &profile).unwrap()[0].pdu;
        assert_eq!(pdu.short_message().len(), 140);
        let m = long();
        let part = &submit_sms_for(&m, &[0], Utc::now(), &profile).unwrap()[0].pdu;
        assert_eq!(part.short_message().len(), 140);
        assert_eq!(
            profile.decode(0x00, &part.short_message()[6..], 6),
            m.text.chars().take(153).collect::<String>()
        );
    }

    #[test]
    fn latin1_profile_writes_gsm_text_as_latin1_octets() {
        let profile = CarrierProfile {
            data_coding_0: DefaultAlphabet::Latin1,
            ..CarrierProfile::default()
        };
        let m = message("Café 5€ {ok} Δ");
        let pdu = &submit_sms_for(&m, &[0], Utc::now(), &profile).unwrap()[0].pdu;
        assert_eq!(pdu.short_message().as_ref(), b"Caf\xe9 5? {ok} ?");
        assert_eq!(u8::from(pdu.data_coding), 0x00);
    }

    #[test]
    fn forced_ton_npi_win_over_the_shape() {
        let profile = CarrierProfile {
            source_ton: Some(1),
            source_npi: Some(1),
            dest_ton: Some(0),
            dest_npi: Some(0),
            ..CarrierProfile::default()
        };
        let pdu = &submit_sms_for(&message("Hi"), &[0], Utc::now(), &profile).unwrap()[0].pdu;
        assert_eq!(
            (pdu.source_addr_ton, pdu.source_addr_npi),
            (Ton::International, Npi::Isdn)
        );
        assert_eq!(
            (pdu.dest_addr_ton, pdu.dest_addr_npi),
            (Ton::Unknown, Npi::Unknown)
        );
        // Without a profile the sender is alphanumeric.
        let plain = &submit_sms(&message("Hi"), &[0], Utc::now()).unwrap()[0].pdu;
        assert_eq!(plain.source_addr_ton, Ton::Alphanumeric);
    }
}
