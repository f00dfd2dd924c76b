//! One module per `bench` scenario, and the setup they share.

pub mod admission;
pub mod connections;
pub mod fanout;
pub mod floor;
pub mod joins;
pub mod media;
pub mod redpacket;
pub mod send;
pub mod setup;
pub mod sync;
