//! `bench admission`: admission control under more sends than the node can store.
//!
//! One sender per group sends open-loop (at a set rate, whatever the acks do, as a crowd of
//! phones would) through three phases: `normal` at `--base-rate`, `overload` at `--rate` (set
//! it to twice what `bench send` measured), each `--phase` seconds, and `recovery` at
//! `--base-rate` again, until the clients' backlog of refused sends has drained and then
//! `--phase` seconds more, in which nothing may be refused. A send refused with `overloaded` (or `rate_limited`, `unavailable`) is sent again
//! after the `retry_after_ms` the node named, plus jitter, with the same `client_msg_id`, the
//! way the protocol tells clients to. After the phases, senders stop offering new messages
//! and retry until everything is acked.
//!
//! It reports per phase: offered, acked and refused sends per second, the latency from a
//! message's first attempt to its ack, and the node's RSS and held sends (sampled every
//! second). It checks that every message was acked exactly once, with each group's seqs
//! exactly 1..N, and says whether the node refused under overload, kept its memory, and
//! stopped refusing in the second half of recovery.

use super::setup;
use crate::load::conn::{LoadError, Socket, Target, loopback_sources};
use crate::load::node;
use crate::load::report::{self, Report, histogram, latency_summary};
use crate::load::wire::{decode_frame, now_micros, timed_body};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::{Value, json};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// Parameters of an admission run.
#[derive(Debug, Clone, clap::Args)]
pub struct AdmissionArgs {
    /// The node's WebSocket URL.
    #[arg(long, default_value = "ws://127.0.0.1:7878/ws")]
    pub url: String,
    /// The node's console, for its memory and held sends.
    #[arg(long, default_value = "127.0.0.1:7879")]
    pub console: SocketAddr,
    /// Groups, each with one sender.
    #[arg(long, default_value_t = 100)]
    pub groups: usize,
    /// Members per group (the sender included).
    #[arg(long, default_value_t = 2)]
    pub members: usize,
    /// Sends offered per second in all, in the `normal` and `recovery` phases.
    #[arg(long, default_value_t = 10_000.0)]
    pub base_rate: f64,
    /// Sends offered per second in all, in the `overload` phase.
    #[arg(long, default_value_t = 100_000.0)]
    pub rate: f64,
    /// Seconds per phase.
    #[arg(long, default_value_t = 10.0)]
    pub phase: f64,
    /// Text body size, bytes.
    #[arg(long, default_value_t = 160)]
    pub body_bytes: usize,
    /// Spread connections over 127.0.0.1 ... 127.0.0.N.
    #[arg(long, default_value_t = 4)]
    pub sources: u8,
    /// Write `<out>.json` and pictures next to it.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The phases, in order. Senders offer new messages only in the first three.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Normal,
    Overload,
    Recovery,
    Drain,
    Done,
}

const PHASES: [(Phase, &str); 3] =
    [(Phase::Normal, "normal"), (Phase::Overload, "overload"), (Phase::Recovery, "recovery")];

/// How often a sender wakes to send what its rate allows.
const TICK: Duration = Duration::from_millis(10);

/// Counters per phase, shared by the senders.
#[derive(Default)]
struct PhaseCounts {
    offered: AtomicU64,
    acked: AtomicU64,
    overloaded: AtomicU64,
    rate_limited: AtomicU64,
    unavailable: AtomicU64,
    other_errors: AtomicU64,
    overloaded_without_retry_after: AtomicU64,
    /// Refusals once the backlog has drained (recovery only).
    overloaded_settled: AtomicU64,
    /// Any refusal (`overloaded`, `rate_limited`, `unavailable`) once the backlog has drained.
    refused_settled: AtomicU64,
}

struct Shared {
    phases: [PhaseCounts; 4],
    /// Index into `phases` of the current phase (Drain counts as the fourth).
    current: AtomicUsize,
    /// Set in recovery once the clients' backlog of refused sends has drained.
    settled: std::sync::atomic::AtomicBool,
    /// Messages offered and not yet acked, over all senders.
    unacked: AtomicU64,
    base_per_sender: f64,
    overload_per_sender: f64,
    body_bytes: usize,
}

#[derive(Deserialize)]
struct Ack {
    seq: u64,
    duplicate: bool,
}

