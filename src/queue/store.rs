//! The `Store` seam: where messages, their queues, the schedule and the
//! SMSC-id → message index live.
//!
//! Designed for a durable backend: writes come in batches (one commit per
//! batch), every change to a message is a [`Transition`] applied atomically,
//! and a message stays `queued` in the store until a carrier's answer is
//! committed, so a crash while it was in a carrier's hands loses nothing (it
//! is simply ready again on recovery). The scheduling policy (priorities,
//! fairness, routes) lives in the queue above; the store keeps the ready
//! index it pages from.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::message::{Applied, Kind, Message, MessageId, Transition};

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
    /// Ready messages per kind (in memory, in the store, waiting out a retry
    /// delay), indexed by [`crate::message::Kind::index`].
    pub queued: [usize; 3],
    /// Scheduled messages not yet due.
    pub scheduled: usize,
}

/// The outcome of [`Store::release_due`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Released {
    /// Messages moved from the schedule to `queued` (held in memory).
    pub messages: Vec<Message>,
    /// When the next scheduled message falls due, if any.
    pub next_due: Option<DateTime<Utc>>,
}

/// A page of an account's ready messages, read from the store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadyPage {
    /// Ready messages that were not in memory, now held there, oldest first.
    pub messages: Vec<Message>,
    /// The highest id the read went through.
    pub last: Option<MessageId>,
    /// The read reached the end of the account's ready messages.
    pub exhausted: bool,
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
    /// SHA-256 of the first request's route and body: a repeat with another
    /// body is refused. `None` in records from before it was kept.
    pub fingerprint: Option<Vec<u8>>,
}

impl IdempotencyRecord {
    /// Reads a stored record (postcard), also one written before
    /// fingerprints were kept.
    pub fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes).or_else(|e| {
            postcard::from_bytes::<IdempotencyRecordV1>(bytes)
                .map(Self::from)
                .map_err(|_| e)
        })
    }
}

/// An [`IdempotencyRecord`] as stored before fingerprints were kept.
#[derive(serde::Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct IdempotencyRecordV1 {
    account: String,
    key: String,
    status: u16,
    body: Vec<u8>,
    created_at: DateTime<Utc>,
}

impl From<IdempotencyRecordV1> for IdempotencyRecord {
    fn from(r: IdempotencyRecordV1) -> Self {
        Self {
            account: r.account,
            key: r.key,
            status: r.status,
            body: r.body,
            created_at: r.created_at,
            fingerprint: None,
        }
    }
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

/// An inbound (MO) message as the account it concerns sees it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InboundRecord {
    /// Id (a ULID: sorts by arrival); the listing's cursor.
    pub id: MessageId,
    /// The account the number or sender written to belongs to.
    pub account: String,
    /// The handset, E.164 when it parsed, else as the SMSC gave it.
    pub from: String,
    /// The number or sender id it was written to.
    pub to: String,
    /// Decoded text.
    pub text: String,
    /// Carrier it came in on.
    pub carrier: String,
    /// The keyword it was (`stop`, `start`, `help`), if any.
    pub keyword: Option<String>,
    /// When the gateway received it.
    pub received_at: DateTime<Utc>,
}

/// One opt-out/consent change, as another node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreferenceChange {
    /// Opt-out or consent.
    pub kind: PreferenceKind,
    /// Account id.
    pub account: String,
    /// Recipient, E.164.
    pub e164: String,
    /// The preference now (`None`: removed).
    pub value: Option<Preference>,
}

/// A status webhook waiting in the outbox.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WebhookEvent {
    /// The message.
    #[serde(with = "crate::message::stored::id")]
    pub message_id: MessageId,
    /// 1 for `submitted`, 2 for the final status: delivered in this order.
    pub rank: u8,
    /// Owning account (whose secret signs it).
    pub account: String,
    /// Where it goes.
    pub url: String,
    /// The JSON body, signed as is.
    #[serde(with = "crate::message::stored::bytes")]
    pub body: Vec<u8>,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// When the status changed.
    #[serde(with = "crate::message::stored::instant")]
    pub created_at: DateTime<Utc>,
    /// Next attempt not before.
    #[serde(with = "crate::message::stored::instant")]
    pub due: DateTime<Utc>,
}

impl WebhookEvent {
    /// The event for a message's new status, if it sends one.
    pub fn for_message(m: &Message, at: DateTime<Utc>) -> Option<Self> {
        Some(Self {
            message_id: m.id,
            rank: m.webhook_rank()?,
            account: m.account.clone(),
            url: m.callback_url.clone()?,
            body: m.webhook_body(at),
            attempts: 0,
            created_at: at,
            due: at,
        })
    }

    /// The event's place in the outbox.
    pub fn position(&self) -> OutboxPosition {
        OutboxPosition {
            due: self.due,
            message_id: self.message_id,
            rank: self.rank,
        }
    }
}

/// Where an event sits in the outbox's order (due time, message, rank): a
/// reader's place to continue from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct OutboxPosition {
    /// The event's due time.
    pub due: DateTime<Utc>,
    /// Its message.
    pub message_id: MessageId,
    /// Its rank.
    pub rank: u8,
}

impl OutboxPosition {
    /// A position just before every event due at `due` or later (to the
    /// millisecond, the outbox's key resolution): a read from here starts at
    /// `due`'s millisecond.
    pub fn before(due: DateTime<Utc>) -> Self {
        Self {
            due: due - chrono::TimeDelta::milliseconds(1),
            message_id: MessageId::from_bytes([0xFF; 16]),
            rank: u8::MAX,
        }
    }
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

