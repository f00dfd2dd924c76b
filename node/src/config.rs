//! The node's configuration: one typed struct, filled in layers (defaults, then a TOML
//! file, then `TROUPE_...` environment variables, then command-line flags).
//!
//! Environment variables name a field by its path, upper-cased, with `__` between levels:
//! `TROUPE_LISTEN=0.0.0.0:7878`, `TROUPE_ACTORS__MAX_GROUP_MEMBERS=200`.

use actors::ActorsConfig;
use actors::config::seconds;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything a node is told.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where HTTP and the WebSocket endpoint (`/ws`) listen.
    pub listen: SocketAddr,
    /// Where the read-only debug console listens; keep it on localhost.
    pub console_listen: SocketAddr,
    /// Where the embedded store keeps its file.
    pub data_dir: PathBuf,
    /// Which store holds the data.
    pub store: StoreConfig,
    /// WebSocket limits and timings.
    pub gateway: GatewayConfig,
    /// Actor limits and timings (also password cost and sessions).
    pub actors: ActorsConfig,
    /// Joining other nodes; off unless `cluster.listen` is set.
    pub cluster: ClusterConfig,
    /// The shared cache; off unless `cache.redis_url` is set.
    pub cache: CacheConfig,
    /// Where media bytes are kept, and their limits.
    pub media: MediaConfig,
    /// Logging.
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            console_listen: SocketAddr::from(([127, 0, 0, 1], 7879)),
            data_dir: PathBuf::from("troupe-data"),
            store: StoreConfig::default(),
            gateway: GatewayConfig::default(),
            actors: ActorsConfig::default(),
            cluster: ClusterConfig::default(),
            cache: CacheConfig::default(),
            media: MediaConfig::default(),
            log: LogConfig::default(),
        }
    }
}

/// The Redis cache (see `crate::cache`). It only ever holds copies: losing it loses nothing.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// `redis://host:port/db`; empty: no cache. May hold a password, so never printed.
    pub redis_url: String,
    /// Every key starts with this, so several clusters can share one Redis.
    pub prefix: String,
    /// Seconds an entry lives unless refreshed.
    pub ttl_secs: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig { redis_url: String::new(), prefix: "troupe".into(), ttl_secs: 600 }
    }
}

impl std::fmt::Debug for CacheConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = match self.redis_url.split_once('@') {
            Some((scheme, host)) => format!("{}://***@{host}", scheme.split("://").next().unwrap_or("redis")),
            None => self.redis_url.clone(),
        };
        f.debug_struct("CacheConfig")
            .field("redis_url", &url)
            .field("prefix", &self.prefix)
            .field("ttl_secs", &self.ttl_secs)
            .finish()
    }
}

/// How a node finds and watches the other nodes of its cluster.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Where this node listens for other nodes. Unset: a single node, no cluster.
    pub listen: Option<SocketAddr>,
    /// Cluster addresses of other nodes to join through; any one that answers is enough.
    /// Each is retried with backoff while it is not connected.
    pub seeds: Vec<String>,
    /// The secret every node of the cluster shares; a node without it is refused. Never
    /// printed.
    pub secret: String,
    /// How often a node tells every other that it is alive.
    pub heartbeat_ms: u64,
    /// Silence after which a node is taken for dead and its groups move.
    pub down_after_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig { listen: None, seeds: Vec::new(), secret: String::new(), heartbeat_ms: 500, down_after_ms: 3000 }
    }
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("listen", &self.listen)
            .field("seeds", &self.seeds)
            .field("secret", &"***")
            .field("heartbeat_ms", &self.heartbeat_ms)
            .field("down_after_ms", &self.down_after_ms)
            .finish()
    }
}

/// A node id for a node that was given none: a hash of its cluster address, never 0, so
/// nodes on different addresses get different ids without configuration (set
/// `actors.node_id` where a collision matters).
pub fn node_id_for(cluster_listen: SocketAddr) -> u16 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in cluster_listen.to_string().bytes() {
        hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
    }
    ((hash ^ (hash >> 16)) as u16).max(1)
}

