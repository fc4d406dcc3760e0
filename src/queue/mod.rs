//! The queue stage: accepted messages wait here until a carrier bind takes
//! them — OTP before transactional before marketing, accounts of a kind in
//! weighted turns, each message only to the carrier its route takes now —
//! and every later change to a message goes through here too, so
//! status-change metrics (and, later, webhooks) have one source.
//!
//! [`Queue`] is the stage's public entry. It owns a [`Store`] (the seam for
//! the durable backend) and the scheduler's in-memory view ([`ready`]),
//! which holds a bounded window per account and pages the rest from the
//! store; it wakes carrier binds when work arrives.

mod active;
pub mod durable;
pub mod memory;
mod ready;
pub mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::carrier::route::{CarrierId, Routing};
use crate::config::SchedulerConfig;
use crate::message::{Applied, Kind, Message, MessageId, Status, Transition};
use crate::metrics::Metrics;
use ready::{Entry, PageRequest, Placement, ReadySet};

pub use durable::{DurableStore, GroupCommit};
pub use memory::MemoryStore;
pub use store::{
    AppliedTransition, IdempotencyRecord, InboundRecord, OutboxPosition, Preference,
    PreferenceChange, PreferenceKind, QueueDepths, ReadyPage, Store, StoreError, WebhookEvent,
};

/// Longest a waiting bind or the scheduler sleeps without re-checking.
const RECHECK: Duration = Duration::from_secs(1);

/// Scheduled messages released per store round trip.
const RELEASE_BATCH: usize = 1000;

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
    routing: Arc<Routing>,
    metrics: Arc<Metrics>,
    config: SchedulerConfig,
    max_backlog: usize,
    ready: Mutex<ReadySet>,
    /// Woken when messages become ready (new, requeued, released, paged in)
    /// or a carrier's availability changes.
    wake: Notify,
    /// Woken when the scheduler should look again (new schedule, retry delay).
    schedule_changed: Notify,
    /// Woken when status webhooks may have been added to the outbox.
    webhooks_changed: Notify,
    /// Woken (one permit, for the DLR stage) when SMSC ids were recorded: a
    /// receipt that overtook its submit's commit can be matched now.
    smsc_ids_recorded: Notify,
}

impl Queue {
    /// A queue over `store` sending along `routing`; accounts take turns by
    /// `weights`; refuses new messages beyond `max_backlog` waiting. Ready
    /// messages the store recovered are paged in as binds ask for work.
    pub fn new(
        store: Arc<dyn Store>,
        routing: Arc<Routing>,
        metrics: Arc<Metrics>,
        config: SchedulerConfig,
        weights: HashMap<String, u32>,
        max_backlog: usize,
    ) -> Arc<Self> {
        let window = if store.pages() {
            config.window_per_queue
        } else {
            usize::MAX
        };
        let mut ready = ReadySet::new(weights, window, config.page_size);
        for (kind, account, count) in store.recovered_ready() {
            ready.add_on_disk(kind, &account, count);
        }
        Arc::new(Self {
            store,
            routing,
            metrics,
            config,
            max_backlog,
            ready: Mutex::new(ready),
            wake: Notify::new(),
            schedule_changed: Notify::new(),
            webhooks_changed: Notify::new(),
            smsc_ids_recorded: Notify::new(),
        })
    }

    fn ready(&self) -> MutexGuard<'_, ReadySet> {
        // Every critical section leaves the set consistent.
        self.ready.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The routes and carriers' health this queue schedules for.
    pub fn routing(&self) -> &Arc<Routing> {
        &self.routing
    }

    fn entry(&self, m: &Message) -> Entry {
        Entry {
            id: m.id,
            route: self.routing.route_of(m.kind, &m.account, &m.country, &m.to),
            expires_at: m.expires_at,
            ready_at: Utc::now(),
        }
    }

