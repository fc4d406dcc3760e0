//! Admission: the checks every message passes before it is accepted.
//!
//! The foundation runs number validation, the sender format, validity and
//! length; the per-country rule engine (opt-out, consent, quiet hours, …) plugs
//! in here. First refusal wins, each with one stable code.

mod caps;
pub mod inbound;
pub mod keywords;
pub mod number;
mod numbering;
pub mod preferences;
pub mod quiet;
pub mod rules;
pub mod senders;
mod templates;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};

use crate::config::{AccountConfig, ConfigError, MessagesConfig};
use crate::encoding;
use crate::message::{Kind, NewMessage};
use caps::FrequencyCaps;
use rules::{CountryRules, QuietAction, SenderType};
use senders::SenderOwners;
use templates::Templates;

pub use inbound::InboundHandler;
pub use number::{Recipient, parse_recipient, parse_recipient_uncached};
pub use preferences::Preferences;
pub use rules::{RuleBook, RulesError};

/// Why a message was refused at admission (HTTP 422). Each variant has one
/// stable code ([`Refusal::code`]) and carries the human sentence.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not a valid E.164 number that can receive SMS.
    #[error("{0}")]
    InvalidNumber(String),
    /// The number's country could not be determined or is not served.
    #[error("{0}")]
    UnsupportedCountry(String),
    /// The recipient opted out of this account.
    #[error("{0}")]
    OptedOut(String),
    /// Marketing without recorded consent where the country requires it.
    #[error("{0}")]
    ConsentRequired(String),
    /// The content matches a blocked pattern.
    #[error("{0}")]
    ContentBlocked(String),
    /// Marketing lacks the opt-out wording the country requires.
    #[error("{0}")]
    OptOutTextMissing(String),
    /// Outside the marketing window where the country says reject.
    #[error("{0}")]
    QuietHours(String),
    /// The text matches none of the account's registered templates (India DLT).
    #[error("{0}")]
    TemplateNotRegistered(String),
    /// The recipient already got the country's daily maximum of marketing.
    #[error("{0}")]
    FrequencyCapped(String),
    /// The sender id is malformed or not allowed.
    #[error("{0}")]
    SenderNotAllowed(String),
    /// The sender id belongs to another account, or the account may use
    /// only the senders it lists.
    #[error("{0}")]
    SenderNotOwned(String),
    /// More segments than allowed.
    #[error("{0}")]
    TextTooLong(String),
    /// validity_s is zero, too long, or send_at is past the validity.
    #[error("{0}")]
    ValidityInvalid(String),
}

impl Refusal {
    /// The stable machine code for the API and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::InvalidNumber(_) => "invalid_number",
            Refusal::UnsupportedCountry(_) => "unsupported_country",
            Refusal::OptedOut(_) => "opted_out",
            Refusal::ConsentRequired(_) => "consent_required",
            Refusal::ContentBlocked(_) => "content_blocked",
            Refusal::OptOutTextMissing(_) => "opt_out_text_missing",
            Refusal::QuietHours(_) => "quiet_hours",
            Refusal::TemplateNotRegistered(_) => "template_not_registered",
            Refusal::FrequencyCapped(_) => "frequency_capped",
            Refusal::SenderNotAllowed(_) => "sender_not_allowed",
            Refusal::SenderNotOwned(_) => "sender_not_owned",
            Refusal::TextTooLong(_) => "text_too_long",
            Refusal::ValidityInvalid(_) => "validity_invalid",
        }
    }
}

/// A refusal together with the recipient's country when it was known (for
/// metrics by country).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{refusal}")]
pub struct Refused {
    /// Why.
    pub refusal: Refusal,
    /// ISO country of the recipient, when the number parsed.
    pub country: Option<String>,
}

impl Refused {
    /// The stable machine code.
    pub fn code(&self) -> &'static str {
        self.refusal.code()
    }
}

/// A send request as admission sees it (already well-formed JSON).
#[derive(Clone, Debug)]
pub struct Submission {
    /// Sending account id.
    pub account: String,
    /// Recipient as given.
    pub to: String,
    /// Sender id as given.
    pub from: String,
    /// Text.
    pub text: String,
    /// Kind.
    pub kind: Kind,
    /// Requested validity in seconds.
    pub validity_s: Option<u64>,
    /// Requested send time.
    pub send_at: Option<DateTime<Utc>>,
    /// Client reference.
    pub client_ref: Option<String>,
    /// Webhook URL.
    pub callback_url: Option<String>,
    /// The gateway's own answer to an MO keyword (STOP/START/HELP
    /// confirmation): reaches the recipient even after their STOP.
    pub keyword_reply: bool,
}

