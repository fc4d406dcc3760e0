//! The document's patterns and bounds are the handlers' input checks. Requests
//! built at the edges of what the served document allows (shortest and longest
//! strings of each pattern, minimum and maximum of each bound, the most items,
//! every enum value, nulls) get none of the input-validation codes; values just
//! outside an exact constraint are refused with the code its description names.
//! Everything is read from the document a running gateway serves, and sent to
//! it over HTTP; no randomness.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::Method;
use reqwest::header::HeaderValue;
use serde_json::{Value, json};
use smsgate::compliance::number::E164_PATTERN;
use smsgate::compliance::{RuleBook, parse_recipient};
use smsgate_loadtest::sim::SimConfig;

use crate::common::{Harness, KEY};
use crate::support::{TO, fetch_document, refs, resolve};

/// The codes of the handlers' input checks (with 400 and 413 whatever the code).
const INPUT_CODES: &[&str] = &[
    "malformed_request",
    "payload_too_large",
    "invalid_number",
    "sender_not_allowed",
    "text_too_long",
    "validity_invalid",
];

/// The account without a `senders` list (the test account may send only from ACME).
const OTHER_KEY: &str = "other-key";

/// A request: method, path (query included), key, body, Idempotency-Key.
struct Call<'a> {
    method: Method,
    path: String,
    key: &'a str,
    body: Option<Value>,
    idempotency_key: Option<HeaderValue>,
}

impl<'a> Call<'a> {
    fn new(method: Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            key: KEY,
            body: None,
            idempotency_key: None,
        }
    }

    fn post(path: &str, body: Value) -> Self {
        Self {
            body: Some(body),
            ..Self::new(Method::POST, path)
        }
    }

    fn key(self, key: &'a str) -> Self {
        Self { key, ..self }
    }

    fn idempotency(self, value: HeaderValue) -> Self {
        Self {
            idempotency_key: Some(value),
            ..self
        }
    }

    async fn send(&self, h: &Harness) -> (u16, Value) {
        let mut req = h
            .http
            .request(self.method.clone(), format!("{}{}", h.base, self.path))
            .bearer_auth(self.key);
        if let Some(body) = &self.body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        if let Some(value) = &self.idempotency_key {
            req = req.header("idempotency-key", value.clone());
        }
        let resp = req.send().await.expect("HTTP request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    fn what(&self) -> String {
        let body = self.body.as_ref().map(shorten).unwrap_or_default();
        format!("{} {} {body}", self.method, self.path)
    }
}

/// A body as written in failure messages (long texts cut).
fn shorten(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 300 {
        format!("{}…", s.chars().take(300).collect::<String>())
    } else {
        s
    }
}

/// Sends `call`, asserts no input check refused it (nor a message of a batch)
/// and that it succeeded (this setup has no business refusal either).
async fn passes(h: &Harness, call: Call<'_>) -> Value {
    let (status, body) = call.send(h).await;
    let what = call.what();
    let code = body["error"]["code"].as_str().unwrap_or("");
    assert!(
        status != 400 && status != 413 && !(status == 422 && INPUT_CODES.contains(&code)),
        "{what}: valid against the document, refused by an input check: {status} {body}"
    );
    for r in body["results"].as_array().into_iter().flatten() {
        let code = r["error"]["code"].as_str().unwrap_or("");
        assert!(
            !INPUT_CODES.contains(&code),
            "{what}: message {} refused by an input check: {r}",
            r["index"]
        );
    }
    assert!((200..300).contains(&status), "{what}: {status} {body}");
    body
}

/// Sends `call` and asserts it is refused with `status` and `code`, and that
/// the document names `code` for it (`documented` is the field's or the
/// parameter's description).
async fn refused(h: &Harness, call: Call<'_>, status: u16, code: &str, documented: &str) {
    assert!(
        documented.contains(&format!("`{code}`")),
        "{}: the description does not name `{code}`: {documented}",
        call.what()
    );
    let (got, body) = call.send(h).await;
    assert_eq!(
        (got, body["error"]["code"].as_str().unwrap_or("")),
        (status, code),
        "{}: {body}",
        call.what()
    );
}

