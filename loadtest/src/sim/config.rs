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
    /// `throttle_tps` applies only from this long after start (an SMSC that turns to 0x58 after
    /// a spell of ordinary traffic); zero: from the start.
    pub throttle_after: Duration,
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
    /// Writes the id in the receipted_message_id TLV in another form than the submit_sm_resp
    /// (SMPP says the same; some SMSCs differ). `None`: same as the resp.
    pub receipt_tlv_id_format: Option<MessageIdFormat>,
    /// Starts the receipt clock when the submit_sm is read instead of when its resp is written:
    /// with `resp_delay` above the receipt delay, the receipt overtakes the submit_sm_resp
    /// (counted in [`SimStats::receipts_before_resp`](super::SimStats::receipts_before_resp)).
    pub receipt_before_resp: bool,
    /// Which parts of a concatenated message (UDH or SAR) get a receipt.
    pub multipart_receipts: ReceiptParts,
    /// Sends an intermediate ENROUTE receipt (message_state 1) at the receipt delay and the
    /// final receipt this much later.
    pub enroute_first: Option<Duration>,
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
            throttle_after: Duration::ZERO,
            error_injection: Vec::new(),
            resp_delay: Duration::ZERO,
            deliver_window: 1024,
            receipt_retry: Duration::from_secs(1),
            mo_ack_timeout: Duration::from_secs(10),
            max_records: 1_000_000,
            receipt_text_id_format: None,
            receipt_tlv_id_format: None,
            receipt_before_resp: false,
            multipart_receipts: ReceiptParts::All,
            enroute_first: None,
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
    /// Lowercase hex, 16 digits (the first one a letter).
    #[default]
    Hex,
    /// Uppercase hex, 16 digits.
    HexUpper,
    /// Decimal, fits in a u64.
    Decimal,
    /// Decimal zero-padded to 24 digits.
    DecimalPadded,
}

impl MessageIdFormat {
    /// Writes a numeric id in this format.
    pub fn format(self, id: u64) -> String {
        match self {
            MessageIdFormat::Hex => format!("{id:016x}"),
            MessageIdFormat::HexUpper => format!("{id:016X}"),
            MessageIdFormat::Decimal => id.to_string(),
            MessageIdFormat::DecimalPadded => format!("{id:024}"),
        }
    }

    /// Whether ids are hexadecimal.
    pub fn is_hex(self) -> bool {
        matches!(self, MessageIdFormat::Hex | MessageIdFormat::HexUpper)
    }
}

/// Parses `hex`, `hex-upper`, `decimal` or `decimal-padded`.
impl FromStr for MessageIdFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "hex" => Ok(MessageIdFormat::Hex),
            "hex-upper" => Ok(MessageIdFormat::HexUpper),
            "decimal" | "dec" => Ok(MessageIdFormat::Decimal),
            "decimal-padded" | "dec-padded" => Ok(MessageIdFormat::DecimalPadded),
            other => Err(format!(
                "unknown id format {other:?} (hex|hex-upper|decimal|decimal-padded)"
            )),
        }
    }
}

/// Which parts of a concatenated message get a delivery receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReceiptParts {
    /// Every part.
    #[default]
    All,
    /// Only the first part (concatenation sequence 1).
    First,
    /// Only the last part.
    Last,
}

impl ReceiptParts {
    /// Whether the part `seq` (1-based) of `total` gets a receipt.
    pub fn reports(self, seq: u8, total: u8) -> bool {
        match self {
            ReceiptParts::All => true,
            ReceiptParts::First => seq == 1,
            ReceiptParts::Last => seq == total,
        }
    }
}

/// Parses `all`, `first` or `last`.
impl FromStr for ReceiptParts {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "all" => Ok(ReceiptParts::All),
            "first" => Ok(ReceiptParts::First),
            "last" => Ok(ReceiptParts::Last),
            other => Err(format!("unknown receipt parts {other:?} (all|first|last)")),
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
    fn id_formats_write_the_same_number_differently() {
        let id = 0xab_cdef_0123_u64;
        assert_eq!(MessageIdFormat::Hex.format(id), "000000abcdef0123");
        assert_eq!(MessageIdFormat::HexUpper.format(id), "000000ABCDEF0123");
        assert_eq!(MessageIdFormat::Decimal.format(id), "737894400291");
        assert_eq!(
            MessageIdFormat::DecimalPadded.format(id),
            "000000000000737894400291"
        );
        assert_eq!("hex-upper".parse(), Ok(MessageIdFormat::HexUpper));
        assert_eq!("decimal_padded".parse(), Ok(MessageIdFormat::DecimalPadded));
        assert!("octal".parse::<MessageIdFormat>().is_err());
    }

    #[test]
    fn receipt_parts_pick_the_reported_part() {
        assert!(ReceiptParts::All.reports(2, 4));
        assert!(ReceiptParts::First.reports(1, 4) && !ReceiptParts::First.reports(4, 4));
        assert!(ReceiptParts::Last.reports(4, 4) && !ReceiptParts::Last.reports(1, 4));
        assert_eq!("LAST".parse(), Ok(ReceiptParts::Last));
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
