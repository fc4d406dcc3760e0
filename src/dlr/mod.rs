//! The return path: deliver_sm from the carriers. Delivery receipts are
//! matched to their message by the SMSC message id and applied to its status;
//! mobile-originated messages are reassembled when concatenated, counted and
//! handed to a [`MoHandler`] (the compliance stage's keyword handling and
//! inbound listing). Every deliver_sm is acknowledged once its effect is
//! stored (a part of a concatenated MO once it is held).
//!
//! Each carrier's [`CarrierProfile`] says how its SMSC writes message ids
//! (matched through [`ids`]), which segments it reports, and what its
//! data_coding 0 means.
//!
//! A receipt can overtake the submit_sm_resp that carries its id (the SMSC
//! answers on one path and reports on another), or quote an id nobody knows.
//! Such a receipt is parked and retried against the index: at once each time
//! the carriers record SMSC ids (a few times, while it is young; usually the
//! next commit brings its id), and at growing intervals for the carrier's
//! `receipt_wait_s`; then it is given up to the
//! [`DeadLetters`] record and counted in `smsgate_dlr_unmatched_total`.
//!
//! [`spawn`] is the stage's public entry.

mod callback;
pub mod dead_letter;
pub(crate) mod ids;
pub(crate) mod mo;
pub mod receipt;
pub mod webhooks;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::carrier::profile::CarrierProfile;
use crate::carrier::{DeliverAck, Inbound};
use crate::config::CarrierConfig;
use crate::message::{MessageId, Transition};
use crate::metrics::Metrics;
use crate::queue::{Queue, StoreError};
pub use dead_letter::{DeadLetters, UnmatchedReason, UnmatchedReceipt};
use ids::{IdMatcher, Rule, Source};
use mo::{MoPart, Reassembler};
use receipt::Receipt;

/// Most deliver_sm handled (and committed) together.
const BATCH: usize = 256;
/// How often a node sharing the store looks for receipts other nodes
/// forwarded to it.
const FORWARDED_POLL: Duration = Duration::from_millis(20);

/// A receipt one node hands to the node that sent its message.
#[derive(serde::Serialize, serde::Deserialize)]
struct ForwardedReceipt {
    carrier: String,
    receipt: Receipt,
    received_at: DateTime<Utc>,
}

/// Capacity of the channel from the carriers to this stage.
pub const INBOUND_CAPACITY: usize = 4096;

/// First retry of a parked receipt; the interval doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(50);

/// A young parked receipt is retried at once when SMSC ids are recorded, at
/// most this many times (a receipt for an id nobody knows must not cost a
/// lookup per commit).
const EARLY_WAKES: u8 = 8;

/// Longest interval between two retries of a parked receipt.
const RETRY_MAX: Duration = Duration::from_secs(1);

/// Retry interval of a reassembled MO message whose handling failed.
const MO_RETRY: Duration = Duration::from_secs(1);

/// An inbound (mobile-originated) message, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MoMessage {
    /// The handset's number as the SMSC gave it.
    pub from: String,
    /// Our number or sender it was sent to.
    pub to: String,
    /// Decoded text.
    pub text: String,
}

/// What happens to inbound messages (keywords, later listings and webhooks).
#[async_trait]
pub trait MoHandler: Send + Sync {
    /// Handles one MO message; returns once its effect is stored. On error
    /// the deliver_sm is not acknowledged, so the SMSC delivers it again.
    async fn handle(&self, carrier: &str, mo: MoMessage) -> Result<(), StoreError>;
}

/// Starts the stage with each carrier's profile (a carrier not listed gets
/// the default one); it runs until every sender of `inbound` is dropped.
/// Receipts given up go to `dead_letters`.
pub fn spawn(
    queue: Arc<Queue>,
    metrics: Arc<Metrics>,
    mo: Arc<dyn MoHandler>,
    carriers: &[CarrierConfig],
    dead_letters: DeadLetters,
    inbound: mpsc::Receiver<Inbound>,
) -> JoinHandle<()> {
    let carriers = carriers
        .iter()
        .map(|c| (Arc::from(c.name.as_str()), CarrierState::new(&c.profile)))
        .collect();
    let stage = Stage {
        queue,
        metrics,
        mo,
        carriers,
        dead_letters,
        parked: Vec::new(),
        reassembler: Reassembler::default(),
        mo_retry: Vec::new(),
    };
    tokio::spawn(stage.run(inbound))
}

