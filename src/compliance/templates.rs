//! Registered templates (India's DLT): where a country requires them, the
//! text must match one of the account's templates for its sender, whose
//! `{#var#}` placeholders match any run of up to 30 characters.

use std::collections::HashMap;

use regex::Regex;

use super::Refusal;
use crate::config::{AccountConfig, ConfigError};

/// A placeholder in a registered template.
const VAR: &str = "{#var#}";

/// Every account's templates, compiled.
#[derive(Default)]
pub(crate) struct Templates {
    by_account: HashMap<String, Vec<(Option<String>, Regex)>>,
}

/// The anchored pattern of a template.
pub(crate) fn compile(template: &str) -> Result<Regex, regex::Error> {
    let parts: Vec<String> = template.split(VAR).map(regex::escape).collect();
    Regex::new(&format!("^{}$", parts.join("(?s:.{0,30})")))
}

impl Templates {
    pub(crate) fn from_accounts(accounts: &[AccountConfig]) -> Result<Self, ConfigError> {
        let mut by_account = HashMap::new();
        for a in accounts {
            let compiled = a
                .templates
                .iter()
                .map(|t| {
                    compile(&t.text)
                        .map(|re| (t.sender.clone(), re))
                        .map_err(|e| {
                            ConfigError::Invalid(format!("account {} template: {e}", a.id))
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            by_account.insert(a.id.clone(), compiled);
        }
        Ok(Self { by_account })
    }

    /// Ok when the text matches a template of the account for this sender.
    pub(crate) fn check(&self, account: &str, from: &str, text: &str) -> Result<(), Refusal> {
        let matched = self.by_account.get(account).is_some_and(|ts| {
            ts.iter().any(|(sender, re)| {
                sender.as_deref().is_none_or(|s| s == from) && re.is_match(text)
            })
        });
        if matched {
            Ok(())
        } else {
            Err(Refusal::TemplateNotRegistered(format!(
                "The text matches no template registered for sender '{from}'."
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_match_up_to_thirty_characters_and_the_rest_is_literal() {
        let re = compile("Your OTP is {#var#}. Valid for {#var#} min (a+b)").unwrap();
        assert!(re.is_match("Your OTP is 123456. Valid for 5 min (a+b)"));
        assert!(
            !re.is_match("Your OTP is 123456. Valid for 5 min (aab)"),
            "+ is literal"
        );
        assert!(!re.is_match(&format!(
            "Your OTP is {}. Valid for 5 min (a+b)",
            "9".repeat(31)
        )));
        assert!(
            !re.is_match("Hi! Your OTP is 1. Valid for 5 min (a+b)"),
            "anchored"
        );
    }
}
