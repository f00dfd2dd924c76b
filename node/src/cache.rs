//! The Redis cache: `actors::cache::Cache` over one Redis server that all nodes share.
//!
//! Keys (under a configurable prefix, `troupe` by default):
//! * `{prefix}:g:{group}`: a hash, the group's card: `rec` (the group row as JSON), `last`
//!   (its newest seq as the owner last wrote it; only raised) and `m:{user}` (each member's
//!   role, written only by the owner).
//! * `{prefix}:h:{group}`: a list, the group's newest messages, newest first, each stored as
//!   `{seq}|{json}`; always a gapless run of seqs (a script restarts the run rather than
//!   leave a gap).
//!
//! Every key expires (`ttl`), so an entry nobody refreshes goes away by itself.
//!
//! Writes never make an actor wait: they queue for one writer task, in order. A write that
//! fails marks its group dirty; when Redis answers again, the writer first deletes the dirty
//! groups' keys, since they may hold what the lost write was meant to replace. Reads give
//! up after a short timeout, and for a moment after any failure they are not tried at all,
//! so a dead Redis costs the node nothing but its hit rate.

use actors::cache::{Cache, CachedGroup};
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use schema::frames::Role;
use schema::records::{GroupRecord, MessageRecord};
use schema::{GroupId, Seq, UserId};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Mutex, mpsc};

/// How many messages a group's list keeps.
const RECENT: isize = 200;
/// How long a read may take before it counts as a miss.
const READ_TIMEOUT: Duration = Duration::from_millis(150);
/// How long reads are skipped after a failure.
const BACK_OFF_MS: u64 = 1000;
/// At most this many dirty groups are remembered; beyond, every key under the prefix goes.
const MAX_DIRTY: usize = 100_000;

/// Why the cache could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The Redis URL does not parse.
    #[error("redis url: {0}")]
    Url(String),
}

/// The Redis cache.
pub struct RedisCache {
    link: Arc<Link>,
    writes: mpsc::UnboundedSender<Write>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// The connection, made on first use and remade after Redis comes back.
struct Link {
    client: redis::Client,
    prefix: String,
    ttl: u64,
    conn: Mutex<Option<ConnectionManager>>,
    /// Reads are skipped until this time (ms since the Unix epoch).
    skip_until: AtomicU64,
}

/// One queued write.
enum Write {
    Fill { record: GroupRecord, last_seq: Seq },
    Started { record: GroupRecord, last_seq: Seq, members: Vec<(UserId, Role)> },
    Record(GroupRecord),
    Member { group: GroupId, user: UserId, role: Option<Role> },
    Appended { group: GroupId, messages: Vec<MessageRecord> },
}

impl Write {
    fn group(&self) -> GroupId {
        match self {
            Write::Fill { record, .. } | Write::Started { record, .. } | Write::Record(record) => record.id,
            Write::Member { group, .. } | Write::Appended { group, .. } => *group,
        }
    }
}

/// Raises the card's `last`; appends to the list if the new messages follow its head, or
/// starts the list over with them. KEYS: list, card. ARGV: ttl, cap, first seq, then the
/// `{seq}|{json}` entries in ascending seq.
const APPEND: &str = r#"
local first = tonumber(ARGV[3])
local last = first + #ARGV - 4
local cur = tonumber(redis.call('HGET', KEYS[2], 'last') or '0')
if last > cur then redis.call('HSET', KEYS[2], 'last', last) end
redis.call('EXPIRE', KEYS[2], ARGV[1])
local head = redis.call('LINDEX', KEYS[1], 0)
if head then
  local h = tonumber(string.match(head, '^(%d+)|'))
  if h == nil or h ~= first - 1 then redis.call('DEL', KEYS[1]) end
end
for i = 4, #ARGV do redis.call('LPUSH', KEYS[1], ARGV[i]) end
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"#;

/// The entries for seqs `from..=to`, newest first, if the list holds all of them.
/// KEYS: list. ARGV: from, to.
const RANGE: &str = r#"
local head = redis.call('LINDEX', KEYS[1], 0)
if not head then return false end
local h = tonumber(string.match(head, '^(%d+)|'))
if h == nil then return false end
local len = redis.call('LLEN', KEYS[1])
local from, to = tonumber(ARGV[1]), tonumber(ARGV[2])
if from < h - len + 1 or to > h then return false end
return redis.call('LRANGE', KEYS[1], h - to, h - from)
"#;

impl RedisCache {
    /// A cache on the Redis at `url`. Nothing connects yet: the node starts whether or not
    /// Redis is up.
    pub fn new(url: &str, prefix: &str, ttl: Duration) -> Result<Arc<RedisCache>, CacheError> {
        let client = redis::Client::open(url).map_err(|e| CacheError::Url(e.to_string()))?;
        let link = Arc::new(Link {
            client,
            prefix: prefix.to_owned(),
            ttl: ttl.as_secs().max(1),
            conn: Mutex::new(None),
            skip_until: AtomicU64::new(0),
        });
        let (writes, queue) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(link.clone(), queue));
        Ok(Arc::new(RedisCache { link, writes, hits: AtomicU64::new(0), misses: AtomicU64::new(0) }))
    }

