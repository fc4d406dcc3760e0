//! Opt-outs and consents, per account and recipient.
//!
//! Admission checks them for every message and the carrier stage checks
//! opt-outs again just before submit, so they are held in memory (loaded from
//! the store at start) and every change is made durable in the store before
//! it is acknowledged.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use dashmap::DashMap;

use crate::carrier::SubmitGuard;
use crate::message::{ErrorInfo, Message};
use crate::metrics::Metrics;
use crate::queue::{Preference, PreferenceKind, Store, StoreError};

/// Where a preference change came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The account's API call.
    Api,
    /// A keyword the recipient sent (STOP, START, …).
    MoKeyword,
}

impl Source {
    /// The name used in the API and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Api => "api",
            Source::MoKeyword => "mo_keyword",
        }
    }
}

/// The opt-out and consent lists of every account.
pub struct Preferences {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    entries: DashMap<(PreferenceKind, Arc<str>, String), Preference>,
    /// Where this node is in the store's change log (nodes sharing a store).
    cursor: tokio::sync::Mutex<Option<String>>,
}

impl Preferences {
    /// Loads every stored preference.
    pub async fn load(store: Arc<dyn Store>, metrics: Arc<Metrics>) -> Result<Self, StoreError> {
        // Where the change log ends before the load: later changes replay on top.
        let (cursor, _) = store.preference_changes(None).await?;
        let entries = DashMap::new();
        for p in store.load_preferences().await? {
            entries.insert((p.kind, Arc::from(p.account.as_str()), p.e164.clone()), p);
        }
        Ok(Self {
            store,
            metrics,
            entries,
            cursor: tokio::sync::Mutex::new(cursor),
        })
    }

    /// Takes in the opt-outs and consents other nodes sharing the store
    /// recorded since the last call (one store read; nothing to do for a
    /// store this node has alone). Called before admission, so a STOP taken
    /// by any node holds at every node at once, and periodically for the
    /// submit guard.
    pub async fn sync(&self) {
        if !self.store.shared() {
            return;
        }
        let mut cursor = self.cursor.lock().await;
        match self.store.preference_changes(cursor.clone()).await {
            Ok((next, changes)) => {
                for c in changes {
                    let key = (c.kind, Arc::from(c.account.as_str()), c.e164);
                    match c.value {
                        Some(p) => {
                            self.entries.insert(key, p);
                        }
                        None => {
                            self.entries.remove(&key);
                        }
                    }
                }
                *cursor = next;
            }
            Err(e) => tracing::warn!(error = %e, "cannot read other nodes' opt-outs and consents"),
        }
    }

    /// The recipient's preference of this kind with this account.
    pub fn get(&self, kind: PreferenceKind, account: &str, e164: &str) -> Option<Preference> {
        self.entries
            .get(&(kind, Arc::from(account), e164.to_owned()))
            .map(|p| p.clone())
    }

    /// Did the recipient opt out of this account?
    pub fn is_opted_out(&self, account: &str, e164: &str) -> bool {
        self.entries
            .contains_key(&(PreferenceKind::OptOut, Arc::from(account), e164.to_owned()))
    }

    /// Did the recipient consent to this account's marketing?
    pub fn has_consent(&self, account: &str, e164: &str) -> bool {
        self.entries
            .contains_key(&(PreferenceKind::Consent, Arc::from(account), e164.to_owned()))
    }

    /// Records the preference (durably first). Setting an existing one keeps its date.
    pub async fn set(
        &self,
        kind: PreferenceKind,
        account: &str,
        e164: &str,
        source: Source,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if self.get(kind, account, e164).is_some() {
            return Ok(());
        }
        let p = Preference {
            kind,
            account: account.to_owned(),
            e164: e164.to_owned(),
            since: now,
            source: source.as_str().to_owned(),
        };
        self.store
            .save_preference(kind, account, e164, Some(p.clone()))
            .await?;
        self.entries
            .insert((kind, Arc::from(account), e164.to_owned()), p);
        if kind == PreferenceKind::OptOut {
            self.metrics
                .optouts
                .with_label_values(&[source.as_str()])
                .inc();
        }
        Ok(())
    }

    /// Removes the preference (durably first).
    pub async fn clear(
        &self,
        kind: PreferenceKind,
        account: &str,
        e164: &str,
    ) -> Result<(), StoreError> {
        self.store
            .save_preference(kind, account, e164, None)
            .await?;
        self.entries
            .remove(&(kind, Arc::from(account), e164.to_owned()));
        Ok(())
    }
}

impl SubmitGuard for Preferences {
    /// A message whose recipient opted out after it was accepted is stopped
    /// just before submit (one in-memory lookup).
    fn refuse(&self, m: &Message) -> Option<ErrorInfo> {
        (!m.opt_out_exempt && self.is_opted_out(&m.account, &m.to)).then(|| {
            ErrorInfo::new(
                "opted_out",
                "The recipient opted out after the message was accepted; it was not sent.",
            )
        })
    }
}
