//! API-key authentication: `Authorization: Bearer <key>`. Keys are held only
//! as SHA-256 hashes. A presented key is hashed and compared with every
//! account's hash in constant time (no early exit, no hash-table probe), so
//! response time says nothing about which key, or how much of one, was right.
//!
//! The table also holds what the API applies per account: its send limits
//! and its default sender.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use super::AppState;
use super::error::ApiError;
use super::limits::Limits;
use crate::config::{AccountConfig, ConfigError};
use crate::shared_limit::SharedLimits;

/// What the API knows about one account.
#[derive(Debug)]
pub struct AccountSettings {
    /// Account id.
    pub id: Arc<str>,
    /// May call `/admin/*`.
    pub admin: bool,
    /// Sender used when a request gives no `from`.
    pub default_from: Option<String>,
    /// Rate limit and daily quota.
    pub limits: Limits,
}

/// The accounts allowed to call the API.
#[derive(Clone, Debug, Default)]
pub struct Accounts {
    /// (SHA-256 of the key, account id), scanned whole on every lookup.
    keys: Vec<([u8; 32], Arc<str>)>,
    by_id: HashMap<Arc<str>, Arc<AccountSettings>>,
}

impl Accounts {
    /// Builds the table from config.
    pub fn from_config(accounts: &[AccountConfig]) -> Result<Self, ConfigError> {
        let now = Instant::now();
        let mut keys: Vec<([u8; 32], Arc<str>)> = Vec::with_capacity(accounts.len());
        let mut by_id = HashMap::new();
        let mut seen = HashSet::new();
        for a in accounts {
            let id: Arc<str> = Arc::from(a.id.as_str());
            if !seen.insert(a.id.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "account id {} is used twice",
                    a.id
                )));
            }
            let hash = a.key_hash()?;
            if keys.iter().any(|(k, _)| *k == hash) {
                return Err(ConfigError::Invalid(format!(
                    "account {}: the same API key is used by another account",
                    a.id
                )));
            }
            keys.push((hash, id.clone()));
            by_id.insert(
                id.clone(),
                Arc::new(AccountSettings {
                    id,
                    admin: a.admin,
                    default_from: a.default_from.clone().filter(|f| !f.trim().is_empty()),
                    limits: Limits::new(&a.limits, now),
                }),
            );
        }
        Ok(Self { keys, by_id })
    }

    /// Holds every account's rate across the nodes sharing `limits`.
    pub fn share_limits(&mut self, limits: &SharedLimits) {
        for (id, settings) in &mut self.by_id {
            if let Some(s) = Arc::get_mut(settings) {
                s.limits.share(id, limits);
            }
        }
    }

    /// The account owning `key`, if any.
    pub fn authenticate(&self, key: &str) -> Option<Arc<str>> {
        let presented: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut found = None;
        for (hash, id) in &self.keys {
            if constant_time_eq(hash, &presented) {
                found = Some(id);
            }
        }
        found.cloned()
    }

    /// An authenticated account's settings.
    pub fn settings(&self, id: &str) -> Option<&Arc<AccountSettings>> {
        self.by_id.get(id)
    }

    fn is_admin(&self, id: &str) -> bool {
        self.by_id.get(id).is_some_and(|a| a.admin)
    }
}

/// Compares every byte whatever the first difference.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The authenticated caller's account id (an extractor).
#[derive(Clone, Debug)]
pub struct Account(pub Arc<str>);

impl FromRequestParts<AppState> for Account {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let key = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(ApiError::unauthorized)?;
        state
            .accounts
            .authenticate(key)
            .map(Account)
            .ok_or_else(ApiError::unauthorized)
    }
}

/// An authenticated admin account (an extractor): 401 without a valid key,
/// 403 for a non-admin account.
#[derive(Clone, Debug)]
pub struct Admin(pub Arc<str>);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Account(id) = Account::from_request_parts(parts, state).await?;
        if state.accounts.is_admin(&id) {
            Ok(Admin(id))
        } else {
            Err(ApiError::forbidden())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accounts(toml: &str) -> Result<Accounts, ConfigError> {
        #[derive(serde::Deserialize)]
        struct File {
            accounts: Vec<AccountConfig>,
        }
        let file: File = toml::from_str(toml).expect("toml");
        Accounts::from_config(&file.accounts)
    }

    #[test]
    fn keys_find_their_account_and_only_theirs() {
        let hash = hex::encode(Sha256::digest(b"key-b"));
        let a = accounts(&format!(
            "[[accounts]]\nid = \"a\"\napi_key = \"key-a\"\n\
             [[accounts]]\nid = \"b\"\napi_key_sha256 = \"{hash}\"\n"
        ))
        .unwrap();
        assert_eq!(a.authenticate("key-a").as_deref(), Some("a"));
        assert_eq!(a.authenticate("key-b").as_deref(), Some("b"));
        assert_eq!(a.authenticate("key-"), None);
        assert_eq!(a.authenticate(""), None);
    }

    #[test]
    fn a_key_or_an_id_used_twice_is_refused() {
        let err = accounts(
            "[[accounts]]\nid = \"a\"\napi_key = \"k\"\n[[accounts]]\nid = \"b\"\napi_key = \"k\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("same API key"), "{err}");
        let err = accounts(
            "[[accounts]]\nid = \"a\"\napi_key = \"k1\"\n[[accounts]]\nid = \"a\"\napi_key = \"k2\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("used twice"), "{err}");
    }

    #[test]
    fn constant_time_eq_compares_whole_hashes() {
        let a = [7u8; 32];
        let mut b = a;
        assert!(constant_time_eq(&a, &b));
        b[31] = 8;
        assert!(!constant_time_eq(&a, &b));
        b = a;
        b[0] = 0;
        assert!(!constant_time_eq(&a, &b));
    }
}