    /// Stores accepted messages (one commit, together with the request's
    /// idempotency record) and wakes the binds. Returns only once the store
    /// has them durably; refuses them when the backlog is full.
    pub async fn enqueue(
        &self,
        messages: Vec<Message>,
        idempotency: Option<IdempotencyRecord>,
    ) -> Result<(), EnqueueError> {
        let d = self.depths();
        let backlog = d.queued.iter().sum::<usize>() + d.scheduled;
        if backlog + messages.len() > self.max_backlog {
            return Err(EnqueueError::Overloaded { backlog });
        }
        let scheduled = messages.iter().any(|m| m.status == Status::Scheduled);
        let ready: Vec<(Kind, String, Entry)> = messages
            .iter()
            .filter(|m| m.status == Status::Queued)
            .map(|m| (m.kind, m.account.clone(), self.entry(m)))
            .collect();
        self.store.append(messages, idempotency).await?;
        self.make_ready(ready);
        if scheduled {
            self.schedule_changed.notify_one();
        }
        Ok(())
    }

    /// Puts newly ready messages in the scheduler; those it leaves on disk
    /// are dropped from memory.
    fn make_ready(&self, ready: Vec<(Kind, String, Entry)>) {
        if ready.is_empty() {
            return;
        }
        let on_disk: Vec<MessageId> = {
            let mut set = self.ready();
            ready
                .into_iter()
                .filter(|(kind, account, e)| set.insert(*kind, account, *e) == Placement::Disk)
                .map(|(_, _, e)| e.id)
                .collect()
        };
        if !on_disk.is_empty() {
            self.store.release_memory(&on_disk);
        }
        self.wake.notify_waiters();
    }

    /// Wakes every waiting bind (a carrier came up or went down, so routes
    /// may have changed hands).
    pub fn wake(&self) {
        self.wake.notify_waiters();
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
        finished_before: DateTime<Utc>,
        idempotency_before: DateTime<Utc>,
        dlr_cutoff: DateTime<Utc>,
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

    /// Records inbound messages (durable on return).
    pub async fn save_inbound(&self, records: Vec<InboundRecord>) -> Result<(), StoreError> {
        self.store.save_inbound(records).await
    }

    /// An account's inbound messages after `after`, oldest first.
    pub async fn list_inbound(
        &self,
        account: &str,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<InboundRecord>, StoreError> {
        self.store.list_inbound(account, after, limit).await
    }

    /// Resolves once SMSC ids were recorded since the last call (one waiter:
    /// the DLR stage retries receipts that came before their ids).
    pub fn smsc_ids_recorded(&self) -> tokio::sync::futures::Notified<'_> {
        self.smsc_ids_recorded.notified()
    }

    /// Waits until status webhooks may have been added.
    pub fn webhooks_changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.webhooks_changed.notified()
    }

    /// Outbox webhooks due at `now`; see [`Store::webhooks_due`].
    pub async fn webhooks_due(
        &self,
        after: Option<OutboxPosition>,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<WebhookEvent>, StoreError> {
        self.store.webhooks_due(after, now, limit).await
    }

    /// See [`Store::webhook_pending`].
    pub async fn webhook_pending(&self, id: MessageId, rank: u8) -> Result<bool, StoreError> {
        self.store.webhook_pending(id, rank).await
    }

    /// See [`Store::webhook_settle`].
    pub async fn webhook_settle(
        &self,
        event: &WebhookEvent,
        retry: Option<WebhookEvent>,
    ) -> Result<(), StoreError> {
        self.store.webhook_settle(event, retry).await
    }

    /// Finds the message a carrier's SMSC id belongs to.
    pub async fn find_by_smsc_id(
        &self,
        carrier: &str,
        smsc_id: &str,
    ) -> Result<Option<(MessageId, u32)>, StoreError> {
        self.store.find_by_smsc_id(carrier, smsc_id).await
    }

    /// Claims `key` among every node sharing the store for `ttl`; `false`
    /// while another node holds it.
    pub async fn claim(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.store.claim(key, ttl).await
    }

    /// Gives a claim back.
    pub async fn release_claim(&self, key: &str) -> Result<(), StoreError> {
        self.store.release_claim(key).await
    }

    /// Whether other gateway nodes share the store.
    pub fn shares_store(&self) -> bool {
        self.store.shared()
    }

    /// The other node that sent the segment with this SMSC id, if any.
    pub async fn smsc_owner(
        &self,
        carrier: &str,
        smsc_id: &str,
    ) -> Result<Option<String>, StoreError> {
        self.store.smsc_owner(carrier, smsc_id).await
    }

    /// Hands a receipt to the node that sent its message.
    pub async fn forward_receipt(&self, node: &str, record: Vec<u8>) -> Result<(), StoreError> {
        self.store.forward_receipt(node, record).await
    }

    /// Receipts other nodes handed to this one.
    pub async fn take_forwarded(&self, limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        self.store.take_forwarded(limit).await
    }

    /// Waits for the next message `carrier` should send: the highest kind
    /// first, accounts in turns, only routes the carrier takes now. Messages
    /// whose validity has run out are settled as `expired` on the way and
    /// never returned. `None` when `cancel` fires first.
    ///
    /// Call it once the bind has a free window slot and a rate token, so the
    /// priority order holds at the moment of sending.
    pub async fn take(
        self: &Arc<Self>,
        carrier: CarrierId,
        cancel: &CancellationToken,
    ) -> Option<Message> {
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let taken = {
                let routing = &self.routing;
                self.ready()
                    .take(|route| routing.serves(carrier, route), Utc::now())
            };
            self.spawn_pages(taken.pages);
            self.expire(taken.expired).await;
            if let Some((kind, entry)) = taken.entry {
                match self.store.held(entry.id) {
                    Some(m) if m.status == Status::Queued => {
                        let waited = (Utc::now() - entry.ready_at).to_std().unwrap_or_default();
                        self.metrics
                            .time_in_queue
                            .with_label_values(&[kind.as_str()])
                            .observe(waited.as_secs_f64());
                        return Some(m);
                    }
                    other => {
                        tracing::warn!(id = %entry.id, status = ?other.map(|m| m.status), "scheduled message not ready in the store; skipped");
                        continue;
                    }
                }
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = cancel.cancelled() => return None,
                _ = tokio::time::sleep(RECHECK) => {}
            }
        }
    }

