//! Recipient numbers: E.164 parsing and country detection with libphonenumber's
//! metadata (the `phonenumber` crate), never a hand-written pattern.

use phonenumber::{PhoneNumber, Type};

use super::Refusal;

/// A recipient parsed once at the edge: canonical E.164 and its country.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    /// `+` and digits, canonical form.
    pub e164: String,
    /// ISO 3166 alpha-2 country code, e.g. `GB`.
    pub country: String,
}

/// Parses an international number (`+` then digits) and checks that it is a valid
/// number that can receive SMS (mobile, or fixed-line-or-mobile where a country's
/// plan cannot tell them apart).
pub fn parse_recipient(to: &str) -> Result<Recipient, Refusal> {
    let to = to.trim();
    if !to.starts_with('+') {
        return Err(Refusal::InvalidNumber(format!(
            "'{}' is not in international E.164 format (a leading + and the country code).",
            shorten(to)
        )));
    }
    let number: PhoneNumber = phonenumber::parse(None, to)
        .map_err(|_| Refusal::InvalidNumber(format!("'{}' is not a phone number.", shorten(to))))?;
    if !number.is_valid() {
        return Err(Refusal::InvalidNumber(format!(
            "'{}' is not a valid number in its country's numbering plan.",
            shorten(to)
        )));
    }
    match number.number_type(&phonenumber::metadata::DATABASE) {
        Type::Mobile | Type::FixedLineOrMobile => {}
        other => {
            return Err(Refusal::InvalidNumber(format!(
                "'{}' is a {other:?} number, which cannot receive SMS.",
                shorten(to)
            )));
        }
    }
    let country = number
        .country()
        .id()
        .map(|id| id.as_ref().to_owned())
        .ok_or_else(|| {
            Refusal::UnsupportedCountry(format!(
                "The country of '{}' could not be determined.",
                shorten(to)
            ))
        })?;
    let e164 = phonenumber::format(&number)
        .mode(phonenumber::Mode::E164)
        .to_string();
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
    fn fixed_line_only_numbers_are_refused() {
        // A London landline cannot receive SMS.
        assert!(matches!(
            parse_recipient("+442079460000"),
            Err(Refusal::InvalidNumber(_))
        ));
    }
}
