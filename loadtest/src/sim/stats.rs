//! Counters, bumped lock-free on the hot path and read as one [`SimStats`] snapshot.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

/// A snapshot of the simulator's counters (served as JSON by `GET /stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SimStats {
    /// Successful binds since start.
    pub binds_total: u64,
    /// Sessions bound right now.
    pub binds_active: u64,
    /// submit_sm accepted (answered with ESME_ROK and a message id).
    pub submits_ok: u64,
    /// submit_sm answered ESME_RTHROTTLED because of `throttle_tps`.
    pub submits_throttled: u64,
    /// submit_sm answered with another error (error injection, wrong bind state).
    pub submits_error: u64,
    /// Receipts acknowledged by the ESME with a deliver_sm_resp ESME_ROK.
    pub receipts_sent: u64,
    /// Receipts owed but not acknowledged yet (waiting for their delay, for a bind, or for a
    /// deliver_sm_resp).
    pub receipts_pending: u64,
    /// Of `receipts_pending`: due, but no receiver/transceiver of that system_id has room.
    pub receipts_queued: u64,
    /// Receipts the ESME refused (non-zero deliver_sm_resp); each is retried later.
    pub receipts_refused: u64,
    /// Mobile-originated deliver_sm sent.
    pub mo_sent: u64,
    /// deliver_sm_resp received (receipts and MO).
    pub deliver_sm_resp_received: u64,
    /// Connections that ended without an unbind (peer closed, I/O error, `drop_connections`).
    pub disconnects: u64,
    /// Sessions that ended with an unbind (from the ESME, or ours at shutdown).
    pub unbinds: u64,
    /// generic_nack sent for unknown or undecodable PDUs.
    pub generic_nacks: u64,
    /// Receipts sent before the submit_sm_resp carrying their id (`receipt_before_resp`).
    pub receipts_before_resp: u64,
}

/// The live counters behind [`SimStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub binds_total: AtomicU64,
    pub submits_ok: AtomicU64,
    pub submits_throttled: AtomicU64,
    pub submits_error: AtomicU64,
    /// Receipts created (each is owed to the ESME until acknowledged).
    pub receipts_owed: AtomicU64,
    pub receipts_sent: AtomicU64,
    pub receipts_refused: AtomicU64,
    pub mo_sent: AtomicU64,
    pub deliver_sm_resp_received: AtomicU64,
    pub disconnects: AtomicU64,
    pub unbinds: AtomicU64,
    pub generic_nacks: AtomicU64,
    pub receipts_before_resp: AtomicU64,
}

/// Increments a counter by one.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(&self, binds_active: u64, receipts_queued: u64) -> SimStats {
        let owed = self.receipts_owed.load(Relaxed);
        let sent = self.receipts_sent.load(Relaxed);
        SimStats {
            binds_total: self.binds_total.load(Relaxed),
            binds_active,
            submits_ok: self.submits_ok.load(Relaxed),
            submits_throttled: self.submits_throttled.load(Relaxed),
            submits_error: self.submits_error.load(Relaxed),
            receipts_sent: sent,
            receipts_pending: owed.saturating_sub(sent),
            receipts_queued,
            receipts_refused: self.receipts_refused.load(Relaxed),
            mo_sent: self.mo_sent.load(Relaxed),
            deliver_sm_resp_received: self.deliver_sm_resp_received.load(Relaxed),
            disconnects: self.disconnects.load(Relaxed),
            unbinds: self.unbinds.load(Relaxed),
            generic_nacks: self.generic_nacks.load(Relaxed),
            receipts_before_resp: self.receipts_before_resp.load(Relaxed),
        }
    }
}
