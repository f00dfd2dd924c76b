//! `bench sync`: a reconnect storm. N clients in G groups go away, X messages arrive in
//! each group, then all N come back at once: connect, `auth`, `sync`, and page `history`
//! until they hold everything. Each client checks it got every missed seq exactly once.

use super::setup;
use crate::load::conn::{LoadError, Target, connect, loopback_sources, request};
use crate::load::node;
use crate::load::report::{self, Report, histogram, latency_summary};
use crate::load::sequence::SeqTracker;
use crate::load::wire::{now_micros, timed_body};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// Parameters of a sync run.
#[derive(Debug, Clone, clap::Args)]
pub struct SyncArgs {
    /// The node's WebSocket URL.
    #[arg(long, default_value = "ws://127.0.0.1:7878/ws")]
    pub url: String,
    /// The node's console.
    #[arg(long, default_value = "127.0.0.1:7879")]
    pub console: SocketAddr,
    /// Clients in the storm.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Groups the clients are spread over.
    #[arg(long, default_value_t = 10)]
    pub groups: usize,
    /// Messages each client missed (per group).
    #[arg(long, default_value_t = 500)]
    pub missed: usize,
    /// Spread connections over 127.0.0.1 ... 127.0.0.N.
    #[arg(long, default_value_t = 4)]
    pub sources: u8,
    /// Write `<out>.json` and pictures next to it.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Runs the scenario.
pub async fn run(args: SyncArgs) -> Result<(), LoadError> {
    let target = Target::parse(&args.url)?;
    let sources = loopback_sources(args.sources);
    let per_group = (args.clients / args.groups.max(1)).max(1);
    eprintln!(
        "sync: {} clients in {} groups each miss {} messages, then reconnect at once",
        per_group * args.groups,
        args.groups,
        args.missed
    );
    let (groups, seats) = setup::groups_of_members(&target, &sources, "sync", args.groups, per_group, None).await?;
    let seats = setup::join_all(&groups, seats).await?;
    // Everyone goes away but each group's owner, who posts what the others miss.
    let mut posters = Vec::new();
    let mut away: Vec<(usize, String)> = Vec::new();
    for (g, block) in seats.into_iter().enumerate() {
        for (i, seat) in block.into_iter().enumerate() {
            if i == 0 {
                posters.push(seat.socket);
            } else {
                away.push((g, seat.token));
            }
        }
    }
    eprintln!("  posting {} messages to each group", args.missed);
    let mut posting = tokio::task::JoinSet::new();
    for (g, mut socket) in posters.into_iter().enumerate() {
        let (group, missed) = (groups[g], args.missed);
        posting.spawn(async move {
            for n in 0..missed {
                let frame = format!(
                    r#"{{"id":{n},"op":"send","group":{group},"client_msg_id":"p{n}","type":"text","body":"{}"}}"#,
                    timed_body(now_micros(), 160)
                );
                socket.feed(Message::Text(frame.into())).await.map_err(|e| LoadError::Connection(e.to_string()))?;
            }
            socket.flush().await.map_err(|e| LoadError::Connection(e.to_string()))?;
            // The last ack means all are durable.
            let mut acked = 0;
            while acked < missed {
                match socket.next().await {
                    Some(Ok(Message::Text(text))) => acked += text.matches("\"op\":\"send\"").count(),
                    Some(Ok(_)) => {}
                    _ => return Err(LoadError::NoReply("send".into())),
                }
            }
            Ok::<_, LoadError>(())
        });
    }
    while let Some(done) = posting.join_next().await {
        done.map_err(|e| LoadError::Connection(e.to_string()))??;
    }

    eprintln!("  {} clients reconnect at once", away.len());
    let started = Instant::now();
    let mut storm = tokio::task::JoinSet::new();
    for (i, (g, token)) in away.into_iter().enumerate() {
        let (target, group, source) = (target.clone(), groups[g], sources[i % sources.len()]);
        storm.spawn(catch_up(target, source, token, group));
    }
    let mut latency = histogram();
    let (mut complete, mut failed, mut fetched, mut duplicates, mut missing) = (0u64, 0u64, 0u64, 0u64, 0u64);
    while let Some(done) = storm.join_next().await {
        match done {
            Ok(Ok((micros, tracker, last))) => {
                report::record(&mut latency, micros);
                fetched += tracker.received;
                duplicates += tracker.duplicates;
                let gap = tracker.missing(last);
                missing += gap;
                if gap == 0 && tracker.contiguous == last {
                    complete += 1;
                }
            }
            _ => failed += 1,
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let summary = latency_summary(&latency);
    let stats = node::stats(args.console).await;
    let results = json!({
        "clients": complete + failed, "fully_synced": complete, "failed": failed,
        "messages_fetched": fetched, "duplicates": duplicates, "missing": missing,
        "storm_seconds": elapsed, "clients_per_second": ((complete + failed) as f64 / elapsed).round(),
        "messages_per_second": (fetched as f64 / elapsed).round(),
        "reconnect_to_synced_latency": summary,
    });
    let parameters = json!({ "url": args.url, "clients": args.clients, "groups": args.groups, "missed": args.missed });
    let lines = vec![
        format!(
            "{complete} of {} clients fully synced ({failed} failed); missing {missing}, duplicates {duplicates}",
            complete + failed
        ),
        format!(
            "storm took {elapsed:.2} s: {:.0} clients/s, {:.0} messages/s fetched",
            (complete + failed) as f64 / elapsed,
            fetched as f64 / elapsed
        ),
        format!("reconnect-to-synced ms p50 {} p99 {} max {}", summary["p50_ms"], summary["p99_ms"], summary["max_ms"]),
    ];
    let pictures = vec![("latency", report::latency_svg(&latency, "reconnect storm: time to fully synced"))];
    Report { scenario: "sync", parameters, results, node: stats, summary: lines, pictures }
        .finish(args.out.as_deref())
        .map_err(|e| LoadError::Connection(e.to_string()))
}

/// One returning client: auth, sync from where it left (seq 0: it joined before any
/// message), then page history until it holds everything.
async fn catch_up(
    target: Target,
    source: IpAddr,
    token: String,
    group: u64,
) -> Result<(u64, SeqTracker, u64), LoadError> {
    let t0 = now_micros();
    let mut ws = connect(&target, Some(source)).await?;
    request(&mut ws, 1, "auth", json!({ "token": token })).await?;
    let mut tracker = SeqTracker::starting_at(0);
    let synced =
        request(&mut ws, 2, "sync", json!({ "groups": [{ "group": group, "after": 0 }], "limit": 100 })).await?;
    let entry = synced["groups"]
        .as_array()
        .and_then(|g| g.iter().find(|e| e["group"] == group))
        .cloned()
        .unwrap_or(Value::Null);
    let last = entry["last_seq"].as_u64().unwrap_or(0);
    let mut more = absorb(&mut tracker, &entry);
    let mut id = 3;
    while more {
        let page =
            request(&mut ws, id, "history", json!({ "group": group, "after": tracker.contiguous, "limit": 100 }))
                .await?;
        more = absorb(&mut tracker, &page);
        id += 1;
    }
    Ok((now_micros().saturating_sub(t0), tracker, last))
}

fn absorb(tracker: &mut SeqTracker, page: &Value) -> bool {
    for message in page["messages"].as_array().into_iter().flatten() {
        if let Some(seq) = message["seq"].as_u64() {
            tracker.record(seq);
        }
    }
    page["has_more"].as_bool().unwrap_or(false)
}
