//! A number's region and type from libphonenumber's metadata (the `phonenumber`
//! crate's), with each region's patterns compiled once, anchored, and kept per region.
//!
//! The crate answers the same questions, but slowly for a gateway that checks every
//! recipient: each pattern test goes through one process-wide LRU of compiled patterns
//! (a mutex, a SipHash of the whole pattern text, a list update) and then searches the
//! whole number for a match to see whether one starts at its first digit; and choosing
//! the region of a shared code (`+1`: 25 regions, `+44`: 4) types the number in each
//! region it tries, again for every question asked (`number_type`, `country().id()`,
//! the formatter). Here a region's patterns are compiled on first use as `^(?:…)`
//! (a match that starts at the first digit, the crate's own test, stopping early) and
//! the region is chosen once, reusing the type found while choosing it.
//!
//! The patterns, their order and the region choice are the crate's; the unit tests
//! compare the answers with the crate's on every example number in its metadata.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};

use phonenumber::metadata::{DATABASE, Descriptor};
use phonenumber::{Metadata, PhoneNumber, Type};
use regex::{Regex, RegexBuilder};

/// One descriptor's test: the lengths it allows and its pattern, anchored at the start.
struct Pattern {
    lengths: &'static [u16],
    regex: Regex,
}

impl Pattern {
    /// Compiles `desc`'s national-number pattern; `None` if it does not compile (the
    /// crate's metadata always does).
    fn new(desc: &'static Descriptor) -> Option<Self> {
        Some(Self {
            lengths: desc.possible_length(),
            regex: anchored(desc.national_number().as_str())?,
        })
    }

    /// The crate's `Descriptor::is_match`: an allowed length, and a match that starts
    /// at the first digit.
    fn matches(&self, national: &str) -> bool {
        let len = u16::try_from(national.len()).unwrap_or(u16::MAX);
        (self.lengths.is_empty() || self.lengths.contains(&len)) && self.regex.is_match(national)
    }
}

/// `pattern` compiled to match only at the start of the text (libphonenumber's
/// patterns are written with insignificant whitespace).
fn anchored(pattern: &str) -> Option<Regex> {
    RegexBuilder::new(&format!("^(?:{pattern})"))
        .ignore_whitespace(true)
        .build()
        .ok()
}

/// A region's compiled patterns.
struct Region {
    id: &'static str,
    leading_digits: Option<Regex>,
    general: Option<Pattern>,
    /// Special services, in the order the crate's `number_type` tries them.
    special: Vec<(Type, Pattern)>,
    fixed_line: Option<Pattern>,
    mobile: Option<Pattern>,
}

impl Region {
    fn new(meta: &'static Metadata) -> Self {
        let d = meta.descriptors();
        let special = [
            (Type::PremiumRate, d.premium_rate()),
            (Type::TollFree, d.toll_free()),
            (Type::SharedCost, d.shared_cost()),
            (Type::Voip, d.voip()),
            (Type::PersonalNumber, d.personal_number()),
            (Type::Pager, d.pager()),
            (Type::Uan, d.uan()),
            (Type::Voicemail, d.voicemail()),
        ]
        .into_iter()
        .filter_map(|(kind, desc)| Some((kind, Pattern::new(desc?)?)))
        .collect();
        Self {
            id: meta.id(),
            leading_digits: meta.leading_digits().and_then(|p| anchored(p.as_str())),
            general: Pattern::new(d.general()),
            special,
            fixed_line: d.fixed_line().and_then(Pattern::new),
            mobile: d.mobile().and_then(Pattern::new),
        }
    }

    /// The crate's `number_type` for `national` in this region. (Where a region's
    /// fixed-line and mobile patterns are the same text, both match, which gives the
    /// crate's `FixedLineOrMobile` too.)
    fn number_type(&self, national: &str) -> Type {
        let matches = |p: &Option<Pattern>| p.as_ref().is_some_and(|p| p.matches(national));
        if !matches(&self.general) {
            return Type::Unknown;
        }
        if let Some((kind, _)) = self.special.iter().find(|(_, p)| p.matches(national)) {
            return *kind;
        }
        match (matches(&self.fixed_line), matches(&self.mobile)) {
            (true, true) => Type::FixedLineOrMobile,
            (true, false) => Type::FixedLine,
            (false, true) => Type::Mobile,
            (false, false) => Type::Unknown,
        }
    }

    fn leads(&self, national: &str) -> bool {
        self.leading_digits
            .as_ref()
            .is_some_and(|p| p.is_match(national))
    }
}

