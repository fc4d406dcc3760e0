//! `Idempotency-Key`: the same key from the same account within the
//! remembered window returns the first answer and sends nothing new. The
//! answer is stored with the message in one commit, so it survives restarts;
//! concurrent requests with one key are serialised here so only one of them
//! can create a message.

use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use tokio::sync::Notify;

use super::error::ApiError;

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
