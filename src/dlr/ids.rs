//! Turning the message id a receipt quotes into the id the SMSC gave in its
//! submit_sm_resp.
//!
//! The SMSC-id index holds each id exactly as submit_sm_resp carried it (that
//! is what the SMSC's own logs and support desk know, and what the message
//! status shows). Many SMSCs quote it differently in the receipt: hex in the
//! response and decimal in the receipt, another case, with or without zero
//! padding. A carrier's profile states the forms ([`IdFormat`]); from them this
//! module derives the *candidates*: the strings the response may have been,
//! tried against the index in order. The padding width and case cannot be
//! known from a receipt, so every width is a candidate; the rule that matched
//! is remembered per carrier and tried first next time, so in the steady
//! state a receipt costs one lookup.
//!
//! `exact` (the default) yields the id as sent and nothing else. Forms that
//! cannot be told apart (`auto`, or a receipt id that reads both as decimal
//! and as hex) can match the wrong message when ids are short counters: a
//! carrier whose forms are known should state them.

use std::collections::HashSet;

use crate::carrier::profile::{CarrierProfile, IdFormat};

/// Longest id (in characters) a padded candidate is written to.
const MAX_WIDTH: usize = 32;

/// Rules remembered per id source.
const LEARNED: usize = 8;

/// Where in the receipt an id came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// The receipted_message_id TLV.
    Tlv,
    /// The text's `id:` field.
    Text,
}

/// How the receipt's id is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Reading {
    /// As a string.
    Text,
    /// As a decimal number.
    Dec,
    /// As a hexadecimal number.
    Hex,
}

/// How a candidate is written from what was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Writing {
    /// The string as read.
    AsRead,
    /// The string in lower case.
    Lower,
    /// The string in upper case.
    Upper,
    /// The number in decimal, zero-padded to `width` (0: no padding).
    Dec { width: u8 },
    /// The number in hex, zero-padded to `width` (0: no padding).
    Hex { upper: bool, width: u8 },
}

/// One conversion from a receipt id to a response id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Rule {
    reading: Reading,
    writing: Writing,
}

/// A string the submit_sm_resp id may have been, and the rule that made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub id: String,
    pub rule: Rule,
}

/// One carrier's id conversions.
#[derive(Debug)]
pub(crate) struct IdMatcher {
    submit: IdFormat,
    text: IdFormat,
    tlv: IdFormat,
    learned_text: Vec<Rule>,
    learned_tlv: Vec<Rule>,
}

impl IdMatcher {
    /// The conversions a profile allows.
    pub(crate) fn new(profile: &CarrierProfile) -> Self {
        Self {
            submit: profile.submit_id,
            text: profile.receipt_id,
            tlv: profile.tlv_id_format(),
            learned_text: Vec::new(),
            learned_tlv: Vec::new(),
        }
    }

    /// The few candidates worth trying first: what the rules that matched
    /// lately make of `id`, or else the first rule the forms allow (the id as
    /// read, for `exact` and `auto`). Cheap: no padding search.
    pub(crate) fn first_choices(&self, id: &str, source: Source) -> Vec<Candidate> {
        let id = id.trim();
        let allowed = rules(self.form(source), self.submit, id);
        let learned = self.learned(source).iter().filter(|r| allowed.contains(r));
        let mut out: Vec<Candidate> = Vec::new();
        for &rule in learned.chain(allowed.first().filter(|_| self.learned(source).is_empty())) {
            if let Some(s) = apply(rule, id)
                && !out.iter().any(|c| c.id == s)
            {
                out.push(Candidate { id: s, rule });
            }
        }
        out
    }

    fn form(&self, source: Source) -> IdFormat {
        match source {
            Source::Tlv => self.tlv,
            Source::Text => self.text,
        }
    }

    fn learned(&self, source: Source) -> &[Rule] {
        match source {
            Source::Tlv => &self.learned_tlv,
            Source::Text => &self.learned_text,
        }
    }

    /// The candidates for `id` from `source`, best first, each string once:
    /// the rules that matched lately, then every rule the forms allow.
    pub(crate) fn candidates(&self, id: &str, source: Source) -> Vec<Candidate> {
        let id = id.trim();
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        let mut push = |rule: Rule| {
            if let Some(s) = apply(rule, id)
                && seen.insert(s.clone())
            {
                out.push(Candidate { id: s, rule });
            }
        };
        let allowed = rules(self.form(source), self.submit, id);
        for rule in self.learned(source) {
            if allowed.contains(rule) {
                push(*rule);
            }
        }
        allowed.into_iter().for_each(push);
        out
    }

