//! smsgate's load-test kit.
//!
//! [`sim`] is an SMPP 3.4 (and 5.0) SMSC simulator: it accepts binds, answers submit_sm with
//! message ids, sends delivery receipts and mobile-originated messages, and can throttle,
//! inject errors and drop connections. The gateway's end-to-end tests run it in-process; the
//! `smsc-sim` binary runs it standalone for load tests.

#![warn(missing_docs)]

pub mod loadgen;
pub mod sim;
