//! The in-memory working set both stores share: the messages held in memory
//! (ready ones in the scheduler's window, leased ones, submitted ones
//! awaiting receipts), the schedule, and the SMSC-id → message index.
//!
//! [`MemoryStore`](super::MemoryStore) keeps every message here; the durable
//! store keeps only what is being worked on (finished, scheduled and paged-out
//! ready messages live on disk), so memory stays bounded however deep the
//! backlog.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};

use crate::message::{Applied, Message, MessageId, Status, Transition};

/// Messages in memory and the structures that find them.
#[derive(Default)]
pub(crate) struct ActiveSet {
    messages: HashMap<MessageId, Message>,
    scheduled: BTreeSet<(DateTime<Utc>, MessageId)>,
    smsc_index: HashMap<(String, String), (MessageId, u32)>,
    /// Keep every message (memory store) or only work in progress (durable store).
    keep_all: bool,
}

impl ActiveSet {
    /// An empty set; `keep_all` keeps finished and scheduled messages too.
    pub(crate) fn new(keep_all: bool) -> Self {
        Self {
            keep_all,
            ..Self::default()
        }
    }

    /// Adds a message: indexes its SMSC ids, puts a scheduled one on the
    /// schedule, and holds it in memory (a scheduled one only when keeping all).
    pub(crate) fn insert(&mut self, m: Message) {
        self.index(&m);
        if let (Status::Scheduled, Some(at)) = (m.status, m.send_at) {
            self.scheduled.insert((at, m.id));
            if !self.keep_all {
                return;
            }
        }
        self.messages.insert(m.id, m);
    }

    /// Holds a message read from disk (to apply a transition to it),
    /// whatever its status.
    pub(crate) fn insert_held(&mut self, m: Message) {
        self.index(&m);
        self.messages.insert(m.id, m);
    }

    /// Indexes a message's SMSC ids without holding it (recovery of a
    /// partly submitted message that waits on disk).
    pub(crate) fn index(&mut self, m: &Message) {
        for (segment, s) in m.segments.iter().enumerate() {
            if let (Some(carrier), Some(smsc_id)) = (&m.carrier, &s.smsc_id) {
                self.index_segment(carrier, smsc_id, m.id, segment as u32);
            }
        }
    }

    /// Puts a message on the schedule without holding it (recovery).
    pub(crate) fn schedule(&mut self, at: DateTime<Utc>, id: MessageId) {
        self.scheduled.insert((at, id));
    }

    /// A message held in memory.
    pub(crate) fn get(&self, id: &MessageId) -> Option<&Message> {
        self.messages.get(id)
    }

    /// Whether the message is held in memory.
    pub(crate) fn holds(&self, id: &MessageId) -> bool {
        self.messages.contains_key(id)
    }

    /// Stops holding ready messages that wait on disk (the scheduler's
    /// window is full). A no-op when keeping all.
    pub(crate) fn release_memory(&mut self, ids: &[MessageId]) {
        if self.keep_all {
            return;
        }
        for id in ids {
            if self
                .messages
                .get(id)
                .is_some_and(|m| m.status == Status::Queued)
            {
                self.messages.remove(id);
            }
        }
    }

    /// Applies one transition and keeps the schedule and index in step.
    /// `None` when the message is not held.
    /// Points an SMSC id at a segment. Segments sent in one PDU (a
    /// `message_payload` submit) share the id: it stays on the lowest, the
    /// segment whose receipt settles them all.
    fn index_segment(&mut self, carrier: &str, smsc_id: &str, id: MessageId, segment: u32) {
        let key = (carrier.to_owned(), smsc_id.to_owned());
        match self.smsc_index.get(&key) {
            Some(&(same, lower)) if same == id && lower <= segment => {}
            _ => {
                self.smsc_index.insert(key, (id, segment));
            }
        }
    }

    pub(crate) fn apply(&mut self, id: MessageId, t: &Transition) -> Option<(Message, Applied)> {
        let m = self.messages.get_mut(&id)?;
        let before = m.status;
        let applied = m.apply(t);
        let m = m.clone();
        if let Transition::SegmentAccepted {
            carrier,
            segment,
            smsc_id,
            ..
        } = t
        {
            self.index_segment(carrier, smsc_id, id, *segment);
        }
        if before == Status::Scheduled
            && m.status != Status::Scheduled
            && let Some(at) = m.send_at
        {
            self.scheduled.remove(&(at, id));
        }
        if m.status.is_final() && !self.keep_all {
            self.evict(&m);
        }
        Some((m, applied))
    }

    /// Takes up to `limit` scheduled messages due at `now` off the schedule;
    /// returns their ids (to be released) and when the next one falls due.
    pub(crate) fn take_due(
        &mut self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> (Vec<MessageId>, Option<DateTime<Utc>>) {
        let mut due = Vec::new();
        while let Some(&(at, id)) = self.scheduled.first() {
            if at > now || due.len() >= limit {
                break;
            }
            self.scheduled.pop_first();
            due.push(id);
        }
        (due, self.scheduled.first().map(|(at, _)| *at))
    }

    /// The message and segment an SMSC id belongs to.
    pub(crate) fn find_by_smsc_id(&self, carrier: &str, smsc_id: &str) -> Option<(MessageId, u32)> {
        self.smsc_index
            .get(&(carrier.to_owned(), smsc_id.to_owned()))
            .copied()
    }

    /// Scheduled messages not yet due.
    pub(crate) fn scheduled_count(&self) -> usize {
        self.scheduled.len()
    }

    /// Stops tracking submitted messages whose receipt has not come by
    /// `cutoff` (they stay `submitted` on disk); returns their ids.
    pub(crate) fn evict_submitted_before(&mut self, cutoff: DateTime<Utc>) -> Vec<MessageId> {
        let stale: Vec<Message> = self
            .messages
            .values()
            .filter(|m| {
                m.status == Status::Submitted && m.submitted_at.is_some_and(|at| at < cutoff)
            })
            .cloned()
            .collect();
        stale.iter().for_each(|m| self.evict(m));
        stale.into_iter().map(|m| m.id).collect()
    }

    /// Drops a message and its index entries.
    fn evict(&mut self, m: &Message) {
        self.messages.remove(&m.id);
        if let Some(carrier) = &m.carrier {
            for s in &m.segments {
                if let Some(smsc_id) = &s.smsc_id {
                    self.smsc_index.remove(&(carrier.clone(), smsc_id.clone()));
                }
            }
        }
    }
}
