//! Pacing: open loop (requests at fixed intended times, whatever the answers do) and closed
//! loop (C clients, each waiting for its answer), one step at a time.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{sync::Semaphore, task::JoinSet};

use super::{
    client::{Client, Reply},
    config::{KindMix, TextMix},
    stats::{Done, Recorder, StepStats, wall_us},
    status::Poller,
    traffic::{Msg, Traffic, mix64},
};

/// How early the open loop wakes before a request's intended time.
const TIMER_SLACK: Duration = Duration::from_millis(1);

/// What every request task shares.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub client: Arc<Client>,
    pub traffic: Traffic,
    pub recorder: Recorder,
    pub poller: Option<Arc<Poller>>,
    /// Share of accepted measured messages to poll, scaled to `u64::MAX`.
    pub poll_threshold: u64,
    /// When the run started (intended send times count from here).
    pub t0: Instant,
    /// Next message sequence number.
    pub seq: AtomicU64,
    /// Next request number (picks the account).
    pub requests: AtomicU64,
    /// Open loop: requests in flight.
    pub slots: Arc<Semaphore>,
    pub max_inflight: u32,
}

/// One step to run.
#[derive(Debug, Clone)]
pub(crate) struct StepPlan {
    pub step: usize,
    pub rate: f64,
    pub concurrency: usize,
    pub count: Option<u64>,
    pub duration: Option<Duration>,
    pub mix: KindMix,
    pub texts: TextMix,
    pub batch: usize,
    pub measure: bool,
}

/// How a step went.
#[derive(Debug, Clone)]
pub(crate) struct StepResult {
    /// Open loop: the rate asked for.
    pub offered_rate: Option<f64>,
    /// From the first intended send to the last answer.
    pub elapsed: Duration,
    pub stats: StepStats,
}

impl Ctx {
    /// Draws the next `n` messages (one request's worth).
    fn messages(&self, n: u64, plan: &StepPlan) -> Vec<Msg> {
        let first = self.seq.fetch_add(n, Ordering::Relaxed);
        let request = self.requests.fetch_add(1, Ordering::Relaxed);
        (first..first + n)
            .map(|seq| self.traffic.message(seq, request, &plan.mix, &plan.texts))
            .collect()
    }
}

/// Sends one request (one message, or a batch) and reports each message's outcome.
async fn send(ctx: Arc<Ctx>, msgs: Vec<Msg>, intended: Instant, plan_step: usize, measure: bool) {
    ctx.recorder
        .started
        .fetch_add(msgs.len() as u64, Ordering::Relaxed);
    let sent_at = Instant::now();
    let replies = if msgs.len() > 1 {
        ctx.client.send_batch(&msgs).await
    } else if let Some(m) = msgs.first() {
        vec![ctx.client.send_one(m).await]
    } else {
        Vec::new()
    };
    let now = Instant::now();
    let wall = wall_us();
    let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    let http_us = micros(now.saturating_duration_since(response_clock_start(intended, sent_at)));
    let service_us = micros(now.saturating_duration_since(sent_at));
    let offset_us = micros(intended.saturating_duration_since(ctx.t0));
    for (m, reply) in msgs.into_iter().zip(replies) {
        if measure
            && let (Some(poller), Reply::Accepted { id: Some(id), .. }) = (&ctx.poller, &reply)
            && mix64(m.seq ^ 0x5eed) < ctx.poll_threshold
        {
            poller.watch(m.seq, id.clone(), m.account);
        }
        ctx.recorder.done(Done {
            step: plan_step,
            measure,
            kind: m.kind,
            seq: m.seq,
            offset_us,
            http_us,
            service_us,
            wall_us: wall,
            reply,
        });
    }
}

/// Where a request's HTTP response time starts: its intended send time, or its actual one
/// when it went out early (the pacing wakes up to [`TIMER_SLACK`] ahead). A request that went
/// out late counts its lateness: coordinated omission must not hide a stall.
fn response_clock_start(intended: Instant, sent_at: Instant) -> Instant {
    intended.min(sent_at)
}