/// What one sender saw.
struct SenderResult {
    /// First attempt to ack, per phase the message was first offered in.
    latency: Vec<Histogram<u64>>,
    /// Acked seqs, one per message.
    seqs: Vec<u64>,
    messages: u64,
    unacked: u64,
    acked_twice: u64,
}

/// Runs the scenario.
pub async fn run(args: AdmissionArgs) -> Result<(), LoadError> {
    let target = Target::parse(&args.url)?;
    let sources = loopback_sources(args.sources);
    eprintln!(
        "admission: {} senders, {:.0}/s then {:.0}/s then {:.0}/s, {} s each",
        args.groups, args.base_rate, args.rate, args.base_rate, args.phase
    );
    let (groups, seats) =
        setup::groups_of_members(&target, &sources, "admission", args.groups, args.members, None).await?;
    let seats = setup::join_all(&groups, seats).await?;
    let senders_count = groups.len().max(1) as f64;
    let shared = Arc::new(Shared {
        phases: Default::default(),
        current: AtomicUsize::new(0),
        settled: Default::default(),
        unacked: AtomicU64::new(0),
        base_per_sender: args.base_rate / senders_count,
        overload_per_sender: args.rate / senders_count,
        body_bytes: args.body_bytes,
    });
    let (phase_tx, phase_rx) = watch::channel(Phase::Normal);
    let mut senders = tokio::task::JoinSet::new();
    let mut listeners = Vec::new();
    for (g, block) in seats.into_iter().enumerate() {
        for (i, seat) in block.into_iter().enumerate() {
            if i == 0 {
                senders.spawn(sender(seat.socket, groups[g], g, shared.clone(), phase_rx.clone()));
            } else {
                listeners.push(tokio::spawn(listen(seat.socket)));
            }
        }
    }

    // The phases, sampling the node every second.
    let mut timeline: Vec<Value> = Vec::new();
    let mut rss: Vec<Vec<u64>> = vec![Vec::new(); PHASES.len()];
    let mut held: Vec<Vec<u64>> = vec![Vec::new(); PHASES.len()];
    let started = Instant::now();
    let mut phase_seconds = [args.phase; 3];
    let mut backlog_drained_after = None;
    // Recovery's backlog has drained when no more is unacked than a second of base load.
    let settled_backlog = (args.base_rate.ceil() as u64).max(groups.len() as u64);
    for (index, (phase, name)) in PHASES.iter().enumerate() {
        shared.current.store(index, Ordering::SeqCst);
        let _ = phase_tx.send(*phase);
        let phase_start = Instant::now();
        let counts = &shared.phases[index];
        let mut last = (0, 0, 0);
        let mut settled_at: Option<Instant> = None;
        for second in 1.. {
            let tick = phase_start + Duration::from_secs(second);
            let end = match *phase {
                Phase::Recovery => match settled_at {
                    Some(at) => at + Duration::from_secs_f64(args.phase),
                    None => phase_start + Duration::from_secs(120),
                },
                _ => phase_start + Duration::from_secs_f64(args.phase),
            };
            tokio::time::sleep_until(tick.min(end)).await;
            if *phase == Phase::Recovery
                && settled_at.is_none()
                && shared.unacked.load(Ordering::SeqCst) <= settled_backlog
            {
                settled_at = Some(Instant::now());
                backlog_drained_after = Some(phase_start.elapsed().as_secs_f64());
                shared.settled.store(true, Ordering::SeqCst);
                eprintln!(
                    "  recovery: the backlog has drained; {} s more, in which nothing may be refused",
                    args.phase
                );
            }
            let stats = node::stats(args.console).await;
            let node_rss = node::rss_bytes(&stats).unwrap_or(0);
            let node_held = stats.as_ref().and_then(|s| s["sends"]["pending"].as_u64()).unwrap_or(0);
            rss[index].push(node_rss);
            held[index].push(node_held);
            let now = (
                counts.offered.load(Ordering::Relaxed),
                counts.acked.load(Ordering::Relaxed),
                counts.overloaded.load(Ordering::Relaxed),
            );
            eprintln!(
                "  {name:>8} t={:>3}s offered/s={:>7} acked/s={:>7} overloaded/s={:>7} node held={:>6} rss={} MiB",
                started.elapsed().as_secs(),
                now.0 - last.0,
                now.1 - last.1,
                now.2 - last.2,
                node_held,
                node_rss >> 20
            );
            timeline.push(json!({
                "phase": name, "t_s": started.elapsed().as_secs_f64(),
                "offered": now.0 - last.0, "acked": now.1 - last.1, "overloaded": now.2 - last.2,
                "node_sends_held": node_held, "node_rss_bytes": node_rss,
            }));
            last = now;
            if Instant::now() >= end {
                break;
            }
        }
        phase_seconds[index] = phase_start.elapsed().as_secs_f64();
    }
    shared.current.store(PHASES.len(), Ordering::SeqCst);
    let _ = phase_tx.send(Phase::Drain);
    let drain_started = Instant::now();
    eprintln!("  draining: retrying what is not acked yet");

    let mut latency: Vec<Histogram<u64>> = PHASES.iter().map(|_| histogram()).collect();
    let (mut gapless, mut checked, mut messages, mut unacked, mut acked_twice) = (0, 0, 0, 0, 0);
    let mut drained = true;
    let deadline = Instant::now() + Duration::from_secs(120);
    while let Ok(Some(done)) = tokio::time::timeout_at(deadline, senders.join_next()).await {
        let Ok(mut result) = done else { continue };
        for (total, h) in latency.iter_mut().zip(&result.latency) {
            let _ = total.add(h);
        }
        result.seqs.sort_unstable();
        checked += 1;
        if result.seqs.iter().enumerate().all(|(i, &s)| s == i as u64 + 1) {
            gapless += 1;
        }
        messages += result.messages;
        unacked += result.unacked;
        acked_twice += result.acked_twice;
    }
    if !senders.is_empty() {
        drained = false;
        senders.abort_all();
    }
    let _ = phase_tx.send(Phase::Done);
    for l in listeners {
        l.abort();
    }

    let phase_results: Vec<Value> = PHASES
        .iter()
        .enumerate()
        .map(|(i, (_, name))| {
            let c = &shared.phases[i];
            let per_second = |n: &AtomicU64| (n.load(Ordering::Relaxed) as f64 / phase_seconds[i]).round();
            json!({
                "phase": name,
                "seconds": phase_seconds[i],
                "offered_per_second": per_second(&c.offered),
                "acked_per_second": per_second(&c.acked),
                "overloaded_per_second": per_second(&c.overloaded),
                "overloaded": c.overloaded.load(Ordering::Relaxed),
                "overloaded_after_backlog_drained": c.overloaded_settled.load(Ordering::Relaxed),
                "refused_after_backlog_drained": c.refused_settled.load(Ordering::Relaxed),
                "overloaded_without_retry_after": c.overloaded_without_retry_after.load(Ordering::Relaxed),
                "rate_limited": c.rate_limited.load(Ordering::Relaxed),
                "unavailable": c.unavailable.load(Ordering::Relaxed),
                "other_errors": c.other_errors.load(Ordering::Relaxed),
                "first_attempt_to_ack_latency": latency_summary(&latency[i]),
                "node_rss_max_bytes": rss[i].iter().max(),
                "node_sends_held_max": held[i].iter().max(),
            })
        })
        .collect();
    let normal_rss = rss[0].iter().copied().max().unwrap_or(0);
    let overload_rss = rss[1].iter().copied().max().unwrap_or(0);
    let refused_under_overload = shared.phases[1].overloaded.load(Ordering::Relaxed) > 0;
    let recovered = backlog_drained_after.is_some() && shared.phases[2].overloaded_settled.load(Ordering::Relaxed) == 0;
    let other_errors: u64 = shared.phases.iter().map(|c| c.other_errors.load(Ordering::Relaxed)).sum();
    let results = json!({
        "phases": phase_results,
        "messages": messages,
        "unacked_after_drain": unacked,
        "acked_twice": acked_twice,
        "groups_with_gapless_acked_seqs": gapless,
        "groups_checked": checked,
        "drained": drained,
        "drain_seconds": drain_started.elapsed().as_secs_f64(),
        "other_errors": other_errors,
        "refused_under_overload": refused_under_overload,
        "recovered": recovered,
        // Retries still refused while draining (counted apart from the three phases).
        "overloaded_while_draining": shared.phases[3].overloaded.load(Ordering::Relaxed),
        "backlog_drained_after_seconds": backlog_drained_after,
        "node_rss_growth_under_overload_bytes": overload_rss.saturating_sub(normal_rss),
        "timeline": timeline,
    });
    let parameters = json!({
        "url": args.url, "groups": args.groups, "members": args.members, "base_rate": args.base_rate,
        "rate": args.rate, "phase_s": args.phase, "body_bytes": args.body_bytes, "sources": args.sources,
    });
    let mut lines: Vec<String> = phase_results
        .iter()
        .map(|p| {
            format!(
                "{:>8}: offered/s {} acked/s {} overloaded/s {}; first attempt to ack p50 {} p99 {} ms; node held max {}, RSS max {} MiB",
                p["phase"].as_str().unwrap_or("?"),
                p["offered_per_second"],
                p["acked_per_second"],
                p["overloaded_per_second"],
                p["first_attempt_to_ack_latency"]["p50_ms"],
                p["first_attempt_to_ack_latency"]["p99_ms"],
                p["node_sends_held_max"],
                p["node_rss_max_bytes"].as_u64().unwrap_or(0) >> 20,
            )
        })
        .collect();
    lines.push(format!(
        "refused under overload: {}; node RSS grew {} MiB past normal; backlog drained {} s into recovery, then recovered (nothing refused): {}",
        if refused_under_overload { "yes" } else { "NO" },
        overload_rss.saturating_sub(normal_rss) >> 20,
        backlog_drained_after.map_or("never".into(), |s| format!("{s:.1}")),
        if recovered { "yes" } else { "NO" },
    ));
    lines.push(format!(
        "{messages} messages, {unacked} never acked, {acked_twice} acked twice, {gapless} of {checked} groups with seqs exactly 1..N, {other_errors} other errors"
    ));
    let pictures = vec![
        ("latency", report::latency_svg(&latency[1], "admission: first attempt to ack, overload phase")),
        (
            "throughput",
            report::timeline_svg(
                &timeline.iter().map(|t| t["acked"].as_f64().unwrap_or(0.0)).collect::<Vec<_>>(),
                "acked sends per second (normal, overload, recovery)",
                "acks/s",
            ),
        ),
    ];
    Report {
        scenario: "admission",
        parameters,
        results,
        node: node::stats(args.console).await,
        summary: lines,
        pictures,
    }
    .finish(args.out.as_deref())
    .map_err(|e| LoadError::Connection(e.to_string()))
}

