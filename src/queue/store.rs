//! The `Store` seam: where messages, their queues, the schedule and the
//! SMSC-id → message index live.
//!
//! Designed for a durable backend: writes come in batches (one commit per
//! batch), every change to a message is a [`Transition`] applied atomically,
//! and the queue is a lease/ack protocol so a crash between lease and ack
//! loses nothing (leased messages are simply queued again on recovery).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::message::{Applied, Message, MessageId, Transition};

/// A store failure. The API maps it to 503; nothing is acknowledged on error.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (I/O, corruption, connection).
    #[error("store backend error: {0}")]
    Backend(String),
}

/// How many messages wait where, for metrics and back-pressure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueDepths {
    /// Queued (ready) messages per kind, indexed by [`crate::message::Kind::index`].
    pub queued: [usize; 3],
    /// Messages leased to a carrier bind and not yet settled.
    pub leased: usize,
    /// Scheduled messages not yet due.
    pub scheduled: usize,
}

/// The outcome of [`Store::release_due`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Released {
    /// Messages moved from the schedule to their queue.
    pub released: usize,
    /// When the next scheduled message falls due, if any.
    pub next_due: Option<DateTime<Utc>>,
}

/// The first answer to a request that carried an `Idempotency-Key`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdempotencyRecord {
    /// Account that sent the request.
    pub account: String,
    /// The client's key.
    pub key: String,
    /// HTTP status of the first answer.
    pub status: u16,
    /// Body of the first answer.
    pub body: Vec<u8>,
    /// When the first request was answered.
    pub created_at: DateTime<Utc>,
}

/// Which per-recipient preference list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum PreferenceKind {
    /// The recipient opted out of the account's messages.
    OptOut,
    /// The recipient consented to the account's marketing.
    Consent,
}

/// One recipient's opt-out or consent with an account.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Preference {
    /// Opt-out or consent.
    pub kind: PreferenceKind,
    /// Account id.
    pub account: String,
    /// Recipient, E.164.
    pub e164: String,
    /// Since when.
    pub since: DateTime<Utc>,
    /// Where it came from: `api` or `mo_keyword`.
    pub source: String,
}

/// A message after a transition, with what the transition did.
pub type AppliedTransition = Option<(Message, Applied)>;

/// Storage for messages, queues, schedule and the SMSC-id index.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores new messages in one commit (with the idempotency record of the
    /// request, if any): `queued` ones join the tail of their kind's queue,
    /// `scheduled` ones the schedule. Returns once the commit is durable.
    async fn append(
        &self,
        messages: Vec<Message>,
        idempotency: Option<IdempotencyRecord>,
    ) -> Result<(), StoreError>;

    /// The remembered answer for an account's Idempotency-Key, if any.
    async fn idempotency(
        &self,
        account: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError>;

    /// Looks a message up by id.
    async fn get(&self, id: MessageId) -> Result<Option<Message>, StoreError>;

    /// Leases up to `max` queued messages, highest-priority kind first, FIFO
    /// within a kind. A leased message is not handed out again until a
    /// transition requeues it or settles it.
    async fn lease(&self, max: usize) -> Result<Vec<Message>, StoreError>;

    /// Applies transitions in one commit, maintaining queues, leases and the
    /// SMSC-id index. Returns, per transition, the message after it (`None` for
    /// an unknown id).
    async fn apply(
        &self,
        batch: Vec<(MessageId, Transition)>,
    ) -> Result<Vec<AppliedTransition>, StoreError>;

    /// Finds the message and segment a carrier's SMSC message id belongs to.
    async fn find_by_smsc_id(
        &self,
        carrier: &str,
        smsc_id: &str,
    ) -> Result<Option<(MessageId, u32)>, StoreError>;

    /// Moves scheduled messages due at `now` into their queues.
    async fn release_due(&self, now: DateTime<Utc>) -> Result<Released, StoreError>;

    /// Current queue depths (cheap; called on every metrics scrape).
    fn depths(&self) -> QueueDepths;

    /// Housekeeping: removes finished messages older than the retention and
    /// idempotency keys past their time, and stops waiting for receipts of
    /// messages submitted before `dlr_cutoff`. Works in small batches so the
    /// hot path is not stalled. Returns how many records it removed.
    async fn compact(
        &self,
        _finished_before: DateTime<Utc>,
        _idempotency_before: DateTime<Utc>,
        _dlr_cutoff: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        Ok(0)
    }

    /// Records (`Some`) or removes (`None`) a recipient's preference; durable on return.
    async fn save_preference(
        &self,
        kind: PreferenceKind,
        account: &str,
        e164: &str,
        value: Option<Preference>,
    ) -> Result<(), StoreError>;

    /// Every stored preference (loaded into memory at start).
    async fn load_preferences(&self) -> Result<Vec<Preference>, StoreError>;

    /// Flushes everything to disk before the process exits.
    async fn close(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
