//! One SMPP transceiver bind, supervised: connect, bind, pump messages from
//! the queue through a window of in-flight submits, read inbound PDUs, and on
//! any failure reconnect with exponential backoff. A message in flight when the
//! link drops fails its submit with a connection error and goes back to the
//! queue, so nothing accepted is lost.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rand::Rng;
use rusmpp::pdus::BindTransceiver;
use rusmpp::types::COctetString;
use rusmpp::values::{InterfaceVersion, Npi, Ton};
use rusmpp::{Command, CommandStatus, Pdu};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::limiter::RateLimiter;
use super::route::{CarrierHealth, CarrierId};
use super::smpp::{SessionSettings, SessionTasks, SmppClient, SmppError};
use super::submit::{SlowDown, SubmitPolicy, submit_message};
use super::{DeliverAck, Inbound, Shared};
use crate::config::CarrierConfig;
use crate::message::{Message, Transition};

/// Why a connect/bind attempt failed.
#[derive(Debug, thiserror::Error)]
enum BindError {
    #[error("connect timed out after {0:?}")]
    ConnectTimeout(Duration),
    #[error("connect failed: {0}")]
    Connect(std::io::Error),
    #[error("invalid bind credentials in config: {0}")]
    Credentials(String),
    #[error(transparent)]
    Smpp(#[from] SmppError),
}

/// A bind field from config, checked against its SMPP length limit.
fn credential<const N: usize>(field: &str, value: &str) -> Result<COctetString<1, N>, BindError> {
    COctetString::from_str(value).map_err(|e| BindError::Credentials(format!("{field}: {e}")))
}

/// One bind of one carrier.
pub(crate) struct Bind {
    config: Arc<CarrierConfig>,
    carrier: Arc<str>,
    carrier_id: CarrierId,
    label: String,
    limiter: Arc<RateLimiter>,
    shared: Shared,
}

impl Bind {
    pub(crate) fn new(
        config: Arc<CarrierConfig>,
        carrier_id: CarrierId,
        index: u32,
        limiter: Arc<RateLimiter>,
        shared: Shared,
    ) -> Self {
        Self {
            carrier: Arc::from(config.name.as_str()),
            carrier_id,
            label: index.to_string(),
            limiter,
            config,
            shared,
        }
    }

    fn health(&self) -> &Arc<CarrierHealth> {
        self.shared.queue.routing().health(self.carrier_id)
    }

    /// Runs until the gateway stops: bind, serve, and reconnect with backoff.
    pub(crate) async fn run(self) {
        let min = Duration::from_millis(self.config.reconnect_min_ms.max(1));
        let max = Duration::from_millis(self.config.reconnect_max_ms).max(min);
        let mut delay = min;
        while !self.shared.stop.is_cancelled() {
            match self.connect().await {
                Ok((client, inbound, tasks)) => {
                    delay = min;
                    tracing::info!(carrier = %self.carrier, bind = %self.label, "bound");
                    self.serve(client, inbound, tasks).await;
                    tracing::warn!(carrier = %self.carrier, bind = %self.label, "session ended");
                }
                Err(e) => {
                    tracing::warn!(carrier = %self.carrier, bind = %self.label, error = %e, retry_in = ?delay, "bind failed");
                }
            }
            let jittered = delay.mul_f64(rand::rng().random_range(0.5..1.0));
            tokio::select! {
                _ = tokio::time::sleep(jittered) => {}
                _ = self.shared.stop.cancelled() => break,
            }
            delay = (delay * 2).min(max);
        }
    }

    async fn connect(
        &self,
    ) -> Result<(SmppClient, mpsc::Receiver<Command>, SessionTasks), BindError> {
        let c = &self.config;
        let connect_timeout = Duration::from_secs(c.connect_timeout_s.max(1));
        let authority = c.url.strip_prefix("smpp://").unwrap_or(&c.url);
        let authority = authority.split('/').next().unwrap_or(authority);
        let address = if authority.contains(':') {
            authority.to_owned()
        } else {
            format!("{authority}:2775") // SMPP's registered port
        };
        let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(address.as_str()))
            .await
            .map_err(|_| BindError::ConnectTimeout(connect_timeout))?
            .map_err(BindError::Connect)?;
        // One PDU is often all there is to send: don't let Nagle hold it back.
        stream.set_nodelay(true).map_err(BindError::Connect)?;
        let (client, inbound, tasks) = SmppClient::start(
            stream,
            SessionSettings {
                response_timeout: c.response_timeout(),
                enquire_link: Duration::from_secs(c.enquire_link_s.max(1)),
            },
        );
        let bind = BindTransceiver::builder()
            .system_id(credential("system_id", &c.system_id)?)
            .password(credential("password", &c.password)?)
            .system_type(credential("system_type", &c.system_type)?)
            .interface_version(InterfaceVersion::Smpp3_4)
            .addr_ton(Ton::Unknown)
            .addr_npi(Npi::Unknown)
            .address_range(COctetString::empty())
            .build();
        client.bind_transceiver(bind).await?;
        Ok((client, inbound, tasks))
    }