    /// The message if it is held in memory (cheap; the scheduler's lease path).
    fn held(&self, id: MessageId) -> Option<Message>;

    /// Stops holding these ready messages in memory: they wait on disk until
    /// [`Store::page_ready`] brings them back.
    fn release_memory(&self, ids: &[MessageId]);

    /// Whether ready messages can wait on disk (and be paged back); when
    /// not, the scheduler keeps every ready message in memory.
    fn pages(&self) -> bool;

    /// Up to `limit` of an account's ready messages of `kind` after id
    /// `after`, oldest first, skipping those already in memory.
    async fn page_ready(
        &self,
        _kind: Kind,
        _account: &str,
        _after: Option<MessageId>,
        _limit: usize,
    ) -> Result<ReadyPage, StoreError> {
        Ok(ReadyPage {
            exhausted: true,
            ..ReadyPage::default()
        })
    }

    /// Ready messages on disk and not in memory when the store opened, per
    /// kind and account (the scheduler pages them in).
    fn recovered_ready(&self) -> Vec<(Kind, String, usize)> {
        Vec::new()
    }

    /// Applies transitions in one commit, maintaining the ready index, the
    /// schedule and the SMSC-id index. Returns, per transition, the message
    /// after it (`None` for an unknown id).
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

    /// Moves up to `limit` scheduled messages due at `now` to `queued`.
    async fn release_due(&self, now: DateTime<Utc>, limit: usize) -> Result<Released, StoreError>;

    /// Scheduled messages not yet due (cheap; called on every metrics scrape).
    fn scheduled_count(&self) -> usize;

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

    /// Stores inbound messages (one commit); durable on return. Retention
    /// removes them with finished messages.
    async fn save_inbound(&self, records: Vec<InboundRecord>) -> Result<(), StoreError>;

    /// Up to `limit` of an account's inbound messages received after the one
    /// with id `after` (from the oldest when `None`), oldest first.
    async fn list_inbound(
        &self,
        account: &str,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<InboundRecord>, StoreError>;

    /// Up to `limit` outbox webhooks due at `now`, earliest first, starting
    /// just past `after` (from the outbox's head when `None`).
    async fn webhooks_due(
        &self,
        after: Option<OutboxPosition>,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<WebhookEvent>, StoreError>;

    /// Whether the message still has an undelivered webhook of this rank.
    async fn webhook_pending(&self, id: MessageId, rank: u8) -> Result<bool, StoreError>;

    /// Settles an outbox webhook: delivered or given up (`None`, removed), or
    /// moved to a new due time (`Some(event)` with its new `due`/`attempts`).
    async fn webhook_settle(
        &self,
        event: &WebhookEvent,
        retry: Option<WebhookEvent>,
    ) -> Result<(), StoreError>;

    /// Takes over the work of nodes sharing the store whose lease ran out
    /// (crashed or stopped for good): their ready, scheduled and
    /// receipt-awaiting messages become this node's. Returns the ready
    /// messages adopted, per kind and account (the scheduler pages them in).
    async fn adopt_orphans(&self) -> Result<Vec<(Kind, String, usize)>, StoreError> {
        Ok(Vec::new())
    }

    /// Opt-out/consent changes committed (by any node) after `cursor`, and
    /// the cursor to pass next time. `None` asks only for where the changes
    /// end now (call it before [`Store::load_preferences`]).
    async fn preference_changes(
        &self,
        cursor: Option<String>,
    ) -> Result<(Option<String>, Vec<PreferenceChange>), StoreError> {
        Ok((cursor, Vec::new()))
    }

    /// Claims `key` among every node sharing the store for `ttl` (an
    /// Idempotency-Key being processed); `false` when another node holds it.
    /// A store only this node uses has nothing to claim.
    async fn claim(&self, _key: &str, _ttl: std::time::Duration) -> Result<bool, StoreError> {
        Ok(true)
    }

    /// Gives a [`Store::claim`] back.
    async fn release_claim(&self, _key: &str) -> Result<(), StoreError> {
        Ok(())
    }

    /// Whether other gateway nodes share this store (then receipts may
    /// arrive at a node that did not send their message).
    fn shared(&self) -> bool {
        false
    }

    /// The other node that sent the segment with this SMSC id, if another
    /// node sharing the store did.
    async fn smsc_owner(
        &self,
        _carrier: &str,
        _smsc_id: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(None)
    }

    /// Hands a receipt (opaque bytes) to `node`.
    async fn forward_receipt(&self, _node: &str, _record: Vec<u8>) -> Result<(), StoreError> {
        Ok(())
    }

    /// Up to `limit` receipts other nodes handed to this one, oldest first.
    async fn take_forwarded(&self, _limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(Vec::new())
    }

    /// Flushes everything to disk before the process exits.
    async fn close(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idempotency_record_from_before_fingerprints_still_reads() {
        let at = Utc::now();
        let old = IdempotencyRecordV1 {
            account: "acme".into(),
            key: "k".into(),
            status: 202,
            body: b"{}".to_vec(),
            created_at: at,
        };
        let bytes = postcard::to_stdvec(&old).unwrap();
        let read = IdempotencyRecord::decode(&bytes).unwrap();
        assert_eq!((read.key.as_str(), read.fingerprint), ("k", None));
        let new = IdempotencyRecord {
            fingerprint: Some(vec![1; 32]),
            ..read
        };
        let bytes = postcard::to_stdvec(&new).unwrap();
        assert_eq!(IdempotencyRecord::decode(&bytes).unwrap(), new);
        assert!(IdempotencyRecord::decode(&[0xFF]).is_err());
    }
}
