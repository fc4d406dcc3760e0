//! The HTTP side: one keep-alive connection pool, requests for smsgate's API (single and
//! batch) or from a template, and the answers read into accepted / refused.
//!
//! The send path is the load generator's own cost per message, taken from the cores it shares
//! with the gateway, so it does the per-request work once up front: `http://` targets go
//! straight to hyper's pooled client with a pre-parsed URI and pre-built headers, and a 2xx
//! answer is read into a small borrowed struct. Other schemes (`https://`) and the side
//! traffic (status polls, the simulator's records) use reqwest.

use std::{borrow::Cow, error::Error as StdError, io, time::Duration};

use bytes::Bytes;
use http::{
    Method, Request, StatusCode, Uri,
    header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue},
};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{self, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{config::Config, error::LoadgenError, traffic::Msg};

/// Connect timeout of new connections.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle keep-alive connections are closed after this long.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// TCP keepalive probes on the connections (reqwest's default).
const TCP_KEEPALIVE: Duration = Duration::from_secs(15);
/// The JSON pointer to the id in smsgate's answer, read without building a `Value`.
const DEFAULT_ID_POINTER: &str = "/id";

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

/// The fields of smsgate's 2xx answer that loadgen keeps (others are skipped).
#[derive(Deserialize)]
struct Accepted<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    segments: Option<u64>,
}

/// smsgate's batch answer: one result per message.
#[derive(Deserialize)]
struct BatchAnswer<'a> {
    #[serde(borrow)]
    results: Vec<BatchEntry<'a>>,
}

/// One message's result in a batch answer.
#[derive(Deserialize)]
struct BatchEntry<'a> {
    index: Option<u64>,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    segments: Option<u64>,
    #[serde(borrow)]
    error: Option<EntryError<'a>>,
}

/// A refused batch entry's error.
#[derive(Deserialize)]
struct EntryError<'a> {
    #[serde(borrow)]
    code: Option<Cow<'a, str>>,
}

/// Reads a JSON object answer into `T`; `None` when it is not an object of that shape (the
/// caller then falls back to reading a `Value`, which tolerates anything).
fn parse_object<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Option<T> {
    // serde reads a struct from an array too; only objects take the fast path.
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    serde_json::from_slice(bytes).ok()
}

fn segments(n: Option<u64>) -> Option<u32> {
    n.and_then(|s| u32::try_from(s).ok())
}

/// How requests reach the target.
#[derive(Debug)]
enum Transport {
    /// `http://` targets: hyper's pooled client and the endpoints parsed once.
    Hyper {
        client: legacy::Client<HttpConnector, Full<Bytes>>,
        single: Uri,
        batch: Uri,
    },
    /// Any other scheme (`https://`): reqwest, which has TLS when built with it.
    Reqwest {
        single: reqwest::Url,
        batch: reqwest::Url,
    },
}

/// Which endpoint a request goes to.
#[derive(Debug, Clone, Copy)]
enum Endpoint {
    Single,
    Batch,
}

/// Sends messages to the target.
#[derive(Debug)]
pub(crate) struct Client {
    /// Status polls, the simulator's records and non-`http://` targets.
    http: reqwest::Client,
    transport: Transport,
    /// The whole-request timeout (send to last body byte).
    timeout: Duration,
    base: String,
    auth: Vec<HeaderValue>,
    /// The request headers per API key (content type, authorization, `--header`s, accept).
    headers: Vec<HeaderMap>,
    /// The request headers when there is no key for the account.
    anonymous: HeaderMap,
    template: Option<Template>,
    callback_url: Option<String>,
    id_pointer: String,
}

