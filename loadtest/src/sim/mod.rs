//! An SMPP 3.4 SMSC simulator (5.0 binds are accepted too) for smsgate's end-to-end and load
//! tests.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use smsgate_loadtest::sim::{SimConfig, Simulator};
//! let sim = Simulator::start(SimConfig::default()).await?;
//! println!("SMSC on smpp://{}", sim.smpp_addr());
//! // ... point the gateway at it, send traffic ...
//! assert_eq!(sim.submits().len(), sim.submit_count());
//! sim.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! The flow of one message, top to bottom:
//! - `session` reads a submit_sm, decides its fate with `policy` (throttle, injected error,
//!   outcome), stores a [`SubmitRecord`] and queues the submit_sm_resp;
//! - `wire`'s writer task writes the resp (after `resp_delay`) and starts the receipt clock;
//! - `receipts` releases the receipt when it is due to the `hub`, which routes it to a
//!   bound receiver/transceiver of the same system_id, or queues it until one binds;
//! - the ESME's deliver_sm_resp closes the loop ([`SimStats::receipts_sent`]).

mod config;
mod error;
mod http;
mod hub;
mod policy;
mod receipts;
mod records;
mod session;
mod stats;
mod text;
mod wire;

use std::{
    io,
    net::SocketAddr,
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use rusmpp::{
    pdus::DeliverSm,
    tlvs::MessageDeliveryRequestTlvValue,
    types::{AnyOctetString, COctetString, OctetString},
    values::{DataCoding, EsmClass, MessagePayload, Npi, Ton},
};
use tokio::{net::TcpListener, sync::mpsc};
use tokio_util::sync::CancellationToken;

pub use config::{DelayDist, MessageIdFormat, Outcome, OutcomeMix, ReceiptParts, SimConfig};
pub use error::SimError;
pub use records::{ConcatInfo, SubmitRecord};
pub use stats::SimStats;

use hub::Hub;
use policy::Policy;
use receipts::Scheduler;
use records::RecordLog;
use stats::{Counters, bump};

/// How long [`Simulator::shutdown`] waits for sessions to unbind and tasks to end.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// State shared by every task of one simulator.
#[derive(Debug)]
pub(crate) struct Shared {
    pub cfg: SimConfig,
    pub counters: Counters,
    pub records: RecordLog,
    pub policy: Policy,
    pub hub: Hub,
    pub scheduler: Scheduler,
    pub accepting: AtomicBool,
    /// While set, every submit_sm is answered with generic_nack (an SMSC that cannot read them).
    pub nack_submits: AtomicBool,
    /// Cancelled by `shutdown` or when the last `Simulator` handle is dropped.
    pub shutdown: CancellationToken,
}

impl Shared {
    pub(crate) fn stats(&self) -> SimStats {
        self.counters
            .snapshot(self.hub.binds_active(), self.hub.queued())
    }
}

/// A running simulator. Cheap to clone; when the last clone is dropped the simulator shuts
/// down in the background (call [`Simulator::shutdown`] to wait for it).
#[derive(Debug, Clone)]
pub struct Simulator {
    shared: Arc<Shared>,
    handle: Arc<Handle>,
}

#[derive(Debug)]
struct Handle {
    smpp_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    /// Closed when every task has ended (each holds a sender).
    done: tokio::sync::Mutex<mpsc::Receiver<()>>,
    shutdown: CancellationToken,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Spawns `task`, keeping `alive` until it ends.
fn spawn_tracked<F>(alive: &mpsc::Sender<()>, task: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let alive = alive.clone();
    tokio::spawn(async move {
        task.await;
        drop(alive);
    });
}

impl Simulator {
    /// Binds the listeners and starts serving.
    pub async fn start(cfg: SimConfig) -> io::Result<Simulator> {
        let listener = TcpListener::bind(cfg.smpp_addr).await?;
        let smpp_addr = listener.local_addr()?;
        let http_listener = match cfg.http_addr {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        let http_addr = http_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;

        let (scheduler, due_rx) = Scheduler::new();
        let shutdown = CancellationToken::new();
        let shared = Arc::new(Shared {
            counters: Counters::default(),
            records: RecordLog::new(cfg.max_records),
            policy: Policy::new(&cfg),
            hub: Hub::new(cfg.deliver_window),
            scheduler,
            accepting: AtomicBool::new(true),
            nack_submits: AtomicBool::new(false),
            shutdown: shutdown.clone(),
            cfg,
        });

        let (alive, done) = mpsc::channel(1);
        spawn_tracked(&alive, receipts::run(Arc::clone(&shared), due_rx));
        spawn_tracked(
            &alive,
            accept_loop(Arc::clone(&shared), listener, alive.clone()),
        );
        if let Some(listener) = http_listener {
            spawn_tracked(&alive, http::serve(Arc::clone(&shared), listener));
        }
        tracing::info!(%smpp_addr, ?http_addr, "SMSC simulator listening");
        Ok(Simulator {
            shared,
            handle: Arc::new(Handle {
                smpp_addr,
                http_addr,
                done: tokio::sync::Mutex::new(done),
                shutdown,
            }),
        })
    }

    /// The SMPP address actually bound (useful with port 0).
    pub fn smpp_addr(&self) -> SocketAddr {
        self.handle.smpp_addr
    }

    /// The HTTP address actually bound, if HTTP is enabled.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.handle.http_addr
    }

    /// Every accepted submit_sm still kept (see [`SimConfig::max_records`]), in arrival order.
    pub fn submits(&self) -> Vec<SubmitRecord> {
        self.shared.records.all()
    }

    /// How many submit_sm were accepted since start (also those no longer kept as records).
    pub fn submit_count(&self) -> usize {
        usize::try_from(self.stats().submits_ok).unwrap_or(usize::MAX)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> SimStats {
        self.shared.stats()
    }

    /// The next accepted submits to `destination` get these outcomes, in order (one per
    /// submit_sm, so one per segment of a long message); then the configured mix applies again.
    pub fn script_outcomes(&self, destination: &str, outcomes: Vec<Outcome>) {
        self.shared.policy.script(destination, outcomes);
    }

    /// Abruptly closes every open SMPP connection (no unbind) and returns how many there were.
    /// Receipts not yet acknowledged on them are queued again for the next bind.
    pub fn drop_connections(&self) -> usize {
        // Counted here rather than when the session tasks wind down, so the stats are exact
        // as soon as this returns.
        let n = self.shared.hub.drop_all();
        let disconnects = &self.shared.counters.disconnects;
        disconnects.fetch_add(n as u64, Ordering::Relaxed);
        tracing::info!(connections = n, "dropped all connections");
        n
    }

    /// While on, every submit_sm is answered with generic_nack (ESME_RSYSERR): an SMSC that
    /// cannot read what it was sent, for a while.
    pub fn set_nack_submits(&self, on: bool) {
        self.shared.nack_submits.store(on, Ordering::Relaxed);
    }

    /// When off, new TCP connections are accepted and closed at once (existing ones stay).
    pub fn set_accepting(&self, on: bool) {
        self.shared.accepting.store(on, Ordering::Relaxed);
    }

    /// Sends a mobile-originated deliver_sm (esm_class default, data_coding 0 GSM 03.38 when
    /// the text fits the alphabet, else 0x08 UCS-2) on a bound receiver/transceiver session of
    /// `system_id`, and waits for the ESME's deliver_sm_resp.
    pub async fn inject_mo(
        &self,
        system_id: &str,
        from: &str,
        to: &str,
        text: &str,
    ) -> Result<(), SimError> {
        let pdu = mo_deliver_sm(from, to, text)?;
        let ack = self.shared.hub.send_mo(system_id, pdu)?;
        bump(&self.shared.counters.mo_sent);
        let wait = self.shared.cfg.mo_ack_timeout;
        match tokio::time::timeout(wait, ack).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(SimError::SessionClosed),
            Err(_) => Err(SimError::Timeout(wait)),
        }
    }

    /// Sends a concatenated mobile-originated message: the text split into `split.parts`
    /// deliver_sm (on character boundaries), marked with a UDH (8-bit reference up to 255, else
    /// 16-bit) or sar_* TLVs, sent in `split.order` on the receiver sessions of `system_id`
    /// (round robin, so parts travel on different binds). Waits for each deliver_sm_resp.
    pub async fn inject_mo_concatenated(
        &self,
        system_id: &str,
        from: &str,
        to: &str,
        text: &str,
        split: &ConcatMo,
    ) -> Result<(), SimError> {
        for pdu in concatenated_mo(from, to, text, split)? {
            let ack = self.shared.hub.send_mo(system_id, pdu)?;
            bump(&self.shared.counters.mo_sent);
            let wait = self.shared.cfg.mo_ack_timeout;
            match tokio::time::timeout(wait, ack).await {
                Ok(Ok(result)) => result?,
                Ok(Err(_)) => return Err(SimError::SessionClosed),
                Err(_) => return Err(SimError::Timeout(wait)),
            }
        }
        Ok(())
    }

    /// Unbinds every session (closing each after its unbind_resp or a short grace period),
    /// stops the listeners and waits for the simulator's tasks to end.
    pub async fn shutdown(&self) {
        self.shared.shutdown.cancel();
        let mut done = self.handle.done.lock().await;
        if tokio::time::timeout(SHUTDOWN_WAIT, done.recv())
            .await
            .is_err()
        {
            tracing::warn!("simulator tasks still running after {SHUTDOWN_WAIT:?}");
        }
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, alive: mpsc::Sender<()>) {
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((socket, _)) if shared.accepting.load(Ordering::Relaxed) => {
                spawn_tracked(&alive, session::serve(Arc::clone(&shared), socket));
            }
            Ok((socket, peer)) => {
                tracing::debug!(%peer, "not accepting: closing new connection");
                drop(socket);
            }
            Err(error) => {
                // Usually EMFILE; back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Builds an MO deliver_sm; the text goes in message_payload when it exceeds 255 octets.
fn mo_deliver_sm(from: &str, to: &str, text: &str) -> Result<DeliverSm, SimError> {
    let (from, to) = (address(from)?, address(to)?);
    let (bytes, data_coding) = text::encode_mo(text);
    let builder = DeliverSm::builder()
        .source_addr_ton(from.1)
        .source_addr_npi(from.2)
        .source_addr(from.0)
        .dest_addr_ton(to.1)
        .dest_addr_npi(to.2)
        .destination_addr(to.0)
        // rusmpp's EsmClass::default() is 0x08 (ANSI-41 delivery ack); MO wants plain 0x00.
        .esm_class(EsmClass::from(0))
        .data_coding(DataCoding::from(data_coding));
    if bytes.len() <= 255 {
        let short_message = OctetString::from_vec(bytes).map_err(|_| SimError::TooLong(0))?;
        return Ok(builder.short_message(short_message).build());
    }
    if bytes.len() > usize::from(u16::MAX) {
        return Err(SimError::TooLong(bytes.len()));
    }
    let mut pdu = builder.build();
    pdu.push_tlv(MessageDeliveryRequestTlvValue::MessagePayload(
        MessagePayload::new(AnyOctetString::from_vec(bytes)),
    ));
    Ok(pdu)
}

/// How [`Simulator::inject_mo_concatenated`] splits and sends a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConcatMo {
    /// Number of parts, 2–255.
    pub parts: usize,
    /// Concatenation reference (above 255: a 16-bit reference UDH).
    pub reference: u16,
    /// sar_msg_ref_num / sar_total_segments / sar_segment_seqnum TLVs instead of a UDH.
    pub sar: bool,
    /// UCS-2 (data_coding 8) even when the text fits GSM 03.38.
    pub ucs2: bool,
    /// The order the parts are sent in, as 0-based indexes (empty: in order).
    pub order: Vec<usize>,
}

impl Default for ConcatMo {
    fn default() -> Self {
        Self {
            parts: 2,
            reference: 1,
            sar: false,
            ucs2: false,
            order: Vec::new(),
        }
    }
}

/// The deliver_sm PDUs of a concatenated MO message, in sending order.
fn concatenated_mo(
    from: &str,
    to: &str,
    text: &str,
    split: &ConcatMo,
) -> Result<Vec<DeliverSm>, SimError> {
    let (from, to) = (address(from)?, address(to)?);
    let chars: Vec<char> = text.chars().collect();
    if !(2..=255).contains(&split.parts) || split.parts > chars.len() {
        return Err(SimError::BadSplit(format!(
            "{} parts of {} characters",
            split.parts,
            chars.len()
        )));
    }
    let order: Vec<usize> = if split.order.is_empty() {
        (0..split.parts).collect()
    } else {
        split.order.clone()
    };
    let mut sorted = order.clone();
    sorted.sort_unstable();
    if sorted != (0..split.parts).collect::<Vec<_>>() {
        return Err(SimError::BadSplit(format!(
            "order {order:?} is not a permutation of 0..{}",
            split.parts
        )));
    }
    let ucs2 = split.ucs2 || text::encode_gsm7(text).is_none();
    let per_part = chars.len().div_ceil(split.parts);
    let total = split.parts as u8;
    let parts: Vec<DeliverSm> = chars
        .chunks(per_part)
        .enumerate()
        .map(|(i, chunk)| {
            let chunk: String = chunk.iter().collect();
            let (payload, data_coding) = if ucs2 {
                (text::encode_ucs2(&chunk), text::DC_UCS2)
            } else {
                text::encode_mo(&chunk)
            };
            let seq = i as u8 + 1;
            let [hi, lo] = split.reference.to_be_bytes();
            let mut short_message = Vec::with_capacity(payload.len() + 7);
            if !split.sar {
                if split.reference > 0xFF {
                    short_message.extend_from_slice(&[0x06, 0x08, 0x04, hi, lo, total, seq]);
                } else {
                    short_message.extend_from_slice(&[0x05, 0x00, 0x03, lo, total, seq]);
                }
            }
            short_message.extend_from_slice(&payload);
            let len = short_message.len();
            let short_message =
                OctetString::from_vec(short_message).map_err(|_| SimError::TooLong(len))?;
            let mut pdu = DeliverSm::builder()
                .source_addr_ton(from.1)
                .source_addr_npi(from.2)
                .source_addr(from.0.clone())
                .dest_addr_ton(to.1)
                .dest_addr_npi(to.2)
                .destination_addr(to.0.clone())
                .esm_class(EsmClass::from(if split.sar { 0x00 } else { 0x40 }))
                .data_coding(DataCoding::from(data_coding))
                .short_message(short_message)
                .build();
            if split.sar {
                pdu.push_tlv(MessageDeliveryRequestTlvValue::SarMsgRefNum(
                    split.reference,
                ));
                pdu.push_tlv(MessageDeliveryRequestTlvValue::SarTotalSegments(total));
                pdu.push_tlv(MessageDeliveryRequestTlvValue::SarSegmentSeqnum(seq));
            }
            Ok(pdu)
        })
        .collect::<Result<_, SimError>>()?;
    if parts.len() != split.parts {
        return Err(SimError::BadSplit(format!(
            "{} characters do not make {} parts",
            chars.len(),
            split.parts
        )));
    }
    let mut parts: Vec<Option<DeliverSm>> = parts.into_iter().map(Some).collect();
    Ok(order.iter().filter_map(|&i| parts[i].take()).collect())
}

/// Parses an MO address: digits are international/ISDN (a leading `+` is dropped), anything
/// else alphanumeric.
fn address(s: &str) -> Result<(COctetString<1, 21>, Ton, Npi), SimError> {
    let digits = s.strip_prefix('+').unwrap_or(s);
    let (addr, ton, npi) = if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        (digits, Ton::International, Npi::Isdn)
    } else {
        (s, Ton::Alphanumeric, Npi::Unknown)
    };
    let parsed =
        COctetString::from_str(addr).map_err(|_| SimError::InvalidAddress(s.to_owned()))?;
    Ok((parsed, ton, npi))
}
