//! The ceiling `loadgen` can measure on this machine: an HTTP server that answers
//! `POST /v1/messages` the way smsgate does (it reads the JSON body and answers 202 with an
//! id) and does nothing else — no admission, no store, no SMPP. Whatever rate `loadgen`
//! reaches against it, with the same scenario and on the same cores, is the most any gateway
//! can show there; the gap between it and smsgate is what the gateway's own work costs.
//!
//! ```sh
//! cargo build --release -p smsgate-loadtest --bin loadgen --example null_gateway
//! target/release/examples/null_gateway --listen 127.0.0.1:8080 &
//! target/release/loadgen --scenario loadtest/scenarios/sustained-throughput.toml --no-webhook
//! kill %1
//! ```
//!
//! On exit (Ctrl-C or SIGTERM) it prints how many requests it answered and the CPU time it
//! used, i.e. its own cost per request.

use std::{
    net::SocketAddr,
    sync::atomic::{AtomicU64, Ordering},
};

use anyhow::Context;
use axum::{Router, body::Bytes, http::StatusCode, response::IntoResponse, routing::post};
use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Requests answered so far.
static ANSWERED: AtomicU64 = AtomicU64::new(0);

#[derive(Parser)]
#[command(about = "An HTTP endpoint that accepts messages and does nothing: loadgen's ceiling")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Runtime worker threads (smsgate's default is one per core).
    #[arg(long)]
    workers: Option<usize>,
}

/// Reads the body as JSON (a gateway must) and answers like smsgate's `POST /v1/messages`.
async fn accept(body: Bytes) -> impl IntoResponse {
    if serde_json::from_slice::<serde_json::Value>(&body).is_err() {
        return (
            StatusCode::BAD_REQUEST,
            String::from(r#"{"code":"invalid_json"}"#),
        );
    }
    let n = ANSWERED.fetch_add(1, Ordering::Relaxed);
    (
        StatusCode::ACCEPTED,
        format!(r#"{{"id":"null-{n}","status":"queued","segments":1}}"#),
    )
}

/// The process's user + system CPU time in seconds, from `/proc/self/stat` (Linux).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.workers {
        runtime.worker_threads(n);
    }
    let runtime = runtime
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let app = Router::new().route("/v1/messages", post(accept));
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        eprintln!("null_gateway listening on {}", args.listen);
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown())
            .await
            .context("serving")
    })?;
    let answered = ANSWERED.load(Ordering::Relaxed);
    match cpu_seconds() {
        Some(cpu) if answered > 0 => println!(
            "answered {answered} requests, CPU {cpu:.2} s ({:.1} µs per request)",
            cpu * 1e6 / answered as f64
        ),
        _ => println!("answered {answered} requests"),
    }
    Ok(())
}
