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

use futures::{SinkExt, StreamExt};
use rusmpp::pdus::{BindTransceiver, SubmitSm};
use rusmpp::tokio_codec::CommandCodec;
use rusmpp::{Command, CommandStatus, Pdu};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

/// Most PDUs written with one flush.
const WRITE_BATCH: usize = 256;

/// Capacity of the inbound (SMSC-initiated PDU) channel. When it is full the
/// reader stops reading, which is SMPP's only back-pressure towards the SMSC.
const INBOUND_CAPACITY: usize = 1024;

/// The codec that frames PDUs on the socket, both ways: rusmpp's
/// length-prefixed `CommandCodec` with its default 8 KiB most per PDU.
pub(crate) fn frame_codec() -> CommandCodec {
    CommandCodec::new()
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
            Ok(Ok(resp)) => match (resp.status(), resp.pdu()) {
                (status, Some(Pdu::GenericNack)) => Err(SmppError::GenericNack(status)),
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
    mut sink: FramedWrite<tokio::net::tcp::OwnedWriteHalf, CommandCodec>,
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
    mut stream: FramedRead<tokio::net::tcp::OwnedReadHalf, CommandCodec>,
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
        if id.is_response() || matches!(command.pdu(), Some(Pdu::GenericNack)) {
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
