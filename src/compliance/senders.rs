//! Who may send from which sender id: a sender an account lists in its
//! `senders` is that account's own. No other account may send from it, so a
//! recipient's STOP to that sender (which opts them out of its owners) covers
//! every account that can send from it.

use std::collections::{HashMap, HashSet};

use super::Refusal;
use crate::config::AccountConfig;

/// Sender ids and numbers and the accounts that own them.
#[derive(Debug, Default)]
pub struct SenderOwners {
    /// Normalised sender → owning accounts.
    owners: HashMap<String, Vec<String>>,
    /// Accounts that list any sender (they may send only from those).
    listing: HashSet<String>,
}

impl SenderOwners {
    /// The owners the accounts' `senders` lists name.
    pub fn from_accounts(accounts: &[AccountConfig]) -> Self {
        let mut owned = Self::default();
        for a in accounts {
            for s in &a.senders {
                owned
                    .owners
                    .entry(normalise(s))
                    .or_default()
                    .push(a.id.clone());
                owned.listing.insert(a.id.clone());
            }
        }
        owned
    }

    /// The accounts owning `sender`, if any does.
    pub fn owners_of(&self, sender: &str) -> Option<&[String]> {
        self.owners.get(&normalise(sender)).map(Vec::as_slice)
    }

    /// Whether `account` may send from `from`: a sender some account owns
    /// only by its owners; an account that lists senders only from those;
    /// where the country requires registered senders (`registered`), only
    /// from a sender the account lists.
    pub fn check(
        &self,
        account: &str,
        from: &str,
        registered: Option<&str>,
    ) -> Result<(), Refusal> {
        match self.owners_of(from) {
            Some(owners) if owners.iter().any(|o| o == account) => Ok(()),
            Some(_) => Err(Refusal::SenderNotOwned(format!(
                "The sender '{from}' belongs to another account."
            ))),
            None if self.listing.contains(account) => Err(Refusal::SenderNotOwned(format!(
                "The sender '{from}' is not one of this account's senders."
            ))),
            None => match registered {
                Some(country) => Err(Refusal::SenderNotOwned(format!(
                    "{country} requires registered senders: '{from}' must be listed in this account's senders."
                ))),
                None => Ok(()),
            },
        }
    }
}

/// A sender as compared: without spaces around it or a leading `+`, upper
/// case (so "Acme" is not a way around "ACME"'s owner).
pub(crate) fn normalise(sender: &str) -> String {
    sender.trim().trim_start_matches('+').to_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(id: &str, senders: &[&str]) -> AccountConfig {
        let senders = senders
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>();
        toml::from_str(&format!(
            "id = \"{id}\"\napi_key = \"k-{id}\"\nsenders = [{}]",
            senders.join(", ")
        ))
        .expect("account")
    }

    #[test]
    fn a_sender_is_its_owners_alone() {
        let owners = SenderOwners::from_accounts(&[
            account("a", &["ACME", "+447400000001"]),
            account("b", &["BETA"]),
            account("c", &[]),
        ]);
        assert_eq!(owners.check("a", "ACME", None), Ok(()));
        assert_eq!(owners.check("a", "447400000001", None), Ok(()));
        for (who, from) in [
            ("b", "ACME"),
            ("c", "acme"),
            ("c", " ACME"),
            ("b", "+447400000001"),
        ] {
            assert!(
                matches!(
                    owners.check(who, from, None),
                    Err(Refusal::SenderNotOwned(_))
                ),
                "{who} from {from}"
            );
        }
        // An account that lists senders uses only those; one that lists none
        // may use a sender nobody owns, except where senders are registered.
        assert!(owners.check("b", "OTHER", None).is_err());
        assert_eq!(owners.check("c", "OTHER", None), Ok(()));
        assert!(owners.check("c", "OTHER", Some("IN")).is_err());
        assert_eq!(owners.check("b", "BETA", Some("IN")), Ok(()));
    }
}
