//! How many submit_sm per second a running `smsc-sim` handles on its own: a lean pipelined
//! ESME on rusmpp's codec (no gateway) keeps `--window` submit_sm outstanding on each of
//! `--binds` transceiver binds, acknowledges every delivery receipt it gets, and reports the
//! submit_sm_resp rate, the time until the last receipt, and (with `--sim-pid`) the CPU time
//! the simulator process used, i.e. submits per sim CPU-second.
//!
//! ```sh
//! cargo build --release -p smsgate-loadtest --bin smsc-sim --example sim_capacity
//! target/release/smsc-sim --stats-interval-s 0 --max-records 0 &
//! target/release/examples/sim_capacity --binds 4 --window 512 --count 400000 --sim-pid $!
//! kill %1
//! ```
//!
//! This driver shares the machine with the simulator, so on a small machine the rate it
//! reports is a floor on the simulator's capacity; the per-CPU-second figure says what the
//! simulator itself costs.

use std::{
    net::SocketAddr,
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Parser;
use futures::{FutureExt, SinkExt, StreamExt};
use rusmpp::{
    Command, CommandId, CommandStatus,
    pdus::{BindTransceiver, DeliverSmResp, SubmitSm},
    tokio_codec::CommandCodec,
    types::{COctetString, OctetString},
    values::{DataCoding, EsmClass, InterfaceVersion, Npi, RegisteredDelivery, Ton},
};
use tokio_util::codec::Framed;

/// Measures a running smsc-sim's submit_sm capacity.
#[derive(Parser, Debug)]
struct Args {
    /// smsc-sim's SMPP address.
    #[arg(long, default_value = "127.0.0.1:2775")]
    smpp: SocketAddr,
    /// Transceiver binds.
    #[arg(long, default_value_t = 4)]
    binds: usize,
    /// submit_sm outstanding per bind.
    #[arg(long, default_value_t = 512)]
    window: usize,
    /// submit_sm in all (split evenly over the binds).
    #[arg(long, default_value_t = 400_000)]
    count: usize,
    /// Ask for no receipts (registered_delivery 0): submits only.
    #[arg(long)]
    no_receipts: bool,
    /// The simulator's process id, to report its CPU time (Linux /proc).
    #[arg(long)]
    sim_pid: Option<u32>,
    /// Worker threads of this driver's runtime.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Give up waiting for receipts this long after the last submit_sm_resp (s).
    #[arg(long, default_value_t = 60)]
    receipt_wait_s: u64,
    #[arg(long, default_value = "smsgate")]
    system_id: String,
    #[arg(long, default_value = "secret")]
    password: String,
}

/// utime + stime of a process in seconds (Linux).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some(ticks / 100.0)
}

fn submit(seq: u32, receipts: bool) -> Command {
    let pdu = SubmitSm::builder()
        .source_addr_ton(Ton::Alphanumeric)
        .source_addr_npi(Npi::Unknown)
        .source_addr(COctetString::from_str("ACME").expect("address"))
        .dest_addr_ton(Ton::International)
        .dest_addr_npi(Npi::Isdn)
        .destination_addr(COctetString::from_str("447400123456").expect("address"))
        .esm_class(EsmClass::from(0))
        .registered_delivery(RegisteredDelivery::from(u8::from(receipts)))
        .data_coding(DataCoding::McSpecific)
        .short_message(
            OctetString::from_vec(b"Your code is 123456. It expires in 5 minutes.".to_vec())
                .expect("fits"),
        )
        .build();
    Command::new(CommandStatus::EsmeRok, seq, pdu)
}

/// Shared progress of every bind.
#[derive(Default)]
struct Progress {
    accepted: AtomicU64,
    refused: AtomicU64,
    receipts: AtomicU64,
}

