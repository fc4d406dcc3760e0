//! Domain types shared by every stage: a message, its kind and status, and the
//! transitions that move it from `queued` to a final status.
//!
//! The status logic lives here, not in the stores: a store applies a
//! [`Transition`] to a [`Message`] inside its own atomic section by calling
//! [`Message::apply`], so every backend aggregates segment receipts the same way.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ulid::Ulid;
use utoipa::ToSchema;

pub(crate) mod stored;

use crate::dlr::receipt::ReceiptState;
use crate::encoding::Encoding;

/// A message's id: a ULID, so ids sort by creation time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(Ulid);

impl MessageId {
    /// A fresh id for a message accepted now; ids generated in this process
    /// only ever increase (monotonic within the same millisecond), so a
    /// cursor over ids never skips a later one.
    pub fn generate() -> Self {
        static GENERATOR: std::sync::Mutex<ulid::Generator> =
            std::sync::Mutex::new(ulid::Generator::new());
        let mut generator = GENERATOR.lock().unwrap_or_else(|p| p.into_inner());
        // Overflow needs 2^80 ids in one millisecond; fall back to a random one.
        Self(generator.generate().unwrap_or_else(|_| Ulid::new()))
    }

    /// The id just before this one in sort order (`None` for the smallest).
    pub fn predecessor(self) -> Option<Self> {
        self.0.0.checked_sub(1).map(|n| Self(Ulid(n)))
    }

    /// The 16 big-endian bytes of the ULID (sorts by creation time).
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_bytes()
    }

    /// Reads an id written by [`MessageId::to_bytes`].
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(Ulid::from_bytes(bytes))
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for MessageId {
    type Err = ulid::DecodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ulid::from_string(s).map(Self)
    }
}

/// What a message is for; sets its priority (OTP first, marketing last).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// One-time passwords: highest priority, short validity.
    Otp,
    /// Notifications the recipient expects (orders, alerts).
    Transactional,
    /// Promotional traffic: lowest priority, most compliance rules.
    Marketing,
}

impl Kind {
    /// Every kind, highest priority first.
    pub const ALL: [Kind; 3] = [Kind::Otp, Kind::Transactional, Kind::Marketing];

    /// The kind's name as used in the API and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Otp => "otp",
            Kind::Transactional => "transactional",
            Kind::Marketing => "marketing",
        }
    }

    /// Position in [`Kind::ALL`]: 0 is the highest priority.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Where a message is in its life. See the HTTP API spec for the state machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Accepted with a `send_at` in the future.
    Scheduled,
    /// Waiting for a carrier bind.
    Queued,
    /// Every segment was accepted by the carrier (submit_sm_resp OK).
    Submitted,
    /// Every segment was delivered to the handset.
    Delivered,
    /// At least one segment could not be delivered.
    Undeliverable,
    /// The validity ran out (before submission, or at the SMSC).
    Expired,
    /// The carrier refused it permanently.
    Failed,
    /// Refused at admission (never stored as queued).
    Rejected,
}

impl Status {
    /// True once nothing more will happen to the message.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Status::Delivered
                | Status::Undeliverable
                | Status::Expired
                | Status::Failed
                | Status::Rejected
        )
    }

    /// The status's name as used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Scheduled => "scheduled",
            Status::Queued => "queued",
            Status::Submitted => "submitted",
            Status::Delivered => "delivered",
            Status::Undeliverable => "undeliverable",
            Status::Expired => "expired",
            Status::Failed => "failed",
            Status::Rejected => "rejected",
        }
    }
}

/// A machine code plus a human sentence, as in the API's error envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorInfo {
    /// Stable snake_case code.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

impl ErrorInfo {
    /// Builds an error from a code and a sentence.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// Delivery state of one segment (one submit_sm) of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SegmentState {
    /// Not yet accepted by a carrier.
    Pending,
    /// Accepted by the carrier; no final receipt yet.
    Submitted,
    /// Receipt said delivered.
    Delivered,
    /// Receipt said it failed (UNDELIV, REJECTD, DELETED, UNKNOWN).
    Undeliverable,
    /// Receipt said the SMSC gave up when the validity ran out.
    Expired,
}

