//! The recorder: every histogram and counter, behind one lock. Request tasks count their
//! answers and the webhook receiver and status poller their final statuses straight into it
//! (no channel message, and no task wake-up, per message); its task takes the rarer
//! [`Event`]s, prints the progress line once a second and hands back what was [`Collected`]
//! when every [`Recorder`] is gone.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use tokio::sync::{mpsc, oneshot};

use super::{client::Reply, config::Kind};

/// Highest latency recorded (µs): one hour. Larger values are clamped.
const MAX_US: u64 = 3_600_000_000;

/// A histogram of latencies in µs, 3 significant digits.
pub(crate) fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("constant histogram bounds are valid")
}

/// A smaller histogram (2 significant digits) for one timeline bucket.
fn small_hist() -> Histogram<u32> {
    Histogram::new_with_bounds(1, MAX_US, 2).expect("constant histogram bounds are valid")
}

/// Records `us` (at least 1, at most [`MAX_US`]).
pub(crate) fn record<T: hdrhistogram::Counter>(h: &mut Histogram<T>, us: u64) {
    h.saturating_record(us.clamp(1, MAX_US));
}

/// Microseconds since the Unix epoch (the simulator's records use the same clock).
pub(crate) fn wall_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The outcome of one message's request.
#[derive(Debug)]
pub(crate) struct Done {
    /// Which step (of which phase) sent it.
    pub step: usize,
    /// Whether its latencies count in the report.
    pub measure: bool,
    pub kind: Kind,
    pub seq: u64,
    /// Intended send time, µs since the run started.
    pub offset_us: u64,
    /// Response time from the intended send time (the actual one if that was earlier).
    pub http_us: u64,
    /// Response time from the actual send time.
    pub service_us: u64,
    /// Wall clock when the answer arrived.
    pub wall_us: u64,
    pub reply: Reply,
}

/// What the recorder task is told (answers and final statuses go to [`Recorder::done`] and
/// [`Recorder::fin`] instead).
#[derive(Debug)]
pub(crate) enum Event {
    /// A phase started: its name goes on the progress line.
    Phase(String),
    /// Summarize a step (sent after its last request answered).
    Step(usize, oneshot::Sender<StepStats>),
    /// How far the run's measured messages got.
    Query(oneshot::Sender<Progress>),
}

/// One step's numbers (a phase has one step, a ramp one per rate).
#[derive(Debug, Clone, Default)]
pub(crate) struct StepStats {
    pub sent: u64,
    pub accepted: u64,
    pub refused: u64,
    pub http_p50_us: u64,
    pub http_p99_us: u64,
}

/// Counts for the drain after the last request.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Progress {
    /// Measured messages accepted.
    pub accepted: u64,
    /// Of those, how many have a final status.
    pub finals: u64,
}

/// Per-kind totals of measured messages.
#[derive(Debug)]
pub(crate) struct KindAgg {
    pub sent: u64,
    pub accepted: u64,
    pub refused: u64,
    pub segments: u64,
    pub errors: BTreeMap<String, u64>,
    pub http: Histogram<u64>,
    pub service: Histogram<u64>,
}

impl Default for KindAgg {
    fn default() -> Self {
        KindAgg {
            sent: 0,
            accepted: 0,
            refused: 0,
            segments: 0,
            errors: BTreeMap::new(),
            http: hist(),
            service: hist(),
        }
    }
}

/// Per-step totals (every phase, measured or not).
#[derive(Debug)]
pub(crate) struct StepAgg {
    pub sent: u64,
    pub accepted: u64,
    pub refused: u64,
    pub http: Histogram<u64>,
}

impl Default for StepAgg {
    fn default() -> Self {
        StepAgg {
            sent: 0,
            accepted: 0,
            refused: 0,
            http: hist(),
        }
    }
}

/// An accepted, measured message: what correlation needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AcceptRec {
    pub kind: Kind,
    /// Wall clock of the 202.
    pub wall_us: u64,
    /// Intended send time since the run started (its timeline bucket).
    pub offset_us: u64,
}

/// A final status seen for a message.
#[derive(Debug, Clone)]
pub(crate) struct FinalRec {
    pub status: String,
    pub wall_us: u64,
}

/// One time bucket of the timeline.
#[derive(Debug, Default)]
pub(crate) struct Bucket {
    pub sent: u64,
    pub accepted: u64,
    pub refused: u64,
    /// HTTP response time per kind (from the intended send time).
    pub http: [Option<Histogram<u32>>; 3],
    /// Accept → submit_sm per kind (filled after the run).
    pub submit: [Option<Histogram<u32>>; 3],
    /// Accept → final status per kind (filled after the run).
    pub fin: [Option<Histogram<u32>>; 3],
}

