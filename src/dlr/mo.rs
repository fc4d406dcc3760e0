//! Inbound (MO) messages: decoding a deliver_sm's text the way its carrier
//! means it, and reassembling concatenated messages (UDH IEI 0x00/0x08 or
//! sar_* TLVs) before keyword handling sees them.
//!
//! Parts wait in memory, keyed by carrier, sender, recipient, reference and
//! part count, in any order and on any bind. A part is acknowledged as soon as
//! it is held, so a restart loses the parts of a message still incomplete; a
//! message whose parts do not all arrive within the carrier's
//! `mo_reassembly_s` is handed on with the parts that did, in order.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rusmpp::pdus::DeliverSm;
use rusmpp::tlvs::TlvValue;
use tokio::time::Instant;

use super::MoMessage;
use crate::carrier::profile::CarrierProfile;
use crate::encoding;

/// Most concatenated messages waiting for parts at once; beyond it the
/// oldest is handed on incomplete.
const MAX_PENDING: usize = 10_000;

/// esm_class bit for "short_message starts with a UDH".
const UDHI: u8 = 0x40;

/// Where one part belongs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PartOf {
    /// Concatenation reference.
    pub reference: u16,
    /// Parts in the message.
    pub total: u8,
    /// This part, 1-based.
    pub seq: u8,
}

/// An MO deliver_sm, read: addresses, concatenation, and the text as
/// decodable units (see [`CarrierProfile::units`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MoPart {
    pub from: String,
    pub to: String,
    pub part_of: Option<PartOf>,
    pub data_coding: u8,
    pub units: Vec<u8>,
}

impl MoPart {
    /// Reads an MO deliver_sm with the carrier's profile.
    pub(crate) fn read(d: &DeliverSm, profile: &CarrierProfile) -> Self {
        let mut body: &[u8] = d.short_message();
        let (mut reference, mut total, mut seq) = (None, None, None);
        for tlv in d.tlvs() {
            match tlv.value() {
                Some(TlvValue::MessagePayload(p)) if body.is_empty() => body = p.value.as_ref(),
                Some(TlvValue::SarMsgRefNum(r)) => reference = Some(*r),
                Some(TlvValue::SarTotalSegments(t)) => total = Some(*t),
                Some(TlvValue::SarSegmentSeqnum(s)) => seq = Some(*s),
                _ => {}
            }
        }
        let mut part_of = match (reference, total, seq) {
            (Some(reference), Some(total), Some(seq)) => Some(PartOf {
                reference,
                total,
                seq,
            }),
            _ => None,
        };
        let mut udh_len = 0;
        if u8::from(d.esm_class) & UDHI != 0
            && let Some((udh, payload, concat)) = encoding::split_udh(body)
        {
            udh_len = udh.len();
            body = payload;
            if let Some(c) = concat {
                part_of = Some(PartOf {
                    reference: c.reference,
                    total: c.total,
                    seq: c.seq,
                });
            }
        }
        let part_of = part_of.filter(|p| p.total > 1 && p.seq >= 1 && p.seq <= p.total);
        let (data_coding, units) = profile.units(u8::from(d.data_coding), body, udh_len);
        Self {
            from: d.source_addr.to_string(),
            to: d.destination_addr.to_string(),
            part_of,
            data_coding,
            units: units.into_owned(),
        }
    }

    /// The text of a message that came in one part.
    pub(crate) fn into_message(self) -> MoMessage {
        MoMessage {
            text: encoding::decode(self.data_coding, &self.units),
            from: self.from,
            to: self.to,
        }
    }
}

/// Identifies one concatenated message.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    carrier: Arc<str>,
    from: String,
    to: String,
    reference: u16,
    total: u8,
}

/// A concatenated message waiting for parts.
#[derive(Debug)]
struct Pending {
    parts: BTreeMap<u8, (u8, Vec<u8>)>,
    deadline: Instant,
}

/// Concatenated MO messages being put together.
#[derive(Debug, Default)]
pub(crate) struct Reassembler {
    pending: HashMap<Key, Pending>,
    /// Messages pushed out early to make room, handed on with the expired ones.
    overflow: Vec<(Arc<str>, MoMessage)>,
}

