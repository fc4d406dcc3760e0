//! In-memory [`Store`]: fast and simple, but everything is lost with the
//! process. The durable embedded store replaces it as the default.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::store::{AppliedTransition, QueueDepths, Released, Store, StoreError};
use crate::message::{Message, MessageId, Status, Transition};

/// A [`Store`] held in process memory.
#[derive(Default)]
pub struct MemoryStore {
    // A std mutex: every critical section is a few map operations and never
    // spans an `.await`, so an async mutex would only add overhead.
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    messages: HashMap<MessageId, Message>,
    queues: [VecDeque<MessageId>; 3],
    leased: HashSet<MessageId>,
    scheduled: BTreeSet<(DateTime<Utc>, MessageId)>,
    smsc_index: HashMap<(String, String), (MessageId, u32)>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated in a
        // way that matters more than losing the process, so recover the guard.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    fn enqueue(&mut self, m: &Message, front: bool) {
        let q = &mut self.queues[m.kind.index()];
        if front {
            q.push_front(m.id);
        } else {
            q.push_back(m.id);
        }
    }

    fn unqueue(&mut self, m: &Message) {
        self.queues[m.kind.index()].retain(|id| *id != m.id);
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn append(&self, messages: Vec<Message>) -> Result<(), StoreError> {
        let mut inner = self.lock();
        for m in messages {
            match (m.status, m.send_at) {
                (Status::Scheduled, Some(at)) => {
                    inner.scheduled.insert((at, m.id));
                }
                (Status::Queued, _) => inner.enqueue(&m, false),
                _ => {}
            }
            inner.messages.insert(m.id, m);
        }
        Ok(())
    }

    async fn get(&self, id: MessageId) -> Result<Option<Message>, StoreError> {
        Ok(self.lock().messages.get(&id).cloned())
    }

    async fn lease(&self, max: usize) -> Result<Vec<Message>, StoreError> {
        let mut inner = self.lock();
        let mut out = Vec::new();
        for k in 0..3 {
            while out.len() < max {
                let Some(id) = inner.queues[k].pop_front() else {
                    break;
                };
                if let Some(m) = inner.messages.get(&id) {
                    let m = m.clone();
                    inner.leased.insert(id);
                    out.push(m);
                }
            }
        }
        Ok(out)
    }

    async fn apply(
        &self,
        batch: Vec<(MessageId, Transition)>,
    ) -> Result<Vec<AppliedTransition>, StoreError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let mut out = Vec::with_capacity(batch.len());
        for (id, t) in batch {
            let Some(m) = inner.messages.get_mut(&id) else {
                out.push(None);
                continue;
            };
            let before = m.status;
            let applied = m.apply(&t);
            let m = m.clone();
            if let Transition::SegmentAccepted {
                carrier,
                segment,
                smsc_id,
                ..
            } = &t
            {
                inner
                    .smsc_index
                    .insert((carrier.clone(), smsc_id.clone()), (id, *segment));
            }
            let was_leased = inner.leased.contains(&id);
            match (&t, m.status) {
                (Transition::Requeue, Status::Queued) if was_leased => {
                    inner.leased.remove(&id);
                    inner.enqueue(&m, true);
                }
                (Transition::Release, Status::Queued) if before == Status::Scheduled => {
                    if let Some(at) = m.send_at {
                        inner.scheduled.remove(&(at, id));
                    }
                    inner.enqueue(&m, false);
                }
                (_, Status::Queued) => {}
                (_, _) => {
                    // Submitted or final: no longer the queue's business.
                    if !inner.leased.remove(&id) && before == Status::Queued {
                        inner.unqueue(&m);
                    }
                    if before == Status::Scheduled
                        && let Some(at) = m.send_at
                    {
                        inner.scheduled.remove(&(at, id));
                    }
                }
            }
            out.push(Some((m, applied)));
        }
        Ok(out)
    }

    async fn find_by_smsc_id(
        &self,
        carrier: &str,
        smsc_id: &str,
    ) -> Result<Option<(MessageId, u32)>, StoreError> {
        Ok(self
            .lock()
            .smsc_index
            .get(&(carrier.to_owned(), smsc_id.to_owned()))
            .copied())
    }

    async fn release_due(&self, now: DateTime<Utc>) -> Result<Released, StoreError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let mut released = 0;
        while let Some(&(at, id)) = inner.scheduled.first() {
            if at > now {
                break;
            }
            inner.scheduled.pop_first();
            if let Some(m) = inner.messages.get_mut(&id) {
                m.apply(&Transition::Release);
                if m.status == Status::Queued {
                    let m = m.clone();
                    inner.enqueue(&m, false);
                    released += 1;
                }
            }
        }
        Ok(Released {
            released,
            next_due: inner.scheduled.first().map(|(at, _)| *at),
        })
    }

    fn depths(&self) -> QueueDepths {
        let inner = self.lock();
        QueueDepths {
            queued: [
                inner.queues[0].len(),
                inner.queues[1].len(),
                inner.queues[2].len(),
            ],
            leased: inner.leased.len(),
            scheduled: inner.scheduled.len(),
        }
    }
}