impl Client {
    pub(crate) fn new(
        config: &Config,
        template: Option<Template>,
        callback_url: Option<String>,
    ) -> Result<Client, LoadgenError> {
        let mut extra = HeaderMap::new();
        for h in &config.headers {
            let (name, value) = h.split_once(':').unwrap_or((h, ""));
            let name = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|e| LoadgenError::Config(format!("header {h:?}: {e}")))?;
            let value = HeaderValue::from_str(value.trim())
                .map_err(|e| LoadgenError::Config(format!("header {h:?}: {e}")))?;
            extra.insert(name, value);
        }
        let timeout = Duration::from_secs_f64(config.timeout_s);
        let http = reqwest::Client::builder()
            .default_headers(extra.clone())
            .pool_max_idle_per_host(config.connections)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .tcp_nodelay(true)
            .timeout(timeout)
            .connect_timeout(CONNECT_TIMEOUT)
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
        let content_type = HeaderValue::from_str(content_type)
            .map_err(|e| LoadgenError::Config(format!("content type: {e}")))?;
        // What reqwest sent: the request's own headers, then the defaults it lacks.
        let headers_with = |auth: Option<&HeaderValue>| {
            let mut h = HeaderMap::new();
            h.insert(CONTENT_TYPE, content_type.clone());
            if let Some(auth) = auth {
                h.insert(AUTHORIZATION, auth.clone());
            }
            for (name, value) in &extra {
                h.entry(name).or_insert_with(|| value.clone());
            }
            h.entry(ACCEPT)
                .or_insert_with(|| HeaderValue::from_static("*/*"));
            h
        };
        let transport = if base.starts_with("http://") {
            let uri = |s: &str| {
                s.parse::<Uri>()
                    .map_err(|e| LoadgenError::Config(format!("url {s:?}: {e}")))
            };
            Transport::Hyper {
                client: hyper_client(config.connections),
                single: uri(&single)?,
                batch: uri(&batch)?,
            }
        } else {
            let url = |s: &str| {
                reqwest::Url::parse(s).map_err(|e| LoadgenError::Config(format!("url {s:?}: {e}")))
            };
            Transport::Reqwest {
                single: url(&single)?,
                batch: url(&batch)?,
            }
        };
        Ok(Client {
            http,
            transport,
            timeout,
            base,
            headers: auth.iter().map(|a| headers_with(Some(a))).collect(),
            anonymous: headers_with(None),
            auth,
            template,
            callback_url,
            id_pointer: config.id_pointer.clone(),
        })
    }

    /// The HTTP client (shared with the status poller and the simulator feed).
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// POSTs `body` with `account`'s headers; the answer's status and body, or the transport
    /// error's code (`timeout`, `connect`, `transport`).
    async fn post(
        &self,
        endpoint: Endpoint,
        account: usize,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes), &'static str> {
        let headers = self.headers.get(account).unwrap_or(&self.anonymous).clone();
        let exchange = async {
            match &self.transport {
                Transport::Hyper {
                    client,
                    single,
                    batch,
                } => {
                    let mut req = Request::new(Full::new(Bytes::from(body)));
                    *req.method_mut() = Method::POST;
                    *req.uri_mut() = match endpoint {
                        Endpoint::Single => single.clone(),
                        Endpoint::Batch => batch.clone(),
                    };
                    *req.headers_mut() = headers;
                    let resp = client.request(req).await.map_err(|e| transport_code(&e))?;
                    let status = resp.status();
                    let bytes = resp
                        .into_body()
                        .collect()
                        .await
                        .map_err(|e| transport_code(&e))?
                        .to_bytes();
                    Ok((status, bytes))
                }
                Transport::Reqwest { single, batch } => {
                    let url = match endpoint {
                        Endpoint::Single => single.clone(),
                        Endpoint::Batch => batch.clone(),
                    };
                    let resp = self
                        .http
                        .post(url)
                        .headers(headers)
                        .body(body)
                        .send()
                        .await
                        .map_err(|e| transport_code(&e))?;
                    let status = resp.status();
                    let bytes = resp.bytes().await.map_err(|e| transport_code(&e))?;
                    Ok((status, bytes))
                }
            }
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or(Err("timeout"))
    }

    /// Sends one message.
    pub(crate) async fn send_one(&self, msg: &Msg) -> Reply {
        let body = match &self.template {
            Some(t) => t
                .render(msg, self.callback_url.as_deref().unwrap_or(""))
                .into_bytes(),
            None => serde_json::to_vec(&self.body(msg)).unwrap_or_default(),
        };
        match self.post(Endpoint::Single, msg.account, body).await {
            Ok((status, bytes)) if status.is_success() => self.accepted(&bytes),
            Ok((status, bytes)) => Reply::Refused {
                code: error_code(status.as_u16(), &bytes),
            },
            Err(code) => Reply::Refused {
                code: code.to_owned(),
            },
        }
    }

    /// The reply for a 2xx answer: the id at the configured JSON pointer and `segments`.
    fn accepted(&self, bytes: &[u8]) -> Reply {
        if self.id_pointer == DEFAULT_ID_POINTER
            && let Some(a) = parse_object::<Accepted>(bytes)
        {
            return Reply::Accepted {
                id: a.id.map(Cow::into_owned),
                segments: segments(a.segments),
            };
        }
        // Another pointer, or an answer not shaped like smsgate's: any JSON (or none) goes.
        let v: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
        Reply::Accepted {
            id: v
                .pointer(&self.id_pointer)
                .and_then(Value::as_str)
                .map(str::to_owned),
            segments: segments(v.get("segments").and_then(Value::as_u64)),
        }
    }

    /// Sends messages (all with the first one's key) in one `{"messages": [...]}` request; one
    /// reply per message, in order.
    pub(crate) async fn send_batch(&self, msgs: &[Msg]) -> Vec<Reply> {
        let account = msgs.first().map_or(0, |m| m.account);
        let body = BatchBody {
            messages: msgs.iter().map(|m| self.body(m)).collect(),
        };
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let all = |code: &str| {
            vec![
                Reply::Refused {
                    code: code.to_owned()
                };
                msgs.len()
            ]
        };
        let bytes = match self.post(Endpoint::Batch, account, body).await {
            Ok((status, bytes)) if status.is_success() => bytes,
            Ok((status, bytes)) => return all(&error_code(status.as_u16(), &bytes)),
            Err(code) => return all(code),
        };
        batch_replies(&bytes, msgs.len())
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

/// The replies for a 2xx batch answer of `n` messages: each result goes to its `index` (its
/// position without one); a message without a result is refused `batch_missing_result`.
fn batch_replies(bytes: &[u8], n: usize) -> Vec<Reply> {
    let all = |code: &str| {
        vec![
            Reply::Refused {
                code: code.to_owned()
            };
            n
        ]
    };
    let mut replies = all("batch_missing_result");
    if let Some(answer) = parse_object::<BatchAnswer>(bytes) {
        for (pos, r) in answer.results.into_iter().enumerate() {
            let index = r.index.and_then(|i| usize::try_from(i).ok()).unwrap_or(pos);
            if let Some(slot) = replies.get_mut(index) {
                *slot = match r.error {
                    Some(e) => Reply::Refused {
                        code: e.code.as_deref().unwrap_or("batch_error").to_owned(),
                    },
                    None => Reply::Accepted {
                        id: r.id.map(Cow::into_owned),
                        segments: segments(r.segments),
                    },
                };
            }
        }
        return replies;
    }
    // Not shaped like smsgate's answer: read it loosely.
    let v: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    let Some(results) = v.get("results").and_then(Value::as_array) else {
        return all("batch_malformed_answer");
    };
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
                segments: segments(r.get("segments").and_then(Value::as_u64)),
            },
        };
    }
    replies
}

