//! Quiet hours: marketing goes only inside a country's window, on allowed
//! days that are not public holidays, in the recipient's local time. When
//! the number does not pin down one zone, every zone of the country must be
//! inside the window.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

use super::rules::CountryRules;

/// How far ahead the next allowed instant is searched.
const HORIZON_DAYS: i64 = 21;

/// The zones a number may be in: the one its prefix pins it to, else every
/// zone of the country.
pub fn zones_for<'a>(rules: &'a CountryRules, e164: &str) -> &'a [Tz] {
    rules
        .zone_prefixes
        .iter()
        .find(|(prefix, _)| e164.starts_with(prefix.as_str()))
        .map_or(rules.timezones.as_slice(), |(_, tz)| {
            std::slice::from_ref(tz)
        })
}

/// Is `at` inside the marketing window in every one of `zones`?
pub fn allowed_at(rules: &CountryRules, zones: &[Tz], at: DateTime<Utc>) -> bool {
    let Some(w) = &rules.marketing_window else {
        return true;
    };
    zones.iter().all(|tz| {
        let local = at.with_timezone(tz);
        let day_ok = w.days[local.weekday().num_days_from_monday() as usize];
        let not_holiday = !rules.holidays.contains(&local.date_naive());
        let time = local.time();
        day_ok && not_holiday && time >= w.start && time < w.end
    })
}

/// `None` when marketing may go at `now`; otherwise the next instant it may
/// (searched [`HORIZON_DAYS`] ahead; `Some(None)` if there is none).
pub fn next_allowed(
    rules: &CountryRules,
    zones: &[Tz],
    now: DateTime<Utc>,
) -> Option<Option<DateTime<Utc>>> {
    if allowed_at(rules, zones, now) {
        return None;
    }
    let w = rules.marketing_window.as_ref()?;
    // Candidates: each zone's window start on each of the coming days.
    let mut candidates: Vec<DateTime<Utc>> = Vec::new();
    for tz in zones {
        let today = now.with_timezone(tz).date_naive();
        for offset in 0..=HORIZON_DAYS {
            let Some(day) = today.checked_add_signed(Duration::days(offset)) else {
                continue;
            };
            if let Some(start) = local_instant(tz, day, w.start) {
                candidates.push(start);
            }
        }
    }
    candidates.sort();
    Some(
        candidates
            .into_iter()
            .filter(|c| *c > now)
            .find(|c| allowed_at(rules, zones, *c)),
    )
}

/// The UTC instant of a local wall-clock time (the earlier one in a DST fold;
/// just after the gap in a DST gap).
fn local_instant(tz: &Tz, day: NaiveDate, time: chrono::NaiveTime) -> Option<DateTime<Utc>> {
    let naive = day.and_time(time);
    tz.from_local_datetime(&naive)
        .earliest()
        .or_else(|| {
            tz.from_local_datetime(&(naive + Duration::hours(1)))
                .earliest()
        })
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compliance::rules::RuleBook;

    fn rules(text: &str) -> CountryRules {
        RuleBook::parse(text)
            .unwrap()
            .for_country("XX")
            .unwrap()
            .clone()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    const FR: &str = "[countries.XX]\ntimezones = [\"Europe/Paris\"]\nholidays = [\"2026-12-25\"]\nmarketing_window = { days = [\"mon\",\"tue\",\"wed\",\"thu\",\"fri\",\"sat\"], start = \"08:00\", end = \"20:00\" }\n";

    #[test]
    fn sunday_in_paris_is_deferred_to_monday_eight() {
        let r = rules(FR);
        // Sunday 2026-11-22 15:00 Paris = 14:00 UTC.
        let next = next_allowed(&r, &r.timezones, utc("2026-11-22T14:00:00Z"))
            .unwrap()
            .unwrap();
        assert_eq!(next, utc("2026-11-23T07:00:00Z"), "Monday 08:00 Paris");
    }

    #[test]
    fn inside_the_window_is_allowed_now() {
        let r = rules(FR);
        assert!(next_allowed(&r, &r.timezones, utc("2026-11-23T10:00:00Z")).is_none());
        assert!(
            allowed_at(&r, &r.timezones, utc("2026-11-23T18:59:59Z")),
            "19:59:59 Paris"
        );
        assert!(
            !allowed_at(&r, &r.timezones, utc("2026-11-23T19:00:00Z")),
            "20:00 Paris: end is exclusive"
        );
    }

    #[test]
    fn a_holiday_moves_it_to_the_next_working_day() {
        let r = rules(FR);
        // Christmas 2026 is a Friday: deferred to Saturday 08:00.
        let next = next_allowed(&r, &r.timezones, utc("2026-12-25T09:00:00Z"))
            .unwrap()
            .unwrap();
        assert_eq!(next, utc("2026-12-26T07:00:00Z"));
    }

    #[test]
    fn every_zone_must_be_inside_the_window() {
        let r = rules(
            "[countries.XX]\ntimezones = [\"America/New_York\", \"America/Los_Angeles\"]\nmarketing_window = { days = [\"mon\",\"tue\",\"wed\",\"thu\",\"fri\",\"sat\",\"sun\"], start = \"08:00\", end = \"21:00\" }\n",
        );
        // 22:30 in Los Angeles (Tue 06:30Z): deferred to 08:00 LA = 16:00Z.
        let next = next_allowed(&r, &r.timezones, utc("2026-11-24T06:30:00Z"))
            .unwrap()
            .unwrap();
        assert_eq!(next, utc("2026-11-24T16:00:00Z"));
        // 09:00 New York is 06:00 LA: still too early in LA.
        assert!(!allowed_at(&r, &r.timezones, utc("2026-11-24T14:00:00Z")));
    }

    #[test]
    fn a_number_pinned_to_one_zone_waits_only_for_that_zone() {
        let r = rules(
            "[countries.XX]\ntimezones = [\"America/New_York\", \"America/Los_Angeles\"]\nzone_prefixes = { \"+1212\" = \"America/New_York\", \"+1213\" = \"America/Los_Angeles\" }\nmarketing_window = { days = [\"mon\",\"tue\",\"wed\",\"thu\",\"fri\",\"sat\",\"sun\"], start = \"08:00\", end = \"21:00\" }\n",
        );
        let ny = zones_for(&r, "+12125550143");
        assert_eq!(ny, [chrono_tz::America::New_York]);
        assert_eq!(
            zones_for(&r, "+13125550143").len(),
            2,
            "unlisted: every zone"
        );
        // 09:00 New York: a New York number may get it, an unpinned one not yet.
        let at = utc("2026-11-24T14:00:00Z");
        assert!(allowed_at(&r, ny, at));
        assert!(!allowed_at(&r, zones_for(&r, "+13125550143"), at));
        // 22:30 in Los Angeles: an LA number waits for 08:00 LA.
        let la = zones_for(&r, "+12135550143");
        let next = next_allowed(&r, la, utc("2026-11-24T06:30:00Z"))
            .unwrap()
            .unwrap();
        assert_eq!(next, utc("2026-11-24T16:00:00Z"));
    }

    #[test]
    fn a_prefix_zone_must_be_one_of_the_countrys_zones() {
        let text = "[countries.XX]\ntimezones = [\"America/New_York\"]\nzone_prefixes = { \"+1213\" = \"America/Los_Angeles\" }\n";
        let err = RuleBook::parse(text).unwrap_err();
        assert!(err.to_string().contains("not in timezones"), "{err}");
    }
}
