//! The return path: deliver_sm from the carriers. Delivery receipts are
//! matched to their message by the SMSC message id and applied to its status;
//! mobile-originated messages are counted (keyword handling comes with the
//! compliance engine). Every deliver_sm is acknowledged, matched or not, once
//! its effect is stored.
//!
//! [`spawn`] is the stage's public entry.

pub mod receipt;

use std::sync::Arc;

use chrono::Utc;
use futures::future::join_all;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::carrier::{DeliverAck, Inbound};
use crate::message::{MessageId, Transition};
use crate::metrics::Metrics;
use crate::queue::Queue;

/// Most deliver_sm handled (and committed) together.
const BATCH: usize = 256;

/// Capacity of the channel from the carriers to this stage.
pub const INBOUND_CAPACITY: usize = 4096;

/// Starts the stage; it runs until every sender of `inbound` is dropped.
pub fn spawn(
    queue: Arc<Queue>,
    metrics: Arc<Metrics>,
    inbound: mpsc::Receiver<Inbound>,
) -> JoinHandle<()> {
    tokio::spawn(run(queue, metrics, inbound))
}

async fn run(queue: Arc<Queue>, metrics: Arc<Metrics>, mut inbound: mpsc::Receiver<Inbound>) {
    let mut batch = Vec::with_capacity(BATCH);
    while inbound.recv_many(&mut batch, BATCH).await > 0 {
        handle_batch(&queue, &metrics, batch.drain(..)).await;
    }
}

/// Matches the receipts in a batch, applies them in one store commit, then
/// acknowledges every PDU of the batch.
async fn handle_batch(
    queue: &Queue,
    metrics: &Metrics,
    batch: impl Iterator<Item = Inbound>,
) {
    let mut acks: Vec<DeliverAck> = Vec::new();
    let mut transitions: Vec<(MessageId, Transition)> = Vec::new();
    for Inbound {
        carrier,
        deliver_sm,
        ack,
    } in batch
    {
        acks.push(ack);
        if !receipt::is_receipt(&deliver_sm) {
            metrics.mo_received.with_label_values(&[&carrier]).inc();
            tracing::info!(%carrier, "inbound (MO) message received");
            continue;
        }
        let r = match receipt::parse_deliver_sm(&deliver_sm) {
            Ok(r) => r,
            Err(e) => {
                metrics.dlr_unmatched.with_label_values(&[&carrier]).inc();
                tracing::warn!(%carrier, error = %e, "unparseable delivery receipt");
                continue;
            }
        };
        metrics
            .receipts
            .with_label_values(&[&carrier, r.state.as_stat()])
            .inc();
        match queue.find_by_smsc_id(&carrier, &r.smsc_message_id).await {
            Ok(Some((id, segment))) => transitions.push((
                id,
                Transition::SegmentReceipt {
                    segment,
                    state: r.state,
                    error: r.error,
                    at: Utc::now(),
                },
            )),
            Ok(None) => {
                metrics.dlr_unmatched.with_label_values(&[&carrier]).inc();
                tracing::warn!(%carrier, smsc_id = %r.smsc_message_id, "delivery receipt for unknown message id");
            }
            Err(e) => tracing::error!(error = %e, "cannot look up SMSC id"),
        }
    }
    if !transitions.is_empty()
        && let Err(e) = queue.apply(transitions).await
    {
        // Not acknowledged → the SMSC redelivers the receipts later.
        tracing::error!(error = %e, "cannot store delivery receipts; not acknowledging");
        return;
    }
    join_all(acks.into_iter().map(DeliverAck::send)).await;
}
