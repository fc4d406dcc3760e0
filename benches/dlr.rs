//! Delivery receipts: parse a deliver_sm receipt
//! (`smsgate::dlr::receipt::parse_deliver_sm`) and correlate its SMSC id with
//! the message it belongs to through the public store API
//! (`Store::find_by_smsc_id`), with 1,000,000 submitted messages indexed by
//! SMSC id (`smsgate::queue::MemoryStore`; the durable store answers this
//! lookup from the same in-memory index, so the number holds for it too).
//!
//! The receipts look like `smsc-sim`'s: 16-hex-digit ids, the SMPP 3.4
//! appendix B text plus the receipted_message_id / message_state TLVs, or the
//! text alone. 4,096 distinct receipts for random messages are cycled, so the
//! lookups hit all over the index rather than one hot entry.
//!
//! Unit: one receipt; criterion's "thrpt" line is receipts/s.
//! - `dlr/parse_tlvs_and_text`, `dlr/parse_text_only`: `parse_deliver_sm` on a decoded PDU.
//! - `dlr/correlate_1m_hit`, `dlr/correlate_1m_miss`: one `find_by_smsc_id` (the carrier
//!   profile's default `exact` id form: one lookup per receipt).
//! - `dlr/decode_parse_correlate_1m`: the bind's and DLR stage's CPU work for one receipt
//!   from wire bytes: rusmpp decode, `is_receipt`, parse, lookup. Applying the
//!   transition and committing it (the store's group commit) is not included; see
//!   `store_accept` for the commit cost.
//!
//! Setup builds the 1,000,000-message index first (about 10 s and ~1.7 GB of memory).
//!
//! Run: `cargo bench --bench dlr`
//! (quicker: `cargo bench --bench dlr -- --warm-up-time 1 --measurement-time 3`)

use std::hint::black_box;
use std::str::FromStr;
use std::sync::Arc;

use bytes::BytesMut;
use chrono::Utc;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::FutureExt;
use rusmpp::pdus::DeliverSm;
use rusmpp::tlvs::MessageDeliveryRequestTlvValue;
use rusmpp::tokio_codec::CommandCodec;
use rusmpp::types::{COctetString, OctetString};
use rusmpp::values::{DataCoding, EsmClass, MessageState, Npi, Ton};
use rusmpp::{Command, CommandStatus, Pdu};
use tokio_util::codec::{Decoder, Encoder};

use smsgate::dlr::receipt::{self, ReceiptState};
use smsgate::encoding::Encoding;
use smsgate::message::{Kind, Message, MessageId, NewMessage, Transition};
use smsgate::queue::{MemoryStore, Store};

const INDEXED: u64 = 1_000_000;
const RECEIPTS: usize = 4096;
const CARRIER: &str = "sim";
/// SMSC ids start here (smsc-sim's ids are 16 hex digits, the first a letter).
const ID_BASE: u64 = 0xa000_0000_0000_0000;

fn smsc_id(n: u64) -> String {
    format!("{:016x}", ID_BASE + n)
}

/// A submitted single-part message whose segment 0 the SMSC accepted as `smsc_id(n)`.
fn submitted(n: u64) -> Message {
    let now = Utc::now();
    let mut m = Message::new(
        NewMessage {
            account: format!("account-{}", n % 10),
            to: format!("+4474{:08}", n % 100_000_000),
            country: "GB".into(),
            from: "ACME".into(),
            text: "Your code is 123456. It expires in 5 minutes.".into(),
            kind: Kind::Transactional,
            encoding: Encoding::Gsm7,
            segments: 1,
            client_ref: None,
            callback_url: None,
            send_at: None,
            expires_at: now + chrono::Duration::hours(6),
            opt_out_exempt: false,
        },
        now,
        (n % 256) as u8,
    );
    m.apply(&Transition::SegmentAccepted {
        carrier: CARRIER.into(),
        segment: 0,
        smsc_id: smsc_id(n),
        at: now,
    });
    m
}

