//! What the node under test reports about itself, through its debug console.

use serde_json::Value;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Asks the node's console for `stats` (memory, CPU seconds, version).
pub async fn stats(console: SocketAddr) -> Option<Value> {
    ask(console, "stats").await
}

/// Asks the node's console one command; None if it did not answer with JSON.
pub async fn ask(console: SocketAddr, command: &str) -> Option<Value> {
    let mut stream = TcpStream::connect(console).await.ok()?;
    stream.write_all(format!("{command}\n").as_bytes()).await.ok()?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.ok()?;
    serde_json::from_slice(&reply).ok()
}

/// `stats` from every node of a cluster, CPU seconds and memory summed (None if any node
/// did not answer).
pub async fn stats_all(consoles: &[SocketAddr]) -> Option<Value> {
    let (mut cpu, mut rss) = (0.0, 0u64);
    let mut last = None;
    for console in consoles {
        let stats = stats(*console).await?;
        cpu += stats["process"]["cpu_seconds"].as_f64()?;
        rss += stats["process"]["rss_bytes"].as_u64().unwrap_or(0);
        last = Some(stats);
    }
    let mut merged = last?;
    merged["process"]["cpu_seconds"] = cpu.into();
    merged["process"]["rss_bytes"] = rss.into();
    Some(merged)
}

/// The node's CPU seconds in a stats answer.
pub fn cpu_seconds(stats: &Option<Value>) -> Option<f64> {
    stats.as_ref()?["process"]["cpu_seconds"].as_f64()
}

/// The node's resident memory in a stats answer.
pub fn rss_bytes(stats: &Option<Value>) -> Option<u64> {
    stats.as_ref()?["process"]["rss_bytes"].as_u64()
}