/// One bind: keeps `window` submits outstanding until `n` are answered, acks receipts, and
/// stays until every bind's receipts are in (receipts go to any session of the system_id).
/// Returns when its last submit_sm_resp came.
async fn bind(args: Arc<Args>, n: usize, progress: Arc<Progress>) -> Instant {
    let socket = tokio::net::TcpStream::connect(args.smpp)
        .await
        .expect("connect");
    socket.set_nodelay(true).expect("nodelay");
    let mut framed = Framed::new(socket, CommandCodec::new());
    let bind = BindTransceiver::builder()
        .system_id(COctetString::from_str(&args.system_id).expect("system_id"))
        .password(COctetString::from_str(&args.password).expect("password"))
        .interface_version(InterfaceVersion::Smpp3_4)
        .build();
    framed
        .send(Command::new(CommandStatus::EsmeRok, 1, bind))
        .await
        .expect("bind");
    let bound = framed.next().await.expect("bind_resp").expect("decodes");
    assert_eq!(bound.status(), CommandStatus::EsmeRok, "bind refused");
    let (mut sink, mut stream) = framed.split::<Command>();
    let receipts = !args.no_receipts;
    let total_receipts = if receipts { args.count as u64 } else { 0 };

    let (mut sent, mut answered) = (0usize, 0usize);
    let mut last_resp = Instant::now();
    while sent < args.window.min(n) {
        sent += 1;
        sink.feed(submit(sent as u32 + 1, receipts))
            .await
            .expect("feed");
    }
    loop {
        if answered >= n
            && (progress.receipts.load(Ordering::Relaxed) >= total_receipts
                || last_resp.elapsed() > Duration::from_secs(args.receipt_wait_s))
        {
            break;
        }
        let next = match stream.next().now_or_never() {
            Some(next) => next,
            None => {
                sink.flush().await.expect("flush");
                match tokio::time::timeout(Duration::from_millis(20), stream.next()).await {
                    Ok(next) => next,
                    Err(_) => continue,
                }
            }
        };
        let Some(Ok(command)) = next else {
            break;
        };
        match command.id() {
            CommandId::SubmitSmResp => {
                answered += 1;
                last_resp = Instant::now();
                if command.status() == CommandStatus::EsmeRok {
                    progress.accepted.fetch_add(1, Ordering::Relaxed);
                } else {
                    progress.refused.fetch_add(1, Ordering::Relaxed);
                }
                if sent < n {
                    sent += 1;
                    sink.feed(submit(sent as u32 + 1, receipts))
                        .await
                        .expect("feed");
                }
            }
            CommandId::DeliverSm => {
                progress.receipts.fetch_add(1, Ordering::Relaxed);
                let ack = Command::new(
                    CommandStatus::EsmeRok,
                    command.sequence_number(),
                    DeliverSmResp::default(),
                );
                sink.feed(ack).await.expect("feed");
            }
            _ => {}
        }
    }
    sink.flush().await.ok();
    last_resp
}

fn main() {
    let args = Arc::new(Args::parse());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(args));
}

async fn run(args: Arc<Args>) {
    let progress = Arc::new(Progress::default());
    let per_bind = args.count / args.binds;
    let total = per_bind * args.binds;
    let cpu_before = args.sim_pid.and_then(cpu_seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.binds)
        .map(|_| tokio::spawn(bind(Arc::clone(&args), per_bind, Arc::clone(&progress))))
        .collect();
    // Progress once a second.
    let watch = {
        let progress = Arc::clone(&progress);
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let now = progress.accepted.load(Ordering::Relaxed)
                    + progress.refused.load(Ordering::Relaxed);
                eprintln!(
                    "{:>5.1}s  answered {now:>9}  (+{:>7}/s)  receipts {:>9}",
                    started.elapsed().as_secs_f64(),
                    now - last,
                    progress.receipts.load(Ordering::Relaxed)
                );
                last = now;
            }
        })
    };
    let mut last_resp = started;
    for task in tasks {
        last_resp = last_resp.max(task.await.expect("bind task"));
    }
    let finished = Instant::now();
    watch.abort();
    let cpu_after = args.sim_pid.and_then(cpu_seconds);

    let accepted = progress.accepted.load(Ordering::Relaxed);
    let refused = progress.refused.load(Ordering::Relaxed);
    let receipts = progress.receipts.load(Ordering::Relaxed);
    let submit_s = (last_resp - started).as_secs_f64();
    let all_s = (finished - started).as_secs_f64();
    println!(
        "{total} submit_sm over {} binds (window {}{}): {accepted} accepted, {refused} refused",
        args.binds,
        args.window,
        if args.no_receipts {
            ", no receipts"
        } else {
            ", receipts acked"
        },
    );
    println!(
        "submit phase {submit_s:.2} s: {:.0} submit_sm/s",
        total as f64 / submit_s
    );
    if !args.no_receipts {
        println!(
            "all {receipts} receipts in after {all_s:.2} s: {:.0} receipts/s overall",
            receipts as f64 / all_s
        );
    }
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        let cpu = after - before;
        println!(
            "smsc-sim CPU {cpu:.2} s for the run ({:.2} cores on average): {:.0} submit_sm (+ receipt) per sim CPU-second",
            cpu / all_s,
            total as f64 / cpu
        );
    }
}