impl Bucket {
    fn merge(&mut self, other: Bucket) {
        self.sent += other.sent;
        self.accepted += other.accepted;
        self.refused += other.refused;
        let pairs = [
            (&mut self.http, other.http),
            (&mut self.submit, other.submit),
            (&mut self.fin, other.fin),
        ];
        for (mine, theirs) in pairs {
            for (m, t) in mine.iter_mut().zip(theirs) {
                match (m.as_mut(), t) {
                    (Some(m), Some(t)) => {
                        // Same bounds, so adding cannot fail; ignore the impossible error.
                        let _ = m.add(&t);
                    }
                    (None, Some(t)) => *m = Some(t),
                    _ => {}
                }
            }
        }
    }
}

/// Most buckets kept: beyond it, neighbours merge and the width doubles.
const MAX_BUCKETS: usize = 600;

/// Latency and throughput over the run, in buckets of `width_s` seconds of intended send time.
#[derive(Debug)]
pub(crate) struct Timeline {
    pub width_s: u64,
    pub buckets: Vec<Bucket>,
}

/// Which latency of a bucket.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Series {
    Http,
    Submit,
    Final,
}

impl Timeline {
    fn new() -> Timeline {
        Timeline {
            width_s: 1,
            buckets: Vec::new(),
        }
    }

    /// The bucket for an intended send time.
    pub(crate) fn at(&mut self, offset_us: u64) -> &mut Bucket {
        let mut i = offset_us / 1_000_000 / self.width_s;
        while i >= MAX_BUCKETS as u64 {
            self.coarsen();
            i = offset_us / 1_000_000 / self.width_s;
        }
        let i = usize::try_from(i).unwrap_or(MAX_BUCKETS - 1);
        if self.buckets.len() <= i {
            self.buckets.resize_with(i + 1, Bucket::default);
        }
        &mut self.buckets[i]
    }

    fn coarsen(&mut self) {
        let old = std::mem::take(&mut self.buckets);
        let mut it = old.into_iter();
        while let Some(mut a) = it.next() {
            if let Some(b) = it.next() {
                a.merge(b);
            }
            self.buckets.push(a);
        }
        self.width_s *= 2;
    }

    /// Records a latency of `kind` in the bucket of `offset_us`.
    pub(crate) fn latency(&mut self, series: Series, kind: Kind, offset_us: u64, us: u64) {
        let bucket = self.at(offset_us);
        let slot = match series {
            Series::Http => &mut bucket.http,
            Series::Submit => &mut bucket.submit,
            Series::Final => &mut bucket.fin,
        };
        record(slot[kind.index()].get_or_insert_with(small_hist), us);
    }
}

/// Everything the recorder gathered.
#[derive(Debug)]
pub(crate) struct Collected {
    pub kinds: [KindAgg; 3],
    pub steps: Vec<StepAgg>,
    /// Measured accepted messages by sequence number.
    pub accepted: HashMap<u64, AcceptRec>,
    /// First final status per sequence number.
    pub finals: HashMap<u64, FinalRec>,
    pub timeline: Timeline,
}

impl Collected {
    fn new() -> Collected {
        Collected {
            kinds: Default::default(),
            steps: Vec::new(),
            accepted: HashMap::new(),
            finals: HashMap::new(),
            timeline: Timeline::new(),
        }
    }
}

/// The recorder's handle: the counts, the event sender and the started counter.
#[derive(Debug, Clone)]
pub(crate) struct Recorder {
    tx: mpsc::UnboundedSender<Event>,
    state: Arc<Mutex<State>>,
    /// Messages whose request has started (read by the progress line).
    pub started: Arc<AtomicU64>,
}

impl Recorder {
    /// Starts the recorder task; it ends when every clone of the returned [`Recorder`] is
    /// dropped.
    pub(crate) fn start(progress: bool) -> (Recorder, tokio::task::JoinHandle<Collected>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let started = Arc::new(AtomicU64::new(0));
        let state = Arc::new(Mutex::new(State::new()));
        let task = tokio::spawn(run(rx, Arc::clone(&state), Arc::clone(&started), progress));
        (Recorder { tx, state, started }, task)
    }

    /// Sends an event (a recorder that is gone has nothing left to count).
    pub(crate) fn send(&self, event: Event) {
        let _ = self.tx.send(event);
    }

    /// Counts one message's answer.
    pub(crate) fn done(&self, d: Done) {
        lock(&self.state).done(d);
    }

    /// Notes a final status seen for a message (webhook or poll).
    pub(crate) fn fin(&self, seq: u64, status: String, wall_us: u64) {
        lock(&self.state).fin(seq, status, wall_us);
    }

    /// Asks for a step's numbers.
    pub(crate) async fn step(&self, step: usize) -> StepStats {
        let (tx, rx) = oneshot::channel();
        self.send(Event::Step(step, tx));
        rx.await.unwrap_or_default()
    }

    /// Asks how far measured messages got.
    pub(crate) async fn query(&self) -> Progress {
        let (tx, rx) = oneshot::channel();
        self.send(Event::Query(tx));
        rx.await.unwrap_or_default()
    }
}

/// The recorder's lock (a panic while holding it leaves counts that are still usable).
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug)]
struct State {
    c: Collected,
    phase: String,
    done: u64,
    accepted: u64,
    refused: u64,
    finals_measured: u64,
    /// HTTP latency since the last progress line.
    window: Histogram<u64>,
}

