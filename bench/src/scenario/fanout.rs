//! `bench fanout`: G groups of M online members, S senders per group at an offered rate.
//! Every member checks every delivery (each seq once, in order, none missing) and records
//! the send-to-receive latency; the node's CPU seconds normalise the throughput.
//!
//! Phases: warm-up (sending, not measured), measure, stop (senders wait for their acks),
//! drain (receivers wait for the last acked seq of their group), resync (a receiver still
//! missing messages, for example after a `slow_consumer` close, fetches them with `history`
//! and they count as resynced, not live), done.

use crate::load::conn::{LoadError, Socket, Target, connect, connect_with_receive_buffer, loopback_sources, request};
use crate::load::per_thread::{Padded, PerThread};
use crate::load::report::{self, Report, histogram, latency_summary};
use crate::load::sequence::SeqTracker;
use crate::load::wire::{body_time, decode_frame, fast_messages, now_micros, timed_body};
use crate::load::{accounts, node};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// Parameters of a fan-out run.
#[derive(Debug, Clone, clap::Args)]
pub struct FanoutArgs {
    /// The node's WebSocket URL.
    /// Several comma-separated URLs spread members over the nodes of a cluster, round-robin.
    #[arg(long, default_value = "ws://127.0.0.1:7878/ws", value_delimiter = ',')]
    pub url: Vec<String>,
    /// The node's console, for its CPU time and memory.
    /// On a cluster, every node's console (comma-separated): CPU time is summed over them.
    #[arg(long, default_value = "127.0.0.1:7879", value_delimiter = ',')]
    pub console: Vec<SocketAddr>,
    /// Groups.
    #[arg(long, default_value_t = 4)]
    pub groups: usize,
    /// Online members per group (senders included).
    #[arg(long, default_value_t = 500)]
    pub members: usize,
    /// Senders per group.
    #[arg(long, default_value_t = 5)]
    pub senders: usize,
    /// Messages per second per sender.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Text body size, bytes.
    #[arg(long, default_value_t = 160)]
    pub body_bytes: usize,
    /// Seconds of sending before measuring.
    #[arg(long, default_value_t = 3.0)]
    pub warmup: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    /// Spread connections over 127.0.0.1 ... 127.0.0.N.
    #[arg(long, default_value_t = 4)]
    pub sources: u8,
    /// Members of the first group (never senders) that stop reading for the whole measured
    /// window, on sockets with a small receive buffer: the slow consumers the node must drop
    /// without slowing the others. They read again once sending stops, reconnect and resync;
    /// their deliveries are not in the latency figures.
    #[arg(long, default_value_t = 0)]
    pub stalled: usize,
    /// Write `<out>.json` and pictures next to it.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The kernel receive buffer of a stalled member's socket (the kernel doubles it).
const STALLED_RECEIVE_BUFFER: u32 = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Warmup,
    Measure,
    Stop,
    Drain,
    Resync,
    Done,
}

/// State shared by the orchestrator and every connection task.
struct Shared {
    measure_start: AtomicU64,
    measure_end: AtomicU64,
    /// Latencies and delivery counts, per bench thread (see [`PerThread`]).
    tallies: PerThread<Tally>,
    sent: AtomicU64,
    acked: AtomicU64,
    pending_acks: AtomicU64,
    /// Sends answered with an error (not stored, not retried), and how many as `rate_limited`.
    send_errors: AtomicU64,
    rate_limited: AtomicU64,
    closes: AtomicU64,
    /// Per group: the highest acked seq.
    group_last: Vec<AtomicU64>,
    /// Per connection: its contiguous seq.
    progress: Vec<Padded<AtomicU64>>,
    body_bytes: usize,
}

struct Member {
    index: usize,
    group_index: usize,
    group: u64,
    token: String,
    source: Option<IpAddr>,
    /// The node this member connects to.
    target: Target,
    /// Seconds between sends, and the first send's offset, for senders.
    send_every: Option<(Duration, Duration)>,
    /// Stops reading while the window is measured.
    stalled: bool,
}