/// Which store holds the data.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `embedded` (redb in `data_dir`, one node), `postgres` or `scylla`.
    pub backend: StoreBackend,
    /// The PostgreSQL connection URL (`postgres://user:password@host/database`). It may hold
    /// a password, so it is never printed by `Debug`.
    pub postgres_url: String,
    /// PostgreSQL connections in the pool.
    pub postgres_pool: usize,
    /// ScyllaDB contact points (`host:port`); any one that answers is enough, the driver
    /// discovers the rest of the cluster from it.
    pub scylla_uri: Vec<String>,
    /// The ScyllaDB keyspace, created at startup if missing; one per deployment, so tests
    /// and environments can share a cluster.
    pub scylla_keyspace: String,
    /// Replicas per partition when the keyspace is created: 3 survives a node loss with
    /// LOCAL_QUORUM; an existing keyspace keeps its own.
    pub scylla_replication_factor: u32,
    /// The embedded store's page cache, in bytes: it fills with recently written and read
    /// pages up to this size, and is most of a busy node's memory.
    pub embedded_page_cache_bytes: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::Embedded,
            postgres_url: "postgres://postgres@127.0.0.1:5432/troupe".into(),
            postgres_pool: 16,
            scylla_uri: vec!["127.0.0.1:9042".into()],
            scylla_keyspace: "troupe".into(),
            scylla_replication_factor: 3,
            embedded_page_cache_bytes: crate::store::embedded::DEFAULT_PAGE_CACHE_BYTES,
        }
    }
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = match self.postgres_url.split_once('@') {
            Some((_, host)) => format!("postgres://***@{host}"),
            None => self.postgres_url.clone(),
        };
        f.debug_struct("StoreConfig")
            .field("backend", &self.backend)
            .field("postgres_url", &url)
            .field("postgres_pool", &self.postgres_pool)
            .field("scylla_uri", &self.scylla_uri)
            .field("scylla_keyspace", &self.scylla_keyspace)
            .field("scylla_replication_factor", &self.scylla_replication_factor)
            .finish()
    }
}

/// Media storage (see `crate::media`): object storage for the bytes; their metadata lives
/// in the store.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// `fs` (a folder, for one node) or `s3` (any S3-compatible store; a cluster needs it,
    /// so that every node reaches every object).
    pub backend: MediaBackend,
    /// For `fs`: the folder; empty means `media` under `data_dir`.
    pub fs_root: PathBuf,
    /// For `s3`: the endpoint URL (`https://s3.amazonaws.com`, `http://127.0.0.1:9000`).
    pub s3_endpoint: String,
    /// For `s3`: the bucket.
    pub s3_bucket: String,
    /// For `s3`: the region (`us-east-1` for most S3-compatible servers).
    pub s3_region: String,
    /// For `s3`: the access key id.
    pub s3_access_key_id: String,
    /// For `s3`: the secret key; never printed.
    pub s3_secret_access_key: String,
    /// The largest image, in bytes.
    pub max_image_bytes: u64,
    /// The largest audio clip, in bytes.
    pub max_audio_bytes: u64,
    /// The largest video, in bytes.
    pub max_video_bytes: u64,
    /// The largest file, in bytes.
    pub max_file_bytes: u64,
    /// The most bytes of media one user may hold.
    pub quota_bytes: u64,
    /// The key that signs download URLs; every node of a cluster needs the same. Empty:
    /// the cluster's secret, or on a single node a random one. Never printed.
    pub url_secret: String,
    /// Media uploaded but not sent within this long are deleted (and stop counting
    /// against their uploader's quota).
    #[serde(with = "seconds")]
    pub unsent_ttl: Duration,
    /// How often the node looks for such media.
    #[serde(with = "seconds")]
    pub unsent_sweep_interval: Duration,
}

