//! Fuzzing entry points (cargo feature `fuzzing`), one per cargo-fuzz target
//! in `tests/fuzz/fuzz_targets/` (see `docs/fuzzing.md`).
//!
//! Each function takes the fuzzer's bytes and feeds them to the code the
//! gateway runs on untrusted input: the SMPP frame reader and PDU decoder,
//! delivery receipts, MO reassembly, the text encoders and decoders, the
//! HTTP send and batch bodies, and the countries file. None of them panics
//! on any input unless an invariant it states breaks: a panic here is a
//! finding, and each finding becomes a unit test in the module it is in.

use std::io;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use rusmpp::decode::DecodeWithLength;
use rusmpp::pdus::DeliverSm;
use rusmpp::types::{COctetString, OctetString};
use rusmpp::values::{DataCoding, EsmClass};
use rusmpp::{Command, Pdu};
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::codec::{Decoder, Encoder, FramedRead};

use crate::api::messages::{self, SendRequest};
use crate::api::{batch, json};
use crate::carrier::pdu;
use crate::carrier::profile::{
    CarrierProfile, DefaultAlphabet, Gsm7Packing, IdFormat, LongMessages, pack_septets,
    unpack_septets,
};
use crate::carrier::smpp::frame_codec;
use crate::compliance::rules::RuleBook;
use crate::compliance::{Admission, Submission};
use crate::config::MessagesConfig;
use crate::dlr::ids::{IdMatcher, Source};
use crate::dlr::mo::{MoPart, Reassembler};
use crate::dlr::receipt::{self, Receipt, ReceiptState};
use crate::encoding::{self, Encoding, MAX_SEGMENTS};
use crate::message::{Kind, Message, NewMessage};

/// The countries file the gateway ships, for the targets that admit messages.
const COUNTRIES: &str = include_str!("../config/countries.toml");

/// Target `smpp_pdu`: a PDU as the codec hands it to rusmpp after the
/// length prefix (header and body), decoded as the session decodes it. A
/// decoded PDU re-encodes and decodes to the same value, and a deliver_sm
/// goes through the DLR stage's readers.
pub fn smpp_pdu(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    let Ok((command, _)) = <Command as DecodeWithLength>::decode(&mut buf, data.len()) else {
        return;
    };
    assert_round_trip(&command);
    inbound(&command);
}

/// Target `smpp_frames`: bytes as they arrive on the SMPP socket, read by the
/// session's frame reader (`FramedRead` with the session's codec: length
/// prefix, bounds, then the PDU). The first byte sets how the stream is cut
/// into reads; the PDUs read (up to the first error, where the session
/// closes) do not depend on it. Every PDU read goes on as in the session.
pub fn smpp_frames(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let whole = read_frames(stream, &[usize::MAX]);
    let seed = usize::from(seed);
    let cuts = [seed % 17 + 1, seed / 17 + 1, 1, seed + 1];
    let chunked = read_frames(stream, &cuts);
    assert_eq!(whole, chunked, "frames depend on how the reads were cut");
    for command in &whole.0 {
        assert_round_trip(command);
        inbound(command);
    }
}

/// Target `dlr_receipt`: the bytes as a receipt text (lossy UTF-8), then as
/// a deliver_sm: with an even first byte the rest is a deliver_sm body
/// decoded by rusmpp (TLVs included), with an odd one a deliver_sm whose
/// esm_class, data_coding and short_message (or message_payload) come from
/// the rest.
pub fn dlr_receipt(data: &[u8]) {
    if let Ok(r) = receipt::parse_text(&String::from_utf8_lossy(data)) {
        check_receipt(&r);
    }
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let d = if mode & 1 == 0 {
        let mut buf = BytesMut::from(rest);
        match <DeliverSm as DecodeWithLength>::decode(&mut buf, rest.len()) {
            Ok((d, _)) => d,
            Err(_) => return,
        }
    } else {
        let [esm, dc, body @ ..] = rest else {
            return;
        };
        built_deliver_sm(*esm, *dc, body, mode & 2 != 0)
    };
    let _ = receipt::is_receipt(&d);
    let _ = receipt::user_data(&d);
    if let Ok(r) = receipt::parse_deliver_sm(&d) {
        check_receipt(&r);
    }
}

