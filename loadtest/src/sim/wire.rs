//! Bytes on the wire: the inbound frame decoder and the per-connection writer task.
//!
//! Inbound frames are split by command_length first and only then decoded by rusmpp, so a PDU
//! with a bad body costs one generic_nack instead of the connection. Outbound, one writer task
//! per connection encodes everything queued into one buffer and writes it with one syscall.

use std::{
    collections::VecDeque,
    io,
    sync::{Arc, atomic::Ordering},
};

use bytes::{Buf, BufMut, BytesMut};
use chrono::Utc;
use rusmpp::{Command, CommandStatus, decode::DecodeWithLength, tokio_codec::CommandCodec};
use tokio::{
    io::AsyncWriteExt,
    net::tcp::OwnedWriteHalf,
    sync::mpsc::{self, error::TryRecvError},
    time::{Instant, sleep_until},
};
use tokio_util::{
    codec::{Decoder, Encoder},
    sync::CancellationToken,
};

use super::{
    Shared,
    hub::Push,
    receipts::{self, Receipt},
    stats::bump,
};

/// SMPP command ids and statuses the simulator writes by number.
pub(crate) mod ids {
    pub const GENERIC_NACK: u32 = 0x8000_0000;
    pub const SUBMIT_SM_RESP: u32 = 0x8000_0004;
    pub const UNBIND: u32 = 0x0000_0006;
    pub const UNBIND_RESP: u32 = 0x8000_0006;
    pub const ENQUIRE_LINK_RESP: u32 = 0x8000_0015;

    pub const ESME_ROK: u32 = 0x00;
    pub const ESME_RINVCMDLEN: u32 = 0x02;
    pub const ESME_RINVCMDID: u32 = 0x03;
    pub const ESME_RINVBNDSTS: u32 = 0x04;
    pub const ESME_RSYSERR: u32 = 0x08;
    pub const ESME_RALYBND: u32 = 0x05;
    pub const ESME_RINVPASWD: u32 = 0x0E;
    pub const ESME_RINVSYSID: u32 = 0x0F;
    pub const ESME_RTHROTTLED: u32 = 0x58;
}

const HEADER_LEN: usize = 16;
/// Largest PDU accepted: a 64 KiB message_payload plus the submit_sm fields.
const MAX_PDU_LEN: usize = 70 * 1024;
/// Write as soon as this much is buffered, even if more is queued.
const HIGH_WATER: usize = 64 * 1024;

/// One inbound PDU.
// Moved once from the decoder to the session; boxing would cost an allocation per PDU for the
// sake of a variant that almost never occurs.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Inbound {
    Command(Command),
    /// The header was readable but the body did not decode.
    Undecodable {
        id: u32,
        status: u32,
        seq: u32,
    },
}

/// The stream cannot be resynchronised (or the socket failed).
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("invalid command_length {length}")]
    Length { length: usize, seq: u32 },
}

/// Splits the byte stream into PDUs by command_length, then decodes each with rusmpp.
#[derive(Debug, Default)]
pub(crate) struct InboundCodec;

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl Decoder for InboundCodec {
    type Item = Inbound;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Inbound>, FrameError> {
        if src.len() < HEADER_LEN {
            return Ok(None);
        }
        let length = be_u32(&src[0..4]) as usize;
        if !(HEADER_LEN..=MAX_PDU_LEN).contains(&length) {
            let seq = be_u32(&src[12..16]);
            return Err(FrameError::Length { length, seq });
        }
        if src.len() < length {
            src.reserve(length - src.len());
            return Ok(None);
        }
        let mut frame = src.split_to(length);
        let (id, status, seq) = (
            be_u32(&frame[4..8]),
            be_u32(&frame[8..12]),
            be_u32(&frame[12..16]),
        );
        frame.advance(4);
        Ok(Some(match Command::decode(&mut frame, length - 4) {
            Ok((command, _)) => Inbound::Command(command),
            Err(_) => Inbound::Undecodable { id, status, seq },
        }))
    }
}

/// What the session's reader hands to its writer.
#[derive(Debug)]
pub(crate) enum Out {
    /// A full PDU, encoded by rusmpp.
    Command(Box<Command>),
    /// A header-only PDU (error responses, enquire_link_resp, unbind, generic_nack...).
    Header { id: u32, status: u32, seq: u32 },
    /// A submit_sm_resp: held for `resp_delay`; its receipt is scheduled once it is written.
    SubmitResp {
        seq: u32,
        status: u32,
        message_id: Option<String>,
        receipt: Option<Arc<Receipt>>,
    },
}

