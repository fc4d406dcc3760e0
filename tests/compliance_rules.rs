//! The shipped country rules, rule by rule, with an injected clock: every
//! refusal code and the quiet-hour deferrals.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use smsgate::compliance::{Admission, Preferences, RuleBook, Submission};
use smsgate::config::MessagesConfig;
use smsgate::message::Kind;
use smsgate::queue::{MemoryStore, PreferenceKind};

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().expect("RFC 3339")
}

async fn admission() -> (Admission, Arc<Preferences>) {
    let rules = RuleBook::load(std::path::Path::new("config/countries.toml")).expect("valid file");
    let prefs = Arc::new(
        Preferences::load(
            Arc::new(MemoryStore::new()),
            Arc::new(smsgate::metrics::Metrics::new()),
        )
        .await
        .expect("prefs"),
    );
    (
        Admission::with_rules(MessagesConfig::default(), rules, prefs.clone()),
        prefs,
    )
}

fn submission(to: &str, from: &str, text: &str, kind: Kind) -> Submission {
    Submission {
        account: "acme".into(),
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

/// (what, submission, clock, expected: `Ok(Some(t))` deferred to t,
/// `Ok(None)` sent now, `Err(code)` refused).
type Case = (
    &'static str,
    Submission,
    DateTime<Utc>,
    Result<Option<DateTime<Utc>>, &'static str>,
);

const FR: &str = "+33612345678";
const US: &str = "+12025550143";
const US_LA: &str = "+12135550143";
const US_UNPINNED: &str = "+18505550143";
const CN: &str = "+8613800138000";

#[tokio::test]
async fn rules_and_codes_per_country() {
    let (admission, prefs) = admission().await;
    let consent = |e164: &'static str| {
        let prefs = prefs.clone();
        async move {
            prefs
                .set(
                    PreferenceKind::Consent,
                    "acme",
                    e164,
                    smsgate::compliance::preferences::Source::Api,
                    Utc::now(),
                )
                .await
                .unwrap()
        }
    };
    // FR and US marketing need consent (checked before quiet hours).
    consent(FR).await;
    consent(US).await;
    consent(US_LA).await;
    consent(US_UNPINNED).await;
    let weekday_noon_utc = utc("2026-11-24T12:00:00Z"); // Tuesday
    // (what, submission, now, expected: Ok(Some(send_at)) deferred, Ok(None) now, Err(code))
    let cases: Vec<Case> = vec![
        (
            "FR marketing on Sunday → Monday 08:00 Paris",
            submission(FR, "ACME", "Soldes ! STOP au 36180", Kind::Marketing),
            utc("2026-11-22T14:00:00Z"),
            Ok(Some(utc("2026-11-23T07:00:00Z"))),
        ),
        (
            "FR OTP on Sunday → now",
            submission(FR, "ACME", "Code 123456", Kind::Otp),
            utc("2026-11-22T14:00:00Z"),
            Ok(None),
        ),
        (
            "FR marketing on Tuesday noon → now",
            submission(FR, "ACME", "Soldes ! STOP au 36180", Kind::Marketing),
            weekday_noon_utc,
            Ok(None),
        ),
        (
            // A Los Angeles number (area code 213) follows Los Angeles time.
            "US marketing at 22:30 in Los Angeles → 08:00 Los Angeles",
            submission(
                US_LA,
                "12345",
                "Sale today. Reply STOP to opt out",
                Kind::Marketing,
            ),
            utc("2026-11-25T06:30:00Z"),
            Ok(Some(utc("2026-11-25T16:00:00Z"))),
        ),
        (
            // Area code 850 spans two zones: every US zone must be inside
            // 08:00–21:00, and Honolulu is last to reach 08:00.
            "US marketing at 22:30 LA to an unpinned number → 08:00 Honolulu",
            submission(
                US_UNPINNED,
                "12345",
                "Sale today. Reply STOP to opt out",
                Kind::Marketing,
            ),
            utc("2026-11-25T06:30:00Z"),
            Ok(Some(utc("2026-11-25T18:00:00Z"))),
        ),
        (
            // 01:30 in Washington DC → 08:00 Eastern.
            "US marketing at 22:30 LA to a DC number → 08:00 New York",
            submission(
                US,
                "12345",
                "Sale today. Reply STOP to opt out",
                Kind::Marketing,
            ),
            utc("2026-11-25T06:30:00Z"),
            Ok(Some(utc("2026-11-25T13:00:00Z"))),
        ),
        (
            "US OTP at the same time → now",
            submission(US, "12345", "Code 123456", Kind::Otp),
            utc("2026-11-25T06:30:00Z"),
            Ok(None),
        ),
        (
            "US alphanumeric sender",
            submission(US, "ACME", "Code 123456", Kind::Otp),
            weekday_noon_utc,
            Err("sender_not_allowed"),
        ),
        (
            "FR marketing without STOP",
            submission(FR, "ACME", "Soldes aujourd'hui", Kind::Marketing),
            weekday_noon_utc,
            Err("opt_out_text_missing"),
        ),
        (
            "unknown number range",
            submission("+447700900123", "ACME", "x", Kind::Otp),
            weekday_noon_utc,
            Err("invalid_number"),
        ),
    ];
    for (what, s, now, expected) in cases {
        let got = admission
            .admit(s, now)
            .map(|m| m.send_at)
            .map_err(|r| r.code());
        assert_eq!(got, expected, "{what}");
    }

    // Consent where the country requires it (US marketing, TCPA).
    let us_marketing = || submission(US, "12345", "Sale. Reply STOP to opt out", Kind::Marketing);
    let noon_ny = utc("2026-11-24T18:00:00Z"); // 13:00 New York, 10:00 Los Angeles
    prefs
        .clear(PreferenceKind::Consent, "acme", US)
        .await
        .unwrap();
    assert_eq!(
        admission
            .admit(us_marketing(), noon_ny)
            .map_err(|r| r.code())
            .err(),
        Some("consent_required")
    );
    prefs
        .set(
            PreferenceKind::Consent,
            "acme",
            US,
            smsgate::compliance::preferences::Source::Api,
            noon_ny,
        )
        .await
        .unwrap();
    assert!(admission.admit(us_marketing(), noon_ny).is_ok());

    // CN: content must carry the brand signature 【…】, and marketing the
    // unsubscribe wording (refused or appended, per the file).
    let cn_at = utc("2026-11-24T03:00:00Z"); // 11:00 Shanghai
    let unsigned = admission.admit(submission(CN, "10690000", "新品上市", Kind::Otp), cn_at);
    assert_eq!(
        unsigned.map_err(|r| r.code()).err(),
        Some("content_blocked")
    );
    consent(CN).await;
    let cn = admission.admit(
        submission(CN, "10690000", "【ACME】新品上市", Kind::Marketing),
        cn_at,
    );
    match cn {
        Ok(m) => assert!(m.text.contains("退订"), "appended: {}", m.text),
        Err(r) => assert_eq!(r.code(), "opt_out_text_missing"),
    }
}

const IN: &str = "+919876543210";

#[tokio::test]
async fn india_needs_a_registered_template_for_the_sender() {
    let (admission, _) = admission().await;
    let config = smsgate::Config::parse(
        r#"
[[accounts]]
id = "acme"
api_key = "k"
templates = [{ sender = "ACMEIN", text = "Your OTP is {#var#}. Do not share it." }]
"#,
    )
    .expect("config");
    let admission = admission
        .with_accounts(&config.accounts)
        .expect("templates");
    let at = utc("2026-11-24T06:00:00Z");
    let otp = |from: &str, text: &str| submission(IN, from, text, Kind::Otp);
    assert!(
        admission
            .admit(otp("ACMEIN", "Your OTP is 123456. Do not share it."), at)
            .is_ok()
    );
    for (what, s) in [
        ("other wording", otp("ACMEIN", "Your code: 123456")),
        (
            "other sender",
            otp("OTHERS", "Your OTP is 123456. Do not share it."),
        ),
        (
            "variable over 30 characters",
            otp(
                "ACMEIN",
                &format!("Your OTP is {}. Do not share it.", "1".repeat(31)),
            ),
        ),
    ] {
        assert_eq!(
            admission.admit(s, at).map_err(|r| r.code()).err(),
            Some("template_not_registered"),
            "{what}"
        );
    }
}

#[tokio::test]
async fn marketing_is_capped_per_recipient_per_local_day() {
    let prefs = Arc::new(
        Preferences::load(
            Arc::new(MemoryStore::new()),
            Arc::new(smsgate::metrics::Metrics::new()),
        )
        .await
        .expect("prefs"),
    );
    let rules = RuleBook::parse(
        "[default]\n[countries.GB]\ntimezones = [\"Europe/London\"]\nmarketing_max_per_day = 2\n",
    )
    .expect("rules");
    let admission = Admission::with_rules(MessagesConfig::default(), rules, prefs);
    let promo = || submission("+447400123456", "ACME", "Sale", Kind::Marketing);
    let day1 = utc("2026-11-24T10:00:00Z");
    assert!(admission.admit(promo(), day1).is_ok());
    assert!(admission.admit(promo(), day1).is_ok());
    assert_eq!(
        admission.admit(promo(), day1).map_err(|r| r.code()).err(),
        Some("frequency_capped")
    );
    // OTPs are not marketing; another recipient has their own count; a new day resets.
    assert!(
        admission
            .admit(submission("+447400123456", "ACME", "code", Kind::Otp), day1)
            .is_ok()
    );
    assert!(
        admission
            .admit(
                submission("+447400123457", "ACME", "Sale", Kind::Marketing),
                day1
            )
            .is_ok()
    );
    assert!(
        admission
            .admit(promo(), utc("2026-11-25T10:00:00Z"))
            .is_ok()
    );
}
