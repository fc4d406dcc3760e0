//! Status webhooks: every status change after `queued` of a message with a
//! callback URL (its own or its account's) is committed to the store's
//! outbox together with the status, and delivered from there — signed with
//! the account's secret, retried with exponential backoff and jitter for up
//! to `give_up_hours`, in status order per message, with bounded concurrency
//! per destination host. Delivery runs apart from sending: a slow or dead
//! endpoint only grows the outbox.
//!
//! [`spawn`] starts the dispatcher.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{AccountConfig, WebhooksConfig};
use crate::message::MessageId;
use crate::metrics::Metrics;
use crate::queue::{Queue, WebhookEvent};

/// Events read from the outbox per round.
const ROUND: usize = 256;
/// How often the outbox is looked at when nothing wakes the dispatcher.
const IDLE: Duration = Duration::from_millis(500);
/// Delay for an event whose earlier event (same message) is still pending.
const WAIT_FOR_EARLIER: Duration = Duration::from_millis(200);

/// The signature header value for `body`: `sha256=<hex HMAC-SHA256>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC accepts keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Shared state of the dispatcher.
struct Dispatcher {
    queue: Arc<Queue>,
    metrics: Arc<Metrics>,
    config: WebhooksConfig,
    client: reqwest::Client,
    secrets: HashMap<String, String>,
    /// Events being delivered (not to be picked up again meanwhile).
    in_flight: Mutex<HashSet<(MessageId, u8)>>,
    /// When each recent event was last settled: an outbox read that began
    /// before that may still hold the old copy, which must not go out again.
    settled: Mutex<HashMap<(MessageId, u8), std::time::Instant>>,
    per_host: Mutex<HashMap<String, Arc<Semaphore>>>,
    overall: Arc<Semaphore>,
}

/// Starts webhook delivery; it runs until `stop`.
pub fn spawn(
    queue: Arc<Queue>,
    metrics: Arc<Metrics>,
    config: WebhooksConfig,
    accounts: &[AccountConfig],
    stop: CancellationToken,
) -> JoinHandle<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(config.timeout_s.max(1)))
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent(concat!("smsgate/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot build the webhook client; using defaults");
            reqwest::Client::new()
        });
    let dispatcher = Arc::new(Dispatcher {
        overall: Arc::new(Semaphore::new(config.concurrency.max(1))),
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
    async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let changed = self.queue.webhooks_changed();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let read_at = std::time::Instant::now();
            lock(&self.settled).retain(|_, at| read_at.duration_since(*at) < SETTLED_MEMORY);
            match self.queue.webhooks_due(Utc::now(), ROUND).await {
                Ok(events) => {
                    for event in events {
                        self.clone().start(event, read_at).await;
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot read the webhook outbox"),
            }
            tokio::select! {
                _ = &mut changed => {}
                _ = tokio::time::sleep(IDLE) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    /// Starts delivering one due event, unless it is already on its way or
    /// an earlier event of the same message is still pending.
    async fn start(self: Arc<Self>, event: WebhookEvent, read_at: std::time::Instant) {
        let key = (event.message_id, event.rank);
        if !lock(&self.in_flight).insert(key) {
            return;
        }
        // Settled while the read that found it ran: this copy is stale.
        if lock(&self.settled)
            .get(&key)
            .is_some_and(|at| *at >= read_at)
        {
            lock(&self.in_flight).remove(&key);
            return;
        }
        if event.rank > 1 {
            match self
                .queue
                .webhook_pending(event.message_id, event.rank - 1)
                .await
            {
                Ok(false) => {}
                Ok(true) => {
                    let mut later = event.clone();
                    later.due = Utc::now()
                        + chrono::Duration::from_std(WAIT_FOR_EARLIER).unwrap_or_default();
                    self.settle(&event, Some(later)).await;
                    self.done(key);
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot check the webhook order");
                    lock(&self.in_flight).remove(&key);
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
        let overall = self.overall.clone();
        tokio::spawn(async move {
            let (Ok(host), Ok(all)) = (
                host_slots.acquire_owned().await,
                overall.acquire_owned().await,
            ) else {
                return;
            };
            let outcome = self.post(&event).await;
            // The receiver has answered: its slot is free while the outcome
            // waits for the store's commit (a synced write would otherwise
            // bound each slot to one event per fsync).
            drop((host, all));
            self.record(event, outcome).await;
            self.done(key);
            self.queue.webhooks_changed_notify();
        });
    }

    /// One POST, then the outbox records the outcome.
    /// Posts one event; `Err` says why it did not arrive.
    async fn post(&self, event: &WebhookEvent) -> Result<(), String> {
        let mut request = self
            .client
            .post(&event.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(
                "X-Smsgate-Event",
                format!("{}-{}", event.message_id, event.rank),
            )
            .body(event.body.clone());
        if let Some(secret) = self.secrets.get(&event.account) {
            request = request.header("X-Smsgate-Signature", signature(secret, &event.body));
        }
        match request.send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("HTTP {}", r.status().as_u16())),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Settles a posted event in the outbox, or schedules its next attempt.
    async fn record(&self, event: WebhookEvent, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => {
                self.count("delivered");
                self.settle(&event, None).await;
            }
            Err(why) => {
                let age = Utc::now() - event.created_at;
                let give_up = chrono::Duration::hours(self.config.give_up_hours as i64);
                if age >= give_up {
                    self.count("abandoned");
                    tracing::warn!(id = %event.message_id, attempts = event.attempts + 1, error = %why, "webhook given up");
                    self.settle(&event, None).await;
                    return;
                }
                self.count("retried");
                tracing::debug!(id = %event.message_id, error = %why, "webhook failed; retrying");
                let mut next = event.clone();
                next.attempts += 1;
                next.due = Utc::now()
                    + chrono::Duration::from_std(self.backoff(next.attempts)).unwrap_or_default();
                self.settle(&event, Some(next)).await;
            }
        }
    }

    async fn settle(&self, event: &WebhookEvent, retry: Option<WebhookEvent>) {
        if let Err(e) = self.queue.webhook_settle(event, retry).await {
            tracing::error!(error = %e, id = %event.message_id, "cannot update the webhook outbox");
        }
    }

    /// An event's delivery attempt is over (its outcome is in the outbox).
    fn done(&self, key: (MessageId, u8)) {
        lock(&self.settled).insert(key, std::time::Instant::now());
        lock(&self.in_flight).remove(&key);
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

/// How long a settle time is remembered (far longer than an outbox read).
const SETTLED_MEMORY: Duration = Duration::from_secs(60);

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
