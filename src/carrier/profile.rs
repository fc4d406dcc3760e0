//! Carrier profiles: the small ways one SMSC's dialect differs from the
//! book, stated per carrier in `[carriers.profile]` so that every delivery
//! receipt finds its message and every text arrives as written.
//!
//! What a profile covers:
//!
//! - **Message-id forms** ([`IdFormat`]): how the SMSC writes the id in
//!   submit_sm_resp, in the receipt text's `id:` and in the
//!   receipted_message_id TLV (hex or decimal, any case, any zero padding, or
//!   `auto`). The DLR stage turns a receipt's id into the forms the response
//!   may have used ([`crate::dlr`]).
//! - **Multipart receipts** ([`MultipartReceipts`]): whether the SMSC reports
//!   every segment or only the first or last one.
//! - **Waiting**: how long a receipt whose id is not (yet) known is retried
//!   before it goes to the dead-letter record.
//! - **Encoding**: what data_coding 0 means to the SMSC (GSM 03.38 or
//!   Latin-1), packed or unpacked GSM 7-bit, UDH or SAR TLVs for concatenated
//!   messages, forced TON/NPI; and how long inbound parts wait for the rest.
//!
//! The default profile is smsgate's behaviour without one: ids compared as
//! sent, every segment reports, unpacked GSM 03.38 at data_coding 0, UDH
//! concatenation, TON/NPI from the address's shape.

use serde::Deserialize;

pub use crate::message::MultipartReceipts;

/// A carrier's dialect. Every field has a default; see `config/smsgate.toml`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct CarrierProfile {
    /// How submit_sm_resp writes the message id.
    pub submit_id: IdFormat,
    /// How the receipt text's `id:` field writes it.
    pub receipt_id: IdFormat,
    /// How the receipted_message_id TLV writes it; absent: like `submit_id`
    /// (SMPP says the TLV quotes the submit_sm_resp id).
    pub receipt_tlv_id: Option<IdFormat>,
    /// Which segments of a concatenated message get a receipt.
    pub multipart_receipts: MultipartReceipts,
    /// Seconds a receipt whose id is unknown keeps being retried against the
    /// index (it may have overtaken its submit_sm_resp) before it is given up
    /// to the dead-letter record.
    pub receipt_wait_s: u64,
    /// What data_coding 0 (the SMSC's default alphabet) means to this SMSC.
    pub data_coding_0: DefaultAlphabet,
    /// GSM 7-bit sent (and read) one septet per octet or packed.
    pub gsm7: Gsm7Packing,
    /// How the parts of a concatenated message are marked.
    pub long_messages: LongMessages,
    /// Forced source TON (else from the address's shape).
    pub source_ton: Option<u8>,
    /// Forced source NPI.
    pub source_npi: Option<u8>,
    /// Forced destination TON (else international).
    pub dest_ton: Option<u8>,
    /// Forced destination NPI.
    pub dest_npi: Option<u8>,
    /// Seconds the parts of an inbound concatenated message wait for the
    /// missing ones; then what arrived is handed on as it is.
    pub mo_reassembly_s: u64,
}

impl Default for CarrierProfile {
    fn default() -> Self {
        Self {
            submit_id: IdFormat::Exact,
            receipt_id: IdFormat::Exact,
            receipt_tlv_id: None,
            multipart_receipts: MultipartReceipts::All,
            receipt_wait_s: 10,
            data_coding_0: DefaultAlphabet::Gsm,
            gsm7: Gsm7Packing::Unpacked,
            long_messages: LongMessages::Udh,
            source_ton: None,
            source_npi: None,
            dest_ton: None,
            dest_npi: None,
            mo_reassembly_s: 60,
        }
    }
}

impl CarrierProfile {
    /// How the receipted_message_id TLV writes ids.
    pub fn tlv_id_format(&self) -> IdFormat {
        self.receipt_tlv_id.unwrap_or(self.submit_id)
    }

    /// Which segments' receipts settle a message. A `message_payload` submit
    /// carries every segment under one id, so its one receipt (indexed on the
    /// first segment) stands for the whole message.
    pub fn receipt_mode(&self) -> MultipartReceipts {
        match self.long_messages {
            LongMessages::Payload => MultipartReceipts::First,
            _ => self.multipart_receipts,
        }
    }