impl Reassembler {
    /// Adds a part of a concatenated message (`part.part_of` must be set);
    /// returns the message (with its carrier) once every part is in. A part
    /// that arrives twice replaces the first copy.
    pub(crate) fn add(
        &mut self,
        carrier: &Arc<str>,
        part: MoPart,
        wait: Duration,
        now: Instant,
    ) -> Option<(Arc<str>, MoMessage)> {
        let of = part.part_of?;
        let key = Key {
            carrier: carrier.clone(),
            from: part.from,
            to: part.to,
            reference: of.reference,
            total: of.total,
        };
        if !self.pending.contains_key(&key) && self.pending.len() >= MAX_PENDING {
            // Make room: the message waiting longest goes on as it is.
            if let Some(oldest) = self
                .pending
                .iter()
                .min_by_key(|(_, p)| p.deadline)
                .map(|(k, _)| k.clone())
            {
                tracing::warn!(carrier = %oldest.carrier, "too many incomplete inbound messages; handing the oldest on incomplete");
                if let Some(pending) = self.pending.remove(&oldest) {
                    self.overflow.push(assemble(oldest, pending));
                }
            }
        }
        let entry = self.pending.entry(key.clone()).or_insert_with(|| Pending {
            parts: BTreeMap::new(),
            deadline: now + wait,
        });
        entry.parts.insert(of.seq, (part.data_coding, part.units));
        if entry.parts.len() < usize::from(of.total) {
            return None;
        }
        let pending = self.pending.remove(&key)?;
        Some(assemble(key, pending))
    }

    /// Messages whose wait ran out, with the parts that arrived.
    pub(crate) fn expired(&mut self, now: Instant) -> Vec<(Arc<str>, MoMessage)> {
        let due: Vec<Key> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = std::mem::take(&mut self.overflow);
        for key in due {
            if let Some(p) = self.pending.remove(&key) {
                tracing::warn!(carrier = %key.carrier, from = %crate::logging::mask(&key.from), parts = p.parts.len(), total = key.total,
                    "inbound message incomplete after the reassembly wait; handing on the parts that arrived");
                out.push(assemble(key, p));
            }
        }
        out
    }

    /// Every message still waiting, as it is (shutdown).
    pub(crate) fn drain(&mut self) -> Vec<(Arc<str>, MoMessage)> {
        let mut out = std::mem::take(&mut self.overflow);
        out.extend(self.pending.drain().map(|(k, p)| assemble(k, p)));
        out
    }

    /// When the next wait runs out.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        if !self.overflow.is_empty() {
            return Some(Instant::now());
        }
        self.pending.values().map(|p| p.deadline).min()
    }
}

