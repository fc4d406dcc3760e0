//! smsgate: a high-throughput SMS/A2P gateway.
//!
//! A message's journey reads top to bottom:
//! [`api`] (HTTP in) → [`compliance`] (admission) → [`queue`] (priority,
//! storage) → [`carrier`] (SMPP out) → [`dlr`] (receipts back).
//! [`gateway`] wires the stages together; [`message`] and [`encoding`] are the
//! domain they share.

#![warn(missing_docs)]

pub mod api;
pub mod backoff;
pub mod carrier;
pub mod compliance;
pub mod config;
pub mod dlr;
pub mod encoding;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod gateway;
pub mod logging;
pub mod message;
pub mod metrics;
pub mod queue;
mod redis_pool;
pub mod shared_limit;

pub use config::Config;
pub use gateway::Gateway;
