//! The report: per-kind latency percentiles, throughput offered vs achieved, errors by code,
//! the timeline; as a human table and as JSON (`report.json`).

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use chrono::{DateTime, Utc};
use hdrhistogram::{Counter, Histogram};
use serde::{Deserialize, Serialize};

use super::{
    config::{Kind, Mode},
    error::LoadgenError,
};

/// Percentiles of one latency, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

impl Latency {
    /// Summarizes a histogram of microseconds.
    pub fn of<T: Counter>(h: &Histogram<T>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        }
    }
}

/// One kind's measured messages.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KindReport {
    /// The kind.
    pub kind: Option<Kind>,
    /// Messages sent.
    pub sent: u64,
    /// Messages accepted (2xx).
    pub accepted: u64,
    /// Messages refused or failed in transport.
    pub refused: u64,
    /// Segments of the accepted messages (from the 202s).
    pub segments: u64,
    /// Refusals by `error.code` (or `http_<status>`, `timeout`, `connect`, `transport`).
    pub errors: BTreeMap<String, u64>,
    /// HTTP response time from the *intended* send time (open loop: a request held up by a
    /// stall counts the wait; one sent up to 1 ms early counts from its actual send), or from
    /// the actual send time (closed loop).
    pub http: Latency,
    /// HTTP response time from the actual send time (service time).
    pub http_service: Latency,
    /// Accepted messages seen at smsc-sim (when `sim_url` was given).
    pub reached_sim: Option<u64>,
    /// 202 (as loadgen received it) → the (last part's) submit_sm arriving at smsc-sim.
    pub accept_to_submit: Option<Latency>,
    /// Messages whose submit_sm reached smsc-sim before loadgen had their 202 (the gateway
    /// submits as soon as the message is durable); their accept → submit_sm counts as 0.
    pub submitted_before_accept: u64,
    /// Accepted messages with a final status (webhook or poll).
    pub finals: u64,
    /// Final statuses by name.
    pub final_statuses: BTreeMap<String, u64>,
    /// 202 → final status received (webhook) or first seen (poll).
    pub accept_to_final: Option<Latency>,
}

/// One step of a phase (a phase has one, a ramp one per rate).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// Open loop: the rate asked for (messages/s).
    pub offered_rate: Option<f64>,
    /// First intended send → last answer.
    pub elapsed_s: f64,
    /// Messages sent.
    pub sent: u64,
    /// Messages accepted.
    pub accepted: u64,
    /// Messages refused.
    pub refused: u64,
    /// Accepted per second over `elapsed_s`.
    pub achieved_rate: f64,
    /// HTTP p50 of every kind (ms).
    pub http_p50_ms: f64,
    /// HTTP p99 of every kind (ms).
    pub http_p99_ms: f64,
    /// Ramp steps: whether the step kept within its bounds.
    pub passed: Option<bool>,
}

/// One phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseReport {
    /// Its name.
    pub name: String,
    /// Open or closed loop.
    pub mode: Option<Mode>,
    /// Whether its latencies are in the per-kind numbers.
    pub measure: bool,
    /// Closed loop: clients.
    pub concurrency: Option<usize>,
    /// Messages per request.
    pub batch_size: usize,
    /// Its traffic mix.
    pub mix: String,
    /// Its steps.
    pub steps: Vec<StepReport>,
    /// Ramp: the highest rate whose step passed.
    pub max_passing_rate: Option<f64>,
}

/// Totals of the measured phases.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Messages sent.
    pub sent: u64,
    /// Messages accepted.
    pub accepted: u64,
    /// Messages refused.
    pub refused: u64,
    /// Open loop: the rate asked for, over the measured steps (messages/s).
    pub offered_rate: Option<f64>,
    /// Accepted per second over the measured steps.
    pub achieved_rate: f64,
    /// Measured messages' arrivals per second at smsc-sim (first → last arrival).
    pub sim_rate: Option<f64>,
    /// Length of the measured steps (s).
    pub elapsed_s: f64,
    /// HTTP response time of every kind.
    pub http: Latency,
}

/// What was read from smsc-sim.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SimReport {
    /// The simulator's URL.
    pub url: String,
    /// Records read (from every phase and any other client).
    pub records_read: u64,
    /// Measured accepted messages found.
    pub reached: u64,
    /// Measured accepted messages not found (yet) when the drain ended.
    pub missing: u64,
    /// Multipart messages of this run with parts still missing.
    pub incomplete: u64,
}

/// One timeline bucket. Latencies per kind in ms, keyed by kind name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Start of the bucket, seconds after the run started (intended send time).
    pub t_s: f64,
    /// Messages sent per second.
    pub sent_rate: f64,
    /// Messages accepted per second.
    pub accepted_rate: f64,
    /// Messages refused per second.
    pub refused_rate: f64,
    /// HTTP p50 per kind.
    pub http_p50_ms: BTreeMap<String, f64>,
    /// HTTP p99 per kind.
    pub http_p99_ms: BTreeMap<String, f64>,
    /// Accept → submit_sm p99 per kind.
    pub submit_p99_ms: BTreeMap<String, f64>,
    /// Accept → final p99 per kind.
    pub final_p99_ms: BTreeMap<String, f64>,
}

