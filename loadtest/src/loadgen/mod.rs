//! `loadgen`: a load generator for smsgate (or any HTTP SMS API) that reports a trustworthy
//! latency picture.
//!
//! ```no_run
//! # async fn demo() -> Result<(), smsgate_loadtest::loadgen::LoadgenError> {
//! use smsgate_loadtest::loadgen::{Config, Mode, run};
//! let config = Config {
//!     url: "http://127.0.0.1:8080".into(),
//!     mode: Mode::Open,
//!     rate: 2000.0,
//!     duration_s: Some(10.0),
//!     sim_url: Some("http://127.0.0.1:8081".into()),
//!     out: Some("target/loadgen".into()),
//!     ..Config::default()
//! };
//! let report = run(config).await?;
//! println!("{}", report.table());
//! # Ok(()) }
//! ```
//!
//! A run goes phase by phase ([`Config::phases`], or one phase from the top-level fields):
//! - open loop sends at fixed *intended* times and measures latency from them, so a stall
//!   shows up as latency (no coordinated omission); closed loop runs C clients back to back;
//!   a ramp steps an open-loop rate up until the HTTP p99 breaks a bound;
//! - every message carries a token `LG<run>-<seq>` at the start of its text and as its
//!   `client_ref`; after the run the simulator's records (`GET /submits` of `smsc-sim`) are
//!   searched for the tokens to time accept → submit_sm, and final statuses come from the
//!   built-in webhook receiver (`callback_url`) or from polling a sample;
//! - the [`Report`] has p50/p90/p99/p99.9/max per kind, throughput offered vs achieved,
//!   errors by code and a timeline; [`Config::out`] gets `report.json` and `latency.svg`.

mod client;
mod config;
mod correlate;
mod driver;
mod error;
mod plot;
mod report;
mod stats;
mod status;
mod traffic;

use std::{
    ops::Range,
    sync::{Arc, atomic::AtomicU64},
    time::{Duration, Instant},
};

use chrono::Utc;
use rand::Rng;
use tokio::sync::Semaphore;

pub use config::{
    Config, Kind, KindMix, Mode, Overrides, PerKind, Phase, Ramp, TextClass, TextMix, Weights,
};
pub use error::LoadgenError;
pub use plot::svg;
pub use report::{KindReport, Latency, PhaseReport, Point, Report, SimReport, StepReport, Totals};

use client::{Client, Template};
use config::PhasePlan;
use correlate::SimFeed;
use driver::{Ctx, StepPlan, StepResult};
use stats::{Collected, Event, Recorder, Series, record};
use status::{Poller, Receiver};
use traffic::{Traffic, token_prefix};

/// After the last answer, a drain waiting only for webhooks ends when none came for this long.
const DRAIN_IDLE: Duration = Duration::from_secs(2);

