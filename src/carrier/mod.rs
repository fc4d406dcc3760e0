//! The carrier stage: SMPP sessions that take messages from the queue and
//! submit them, and hand every inbound deliver_sm (receipts, MO) to the DLR
//! stage.
//!
//! [`Carriers`] is the stage's public entry: it starts `binds` transceiver
//! sessions per configured carrier, each supervised (reconnect with backoff,
//! in-flight messages requeued, never lost) by [`session`].

pub mod limiter;
pub mod pdu;
pub mod profile;
pub mod route;
mod session;
pub mod smpp;
mod submit;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rusmpp::CommandStatus;
use rusmpp::pdus::{DeliverSm, DeliverSmResp};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::CarrierConfig;
use crate::message::{ErrorInfo, Message};
use crate::metrics::Metrics;
use crate::queue::Queue;
use crate::shared_limit::SharedLimits;

/// A deliver_sm the SMSC sent us, with the means to acknowledge it.
pub struct Inbound {
    /// Carrier it came from.
    pub carrier: Arc<str>,
    /// The PDU.
    pub deliver_sm: DeliverSm,
    /// Sends the deliver_sm_resp; call it once the PDU is handled.
    pub ack: DeliverAck,
}

/// Acknowledges one deliver_sm on the session it arrived on.
pub struct DeliverAck {
    client: smpp::SmppClient,
    sequence_number: u32,
}

impl DeliverAck {
    /// Sends deliver_sm_resp (ESME_ROK). If the session has died meanwhile the
    /// SMSC will redeliver, so nothing is lost.
    pub fn send(self) {
        self.client.respond(
            self.sequence_number,
            CommandStatus::EsmeRok,
            DeliverSmResp::default(),
        );
    }

    /// Answers ESME_RX_T_APPN (temporary application error): the effect
    /// could not be stored, so the SMSC should deliver the PDU again later.
    pub fn retry_later(self) {
        self.client.respond(
            self.sequence_number,
            CommandStatus::EsmeRxTAppn,
            DeliverSmResp::default(),
        );
    }
}

/// The last word before a message goes out (e.g. the recipient opted out
/// after it was accepted). Implemented by the compliance stage.
pub trait SubmitGuard: Send + Sync {
    /// `Some(error)` stops the message (status `failed` with that error).
    fn refuse(&self, m: &Message) -> Option<ErrorInfo>;
}

/// A guard that lets everything through.
pub struct AllowAll;

impl SubmitGuard for AllowAll {
    fn refuse(&self, _: &Message) -> Option<ErrorInfo> {
        None
    }
}

/// What every bind of every carrier shares.
#[derive(Clone)]
pub(crate) struct Shared {
    pub queue: Arc<Queue>,
    pub guard: Arc<dyn SubmitGuard>,
    pub inbound: mpsc::Sender<Inbound>,
    pub metrics: Arc<Metrics>,
    pub binds_up: Arc<AtomicUsize>,
    /// Cancelled to stop taking new work (graceful shutdown).
    pub stop: CancellationToken,
    /// How long a stopping bind waits for in-flight submits before unbinding.
    pub grace: Duration,
    /// Attempts a message gets for counted transient errors.
    pub max_attempts: u32,
}

/// How every bind behaves, whatever its carrier.
pub struct SessionPolicy<'a> {
    /// How long a stopping bind waits for in-flight submits before unbinding.
    pub grace: Duration,
    /// Attempts a message gets for counted transient errors.
    pub max_attempts: u32,
    /// Buckets holding each carrier's `tps` across every node (Redis).
    pub shared_limits: Option<&'a SharedLimits>,
}

/// The running SMPP sessions of every carrier.
pub struct Carriers {
    binds_up: Arc<AtomicUsize>,
    stop: CancellationToken,
    tasks: JoinSet<()>,
}

impl Carriers {
    /// Starts every bind of every carrier. Inbound deliver_sm go to `inbound`;
    /// with `shared_limits`, each carrier's `tps` holds across every node.
    pub fn start(
        carriers: &[CarrierConfig],
        queue: Arc<Queue>,
        guard: Arc<dyn SubmitGuard>,
        inbound: mpsc::Sender<Inbound>,
        metrics: Arc<Metrics>,
        policy: SessionPolicy<'_>,
    ) -> Self {
        let SessionPolicy {
            grace,
            max_attempts,
            shared_limits,
        } = policy;
        let binds_up = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let shared = Shared {
            queue,
            guard,
            inbound,
            metrics,
            binds_up: binds_up.clone(),
            stop: stop.clone(),
            grace,
            max_attempts,
        };
        let mut tasks = JoinSet::new();
        for (id, config) in carriers.iter().enumerate() {
            let config = Arc::new(config.clone());
            // One rate for all binds of a carrier.
            let mut limiter = limiter::RateLimiter::new(config.tps);
            if let Some(shared) = shared_limits.filter(|_| config.tps > 0.0) {
                limiter = limiter.with_shared(shared.carrier(&config.name, config.tps));
            }
            let limiter = Arc::new(limiter);
            tasks.spawn(sample_rate(
                limiter.clone(),
                shared
                    .metrics
                    .carrier_rate
                    .with_label_values(&[&config.name]),
                stop.clone(),
            ));
            for index in 0..config.binds {
                let bind =
                    session::Bind::new(config.clone(), id, index, limiter.clone(), shared.clone());
                tasks.spawn(bind.run());
            }
        }
        Self {
            binds_up,
            stop,
            tasks,
        }
    }

    /// Number of binds currently bound.
    pub fn binds_up(&self) -> usize {
        self.binds_up.load(Ordering::Relaxed)
    }

    /// A cheap handle that reports the number of binds up (for readiness).
    pub fn binds_up_handle(&self) -> Arc<AtomicUsize> {
        self.binds_up.clone()
    }

    /// Stops taking messages, lets in-flight submits finish (up to the grace
    /// period; unfinished ones are requeued), unbinds and waits for every bind.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Keeps a carrier's `smsgate_carrier_rate_limit` gauge on the rate in force
/// (it moves between cuts too, as the rate is regained) until `stop`.
async fn sample_rate(
    limiter: Arc<limiter::RateLimiter>,
    gauge: prometheus::Gauge,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let rate = limiter.rate();
                gauge.set(if rate.is_finite() { rate } else { -1.0 });
            }
            _ = stop.cancelled() => break,
        }
    }
}
