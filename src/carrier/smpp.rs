//! A full-duplex SMPP client session on rusmpp's codec.
//!
//! Why not rusmppc 0.4.0's client: its single connection task interleaves
//! writing and reading (one flush per PDU, at most five reads per poll, then a
//! self-wake). Under the two-way load of a gateway — submits out, thousands of
//! receipts in — that livelocked: in our kill -9 test 73 of 20,000 submits got
//! no response within 10 s and the process sat at 85% CPU, and against a peer
//! that had gone away it spun at 100% CPU in `poll_flush` (seen with gdb).
//! Here reading and writing are separate tasks, so a slow writer never stops
//! us from reading, and the writer sends everything queued with one flush.
//!
//! The PDU types and the codec are rusmpp's; this module only does sequence
//! numbers, request/response matching, timeouts and keepalive.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use futures::{SinkExt, StreamExt};
use rusmpp::pdus::{BindTransceiver, SubmitSm};
use rusmpp::tokio_codec::{CommandCodec, DecodeError, EncodeError};
use rusmpp::{Command, CommandId, CommandStatus, Pdu};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::codec::{Decoder, Encoder, FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

/// Most PDUs written with one flush.
const WRITE_BATCH: usize = 256;

/// Capacity of the inbound (SMSC-initiated PDU) channel. When it is full the
/// reader stops reading, which is SMPP's only back-pressure towards the SMSC.
const INBOUND_CAPACITY: usize = 1024;

/// The codec that frames PDUs on the socket, both ways (see [`FrameCodec`]).
pub(crate) fn frame_codec() -> FrameCodec {
    FrameCodec {
        inner: CommandCodec::new(),
    }
}

/// rusmpp's length-prefixed `CommandCodec` (16 to 8 KiB octets per PDU),
/// but each PDU is decoded from its own `command_length` octets only.
///
/// rusmpp decodes the PDU from the whole read buffer: a PDU whose fields run
/// past its `command_length` (say an sm_length larger than the PDU) went on
/// reading the PDUs after it and swallowed them; octets a PDU did not use
/// were read as the next length. Found by the `smpp_frames` fuzz target.
/// Here a PDU that needs more than its octets is a decode error (the session
/// closes), and octets it leaves over are dropped, so the stream stays in step.
#[derive(Debug)]
pub(crate) struct FrameCodec {
    inner: CommandCodec,
}

impl Decoder for FrameCodec {
    type Item = Command;
    type Error = DecodeError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Command>, DecodeError> {
        let Some(prefix) = src.first_chunk::<4>() else {
            return Ok(None);
        };
        let length = u32::from_be_bytes(*prefix) as usize;
        let bounds = 16..=self.inner.max_length().unwrap_or(usize::MAX);
        if !bounds.contains(&length) {
            // rusmpp refuses it (once it has a header's worth).
            return self.inner.decode(src);
        }
        if src.len() < length {
            src.reserve(length - src.len());
            return Ok(None);
        }
        let mut frame = src.split_to(length);
        match self.inner.decode(&mut frame)? {
            Some(command) => {
                if !frame.is_empty() {
                    tracing::debug!(
                        left = frame.len(),
                        "PDU shorter than its command_length; extra octets dropped"
                    );
                }
                Ok(Some(command))
            }
            // Unreachable: the frame holds all its octets.
            None => Err(DecodeError::Io(std::io::ErrorKind::UnexpectedEof.into())),
        }
    }
}

impl Encoder<Command> for FrameCodec {
    type Error = EncodeError;

    fn encode(&mut self, command: Command, dst: &mut BytesMut) -> Result<(), EncodeError> {
        self.inner.encode(&command, dst)
    }
}

impl Encoder<&Command> for FrameCodec {
    type Error = EncodeError;

    fn encode(&mut self, command: &Command, dst: &mut BytesMut) -> Result<(), EncodeError> {
        self.inner.encode(command, dst)
    }
}

/// How an SMPP request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmppError {
    /// The SMSC answered with a non-zero command_status.
    #[error("SMSC answered {0:?}")]
    Status(CommandStatus),
    /// The SMSC answered generic_nack (with this command_status): it could
    /// not read the request, which says nothing about the message in it.
    #[error("SMSC answered generic_nack ({0:?})")]
    GenericNack(CommandStatus),
    /// No response within the response timeout.
    #[error("no response within {0:?}")]
    Timeout(Duration),
    /// The session is closed (peer closed, I/O error, keepalive failed, or we closed it).
    #[error("SMPP session closed")]
    Closed,
    /// The response was not of the expected type.
    #[error("unexpected response PDU")]
    Unexpected,
}

