//! `Idempotency-Key`: the same key from the same account on the same route
//! within the remembered window returns the first answer and sends nothing
//! new; the same key with another body is refused (the IETF Idempotency-Key
//! draft and Stripe do the same). The answer and the body's fingerprint are
//! stored with the messages in one commit, so they survive restarts;
//! concurrent requests with one key are serialised here so only one of them
//! can create a message. The single and the batch send both go through
//! [`once`].

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use super::AppState;
use super::error::ApiError;
use crate::queue::IdempotencyRecord;

/// Header name.
pub const HEADER: &str = "idempotency-key";

/// Longest accepted key.
const MAX_KEY_LEN: usize = 255;

/// How long a duplicate waits for the first request with its key.
const WAIT_FOR_FIRST: Duration = Duration::from_secs(10);

/// Keys whose first request is being processed right now.
#[derive(Default)]
pub struct InFlightKeys {
    keys: DashMap<(Arc<str>, String), Arc<Notify>>,
}

/// Held while a request owns its key; releases waiting duplicates on drop.
pub struct Claim<'a> {
    keys: &'a InFlightKeys,
    key: (Arc<str>, String),
    notify: Arc<Notify>,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.keys.keys.remove(&self.key);
        self.notify.notify_waiters();
    }
}

impl InFlightKeys {
    /// Claims `key` for `account`, waiting while another request holds it.
    pub async fn claim(&self, account: Arc<str>, key: String) -> Result<Claim<'_>, ApiError> {
        let deadline = tokio::time::Instant::now() + WAIT_FOR_FIRST;
        loop {
            let waiting = match self.keys.entry((account.clone(), key.clone())) {
                Entry::Vacant(v) => {
                    let notify = Arc::new(Notify::new());
                    v.insert(notify.clone());
                    return Ok(Claim {
                        keys: self,
                        key: (account, key),
                        notify,
                    });
                }
                Entry::Occupied(o) => o.get().clone(),
            };
            let notified = waiting.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Re-check: the holder may have finished between entry() and enable().
            if !self.keys.contains_key(&(account.clone(), key.clone())) {
                continue;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(ApiError::conflict(
                    "A request with this Idempotency-Key is still being processed.",
                ));
            }
        }
    }
}

/// The request's Idempotency-Key, if any; malformed keys are 400.
pub fn key_from(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(HEADER) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| ApiError::malformed("Idempotency-Key must be visible ASCII."))?
        .trim();
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(ApiError::malformed(format!(
            "Idempotency-Key must be 1 to {MAX_KEY_LEN} characters."
        )));
    }
    Ok(Some(key.to_owned()))
}

/// Which route a key was used on: a key is scoped to its account and route,
/// so one key on `POST /v1/messages` and on the batch route is two keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `POST /v1/messages`.
    Send,
    /// `POST /v1/messages/batch`.
    Batch,
}

impl Route {
    /// The key as stored: the single send keeps the client's key as it is
    /// (so answers stored before keys were scoped still replay), the batch
    /// route prefixes its name.
    fn scope(self, key: &str) -> String {
        match self {
            Route::Send => key.to_owned(),
            Route::Batch => format!("batch\u{0}{key}"),
        }
    }
}

/// SHA-256 of a request's meaning: its route and its body as parsed (field
/// order and whitespace do not change it).
pub type Fingerprint = [u8; 32];

/// The fingerprint of `body` (the parsed request) sent to `route`.
pub fn fingerprint<T: serde::Serialize>(route: Route, body: &T) -> Fingerprint {
    let mut hash = Sha256::new();
    hash.update(route.scope(""));
    hash.update([0]);
    // serde_json only fails on maps with non-string keys, which no request has.
    hash.update(serde_json::to_vec(body).unwrap_or_default());
    hash.finalize().into()
}

/// A keyed request that owns its key: what the handler stores with its answer.
#[derive(Clone, Debug)]
pub struct Keyed {
    key: String,
    fingerprint: Fingerprint,
}

impl Keyed {
    /// The record to commit together with the request's messages.
    pub fn record(
        &self,
        account: &str,
        status: StatusCode,
        body: Vec<u8>,
        at: DateTime<Utc>,
    ) -> IdempotencyRecord {
        IdempotencyRecord {
            account: account.to_owned(),
            key: self.key.clone(),
            status: status.as_u16(),
            body,
            created_at: at,
            fingerprint: Some(self.fingerprint.to_vec()),
        }
    }
}

