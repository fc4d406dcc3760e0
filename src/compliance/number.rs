//! Recipient numbers: E.164 parsing and country detection with libphonenumber's
//! metadata (the `phonenumber` crate), never a hand-written pattern.
//!
//! Numbers written the way machines write E.164 (`+` and digits only, what nearly every
//! API client sends) take a short way: the country code is the digits' prefix that the
//! metadata knows as one, and the rest is typed against the region's patterns, compiled
//! once each (see `numbering`): about 0.5 µs. When that finds a number that can receive
//! SMS, it is the answer. Every other input — spaces, punctuation, a national prefix after
//! the country code, an invalid or non-mobile number — goes through libphonenumber's own
//! parser (7–30 µs), so every refusal and every unusual form is the crate's answer; the
//! unit tests check that both ways agree on every example number of the metadata and on
//! random numbers around them.
//!
//! The answers of the full parser are kept for the last [`CACHE_CAPACITY`] inputs (valid
//! and refused alike) in a bounded concurrent cache, so a repeated unusual form costs a
//! hash lookup and two short string copies.
//!
//! libphonenumber's own cache of compiled patterns holds only 100 of them in the
//! `phonenumber` crate (one LRU for the whole metadata). A mix of a dozen countries needs
//! more (the 25 regions behind `+1` alone have several patterns each), and then every
//! number recompiles the patterns it needs: 0.1–4 ms per number instead of tens of µs.
//! The full parser therefore raises that capacity once to [`PATTERN_CACHE_CAPACITY`]
//! (only patterns actually used are compiled and kept).

use std::sync::{LazyLock, Once};

use phonenumber::{PhoneNumber, Type};
use quick_cache::sync::Cache;

use super::Refusal;

/// A recipient parsed once at the edge: canonical E.164 and its country.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    /// `+` and digits, canonical form.
    pub e164: String,
    /// ISO 3166 alpha-2 country code, e.g. `GB`.
    pub country: String,
}

/// How many distinct inputs [`parse_recipient`] remembers (about 250 bytes each, so
/// roughly 25 MB when full).
pub const CACHE_CAPACITY: usize = 100_000;

/// Compiled libphonenumber patterns kept (the crate's default is 100). The whole metadata
/// has a few thousand; a country uses a handful to a few dozen.
pub const PATTERN_CACHE_CAPACITY: usize = 8192;

/// Raises the capacity of libphonenumber's pattern cache, once.
fn widen_pattern_cache() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let cache = phonenumber::metadata::DATABASE.cache();
        let mut patterns = cache.lock().unwrap_or_else(|p| p.into_inner());
        patterns.set_capacity(PATTERN_CACHE_CAPACITY);
    });
}

/// Compiles the patterns of `countries` (ISO alpha-2 codes) ahead of traffic by parsing
/// each one's example mobile number from libphonenumber's metadata: the first number of
/// a country otherwise pays for it (about 0.1 s for `+1`). Blocking; returns how many
/// countries were warmed.
pub fn warm_patterns<'a>(countries: impl IntoIterator<Item = &'a str>) -> usize {
    let database = &*phonenumber::metadata::DATABASE;
    countries
        .into_iter()
        .filter_map(|id| {
            let meta = database.by_id(id)?;
            let example = meta.descriptors().mobile()?.example()?;
            let number = format!("+{}{example}", meta.country_code());
            parse_recipient_uncached(&number).ok()
        })
        .count()
}

/// Inputs longer than this are parsed every time and not remembered: E.164 numbers
/// have at most 15 digits, so anything longer is refused anyway and must not be able to
/// fill the cache with large keys.
const CACHE_MAX_KEY_LEN: usize = 24;

/// The remembered answers, keyed by the trimmed input. `quick_cache` is sharded with a
/// read lock per shard on hits (no global mutex for the tokio workers to queue on) and
/// evicts with CLOCK-Pro, so a one-off sweep of new numbers does not push out the
/// recipients that repeat. It is already in the dependency tree (fjall's block cache).
static CACHE: LazyLock<Cache<String, Result<Recipient, Refusal>>> =
    LazyLock::new(|| Cache::new(CACHE_CAPACITY));