    /// Settles messages found past their validity.
    async fn expire(&self, ids: Vec<MessageId>) {
        if ids.is_empty() {
            return;
        }
        let at = Utc::now();
        let batch = ids
            .into_iter()
            .map(|id| (id, Transition::Expire { at }))
            .collect();
        if let Err(e) = self.apply(batch).await {
            tracing::error!(error = %e, "cannot expire stale messages");
        }
    }

    /// Reads the requested pages from the store in the background and puts
    /// what they bring into the scheduler.
    fn spawn_pages(self: &Arc<Self>, pages: Vec<PageRequest>) {
        for page in pages {
            let queue = self.clone();
            tokio::spawn(async move {
                let result = queue
                    .store
                    .page_ready(page.kind, &page.account, page.after, page.limit)
                    .await;
                match result {
                    Ok(p) => {
                        let entries = p.messages.iter().map(|m| queue.entry(m)).collect();
                        queue
                            .ready()
                            .paged(page.kind, &page.account, entries, p.last, p.exhausted);
                        queue.wake.notify_waiters();
                    }
                    Err(e) => {
                        tracing::error!(error = %e, account = %page.account, "cannot page ready messages in");
                        queue.ready().page_failed(page.kind, &page.account);
                    }
                }
            });
        }
    }

    /// Applies transitions (one commit), records status-change metrics, and
    /// puts messages that are ready again back in the scheduler: at the front
    /// of their lane after a requeue, after a backoff after a retry.
    pub async fn apply(
        &self,
        batch: Vec<(MessageId, Transition)>,
    ) -> Result<Vec<AppliedTransition>, StoreError> {
        let records_ids = batch
            .iter()
            .any(|(_, t)| matches!(t, Transition::SegmentAccepted { .. }));
        let kinds: Vec<Option<bool>> = batch
            .iter()
            .map(|(_, t)| match t {
                Transition::Requeue => Some(false),
                Transition::Retry { .. } => Some(true),
                _ => None,
            })
            .collect();
        let results = self.store.apply(batch).await?;
        if records_ids {
            self.smsc_ids_recorded.notify_one();
        }
        let mut back = false;
        let mut webhooks = false;
        for (result, retry) in results.iter().zip(kinds) {
            let Some((m, applied)) = result else { continue };
            if let Applied::StatusChanged(before) = applied {
                self.record_status_change(m, *before);
                webhooks |= m.callback_url.is_some() && m.webhook_rank().is_some();
            }
            match retry {
                Some(backoff) if m.status == Status::Queued && *applied != Applied::Ignored => {
                    let entry = self.entry(m);
                    if backoff {
                        let until = Instant::now() + self.backoff(m.retries);
                        self.ready().delay(m.kind, &m.account, entry, until);
                        self.schedule_changed.notify_one();
                    } else {
                        self.ready().requeue(m.kind, &m.account, entry);
                        back = true;
                    }
                }
                _ => {}
            }
        }
        if back {
            self.wake.notify_waiters();
        }
        if webhooks {
            self.webhooks_changed.notify_waiters();
        }
        Ok(results)
    }

