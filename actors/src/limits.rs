//! Rate limits on what a client can make the node do over and over: sends, joins and
//! logins. Token buckets, per connection (in the session, no lock) and per user or
//! username (shared by the node's connections, in a few locked shards). A request over a
//! limit is refused with `rate_limited` and how long to wait; nothing is queued for later,
//! so a flood costs the node a bucket update per request and no memory.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A sustained rate and the burst allowed on top of it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Requests per second, sustained.
    pub per_second: f64,
    /// Requests allowed at once after a quiet spell.
    pub burst: f64,
}

impl Rate {
    const fn new(per_second: f64, burst: f64) -> Rate {
        Rate { per_second, burst }
    }
}

/// Every limit, each with a default no person typing or tapping reaches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimits {
    /// `send` on one connection.
    pub connection_sends: Rate,
    /// `send` by one user, all their connections on this node together.
    pub user_sends: Rate,
    /// `join` and `join_face_to_face` on one connection.
    pub connection_joins: Rate,
    /// `join` and `join_face_to_face` by one user on this node.
    pub user_joins: Rate,
    /// `login` and `register` attempts on one connection.
    pub connection_logins: Rate,
    /// `login` attempts for one username on this node, whoever makes them: slows password
    /// guessing to a crawl.
    pub username_logins: Rate,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            connection_sends: Rate::new(100.0, 200.0),
            user_sends: Rate::new(200.0, 400.0),
            connection_joins: Rate::new(5.0, 20.0),
            user_joins: Rate::new(10.0, 40.0),
            connection_logins: Rate::new(2.0, 10.0),
            username_logins: Rate::new(0.2, 10.0),
        }
    }
}

/// One token bucket: full when unused, one token per request.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn full(rate: Rate, now: Instant) -> Bucket {
        Bucket { tokens: rate.burst, updated: now }
    }

    /// Takes a token, or says how long until one is there.
    pub fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(rate.burst);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        if rate.per_second <= 0.0 {
            return Err(Duration::from_secs(3600));
        }
        Err(Duration::from_secs_f64((1.0 - self.tokens) / rate.per_second))
    }

    fn is_full(&self, rate: Rate, now: Instant) -> bool {
        self.tokens + now.saturating_duration_since(self.updated).as_secs_f64() * rate.per_second >= rate.burst
    }
}

/// The per-connection buckets, kept in the connection's session.
#[derive(Debug)]
pub struct ConnectionLimits {
    /// `send`.
    pub sends: Bucket,
    /// `join`, `join_face_to_face`.
    pub joins: Bucket,
    /// `login`, `register`.
    pub logins: Bucket,
}

impl ConnectionLimits {
    /// Full buckets for a new connection.
    pub fn new(limits: &RateLimits, now: Instant) -> ConnectionLimits {
        ConnectionLimits {
            sends: Bucket::full(limits.connection_sends, now),
            joins: Bucket::full(limits.connection_joins, now),
            logins: Bucket::full(limits.connection_logins, now),
        }
    }
}

/// Shards, so that connections of different users rarely wait for one another.
const SHARDS: usize = 16;
/// A shard with more buckets than this drops the full ones (users gone quiet).
const PRUNE_ABOVE: usize = 4096;

/// Buckets by key (a user, a username), shared by all connections of the node.
pub struct Limiter<K> {
    rate: Rate,
    shards: Vec<Mutex<HashMap<K, Bucket>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    /// A limiter with every key's bucket full.
    pub fn new(rate: Rate) -> Limiter<K> {
        Limiter { rate, shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(), hasher: Default::default() }
    }

    /// Takes a token of `key`'s bucket, or says how long until one is there.
    pub fn take(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let shard = (self.hasher.hash_one(key) as usize) % SHARDS;
        // A poisoned shard only means another request panicked mid-update of a counter.
        let mut buckets = self.shards[shard].lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() > PRUNE_ABOVE {
            let rate = self.rate;
            buckets.retain(|_, bucket| !bucket.is_full(rate, now));
        }
        buckets.entry(key.clone()).or_insert_with(|| Bucket::full(self.rate, now)).take(self.rate, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let rate = Rate::new(10.0, 3.0);
        let start = Instant::now();
        let mut bucket = Bucket::full(rate, start);
        for _ in 0..3 {
            assert_eq!(bucket.take(rate, start), Ok(()));
        }
        let wait = bucket.take(rate, start).unwrap_err();
        assert!(wait > Duration::from_millis(99) && wait <= Duration::from_millis(100), "{wait:?}");
        assert_eq!(bucket.take(rate, start + Duration::from_millis(100)), Ok(()), "one token per 100 ms");
        assert!(bucket.take(rate, start + Duration::from_millis(100)).is_err());
        // A long quiet spell refills to the burst, not beyond.
        let later = start + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(bucket.take(rate, later), Ok(()));
        }
        assert!(bucket.take(rate, later).is_err());
    }

    #[test]
    fn a_limiter_keeps_keys_apart_and_forgets_quiet_ones() {
        let limiter: Limiter<String> = Limiter::new(Rate::new(1.0, 1.0));
        let now = Instant::now();
        let (ann, bob) = ("ann".to_owned(), "bob".to_owned());
        assert_eq!(limiter.take(&ann, now), Ok(()));
        assert!(limiter.take(&ann, now).is_err());
        assert_eq!(limiter.take(&bob, now), Ok(()), "another key has its own bucket");
        let many: Vec<String> = (0..SHARDS * (PRUNE_ABOVE + 500)).map(|i| format!("u{i}")).collect();
        for key in &many {
            let _ = limiter.take(key, now);
        }
        // Later, once those buckets have refilled, the next request in each shard drops them.
        let later = now + Duration::from_secs(5);
        for key in many.iter().take(200) {
            let _ = limiter.take(key, later);
        }
        let held: usize = limiter.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(held <= 200, "quiet buckets are dropped ({held} held)");
    }
}