    /// Serves one bound session until the link drops or the gateway stops.
    async fn serve(
        &self,
        client: SmppClient,
        inbound: mpsc::Receiver<Command>,
        tasks: SessionTasks,
    ) {
        let m = &self.shared.metrics;
        let labels = [&*self.carrier, self.label.as_str()];
        m.binds_total.with_label_values(&[&self.carrier]).inc();
        m.bind_up.with_label_values(&labels).set(1);
        self.shared.binds_up.fetch_add(1, Ordering::Relaxed);
        self.health().bind_changed(true);
        // Routes this carrier serves may have been waiting for it.
        self.shared.queue.wake();

        // Cancelled when the gateway stops or the connection ends.
        let done = self.shared.stop.child_token();
        let reader = tokio::spawn(read_inbound(
            inbound,
            client.clone(),
            self.carrier.clone(),
            self.shared.inbound.clone(),
            done.clone(),
        ));
        let mut inflight = self.dispatch(&client, &done).await;

        if self.shared.stop.is_cancelled() && !client.is_closed() {
            // Graceful stop: let in-flight submits get their responses, then unbind.
            let drained = tokio::time::timeout(self.shared.grace, async {
                while inflight.join_next().await.is_some() {}
            })
            .await;
            if drained.is_err() {
                tracing::warn!(carrier = %self.carrier, bind = %self.label, "grace period over; requeueing what is still in flight");
            }
            client.unbind().await;
        }
        // Submits still waiting fail with a connection error and requeue their message.
        client.close();
        drop(tasks);
        while inflight.join_next().await.is_some() {}
        reader.abort();

        m.bind_up.with_label_values(&labels).set(0);
        m.inflight.with_label_values(&labels).set(0);
        self.shared.binds_up.fetch_sub(1, Ordering::Relaxed);
        self.health().bind_changed(false);
        // Its routes may fail over to another carrier now.
        self.shared.queue.wake();
    }

    /// Takes messages from the queue while window slots and send tokens
    /// are free, spawning one task per message. Returns the tasks still
    /// running when `done` fires.
    async fn dispatch(&self, client: &SmppClient, done: &CancellationToken) -> JoinSet<()> {
        let window = Arc::new(Semaphore::new(self.config.window as usize));
        let unstored = Arc::new(Semaphore::new(self.config.unstored_limit() as usize));
        let mut inflight = JoinSet::new();
        loop {
            while inflight.try_join_next().is_some() {}
            // Room for an outcome to store, a window slot and a token before
            // taking, so the highest-priority message at the moment of
            // sending is the one sent.
            let Some(mut stored) = acquire(&unstored, 1, done).await else {
                break;
            };
            let Some(mut slots) = acquire(&window, 1, done).await else {
                break;
            };
            tokio::select! {
                _ = self.limiter.acquire() => {}
                _ = done.cancelled() => break,
            }
            let Some(message) = self.shared.queue.take(self.carrier_id, done).await else {
                break;
            };
            if let Some(error) = self.shared.guard.refuse(&message) {
                let at = chrono::Utc::now();
                let fail = vec![(message.id, Transition::Fail { error, at })];
                if let Err(e) = self.shared.queue.apply(fail).await {
                    tracing::error!(error = %e, id = %message.id, "cannot stop refused message");
                }
                continue;
            }
            // One window slot, one outcome and one token per segment (capped
            // at the window).
            let segments = message.pending_segments().count().max(1) as u32;
            let need = segments.min(self.config.window);
            if need > 1 {
                let extra = match acquire(&unstored, need - 1, done).await {
                    Some(more) => acquire(&window, need - 1, done).await.map(|s| (more, s)),
                    None => None,
                };
                match extra {
                    Some((more, s)) => {
                        stored.merge(more);
                        slots.merge(s);
                    }
                    None => {
                        self.requeue(&message).await;
                        break;
                    }
                }
            }
            for _ in 1..segments {
                self.limiter.acquire().await;
            }
            spawn_in_take_order(
                &mut inflight,
                self.submit_task(client.clone(), message, Permits { slots, stored }),
            )
            .await;
        }
        inflight
    }

    async fn requeue(&self, message: &Message) {
        if let Err(e) = self
            .shared
            .queue
            .apply(vec![(message.id, Transition::Requeue)])
            .await
        {
            tracing::error!(error = %e, id = %message.id, "cannot requeue message");
        }
    }