/// The admission stage: turns a [`Submission`] into a [`NewMessage`] or a
/// [`Refusal`]. Runs, in order: number → opt-out → consent → sender →
/// content → quiet hours → length; the first refusal wins. OTP and
/// transactional traffic skip the marketing-only rules.
pub struct Admission {
    limits: MessagesConfig,
    preferences: Option<Arc<Preferences>>,
    rules: RwLock<Arc<RuleBook>>,
    templates: Templates,
    caps: FrequencyCaps,
    /// Which account owns which sender.
    senders: SenderOwners,
    /// Accounts' default webhook URLs (used when a message names none).
    default_callbacks: HashMap<String, String>,
}

impl Admission {
    /// Admission with the configured limits, no country rules and no opt-out
    /// lists (benches, tests).
    pub fn new(limits: MessagesConfig) -> Self {
        Self {
            limits,
            preferences: None,
            rules: RwLock::new(Arc::new(RuleBook::permissive())),
            templates: Templates::default(),
            caps: FrequencyCaps::default(),
            senders: SenderOwners::default(),
            default_callbacks: HashMap::new(),
        }
    }

    /// Admission with country rules and the opt-out/consent lists.
    pub fn with_rules(
        limits: MessagesConfig,
        rules: RuleBook,
        preferences: Arc<Preferences>,
    ) -> Self {
        Self {
            limits,
            preferences: Some(preferences),
            rules: RwLock::new(Arc::new(rules)),
            templates: Templates::default(),
            caps: FrequencyCaps::default(),
            senders: SenderOwners::default(),
            default_callbacks: HashMap::new(),
        }
    }

    /// Adds what the accounts' config says admission needs: their
    /// registered templates (checked where a country requires them), the
    /// senders each owns, and their default webhook URLs.
    pub fn with_accounts(mut self, accounts: &[AccountConfig]) -> Result<Self, ConfigError> {
        self.templates = Templates::from_accounts(accounts)?;
        self.senders = SenderOwners::from_accounts(accounts);
        self.default_callbacks = accounts
            .iter()
            .filter_map(|a| Some((a.id.clone(), a.callback_url.clone()?)))
            .collect();
        Ok(self)
    }

    /// The configured message limits (`[messages]`).
    pub fn limits(&self) -> &MessagesConfig {
        &self.limits
    }

