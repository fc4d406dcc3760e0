//! Inbound (MO) messages: each is recorded for the account it concerns (the
//! `GET /v1/inbound` listing), keywords change that account's opt-out list,
//! and STOP, START and HELP are answered with the account's configured text,
//! sent as a transactional message from the number the keyword went to.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::keywords::{Keyword, keyword};
use super::number::{Recipient, parse_recipient};
use super::preferences::{Preferences, Source};
use super::senders::SenderOwners;
use super::{Admission, Submission};
use crate::config::{AccountConfig, KeywordReplies};
use crate::dlr::{MoHandler, MoMessage};
use crate::message::{Kind, Message, MessageId};
use crate::metrics::Metrics;
use crate::queue::{InboundRecord, PreferenceKind, Queue, StoreError};

/// Records inbound messages, applies their keywords and answers them.
pub struct InboundHandler {
    preferences: Arc<Preferences>,
    admission: Arc<Admission>,
    queue: Arc<Queue>,
    metrics: Arc<Metrics>,
    /// Sender id or number → owning accounts.
    owners: SenderOwners,
    all_accounts: Vec<String>,
    replies: HashMap<String, KeywordReplies>,
    concat_ref: AtomicU8,
}

impl InboundHandler {
    /// Inbound handling for the configured accounts, their senders and replies.
    pub fn new(
        preferences: Arc<Preferences>,
        admission: Arc<Admission>,
        queue: Arc<Queue>,
        metrics: Arc<Metrics>,
        accounts: &[AccountConfig],
    ) -> Self {
        let owners = SenderOwners::from_accounts(accounts);
        Self {
            preferences,
            admission,
            queue,
            metrics,
            owners,
            all_accounts: accounts.iter().map(|a| a.id.clone()).collect(),
            replies: accounts
                .iter()
                .map(|a| (a.id.clone(), a.replies.clone()))
                .collect(),
            concat_ref: AtomicU8::new(rand::random()),
        }
    }

    /// Accounts an MO to `to` concerns: the owners of that number/sender, or —
    /// when nobody owns it — every account, so a STOP is never ignored.
    fn accounts_for(&self, to: &str) -> &[String] {
        self.owners
            .owners_of(to)
            .unwrap_or(self.all_accounts.as_slice())
    }

    /// The keyword the text is, in the words of the sender's country.
    fn keyword_of(&self, sender: &Recipient, text: &str) -> Option<Keyword> {
        let rules = self.admission.rules();
        let national = rules
            .for_country(&sender.country)
            .map(|r| r.opt_out_keywords.as_slice())
            .unwrap_or_default();
        keyword(text, national)
    }

    /// Changes the opt-out list of every concerned account.
    async fn apply_keyword(
        &self,
        kw: Keyword,
        accounts: &[String],
        e164: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        for account in accounts {
            match kw {
                Keyword::Stop => {
                    self.preferences
                        .set(
                            PreferenceKind::OptOut,
                            account,
                            e164,
                            Source::MoKeyword,
                            now,
                        )
                        .await?
                }
                Keyword::Start => {
                    self.preferences
                        .clear(PreferenceKind::OptOut, account, e164)
                        .await?
                }
                Keyword::Help => {}
            }
        }
        Ok(())
    }

    /// Queues the account's answer to a keyword (nothing when it is empty).
    /// The answer passes admission like any message, except that it reaches a
    /// recipient who has just opted out: it is the confirmation of that.
    async fn reply(
        &self,
        kw: Keyword,
        account: &str,
        to: &Recipient,
        from: &str,
        now: DateTime<Utc>,
    ) {
        let Some(replies) = self.replies.get(account) else {
            return;
        };
        let text = match kw {
            Keyword::Stop => &replies.stop,
            Keyword::Start => &replies.start,
            Keyword::Help => &replies.help,
        };
        if text.is_empty() {
            return;
        }
        let submission = Submission {
            account: account.to_owned(),
            to: to.e164.clone(),
            from: from.trim_start_matches('+').to_owned(),
            text: text.clone(),
            kind: Kind::Transactional,
            validity_s: None,
            send_at: None,
            client_ref: Some(format!("keyword-{}", kw.as_str())),
            callback_url: None,
            keyword_reply: true,
        };
        let new = match self.admission.admit(submission, now) {
            Ok(new) => new,
            Err(refused) => {
                tracing::warn!(%account, code = refused.code(), "keyword reply refused by admission");
                return;
            }
        };
        let message = Message::new(new, now, self.concat_ref.fetch_add(1, Ordering::Relaxed));
        match self.queue.enqueue(vec![message], None).await {
            Ok(()) => {
                self.metrics
                    .accepted
                    .with_label_values(&[Kind::Transactional.as_str()])
                    .inc();
            }
            Err(e) => tracing::warn!(%account, error = %e, "cannot queue keyword reply"),
        }
    }
}

#[async_trait]
impl MoHandler for InboundHandler {
    async fn handle(&self, carrier: &str, mo: MoMessage) -> Result<(), StoreError> {
        let now = Utc::now();
        let sender = parse_recipient(&format!("+{}", mo.from.trim().trim_start_matches('+'))).ok();
        let kw = sender.as_ref().and_then(|s| self.keyword_of(s, &mo.text));
        let accounts = self.accounts_for(&mo.to);
        let records = accounts
            .iter()
            .map(|account| InboundRecord {
                id: MessageId::generate(),
                account: account.clone(),
                from: sender
                    .as_ref()
                    .map_or_else(|| mo.from.clone(), |s| s.e164.clone()),
                to: mo.to.clone(),
                text: mo.text.clone(),
                carrier: carrier.to_owned(),
                keyword: kw.map(|k| k.as_str().to_owned()),
                received_at: now,
            })
            .collect();
        self.queue.save_inbound(records).await?;
        let (Some(kw), Some(sender)) = (kw, sender) else {
            return Ok(());
        };
        self.metrics
            .mo_keywords
            .with_label_values(&[kw.as_str()])
            .inc();
        self.apply_keyword(kw, accounts, &sender.e164, now).await?;
        tracing::info!(%carrier, keyword = kw.as_str(), accounts = accounts.len(), "MO keyword applied");
        if let Some(account) = accounts.first() {
            self.reply(kw, account, &sender, &mo.to, now).await;
        }
        Ok(())
    }
}