/// One segment of a message as the carrier saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// Id the SMSC gave in submit_sm_resp.
    pub smsc_id: Option<String>,
    /// Latest known state.
    pub state: SegmentState,
    /// Error the receipt carried (`err:` code / network error), if any.
    pub error: Option<String>,
}

impl Segment {
    fn pending() -> Self {
        Self {
            smsc_id: None,
            state: SegmentState::Pending,
            error: None,
        }
    }
}

/// An accepted message and everything known about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Gateway id.
    #[serde(with = "stored::id")]
    pub id: MessageId,
    /// Id of the account that sent it.
    pub account: String,
    /// Recipient in E.164 (`+` and digits).
    pub to: String,
    /// ISO 3166 alpha-2 country of the recipient.
    pub country: String,
    /// Sender: alphanumeric id, number or short code.
    pub from: String,
    /// The text as the client sent it.
    pub text: String,
    /// Priority class.
    pub kind: Kind,
    /// Encoding chosen at admission.
    pub encoding: Encoding,
    /// Concatenation reference used for every segment of this message.
    pub concat_ref: u8,
    /// Per-segment carrier state; its length is the segment count.
    pub segments: Vec<Segment>,
    /// Client's own reference, echoed back.
    pub client_ref: Option<String>,
    /// Where status webhooks go.
    pub callback_url: Option<String>,
    /// Current status.
    pub status: Status,
    /// Carrier that took the message.
    pub carrier: Option<String>,
    /// Why it failed, when it did.
    pub error: Option<ErrorInfo>,
    /// When it was accepted.
    #[serde(with = "stored::instant")]
    pub created_at: DateTime<Utc>,
    /// When it should be sent (scheduled messages).
    #[serde(default, with = "stored::optional_instant")]
    pub send_at: Option<DateTime<Utc>>,
    /// Never submitted after this instant.
    #[serde(with = "stored::instant")]
    pub expires_at: DateTime<Utc>,
    /// When every segment was accepted by the carrier.
    #[serde(default, with = "stored::optional_instant")]
    pub submitted_at: Option<DateTime<Utc>>,
    /// When it reached a final status.
    #[serde(default, with = "stored::optional_instant")]
    pub done_at: Option<DateTime<Utc>>,
    /// How many times it was handed to a carrier.
    pub attempts: u32,
    /// Sent even to a recipient who opted out: the confirmation of their own
    /// STOP, or an OTP where the country lets OTPs ignore opt-outs.
    pub opt_out_exempt: bool,
    /// Transient carrier errors so far (throttling and lost connections do
    /// not count); the message fails when they reach the attempt limit.
    pub retries: u32,
}

/// Everything needed to create a message; see [`Message::new`].
#[derive(Clone, Debug)]
pub struct NewMessage {
    /// Owning account id.
    pub account: String,
    /// Recipient in E.164.
    pub to: String,
    /// Recipient's country (ISO alpha-2).
    pub country: String,
    /// Sender id.
    pub from: String,
    /// Text.
    pub text: String,
    /// Priority class.
    pub kind: Kind,
    /// Encoding from the text plan.
    pub encoding: Encoding,
    /// Segment count from the text plan.
    pub segments: u32,
    /// Client reference.
    pub client_ref: Option<String>,
    /// Webhook target.
    pub callback_url: Option<String>,
    /// Scheduled send time.
    pub send_at: Option<DateTime<Utc>>,
    /// Validity deadline.
    pub expires_at: DateTime<Utc>,
    /// See [`Message::opt_out_exempt`].
    pub opt_out_exempt: bool,
}