/// Settings of one session.
#[derive(Clone, Copy, Debug)]
pub struct SessionSettings {
    /// How long a request waits for its response.
    pub response_timeout: Duration,
    /// Interval between enquire_link keepalives.
    pub enquire_link: Duration,
}

struct Shared {
    writer: mpsc::UnboundedSender<Command>,
    pending: Mutex<HashMap<u32, oneshot::Sender<Command>>>,
    next_seq: AtomicU32,
    closed: CancellationToken,
    settings: SessionSettings,
}

/// A handle to an open SMPP session (cheap to clone). Dropping every handle
/// does not close the session; [`SmppClient::close`] or the peer does.
#[derive(Clone)]
pub struct SmppClient {
    shared: Arc<Shared>,
}

/// The session's background tasks; aborted when dropped.
pub struct SessionTasks {
    _tasks: JoinSet<()>,
}

impl SmppClient {
    /// Starts a session over a connected socket. Returns the client, the PDUs
    /// the SMSC initiates (deliver_sm, unbind, …; the channel ends when the
    /// session does) and the background tasks.
    pub fn start(
        stream: TcpStream,
        settings: SessionSettings,
    ) -> (Self, mpsc::Receiver<Command>, SessionTasks) {
        let (read, write) = stream.into_split();
        let (writer_tx, writer_rx) = mpsc::unbounded_channel();
        let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_CAPACITY);
        let shared = Arc::new(Shared {
            writer: writer_tx,
            pending: Mutex::new(HashMap::new()),
            next_seq: AtomicU32::new(1),
            closed: CancellationToken::new(),
            settings,
        });
        let client = Self { shared };
        let mut tasks = JoinSet::new();
        tasks.spawn(write_loop(
            FramedWrite::new(write, frame_codec()),
            writer_rx,
            client.shared.closed.clone(),
        ));
        tasks.spawn(read_loop(
            FramedRead::new(read, frame_codec()),
            client.clone(),
            inbound_tx,
        ));
        tasks.spawn(keepalive(client.clone()));
        (client, inbound_rx, SessionTasks { _tasks: tasks })
    }

    /// True once the session has ended.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.is_cancelled()
    }

    /// Resolves when the session ends.
    pub async fn closed(&self) {
        self.shared.closed.cancelled().await;
    }

    /// Ends the session at once; requests waiting for a response fail with
    /// [`SmppError::Closed`].
    pub fn close(&self) {
        self.shared.closed.cancel();
        self.lock_pending().clear();
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashMap<u32, oneshot::Sender<Command>>> {
        self.shared
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Sends a request and waits for its response (any status).
    async fn request(&self, pdu: impl Into<Pdu>) -> Result<Command, SmppError> {
        if self.is_closed() {
            return Err(SmppError::Closed);
        }
        // Odd sequence numbers, wrapping within SMPP's 1..=0x7FFFFFFF.
        let seq = self.shared.next_seq.fetch_add(2, Ordering::Relaxed) & 0x7FFF_FFFF | 1;
        let (tx, rx) = oneshot::channel();
        self.lock_pending().insert(seq, tx);
        if self
            .shared
            .writer
            .send(Command::new(CommandStatus::EsmeRok, seq, pdu))
            .is_err()
        {
            self.lock_pending().remove(&seq);
            return Err(SmppError::Closed);
        }
        let timeout = self.shared.settings.response_timeout;
        match tokio::time::timeout(timeout, rx).await {
            // By command_id: rusmpp gives a generic_nack with stray body
            // octets no PDU (found by the `smpp_pdu` fuzz target).
            Ok(Ok(resp)) => match (resp.status(), resp.id()) {
                (status, CommandId::GenericNack) => Err(SmppError::GenericNack(status)),
                (CommandStatus::EsmeRok, _) => Ok(resp),
                (status, _) => Err(SmppError::Status(status)),
            },
            Ok(Err(_)) => Err(SmppError::Closed),
            Err(_) => {
                self.lock_pending().remove(&seq);
                Err(SmppError::Timeout(timeout))
            }
        }
    }

    /// Sends a response (or any PDU we do not expect an answer to).
    pub fn respond(&self, sequence_number: u32, status: CommandStatus, pdu: impl Into<Pdu>) {
        let _ = self
            .shared
            .writer
            .send(Command::new(status, sequence_number, pdu));
    }

    /// bind_transceiver; Ok once the SMSC accepted it.
    pub async fn bind_transceiver(&self, bind: BindTransceiver) -> Result<(), SmppError> {
        match self.request(bind).await?.pdu() {
            Some(Pdu::BindTransceiverResp(_)) => Ok(()),
            _ => Err(SmppError::Unexpected),
        }
    }

    /// submit_sm; returns the SMSC's message id.
    pub async fn submit_sm(&self, submit: SubmitSm) -> Result<String, SmppError> {
        match self.request(submit).await?.pdu() {
            Some(Pdu::SubmitSmResp(resp)) => Ok(resp.message_id().to_string()),
            _ => Err(SmppError::Unexpected),
        }
    }

    /// unbind and wait for unbind_resp (bounded by the response timeout), then close.
    pub async fn unbind(&self) {
        let _ = self.request(Pdu::Unbind).await;
        self.close();
    }
}

/// Writes queued PDUs, many per flush, until the session closes.
async fn write_loop(
    mut sink: FramedWrite<tokio::net::tcp::OwnedWriteHalf, FrameCodec>,
    mut queue: mpsc::UnboundedReceiver<Command>,
    closed: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            c = queue.recv() => c,
            _ = closed.cancelled() => None,
        };
        let Some(first) = first else {
            break;
        };
        // Let the tasks that are ready now queue their PDUs too, so that under load
        // one write carries several (fewer syscalls); when idle this costs one poll.
        tokio::task::yield_now().await;
        let mut ok = sink.feed(first).await.is_ok();
        let mut n = 1;
        while ok && n < WRITE_BATCH {
            match queue.try_recv() {
                Ok(c) => {
                    ok = sink.feed(c).await.is_ok();
                    n += 1;
                }
                Err(_) => break,
            }
        }
        if !ok || SinkExt::<Command>::flush(&mut sink).await.is_err() {
            break;
        }
    }
    closed.cancel();
}