impl State {
    fn new() -> State {
        State {
            c: Collected::new(),
            phase: String::new(),
            done: 0,
            accepted: 0,
            refused: 0,
            finals_measured: 0,
            window: hist(),
        }
    }

    fn done(&mut self, d: Done) {
        let Done {
            step,
            measure,
            kind,
            seq,
            offset_us,
            http_us,
            service_us,
            wall_us,
            reply,
        } = d;
        self.done += 1;
        record(&mut self.window, http_us);
        if self.c.steps.len() <= step {
            self.c.steps.resize_with(step + 1, StepAgg::default);
        }
        let st = &mut self.c.steps[step];
        st.sent += 1;
        record(&mut st.http, http_us);
        let bucket = self.c.timeline.at(offset_us);
        bucket.sent += 1;
        let accepted = matches!(reply, Reply::Accepted { .. });
        if accepted {
            st.accepted += 1;
            bucket.accepted += 1;
            self.accepted += 1;
        } else {
            st.refused += 1;
            bucket.refused += 1;
            self.refused += 1;
        }
        if !measure {
            return;
        }
        self.c
            .timeline
            .latency(Series::Http, kind, offset_us, http_us);
        let k = &mut self.c.kinds[kind.index()];
        k.sent += 1;
        record(&mut k.http, http_us);
        record(&mut k.service, service_us);
        match reply {
            Reply::Accepted { segments, .. } => {
                k.accepted += 1;
                k.segments += u64::from(segments.unwrap_or(1));
                self.c.accepted.insert(
                    seq,
                    AcceptRec {
                        kind,
                        wall_us,
                        offset_us,
                    },
                );
                if self.c.finals.contains_key(&seq) {
                    self.finals_measured += 1;
                }
            }
            Reply::Refused { code } => {
                k.refused += 1;
                *k.errors.entry(code).or_default() += 1;
            }
        }
    }

    fn fin(&mut self, seq: u64, status: String, wall_us: u64) {
        if self.c.finals.contains_key(&seq) {
            return;
        }
        self.c.finals.insert(seq, FinalRec { status, wall_us });
        if self.c.accepted.contains_key(&seq) {
            self.finals_measured += 1;
        }
    }

    fn step(&self, step: usize) -> StepStats {
        self.c
            .steps
            .get(step)
            .map_or_else(StepStats::default, |s| StepStats {
                sent: s.sent,
                accepted: s.accepted,
                refused: s.refused,
                http_p50_us: s.http.value_at_quantile(0.5),
                http_p99_us: s.http.value_at_quantile(0.99),
            })
    }
}

async fn run(
    mut rx: mpsc::UnboundedReceiver<Event>,
    state: Arc<Mutex<State>>,
    started: Arc<AtomicU64>,
    progress: bool,
) -> Collected {
    let t0 = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    ticker.tick().await;
    let mut last_started = 0;
    loop {
        tokio::select! {
            event = rx.recv() => match event {
                None => break,
                Some(Event::Phase(name)) => lock(&state).phase = name,
                Some(Event::Step(step, reply)) => {
                    let stats = lock(&state).step(step);
                    let _ = reply.send(stats);
                }
                Some(Event::Query(reply)) => {
                    let progress = {
                        let s = lock(&state);
                        Progress {
                            accepted: s.c.accepted.len() as u64,
                            finals: s.finals_measured,
                        }
                    };
                    let _ = reply.send(progress);
                }
            },
            _ = ticker.tick(), if progress => {
                let started = started.load(Ordering::Relaxed);
                let line = {
                    let mut s = lock(&state);
                    let p99 = if s.window.is_empty() {
                        "-".to_owned()
                    } else {
                        format!("{:.1} ms", s.window.value_at_quantile(0.99) as f64 / 1000.0)
                    };
                    let line = format!(
                        "[{:>6.1}s] {}: sent {} ({}/s), accepted {}, refused {}, in flight {}, \
                         http p99 (last 1 s) {}, final statuses {}",
                        t0.elapsed().as_secs_f64(),
                        s.phase,
                        started,
                        started - last_started,
                        s.accepted,
                        s.refused,
                        started.saturating_sub(s.done),
                        p99,
                        s.c.finals.len(),
                    );
                    s.window.reset();
                    line
                };
                eprintln!("{line}");
                last_started = started;
            }
        }
    }
    // Every Recorder is gone, so nothing counts into the state any more.
    std::mem::replace(&mut lock(&state).c, Collected::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_coarsens_instead_of_growing() {
        let mut t = Timeline::new();
        t.latency(Series::Http, Kind::Otp, 0, 1000);
        t.at(0).sent += 1;
        t.latency(Series::Http, Kind::Otp, 700 * 1_000_000, 5000);
        assert_eq!(t.width_s, 2);
        assert_eq!(t.buckets.len(), 351);
        assert_eq!(t.buckets[0].sent, 1);
        let h = t.buckets[350].http[0].as_ref().unwrap();
        assert_eq!(h.len(), 1);
    }
}