/// Runs the load described by `config` and returns the report (also written to
/// [`Config::out`] when set).
pub async fn run(config: Config) -> Result<Report, LoadgenError> {
    config.validate()?;
    let plans = config.plans()?;
    let run_id = new_run_id();
    let prefix = token_prefix(&run_id);
    let template = match &config.request_template {
        Some(path) => Some(Template::new(
            std::fs::read_to_string(path).map_err(|source| LoadgenError::Io {
                what: format!("reading {}", path.display()),
                source,
            })?,
            &config.template_content_type,
        )),
        None => None,
    };

    let (recorder, recorder_task) = Recorder::start(config.progress);
    let receiver = if config.webhook {
        Some(Receiver::start(config.webhook_listen, recorder.clone(), &prefix).await?)
    } else {
        None
    };
    let callback_url = receiver.as_ref().map(|r| {
        config
            .webhook_url
            .clone()
            .unwrap_or_else(|| format!("http://{}/hook", r.addr))
    });
    let client = Arc::new(Client::new(&config, template, callback_url)?);
    let mut feed = match &config.sim_url {
        Some(url) => Some(SimFeed::start(client.http().clone(), url, prefix.clone()).await?),
        None => None,
    };
    let poller = (config.poll_status > 0.0).then(|| {
        Arc::new(Poller::new(
            Arc::clone(&client),
            recorder.clone(),
            Duration::from_millis(config.poll_interval_ms.max(1)),
        ))
    });
    let max_inflight = u32::try_from(config.max_inflight).unwrap_or(u32::MAX >> 4);
    let ctx = Arc::new(Ctx {
        client: Arc::clone(&client),
        traffic: Traffic::new(&config, &run_id),
        recorder: recorder.clone(),
        poller: poller.clone(),
        poll_threshold: (config.poll_status * u64::MAX as f64) as u64,
        t0: Instant::now(),
        seq: AtomicU64::new(0),
        requests: AtomicU64::new(0),
        slots: Arc::new(Semaphore::new(max_inflight as usize)),
        max_inflight,
    });
    let started_at = Utc::now();

    let mut phases = Vec::new();
    let mut measured: Vec<Range<u64>> = Vec::new();
    let mut step = 0;
    for plan in &plans {
        recorder.send(Event::Phase(plan.name.clone()));
        let first = ctx.seq.load(std::sync::atomic::Ordering::Relaxed);
        let steps = run_phase(&ctx, plan, &mut step).await;
        let end = ctx.seq.load(std::sync::atomic::Ordering::Relaxed);
        if plan.measure {
            measured.push(first..end);
        }
        phases.push((plan.clone(), steps));
    }

    recorder.send(Event::Phase("drain".to_owned()));
    drain(
        &config,
        &recorder,
        &mut feed,
        &measured,
        receiver.is_some(),
        poller.as_deref(),
    )
    .await;

    if let Some(p) = &poller {
        p.stop();
    }
    let webhooks = receiver
        .as_ref()
        .map(|r| r.received.load(std::sync::atomic::Ordering::Relaxed));
    if let Some(r) = receiver {
        r.stop().await;
    }
    drop((ctx, poller, recorder, client));
    let collected = recorder_task.await.map_err(|e| LoadgenError::Io {
        what: "recorder task".to_owned(),
        source: std::io::Error::other(e.to_string()),
    })?;

    let mut report = build_report(
        &config,
        run_id,
        started_at,
        phases,
        collected,
        feed.as_ref(),
        webhooks,
    );
    if let Some(dir) = &config.out {
        std::fs::create_dir_all(dir).map_err(|source| LoadgenError::Io {
            what: format!("creating {}", dir.display()),
            source,
        })?;
        let json = dir.join("report.json");
        let plot = dir.join("latency.svg");
        report.files = vec![json.display().to_string(), plot.display().to_string()];
        plot::svg(&report, &plot)?;
        report.write_json(&json)?;
    }
    Ok(report)
}

fn new_run_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..4)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// Runs one phase: a single step, or a ramp's steps until one fails.
async fn run_phase(ctx: &Arc<Ctx>, plan: &PhasePlan, step: &mut usize) -> Vec<StepResult> {
    let mut step_plan = StepPlan {
        step: *step,
        rate: plan.rate,
        concurrency: plan.concurrency,
        count: plan.count,
        duration: plan.duration_s.map(Duration::from_secs_f64),
        mix: plan.mix.clone(),
        texts: plan.texts.clone(),
        batch: plan.batch_size,
        measure: plan.measure,
    };
    let Some(ramp) = &plan.ramp else {
        *step += 1;
        let result = match plan.mode {
            Mode::Open => driver::open(ctx, &step_plan).await,
            Mode::Closed => driver::closed(ctx, &step_plan).await,
        };
        return vec![result];
    };
    let mut results = Vec::new();
    step_plan.count = None;
    step_plan.duration = Some(Duration::from_secs_f64(ramp.every_s));
    loop {
        step_plan.step = *step;
        *step += 1;
        ctx.recorder.send(Event::Phase(format!(
            "{} @ {:.0}/s",
            plan.name, step_plan.rate
        )));
        let result = driver::open(ctx, &step_plan).await;
        let passed = step_passed(&result, ramp);
        results.push(result);
        if !passed || step_plan.rate >= ramp.max_rate {
            break;
        }
        step_plan.rate = (step_plan.rate + ramp.step).min(ramp.max_rate);
    }
    results
}

fn step_passed(result: &StepResult, ramp: &Ramp) -> bool {
    let s = &result.stats;
    let error_ratio = s.refused as f64 / s.sent.max(1) as f64;
    s.sent > 0
        && s.http_p99_us as f64 / 1000.0 <= ramp.p99_ms
        && error_ratio <= ramp.max_error_ratio
}

