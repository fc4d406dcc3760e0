//! `smsc-sim`: the SMPP SMSC simulator as a standalone process, for load tests.
//!
//! ```text
//! smsc-sim --smpp 127.0.0.1:2775 --http 127.0.0.1:8081 --receipt-delay-ms 50 \
//!          --outcomes delivered=95,undeliverable=5 --error 0.01:0x14
//! ```

use std::{net::SocketAddr, time::Duration};

use anyhow::Context;
use clap::Parser;
use smsgate_loadtest::sim::{
    DelayDist, MessageIdFormat, OutcomeMix, ReceiptParts, SimConfig, Simulator,
};

/// mimalloc, as in the gateway: the load kit shares the cores with the gateway it measures,
/// so the less CPU it spends on malloc/free, the more is left for the gateway.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// SMPP 3.4 SMSC simulator for smsgate's load tests.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// SMPP listen address.
    #[arg(long, default_value = "127.0.0.1:2775")]
    smpp: SocketAddr,
    /// HTTP address for GET /stats and GET /submits (off when not given).
    #[arg(long)]
    http: Option<SocketAddr>,
    /// Accepted system_id.
    #[arg(long, default_value = "smsgate")]
    system_id: String,
    /// Accepted password.
    #[arg(long, default_value = "secret")]
    password: String,
    /// Delay from submit_sm_resp to the delivery receipt (the minimum with --receipt-delay-max-ms).
    #[arg(long, default_value_t = 50)]
    receipt_delay_ms: u64,
    /// Draw receipt delays uniformly up to this many milliseconds.
    #[arg(long)]
    receipt_delay_max_ms: Option<u64>,
    /// Outcome weights, e.g. delivered=95,undeliverable=5 (also expired, rejected).
    #[arg(long, default_value = "delivered=100")]
    outcomes: OutcomeMix,
    /// Answer ESME_RTHROTTLED (0x58) above this many submit_sm per second.
    #[arg(long)]
    throttle_tps: Option<u32>,
    /// Apply --throttle-tps only from this many milliseconds after start (an SMSC that turns
    /// to 0x58 after a spell of ordinary traffic).
    #[arg(long, default_value_t = 0)]
    throttle_after_ms: u64,
    /// Error injection PROBABILITY:STATUS, e.g. 0.01:0x14 (repeatable).
    #[arg(long = "error", value_parser = parse_error)]
    errors: Vec<(f64, u32)>,
    /// Delay before each submit_sm_resp.
    #[arg(long, default_value_t = 0)]
    resp_delay_ms: u64,
    /// Message id format in submit_sm_resp: hex, hex-upper, decimal or decimal-padded.
    #[arg(long, default_value = "hex")]
    id_format: MessageIdFormat,
    /// Id format in the receipt text's id: field (default: as in the submit_sm_resp).
    #[arg(long)]
    receipt_text_id_format: Option<MessageIdFormat>,
    /// Id format in the receipted_message_id TLV (default: as in the submit_sm_resp).
    #[arg(long)]
    receipt_tlv_id_format: Option<MessageIdFormat>,
    /// Start the receipt clock at the submit_sm, so with --resp-delay-ms above the receipt
    /// delay the receipt overtakes its submit_sm_resp.
    #[arg(long)]
    receipt_before_resp: bool,
    /// Which parts of a concatenated message get a receipt: all, first or last.
    #[arg(long, default_value = "all")]
    multipart_receipts: ReceiptParts,
    /// Send an ENROUTE receipt first and the final one this many milliseconds later.
    #[arg(long)]
    enroute_first_ms: Option<u64>,
    /// Receipts in text form only (no receipted_message_id / message_state TLVs).
    #[arg(long)]
    no_receipt_tlvs: bool,
    /// Unacknowledged receipts per session.
    #[arg(long, default_value_t = 1024)]
    window: usize,
    /// Submit records kept for GET /submits (0 = none, cheapest).
    #[arg(long, default_value_t = 1_000_000)]
    max_records: usize,
    /// Log the counters every N seconds (0 = never).
    #[arg(long, default_value_t = 10)]
    stats_interval_s: u64,
    /// Exit after this many seconds.
    #[arg(long)]
    max_runtime_s: Option<u64>,
}

fn parse_error(s: &str) -> Result<(f64, u32), String> {
    let (p, status) = s
        .split_once(':')
        .ok_or_else(|| format!("expected PROBABILITY:STATUS, got {s:?}"))?;
    let p: f64 = p
        .parse()
        .map_err(|e| format!("bad probability {p:?}: {e}"))?;
    if !(0.0..=1.0).contains(&p) {
        return Err(format!("probability {p} is not within 0..=1"));
    }
    let status = match status
        .strip_prefix("0x")
        .or_else(|| status.strip_prefix("0X"))
    {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => status.parse(),
    }
    .map_err(|e| format!("bad command_status {status:?}: {e}"))?;
    Ok((p, status))
}

impl Args {
    fn config(&self) -> SimConfig {
        let min = Duration::from_millis(self.receipt_delay_ms);
        let receipt_delay = match self.receipt_delay_max_ms.map(Duration::from_millis) {
            Some(max) if max > min => DelayDist::Uniform { min, max },
            _ => DelayDist::Fixed(min),
        };
        SimConfig {
            smpp_addr: self.smpp,
            http_addr: self.http,
            credentials: vec![(self.system_id.clone(), self.password.clone())],
            receipt_delay,
            outcomes: self.outcomes,
            receipt_tlvs: !self.no_receipt_tlvs,
            message_id_format: self.id_format,
            throttle_tps: self.throttle_tps,
            throttle_after: Duration::from_millis(self.throttle_after_ms),
            error_injection: self.errors.clone(),
            resp_delay: Duration::from_millis(self.resp_delay_ms),
            deliver_window: self.window,
            max_records: self.max_records,
            receipt_text_id_format: self.receipt_text_id_format,
            receipt_tlv_id_format: self.receipt_tlv_id_format,
            receipt_before_resp: self.receipt_before_resp,
            multipart_receipts: self.multipart_receipts,
            enroute_first: self.enroute_first_ms.map(Duration::from_millis),
            ..SimConfig::default()
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rusmpp=warn".into()),
        )
        .init();
    let args = Args::parse();
    let sim = Simulator::start(args.config())
        .await
        .with_context(|| format!("cannot listen on {}", args.smpp))?;
    println!("smpp: {}", sim.smpp_addr());
    if let Some(http) = sim.http_addr() {
        println!("http: http://{http}");
    }

    let runtime = async {
        match args.max_runtime_s {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => std::future::pending().await,
        }
    };
    let report = async {
        if args.stats_interval_s == 0 {
            return std::future::pending().await;
        }
        let every = Duration::from_secs(args.stats_interval_s);
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let mut last = 0;
        loop {
            ticker.tick().await;
            let stats = sim.stats();
            let tps = (stats.submits_ok - last) / args.stats_interval_s;
            last = stats.submits_ok;
            tracing::info!(tps, ?stats, "stats");
        }
    };
    tokio::select! {
        signal = tokio::signal::ctrl_c() => {
            signal.context("cannot listen for Ctrl-C")?;
            tracing::info!("Ctrl-C: shutting down");
        }
        _ = runtime => tracing::info!("max runtime reached: shutting down"),
        _ = report => {}
    }
    sim.shutdown().await;
    println!("{}", serde_json::to_string(&sim.stats())?);
    Ok(())
}
