//! In-memory [`Store`]: fast and simple, but everything is lost with the
//! process. For tests and throwaway runs; the durable embedded store is the
//! default.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::active::ActiveSet;
use super::store::{
    AppliedTransition, IdempotencyRecord, InboundRecord, OutboxPosition, Preference,
    PreferenceKind, Released, Store, StoreError, WebhookEvent,
};
use crate::message::{Applied, Message, MessageId, Transition};

/// A [`Store`] held in process memory.
pub struct MemoryStore {
    // A std mutex: every critical section is a few map operations and never
    // spans an `.await`, so an async mutex would only add overhead.
    active: Mutex<ActiveSet>,
    idempotency: Mutex<HashMap<(String, String), IdempotencyRecord>>,
    preferences: Mutex<HashMap<(PreferenceKind, String, String), Preference>>,
    inbound: Mutex<Vec<InboundRecord>>,
    /// Status webhooks waiting, by (due, message, rank).
    outbox: Mutex<BTreeMap<OutboxKey, WebhookEvent>>,
}

/// (due, message, rank): outbox order.
type OutboxKey = (DateTime<Utc>, MessageId, u8);

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            active: Mutex::new(ActiveSet::new(true)),
            idempotency: Mutex::new(HashMap::new()),
            preferences: Mutex::new(HashMap::new()),
            inbound: Mutex::new(Vec::new()),
            outbox: Mutex::new(BTreeMap::new()),
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

    fn held(&self, id: MessageId) -> Option<Message> {
        self.lock().get(&id).cloned()
    }

    fn release_memory(&self, _ids: &[MessageId]) {}

    fn pages(&self) -> bool {
        false
    }

    async fn apply(
        &self,
        batch: Vec<(MessageId, Transition)>,
    ) -> Result<Vec<AppliedTransition>, StoreError> {
        let mut active = self.lock();
        let mut outbox = self.outbox.lock().unwrap_or_else(|p| p.into_inner());
        Ok(batch
            .into_iter()
            .map(|(id, t)| {
                let result = active.apply(id, &t);
                if let Some((m, Applied::StatusChanged(_))) = &result
                    && let Some(e) = WebhookEvent::for_message(m, Utc::now())
                {
                    outbox.insert((e.due, e.message_id, e.rank), e);
                }
                result
            })
            .collect())
    }

    async fn find_by_smsc_id(
        &self,
        carrier: &str,
        smsc_id: &str,
    ) -> Result<Option<(MessageId, u32)>, StoreError> {
        Ok(self.lock().find_by_smsc_id(carrier, smsc_id))
    }

    async fn release_due(&self, now: DateTime<Utc>, limit: usize) -> Result<Released, StoreError> {
        let mut active = self.lock();
        let (due, next_due) = active.take_due(now, limit);
        let messages = due
            .into_iter()
            .filter_map(|id| active.apply(id, &Transition::Release))
            .filter(|(_, applied)| matches!(applied, Applied::StatusChanged(_)))
            .map(|(m, _)| m)
            .collect();
        Ok(Released { messages, next_due })
    }

    fn scheduled_count(&self) -> usize {
        self.lock().scheduled_count()
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

    async fn save_inbound(&self, records: Vec<InboundRecord>) -> Result<(), StoreError> {
        let mut inbound = self.inbound.lock().unwrap_or_else(|p| p.into_inner());
        inbound.extend(records);
        inbound.sort_by_key(|r| r.id);
        Ok(())
    }

    async fn list_inbound(
        &self,
        account: &str,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<InboundRecord>, StoreError> {
        let inbound = self.inbound.lock().unwrap_or_else(|p| p.into_inner());
        Ok(inbound
            .iter()
            .filter(|r| r.account == account && after.is_none_or(|a| r.id > a))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn webhooks_due(
        &self,
        after: Option<OutboxPosition>,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<WebhookEvent>, StoreError> {
        use std::ops::Bound;
        let outbox = self.outbox.lock().unwrap_or_else(|p| p.into_inner());
        let from = match after {
            Some(p) => Bound::Excluded((p.due, p.message_id, p.rank)),
            None => Bound::Unbounded,
        };
        Ok(outbox
            .range((from, Bound::Unbounded))
            .map(|(_, e)| e)
            .take_while(|e| e.due <= now)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn webhook_pending(&self, id: MessageId, rank: u8) -> Result<bool, StoreError> {
        let outbox = self.outbox.lock().unwrap_or_else(|p| p.into_inner());
        Ok(outbox
            .values()
            .any(|e| e.message_id == id && e.rank == rank))
    }

    async fn webhook_settle(
        &self,
        event: &WebhookEvent,
        retry: Option<WebhookEvent>,
    ) -> Result<(), StoreError> {
        let mut outbox = self.outbox.lock().unwrap_or_else(|p| p.into_inner());
        outbox.remove(&(event.due, event.message_id, event.rank));
        if let Some(next) = retry {
            outbox.insert((next.due, next.message_id, next.rank), next);
        }
        Ok(())
    }
}
