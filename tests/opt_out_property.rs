//! Property: across random sequences of sends, API opt-outs/opt-ins, MO
//! keywords and carrier outages, no message is ever submitted to a number
//! that is opted out at submit time — including messages that were queued
//! before the opt-out — and every message to a number that is not opted out
//! goes out. Runs against the real gateway and simulator over HTTP and SMPP.
//!
//! The test drives one operation at a time and, while the carrier is up,
//! waits until nothing is queued before the next one, so every submit the
//! simulator records is attributable to the opt-out state in force after the
//! last operation. Keyword answers (the STOP confirmation, HELP text) are the
//! gateway's own messages and reach an opted-out number by design; they are
//! recognised by their text and left out of the property.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::{Harness, KEY};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use serde_json::{Value, json};
use smsgate::config::KeywordReplies;
use smsgate_loadtest::sim::SimConfig;

/// Recipients per case: few, so operations collide on the same number.
const NUMBERS: usize = 3;
const WAIT: Duration = Duration::from_secs(20);

/// One step of a case.
#[derive(Clone, Debug)]
enum Op {
    /// A transactional message to number `n`.
    Send(usize),
    /// `PUT /v1/opt-outs/{n}`.
    OptOut(usize),
    /// `DELETE /v1/opt-outs/{n}`.
    OptIn(usize),
    /// An MO from number `n` with this text (skipped while the carrier is down).
    Mo(usize, &'static str),
    /// The simulator drops its connections and refuses new ones.
    CarrierDown,
    /// The simulator accepts binds again.
    CarrierUp,
}

const MO_TEXTS: &[&str] = &[
    "STOP",
    " stop ",
    "Unsubscribe",
    "START",
    "unstop",
    "HELP",
    "hello",
];

fn op() -> impl Strategy<Value = Op> {
    let n = 0..NUMBERS;
    prop_oneof![
        4 => n.clone().prop_map(Op::Send),
        2 => n.clone().prop_map(Op::OptOut),
        2 => n.clone().prop_map(Op::OptIn),
        3 => (n, proptest::sample::select(MO_TEXTS)).prop_map(|(n, t)| Op::Mo(n, t)),
        1 => Just(Op::CarrierDown),
        1 => Just(Op::CarrierUp),
    ]
}

/// What the model expects of an MO text.
fn effect(text: &str) -> Option<bool> {
    match text.trim().to_uppercase().as_str() {
        "STOP" | "UNSUBSCRIBE" => Some(true),
        "START" | "UNSTOP" => Some(false),
        _ => None,
    }
}

/// Fresh numbers for every case run (shrinking re-runs cases on the same gateway).
static NEXT_BLOCK: AtomicU32 = AtomicU32::new(0);

struct Case<'a> {
    h: &'a Harness,
    numbers: Vec<String>,
    opted_out: HashSet<usize>,
    carrier_up: bool,
    /// Accepted, not yet settled: id → number index.
    pending: HashMap<String, usize>,
    /// Simulator records already checked.
    seen: usize,
    replies: Vec<String>,
}

