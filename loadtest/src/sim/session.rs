//! One SMPP connection: the reader loop that answers the ESME, and its life cycle (bind,
//! unbind, drop). The bytes go out through the connection's writer task ([`wire::write_loop`]).

use std::{
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use chrono::Utc;
use futures::StreamExt;
use rusmpp::{
    Command, CommandId, CommandStatus, Pdu,
    pdus::{BindReceiverResp, BindTransceiverResp, BindTransmitterResp, SubmitSm},
    types::COctetString,
    values::InterfaceVersion,
};
use tokio::{
    net::TcpStream,
    sync::mpsc,
    time::{Instant, sleep_until},
};
use tokio_util::codec::FramedRead;

use super::{
    Shared,
    hub::{Acked, Registration, SessionId},
    receipts::{self, Address, Receipt},
    records::{Content, SubmitRecord},
    stats::bump,
    wire::{self, FrameError, Inbound, InboundCodec, Out, ids},
};

/// Responses queued for the writer before the reader stops reading (TCP back-pressure).
const OUT_QUEUE: usize = 4096;
/// How long a session waits for unbind_resp after our unbind at shutdown.
const UNBIND_GRACE: Duration = Duration::from_millis(500);
/// system_id in our bind_resp.
const MC_SYSTEM_ID: &str = "smsc-sim";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Transmitter,
    Receiver,
    Transceiver,
}

impl Mode {
    fn transmits(self) -> bool {
        self != Mode::Receiver
    }

    fn receives(self) -> bool {
        self != Mode::Transmitter
    }
}

#[derive(Debug)]
struct Bound {
    system_id: String,
    mode: Mode,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The ESME unbound (counted when the unbind arrived).
    UnbindReceived,
    /// We unbound at shutdown (answered or not).
    UnbindSent,
    /// The peer closed, the socket failed, or the stream was unreadable.
    Disconnected,
    /// `drop_connections` (counted there).
    Dropped,
}

enum Flow {
    Continue,
    Close(End),
}

struct Session {
    shared: Arc<Shared>,
    id: SessionId,
    out: mpsc::Sender<Out>,
    bound: Option<Bound>,
    /// We sent unbind (shutdown) and wait for unbind_resp until this instant.
    unbind_deadline: Option<Instant>,
}

/// Runs one accepted connection to its end.
pub(crate) async fn serve(shared: Arc<Shared>, socket: TcpStream) {
    let _ = socket.set_nodelay(true);
    let peer = socket.peer_addr().ok();
    let Registration { id, push_rx, kill } = shared.hub.register();
    let (rd, wr) = socket.into_split();
    let (out, out_rx) = mpsc::channel(OUT_QUEUE);
    let writer = tokio::spawn(wire::write_loop(
        Arc::clone(&shared),
        wr,
        out_rx,
        push_rx,
        kill.clone(),
    ));
    let mut session = Session {
        shared: Arc::clone(&shared),
        id,
        out,
        bound: None,
        unbind_deadline: None,
    };
    tracing::debug!(session = id, ?peer, "connection accepted");

    let end = {
        let mut frames = FramedRead::with_capacity(rd, InboundCodec, 64 * 1024);
        let killed = kill.cancelled();
        let shutting_down = shared.shutdown.cancelled();
        tokio::pin!(killed, shutting_down);
        loop {
            let deadline = session.unbind_deadline;
            let flow = tokio::select! {
                biased;
                _ = &mut killed => Flow::Close(End::Dropped),
                _ = &mut shutting_down, if deadline.is_none() => session.start_unbind().await,
                _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    Flow::Close(End::UnbindSent)
                }
                frame = frames.next() => match frame {
                    Some(Ok(inbound)) => session.handle(inbound).await,
                    Some(Err(FrameError::Length { length, seq })) => {
                        tracing::warn!(session = id, length, "unreadable PDU length, closing");
                        session.nack(seq, ids::ESME_RINVCMDLEN).await;
                        Flow::Close(End::Disconnected)
                    }
                    Some(Err(FrameError::Io(_))) | None => Flow::Close(End::Disconnected),
                },
            };
            if let Flow::Close(end) = flow {
                break end;
            }
        }
    };

    // Closing the sender lets the writer flush what is queued (nothing, if killed) and exit.
    drop(session);
    let _ = writer.await;
    let counters = &shared.counters;
    // Not registered any more: drop_connections removed (and counted) it already.
    if shared.hub.unregister(id) {
        match end {
            End::UnbindSent => bump(&counters.unbinds),
            End::Disconnected => bump(&counters.disconnects),
            End::UnbindReceived | End::Dropped => {}
        }
    }
    tracing::debug!(session = id, ?end, "connection closed");
}

impl Session {
    async fn send(&self, out: Out) -> Flow {
        match self.out.send(out).await {
            Ok(()) => Flow::Continue,
            // The writer is gone: the socket failed or the session was killed.
            Err(_) => Flow::Close(End::Disconnected),
        }
    }