    /// Remembers the rule that found a message, to try it first next time.
    pub(crate) fn learn(&mut self, source: Source, rule: Rule) {
        let learned = match source {
            Source::Tlv => &mut self.learned_tlv,
            Source::Text => &mut self.learned_text,
        };
        if learned.first() == Some(&rule) {
            return;
        }
        learned.retain(|r| *r != rule);
        learned.insert(0, rule);
        learned.truncate(LEARNED);
    }
}

/// Every rule the forms allow for `id`, in order: the id as read first, then
/// numbers unpadded before padded.
fn rules(receipt: IdFormat, submit: IdFormat, id: &str) -> Vec<Rule> {
    use IdFormat::{Auto, Decimal, Exact, Hex};
    let mut readings = match receipt {
        Exact => vec![Reading::Text],
        Hex => vec![Reading::Hex],
        Decimal => vec![Reading::Dec],
        Auto => vec![Reading::Text, Reading::Dec, Reading::Hex],
    };
    // A receipt "as sent" of a numeric id may still differ in case or padding.
    match (receipt, submit) {
        (Exact, Hex) => readings.push(Reading::Hex),
        (Exact, Decimal) => readings.push(Reading::Dec),
        _ => {}
    }
    let mut out = Vec::new();
    for reading in readings {
        let number = match reading {
            Reading::Text => None,
            Reading::Dec => read_number(id, 10),
            Reading::Hex => read_number(id, 16),
        };
        // Unpadded first, then every wider zero padding.
        let widths =
            |natural: usize| std::iter::once(0).chain((natural + 1..=MAX_WIDTH).map(|w| w as u8));
        let dec = |out: &mut Vec<Rule>| {
            let natural = number.map_or(1, |n| n.to_string().len());
            out.extend(widths(natural).map(|width| Rule {
                reading,
                writing: Writing::Dec { width },
            }));
        };
        let hex = |out: &mut Vec<Rule>| {
            let natural = number.map_or(1, |n| format!("{n:x}").len());
            for upper in [false, true] {
                out.extend(widths(natural).map(|width| Rule {
                    reading,
                    writing: Writing::Hex { upper, width },
                }));
            }
        };
        match (reading, submit) {
            (Reading::Text, Auto) => out.extend(
                [Writing::AsRead, Writing::Lower, Writing::Upper]
                    .map(|writing| Rule { reading, writing }),
            ),
            (Reading::Text, _) => out.push(Rule {
                reading,
                writing: Writing::AsRead,
            }),
            // Not a number in this base: nothing to write.
            _ if number.is_none() => {}
            (_, Hex) => hex(&mut out),
            (_, Decimal) => dec(&mut out),
            // The response is written like the receipt: the same base.
            (Reading::Dec, Exact) => dec(&mut out),
            (Reading::Hex, Exact) => hex(&mut out),
            (_, Auto) => {
                dec(&mut out);
                hex(&mut out);
            }
        }
    }
    out
}

/// `id` as a number in `radix`, if it is one (leading zeros allowed).
fn read_number(id: &str, radix: u32) -> Option<u128> {
    let digits = id.trim_start_matches('0');
    if id.is_empty() || digits.len() > MAX_WIDTH || !id.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    if digits.is_empty() {
        return Some(0);
    }
    u128::from_str_radix(digits, radix).ok()
}

