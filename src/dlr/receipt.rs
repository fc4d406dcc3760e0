//! Delivery receipts: turning a deliver_sm from the SMSC into a [`Receipt`].
//!
//! No rusmpp crate parses receipts, so this module does it by hand. It reads
//! two sources:
//!
//! - **TLVs** (`receipted_message_id`, `message_state`, `network_error_code`):
//!   typed and unambiguous, so they win whenever they are present.
//! - **The receipt text** in short_message, or in the message_payload TLV when
//!   short_message is empty. SMPP 3.4 Appendix B only suggests its format, and
//!   most SMSCs send a variant of
//!   `id:IIIII sub:SSS dlvrd:DDD submit date:YYMMDDhhmm[ss] done date:YYMMDDhhmm[ss] stat:DDDDDDD err:E text:...`.
//!   The parser is lenient. Keys may come in any order, may be missing, and
//!   are matched case-insensitively. `submit date` may also be written
//!   `submit_date` or `submitdate`. Spaces around values are allowed, and
//!   `text:` runs to the end and is never read.
//!
//! The id is kept as sent. An SMSC may answer submit_sm with a hex id and
//! report it in decimal in the receipt (or the other way round). Matching the
//! two is the job of whoever looks the message up, not of this parser.
//!
//! Parsing never panics, whatever the bytes. Malformed input gives a
//! [`ReceiptError`].

use std::borrow::Cow;

use rusmpp::pdus::DeliverSm;
use rusmpp::tlvs::TlvValue;
use rusmpp::values::{MessageState, MessageType, NetworkErrorCode};

use crate::encoding;

/// The state of a message, as reported by a delivery receipt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReceiptState {
    /// In transit inside the SMSC or the network (intermediate).
    Enroute,
    /// Delivered to the handset (final).
    Delivered,
    /// Validity period expired before delivery (final).
    Expired,
    /// Cancelled or deleted at the SMSC (final).
    Deleted,
    /// Permanently undeliverable (final).
    Undeliverable,
    /// Read or accepted by SMSC customer service on the subscriber's behalf (final).
    Accepted,
    /// The SMSC does not know the state. Treated as final, because SMSCs do not follow it up.
    Unknown,
    /// Rejected by the SMSC or a delivery interface (final).
    Rejected,
    /// Scheduled and not yet attempted (intermediate, SMPP 5.0).
    Scheduled,
    /// Deliberately not sent, by vendor or network rules (final, SMPP 5.0).
    Skipped,
}

/// The `stat:` spellings each state accepts. The first one is the canonical text form.
const STAT_NAMES: [(ReceiptState, &[&str]); 10] = [
    (ReceiptState::Enroute, &["ENROUTE"]),
    (ReceiptState::Delivered, &["DELIVRD", "DELIVERED"]),
    (ReceiptState::Expired, &["EXPIRED"]),
    (ReceiptState::Deleted, &["DELETED"]),
    (
        ReceiptState::Undeliverable,
        &["UNDELIV", "UNDELIVERABLE", "UNDELIVERED"],
    ),
    (ReceiptState::Accepted, &["ACCEPTD", "ACCEPTED"]),
    (ReceiptState::Unknown, &["UNKNOWN"]),
    (ReceiptState::Rejected, &["REJECTD", "REJECTED"]),
    (ReceiptState::Scheduled, &["SCHEDULED", "SCHEDLD"]),
    (ReceiptState::Skipped, &["SKIPPED"]),
];

impl ReceiptState {
    /// Whether no further receipt is expected for the message. Only `Enroute` and `Scheduled` are
    /// intermediate.
    pub fn is_final(self) -> bool {
        !matches!(self, ReceiptState::Enroute | ReceiptState::Scheduled)
    }