/// What the connections on one bench thread measured.
struct Tally {
    latency: Histogram<u64>,
    /// Send to the node's accept stamp, and accept stamp to receive (ms resolution): where
    /// the latency is spent.
    to_accept: Histogram<u64>,
    from_accept: Histogram<u64>,
    ack_latency: Histogram<u64>,
    delivered: u64,
    delivered_in_window: u64,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            latency: histogram(),
            to_accept: histogram(),
            from_accept: histogram(),
            ack_latency: histogram(),
            delivered: 0,
            delivered_in_window: 0,
        }
    }
}

impl Shared {
    /// Deliveries received so far, and those inside the measured window.
    fn delivered(&self) -> (u64, u64) {
        let mut sum = (0, 0);
        self.tallies.for_each(|t| {
            sum.0 += t.delivered;
            sum.1 += t.delivered_in_window;
        });
        sum
    }
}

#[derive(Default)]
struct MemberResult {
    tracker: SeqTracker,
    resynced: u64,
    missing: u64,
    close_reasons: Vec<String>,
    stalled: bool,
}

#[derive(Deserialize)]
struct AckResult {
    seq: u64,
}

#[derive(Deserialize)]
struct HistoryResult {
    messages: Vec<HistoryMessage>,
    has_more: bool,
}

#[derive(Deserialize)]
struct HistoryMessage {
    seq: u64,
}