struct Writer {
    shared: Arc<Shared>,
    buf: BytesMut,
    codec: CommandCodec,
    /// submit_sm_resp waiting for `resp_delay`. All share one delay, so FIFO order is due order.
    delayed: VecDeque<(Instant, Out)>,
    /// Receipts whose submit_sm_resp is in `buf`.
    written: Vec<Arc<Receipt>>,
}

impl Writer {
    fn take(&mut self, out: Out) {
        let delay = self.shared.cfg.resp_delay;
        if !delay.is_zero() && matches!(out, Out::SubmitResp { .. }) {
            self.delayed.push_back((Instant::now() + delay, out));
        } else {
            self.encode(out);
        }
    }

    fn encode(&mut self, out: Out) {
        match out {
            Out::Command(command) => self.encode_command(&command),
            Out::Header { id, status, seq } => put_header(&mut self.buf, 0, id, status, seq),
            Out::SubmitResp {
                seq,
                status,
                message_id,
                receipt,
            } => {
                match message_id.filter(|_| status == 0) {
                    Some(message_id) => {
                        let body = message_id.len() + 1;
                        put_header(&mut self.buf, body, ids::SUBMIT_SM_RESP, status, seq);
                        self.buf.put_slice(message_id.as_bytes());
                        self.buf.put_u8(0);
                    }
                    // Error responses carry no body (SMPP 3.4 §4.4.2).
                    None => put_header(&mut self.buf, 0, ids::SUBMIT_SM_RESP, status, seq),
                }
                if let Some(receipt) = receipt {
                    receipt.resp_written.store(true, Ordering::Relaxed);
                    // With receipt_before_resp its clock started at the submit_sm already.
                    if !self.shared.cfg.receipt_before_resp {
                        self.written.push(receipt);
                    }
                }
            }
        }
    }

    fn encode_command(&mut self, command: &Command) {
        // CommandCodec's encoder only fails on I/O, which a BytesMut cannot produce.
        let _ = self.codec.encode(command, &mut self.buf);
    }

    fn push(&mut self, push: Push) {
        match push {
            Push::Receipt { seq, receipt } => {
                let cfg = &self.shared.cfg;
                if !receipt.resp_written.load(Ordering::Relaxed) {
                    bump(&self.shared.counters.receipts_before_resp);
                }
                let pdu = receipt.deliver_sm(
                    Utc::now(),
                    cfg.receipt_tlvs,
                    cfg.receipt_text_id_format,
                    cfg.receipt_tlv_id_format,
                );
                self.encode_command(&Command::new(CommandStatus::EsmeRok, seq, pdu));
            }
            Push::Deliver { seq, pdu } => {
                self.encode_command(&Command::new(CommandStatus::EsmeRok, seq, *pdu));
            }
            Push::Command(command) => self.encode_command(&command),
        }
    }

    fn release_due(&mut self, all: bool) {
        let now = Instant::now();
        while self
            .delayed
            .front()
            .is_some_and(|(due, _)| all || *due <= now)
        {
            if let Some((_, out)) = self.delayed.pop_front() {
                self.encode(out);
            }
        }
    }

    /// Starts the receipt clock of every submit_sm_resp handed to the socket.
    fn schedule_written(&mut self) {
        for receipt in self.written.drain(..) {
            receipts::schedule(&self.shared, receipt);
        }
    }
}

fn put_header(buf: &mut BytesMut, body_len: usize, id: u32, status: u32, seq: u32) {
    buf.reserve(HEADER_LEN + body_len);
    buf.put_u32((HEADER_LEN + body_len) as u32);
    buf.put_u32(id);
    buf.put_u32(status);
    buf.put_u32(seq);
}

