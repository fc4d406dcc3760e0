//! Inbound (MO) keywords: STOP and friends opt the sender out of the account
//! that owns the number they wrote to; START/UNSTOP opt them back in.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;

use super::Admission;
use super::number::parse_recipient;
use super::preferences::{Preferences, Source};
use crate::config::AccountConfig;
use crate::dlr::{MoHandler, MoMessage};
use crate::queue::PreferenceKind;

/// Keywords that opt out (compared trimmed and case-insensitively).
pub const OPT_OUT_WORDS: &[&str] = &["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"];

/// Keywords that opt back in.
pub const OPT_IN_WORDS: &[&str] = &["START", "UNSTOP"];

/// What an MO text asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keyword {
    /// Opt out.
    Stop,
    /// Opt back in.
    Start,
}

/// The keyword an MO text is, if it is one (the whole text, any case and
/// spacing); `national` adds a country's own opt-out words (upper-cased).
pub fn keyword(text: &str, national: &[String]) -> Option<Keyword> {
    let word = text.trim().to_uppercase();
    if OPT_OUT_WORDS.contains(&word.as_str()) || national.contains(&word) {
        Some(Keyword::Stop)
    } else if OPT_IN_WORDS.contains(&word.as_str()) {
        Some(Keyword::Start)
    } else {
        None
    }
}

/// Applies MO keywords to the preference lists.
pub struct MoKeywords {
    preferences: Arc<Preferences>,
    admission: Arc<Admission>,
    /// Sender id or number (as the SMSC quotes it, without `+`) → owning accounts.
    owners: HashMap<String, Vec<String>>,
    all_accounts: Vec<String>,
}

impl MoKeywords {
    /// Keyword handling for the configured accounts and their senders.
    pub fn new(
        preferences: Arc<Preferences>,
        admission: Arc<Admission>,
        accounts: &[AccountConfig],
    ) -> Self {
        let mut owners: HashMap<String, Vec<String>> = HashMap::new();
        for a in accounts {
            for s in &a.senders {
                owners.entry(normalise(s)).or_default().push(a.id.clone());
            }
        }
        Self {
            preferences,
            admission,
            owners,
            all_accounts: accounts.iter().map(|a| a.id.clone()).collect(),
        }
    }

    /// Accounts an MO to `to` concerns: the owners of that number/sender, or —
    /// when nobody owns it — every account, so a STOP is never ignored.
    fn accounts_for(&self, to: &str) -> &[String] {
        self.owners
            .get(&normalise(to))
            .map_or(self.all_accounts.as_slice(), Vec::as_slice)
    }
}

fn normalise(addr: &str) -> String {
    addr.trim().trim_start_matches('+').to_uppercase()
}

#[async_trait]
impl MoHandler for MoKeywords {
    async fn handle(&self, carrier: &str, mo: MoMessage) {
        let with_plus = format!("+{}", mo.from.trim_start_matches('+'));
        let Ok(sender) = parse_recipient(&with_plus) else {
            tracing::warn!(%carrier, "MO from an unparseable number; ignored");
            return;
        };
        let rules = self.admission.rules();
        let national = rules
            .for_country(&sender.country)
            .map(|r| r.opt_out_keywords.as_slice())
            .unwrap_or_default();
        let Some(kw) = keyword(&mo.text, national) else {
            tracing::info!(%carrier, "MO message without a keyword");
            return;
        };
        let now = Utc::now();
        for account in self.accounts_for(&mo.to) {
            let result = match kw {
                Keyword::Stop => {
                    self.preferences
                        .set(
                            PreferenceKind::OptOut,
                            account,
                            &sender.e164,
                            Source::MoKeyword,
                            now,
                        )
                        .await
                }
                Keyword::Start => {
                    self.preferences
                        .clear(PreferenceKind::OptOut, account, &sender.e164)
                        .await
                }
            };
            match result {
                Ok(()) => tracing::info!(%carrier, %account, keyword = ?kw, "MO keyword applied"),
                Err(e) => tracing::error!(error = %e, %account, "cannot store MO keyword"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_are_whole_words_in_any_case_and_spacing() {
        let none: &[String] = &[];
        assert_eq!(keyword("STOP", none), Some(Keyword::Stop));
        assert_eq!(keyword("  stop \n", none), Some(Keyword::Stop));
        assert_eq!(keyword("Unsubscribe", none), Some(Keyword::Stop));
        assert_eq!(keyword("quit", none), Some(Keyword::Stop));
        assert_eq!(keyword("Start", none), Some(Keyword::Start));
        assert_eq!(keyword("unstop", none), Some(Keyword::Start));
        assert_eq!(keyword("please stop", none), None);
        assert_eq!(keyword("STOPS", none), None);
        assert_eq!(keyword("", none), None);
        assert_eq!(keyword("arret", none), None);
        assert_eq!(
            keyword(" Arret ", &["ARRET".to_owned()]),
            Some(Keyword::Stop)
        );
    }
}
