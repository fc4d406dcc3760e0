//! The dead-letter record: delivery receipts that never found their message
//! (unknown id after the carrier's `receipt_wait_s`, or unreadable), kept for
//! operators (`GET /admin/dlr/unmatched`) instead of only being logged.
//!
//! It lives in memory, bounded to the newest [`KEPT`] receipts: a restart
//! forgets it, and `smsgate_dlr_unmatched_total{carrier}` keeps the count.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

/// Receipts kept; older ones are dropped first.
pub const KEPT: usize = 10_000;

/// Why a receipt was given up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UnmatchedReason {
    /// No message has its id (also after retrying for the carrier's `receipt_wait_s`).
    UnknownId,
    /// The deliver_sm looked like a receipt but carried no id or no state.
    Unparseable,
}

/// One receipt given up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct UnmatchedReceipt {
    /// Carrier it came from.
    pub carrier: String,
    /// Why it was given up.
    pub reason: UnmatchedReason,
    /// The id it quoted (the receipted_message_id TLV, else the text's `id:`).
    pub smsc_message_id: Option<String>,
    /// The receipted_message_id TLV, when present.
    pub tlv_id: Option<String>,
    /// The text's `id:` field, when present.
    pub text_id: Option<String>,
    /// The state it reported (`DELIVRD`, `UNDELIV`, ...).
    pub state: Option<String>,
    /// The error it carried (`err:` and/or network error).
    pub error: Option<String>,
    /// For an unreadable receipt: what was wrong and the start of its text.
    pub detail: Option<String>,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
    /// When it was given up.
    pub given_up_at: DateTime<Utc>,
    /// Lookups against the index before giving up.
    pub attempts: u32,
}

/// The record: a cheap, cloneable handle.
#[derive(Clone, Debug)]
pub struct DeadLetters {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    kept: VecDeque<UnmatchedReceipt>,
    capacity: usize,
    total: u64,
}

impl Default for DeadLetters {
    fn default() -> Self {
        Self::new(KEPT)
    }
}

impl DeadLetters {
    /// An empty record keeping at most `capacity` receipts.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                kept: VecDeque::new(),
                capacity: capacity.max(1),
                total: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere cannot leave the deque inconsistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a receipt, dropping the oldest beyond the capacity.
    pub fn record(&self, receipt: UnmatchedReceipt) {
        let mut inner = self.lock();
        if inner.kept.len() >= inner.capacity {
            inner.kept.pop_front();
        }
        inner.kept.push_back(receipt);
        inner.total += 1;
    }

    /// The newest `limit` receipts (of `carrier`, when given), newest first,
    /// and how many were given up since start.
    pub fn list(&self, carrier: Option<&str>, limit: usize) -> (Vec<UnmatchedReceipt>, u64) {
        let inner = self.lock();
        let receipts = inner
            .kept
            .iter()
            .rev()
            .filter(|r| carrier.is_none_or(|c| r.carrier == c))
            .take(limit)
            .cloned()
            .collect();
        (receipts, inner.total)
    }

    /// Receipts held now.
    pub fn len(&self) -> usize {
        self.lock().kept.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unmatched(carrier: &str, id: &str) -> UnmatchedReceipt {
        UnmatchedReceipt {
            carrier: carrier.into(),
            reason: UnmatchedReason::UnknownId,
            smsc_message_id: Some(id.into()),
            tlv_id: None,
            text_id: Some(id.into()),
            state: Some("DELIVRD".into()),
            error: None,
            detail: None,
            received_at: Utc::now(),
            given_up_at: Utc::now(),
            attempts: 3,
        }
    }

    #[test]
    fn newest_first_bounded_and_filtered_by_carrier() {
        let d = DeadLetters::new(3);
        for i in 0..5 {
            d.record(unmatched(
                if i % 2 == 0 { "a" } else { "b" },
                &i.to_string(),
            ));
        }
        let (all, total) = d.list(None, 10);
        assert_eq!(total, 5);
        let ids: Vec<_> = all.iter().map(|r| r.text_id.clone().unwrap()).collect();
        assert_eq!(ids, ["4", "3", "2"]);
        let (a, _) = d.list(Some("a"), 10);
        assert_eq!(a.len(), 2);
        assert_eq!(d.list(None, 1).0.len(), 1);
        assert_eq!(d.len(), 3);
    }
}