/// Runs the scenario.
pub async fn run(args: FanoutArgs) -> Result<(), LoadError> {
    let targets = args.url.iter().map(|url| Target::parse(url)).collect::<Result<Vec<_>, _>>()?;
    let sources = loopback_sources(args.sources);
    let total = args.groups * args.members;
    let senders = args.senders.min(args.members);
    eprintln!(
        "fanout: {} groups x {} members, {} senders/group at {}/s, {}-byte bodies: offering {:.0} deliveries/s",
        args.groups,
        args.members,
        senders,
        args.rate,
        args.body_bytes,
        args.groups as f64 * senders as f64 * args.rate * args.members as f64
    );

    // Setup: users, groups, memberships.
    let prefix = accounts::run_prefix("fanout");
    // Member i signs up (and stays) on node i % nodes.
    let mut per_node = Vec::with_capacity(targets.len());
    for (n, target) in targets.iter().enumerate() {
        let count = (total + targets.len() - 1 - n) / targets.len();
        per_node
            .push(accounts::sign_up(target, &sources, &format!("{prefix}n{n}"), count, 128, true).await?.into_iter());
    }
    let mut sockets = Vec::with_capacity(total);
    let mut tokens = Vec::with_capacity(total);
    for i in 0..total {
        let (account, socket) =
            per_node[i % targets.len()].next().ok_or_else(|| LoadError::Connection("sign-up came short".into()))?;
        tokens.push(account.token);
        sockets.push(socket.ok_or_else(|| LoadError::Connection("no socket".into()))?);
    }
    let mut groups = Vec::with_capacity(args.groups);
    for g in 0..args.groups {
        let owner = &mut sockets[g * args.members];
        let info = request(owner, 10, "create_group", json!({ "name": format!("{prefix}g{g}"), "open": true })).await?;
        groups.push(info["group"].as_u64().unwrap_or(0));
    }
    eprintln!("  joining {} members", total - args.groups);
    let mut joins = tokio::task::JoinSet::new();
    for (i, mut socket) in sockets.into_iter().enumerate() {
        let group = groups[i / args.members];
        let owner = i % args.members == 0;
        joins.spawn(async move {
            if !owner {
                request(&mut socket, 11, "join", json!({ "group": group })).await?;
            }
            Ok::<_, LoadError>((i, socket))
        });
    }
    let mut ready: Vec<Option<Socket>> = (0..total).map(|_| None).collect();
    while let Some(joined) = joins.join_next().await {
        let (i, socket) = joined.map_err(|e| LoadError::Connection(e.to_string()))??;
        ready[i] = Some(socket);
    }
    // Let setup events (member_joined) drain before the clock starts.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let shared = Arc::new(Shared {
        measure_start: AtomicU64::new(u64::MAX),
        measure_end: AtomicU64::new(u64::MAX),
        tallies: PerThread::new(Tally::new),
        sent: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        pending_acks: AtomicU64::new(0),
        send_errors: AtomicU64::new(0),
        rate_limited: AtomicU64::new(0),
        closes: AtomicU64::new(0),
        group_last: (0..args.groups).map(|_| AtomicU64::new(0)).collect(),
        progress: (0..total).map(|_| Padded(AtomicU64::new(0))).collect(),
        body_bytes: args.body_bytes,
    });
    let (phase_tx, phase_rx) = watch::channel(Phase::Warmup);
    let period = Duration::from_secs_f64(1.0 / args.rate.max(0.001));
    let stalled = args.stalled.min(args.members.saturating_sub(senders));
    let is_stalled = |i: usize| i / args.members == 0 && i % args.members >= args.members - stalled;
    for (i, socket) in ready.iter_mut().enumerate().filter(|(i, _)| is_stalled(*i)) {
        // A fresh socket with a small receive buffer, before anyone sends; the setup one is
        // dropped.
        let source = sources.get(i % sources.len()).copied();
        let mut fresh =
            connect_with_receive_buffer(&targets[i % targets.len()], source, Some(STALLED_RECEIVE_BUFFER)).await?;
        request(&mut fresh, 1, "auth", json!({ "token": tokens[i] })).await?;
        *socket = Some(fresh);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (i, socket) in ready.into_iter().enumerate() {
        let Some(socket) = socket else { continue };
        let group_index = i / args.members;
        let rank = i % args.members;
        let send_every = (rank < senders).then(|| {
            // Spread senders evenly over one period so they do not fire together.
            let slot = (group_index * senders + rank) as f64 / (args.groups * senders) as f64;
            (period, period.mul_f64(slot))
        });
        let member = Member {
            index: i,
            group_index,
            group: groups[group_index],
            token: tokens[i].clone(),
            source: sources.get(i % sources.len()).copied(),
            target: targets[i % targets.len()].clone(),
            send_every,
            stalled: is_stalled(i),
        };
        tasks.spawn(member_task(member, socket, shared.clone(), phase_rx.clone()));
    }

    // Warm up, then measure, sampling throughput every second.
    let mut timeline = Vec::new();
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    let stats_start = node::stats_all(&args.console).await;
    let rss_start = node::rss_bytes(&stats_start);
    let mut rss_peak = rss_start;
    shared.measure_start.store(now_micros(), Ordering::SeqCst);
    let _ = phase_tx.send(Phase::Measure);
    let started = Instant::now();
    let mut last = shared.delivered().0;
    let mut last_sent = shared.sent.load(Ordering::Relaxed);
    while started.elapsed().as_secs_f64() < args.duration {
        let next = started + Duration::from_secs(timeline.len() as u64 + 1);
        tokio::time::sleep_until(next.min(started + Duration::from_secs_f64(args.duration))).await;
        let now = shared.delivered().0;
        let sent = shared.sent.load(Ordering::Relaxed);
        let mut dropped = String::new();
        if stalled > 0 {
            // Only with stalled members: the console round trip is not free.
            let stats = node::stats_all(&args.console).await;
            rss_peak = rss_peak.max(node::rss_bytes(&stats));
            let slow = stats.as_ref().and_then(|s| s["closes"]["slow_consumer"].as_u64()).unwrap_or(0);
            dropped = format!(" node slow_consumer closes={slow}");
        }
        timeline.push((now - last) as f64);
        eprintln!(
            "  t={:>3}s deliveries/s={:>9} sent/s={:>6} closes={}{dropped}",
            timeline.len(),
            now - last,
            sent - last_sent,
            shared.closes.load(Ordering::Relaxed)
        );
        last = now;
        last_sent = sent;
    }
    shared.measure_end.store(now_micros(), Ordering::SeqCst);
    let window = started.elapsed().as_secs_f64();
    let stats_end = node::stats_all(&args.console).await;
    rss_peak = rss_peak.max(node::rss_bytes(&stats_end));

    // Stop sending; wait for acks, then for every receiver to reach its group's last seq.
    let _ = phase_tx.send(Phase::Stop);
    wait_until(Duration::from_secs(30), || shared.pending_acks.load(Ordering::SeqCst) == 0).await;
    let _ = phase_tx.send(Phase::Drain);
    let members = args.members;
    let caught_up = || {
        shared
            .progress
            .iter()
            .enumerate()
            .all(|(i, p)| p.0.load(Ordering::SeqCst) >= shared.group_last[i / members].load(Ordering::SeqCst))
    };
    let drained = wait_until(Duration::from_secs(20), caught_up).await;
    if !drained {
        eprintln!("  some receivers are behind after 20 s; resyncing them with history");
    }
    let _ = phase_tx.send(Phase::Resync);
    wait_until(Duration::from_secs(60), caught_up).await;
    let _ = phase_tx.send(Phase::Done);

    let (mut latency, mut ack_latency, mut to_accept, mut from_accept) =
        (histogram(), histogram(), histogram(), histogram());
    shared.tallies.for_each(|t| {
        let _ = latency.add(&t.latency);
        let _ = ack_latency.add(&t.ack_latency);
        let _ = to_accept.add(&t.to_accept);
        let _ = from_accept.add(&t.from_accept);
    });
    let (mut duplicates, mut out_of_order, mut missing, mut resynced, mut received) = (0, 0, 0, 0, 0);
    let mut close_reasons: HashMap<String, u64> = HashMap::new();
    let (mut stalled_closes, mut stalled_resynced, mut stalled_missing, mut stalled_duplicates) = (0, 0, 0, 0);
    while let Some(result) = tasks.join_next().await {
        let Ok(result) = result else { continue };
        if result.stalled {
            stalled_closes += result.close_reasons.len() as u64;
            stalled_resynced += result.resynced;
            stalled_missing += result.missing;
            stalled_duplicates += result.tracker.duplicates;
        }
        duplicates += result.tracker.duplicates;
        out_of_order += result.tracker.out_of_order;
        missing += result.missing;
        resynced += result.resynced;
        received += result.tracker.received;
        for reason in result.close_reasons {
            *close_reasons.entry(reason).or_default() += 1;
        }
    }
    let in_window = shared.delivered().1;
    let per_second = in_window as f64 / window;
    let cpu = match (node::cpu_seconds(&stats_start), node::cpu_seconds(&stats_end)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let per_cpu_second = cpu.filter(|c| *c > 0.0).map(|c| in_window as f64 / c);
    let messages: u64 = shared.group_last.iter().map(|g| g.load(Ordering::SeqCst)).sum();
    let expected = messages * args.members as u64;
    let summary = latency_summary(&latency);
    let results = json!({
        "deliveries_per_second": per_second.round(),
        "deliveries_in_window": in_window,
        "window_seconds": window,
        "messages_acked": shared.acked.load(Ordering::Relaxed),
        "messages_in_logs": messages,
        "deliveries_expected": expected,
        "deliveries_received_live": received - resynced.min(received),
        "deliveries_resynced": resynced,
        "lost": missing,
        "duplicated": duplicates,
        "out_of_order": out_of_order,
        "latency": summary,
        "ack_latency": latency_summary(&ack_latency),
        "send_to_accept_latency": latency_summary(&to_accept),
        "accept_to_receive_latency": latency_summary(&from_accept),
        "node_cpu_seconds": cpu,
        "deliveries_per_node_cpu_second": per_cpu_second.map(f64::round),
        "node_rss_bytes": node::rss_bytes(&stats_end),
        "closes": close_reasons,
        "send_errors": shared.send_errors.load(Ordering::Relaxed),
        "sends_rate_limited": shared.rate_limited.load(Ordering::Relaxed),
        "stalled": {
            "members": stalled,
            "closes": stalled_closes,
            "resynced": stalled_resynced,
            "lost": stalled_missing,
            "duplicated": stalled_duplicates,
            "node_rss_at_start_bytes": rss_start,
            "node_rss_peak_bytes": rss_peak,
            "node_rss_growth_bytes": rss_peak.zip(rss_start).map(|(peak, start)| peak.saturating_sub(start)),
        },
        "throughput_per_second": &timeline,
    });
    let parameters = json!({
        "url": args.url, "groups": args.groups, "members": args.members, "senders_per_group": senders,
        "rate_per_sender": args.rate, "body_bytes": args.body_bytes, "warmup_s": args.warmup,
        "duration_s": args.duration, "sources": args.sources, "stalled": stalled,
        "offered_deliveries_per_second": args.groups as f64 * senders as f64 * args.rate * args.members as f64,
    });
    let summary_lines = vec![
        format!(
            "deliveries/s {:.0} (offered {:.0}); per node CPU-second {}",
            per_second,
            args.groups as f64 * senders as f64 * args.rate * args.members as f64,
            per_cpu_second.map_or("?".into(), |v| format!("{v:.0}"))
        ),
        format!(
            "latency ms: p50 {} p99 {} p99.9 {} max {}",
            summary["p50_ms"], summary["p99_ms"], summary["p99_9_ms"], summary["max_ms"]
        ),
        format!(
            "lost {missing}, duplicated {duplicates}, out of order {out_of_order}, resynced {resynced}, closes {:?}",
            results["closes"]
        ),
        format!(
            "split (ms, accept stamp has ms resolution): send->accept p50 {} p99 {}; accept->receive p50 {} p99 {}",
            results["send_to_accept_latency"]["p50_ms"],
            results["send_to_accept_latency"]["p99_ms"],
            results["accept_to_receive_latency"]["p50_ms"],
            results["accept_to_receive_latency"]["p99_ms"]
        ),
        format!("node CPU {:.2} s over {:.1} s; RSS {:?}", cpu.unwrap_or(0.0), window, node::rss_bytes(&stats_end)),
    ];
    let mut summary_lines = summary_lines;
    summary_lines.extend(report::rate_limit_hint(shared.rate_limited.load(Ordering::Relaxed)));
    if stalled > 0 {
        summary_lines.push(format!(
            "stalled members {stalled}: closes {stalled_closes}, resynced {stalled_resynced}, lost {stalled_missing}, duplicated {stalled_duplicates}; \
             node RSS grew {} KiB while they stalled (latency figures are the others')",
            results["stalled"]["node_rss_growth_bytes"].as_u64().map_or("?".into(), |b| (b / 1024).to_string())
        ));
    }
    let pictures = vec![
        (
            "latency",
            report::latency_svg(&latency, &format!("fanout send-to-receive latency, {per_second:.0} deliveries/s")),
        ),
        ("throughput", report::timeline_svg(&timeline, "fanout deliveries per second", "deliveries/s")),
    ];
    Report { scenario: "fanout", parameters, results, node: stats_end, summary: summary_lines, pictures }
        .finish(args.out.as_deref())
        .map_err(|e| LoadError::Connection(e.to_string()))
}

async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done()
}

