//! One SMPP transceiver bind, supervised: connect, bind, pump messages from
//! the queue through a window of in-flight submits, read inbound PDUs, and on
//! any failure reconnect with exponential backoff. A message in flight when the
//! link drops fails its submit with a connection error and goes back to the
//! queue, so nothing accepted is lost.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::Rng;
use rusmpp::pdus::BindTransceiver;
use rusmpp::types::COctetString;
use rusmpp::values::{InterfaceVersion, Npi, Ton};
use rusmpp::{Command, CommandStatus, Pdu};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::smpp::{SessionSettings, SessionTasks, SmppClient, SmppError};
use super::submit::submit_message;
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

/// When a throttled bind may send again. A std mutex: two tiny critical
/// sections per message, never held across an `.await`.
#[derive(Default)]
struct Pause(std::sync::Mutex<Option<Instant>>);

impl Pause {
    fn get(&self) -> Option<Instant> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, until: Instant) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(until);
    }
}

/// A bind field from config, checked against its SMPP length limit.
fn credential<const N: usize>(field: &str, value: &str) -> Result<COctetString<1, N>, BindError> {
    COctetString::from_str(value).map_err(|e| BindError::Credentials(format!("{field}: {e}")))
}

/// One bind of one carrier.
pub(crate) struct Bind {
    config: Arc<CarrierConfig>,
    carrier: Arc<str>,
    label: String,
    shared: Shared,
}

impl Bind {
    pub(crate) fn new(config: Arc<CarrierConfig>, index: u32, shared: Shared) -> Self {
        Self {
            carrier: Arc::from(config.name.as_str()),
            label: index.to_string(),
            config,
            shared,
        }
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
    }

    /// Takes messages from the queue while window slots are free, spawning one
    /// task per message. Returns the tasks still running when `done` fires.
    async fn dispatch(&self, client: &SmppClient, done: &CancellationToken) -> JoinSet<()> {
        let window = Arc::new(Semaphore::new(self.config.window as usize));
        let pause_until: Arc<Pause> = Arc::default();
        let mut inflight = JoinSet::new();
        loop {
            while inflight.try_join_next().is_some() {}
            let pause = pause_until.get();
            if let Some(until) = pause {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => {}
                    _ = done.cancelled() => break,
                }
            }
            // Hold a slot before leasing, so we never lease what we cannot send.
            let Some(slot) = acquire(&window, 1, done).await else {
                break;
            };
            let Some(batch) = self.shared.queue.take(1, done).await else {
                break;
            };
            let mut slot = Some(slot);
            for message in batch {
                if let Some(error) = self.shared.guard.refuse(&message) {
                    let at = chrono::Utc::now();
                    let fail = vec![(message.id, Transition::Fail { error, at })];
                    if let Err(e) = self.shared.queue.apply(fail).await {
                        tracing::error!(error = %e, id = %message.id, "cannot stop refused message");
                    }
                    continue;
                }
                // One window slot per segment (capped at the window size).
                let need =
                    (message.pending_segments().count().max(1) as u32).min(self.config.window);
                let permits = match slot.take() {
                    Some(mut held) if need > 1 => match acquire(&window, need - 1, done).await {
                        Some(extra) => {
                            held.merge(extra);
                            Some(held)
                        }
                        None => None,
                    },
                    Some(held) => Some(held),
                    None => acquire(&window, need, done).await,
                };
                match permits {
                    Some(permits) => {
                        inflight.spawn(self.submit_task(
                            client.clone(),
                            message,
                            permits,
                            pause_until.clone(),
                        ));
                    }
                    None => self.requeue(&message).await,
                }
            }
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
        permits: OwnedSemaphorePermit,
        pause_until: Arc<Pause>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let carrier = self.carrier.clone();
        let label = self.label.clone();
        let queue = self.shared.queue.clone();
        let metrics = self.shared.metrics.clone();
        let throttle_pause = Duration::from_millis(self.config.throttle_pause_ms);
        async move {
            let slots = permits.num_permits() as i64;
            let gauge = metrics
                .inflight
                .with_label_values(&[&*carrier, label.as_str()]);
            gauge.add(slots);
            let (transitions, verdict) =
                submit_message(&client, &carrier, &message, slots as usize, &metrics).await;
            if verdict.slow_down {
                pause_until.set(Instant::now() + throttle_pause);
            }
            // Keep the window slots until the outcome is stored: after a crash at
            // most `window` accepted-but-unrecorded submits can be sent twice.
            if let Err(e) = queue.apply(transitions).await {
                tracing::error!(error = %e, id = %message.id, "cannot record submit outcome");
            }
            gauge.sub(slots);
            drop(permits);
        }
    }
}

/// Waits for `n` window slots, or `None` once `done` fires.
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
