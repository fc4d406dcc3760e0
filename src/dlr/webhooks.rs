//! Status webhooks: every status change after `queued` of a message with a
//! callback URL (its own or its account's) is committed to the store's
//! outbox together with the status, and delivered from there — signed with
//! the account's secret, retried with exponential backoff and jitter for up
//! to `give_up_hours`, in status order per message, with bounded concurrency
//! per destination host. Delivery runs apart from sending: a slow or dead
//! endpoint only grows the outbox.
//!
//! [`spawn`] starts the dispatcher.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::callback::CallbackClient;
use crate::config::{AccountConfig, WebhooksConfig};
use crate::message::MessageId;
use crate::metrics::Metrics;
use crate::queue::{OutboxPosition, Queue, StoreError, WebhookEvent};

/// Most events read from the outbox at once.
const ROUND: usize = 256;
/// A read waits for this many free places among the events taken (or for
/// [`GATHER`]), so a backlog is read in rounds rather than an event at a time.
const MIN_ROOM: usize = 32;
/// Longest a read waits to gather [`MIN_ROOM`] free places.
const GATHER: Duration = Duration::from_millis(2);
/// Longest the dispatcher sleeps when nothing wakes it (retries falling due).
const IDLE: Duration = Duration::from_millis(500);
/// How often the outbox is read from its head rather than from where the
/// last read stopped, in case an event was left behind there (also done at
/// once when a delivery ends without settling its event).
const FULL_READ: Duration = Duration::from_secs(30);
/// How often a read starts [`LOOK_BACK`] before where the last one stopped.
/// Under load an event can become visible after later ones (seen: up to
/// ~0.6 s, rarely); this finds it without walking the whole outbox.
const LOOK_BACK_EVERY: Duration = Duration::from_secs(1);
/// How far back those reads start.
const LOOK_BACK: chrono::TimeDelta = chrono::TimeDelta::seconds(3);
/// Delay for an event whose earlier event (same message) is still undelivered.
const WAIT_FOR_EARLIER: Duration = Duration::from_millis(200);
/// How long an event waits in memory for the earlier event of its message
/// that is being delivered, before it goes back to the outbox for later.
const FOLLOW_MAX: Duration = Duration::from_secs(2);
/// How long a settled event is remembered (far longer than an outbox read;
/// long enough that the final event usually finds the `submitted` one here).
const SETTLED_MEMORY: Duration = Duration::from_secs(15);

/// An event's identity: its message and rank.
type EventKey = (MessageId, u8);

/// The signature header value for `body`: `sha256=<hex HMAC-SHA256>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC accepts keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// What became of a settled event.
#[derive(Clone, Copy)]
struct Settled {
    at: Instant,
    /// Out of the outbox (delivered or given up), rather than due again later.
    gone: bool,
}

/// Whether a message's earlier event is out of the way.
enum Earlier {
    /// Delivered or given up: the later event may go.
    Gone,
    /// Still to be delivered: the later event waits.
    Pending,
}

/// Shared state of the dispatcher.
struct Dispatcher {
    queue: Arc<Queue>,
    metrics: Arc<Metrics>,
    config: WebhooksConfig,
    client: CallbackClient,
    secrets: HashMap<String, String>,
    /// Events being delivered (not to be picked up again meanwhile), with
    /// their place in the outbox.
    in_flight: Mutex<HashMap<EventKey, OutboxPosition>>,
    /// Recently settled events: an outbox read that began before an event
    /// was settled may still hold the old copy, which must not go out again;
    /// and a later event of the message need not ask the store about it.
    settled: Mutex<HashMap<EventKey, Settled>>,
    per_host: Mutex<HashMap<String, Arc<Semaphore>>>,
    overall: Arc<Semaphore>,
    /// One permit per event taken from the outbox and not settled yet: bounds
    /// what a backlog (or a slow host) holds in memory.
    taken: Arc<Semaphore>,
    /// An event was let go without being settled: it stays in the outbox
    /// behind the reading position, so the next read starts at the head.
    left_behind: AtomicBool,
}

/// Starts webhook delivery; it runs until `stop`.
pub fn spawn(
    queue: Arc<Queue>,
    metrics: Arc<Metrics>,
    config: WebhooksConfig,
    accounts: &[AccountConfig],
    stop: CancellationToken,
) -> JoinHandle<()> {
    let client = CallbackClient::new(
        Duration::from_secs(config.timeout_s.max(1)),
        config.per_host.max(1),
    );
    let concurrency = config.concurrency.max(1);
    let dispatcher = Arc::new(Dispatcher {
        overall: Arc::new(Semaphore::new(concurrency)),
        taken: Arc::new(Semaphore::new(concurrency * 2 + ROUND)),
        left_behind: AtomicBool::new(false),
        queue,
        metrics,
        client,
        secrets: accounts
            .iter()
            .filter_map(|a| Some((a.id.clone(), a.webhook_secret.clone()?)))
            .collect(),
        in_flight: Mutex::default(),
        settled: Mutex::default(),
        per_host: Mutex::default(),
        config,
    });
    tokio::spawn(dispatcher.run(stop))
}

