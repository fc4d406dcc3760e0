//! Per-country rules as data (`config/countries.toml`): parsed, validated
//! and resolved once (regexes compiled, zones and dates parsed) so admission
//! only reads them. A country entry overrides `[default]` key by key.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use chrono::{NaiveDate, NaiveTime, Weekday};
use chrono_tz::Tz;
use regex::Regex;
use serde::Deserialize;

/// Why a rules file was refused (the rules in force stay).
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Not valid TOML or unknown keys.
    #[error("invalid countries file: {0}")]
    Parse(#[from] toml::de::Error),
    /// A value does not make sense.
    #[error("invalid rule for {country}: {reason}")]
    Invalid {
        /// Country code or `default`.
        country: String,
        /// What is wrong.
        reason: String,
    },
}

/// Kinds of sender id.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum SenderType {
    /// Letters (and digits): "ACME".
    Alphanumeric,
    /// A long number: "+447400123456".
    Numeric,
    /// A short code: "12345".
    Shortcode,
}

impl SenderType {
    /// The type of a sender id (already checked for format).
    pub fn of(sender: &str) -> Self {
        let digits = sender.strip_prefix('+').unwrap_or(sender);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            SenderType::Alphanumeric
        } else if sender.starts_with('+') || digits.len() > 8 {
            SenderType::Numeric
        } else {
            SenderType::Shortcode
        }
    }
}

/// What to do with marketing outside the allowed window.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum QuietAction {
    /// Schedule it for the next allowed instant (status `scheduled`).
    #[default]
    Defer,
    /// Refuse with 422 `quiet_hours`.
    Reject,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowSpec {
    days: Vec<String>,
    start: String,
    end: String,
}

/// A rule set as written: every key optional.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Partial {
    sender_types: Option<Vec<SenderType>>,
    registered_senders: Option<Vec<String>>,
    marketing_requires_consent: Option<bool>,
    otp_ignores_opt_out: Option<bool>,
    required_marketing_text: Option<Vec<String>>,
    append_opt_out_text: Option<bool>,
    opt_out_text: Option<String>,
    marketing_sender_prefix: Option<String>,
    blocked_patterns: Option<Vec<String>>,
    max_segments: Option<u32>,
    timezones: Option<Vec<String>>,
    zone_prefixes: Option<std::collections::BTreeMap<String, String>>,
    quiet_hours_action: Option<QuietAction>,
    marketing_window: Option<WindowSpec>,
    holidays: Option<Vec<String>>,
    marketing_max_per_day: Option<u32>,
    opt_out_keywords: Option<Vec<String>>,
    templates_required: Option<bool>,
}

impl Partial {
    /// `self` over `base`, key by key.
    fn over(self, base: &Partial) -> Partial {
        macro_rules! pick {
            ($($f:ident),*) => { Partial { $($f: self.$f.or_else(|| base.$f.clone())),* } };
        }
        pick!(
            sender_types,
            registered_senders,
            marketing_requires_consent,
            otp_ignores_opt_out,
            required_marketing_text,
            append_opt_out_text,
            opt_out_text,
            marketing_sender_prefix,
            blocked_patterns,
            max_segments,
            timezones,
            zone_prefixes,
            quiet_hours_action,
            marketing_window,
            holidays,
            marketing_max_per_day,
            opt_out_keywords,
            templates_required
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    default: Option<Partial>,
    #[serde(default)]
    countries: HashMap<String, Partial>,
}

/// The days and local hours when marketing may be sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// Allowed weekdays, Monday first.
    pub days: [bool; 7],
    /// Local start (inclusive).
    pub start: NaiveTime,
    /// Local end (exclusive).
    pub end: NaiveTime,
}

/// One country's resolved rules.
#[derive(Clone, Debug)]
pub struct CountryRules {
    /// Allowed sender kinds.
    pub sender_types: Vec<SenderType>,
    /// When non-empty, the only allowed senders.
    pub registered_senders: HashSet<String>,
    /// Marketing needs recorded consent.
    pub marketing_requires_consent: bool,
    /// OTPs go even to opted-out recipients.
    pub otp_ignores_opt_out: bool,
    /// Marketing must contain one of these (lower-cased).
    pub required_marketing_text: Vec<String>,
    /// Append `opt_out_text` instead of refusing.
    pub append_opt_out_text: bool,
    /// Text appended for the opt-out path.
    pub opt_out_text: String,
    /// Marketing senders must start with this.
    pub marketing_sender_prefix: String,
    /// Content refused everywhere.
    pub blocked_patterns: Vec<Regex>,
    /// Most segments.
    pub max_segments: u32,
    /// The country's zones.
    pub timezones: Vec<Tz>,
    /// Number prefixes that pin a number to one of the zones, longest first.
    pub zone_prefixes: Vec<(String, Tz)>,
    /// Outside the window: defer or reject.
    pub quiet_hours_action: QuietAction,
    /// When marketing may go (none = any time).
    pub marketing_window: Option<Window>,
    /// Local dates without marketing.
    pub holidays: HashSet<NaiveDate>,
    /// Marketing per recipient per account per local day (0 = no cap).
    pub marketing_max_per_day: u32,
    /// Extra national STOP words (upper-cased).
    pub opt_out_keywords: Vec<String>,
    /// Text must match a registered template (India DLT).
    pub templates_required: bool,
}

/// Every country's rules, and the default for the rest.
#[derive(Clone, Debug)]
pub struct RuleBook {
    default: Option<CountryRules>,
    countries: HashMap<String, CountryRules>,
}

/// The rules that apply when a file says nothing.
fn builtin() -> Partial {
    Partial {
        sender_types: Some(vec![
            SenderType::Alphanumeric,
            SenderType::Numeric,
            SenderType::Shortcode,
        ]),
        registered_senders: Some(Vec::new()),
        marketing_requires_consent: Some(false),
        otp_ignores_opt_out: Some(false),
        required_marketing_text: Some(Vec::new()),
        append_opt_out_text: Some(false),
        opt_out_text: Some("Reply STOP to opt out".into()),
        marketing_sender_prefix: Some(String::new()),
        blocked_patterns: Some(Vec::new()),
        max_segments: Some(10),
        timezones: Some(Vec::new()),
        zone_prefixes: None,
        quiet_hours_action: Some(QuietAction::Defer),
        marketing_window: None,
        holidays: Some(Vec::new()),
        marketing_max_per_day: Some(0),
        opt_out_keywords: Some(Vec::new()),
        templates_required: Some(false),
    }
}

impl RuleBook {
    /// Rules with no country entries: the built-in default everywhere.
    pub fn permissive() -> Self {
        let default = resolve("default", builtin()).ok();
        Self {
            default,
            countries: HashMap::new(),
        }
    }