    /// Parses a receipt's `stat:` value, case-insensitively, ignoring surrounding whitespace.
    ///
    /// Accepts the SMPP forms (`DELIVRD`, `EXPIRED`, `DELETED`, `UNDELIV`, `ACCEPTD`, `UNKNOWN`,
    /// `REJECTD`, `ENROUTE`) and the long spellings some SMSCs use (`DELIVERED`,
    /// `UNDELIVERABLE`, `UNDELIVERED`, `ACCEPTED`, `REJECTED`), plus `SCHEDULED`/`SCHEDLD` and
    /// `SKIPPED`, which SMPP has as message states but gives no text form for.
    pub fn from_stat(s: &str) -> Option<Self> {
        let s = s.trim();
        STAT_NAMES
            .iter()
            .find(|(_, names)| names.iter().any(|n| n.eq_ignore_ascii_case(s)))
            .map(|(state, _)| *state)
    }

    /// Maps the `message_state` TLV value. Values outside the SMPP table become `Unknown`.
    pub fn from_message_state(v: MessageState) -> Self {
        match v {
            MessageState::Scheduled => ReceiptState::Scheduled,
            MessageState::Enroute => ReceiptState::Enroute,
            MessageState::Delivered => ReceiptState::Delivered,
            MessageState::Expired => ReceiptState::Expired,
            MessageState::Deleted => ReceiptState::Deleted,
            MessageState::Undeliverable => ReceiptState::Undeliverable,
            MessageState::Accepted => ReceiptState::Accepted,
            MessageState::Unknown => ReceiptState::Unknown,
            MessageState::Rejected => ReceiptState::Rejected,
            MessageState::Skipped => ReceiptState::Skipped,
            MessageState::Other(_) => ReceiptState::Unknown,
        }
    }

    /// The canonical `stat:` text (`"DELIVRD"`, `"UNDELIV"`, ...). Round-trips through
    /// [`ReceiptState::from_stat`].
    pub fn as_stat(self) -> &'static str {
        STAT_NAMES
            .iter()
            .find(|(state, _)| *state == self)
            .and_then(|(_, names)| names.first())
            .copied()
            .unwrap_or("UNKNOWN")
    }
}

/// A parsed delivery receipt.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Receipt {
    /// The SMSC's message id, as sent (the submit_sm_resp message_id it refers to): the
    /// receipted_message_id TLV when present, else the text's `id:`.
    pub smsc_message_id: String,
    /// The receipted_message_id TLV, as sent.
    pub tlv_id: Option<String>,
    /// The text's `id:` field, as sent.
    pub text_id: Option<String>,
    /// The reported state.
    pub state: ReceiptState,
    /// The error, if any: the `err:` code as sent (e.g. `"001"`), or else the network_error_code TLV
    /// as `"type:code"` (e.g. `"3:1"` for GSM cause 1). `None` when absent or all zeros.
    pub error: Option<String>,
    /// The network_error_code TLV as `"type:code"`, when present and non-zero.
    pub network_error: Option<String>,
    /// `submit date:` as sent (normally `YYMMDDhhmm[ss]`), if present.
    pub submit_date: Option<String>,
    /// `done date:` as sent (normally `YYMMDDhhmm[ss]`), if present.
    pub done_date: Option<String>,
}

/// Why a deliver_sm or a receipt text could not be read as a delivery receipt.
#[derive(Debug, thiserror::Error)]
pub enum ReceiptError {
    /// Neither a receipted_message_id TLV nor an `id:` field.
    #[error(
        "delivery receipt carries no message id (no receipted_message_id TLV and no id: field)"
    )]
    NoMessageId,
    /// Neither a message_state TLV nor a `stat:` field.
    #[error("delivery receipt carries no state (no message_state TLV and no stat: field)")]
    NoState,
    /// A `stat:` value that is not a known state (and no message_state TLV to fall back on).
    #[error("delivery receipt has an unrecognised stat: value {0:?}")]
    UnknownStat(String),
}

/// Is this deliver_sm a delivery receipt (esm_class message type MC delivery receipt or intermediate notification)?
pub fn is_receipt(d: &DeliverSm) -> bool {
    matches!(
        d.esm_class.message_type,
        MessageType::ShortMessageContainsMCDeliveryReceipt
            | MessageType::ShortMessageContainsIntermediateDeliveryNotification
    )
}