    /// The delay before retry number `retries`: doubling from the base, capped,
    /// with ±20% jitter so retries of a burst spread out.
    fn backoff(&self, retries: u32) -> Duration {
        crate::backoff::jittered(self.config.retry_base_ms, self.config.retry_max_ms, retries)
    }

    /// Current queue depths.
    pub fn depths(&self) -> QueueDepths {
        QueueDepths {
            queued: self.ready().depths(),
            scheduled: self.store.scheduled_count(),
        }
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
        let by_route = self.ready().windowed_by_route();
        let mut in_memory = [0i64; 3];
        for (kind, _, n) in &by_route {
            in_memory[kind.index()] += *n as i64;
        }
        for kind in Kind::ALL {
            self.metrics
                .queue_in_memory
                .with_label_values(&[kind.as_str()])
                .set(in_memory[kind.index()]);
        }
        let mut by_carrier: HashMap<(Kind, String), i64> = HashMap::new();
        for kind in Kind::ALL {
            for c in self.routing.carriers() {
                by_carrier.insert((kind, c.name.to_string()), 0);
            }
            by_carrier.insert((kind, "none".to_owned()), 0);
        }
        for (kind, route, n) in by_route {
            let carrier = self.routing.carrier_for(route).map_or_else(
                || "none".to_owned(),
                |c| self.routing.health(c).name.to_string(),
            );
            *by_carrier.entry((kind, carrier)).or_default() += n as i64;
        }
        for ((kind, carrier), n) in by_carrier {
            self.metrics
                .queue_depth_by_carrier
                .with_label_values(&[kind.as_str(), &carrier])
                .set(n);
        }
    }

    /// Moves scheduled messages to the ready queues as they fall due, brings
    /// retries back after their delay and expires ready messages no carrier
    /// is taking, until `cancel`.
    pub async fn run_scheduler(self: Arc<Self>, cancel: CancellationToken) {
        let mut last_sweep = Instant::now();
        loop {
            let changed = self.schedule_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let mut wait = RECHECK;
            match self.store.release_due(Utc::now(), RELEASE_BATCH).await {
                Ok(r) => {
                    let full = r.messages.len() == RELEASE_BATCH;
                    let ready = r
                        .messages
                        .iter()
                        .map(|m| (m.kind, m.account.clone(), self.entry(m)))
                        .collect();
                    self.make_ready(ready);
                    if full {
                        wait = Duration::ZERO;
                    } else if let Some(at) = r.next_due {
                        wait = wait.min((at - Utc::now()).to_std().unwrap_or_default());
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot release scheduled messages"),
            }
            let (released, next_retry) = self.ready().release_delayed(Instant::now());
            if released > 0 {
                self.wake.notify_waiters();
            }
            if let Some(at) = next_retry {
                wait = wait.min(at.saturating_duration_since(Instant::now()));
            }
            if last_sweep.elapsed() >= RECHECK {
                last_sweep = Instant::now();
                let expired = self.ready().sweep_expired(Utc::now());
                self.expire(expired).await;
            }
            tokio::select! {
                _ = &mut changed => {}
                _ = tokio::time::sleep(wait) => {}
                _ = cancel.cancelled() => return,
            }
        }
    }

    /// Every `every`, takes over the work of nodes sharing the store whose
    /// lease ran out (a no-op for a store only this node uses).
    pub async fn run_adoption(self: Arc<Self>, every: Duration, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = cancel.cancelled() => return,
            }
            match self.store.adopt_orphans().await {
                Ok(adopted) if !adopted.is_empty() => {
                    {
                        let mut ready = self.ready();
                        for (kind, account, count) in adopted {
                            ready.adopted(kind, &account, count);
                        }
                    }
                    self.schedule_changed.notify_one();
                    self.wake.notify_waiters();
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "cannot adopt the work of stopped nodes"),
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
