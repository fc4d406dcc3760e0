//! The queue stage: accepted messages wait here, by priority, until a carrier
//! bind takes them; every later change to a message goes through here too, so
//! status-change metrics (and, later, webhooks) have one source.
//!
//! [`Queue`] is the stage's public entry. It owns a [`Store`] (the seam for the
//! durable backend) and wakes carrier binds when work arrives.

mod active;
pub mod durable;
pub mod memory;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::message::{Applied, Kind, Message, MessageId, Status, Transition};
use crate::metrics::Metrics;

pub use durable::DurableStore;
pub use memory::MemoryStore;
pub use store::{
    AppliedTransition, IdempotencyRecord, Preference, PreferenceKind, QueueDepths, Store,
    StoreError,
};

/// Longest a waiting bind or the scheduler sleeps without re-checking the store.
const RECHECK: Duration = Duration::from_secs(1);

/// Why a message could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    /// The backlog is at its configured maximum (back-pressure: retry later).
    #[error("the queue holds {backlog} messages, its maximum")]
    Overloaded {
        /// Messages waiting now.
        backlog: usize,
    },
    /// The store failed; nothing was accepted.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The priority queue in front of the carriers.
pub struct Queue {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    max_backlog: usize,
    /// Woken when messages become ready (new, requeued, released).
    ready: Notify,
    /// Woken when a scheduled message is appended (it may be due sooner).
    schedule_changed: Notify,
}

impl Queue {
    /// A queue over `store` that refuses new messages beyond `max_backlog` waiting.
    pub fn new(store: Arc<dyn Store>, metrics: Arc<Metrics>, max_backlog: usize) -> Arc<Self> {
        Arc::new(Self {
            store,
            metrics,
            max_backlog,
            ready: Notify::new(),
            schedule_changed: Notify::new(),
        })
    }

    /// Stores accepted messages (one commit, together with the request's
    /// idempotency record) and wakes the binds. Returns only once the store
    /// has them durably; refuses them when the backlog is full.
    pub async fn enqueue(
        &self,
        messages: Vec<Message>,
        idempotency: Option<IdempotencyRecord>,
    ) -> Result<(), EnqueueError> {
        let d = self.store.depths();
        let backlog = d.queued.iter().sum::<usize>() + d.scheduled;
        if backlog + messages.len() > self.max_backlog {
            return Err(EnqueueError::Overloaded { backlog });
        }
        let scheduled = messages.iter().any(|m| m.status == Status::Scheduled);
        self.store.append(messages, idempotency).await?;
        self.ready.notify_waiters();
        if scheduled {
            self.schedule_changed.notify_one();
        }
        Ok(())
    }

    /// The remembered answer for an account's Idempotency-Key.
    pub async fn idempotency(
        &self,
        account: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.store.idempotency(account, key).await
    }

    /// Housekeeping; see [`Store::compact`].
    pub async fn compact(
        &self,
        finished_before: chrono::DateTime<Utc>,
        idempotency_before: chrono::DateTime<Utc>,
        dlr_cutoff: chrono::DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        self.store
            .compact(finished_before, idempotency_before, dlr_cutoff)
            .await
    }

    /// Flushes the store before exit.
    pub async fn close(&self) -> Result<(), StoreError> {
        self.store.close().await
    }

    /// Looks a message up.
    pub async fn get(&self, id: MessageId) -> Result<Option<Message>, StoreError> {
        self.store.get(id).await
    }

    /// Finds the message a carrier's SMSC id belongs to.
    pub async fn find_by_smsc_id(
        &self,
        carrier: &str,
        smsc_id: &str,
    ) -> Result<Option<(MessageId, u32)>, StoreError> {
        self.store.find_by_smsc_id(carrier, smsc_id).await
    }

