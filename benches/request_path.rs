//! The CPU path of one `POST /v1/messages`, minus HTTP and the store: the
//! request body's JSON parsed into `smsgate::api::messages::SendRequest`
//! (serde), admitted by `smsgate::compliance::Admission` with the shipped
//! `config/countries.toml` and preference lists (as the gateway runs it), made
//! into a `Message` (id, segments), then turned into its submit_sm PDU(s) by
//! `smsgate::carrier::pdu::submit_sms` (the default carrier profile) and
//! encoded to wire bytes with rusmpp's codec (what a bind writes to the
//! socket).
//!
//! Unit: one message (all its parts' PDUs included); criterion's "thrpt" line
//! is messages/s. Group `request_path` runs the whole path for a GB OTP, a
//! 3-part UCS-2 transactional and an FR marketing message (consent recorded,
//! opt-out wording present, inside the quiet-hours window, so every rule
//! runs); group `request_path_stage` splits the GB OTP into its stages
//! (`2a_parse_recipient` is the number-parsing part of `2_admit`).
//!
//! `parse_recipient` caches its answers per input, and every case here repeats its
//! recipient, so the `request_path` cases and `2a`/`2_admit` are the repeat-recipient
//! (cache hit) cost. `2b_parse_recipient_uncached` is libphonenumber alone (what a hit
//! saves) and `2c_parse_recipient_new_numbers` a stream of first-time numbers (a miss:
//! libphonenumber plus the cache insert and eviction); `2d_parse_recipient_uncached_mix`
//! is libphonenumber over one mobile of each shipped country in turn.
//!
//! Run: `cargo bench --bench request_path`
//! (quicker: `cargo bench --bench request_path -- --warm-up-time 1 --measurement-time 3`)

use std::hint::black_box;
use std::sync::Arc;

use bytes::BytesMut;
use chrono::{DateTime, Utc};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rusmpp::tokio_codec::CommandCodec;
use rusmpp::{Command, CommandStatus};
use tokio_util::codec::Encoder;

use smsgate::api::messages::SendRequest;
use smsgate::carrier::pdu;
use smsgate::compliance::preferences::Source;
use smsgate::compliance::{
    Admission, Preferences, RuleBook, Submission, parse_recipient, parse_recipient_uncached,
};
use smsgate::config::MessagesConfig;
use smsgate::message::{Kind, Message};
use smsgate::queue::{MemoryStore, PreferenceKind};

const ACCOUNT: &str = "bench";

const GB_OTP: &str = r#"{"to":"+447400123456","from":"ACME","text":"Your code is 123456. It expires in 5 minutes.","kind":"otp","client_ref":"login-8842"}"#;

const FR_MARKETING: &str = r#"{"to":"+33612345678","from":"ACME","text":"Soldes ! Jusqu'à -50 % ce week-end. STOP au 36180","kind":"marketing"}"#;

/// A Tuesday noon in Paris: inside every shipped quiet-hours window.
fn tuesday_noon() -> DateTime<Utc> {
    "2026-11-24T11:00:00Z".parse().expect("time")
}

fn ucs2_transactional() -> String {
    let text: String = "Ваш заказ 4711 отправлен. Курьер будет завтра с 10:00 до 14:00. "
        .chars()
        .cycle()
        .take(190)
        .collect();
    serde_json::json!({
        "to": "+447400123457",
        "from": "ACME",
        "text": text,
        "kind": "transactional",
        "validity_s": 3600,
    })
    .to_string()
}

/// The admission the gateway builds: shipped rules, preference lists from a store.
fn admission() -> Admission {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let prefs = Arc::new(
        rt.block_on(Preferences::load(
            Arc::new(MemoryStore::new()),
            Arc::new(smsgate::metrics::Metrics::new()),
        ))
        .expect("preferences"),
    );
    // FR marketing needs consent: record it, so the pass goes through every rule.
    rt.block_on(prefs.set(
        PreferenceKind::Consent,
        ACCOUNT,
        "+33612345678",
        Source::Api,
        Utc::now(),
    ))
    .expect("consent");
    let rules = RuleBook::load(std::path::Path::new("config/countries.toml")).expect("rules");
    Admission::with_rules(MessagesConfig::default(), rules, prefs)
}

/// What `api::messages::admit` hands to admission for a parsed request.
fn submission(req: SendRequest) -> Submission {
    Submission {
        account: ACCOUNT.into(),
        to: req.to,
        from: req.from.unwrap_or_else(|| "ACME".into()),
        text: req.text,
        kind: req.kind.unwrap_or(Kind::Transactional),
        validity_s: req.validity_s,
        send_at: req.send_at,
        client_ref: req.client_ref,
        callback_url: req.callback_url,
        keyword_reply: false,
    }
}

/// Parse → admit → message: what the HTTP handler does before the store.
fn accept(admission: &Admission, body: &[u8], now: DateTime<Utc>) -> Message {
    let req: SendRequest = serde_json::from_slice(body).expect("valid request");
    let new = admission.admit(submission(req), now).expect("admitted");
    Message::new(new, now, 42)
}