/// A change to a stored message, applied atomically by a store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Transition {
    /// The carrier accepted one segment (0-based) under `smsc_id`.
    SegmentAccepted {
        /// Carrier name.
        carrier: String,
        /// Segment index.
        segment: u32,
        /// SMSC message id from submit_sm_resp.
        smsc_id: String,
        /// When the response arrived.
        at: DateTime<Utc>,
    },
    /// A delivery receipt for one segment.
    SegmentReceipt {
        /// Segment index.
        segment: u32,
        /// State the receipt reported.
        state: ReceiptState,
        /// Error code the receipt carried.
        error: Option<String>,
        /// When the receipt arrived.
        at: DateTime<Utc>,
        /// Which segments the carrier reports on (its profile): with `first`
        /// or `last`, that segment's receipt stands for the whole message.
        multipart: MultipartReceipts,
    },
    /// Hand the message back to its queue at once, no attempt counted
    /// (throttled, disconnected, shutting down).
    Requeue,
    /// A transient carrier error: try again after a backoff, unless this was
    /// the last of `max_attempts`, then the message fails with `error`.
    Retry {
        /// What went wrong.
        error: ErrorInfo,
        /// Attempts allowed in all.
        max_attempts: u32,
        /// When.
        at: DateTime<Utc>,
    },
    /// The carrier refused it for good.
    Fail {
        /// Why.
        error: ErrorInfo,
        /// When.
        at: DateTime<Utc>,
    },
    /// The validity ran out before it could be submitted.
    Expire {
        /// When.
        at: DateTime<Utc>,
    },
    /// A scheduled message's time has come.
    Release,
}

/// Which segments of a concatenated message an SMSC sends receipts for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MultipartReceipts {
    /// Every segment gets its own receipt; the message is delivered when all are.
    #[default]
    All,
    /// Only the first segment's id is reported; its receipt settles the message.
    First,
    /// Only the last segment's id is reported; its receipt settles the message.
    Last,
}

impl MultipartReceipts {
    /// Whether a receipt for `segment` (0-based, of `count`) stands for the
    /// whole message.
    pub fn reported_by(self, segment: u32, count: usize) -> bool {
        match self {
            MultipartReceipts::All => false,
            MultipartReceipts::First => segment == 0,
            MultipartReceipts::Last => segment as usize + 1 == count,
        }
    }
}

/// What [`Message::apply`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The status changed from the given one.
    StatusChanged(Status),
    /// Recorded, but the status stayed the same.
    Recorded,
    /// Ignored: the message was already final, or the segment index was out of range.
    Ignored,
}

impl Message {
    /// Creates a message in status `queued`, or `scheduled` when `send_at` is in the future.
    pub fn new(n: NewMessage, now: DateTime<Utc>, concat_ref: u8) -> Self {
        let status = match n.send_at {
            Some(at) if at > now => Status::Scheduled,
            _ => Status::Queued,
        };
        let segments = (0..n.segments.max(1)).map(|_| Segment::pending()).collect();
        Self {
            id: MessageId::generate(),
            account: n.account,
            to: n.to,
            country: n.country,
            from: n.from,
            text: n.text,
            kind: n.kind,
            encoding: n.encoding,
            concat_ref,
            segments,
            client_ref: n.client_ref,
            callback_url: n.callback_url,
            status,
            carrier: None,
            error: None,
            created_at: now,
            send_at: n.send_at,
            expires_at: n.expires_at,
            submitted_at: None,
            done_at: None,
            attempts: 0,
            opt_out_exempt: n.opt_out_exempt,
            retries: 0,
        }
    }