async fn listen(mut ws: Socket) {
    while let Some(Ok(_)) = ws.next().await {}
}

/// One message of a sender.
struct Outgoing {
    client_msg_id: String,
    body: String,
    first_sent: u64,
    phase: usize,
    seq: Option<u64>,
    /// `overloaded` answers so far: each doubles the wait, as PROTOCOL.md asks.
    refusals: u32,
}

/// Sends open-loop at its phase's rate, retries refusals when told, and checks its acks.
async fn sender(
    mut ws: Socket,
    group: u64,
    index: usize,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
) -> SenderResult {
    let mut messages: Vec<Outgoing> = Vec::new();
    let mut in_flight: HashMap<u64, usize> = HashMap::new();
    let mut retries: BinaryHeap<Reverse<(Instant, usize)>> = BinaryHeap::new();
    let mut latency: Vec<Histogram<u64>> = PHASES.iter().map(|_| histogram()).collect();
    let mut acked_twice = 0;
    let mut next_id = 100u64;
    let mut credit = 0.0;
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // Spread the senders over one tick so they do not all fire at once.
    tokio::time::sleep(TICK.mul_f64((index % 16) as f64 / 16.0)).await;
    let mut last_tick = Instant::now();
    let mut unacked = 0usize;
    loop {
        let current = *phase.borrow();
        if current == Phase::Done {
            break;
        }
        if current == Phase::Drain && unacked == 0 {
            break;
        }
        tokio::select! {
            _ = ticker.tick() => {
                let now = Instant::now();
                let elapsed = now.duration_since(last_tick).as_secs_f64();
                last_tick = now;
                let rate = match current {
                    Phase::Normal | Phase::Recovery => shared.base_per_sender,
                    Phase::Overload => shared.overload_per_sender,
                    _ => 0.0,
                };
                credit += rate * elapsed;
                let phase_index = shared.current.load(Ordering::Relaxed).min(PHASES.len() - 1);
                let mut due = Vec::new();
                while credit >= 1.0 {
                    credit -= 1.0;
                    let n = messages.len();
                    messages.push(Outgoing {
                        client_msg_id: format!("o{index}-{n}"),
                        body: timed_body(now_micros(), shared.body_bytes),
                        first_sent: now_micros(),
                        phase: phase_index,
                        seq: None,
                        refusals: 0,
                    });
                    shared.phases[phase_index].offered.fetch_add(1, Ordering::Relaxed);
                    unacked += 1;
                    shared.unacked.fetch_add(1, Ordering::Relaxed);
                    due.push(n);
                }
                while let Some(Reverse((at, n))) = retries.peek().copied() {
                    if at > now {
                        break;
                    }
                    retries.pop();
                    due.push(n);
                }
                for n in due {
                    next_id += 1;
                    let m = &messages[n];
                    let frame = format!(
                        r#"{{"id":{next_id},"op":"send","group":{group},"client_msg_id":"{}","type":"text","body":"{}"}}"#,
                        m.client_msg_id, m.body
                    );
                    in_flight.insert(next_id, n);
                    if ws.feed(Message::Text(frame.into())).await.is_err() {
                        return finish(messages, latency, acked_twice);
                    }
                }
                if ws.flush().await.is_err() {
                    return finish(messages, latency, acked_twice);
                }
            }
            frame = ws.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(_)) => continue,
                    _ => return finish(messages, latency, acked_twice),
                };
                let Ok(events) = decode_frame(text.as_str()) else { continue };
                let now = now_micros();
                let counts = &shared.phases[shared.current.load(Ordering::Relaxed).min(3)];
                for event in events {
                    let Some(n) = event.id.and_then(|id| in_flight.remove(&id)) else { continue };
                    if event.event == "reply" {
                        let Some(ack) = event.result.and_then(|r| serde_json::from_str::<Ack>(r.get()).ok()) else { continue };
                        let m = &mut messages[n];
                        if m.seq.is_some() {
                            acked_twice += 1;
                            continue;
                        }
                        // A duplicate ack is fine only for a message retried after an
                        // answer that was lost; this scenario loses none, so count it.
                        if ack.duplicate {
                            acked_twice += 1;
                        }
                        m.seq = Some(ack.seq);
                        unacked -= 1;
                        shared.unacked.fetch_sub(1, Ordering::Relaxed);
                        counts.acked.fetch_add(1, Ordering::Relaxed);
                        report::record(&mut latency[m.phase], now.saturating_sub(m.first_sent));
                        continue;
                    }
                    let code = event.code.as_deref().unwrap_or("");
                    let wait = match code {
                        "overloaded" => {
                            counts.overloaded.fetch_add(1, Ordering::Relaxed);
                            if shared.settled.load(Ordering::Relaxed) {
                                counts.overloaded_settled.fetch_add(1, Ordering::Relaxed);
                            }
                            if event.retry_after_ms.is_none() {
                                counts.overloaded_without_retry_after.fetch_add(1, Ordering::Relaxed);
                            }
                            let m = &mut messages[n];
                            m.refusals += 1;
                            (event.retry_after_ms.unwrap_or(200) << (m.refusals - 1).min(6)).min(30_000)
                        }
                        "rate_limited" => {
                            counts.rate_limited.fetch_add(1, Ordering::Relaxed);
                            event.retry_after_ms.unwrap_or(200)
                        }
                        "unavailable" => {
                            counts.unavailable.fetch_add(1, Ordering::Relaxed);
                            100
                        }
                        _ => {
                            counts.other_errors.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    };
                    if shared.settled.load(Ordering::Relaxed) {
                        counts.refused_settled.fetch_add(1, Ordering::Relaxed);
                    }
                    // Jitter up to half the wait, so refused senders do not return in step.
                    let jitter = rand::random_range(0..=wait / 2);
                    retries.push(Reverse((Instant::now() + Duration::from_millis(wait + jitter), n)));
                }
            }
            changed = phase.changed() => {
                if changed.is_err() {
                    break;
                }
            }
        }
    }
    finish(messages, latency, acked_twice)
}

fn finish(messages: Vec<Outgoing>, latency: Vec<Histogram<u64>>, acked_twice: u64) -> SenderResult {
    SenderResult {
        latency,
        seqs: messages.iter().filter_map(|m| m.seq).collect(),
        messages: messages.len() as u64,
        unacked: messages.iter().filter(|m| m.seq.is_none()).count() as u64,
        acked_twice,
    }
}