    /// Waits for up to `max` ready messages, highest priority first. Messages
    /// whose validity has run out are settled as `expired` here and never
    /// returned, so a stale message is never submitted. Returns `None` when
    /// `cancel` fires first.
    pub async fn take(&self, max: usize, cancel: &CancellationToken) -> Option<Vec<Message>> {
        loop {
            let notified = self.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.store.lease(max).await {
                Ok(batch) if !batch.is_empty() => {
                    let now = Utc::now();
                    let (fresh, stale): (Vec<_>, Vec<_>) =
                        batch.into_iter().partition(|m| m.expires_at > now);
                    if !stale.is_empty() {
                        let expire = stale
                            .iter()
                            .map(|m| (m.id, Transition::Expire { at: now }))
                            .collect();
                        if let Err(e) = self.apply(expire).await {
                            tracing::error!(error = %e, "cannot expire stale messages");
                        }
                    }
                    if !fresh.is_empty() {
                        return Some(fresh);
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "cannot lease messages"),
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = cancel.cancelled() => return None,
                _ = tokio::time::sleep(RECHECK) => {}
            }
        }
    }

    /// Applies transitions (one commit), records status-change metrics, and
    /// wakes the binds when something went back to the queue.
    pub async fn apply(
        &self,
        batch: Vec<(MessageId, Transition)>,
    ) -> Result<Vec<AppliedTransition>, StoreError> {
        let requeued = batch.iter().any(|(_, t)| *t == Transition::Requeue);
        let results = self.store.apply(batch).await?;
        for (m, applied) in results.iter().flatten() {
            if let Applied::StatusChanged(before) = applied {
                self.record_status_change(m, *before);
            }
        }
        if requeued {
            self.ready.notify_waiters();
        }
        Ok(results)
    }

    /// Current queue depths.
    pub fn depths(&self) -> QueueDepths {
        self.store.depths()
    }

    /// Copies the queue depths into the metrics gauges (called on scrape).
    pub fn refresh_gauges(&self) {
        let d = self.depths();
        for kind in Kind::ALL {
            self.metrics
                .queue_depth
                .with_label_values(&[kind.as_str()])
                .set(d.queued[kind.index()] as i64);
        }
        self.metrics
            .queue_depth
            .with_label_values(&["scheduled"])
            .set(d.scheduled as i64);
    }

    /// Moves scheduled messages to their queues as they fall due, until `cancel`.
    pub async fn run_scheduler(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            let changed = self.schedule_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let wait = match self.store.release_due(Utc::now()).await {
                Ok(r) => {
                    if r.released > 0 {
                        self.ready.notify_waiters();
                    }
                    r.next_due
                        .and_then(|at| (at - Utc::now()).to_std().ok())
                        .map_or(RECHECK, |d| d.min(RECHECK))
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot release scheduled messages");
                    RECHECK
                }
            };
            tokio::select! {
                _ = &mut changed => {}
                _ = tokio::time::sleep(wait) => {}
                _ = cancel.cancelled() => return,
            }
        }
    }

    fn record_status_change(&self, m: &Message, before: Status) {
        let kind = m.kind.as_str();
        let carrier = m.carrier.as_deref().unwrap_or("none");
        let metrics = &self.metrics;
        let since = |from: chrono::DateTime<Utc>| {
            (Utc::now() - from)
                .to_std()
                .unwrap_or_default()
                .as_secs_f64()
        };
        match m.status {
            Status::Submitted => {
                metrics.submitted.with_label_values(&[kind, carrier]).inc();
                metrics
                    .accept_to_submit
                    .with_label_values(&[kind])
                    .observe(since(m.created_at));
            }
            Status::Delivered => {
                if before == Status::Queued {
                    // Delivered before every submit_sm_resp was processed: count the submission too.
                    metrics.submitted.with_label_values(&[kind, carrier]).inc();
                }
                metrics.delivered.with_label_values(&[kind, carrier]).inc();
            }
            Status::Undeliverable => {
                metrics
                    .undeliverable
                    .with_label_values(&[kind, carrier])
                    .inc();
            }
            Status::Expired => metrics.expired.with_label_values(&[kind]).inc(),
            Status::Failed => metrics.failed.with_label_values(&[kind, carrier]).inc(),
            Status::Scheduled | Status::Queued | Status::Rejected => {}
        }
        if m.status.is_final()
            && let Some(submitted_at) = m.submitted_at
            && m.status != Status::Failed
        {
            metrics
                .submit_to_dlr
                .with_label_values(&[kind, carrier])
                .observe(since(submitted_at));
        }
    }
}
