//! Storage backends. Each implements `actors::store::Store` and passes its contract suite.
//!
//! * [`embedded`]: redb in the node's data directory, the single-node default.

pub mod embedded;