    async fn header(&self, id: u32, status: u32, seq: u32) -> Flow {
        self.send(Out::Header { id, status, seq }).await
    }

    async fn nack(&self, seq: u32, status: u32) -> Flow {
        bump(&self.shared.counters.generic_nacks);
        self.header(ids::GENERIC_NACK, status, seq).await
    }

    fn unbind_received(&mut self) {
        bump(&self.shared.counters.unbinds);
        self.shared.hub.mark_unbound(self.id);
        self.bound = None;
    }

    async fn start_unbind(&mut self) -> Flow {
        if self.bound.is_none() {
            return Flow::Close(End::Disconnected);
        }
        self.unbind_deadline = Some(Instant::now() + UNBIND_GRACE);
        match self.shared.hub.next_seq(self.id) {
            Some(seq) => self.header(ids::UNBIND, ids::ESME_ROK, seq).await,
            None => Flow::Close(End::UnbindSent),
        }
    }

    async fn handle(&mut self, inbound: Inbound) -> Flow {
        let command = match inbound {
            Inbound::Command(command) => command,
            Inbound::Undecodable { id, status, seq } => {
                tracing::debug!(session = self.id, id, seq, "undecodable PDU");
                return match CommandId::from(id) {
                    // The header is all an acknowledgement needs.
                    CommandId::DeliverSmResp => self.deliver_sm_resp(seq, status),
                    id if id.is_response() => Flow::Continue,
                    _ => self.nack(seq, ids::ESME_RINVCMDLEN).await,
                };
            }
        };
        let seq = command.sequence_number();
        match (command.id(), command.pdu()) {
            (CommandId::SubmitSm, Some(_)) if self.shared.nack_submits.load(Ordering::Relaxed) => {
                self.nack(seq, ids::ESME_RSYSERR).await
            }
            (CommandId::SubmitSm, Some(Pdu::SubmitSm(submit))) => {
                let out = self.submit(seq, submit);
                self.send(out).await
            }
            (CommandId::BindTransmitter, Some(Pdu::BindTransmitter(b))) => {
                let (system_id, password) = (b.system_id.as_str(), b.password.as_str());
                self.bind(
                    seq,
                    Mode::Transmitter,
                    system_id,
                    password,
                    b.interface_version,
                )
                .await
            }
            (CommandId::BindReceiver, Some(Pdu::BindReceiver(b))) => {
                let (system_id, password) = (b.system_id.as_str(), b.password.as_str());
                self.bind(
                    seq,
                    Mode::Receiver,
                    system_id,
                    password,
                    b.interface_version,
                )
                .await
            }
            (CommandId::BindTransceiver, Some(Pdu::BindTransceiver(b))) => {
                let (system_id, password) = (b.system_id.as_str(), b.password.as_str());
                self.bind(
                    seq,
                    Mode::Transceiver,
                    system_id,
                    password,
                    b.interface_version,
                )
                .await
            }
            (CommandId::EnquireLink, _) => {
                self.header(ids::ENQUIRE_LINK_RESP, ids::ESME_ROK, seq)
                    .await
            }
            (CommandId::Unbind, _) => {
                // Counted before the unbind_resp leaves: whoever sees the resp sees the count.
                self.unbind_received();
                match self.header(ids::UNBIND_RESP, ids::ESME_ROK, seq).await {
                    Flow::Continue => Flow::Close(End::UnbindReceived),
                    closed => closed,
                }
            }
            (CommandId::UnbindResp, _) if self.unbind_deadline.is_some() => {
                Flow::Close(End::UnbindSent)
            }
            (CommandId::DeliverSmResp, _) => self.deliver_sm_resp(seq, u32::from(command.status())),
            (
                CommandId::SubmitSm
                | CommandId::BindTransmitter
                | CommandId::BindReceiver
                | CommandId::BindTransceiver,
                _,
            ) => self.nack(seq, ids::ESME_RINVCMDLEN).await,
            (id, _) if id.is_response() => Flow::Continue,
            (id, _) => {
                tracing::debug!(session = self.id, ?id, "unsupported command");
                self.nack(seq, ids::ESME_RINVCMDID).await
            }
        }
    }

