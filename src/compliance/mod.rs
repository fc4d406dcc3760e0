//! Admission: the checks every message passes before it is accepted.
//!
//! The foundation runs number validation, the sender format, validity and
//! length; the per-country rule engine (opt-out, consent, quiet hours, …) plugs
//! in here. First refusal wins, each with one stable code.

pub mod keywords;
pub mod number;
pub mod preferences;

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::config::MessagesConfig;
use crate::encoding;
use crate::message::{Kind, NewMessage};

pub use keywords::MoKeywords;
pub use number::{Recipient, parse_recipient};
pub use preferences::Preferences;

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
    /// The sender id is malformed or not allowed.
    #[error("{0}")]
    SenderNotAllowed(String),
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
            Refusal::SenderNotAllowed(_) => "sender_not_allowed",
            Refusal::TextTooLong(_) => "text_too_long",
            Refusal::ValidityInvalid(_) => "validity_invalid",
        }
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
}

/// The admission stage: turns a [`Submission`] into a [`NewMessage`] or a [`Refusal`].
#[derive(Clone)]
pub struct Admission {
    limits: MessagesConfig,
    preferences: Option<Arc<Preferences>>,
}

impl Admission {
    /// Admission with the configured limits and no opt-out lists (benches, tests).
    pub fn new(limits: MessagesConfig) -> Self {
        Self {
            limits,
            preferences: None,
        }
    }

    /// Admission that also refuses recipients who opted out.
    pub fn with_preferences(limits: MessagesConfig, preferences: Arc<Preferences>) -> Self {
        Self {
            limits,
            preferences: Some(preferences),
        }
    }

    /// Runs every check in order; the first refusal wins.
    pub fn admit(&self, s: Submission, now: DateTime<Utc>) -> Result<NewMessage, Refusal> {
        let recipient = parse_recipient(&s.to)?;
        if let Some(p) = &self.preferences
            && p.is_opted_out(&s.account, &recipient.e164)
        {
            return Err(Refusal::OptedOut(
                "The recipient opted out of this account's messages.".into(),
            ));
        }
        check_sender(&s.from)?;
        let expires_at = self.expiry(&s, now)?;
        let plan = encoding::plan(&s.text);
        if plan.segments > self.limits.max_segments {
            return Err(Refusal::TextTooLong(format!(
                "The text needs {} segments ({} {} units); the limit is {}.",
                plan.segments,
                plan.units,
                plan.encoding.as_str(),
                self.limits.max_segments
            )));
        }
        Ok(NewMessage {
            account: s.account,
            to: recipient.e164,
            country: recipient.country,
            from: s.from,
            text: s.text,
            kind: s.kind,
            encoding: plan.encoding,
            segments: plan.segments,
            client_ref: s.client_ref,
            callback_url: s.callback_url,
            send_at: s.send_at,
            expires_at,
        })
    }

    /// The instant after which the message must not be submitted.
    fn expiry(&self, s: &Submission, now: DateTime<Utc>) -> Result<DateTime<Utc>, Refusal> {
        let default = match s.kind {
            Kind::Otp => self.limits.otp_validity_s,
            Kind::Transactional => self.limits.transactional_validity_s,
            Kind::Marketing => self.limits.marketing_validity_s,
        };
        let validity = s.validity_s.unwrap_or(default);
        if validity == 0 || validity > self.limits.max_validity_s {
            return Err(Refusal::ValidityInvalid(format!(
                "validity_s must be between 1 and {} seconds.",
                self.limits.max_validity_s
            )));
        }
        let start = s.send_at.filter(|at| *at > now).unwrap_or(now);
        let seconds = i64::try_from(validity).unwrap_or(i64::MAX);
        Ok(start + chrono::Duration::seconds(seconds))
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
