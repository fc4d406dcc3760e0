//! `GET /openapi.json`: fetched over HTTP from a running gateway, it is an
//! OpenAPI 3.x document that lists every route the router serves (and nothing
//! else), whose `$ref`s all resolve, whose operations answer what they say
//! they answer, and whose patterns and bounds are the handlers' input checks
//! ([`bounds`]): requests valid against it pass them, values just outside are
//! refused with the code its descriptions name.

#[path = "../common/mod.rs"]
mod common;

mod bounds;
mod support;

use std::collections::{BTreeSet, HashSet};

use common::{Harness, KEY};
use reqwest::Method;
use serde_json::{Value, json};
use smsgate_loadtest::sim::SimConfig;
use support::{
    ROUTES, TO, check_shape, documented, fetch_document, refs, resolve, response_schema,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_openapi_3_and_lists_every_route() {
    let h = Harness::start(SimConfig::default()).await;
    let (text, doc) = fetch_document(&h).await;

    let version = doc["openapi"].as_str().expect("openapi field");
    assert!(version.starts_with("3."), "openapi {version}");
    let spec = oas3::from_json(&text).expect("the document deserialises as OpenAPI 3.1");
    spec.validate_version()
        .expect("a supported OpenAPI version");
    assert!(
        doc["info"]["title"].is_string() && doc["info"]["version"].is_string(),
        "info"
    );

    // The list above and the document agree, both ways.
    let listed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let documented = documented(&doc);
    let missing: Vec<_> = listed.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&listed).collect();
    assert!(
        missing.is_empty(),
        "routes served but not documented: {missing:?}"
    );
    assert!(extra.is_empty(), "documented but not in ROUTES: {extra:?}");

    // Every path the router's source mounts is in the list (catches a route
    // added to src/api without a line here).
    let route_call = regex::Regex::new(r#"\.route\(\s*"([^"]+)""#).unwrap();
    let api = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
    let listed_paths: HashSet<&str> = ROUTES.iter().map(|(_, p)| *p).collect();
    let mut mounted = 0;
    for entry in std::fs::read_dir(&api).expect("src/api") {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let source = std::fs::read_to_string(&path).unwrap();
        for cap in route_call.captures_iter(&source) {
            mounted += 1;
            assert!(
                listed_paths.contains(&cap[1]),
                "{} mounts {} which the OpenAPI document does not list",
                path.display(),
                &cap[1]
            );
        }
    }
    assert!(
        mounted >= 10,
        "found only {mounted} .route( calls in src/api"
    );

    // Every operation has an id-less but complete shape: tags, responses, and
    // authenticated ones name the bearer scheme.
    let schemes = doc["components"]["securitySchemes"]
        .as_object()
        .expect("securitySchemes");
    assert_eq!(schemes["bearer"]["type"], "http");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    let mut operation_ids = HashSet::new();
    for (method, path) in &documented {
        let op = &doc["paths"][path][method];
        assert!(
            op["responses"].as_object().is_some_and(|r| !r.is_empty()),
            "{method} {path}: no responses"
        );
        let id = op["operationId"].as_str().expect("operationId");
        assert!(operation_ids.insert(id), "operationId {id} used twice");
        // Path parameters are exactly the path's `{name}`s, and required.
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        let in_path: BTreeSet<&str> = params
            .iter()
            .filter(|p| p["in"] == "path")
            .map(|p| {
                assert_eq!(p["required"], true, "{method} {path}: {p} not required");
                p["name"].as_str().unwrap()
            })
            .collect();
        let templated: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        assert_eq!(
            in_path, templated,
            "{method} {path}: path parameters (query ones need `parameter_in = Query`)"
        );
        for p in &params {
            assert!(
                ["path", "query", "header", "cookie"].contains(&p["in"].as_str().unwrap_or("")),
                "{method} {path}: parameter {p}"
            );
        }
        let public = ["/metrics", "/healthz", "/readyz", "/openapi.json"].contains(&path.as_str());
        let secured = op["security"]
            .as_array()
            .is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some()));
        assert_eq!(
            secured, !public,
            "{method} {path}: bearer security should be {}",
            !public
        );
    }

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ref_resolves_and_the_error_envelope_is_documented() {
    let h = Harness::start(SimConfig::default()).await;
    let (_, doc) = fetch_document(&h).await;

    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty(), "the document uses no $ref at all");
    for r in &all {
        assert!(r.starts_with("#/"), "non-local $ref {r}");
        assert!(resolve(&doc, r).is_some(), "$ref {r} does not resolve");
    }

    // The envelope and the codes.
    let schemas = &doc["components"]["schemas"];
    for name in [
        "ErrorEnvelope",
        "ErrorDetail",
        "ErrorCode",
        "SendRequest",
        "SendResponse",
        "MessageView",
    ] {
        assert!(schemas[name].is_object(), "schema {name} missing");
    }
    let codes: HashSet<&str> = schemas["ErrorCode"]["enum"]
        .as_array()
        .expect("ErrorCode is an enum")
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    // Every code the source can produce is documented: ApiError's
    // constructors and the compliance refusals.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut in_source = Vec::new();
    let error_rs = std::fs::read_to_string(root.join("src/api/error.rs")).unwrap();
    let api_new = regex::Regex::new(r#"StatusCode::[A-Z_]+,\s*"([a-z_]+)""#).unwrap();
    in_source.extend(api_new.captures_iter(&error_rs).map(|c| c[1].to_owned()));
    let compliance = std::fs::read_to_string(root.join("src/compliance/mod.rs")).unwrap();
    let refusal = regex::Regex::new(r#"Refusal::\w+\(_\)\s*=>\s*"([a-z_]+)""#).unwrap();
    in_source.extend(refusal.captures_iter(&compliance).map(|c| c[1].to_owned()));
    assert!(
        in_source.len() >= 20,
        "found only {in_source:?} in the source"
    );
    for code in &in_source {
        assert!(
            codes.contains(code.as_str()),
            "error code {code} is not in ErrorCode"
        );
    }

    // Real error bodies have the documented shape and a documented code.
    let envelope = &schemas["ErrorEnvelope"];
    let detail = &schemas["ErrorDetail"];
    let cases = [
        (
            Method::GET,
            "/v1/messages/01ARZ3NDEKTSV4RRFFQ69G5FAV",
            None,
            401,
        ),
        (Method::GET, "/no/such/route", Some(KEY), 404),
        (Method::DELETE, "/healthz", None, 405),
        (Method::PUT, "/v1/opt-outs/12345", Some(KEY), 422),
    ];
    for (method, path, key, status) in cases {
        let mut req = h.http.request(method.clone(), format!("{}{path}", h.base));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{method} {path}");
        let body: Value = resp.json().await.unwrap();
        check_shape(&format!("{method} {path}"), envelope, &body);
        check_shape(&format!("{method} {path}"), detail, &body["error"]);
        let code = body["error"]["code"].as_str().unwrap();
        assert!(
            codes.contains(code),
            "{method} {path}: code {code} undocumented"
        );
    }

    h.stop().await;
}

/// Each documented operation answers (not 404/405) with a status the document
/// lists for it, and a JSON body of the documented shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_answers_as_documented() {
    let h = Harness::start(SimConfig::default()).await;
    let (_, doc) = fetch_document(&h).await;
    let id = h
        .send_ok(json!({ "to": TO, "from": "ACME", "text": "Your code is 424242", "kind": "otp" }))
        .await;

    for (method, path) in documented(&doc) {
        let op = &doc["paths"][&path][&method];
        let url = format!(
            "{}{}",
            h.base,
            path.replace("{id}", &id).replace("{e164}", TO)
        );
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let mut req = h.http.request(m, &url).bearer_auth(KEY);
        if op.get("requestBody").is_some() {
            // The documented example body of POST /v1/messages (a batch of it).
            let message =
                json!({ "to": TO, "from": "ACME", "text": "Hello", "kind": "transactional" });
            let body = if path == "/v1/messages/batch" {
                json!({ "messages": [message] })
            } else {
                message
            };
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        assert!(
            status != 404 && status != 405,
            "{method} {path} answered {status}: {text}"
        );
        assert!(
            op["responses"].get(status.to_string()).is_some(),
            "{method} {path} answered {status}, which the document does not list: {text}"
        );
        assert!(
            (200..300).contains(&status),
            "{method} {path} answered {status}: {text}"
        );
        // The document itself is free-form JSON (the other tests read it);
        // every other JSON body must have a schema the shape check can use.
        let own_document = path == "/openapi.json";
        let schema = if own_document {
            None
        } else {
            response_schema(&doc, op, status)
        };
        if let Some(schema) = schema {
            let body: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"));
            check_shape(&format!("{method} {path}"), schema, &body);
        }
    }

    h.stop().await;
}
