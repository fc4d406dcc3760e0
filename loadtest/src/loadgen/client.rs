//! The HTTP side: one keep-alive connection pool, requests for smsgate's API (single and
//! batch) or from a template, and the answers read into accepted / refused.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;
use serde_json::Value;

use super::{config::Config, error::LoadgenError, traffic::Msg};

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// 2xx (or an accepted batch entry): the gateway's id when it gave one.
    Accepted {
        id: Option<String>,
        segments: Option<u32>,
    },
    /// Refused: the `error.code` of the envelope, `http_<status>` without one, or a
    /// transport failure (`timeout`, `connect`, `transport`).
    Refused { code: String },
}

/// A request body template with `{{name}}` placeholders.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    text: String,
    form: bool,
}

impl Template {
    pub(crate) fn new(text: String, content_type: &str) -> Template {
        Template {
            text,
            form: content_type.contains("x-www-form-urlencoded"),
        }
    }

    /// The body for `msg`, each value JSON-escaped (no quotes added) or percent-encoded.
    pub(crate) fn render(&self, msg: &Msg, callback_url: &str) -> String {
        let seq = msg.seq.to_string();
        let values: [(&str, &str); 7] = [
            ("to", &msg.to),
            ("from", &msg.from),
            ("text", &msg.text),
            ("kind", msg.kind.as_str()),
            ("token", &msg.token),
            ("seq", &seq),
            ("callback_url", callback_url),
        ];
        let mut out = self.text.clone();
        for (name, value) in values {
            let placeholder = format!("{{{{{name}}}}}");
            if out.contains(&placeholder) {
                let escaped = if self.form {
                    percent_encode(value)
                } else {
                    json_escape(value)
                };
                out = out.replace(&placeholder, &escaped);
            }
        }
        out
    }
}

fn json_escape(s: &str) -> String {
    let quoted = serde_json::to_string(s).unwrap_or_default();
    quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or_default()
        .to_owned()
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b));
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// smsgate's `POST /v1/messages` body.
#[derive(Serialize)]
struct Body<'a> {
    to: &'a str,
    from: &'a str,
    text: &'a str,
    kind: &'a str,
    client_ref: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    callback_url: Option<&'a str>,
}

#[derive(Serialize)]
struct BatchBody<'a> {
    messages: Vec<Body<'a>>,
}

/// Sends messages to the target.
#[derive(Debug)]
pub(crate) struct Client {
    http: reqwest::Client,
    endpoint: String,
    batch_endpoint: String,
    base: String,
    auth: Vec<HeaderValue>,
    template: Option<Template>,
    content_type: HeaderValue,
    callback_url: Option<String>,
    id_pointer: String,
}