/// A receipt as smsc-sim sends it (appendix B text; TLVs unless `text_only`).
fn deliver_sm(id: &str, text_only: bool) -> DeliverSm {
    let text = format!(
        "id:{id} sub:001 dlvrd:001 submit date:2611241100 done date:2611241100 stat:DELIVRD err:000 text:Your code is 123456"
    );
    let mut pdu = DeliverSm::builder()
        .source_addr_ton(Ton::International)
        .source_addr_npi(Npi::Isdn)
        .source_addr(COctetString::from_str("447400123456").expect("addr"))
        .dest_addr_ton(Ton::Alphanumeric)
        .dest_addr_npi(Npi::Unknown)
        .destination_addr(COctetString::from_str("ACME").expect("addr"))
        .esm_class(EsmClass::from(0x04))
        .data_coding(DataCoding::McSpecific)
        .short_message(OctetString::from_vec(text.into_bytes()).expect("fits"))
        .build();
    if !text_only {
        pdu.push_tlv(MessageDeliveryRequestTlvValue::ReceiptedMessageId(
            COctetString::from_str(id).expect("id"),
        ));
        pdu.push_tlv(MessageDeliveryRequestTlvValue::MessageState(
            MessageState::Delivered,
        ));
    }
    pdu
}

/// 1,000,000 submitted messages indexed by SMSC id, appended in batches as the gateway does.
fn indexed_store() -> Arc<MemoryStore> {
    let store = Arc::new(MemoryStore::new());
    let mut n = 0;
    while n < INDEXED {
        let batch: Vec<Message> = (n..(n + 10_000).min(INDEXED)).map(submitted).collect();
        n += batch.len() as u64;
        store
            .append(batch, None)
            .now_or_never()
            .expect("the memory store answers at once")
            .expect("append");
    }
    store
}

fn lookup(store: &MemoryStore, id: &str) -> Option<(MessageId, u32)> {
    store
        .find_by_smsc_id(CARRIER, id)
        .now_or_never()
        .expect("the memory store answers at once")
        .expect("lookup")
}

fn dlr(c: &mut Criterion) {
    let store = indexed_store();
    // Spread over the whole index (a fixed LCG: the same receipts every run).
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let picks: Vec<u64> = (0..RECEIPTS)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 33) % INDEXED
        })
        .collect();
    let ids: Vec<String> = picks.iter().map(|&n| smsc_id(n)).collect();
    let unknown: Vec<String> = (0..RECEIPTS as u64).map(|n| smsc_id(INDEXED + n)).collect();
    let with_tlvs: Vec<DeliverSm> = ids.iter().map(|id| deliver_sm(id, false)).collect();
    let text_only: Vec<DeliverSm> = ids.iter().map(|id| deliver_sm(id, true)).collect();
    let mut codec = CommandCodec::new();
    let wire: Vec<BytesMut> = with_tlvs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let mut out = BytesMut::new();
            let command = Command::new(CommandStatus::EsmeRok, i as u32 + 1, d.clone());
            codec.encode(command, &mut out).expect("encodes");
            out
        })
        .collect();

    // Sanity: every benched receipt parses and finds its message.
    for (i, d) in with_tlvs.iter().enumerate() {
        let r = receipt::parse_deliver_sm(d).expect("parses");
        assert_eq!(r.state, ReceiptState::Delivered);
        assert!(lookup(&store, &r.smsc_message_id).is_some(), "{i} indexed");
        let t = receipt::parse_deliver_sm(&text_only[i]).expect("parses");
        assert_eq!(t.smsc_message_id, ids[i]);
    }
    assert!(lookup(&store, &unknown[0]).is_none());

    let mut group = c.benchmark_group("dlr");
    group.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    let mut next = move || {
        i = (i + 1) % RECEIPTS;
        i
    };
    group.bench_function("parse_tlvs_and_text", |b| {
        b.iter(|| receipt::parse_deliver_sm(black_box(&with_tlvs[next()])))
    });
    group.bench_function("parse_text_only", |b| {
        b.iter(|| receipt::parse_deliver_sm(black_box(&text_only[next()])))
    });
    group.bench_function("correlate_1m_hit", |b| {
        b.iter(|| lookup(&store, black_box(&ids[next()])))
    });
    group.bench_function("correlate_1m_miss", |b| {
        b.iter(|| lookup(&store, black_box(&unknown[next()])))
    });
    group.bench_function("decode_parse_correlate_1m", |b| {
        b.iter(|| {
            let mut bytes = wire[next()].clone();
            let command = codec
                .decode(black_box(&mut bytes))
                .expect("decodes")
                .expect("a whole PDU");
            let Some(Pdu::DeliverSm(d)) = command.pdu() else {
                panic!("a deliver_sm");
            };
            assert!(receipt::is_receipt(d));
            let r = receipt::parse_deliver_sm(d).expect("parses");
            lookup(&store, &r.smsc_message_id).expect("found")
        })
    });
    group.finish();
}

criterion_group!(benches, dlr);
criterion_main!(benches);