/// The candidate a rule makes of `id`, if the id reads that way.
fn apply(rule: Rule, id: &str) -> Option<String> {
    if id.is_empty() {
        return None;
    }
    let number = match rule.reading {
        Reading::Text => None,
        Reading::Dec => Some(read_number(id, 10)?),
        Reading::Hex => Some(read_number(id, 16)?),
    };
    Some(match (rule.writing, number) {
        (Writing::AsRead, _) => id.to_owned(),
        (Writing::Lower, _) => id.to_lowercase(),
        (Writing::Upper, _) => id.to_uppercase(),
        (Writing::Dec { width }, Some(n)) => format!("{n:0width$}", width = usize::from(width)),
        (
            Writing::Hex {
                upper: false,
                width,
            },
            Some(n),
        ) => {
            format!("{n:0width$x}", width = usize::from(width))
        }
        (Writing::Hex { upper: true, width }, Some(n)) => {
            format!("{n:0width$X}", width = usize::from(width))
        }
        (Writing::Dec { .. } | Writing::Hex { .. }, None) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(submit: IdFormat, receipt: IdFormat) -> IdMatcher {
        IdMatcher::new(&CarrierProfile {
            submit_id: submit,
            receipt_id: receipt,
            ..CarrierProfile::default()
        })
    }

    fn ids(m: &IdMatcher, id: &str, source: Source) -> Vec<String> {
        m.candidates(id, source).into_iter().map(|c| c.id).collect()
    }

    /// Whether `response` is among the candidates for `receipt`.
    fn finds(m: &IdMatcher, receipt: &str, response: &str) -> bool {
        ids(m, receipt, Source::Text).iter().any(|c| c == response)
    }

    #[test]
    fn the_default_profile_tries_the_id_as_sent_and_nothing_else() {
        let m = IdMatcher::new(&CarrierProfile::default());
        assert_eq!(ids(&m, "00ab12", Source::Text), ["00ab12"]);
        let first: Vec<String> = m
            .first_choices("00ab12", Source::Tlv)
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(first, ["00ab12"]);
        assert_eq!(ids(&m, "msg_42", Source::Tlv), ["msg_42"]);
    }

    #[test]
    fn decimal_in_the_receipt_finds_hex_in_the_response_with_any_padding_and_case() {
        let m = matcher(IdFormat::Hex, IdFormat::Decimal);
        // 0xa1b2c3d4 = 2712847316
        assert!(finds(&m, "2712847316", "a1b2c3d4"));
        assert!(finds(&m, "2712847316", "A1B2C3D4"));
        assert!(finds(&m, "2712847316", "00000000a1b2c3d4"));
        assert!(finds(&m, "0002712847316", "a1b2c3d4"));
        // Not the decimal string itself: it would be another message's hex id.
        assert!(!finds(&m, "2712847316", "2712847316"));
        // A receipt id that is not decimal yields nothing.
        assert!(ids(&m, "a1b2", Source::Text).is_empty());
    }

    #[test]
    fn hex_in_the_receipt_finds_decimal_in_the_response() {
        let m = matcher(IdFormat::Decimal, IdFormat::Hex);
        assert!(finds(&m, "A1B2C3D4", "2712847316"));
        assert!(finds(&m, "a1b2c3d4", "000002712847316"));
    }

    #[test]
    fn case_and_zero_padding_do_not_matter_for_numbers() {
        let hex = matcher(IdFormat::Hex, IdFormat::Hex);
        assert!(finds(&hex, "abcdef", "ABCDEF"));
        assert!(finds(&hex, "ABCDEF", "0000abcdef"));
        let dec = matcher(IdFormat::Decimal, IdFormat::Exact);
        assert!(finds(&dec, "12345", "000000000000012345"));
        assert!(finds(&dec, "000000012345", "12345"));
    }

    #[test]
    fn the_tlv_follows_the_submit_form_unless_told() {
        let m = matcher(IdFormat::Hex, IdFormat::Decimal);
        // The TLV quotes the response (hex), the text is decimal.
        assert!(ids(&m, "A1B2C3D4", Source::Tlv).contains(&"a1b2c3d4".to_owned()));
        let told = IdMatcher::new(&CarrierProfile {
            submit_id: IdFormat::Hex,
            receipt_tlv_id: Some(IdFormat::Decimal),
            ..CarrierProfile::default()
        });
        assert!(ids(&told, "2712847316", Source::Tlv).contains(&"a1b2c3d4".to_owned()));
    }

    #[test]
    fn auto_tries_the_id_as_sent_first_then_every_conversion() {
        let m = matcher(IdFormat::Auto, IdFormat::Auto);
        let c = ids(&m, "2712847316", Source::Text);
        assert_eq!(c[0], "2712847316");
        assert!(c.contains(&"a1b2c3d4".to_owned()));
        assert!(c.contains(&"00000000A1B2C3D4".to_owned()));
        assert!(finds(&m, "A1B2C3D4", "a1b2c3d4"));
        assert!(finds(&m, "a1b2c3d4", "2712847316"));
        assert!(finds(&m, "Msg-Ab", "MSG-AB"));
    }

    #[test]
    fn the_rule_that_matched_is_tried_first() {
        let mut m = matcher(IdFormat::Auto, IdFormat::Auto);
        let hit = m
            .candidates("2712847316", Source::Text)
            .into_iter()
            .find(|c| c.id == "00000000a1b2c3d4")
            .unwrap();
        m.learn(Source::Text, hit.rule);
        assert_eq!(ids(&m, "2712847317", Source::Text)[0], "00000000a1b2c3d5");
        let first: Vec<String> = m
            .first_choices("2712847317", Source::Text)
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(first, ["00000000a1b2c3d5"]);
        // Learned per source: the TLV still starts with the id as sent.
        assert_eq!(ids(&m, "2712847317", Source::Tlv)[0], "2712847317");
    }

    #[test]
    fn strange_ids_give_no_panic_and_no_numbers() {
        let m = matcher(IdFormat::Auto, IdFormat::Auto);
        for id in [
            "",
            " ",
            "0",
            "000",
            "ffffffffffffffffffffffffffffffffff",
            "😀",
            "12 34",
        ] {
            let _ = m.candidates(id, Source::Text);
        }
        assert_eq!(ids(&m, "0", Source::Text)[0], "0");
        assert!(ids(&m, "", Source::Text).is_empty());
    }
}