    /// How long an unmatched receipt is retried.
    pub fn receipt_wait(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.receipt_wait_s)
    }

    /// How long inbound parts wait for the rest of their message.
    pub fn mo_reassembly(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.mo_reassembly_s.max(1))
    }

    /// Decodes a short_message payload (after any UDH) by data_coding, the way
    /// this SMSC means it: data_coding 0 as GSM 03.38 (packed or not) or
    /// Latin-1. `udh_len` is the length of the UDH before the payload
    /// (including its length octet), which sets the fill bits of packed GSM.
    pub fn decode(&self, data_coding: u8, payload: &[u8], udh_len: usize) -> String {
        let (data_coding, units) = self.units(data_coding, payload, udh_len);
        crate::encoding::decode(data_coding, &units)
    }

    /// A payload as decodable units: packed GSM unpacked to one septet per
    /// octet, data_coding 0 remapped to 0x03 when it means Latin-1; other
    /// payloads as they are. Parts of one message can be joined as units and
    /// decoded together (so a pair split across parts survives).
    pub fn units<'a>(
        &self,
        data_coding: u8,
        payload: &'a [u8],
        udh_len: usize,
    ) -> (u8, std::borrow::Cow<'a, [u8]>) {
        use std::borrow::Cow;
        if data_coding != 0x00 {
            return (data_coding, Cow::Borrowed(payload));
        }
        match (self.data_coding_0, self.gsm7) {
            (DefaultAlphabet::Latin1, _) => (0x03, Cow::Borrowed(payload)),
            (DefaultAlphabet::Gsm, Gsm7Packing::Unpacked) => (0x00, Cow::Borrowed(payload)),
            (DefaultAlphabet::Gsm, Gsm7Packing::Packed) => (
                0x00,
                Cow::Owned(unpack_septets(payload, fill_bits(udh_len))),
            ),
        }
    }
}

/// How an SMSC writes a message id.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum IdFormat {
    /// Compared exactly as written (the default).
    #[default]
    Exact,
    /// A hexadecimal number: case and leading zeros do not matter.
    Hex,
    /// A decimal number: leading zeros do not matter.
    Decimal,
    /// Unknown: tries the id as written, other cases, and hex ↔ decimal with
    /// any zero padding. The conversion that works is remembered per carrier.
    Auto,
}

/// What data_coding 0 means to an SMSC.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DefaultAlphabet {
    /// GSM 03.38 default alphabet (the SMPP default).
    #[default]
    Gsm,
    /// ISO-8859-1: GSM-alphabet texts are written as Latin-1 octets (a
    /// character Latin-1 lacks, e.g. `€` or `Δ`, becomes `?`).
    Latin1,
}

/// How GSM 7-bit text is laid out in short_message.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Gsm7Packing {
    /// One septet per octet (most SMPP SMSCs).
    #[default]
    Unpacked,
    /// Eight septets in seven octets, as on the air interface.
    Packed,
}

/// How the parts of a concatenated message are marked.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LongMessages {
    /// A concatenation UDH in short_message, esm_class UDHI.
    #[default]
    Udh,
    /// sar_msg_ref_num / sar_total_segments / sar_segment_seqnum TLVs, no UDH.
    Sar,
    /// The whole text in one submit_sm's message_payload TLV (short_message
    /// empty); the SMSC splits it, answers one id and sends one receipt.
    Payload,
}

/// Fill bits between a UDH of `udh_len` octets and the first septet of packed
/// GSM text, so that the text starts on a septet boundary (3GPP TS 23.040 9.2.3.24).
pub fn fill_bits(udh_len: usize) -> u32 {
    ((7 - (udh_len * 8) % 7) % 7) as u32
}

/// Packs septets (one per octet, high bit ignored) eight into seven octets,
/// after `fill` zero bits. Seven spare bits at the end are filled with CR
/// (0x0D), which the receiver drops (3GPP TS 23.038 6.1.2.3.1).
pub fn pack_septets(septets: &[u8], fill: u32) -> Vec<u8> {
    let total_bits = fill as usize + septets.len() * 7;
    let mut out = vec![0u8; total_bits.div_ceil(8)];
    let spare = out.len() * 8 - total_bits;
    let mut put = |bit: usize, septet: u8| {
        let value = u16::from(septet & 0x7F) << (bit % 8);
        out[bit / 8] |= value as u8;
        if let Some(next) = out.get_mut(bit / 8 + 1) {
            *next |= (value >> 8) as u8;
        }
    };
    for (i, &s) in septets.iter().enumerate() {
        put(fill as usize + i * 7, s);
    }
    if spare == 7 {
        put(total_bits, 0x0D);
    }
    out
}

