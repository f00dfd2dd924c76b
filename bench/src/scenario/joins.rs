//! `bench joins`: K users join one capped group at the same instant; exactly the cap get in.

use super::setup;
use crate::load::conn::{LoadError, Target, loopback_sources, request};
use crate::load::node;
use crate::load::report::{self, Report, histogram, latency_summary};
use crate::load::wire::now_micros;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::time::Instant;

/// Parameters of a joins run.
#[derive(Debug, Clone, clap::Args)]
pub struct JoinsArgs {
    /// The node's WebSocket URL.
    #[arg(long, default_value = "ws://127.0.0.1:7878/ws")]
    pub url: String,
    /// The node's console.
    #[arg(long, default_value = "127.0.0.1:7879")]
    pub console: SocketAddr,
    /// Users trying to join (besides the owner).
    #[arg(long, default_value_t = 2000)]
    pub users: usize,
    /// The group's member cap.
    #[arg(long, default_value_t = 500)]
    pub cap: u32,
    /// Spread connections over 127.0.0.1 ... 127.0.0.N.
    #[arg(long, default_value_t = 4)]
    pub sources: u8,
    /// Write `<out>.json` and pictures next to it.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Runs the scenario.
pub async fn run(args: JoinsArgs) -> Result<(), LoadError> {
    let target = Target::parse(&args.url)?;
    eprintln!("joins: {} users join a group capped at {}", args.users, args.cap);
    let (groups, mut seats) =
        setup::groups_of_members(&target, &loopback_sources(args.sources), "joins", 1, args.users + 1, Some(args.cap))
            .await?;
    let group = groups[0];
    let mut block = seats.remove(0);
    let mut owner = block.remove(0);
    let barrier = Arc::new(tokio::sync::Barrier::new(block.len() + 1));
    let mut tasks = tokio::task::JoinSet::new();
    for mut seat in block {
        let barrier = barrier.clone();
        tasks.spawn(async move {
            barrier.wait().await;
            let t0 = now_micros();
            let outcome = request(&mut seat.socket, 20, "join", json!({ "group": group })).await;
            (now_micros().saturating_sub(t0), outcome)
        });
    }
    barrier.wait().await;
    let started = Instant::now();
    let mut latency = histogram();
    let (mut added, mut full, mut other) = (0u64, 0u64, 0u64);
    while let Some(done) = tasks.join_next().await {
        let Ok((micros, outcome)) = done else { continue };
        report::record(&mut latency, micros);
        match outcome {
            Ok(_) => added += 1,
            Err(LoadError::Refused { code, .. }) if code == "group_full" => full += 1,
            Err(_) => other += 1,
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let info = request(&mut owner.socket, 30, "group_info", json!({ "group": group })).await?;
    let mut listed = 0;
    let mut after: Option<u64> = None;
    loop {
        let page =
            request(&mut owner.socket, 31, "members", json!({ "group": group, "after": after, "limit": 500 })).await?;
        listed += page["members"].as_array().map_or(0, Vec::len);
        match page.get("next").and_then(Value::as_u64) {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let member_count = info["member_count"].as_u64().unwrap_or(0);
    let cap_held = member_count == u64::from(args.cap) && listed as u64 == member_count && added + 1 == member_count;
    let summary = latency_summary(&latency);
    let stats = node::stats(args.console).await;
    let results = json!({
        "joined": added, "group_full": full, "other_errors": other,
        "member_count": member_count, "members_listed": listed, "cap_held": cap_held,
        "seconds": elapsed, "joins_per_second": ((args.users as f64) / elapsed).round(),
        "join_latency": summary,
    });
    let parameters = json!({ "url": args.url, "users": args.users, "cap": args.cap });
    let lines = vec![
        format!(
            "{added} joined, {full} group_full, {other} other errors; member_count {member_count}, listed {listed}: cap held = {cap_held}"
        ),
        format!("{} join requests answered in {elapsed:.2} s ({:.0}/s)", args.users, args.users as f64 / elapsed),
        format!("join latency ms p50 {} p99 {} max {}", summary["p50_ms"], summary["p99_ms"], summary["max_ms"]),
    ];
    let pictures = vec![("latency", report::latency_svg(&latency, "join latency under a join storm"))];
    Report { scenario: "joins", parameters, results, node: stats, summary: lines, pictures }
        .finish(args.out.as_deref())
        .map_err(|e| LoadError::Connection(e.to_string()))
}