impl Default for MediaConfig {
    fn default() -> Self {
        const MIB: u64 = 1024 * 1024;
        MediaConfig {
            backend: MediaBackend::Fs,
            fs_root: PathBuf::new(),
            s3_endpoint: String::new(),
            s3_bucket: String::new(),
            s3_region: "us-east-1".into(),
            s3_access_key_id: String::new(),
            s3_secret_access_key: String::new(),
            max_image_bytes: 20 * MIB,
            max_audio_bytes: 20 * MIB,
            max_video_bytes: 200 * MIB,
            max_file_bytes: 100 * MIB,
            quota_bytes: 1024 * MIB,
            url_secret: String::new(),
            unsent_ttl: Duration::from_secs(24 * 3600),
            unsent_sweep_interval: Duration::from_secs(60),
        }
    }
}

impl std::fmt::Debug for MediaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaConfig")
            .field("backend", &self.backend)
            .field("fs_root", &self.fs_root)
            .field("s3_endpoint", &self.s3_endpoint)
            .field("s3_bucket", &self.s3_bucket)
            .field("s3_region", &self.s3_region)
            .field("s3_access_key_id", &self.s3_access_key_id)
            .field("s3_secret_access_key", &"***")
            .field("max_image_bytes", &self.max_image_bytes)
            .field("max_audio_bytes", &self.max_audio_bytes)
            .field("max_video_bytes", &self.max_video_bytes)
            .field("max_file_bytes", &self.max_file_bytes)
            .field("quota_bytes", &self.quota_bytes)
            .field("url_secret", &"***")
            .field("unsent_ttl", &self.unsent_ttl)
            .field("unsent_sweep_interval", &self.unsent_sweep_interval)
            .finish()
    }
}

/// Where media bytes are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaBackend {
    /// A folder on this node.
    Fs,
    /// An S3-compatible object store.
    S3,
}

/// The store backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreBackend {
    /// redb in the data directory.
    Embedded,
    /// PostgreSQL at `postgres_url`.
    Postgres,
    /// ScyllaDB at `scylla_uri`, in `scylla_keyspace`.
    Scylla,
}

/// WebSocket limits and timings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// The largest frame a client may send; a bigger one closes the socket with 1009.
    pub max_frame_bytes: usize,
    /// A connection that has not authenticated by then is closed (`auth_timeout`).
    #[serde(with = "seconds")]
    pub auth_timeout: Duration,
    /// How often the node pings an idle client.
    #[serde(with = "seconds")]
    pub heartbeat_interval: Duration,
    /// A client silent for this long (no frame, no pong) is closed (`heartbeat_timeout`).
    #[serde(with = "seconds")]
    pub heartbeat_timeout: Duration,
    /// The most events the node packs into one outgoing frame.
    pub max_events_per_frame: usize,
    /// tungstenite's per-connection read buffer. Small, because most connections are idle
    /// and tungstenite zero-fills the free part on every read; bigger frames still work.
    pub read_buffer_bytes: usize,
    /// The kernel send buffer of each client socket, in bytes; 0 leaves it to the kernel's
    /// autotuning, which on a fast link grows it to megabytes (`net.ipv4.tcp_wmem`). That
    /// is what a client that stops reading can hold in kernel memory before its outbox
    /// fills, so a node with many connections may set it (65536, say); it applies to every
    /// connection on the port, media downloads included, whose speed it caps at about
    /// this much per round trip.
    pub socket_send_buffer_bytes: usize,
    /// Web pages that may open WebSockets besides the node's own: a comma-separated list
    /// of origins (`https://chat.example.com`), or `*` for any. Clients that send no
    /// `Origin` (not browsers) always may.
    pub allowed_origins: String,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            max_frame_bytes: 64 * 1024,
            auth_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(30),
            heartbeat_timeout: Duration::from_secs(75),
            max_events_per_frame: 256,
            read_buffer_bytes: 1024,
            socket_send_buffer_bytes: 0,
            allowed_origins: String::new(),
        }
    }
}

