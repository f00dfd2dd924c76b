//! `bench redpacket`: grab storms on red packets. One group of M members; each round the
//! owner sends a packet of N shares and every member grabs it R times at once. Reports grab
//! requests per second and their latency, then checks the invariants: each packet's shares
//! went to exactly N members, once each, summing to its total; every wallet equals its
//! ledger and what its owner won; the sender paid exactly the totals.

use super::setup;
use crate::load::conn::{LoadError, Target, loopback_sources, request};
use crate::load::node;
use crate::load::report::{self, Report, histogram, latency_summary};
use crate::load::wire::now_micros;
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::time::Instant;

/// Parameters of a redpacket run.
#[derive(Debug, Clone, clap::Args)]
pub struct RedPacketArgs {
    /// The node's WebSocket URL.
    #[arg(long, default_value = "ws://127.0.0.1:7878/ws")]
    pub url: String,
    /// The node's console (to credit the sender and read wallets).
    #[arg(long, default_value = "127.0.0.1:7879")]
    pub console: SocketAddr,
    /// Members of the group, the sender included.
    #[arg(long, default_value_t = 500)]
    pub members: usize,
    /// Shares per packet.
    #[arg(long, default_value_t = 100)]
    pub shares: u32,
    /// Packets, one storm each.
    #[arg(long, default_value_t = 5)]
    pub packets: usize,
    /// Grab requests each member sends per packet, all at once.
    #[arg(long, default_value_t = 2)]
    pub repeats: usize,
    /// Spread connections over 127.0.0.1 ... 127.0.0.N.
    #[arg(long, default_value_t = 4)]
    pub sources: u8,
    /// Write `<out>.json` and pictures next to it.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Cents per share of each packet.
const CENTS_PER_SHARE: i64 = 100;

/// Runs the scenario.
pub async fn run(args: RedPacketArgs) -> Result<(), LoadError> {
    let target = Target::parse(&args.url)?;
    eprintln!(
        "redpacket: {} packets of {} shares, {} members grabbing {} times each",
        args.packets, args.shares, args.members, args.repeats
    );
    let (groups, seats) =
        setup::groups_of_members(&target, &loopback_sources(args.sources), "redpacket", 1, args.members, None).await?;
    let mut seats = setup::join_all(&groups, seats).await?.remove(0);
    let group = groups[0];
    let total = i64::from(args.shares) * CENTS_PER_SHARE;
    let sender = seats[0].user;
    let credit = total * args.packets as i64;
    let credited = node::ask(args.console, &format!("credit {sender} {credit} bench-{}", now_micros())).await;
    if credited.as_ref().and_then(|c| c["balance"].as_i64()).is_none() {
        return Err(LoadError::Connection(format!("the console did not credit the sender: {credited:?}")));
    }
    let sender_before = wallet(args.console, sender).await?.0;

    let mut latency = histogram();
    let mut won: HashMap<u64, i64> = HashMap::new();
    let (mut requests, mut grabbed, mut already, mut empty, mut other) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut storm_seconds = 0.0;
    let mut packets = Vec::new();
    for round in 0..args.packets {
        let body = json!({ "total": total, "count": args.shares, "kind": "lucky", "greeting": "bench" });
        let fields =
            json!({ "group": group, "client_msg_id": format!("rp-{round}"), "type": "red_packet", "body": body });
        let ack = request(&mut seats[0].socket, 100 + round as u64, "send", fields).await?;
        let seq = ack["seq"].as_u64().unwrap_or(1);
        let page =
            request(&mut seats[0].socket, 200, "history", json!({ "group": group, "after": seq - 1, "limit": 1 }))
                .await?;
        let packet = page["messages"][0]["body"]["packet"].as_u64().unwrap_or(0);
        packets.push(packet);

        let barrier = Arc::new(tokio::sync::Barrier::new(seats.len() + 1));
        let mut tasks = tokio::task::JoinSet::new();
        for mut seat in seats.drain(..) {
            let (barrier, repeats) = (barrier.clone(), args.repeats);
            tasks.spawn(async move {
                barrier.wait().await;
                let mut outcomes = Vec::with_capacity(repeats);
                for r in 0..repeats {
                    let t0 = now_micros();
                    let fields = json!({ "group": group, "packet": packet });
                    let outcome = request(&mut seat.socket, 300 + r as u64, "grab_red_packet", fields).await;
                    outcomes.push((now_micros().saturating_sub(t0), outcome));
                }
                (seat, outcomes)
            });
        }
        barrier.wait().await;
        let started = Instant::now();
        while let Some(done) = tasks.join_next().await {
            let Ok((seat, outcomes)) = done else { continue };
            for (micros, outcome) in outcomes {
                requests += 1;
                report::record(&mut latency, micros);
                match outcome {
                    Ok(result) => match result["status"].as_str() {
                        Some("grabbed") => {
                            grabbed += 1;
                            *won.entry(seat.user).or_default() += result["amount"].as_i64().unwrap_or(0);
                        }
                        Some("already_grabbed") => already += 1,
                        Some("empty") => empty += 1,
                        _ => other += 1,
                    },
                    Err(_) => other += 1,
                }
            }
            seats.push(seat);
        }
        storm_seconds += started.elapsed().as_secs_f64();
        // Seats came back in completion order: the sender sends the next packet.
        seats.sort_by_key(|seat| seat.user != sender);
        eprintln!("  packet {}/{}: {grabbed} grabbed so far", round + 1, args.packets);
    }

    // The invariants, read back from the node.
    let mut problems = Vec::new();
    let Some(reader) = seats.first_mut() else {
        return Err(LoadError::Connection("no members".into()));
    };
    for (i, packet) in packets.iter().enumerate() {
        let info =
            request(&mut reader.socket, 400 + i as u64, "red_packet", json!({ "group": group, "packet": packet }))
                .await?;
        let grabs = info["grabs"].as_array().cloned().unwrap_or_default();
        let users: std::collections::HashSet<u64> = grabs.iter().filter_map(|g| g["user"].as_u64()).collect();
        let sum: i64 = grabs.iter().filter_map(|g| g["amount"].as_i64()).sum();
        if info["status"] != "empty"
            || grabs.len() != args.shares as usize
            || users.len() != grabs.len()
            || sum != total
        {
            problems.push(format!(
                "packet {packet}: status {}, {} grabs by {} users, sum {sum}",
                info["status"],
                grabs.len(),
                users.len()
            ));
        }
        if grabs.iter().any(|g| g["amount"].as_i64().unwrap_or(0) < 1) {
            problems.push(format!("packet {packet}: a share under one cent"));
        }
    }
    if grabbed != u64::from(args.shares) * args.packets as u64 {
        problems.push(format!("{grabbed} grabs succeeded, expected {}", u64::from(args.shares) * args.packets as u64));
    }
    for seat in &seats {
        let (balance, sum) = wallet(args.console, seat.user).await?;
        let expected =
            won.get(&seat.user).copied().unwrap_or(0) + if seat.user == sender { sender_before - credit } else { 0 };
        if balance != sum || balance != expected {
            problems.push(format!("user {}: balance {balance}, ledger {sum}, expected {expected}", seat.user));
        }
    }
    let invariants_held = problems.is_empty();
    for problem in problems.iter().take(10) {
        eprintln!("  INVARIANT BROKEN: {problem}");
    }

    let summary = latency_summary(&latency);
    let stats = node::stats(args.console).await;
    let rate = requests as f64 / storm_seconds.max(1e-9);
    let results = json!({
        "grab_requests": requests, "grabbed": grabbed, "already_grabbed": already, "empty": empty,
        "other": other, "storm_seconds": storm_seconds, "grab_requests_per_second": rate.round(),
        "grab_latency": summary, "invariants_held": invariants_held, "problems": problems,
    });
    let parameters = json!({
        "url": args.url, "members": args.members, "shares": args.shares, "packets": args.packets,
        "repeats": args.repeats, "cents_per_share": CENTS_PER_SHARE,
    });
    let lines = vec![
        format!("{requests} grab requests in {storm_seconds:.2} s of storms: {rate:.0}/s"),
        format!("{grabbed} grabbed, {already} already_grabbed, {empty} empty, {other} other"),
        format!("grab latency ms p50 {} p99 {} max {}", summary["p50_ms"], summary["p99_ms"], summary["max_ms"]),
        format!("invariants held: {invariants_held}"),
    ];
    let pictures = vec![("latency", report::latency_svg(&latency, "grab latency in a red packet storm"))];
    Report { scenario: "redpacket", parameters, results, node: stats, summary: lines, pictures }
        .finish(args.out.as_deref())
        .map_err(|e| LoadError::Connection(e.to_string()))?;
    if invariants_held { Ok(()) } else { Err(LoadError::Connection("red packet invariants broken".into())) }
}

/// (balance, ledger sum) of a user, from the console.
async fn wallet(console: SocketAddr, user: u64) -> Result<(i64, i64), LoadError> {
    let answer = node::ask(console, &format!("wallet {user}")).await;
    match answer.as_ref().map(|a| (a["balance"].as_i64(), a["ledger_sum"].as_i64())) {
        Some((Some(balance), Some(sum))) => Ok((balance, sum)),
        _ => Err(LoadError::Connection(format!("the console did not show wallet {user}: {answer:?}"))),
    }
}
