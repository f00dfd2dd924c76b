//! The settings the actors need. The node's config file embeds this as its `[actors]` and
//! `[auth]` parts; every field has a default that suits a laptop.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Limits and timings for the actors.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActorsConfig {
    /// The node id in a cluster (0 on a single node).
    pub node_id: u16,
    /// The most members a group may have; a group may choose a lower cap.
    pub max_group_members: u32,
    /// The most authenticated connections one user may hold on one node (phones, tabs,
    /// desktops); the next `auth` or `login` gets `too_many_connections`. Bounds what one
    /// account can take of a node's sockets and memory.
    pub max_connections_per_user: usize,
    /// How often a client may send, join and log in (per connection, per user, per
    /// username); over a limit, requests get `rate_limited` with how long to wait.
    pub rate_limits: crate::limits::RateLimits,
    /// The longest text body, in UTF-8 bytes.
    pub max_text_bytes: usize,
    /// Events queued for one connection before it counts as a slow consumer and is closed.
    pub outbox_max_events: usize,
    /// Threads that write fan-outs to sockets (see `fanout.rs`); 0 writes on the
    /// delivering actor's own thread. The default is one per core.
    pub fanout_threads: usize,
    /// Sends the node holds at once (in group mailboxes, queues and commits under way);
    /// past it, sends are refused with `overloaded` instead of growing memory and latency.
    pub max_pending_sends: usize,
    /// Sends one group holds at once, so one hot group cannot take the whole node.
    pub max_pending_sends_per_group: usize,
    /// The wait an `overloaded` error tells the client.
    #[serde(with = "seconds")]
    pub overload_retry_after: Duration,
    /// A group actor with no request for this long stops; it restarts from the store on use.
    #[serde(with = "seconds")]
    pub group_idle_after: Duration,
    /// Recent `client_msg_id`s each group actor remembers in memory; older ones are looked up
    /// in the store, which keeps them as long as the message.
    pub dedupe_cache_per_group: usize,
    /// Password hashing cost.
    pub password_cost: PasswordCost,
    /// How long a session token from `login` stays valid.
    #[serde(with = "seconds")]
    pub session_ttl: Duration,
    /// Password hashes computed at once; argon2id's memory cost is per hash.
    pub max_concurrent_hashes: usize,
    /// How long a face-to-face session and its code live after the start.
    #[serde(with = "seconds")]
    pub face_to_face_ttl: Duration,
    /// How long members may grab a red packet; then what is left goes back to the sender.
    #[serde(with = "seconds")]
    pub red_packet_ttl: Duration,
    /// The largest red packet, in cents.
    pub max_red_packet_total: i64,
    /// How often the node looks for red packets that are due (to expire, or to finish a send
    /// that a crash interrupted).
    #[serde(with = "seconds")]
    pub red_packet_sweep_interval: Duration,
    /// How long after a red packet is created the sweeper makes sure its send finished.
    #[serde(with = "seconds")]
    pub red_packet_check_after: Duration,
    /// How often the node deletes the messages that groups' retention no longer keeps.
    #[serde(with = "seconds")]
    pub retention_sweep_interval: Duration,
    /// How long a media download URL from `media_url` works.
    #[serde(with = "seconds")]
    pub media_url_ttl: Duration,
}

impl Default for ActorsConfig {
    fn default() -> Self {
        ActorsConfig {
            node_id: 0,
            max_group_members: 500,
            max_connections_per_user: 32,
            rate_limits: crate::limits::RateLimits::default(),
            max_text_bytes: 4096,
            outbox_max_events: 8192,
            fanout_threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            max_pending_sends: 20_000,
            max_pending_sends_per_group: 2_000,
            overload_retry_after: Duration::from_millis(200),
            group_idle_after: Duration::from_secs(300),
            dedupe_cache_per_group: 4096,
            password_cost: PasswordCost::Default,
            session_ttl: Duration::from_secs(30 * 24 * 3600),
            max_concurrent_hashes: 4,
            face_to_face_ttl: Duration::from_secs(180),
            red_packet_ttl: Duration::from_secs(24 * 3600),
            max_red_packet_total: 1_000_000,
            red_packet_sweep_interval: Duration::from_secs(5),
            red_packet_check_after: Duration::from_secs(30),
            retention_sweep_interval: Duration::from_secs(600),
            media_url_ttl: Duration::from_secs(300),
        }
    }
}

/// Argon2id cost presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PasswordCost {
    /// OWASP's recommendation: 19 MiB, 2 passes, 1 lane (~20-40 ms a hash here).
    Default,
    /// The cheapest argon2id allows (8 KiB, 1 pass): for tests and benches only, never for
    /// real passwords.
    Test,
}

impl PasswordCost {
    /// (memory KiB, passes, lanes).
    pub fn params(self) -> (u32, u32, u32) {
        match self {
            PasswordCost::Default => (19 * 1024, 2, 1),
            PasswordCost::Test => (8, 1, 1),
        }
    }
}

/// Durations in config files are whole seconds.
pub mod seconds {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Writes a duration as seconds.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    /// Reads seconds (fractions allowed) as a duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}