/// What the stage knows about one carrier.
#[derive(Debug)]
struct CarrierState {
    profile: CarrierProfile,
    ids: IdMatcher,
}

impl CarrierState {
    fn new(profile: &CarrierProfile) -> Self {
        Self {
            profile: profile.clone(),
            ids: IdMatcher::new(profile),
        }
    }
}

/// A receipt waiting for its SMSC id to be known.
#[derive(Debug)]
struct Parked {
    carrier: Arc<str>,
    receipt: Receipt,
    /// When it arrived.
    since: Instant,
    received_at: DateTime<Utc>,
    /// When to look it up next.
    next_try: Instant,
    /// The interval after the next miss.
    backoff: Duration,
    /// Lookups done.
    attempts: u32,
    /// The id forms the last lookup tried (for asking which node owns one).
    tried: Vec<String>,
    /// Retries brought forward because SMSC ids were recorded.
    early_wakes: u8,
}

impl Parked {
    fn new(carrier: Arc<str>, receipt: Receipt) -> Self {
        let now = Instant::now();
        Self {
            carrier,
            receipt,
            since: now,
            received_at: Utc::now(),
            next_try: now,
            backoff: RETRY_FIRST,
            attempts: 0,
            tried: Vec::new(),
            early_wakes: 0,
        }
    }

    /// Young and not woken early too often yet.
    fn may_wake_early(&self, now: Instant) -> bool {
        self.early_wakes < EARLY_WAKES && now.saturating_duration_since(self.since) < RETRY_MAX
    }

    fn retry_later(&mut self, now: Instant) {
        self.next_try = now + self.backoff;
        self.backoff = (self.backoff * 2).min(RETRY_MAX);
    }
}

/// A receipt found: its message, segment, and how its id was found.
struct Hit {
    id: MessageId,
    segment: u32,
    source: Source,
    rule: Rule,
}

struct Stage {
    queue: Arc<Queue>,
    metrics: Arc<Metrics>,
    mo: Arc<dyn MoHandler>,
    carriers: HashMap<Arc<str>, CarrierState>,
    dead_letters: DeadLetters,
    /// Receipts whose id is not known yet, oldest first.
    parked: Vec<Parked>,
    reassembler: Reassembler,
    /// Reassembled MO messages whose handling failed, with their next try.
    mo_retry: Vec<(Arc<str>, MoMessage, Instant)>,
}

impl Stage {
    async fn run(mut self, mut inbound: mpsc::Receiver<Inbound>) {
        let mut batch = Vec::with_capacity(BATCH);
        let shared = self.queue.shares_store();
        let mut forwarded = tokio::time::interval(FORWARDED_POLL);
        forwarded.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let queue = self.queue.clone();
        loop {
            let wake = self.next_wake();
            let now = Instant::now();
            let early = self.parked.iter().any(|p| p.may_wake_early(now));
            tokio::select! {
                n = inbound.recv_many(&mut batch, BATCH) => {
                    if n == 0 {
                        break;
                    }
                }
                _ = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {}
                _ = forwarded.tick(), if shared => self.take_forwarded().await,
                _ = queue.smsc_ids_recorded(), if early => self.wake_early(Instant::now()),
            }
            self.handle(std::mem::take(&mut batch)).await;
        }
        self.finish().await;
    }

