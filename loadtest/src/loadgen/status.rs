//! Final statuses: a webhook receiver (an HTTP server whose URL goes out as `callback_url`)
//! and a poller of `GET /v1/messages/{id}` for a sample of messages.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, http::StatusCode};
use serde::Deserialize;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use super::{
    client::{Client, is_final},
    error::LoadgenError,
    stats::{Recorder, wall_us},
    traffic::find_token,
};

/// The webhook body fields used (smsgate's contract: `{ "id", "status", "client_ref", ... }`).
#[derive(Debug, Deserialize)]
struct Hook {
    status: String,
    #[serde(default)]
    client_ref: Option<String>,
}

#[derive(Clone)]
struct HookState {
    recorder: Recorder,
    prefix: Arc<str>,
    received: Arc<AtomicU64>,
}

/// A running webhook receiver.
#[derive(Debug)]
pub(crate) struct Receiver {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Webhook requests received (any status).
    pub received: Arc<AtomicU64>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Receiver {
    /// Listens on `listen`; final statuses of this run's messages (matched by the token in
    /// `client_ref`) go to the recorder.
    pub(crate) async fn start(
        listen: SocketAddr,
        recorder: Recorder,
        prefix: &str,
    ) -> Result<Receiver, LoadgenError> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| LoadgenError::Io {
                what: format!("webhook receiver: binding {listen}"),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| LoadgenError::Io {
            what: "webhook receiver: local address".to_owned(),
            source,
        })?;
        let received = Arc::new(AtomicU64::new(0));
        let state = HookState {
            recorder,
            prefix: Arc::from(prefix),
            received: Arc::clone(&received),
        };
        let app = Router::new().fallback(hook).with_state(state);
        let stop = CancellationToken::new();
        let shutdown = stop.clone();
        let task = tokio::spawn(async move {
            let serve =
                axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned());
            if let Err(error) = serve.await {
                eprintln!("loadgen: webhook receiver stopped: {error}");
            }
        });
        Ok(Receiver {
            addr,
            received,
            stop,
            task,
        })
    }

    /// Stops the server and waits for it (dropping its recorder handle).
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        // Open keep-alive connections could hold graceful shutdown; do not wait long.
        let abort = self.task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), self.task)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
}

async fn hook(State(s): State<HookState>, body: Bytes) -> StatusCode {
    s.received.fetch_add(1, Ordering::Relaxed);
    let Ok(hook) = serde_json::from_slice::<Hook>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    if is_final(&hook.status)
        && let Some(seq) = hook
            .client_ref
            .as_deref()
            .and_then(|r| find_token(r, &s.prefix))
    {
        s.recorder.fin(seq, hook.status, wall_us());
    }
    StatusCode::NO_CONTENT
}

/// Polls the status of sampled messages until final.
#[derive(Debug)]
pub(crate) struct Poller {
    client: Arc<Client>,
    recorder: Recorder,
    interval: Duration,
    /// Polls still running.
    pub active: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl Poller {
    pub(crate) fn new(client: Arc<Client>, recorder: Recorder, interval: Duration) -> Poller {
        Poller {
            client,
            recorder,
            interval,
            active: Arc::new(AtomicU64::new(0)),
            stop: CancellationToken::new(),
        }
    }

    /// Starts polling message `id` (sequence number `seq`, sent with key `account`).
    pub(crate) fn watch(&self, seq: u64, id: String, account: usize) {
        let client = Arc::clone(&self.client);
        let recorder = self.recorder.clone();
        let interval = self.interval;
        let active = Arc::clone(&self.active);
        let stop = self.stop.clone();
        active.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(interval) => {}
                }
                let status = tokio::select! {
                    _ = stop.cancelled() => break,
                    status = client.status(&id, account) => status,
                };
                if let Some(status) = status
                    && is_final(&status)
                {
                    recorder.fin(seq, status, wall_us());
                    break;
                }
            }
            active.fetch_sub(1, Ordering::Relaxed);
        });
    }

    /// Ends every poll.
    pub(crate) fn stop(&self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn webhook_final_statuses_reach_the_recorder() {
        let (recorder, task) = Recorder::start(false);
        let receiver = Receiver::start(([127, 0, 0, 1], 0).into(), recorder.clone(), "LGab-")
            .await
            .unwrap();
        let http = reqwest::Client::new();
        let url = format!("http://{}/hook", receiver.addr);
        for (body, expect) in [
            (
                r#"{"id":"1","status":"delivered","client_ref":"LGab-5"}"#,
                204,
            ),
            (
                r#"{"id":"2","status":"submitted","client_ref":"LGab-6"}"#,
                204,
            ),
            (r#"{"id":"3","status":"failed","client_ref":"LGzz-7"}"#, 204),
            ("not json", 400),
        ] {
            let resp = http.post(&url).body(body).send().await.unwrap();
            assert_eq!(resp.status().as_u16(), expect, "{body}");
        }
        assert_eq!(receiver.received.load(Ordering::Relaxed), 4);
        receiver.stop().await;
        drop(recorder);
        let collected = task.await.unwrap();
        assert_eq!(collected.finals.len(), 1);
        assert_eq!(collected.finals[&5].status, "delivered");
    }
}
