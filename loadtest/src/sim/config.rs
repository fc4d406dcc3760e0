//! Simulator configuration: what the SMSC accepts, how it answers and what it reports back.

use std::{net::SocketAddr, str::FromStr, time::Duration};

use rand::Rng;
use serde::Serialize;

/// Everything a [`Simulator`](super::Simulator) can be told at start-up.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// SMPP listen address; port 0 picks a free port (see [`Simulator::smpp_addr`](super::Simulator::smpp_addr)).
    pub smpp_addr: SocketAddr,
    /// When set, serves `GET /stats` and `GET /submits?offset=N&limit=M` as JSON.
    pub http_addr: Option<SocketAddr>,
    /// Accepted `(system_id, password)` pairs. An unknown system_id gets ESME_RINVSYSID (0x0F),
    /// a wrong password ESME_RINVPASWD (0x0E).
    pub credentials: Vec<(String, String)>,
    /// Delay between a submit_sm_resp being written and its delivery receipt becoming due.
    pub receipt_delay: DelayDist,
    /// Weights of the final outcomes reported in receipts.
    pub outcomes: OutcomeMix,
    /// `true`: receipts carry receipted_message_id, message_state (and network_error_code for
    /// failures) TLVs as well as the text. `false`: the text form only.
    pub receipt_tlvs: bool,
    /// How message ids are written in submit_sm_resp (and receipts).
    pub message_id_format: MessageIdFormat,
    /// Above this many submit_sm per second (all sessions together) answer ESME_RTHROTTLED (0x58).
    pub throttle_tps: Option<u32>,
    /// `(probability, command_status)`: answer a submit_sm with that status instead of
    /// accepting it, e.g. `(0.01, 0x14)`. Probabilities add up; each submit rolls once.
    pub error_injection: Vec<(f64, u32)>,
    /// Delay before each submit_sm_resp. Applied in the connection's writer, so a slow
    /// response never holds up the next submit_sm on the same session.
    pub resp_delay: Duration,
    /// Most deliver_sm (receipts) unacknowledged at once on one session; further receipts wait
    /// until a deliver_sm_resp frees a slot (the MC-side window).
    pub deliver_window: usize,
    /// How long to wait before re-sending a receipt the ESME answered with a non-zero status.
    pub receipt_retry: Duration,
    /// How long [`Simulator::inject_mo`](super::Simulator::inject_mo) waits for the deliver_sm_resp.
    pub mo_ack_timeout: Duration,
    /// Submit records kept in memory for [`Simulator::submits`](super::Simulator::submits) and
    /// `GET /submits`; the oldest are dropped beyond this. 0 keeps none (cheapest for load tests).
    pub max_records: usize,
    /// Writes the id in the receipt *text* in another base than the submit_sm_resp (a quirk of
    /// some carriers: hex in the resp, decimal in the receipt). `None`: same as the resp.
    pub receipt_text_id_format: Option<MessageIdFormat>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            smpp_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            http_addr: None,
            credentials: vec![("smsgate".to_owned(), "secret".to_owned())],
            receipt_delay: DelayDist::Fixed(Duration::from_millis(50)),
            outcomes: OutcomeMix::default(),
            receipt_tlvs: true,
            message_id_format: MessageIdFormat::Hex,
            throttle_tps: None,
            error_injection: Vec::new(),
            resp_delay: Duration::ZERO,
            deliver_window: 1024,
            receipt_retry: Duration::from_secs(1),
            mo_ack_timeout: Duration::from_secs(10),
            max_records: 1_000_000,
            receipt_text_id_format: None,
        }
    }
}

/// A delay distribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DelayDist {
    /// Always this long.
    Fixed(Duration),
    /// Uniformly distributed in `min..=max`.
    Uniform {
        /// Shortest delay.
        min: Duration,
        /// Longest delay.
        max: Duration,
    },
}

impl DelayDist {
    /// Draws one delay.
    pub fn sample(&self) -> Duration {
        match *self {
            DelayDist::Fixed(d) => d,
            DelayDist::Uniform { min, max } if max > min => rand::rng().random_range(min..=max),
            DelayDist::Uniform { min, .. } => min,
        }
    }
}

/// The final state a receipt reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// stat:DELIVRD, message_state 2.
    Delivered,
    /// stat:UNDELIV, message_state 5.
    Undeliverable,
    /// stat:EXPIRED, message_state 3.
    Expired,
    /// stat:REJECTD, message_state 8.
    Rejected,
}