/// Parses a delivery receipt from a deliver_sm.
///
/// The receipted_message_id and message_state TLVs win over the text's `id:` and `stat:`. The error
/// is the text's `err:` when non-zero, otherwise a non-zero network_error_code TLV. Dates come
/// from the text only. This does not check [`is_receipt`]; call it first.
pub fn parse_deliver_sm(d: &DeliverSm) -> Result<Receipt, ReceiptError> {
    let mut tlv_id = None;
    let mut tlv_state = None;
    let mut tlv_error = None;
    for tlv in d.tlvs() {
        match tlv.value() {
            Some(TlvValue::ReceiptedMessageId(id)) => {
                tlv_id = Some(id.as_str().trim()).filter(|id| !id.is_empty());
            }
            Some(TlvValue::MessageState(state)) => {
                tlv_state = Some(ReceiptState::from_message_state(*state));
            }
            Some(TlvValue::NetworkErrorCode(code)) => tlv_error = network_error(code),
            _ => {}
        }
    }

    let text = receipt_text(u8::from(d.data_coding), user_data(d));
    let fields = scan(&text);

    let smsc_message_id = tlv_id
        .or(fields.id)
        .ok_or(ReceiptError::NoMessageId)?
        .to_owned();
    let state = match tlv_state {
        Some(state) => state,
        None => fields.state()?,
    };
    Ok(Receipt {
        smsc_message_id,
        tlv_id: tlv_id.map(str::to_owned),
        text_id: fields.id.map(str::to_owned),
        state,
        error: fields.error().or_else(|| tlv_error.clone()),
        network_error: tlv_error,
        submit_date: fields.submit_date.map(str::to_owned),
        done_date: fields.done_date.map(str::to_owned),
    })
}

impl Receipt {
    /// The error as kept in the segment (and shown in the message's status
    /// error): the `err:` code, the network error, or both (`"034 (network 3:27)"`).
    pub fn error_detail(&self) -> Option<String> {
        match (&self.error, &self.network_error) {
            (Some(err), Some(net)) if err != net => Some(format!("{err} (network {net})")),
            (Some(err), _) => Some(err.clone()),
            (None, net) => net.clone(),
        }
    }
}

/// The user data of a deliver_sm: short_message, or the message_payload TLV
/// when short_message is empty, after any UDH (a UDH in a receipt is odd but
/// legal; MO messages carry one when concatenated).
pub fn user_data(d: &DeliverSm) -> &[u8] {
    let mut body: &[u8] = d.short_message();
    if body.is_empty()
        && let Some(payload) = d.tlvs().iter().find_map(|t| match t.value() {
            Some(TlvValue::MessagePayload(p)) => Some(p.value.as_ref()),
            _ => None,
        })
    {
        body = payload;
    }
    if u8::from(d.esm_class) & UDHI != 0
        && let Some((_, rest, _)) = encoding::split_udh(body)
    {
        body = rest;
    }
    body
}

/// Parses a receipt text (`id:… sub:… dlvrd:… submit date:… done date:… stat:… err:… text:…`).
pub fn parse_text(text: &str) -> Result<Receipt, ReceiptError> {
    let fields = scan(text);
    let smsc_message_id = fields.id.ok_or(ReceiptError::NoMessageId)?.to_owned();
    let state = fields.state()?;
    Ok(Receipt {
        text_id: Some(smsc_message_id.clone()),
        smsc_message_id,
        tlv_id: None,
        state,
        error: fields.error(),
        network_error: None,
        submit_date: fields.submit_date.map(str::to_owned),
        done_date: fields.done_date.map(str::to_owned),
    })
}

/// esm_class bit for "short_message starts with a UDH".
const UDHI: u8 = 0x40;

/// Receipt text is ASCII in practice even when data_coding says GSM (0x00): reading it through
/// the GSM table would turn `_` into `§` inside ids. So only UCS-2 is decoded as such, and
/// everything else is read as (lossy) UTF-8, which is ASCII-transparent.
fn receipt_text(data_coding: u8, body: &[u8]) -> Cow<'_, str> {
    match data_coding {
        0x08 | 0xE0..=0xEF => Cow::Owned(encoding::decode(data_coding, body)),
        _ => String::from_utf8_lossy(body),
    }
}

