//! The troupe node: the process that wires actors to sockets and storage.

pub mod store;