    /// Indexes of the segments no carrier has accepted yet (all of them on a first attempt).
    pub fn pending_segments(&self) -> impl Iterator<Item = u32> + '_ {
        self.segments
            .iter()
            .enumerate()
            .filter(|(_, s)| s.state == SegmentState::Pending)
            .map(|(i, _)| i as u32)
    }

    /// The webhook rank of its status: 1 for `submitted`, 2 for a final
    /// status, `None` for statuses that send no webhook (scheduled, queued).
    /// Events of one message are delivered in rank order.
    pub fn webhook_rank(&self) -> Option<u8> {
        match self.status {
            Status::Submitted => Some(1),
            s if s.is_final() => Some(2),
            _ => None,
        }
    }

    /// The status webhook body for the current status (the HTTP API's
    /// contract): `{id, status, client_ref, error, timestamp,
    /// segments_delivered, segments}`.
    pub fn webhook_body(&self, at: DateTime<Utc>) -> Vec<u8> {
        let delivered = self
            .segments
            .iter()
            .filter(|s| s.state == SegmentState::Delivered)
            .count();
        let body = serde_json::json!({
            "id": self.id.to_string(),
            "status": self.status,
            "client_ref": self.client_ref,
            "error": self.error,
            "timestamp": at,
            "segments_delivered": delivered,
            "segments": self.segments.len(),
        });
        serde_json::to_vec(&body).unwrap_or_default()
    }

    /// SMSC ids of the accepted segments, in segment order.
    pub fn smsc_message_ids(&self) -> Vec<String> {
        self.segments
            .iter()
            .filter_map(|s| s.smsc_id.clone())
            .collect()
    }

    /// Applies a transition and reports what changed. Transitions on a final
    /// message are ignored (a late receipt cannot revive it).
    pub fn apply(&mut self, t: &Transition) -> Applied {
        let before = self.status;
        if before.is_final() {
            return Applied::Ignored;
        }
        match t {
            Transition::SegmentAccepted {
                carrier,
                segment,
                smsc_id,
                at,
            } => {
                let Some(seg) = self.segments.get_mut(*segment as usize) else {
                    return Applied::Ignored;
                };
                seg.smsc_id = Some(smsc_id.clone());
                if seg.state == SegmentState::Pending {
                    seg.state = SegmentState::Submitted;
                }
                self.carrier = Some(carrier.clone());
                if self.status == Status::Queued && self.pending_segments().next().is_none() {
                    self.status = Status::Submitted;
                    self.submitted_at = Some(*at);
                }
            }
            Transition::SegmentReceipt {
                segment,
                state,
                error,
                at,
                multipart,
            } => {
                let count = self.segments.len();
                let Some(seg) = self.segments.get_mut(*segment as usize) else {
                    return Applied::Ignored;
                };
                let Some(new_state) = segment_state_for(*state) else {
                    return Applied::Recorded; // intermediate (ENROUTE, ACCEPTD): nothing ends
                };
                seg.state = new_state;
                if error.is_some() {
                    seg.error = error.clone();
                }
                if multipart.reported_by(*segment, count) {
                    self.settle_unreported(new_state, error);
                }
                self.aggregate_receipts(*at);
            }
            Transition::Requeue => {
                if self.status == Status::Queued {
                    return Applied::Recorded;
                }
            }
            Transition::Retry {
                error,
                max_attempts,
                at,
            } => {
                if self.status != Status::Queued {
                    return Applied::Ignored;
                }
                self.retries += 1;
                if self.retries >= *max_attempts {
                    self.status = Status::Failed;
                    self.error = Some(ErrorInfo::new(
                        error.code.clone(),
                        format!(
                            "{} (gave up after {} attempts)",
                            error.message, self.retries
                        ),
                    ));
                    self.done_at = Some(*at);
                }
            }
            Transition::Fail { error, at } => {
                self.status = Status::Failed;
                self.error = Some(error.clone());
                self.done_at = Some(*at);
            }
            Transition::Expire { at } => {
                self.status = Status::Expired;
                self.error = Some(ErrorInfo::new(
                    "validity_expired",
                    "The message's validity ran out before it could be submitted.",
                ));
                self.done_at = Some(*at);
            }
            Transition::Release => {
                if self.status == Status::Scheduled {
                    self.status = Status::Queued;
                }
            }
        }
        if self.status != before {
            Applied::StatusChanged(before)
        } else {
            Applied::Recorded
        }
    }

    /// The receipt of the one segment a `first`/`last` carrier reports on
    /// stands for the others it accepted: they take its state. Segments not
    /// yet accepted (a partial submit being retried) keep waiting to be sent.
    fn settle_unreported(&mut self, state: SegmentState, error: &Option<String>) {
        for seg in &mut self.segments {
            if seg.state == SegmentState::Submitted {
                seg.state = state;
                if error.is_some() {
                    seg.error = error.clone();
                }
            }
        }
    }

    /// A message is delivered only when every segment is; undeliverable (or
    /// expired) as soon as any segment is.
    fn aggregate_receipts(&mut self, at: DateTime<Utc>) {
        let failed = self
            .segments
            .iter()
            .find(|s| matches!(s.state, SegmentState::Undeliverable | SegmentState::Expired));
        if let Some(seg) = failed {
            let (status, code) = if seg.state == SegmentState::Expired {
                (Status::Expired, "smsc_expired")
            } else {
                (Status::Undeliverable, "undeliverable")
            };
            let detail = seg.error.clone().unwrap_or_else(|| "none".to_owned());
            self.status = status;
            self.error = Some(ErrorInfo::new(
                code,
                format!("The carrier reported a segment as not delivered (error {detail})."),
            ));
            self.done_at = Some(at);
        } else if self
            .segments
            .iter()
            .all(|s| s.state == SegmentState::Delivered)
        {
            self.status = Status::Delivered;
            self.done_at = Some(at);
            if self.submitted_at.is_none() {
                self.submitted_at = Some(at);
            }
        }
    }
}