/// Every pattern the document declares, by place: `Schema.property` or
/// `param:name` (the same parameter on several operations must agree).
fn patterns(doc: &Value) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for (name, schema) in doc["components"]["schemas"].as_object().expect("schemas") {
        for (prop, s) in schema["properties"].as_object().into_iter().flatten() {
            if s.get("pattern").is_some() {
                out.insert(format!("{name}.{prop}"), s.clone());
            }
        }
    }
    for item in doc["paths"].as_object().expect("paths").values() {
        for op in item.as_object().expect("path item").values() {
            for p in op["parameters"].as_array().into_iter().flatten() {
                if p["schema"].get("pattern").is_some() {
                    let place = format!("param:{}", p["name"].as_str().unwrap());
                    let previous = out.insert(place.clone(), p["schema"].clone());
                    assert!(
                        previous.is_none_or(|s| s == p["schema"]),
                        "{place} has two schemas"
                    );
                }
            }
        }
    }
    out
}

/// The description of parameter `name` of `method path`.
fn param<'a>(doc: &'a Value, method: &str, path: &str, name: &str) -> &'a Value {
    doc["paths"][path][method]["parameters"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name))
        .unwrap_or_else(|| panic!("{method} {path}: no parameter {name}"))
}

/// The shortest and the longest example mobile numbers of libphonenumber's
/// metadata that the gateway accepts, among countries the default rules serve.
fn boundary_numbers() -> (String, String) {
    let countries = concat!(env!("CARGO_MANIFEST_DIR"), "/config/countries.toml");
    let rules = RuleBook::load(std::path::Path::new(countries)).expect("countries.toml");
    let own: BTreeSet<&str> = rules.countries().collect();
    let mut numbers: Vec<String> = phonenumber::metadata::DATABASE
        .iter()
        .filter_map(|meta| {
            let example = meta.descriptors().mobile()?.example()?;
            let r = parse_recipient(&format!("+{}{example}", meta.country_code())).ok()?;
            (!own.contains(r.country.as_str())).then_some(r.e164)
        })
        .collect();
    numbers.sort_by(|a, b| a.len().cmp(&b.len()).then(a.cmp(b)));
    let shortest = numbers.first().expect("numbers").clone();
    let longest = numbers.last().expect("numbers").clone();
    assert!(shortest.len() < longest.len(), "{shortest} {longest}");
    (shortest, longest)
}

/// Values at the edges of each pattern the document declares, by place.
fn samples(numbers: &(String, String), id: &str) -> BTreeMap<&'static str, Vec<String>> {
    let (shortest, longest) = numbers;
    let e164 = vec![shortest.clone(), longest.clone(), TO.to_owned()];
    let ulids = vec![
        id.to_owned(),
        id.to_lowercase(),
        "0".repeat(26),
        format!("7{}", "Z".repeat(25)),
        format!("7{}", "z".repeat(25)),
    ];
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    BTreeMap::from([
        ("SendRequest.to", e164.clone()),
        ("param:e164", e164),
        ("param:id", ulids.clone()),
        ("param:after", ulids),
        (
            "SendRequest.from",
            strings(&[
                "A",
                "_",
                "12",
                "ABCDEFGHIJK",
                "a.b-c_d 9Z",
                "A          ",
                "123",
                "+123",
                "123456789012345",
                "+123456789012345",
            ]),
        ),
        (
            "SendRequest.callback_url",
            strings(&["http://", "https://", "https://example.com/hook?x=1"]),
        ),
        (
            "param:Idempotency-Key",
            vec!["!".into(), "a b".into(), "~".repeat(255), "k-1".into()],
        ),
    ])
}

