//! Submitting one message's segments on a bind and deciding what happens to
//! the message: accepted, retried (transient error) or failed (permanent).

use std::sync::Arc;

use chrono::Utc;
use futures::StreamExt;
use rusmpp::CommandStatus;

use super::pdu;
use super::smpp::{SmppClient, SmppError};
use crate::config::CarrierErrors;
use crate::message::{ErrorInfo, Message, MessageId, Transition};
use crate::metrics::Metrics;

/// How a submit_sm attempt ended, from the message's point of view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The SMSC accepted it with this message id.
    Accepted(String),
    /// Worth another attempt.
    Retry(Retry),
    /// Will never succeed.
    Fail(ErrorInfo),
}

/// A transient failure and what it asks of the bind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Retry {
    /// Metric label (throttled, queue_full, timeout, generic_nack, disconnected, transient).
    pub reason: &'static str,
    /// The SMSC asked us to slow down.
    pub slow_down: Option<SlowDown>,
    /// Counts towards the attempt limit (the message may be at fault).
    pub counts: bool,
    /// The carrier is failing: its routes should fail over for a while.
    pub route_failure: bool,
    /// What to record if the attempts run out.
    pub error: ErrorInfo,
}

/// How the SMSC asked us to slow down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SlowDown {
    /// 0x58: cut the rate.
    Throttled,
    /// 0x14: pause, then cut the rate.
    QueueFull,
}

fn smpp_error(status: CommandStatus) -> ErrorInfo {
    let code: u32 = status.into();
    ErrorInfo::new(
        format!("smpp_0x{code:08x}"),
        format!("The carrier refused the message: {status:?} (0x{code:08x})."),
    )
}

/// Classifies a submit failure with the carrier's error lists: throttling
/// and a full queue slow down and retry without counting; timeouts,
/// generic_nack and the listed codes retry with backoff (counted); lost
/// connections retry at once; any other command_status is permanent.
pub(crate) fn classify(e: &SmppError, errors: &CarrierErrors) -> Outcome {
    let retry = |reason, slow_down, counts, error| {
        Outcome::Retry(Retry {
            reason,
            slow_down,
            counts,
            route_failure: false,
            error,
        })
    };
    match e {
        SmppError::Status(CommandStatus::EsmeRthrottled) => retry(
            "throttled",
            Some(SlowDown::Throttled),
            false,
            smpp_error(CommandStatus::EsmeRthrottled),
        ),
        SmppError::Status(CommandStatus::EsmeRmsgqful) => retry(
            "queue_full",
            Some(SlowDown::QueueFull),
            false,
            smpp_error(CommandStatus::EsmeRmsgqful),
        ),
        SmppError::Status(status) => {
            let code: u32 = (*status).into();
            let route_failure = errors.route_failure.contains(&code);
            if route_failure || errors.retry.contains(&code) {
                Outcome::Retry(Retry {
                    reason: if route_failure {
                        "route_failure"
                    } else {
                        "transient"
                    },
                    slow_down: None,
                    counts: true,
                    route_failure,
                    error: smpp_error(*status),
                })
            } else {
                Outcome::Fail(smpp_error(*status))
            }
        }
        // The SMSC could not read the PDU: nothing is known about the
        // message, so try again later, as for a timeout.
        SmppError::GenericNack(status) => {
            let code: u32 = (*status).into();
            retry(
                "generic_nack",
                None,
                true,
                ErrorInfo::new(
                    "smpp_generic_nack",
                    format!("The carrier could not read the submit (generic_nack, 0x{code:08x})."),
                ),
            )
        }
        SmppError::Timeout(_) => retry(
            "timeout",
            None,
            true,
            ErrorInfo::new(
                "smpp_timeout",
                "The carrier did not answer the submit in time.",
            ),
        ),
        SmppError::Closed | SmppError::Unexpected => retry(
            "disconnected",
            None,
            false,
            ErrorInfo::new(
                "smpp_disconnected",
                "The connection to the carrier was lost.",
            ),
        ),
    }
}

/// What the bind should do after a message's attempt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// The SMSC asked us to slow down.
    pub slow_down: Option<SlowDown>,
    /// A route failure: the carrier should step aside.
    pub route_failure: bool,
}

