//! `config/grafana/smsgate.json` (and the alert expressions in
//! the Operating section of docs/operations.md) use only metrics the gateway really exports:
//! every `smsgate_*` name in a panel's `expr` is a family in `GET /metrics`
//! after traffic that touches each labelled family, and every label the
//! queries select or group by is one those series carry.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use common::{Harness, KEY, otp, test_config};
use regex::Regex;
use serde_json::{Value, json};
use smsgate::Gateway;
use smsgate_loadtest::sim::{DelayDist, Outcome, SimConfig};

const WAIT: Duration = Duration::from_secs(20);

fn grafana_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/grafana")
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(grafana_dir().join("smsgate.json")).expect("dashboard");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every panel, rows' nested panels included.
fn panels(v: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in v["panels"].as_array().into_iter().flatten() {
        out.push(p);
        out.extend(panels(p));
    }
    out
}

/// Every query expression of the dashboard.
fn exprs(dash: &Value) -> Vec<String> {
    panels(dash)
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .map(|t| {
            t["expr"]
                .as_str()
                .expect("every target has an expr")
                .to_owned()
        })
        .collect()
}

/// The PromQL in the "Operating" section of docs/operations.md (its code spans that name a metric).
fn alert_exprs() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))
            .expect("docs/operations.md");
    let start = readme.find("\n## Operating").expect("an Operating section");
    let rest = &readme[start + 1..];
    let text = &rest[..rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3)];
    let span = Regex::new(r"`([^`]+)`").unwrap();
    span.captures_iter(text)
        .map(|c| c[1].to_owned())
        .filter(|s| s.contains("smsgate_") && !s.contains('*'))
        .collect()
}

/// The families in a Prometheus text exposition: name → (type, label names
/// seen on its samples, `le` included for histogram buckets).
fn families(text: &str) -> BTreeMap<String, (String, BTreeSet<String>)> {
    let mut out: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (Some(name), Some(kind)) = (it.next(), it.next()) else {
                continue;
            };
            out.entry(name.to_owned()).or_default().0 = kind.to_owned();
        }
    }
    let sample = Regex::new(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s").unwrap();
    let label = Regex::new(r#"([a-zA-Z_][a-zA-Z0-9_]*)="#).unwrap();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(c) = sample.captures(line) else {
            continue;
        };
        let Some(family) = family_of(&c[1], &out) else {
            continue;
        };
        let labels = c.get(2).map_or("", |m| m.as_str());
        let entry = out.get_mut(&family).unwrap();
        entry
            .1
            .extend(label.captures_iter(labels).map(|l| l[1].to_owned()));
    }
    out
}

/// The family a series name belongs to: itself, or a histogram's / summary's
/// `_bucket`, `_sum` and `_count` series.
fn family_of(
    name: &str,
    families: &BTreeMap<String, (String, BTreeSet<String>)>,
) -> Option<String> {
    if families.contains_key(name) {
        return Some(name.to_owned());
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = name.strip_suffix(suffix)?;
        let (kind, _) = families.get(base)?;
        (kind == "histogram" || kind == "summary").then(|| base.to_owned())
    })
}