/// The writer task of one connection. Waits for work, then drains everything already queued
/// (up to [`HIGH_WATER`]) into one buffer and writes it at once. Ends when the reader drops its
/// sender (after flushing), when the socket fails, or at once when the session is killed.
pub(crate) async fn write_loop(
    shared: Arc<Shared>,
    mut wr: OwnedWriteHalf,
    mut out_rx: mpsc::Receiver<Out>,
    mut push_rx: mpsc::UnboundedReceiver<Push>,
    kill: CancellationToken,
) {
    let mut w = Writer {
        shared,
        buf: BytesMut::with_capacity(HIGH_WATER),
        codec: CommandCodec::new(),
        delayed: VecDeque::new(),
        written: Vec::new(),
    };
    let killed = kill.cancelled();
    tokio::pin!(killed);
    let (mut out_open, mut push_open) = (true, true);
    loop {
        if !out_open && w.delayed.is_empty() {
            // The reader is gone and everything it queued has been written.
            break;
        }
        if w.buf.is_empty() {
            let next_due = w.delayed.front().map(|(due, _)| *due);
            tokio::select! {
                biased;
                _ = &mut killed => break,
                msg = out_rx.recv(), if out_open => match msg {
                    Some(out) => w.take(out),
                    None => out_open = false,
                },
                msg = push_rx.recv(), if push_open => match msg {
                    Some(push) => w.push(push),
                    None => push_open = false,
                },
                _ = sleep_until(next_due.unwrap_or_else(Instant::now)), if next_due.is_some() => {}
                else => break,
            }
        }
        while out_open && w.buf.len() < HIGH_WATER {
            match out_rx.try_recv() {
                Ok(out) => w.take(out),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => out_open = false,
            }
        }
        while push_open && w.buf.len() < HIGH_WATER {
            match push_rx.try_recv() {
                Ok(push) => w.push(push),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => push_open = false,
            }
        }
        // Once the reader is gone nobody waits for the delay any more: flush what is held.
        w.release_due(!out_open);
        if w.buf.is_empty() {
            continue;
        }
        let written = tokio::select! {
            biased;
            _ = &mut killed => false,
            result = wr.write_all(&w.buf) => result.is_ok(),
        };
        w.buf.clear();
        w.schedule_written();
        if !written {
            break;
        }
    }
    // Accepted submits still owe their receipts even if their resp never made it out.
    out_rx.close();
    while let Ok(out) = out_rx.try_recv() {
        w.take(out);
    }
    w.release_due(true);
    w.schedule_written();
    if !kill.is_cancelled() {
        let _ = wr.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusmpp::{CommandId, Pdu};

    fn header(len: u32, id: u32, seq: u32) -> Vec<u8> {
        [len, id, 0, seq]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect()
    }

    #[test]
    fn decoder_splits_frames_and_survives_a_bad_body() {
        let mut src = BytesMut::new();
        // enquire_link, then a submit_sm whose body is 3 garbage bytes, then enquire_link.
        src.extend_from_slice(&header(16, 0x15, 1));
        src.extend_from_slice(&header(19, 0x04, 2));
        src.extend_from_slice(&[0xFF, 0xFF, 0xFF]);
        src.extend_from_slice(&header(16, 0x15, 3));
        let mut codec = InboundCodec;
        let first = codec.decode(&mut src).expect("frame").expect("complete");
        assert!(matches!(first, Inbound::Command(c) if c.id() == CommandId::EnquireLink));
        let second = codec.decode(&mut src).expect("frame").expect("complete");
        assert!(matches!(
            second,
            Inbound::Undecodable {
                id: 0x04,
                seq: 2,
                ..
            }
        ));
        let third = codec.decode(&mut src).expect("frame").expect("complete");
        assert!(matches!(third, Inbound::Command(c) if c.sequence_number() == 3));
        assert!(codec.decode(&mut src).expect("no error").is_none());
    }

    #[test]
    fn decoder_rejects_impossible_lengths() {
        let mut src = BytesMut::from(&header(8, 0x15, 9)[..]);
        assert!(matches!(
            InboundCodec.decode(&mut src),
            Err(FrameError::Length { length: 8, seq: 9 })
        ));
    }

    #[test]
    fn hand_encoded_submit_sm_resp_decodes_with_rusmpp() {
        let mut buf = BytesMut::new();
        put_header(&mut buf, 5, ids::SUBMIT_SM_RESP, 0, 7);
        buf.put_slice(b"abcd\0");
        let command = rusmpp::tokio_codec::CommandCodec::new()
            .decode(&mut buf)
            .expect("decodes")
            .expect("complete");
        assert_eq!(command.sequence_number(), 7);
        match command.pdu() {
            Some(Pdu::SubmitSmResp(resp)) => assert_eq!(resp.message_id().as_str(), "abcd"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