/// Logging.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// An `EnvFilter` directive, e.g. `info` or `troupe=debug,info`; `RUST_LOG` overrides.
    pub filter: String,
    /// `text` for people, `json` for log pipelines.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { filter: "info".into(), format: LogFormat::Text }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// Why a configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("read {0}: {1}")]
    Read(String, std::io::Error),
    /// The file or an environment variable is not valid TOML.
    #[error("parse {0}: {1}")]
    Parse(String, String),
    /// The merged layers do not fit the schema (unknown key, wrong type).
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Builds the configuration from defaults, an optional file, and the environment.
/// Flags are applied by the caller, last.
pub fn load(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
    let mut merged = toml::Table::try_from(Config::default()).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    if let Some(path) = file {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read(shown.clone(), e))?;
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::Parse(shown, e.to_string()))?;
        merge(&mut merged, table);
    }
    merge(&mut merged, env_layer(env)?);
    toml::Value::Table(merged).try_into().map_err(|e: toml::de::Error| ConfigError::Invalid(e.to_string()))
}

fn env_layer(env: impl IntoIterator<Item = (String, String)>) -> Result<toml::Table, ConfigError> {
    let mut layer = toml::Table::new();
    for (key, raw) in env {
        let Some(path) = key.strip_prefix("TROUPE_") else { continue };
        let path: Vec<String> = path.split("__").map(str::to_lowercase).collect();
        // Numbers and booleans are taken as such; anything else is a string.
        let value = format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .filter(|v| !v.is_table() && !v.is_array())
            .unwrap_or(toml::Value::String(raw));
        let mut table = &mut layer;
        for (i, part) in path.iter().enumerate() {
            if i + 1 == path.len() {
                table.insert(part.clone(), value.clone());
            } else {
                let entry = table.entry(part.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
                match entry {
                    toml::Value::Table(t) => table = t,
                    _ => return Err(ConfigError::Parse(key.clone(), "conflicts with another variable".into())),
                }
            }
        }
    }
    Ok(layer)
}

fn merge(base: &mut toml::Table, layer: toml::Table) {
    for (key, value) in layer {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(base)), toml::Value::Table(layer)) => merge(base, layer),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("troupe.toml");
        std::fs::write(&file, "data_dir = \"/from/file\"\n[actors]\nmax_group_members = 300\nmax_text_bytes = 100\n")
            .unwrap();
        let env = [
            ("TROUPE_ACTORS__MAX_GROUP_MEMBERS".to_string(), "200".to_string()),
            ("TROUPE_LISTEN".to_string(), "0.0.0.0:9000".to_string()),
            ("TROUPE_ACTORS__PASSWORD_COST".to_string(), "test".to_string()),
            ("HOME".to_string(), "/root".to_string()),
        ];
        let config = load(Some(&file), env).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/from/file"));
        assert_eq!(config.actors.max_group_members, 200, "env beats file");
        assert_eq!(config.actors.max_text_bytes, 100, "file beats default");
        assert_eq!(config.listen, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(config.actors.password_cost, actors::config::PasswordCost::Test);
        assert_eq!(config.gateway.max_frame_bytes, 64 * 1024, "defaults stay");
    }

    #[test]
    fn secrets_do_not_print() {
        let mut config = Config::default();
        config.store.postgres_url = "postgres://troupe:hunter2@db.internal/troupe".into();
        config.cluster.secret = "swordfish".into();
        config.cache.redis_url = "redis://:opensesame@cache.internal:6379/0".into();
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("swordfish"), "{shown}");
        assert!(!shown.contains("opensesame") && shown.contains("cache.internal"), "{shown}");
        assert!(shown.contains("db.internal"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let env = [("TROUPE_ACTORS__NO_SUCH_KNOB".to_string(), "1".to_string())];
        assert!(matches!(load(None, env), Err(ConfigError::Invalid(_))));
    }
}
