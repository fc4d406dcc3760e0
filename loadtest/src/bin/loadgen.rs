//! `loadgen`: drives an HTTP SMS gateway (smsgate by default) and reports latency per kind.
//!
//! ```text
//! loadgen --url http://127.0.0.1:8080 --key demo-key --mode open --rate 2000 --duration 10 \
//!         --sim-url http://127.0.0.1:8081 --out target/loadgen/run1
//! loadgen --scenario loadtest/scenarios/sustained-throughput.toml --rate 5000
//! ```
//!
//! Flags override the scenario file; see `loadgen --help`.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context;
use clap::Parser;
use smsgate_loadtest::loadgen::{self, Config, KindMix, Mode, Overrides, TextMix};

/// mimalloc, as in the gateway: the load kit shares the cores with the gateway it measures,
/// so the less CPU it spends on malloc/free, the more is left for the gateway.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load generator for smsgate (or any HTTP SMS API): open or closed loop, per-kind latency
/// (HTTP, accept → submit_sm at smsc-sim, accept → final status), a table, report.json and
/// latency.svg.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version)]
struct Args {
    /// Scenario file (TOML); the flags below override it.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Gateway base URL [default: http://127.0.0.1:8080].
    #[arg(long)]
    url: Option<String>,
    /// Request path [default: /v1/messages, /v1/messages/batch with --batch-size > 1].
    #[arg(long)]
    path: Option<String>,
    /// API key (repeatable or comma-separated) [default: demo-key].
    #[arg(long = "key", value_delimiter = ',')]
    keys: Vec<String>,
    /// Spread messages over the first N keys.
    #[arg(long)]
    accounts: Option<usize>,
    /// Extra header `Name: value` (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Request body template with {{to}} {{from}} {{text}} {{kind}} {{token}} {{seq}}
    /// {{callback_url}}, for non-smsgate APIs.
    #[arg(long)]
    request_template: Option<PathBuf>,
    /// Content type of the templated body [default: application/json].
    #[arg(long)]
    template_content_type: Option<String>,
    /// JSON pointer to the message id in a 2xx answer [default: /id].
    #[arg(long)]
    id_pointer: Option<String>,
    /// open (fixed arrival rate) or closed (concurrent clients).
    #[arg(long)]
    mode: Option<Mode>,
    /// Open loop: messages per second.
    #[arg(long)]
    rate: Option<f64>,
    /// Closed loop: concurrent clients.
    #[arg(long, short = 'c')]
    concurrency: Option<usize>,
    /// Stop after this many messages (per phase).
    #[arg(long, short = 'n')]
    count: Option<u64>,
    /// Stop after this many seconds (per phase).
    #[arg(long, short = 'd')]
    duration: Option<f64>,
    /// Mix by kind, e.g. otp=5,transactional=20,marketing=75.
    #[arg(long)]
    mix: Option<KindMix>,
    /// Mix of texts, e.g. gsm=80,gsm_long=10,ucs2=10,ucs2_long=0.
    #[arg(long)]
    texts: Option<TextMix>,
    /// Messages per request; above 1 uses POST /v1/messages/batch.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Sender (`from`) for every kind.
    #[arg(long)]
    sender: Option<String>,
    /// Draw recipients from this many distinct numbers per kind.
    #[arg(long)]
    numbers: Option<u64>,
    /// Seed of the traffic draws.
    #[arg(long)]
    seed: Option<u64>,
    /// smsc-sim's HTTP address (its --http), for accept → submit_sm latency.
    #[arg(long)]
    sim_url: Option<String>,
    /// Do not run the webhook receiver (no callback_url in requests).
    #[arg(long)]
    no_webhook: bool,
    /// Webhook receiver listen address [default: 127.0.0.1:0].
    #[arg(long)]
    webhook_listen: Option<SocketAddr>,
    /// callback_url to send when the gateway reaches the receiver by another address.
    #[arg(long)]
    webhook_url: Option<String>,
    /// Poll GET /v1/messages/{id} until final for this share (0..=1) of accepted messages.
    #[arg(long)]
    poll_status: Option<f64>,
    /// Interval between polls of one message (ms).
    #[arg(long)]
    poll_interval_ms: Option<u64>,
    /// Wait up to this many seconds after the last answer for submits and final statuses.
    #[arg(long)]
    drain: Option<f64>,
    /// Most requests in flight.
    #[arg(long)]
    max_inflight: Option<usize>,
    /// Request timeout (s).
    #[arg(long)]
    timeout: Option<f64>,
    /// Idle keep-alive connections kept.
    #[arg(long)]
    connections: Option<usize>,
    /// Write report.json and latency.svg to this directory.
    #[arg(long)]
    out: Option<PathBuf>,
    /// No progress line.
    #[arg(long, short = 'q')]
    quiet: bool,
}

impl Args {
    fn config(self) -> anyhow::Result<Config> {
        let mut c = match &self.scenario {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        c.apply(&Overrides {
            mode: self.mode,
            rate: self.rate,
            concurrency: self.concurrency,
            count: self.count,
            duration_s: self.duration,
            mix: self.mix,
            texts: self.texts,
            batch_size: self.batch_size,
        });
        macro_rules! set {
            ($($flag:ident => $field:ident),* $(,)?) => {
                $(if let Some(v) = self.$flag { c.$field = v; })*
            };
        }
        set!(
            url => url,
            template_content_type => template_content_type,
            id_pointer => id_pointer,
            webhook_listen => webhook_listen,
            poll_status => poll_status,
            poll_interval_ms => poll_interval_ms,
            drain => drain_s,
            max_inflight => max_inflight,
            timeout => timeout_s,
            connections => connections,
            seed => seed,
        );
        macro_rules! set_some {
            ($($flag:ident => $field:ident),* $(,)?) => {
                $(if self.$flag.is_some() { c.$field = self.$flag; })*
            };
        }
        set_some!(
            path => path,
            accounts => accounts,
            request_template => request_template,
            numbers => numbers,
            sim_url => sim_url,
            webhook_url => webhook_url,
            out => out,
        );
        if !self.keys.is_empty() {
            c.keys = self.keys;
        }
        if !self.headers.is_empty() {
            c.headers = self.headers;
        }
        if let Some(sender) = self.sender {
            c.senders.otp = sender.clone();
            c.senders.transactional = sender.clone();
            c.senders.marketing = sender;
        }
        if self.no_webhook {
            c.webhook = false;
        }
        if self.quiet {
            c.progress = false;
        }
        c.validate()?;
        Ok(c)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Args::parse().config()?;
    let report = loadgen::run(config).await.context("load run failed")?;
    print!("{}", report.table());
    Ok(())
}