/// A message for unit tests: GB recipient, GSM text, valid for an hour.
#[cfg(test)]
pub(crate) fn sample(text: &str, kind: Kind, segments: u32) -> Message {
    let now = Utc::now();
    Message::new(
        NewMessage {
            account: "a".into(),
            to: "+447400123456".into(),
            country: "GB".into(),
            from: "ACME".into(),
            text: text.into(),
            kind,
            encoding: Encoding::Gsm7,
            segments,
            client_ref: None,
            callback_url: None,
            send_at: None,
            expires_at: now + chrono::Duration::hours(1),
            opt_out_exempt: false,
        },
        now,
        1,
    )
}

/// Maps a receipt state onto a segment state; `None` for intermediate states.
fn segment_state_for(state: ReceiptState) -> Option<SegmentState> {
    match state {
        ReceiptState::Delivered => Some(SegmentState::Delivered),
        ReceiptState::Expired => Some(SegmentState::Expired),
        ReceiptState::Undeliverable
        | ReceiptState::Rejected
        | ReceiptState::Deleted
        | ReceiptState::Unknown
        | ReceiptState::Skipped => Some(SegmentState::Undeliverable),
        ReceiptState::Enroute | ReceiptState::Accepted | ReceiptState::Scheduled => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(segments: u32) -> Message {
        sample("hi", Kind::Otp, segments)
    }

    fn accept(m: &mut Message, segment: u32) {
        m.apply(&Transition::SegmentAccepted {
            carrier: "c".into(),
            segment,
            smsc_id: format!("id{segment}"),
            at: Utc::now(),
        });
    }

    fn receipt(m: &mut Message, segment: u32, state: ReceiptState) -> Applied {
        receipt_in(m, segment, state, MultipartReceipts::All)
    }

    fn receipt_in(
        m: &mut Message,
        segment: u32,
        state: ReceiptState,
        multipart: MultipartReceipts,
    ) -> Applied {
        m.apply(&Transition::SegmentReceipt {
            segment,
            state,
            error: None,
            at: Utc::now(),
            multipart,
        })
    }

    #[test]
    fn submitted_only_when_every_segment_is_accepted() {
        let mut m = message(2);
        accept(&mut m, 0);
        assert_eq!(m.status, Status::Queued);
        assert_eq!(m.pending_segments().collect::<Vec<_>>(), vec![1]);
        accept(&mut m, 1);
        assert_eq!(m.status, Status::Submitted);
        assert_eq!(m.smsc_message_ids(), vec!["id0", "id1"]);
    }

    #[test]
    fn multipart_is_delivered_only_after_every_receipt() {
        let mut m = message(3);
        (0..3).for_each(|s| accept(&mut m, s));
        receipt(&mut m, 0, ReceiptState::Delivered);
        receipt(&mut m, 2, ReceiptState::Delivered);
        assert_eq!(m.status, Status::Submitted);
        receipt(&mut m, 1, ReceiptState::Delivered);
        assert_eq!(m.status, Status::Delivered);
    }

    #[test]
    fn one_undeliverable_segment_makes_the_message_undeliverable() {
        let mut m = message(4);
        (0..4).for_each(|s| accept(&mut m, s));
        receipt(&mut m, 0, ReceiptState::Delivered);
        receipt(&mut m, 3, ReceiptState::Undeliverable);
        assert_eq!(m.status, Status::Undeliverable);
        // A later delivered receipt does not revive it.
        assert_eq!(
            receipt(&mut m, 1, ReceiptState::Delivered),
            Applied::Ignored
        );
        assert_eq!(m.status, Status::Undeliverable);
    }

    #[test]
    fn intermediate_receipts_do_not_end_the_message() {
        let mut m = message(1);
        accept(&mut m, 0);
        receipt(&mut m, 0, ReceiptState::Enroute);
        receipt(&mut m, 0, ReceiptState::Accepted);
        assert_eq!(m.status, Status::Submitted);
    }

    #[test]
    fn first_mode_settles_the_message_on_the_first_segments_receipt() {
        let mut m = message(4);
        (0..4).for_each(|s| accept(&mut m, s));
        // A receipt for another segment is that segment's own news.
        receipt_in(&mut m, 2, ReceiptState::Delivered, MultipartReceipts::First);
        assert_eq!(m.status, Status::Submitted);
        receipt_in(&mut m, 0, ReceiptState::Delivered, MultipartReceipts::First);
        assert_eq!(m.status, Status::Delivered);
        assert!(
            m.segments
                .iter()
                .all(|s| s.state == SegmentState::Delivered)
        );

        let mut m = message(4);
        (0..4).for_each(|s| accept(&mut m, s));
        receipt_in(&mut m, 0, ReceiptState::Expired, MultipartReceipts::First);
        assert_eq!(m.status, Status::Expired);
    }

    #[test]
    fn last_mode_waits_for_the_last_segment() {
        let mut m = message(4);
        (0..4).for_each(|s| accept(&mut m, s));
        receipt_in(&mut m, 0, ReceiptState::Enroute, MultipartReceipts::Last);
        receipt_in(&mut m, 3, ReceiptState::Enroute, MultipartReceipts::Last);
        assert_eq!(m.status, Status::Submitted);
        receipt_in(&mut m, 3, ReceiptState::Delivered, MultipartReceipts::Last);
        assert_eq!(m.status, Status::Delivered);

        let mut m = message(3);
        (0..3).for_each(|s| accept(&mut m, s));
        receipt_in(
            &mut m,
            2,
            ReceiptState::Undeliverable,
            MultipartReceipts::Last,
        );
        assert_eq!(m.status, Status::Undeliverable);
    }

    #[test]
    fn a_settling_receipt_leaves_segments_not_yet_sent_alone() {
        let mut m = message(3);
        accept(&mut m, 0);
        accept(&mut m, 1);
        receipt_in(&mut m, 0, ReceiptState::Delivered, MultipartReceipts::First);
        assert_eq!(m.status, Status::Queued);
        assert_eq!(m.pending_segments().collect::<Vec<_>>(), vec![2]);
        assert_eq!(m.segments[1].state, SegmentState::Delivered);
    }

    #[test]
    fn every_receipt_state_maps_to_a_status() {
        let cases = [
            ("DELIVRD", Status::Delivered),
            ("EXPIRED", Status::Expired),
            ("DELETED", Status::Undeliverable),
            ("UNDELIV", Status::Undeliverable),
            ("ACCEPTD", Status::Submitted),
            ("UNKNOWN", Status::Undeliverable),
            ("REJECTD", Status::Undeliverable),
            ("ENROUTE", Status::Submitted),
        ];
        for (stat, status) in cases {
            let mut m = message(1);
            accept(&mut m, 0);
            let state = ReceiptState::from_stat(stat).unwrap();
            m.apply(&Transition::SegmentReceipt {
                segment: 0,
                state,
                error: Some("001 (network 3:1)".into()),
                at: Utc::now(),
                multipart: MultipartReceipts::All,
            });
            assert_eq!(m.status, status, "{stat}");
            assert_eq!(m.done_at.is_some(), status.is_final(), "{stat}");
            if status.is_final() && status != Status::Delivered {
                let error = m.error.as_ref().unwrap();
                assert!(error.message.contains("001 (network 3:1)"), "{error:?}");
            }
        }
    }

    #[test]
    fn reported_by_picks_the_segment_each_mode_reports() {
        assert!(!MultipartReceipts::All.reported_by(0, 4));
        assert!(MultipartReceipts::First.reported_by(0, 4));
        assert!(!MultipartReceipts::First.reported_by(3, 4));
        assert!(MultipartReceipts::Last.reported_by(3, 4));
        assert!(!MultipartReceipts::Last.reported_by(0, 4));
        assert!(MultipartReceipts::Last.reported_by(0, 1));
    }

    #[test]
    fn out_of_range_segment_is_ignored() {
        let mut m = message(1);
        assert_eq!(
            receipt(&mut m, 7, ReceiptState::Delivered),
            Applied::Ignored
        );
    }
}