/// Unpacks packed GSM 7-bit (after `fill` bits) to one septet per octet. A
/// last septet that only fills spare bits (0x00 or CR) is dropped.
pub fn unpack_septets(packed: &[u8], fill: u32) -> Vec<u8> {
    let bits = (packed.len() * 8).saturating_sub(fill as usize);
    let count = bits / 7;
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let bit = fill as usize + i * 7;
        let lo = u16::from(packed[bit / 8]);
        let hi = u16::from(packed.get(bit / 8 + 1).copied().unwrap_or(0));
        out.push((((hi << 8) | lo) >> (bit % 8)) as u8 & 0x7F);
    }
    // When the bits divide into septets exactly, the writer may have had
    // seven spare bits at the end: a last CR (or zero) septet is that padding.
    if bits.is_multiple_of(7) && matches!(out.last(), Some(0x00 | 0x0D)) {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_profile_is_the_behaviour_without_one() {
        let p: CarrierProfile = toml::from_str("").unwrap();
        assert_eq!(p, CarrierProfile::default());
        assert_eq!(p.submit_id, IdFormat::Exact);
        assert_eq!(p.tlv_id_format(), IdFormat::Exact);
        assert_eq!(p.multipart_receipts, MultipartReceipts::All);
        assert_eq!(p.receipt_wait_s, 10);
    }

    #[test]
    fn every_field_parses_and_unknown_ones_are_refused() {
        let p: CarrierProfile = toml::from_str(
            r#"
            submit_id = "hex"
            receipt_id = "decimal"
            receipt_tlv_id = "auto"
            multipart_receipts = "last"
            receipt_wait_s = 30
            data_coding_0 = "latin1"
            gsm7 = "packed"
            long_messages = "sar"
            source_ton = 5
            source_npi = 0
            dest_ton = 1
            dest_npi = 1
            mo_reassembly_s = 120
            "#,
        )
        .unwrap();
        assert_eq!(p.tlv_id_format(), IdFormat::Auto);
        assert_eq!(p.multipart_receipts, MultipartReceipts::Last);
        assert_eq!(p.long_messages, LongMessages::Sar);
        assert!(toml::from_str::<CarrierProfile>("id_format = \"hex\"").is_err());
        assert!(toml::from_str::<CarrierProfile>("submit_id = \"octal\"").is_err());
    }

    #[test]
    fn the_commented_profile_in_the_example_config_parses_and_shows_the_defaults() {
        let example = include_str!("../../config/smsgate.toml");
        let block: String = example
            .lines()
            .skip_while(|l| l.trim() != "# [carriers.profile]")
            .skip(1)
            .take_while(|l| l.starts_with('#'))
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.contains(" = "))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(block.contains("mo_reassembly_s"), "{block}");
        let p: CarrierProfile = toml::from_str(&block).expect("the documented profile parses");
        let defaults = CarrierProfile {
            receipt_tlv_id: Some(IdFormat::Exact),
            source_ton: Some(5),
            source_npi: Some(0),
            dest_ton: Some(1),
            dest_npi: Some(1),
            ..CarrierProfile::default()
        };
        assert_eq!(p, defaults);
    }

    #[test]
    fn packed_gsm_round_trips_with_and_without_a_udh() {
        let text: Vec<u8> = b"hellohello".to_vec();
        for udh_len in [0, 6, 7] {
            let fill = fill_bits(udh_len);
            let packed = pack_septets(&text, fill);
            assert_eq!(unpack_septets(&packed, fill), text, "udh {udh_len}");
        }
        // The 23.038 example: "hellohello" packs to E8 32 9B FD 46 97 D9 EC 37.
        assert_eq!(
            pack_septets(b"hellohello", 0),
            [0xE8, 0x32, 0x9B, 0xFD, 0x46, 0x97, 0xD9, 0xEC, 0x37]
        );
        // Seven septets leave seven spare bits: CR, dropped again on reading.
        let seven = pack_septets(b"1234567", 0);
        assert_eq!(seven.len(), 7);
        assert_eq!(unpack_septets(&seven, 0), b"1234567");
        // 160 septets fit 140 octets; a 6-octet UDH leaves room for 153.
        assert_eq!(pack_septets(&[0x41; 160], 0).len(), 140);
        assert_eq!(pack_septets(&[0x41; 153], fill_bits(6)).len() + 6, 140);
        assert_eq!(fill_bits(6), 1);
        assert_eq!(fill_bits(7), 0);
    }

    #[test]
    fn data_coding_0_is_decoded_the_way_the_carrier_means_it() {
        let gsm = CarrierProfile::default();
        assert_eq!(gsm.decode(0x00, &[0x05, 0x41], 0), "éA");
        let latin1 = CarrierProfile {
            data_coding_0: DefaultAlphabet::Latin1,
            ..CarrierProfile::default()
        };
        assert_eq!(latin1.decode(0x00, &[0xE9, 0x41], 0), "éA");
        let packed = CarrierProfile {
            gsm7: Gsm7Packing::Packed,
            ..CarrierProfile::default()
        };
        assert_eq!(packed.decode(0x00, &pack_septets(b"STOP", 0), 0), "STOP");
        // UCS-2 is UCS-2 whatever the profile.
        assert_eq!(latin1.decode(0x08, &[0x00, 0xE9], 0), "é");
    }
}
