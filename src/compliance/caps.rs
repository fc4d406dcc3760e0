//! The marketing frequency cap: at most N marketing messages per recipient
//! per account per local day (the country's first zone). Counted in memory:
//! a restart forgets the day's counts (documented in docs/configuration.md).

use chrono::{DateTime, NaiveDate, Utc};
use dashmap::DashMap;

use super::rules::CountryRules;

/// Entries kept before old days are pruned.
const PRUNE_ABOVE: usize = 200_000;

/// Per (account, recipient, local day) marketing counts.
#[derive(Default)]
pub(crate) struct FrequencyCaps {
    counts: DashMap<(String, String, NaiveDate), u32>,
}

impl FrequencyCaps {
    /// Counts one more marketing message for the day of `at`, or says why not.
    pub(crate) fn take(
        &self,
        account: &str,
        e164: &str,
        rules: &CountryRules,
        at: DateTime<Utc>,
    ) -> Result<(), String> {
        let day = rules
            .timezones
            .first()
            .map_or(at.date_naive(), |tz| at.with_timezone(tz).date_naive());
        if self.counts.len() > PRUNE_ABOVE {
            let yesterday = day.pred_opt().unwrap_or(day);
            self.counts.retain(|k, _| k.2 >= yesterday);
        }
        let mut count = self
            .counts
            .entry((account.to_owned(), e164.to_owned(), day))
            .or_insert(0);
        if *count >= rules.marketing_max_per_day {
            return Err(format!(
                "The recipient already got {} marketing messages from this account today (the limit).",
                rules.marketing_max_per_day
            ));
        }
        *count += 1;
        Ok(())
    }
}
