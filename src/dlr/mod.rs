//! The return path: deliver_sm from the carriers. Delivery receipts are
//! matched to their message by the SMSC message id and applied to its status;
//! mobile-originated messages are counted and handed to a [`MoHandler`] (the
//! compliance stage's keyword handling and inbound listing). Every deliver_sm
//! is acknowledged once its effect is stored.
//!
//! A receipt can overtake the submit_sm_resp that carries its id (the SMSC
//! answers on one path and reports on another). Such a receipt is parked and
//! matched again for [`PARK_FOR`] before it is counted as unmatched.
//!
//! [`spawn`] is the stage's public entry.

pub mod receipt;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::carrier::{DeliverAck, Inbound};
use crate::message::{MessageId, Transition};
use crate::metrics::Metrics;
use crate::queue::Queue;
use receipt::Receipt;

/// Most deliver_sm handled (and committed) together.
const BATCH: usize = 256;

/// Capacity of the channel from the carriers to this stage.
pub const INBOUND_CAPACITY: usize = 4096;

/// How long an unmatched receipt keeps being retried before it is given up.
pub const PARK_FOR: Duration = Duration::from_secs(10);

/// How often parked receipts are retried when nothing else arrives.
const PARK_RETRY: Duration = Duration::from_millis(100);

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
    async fn handle(&self, carrier: &str, mo: MoMessage) -> Result<(), crate::queue::StoreError>;
}

/// A receipt waiting for its SMSC id to be known.
struct Parked {
    carrier: Arc<str>,
    receipt: Receipt,
    since: Instant,
}

/// Starts the stage; it runs until every sender of `inbound` is dropped.
pub fn spawn(
    queue: Arc<Queue>,
    metrics: Arc<Metrics>,
    mo: Arc<dyn MoHandler>,
    inbound: mpsc::Receiver<Inbound>,
) -> JoinHandle<()> {
    tokio::spawn(run(queue, metrics, mo, inbound))
}

async fn run(
    queue: Arc<Queue>,
    metrics: Arc<Metrics>,
    mo: Arc<dyn MoHandler>,
    mut inbound: mpsc::Receiver<Inbound>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut parked: Vec<Parked> = Vec::new();
    loop {
        tokio::select! {
            n = inbound.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    break;
                }
            }
            _ = tokio::time::sleep(PARK_RETRY), if !parked.is_empty() => {}
        }
        let mut acks = Vec::with_capacity(batch.len());
        let mut receipts = std::mem::take(&mut parked);
        let mut mos = Vec::new();
        for inbound in batch.drain(..) {
            match read(&metrics, inbound, &mut acks) {
                Some(Read::Receipt(p)) => receipts.push(p),
                Some(Read::Mo(carrier, m)) => mos.push((carrier, m)),
                None => {}
            }
        }
        let mut mo_failed = false;
        for (carrier, m) in mos {
            if let Err(e) = mo.handle(&carrier, m).await {
                tracing::error!(error = %e, %carrier, "cannot store an inbound message");
                mo_failed = true;
            }
        }
        match match_and_apply(&queue, receipts).await {
            Ok(unmatched) => {
                for p in unmatched {
                    if p.since.elapsed() < PARK_FOR {
                        parked.push(p);
                    } else {
                        metrics.dlr_unmatched.with_label_values(&[&p.carrier]).inc();
                        tracing::warn!(carrier = %p.carrier, smsc_id = %p.receipt.smsc_message_id, "delivery receipt for unknown message id");
                    }
                }
            }
            Err(e) => {
                // A temporary error → the SMSC redelivers the receipts later.
                tracing::error!(error = %e, "cannot store delivery receipts; asking for redelivery");
                acks.into_iter().for_each(DeliverAck::retry_later);
                continue;
            }
        }
        if mo_failed {
            // A temporary error → the SMSC redelivers the batch (receipts
            // already applied are applied again harmlessly).
            acks.into_iter().for_each(DeliverAck::retry_later);
            continue;
        }
        acks.into_iter().for_each(DeliverAck::send);
    }
}

/// What a deliver_sm carried.
enum Read {
    Receipt(Parked),
    Mo(Arc<str>, MoMessage),
}

/// Takes the ack, counts the PDU, and returns the receipt or MO it carries.
fn read(metrics: &Metrics, inbound: Inbound, acks: &mut Vec<DeliverAck>) -> Option<Read> {
    let Inbound {
        carrier,
        deliver_sm,
        ack,
    } = inbound;
    acks.push(ack);
    if !receipt::is_receipt(&deliver_sm) {
        metrics.mo_received.with_label_values(&[&carrier]).inc();
        let mo = decode_mo(&deliver_sm);
        return Some(Read::Mo(carrier, mo));
    }
    match receipt::parse_deliver_sm(&deliver_sm) {
        Ok(receipt) => {
            metrics
                .receipts
                .with_label_values(&[&carrier, receipt.state.as_stat()])
                .inc();
            Some(Read::Receipt(Parked {
                carrier,
                receipt,
                since: Instant::now(),
            }))
        }
        Err(e) => {
            metrics.dlr_unmatched.with_label_values(&[&carrier]).inc();
            tracing::warn!(%carrier, error = %e, "unparseable delivery receipt");
            None
        }
    }
}

/// Decodes an MO deliver_sm: addresses, and the text by its data_coding.
/// Multipart MO reassembly comes with carrier profiles.
fn decode_mo(d: &rusmpp::pdus::DeliverSm) -> MoMessage {
    MoMessage {
        from: d.source_addr.to_string(),
        to: d.destination_addr.to_string(),
        text: crate::encoding::decode(u8::from(d.data_coding), receipt::user_data(d)),
    }
}

/// Applies every receipt whose SMSC id is known (one store commit) and
/// returns the others.
async fn match_and_apply(
    queue: &Queue,
    receipts: Vec<Parked>,
) -> Result<Vec<Parked>, crate::queue::StoreError> {
    let mut transitions: Vec<(MessageId, Transition)> = Vec::new();
    let mut unmatched = Vec::new();
    for p in receipts {
        match queue
            .find_by_smsc_id(&p.carrier, &p.receipt.smsc_message_id)
            .await?
        {
            Some((id, segment)) => transitions.push((
                id,
                Transition::SegmentReceipt {
                    segment,
                    state: p.receipt.state,
                    error: p.receipt.error,
                    at: Utc::now(),
                },
            )),
            None => unmatched.push(p),
        }
    }
    if !transitions.is_empty() {
        queue.apply(transitions).await?;
    }
    Ok(unmatched)
}
