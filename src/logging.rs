//! What logs may say about people: phone numbers go through [`mask`], which
//! keeps the country-and-network head and the last digits and hides the middle
//! (`+447400123456` → `+4474****3456`). Message text is never logged.
//!
//! Every log line about one message runs inside a `message` span carrying its
//! `id` (the API handler when it is accepted, the carrier's submit task when it
//! is sent), so `id=01K…` finds a message's whole story in the logs.

use std::fmt;

/// Fewer digits than this is not a personal number (a short code, an
/// alphanumeric sender id): shown as it is.
const MIN_PERSONAL_DIGITS: usize = 7;

/// Most digits kept at each end.
const KEPT: usize = 4;

/// A number as logs may show it; formats without allocating.
#[derive(Clone, Copy)]
pub struct Masked<'a>(&'a str);

/// `number` with its middle digits hidden, for logs: `+447400123456` →
/// `+4474****3456`. Keeps at most a third of the digits at each end (at most
/// four); anything with fewer than 7 digits (short codes, alphanumeric
/// senders) is shown as it is. Characters other than digits and a leading
/// `+` are dropped from masked output, so a malformed number cannot leak
/// through its formatting either.
pub fn mask(number: &str) -> Masked<'_> {
    Masked(number)
}

impl fmt::Display for Masked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.0.bytes().filter(u8::is_ascii_digit).count();
        if digits < MIN_PERSONAL_DIGITS {
            return f.write_str(self.0);
        }
        let kept = (digits / 3).min(KEPT);
        let mut out = String::with_capacity(digits + 1);
        if self.0.trim_start().starts_with('+') {
            out.push('+');
        }
        for (i, d) in self.0.chars().filter(char::is_ascii_digit).enumerate() {
            out.push(if i < kept || i >= digits - kept {
                d
            } else {
                '*'
            });
        }
        f.write_str(&out)
    }
}

impl fmt::Debug for Masked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::mask;

    #[test]
    fn the_middle_digits_are_hidden() {
        assert_eq!(mask("+447400123456").to_string(), "+4474****3456");
        assert_eq!(mask("+12025550143").to_string(), "+120*****143");
        assert_eq!(mask("447400123456").to_string(), "4474****3456");
        assert_eq!(mask("+4915123456789").to_string(), "+4915*****6789");
    }

    #[test]
    fn short_codes_and_sender_ids_are_shown() {
        assert_eq!(mask("ACME").to_string(), "ACME");
        assert_eq!(mask("12345").to_string(), "12345");
        assert_eq!(mask("").to_string(), "");
    }

    #[test]
    fn malformed_numbers_do_not_leak_through_their_formatting() {
        assert_eq!(mask("+44 7400 123456").to_string(), "+4474****3456");
        assert_eq!(mask("07400-123456").to_string(), "074*****456");
        assert_eq!(mask("1234567").to_string(), "12***67");
    }
}