    /// When something parked falls due.
    fn next_wake(&self) -> Option<Instant> {
        let parked = self.parked.iter().map(|p| p.next_try).min();
        let mo = self.mo_retry.iter().map(|(_, _, at)| *at).min();
        [parked, mo, self.reassembler.next_deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    /// SMSC ids were recorded: young parked receipts are due at once.
    fn wake_early(&mut self, now: Instant) {
        for p in &mut self.parked {
            if p.may_wake_early(now) && p.next_try > now {
                p.next_try = now;
                p.early_wakes += 1;
            }
        }
    }

    fn carrier(&mut self, name: &Arc<str>) -> &mut CarrierState {
        self.carriers
            .entry(name.clone())
            .or_insert_with(|| CarrierState::new(&CarrierProfile::default()))
    }

    async fn handle(&mut self, batch: Vec<Inbound>) {
        let now = Instant::now();
        let mut receipt_acks = Vec::new();
        let mut other_acks = Vec::new();
        let mut receipts = Vec::new();
        let mut singles = Vec::new();
        let mut assembled = Vec::new();
        for Inbound {
            carrier,
            deliver_sm,
            ack,
        } in batch
        {
            if !receipt::is_receipt(&deliver_sm) {
                let profile = &self.carrier(&carrier).profile;
                let wait = profile.mo_reassembly();
                let part = MoPart::read(&deliver_sm, profile);
                if part.part_of.is_some() {
                    assembled.extend(self.reassembler.add(&carrier, part, wait, now));
                    other_acks.push(ack);
                } else {
                    singles.push((ack, carrier, part.into_message()));
                }
                continue;
            }
            match receipt::parse_deliver_sm(&deliver_sm) {
                Ok(r) => {
                    self.metrics
                        .receipts
                        .with_label_values(&[&carrier, r.state.as_stat()])
                        .inc();
                    receipts.push(Parked::new(carrier, r));
                    receipt_acks.push(ack);
                }
                Err(e) => {
                    self.unparseable(&carrier, &deliver_sm, &e);
                    other_acks.push(ack);
                }
            }
        }

        self.inbound_messages(singles, assembled, now).await;

        // Parked receipts that fall due go first: they arrived first.
        let (mut due, later): (Vec<Parked>, Vec<Parked>) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|p| p.next_try <= now);
        self.parked = later;
        let from_parked = due.len();
        due.extend(receipts);
        let mut all = due;
        match self.match_and_apply(&mut all).await {
            Ok(()) => {
                for mut p in all {
                    let wait = self.carrier(&p.carrier).profile.receipt_wait();
                    if p.since.elapsed() < wait {
                        p.retry_later(now);
                        self.parked.push(p);
                    } else {
                        self.give_up(p);
                    }
                }
                receipt_acks.into_iter().for_each(DeliverAck::send);
            }
            Err(e) => {
                // A temporary error: the SMSC redelivers this batch's receipts
                // later; parked ones (acknowledged before) stay parked.
                tracing::error!(error = %e, "cannot store delivery receipts; asking for redelivery");
                for mut p in all.into_iter().take(from_parked) {
                    p.retry_later(now);
                    self.parked.push(p);
                }
                receipt_acks.into_iter().for_each(DeliverAck::retry_later);
            }
        }
        self.parked.sort_by_key(|p| p.since);
        other_acks.into_iter().for_each(DeliverAck::send);
    }

    /// Hands inbound messages on: single-part ones acknowledged after their
    /// effect is stored (else redelivered by the SMSC); reassembled ones
    /// (whose parts were acknowledged when held) retried here on failure.
    async fn inbound_messages(
        &mut self,
        singles: Vec<(DeliverAck, Arc<str>, MoMessage)>,
        mut assembled: Vec<(Arc<str>, MoMessage)>,
        now: Instant,
    ) {
        for (ack, carrier, m) in singles {
            self.metrics
                .mo_received
                .with_label_values(&[&carrier])
                .inc();
            match self.mo.handle(&carrier, m).await {
                Ok(()) => ack.send(),
                Err(e) => {
                    tracing::error!(error = %e, %carrier, "cannot store an inbound message; asking for redelivery");
                    ack.retry_later();
                }
            }
        }
        assembled.extend(self.reassembler.expired(now));
        for (carrier, _) in &assembled {
            self.metrics.mo_received.with_label_values(&[carrier]).inc();
        }
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.mo_retry)
            .into_iter()
            .partition(|(_, _, at)| *at <= now);
        self.mo_retry = later;
        let retries = due.into_iter().map(|(c, m, _)| (c, m));
        for (carrier, m) in assembled.into_iter().chain(retries) {
            if let Err(e) = self.mo.handle(&carrier, m.clone()).await {
                tracing::error!(error = %e, %carrier, "cannot store a reassembled inbound message; retrying");
                self.mo_retry.push((carrier, m, now + MO_RETRY));
            }
        }
    }

