//! The `troupe` binary: `troupe` (or `troupe serve`) runs a node; `troupe console` talks to
//! a running node's debug console; `troupe config` prints the effective configuration.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use troupe::config::{self, Config, LogFormat};

#[derive(Parser)]
#[command(name = "troupe", version, about = "A group chat server built from actors")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node (the default).
    Serve(ServeArgs),
    /// Ask a running node's debug console (`actors`, `users`, `nodes`, `group ID`, `user ID`,
    /// `owner ID`, `drain`).
    Console {
        /// The console's address.
        #[arg(long, default_value = "127.0.0.1:7879")]
        addr: SocketAddr,
        /// Print raw JSON instead of tables.
        #[arg(long)]
        json: bool,
        /// The command; without one, read commands from stdin.
        command: Vec<String>,
    },
    /// Print the configuration the node would run with.
    Config(ServeArgs),
}

#[derive(clap::Args, Default)]
struct ServeArgs {
    /// A TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// HTTP and WebSocket address.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Debug console address.
    #[arg(long)]
    console_listen: Option<SocketAddr>,
    /// Data directory for the embedded store.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Password hashing cost: `default`, or `test` (cheap, for tests and benches only).
    #[arg(long)]
    password_cost: Option<String>,
    /// Keep data in PostgreSQL at this URL instead of the embedded store.
    #[arg(long)]
    postgres: Option<String>,
    /// Keep data in ScyllaDB instead of the embedded store: contact points, comma-separated.
    #[arg(long, value_delimiter = ',')]
    scylla: Vec<String>,
    /// Keep caches in the Redis at this URL (`redis://127.0.0.1:6379/0`).
    #[arg(long)]
    redis: Option<String>,
    /// Join a cluster: listen for other nodes here.
    #[arg(long)]
    cluster_listen: Option<SocketAddr>,
    /// Cluster addresses of nodes to join through, comma-separated.
    #[arg(long, value_delimiter = ',')]
    seeds: Vec<String>,
    /// This node's id in the cluster (1-65535); by default derived from --cluster-listen.
    #[arg(long)]
    node_id: Option<u16>,
    /// The cluster's shared secret (better: TROUPE_CLUSTER__SECRET, which `ps` does not show).
    #[arg(long)]
    cluster_secret: Option<String>,
}

impl ServeArgs {
    fn config(&self) -> anyhow::Result<Config> {
        let mut config = config::load(self.config.as_deref(), std::env::vars())?;
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(addr) = self.console_listen {
            config.console_listen = addr;
        }
        if let Some(data) = &self.data {
            config.data_dir = data.clone();
        }
        if let Some(url) = &self.postgres {
            config.store.backend = troupe::config::StoreBackend::Postgres;
            config.store.postgres_url = url.clone();
        }
        if !self.scylla.is_empty() {
            config.store.backend = troupe::config::StoreBackend::Scylla;
            config.store.scylla_uri = self.scylla.clone();
        }
        if let Some(url) = &self.redis {
            config.cache.redis_url = url.clone();
        }
        if let Some(listen) = self.cluster_listen {
            config.cluster.listen = Some(listen);
        }
        if !self.seeds.is_empty() {
            config.cluster.seeds = self.seeds.clone();
        }
        if let Some(secret) = &self.cluster_secret {
            config.cluster.secret = secret.clone();
        }
        if let Some(id) = self.node_id {
            config.actors.node_id = id;
        }
        if let (Some(listen), 0) = (config.cluster.listen, config.actors.node_id) {
            config.actors.node_id = config::node_id_for(listen);
        }
        if let Some(cost) = &self.password_cost {
            config.actors.password_cost = serde_json::from_value(serde_json::Value::String(cost.clone()))
                .with_context(|| format!("--password-cost must be default or test, not {cost}"))?;
        }
        Ok(config)
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command.unwrap_or(Command::Serve(ServeArgs::default())) {
        Command::Serve(args) => runtime.block_on(serve(args.config()?)),
        Command::Console { addr, json, command } => {
            runtime.block_on(troupe::console::client::run(addr, command, json)).context("console")
        }
        Command::Config(args) => {
            let mut config = args.config()?;
            if !config.cluster.secret.is_empty() {
                config.cluster.secret = "***".into();
            }
            if let Some((_, host)) = config.cache.redis_url.split_once('@') {
                config.cache.redis_url = format!("redis://***@{host}");
            }
            if !config.media.s3_secret_access_key.is_empty() {
                config.media.s3_secret_access_key = "***".into();
            }
            if !config.media.url_secret.is_empty() {
                config.media.url_secret = "***".into();
            }
            print!("{}", toml::to_string(&config).context("render configuration")?);
            Ok(())
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    init_logging(&config);
    raise_open_file_limit();
    let listener = bind(config.listen).with_context(|| format!("bind {}", config.listen))?;
    let console = tokio::net::TcpListener::bind(config.console_listen)
        .await
        .with_context(|| format!("bind console {}", config.console_listen))?;
    let (http, console_addr) = (listener.local_addr()?, console.local_addr()?);
    tracing::info!(%http, console = %console_addr, data = %config.data_dir.display(), "troupe starting");
    // The ready line: scripts and tests wait for it to learn the ports. It comes only after
    // the store is open and the cluster port is bound (by ractor_cluster), so a node that
    // printed it will not exit for want of either.
    let ready = move || {
        println!("troupe ready http={http} ws=ws://{http}{} console={console_addr}", troupe::server::WS_PATH);
        let _ = std::io::stdout().flush();
    };
    troupe::server::run(config, listener, console, shutdown_signal(), ready).await?;
    tracing::info!("troupe stopped");
    Ok(())
}

/// Binds with a deep accept queue: a reconnect storm arrives all at once, and a dropped SYN
/// costs the client a one-second retransmit.
fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Each connection holds a file descriptor; the soft limit is often 1024 while the hard
/// limit allows far more. Raise soft to hard so the node can hold what the host allows.
fn raise_open_file_limit() {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
                limit.rlim_cur = limit.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            }
        }
    }
}
