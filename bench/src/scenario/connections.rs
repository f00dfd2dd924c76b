//! `bench accounts` and `bench connections`: how much memory an idle authenticated
//! connection costs the node, and how fast connections authenticate.
//!
//! `accounts` signs up users and writes their tokens to a file. `connections` then opens one
//! connection per token (spread over 127.0.0.x source addresses), authenticates each with
//! `auth`, and holds them all idle, each with a task that reads (so pings are answered, as a
//! real client's library does). The node's resident memory before and after, divided by
//! the count, is the cost of one connection with its user actor. Restart the node between
//! the two steps so the baseline holds no memory left over from signing up.

use crate::load::conn::{LoadError, Target, connect, loopback_sources, request};
use crate::load::report::{self, Report, histogram, latency_summary};
use crate::load::wire::now_micros;
use crate::load::{accounts, node};
use futures_util::StreamExt;
use serde_json::json;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Parameters of `bench accounts`.
#[derive(Debug, Clone, clap::Args)]
pub struct AccountsArgs {
    /// The node's WebSocket URL.
    #[arg(long, default_value = "ws://127.0.0.1:7878/ws")]
    pub url: String,
    /// Users to sign up.
    #[arg(long)]
    pub count: usize,
    /// Where to write `user token` lines.
    #[arg(long)]
    pub tokens: PathBuf,
    /// Sign-ups at once.
    #[arg(long, default_value_t = 128)]
    pub concurrency: usize,
    /// Spread connections over 127.0.0.1 ... 127.0.0.N.
    #[arg(long, default_value_t = 4)]
    pub sources: u8,
}

/// Signs up users and writes their tokens.
pub async fn accounts(args: AccountsArgs) -> Result<(), LoadError> {
    let target = Target::parse(&args.url)?;
    let started = Instant::now();
    let signed = accounts::sign_up(
        &target,
        &loopback_sources(args.sources),
        &accounts::run_prefix("accounts"),
        args.count,
        args.concurrency,
        false,
    )
    .await?;
    let lines: String = signed.iter().map(|(a, _)| format!("{} {}\n", a.user, a.token)).collect();
    std::fs::write(&args.tokens, lines).map_err(|e| LoadError::Connection(e.to_string()))?;
    eprintln!(
        "signed up {} users in {:.1} s; tokens in {}",
        signed.len(),
        started.elapsed().as_secs_f64(),
        args.tokens.display()
    );
    Ok(())
}

/// Parameters of `bench connections`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectionsArgs {
    /// The node's WebSocket URL.
    #[arg(long, default_value = "ws://127.0.0.1:7878/ws")]
    pub url: String,
    /// The node's console, for its memory.
    #[arg(long, default_value = "127.0.0.1:7879")]
    pub console: SocketAddr,
    /// The tokens file written by `bench accounts`.
    #[arg(long)]
    pub tokens: PathBuf,
    /// Use at most this many tokens (all by default).
    #[arg(long)]
    pub count: Option<usize>,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Seconds to hold the connections idle before measuring again.
    #[arg(long, default_value_t = 10.0)]
    pub hold: f64,
    /// Spread connections over 127.0.0.1 ... 127.0.0.N.
    #[arg(long, default_value_t = 8)]
    pub sources: u8,
    /// Write `<out>.json` and pictures next to it.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Opens, authenticates and holds the connections.
