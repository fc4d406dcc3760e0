//! The `smsgate` command: `serve` runs the gateway on a config file; `demo`
//! runs it together with the built-in SMSC simulator so a new user sees a
//! message delivered within a minute. `demo` (and the simulator it links)
//! is the `demo` feature, on by default: `--no-default-features` builds a
//! `serve`-only binary without the load-test kit.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use smsgate::Gateway;
use smsgate::config::{Config, LogFormat};
#[cfg(feature = "demo")]
use smsgate_loadtest::sim::{SimConfig, Simulator};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc malloc: glibc's malloc/free were 18–23 % of the gateway's
/// CPU samples under load (many short-lived allocations on tokio's worker threads), and
/// mimalloc's per-thread free lists cut the gateway's CPU per message (docs/performance-log.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The example config, compiled in so `demo` runs from any directory.
#[cfg(feature = "demo")]
const EMBEDDED_CONFIG: &str = include_str!("../config/smsgate.toml");

/// The shipped country rules, for a `demo` run outside the source tree.
#[cfg(feature = "demo")]
const EMBEDDED_COUNTRIES: &str = include_str!("../config/countries.toml");

#[derive(Parser)]
#[command(
    name = "smsgate",
    version,
    about = "High-throughput SMS/A2P gateway: HTTP in, SMPP out, delivery reports back."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Configuration file (TOML).
        #[arg(long, short, default_value = "config/smsgate.toml")]
        config: PathBuf,
        /// Override the HTTP listen address.
        #[arg(long)]
        http: Option<SocketAddr>,
    },
    /// Run the gateway with a local SMSC simulator as its carrier.
    #[cfg(feature = "demo")]
    Demo {
        /// Configuration file (TOML); the built-in example when absent.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Override the HTTP listen address.
        #[arg(long)]
        http: Option<SocketAddr>,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Serve { config, http } => {
            let mut config =
                Config::load(&config).with_context(|| format!("loading {}", config.display()))?;
            if let Some(addr) = http {
                config.http.listen = addr;
            }
            init_logging(&config);
            let gateway = Gateway::start(config).await.context("starting smsgate")?;
            wait_for_signal(&gateway).await?;
            gateway.shutdown().await;
        }
        #[cfg(feature = "demo")]
        Command::Demo { config, http } => run_demo(config, http).await?,
    }
    Ok(())
}

/// `smsgate demo`: the gateway on the given or built-in config, its carriers
/// pointed at an in-process SMSC simulator.
#[cfg(feature = "demo")]
async fn run_demo(config: Option<PathBuf>, http: Option<SocketAddr>) -> Result<()> {
    let mut config = match &config {
        Some(path) => Config::load(path).with_context(|| format!("loading {}", path.display()))?,
        None => Config::parse(EMBEDDED_CONFIG).context("built-in config")?,
    };
    if let Some(addr) = http {
        config.http.listen = addr;
    }
    init_logging(&config);
    if !config.compliance.countries.exists() {
        std::fs::create_dir_all(&config.store.path).context("creating the data directory")?;
        let copy = config.store.path.join("countries.toml");
        std::fs::write(&copy, EMBEDDED_COUNTRIES).context("writing the built-in country rules")?;
        config.compliance.countries = copy;
    }
    let sim = Simulator::start(SimConfig {
        credentials: config
            .carriers
            .iter()
            .map(|c| (c.system_id.clone(), c.password.clone()))
            .collect(),
        ..SimConfig::default()
    })
    .await
    .context("starting the SMSC simulator")?;
    for carrier in &mut config.carriers {
        carrier.url = format!("smpp://{}", sim.smpp_addr());
    }
    let gateway = Gateway::start(config).await.context("starting smsgate")?;
    print_demo_banner(gateway.http_addr(), sim.smpp_addr());
    wait_for_signal(&gateway).await?;
    gateway.shutdown().await;
    sim.shutdown().await;
    Ok(())
}

#[cfg(feature = "demo")]
fn print_demo_banner(http: SocketAddr, smpp: SocketAddr) {
    println!(
        "\nsmsgate demo is running\n  HTTP API:       http://{http}\n  SMSC simulator: smpp://{smpp}\n  API key:        demo-key\n\nSend a message:\n  curl -s -H 'Authorization: Bearer demo-key' -d '{{\"to\":\"+447400123456\",\"from\":\"ACME\",\"text\":\"Hello from smsgate\",\"kind\":\"otp\"}}' http://{http}/v1/messages\nThen see it delivered (use the id from the answer):\n  curl -s -H 'Authorization: Bearer demo-key' http://{http}/v1/messages/<id>\nMetrics: curl -s http://{http}/metrics\nCtrl-C stops.\n"
    );
}

fn init_logging(config: &Config) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(config.log.level.as_str()));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
}

/// Waits for SIGINT (Ctrl-C) or SIGTERM; SIGHUP reloads the country rules
/// (an invalid file is refused and the old rules stay).
async fn wait_for_signal(gateway: &Gateway) -> Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
        loop {
            tokio::select! {
                r = tokio::signal::ctrl_c() => { r.context("waiting for Ctrl-C")?; break; }
                _ = term.recv() => break,
                _ = hup.recv() => {
                    if let Err(e) = gateway.reload_rules() {
                        tracing::error!(error = %e, "country rules not reloaded; the old rules stay");
                    }
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = gateway;
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
    }
    tracing::info!("shutting down");
    Ok(())
}
