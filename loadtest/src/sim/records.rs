//! What the simulator remembers about each accepted submit_sm, and how it reads the message.

use std::{
    collections::VecDeque,
    sync::{Mutex, MutexGuard},
};

use chrono::{DateTime, Utc};
use rusmpp::{pdus::SubmitSm, tlvs::TlvValue};
use serde::Serialize;

use super::text;

/// Concatenation info of one part, from an 8-bit (IEI 0x00) or 16-bit (IEI 0x08) UDH element,
/// or from the sar_* TLVs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ConcatInfo {
    /// Concatenated message reference number.
    pub reference: u16,
    /// Total number of parts.
    pub total: u8,
    /// This part's sequence number (1-based).
    pub seq: u8,
}

/// One accepted submit_sm, as the SMSC saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubmitRecord {
    /// When the submit_sm was accepted.
    pub at: DateTime<Utc>,
    /// system_id of the session that sent it.
    pub system_id: String,
    /// The message id returned in submit_sm_resp.
    pub message_id: String,
    /// source_addr.
    pub source_addr: String,
    /// source_addr_ton.
    pub source_ton: u8,
    /// source_addr_npi.
    pub source_npi: u8,
    /// destination_addr.
    pub destination_addr: String,
    /// dest_addr_ton.
    pub dest_ton: u8,
    /// dest_addr_npi.
    pub dest_npi: u8,
    /// esm_class.
    pub esm_class: u8,
    /// data_coding.
    pub data_coding: u8,
    /// registered_delivery.
    pub registered_delivery: u8,
    /// validity_period as sent (empty for the MC default).
    pub validity_period: String,
    /// The UDH bytes (including the UDHL octet) when esm_class has UDHI (0x40).
    pub udh: Option<Vec<u8>>,
    /// Concatenation info from the UDH or the sar_* TLVs.
    pub concat: Option<ConcatInfo>,
    /// The payload decoded by data_coding (GSM 03.38, UCS-2, Latin-1, else lossy UTF-8).
    pub text: String,
    /// The raw payload after the UDH (short_message, or message_payload when short_message is empty).
    pub payload: Vec<u8>,
}

const UDHI: u8 = 0x40;

/// The message content of a submit_sm: UDH, concatenation, payload and decoded text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Content {
    pub udh: Option<Vec<u8>>,
    pub concat: Option<ConcatInfo>,
    pub payload: Vec<u8>,
    pub text: String,
}

impl Content {
    /// Reads short_message (or the message_payload TLV when short_message is empty).
    pub(crate) fn of(submit: &SubmitSm) -> Content {
        let mut body: &[u8] = submit.short_message();
        let mut sar = (None, None, None);
        for tlv in submit.tlvs() {
            match tlv.value() {
                Some(TlvValue::MessagePayload(p)) if body.is_empty() => body = &p.value,
                Some(TlvValue::SarMsgRefNum(r)) => sar.0 = Some(*r),
                Some(TlvValue::SarTotalSegments(t)) => sar.1 = Some(*t),
                Some(TlvValue::SarSegmentSeqnum(s)) => sar.2 = Some(*s),
                _ => {}
            }
        }
        let esm_class = u8::from(submit.esm_class);
        let (udh, payload) = if esm_class & UDHI != 0 {
            text::split_udh(body)
        } else {
            (None, body)
        };
        let concat = match (udh.and_then(text::concat_from_udh), sar) {
            (Some(c), _) => Some(ConcatInfo {
                reference: c.reference,
                total: c.total,
                seq: c.seq,
            }),
            (None, (Some(reference), Some(total), Some(seq))) => Some(ConcatInfo {
                reference,
                total,
                seq,
            }),
            _ => None,
        };
        Content {
            udh: udh.map(<[u8]>::to_vec),
            concat,
            text: text::decode(u8::from(submit.data_coding), payload),
            payload: payload.to_vec(),
        }
    }
}

impl SubmitRecord {
    pub(crate) fn new(
        at: DateTime<Utc>,
        system_id: &str,
        message_id: &str,
        submit: &SubmitSm,
        content: Content,
    ) -> SubmitRecord {
        SubmitRecord {
            at,
            system_id: system_id.to_owned(),
            message_id: message_id.to_owned(),
            source_addr: submit.source_addr.as_str().to_owned(),
            source_ton: u8::from(submit.source_addr_ton),
            source_npi: u8::from(submit.source_addr_npi),
            destination_addr: submit.destination_addr.as_str().to_owned(),
            dest_ton: u8::from(submit.dest_addr_ton),
            dest_npi: u8::from(submit.dest_addr_npi),
            esm_class: u8::from(submit.esm_class),
            data_coding: u8::from(submit.data_coding),
            registered_delivery: u8::from(submit.registered_delivery),
            validity_period: submit.validity_period.as_str().to_owned(),
            udh: content.udh,
            concat: content.concat,
            text: content.text,
            payload: content.payload,
        }
    }
}

/// The bounded, append-only log of accepted submits. Indexes are absolute (counted from the
/// first record ever kept), so paging stays stable while old records are evicted.
#[derive(Debug)]
pub(crate) struct RecordLog {
    cap: usize,
    // A std mutex: pushes and page copies are short and never cross an await.
    inner: Mutex<Log>,
}

#[derive(Debug, Default)]
struct Log {
    items: VecDeque<SubmitRecord>,
    evicted: usize,
}

impl RecordLog {
    pub(crate) fn new(cap: usize) -> RecordLog {
        RecordLog {
            cap,
            inner: Mutex::new(Log::default()),
        }
    }

    /// Whether records are kept at all (building them is skipped otherwise).
    pub(crate) fn enabled(&self) -> bool {
        self.cap > 0
    }

    fn lock(&self) -> MutexGuard<'_, Log> {
        // A panic elsewhere while holding the lock cannot leave the log half-written.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn push(&self, record: SubmitRecord) {
        let mut log = self.lock();
        if log.items.len() >= self.cap {
            log.items.pop_front();
            log.evicted += 1;
        }
        log.items.push_back(record);
    }

    pub(crate) fn all(&self) -> Vec<SubmitRecord> {
        self.lock().items.iter().cloned().collect()
    }

    /// Records `offset..offset+limit` by absolute index (evicted ones are skipped).
    pub(crate) fn page(&self, offset: usize, limit: usize) -> Vec<SubmitRecord> {
        let log = self.lock();
        let start = offset.saturating_sub(log.evicted);
        log.items.iter().skip(start).take(limit).cloned().collect()
    }
}
