//! Segmentation cost per message: `smsgate::encoding::plan` (alphabet and
//! segment count, what admission runs on every request) and `plan` +
//! `encode` (the short_message bytes of every part, UDH included, what a bind
//! runs before each submit_sm) for GSM-7 and UCS-2 texts, single and
//! multipart.
//!
//! Unit: one message (one text planned, or planned and split into all its
//! parts); criterion's "thrpt" line is messages/s. Each case's id names the
//! encoding and the number of parts.
//!
//! Run: `cargo bench --bench segmentation`
//! (quicker: `cargo bench --bench segmentation -- --warm-up-time 1 --measurement-time 3`)

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use smsgate::encoding::{self, Encoding};

/// A text, the encoding and part count it must plan to.
struct Case {
    name: &'static str,
    text: String,
    encoding: Encoding,
    segments: u32,
}

fn cases() -> Vec<Case> {
    let gsm_long_sentence = "Your parcel 4711 is out for delivery today between 10:00 and 14:00. \
                             Track it or change the slot at https://ex.am/p/4711 - reply HELP for help. ";
    let cyrillic = "Привет! Ваш заказ отправлен, трек-номер 4711. ";
    vec![
        Case {
            name: "gsm7_1part_otp",
            text: "Your code is 123456. It expires in 5 minutes.".into(),
            encoding: Encoding::Gsm7,
            segments: 1,
        },
        Case {
            // Extension characters (escape + code, two septets each) near the single limit.
            name: "gsm7_1part_escapes",
            text: "Price: 20€ [promo] {code} ~ ACME^ | "
                .repeat(4)
                .chars()
                .take(120)
                .collect(),
            encoding: Encoding::Gsm7,
            segments: 1,
        },
        Case {
            name: "gsm7_3part",
            text: gsm_long_sentence.chars().cycle().take(450).collect(),
            encoding: Encoding::Gsm7,
            segments: 3,
        },
        Case {
            // The default max_segments (10): the longest text admission lets through.
            name: "gsm7_10part",
            text: gsm_long_sentence.chars().cycle().take(1530).collect(),
            encoding: Encoding::Gsm7,
            segments: 10,
        },
        Case {
            name: "ucs2_1part_cyrillic",
            text: cyrillic.chars().cycle().take(60).collect(),
            encoding: Encoding::Ucs2,
            segments: 1,
        },
        Case {
            // Surrogate pairs (emoji cost two UTF-16 units) in a short text.
            name: "ucs2_1part_emoji",
            text: "Your order is on its way 🚚📦 see you soon 😀".into(),
            encoding: Encoding::Ucs2,
            segments: 1,
        },
        Case {
            name: "ucs2_3part_cyrillic",
            text: cyrillic.chars().cycle().take(200).collect(),
            encoding: Encoding::Ucs2,
            segments: 3,
        },
        Case {
            name: "ucs2_10part_cyrillic",
            text: cyrillic.chars().cycle().take(670).collect(),
            encoding: Encoding::Ucs2,
            segments: 10,
        },
    ]
}

fn segmentation(c: &mut Criterion) {
    let cases = cases();
    for case in &cases {
        let plan = encoding::plan(&case.text);
        assert_eq!(
            (plan.encoding, plan.segments),
            (case.encoding, case.segments),
            "{}: the benched text plans as intended",
            case.name
        );
        let parts = encoding::encode(&case.text, plan, 7).expect("encodes");
        assert_eq!(parts.len() as u32, case.segments, "{}", case.name);
    }

    let mut group = c.benchmark_group("segmentation_plan");
    group.throughput(Throughput::Elements(1));
    for case in &cases {
        group.bench_function(case.name, |b| {
            b.iter(|| encoding::plan(black_box(&case.text)))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("segmentation_plan_encode");
    group.throughput(Throughput::Elements(1));
    for case in &cases {
        group.bench_function(case.name, |b| {
            b.iter(|| {
                let text = black_box(case.text.as_str());
                let plan = encoding::plan(text);
                encoding::encode(text, plan, 7)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, segmentation);
criterion_main!(benches);