/// Open loop: request `i` is due at `start + i × batch / rate`. A request that starts late
/// (a busy runtime, or all `max_inflight` slots taken) still counts its latency from its due
/// time; one that starts early (up to 1 ms, the timer's granularity) from its actual start.
///
/// The pacing runs as a task of the runtime: from outside it (the `block_on` thread that
/// awaits [`run`](super::run)) every timer wake-up and every spawned request would cross
/// threads, a futex wake-up each.
pub(crate) async fn open(ctx: &Arc<Ctx>, plan: &StepPlan) -> StepResult {
    let pacing = tokio::spawn(open_paced(Arc::clone(ctx), plan.clone()));
    match pacing.await {
        Ok(result) => result,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            // Cancelled: only when the runtime shuts down, and then nothing is reported.
            Err(_) => StepResult {
                offered_rate: Some(plan.rate),
                elapsed: Duration::ZERO,
                stats: StepStats::default(),
            },
        },
    }
}

async fn open_paced(ctx: Arc<Ctx>, plan: StepPlan) -> StepResult {
    let (ctx, plan) = (&ctx, &plan);
    let batch = plan.batch as u64;
    let per_request = plan.batch as f64 / plan.rate;
    let start = Instant::now();
    let deadline = plan.duration.map(|d| start + d);
    let mut sent = 0u64;
    for i in 0u64.. {
        let n = match plan.count {
            Some(count) => count.saturating_sub(sent).min(batch),
            None => batch,
        };
        if n == 0 {
            break;
        }
        let intended = start + Duration::from_secs_f64(per_request * i as f64);
        if deadline.is_some_and(|d| intended >= d) {
            break;
        }
        // tokio's timer has 1 ms granularity and rounds up: aim 1 ms early so requests do not
        // go out late by the timer alone (latency then counts from the actual send).
        let wake = intended.checked_sub(TIMER_SLACK).unwrap_or(intended);
        if wake > Instant::now() {
            tokio::time::sleep_until(wake.into()).await;
        }
        let Ok(permit) = Arc::clone(&ctx.slots).acquire_owned().await else {
            break;
        };
        let msgs = ctx.messages(n, plan);
        let task_ctx = Arc::clone(ctx);
        let (step, measure) = (plan.step, plan.measure);
        tokio::spawn(async move {
            send(task_ctx, msgs, intended, step, measure).await;
            drop(permit);
        });
        sent += n;
    }
    // Every slot back means every request of this step has answered.
    if let Ok(all) = ctx.slots.acquire_many(ctx.max_inflight).await {
        drop(all);
    }
    StepResult {
        offered_rate: Some(plan.rate),
        elapsed: start.elapsed(),
        stats: ctx.recorder.step(plan.step).await,
    }
}

/// Closed loop: `concurrency` clients, each sending its next request when the last answered.
pub(crate) async fn closed(ctx: &Arc<Ctx>, plan: &StepPlan) -> StepResult {
    let start = Instant::now();
    let deadline = plan.duration.map(|d| start + d);
    let claimed = Arc::new(AtomicU64::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..plan.concurrency {
        let ctx = Arc::clone(ctx);
        let claimed = Arc::clone(&claimed);
        let plan = plan.clone();
        workers.spawn(async move {
            let batch = plan.batch as u64;
            loop {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let first = claimed.fetch_add(batch, Ordering::Relaxed);
                let n = match plan.count {
                    Some(count) => count.saturating_sub(first).min(batch),
                    None => batch,
                };
                if n == 0 {
                    break;
                }
                let msgs = ctx.messages(n, &plan);
                send(
                    Arc::clone(&ctx),
                    msgs,
                    Instant::now(),
                    plan.step,
                    plan.measure,
                )
                .await;
            }
        });
    }
    while workers.join_next().await.is_some() {}
    StepResult {
        offered_rate: None,
        elapsed: start.elapsed(),
        stats: ctx.recorder.step(plan.step).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_request_counts_from_its_due_time_an_early_one_from_its_start() {
        let due = Instant::now() + Duration::from_secs(10);
        let late = due + Duration::from_millis(40);
        let early = due - Duration::from_micros(300);
        assert_eq!(response_clock_start(due, late), due);
        assert_eq!(response_clock_start(due, early), early);
    }
}