/// Waits until every measured accepted message reached the simulator and has a final status
/// (when those are tracked), or `drain_s` passed; a wait for webhooks alone also ends after
/// [`DRAIN_IDLE`] without a new one.
async fn drain(
    config: &Config,
    recorder: &Recorder,
    feed: &mut Option<SimFeed>,
    measured: &[Range<u64>],
    webhook: bool,
    poller: Option<&Poller>,
) {
    let deadline = Instant::now() + Duration::from_secs_f64(config.drain_s);
    let mut last_finals = None;
    let mut last_change = Instant::now();
    loop {
        let mut reached = None;
        if let Some(f) = feed.as_mut() {
            match f.poll().await {
                Ok(_) => {
                    let n = f
                        .arrivals
                        .keys()
                        .filter(|seq| measured.iter().any(|r| r.contains(seq)))
                        .count();
                    reached = Some(n as u64);
                }
                Err(e) => {
                    eprintln!("loadgen: reading smsc-sim records failed, stopping: {e}");
                    *feed = None;
                }
            }
        }
        let p = recorder.query().await;
        let sim_done = reached.is_none_or(|r| r >= p.accepted);
        let polls_done =
            poller.is_none_or(|p| p.active.load(std::sync::atomic::Ordering::Relaxed) == 0);
        let finals_done = (!webhook || p.finals >= p.accepted) && polls_done;
        if (sim_done && finals_done) || Instant::now() >= deadline {
            break;
        }
        // Only webhooks still missing: a gateway that sends none (or no more) ends the wait
        // after DRAIN_IDLE without a new one.
        if last_finals != Some(p.finals) {
            last_finals = Some(p.finals);
            last_change = Instant::now();
        } else if sim_done && polls_done && last_change.elapsed() >= DRAIN_IDLE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn build_report(
    config: &Config,
    run_id: String,
    started_at: chrono::DateTime<Utc>,
    phases: Vec<(PhasePlan, Vec<StepResult>)>,
    mut c: Collected,
    feed: Option<&SimFeed>,
    webhooks: Option<u64>,
) -> Report {
    let ms = |us: u64| us as f64 / 1000.0;
    let mut submit = [stats::hist(), stats::hist(), stats::hist()];
    let mut fin = [stats::hist(), stats::hist(), stats::hist()];
    let mut reached = [0u64; 3];
    let mut early = [0u64; 3];
    let mut final_statuses: [std::collections::BTreeMap<String, u64>; 3] = Default::default();
    let mut arrival_span: Option<(u64, u64)> = None;
    let mut arrived = 0u64;
    for (seq, a) in &c.accepted {
        let k = a.kind.index();
        if let Some(arrival) = feed.and_then(|f| f.arrivals.get(seq)) {
            let us = arrival.last_us.saturating_sub(a.wall_us);
            if arrival.last_us < a.wall_us {
                early[k] += 1;
            }
            record(&mut submit[k], us);
            c.timeline.latency(Series::Submit, a.kind, a.offset_us, us);
            reached[k] += 1;
            arrived += 1;
            arrival_span = Some(match arrival_span {
                Some((lo, hi)) => (lo.min(arrival.last_us), hi.max(arrival.last_us)),
                None => (arrival.last_us, arrival.last_us),
            });
        }
        if let Some(f) = c.finals.get(seq) {
            let us = f.wall_us.saturating_sub(a.wall_us);
            record(&mut fin[k], us);
            c.timeline.latency(Series::Final, a.kind, a.offset_us, us);
            *final_statuses[k].entry(f.status.clone()).or_default() += 1;
        }
    }

    let mut errors = std::collections::BTreeMap::new();
    let mut all_http = stats::hist();
    let mut kinds = Vec::new();
    for kind in Kind::ALL {
        let i = kind.index();
        let agg = &c.kinds[i];
        if agg.sent == 0 {
            continue;
        }
        for (code, n) in &agg.errors {
            *errors.entry(code.clone()).or_default() += n;
        }
        let _ = all_http.add(&agg.http);
        kinds.push(KindReport {
            kind: Some(kind),
            sent: agg.sent,
            accepted: agg.accepted,
            refused: agg.refused,
            segments: agg.segments,
            errors: agg.errors.clone(),
            http: Latency::of(&agg.http),
            http_service: Latency::of(&agg.service),
            reached_sim: feed.map(|_| reached[i]),
            accept_to_submit: feed.map(|_| Latency::of(&submit[i])),
            submitted_before_accept: early[i],
            finals: fin[i].len(),
            final_statuses: final_statuses[i].clone(),
            accept_to_final: (!fin[i].is_empty()).then(|| Latency::of(&fin[i])),
        });
    }

    let mut total = Totals {
        http: Latency::of(&all_http),
        ..Totals::default()
    };
    let mut offered = Some(0.0);
    let mut phase_reports = Vec::new();
    for (plan, steps) in phases {
        let mut report = PhaseReport {
            name: plan.name.clone(),
            mode: Some(plan.mode),
            measure: plan.measure,
            concurrency: (plan.mode == Mode::Closed).then_some(plan.concurrency),
            batch_size: plan.batch_size,
            mix: plan.mix.to_string(),
            steps: Vec::new(),
            max_passing_rate: None,
        };
        for st in steps {
            let elapsed = st.elapsed.as_secs_f64();
            let passed = plan.ramp.as_ref().map(|r| step_passed(&st, r));
            if passed == Some(true) {
                report.max_passing_rate = st.offered_rate;
            }
            if plan.measure {
                total.sent += st.stats.sent;
                total.accepted += st.stats.accepted;
                total.refused += st.stats.refused;
                total.elapsed_s += elapsed;
                offered = match (offered, st.offered_rate) {
                    (Some(sum), Some(rate)) => Some(sum + rate * elapsed),
                    _ => None,
                };
            }
            report.steps.push(StepReport {
                offered_rate: st.offered_rate,
                elapsed_s: elapsed,
                sent: st.stats.sent,
                accepted: st.stats.accepted,
                refused: st.stats.refused,
                achieved_rate: st.stats.accepted as f64 / elapsed.max(1e-9),
                http_p50_ms: ms(st.stats.http_p50_us),
                http_p99_ms: ms(st.stats.http_p99_us),
                passed,
            });
        }
        phase_reports.push(report);
    }
    if total.elapsed_s > 0.0 {
        total.achieved_rate = total.accepted as f64 / total.elapsed_s;
        total.offered_rate = offered.map(|sum| sum / total.elapsed_s);
    }
    total.sim_rate = arrival_span
        .filter(|(lo, hi)| hi > lo)
        .map(|(lo, hi)| arrived as f64 / ((hi - lo) as f64 / 1e6));

    let width = c.timeline.width_s.max(1);
    let timeline = c
        .timeline
        .buckets
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let per_kind = |hists: &[Option<hdrhistogram::Histogram<u32>>; 3], q: f64| {
                Kind::ALL
                    .iter()
                    .filter_map(|k| {
                        hists[k.index()]
                            .as_ref()
                            .filter(|h| !h.is_empty())
                            .map(|h| (k.as_str().to_owned(), ms(h.value_at_quantile(q))))
                    })
                    .collect()
            };
            Point {
                t_s: (i as u64 * width) as f64,
                sent_rate: b.sent as f64 / width as f64,
                accepted_rate: b.accepted as f64 / width as f64,
                refused_rate: b.refused as f64 / width as f64,
                http_p50_ms: per_kind(&b.http, 0.5),
                http_p99_ms: per_kind(&b.http, 0.99),
                submit_p99_ms: per_kind(&b.submit, 0.99),
                final_p99_ms: per_kind(&b.fin, 0.99),
            }
        })
        .collect();

    let accepted_measured = c.accepted.len() as u64;
    Report {
        run_id,
        description: config.description.clone(),
        started_at: Some(started_at),
        url: config.url.clone(),
        phases: phase_reports,
        total,
        kinds,
        errors,
        sim: feed.map(|f| SimReport {
            url: config.sim_url.clone().unwrap_or_default(),
            records_read: f.records,
            reached: arrived,
            missing: accepted_measured.saturating_sub(arrived),
            incomplete: f.incomplete() as u64,
        }),
        webhooks_received: webhooks,
        timeline_width_s: width,
        timeline,
        files: Vec::new(),
    }
}
