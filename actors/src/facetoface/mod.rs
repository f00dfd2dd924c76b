//! Face-to-face groups: people standing together start a session, see a 4-digit code, and
//! everyone within 50 m who enters it joins; anyone in it can turn it into a group.
//!
//! * [`table`]: which session a code and a position name (pure: geohash cells, distances,
//!   expiry).
//! * [`code`]: the actor of one code, placed in the cluster by the code alone; it owns the
//!   code's table and starts the sessions.
//! * [`session`]: the actor of one session: its participants, the pushes of their list,
//!   and the confirmation into a group.
//!
//! Sessions live in memory only, for their few minutes: a node that dies, or a placement
//! that moves a code to another node, ends its sessions, and people start again.

pub mod code;
pub mod session;
pub mod table;

pub use table::{CodeTable, Lookup, valid_code};

/// The code as clients see it: four digits, zero-padded.
pub fn code_text(code: u16) -> String {
    format!("{code:04}")
}

/// The code as a number, if `text` is a code.
pub fn parse_code(text: &str) -> Option<u16> {
    if valid_code(text) { text.parse().ok() } else { None }
}

/// How many codes a start tries before giving up (only a crowd of ~10,000 sessions within
/// a kilometre could use them all).
pub const START_ATTEMPTS: u8 = 32;