    /// The rules in force.
    pub fn rules(&self) -> Arc<RuleBook> {
        self.rules.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the rules (after a successful reload).
    pub fn set_rules(&self, rules: RuleBook) {
        *self.rules.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(rules);
    }

    /// Runs every check in order; the first refusal wins.
    pub fn admit(&self, s: Submission, now: DateTime<Utc>) -> Result<NewMessage, Refused> {
        let recipient = parse_recipient(&s.to).map_err(|refusal| Refused {
            refusal,
            country: None,
        })?;
        let country = recipient.country.clone();
        self.admit_to(s, recipient, now).map_err(|refusal| Refused {
            refusal,
            country: Some(country),
        })
    }

    fn admit_to(
        &self,
        s: Submission,
        recipient: Recipient,
        now: DateTime<Utc>,
    ) -> Result<NewMessage, Refusal> {
        let book = self.rules();
        let rules = book.for_country(&recipient.country).ok_or_else(|| {
            Refusal::UnsupportedCountry(format!(
                "Messages to {} are not supported.",
                recipient.country
            ))
        })?;
        let marketing = s.kind == Kind::Marketing;
        let opt_out_exempt = s.keyword_reply || (s.kind == Kind::Otp && rules.otp_ignores_opt_out);
        if let Some(p) = &self.preferences {
            if !opt_out_exempt && p.is_opted_out(&s.account, &recipient.e164) {
                return Err(Refusal::OptedOut(
                    "The recipient opted out of this account's messages.".into(),
                ));
            }
            if marketing
                && rules.marketing_requires_consent
                && !p.has_consent(&s.account, &recipient.e164)
            {
                return Err(Refusal::ConsentRequired(format!(
                    "Marketing to {} needs the recipient's recorded consent (PUT /v1/consents/{{e164}}).",
                    recipient.country
                )));
            }
        }
        check_sender(&s.from)?;
        if !s.keyword_reply {
            // The gateway's answer to a keyword goes from the number it was sent to.
            let registered =
                (!rules.registered_senders.is_empty()).then_some(recipient.country.as_str());
            self.senders.check(&s.account, &s.from, registered)?;
        }
        check_sender_rules(rules, &s.from, marketing, &recipient.country)?;
        if rules.templates_required {
            self.templates.check(&s.account, &s.from, &s.text)?;
        }
        let text = check_content(rules, s.text, marketing, &recipient.country)?;
        let send_at = quiet_hours(
            rules,
            &recipient.e164,
            s.send_at,
            marketing,
            now,
            &recipient.country,
        )?;
        if marketing && rules.marketing_max_per_day > 0 {
            let at = send_at.filter(|t| *t > now).unwrap_or(now);
            self.caps
                .take(&s.account, &recipient.e164, rules, at)
                .map_err(Refusal::FrequencyCapped)?;
        }
        let expires_at = self.expiry(s.kind, s.validity_s, send_at, now)?;
        let plan = encoding::plan(&text);
        let max_segments = self.limits.max_segments.min(rules.max_segments);
        if plan.segments > max_segments {
            return Err(Refusal::TextTooLong(format!(
                "The text needs {} segments ({} {} units); the limit is {}.",
                plan.segments,
                plan.units,
                plan.encoding.as_str(),
                max_segments
            )));
        }
        let callback_url = s
            .callback_url
            .or_else(|| self.default_callbacks.get(&s.account).cloned());
        Ok(NewMessage {
            account: s.account,
            to: recipient.e164,
            country: recipient.country,
            from: s.from,
            text,
            kind: s.kind,
            encoding: plan.encoding,
            segments: plan.segments,
            client_ref: s.client_ref,
            callback_url,
            send_at,
            expires_at,
            opt_out_exempt,
        })
    }

    /// The instant after which the message must not be submitted.
    fn expiry(
        &self,
        kind: Kind,
        validity_s: Option<u64>,
        send_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, Refusal> {
        let default = match kind {
            Kind::Otp => self.limits.otp_validity_s,
            Kind::Transactional => self.limits.transactional_validity_s,
            Kind::Marketing => self.limits.marketing_validity_s,
        };
        let validity = validity_s.unwrap_or(default);
        if validity == 0 || validity > self.limits.max_validity_s {
            return Err(Refusal::ValidityInvalid(format!(
                "validity_s must be between 1 and {} seconds.",
                self.limits.max_validity_s
            )));
        }
        let start = send_at.filter(|at| *at > now).unwrap_or(now);
        let seconds = i64::try_from(validity).unwrap_or(i64::MAX);
        Ok(start + chrono::Duration::seconds(seconds))
    }
}

/// The country's sender rules: allowed kinds, registered ids, marketing prefix.
fn check_sender_rules(
    rules: &CountryRules,
    from: &str,
    marketing: bool,
    country: &str,
) -> Result<(), Refusal> {
    let kind = SenderType::of(from);
    if !rules.sender_types.contains(&kind) {
        return Err(Refusal::SenderNotAllowed(format!(
            "{kind:?} senders are not allowed for {country}."
        )));
    }
    if !rules.registered_senders.is_empty() && !rules.registered_senders.contains(from) {
        return Err(Refusal::SenderNotAllowed(format!(
            "'{from}' is not a registered sender for {country}."
        )));
    }
    if marketing
        && !rules.marketing_sender_prefix.is_empty()
        && !from.starts_with(&rules.marketing_sender_prefix)
    {
        return Err(Refusal::SenderNotAllowed(format!(
            "Marketing senders for {country} must start with '{}'.",
            rules.marketing_sender_prefix
        )));
    }
    Ok(())
}

/// Blocked patterns (every kind) and the opt-out wording (marketing): returns
/// the text to send, with the opt-out text appended where the country says so.
fn check_content(
    rules: &CountryRules,
    text: String,
    marketing: bool,
    country: &str,
) -> Result<String, Refusal> {
    if let Some(re) = rules.blocked_patterns.iter().find(|re| re.is_match(&text)) {
        return Err(Refusal::ContentBlocked(format!(
            "The text matches a pattern blocked for {country} ({}).",
            re.as_str()
        )));
    }
    if !marketing || rules.required_marketing_text.is_empty() {
        return Ok(text);
    }
    let lower = text.to_lowercase();
    if rules
        .required_marketing_text
        .iter()
        .any(|t| lower.contains(t.as_str()))
    {
        Ok(text)
    } else if rules.append_opt_out_text {
        Ok(format!("{text} {}", rules.opt_out_text))
    } else {
        Err(Refusal::OptOutTextMissing(format!(
            "Marketing to {country} must include one of: {}.",
            rules.required_marketing_text.join(", ")
        )))
    }
}

/// Marketing outside the country's window is deferred (a `send_at` at the
/// next allowed instant) or refused.
fn quiet_hours(
    rules: &CountryRules,
    to: &str,
    send_at: Option<DateTime<Utc>>,
    marketing: bool,
    now: DateTime<Utc>,
    country: &str,
) -> Result<Option<DateTime<Utc>>, Refusal> {
    if !marketing {
        return Ok(send_at);
    }
    let at = send_at.filter(|t| *t > now).unwrap_or(now);
    match quiet::next_allowed(rules, quiet::zones_for(rules, to), at) {
        None => Ok(send_at),
        Some(next) => match (rules.quiet_hours_action, next) {
            (QuietAction::Defer, Some(next)) => Ok(Some(next)),
            (QuietAction::Reject, _) | (_, None) => Err(Refusal::QuietHours(format!(
                "Marketing to {country} is not sent at this local time."
            ))),
        },
    }
}

/// Sender ids: alphanumeric (1–11 of A–Z a–z 0–9 space . - _), or a number /
/// short code (optional `+`, 3–15 digits).
fn check_sender(from: &str) -> Result<(), Refusal> {
    let digits = from.strip_prefix('+').unwrap_or(from);
    let numeric = (3..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
    let alphanumeric = (1..=11).contains(&from.len())
        && from
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b' ' | b'.' | b'-' | b'_'))
        && !from.trim().is_empty();
    if numeric || alphanumeric {
        Ok(())
    } else {
        Err(Refusal::SenderNotAllowed(format!(
            "'{}' is not a valid sender: use 1-11 letters, digits, space . - _ or a number of 3-15 digits.",
            from.chars().take(20).collect::<String>()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submission(text: &str) -> Submission {
        Submission {
            account: "a".into(),
            to: "+447400123456".into(),
            from: "ACME".into(),
            text: text.into(),
            kind: Kind::Otp,
            validity_s: None,
            send_at: None,
            client_ref: None,
            callback_url: None,
            keyword_reply: false,
        }
    }

    #[test]
    fn a_plain_otp_is_admitted_with_the_kind_default_validity() {
        let now = Utc::now();
        let m = Admission::new(MessagesConfig::default())
            .admit(submission("Your code is 123456"), now)
            .unwrap();
        assert_eq!(m.country, "GB");
        assert_eq!(m.segments, 1);
        assert_eq!(m.expires_at, now + chrono::Duration::seconds(300));
    }

    #[test]
    fn senders_are_checked() {
        for ok in ["ACME", "My Shop-1", "+447400123456", "12345", "A"] {
            assert!(check_sender(ok).is_ok(), "{ok}");
        }
        for bad in ["", "   ", "TwelveChars!", "ACME<script>", "ÄCME", "+12"] {
            assert!(check_sender(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn too_many_segments_is_text_too_long() {
        let limits = MessagesConfig {
            max_segments: 2,
            ..MessagesConfig::default()
        };
        let err = Admission::new(limits)
            .admit(submission(&"x".repeat(153 * 2 + 1)), Utc::now())
            .unwrap_err();
        assert_eq!(err.code(), "text_too_long");
    }

    #[test]
    fn zero_validity_is_refused() {
        let mut s = submission("hi");
        s.validity_s = Some(0);
        let err = Admission::new(MessagesConfig::default())
            .admit(s, Utc::now())
            .unwrap_err();
        assert_eq!(err.code(), "validity_invalid");
    }
}