/// Reads PDUs: responses complete their request, enquire_link is answered
/// here, everything else goes to the inbound channel.
async fn read_loop(
    mut stream: FramedRead<tokio::net::tcp::OwnedReadHalf, FrameCodec>,
    client: SmppClient,
    inbound: mpsc::Sender<Command>,
) {
    let closed = client.shared.closed.clone();
    loop {
        let next = tokio::select! {
            n = stream.next() => n,
            _ = closed.cancelled() => break,
        };
        let command = match next {
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "undecodable PDU from the SMSC; closing the session");
                break;
            }
            None => break,
        };
        let id = command.id();
        if id.is_response() || id == CommandId::GenericNack {
            let waiter = client.lock_pending().remove(&command.sequence_number());
            match waiter {
                Some(tx) => {
                    let _ = tx.send(command);
                }
                None => tracing::debug!(
                    ?id,
                    seq = command.sequence_number(),
                    "response nobody waits for (late)"
                ),
            }
            continue;
        }
        if matches!(command.pdu(), Some(Pdu::EnquireLink)) {
            client.respond(
                command.sequence_number(),
                CommandStatus::EsmeRok,
                Pdu::EnquireLinkResp,
            );
            continue;
        }
        let stop = tokio::select! {
            sent = inbound.send(command) => sent.is_err(),
            _ = closed.cancelled() => true,
        };
        if stop {
            break;
        }
    }
    client.close();
}