/// `"type:code"` for a non-zero network error, e.g. `"3:1"` (GSM, cause 1).
fn network_error(code: &NetworkErrorCode) -> Option<String> {
    (code.error_code != 0).then(|| format!("{}:{}", u8::from(code.network_type), code.error_code))
}

/// The fields found in a receipt text, borrowed from it and trimmed.
#[derive(Debug, Default, PartialEq, Eq)]
struct TextFields<'a> {
    id: Option<&'a str>,
    stat: Option<&'a str>,
    err: Option<&'a str>,
    submit_date: Option<&'a str>,
    done_date: Option<&'a str>,
}

impl TextFields<'_> {
    fn state(&self) -> Result<ReceiptState, ReceiptError> {
        let stat = self.stat.ok_or(ReceiptError::NoState)?;
        ReceiptState::from_stat(stat).ok_or_else(|| ReceiptError::UnknownStat(stat.to_owned()))
    }

    /// The `err:` value unless it is all zeros (`000` means "no error").
    fn error(&self) -> Option<String> {
        self.err
            .filter(|e| !e.bytes().all(|b| b == b'0'))
            .map(str::to_owned)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    Id,
    Sub,
    Dlvrd,
    SubmitDate,
    DoneDate,
    Stat,
    Err,
    Text,
}

/// Keys as words; words of a multi-word key may be joined by spaces, `_`, `-` or nothing.
const KEYS: [(Key, &[&str]); 9] = [
    (Key::Id, &["id"]),
    (Key::Sub, &["sub"]),
    (Key::Dlvrd, &["dlvrd"]),
    (Key::SubmitDate, &["submit", "date"]),
    (Key::DoneDate, &["done", "date"]),
    (Key::Stat, &["stat"]),
    (Key::Stat, &["status"]),
    (Key::Err, &["err"]),
    (Key::Text, &["text"]),
];

/// Finds the `key:` fields. A key counts only at the start of the text or after whitespace, `,` or
/// `;`, and must be followed (after optional spaces) by `:`. A field's value runs to the next key;
/// `text:` ends the scan. The first occurrence of a key wins.
fn scan(text: &str) -> TextFields<'_> {
    let bytes = text.as_bytes();
    let mut fields = TextFields::default();
    let mut open: Option<(Key, usize)> = None;
    let mut i = 0;
    while i < bytes.len() {
        let at_word_start = match i.checked_sub(1).and_then(|p| bytes.get(p)) {
            None => true,
            Some(prev) => prev.is_ascii_whitespace() || matches!(prev, b',' | b';'),
        };
        // No let chain here: the workspace MSRV (1.86) predates them.
        let found = if at_word_start {
            match_key(bytes, i)
        } else {
            None
        };
        let Some((key, value_start)) = found else {
            i += 1;
            continue;
        };
        if let Some((open_key, start)) = open.take() {
            fields.set(open_key, text.get(start..i).unwrap_or(""));
        }
        if key == Key::Text {
            return fields;
        }
        open = Some((key, value_start));
        i = value_start;
    }
    if let Some((open_key, start)) = open {
        fields.set(open_key, text.get(start..).unwrap_or(""));
    }
    fields
}

impl<'a> TextFields<'a> {
    fn set(&mut self, key: Key, raw: &'a str) {
        let value = raw.trim();
        let first_token = value.split_whitespace().next();
        let (slot, value) = match key {
            Key::Id => (&mut self.id, first_token),
            Key::Stat => (&mut self.stat, first_token),
            Key::Err => (&mut self.err, first_token),
            Key::SubmitDate => (&mut self.submit_date, Some(value)),
            Key::DoneDate => (&mut self.done_date, Some(value)),
            Key::Sub | Key::Dlvrd | Key::Text => return,
        };
        if slot.is_none() {
            *slot = value.filter(|v| !v.is_empty());
        }
    }
}