/// Parses an international number (`+` then digits) and checks that it is a valid
/// number that can receive SMS (mobile, or fixed-line-or-mobile where a country's
/// plan cannot tell them apart).
///
/// The full parser's answers are cached per input (see the module documentation); the
/// result is the same as [`parse_recipient_uncached`]'s.
pub fn parse_recipient(to: &str) -> Result<Recipient, Refusal> {
    let key = to.trim();
    if let Some(recipient) = receiving_e164(key) {
        return Ok(recipient);
    }
    if key.len() > CACHE_MAX_KEY_LEN {
        return parse_with_libphonenumber(key);
    }
    if let Some(hit) = CACHE.get(key) {
        return hit;
    }
    let answer = parse_with_libphonenumber(key);
    CACHE.insert(key.to_owned(), answer.clone());
    answer
}

/// [`parse_recipient`] without the cache.
pub fn parse_recipient_uncached(to: &str) -> Result<Recipient, Refusal> {
    let to = to.trim();
    receiving_e164(to).map_or_else(|| parse_with_libphonenumber(to), Ok)
}

/// The short way (see the module documentation): `to` when it is `+` and digits that
/// make a number able to receive SMS, else `None` (the full parser decides).
fn receiving_e164(to: &str) -> Option<Recipient> {
    let (code, national) = split_e164(to)?;
    match super::numbering::region_and_type_of(code, national) {
        (Type::Mobile | Type::FixedLineOrMobile, Some(country)) => Some(Recipient {
            e164: to.to_owned(),
            country,
        }),
        _ => None,
    }
}

/// Most digits an E.164 number has (country code included).
const E164_MAX_DIGITS: usize = 15;

/// The written form the API documents for a recipient (`to`, `{e164}`): `+`, a country
/// code (never starting with 0) and at most [`E164_MAX_DIGITS`] digits in all, at least
/// 7 (no valid number that can receive SMS is shorter). [`parse_recipient`] also reads
/// other forms (spaces, punctuation, surrounding blanks), so the pattern is stricter than
/// the parser; a string matching it can still be refused `invalid_number` when it is not
/// a valid number in its country's numbering plan (libphonenumber's metadata decides).
pub const E164_PATTERN: &str = r"^\+[1-9][0-9]{6,14}$";

/// `+` and only digits, at most [`E164_MAX_DIGITS`]: the country code (the digits'
/// prefix that libphonenumber knows as one; codes are prefix-free) and the rest.
fn split_e164(to: &str) -> Option<(u16, &str)> {
    let digits = to.strip_prefix('+')?;
    // No country code starts with 0: "+044…" must not read as +44 (and be kept, not canonical).
    if digits.len() > E164_MAX_DIGITS
        || digits.starts_with('0')
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let database = &*phonenumber::metadata::DATABASE;
    (1..=3.min(digits.len())).find_map(|n| {
        let code: u16 = digits[..n].parse().ok()?;
        let known = database.region(&code).is_some_and(|ids| !ids.is_empty());
        known.then(|| (code, &digits[n..]))
    })
}

/// [`parse_recipient`] by libphonenumber's parser (any written form it accepts).
fn parse_with_libphonenumber(to: &str) -> Result<Recipient, Refusal> {
    widen_pattern_cache();
    if !to.starts_with('+') {
        return Err(Refusal::InvalidNumber(format!(
            "'{}' is not in international E.164 format (a leading + and the country code).",
            shorten(to)
        )));
    }
    let number: PhoneNumber = phonenumber::parse(None, to)
        .map_err(|_| Refusal::InvalidNumber(format!("'{}' is not a phone number.", shorten(to))))?;
    // One region lookup and one type match: valid means "the type is known".
    let (kind, country) = super::numbering::region_and_type(&number);
    if kind == Type::Unknown {
        return Err(Refusal::InvalidNumber(format!(
            "'{}' is not a valid number in its country's numbering plan.",
            shorten(to)
        )));
    }
    if !matches!(kind, Type::Mobile | Type::FixedLineOrMobile) {
        return Err(Refusal::InvalidNumber(format!(
            "'{}' is a {kind:?} number, which cannot receive SMS.",
            shorten(to)
        )));
    }
    let country = country.ok_or_else(|| {
        Refusal::UnsupportedCountry(format!(
            "The country of '{}' could not be determined.",
            shorten(to)
        ))
    })?;
    // What `phonenumber::format(..).mode(E164)` writes, without the national
    // format lookup (a pattern search per number) that its Display does first
    // for every mode: `NationalNumber`'s Display keeps leading zeros.
    let e164 = format!("+{}{}", number.code().value(), number.national());
    Ok(Recipient { e164, country })
}