    /// Looks every receipt up and applies those found (one store commit);
    /// the found ones leave `receipts`. On a store error nothing leaves.
    async fn match_and_apply(&mut self, receipts: &mut Vec<Parked>) -> Result<(), StoreError> {
        let mut hits = Vec::with_capacity(receipts.len());
        for p in receipts.iter_mut() {
            hits.push(self.find(p).await?);
        }
        let transitions: Vec<(MessageId, Transition)> = receipts
            .iter()
            .zip(&hits)
            .filter_map(|(p, hit)| {
                let hit = hit.as_ref()?;
                let multipart = self.carriers.get(&p.carrier)?.profile.receipt_mode();
                Some((
                    hit.id,
                    Transition::SegmentReceipt {
                        segment: hit.segment,
                        state: p.receipt.state,
                        error: p.receipt.error_detail(),
                        at: Utc::now(),
                        multipart,
                    },
                ))
            })
            .collect();
        if !transitions.is_empty() {
            self.queue.apply(transitions).await?;
        }
        let mut hits = hits.into_iter();
        let mut learned = Vec::new();
        receipts.retain(|p| match hits.next().flatten() {
            Some(hit) => {
                learned.push((p.carrier.clone(), hit.source, hit.rule));
                false
            }
            None => true,
        });
        for (carrier, source, rule) in learned {
            self.carrier(&carrier).ids.learn(source, rule);
        }
        self.forward_elsewhere(receipts).await
    }

    /// Nodes sharing the store: a receipt for a message another node sent
    /// (the SMSC delivers receipts on any bind) goes to that node.
    async fn forward_elsewhere(&mut self, receipts: &mut Vec<Parked>) -> Result<(), StoreError> {
        if !self.queue.shares_store() {
            return Ok(());
        }
        let mut kept = Vec::with_capacity(receipts.len());
        for p in receipts.drain(..) {
            let mut owner = None;
            for id in &p.tried {
                owner = self.queue.smsc_owner(&p.carrier, id).await?;
                if owner.is_some() {
                    break;
                }
            }
            match owner {
                Some(node) => {
                    let record_carrier = p.carrier.clone();
                    let record = ForwardedReceipt {
                        carrier: p.carrier.to_string(),
                        receipt: p.receipt,
                        received_at: p.received_at,
                    };
                    let bytes = serde_json::to_vec(&record)
                        .map_err(|e| StoreError::Backend(e.to_string()))?;
                    self.queue.forward_receipt(&node, bytes).await?;
                    self.metrics
                        .dlr_forwarded
                        .with_label_values(&[&record_carrier])
                        .inc();
                }
                None => kept.push(p),
            }
        }
        *receipts = kept;
        Ok(())
    }