pub async fn connections(args: ConnectionsArgs) -> Result<(), LoadError> {
    let target = Target::parse(&args.url)?;
    let text = std::fs::read_to_string(&args.tokens).map_err(|e| LoadError::Connection(e.to_string()))?;
    let mut tokens: Vec<String> = text.lines().filter_map(|l| l.split_whitespace().nth(1)).map(str::to_owned).collect();
    tokens.truncate(args.count.unwrap_or(usize::MAX));
    let total = tokens.len();
    let sources = loopback_sources(args.sources);
    let before = node::stats(args.console).await;
    eprintln!("connections: {total} authenticated idle connections; node RSS before {:?}", node::rss_bytes(&before));

    let permits = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let alive = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let mut opening = tokio::task::JoinSet::new();
    for (i, token) in tokens.into_iter().enumerate() {
        let (target, permits, alive, failed) = (target.clone(), permits.clone(), alive.clone(), failed.clone());
        let source = sources[i % sources.len()];
        let mut stop = stop_rx.clone();
        opening.spawn(async move {
            let permit = permits.acquire_owned().await.ok()?;
            let t0 = now_micros();
            let result = async {
                let mut ws = connect(&target, Some(source)).await?;
                request(&mut ws, 1, "auth", json!({ "token": token })).await?;
                Ok::<_, LoadError>(ws)
            }
            .await;
            let latency = now_micros().saturating_sub(t0);
            drop(permit);
            let mut ws = match result {
                Ok(ws) => ws,
                Err(error) => {
                    if failed.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("  connection {i} failed: {error}");
                    }
                    return Some(latency);
                }
            };
            alive.fetch_add(1, Ordering::Relaxed);
            // Hold the connection like an idle client: read (answering pings) until told to stop.
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        frame = ws.next() => if !matches!(frame, Some(Ok(_))) { break },
                        _ = stop.changed() => break,
                    }
                }
                alive.fetch_sub(1, Ordering::Relaxed);
            });
            Some(latency)
        });
    }
    let mut latency = histogram();
    while let Some(done) = opening.join_next().await {
        if let Ok(Some(micros)) = done {
            report::record(&mut latency, micros);
        }
    }
    let open_seconds = started.elapsed().as_secs_f64();
    let opened = alive.load(Ordering::Relaxed);
    let rate = opened as f64 / open_seconds;
    eprintln!("  {opened} connected and authenticated in {open_seconds:.2} s ({rate:.0}/s); holding {} s", args.hold);

    tokio::time::sleep(Duration::from_secs(2)).await;
    let settled = node::stats(args.console).await;
    tokio::time::sleep(Duration::from_secs_f64(args.hold)).await;
    let held = node::stats(args.console).await;
    let still_open = alive.load(Ordering::Relaxed);
    let per_connection = |stats: &Option<serde_json::Value>| match (node::rss_bytes(&before), node::rss_bytes(stats)) {
        (Some(a), Some(b)) if opened > 0 => Some(b.saturating_sub(a) as f64 / opened as f64),
        _ => None,
    };
    let per_settled = per_connection(&settled);
    let per_held = per_connection(&held);
    let node_connections = held.as_ref().and_then(|s| s["connections"].as_u64());
    let _ = stop_tx.send(true);

    let summary = latency_summary(&latency);
    let results = json!({
        "connections": opened,
        "failed": failed.load(Ordering::Relaxed),
        "still_open_after_hold": still_open,
        "node_reports_connections": node_connections,
        "connect_auth_per_second": rate.round(),
        "connect_auth_seconds": open_seconds,
        "connect_auth_latency": summary,
        "node_rss_before_bytes": node::rss_bytes(&before),
        "node_rss_settled_bytes": node::rss_bytes(&settled),
        "node_rss_after_hold_bytes": node::rss_bytes(&held),
        "rss_per_connection_bytes": per_held.map(f64::round),
        "rss_per_connection_settled_bytes": per_settled.map(f64::round),
        "node_open_files": held.as_ref().and_then(|s| s["process"]["open_files"].as_u64()),
    });
    let parameters = json!({
        "url": args.url, "tokens": total, "concurrency": args.concurrency, "hold_s": args.hold, "sources": args.sources,
    });
    let lines = vec![
        format!(
            "{opened} connections ({} failed), {still_open} still open after {} s; node counts {node_connections:?}",
            failed.load(Ordering::Relaxed),
            args.hold
        ),
        format!(
            "connect+auth {rate:.0}/s; latency ms p50 {} p99 {} max {}",
            summary["p50_ms"], summary["p99_ms"], summary["max_ms"]
        ),
        format!(
            "node RSS {:?} -> {:?}: {} per connection ({} KiB)",
            node::rss_bytes(&before),
            node::rss_bytes(&held),
            per_held.map_or("?".into(), |v| format!("{v:.0} B")),
            per_held.map_or("?".into(), |v| format!("{:.2}", v / 1024.0)),
        ),
    ];
    let pictures = vec![("latency", report::latency_svg(&latency, "connect + auth latency"))];
    Report { scenario: "connections", parameters, results, node: held, summary: lines, pictures }
        .finish(args.out.as_deref())
        .map_err(|e| LoadError::Connection(e.to_string()))
}