#[test]
fn the_dashboard_is_an_importable_grafana_dashboard() {
    let dash = dashboard();
    assert!(dash["title"].is_string() && dash["uid"].is_string());
    assert!(dash["schemaVersion"].as_u64().is_some_and(|v| v >= 30));

    // A data source variable, so the import asks for (or defaults to) a Prometheus.
    let vars = dash["templating"]["list"].as_array().expect("templating");
    let ds = vars
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(ds["query"], "prometheus");
    let ds_ref = format!("${{{}}}", ds["name"].as_str().unwrap());

    let mut ids = HashSet::new();
    let mut queries = 0;
    for p in panels(&dash) {
        let id = p["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "panel id {id} used twice");
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().unwrap(), g["w"].as_u64().unwrap());
        assert!(x + w <= 24 && g["h"].as_u64().unwrap() > 0, "gridPos {g}");
        if p["type"] == "row" {
            continue;
        }
        assert!(p["title"].is_string(), "untitled panel {id}");
        assert_eq!(
            p["datasource"]["uid"],
            ds_ref.as_str(),
            "panel {}",
            p["title"]
        );
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        let mut ref_ids = HashSet::new();
        for t in targets {
            assert!(ref_ids.insert(t["refId"].as_str().unwrap()));
            assert!(t["expr"].as_str().is_some_and(|e| e.contains("smsgate_")));
            queries += 1;
        }
    }
    assert!(queries >= 20, "only {queries} queries");

    // Quantiles are taken over buckets and keep `le`.
    let all = exprs(&dash);
    for e in all.iter().chain(alert_exprs().iter()) {
        if e.contains("histogram_quantile") {
            assert!(e.contains("_bucket") && e.contains("by (le"), "{e}");
        }
    }
    // The views the operators asked for are there.
    let has = |needle: &str| all.iter().any(|e| e.contains(needle));
    for needle in [
        "rate(smsgate_messages_accepted_total",
        "rate(smsgate_messages_submitted_total",
        "sum by (kind) (smsgate_queue_depth)",
        r#"histogram_quantile(0.5, sum by (le) (rate(smsgate_accept_to_submit_seconds_bucket{kind="otp"}"#,
        r#"histogram_quantile(0.99, sum by (le) (rate(smsgate_accept_to_submit_seconds_bucket{kind="otp"}"#,
        "smsgate_submit_to_dlr_seconds_bucket",
        "smsgate_messages_delivered_total",
        "smsgate_messages_undeliverable_total",
        "smsgate_messages_expired_total",
        "smsgate_messages_failed_total",
        "sum by (reason) (rate(smsgate_messages_rejected_total",
        "smsgate_bind_up",
        "smsgate_store_commit_seconds_bucket",
        "smsgate_optouts_total",
    ] {
        assert!(has(needle), "no panel queries {needle}");
    }
}