    /// The cached run `from..=to` of a group's messages, if whole.
    async fn range(&self, group: GroupId, from: Seq, to: Seq) -> Option<Vec<MessageRecord>> {
        if !self.link.reads_allowed() {
            return None;
        }
        let mut conn = self.link.conn(false).await?;
        let script = redis::Script::new(RANGE);
        let mut invocation = script.key(self.link.list(group));
        invocation.arg(from).arg(to);
        let entries: Option<Vec<String>> =
            match tokio::time::timeout(READ_TIMEOUT, invocation.invoke_async(&mut conn)).await {
                Ok(Ok(entries)) => entries,
                Ok(Err(error)) => {
                    self.link.failed(&error);
                    return None;
                }
                Err(_) => return None,
            };
        let mut out = Vec::new();
        for (entry, seq) in entries?.iter().rev().zip(from..=to) {
            let (stored_seq, json) = entry.split_once('|')?;
            let record: MessageRecord = serde_json::from_str(json).ok()?;
            // Anything but exactly the asked seqs of this group is a miss, never an answer.
            if stored_seq.parse::<Seq>().ok()? != seq || record.seq != seq || record.group != group {
                return None;
            }
            out.push(record);
        }
        (out.len() as Seq == to - from + 1).then_some(out)
    }

    fn count<T>(&self, found: Option<T>) -> Option<T> {
        let counter = if found.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    fn queue(&self, write: Write) {
        // The writer lives as long as the runtime; if it is gone, the node is stopping.
        let _ = self.writes.send(write);
    }
}

impl Link {
    fn card(&self, group: GroupId) -> String {
        format!("{}:g:{}", self.prefix, group.0)
    }

    fn list(&self, group: GroupId) -> String {
        format!("{}:h:{}", self.prefix, group.0)
    }

    /// A connection, or None while Redis is unreachable. Readers (`wait` false) never wait
    /// for a connection being made: they count a miss and go to the store.
    async fn conn(&self, wait: bool) -> Option<ConnectionManager> {
        let mut slot = if wait { self.conn.lock().await } else { self.conn.try_lock().ok()? };
        if let Some(conn) = slot.as_ref() {
            return Some(conn.clone());
        }
        if actors::now_ms() < self.skip_until.load(Ordering::Relaxed) {
            return None;
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_millis(500)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        match ConnectionManager::new_with_config(self.client.clone(), config).await {
            Ok(conn) => {
                tracing::info!("redis cache connected");
                *slot = Some(conn.clone());
                Some(conn)
            }
            Err(error) => {
                self.failed(&error);
                None
            }
        }
    }

    fn failed(&self, error: &redis::RedisError) {
        let was = self.skip_until.swap(actors::now_ms() + BACK_OFF_MS, Ordering::Relaxed);
        if was < actors::now_ms() {
            tracing::warn!(%error, "redis cache unavailable; serving from the store");
        }
    }

    fn reads_allowed(&self) -> bool {
        actors::now_ms() >= self.skip_until.load(Ordering::Relaxed)
    }

    async fn run<T: redis::FromRedisValue>(&self, conn: &mut ConnectionManager, pipe: &redis::Pipeline) -> Option<T> {
        match tokio::time::timeout(READ_TIMEOUT, pipe.query_async::<T>(conn)).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(error)) => {
                self.failed(&error);
                None
            }
            Err(_) => None,
        }
    }
}

/// Applies queued writes in order; see the module doc for dirty groups.
async fn write_loop(link: Arc<Link>, mut queue: mpsc::UnboundedReceiver<Write>) {
    let mut dirty: HashSet<GroupId> = HashSet::new();
    let mut wipe = false;
    let append = redis::Script::new(APPEND);
    while let Some(write) = queue.recv().await {
        let group = write.group();
        let Some(mut conn) = link.conn(true).await else {
            remember(&mut dirty, &mut wipe, group);
            continue;
        };
        if (wipe || !dirty.is_empty()) && clean(&link, &mut conn, &mut dirty, &mut wipe).await.is_err() {
            remember(&mut dirty, &mut wipe, group);
            continue;
        }
        if let Err(error) = apply(&link, &mut conn, &append, write).await {
            link.failed(&error);
            remember(&mut dirty, &mut wipe, group);
        }
    }
}

fn remember(dirty: &mut HashSet<GroupId>, wipe: &mut bool, group: GroupId) {
    if dirty.len() < MAX_DIRTY {
        dirty.insert(group);
    } else {
        *wipe = true;
    }
}