/// Target `mo_reassembly`: a run of MO deliver_sm parts, each
/// `[flags, esm_class, data_coding, length, short_message...]`, read with
/// the carrier profile the first byte picks and put together as the DLR
/// stage does (flags: bit 0 a second sender, bits 1-2 time passing, which
/// hands incomplete messages on). Every message handed on had a part in.
pub fn mo_reassembly(data: &[u8]) {
    let Some((&which, mut rest)) = data.split_first() else {
        return;
    };
    let profile = &profiles()[usize::from(which) % 4];
    let carrier: Arc<str> = Arc::from("fuzz");
    let wait = profile.mo_reassembly();
    let mut reassembler = Reassembler::default();
    let start = tokio::time::Instant::now();
    let mut now = start;
    let (mut parts_in, mut messages_out) = (0usize, 0usize);
    while let [flags, esm, dc, len, tail @ ..] = rest {
        let (sm, next) = tail.split_at(usize::from(*len).min(tail.len()));
        rest = next;
        let mut d = built_deliver_sm(*esm, *dc, sm, false);
        if flags & 1 != 0 {
            d.source_addr = address("447400999000");
        }
        now += Duration::from_secs(u64::from(flags >> 1 & 3)) * 30;
        let part = MoPart::read(&d, profile);
        match part.part_of {
            Some(of) => {
                assert!(of.total > 1 && (1..=of.total).contains(&of.seq));
                parts_in += 1;
                messages_out += usize::from(reassembler.add(&carrier, part, wait, now).is_some());
            }
            None => drop(part.into_message()),
        }
        messages_out += reassembler.expired(now).len();
    }
    messages_out += reassembler.drain().len();
    assert!(messages_out <= parts_in, "more messages than parts");
    assert!(reassembler.next_deadline().is_none(), "drained but waiting");
}

/// Target `encoding`: the first byte is a data_coding (and the fill bits),
/// the rest a payload for `decode`, `split_udh` and septet packing, and a
/// text (lossy UTF-8) to plan, encode and decode back, and to build the
/// submit_sm PDUs of in every carrier dialect.
pub fn encoding(data: &[u8]) {
    let Some((&dc, payload)) = data.split_first() else {
        return;
    };
    let _ = encoding::decode(dc, payload);
    if let Some((udh, rest, concat)) = encoding::split_udh(payload) {
        assert_eq!(udh.len() + rest.len(), payload.len());
        if let Some(c) = concat {
            assert!(c.total > 0 && (1..=c.total).contains(&c.seq));
        }
    }
    let septets: Vec<u8> = payload.iter().map(|b| b & 0x7F).collect();
    let fill = u32::from(dc % 7);
    let unpacked = unpack_septets(&pack_septets(&septets, fill), fill);
    // A last '@' or CR at an octet boundary reads as padding (23.038 6.1.2.3.1).
    if !matches!(septets.last(), Some(0x00 | 0x0D)) {
        assert_eq!(unpacked, septets, "packed septets do not unpack");
    }
    let text = String::from_utf8_lossy(payload);
    let plan = encoding::plan(&text);
    match encoding::encode(&text, plan, dc) {
        Ok(parts) => {
            assert_eq!(parts.len() as u32, plan.segments);
            let mut joined = Vec::new();
            for (i, part) in parts.iter().enumerate() {
                assert_eq!(part.udhi, plan.segments > 1);
                let body = if part.udhi {
                    let (_, body, concat) =
                        encoding::split_udh(&part.short_message).expect("a part's UDH is whole");
                    let c = concat.expect("a part's UDH is a concatenation UDH");
                    assert_eq!((c.total, c.seq), (parts.len() as u8, i as u8 + 1));
                    body
                } else {
                    &part.short_message[..]
                };
                joined.extend_from_slice(body);
            }
            assert_eq!(encoding::decode(plan.encoding.data_coding(), &joined), text);
        }
        Err(e) => assert!(plan.segments > MAX_SEGMENTS, "planned text refused: {e}"),
    }
    if plan.segments > MAX_SEGMENTS {
        return;
    }
    let _ = pdu::address_for(&text);
    let now = fixed_now();
    let message = Message::new(
        NewMessage {
            account: "fuzz".into(),
            to: "+447400123456".into(),
            country: "GB".into(),
            from: "ACME".into(),
            text: text.into_owned(),
            kind: Kind::Transactional,
            encoding: plan.encoding,
            segments: plan.segments,
            client_ref: None,
            callback_url: None,
            send_at: None,
            expires_at: now + chrono::Duration::hours(1),
            opt_out_exempt: false,
        },
        now,
        dc,
    );
    submit_in_every_dialect(&message, now);
}

/// Target `api_send`: a `POST /v1/messages` body, parsed as the handler
/// parses it (it re-serialises to a body that parses the same), checked and
/// admitted under the shipped countries file; an admitted message's PDUs
/// build in every carrier dialect.
pub fn api_send(data: &[u8]) {
    let Ok(req) = json::parse::<SendRequest>(data) else {
        return;
    };
    let value = serde_json::to_value(&req).expect("a parsed request serialises");
    let again: SendRequest =
        json::parse(&serde_json::to_vec(&value).expect("a JSON value serialises"))
            .expect("a re-serialised request parses");
    assert_eq!(serde_json::to_value(&again).ok(), Some(value));
    admit(req, Some("ACME"));
}