    async fn bind(
        &mut self,
        seq: u32,
        mode: Mode,
        system_id: &str,
        password: &str,
        version: InterfaceVersion,
    ) -> Flow {
        let status = if self.bound.is_some() {
            ids::ESME_RALYBND
        } else {
            match self
                .shared
                .cfg
                .credentials
                .iter()
                .find(|(id, _)| id == system_id)
            {
                None => ids::ESME_RINVSYSID,
                Some((_, expected)) if expected != password => ids::ESME_RINVPASWD,
                Some(_) => ids::ESME_ROK,
            }
        };
        let resp_id = u32::from(match mode {
            Mode::Transmitter => CommandId::BindTransmitterResp,
            Mode::Receiver => CommandId::BindReceiverResp,
            Mode::Transceiver => CommandId::BindTransceiverResp,
        });
        if status != ids::ESME_ROK {
            tracing::info!(session = self.id, system_id, status, "bind refused");
            return self.header(resp_id, status, seq).await;
        }
        // Answer in the version the ESME spoke; 3.3 and older have no TLVs at all.
        let sc_version = match u8::from(version) {
            v if v >= 0x50 => Some(InterfaceVersion::Smpp5_0),
            0x34 => Some(InterfaceVersion::Smpp3_4),
            _ => None,
        };
        let mc_id = COctetString::from_str(MC_SYSTEM_ID).unwrap_or_default();
        let pdu: Pdu = match mode {
            Mode::Transmitter => BindTransmitterResp::new(mc_id, sc_version).into(),
            Mode::Receiver => BindReceiverResp::new(mc_id, sc_version).into(),
            Mode::Transceiver => BindTransceiverResp::new(mc_id, sc_version).into(),
        };
        let resp = Command::new(CommandStatus::EsmeRok, seq, pdu);
        self.bound = Some(Bound {
            system_id: system_id.to_owned(),
            mode,
        });
        bump(&self.shared.counters.binds_total);
        self.shared.hub.mark_bound(self.id);
        tracing::info!(session = self.id, system_id, ?mode, "bound");
        if mode.receives() {
            self.shared.hub.bind_receiver(self.id, system_id, resp);
            Flow::Continue
        } else {
            self.send(Out::Command(Box::new(resp))).await
        }
    }

    fn submit(&self, seq: u32, submit: &SubmitSm) -> Out {
        let shared = &*self.shared;
        let counters = &shared.counters;
        let refuse = |status| Out::SubmitResp {
            seq,
            status,
            message_id: None,
            receipt: None,
        };
        let Some(bound) = self.bound.as_ref().filter(|b| b.mode.transmits()) else {
            bump(&counters.submits_error);
            return refuse(ids::ESME_RINVBNDSTS);
        };
        if !shared.policy.throttle.admit() {
            bump(&counters.submits_throttled);
            return refuse(ids::ESME_RTHROTTLED);
        }
        if let Some(status) = shared.policy.injected_error() {
            bump(&counters.submits_error);
            return refuse(status);
        }

        let (numeric_id, message_id) = shared.policy.ids.next();
        let outcome = shared.policy.outcome_for(submit.destination_addr.as_str());
        let wants_receipt = receipts::wanted(u8::from(submit.registered_delivery), outcome);
        let keep_record = shared.records.enabled();
        let at = Utc::now();
        let content = (keep_record || wants_receipt).then(|| Content::of(submit));
        // A carrier that reports one part of a concatenated message only.
        let reported = |content: &Content| {
            content
                .concat
                .as_ref()
                .is_none_or(|c| shared.cfg.multipart_receipts.reports(c.seq, c.total))
        };
        let receipt = match &content {
            Some(content) if wants_receipt && reported(content) => {
                bump(&counters.receipts_owed);
                Some(Arc::new(Receipt {
                    system_id: bound.system_id.clone(),
                    message_id: message_id.clone(),
                    numeric_id,
                    outcome,
                    source: Address {
                        addr: submit.destination_addr.clone(),
                        ton: submit.dest_addr_ton,
                        npi: submit.dest_addr_npi,
                    },
                    destination: Address {
                        addr: submit.source_addr.clone(),
                        ton: submit.source_addr_ton,
                        npi: submit.source_addr_npi,
                    },
                    submitted: at,
                    text: receipts::text_excerpt(&content.text),
                    intermediate: false,
                    resp_written: AtomicBool::new(false),
                }))
            }
            _ => None,
        };
        if let Some(receipt) = receipt.as_ref().filter(|_| shared.cfg.receipt_before_resp) {
            receipts::schedule(shared, Arc::clone(receipt));
        }
        if let Some(content) = content.filter(|_| keep_record) {
            let record = SubmitRecord::new(at, &bound.system_id, &message_id, submit, content);
            shared.records.push(record);
        }
        // Counted before the resp leaves, so a client that sees the resp also sees the count.
        bump(&counters.submits_ok);
        Out::SubmitResp {
            seq,
            status: ids::ESME_ROK,
            message_id: Some(message_id),
            receipt,
        }
    }

    fn deliver_sm_resp(&self, seq: u32, status: u32) -> Flow {
        let shared = &*self.shared;
        bump(&shared.counters.deliver_sm_resp_received);
        match shared.hub.ack(self.id, seq, status) {
            Acked::Receipt { refused: false, .. } => bump(&shared.counters.receipts_sent),
            Acked::Receipt {
                receipt,
                refused: true,
            } => {
                bump(&shared.counters.receipts_refused);
                shared.scheduler.after(shared.cfg.receipt_retry, receipt);
            }
            Acked::Mo | Acked::Unknown => {}
        }
        Flow::Continue
    }
}