/// Deletes what lost writes may have left stale.
async fn clean(
    link: &Link,
    conn: &mut ConnectionManager,
    dirty: &mut HashSet<GroupId>,
    wipe: &mut bool,
) -> Result<(), redis::RedisError> {
    if *wipe {
        let pattern = format!("{}:*", link.prefix);
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(conn)
                .await?;
            if !keys.is_empty() {
                redis::cmd("DEL").arg(&keys).query_async::<()>(conn).await?;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        *wipe = false;
        dirty.clear();
        return Ok(());
    }
    let keys: Vec<String> = dirty.iter().flat_map(|g| [link.card(*g), link.list(*g)]).collect();
    for chunk in keys.chunks(1000) {
        redis::cmd("DEL").arg(chunk).query_async::<()>(conn).await?;
    }
    tracing::info!(groups = dirty.len(), "redis cache back; dropped entries that missed writes");
    dirty.clear();
    Ok(())
}

async fn apply(
    link: &Link,
    conn: &mut ConnectionManager,
    append: &redis::Script,
    write: Write,
) -> Result<(), redis::RedisError> {
    let ttl = link.ttl;
    match write {
        Write::Fill { record, last_seq } => {
            let card = link.card(record.id);
            redis::pipe()
                .hset_nx(&card, "rec", record_json(&record))
                .hset_nx(&card, "last", last_seq)
                .expire(&card, ttl as i64)
                .query_async::<()>(conn)
                .await
        }
        Write::Started { record, last_seq, members } => {
            let card = link.card(record.id);
            let mut fields: Vec<(String, String)> = Vec::with_capacity(members.len() + 2);
            fields.push(("rec".into(), record_json(&record)));
            fields.push(("last".into(), last_seq.to_string()));
            fields.extend(members.iter().map(|(user, role)| (format!("m:{}", user.0), role.as_str().to_owned())));
            redis::pipe()
                .atomic()
                .del(&card)
                .hset_multiple(&card, &fields)
                .expire(&card, ttl as i64)
                .query_async::<()>(conn)
                .await
        }
        Write::Record(record) => {
            let card = link.card(record.id);
            redis::pipe()
                .hset(&card, "rec", record_json(&record))
                .expire(&card, ttl as i64)
                .query_async::<()>(conn)
                .await
        }
        Write::Member { group, user, role } => {
            let card = link.card(group);
            let field = format!("m:{}", user.0);
            let mut pipe = redis::pipe();
            match role {
                Some(role) => pipe.hset(&card, &field, role.as_str()),
                None => pipe.hdel(&card, &field),
            };
            pipe.expire(&card, ttl as i64).query_async::<()>(conn).await
        }
        Write::Appended { group, messages } => {
            let Some(first) = messages.first() else { return Ok(()) };
            let mut invocation = append.key(link.list(group));
            invocation.key(link.card(group));
            invocation.arg(ttl).arg(RECENT).arg(first.seq);
            for message in &messages {
                match serde_json::to_string(message) {
                    Ok(json) => invocation.arg(format!("{}|{json}", message.seq)),
                    Err(_) => return Ok(()),
                };
            }
            invocation.invoke_async::<()>(conn).await
        }
    }
}

fn record_json(record: &GroupRecord) -> String {
    serde_json::to_string(record).unwrap_or_default()
}

#[async_trait]
impl Cache for RedisCache {
    async fn groups(&self, user: UserId, groups: &[GroupId]) -> Vec<Option<CachedGroup>> {
        let misses = || vec![None; groups.len()];
        if groups.is_empty() || !self.link.reads_allowed() {
            return misses();
        }
        let Some(mut conn) = self.link.conn(false).await else { return misses() };
        let member = format!("m:{}", user.0);
        let mut pipe = redis::pipe();
        for group in groups {
            pipe.cmd("HMGET").arg(self.link.card(*group)).arg("rec").arg("last").arg(member.as_str());
        }
        type Row = (Option<String>, Option<u64>, Option<String>);
        let Some(rows) = self.link.run::<Vec<Row>>(&mut conn, &pipe).await else {
            return misses();
        };
        rows.into_iter()
            .zip(groups)
            .map(|((rec, last_seq, role), group)| {
                let card = || {
                    let record: GroupRecord = serde_json::from_str(&rec?).ok()?;
                    // A card is the card of the group it is stored under, or it is ignored.
                    (record.id == *group).then_some(())?;
                    let role = role.and_then(|r| Role::parse(&r));
                    Some(CachedGroup { record, last_seq, role })
                };
                self.count(card())
            })
            .collect()
    }

    async fn messages(&self, group: GroupId, from: Seq, to: Seq) -> Option<Vec<MessageRecord>> {
        let found = self.range(group, from, to).await;
        self.count(found)
    }

    fn fill(&self, record: &GroupRecord, last_seq: Seq) {
        self.queue(Write::Fill { record: record.clone(), last_seq });
    }

    fn owner_started(&self, record: &GroupRecord, last_seq: Seq, members: &[(UserId, Role)]) {
        self.queue(Write::Started { record: record.clone(), last_seq, members: members.to_vec() });
    }

    fn record_changed(&self, record: &GroupRecord) {
        self.queue(Write::Record(record.clone()));
    }

    fn member_changed(&self, group: GroupId, user: UserId, role: Option<Role>) {
        self.queue(Write::Member { group, user, role });
    }

    fn appended(&self, group: GroupId, messages: &[MessageRecord]) {
        self.queue(Write::Appended { group, messages: messages.to_vec() });
    }

    fn backend(&self) -> &'static str {
        "redis"
    }

    fn counts(&self) -> (u64, u64) {
        (self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed))
    }
}