    /// Reads and validates a countries file.
    pub fn load(path: &Path) -> Result<Self, RulesError> {
        let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses and validates countries TOML.
    pub fn parse(text: &str) -> Result<Self, RulesError> {
        let file: RulesFile = toml::from_str(text)?;
        let base = builtin();
        let default_partial = file.default.map(|d| d.over(&base));
        let default = default_partial
            .clone()
            .map(|d| resolve("default", d))
            .transpose()?;
        let inherit = default_partial.unwrap_or(base);
        let mut countries = HashMap::new();
        for (code, partial) in file.countries {
            if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(RulesError::Invalid {
                    country: code,
                    reason: "country keys are ISO 3166 alpha-2 codes, e.g. FR".into(),
                });
            }
            let rules = resolve(&code, partial.over(&inherit))?;
            countries.insert(code, rules);
        }
        Ok(Self { default, countries })
    }

    /// The rules for a country; `None` when it has no entry and there is no default.
    pub fn for_country(&self, country: &str) -> Option<&CountryRules> {
        self.countries.get(country).or(self.default.as_ref())
    }

    /// Country codes with an entry of their own.
    pub fn countries(&self) -> impl Iterator<Item = &str> {
        self.countries.keys().map(String::as_str)
    }

    /// Every rule set in the book: the default's and each country's.
    pub fn all(&self) -> impl Iterator<Item = &CountryRules> {
        self.default.iter().chain(self.countries.values())
    }
}

fn resolve(country: &str, p: Partial) -> Result<CountryRules, RulesError> {
    let invalid = |reason: String| RulesError::Invalid {
        country: country.to_owned(),
        reason,
    };
    let blocked_patterns = p
        .blocked_patterns
        .unwrap_or_default()
        .iter()
        .map(|r| Regex::new(r).map_err(|e| invalid(format!("blocked pattern {r:?}: {e}"))))
        .collect::<Result<_, _>>()?;
    let timezones = p
        .timezones
        .unwrap_or_default()
        .iter()
        .map(|z| {
            z.parse::<Tz>()
                .map_err(|_| invalid(format!("unknown time zone {z:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let holidays = p
        .holidays
        .unwrap_or_default()
        .iter()
        .map(|d| {
            NaiveDate::parse_from_str(d, "%Y-%m-%d")
                .map_err(|_| invalid(format!("holiday {d:?} is not YYYY-MM-DD")))
        })
        .collect::<Result<_, _>>()?;
    let marketing_window = p
        .marketing_window
        .map(|w| window(&w).map_err(invalid))
        .transpose()?;
    let mut zone_prefixes = p
        .zone_prefixes
        .unwrap_or_default()
        .into_iter()
        .map(|(prefix, z)| {
            let tz = z
                .parse::<Tz>()
                .map_err(|_| invalid(format!("unknown time zone {z:?} for prefix {prefix}")))?;
            if !prefix.starts_with('+') || !prefix[1..].bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(format!(
                    "zone prefix {prefix:?} must be + and digits"
                )));
            }
            if !timezones.contains(&tz) {
                return Err(invalid(format!(
                    "zone prefix {prefix} names {z}, which is not in timezones"
                )));
            }
            Ok((prefix, tz))
        })
        .collect::<Result<Vec<_>, _>>()?;
    zone_prefixes.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    if marketing_window.is_some() && timezones.is_empty() {
        return Err(invalid("a marketing_window needs timezones".into()));
    }
    let max_segments = p.max_segments.unwrap_or(10);
    if !(1..=255).contains(&max_segments) {
        return Err(invalid("max_segments must be 1..=255".into()));
    }
    Ok(CountryRules {
        sender_types: p.sender_types.unwrap_or_default(),
        registered_senders: p
            .registered_senders
            .unwrap_or_default()
            .into_iter()
            .collect(),
        marketing_requires_consent: p.marketing_requires_consent.unwrap_or(false),
        otp_ignores_opt_out: p.otp_ignores_opt_out.unwrap_or(false),
        required_marketing_text: p
            .required_marketing_text
            .unwrap_or_default()
            .iter()
            .map(|t| t.to_lowercase())
            .collect(),
        append_opt_out_text: p.append_opt_out_text.unwrap_or(false),
        opt_out_text: p.opt_out_text.unwrap_or_default(),
        marketing_sender_prefix: p.marketing_sender_prefix.unwrap_or_default(),
        blocked_patterns,
        max_segments,
        timezones,
        zone_prefixes,
        quiet_hours_action: p.quiet_hours_action.unwrap_or_default(),
        marketing_window,
        holidays,
        marketing_max_per_day: p.marketing_max_per_day.unwrap_or(0),
        opt_out_keywords: p
            .opt_out_keywords
            .unwrap_or_default()
            .iter()
            .map(|k| k.trim().to_uppercase())
            .collect(),
        templates_required: p.templates_required.unwrap_or(false),
    })
}

fn window(w: &WindowSpec) -> Result<Window, String> {
    let time = |t: &str| {
        NaiveTime::parse_from_str(t, "%H:%M").map_err(|_| format!("time {t:?} is not HH:MM"))
    };
    let (start, end) = (time(&w.start)?, time(&w.end)?);
    if start >= end {
        return Err(format!(
            "marketing_window start {} is not before end {}",
            w.start, w.end
        ));
    }
    let mut days = [false; 7];
    for d in &w.days {
        let day: Weekday = d
            .parse()
            .map_err(|_| format!("day {d:?} is not mon..sun"))?;
        days[day.num_days_from_monday() as usize] = true;
    }
    Ok(Window { days, start, end })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_countries_file_is_valid() {
        let book = RuleBook::parse(include_str!("../../config/countries.toml"))
            .expect("config/countries.toml must stay valid");
        for c in [
            "US", "CA", "GB", "FR", "DE", "IN", "CN", "AE", "SA", "SG", "AU", "BR",
        ] {
            assert!(book.countries().any(|k| k == c), "{c} missing");
        }
        assert!(
            book.for_country("ZZ").is_some(),
            "[default] applies elsewhere"
        );
    }

    #[test]
    fn a_country_overrides_the_default_key_by_key() {
        let book = RuleBook::parse(
            "[default]\nmax_segments = 5\nopt_out_text = \"STOP\"\n[countries.FR]\nmax_segments = 3\n",
        )
        .unwrap();
        let fr = book.for_country("FR").unwrap();
        assert_eq!((fr.max_segments, fr.opt_out_text.as_str()), (3, "STOP"));
        assert_eq!(book.for_country("DE").unwrap().max_segments, 5);
    }

    #[test]
    fn without_a_default_unlisted_countries_are_unsupported() {
        let book = RuleBook::parse("[countries.FR]\nmax_segments = 3\n").unwrap();
        assert!(book.for_country("DE").is_none());
    }

    #[test]
    fn bad_files_are_refused_with_a_clear_reason() {
        for (text, needle) in [
            ("[default\n", "invalid countries file"),
            (
                "[countries.FR]\ntimezones = [\"Europe/Pariss\"]\n",
                "unknown time zone",
            ),
            (
                "[countries.FR]\ntimezones = [\"Europe/Paris\"]\nmarketing_window = { days = [\"mon\"], start = \"20:00\", end = \"08:00\" }\n",
                "not before end",
            ),
            (
                "[countries.FR]\nblocked_patterns = [\"(\"]\n",
                "blocked pattern",
            ),
            (
                "[countries.FR]\nholidays = [\"25/12/2026\"]\n",
                "YYYY-MM-DD",
            ),
            ("[countries.fr]\n", "alpha-2"),
            ("[countries.FR]\nquiet = true\n", "unknown field"),
        ] {
            let err = RuleBook::parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn sender_types_follow_the_sender_shape() {
        assert_eq!(SenderType::of("ACME"), SenderType::Alphanumeric);
        assert_eq!(SenderType::of("+447400123456"), SenderType::Numeric);
        assert_eq!(SenderType::of("447400123456"), SenderType::Numeric);
        assert_eq!(SenderType::of("12345"), SenderType::Shortcode);
    }
}