/// hyper's pooled HTTP/1 client with the settings the reqwest client had: keep-alive pool of
/// `connections` idle connections, TCP_NODELAY, connect timeout.
fn hyper_client(connections: usize) -> legacy::Client<HttpConnector, Full<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    connector.set_keepalive(Some(TCP_KEEPALIVE));
    legacy::Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(connections)
        .build(connector)
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

/// The stable code of a transport failure: `timeout` when anything in the error's chain timed
/// out, else `connect` when the connection could not be made, else `transport`.
fn transport_code(e: &(dyn StdError + 'static)) -> &'static str {
    let mut connect = false;
    let mut cause = Some(e);
    while let Some(err) = cause {
        let timed_out = err
            .downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::TimedOut)
            || err
                .downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_timeout)
            || err
                .downcast_ref::<reqwest::Error>()
                .is_some_and(reqwest::Error::is_timeout);
        if timed_out {
            return "timeout";
        }
        connect |= err
            .downcast_ref::<legacy::Error>()
            .is_some_and(legacy::Error::is_connect)
            || err
                .downcast_ref::<reqwest::Error>()
                .is_some_and(reqwest::Error::is_connect);
        cause = err.source();
    }
    if connect { "connect" } else { "transport" }
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
    fn accepted_answers() {
        let client = Client::new(&Config::default(), None, None).unwrap();
        let accepted = |id: Option<&str>, segments: Option<u32>| Reply::Accepted {
            id: id.map(str::to_owned),
            segments,
        };
        for (body, expect) in [
            (
                &br#"{"id":"01K","status":"queued","segments":2,"country":"GB"}"#[..],
                accepted(Some("01K"), Some(2)),
            ),
            (br#" {"id":"a\"b"}"#, accepted(Some("a\"b"), None)),
            // Not smsgate's shape: read loosely, as before.
            (br#"{"id":7,"segments":1}"#, accepted(None, Some(1))),
            (br#"{"id":"x","segments":"2"}"#, accepted(Some("x"), None)),
            (br#"["x",2]"#, accepted(None, None)),
            (b"accepted", accepted(None, None)),
            (b"", accepted(None, None)),
        ] {
            assert_eq!(
                client.accepted(body),
                expect,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let config = Config {
            id_pointer: "/data/0/ref".into(),
            ..Config::default()
        };
        let client = Client::new(&config, None, None).unwrap();
        assert_eq!(
            client.accepted(br#"{"id":"no","data":[{"ref":"yes"}],"segments":3}"#),
            accepted(Some("yes"), Some(3))
        );
    }

    #[test]
    fn batch_answers() {
        let accepted = |id: &str, segments: u32| Reply::Accepted {
            id: Some(id.to_owned()),
            segments: Some(segments),
        };
        let refused = |code: &str| Reply::Refused {
            code: code.to_owned(),
        };
        let answer = br#"{"accepted":2,"refused":1,"results":[
            {"index":0,"id":"a","status":"queued","segments":1,"encoding":"gsm7","country":"GB"},
            {"index":2,"id":"c","status":"queued","segments":2,"error":null},
            {"index":1,"error":{"code":"invalid_number","message":"no"}}]}"#;
        assert_eq!(
            batch_replies(answer, 4),
            [
                accepted("a", 1),
                refused("invalid_number"),
                accepted("c", 2),
                refused("batch_missing_result"),
            ]
        );
        // Loosely shaped: positions stand in for indexes, an error without a code is generic.
        assert_eq!(
            batch_replies(br#"{"results":[{"id":"a","segments":1},{"error":"x"}]}"#, 2),
            [accepted("a", 1), refused("batch_error")]
        );
        assert_eq!(
            batch_replies(br#"{"messages":[]}"#, 2),
            [
                refused("batch_malformed_answer"),
                refused("batch_malformed_answer")
            ]
        );
    }

    /// The hyper path sends what the reqwest client sent, and reads the answer.
    #[tokio::test]
    async fn sends_smsgate_requests() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // Head and body arrive together (one write); read until the body's end.
            while !request.ends_with(b"}") {
                let n = conn.read(&mut buf).await.unwrap();
                assert!(n > 0, "connection closed early");
                request.extend_from_slice(&buf[..n]);
            }
            let answer = r#"{"id":"01K","status":"queued","segments":1}"#;
            let head = format!(
                "HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\n\r\n",
                answer.len()
            );
            conn.write_all(head.as_bytes()).await.unwrap();
            conn.write_all(answer.as_bytes()).await.unwrap();
            String::from_utf8(request).unwrap()
        });
        let config = Config {
            url: format!("http://{addr}/"),
            headers: vec!["X-Test: yes".into()],
            ..Config::default()
        };
        let client = Client::new(&config, None, Some("http://hook/x".into())).unwrap();
        assert_eq!(
            client.send_one(&msg()).await,
            Reply::Accepted {
                id: Some("01K".into()),
                segments: Some(1)
            }
        );
        let request = server.await.unwrap().to_ascii_lowercase();
        for line in [
            "post /v1/messages http/1.1\r\n",
            "\r\ncontent-type: application/json\r\n",
            "\r\nauthorization: bearer demo-key\r\n",
            "\r\nx-test: yes\r\n",
            "\r\naccept: */*\r\n",
            &format!("\r\nhost: {addr}\r\n"),
            r#""client_ref":"lgx-3","callback_url":"http://hook/x"}"#,
        ] {
            assert!(request.contains(line), "{line:?} not in {request}");
        }
    }

    #[tokio::test]
    async fn transport_failures_have_stable_codes() {
        // Nothing listens on a port just freed: connect.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let config = |addr: std::net::SocketAddr| Config {
            url: format!("http://{addr}"),
            timeout_s: 0.3,
            ..Config::default()
        };
        let client = Client::new(&config(addr), None, None).unwrap();
        assert_eq!(
            client.send_one(&msg()).await,
            Reply::Refused {
                code: "connect".into()
            }
        );
        // A server that accepts and never answers: timeout.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = Client::new(&config(listener.local_addr().unwrap()), None, None).unwrap();
        let hold = tokio::spawn(async move {
            let (conn, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(conn);
        });
        assert_eq!(
            client.send_batch(&[msg(), msg()]).await,
            vec![
                Reply::Refused {
                    code: "timeout".into()
                };
                2
            ]
        );
        hold.abort();
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
