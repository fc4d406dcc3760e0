//! The simulator's error type.

use std::time::Duration;

/// Why [`Simulator::inject_mo`](super::Simulator::inject_mo) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// No receiver or transceiver session of that system_id is bound.
    #[error("no receiver or transceiver session is bound for system_id {0:?}")]
    NoReceiver(String),
    /// An address is not 1-20 ASCII characters.
    #[error("invalid SMPP address {0:?}")]
    InvalidAddress(String),
    /// The encoded text does not fit in one deliver_sm (64 KiB message_payload).
    #[error("message too long: {0} octets")]
    TooLong(usize),
    /// The session closed before the ESME answered the deliver_sm.
    #[error("the session closed before the deliver_sm was acknowledged")]
    SessionClosed,
    /// The ESME answered the deliver_sm with a non-zero command_status.
    #[error("the ESME answered deliver_sm with command_status {0:#010x}")]
    Refused(u32),
    /// No deliver_sm_resp arrived in time (`SimConfig::mo_ack_timeout`).
    #[error("no deliver_sm_resp within {0:?}")]
    Timeout(Duration),
    /// A concatenated MO split that cannot be made (part count, order).
    #[error("cannot split the message: {0}")]
    BadSplit(String),
}
