//! Building submit_sm PDUs for a message: addresses with the right TON/NPI,
//! data_coding, UDHI, registered_delivery and a relative validity period.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use rusmpp::pdus::SubmitSm;
use rusmpp::types::{COctetString, EmptyOrFullCOctetString, OctetString};
use rusmpp::values::{DataCoding, EsmClass, Npi, RegisteredDelivery, Ton};

use crate::compliance::rules::SenderType;
use crate::encoding::{self, EncodedSegment, Encoding};
use crate::message::Message;

/// Why a message could not be turned into PDUs (a permanent failure).
#[derive(Debug, thiserror::Error)]
pub enum PduError {
    /// The text could not be encoded.
    #[error("cannot encode text: {0}")]
    Encode(String),
    /// An address or field does not fit SMPP limits.
    #[error("invalid SMPP field {field}: {reason}")]
    Field {
        /// Field name.
        field: &'static str,
        /// What was wrong.
        reason: String,
    },
}

/// An SMPP address with its type of number and numbering plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    /// Type of number.
    pub ton: Ton,
    /// Numbering plan indicator.
    pub npi: Npi,
    /// Digits (no `+`) or alphanumeric text.
    pub addr: String,
}

/// TON/NPI chosen from the address's shape (the same classification the
/// country rules use): alphanumeric 5/0, international 1/1, short code 3/0.
pub fn address_for(addr: &str) -> Address {
    let digits = addr.strip_prefix('+').unwrap_or(addr);
    match SenderType::of(addr) {
        SenderType::Alphanumeric => Address {
            ton: Ton::Alphanumeric,
            npi: Npi::Unknown,
            addr: addr.to_owned(),
        },
        SenderType::Numeric => Address {
            ton: Ton::International,
            npi: Npi::Isdn,
            addr: digits.to_owned(),
        },
        SenderType::Shortcode => Address {
            ton: Ton::NetworkSpecific,
            npi: Npi::Unknown,
            addr: digits.to_owned(),
        },
    }
}

/// SMPP relative time `YYMMDDhhmmss000R` for the time left until `until`
/// (at least one second). Carriers drop the message when it runs out.
pub fn relative_validity(now: DateTime<Utc>, until: DateTime<Utc>) -> String {
    let secs = (until - now).num_seconds().max(1);
    let days = (secs / 86_400).min(99);
    let rem = secs % 86_400;
    format!(
        "0000{:02}{:02}{:02}{:02}000R",
        days,
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// The submit_sm PDUs for the given segments of a message, paired with the
/// segment index each carries.
pub fn submit_sms(
    m: &Message,
    segments: &[u32],
    now: DateTime<Utc>,
) -> Result<Vec<(u32, SubmitSm)>, PduError> {
    let plan = encoding::plan(&m.text);
    let encoded: Vec<EncodedSegment> = encoding::encode(&m.text, plan, m.concat_ref)
        .map_err(|e| PduError::Encode(e.to_string()))?;
    let source = address_for(&m.from);
    let dest = address_for(&m.to);
    let source_addr =
        COctetString::<1, 21>::from_str(&source.addr).map_err(field("source_addr"))?;
    let destination_addr =
        COctetString::<1, 21>::from_str(&dest.addr).map_err(field("destination_addr"))?;
    let validity = EmptyOrFullCOctetString::<17>::from_str(&relative_validity(now, m.expires_at))
        .map_err(field("validity_period"))?;
    let data_coding = match m.encoding {
        Encoding::Gsm7 => DataCoding::McSpecific,
        Encoding::Ucs2 => DataCoding::Ucs2,
    };
    segments
        .iter()
        .map(|&i| {
            let seg = encoded.get(i as usize).ok_or_else(|| PduError::Field {
                field: "segment",
                reason: format!("segment {i} out of range"),
            })?;
            let short_message = OctetString::<0, 255>::from_slice(&seg.short_message)
                .map_err(field("short_message"))?;
            // Not EsmClass::default(): in rusmpp 0.4.0 that sets an ANSI-41 bit (0x08).
            let esm_class = EsmClass::from(if seg.udhi { 0x40 } else { 0x00 });
            let pdu = SubmitSm::builder()
                .source_addr_ton(source.ton)
                .source_addr_npi(source.npi)
                .source_addr(source_addr.clone())
                .dest_addr_ton(dest.ton)
                .dest_addr_npi(dest.npi)
                .destination_addr(destination_addr.clone())
                .esm_class(esm_class)
                .validity_period(validity.clone())
                // Final receipt on success or failure (no intermediate notifications).
                .registered_delivery(RegisteredDelivery::from(0x01))
                .data_coding(data_coding)
                .short_message(short_message)
                .build();
            Ok((i, pdu))
        })
        .collect()
}

/// Maps a field-conversion error to [`PduError::Field`].
fn field<E: std::fmt::Display>(field: &'static str) -> impl Fn(E) -> PduError {
    move |e| PduError::Field {
        field,
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_get_ton_npi_from_their_shape() {
        assert_eq!(address_for("ACME").ton, Ton::Alphanumeric);
        let intl = address_for("+447400123456");
        assert_eq!(
            (intl.ton, intl.npi, intl.addr.as_str()),
            (Ton::International, Npi::Isdn, "447400123456")
        );
        assert_eq!(address_for("12345").ton, Ton::NetworkSpecific);
        assert_eq!(address_for("447400123456").ton, Ton::International);
    }

    #[test]
    fn relative_validity_is_smpp_relative_time() {
        let now = Utc::now();
        assert_eq!(
            relative_validity(now, now + chrono::Duration::seconds(300)),
            "000000000500000R"
        );
        assert_eq!(
            relative_validity(now, now + chrono::Duration::seconds(86_400 + 3_661)),
            "000001010101000R"
        );
        assert_eq!(relative_validity(now, now), "000000000001000R");
    }
}
