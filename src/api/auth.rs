//! API-key authentication: `Authorization: Bearer <key>`. Keys are held only
//! as SHA-256 hashes; a presented key is hashed and looked up, so lookup time
//! says nothing about how much of a key was right.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use super::AppState;
use super::error::ApiError;
use crate::config::{AccountConfig, ConfigError};

/// The accounts allowed to call the API, by key hash.
#[derive(Clone, Debug, Default)]
pub struct Accounts {
    by_key_hash: HashMap<[u8; 32], Arc<str>>,
    admins: std::collections::HashSet<Arc<str>>,
}

impl Accounts {
    /// Builds the table from config.
    pub fn from_config(accounts: &[AccountConfig]) -> Result<Self, ConfigError> {
        let mut by_key_hash = HashMap::new();
        let mut admins = std::collections::HashSet::new();
        for a in accounts {
            if a.admin {
                admins.insert(Arc::from(a.id.as_str()));
            }
            if by_key_hash
                .insert(a.key_hash()?, Arc::from(a.id.as_str()))
                .is_some()
            {
                return Err(ConfigError::Invalid(format!(
                    "account {}: the same API key is used by another account",
                    a.id
                )));
            }
        }
        Ok(Self {
            by_key_hash,
            admins,
        })
    }

    /// The account owning `key`, if any.
    pub fn authenticate(&self, key: &str) -> Option<Arc<str>> {
        let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        self.by_key_hash.get(&hash).cloned()
    }
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
        if state.accounts.admins.contains(&id) {
            Ok(Admin(id))
        } else {
            Err(ApiError::forbidden())
        }
    }
}
