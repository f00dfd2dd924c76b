//! The load generator's parts, shared by the scenarios.
//!
//! * [`conn`]: lean WebSocket connections with a chosen source address.
//! * [`wire`]: borrowed decoding of node frames, and timed message bodies.
//! * [`accounts`]: signing up the users a scenario needs.
//! * [`sequence`]: checking a receiver's view of a group's log.
//! * [`per_thread`]: tallies (histograms, counters) kept per bench thread.
//! * [`node`]: the node's own CPU and memory figures, through its console.
//! * [`report`]: terminal summary, JSON result, SVG pictures.

pub mod accounts;
pub mod conn;
pub mod node;
pub mod per_thread;
pub mod report;
pub mod sequence;
pub mod wire;
