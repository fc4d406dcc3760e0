//! The in-memory working set both stores share: messages that are not final
//! yet, their priority queues, leases, the schedule and the SMSC-id index.
//!
//! [`MemoryStore`](super::MemoryStore) keeps finished messages here too; the
//! durable store evicts them (they live on disk) so memory holds only work in
//! progress.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use chrono::{DateTime, Utc};

use super::store::{QueueDepths, Released};
use crate::message::{Applied, Message, MessageId, Status, Transition};

/// Messages in progress and the structures that order them.
#[derive(Default)]
pub(crate) struct ActiveSet {
    messages: HashMap<MessageId, Message>,
    queues: [VecDeque<MessageId>; 3],
    leased: HashSet<MessageId>,
    scheduled: BTreeSet<(DateTime<Utc>, MessageId)>,
    smsc_index: HashMap<(String, String), (MessageId, u32)>,
    /// Keep final messages (memory store) or evict them (durable store).
    keep_final: bool,
}

impl ActiveSet {
    /// An empty set; `keep_final` decides whether finished messages stay.
    pub(crate) fn new(keep_final: bool) -> Self {
        Self {
            keep_final,
            ..Self::default()
        }
    }

    /// Adds a message: queued ones join the tail of their queue, scheduled ones
    /// the schedule, submitted ones the SMSC-id index (recovery).
    pub(crate) fn insert(&mut self, m: Message) {
        for (segment, s) in m.segments.iter().enumerate() {
            if let (Some(carrier), Some(smsc_id)) = (&m.carrier, &s.smsc_id) {
                self.smsc_index
                    .insert((carrier.clone(), smsc_id.clone()), (m.id, segment as u32));
            }
        }
        match (m.status, m.send_at) {
            (Status::Scheduled, Some(at)) => {
                self.scheduled.insert((at, m.id));
            }
            (Status::Queued, _) => self.queues[m.kind.index()].push_back(m.id),
            _ => {}
        }
        self.messages.insert(m.id, m);
    }

    /// A message in the set.
    pub(crate) fn get(&self, id: &MessageId) -> Option<&Message> {
        self.messages.get(id)
    }

    /// Leases up to `max` queued messages, highest priority first, counting an attempt.
    pub(crate) fn lease(&mut self, max: usize) -> Vec<Message> {
        let mut out = Vec::new();
        for k in 0..self.queues.len() {
            while out.len() < max {
                let Some(id) = self.queues[k].pop_front() else {
                    break;
                };
                if let Some(m) = self.messages.get_mut(&id) {
                    m.attempts += 1;
                    self.leased.insert(id);
                    out.push(m.clone());
                }
            }
        }
        out
    }

    /// Applies one transition and keeps queues, leases, schedule and index in
    /// step. `None` when the message is not in the set.
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
            self.smsc_index
                .insert((carrier.clone(), smsc_id.clone()), (id, *segment));
        }
        let was_leased = self.leased.remove(&id);
        match (t, m.status) {
            (Transition::Requeue, Status::Queued) if was_leased => {
                self.queues[m.kind.index()].push_front(id);
            }
            (Transition::Release, Status::Queued) if before == Status::Scheduled => {
                if let Some(at) = m.send_at {
                    self.scheduled.remove(&(at, id));
                }
                self.queues[m.kind.index()].push_back(id);
            }
            (_, Status::Queued) if was_leased => {
                // Still being worked on (e.g. some segments accepted): keep the lease.
                self.leased.insert(id);
            }
            (_, Status::Queued) => {}
            (_, _) => {
                if !was_leased && before == Status::Queued {
                    self.queues[m.kind.index()].retain(|q| *q != id);
                }
                if before == Status::Scheduled
                    && let Some(at) = m.send_at
                {
                    self.scheduled.remove(&(at, id));
                }
            }
        }
        if m.status.is_final() && !self.keep_final {
            self.evict(&m);
        }
        Some((m, applied))
    }

    /// Releases scheduled messages due at `now`; returns them (now queued).
    pub(crate) fn release_due(&mut self, now: DateTime<Utc>) -> (Vec<Message>, Released) {
        let mut out = Vec::new();
        while let Some(&(at, id)) = self.scheduled.first() {
            if at > now {
                break;
            }
            self.scheduled.pop_first();
            if let Some((m, Applied::StatusChanged(_))) = self.apply(id, &Transition::Release) {
                out.push(m);
            }
        }
        let released = Released {
            released: out.len(),
            next_due: self.scheduled.first().map(|(at, _)| *at),
        };
        (out, released)
    }

    /// The message and segment an SMSC id belongs to.
    pub(crate) fn find_by_smsc_id(&self, carrier: &str, smsc_id: &str) -> Option<(MessageId, u32)> {
        self.smsc_index
            .get(&(carrier.to_owned(), smsc_id.to_owned()))
            .copied()
    }

    /// Current queue depths.
    pub(crate) fn depths(&self) -> QueueDepths {
        QueueDepths {
            queued: [
                self.queues[0].len(),
                self.queues[1].len(),
                self.queues[2].len(),
            ],
            leased: self.leased.len(),
            scheduled: self.scheduled.len(),
        }
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

    /// Drops a finished message and its index entries.
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
