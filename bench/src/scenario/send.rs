//! `bench send`: durable sends with acks. S senders, one per group of M members, each
//! keeping a window of sends in flight; every ack means the message is on disk. Checks that
//! each group's acked seqs are exactly 1..N.

use super::setup;
use crate::load::conn::{LoadError, Socket, Target, loopback_sources};
use crate::load::node;
use crate::load::report::{self, Report, histogram, latency_summary};
use crate::load::wire::{decode_frame, now_micros, timed_body};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// Parameters of a send run.
#[derive(Debug, Clone, clap::Args)]
pub struct SendArgs {
    /// The node's WebSocket URL.
    #[arg(long, default_value = "ws://127.0.0.1:7878/ws")]
    pub url: String,
    /// The node's console, for its CPU time.
    #[arg(long, default_value = "127.0.0.1:7879")]
    pub console: SocketAddr,
    /// Groups, each with one sender.
    #[arg(long, default_value_t = 100)]
    pub groups: usize,
    /// Members per group (the sender included).
    #[arg(long, default_value_t = 10)]
    pub members: usize,
    /// Keep the other members connected (they receive every message).
    #[arg(long)]
    pub online_members: bool,
    /// Sends in flight per sender.
    #[arg(long, default_value_t = 32)]
    pub window: usize,
    /// Text body size, bytes.
    #[arg(long, default_value_t = 160)]
    pub body_bytes: usize,
    /// Seconds of sending before measuring.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 15.0)]
    pub duration: f64,
    /// Spread connections over 127.0.0.1 ... 127.0.0.N.
    #[arg(long, default_value_t = 4)]
    pub sources: u8,
    /// Write `<out>.json` and pictures next to it.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Deserialize)]
struct Ack {
    seq: u64,
}

struct Shared {
    window_start: AtomicU64,
    window_end: AtomicU64,
    acked: AtomicU64,
    acked_in_window: AtomicU64,
    errors: AtomicU64,
    rate_limited: AtomicU64,
    stop: AtomicBool,
}

/// Runs the scenario.
pub async fn run(args: SendArgs) -> Result<(), LoadError> {
    let target = Target::parse(&args.url)?;
    let sources = loopback_sources(args.sources);
    eprintln!("send: {} senders in groups of {}, window {}", args.groups, args.members, args.window);
    let (groups, seats) = setup::groups_of_members(&target, &sources, "send", args.groups, args.members, None).await?;
    let seats = setup::join_all(&groups, seats).await?;
    let shared = Arc::new(Shared {
        window_start: AtomicU64::new(u64::MAX),
        window_end: AtomicU64::new(u64::MAX),
        acked: AtomicU64::new(0),
        acked_in_window: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        rate_limited: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let mut senders = tokio::task::JoinSet::new();
    let mut listeners = Vec::new();
    for (g, block) in seats.into_iter().enumerate() {
        for (i, seat) in block.into_iter().enumerate() {
            if i == 0 {
                senders.spawn(sender(seat.socket, groups[g], args.window, args.body_bytes, shared.clone()));
            } else if args.online_members {
                listeners.push(tokio::spawn(listener(seat.socket)));
            }
        }
    }
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    let stats_start = node::stats(args.console).await;
    shared.window_start.store(now_micros(), Ordering::SeqCst);
    let started = Instant::now();
    let mut timeline = Vec::new();
    let mut last = shared.acked.load(Ordering::Relaxed);
    while started.elapsed().as_secs_f64() < args.duration {
        tokio::time::sleep_until(started + Duration::from_secs(timeline.len() as u64 + 1)).await;
        let now = shared.acked.load(Ordering::Relaxed);
        timeline.push((now - last) as f64);
        eprintln!("  t={:>3}s acked/s={:>7}", timeline.len(), now - last);
        last = now;
    }
    shared.window_end.store(now_micros(), Ordering::SeqCst);
    let window = started.elapsed().as_secs_f64();
    let stats_end = node::stats(args.console).await;
    shared.stop.store(true, Ordering::SeqCst);

    let mut latency = histogram();
    let (mut gapless, mut checked) = (0, 0);
    while let Some(done) = senders.join_next().await {
        let Ok((hist, mut seqs)) = done else { continue };
        let _ = latency.add(&hist);
        seqs.sort_unstable();
        checked += 1;
        if seqs.iter().enumerate().all(|(i, &s)| s == i as u64 + 1) {
            gapless += 1;
        }
    }
    for l in listeners {
        l.abort();
    }
    let in_window = shared.acked_in_window.load(Ordering::Relaxed);
    let rate = in_window as f64 / window;
    let cpu = match (node::cpu_seconds(&stats_start), node::cpu_seconds(&stats_end)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let summary = latency_summary(&latency);
    let results = json!({
        "acked_per_second": rate.round(),
        "acked_in_window": in_window,
        "window_seconds": window,
        "errors": shared.errors.load(Ordering::Relaxed),
        "rate_limited": shared.rate_limited.load(Ordering::Relaxed),
        "groups_with_gapless_acked_seqs": gapless,
        "groups_checked": checked,
        "ack_latency": summary,
        "node_cpu_seconds": cpu,
        "acks_per_node_cpu_second": cpu.filter(|c| *c > 0.0).map(|c| (in_window as f64 / c).round()),
        "throughput_per_second": &timeline,
    });
    let parameters = json!({
        "url": args.url, "groups": args.groups, "members": args.members, "online_members": args.online_members,
        "window": args.window, "body_bytes": args.body_bytes, "warmup_s": args.warmup, "duration_s": args.duration,
    });
    let lines = vec![
        format!("durable acked sends/s {rate:.0}; errors {}", shared.errors.load(Ordering::Relaxed)),
        format!(
            "ack latency ms p50 {} p99 {} p99.9 {} max {}",
            summary["p50_ms"], summary["p99_ms"], summary["p99_9_ms"], summary["max_ms"]
        ),
        format!("{gapless} of {checked} groups have acked seqs exactly 1..N; node CPU {:.2} s", cpu.unwrap_or(0.0)),
    ];
    let mut lines = lines;
    lines.extend(report::rate_limit_hint(shared.rate_limited.load(Ordering::Relaxed)));
    let pictures = vec![
        ("latency", report::latency_svg(&latency, &format!("send ack latency, {rate:.0} acked/s"))),
        ("throughput", report::timeline_svg(&timeline, "acked sends per second", "acks/s")),
    ];
    Report { scenario: "send", parameters, results, node: stats_end, summary: lines, pictures }
        .finish(args.out.as_deref())
        .map_err(|e| LoadError::Connection(e.to_string()))
}

async fn listener(mut ws: Socket) {
    while let Some(Ok(_)) = ws.next().await {}
}

async fn sender(
    mut ws: Socket,
    group: u64,
    window: usize,
    body_bytes: usize,
    shared: Arc<Shared>,
) -> (Histogram<u64>, Vec<u64>) {
    let mut latency = histogram();
    let mut seqs = Vec::new();
    let mut in_flight: HashMap<u64, u64> = HashMap::new();
    let mut next_id = 100u64;
    loop {
        let stopping = shared.stop.load(Ordering::Relaxed);
        if stopping && in_flight.is_empty() {
            break;
        }
        if !stopping && in_flight.len() < window {
            let mut batch = Vec::new();
            while in_flight.len() + batch.len() < window {
                next_id += 1;
                let sent = now_micros();
                let frame = format!(
                    r#"{{"id":{next_id},"op":"send","group":{group},"client_msg_id":"s{next_id}","type":"text","body":"{}"}}"#,
                    timed_body(sent, body_bytes)
                );
                in_flight.insert(next_id, sent);
                batch.push(Message::Text(frame.into()));
            }
            for message in batch {
                if ws.feed(message).await.is_err() {
                    return (latency, seqs);
                }
            }
            if ws.flush().await.is_err() {
                return (latency, seqs);
            }
        }
        let frame = match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => text,
            Ok(Some(Ok(_))) => continue,
            _ => break,
        };
        let now = now_micros();
        let Ok(events) = decode_frame(frame.as_str()) else { continue };
        let (start, end) = (shared.window_start.load(Ordering::Relaxed), shared.window_end.load(Ordering::Relaxed));
        for event in events {
            let Some(sent) = event.id.and_then(|id| in_flight.remove(&id)) else { continue };
            if event.event == "reply" {
                if let Some(ack) = event.result.and_then(|r| serde_json::from_str::<Ack>(r.get()).ok()) {
                    seqs.push(ack.seq);
                }
                shared.acked.fetch_add(1, Ordering::Relaxed);
                if sent >= start && sent < end {
                    shared.acked_in_window.fetch_add(1, Ordering::Relaxed);
                    report::record(&mut latency, now.saturating_sub(sent));
                }
            } else {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                if event.code.as_deref() == Some("rate_limited") {
                    shared.rate_limited.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    (latency, seqs)
}
