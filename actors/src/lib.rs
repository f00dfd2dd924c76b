//! troupe's behaviour, with no sockets and no storage engine in it.
//!
//! * [`session`]: one client connection's protocol state machine: parses frames, checks
//!   auth, and routes each request to the actor or store read that answers it.
//! * [`group`]: the group actor, which serializes every change to one group (membership,
//!   the member cap, message seqs) and fans messages out.
//! * [`user`]: the user actor, which owns one user's connections on this node.
//! * [`expiry`]: the node's one timer that closes connections when their session ends.
//! * [`fanout`]: the node-local fan-out step that hands encoded events to connections.
//! * [`geo`]: geohash cells and distances, for face-to-face groups.
//! * [`media`]: what an upload is, by its bytes, and an image's declared size.
//! * [`facetoface`]: face-to-face sessions: the actor of each code and of each session.
//! * [`redpacket`]: red packets: the split into shares, and the actor of each packet.
//! * [`wallet`]: wallets as ledgers, and the operator's credit.
//! * [`outbox`]: one connection's queue of encoded events, written straight to its socket
//!   when it can be, else drained by the gateway.
//! * [`frame`]: the WebSocket data frames events leave in.
//! * [`directory`]: finds, starts and retires the actor for a key; counts mailbox depth.
//! * [`accounts`]: registration, password hashing, session tokens.
//! * [`store`]: the storage traits every backend implements, and their contract suite.
//! * [`cache`]: the seam for copies of hot data (Redis on a cluster), and the rules that
//!   keep a stale or missing cache harmless.
//! * [`cluster`]: placement of group actors over nodes, and the seam to reach other nodes.
//! * [`system`]: wires the above together for one node.

pub mod accounts;
pub mod admission;
pub mod cache;
pub mod cluster;
pub mod config;
pub mod directory;
pub mod error;
pub mod expiry;
pub mod facetoface;
pub mod fanout;
pub mod frame;
pub mod geo;
pub mod group;
pub mod limits;
pub mod media;
pub mod metrics;
pub mod outbox;
pub mod redpacket;
pub mod retention;
pub mod session;
pub mod store;
pub mod system;
pub mod user;
pub mod views;
pub mod wallet;

pub use config::ActorsConfig;
pub use error::ApiError;
pub use system::System;

/// Milliseconds since the Unix epoch: the timestamp unit of every record and event.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A fresh random id in `1..=MAX_ID`, for users and groups. Stores insert ids with a
/// conditional write, so the rare collision is retried rather than overwriting.
pub fn random_id() -> u64 {
    loop {
        let id = rand::random::<u64>() & schema::ids::MAX_ID;
        if id != 0 {
            return id;
        }
    }
}