/// Compiled regions, by the metadata's address (ids are not unique: every
/// non-geographic code is region "001").
static REGIONS: LazyLock<RwLock<HashMap<usize, Arc<Region>>>> = LazyLock::new(Default::default);

/// `meta`'s compiled patterns, compiling them on first use.
fn region(meta: &'static Metadata) -> Arc<Region> {
    let key = std::ptr::from_ref(meta) as usize;
    if let Some(r) = REGIONS.read().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return r.clone();
    }
    let compiled = Arc::new(Region::new(meta));
    REGIONS
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key)
        .or_insert(compiled)
        .clone()
}

/// The number's type and its region's ISO code (`None` for non-geographic codes such
/// as +800), in one pass over the regions of its country code.
///
/// The region is the crate's choice (`source_for`): the only region of the code, else
/// the first whose leading digits start the number, else the first where the number
/// has a type. One difference, on purpose: the national number keeps its leading zeros.
/// phonenumber 0.3.10 drops them when it chooses the region and the type, so it types
/// every Italian or Ivorian number `Unknown` while its own `is_valid` accepts it.
pub(super) fn region_and_type(number: &PhoneNumber) -> (Type, Option<String>) {
    region_and_type_of(number.code().value(), &number.national().to_string())
}

/// [`region_and_type`] of the number with country code `code` and national
/// (significant) number `national`, leading zeros included.
pub(super) fn region_and_type_of(code: u16, national: &str) -> (Type, Option<String>) {
    let database: &'static phonenumber::metadata::Database = &DATABASE;
    let ids = database.region(&code).unwrap_or_default();
    let single = ids.len() == 1;
    for id in ids {
        // "001": a non-geographic code, whose metadata is filed under the code.
        let meta = if id == "001" {
            database.by_code(&code).and_then(|m| m.into_iter().next())
        } else {
            database.by_id(id)
        };
        let Some(meta) = meta else {
            continue;
        };
        let region = region(meta);
        let kind = region.number_type(national);
        if single || kind != Type::Unknown || region.leads(national) {
            return (kind, (region.id != "001").then(|| region.id.to_owned()));
        }
    }
    (Type::Unknown, None)
}

/// `+`, the country code and each example number of every type in every region
/// of the metadata (for tests here and in `number`).
#[cfg(test)]
pub(super) fn example_numbers() -> Vec<String> {
    let mut numbers = Vec::new();
    for meta in DATABASE.iter() {
        let d = meta.descriptors();
        let descriptors = [
            d.fixed_line(),
            d.mobile(),
            d.toll_free(),
            d.premium_rate(),
            d.shared_cost(),
            d.voip(),
            d.personal_number(),
            d.pager(),
            d.uan(),
            d.voicemail(),
        ];
        numbers.extend(
            descriptors
                .into_iter()
                .flatten()
                .filter_map(|e| e.example())
                .map(|example| format!("+{}{example}", meta.country_code())),
        );
    }
    numbers
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every example number of every type in every region of the metadata.
    fn examples() -> Vec<PhoneNumber> {
        example_numbers()
            .iter()
            .filter_map(|text| phonenumber::parse(None, text).ok())
            .collect()
    }

    #[test]
    fn region_and_type_agree_with_libphonenumber_on_every_example_number() {
        let mut compared = 0;
        for number in examples() {
            if number.national().zeros() > 0 {
                continue; // the crate drops these zeros; see region_and_type
            }
            let expected_type = number.number_type(&DATABASE);
            let expected_region = number.country().id().map(|id| id.as_ref().to_owned());
            let (kind, region) = region_and_type(&number);
            assert_eq!(kind, expected_type, "type of {number:?}");
            if expected_region.is_some() {
                assert_eq!(region, expected_region, "region of {number:?}");
            }
            compared += 1;
        }
        assert!(compared > 1000, "only {compared} example numbers compared");
    }

    #[test]
    fn numbers_with_national_leading_zeros_are_typed_with_the_zeros() {
        let valid: Vec<_> = examples()
            .into_iter()
            .filter(|n| n.national().zeros() > 0)
            .collect();
        assert!(valid.len() > 20, "only {} such examples", valid.len());
        for number in valid {
            // The crate's validity check keeps the zeros: it must agree that these are
            // numbers of a known type.
            assert_eq!(
                region_and_type(&number).0 != Type::Unknown,
                number.is_valid(),
                "{number:?}"
            );
        }
    }
}
