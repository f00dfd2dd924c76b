//! Drives a running troupe node from outside, the way users do.
//!
//! * [`client`]: a small protocol client (requests matched to replies, events on a
//!   channel), used by the integration tests and the `chat` demo.
//! * [`load`] and [`scenario`]: the load generator behind the `bench` binary.

pub mod client;
pub mod load;
pub mod scenario;

pub use client::{Client, ClientError};