/// Target `api_batch`: a `POST /v1/messages/batch` body, parsed, counted and
/// each message read as the handler reads them, then checked and admitted as
/// in `api_send` (the account has no default sender).
pub fn api_batch(data: &[u8]) {
    let Ok(req) = json::parse::<batch::BatchRequest>(data) else {
        return;
    };
    if batch::check_count(&req).is_err() {
        return;
    }
    for (index, value) in req.messages.into_iter().enumerate() {
        if let Ok(req) = batch::message_request(index, value) {
            admit(req, None);
        }
    }
}

/// Target `countries`: the bytes as a countries file (skipped unless UTF-8,
/// as the gateway refuses to read such a file); rules that parse decide a
/// few submissions.
pub fn countries(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(rules) = RuleBook::parse(text) else {
        return;
    };
    let codes: Vec<String> = rules.countries().map(str::to_owned).collect();
    for code in &codes {
        assert!(rules.for_country(code).is_some());
    }
    let admission = Admission::new(MessagesConfig::default());
    admission.set_rules(rules);
    let now = fixed_now();
    for (to, kind) in [
        ("+447400123456", Kind::Marketing),
        ("+33612345678", Kind::Transactional),
        ("+14155550123", Kind::Otp),
    ] {
        let _ = admission.admit(submission(to, "ACME", "Your code is 123456", kind), now);
    }
}

/// 2026-01-01T10:00:00Z: a fixed clock keeps findings reproducible.
fn fixed_now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_261_600, 0).unwrap_or_default()
}

/// A deliver_sm with these fields and `body` in short_message (at most 255
/// octets) or in message_payload.
fn built_deliver_sm(esm: u8, dc: u8, body: &[u8], payload: bool) -> DeliverSm {
    let mut b = DeliverSm::builder()
        .source_addr(address("447400777888"))
        .destination_addr(address("ACME"))
        .esm_class(EsmClass::from(esm))
        .data_coding(DataCoding::from(dc));
    if payload {
        b = b.push_tlv(
            rusmpp::tlvs::MessageDeliveryRequestTlvValue::MessagePayload(
                rusmpp::values::MessagePayload::new(rusmpp::types::AnyOctetString::from_slice(
                    body,
                )),
            ),
        );
    } else {
        let sm = &body[..body.len().min(255)];
        b = b.short_message(OctetString::from_vec(sm.to_vec()).unwrap_or_default());
    }
    b.build()
}

/// An SMPP address field.
fn address(addr: &str) -> COctetString<1, 21> {
    COctetString::from_str(addr).unwrap_or_default()
}

/// The carrier dialects that read and write text differently.
fn profiles() -> [CarrierProfile; 4] {
    let with = |f: fn(&mut CarrierProfile)| {
        let mut p = CarrierProfile::default();
        f(&mut p);
        p
    };
    [
        CarrierProfile::default(),
        with(|p| {
            p.gsm7 = Gsm7Packing::Packed;
            p.long_messages = LongMessages::Sar;
            p.receipt_id = IdFormat::Auto;
        }),
        with(|p| {
            p.data_coding_0 = DefaultAlphabet::Latin1;
            p.long_messages = LongMessages::Payload;
            p.submit_id = IdFormat::Hex;
        }),
        with(|p| {
            p.gsm7 = Gsm7Packing::Packed;
            p.long_messages = LongMessages::Payload;
            p.receipt_id = IdFormat::Decimal;
        }),
    ]
}

/// Encodes `command` with the session's codec and decodes it back: one
/// whole frame, the same PDU.
fn assert_round_trip(command: &Command) {
    let mut out = BytesMut::new();
    if frame_codec().encode(command, &mut out).is_err() || out.len() > 8192 {
        return;
    }
    let len = out.len();
    let back = frame_codec().decode(&mut out);
    match back {
        // rusmpp reads a body-less PDU with stray octets as no PDU; it
        // writes back the header alone, which reads as the PDU.
        Ok(Some(back)) if command.pdu().is_none() => {
            assert_eq!(
                (back.id(), back.status(), back.sequence_number()),
                (command.id(), command.status(), command.sequence_number())
            );
        }
        Ok(Some(back)) => assert_eq!(&back, command, "PDU changed in a round trip"),
        // rusmpp decodes some values it cannot write back in a readable
        // form (a TLV's C-string shorter than its minimum, found by this
        // target: a bind_transceiver_resp with sc_interface_version). The
        // gateway never re-encodes a PDU it read, so that is rusmpp's
        // asymmetry, not ours: only a frame that does not come back whole
        // is a defect of the codec.
        Err(_) => return,
        Ok(None) => panic!("an encoded PDU ({len} octets) is not a whole frame"),
    }
    assert!(out.is_empty(), "a round trip left octets behind");
}