/// A countries file whose only rule that matters here defers marketing: today
/// and tomorrow (UTC) are holidays, so marketing sent now is `scheduled`.
fn deferring_countries(dir: &std::path::Path) -> PathBuf {
    let today = chrono::Utc::now().date_naive();
    let days: Vec<String> = (0..3)
        .map(|d| {
            (today + chrono::Duration::days(d))
                .format("%Y-%m-%d")
                .to_string()
        })
        .collect();
    let text = format!(
        r#"
[default]
sender_types = ["alphanumeric", "numeric", "shortcode"]
registered_senders = []
marketing_requires_consent = false
otp_ignores_opt_out = false
required_marketing_text = []
append_opt_out_text = false
opt_out_text = "Reply STOP to opt out"
marketing_sender_prefix = ""
blocked_patterns = []
max_segments = 10
timezones = ["Etc/UTC"]
quiet_hours_action = "defer"
marketing_window = {{ days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], start = "00:00", end = "23:59" }}
holidays = {days:?}
marketing_max_per_day = 0
opt_out_keywords = []
templates_required = false
"#
    );
    let path = dir.join("countries.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_the_alerts_use_is_exported() {
    let rules = tempfile::tempdir().unwrap();
    let countries = deferring_countries(rules.path());
    // Receipts 3 s after submit (so one can be left for a second gateway, below);
    // every third submit throttled once (retries, submit errors).
    let h = Harness::start_with(
        SimConfig {
            receipt_delay: DelayDist::Fixed(Duration::from_secs(3)),
            error_injection: vec![(0.3, 0x58)],
            ..SimConfig::default()
        },
        2,
        16,
        |c| c.compliance.countries = countries,
    )
    .await;

    // Every final outcome, by script.
    let scripted = [
        ("+447400100001", Outcome::Delivered, "delivered"),
        ("+447400100002", Outcome::Undeliverable, "undeliverable"),
        ("+447400100003", Outcome::Expired, "expired"),
    ];
    let mut waits = Vec::new();
    for (to, outcome, status) in scripted {
        h.sim.script_outcomes(&to[1..], vec![outcome]);
        waits.push((h.send_ok(otp(to, "Your code is 123456")).await, status));
    }
    for kind in ["transactional", "otp"] {
        let id = h
            .send_ok(
                json!({ "to": "+447400100004", "from": "ACME", "text": "Hello", "kind": kind }),
            )
            .await;
        waits.push((id, "delivered"));
    }
    // Marketing on a holiday: deferred.
    let (status, body) = h
        .send(json!({ "to": "+447400100005", "from": "ACME", "text": "Sale", "kind": "marketing" }))
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("scheduled")),
        "{body}"
    );
    // Refused at admission, and an error response.
    let (status, _) = h.send(otp("+12", "x")).await;
    assert_eq!(status, 422);
    let (status, _) = h.get_as("no-such-key", "01ARZ3NDEKTSV4RRFFQ69G5FAV").await;
    assert_eq!(status, 401);
    // Failed: accepted for later, then the recipient opts out (API) before it is due.
    let send_at = chrono::Utc::now() + chrono::Duration::seconds(2);
    let later = h
        .send_ok(
            json!({ "to": "+447400100007", "from": "ACME", "text": "Later",
                         "send_at": send_at.to_rfc3339() }),
        )
        .await;
    let resp = h
        .http
        .put(format!("{}/v1/opt-outs/+447400100007", h.base))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    assert!(chrono::Utc::now() < send_at, "the opt-out took too long");
    // An inbound STOP (MO, and an opt-out by keyword).
    h.sim
        .inject_mo("smsgate", "447400100006", "ACME", "STOP")
        .await
        .expect("MO acknowledged");
    waits.push((later, "failed"));
    for (id, status) in &waits {
        h.wait_status(id, status, WAIT).await;
    }
    // The injected 0x58 meets a submit with probability 0.3: the few above
    // miss it one time in ten or so, so send more until one has been retried.
    for i in 0..60 {
        if h.metrics().await.contains("smsgate_retries_total{") {
            break;
        }
        h.send_ok(otp(&format!("+4474001009{i:02}"), "Your code is 123456"))
            .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = h.metrics().await;

    // A receipt for an id this gateway never sent: submit one, stop the gateway
    // before its receipt is due, and bind a gateway with an empty store to the
    // same simulator, which hands it the held receipt.
    let id = h.send_ok(otp("+447400100008", "Your code is 654321")).await;
    h.wait_status(&id, "submitted", WAIT).await;
    let Harness {
        data: _data,
        sim,
        gateway,
        http,
        ..
    } = h;
    gateway.shutdown().await;
    let data = tempfile::tempdir().unwrap();
    let second = Gateway::start(test_config(sim.smpp_addr(), 1, 16, data.path()))
        .await
        .expect("second gateway starts");
    let url = format!("http://{}/metrics", second.http_addr());
    let deadline = tokio::time::Instant::now() + WAIT;
    let second_metrics = loop {
        let text = http.get(&url).send().await.unwrap().text().await.unwrap();
        if text.contains("smsgate_dlr_unmatched_total{") {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no unmatched receipt at the second gateway:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    second.shutdown().await;
    sim.shutdown().await;

    let mut exported = families(&first);
    for (name, (kind, labels)) in families(&second_metrics) {
        let e = exported.entry(name).or_default();
        e.0 = kind;
        e.1.extend(labels);
    }

    let metric = Regex::new(r"(smsgate_[a-z0-9_]+)(\{[^}]*\})?").unwrap();
    let matcher = Regex::new(r#"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*""#).unwrap();
    let by = Regex::new(r"\b(?:by|without)\s*\(([^)]*)\)").unwrap();
    let dash = dashboard();
    let mut used = BTreeSet::new();
    for (source, e) in exprs(&dash).into_iter().map(|e| ("dashboard", e)).chain(
        alert_exprs()
            .into_iter()
            .map(|e| ("docs/operations.md Operating", e)),
    ) {
        let mut labels_here = BTreeSet::new();
        for c in metric.captures_iter(&e) {
            let family = family_of(&c[1], &exported).unwrap_or_else(|| {
                panic!("{source}: {} is not exported by /metrics (in `{e}`)", &c[1])
            });
            let labels = &exported[&family].1;
            if let Some(selector) = c.get(2) {
                for m in matcher.captures_iter(selector.as_str()) {
                    assert!(
                        labels.contains(&m[1]),
                        "{source}: {} has no label {} (has {labels:?}) in `{e}`",
                        &c[1],
                        &m[1]
                    );
                }
            }
            labels_here.extend(labels.iter().cloned());
            used.insert(family);
        }
        for c in by.captures_iter(&e) {
            for l in c[1].split(',').map(str::trim).filter(|l| !l.is_empty()) {
                assert!(
                    labels_here.contains(l),
                    "{source}: grouping by {l}, which none of its metrics has, in `{e}`"
                );
            }
        }
    }
    // The dashboard covers what an operator needs (not just a few names).
    assert!(
        used.len() >= 20,
        "only {} metric families used: {used:?}",
        used.len()
    );
}