/// Joins the parts in order. Parts of one alphabet are joined before
/// decoding, so a UCS-2 surrogate pair or a GSM escape split across two
/// parts survives.
fn assemble(key: Key, pending: Pending) -> (Arc<str>, MoMessage) {
    let mut parts = pending.parts.into_values();
    let text = match parts.next() {
        None => String::new(),
        Some((first_dc, first)) => {
            let rest: Vec<(u8, Vec<u8>)> = parts.collect();
            if rest.iter().all(|(dc, _)| *dc == first_dc) {
                let mut units = first;
                rest.into_iter().for_each(|(_, u)| units.extend(u));
                encoding::decode(first_dc, &units)
            } else {
                std::iter::once((first_dc, first))
                    .chain(rest)
                    .map(|(dc, u)| encoding::decode(dc, &u))
                    .collect()
            }
        }
    };
    (
        key.carrier,
        MoMessage {
            from: key.from,
            to: key.to,
            text,
        },
    )
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use rusmpp::tlvs::MessageDeliveryRequestTlvValue as Tlv;
    use rusmpp::types::{COctetString, OctetString};
    use rusmpp::values::{DataCoding, EsmClass};

    use super::*;
    use crate::carrier::profile::{Gsm7Packing, fill_bits, pack_septets};

    fn ucs2(s: &str) -> Vec<u8> {
        s.encode_utf16().flat_map(u16::to_be_bytes).collect()
    }

    fn udh_part(reference: u8, total: u8, seq: u8, dc: u8, payload: &[u8]) -> DeliverSm {
        let mut sm = vec![0x05, 0x00, 0x03, reference, total, seq];
        sm.extend_from_slice(payload);
        DeliverSm::builder()
            .source_addr(COctetString::from_str("447400777888").unwrap())
            .destination_addr(COctetString::from_str("ACME").unwrap())
            .esm_class(EsmClass::from(0x40))
            .data_coding(DataCoding::from(dc))
            .short_message(OctetString::from_vec(sm).unwrap())
            .build()
    }

    fn add_all(
        r: &mut Reassembler,
        profile: &CarrierProfile,
        pdus: &[DeliverSm],
    ) -> Vec<MoMessage> {
        let carrier: Arc<str> = Arc::from("c");
        let now = Instant::now();
        pdus.iter()
            .filter_map(|d| {
                r.add(
                    &carrier,
                    MoPart::read(d, profile),
                    Duration::from_secs(60),
                    now,
                )
            })
            .map(|(_, m)| m)
            .collect()
    }

    #[tokio::test]
    async fn ucs2_parts_out_of_order_with_a_pair_split_across_parts() {
        let text = "Привет, это длинное сообщение 😀 из трёх частей";
        let bytes = ucs2(text);
        // Cut inside the surrogate pair of the emoji (an odd unit boundary).
        let emoji_at = ucs2("Привет, это длинное сообщение ").len();
        let cuts = [0, emoji_at + 2, emoji_at + 20, bytes.len()];
        let parts: Vec<DeliverSm> = (0..3)
            .map(|i| udh_part(7, 3, i as u8 + 1, 0x08, &bytes[cuts[i]..cuts[i + 1]]))
            .collect();
        let mut r = Reassembler::default();
        let profile = CarrierProfile::default();
        let done = add_all(&mut r, &profile, &[parts[2].clone(), parts[0].clone()]);
        assert!(done.is_empty());
        let done = add_all(&mut r, &profile, &[parts[1].clone()]);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].text, text);
        assert_eq!(done[0].from, "447400777888");
        assert_eq!(done[0].to, "ACME");
        assert!(r.next_deadline().is_none());
    }

    #[tokio::test]
    async fn sar_parts_and_16_bit_references_are_reassembled() {
        let sar = |seq: u8, text: &str| {
            DeliverSm::builder()
                .source_addr(COctetString::from_str("447400777888").unwrap())
                .destination_addr(COctetString::from_str("ACME").unwrap())
                .esm_class(EsmClass::from(0))
                .short_message(OctetString::from_vec(text.as_bytes().to_vec()).unwrap())
                .push_tlv(Tlv::SarMsgRefNum(0x1234))
                .push_tlv(Tlv::SarTotalSegments(2))
                .push_tlv(Tlv::SarSegmentSeqnum(seq))
                .build()
        };
        let mut r = Reassembler::default();
        let done = add_all(
            &mut r,
            &CarrierProfile::default(),
            &[sar(2, " world"), sar(1, "Hello")],
        );
        assert_eq!(done[0].text, "Hello world");

        let udh16 = |seq: u8, text: &str| {
            let mut sm = vec![0x06, 0x08, 0x04, 0xAB, 0xCD, 0x02, seq];
            sm.extend_from_slice(text.as_bytes());
            DeliverSm::builder()
                .source_addr(COctetString::from_str("447400777888").unwrap())
                .destination_addr(COctetString::from_str("ACME").unwrap())
                .esm_class(EsmClass::from(0x40))
                .short_message(OctetString::from_vec(sm).unwrap())
                .build()
        };
        let done = add_all(
            &mut r,
            &CarrierProfile::default(),
            &[udh16(2, "TOP"), udh16(1, "S")],
        );
        assert_eq!(done[0].text, "STOP");
    }

    #[tokio::test]
    async fn packed_gsm_parts_skip_their_fill_bits() {
        let profile = CarrierProfile {
            gsm7: Gsm7Packing::Packed,
            ..CarrierProfile::default()
        };
        let a = pack_septets(b"Hello ", fill_bits(6));
        let b = pack_septets(b"world", fill_bits(6));
        let mut r = Reassembler::default();
        let done = add_all(
            &mut r,
            &profile,
            &[udh_part(1, 2, 2, 0, &b), udh_part(1, 2, 1, 0, &a)],
        );
        assert_eq!(done[0].text, "Hello world");
    }

    #[tokio::test]
    async fn an_incomplete_message_goes_on_after_the_wait_and_single_parts_pass_through() {
        let mut r = Reassembler::default();
        let carrier: Arc<str> = Arc::from("c");
        let profile = CarrierProfile::default();
        let now = Instant::now();
        let part = MoPart::read(&udh_part(9, 3, 1, 0, b"Hel"), &profile);
        assert!(r.add(&carrier, part, Duration::from_secs(5), now).is_none());
        assert!(r.expired(now).is_empty());
        assert_eq!(r.next_deadline(), Some(now + Duration::from_secs(5)));
        let late = r.expired(now + Duration::from_secs(5));
        assert_eq!(late.len(), 1);
        assert_eq!(late[0].1.text, "Hel");

        let single = DeliverSm::builder()
            .esm_class(EsmClass::from(0))
            .short_message(OctetString::from_vec(b"STOP".to_vec()).unwrap())
            .build();
        let part = MoPart::read(&single, &profile);
        assert_eq!(part.part_of, None);
        assert_eq!(part.into_message().text, "STOP");
    }
}