/// If a key starts at `start`, returns it and the index just past its `:`.
fn match_key(bytes: &[u8], start: usize) -> Option<(Key, usize)> {
    KEYS.iter().find_map(|(key, words)| {
        let mut pos = start;
        for (n, word) in words.iter().enumerate() {
            if n > 0 {
                while matches!(bytes.get(pos), Some(b' ' | b'_' | b'-')) {
                    pos += 1;
                }
            }
            let end = pos + word.len();
            if !bytes.get(pos..end)?.eq_ignore_ascii_case(word.as_bytes()) {
                return None;
            }
            pos = end;
        }
        while matches!(bytes.get(pos), Some(b' ' | b'\t')) {
            pos += 1;
        }
        (bytes.get(pos) == Some(&b':')).then_some((*key, pos + 1))
    })
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use rusmpp::tlvs::MessageDeliveryRequestTlvValue as Tlv;
    use rusmpp::types::{AnyOctetString, COctetString, OctetString};
    use rusmpp::values::{DataCoding, ErrorCodeNetworkType, EsmClass, MessagePayload};

    use super::*;

    const FULL: &str = "id:0123456789 sub:001 dlvrd:001 submit date:2401311200 \
                        done date:2401311201 stat:DELIVRD err:000 text:Hello world";

    fn receipt_sm() -> rusmpp::pdus::builders::DeliverSmBuilder {
        DeliverSm::builder().esm_class(EsmClass::from(0x04))
    }

    fn text(s: &str) -> OctetString<0, 255> {
        OctetString::from_str(s).unwrap()
    }

    fn id_tlv(id: &str) -> Tlv {
        Tlv::ReceiptedMessageId(COctetString::from_str(id).unwrap())
    }

    #[test]
    fn text_receipt_with_all_fields() {
        let r = parse_text(FULL).unwrap();
        assert_eq!(
            r,
            Receipt {
                smsc_message_id: "0123456789".into(),
                tlv_id: None,
                text_id: Some("0123456789".into()),
                state: ReceiptState::Delivered,
                error: None,
                network_error: None,
                submit_date: Some("2401311200".into()),
                done_date: Some("2401311201".into()),
            }
        );
    }

    #[test]
    fn text_only_deliver_sm() {
        let d = receipt_sm().short_message(text(FULL)).build();
        assert!(is_receipt(&d));
        let r = parse_deliver_sm(&d).unwrap();
        assert_eq!(r.smsc_message_id, "0123456789");
        assert_eq!(r.state, ReceiptState::Delivered);
        assert_eq!(r.done_date.as_deref(), Some("2401311201"));
    }

    #[test]
    fn tlv_only_deliver_sm() {
        let d = receipt_sm()
            .push_tlv(id_tlv("5F3A9B"))
            .push_tlv(Tlv::MessageState(MessageState::Undeliverable))
            .push_tlv(Tlv::NetworkErrorCode(NetworkErrorCode::new(
                ErrorCodeNetworkType::Gsm,
                1,
            )))
            .build();
        let r = parse_deliver_sm(&d).unwrap();
        assert_eq!(
            r,
            Receipt {
                smsc_message_id: "5F3A9B".into(),
                tlv_id: Some("5F3A9B".into()),
                text_id: None,
                state: ReceiptState::Undeliverable,
                error: Some("3:1".into()),
                network_error: Some("3:1".into()),
                submit_date: None,
                done_date: None,
            }
        );
    }

    #[test]
    fn tlvs_win_for_id_and_state_and_text_err_is_kept() {
        let d = receipt_sm()
            .short_message(text(
                "id:1234567 sub:001 dlvrd:000 submit date:2401311200 done date:2401311205 \
                 stat:UNDELIV err:034 text:",
            ))
            .push_tlv(id_tlv("12D687"))
            .push_tlv(Tlv::MessageState(MessageState::Expired))
            .push_tlv(Tlv::NetworkErrorCode(NetworkErrorCode::new(
                ErrorCodeNetworkType::Gsm,
                27,
            )))
            .build();
        let r = parse_deliver_sm(&d).unwrap();
        assert_eq!(r.smsc_message_id, "12D687");
        assert_eq!(r.state, ReceiptState::Expired);
        assert_eq!(
            r.error.as_deref(),
            Some("034"),
            "text err: wins over the TLV"
        );
        assert_eq!(r.network_error.as_deref(), Some("3:27"));
        assert_eq!(r.error_detail().as_deref(), Some("034 (network 3:27)"));
        assert_eq!(r.tlv_id.as_deref(), Some("12D687"));
        assert_eq!(r.text_id.as_deref(), Some("1234567"));
        assert_eq!(r.submit_date.as_deref(), Some("2401311200"));
    }

    #[test]
    fn network_error_tlv_is_used_when_text_err_is_zero() {
        let d = receipt_sm()
            .short_message(text("id:1 stat:UNDELIV err:000"))
            .push_tlv(Tlv::NetworkErrorCode(NetworkErrorCode::new(
                ErrorCodeNetworkType::Gsm,
                27,
            )))
            .build();
        assert_eq!(parse_deliver_sm(&d).unwrap().error.as_deref(), Some("3:27"));
        let d = receipt_sm()
            .short_message(text("id:1 stat:DELIVRD err:000"))
            .push_tlv(Tlv::NetworkErrorCode(NetworkErrorCode::new(
                ErrorCodeNetworkType::Gsm,
                0,
            )))
            .build();
        assert_eq!(parse_deliver_sm(&d).unwrap().error, None);
    }

    #[test]
    fn text_in_message_payload_when_short_message_is_empty() {
        let d = receipt_sm()
            .push_tlv(Tlv::MessagePayload(MessagePayload::new(
                AnyOctetString::from_static_slice(FULL.as_bytes()),
            )))
            .build();
        let r = parse_deliver_sm(&d).unwrap();
        assert_eq!(r.smsc_message_id, "0123456789");
        assert_eq!(r.state, ReceiptState::Delivered);
    }

    #[test]
    fn ucs2_receipt_text_is_decoded() {
        let bytes: Vec<u8> = "id:77 stat:REJECTD err:0B"
            .encode_utf16()
            .flat_map(u16::to_be_bytes)
            .collect();
        let d = receipt_sm()
            .data_coding(DataCoding::Ucs2)
            .short_message(OctetString::from_vec(bytes).unwrap())
            .build();
        let r = parse_deliver_sm(&d).unwrap();
        assert_eq!(r.smsc_message_id, "77");
        assert_eq!(r.state, ReceiptState::Rejected);
        assert_eq!(r.error.as_deref(), Some("0B"));
    }

    #[test]
    fn gsm_data_coding_does_not_mangle_underscores_in_ids() {
        let d = receipt_sm()
            .data_coding(DataCoding::McSpecific)
            .short_message(text("id:msg_42 stat:DELIVRD"))
            .build();
        assert_eq!(parse_deliver_sm(&d).unwrap().smsc_message_id, "msg_42");
    }

    #[test]
    fn fields_may_be_reordered_or_missing() {
        let r = parse_text("stat:EXPIRED err:045 id:abc123").unwrap();
        assert_eq!(r.smsc_message_id, "abc123");
        assert_eq!(r.state, ReceiptState::Expired);
        assert_eq!(r.error.as_deref(), Some("045"));
        assert_eq!((r.submit_date, r.done_date), (None, None));

        let r = parse_text("done date:2402011530 id:42 stat:DELIVRD").unwrap();
        assert_eq!(r.done_date.as_deref(), Some("2402011530"));
        assert_eq!(r.error, None);
    }

    #[test]
    fn keys_are_case_insensitive_and_spacing_is_lenient() {
        let r = parse_text(
            "ID: 9f8e7d  SUB:001   Submit_Date: 240131120000  DONE DATE :240131120105 \
             Stat: delivrd  ERR:001 Text:ok",
        )
        .unwrap();
        assert_eq!(r.smsc_message_id, "9f8e7d");
        assert_eq!(r.state, ReceiptState::Delivered);
        assert_eq!(r.error.as_deref(), Some("001"));
        assert_eq!(r.submit_date.as_deref(), Some("240131120000"));
        assert_eq!(r.done_date.as_deref(), Some("240131120105"));
    }

    #[test]
    fn lowercase_stat_delivrd_is_delivered() {
        assert_eq!(
            parse_text("id:1 stat:delivrd").unwrap().state,
            ReceiptState::Delivered
        );
    }

    #[test]
    fn err_000_is_no_error_and_err_001_is_kept() {
        assert_eq!(parse_text("id:1 stat:DELIVRD err:000").unwrap().error, None);
        assert_eq!(
            parse_text("id:1 stat:UNDELIV err:001")
                .unwrap()
                .error
                .as_deref(),
            Some("001")
        );
    }

    #[test]
    fn text_field_runs_to_the_end_and_is_not_parsed() {
        let r = parse_text("id:1 stat:DELIVRD err:000 text:id:2 stat:UNDELIV err:999").unwrap();
        assert_eq!(r.smsc_message_id, "1");
        assert_eq!(r.state, ReceiptState::Delivered);
        assert_eq!(r.error, None);
    }

    #[test]
    fn keys_inside_words_are_not_keys() {
        // "paid:" must not be read as "id:", nor "substat:" as "stat:".
        let r = parse_text("id:7 prepaid:yes substat:x stat:ACCEPTD").unwrap();
        assert_eq!(r.smsc_message_id, "7");
        assert_eq!(r.state, ReceiptState::Accepted);
    }

    #[test]
    fn decimal_and_hex_ids_are_kept_as_sent() {
        assert_eq!(
            parse_text("id:000123 stat:DELIVRD")
                .unwrap()
                .smsc_message_id,
            "000123"
        );
        assert_eq!(
            parse_text("id:0A1B2c stat:DELIVRD")
                .unwrap()
                .smsc_message_id,
            "0A1B2c"
        );
    }

    #[test]
    fn missing_id_or_state_is_an_error() {
        assert!(matches!(
            parse_text("sub:001 stat:DELIVRD"),
            Err(ReceiptError::NoMessageId)
        ));
        assert!(matches!(
            parse_text("id:1 err:000"),
            Err(ReceiptError::NoState)
        ));
        assert!(matches!(
            parse_text("id:1 stat:WHATEVER"),
            Err(ReceiptError::UnknownStat(s)) if s == "WHATEVER"
        ));
        assert!(matches!(
            parse_text("id: stat:DELIVRD"),
            Err(ReceiptError::NoMessageId)
        ));
        let d = receipt_sm().build();
        assert!(matches!(
            parse_deliver_sm(&d),
            Err(ReceiptError::NoMessageId)
        ));
        let d = receipt_sm().push_tlv(id_tlv("1")).build();
        assert!(matches!(parse_deliver_sm(&d), Err(ReceiptError::NoState)));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for junk in [
            "",
            ":",
            "::::",
            "id",
            "id:",
            "stat:",
            "text:",
            "😀:😀 id😀:x",
            "\0\0\0",
        ] {
            assert!(parse_text(junk).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn every_truncation_of_a_receipt_parses_without_panic() {
        let full = format!("{FULL} ünïcödé 😀");
        for end in 0..=full.len() {
            let _ = parse_text(&String::from_utf8_lossy(&full.as_bytes()[..end]));
            let _ = parse_text(&String::from_utf8_lossy(&full.as_bytes()[end..]));
        }
    }

    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn random_bytes_and_token_soup_never_panic() {
        let tokens = [
            "id:",
            "ID :",
            "stat:",
            "sub:",
            "dlvrd:",
            "submit date:",
            "done_date:",
            "err:",
            "text:",
            " ",
            "  ",
            ":",
            "DELIVRD",
            "undeliv",
            "0",
            "123abc",
            "ü",
            "😀",
            "\t",
            ",",
            ";",
            "submit",
            "date",
            "-",
            "_",
        ];
        let mut seed = 0xDEAD_BEEF_u64;
        for _ in 0..20_000 {
            let n = (xorshift(&mut seed) % 24) as usize;
            let soup: String = (0..n)
                .map(|_| tokens[(xorshift(&mut seed) % tokens.len() as u64) as usize])
                .collect();
            let _ = parse_text(&soup);

            let len = (xorshift(&mut seed) % 256) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| xorshift(&mut seed) as u8).collect();
            let _ = parse_text(&String::from_utf8_lossy(&bytes));
            let d = DeliverSm::builder()
                .esm_class(EsmClass::from(xorshift(&mut seed) as u8))
                .data_coding(DataCoding::from(xorshift(&mut seed) as u8))
                .short_message(OctetString::from_vec(bytes).unwrap())
                .build();
            let _ = is_receipt(&d);
            let _ = parse_deliver_sm(&d);
        }
    }

    #[test]
    fn is_receipt_checks_the_esm_class_message_type() {
        let with_esm = |esm: u8| DeliverSm::builder().esm_class(EsmClass::from(esm)).build();
        assert!(is_receipt(&with_esm(0x04)), "MC delivery receipt");
        assert!(is_receipt(&with_esm(0x20)), "intermediate notification");
        assert!(is_receipt(&with_esm(0x44)), "receipt with UDHI");
        assert!(!is_receipt(&with_esm(0x00)), "MO message");
        assert!(!is_receipt(&with_esm(0x40)), "MO message with UDH");
        assert!(!is_receipt(&with_esm(0x08)), "SME delivery ack");
    }

    #[test]
    fn receipt_with_udh_skips_the_header() {
        let mut sm = vec![0x05, 0x00, 0x03, 0x01, 0x01, 0x01];
        sm.extend_from_slice(b"id:55 stat:DELIVRD");
        let d = DeliverSm::builder()
            .esm_class(EsmClass::from(0x44))
            .short_message(OctetString::from_vec(sm).unwrap())
            .build();
        assert_eq!(parse_deliver_sm(&d).unwrap().smsc_message_id, "55");
    }

    #[test]
    fn stat_names_round_trip_and_finality() {
        let all = [
            ReceiptState::Enroute,
            ReceiptState::Delivered,
            ReceiptState::Expired,
            ReceiptState::Deleted,
            ReceiptState::Undeliverable,
            ReceiptState::Accepted,
            ReceiptState::Unknown,
            ReceiptState::Rejected,
            ReceiptState::Scheduled,
            ReceiptState::Skipped,
        ];
        for state in all {
            assert_eq!(ReceiptState::from_stat(state.as_stat()), Some(state));
        }
        let stats: Vec<&str> = all.iter().map(|s| s.as_stat()).collect();
        assert_eq!(
            stats,
            [
                "ENROUTE",
                "DELIVRD",
                "EXPIRED",
                "DELETED",
                "UNDELIV",
                "ACCEPTD",
                "UNKNOWN",
                "REJECTD",
                "SCHEDULED",
                "SKIPPED"
            ]
        );
        let intermediate: Vec<ReceiptState> = all.into_iter().filter(|s| !s.is_final()).collect();
        assert_eq!(
            intermediate,
            [ReceiptState::Enroute, ReceiptState::Scheduled]
        );
        assert_eq!(
            ReceiptState::from_stat(" Delivered "),
            Some(ReceiptState::Delivered)
        );
        assert_eq!(
            ReceiptState::from_stat("UNDELIVERABLE"),
            Some(ReceiptState::Undeliverable)
        );
        assert_eq!(ReceiptState::from_stat("DELIV"), None);
    }

    #[test]
    fn message_state_tlv_values_map_one_to_one() {
        let pairs = [
            (MessageState::Scheduled, ReceiptState::Scheduled),
            (MessageState::Enroute, ReceiptState::Enroute),
            (MessageState::Delivered, ReceiptState::Delivered),
            (MessageState::Expired, ReceiptState::Expired),
            (MessageState::Deleted, ReceiptState::Deleted),
            (MessageState::Undeliverable, ReceiptState::Undeliverable),
            (MessageState::Accepted, ReceiptState::Accepted),
            (MessageState::Unknown, ReceiptState::Unknown),
            (MessageState::Rejected, ReceiptState::Rejected),
            (MessageState::Skipped, ReceiptState::Skipped),
            (MessageState::Other(42), ReceiptState::Unknown),
        ];
        for (tlv, state) in pairs {
            assert_eq!(ReceiptState::from_message_state(tlv), state);
        }
    }
}
