//! In-memory [`Store`]: fast and simple, but everything is lost with the
//! process. For tests and throwaway runs; the durable embedded store is the
//! default.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::active::ActiveSet;
use super::store::{
    AppliedTransition, IdempotencyRecord, Preference, PreferenceKind, QueueDepths, Released, Store,
    StoreError,
};
use crate::message::{Message, MessageId, Transition};

/// A [`Store`] held in process memory.
pub struct MemoryStore {
    // A std mutex: every critical section is a few map operations and never
    // spans an `.await`, so an async mutex would only add overhead.
    active: Mutex<ActiveSet>,
    idempotency: Mutex<HashMap<(String, String), IdempotencyRecord>>,
    preferences: Mutex<HashMap<(PreferenceKind, String, String), Preference>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            active: Mutex::new(ActiveSet::new(true)),
            idempotency: Mutex::new(HashMap::new()),
            preferences: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ActiveSet> {
        // The set stays consistent between operations, so a panic elsewhere
        // while the lock was held does not make it unusable.
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn append(
        &self,
        messages: Vec<Message>,
        idempotency: Option<IdempotencyRecord>,
    ) -> Result<(), StoreError> {
        let mut active = self.lock();
        messages.into_iter().for_each(|m| active.insert(m));
        drop(active);
        if let Some(record) = idempotency {
            let key = (record.account.clone(), record.key.clone());
            self.idempotency
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key, record);
        }
        Ok(())
    }

    async fn idempotency(
        &self,
        account: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        Ok(self
            .idempotency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(account.to_owned(), key.to_owned()))
            .cloned())
    }

    async fn get(&self, id: MessageId) -> Result<Option<Message>, StoreError> {
        Ok(self.lock().get(&id).cloned())
    }

    async fn lease(&self, max: usize) -> Result<Vec<Message>, StoreError> {
        Ok(self.lock().lease(max))
    }

    async fn apply(
        &self,
        batch: Vec<(MessageId, Transition)>,
    ) -> Result<Vec<AppliedTransition>, StoreError> {
        let mut active = self.lock();
        Ok(batch
            .into_iter()
            .map(|(id, t)| active.apply(id, &t))
            .collect())
    }

    async fn find_by_smsc_id(
        &self,
        carrier: &str,
        smsc_id: &str,
    ) -> Result<Option<(MessageId, u32)>, StoreError> {
        Ok(self.lock().find_by_smsc_id(carrier, smsc_id))
    }

    async fn release_due(&self, now: DateTime<Utc>) -> Result<Released, StoreError> {
        Ok(self.lock().release_due(now).1)
    }

    fn depths(&self) -> QueueDepths {
        self.lock().depths()
    }

    async fn save_preference(
        &self,
        kind: PreferenceKind,
        account: &str,
        e164: &str,
        value: Option<Preference>,
    ) -> Result<(), StoreError> {
        let mut prefs = self.preferences.lock().unwrap_or_else(|p| p.into_inner());
        let key = (kind, account.to_owned(), e164.to_owned());
        match value {
            Some(p) => prefs.insert(key, p),
            None => prefs.remove(&key),
        };
        Ok(())
    }

    async fn load_preferences(&self) -> Result<Vec<Preference>, StoreError> {
        let prefs = self.preferences.lock().unwrap_or_else(|p| p.into_inner());
        Ok(prefs.values().cloned().collect())
    }
}
