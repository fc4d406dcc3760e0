//! The per-request hot path: admission (number parsing, sender, text plan) and
//! segment encoding. Run: `cargo bench --bench hot_path`.

use std::hint::black_box;

use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use smsgate::compliance::{Admission, Submission, parse_recipient};
use smsgate::config::MessagesConfig;
use smsgate::encoding;
use smsgate::message::Kind;

fn submission(text: &str) -> Submission {
    Submission {
        account: "bench".into(),
        to: "+447400123456".into(),
        from: "ACME".into(),
        text: text.into(),
        kind: Kind::Otp,
        validity_s: None,
        send_at: None,
        client_ref: None,
        callback_url: None,
    }
}

fn hot_path(c: &mut Criterion) {
    let admission = Admission::new(MessagesConfig::default());
    let otp = "Your code is 123456. It expires in 5 minutes.";
    let cyrillic: String = "Привет мир! ".chars().cycle().take(210).collect();

    c.bench_function("parse_recipient", |b| {
        b.iter(|| parse_recipient(black_box("+447400123456")))
    });
    c.bench_function("admit_otp", |b| {
        b.iter(|| admission.admit(black_box(submission(otp)), Utc::now()))
    });
    c.bench_function("plan_gsm_otp", |b| {
        b.iter(|| encoding::plan(black_box(otp)))
    });
    c.bench_function("encode_ucs2_4_segments", |b| {
        let plan = encoding::plan(&cyrillic);
        b.iter(|| encoding::encode(black_box(&cyrillic), plan, 7))
    });
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
