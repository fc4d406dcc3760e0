//! Reads the simulator's submit records (`GET /submits`) and finds this run's messages in
//! them by their token, giving each message's arrival time at the SMSC. A multipart message
//! arrives when its last part does; parts are grouped by destination and concatenation
//! reference (only the first part carries the token).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use super::{error::LoadgenError, traffic::find_token};

/// Records fetched per request.
const PAGE: usize = 20_000;

/// The fields of a simulator record that correlation needs.
#[derive(Debug, Deserialize)]
struct SimRecord {
    at: DateTime<Utc>,
    destination_addr: String,
    text: String,
    concat: Option<Concat>,
}

#[derive(Debug, Deserialize)]
struct Concat {
    reference: u16,
    total: u8,
    seq: u8,
}

/// Parts of one concatenated message seen so far.
#[derive(Debug, Default)]
struct Group {
    seen: u64,
    count: u8,
    last_us: u64,
    token: Option<u64>,
}

/// Arrival of a message at the simulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Arrival {
    /// Wall clock (µs) of the last part's submit_sm.
    pub last_us: u64,
}

/// An incremental reader of the simulator's records.
#[derive(Debug)]
pub(crate) struct SimFeed {
    http: reqwest::Client,
    url: String,
    prefix: String,
    next: usize,
    groups: HashMap<(String, u16, u8), Vec<Group>>,
    /// This run's messages that reached the simulator, by sequence number.
    pub arrivals: HashMap<u64, Arrival>,
    /// Records read (this run's or not).
    pub records: u64,
}

impl SimFeed {
    /// Starts reading after the records the simulator already holds.
    pub(crate) async fn start(
        http: reqwest::Client,
        url: &str,
        prefix: String,
    ) -> Result<SimFeed, LoadgenError> {
        let url = url.trim_end_matches('/').to_owned();
        let stats: Value = get_json(&http, &format!("{url}/stats"), &url).await?;
        let base = stats
            .get("submits_ok")
            .and_then(Value::as_u64)
            .ok_or_else(|| LoadgenError::Sim {
                url: url.clone(),
                why: "GET /stats has no submits_ok".to_owned(),
            })?;
        Ok(SimFeed {
            http,
            next: usize::try_from(base).unwrap_or(usize::MAX),
            url,
            prefix,
            groups: HashMap::new(),
            arrivals: HashMap::new(),
            records: 0,
        })
    }

    /// Reads every record added since the last call; returns how many of this run's messages
    /// completed their arrival.
    pub(crate) async fn poll(&mut self) -> Result<usize, LoadgenError> {
        let before = self.arrivals.len();
        loop {
            let page_url = format!("{}/submits?offset={}&limit={PAGE}", self.url, self.next);
            let page: Vec<SimRecord> = get_json(&self.http, &page_url, &self.url).await?;
            let n = page.len();
            self.next += n;
            self.records += n as u64;
            for r in page {
                self.add(r);
            }
            if n < PAGE {
                break;
            }
        }
        Ok(self.arrivals.len() - before)
    }

    fn add(&mut self, r: SimRecord) {
        let at = u64::try_from(r.at.timestamp_micros()).unwrap_or(0);
        let token = find_token(&r.text, &self.prefix);
        let Some(c) = r.concat.filter(|c| c.total > 1) else {
            if let Some(seq) = token {
                // A resubmission (at-least-once) keeps the first arrival.
                self.arrivals.entry(seq).or_insert(Arrival { last_us: at });
            }
            return;
        };
        if c.seq == 0 || c.seq > c.total || c.seq > 64 {
            return;
        }
        let bit = 1u64 << (c.seq - 1);
        let key = (r.destination_addr, c.reference, c.total);
        let groups = self.groups.entry(key.clone()).or_default();
        let i = match groups.iter().position(|g| g.seen & bit == 0) {
            Some(i) => i,
            None => {
                groups.push(Group::default());
                groups.len() - 1
            }
        };
        let g = &mut groups[i];
        g.seen |= bit;
        g.count += 1;
        g.last_us = g.last_us.max(at);
        if c.seq == 1 {
            g.token = token;
        }
        if g.count == c.total {
            let g = groups.remove(i);
            if groups.is_empty() {
                self.groups.remove(&key);
            }
            if let Some(seq) = g.token {
                self.arrivals
                    .entry(seq)
                    .or_insert(Arrival { last_us: g.last_us });
            }
        }
    }

    /// This run's multipart messages with some parts still missing.
    pub(crate) fn incomplete(&self) -> usize {
        self.groups
            .values()
            .flatten()
            .filter(|g| g.token.is_some())
            .count()
    }
}

async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
    sim: &str,
) -> Result<T, LoadgenError> {
    let err = |why: String| LoadgenError::Sim {
        url: sim.to_owned(),
        why,
    };
    let resp = http
        .get(url)
        .send()
        .await
        .map_err(|e| err(format!("GET {url}: {e}")))?;
    if !resp.status().is_success() {
        return Err(err(format!("GET {url}: HTTP {}", resp.status())));
    }
    resp.json()
        .await
        .map_err(|e| err(format!("GET {url}: bad JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(at_us: i64, dest: &str, text: &str, concat: Option<(u16, u8, u8)>) -> SimRecord {
        SimRecord {
            at: DateTime::from_timestamp_micros(at_us).unwrap(),
            destination_addr: dest.into(),
            text: text.into(),
            concat: concat.map(|(reference, total, seq)| Concat {
                reference,
                total,
                seq,
            }),
        }
    }

    #[test]
    fn groups_parts_in_any_order() {
        let mut f = SimFeed {
            http: reqwest::Client::new(),
            url: String::new(),
            prefix: "LGr-".into(),
            next: 0,
            groups: HashMap::new(),
            arrivals: HashMap::new(),
            records: 0,
        };
        f.add(rec(10, "44", "LGr-1 hello", None));
        f.add(rec(12, "44", "LGr-1 hello", None));
        f.add(rec(20, "45", "tail", Some((7, 2, 2))));
        f.add(rec(15, "45", "LGr-2 head", Some((7, 2, 1))));
        f.add(rec(30, "46", "LGr-3 head", Some((7, 2, 1))));
        f.add(rec(31, "46", "LGother-9", None));
        assert_eq!(f.arrivals[&1], Arrival { last_us: 10 });
        assert_eq!(f.arrivals[&2], Arrival { last_us: 20 });
        assert!(!f.arrivals.contains_key(&3));
        assert_eq!(f.incomplete(), 1);
        assert_eq!(f.arrivals.len(), 2);
    }
}