    /// Receipts other nodes forwarded here, parked to be matched at once.
    async fn take_forwarded(&mut self) {
        match self.queue.take_forwarded(BATCH).await {
            Ok(records) => {
                for bytes in records {
                    match serde_json::from_slice::<ForwardedReceipt>(&bytes) {
                        Ok(f) => {
                            let mut p = Parked::new(Arc::from(f.carrier.as_str()), f.receipt);
                            p.received_at = f.received_at;
                            self.parked.push(p);
                        }
                        Err(e) => tracing::error!(error = %e, "unreadable forwarded receipt"),
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read forwarded receipts"),
        }
    }

    /// Tries the receipt's ids (the TLV's, then the text's): first the way
    /// that found this carrier's last receipts (or as sent), then in every
    /// form the carrier's profile allows. Each string is looked up once.
    async fn find(&mut self, p: &mut Parked) -> Result<Option<Hit>, StoreError> {
        let mut tried = HashSet::new();
        p.tried.clear();
        for thorough in [false, true] {
            let candidates = {
                let receipt = &p.receipt;
                let sources = [
                    (Source::Tlv, receipt.tlv_id.as_deref()),
                    (Source::Text, receipt.text_id.as_deref()),
                ];
                let ids = &self.carrier(&p.carrier).ids;
                let mut out = Vec::new();
                for (source, id) in sources {
                    let Some(id) = id else { continue };
                    let found = if thorough {
                        ids.candidates(id, source)
                    } else {
                        ids.first_choices(id, source)
                    };
                    out.extend(found.into_iter().map(|c| (source, c)));
                }
                out
            };
            for (source, c) in candidates {
                if !tried.insert(c.id.clone()) {
                    continue;
                }
                p.attempts += 1;
                p.tried.push(c.id.clone());
                if let Some((id, segment)) = self.queue.find_by_smsc_id(&p.carrier, &c.id).await? {
                    return Ok(Some(Hit {
                        id,
                        segment,
                        source,
                        rule: c.rule,
                    }));
                }
            }
        }
        Ok(None)
    }

    /// Records a receipt that never found its message.
    fn give_up(&self, p: Parked) {
        self.metrics
            .dlr_unmatched
            .with_label_values(&[&p.carrier])
            .inc();
        tracing::warn!(carrier = %p.carrier, smsc_id = %p.receipt.smsc_message_id,
            attempts = p.attempts, "delivery receipt for unknown message id");
        let r = p.receipt;
        self.dead_letters.record(UnmatchedReceipt {
            carrier: p.carrier.to_string(),
            reason: UnmatchedReason::UnknownId,
            error: r.error_detail(),
            smsc_message_id: Some(r.smsc_message_id),
            tlv_id: r.tlv_id,
            text_id: r.text_id,
            state: Some(r.state.as_stat().to_owned()),
            detail: None,
            received_at: p.received_at,
            given_up_at: Utc::now(),
            attempts: p.attempts,
        });
    }

    /// Records a receipt that could not be read.
    fn unparseable(
        &self,
        carrier: &Arc<str>,
        d: &rusmpp::pdus::DeliverSm,
        e: &receipt::ReceiptError,
    ) {
        self.metrics
            .dlr_unmatched
            .with_label_values(&[carrier])
            .inc();
        tracing::warn!(%carrier, error = %e, "unparseable delivery receipt");
        let text: String = String::from_utf8_lossy(receipt::user_data(d))
            .chars()
            .take(160)
            .collect();
        let now = Utc::now();
        self.dead_letters.record(UnmatchedReceipt {
            carrier: carrier.to_string(),
            reason: UnmatchedReason::Unparseable,
            smsc_message_id: None,
            tlv_id: None,
            text_id: None,
            state: None,
            error: None,
            detail: Some(format!("{e}; text: {text:?}")),
            received_at: now,
            given_up_at: now,
            attempts: 0,
        });
    }

    /// The inbound channel closed (shutdown): a last lookup for parked
    /// receipts, and incomplete MO messages handed on as they are.
    async fn finish(&mut self) {
        let mut parked = std::mem::take(&mut self.parked);
        if !parked.is_empty() {
            match self.match_and_apply(&mut parked).await {
                Ok(()) if !parked.is_empty() => {
                    tracing::warn!(
                        receipts = parked.len(),
                        "shutting down with delivery receipts still unmatched"
                    );
                }
                Ok(()) => {}
                Err(e) => tracing::error!(error = %e, "cannot store parked delivery receipts"),
            }
        }
        let rest = self.reassembler.drain();
        let retries = std::mem::take(&mut self.mo_retry)
            .into_iter()
            .map(|(c, m, _)| (c, m));
        for (carrier, m) in rest.into_iter().chain(retries) {
            if let Err(e) = self.mo.handle(&carrier, m).await {
                tracing::error!(error = %e, %carrier, "cannot store an inbound message at shutdown");
            }
        }
    }
}
