//! What the tests of the document share: fetching it, walking it, checking
//! bodies against its schemas.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::common::Harness;

/// Every (method, path) the router in `src/api/mod.rs` serves. A route added
/// there must be added here and documented with `#[utoipa::path]` (listed in
/// `src/api/openapi.rs`).
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/messages"),
    ("post", "/v1/messages/batch"),
    ("get", "/v1/messages/{id}"),
    ("get", "/v1/inbound"),
    ("get", "/v1/opt-outs/{e164}"),
    ("put", "/v1/opt-outs/{e164}"),
    ("delete", "/v1/opt-outs/{e164}"),
    ("get", "/v1/consents/{e164}"),
    ("put", "/v1/consents/{e164}"),
    ("delete", "/v1/consents/{e164}"),
    ("post", "/admin/reload"),
    ("get", "/admin/dlr/unmatched"),
    ("get", "/metrics"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/openapi.json"),
];

pub const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// A recipient that admission accepts (GB mobile).
pub const TO: &str = "+447400123456";

pub async fn fetch_document(h: &Harness) -> (String, Value) {
    // No Authorization header: the document is public.
    let resp = h
        .http
        .get(format!("{}/openapi.json", h.base))
        .send()
        .await
        .expect("GET /openapi.json");
    assert_eq!(resp.status().as_u16(), 200);
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "content-type {content_type}"
    );
    let text = resp.text().await.expect("body");
    let doc: Value = serde_json::from_str(&text).expect("/openapi.json is JSON");
    (text, doc)
}

/// (method, path) pairs the document lists.
pub fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("paths is an object");
    let mut out = BTreeSet::new();
    for (path, item) in paths {
        for method in METHODS {
            if item.get(*method).is_some() {
                out.insert((method.to_string(), path.clone()));
            }
        }
    }
    out
}

/// Follows a local JSON pointer (`#/components/schemas/X`).
pub fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    doc.pointer(pointer)
}

/// Every `$ref` string anywhere in `v`.
pub fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// The component schema a response body points at, if any.
pub fn response_schema<'a>(doc: &'a Value, op: &'a Value, status: u16) -> Option<&'a Value> {
    let response = &op["responses"][status.to_string()];
    let schema = response["content"]["application/json"].get("schema")?;
    let reference = schema["$ref"]
        .as_str()
        .unwrap_or_else(|| panic!("a {status} JSON body's schema is not a $ref: {schema}"));
    Some(resolve(doc, reference).unwrap_or_else(|| panic!("{reference} does not resolve")))
}

/// Checks a JSON body against an object schema's property names: every
/// required property is there and nothing undocumented is.
pub fn check_shape(what: &str, schema: &Value, body: &Value) {
    let props = schema["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("{what}: the schema has no properties to check: {schema}"));
    let body = body
        .as_object()
        .unwrap_or_else(|| panic!("{what}: body is not an object: {body}"));
    for key in body.keys() {
        assert!(
            props.contains_key(key),
            "{what}: body field {key:?} is not in the schema ({body:?})"
        );
    }
    for required in schema["required"].as_array().into_iter().flatten() {
        let required = required.as_str().unwrap();
        assert!(
            body.contains_key(required),
            "{what}: required field {required:?} missing from {body:?}"
        );
    }
}