/// What the session and the DLR stage do with a PDU the SMSC sent: responses
/// go to their request, a deliver_sm is read as a receipt or an MO part.
fn inbound(command: &Command) {
    if command.id().is_response() {
        return;
    }
    let Some(Pdu::DeliverSm(d)) = command.pdu() else {
        return;
    };
    if receipt::is_receipt(d) {
        if let Ok(r) = receipt::parse_deliver_sm(d) {
            check_receipt(&r);
        }
        return;
    }
    for profile in &profiles() {
        let part = MoPart::read(d, profile);
        if part.part_of.is_none() {
            drop(part.into_message());
        }
    }
}

/// A parsed receipt: an id with no spaces, a state that reads back, and the
/// id forms every id format looks up.
fn check_receipt(r: &Receipt) {
    assert!(!r.smsc_message_id.is_empty(), "empty receipt id");
    assert!(!r.smsc_message_id.contains(char::is_whitespace) || r.tlv_id.is_some());
    assert_eq!(ReceiptState::from_stat(r.state.as_stat()), Some(r.state));
    let _ = r.error_detail();
    for profile in &profiles() {
        let ids = IdMatcher::new(profile);
        let _ = ids.candidates(&r.smsc_message_id, Source::Text);
        let _ = ids.first_choices(&r.smsc_message_id, Source::Tlv);
    }
}

/// The PDUs of every segment of `m` in every dialect: they build (the text
/// was planned), and each survives the codec.
fn submit_in_every_dialect(m: &Message, now: DateTime<Utc>) {
    let all: Vec<u32> = (0..m.segments.len() as u32).collect();
    for profile in &profiles() {
        let pdus = pdu::submit_sms_for(m, &all, now, profile).expect("a planned text builds");
        assert!(!pdus.is_empty());
        for part in pdus {
            assert_round_trip(&Command::new(rusmpp::CommandStatus::EsmeRok, 1, part.pdu));
        }
    }
}

/// Admission under the shipped countries file (built once).
fn admission() -> &'static Admission {
    static ADMISSION: OnceLock<Admission> = OnceLock::new();
    ADMISSION.get_or_init(|| {
        let admission = Admission::new(MessagesConfig::default());
        if let Ok(rules) = RuleBook::parse(COUNTRIES) {
            admission.set_rules(rules);
        }
        admission
    })
}

/// A submission of account `fuzz`.
fn submission(to: &str, from: &str, text: &str, kind: Kind) -> Submission {
    Submission {
        account: "fuzz".into(),
        to: to.into(),
        from: from.into(),
        text: text.into(),
        kind,
        validity_s: None,
        send_at: None,
        client_ref: None,
        callback_url: None,
        keyword_reply: false,
    }
}

/// A parsed send body through the handler's checks and admission; an
/// admitted message's PDUs build.
fn admit(mut req: SendRequest, default_from: Option<&str>) {
    let default_from = default_from.map(str::to_owned);
    let Ok(from) = messages::checked_from(&mut req, default_from.as_ref()) else {
        return;
    };
    let now = fixed_now();
    let s = Submission {
        validity_s: req.validity_s,
        send_at: req.send_at,
        client_ref: req.client_ref,
        callback_url: req.callback_url,
        ..submission(
            &req.to,
            &from,
            &req.text,
            req.kind.unwrap_or(Kind::Transactional),
        )
    };
    if let Ok(new) = admission().admit(s, now) {
        assert!(new.segments <= MAX_SEGMENTS);
        assert_eq!(
            new.encoding == Encoding::Ucs2,
            new.encoding.data_coding() == 8
        );
        submit_in_every_dialect(&Message::new(new, now, 7), now);
    }
}

/// The PDUs the session's frame reader yields from `stream` cut into reads
/// of the given sizes (cycled), and the error that ended it, if any.
fn read_frames(stream: &[u8], cuts: &[usize]) -> (Vec<Command>, Option<String>) {
    let reader = Cuts {
        data: stream,
        cuts,
        next: 0,
    };
    let mut frames = FramedRead::new(reader, frame_codec());
    futures::executor::block_on(async {
        let mut commands = Vec::new();
        while let Some(next) = frames.next().await {
            match next {
                Ok(c) => commands.push(c),
                Err(e) => return (commands, Some(e.to_string())),
            }
        }
        (commands, None)
    })
}

/// An in-memory socket that hands out its bytes in reads of given sizes.
struct Cuts<'a> {
    data: &'a [u8],
    cuts: &'a [usize],
    next: usize,
}

impl AsyncRead for Cuts<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let cut = self.cuts.get(self.next % self.cuts.len().max(1)).copied();
        let n = cut
            .unwrap_or(1)
            .max(1)
            .min(buf.remaining())
            .min(self.data.len());
        let (now, later) = self.data.split_at(n);
        buf.put_slice(now);
        self.data = later;
        self.next += 1;
        Poll::Ready(Ok(()))
    }
}