/// Sends enquire_link every interval; a missing answer ends the session.
async fn keepalive(client: SmppClient) {
    let every = client.shared.settings.enquire_link;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = client.closed() => return,
        }
        match client.request(Pdu::EnquireLink).await {
            // Any answer, even a refusal, shows the peer is there.
            Ok(_) | Err(SmppError::Status(_) | SmppError::GenericNack(_)) => {}
            Err(e) => {
                tracing::warn!(error = %e, "enquire_link failed; closing the session");
                client.close();
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame: the length prefix, then command_id, status, sequence, body.
    fn frame(id: u32, seq: u32, body: &[u8], length: usize) -> Vec<u8> {
        let mut f = (length as u32).to_be_bytes().to_vec();
        for word in [id, 0, seq] {
            f.extend_from_slice(&word.to_be_bytes());
        }
        f.extend_from_slice(body);
        f
    }

    fn decode_all(bytes: &[u8]) -> Vec<Result<Command, String>> {
        let mut codec = frame_codec();
        let mut src = BytesMut::from(bytes);
        let mut out = Vec::new();
        loop {
            match codec.decode(&mut src) {
                Ok(Some(c)) => out.push(Ok(c)),
                Ok(None) => return out,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
    }

    /// Found by the `smpp_frames` fuzz target: a deliver_sm whose
    /// sm_length (182) runs past its command_length (61) decoded the
    /// enquire_link after it as its text, when the two came in one read.
    #[test]
    fn a_pdu_never_reads_past_its_command_length() {
        let mut body = b"\0\x05\x01447400777888\0\x05\0ACME\0\x40\0\0\0\0\0\0\0\0".to_vec();
        body.push(182);
        body.extend_from_slice(&[b'x'; 20]);
        let length = 16 + body.len();
        let mut bytes = frame(0x05, 10, &body, length);
        let enquire = frame(0x15, 11, &[], 16);
        bytes.extend_from_slice(&enquire);
        bytes.extend_from_slice(&[b'y'; 200]);
        let out = decode_all(&bytes);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].is_err(), "{out:?}");
    }

    #[test]
    fn octets_a_pdu_leaves_over_are_dropped_and_the_next_pdu_is_read() {
        // An enquire_link with 4 stray octets, then an unbind.
        let mut bytes = frame(0x15, 7, &[1, 2, 3, 4], 20);
        bytes.extend_from_slice(&frame(0x06, 8, &[], 16));
        let out = decode_all(&bytes);
        let seqs: Vec<u32> = out
            .iter()
            .map(|c| c.as_ref().map(Command::sequence_number).unwrap_or(0))
            .collect();
        assert_eq!(seqs, [7, 8], "{out:?}");
        assert!(matches!(
            out[1].as_ref().map(Command::pdu),
            Ok(Some(Pdu::Unbind))
        ));
    }

    #[test]
    fn lengths_out_of_bounds_are_refused_and_partial_frames_wait() {
        assert!(decode_all(&frame(0x15, 1, &[], 15))[0].is_err());
        assert!(decode_all(&frame(0x15, 1, &[], 9000))[0].is_err());
        assert!(decode_all(&frame(0x15, 1, &[], 16)[..10]).is_empty());
        let whole = frame(0x06, 3, &[], 16);
        assert_eq!(decode_all(&whole).len(), 1);
    }
}