impl Case<'_> {
    fn digits(&self, n: usize) -> &str {
        self.numbers[n].trim_start_matches('+')
    }

    async fn call(&self, method: reqwest::Method, path: &str) -> u16 {
        let resp = self
            .h
            .http
            .request(method, format!("{}{path}", self.h.base))
            .bearer_auth(KEY)
            .send()
            .await
            .expect("HTTP");
        resp.status().as_u16()
    }

    async fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Send(n) => {
                let (status, body) = self
                    .h
                    .send(json!({ "to": self.numbers[n], "from": "ACME", "text": format!("note for {n}"), "kind": "transactional" }))
                    .await;
                if self.opted_out.contains(&n) {
                    prop_assert_eq!(
                        (status, body["error"]["code"].clone()),
                        (422, json!("opted_out"))
                    );
                } else {
                    prop_assert_eq!(status, 202, "{}", body);
                    let id = body["id"].as_str().expect("id").to_owned();
                    self.pending.insert(id, n);
                }
            }
            Op::OptOut(n) => {
                let path = format!("/v1/opt-outs/{}", self.numbers[n]);
                prop_assert_eq!(self.call(reqwest::Method::PUT, &path).await, 204);
                self.opted_out.insert(n);
            }
            Op::OptIn(n) => {
                let path = format!("/v1/opt-outs/{}", self.numbers[n]);
                prop_assert_eq!(self.call(reqwest::Method::DELETE, &path).await, 204);
                self.opted_out.remove(&n);
            }
            Op::Mo(n, text) => {
                if !self.carrier_up {
                    return Ok(());
                }
                let from = self.digits(n).to_owned();
                self.h
                    .sim
                    .inject_mo("smsgate", &from, "ACME", text)
                    .await
                    .map_err(|e| TestCaseError::fail(format!("MO not acknowledged: {e}")))?;
                match effect(text) {
                    Some(true) => {
                        self.opted_out.insert(n);
                    }
                    Some(false) => {
                        self.opted_out.remove(&n);
                    }
                    None => {}
                }
            }
            Op::CarrierDown => {
                self.h.sim.set_accepting(false);
                self.h.sim.drop_connections();
                self.carrier_up = false;
                self.wait_binds(|up| up == 0).await?;
            }
            Op::CarrierUp => {
                self.h.sim.set_accepting(true);
                self.carrier_up = true;
                self.wait_binds(|up| up > 0).await?;
            }
        }
        if self.carrier_up {
            self.settle().await?;
        }
        self.check_submits()
    }

    /// Waits until the gateway's count of binds up satisfies `ok`.
    async fn wait_binds(&self, ok: impl Fn(usize) -> bool) -> Result<(), TestCaseError> {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !ok(self.h.gateway.binds_up()) {
            if tokio::time::Instant::now() > deadline {
                return Err(TestCaseError::fail("binds did not change within the wait"));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Waits until every pending message left the queue, and checks how it
    /// ended against the opt-out state in force.
    async fn settle(&mut self) -> Result<(), TestCaseError> {
        let ids: Vec<(String, usize)> = self.pending.drain().collect();
        for (id, n) in ids {
            let deadline = tokio::time::Instant::now() + WAIT;
            let m: Value = loop {
                let m = self.h.message(&id).await;
                if m["status"] != "queued" {
                    break m;
                }
                if tokio::time::Instant::now() > deadline {
                    return Err(TestCaseError::fail(format!("{id} still queued: {m}")));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            if self.opted_out.contains(&n) {
                prop_assert_eq!(
                    (m["status"].clone(), m["error"]["code"].clone()),
                    (json!("failed"), json!("opted_out")),
                    "queued to a number opted out before submit: {}",
                    m
                );
            } else {
                prop_assert!(
                    m["status"] == "submitted" || m["status"] == "delivered",
                    "a message to a subscribed number goes out: {}",
                    m
                );
            }
        }
        Ok(())
    }

    /// Every new submit to this case's numbers (other than keyword answers)
    /// went to a number that is not opted out.
    fn check_submits(&mut self) -> Result<(), TestCaseError> {
        let submits = self.h.sim.submits();
        for s in &submits[self.seen.min(submits.len())..] {
            let Some(n) = (0..NUMBERS).find(|&n| self.digits(n) == s.destination_addr) else {
                continue;
            };
            if self.replies.contains(&s.text) {
                continue;
            }
            prop_assert!(
                !self.opted_out.contains(&n),
                "submitted to opted-out {}: {:?}",
                self.numbers[n],
                s
            );
        }
        self.seen = submits.len();
        Ok(())
    }
}

async fn run_case(h: &Harness, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let block = NEXT_BLOCK.fetch_add(1, Ordering::Relaxed);
    let defaults = KeywordReplies::default();
    let mut case = Case {
        h,
        numbers: (0..NUMBERS)
            .map(|n| format!("+447400{:03}{:03}", block % 1000, n))
            .collect(),
        opted_out: HashSet::new(),
        carrier_up: true,
        pending: HashMap::new(),
        seen: h.sim.submits().len(),
        replies: vec![defaults.stop, defaults.start, defaults.help],
    };
    case.apply(&Op::CarrierUp).await?;
    for op in &ops {
        case.apply(op).await?;
    }
    // Bring the carrier back and settle what waited for it.
    case.apply(&Op::CarrierUp).await
}

#[test]
fn nothing_is_submitted_to_a_number_opted_out_at_submit_time() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let h = rt.block_on(Harness::start(SimConfig::default()));
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(32);
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 64,
        ..ProptestConfig::default()
    });
    let result = runner.run(&proptest::collection::vec(op(), 1..14), |ops| {
        rt.block_on(run_case(&h, ops))
    });
    rt.block_on(h.stop());
    if let Err(e) = result {
        panic!("{e}");
    }
}