/// Runs `accept` at most once per account, route and `Idempotency-Key`:
/// without a key it just runs; with one, a remembered answer is replayed
/// (`Idempotent-Replayed: true`) when the body is the same and refused with
/// 422 `idempotency_mismatch` when it is not; concurrent requests with the
/// key wait for the first, on this node and across nodes sharing the store.
pub async fn once<R, F, Fut>(
    state: &AppState,
    account: &Arc<str>,
    headers: &HeaderMap,
    route: Route,
    request: R,
    accept: F,
) -> Result<Response, ApiError>
where
    R: serde::Serialize,
    F: FnOnce(R, Option<Keyed>) -> Fut,
    Fut: Future<Output = Result<Response, ApiError>>,
{
    let Some(key) = key_from(headers)? else {
        return accept(request, None).await;
    };
    let keyed = Keyed {
        key: route.scope(&key),
        fingerprint: fingerprint(route, &request),
    };
    if let Some(first) = remembered(state, account, &keyed).await? {
        return Ok(first);
    }
    let _claim = state
        .idempotency
        .claim(account.clone(), keyed.key.clone())
        .await?;
    // The first request may have finished while we waited for the claim.
    if let Some(first) = remembered(state, account, &keyed).await? {
        return Ok(first);
    }
    if let Some(first) = claim_across_nodes(state, account, &keyed).await? {
        return Ok(first);
    }
    let key = keyed.key.clone();
    let answer = accept(request, Some(keyed)).await;
    release_across_nodes(state, account, &key).await;
    answer
}

/// How long a node holds an Idempotency-Key it is processing against the
/// other nodes sharing the store (released as soon as it has answered).
const CROSS_NODE_CLAIM: Duration = Duration::from_secs(30);
/// How long a request waits for another node's request with its key.
const CROSS_NODE_WAIT: Duration = Duration::from_secs(10);

fn claim_name(account: &str, key: &str) -> String {
    format!("idempotency:{account}\u{0}{key}")
}

/// Claims the key among every node sharing the store (nothing to do for a
/// store this node has alone). `Some(first)`: another node's request with
/// the key finished while this one waited, and this is its answer.
async fn claim_across_nodes(
    state: &AppState,
    account: &str,
    keyed: &Keyed,
) -> Result<Option<Response>, ApiError> {
    if !state.queue.shares_store() {
        return Ok(None);
    }
    let name = claim_name(account, &keyed.key);
    let deadline = tokio::time::Instant::now() + CROSS_NODE_WAIT;
    loop {
        if state.queue.claim(&name, CROSS_NODE_CLAIM).await? {
            // The other node may have answered and let go just before.
            let first = remembered(state, account, keyed).await;
            if !matches!(first, Ok(None)) {
                release_across_nodes(state, account, &keyed.key).await;
            }
            return first;
        }
        if let Some(first) = remembered(state, account, keyed).await? {
            return Ok(Some(first));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::conflict(
                "A request with this Idempotency-Key is still being processed.",
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Gives the cross-node claim back (it would expire anyway).
async fn release_across_nodes(state: &AppState, account: &str, key: &str) {
    if !state.queue.shares_store() {
        return;
    }
    if let Err(e) = state.queue.release_claim(&claim_name(account, key)).await {
        tracing::warn!(error = %e, "cannot release an Idempotency-Key claim; it expires");
    }
}

/// The stored first answer for this key, if still remembered; a different
/// body under the same key is refused.
async fn remembered(
    state: &AppState,
    account: &str,
    keyed: &Keyed,
) -> Result<Option<Response>, ApiError> {
    let Some(record) = state.queue.idempotency(account, &keyed.key).await? else {
        return Ok(None);
    };
    if record.created_at < Utc::now() - state.idempotency_window {
        return Ok(None);
    }
    // Records from before fingerprints were stored replay as they did.
    if record
        .fingerprint
        .as_deref()
        .is_some_and(|f| f != keyed.fingerprint.as_slice())
    {
        return Err(ApiError::idempotency_mismatch());
    }
    let status = StatusCode::from_u16(record.status).unwrap_or(StatusCode::ACCEPTED);
    Ok(Some(
        (
            status,
            [
                (header::CONTENT_TYPE, "application/json"),
                (HeaderName::from_static("idempotent-replayed"), "true"),
            ],
            record.body,
        )
            .into_response(),
    ))
}
