//! The HTTP client that carries status webhooks: hyper's pooled HTTP/1
//! client for `http://` callbacks, reqwest (rustls) for `https://` ones.
//!
//! Why two: at 8,000 webhooks a second reqwest's request building and
//! response handling took a quarter of the gateway's worker CPU; hyper's own
//! client, which reqwest wraps, does the same POST with much less around it
//! (loadgen measured the same for its send path). reqwest stays for TLS.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{CONTENT_TYPE, HeaderValue, USER_AGENT};
use hyper_util::client::legacy::{self, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// Most response body read (and dropped) to keep a connection reusable.
const RESPONSE_BODY_LIMIT: usize = 64 * 1024;
/// Idle connections kept per host, and for how long.
const POOL_IDLE: Duration = Duration::from_secs(90);
/// Longest a connection attempt takes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

const AGENT: &str = concat!("smsgate/", env!("CARGO_PKG_VERSION"));

/// Posts webhook bodies; cheap to share.
pub(super) struct CallbackClient {
    plain: legacy::Client<HttpConnector, Full<Bytes>>,
    tls: reqwest::Client,
    timeout: Duration,
}

impl CallbackClient {
    /// A client whose requests each take at most `timeout` (connect included),
    /// keeping up to `per_host` idle connections to each receiver.
    pub(super) fn new(timeout: Duration, per_host: usize) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT.min(timeout)));
        let plain = legacy::Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(per_host)
            .build(connector);
        let tls = reqwest::Client::builder()
            .timeout(timeout)
            .pool_idle_timeout(POOL_IDLE)
            .user_agent(AGENT)
            .build()
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot build the webhook TLS client; using defaults");
                reqwest::Client::new()
            });
        Self {
            plain,
            tls,
            timeout,
        }
    }

    /// POSTs `body` as JSON with `headers`; `Err` says why it did not arrive
    /// (a non-2xx answer, a timeout, a connection error).
    pub(super) async fn post(
        &self,
        url: &str,
        headers: &[(&'static str, String)],
        body: Vec<u8>,
    ) -> Result<(), String> {
        match url.parse::<hyper::Uri>() {
            Ok(uri) if uri.scheme_str() == Some("http") => {
                self.post_plain(uri, headers, body).await
            }
            _ => self.post_tls(url, headers, body).await,
        }
    }

    async fn post_plain(
        &self,
        uri: hyper::Uri,
        headers: &[(&'static str, String)],
        body: Vec<u8>,
    ) -> Result<(), String> {
        let mut request = hyper::Request::post(uri)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(USER_AGENT, HeaderValue::from_static(AGENT));
        for (name, value) in headers {
            request = request.header(*name, value.as_str());
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let exchange = async {
            // `{:#}`: the error with its causes ("client error (Connect): …").
            let response = self
                .plain
                .request(request)
                .await
                .map_err(|e| format!("{:#}", anyhow::Error::new(e)))?;
            let status = response.status();
            // Read what the receiver sent so the connection can be reused.
            let _ = Limited::new(response.into_body(), RESPONSE_BODY_LIMIT)
                .collect()
                .await;
            Ok(status)
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(status)) if status.is_success() => Ok(()),
            Ok(Ok(status)) => Err(format!("HTTP {}", status.as_u16())),
            Ok(Err(why)) => Err(why),
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }

    async fn post_tls(
        &self,
        url: &str,
        headers: &[(&'static str, String)],
        body: Vec<u8>,
    ) -> Result<(), String> {
        let mut request = self
            .tls
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, value.as_str());
        }
        match request.send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("HTTP {}", r.status().as_u16())),
            Err(e) => Err(e.to_string()),
        }
    }
}