/// The samples match the served patterns and lengths, and every pattern has samples.
fn check_samples(doc: &Value, samples: &BTreeMap<&'static str, Vec<String>>) {
    let declared = patterns(doc);
    let places: BTreeSet<&str> = declared.keys().map(String::as_str).collect();
    let sampled: BTreeSet<&str> = samples.keys().copied().collect();
    assert_eq!(
        places, sampled,
        "patterns declared vs patterns sampled here"
    );
    for (place, schema) in &declared {
        let re = regex::Regex::new(schema["pattern"].as_str().unwrap()).expect("pattern");
        for s in &samples[place.as_str()] {
            let chars = s.chars().count() as u64;
            assert!(re.is_match(s), "{place}: {s:?} does not match {re}");
            assert!(
                schema["minLength"].as_u64().is_none_or(|m| chars >= m),
                "{place}: {s:?}"
            );
            assert!(
                schema["maxLength"].as_u64().is_none_or(|m| chars <= m),
                "{place}: {s:?}"
            );
        }
    }
}

/// `POST /v1/messages` bodies at the edges of `SendRequest`, with the key to send them with.
fn message_bodies(
    doc: &Value,
    samples: &BTreeMap<&str, Vec<String>>,
) -> Vec<(&'static str, Value)> {
    let props = &doc["components"]["schemas"]["SendRequest"]["properties"];
    let max_text = props["text"]["maxLength"].as_u64().expect("text maxLength") as usize;
    let min_text = props["text"]["minLength"].as_u64().expect("text minLength") as usize;
    let validity = &props["validity_s"];
    let mut kind_refs = Vec::new();
    refs(&props["kind"], &mut kind_refs);
    let kinds = resolve(doc, &kind_refs[0]).expect("Kind")["enum"].clone();
    let base = |text: String| json!({ "to": TO, "from": "ACME", "text": text, "kind": "otp" });
    let mut bodies = vec![(KEY, base("a".repeat(min_text)))];
    // The longest text of the worst characters, for every kind (GB appends its
    // opt-out text to marketing; the test account has the recipient's consent).
    for kind in kinds.as_array().expect("Kind is an enum") {
        for unit in ["😀", "€", "a😀"] {
            let text: String = unit.chars().cycle().take(max_text).collect();
            bodies.push((
                KEY,
                json!({ "to": TO, "from": "ACME", "text": text, "kind": kind }),
            ));
        }
    }
    for bound in ["minimum", "maximum"] {
        let mut body = base("validity".into());
        body["validity_s"] = validity[bound].clone();
        bodies.push((KEY, body));
    }
    let mut nulls = base("nulls".into());
    for field in [
        "kind",
        "validity_s",
        "callback_url",
        "client_ref",
        "send_at",
    ] {
        nulls[field] = Value::Null;
    }
    bodies.push((KEY, nulls));
    let mut extra = base("unknown fields are ignored".into());
    extra["extra"] = json!({ "any": [1, 2] });
    bodies.push((KEY, extra));
    for to in &samples["SendRequest.to"] {
        bodies.push((
            KEY,
            json!({ "to": to, "from": "ACME", "text": "to", "kind": "otp" }),
        ));
    }
    for from in &samples["SendRequest.from"] {
        bodies.push((
            OTHER_KEY,
            json!({ "to": TO, "from": from, "text": "from", "kind": "otp" }),
        ));
    }
    for url in &samples["SendRequest.callback_url"] {
        let mut body = base("callback".into());
        body["callback_url"] = url.as_str().into();
        bodies.push((KEY, body));
    }
    for at in [
        "1970-01-01T00:00:00Z",
        "2030-06-30T12:00:00.5-09:30",
        "2999-12-31T23:59:59.999999999+14:00",
        "2030-01-01t00:00:00z",
        "2030-06-30T23:59:60Z",
        "2030-01-01T00:00:00.1234567890123Z",
        "2030-01-01T00:00:00-00:00",
        "0001-01-01T00:00:00Z",
    ] {
        let mut body = base("scheduled".into());
        body["send_at"] = at.into();
        bodies.push((KEY, body));
    }
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_valid_against_the_document_pass_the_input_checks() {
    let h = Harness::start(SimConfig::default()).await;
    let (_, doc) = fetch_document(&h).await;
    let id = h
        .send_ok(json!({ "to": TO, "from": "ACME", "text": "id", "kind": "otp" }))
        .await;
    let numbers = boundary_numbers();
    let samples = samples(&numbers, &id);
    check_samples(&doc, &samples);

    // Path parameters: every preference route at the edges of `{e164}` (the
    // test's own recipient gets a consent, and no opt-out).
    for list in ["opt-outs", "consents"] {
        for e164 in [&numbers.0, &numbers.1] {
            for method in [Method::PUT, Method::GET, Method::DELETE] {
                passes(&h, Call::new(method, format!("/v1/{list}/{e164}"))).await;
            }
            let encoded = e164.replace('+', "%2B");
            passes(&h, Call::new(Method::GET, format!("/v1/{list}/{encoded}"))).await;
        }
    }
    passes(&h, Call::new(Method::PUT, format!("/v1/consents/{TO}"))).await;
    for ulid in &samples["param:id"] {
        let (status, body) = Call::new(Method::GET, format!("/v1/messages/{ulid}"))
            .send(&h)
            .await;
        let known = ulid.eq_ignore_ascii_case(&id);
        assert_eq!(
            status,
            if known { 200 } else { 404 },
            "GET /v1/messages/{ulid}: {body}"
        );
    }

    // Query parameters at their bounds.
    for (path, name) in [("/v1/inbound", "limit"), ("/admin/dlr/unmatched", "limit")] {
        let schema = &param(&doc, "get", path, name)["schema"];
        for bound in ["minimum", "maximum"] {
            let n = schema[bound]
                .as_u64()
                .unwrap_or_else(|| panic!("{path} {name} {bound}"));
            passes(&h, Call::new(Method::GET, format!("{path}?{name}={n}"))).await;
        }
    }
    for after in &samples["param:after"] {
        passes(
            &h,
            Call::new(Method::GET, format!("/v1/inbound?after={after}&limit=1")),
        )
        .await;
    }
    passes(
        &h,
        Call::new(Method::GET, "/admin/dlr/unmatched?carrier=sim"),
    )
    .await;

    // Bodies: each alone, then all in one batch per account.
    let bodies = message_bodies(&doc, &samples);
    for (key, body) in &bodies {
        passes(&h, Call::post("/v1/messages", body.clone()).key(key)).await;
    }
    for key in [KEY, OTHER_KEY] {
        let messages: Vec<&Value> = bodies
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, b)| b)
            .collect();
        let answer = passes(
            &h,
            Call::post("/v1/messages/batch", json!({ "messages": messages })).key(key),
        )
        .await;
        assert_eq!(answer["accepted"], messages.len(), "{answer}");
    }
    let batch = &doc["components"]["schemas"]["BatchRequest"]["properties"]["messages"];
    for bound in ["minItems", "maxItems"] {
        let n = batch[bound].as_u64().expect("messages bounds") as usize;
        let message = json!({ "to": TO, "from": "ACME", "text": "batch", "kind": "otp" });
        let body = json!({ "messages": vec![message; n] });
        let answer = passes(&h, Call::post("/v1/messages/batch", body)).await;
        assert_eq!(answer["accepted"], n, "{bound}");
    }

    // The Idempotency-Key header at its edges, on both routes.
    for (i, key) in samples["param:Idempotency-Key"].iter().enumerate() {
        let value = HeaderValue::from_str(key).expect("header value");
        let message =
            json!({ "to": TO, "from": "ACME", "text": format!("key {i}"), "kind": "otp" });
        passes(
            &h,
            Call::post("/v1/messages", message.clone()).idempotency(value.clone()),
        )
        .await;
        let batch = json!({ "messages": [message] });
        passes(
            &h,
            Call::post("/v1/messages/batch", batch).idempotency(value),
        )
        .await;
    }

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_just_outside_the_document_are_refused_with_the_code_it_names() {
    let h = Harness::start(SimConfig::default()).await;
    let (_, doc) = fetch_document(&h).await;

    // `{e164}` is declared with the parser's pattern on every preference route,
    // and `0` (or too few or too many digits) is refused as its description says.
    for list in ["opt-outs", "consents"] {
        let path = format!("/v1/{list}/{{e164}}");
        for method in ["get", "put", "delete"] {
            let p = param(&doc, method, &path, "e164");
            assert_eq!(p["schema"]["pattern"], E164_PATTERN, "{method} {path}");
            let described = p["description"].as_str().unwrap_or_default();
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            for outside in ["0", "+447", "+0447400123456", "+4474001234567890"] {
                let call = Call::new(m.clone(), format!("/v1/{list}/{outside}"));
                refused(&h, call, 422, "invalid_number", described).await;
            }
        }
    }

    // The body's exact constraints, one step outside each.
    let props = &doc["components"]["schemas"]["SendRequest"]["properties"];
    assert_eq!(props["to"]["pattern"], E164_PATTERN);
    let max_validity = props["validity_s"]["maximum"].as_u64().expect("maximum");
    // Sent by the account without a senders list, from a sender nobody owns.
    let base = json!({ "to": TO, "from": "OTHER", "text": "outside", "kind": "otp" });
    let with = |field: &str, value: Value| {
        let mut body = base.clone();
        body[field] = value;
        body
    };
    let cases = [
        ("to", json!("0"), 422, "invalid_number"),
        ("text", json!(""), 400, "malformed_request"),
        ("from", json!("ABCDEFGHIJKL"), 422, "sender_not_allowed"),
        ("from", json!("+12"), 422, "sender_not_allowed"),
        (
            "from",
            json!("+1234567890123456"),
            422,
            "sender_not_allowed",
        ),
        ("validity_s", json!(0), 422, "validity_invalid"),
        (
            "validity_s",
            json!(max_validity + 1),
            422,
            "validity_invalid",
        ),
        (
            "callback_url",
            json!("ftp://example.com"),
            400,
            "malformed_request",
        ),
    ];
    for (field, value, status, code) in cases {
        let described = props[field]["description"].as_str().unwrap_or_default();
        let call = Call::post("/v1/messages", with(field, value)).key(OTHER_KEY);
        refused(&h, call, status, code, described).await;
    }

    // Query parameters one step outside their bounds, a cursor that is not an id.
    for (path, name) in [("/v1/inbound", "limit"), ("/admin/dlr/unmatched", "limit")] {
        let p = param(&doc, "get", path, name);
        let described = p["description"].as_str().unwrap_or_default();
        let min = p["schema"]["minimum"].as_u64().expect("minimum");
        let max = p["schema"]["maximum"].as_u64().expect("maximum");
        for n in [min - 1, max + 1] {
            let call = Call::new(Method::GET, format!("{path}?{name}={n}"));
            refused(&h, call, 400, "malformed_request", described).await;
        }
    }
    let after = param(&doc, "get", "/v1/inbound", "after");
    let described = after["description"].as_str().unwrap_or_default();
    for outside in [
        "0".repeat(25),
        "0".repeat(27),
        format!("{}U", "0".repeat(25)),
    ] {
        let call = Call::new(Method::GET, format!("/v1/inbound?after={outside}"));
        refused(&h, call, 400, "malformed_request", described).await;
    }
    let id = param(&doc, "get", "/v1/messages/{id}", "id");
    let described = id["description"].as_str().unwrap_or_default();
    for outside in [
        "0".repeat(25),
        "0".repeat(27),
        format!("{}I", "0".repeat(25)),
    ] {
        let call = Call::new(Method::GET, format!("/v1/messages/{outside}"));
        refused(&h, call, 404, "not_found", described).await;
    }

    // Idempotency-Key: too long, not visible ASCII.
    let key = param(&doc, "post", "/v1/messages", "Idempotency-Key");
    let described = key["description"].as_str().unwrap_or_default();
    assert_eq!(key["schema"]["maxLength"], 255);
    for value in [
        HeaderValue::from_str(&"k".repeat(256)).unwrap(),
        HeaderValue::from_bytes("café".as_bytes()).unwrap(),
    ] {
        let call = Call::post("/v1/messages", base.clone())
            .key(OTHER_KEY)
            .idempotency(value);
        refused(&h, call, 400, "malformed_request", described).await;
    }

    h.stop().await;
}