impl Dispatcher {
    /// Reads due events in outbox order, each read continuing where the last
    /// one stopped (events being delivered are not read over and over, nor
    /// the removed ones before them), and starts each one's delivery while
    /// fewer than the `taken` bound are unsettled.
    async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut after: Option<OutboxPosition> = None;
        let mut last_full = Instant::now();
        let mut last_look_back = Instant::now();
        let mut last_prune = Instant::now();
        loop {
            let changed = self.queue.webhooks_changed();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if !self.room(&stop).await {
                return;
            }
            let read_at = Instant::now();
            if read_at.duration_since(last_prune) >= Duration::from_secs(1) {
                lock(&self.settled).retain(|_, s| read_at.duration_since(s.at) < SETTLED_MEMORY);
                last_prune = read_at;
            }
            if self.left_behind.swap(false, Ordering::Relaxed)
                || read_at.duration_since(last_full) >= FULL_READ
            {
                after = None;
            }
            if after.is_none() {
                last_full = read_at;
                last_look_back = read_at;
            } else if read_at.duration_since(last_look_back) >= LOOK_BACK_EVERY {
                after = after.map(|a| OutboxPosition::before(a.due - LOOK_BACK));
                last_look_back = read_at;
            }
            // Events in flight past `after` are read again (see below);
            // `ROUND` more than those guarantees progress.
            let again = lock(&self.in_flight)
                .values()
                .filter(|p| after.is_none_or(|a| **p > a))
                .count();
            let limit = ROUND + again;
            let caught_up = match self.queue.webhooks_due(after, Utc::now(), limit).await {
                Ok(events) => {
                    let exhausted = events.len() < limit;
                    let mut passed = None;
                    let mut full = false;
                    for event in events {
                        if !self.claim(&event, read_at) {
                            passed = Some(event.position());
                            continue;
                        }
                        let Ok(taken) = self.taken.clone().try_acquire_owned() else {
                            // Full: continue from this event once some settle.
                            lock(&self.in_flight).remove(&(event.message_id, event.rank));
                            full = true;
                            break;
                        };
                        passed = Some(event.position());
                        tokio::spawn(self.clone().deliver(event, taken));
                    }
                    if let Some(last) = passed {
                        // An event committed after this read can share the
                        // millisecond of the newest one here yet sort before
                        // it: the next read starts at that millisecond.
                        after = Some(OutboxPosition::before(last.due));
                    }
                    exhausted && !full
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the webhook outbox");
                    after = None;
                    true
                }
            };
            if caught_up {
                tokio::select! {
                    _ = &mut changed => {}
                    _ = tokio::time::sleep(IDLE) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    }

    /// Waits until events may be taken: at least one place free, and up to
    /// [`GATHER`] for [`MIN_ROOM`]. False at stop.
    async fn room(&self, stop: &CancellationToken) -> bool {
        let gather = async {
            if let Ok(one) = self.taken.acquire().await {
                drop(one);
            }
            if self.taken.available_permits() < MIN_ROOM {
                let want = MIN_ROOM as u32;
                let _ = tokio::time::timeout(GATHER, self.taken.acquire_many(want)).await;
            }
        };
        tokio::select! {
            _ = gather => true,
            _ = stop.cancelled() => false,
        }
    }

    /// Marks a due event as being delivered, unless it already is or it was
    /// settled after the read that found it began (a stale copy).
    fn claim(&self, event: &WebhookEvent, read_at: Instant) -> bool {
        let key = (event.message_id, event.rank);
        if lock(&self.settled)
            .get(&key)
            .is_some_and(|s| s.at >= read_at)
        {
            return false;
        }
        lock(&self.in_flight)
            .insert(key, event.position())
            .is_none()
    }

    /// Delivers one claimed event, after the earlier event of its message.
    async fn deliver(self: Arc<Self>, event: WebhookEvent, _taken: OwnedSemaphorePermit) {
        let key = (event.message_id, event.rank);
        if event.rank > 1 {
            match self.earlier(&event).await {
                Ok(Earlier::Gone) => {}
                Ok(Earlier::Pending) => {
                    let mut later = event.clone();
                    later.due = Utc::now()
                        + chrono::Duration::from_std(WAIT_FOR_EARLIER).unwrap_or_default();
                    self.settle(&event, Some(later)).await;
                    self.done(key, false);
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot check the webhook order");
                    self.let_go(key);
                    return;
                }
            }
        }
        let host = reqwest::Url::parse(&event.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        let host_slots = lock(&self.per_host)
            .entry(host)
            .or_insert_with(|| Arc::new(Semaphore::new(self.config.per_host.max(1))))
            .clone();
        let (Ok(host), Ok(all)) = (
            host_slots.acquire_owned().await,
            self.overall.clone().acquire_owned().await,
        ) else {
            self.let_go(key);
            return;
        };
        let outcome = self.post(&event).await;
        // The receiver has answered: its slot is free while the outcome
        // waits for the store's commit (a synced write would otherwise
        // bound each slot to one event per fsync).
        drop((host, all));
        let gone = self.record(event, outcome).await;
        self.done(key, gone);
    }

    /// Whether the event before `event` (same message) is out of the way:
    /// waits a little while it is being delivered, then asks what became of
    /// it (the store only when it was not settled here recently).
    async fn earlier(&self, event: &WebhookEvent) -> Result<Earlier, StoreError> {
        let key = (event.message_id, event.rank - 1);
        let deadline = Instant::now() + FOLLOW_MAX;
        let mut pause = Duration::from_millis(2);
        while lock(&self.in_flight).contains_key(&key) {
            if Instant::now() + pause > deadline {
                return Ok(Earlier::Pending);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
        if let Some(s) = lock(&self.settled).get(&key) {
            return Ok(if s.gone {
                Earlier::Gone
            } else {
                Earlier::Pending
            });
        }
        let pending = self
            .queue
            .webhook_pending(event.message_id, event.rank - 1)
            .await?;
        Ok(if pending {
            Earlier::Pending
        } else {
            Earlier::Gone
        })
    }

    /// Posts one event; `Err` says why it did not arrive.
    async fn post(&self, event: &WebhookEvent) -> Result<(), String> {
        let mut headers = vec![(
            "X-Smsgate-Event",
            format!("{}-{}", event.message_id, event.rank),
        )];
        if let Some(secret) = self.secrets.get(&event.account) {
            headers.push(("X-Smsgate-Signature", signature(secret, &event.body)));
        }
        self.client
            .post(&event.url, &headers, event.body.clone())
            .await
    }

    /// Settles a posted event in the outbox, or schedules its next attempt;
    /// true when it left the outbox.
    async fn record(&self, event: WebhookEvent, outcome: Result<(), String>) -> bool {
        match outcome {
            Ok(()) => {
                self.count("delivered");
                self.settle(&event, None).await
            }
            Err(why) => {
                let age = Utc::now() - event.created_at;
                let give_up = chrono::Duration::hours(self.config.give_up_hours as i64);
                if age >= give_up {
                    self.count("abandoned");
                    tracing::warn!(id = %event.message_id, attempts = event.attempts + 1, error = %why, "webhook given up");
                    return self.settle(&event, None).await;
                }
                self.count("retried");
                tracing::debug!(id = %event.message_id, error = %why, "webhook failed; retrying");
                let mut next = event.clone();
                next.attempts += 1;
                next.due = Utc::now()
                    + chrono::Duration::from_std(self.backoff(next.attempts)).unwrap_or_default();
                self.settle(&event, Some(next)).await;
                false
            }
        }
    }

    /// Records the event's outcome in the outbox: removed (`retry` is
    /// `None`) or due again. True when the event was removed.
    async fn settle(&self, event: &WebhookEvent, retry: Option<WebhookEvent>) -> bool {
        let removes = retry.is_none();
        match self.queue.webhook_settle(event, retry).await {
            Ok(()) => removes,
            Err(e) => {
                tracing::error!(error = %e, id = %event.message_id, "cannot update the webhook outbox");
                // Still in the outbox where it was, behind the reading position.
                self.left_behind.store(true, Ordering::Relaxed);
                false
            }
        }
    }

    /// An event's delivery attempt is over (its outcome is in the outbox;
    /// `gone`: it left the outbox).
    fn done(&self, key: EventKey, gone: bool) {
        let at = Instant::now();
        lock(&self.settled).insert(key, Settled { at, gone });
        lock(&self.in_flight).remove(&key);
    }

    /// An event is let go unsettled: it stays where it is in the outbox, and
    /// a read from the head will find it again.
    fn let_go(&self, key: EventKey) {
        lock(&self.in_flight).remove(&key);
        self.left_behind.store(true, Ordering::Relaxed);
    }

    fn backoff(&self, attempts: u32) -> Duration {
        crate::backoff::jittered(
            self.config.retry_base_ms,
            self.config.retry_max_ms,
            attempts,
        )
    }

    fn count(&self, outcome: &str) {
        self.metrics.webhooks.with_label_values(&[outcome]).inc();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hex_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