/// The result of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The run's id (its tokens are `LG<run_id>-<seq>`).
    pub run_id: String,
    /// The scenario's description.
    pub description: String,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// The gateway URL.
    pub url: String,
    /// The phases in order.
    pub phases: Vec<PhaseReport>,
    /// Totals of the measured phases.
    pub total: Totals,
    /// Per kind (kinds that were sent), measured phases only.
    pub kinds: Vec<KindReport>,
    /// Refusals by code over every kind.
    pub errors: BTreeMap<String, u64>,
    /// smsc-sim correlation, when `sim_url` was given.
    pub sim: Option<SimReport>,
    /// Webhook requests received.
    pub webhooks_received: Option<u64>,
    /// Width of a timeline bucket (s).
    pub timeline_width_s: u64,
    /// Latency and throughput over time.
    pub timeline: Vec<Point>,
    /// Files written.
    pub files: Vec<String>,
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

impl Report {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "loadgen run {} → {}{}",
            self.run_id,
            self.url,
            if self.description.is_empty() {
                String::new()
            } else {
                format!(" ({})", self.description)
            }
        );
        let _ = writeln!(
            s,
            "\n{:<14} {:<6} {:>9} {:>9} {:>9} {:>8} {:>11} {:>9} {:>9}",
            "phase",
            "mode",
            "offered/s",
            "sent",
            "accepted",
            "refused",
            "achieved/s",
            "p50 ms",
            "p99 ms",
        );
        for p in &self.phases {
            let mode = match p.mode {
                Some(Mode::Open) => "open".to_owned(),
                Some(Mode::Closed) => format!("c={}", p.concurrency.unwrap_or(0)),
                None => String::new(),
            };
            for st in &p.steps {
                let note = match (st.passed, p.measure) {
                    (Some(true), _) => "pass",
                    (Some(false), _) => "FAIL",
                    (None, false) => "(not measured)",
                    (None, true) => "",
                };
                let _ = writeln!(
                    s,
                    "{:<14} {:<6} {:>9} {:>9} {:>9} {:>8} {:>11.1} {:>9} {:>9}  {}",
                    p.name,
                    mode,
                    st.offered_rate
                        .map_or("-".to_owned(), |r| format!("{r:.0}")),
                    st.sent,
                    st.accepted,
                    st.refused,
                    st.achieved_rate,
                    ms(st.http_p50_ms),
                    ms(st.http_p99_ms),
                    note
                );
            }
            if let Some(r) = p.max_passing_rate {
                let _ = writeln!(s, "{:<14} highest passing rate: {r:.0} msg/s", p.name);
            }
        }
        let t = &self.total;
        let _ = writeln!(
            s,
            "\nmeasured: sent {}, accepted {}, refused {} in {:.1} s — offered {}, achieved {:.1} msg/s{}",
            t.sent,
            t.accepted,
            t.refused,
            t.elapsed_s,
            t.offered_rate
                .map_or("-".to_owned(), |r| format!("{r:.1} msg/s")),
            t.achieved_rate,
            t.sim_rate
                .map_or(String::new(), |r| format!(", at smsc-sim {r:.1} msg/s"))
        );
        let _ = writeln!(
            s,
            "\n{:<14} {:<22} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "kind", "latency (ms)", "count", "p50", "p90", "p99", "p99.9", "max"
        );
        for k in &self.kinds {
            let name = k.kind.map_or("?", Kind::as_str);
            let mut rows = vec![
                ("HTTP response", Some(&k.http)),
                ("HTTP service time", Some(&k.http_service)),
                ("accept → submit_sm", k.accept_to_submit.as_ref()),
                ("accept → final", k.accept_to_final.as_ref()),
            ];
            rows.retain(|(_, l)| l.is_some_and(|l| l.count > 0));
            for (label, l) in rows {
                let Some(l) = l else { continue };
                let _ = writeln!(
                    s,
                    "{:<14} {:<22} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
                    name,
                    label,
                    l.count,
                    ms(l.p50_ms),
                    ms(l.p90_ms),
                    ms(l.p99_ms),
                    ms(l.p999_ms),
                    ms(l.max_ms)
                );
            }
            let mut notes = vec![format!(
                "sent {}, accepted {}, refused {}, segments {}",
                k.sent, k.accepted, k.refused, k.segments
            )];
            if let Some(r) = k.reached_sim {
                notes.push(format!(
                    "at smsc-sim {r}/{} ({} before their 202 arrived)",
                    k.accepted, k.submitted_before_accept
                ));
            }
            if k.finals > 0 {
                let statuses: Vec<String> = k
                    .final_statuses
                    .iter()
                    .map(|(st, n)| format!("{st} {n}"))
                    .collect();
                notes.push(format!("final {} ({})", k.finals, statuses.join(", ")));
            }
            let _ = writeln!(s, "{:<14} {}", name, notes.join("; "));
        }
        if self.errors.is_empty() {
            let _ = writeln!(s, "\nerrors: none");
        } else {
            let _ = writeln!(s, "\nerrors by code:");
            for (code, n) in &self.errors {
                let _ = writeln!(s, "  {code:<28} {n}");
            }
        }
        if let Some(sim) = &self.sim {
            let _ = writeln!(
                s,
                "smsc-sim {}: {} of this run's accepted messages seen, {} missing, {} multipart incomplete ({} records read)",
                sim.url, sim.reached, sim.missing, sim.incomplete, sim.records_read
            );
        }
        if let Some(n) = self.webhooks_received {
            let _ = writeln!(s, "webhooks received: {n}");
        }
        for f in &self.files {
            let _ = writeln!(s, "wrote {f}");
        }
        s
    }

    /// Writes the report as pretty JSON.
    pub fn write_json(&self, path: &Path) -> Result<(), LoadgenError> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text).map_err(|source| LoadgenError::Io {
            what: format!("writing {}", path.display()),
            source,
        })
    }
}