/// Every segment's submit_sm, encoded as a bind writes it; returns the bytes.
fn encode_pdus(codec: &mut CommandCodec, m: &Message, now: DateTime<Utc>, out: &mut BytesMut) {
    let segments: Vec<u32> = (0..m.segments.len() as u32).collect();
    for (seq, part) in pdu::submit_sms(m, &segments, now)
        .expect("pdus")
        .into_iter()
        .enumerate()
    {
        let command = Command::new(CommandStatus::EsmeRok, seq as u32 + 1, part.pdu);
        codec.encode(command, out).expect("encodes");
    }
}

fn request_path(c: &mut Criterion) {
    let admission = admission();
    let now = tuesday_noon();
    let ucs2 = ucs2_transactional();
    let cases: [(&str, &[u8], usize); 3] = [
        ("gb_otp_gsm7_1part", GB_OTP.as_bytes(), 1),
        ("gb_transactional_ucs2_3part", ucs2.as_bytes(), 3),
        ("fr_marketing_gsm7_1part", FR_MARKETING.as_bytes(), 1),
    ];
    let mut codec = CommandCodec::new();
    for (name, body, parts) in cases {
        let m = accept(&admission, body, now);
        assert_eq!(
            m.segments.len(),
            parts,
            "{name}: the benched message has {parts} parts"
        );
        let mut out = BytesMut::new();
        encode_pdus(&mut codec, &m, now, &mut out);
        assert!(out.len() > 33 * parts, "{name}: PDUs encoded");
    }

    let mut group = c.benchmark_group("request_path");
    group.throughput(Throughput::Elements(1));
    for (name, body, _) in cases {
        let mut out = BytesMut::with_capacity(4096);
        group.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                let m = accept(&admission, black_box(body), now);
                encode_pdus(&mut codec, &m, now, &mut out);
                out.len()
            })
        });
    }
    group.finish();

    // The GB OTP's stages, to see where the per-message time goes.
    let mut group = c.benchmark_group("request_path_stage");
    group.throughput(Throughput::Elements(1));
    let body = GB_OTP.as_bytes();
    group.bench_function("1_json_parse", |b| {
        b.iter(|| serde_json::from_slice::<SendRequest>(black_box(body)).expect("parses"))
    });
    let parsed: SendRequest = serde_json::from_slice(body).expect("parses");
    // Admission's first step alone: libphonenumber parse, validity, type, country.
    group.bench_function("2a_parse_recipient", |b| {
        b.iter(|| parse_recipient(black_box(&parsed.to)).expect("valid"))
    });
    group.bench_function("2b_parse_recipient_uncached", |b| {
        b.iter(|| parse_recipient_uncached(black_box(&parsed.to)).expect("valid"))
    });
    // libphonenumber alone over one valid mobile of each shipped country in turn
    // (+1 and +44 are shared by several regions: the dearest to place).
    let mix = [
        "+12025550143",
        "+14165551234",
        "+447400123456",
        "+33612345678",
        "+4915123456789",
        "+919876543210",
        "+8613800138000",
        "+971501234567",
        "+966501234567",
        "+6591234567",
        "+61412345678",
        "+5511912345678",
    ];
    let mut turn = 0usize;
    group.bench_function("2d_parse_recipient_uncached_mix", |b| {
        b.iter(|| {
            turn = (turn + 1) % mix.len();
            parse_recipient_uncached(black_box(mix[turn])).expect("valid")
        })
    });
    // 1,000,000 distinct GB mobiles (+44 7400 xxxxxx), ten times the cache's capacity,
    // taken in turn: every call is a first sight.
    let fresh: Vec<String> = (0..1_000_000u32)
        .map(|i| format!("+447400{i:06}"))
        .collect();
    let mut next = 0usize;
    group.bench_function("2c_parse_recipient_new_numbers", |b| {
        b.iter(|| {
            next = (next + 1) % fresh.len();
            parse_recipient(black_box(&fresh[next])).is_ok()
        })
    });
    group.bench_function("2_admit", |b| {
        b.iter_batched(
            || submission(parsed.clone()),
            |s| admission.admit(black_box(s), now).expect("admitted"),
            BatchSize::SmallInput,
        )
    });
    let new = admission
        .admit(submission(parsed.clone()), now)
        .expect("admitted");
    group.bench_function("3_message_new", |b| {
        b.iter_batched(
            || new.clone(),
            |n| Message::new(black_box(n), now, 42),
            BatchSize::SmallInput,
        )
    });
    let m = Message::new(new, now, 42);
    let mut out = BytesMut::with_capacity(4096);
    group.bench_function("4_submit_sm_build_encode", |b| {
        b.iter(|| {
            out.clear();
            encode_pdus(&mut codec, black_box(&m), now, &mut out);
            out.len()
        })
    });
    group.finish();
}

criterion_group!(benches, request_path);
criterion_main!(benches);