impl Outcome {
    /// The `stat:` word of the receipt text.
    pub fn stat(self) -> &'static str {
        match self {
            Outcome::Delivered => "DELIVRD",
            Outcome::Undeliverable => "UNDELIV",
            Outcome::Expired => "EXPIRED",
            Outcome::Rejected => "REJECTD",
        }
    }

    /// The SMPP message_state value.
    pub fn message_state(self) -> u8 {
        match self {
            Outcome::Delivered => 2,
            Outcome::Expired => 3,
            Outcome::Undeliverable => 5,
            Outcome::Rejected => 8,
        }
    }

    /// The `err:` code of the receipt text (also the GSM network_error_code); 0 when delivered.
    /// Failures use GSM MAP causes: unknown subscriber (1), absent subscriber (27),
    /// teleservice not provisioned (11).
    pub fn error_code(self) -> u16 {
        match self {
            Outcome::Delivered => 0,
            Outcome::Undeliverable => 1,
            Outcome::Expired => 27,
            Outcome::Rejected => 11,
        }
    }

    /// Whether this is a final failure.
    pub fn is_failure(self) -> bool {
        self != Outcome::Delivered
    }
}

/// Relative weights of the outcomes (they need not add up to 100).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutcomeMix {
    /// Weight of [`Outcome::Delivered`].
    pub delivered: u32,
    /// Weight of [`Outcome::Undeliverable`].
    pub undeliverable: u32,
    /// Weight of [`Outcome::Expired`].
    pub expired: u32,
    /// Weight of [`Outcome::Rejected`].
    pub rejected: u32,
}

impl Default for OutcomeMix {
    /// Everything is delivered.
    fn default() -> Self {
        Self {
            delivered: 100,
            undeliverable: 0,
            expired: 0,
            rejected: 0,
        }
    }
}

impl OutcomeMix {
    /// Draws an outcome by weight; all weights zero means delivered.
    pub fn pick(&self) -> Outcome {
        let weights = [
            (Outcome::Delivered, self.delivered),
            (Outcome::Undeliverable, self.undeliverable),
            (Outcome::Expired, self.expired),
            (Outcome::Rejected, self.rejected),
        ];
        let total: u64 = weights.iter().map(|(_, w)| u64::from(*w)).sum();
        if total == 0 || u64::from(self.delivered) == total {
            return Outcome::Delivered;
        }
        let mut roll = rand::rng().random_range(0..total);
        for (outcome, weight) in weights {
            if roll < u64::from(weight) {
                return outcome;
            }
            roll -= u64::from(weight);
        }
        Outcome::Delivered
    }
}

/// Parses `delivered=95,undeliverable=5` (names: delivered, undeliverable, expired,
/// rejected; unnamed weights are 0).
impl FromStr for OutcomeMix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut mix = OutcomeMix {
            delivered: 0,
            undeliverable: 0,
            expired: 0,
            rejected: 0,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("expected name=weight, got {part:?}"))?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|e| format!("bad weight in {part:?}: {e}"))?;
            match name.trim() {
                "delivered" => mix.delivered = weight,
                "undeliverable" => mix.undeliverable = weight,
                "expired" => mix.expired = weight,
                "rejected" => mix.rejected = weight,
                other => return Err(format!("unknown outcome {other:?}")),
            }
        }
        Ok(mix)
    }
}

/// How message ids are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MessageIdFormat {
    /// Lowercase hex, 16 digits.
    #[default]
    Hex,
    /// Decimal, fits in a u64.
    Decimal,
}

impl MessageIdFormat {
    /// Writes a numeric id in this format.
    pub fn format(self, id: u64) -> String {
        match self {
            MessageIdFormat::Hex => format!("{id:016x}"),
            MessageIdFormat::Decimal => id.to_string(),
        }
    }
}

/// Parses `hex` or `decimal`.
impl FromStr for MessageIdFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "hex" => Ok(MessageIdFormat::Hex),
            "decimal" | "dec" => Ok(MessageIdFormat::Decimal),
            other => Err(format!("unknown id format {other:?} (hex|decimal)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_mix_parses_and_defaults_missing_names_to_zero() {
        let mix: OutcomeMix = "delivered=95, undeliverable=5".parse().expect("valid mix");
        assert_eq!(mix.delivered, 95);
        assert_eq!(mix.undeliverable, 5);
        assert_eq!(mix.expired, 0);
        assert!("delivered".parse::<OutcomeMix>().is_err());
        assert!("lost=1".parse::<OutcomeMix>().is_err());
    }

    #[test]
    fn outcome_mix_with_a_single_weight_always_picks_it() {
        let mix: OutcomeMix = "expired=3".parse().expect("valid mix");
        assert!((0..100).all(|_| mix.pick() == Outcome::Expired));
    }

    #[test]
    fn uniform_delay_stays_in_range() {
        let d = DelayDist::Uniform {
            min: Duration::from_millis(10),
            max: Duration::from_millis(20),
        };
        for _ in 0..100 {
            let s = d.sample();
            assert!(s >= Duration::from_millis(10) && s <= Duration::from_millis(20));
        }
    }
}