impl Client {
    pub(crate) fn new(
        config: &Config,
        template: Option<Template>,
        callback_url: Option<String>,
    ) -> Result<Client, LoadgenError> {
        let mut headers = HeaderMap::new();
        for h in &config.headers {
            let (name, value) = h.split_once(':').unwrap_or((h, ""));
            let name = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|e| LoadgenError::Config(format!("header {h:?}: {e}")))?;
            let value = HeaderValue::from_str(value.trim())
                .map_err(|e| LoadgenError::Config(format!("header {h:?}: {e}")))?;
            headers.insert(name, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .pool_max_idle_per_host(config.connections)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .timeout(Duration::from_secs_f64(config.timeout_s))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(LoadgenError::Client)?;
        let auth = config
            .keys
            .iter()
            .take(config.account_count())
            .map(|k| {
                HeaderValue::from_str(&format!("Bearer {k}"))
                    .map_err(|e| LoadgenError::Config(format!("API key {k:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let base = config.url.trim_end_matches('/').to_owned();
        let (single, batch) = match &config.path {
            Some(path) => (format!("{base}{path}"), format!("{base}{path}")),
            None => (
                format!("{base}/v1/messages"),
                format!("{base}/v1/messages/batch"),
            ),
        };
        let content_type = if template.is_some() {
            &config.template_content_type
        } else {
            "application/json"
        };
        Ok(Client {
            http,
            endpoint: single,
            batch_endpoint: batch,
            base,
            auth,
            template,
            content_type: HeaderValue::from_str(content_type)
                .map_err(|e| LoadgenError::Config(format!("content type: {e}")))?,
            callback_url,
            id_pointer: config.id_pointer.clone(),
        })
    }

    /// The HTTP client (shared with the status poller and the simulator feed).
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    fn post(&self, url: &str, account: usize, body: String) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .post(url)
            .header(CONTENT_TYPE, self.content_type.clone())
            .body(body);
        if let Some(auth) = self.auth.get(account) {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        req
    }

    /// Sends one message.
    pub(crate) async fn send_one(&self, msg: &Msg) -> Reply {
        let body = match &self.template {
            Some(t) => t.render(msg, self.callback_url.as_deref().unwrap_or("")),
            None => serde_json::to_string(&self.body(msg)).unwrap_or_default(),
        };
        match self.post(&self.endpoint, msg.account, body).send().await {
            Ok(resp) => {
                let status = resp.status();
                let body = resp.bytes().await;
                match body {
                    Ok(bytes) if status.is_success() => {
                        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                        Reply::Accepted {
                            id: v
                                .pointer(&self.id_pointer)
                                .and_then(Value::as_str)
                                .map(str::to_owned),
                            segments: v
                                .get("segments")
                                .and_then(Value::as_u64)
                                .and_then(|s| u32::try_from(s).ok()),
                        }
                    }
                    Ok(bytes) => Reply::Refused {
                        code: error_code(status.as_u16(), &bytes),
                    },
                    Err(e) => Reply::Refused {
                        code: transport_code(&e),
                    },
                }
            }
            Err(e) => Reply::Refused {
                code: transport_code(&e),
            },
        }
    }

    /// Sends messages (all with the first one's key) in one `{"messages": [...]}` request; one
    /// reply per message, in order.
    pub(crate) async fn send_batch(&self, msgs: &[Msg]) -> Vec<Reply> {
        let account = msgs.first().map_or(0, |m| m.account);
        let body = BatchBody {
            messages: msgs.iter().map(|m| self.body(m)).collect(),
        };
        let body = serde_json::to_string(&body).unwrap_or_default();
        let all = |code: String| vec![Reply::Refused { code }; msgs.len()];
        let resp = match self.post(&self.batch_endpoint, account, body).send().await {
            Ok(resp) => resp,
            Err(e) => return all(transport_code(&e)),
        };
        let status = resp.status();
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return all(transport_code(&e)),
        };
        if !status.is_success() {
            return all(error_code(status.as_u16(), &bytes));
        }
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let Some(results) = v.get("results").and_then(Value::as_array) else {
            return all("batch_malformed_answer".to_owned());
        };
        let mut replies = all("batch_missing_result".to_owned());
        for (pos, r) in results.iter().enumerate() {
            let index = r
                .get("index")
                .and_then(Value::as_u64)
                .and_then(|i| usize::try_from(i).ok())
                .unwrap_or(pos);
            let Some(slot) = replies.get_mut(index) else {
                continue;
            };
            *slot = match r.get("error") {
                Some(e) if !e.is_null() => Reply::Refused {
                    code: e
                        .get("code")
                        .and_then(Value::as_str)
                        .unwrap_or("batch_error")
                        .to_owned(),
                },
                _ => Reply::Accepted {
                    id: r.get("id").and_then(Value::as_str).map(str::to_owned),
                    segments: r
                        .get("segments")
                        .and_then(Value::as_u64)
                        .and_then(|s| u32::try_from(s).ok()),
                },
            };
        }
        replies
    }

    fn body<'a>(&'a self, m: &'a Msg) -> Body<'a> {
        Body {
            to: &m.to,
            from: &m.from,
            text: &m.text,
            kind: m.kind.as_str(),
            client_ref: &m.token,
            callback_url: self.callback_url.as_deref(),
        }
    }

    /// `GET /v1/messages/{id}`: the status, when the answer has one.
    pub(crate) async fn status(&self, id: &str, account: usize) -> Option<String> {
        let mut req = self.http.get(format!("{}/v1/messages/{id}", self.base));
        if let Some(auth) = self.auth.get(account) {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        let resp = req.send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        let v: Value = resp.json().await.ok()?;
        v.get("status").and_then(Value::as_str).map(str::to_owned)
    }
}

/// The envelope's `error.code`, else `http_<status>`.
fn error_code(status: u16, body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/code")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| format!("http_{status}"))
}

fn transport_code(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "transport"
    }
    .to_owned()
}

/// Whether a status is final.
pub(crate) fn is_final(status: &str) -> bool {
    matches!(
        status,
        "delivered" | "undeliverable" | "expired" | "failed" | "rejected"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::config::Kind;

    fn msg() -> Msg {
        Msg {
            seq: 3,
            token: "LGx-3".into(),
            kind: Kind::Otp,
            to: "+447400000001".into(),
            from: "ACME".into(),
            text: "say \"hi\" & go".into(),
            account: 0,
        }
    }

    #[test]
    fn templates_escape_values() {
        let t = Template::new(
            r#"{"dst":"{{to}}","msg":"{{text}}","ref":"{{token}}","n":{{seq}}}"#.into(),
            "application/json",
        );
        let body = t.render(&msg(), "");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["msg"], "say \"hi\" & go");
        assert_eq!(v["n"], 3);
        let f = Template::new(
            "to={{to}}&text={{text}}".into(),
            "application/x-www-form-urlencoded",
        );
        assert_eq!(
            f.render(&msg(), ""),
            "to=%2B447400000001&text=say%20%22hi%22%20%26%20go"
        );
    }

    #[test]
    fn error_codes() {
        assert_eq!(
            error_code(422, br#"{"error":{"code":"invalid_number","message":"x"}}"#),
            "invalid_number"
        );
        assert_eq!(error_code(502, b"<html>"), "http_502");
    }
}
