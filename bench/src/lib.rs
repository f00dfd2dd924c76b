//! Drives a running troupe node from outside, the way users do.
//!
//! * [`client`]: a small WebSocket client for the protocol: requests matched to replies by
//!   id, pushed events on a channel, and the close frame when the node closes.
//!
//! The `chat` binary is a two-terminal demo built on it; integration tests use it too.

pub mod client;

pub use client::{Client, ClientError};