/// Keeps error messages short when a client sends a huge "number".
fn shorten(s: &str) -> String {
    s.chars().take(32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_country_has_an_example_mobile_to_warm_its_patterns() {
        let ids = [
            "US", "CA", "GB", "FR", "DE", "IN", "CN", "AE", "SA", "SG", "AU", "BR",
        ];
        assert_eq!(warm_patterns(ids), ids.len());
        assert_eq!(warm_patterns(["ZZ", "not a country"]), 0);
    }

    #[test]
    fn valid_numbers_resolve_to_their_country() {
        for (n, c) in [
            ("+447400123456", "GB"),
            ("+12025550143", "US"),
            ("+14165551234", "CA"),
            ("+33612345678", "FR"),
            ("+4915123456789", "DE"),
            ("+919876543210", "IN"),
            ("+8613800138000", "CN"),
            ("+971501234567", "AE"),
            ("+966501234567", "SA"),
            ("+6591234567", "SG"),
            ("+61412345678", "AU"),
            ("+5511912345678", "BR"),
        ] {
            let r = parse_recipient(n).unwrap_or_else(|e| panic!("{n}: {e}"));
            assert_eq!(r.country, c, "{n}");
            assert_eq!(r.e164, n);
        }
    }

    #[test]
    fn e164_is_what_libphonenumber_formats_including_leading_zeros() {
        // Côte d'Ivoire's mobiles start with a national 0 that E.164 keeps.
        for n in [
            "+2250701234567",
            "+447400123456",
            "+12025550143",
            "+39 347 123 4567",
        ] {
            let r = parse_recipient_uncached(n).unwrap_or_else(|e| panic!("{n}: {e}"));
            let number = phonenumber::parse(None, n).expect("parses");
            let formatted = phonenumber::format(&number).mode(phonenumber::Mode::E164);
            assert_eq!(r.e164, formatted.to_string(), "{n}");
        }
        let ci = parse_recipient_uncached("+2250701234567").expect("valid");
        assert_eq!(
            (ci.e164.as_str(), ci.country.as_str()),
            ("+2250701234567", "CI")
        );
        // A Milan landline (national 02…) is valid but cannot receive SMS.
        match parse_recipient_uncached("+390212345678") {
            Err(Refusal::InvalidNumber(why)) => assert!(why.contains("FixedLine"), "{why}"),
            other => panic!("Milan landline: {other:?}"),
        }
    }

    #[test]
    fn the_e164_shortcut_answers_like_libphonenumber_on_every_example_number() {
        let numbers = crate::compliance::numbering::example_numbers();
        assert!(numbers.len() > 1000, "only {} examples", numbers.len());
        let mut shortcut = 0;
        for n in &numbers {
            let answer = parse_recipient_uncached(n);
            assert_eq!(answer, parse_with_libphonenumber(n), "{n}");
            shortcut += usize::from(answer.is_ok());
        }
        assert!(shortcut > 200, "only {shortcut} examples can receive SMS");
    }

    #[test]
    fn the_e164_shortcut_answers_like_libphonenumber_on_random_numbers() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let examples = crate::compliance::numbering::example_numbers();
        let mut accepted = 0;
        let mut compared = 0;
        for example in &examples {
            for _ in 0..8 {
                // The example with random digits in place of its last 1-6 (mostly still
                // in a valid range), one digit more or less, or a national 0 put after
                // the country code (libphonenumber strips some national prefixes).
                let mut n = example.clone();
                let tail = rng.random_range(1..=6).min(n.len() - 3);
                n.truncate(n.len() - tail);
                (0..tail).for_each(|_| n.push(char::from(b'0' + rng.random_range(0..10u8))));
                match rng.random_range(0..10) {
                    0 => n.push('5'),
                    1 => {
                        n.pop();
                    }
                    2 => n.insert(rng.random_range(2..4).min(n.len()), '0'),
                    _ => {}
                }
                let answer = parse_recipient_uncached(&n);
                assert_eq!(
                    answer,
                    parse_with_libphonenumber(&n),
                    "{n} (from {example})"
                );
                accepted += usize::from(answer.is_ok());
                compared += 1;
            }
        }
        assert!(
            accepted > compared / 20,
            "{accepted} of {compared} accepted"
        );
        // Forms only the full parser reads agree too: spaces, a national prefix.
        for n in ["+44 7400 123456", "+4407400123456", "+1 (202) 555-0143"] {
            assert_eq!(
                parse_recipient_uncached(n),
                parse_with_libphonenumber(n),
                "{n}"
            );
        }
        assert!(parse_recipient_uncached("+44 7400 123456").is_ok());
    }

    #[test]
    fn every_example_number_that_can_receive_sms_matches_the_documented_pattern() {
        let pattern = regex::Regex::new(E164_PATTERN).expect("E164_PATTERN compiles");
        let numbers = crate::compliance::numbering::example_numbers();
        let mut receiving = 0;
        for n in &numbers {
            if let Ok(r) = parse_recipient_uncached(n) {
                assert!(pattern.is_match(&r.e164), "{n} ({})", r.e164);
                receiving += 1;
            }
        }
        assert!(receiving > 200, "only {receiving} examples can receive SMS");
        // Every length the metadata allows a mobile number is inside the bounds (a number
        // that can receive SMS is typed mobile, or fixed-line-or-mobile when it matches
        // both patterns; some fixed-line plans, Germany's, go beyond 15 digits).
        for meta in phonenumber::metadata::DATABASE.iter() {
            let code = meta.country_code().to_string().len();
            if let Some(desc) = meta.descriptors().mobile() {
                for &len in desc.possible_length() {
                    let digits = code + usize::from(len);
                    assert!(
                        (7..=E164_MAX_DIGITS).contains(&digits),
                        "{} +{}: {digits} digits",
                        meta.id(),
                        meta.country_code()
                    );
                }
            }
        }
        // Short, long and national forms: the pattern and the parser both refuse them.
        for n in ["0", "+", "+123456", "+1234567890123456", "447400123456"] {
            assert!(!pattern.is_match(n), "{n}");
            assert!(parse_recipient_uncached(n).is_err(), "{n}");
        }
        // The parser reads forms the pattern refuses (it is stricter, never looser).
        for n in ["+44 7400 123456", " +447400123456", "+44 (0)7400 123456"] {
            assert!(!pattern.is_match(n), "{n}");
            let r = parse_recipient_uncached(n).unwrap_or_else(|e| panic!("{n}: {e}"));
            assert!(pattern.is_match(&r.e164), "{n} → {r:?}");
        }
        // A 0 before the country code is not E.164: it once read "+044…" as +44 and kept
        // the 0 in the stored number (so an opt-out of +44… did not match it).
        for n in ["+0447400123456", "+012025550143"] {
            let answer = parse_recipient_uncached(n);
            assert!(
                answer.as_ref().is_err_and(|e| e.code() == "invalid_number"),
                "{n}: {answer:?}"
            );
            assert_eq!(parse_recipient(n), answer, "{n}");
        }
    }

    #[test]
    fn national_format_is_refused() {
        assert!(matches!(
            parse_recipient("07400123456"),
            Err(Refusal::InvalidNumber(_))
        ));
    }

    #[test]
    fn garbage_and_invalid_ranges_are_refused() {
        for n in [
            "+",
            "+abc",
            "+447700900123",
            "+1",
            "",
            "+99999999999999999999",
        ] {
            assert!(
                matches!(parse_recipient(n), Err(Refusal::InvalidNumber(_))),
                "{n}"
            );
        }
    }

    #[test]
    fn cached_answers_equal_uncached_ones() {
        let long = format!("+44{}", "7".repeat(40));
        for n in [
            "+447400123456",
            " +447400123456 ",
            "+33612345678",
            "+442079460000",
            "+447700900123",
            "07400123456",
            "+",
            "+abc",
            "",
            "+99999999999999999999",
            long.as_str(),
        ] {
            let uncached = parse_recipient_uncached(n);
            // First call fills the cache (or bypasses it), the second answers from it.
            assert_eq!(parse_recipient(n), uncached, "{n:?}: first call");
            assert_eq!(parse_recipient(n), uncached, "{n:?}: second call");
        }
        assert!(
            CACHE.get("+447400123456").is_none(),
            "E.164 mobile answered the short way, not cached"
        );
        assert!(CACHE.get("+44 7400 123456").is_none(), "not asked yet");
        assert_eq!(
            parse_recipient("+44 7400 123456"),
            parse_recipient_uncached("+44 7400 123456")
        );
        assert!(CACHE.get("+44 7400 123456").is_some(), "full parse cached");
        assert!(CACHE.get("+abc").is_some(), "refusal cached");
        assert!(CACHE.get(long.as_str()).is_none(), "long input not cached");
    }

    #[test]
    fn fixed_line_only_numbers_are_refused() {
        // A London landline cannot receive SMS.
        assert!(matches!(
            parse_recipient("+442079460000"),
            Err(Refusal::InvalidNumber(_))
        ));
    }
}