    fn submit_task(
        &self,
        client: SmppClient,
        message: Message,
        permits: Permits,
    ) -> impl Future<Output = ()> + Send + 'static {
        let carrier = self.carrier.clone();
        let label = self.label.clone();
        let queue = self.shared.queue.clone();
        let metrics = self.shared.metrics.clone();
        let limiter = self.limiter.clone();
        let health = self.health().clone();
        let config = self.config.clone();
        let max_attempts = self.shared.max_attempts;
        // The message's span, as in the API handler that accepted it.
        let span = tracing::info_span!(
            "message",
            id = %message.id,
            account = %message.account,
            kind = message.kind.as_str(),
            to = %crate::logging::mask(&message.to),
            carrier = %carrier,
            bind = %label,
        );
        let task = async move {
            let Permits {
                slots: window_slots,
                stored,
            } = permits;
            let slots = window_slots.num_permits() as i64;
            let gauge = metrics
                .inflight
                .with_label_values(&[&*carrier, label.as_str()]);
            gauge.add(slots);
            let policy = SubmitPolicy {
                errors: &config.errors,
                max_attempts,
                profile: &config.profile,
            };
            let (transitions, verdict) = submit_message(
                &client,
                &carrier,
                &message,
                slots as usize,
                &policy,
                &metrics,
            )
            .await;
            // Answered: the window slots are free for the next submits, while
            // the outcome below waits for the store.
            gauge.sub(slots);
            drop(window_slots);
            tracing::debug!(outcome = ?transitions.last().map(|(_, t)| t), "submit answered");
            let now = Instant::now();
            let accepted = transitions
                .iter()
                .filter(|(_, t)| matches!(t, Transition::SegmentAccepted { .. }))
                .count();
            limiter.accepted(now, accepted as u32);
            match verdict.slow_down {
                Some(SlowDown::Throttled) => {
                    limiter.throttled(now);
                    metrics
                        .throttle_events
                        .with_label_values(&[&*carrier, "throttled"])
                        .inc();
                }
                Some(SlowDown::QueueFull) => {
                    limiter.queue_full(now, Duration::from_millis(config.queue_full_pause_ms));
                    metrics
                        .throttle_events
                        .with_label_values(&[&*carrier, "queue_full"])
                        .inc();
                }
                None => {}
            }
            if verdict.slow_down.is_some() {
                let rate = limiter.rate();
                metrics
                    .carrier_rate
                    .with_label_values(&[&*carrier])
                    .set(if rate.is_finite() { rate } else { -1.0 });
            }
            if verdict.route_failure {
                health.trip(Duration::from_secs(config.errors.failover_s));
                metrics.route_failures.with_label_values(&[&*carrier]).inc();
                tracing::warn!(%carrier, failover_s = config.errors.failover_s, "route failure: the carrier steps aside");
            }
            // Hold the outcome slot until the outcome is stored: after a crash
            // at most `unstored` accepted-but-unrecorded submits per bind can
            // be sent twice.
            if let Err(e) = queue.apply(transitions).await {
                tracing::error!(error = %e, id = %message.id, "cannot record submit outcome");
            }
            if verdict.route_failure {
                queue.wake();
            }
            drop(stored);
        };
        tracing::Instrument::instrument(task, span)
    }
}

/// What a submit holds: window slots until the SMSC answers, outcome slots
/// until the answer is stored.
struct Permits {
    slots: OwnedSemaphorePermit,
    stored: OwnedSemaphorePermit,
}

/// Spawns a submit after polling it once here, so its submit_sm reaches the
/// connection before the next message is taken: PDUs leave in the order the
/// scheduler chose (the runtime may run freshly spawned tasks in any order,
/// which would let a message be overtaken by more than the window).
async fn spawn_in_take_order(
    inflight: &mut JoinSet<()>,
    task: impl Future<Output = ()> + Send + 'static,
) {
    let mut task = Box::pin(task);
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(task.as_mut().poll(cx))).await;
    if first.is_pending() {
        inflight.spawn(task);
    }
}

/// Waits for `n` permits of `window`, or `None` once `done` fires.
async fn acquire(
    window: &Arc<Semaphore>,
    n: u32,
    done: &CancellationToken,
) -> Option<OwnedSemaphorePermit> {
    tokio::select! {
        p = window.clone().acquire_many_owned(n) => p.ok(),
        _ = done.cancelled() => None,
    }
}

/// Hands the SMSC's PDUs to the DLR stage until the session ends, then
/// cancels `done`.
async fn read_inbound(
    mut inbound: mpsc::Receiver<Command>,
    client: SmppClient,
    carrier: Arc<str>,
    dlr: mpsc::Sender<Inbound>,
    done: CancellationToken,
) {
    while let Some(cmd) = inbound.recv().await {
        let sequence_number = cmd.sequence_number();
        match cmd.pdu() {
            Some(Pdu::DeliverSm(d)) => {
                let msg = Inbound {
                    carrier: carrier.clone(),
                    deliver_sm: d.clone(),
                    ack: DeliverAck {
                        client: client.clone(),
                        sequence_number,
                    },
                };
                // A bounded channel: a slow DLR stage holds back reading and
                // acks, the only back-pressure SMPP gives us towards the SMSC.
                if dlr.send(msg).await.is_err() {
                    break;
                }
            }
            Some(Pdu::Unbind) => {
                tracing::info!(%carrier, "SMSC asked to unbind");
                client.respond(sequence_number, CommandStatus::EsmeRok, Pdu::UnbindResp);
                break;
            }
            _ => {
                tracing::debug!(%carrier, id = ?cmd.id(), "unsupported PDU from the SMSC");
                client.respond(
                    sequence_number,
                    CommandStatus::EsmeRinvcmdid,
                    Pdu::GenericNack,
                );
            }
        }
    }
    done.cancel();
}