/// Settings a submit needs from its carrier.
pub(crate) struct SubmitPolicy<'a> {
    /// The carrier's error lists.
    pub errors: &'a CarrierErrors,
    /// Attempts allowed for counted transient errors.
    pub max_attempts: u32,
    /// The carrier's encoding and addressing quirks.
    pub profile: &'a crate::carrier::profile::CarrierProfile,
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
    policy: &SubmitPolicy<'_>,
    metrics: &Metrics,
) -> (Vec<(MessageId, Transition)>, Verdict) {
    let pending: Vec<u32> = m.pending_segments().collect();
    let now = Utc::now();
    let pdus = match pdu::submit_sms_for(m, &pending, now, policy.profile) {
        Ok(p) => p,
        Err(e) => {
            let error = ErrorInfo::new("smpp_encode", e.to_string());
            return (
                vec![(m.id, Transition::Fail { error, at: now })],
                Verdict::default(),
            );
        }
    };
    let attempts = pdus.into_iter().map(|part| async move {
        let outcome = match client.submit_sm(part.pdu).await {
            Ok(smsc_id) => Outcome::Accepted(smsc_id),
            Err(e) => classify(&e, policy.errors),
        };
        (part.segments, outcome)
    });
    let results: Vec<(Vec<u32>, Outcome)> = futures::stream::iter(attempts)
        .buffer_unordered(slots.max(1))
        .collect()
        .await;

    let mut transitions = Vec::with_capacity(results.len() + 1);
    let mut verdict = Verdict::default();
    let mut retry: Option<Retry> = None;
    let mut fail = None;
    for (segments, outcome) in results {
        match outcome {
            Outcome::Accepted(smsc_id) => {
                metrics
                    .segments_submitted
                    .with_label_values(&[carrier])
                    .inc_by(segments.len() as u64);
                // A message_payload PDU carries every segment under one id.
                transitions.extend(segments.into_iter().map(|segment| {
                    (
                        m.id,
                        Transition::SegmentAccepted {
                            carrier: carrier.to_string(),
                            segment,
                            smsc_id: smsc_id.clone(),
                            at: Utc::now(),
                        },
                    )
                }));
            }
            Outcome::Retry(r) => {
                metrics
                    .submit_errors
                    .with_label_values(&[carrier, r.reason])
                    .inc();
                verdict.slow_down = verdict.slow_down.or(r.slow_down);
                verdict.route_failure |= r.route_failure;
                // A counted retry outweighs an uncounted one.
                if retry.as_ref().is_none_or(|prev| r.counts && !prev.counts) {
                    retry = Some(r);
                }
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
    } else if let Some(r) = retry {
        metrics.retries.with_label_values(&[r.reason]).inc();
        let t = if r.counts {
            Transition::Retry {
                error: r.error,
                max_attempts: policy.max_attempts,
                at: Utc::now(),
            }
        } else {
            Transition::Requeue
        };
        transitions.push((m.id, t));
    }
    (transitions, verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors() -> CarrierErrors {
        CarrierErrors {
            retry: vec![0x08],
            route_failure: vec![0x45],
            failover_s: 30,
        }
    }

    fn retry_of(e: SmppError) -> Retry {
        match classify(&e, &errors()) {
            Outcome::Retry(r) => r,
            other => panic!("expected a retry, got {other:?}"),
        }
    }

    #[test]
    fn throttling_and_full_queues_slow_down_and_do_not_count() {
        let t = retry_of(SmppError::Status(CommandStatus::EsmeRthrottled));
        assert_eq!((t.slow_down, t.counts), (Some(SlowDown::Throttled), false));
        let q = retry_of(SmppError::Status(CommandStatus::EsmeRmsgqful));
        assert_eq!((q.slow_down, q.counts), (Some(SlowDown::QueueFull), false));
    }

    #[test]
    fn lost_connections_retry_at_once_and_timeouts_count() {
        let d = retry_of(SmppError::Closed);
        assert_eq!((d.reason, d.counts), ("disconnected", false));
        let t = retry_of(SmppError::Timeout(std::time::Duration::from_secs(1)));
        assert_eq!((t.reason, t.counts), ("timeout", true));
    }

    #[test]
    fn a_generic_nack_retries_with_backoff_and_counts() {
        // Whatever status it carries, even one that would be permanent on a
        // submit_sm_resp (0x0B: invalid destination).
        for status in [CommandStatus::EsmeRinvcmdlen, CommandStatus::EsmeRinvdstadr] {
            let n = retry_of(SmppError::GenericNack(status));
            assert_eq!(
                (n.reason, n.counts, n.slow_down),
                ("generic_nack", true, None)
            );
            assert_eq!(n.error.code, "smpp_generic_nack");
        }
    }

    #[test]
    fn listed_codes_retry_and_route_failures_fail_over() {
        let r = retry_of(SmppError::Status(CommandStatus::EsmeRsyserr));
        assert_eq!((r.counts, r.route_failure), (true, false));
        assert_eq!(r.error.code, "smpp_0x00000008");
        let f = retry_of(SmppError::Status(CommandStatus::EsmeRsubmitfail));
        assert_eq!((f.counts, f.route_failure), (true, true));
    }

    #[test]
    fn other_statuses_fail_with_the_smpp_code() {
        let Outcome::Fail(e) =
            classify(&SmppError::Status(CommandStatus::EsmeRinvdstadr), &errors())
        else {
            panic!("expected a permanent failure");
        };
        assert_eq!(e.code, "smpp_0x0000000b");
    }
}
