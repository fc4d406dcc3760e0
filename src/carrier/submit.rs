//! Submitting one message's segments on a bind and deciding what happens to
//! the message: accepted, retried (transient error) or failed (permanent).

use std::sync::Arc;

use chrono::Utc;
use futures::StreamExt;
use rusmpp::CommandStatus;

use super::pdu;
use super::smpp::{SmppClient, SmppError};
use crate::message::{ErrorInfo, Message, MessageId, Transition};
use crate::metrics::Metrics;

/// How a submit_sm attempt ended, from the message's point of view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The SMSC accepted it with this message id.
    Accepted(String),
    /// Worth another attempt; `reason` is a metric label.
    Retry {
        /// Metric label (throttled, queue_full, timeout, disconnected).
        reason: &'static str,
        /// The SMSC asked us to slow down (0x58/0x14).
        slow_down: bool,
    },
    /// Will never succeed.
    Fail(ErrorInfo),
}

/// Classifies a submit failure: throttling, a full queue, timeouts and lost
/// connections are transient; any other command_status is permanent.
pub(crate) fn classify(e: &SmppError) -> Outcome {
    match e {
        SmppError::Status(CommandStatus::EsmeRthrottled) => Outcome::Retry {
            reason: "throttled",
            slow_down: true,
        },
        SmppError::Status(CommandStatus::EsmeRmsgqful) => Outcome::Retry {
            reason: "queue_full",
            slow_down: true,
        },
        SmppError::Status(status) => {
            let code: u32 = (*status).into();
            Outcome::Fail(ErrorInfo::new(
                format!("smpp_0x{code:08x}"),
                format!("The carrier refused the message: {status:?} (0x{code:08x})."),
            ))
        }
        SmppError::Timeout(_) => Outcome::Retry {
            reason: "timeout",
            slow_down: false,
        },
        SmppError::Closed | SmppError::Unexpected => Outcome::Retry {
            reason: "disconnected",
            slow_down: false,
        },
    }
}

/// What the bind should do after a message's attempt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// The SMSC asked us to slow down.
    pub slow_down: bool,
}

/// Submits the message's pending segments on `client`, at most `slots` at a
/// time (the window slots the bind reserved), and returns the transitions that
/// settle the message. Never loses the message: anything but acceptance or a
/// permanent refusal requeues it.
pub(crate) async fn submit_message(
    client: &SmppClient,
    carrier: &Arc<str>,
    m: &Message,
    slots: usize,
    metrics: &Metrics,
) -> (Vec<(MessageId, Transition)>, Verdict) {
    let pending: Vec<u32> = m.pending_segments().collect();
    let now = Utc::now();
    let pdus = match pdu::submit_sms(m, &pending, now) {
        Ok(p) => p,
        Err(e) => {
            let error = ErrorInfo::new("smpp_encode", e.to_string());
            return (
                vec![(m.id, Transition::Fail { error, at: now })],
                Verdict::default(),
            );
        }
    };
    let attempts = pdus.into_iter().map(|(segment, pdu)| async move {
        let outcome = match client.submit_sm(pdu).await {
            Ok(smsc_id) => Outcome::Accepted(smsc_id),
            Err(e) => classify(&e),
        };
        (segment, outcome)
    });
    let results: Vec<(u32, Outcome)> = futures::stream::iter(attempts)
        .buffer_unordered(slots.max(1))
        .collect()
        .await;

    let mut transitions = Vec::with_capacity(results.len() + 1);
    let mut verdict = Verdict::default();
    let mut retry = None;
    let mut fail = None;
    for (segment, outcome) in results {
        match outcome {
            Outcome::Accepted(smsc_id) => {
                metrics
                    .segments_submitted
                    .with_label_values(&[carrier])
                    .inc();
                transitions.push((
                    m.id,
                    Transition::SegmentAccepted {
                        carrier: carrier.to_string(),
                        segment,
                        smsc_id,
                        at: Utc::now(),
                    },
                ));
            }
            Outcome::Retry { reason, slow_down } => {
                metrics
                    .submit_errors
                    .with_label_values(&[carrier, reason])
                    .inc();
                verdict.slow_down |= slow_down;
                retry = Some(reason);
            }
            Outcome::Fail(error) => {
                metrics
                    .submit_errors
                    .with_label_values(&[carrier, "permanent"])
                    .inc();
                fail = Some(error);
            }
        }
    }
    if let Some(error) = fail {
        transitions.push((
            m.id,
            Transition::Fail {
                error,
                at: Utc::now(),
            },
        ));
    } else if let Some(reason) = retry {
        metrics.retries.with_label_values(&[reason]).inc();
        transitions.push((m.id, Transition::Requeue));
    }
    (transitions, verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_and_full_queues_are_retried_slower() {
        for status in [CommandStatus::EsmeRthrottled, CommandStatus::EsmeRmsgqful] {
            assert!(matches!(
                classify(&SmppError::Status(status)),
                Outcome::Retry {
                    slow_down: true,
                    ..
                }
            ));
        }
    }

    #[test]
    fn lost_connections_and_timeouts_are_retried() {
        assert!(matches!(
            classify(&SmppError::Closed),
            Outcome::Retry {
                reason: "disconnected",
                ..
            }
        ));
        assert!(matches!(
            classify(&SmppError::Timeout(std::time::Duration::from_secs(1))),
            Outcome::Retry {
                reason: "timeout",
                ..
            }
        ));
    }

    #[test]
    fn other_statuses_fail_with_the_smpp_code() {
        let Outcome::Fail(e) = classify(&SmppError::Status(CommandStatus::EsmeRinvdstadr)) else {
            panic!("expected a permanent failure");
        };
        assert_eq!(e.code, "smpp_0x0000000b");
    }
}