/// One member's connection: receives and checks every message; senders also send and
/// collect their acks.
async fn member_task(
    member: Member,
    mut ws: Socket,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
) -> MemberResult {
    // A stalled member's latency is its own stall, not the node's.
    let timed = !member.stalled;
    let mut result = MemberResult { stalled: member.stalled, ..MemberResult::default() };
    let mut in_flight: HashMap<u64, u64> = HashMap::new();
    let mut next_id: u64 = 1000;
    let (period, offset) = member.send_every.unwrap_or((Duration::from_secs(3600), Duration::ZERO));
    let mut ticker = tokio::time::interval_at(Instant::now() + offset, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut history_request: Option<u64> = None;
    let mut deliveries = Vec::new();
    let sender = member.send_every.is_some();
    let group_last = &shared.group_last[member.group_index];
    loop {
        let current = *phase.borrow();
        if current == Phase::Done {
            break;
        }
        let sending = sender && current <= Phase::Measure;
        let reading = !(member.stalled && current == Phase::Measure);
        tokio::select! {
            frame = ws.next(), if reading => {
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(close))) => {
                        let reason = close.map(|c| c.reason.to_string()).unwrap_or_default();
                        result.close_reasons.push(reason);
                        shared.closes.fetch_add(1, Ordering::Relaxed);
                        match reconnect(&member.target, member.source, &member.token).await {
                            Some(fresh) => { ws = fresh; resync_after_reconnect(&mut ws, &mut next_id, &mut history_request, &member, &result, &phase, group_last).await; continue; }
                            None => break,
                        }
                    }
                    Some(Ok(_)) => continue,
                    _ => {
                        result.close_reasons.push("connection lost".into());
                        shared.closes.fetch_add(1, Ordering::Relaxed);
                        match reconnect(&member.target, member.source, &member.token).await {
                            Some(fresh) => { ws = fresh; resync_after_reconnect(&mut ws, &mut next_id, &mut history_request, &member, &result, &phase, group_last).await; continue; }
                            None => break,
                        }
                    }
                };
                let now = now_micros();
                let (window_start, window_end) = (shared.measure_start.load(Ordering::Relaxed), shared.measure_end.load(Ordering::Relaxed));
                let in_window = now >= window_start && now < window_end;
                // One lock of this thread's tally per frame, whatever it carries.
                let record = |tally: &mut Tally, tracker: &mut SeqTracker, seq: u64, sent: Option<u64>, ts: u64| {
                    if tracker.record(seq) {
                        tally.delivered += 1;
                        tally.delivered_in_window += u64::from(in_window);
                        if let Some(sent) = sent
                            && timed
                            && sent >= window_start && sent < window_end
                        {
                            report::record(&mut tally.latency, now.saturating_sub(sent));
                            let accepted = ts * 1000;
                            report::record(&mut tally.to_accept, accepted.saturating_sub(sent));
                            report::record(&mut tally.from_accept, now.saturating_sub(accepted));
                        }
                    }
                };
                deliveries.clear();
                if fast_messages(text.as_str(), &mut deliveries).is_some() {
                    let mut tally = shared.tallies.local();
                    for &(group, seq, sent, ts) in &deliveries {
                        if group == member.group {
                            record(&mut tally, &mut result.tracker, seq, sent, ts);
                        }
                    }
                } else {
                    let Ok(events) = decode_frame(text.as_str()) else { continue };
                    for event in events {
                        match event.event.as_ref() {
                            "message" if event.group == Some(member.group) => {
                                let Some(seq) = event.seq else { continue };
                                let sent = event.text_body().as_deref().and_then(body_time);
                                record(&mut shared.tallies.local(), &mut result.tracker, seq, sent, event.ts.unwrap_or(0));
                            }
                            "reply" | "error" => {
                                let Some(id) = event.id else { continue };
                                if Some(id) == history_request {
                                    history_request = None;
                                    if let Some(page) = event.result.and_then(|r| serde_json::from_str::<HistoryResult>(r.get()).ok()) {
                                        // A page from the first hole may hold seqs received
                                            // live beyond it: those are not duplicates.
                                        for m in &page.messages {
                                            if !result.tracker.has(m.seq) && result.tracker.record(m.seq) {
                                                result.resynced += 1;
                                            }
                                        }
                                        if page.has_more || result.tracker.contiguous < group_last.load(Ordering::SeqCst) {
                                            history_request = send_history(&mut ws, &mut next_id, member.group, result.tracker.contiguous).await;
                                        }
                                    }
                                    continue;
                                }
                                let Some(sent) = in_flight.remove(&id) else { continue };
                                shared.pending_acks.fetch_sub(1, Ordering::SeqCst);
                                if event.event == "reply" {
                                    shared.acked.fetch_add(1, Ordering::Relaxed);
                                    if let Some(ack) = event.result.and_then(|r| serde_json::from_str::<AckResult>(r.get()).ok()) {
                                        group_last.fetch_max(ack.seq, Ordering::SeqCst);
                                    }
                                    if sent >= window_start && sent < window_end {
                                        report::record(&mut shared.tallies.local().ack_latency, now.saturating_sub(sent));
                                    }
                                } else {
                                    shared.send_errors.fetch_add(1, Ordering::Relaxed);
                                    if event.code.as_deref() == Some("rate_limited") {
                                        shared.rate_limited.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
                shared.progress[member.index].0.store(result.tracker.contiguous, Ordering::Relaxed);
            }
            _ = ticker.tick(), if sending => {
                next_id += 1;
                let sent = now_micros();
                let frame = format!(
                    r#"{{"id":{next_id},"op":"send","group":{},"client_msg_id":"b{}-{next_id}","type":"text","body":"{}"}}"#,
                    member.group, member.index, timed_body(sent, shared.body_bytes)
                );
                in_flight.insert(next_id, sent);
                shared.pending_acks.fetch_add(1, Ordering::SeqCst);
                shared.sent.fetch_add(1, Ordering::Relaxed);
                if ws.send(Message::Text(frame.into())).await.is_err() {
                    shared.pending_acks.fetch_sub(in_flight.len() as u64, Ordering::SeqCst);
                    in_flight.clear();
                }
            }
            changed = phase.changed() => {
                if changed.is_err() {
                    break;
                }
                if *phase.borrow() == Phase::Resync && history_request.is_none()
                    && result.tracker.contiguous < group_last.load(Ordering::SeqCst)
                {
                    history_request = send_history(&mut ws, &mut next_id, member.group, result.tracker.contiguous).await;
                }
            }
        }
    }
    result.missing = result.tracker.missing(group_last.load(Ordering::SeqCst));
    result
}

/// Once sending has stopped, a member that reconnects fetches what it missed at once, as
/// a real client would, rather than waiting for the resync phase.
async fn resync_after_reconnect(
    ws: &mut Socket,
    next_id: &mut u64,
    history_request: &mut Option<u64>,
    member: &Member,
    result: &MemberResult,
    phase: &watch::Receiver<Phase>,
    group_last: &AtomicU64,
) {
    let stopped = *phase.borrow() >= Phase::Stop;
    if stopped && result.tracker.contiguous < group_last.load(Ordering::SeqCst) {
        *history_request = send_history(ws, next_id, member.group, result.tracker.contiguous).await;
    }
}

async fn send_history(ws: &mut Socket, next_id: &mut u64, group: u64, after: u64) -> Option<u64> {
    *next_id += 1;
    let frame = format!(r#"{{"id":{},"op":"history","group":{group},"after":{after},"limit":100}}"#, *next_id);
    ws.send(Message::Text(frame.into())).await.ok()?;
    Some(*next_id)
}

async fn reconnect(target: &Target, source: Option<IpAddr>, token: &str) -> Option<Socket> {
    for attempt in 0..20u32 {
        tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt.min(10)))).await;
        let Ok(mut ws) = connect(target, source).await else { continue };
        if request(&mut ws, 1, "auth", json!({ "token": token })).await.is_ok() {
            return Some(ws);
        }
    }
    None
}
