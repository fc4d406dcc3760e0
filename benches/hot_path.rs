//! The per-request hot path: admission (number parsing, sender, text plan) and
//! segment encoding. Run: `cargo bench --bench hot_path`.

use std::hint::black_box;

use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use std::sync::Arc;

use smsgate::compliance::preferences::Source;
use smsgate::compliance::{
    Admission, Preferences, RuleBook, Submission, parse_recipient, parse_recipient_uncached,
};
use smsgate::config::MessagesConfig;
use smsgate::encoding;
use smsgate::message::Kind;
use smsgate::queue::{MemoryStore, PreferenceKind};

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
        keyword_reply: false,
    }
}

fn fr_marketing_text() -> Submission {
    Submission {
        to: "+33612345678".into(),
        kind: Kind::Marketing,
        text: "Soldes ! Jusqu'à -50 % ce week-end. STOP au 36180".into(),
        ..submission("")
    }
}

fn hot_path(c: &mut Criterion) {
    let otp = "Your code is 123456. It expires in 5 minutes.";
    let admission = Admission::new(MessagesConfig::default());
    // The full pipeline with the shipped country rules and (empty) preference lists.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
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
        "bench",
        "+33612345678",
        Source::Api,
        Utc::now(),
    ))
    .expect("consent");
    let rules = RuleBook::load(std::path::Path::new("config/countries.toml")).expect("rules");
    let full = Admission::with_rules(MessagesConfig::default(), rules, prefs);
    let sanity = full.admit(
        fr_marketing_text(),
        "2026-11-24T11:00:00Z".parse().expect("time"),
    );
    assert!(
        sanity.is_ok(),
        "the benched FR marketing message is admitted: {sanity:?}"
    );
    let fr_marketing = fr_marketing_text;
    // A Tuesday noon in Paris: inside the window, so the whole pipeline runs.
    let tuesday_noon: chrono::DateTime<Utc> = "2026-11-24T11:00:00Z".parse().expect("time");
    c.bench_function("admit_full_rules_gb_otp", |b| {
        b.iter(|| full.admit(black_box(submission(otp)), tuesday_noon))
    });
    c.bench_function("admit_full_rules_fr_marketing", |b| {
        b.iter(|| full.admit(black_box(fr_marketing()), tuesday_noon))
    });
    let cyrillic: String = "Привет мир! ".chars().cycle().take(210).collect();

    // A repeat recipient (answered from the cache) and a first-time one (libphonenumber).
    c.bench_function("parse_recipient", |b| {
        b.iter(|| parse_recipient(black_box("+447400123456")))
    });
    c.bench_function("parse_recipient_uncached", |b| {
        b.iter(|| parse_recipient_uncached(black_box("+447400123456")))
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
