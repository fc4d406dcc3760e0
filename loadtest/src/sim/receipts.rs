//! Delivery receipts: what one says, when it becomes due, and the timer that releases it to
//! the [`Hub`](super::hub::Hub) for routing.

use std::{
    cmp::Ordering,
    collections::BinaryHeap,
    str::FromStr,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use chrono::{DateTime, Utc};
use rusmpp::{
    pdus::DeliverSm,
    tlvs::MessageDeliveryRequestTlvValue,
    types::{COctetString, OctetString},
    values::{
        DataCoding, ErrorCodeNetworkType, EsmClass, MessageState, NetworkErrorCode, Npi, Ton,
    },
};
use tokio::{
    sync::mpsc,
    time::{Instant, sleep_until},
};

use super::{
    Shared,
    config::{MessageIdFormat, Outcome},
    stats::bump,
};

/// An SMPP address with its TON and NPI.
#[derive(Debug, Clone)]
pub(crate) struct Address {
    pub addr: COctetString<1, 21>,
    pub ton: Ton,
    pub npi: Npi,
}

/// A receipt owed to an ESME for one accepted submit_sm.
#[derive(Debug)]
pub(crate) struct Receipt {
    /// Routed to receiver/transceiver sessions of this system_id.
    pub system_id: String,
    pub message_id: String,
    pub numeric_id: u64,
    pub outcome: Outcome,
    /// The submit's destination (the receipt comes from the handset).
    pub source: Address,
    /// The submit's source.
    pub destination: Address,
    pub submitted: DateTime<Utc>,
    /// The first 20 characters of the message, printable ASCII only.
    pub text: String,
    /// An intermediate ENROUTE notification rather than the final receipt.
    pub intermediate: bool,
    /// Set once the submit_sm_resp carrying this id is in a write buffer (a receipt pushed
    /// before that overtook its resp).
    pub resp_written: AtomicBool,
}

/// ESME_ROK registered_delivery semantics (bits 0-1): 1 = always, 2 = on failure, 3 = on
/// success (SMPP 5.0), 0 = never.
pub(crate) fn wanted(registered_delivery: u8, outcome: Outcome) -> bool {
    match registered_delivery & 0x03 {
        1 => true,
        2 => outcome.is_failure(),
        3 => !outcome.is_failure(),
        _ => false,
    }
}

/// The receipt's `text:` field: the first 20 characters, non-ASCII replaced by `?` so the
/// receipt stays plain ASCII whatever the message was written in.
pub(crate) fn text_excerpt(text: &str) -> String {
    text.chars()
        .take(20)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

const MC_DELIVERY_RECEIPT: u8 = 0x04;
const DATE_FORMAT: &str = "%y%m%d%H%M";

impl Receipt {
    /// The id written in a format, or as in the submit_sm_resp.
    fn id(&self, format: Option<MessageIdFormat>) -> String {
        match format {
            Some(format) => format.format(self.numeric_id),
            None => self.message_id.clone(),
        }
    }

    /// The ENROUTE notification that precedes this receipt.
    pub(crate) fn enroute(&self) -> Receipt {
        Receipt {
            system_id: self.system_id.clone(),
            message_id: self.message_id.clone(),
            numeric_id: self.numeric_id,
            outcome: self.outcome,
            source: self.source.clone(),
            destination: self.destination.clone(),
            submitted: self.submitted,
            text: self.text.clone(),
            intermediate: true,
            resp_written: AtomicBool::new(true),
        }
    }

    /// `stat:`, message_state and `err:` of this receipt.
    fn state(&self) -> (&'static str, u8, u16) {
        if self.intermediate {
            ("ENROUTE", 1, 0)
        } else {
            (
                self.outcome.stat(),
                self.outcome.message_state(),
                self.outcome.error_code(),
            )
        }
    }

    /// The standard receipt text (SMPP 3.4 appendix B).
    pub(crate) fn text(&self, done: DateTime<Utc>, id_format: Option<MessageIdFormat>) -> String {
        let id = self.id(id_format);
        let dlvrd = if self.outcome.is_failure() || self.intermediate {
            0
        } else {
            1
        };
        let (stat, _, err) = self.state();
        format!(
            "id:{id} sub:001 dlvrd:{dlvrd:03} submit date:{} done date:{} stat:{stat} err:{err:03} text:{}",
            self.submitted.format(DATE_FORMAT),
            done.format(DATE_FORMAT),
            self.text,
        )
    }

    /// The deliver_sm that carries this receipt; the ids in the text and in the
    /// receipted_message_id TLV as the formats say (`None`: as in the submit_sm_resp).
    pub(crate) fn deliver_sm(
        &self,
        done: DateTime<Utc>,
        tlvs: bool,
        id_format: Option<MessageIdFormat>,
        tlv_id_format: Option<MessageIdFormat>,
    ) -> DeliverSm {
        let mut text = self.text(done, id_format).into_bytes();
        text.truncate(255);
        let mut pdu = DeliverSm::builder()
            .source_addr_ton(self.source.ton)
            .source_addr_npi(self.source.npi)
            .source_addr(self.source.addr.clone())
            .dest_addr_ton(self.destination.ton)
            .dest_addr_npi(self.destination.npi)
            .destination_addr(self.destination.addr.clone())
            .esm_class(EsmClass::from(MC_DELIVERY_RECEIPT))
            .data_coding(DataCoding::McSpecific)
            .short_message(OctetString::from_vec(text).unwrap_or_default())
            .build();
        if tlvs {
            // message_id comes from our own generator: ASCII and at most 24 characters.
            if let Ok(id) = COctetString::from_str(&self.id(tlv_id_format)) {
                pdu.push_tlv(MessageDeliveryRequestTlvValue::ReceiptedMessageId(id));
            }
            let (_, state, _) = self.state();
            pdu.push_tlv(MessageDeliveryRequestTlvValue::MessageState(
                MessageState::from(state),
            ));
            if self.outcome.is_failure() && !self.intermediate {
                pdu.push_tlv(MessageDeliveryRequestTlvValue::NetworkErrorCode(
                    NetworkErrorCode::new(ErrorCodeNetworkType::Gsm, self.outcome.error_code()),
                ));
            }
        }
        pdu
    }
}

/// Starts a receipt's clock: due after the configured delay, preceded by an ENROUTE
/// notification when `enroute_first` is set.
pub(crate) fn schedule(shared: &Shared, receipt: Arc<Receipt>) {
    let delay = shared.cfg.receipt_delay.sample();
    match shared.cfg.enroute_first {
        Some(gap) => {
            bump(&shared.counters.receipts_owed);
            shared.scheduler.after(delay, Arc::new(receipt.enroute()));
            shared.scheduler.after(delay + gap, receipt);
        }
        None => shared.scheduler.after(delay, receipt),
    }
}

/// A receipt waiting for its due time; ordered by (due, arrival) so equal deadlines keep order.
#[derive(Debug)]
pub(crate) struct Timed {
    due: Instant,
    n: u64,
    receipt: Arc<Receipt>,
}

impl PartialEq for Timed {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Timed {}
impl PartialOrd for Timed {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timed {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap and we want the earliest first.
        (other.due, other.n).cmp(&(self.due, self.n))
    }
}

/// Hands receipts to the timer task. Cloneable and non-blocking.
#[derive(Debug, Clone)]
pub(crate) struct Scheduler {
    tx: mpsc::UnboundedSender<(Duration, Arc<Receipt>)>,
}

impl Scheduler {
    pub(crate) fn new() -> (Scheduler, mpsc::UnboundedReceiver<(Duration, Arc<Receipt>)>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Scheduler { tx }, rx)
    }

    /// Makes `receipt` due after `delay`.
    pub(crate) fn after(&self, delay: Duration, receipt: Arc<Receipt>) {
        // Fails only after shutdown, when nobody is waiting for receipts any more.
        let _ = self.tx.send((delay, receipt));
    }
}

/// The timer task: one heap for every receipt in the simulator instead of a task or a timer
/// per message, releasing everything due in one batch to the hub.
pub(crate) async fn run(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<(Duration, Arc<Receipt>)>,
) {
    let mut heap: BinaryHeap<Timed> = BinaryHeap::new();
    let mut n: u64 = 0;
    let mut due_now = Vec::new();
    loop {
        let next_due = heap.peek().map(|t| t.due);
        tokio::select! {
            biased;
            _ = shared.shutdown.cancelled() => break,
            msg = rx.recv() => {
                let Some(first) = msg else { break };
                let now = Instant::now();
                let mut push = |(delay, receipt): (Duration, Arc<Receipt>)| {
                    n += 1;
                    heap.push(Timed { due: now + delay, n, receipt });
                };
                push(first);
                while let Ok(more) = rx.try_recv() {
                    push(more);
                }
            }
            _ = sleep_until(next_due.unwrap_or_else(Instant::now)), if next_due.is_some() => {}
        }
        let now = Instant::now();
        while heap.peek().is_some_and(|t| t.due <= now) {
            if let Some(t) = heap.pop() {
                due_now.push(t.receipt);
            }
        }
        if !due_now.is_empty() {
            shared.hub.dispatch(due_now.drain(..));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(outcome: Outcome) -> Receipt {
        let addr = |s: &str| Address {
            addr: COctetString::from_str(s).expect("valid address"),
            ton: Ton::International,
            npi: Npi::Isdn,
        };
        Receipt {
            system_id: "smsgate".into(),
            message_id: "00000000000000ff".into(),
            numeric_id: 255,
            outcome,
            source: addr("4915112345678"),
            destination: addr("SMSGATE"),
            submitted: DateTime::from_timestamp(1_700_000_000, 0).expect("valid timestamp"),
            text: text_excerpt("Hello wörld, this is longer than twenty"),
            intermediate: false,
            resp_written: AtomicBool::new(false),
        }
    }

    #[test]
    fn enroute_notification_then_the_final_receipt() {
        let done = DateTime::from_timestamp(1_700_000_060, 0).expect("valid timestamp");
        let r = receipt(Outcome::Undeliverable);
        let enroute = r.enroute().text(done, None);
        assert!(enroute.contains("dlvrd:000"), "{enroute}");
        assert!(enroute.contains("stat:ENROUTE err:000"), "{enroute}");
        let pdu = r
            .enroute()
            .deliver_sm(done, true, None, Some(MessageIdFormat::Decimal));
        let states: Vec<_> = pdu
            .tlvs()
            .iter()
            .filter_map(|t| match t.value() {
                Some(rusmpp::tlvs::TlvValue::MessageState(s)) => Some(u8::from(*s)),
                Some(rusmpp::tlvs::TlvValue::ReceiptedMessageId(id)) => {
                    assert_eq!(id.as_str(), "255");
                    None
                }
                Some(rusmpp::tlvs::TlvValue::NetworkErrorCode(_)) => panic!("no error yet"),
                _ => None,
            })
            .collect();
        assert_eq!(states, [1]);
    }

    #[test]
    fn receipt_text_follows_the_appendix_b_layout() {
        let done = DateTime::from_timestamp(1_700_000_060, 0).expect("valid timestamp");
        assert_eq!(
            receipt(Outcome::Delivered).text(done, None),
            "id:00000000000000ff sub:001 dlvrd:001 submit date:2311142213 \
             done date:2311142214 stat:DELIVRD err:000 text:Hello w?rld, this is"
        );
        let failed = receipt(Outcome::Undeliverable).text(done, Some(MessageIdFormat::Decimal));
        assert!(failed.starts_with("id:255 sub:001 dlvrd:000 "), "{failed}");
        assert!(failed.contains("stat:UNDELIV err:001"), "{failed}");
    }

    #[test]
    fn registered_delivery_low_bits_decide_whether_a_receipt_is_sent() {
        assert!(wanted(0x01, Outcome::Delivered));
        assert!(wanted(0x1D, Outcome::Expired));
        assert!(!wanted(0x00, Outcome::Delivered));
        assert!(!wanted(0x02, Outcome::Delivered));
        assert!(wanted(0x02, Outcome::Rejected));
        assert!(!wanted(0x03, Outcome::Rejected));
    }
}
