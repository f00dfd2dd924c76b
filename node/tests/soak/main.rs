//! Crash safety soak: senders pipeline messages and members grab red packets while the node
//! is killed with SIGKILL every few seconds and restarted on the same data directory.
//! Clients reconnect, resend what was not acked with the same `client_msg_id`, and resync
//! by seq (PROTOCOL.md §6.1). After every restart money must sum exactly; at the end every
//! acked message is in the log once, at the seq its ack named, the log has no gap, and every
//! receiver's view equals it.
//!
//! The defaults are sized for CI (4,000 messages at 250/s, a kill every 2 s: about 20 s in
//! a debug build). The same test is the long soak with other knobs (environment variables,
//! not `TROUPE_...`, which the node would refuse):
//!
//! ```sh
//! SOAK_MESSAGES=100000 SOAK_KILL_EVERY_MS=10000 SOAK_RATE=100 SOAK_PACKETS=400 \
//!   SOAK_PACKET_EVERY_MS=2500 SOAK_PACKET_TTL_MS=20000 \
//!   cargo test -p troupe --test soak -- --nocapture
//! ```
//!
//! | knob | default | meaning |
//! |---|---|---|
//! | `SOAK_MESSAGES` | 4000 | text messages to get acked, in all |
//! | `SOAK_KILL_EVERY_MS` | 2000 | from one restart to the next `kill -9` |
//! | `SOAK_RATE` | 250 | new text messages per second, in all; 0: as fast as acks come |
//! | `SOAK_GROUPS` | 3 | groups |
//! | `SOAK_SENDERS` | 2 | text senders per group |
//! | `SOAK_RECEIVERS` | 2 | receivers per group (they only read) |
//! | `SOAK_WINDOW` | 32 | sends each sender keeps in flight, at most |
//! | `SOAK_GRABBERS` | 4 | members per group who grab every red packet |
//! | `SOAK_PACKETS` | 40 | red packets per group, at most (below 499: a sender's whole ledger must fit one `wallet` page) |
//! | `SOAK_PACKET_EVERY_MS` | 300 | pause between one group's red packets |
//! | `SOAK_PACKET_TTL_MS` | 2000 | red packet lifetime (`actors.red_packet_ttl`) |
//! | `SOAK_DEDUPE_CACHE` | 8 | `actors.dedupe_cache_per_group`: small, so that resends beyond the newest few are recognised by the store |
//! | `SOAK_SEED` | the clock | the packets' sizes, the bodies' padding, the receivers' backoff |
//! | `SOAK_DEADLINE_S` | 300 + twice the sending time | the run fails if it takes longer |

#[path = "../common/mod.rs"]
mod common;

mod cast;
mod clients;
mod killer;
mod money;
mod packets;
mod receivers;
mod run;
mod texts;
mod verdict;

use cast::Cast;
use clients::Session;
use common::*;
use killer::{crash, kill_and_restart};
use money::{WALLET_PAGE, check_money};
use packets::{grab_packets, send_packets};
use receivers::receive;
use run::{Run, supervise};
use std::fmt::Display;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use texts::send_texts;
use tokio::sync::watch;
use tokio::time::Instant;
use verdict::{judge_logs, judge_view, print_summary, read_log};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_every_few_seconds_loses_no_acked_message_and_no_money() {
    let knobs = Knobs::from_env();
    eprintln!("soak: {knobs:?}");
    let started = Instant::now();
    let ttl = format!("{}", knobs.packet_ttl.as_secs_f64());
    let dedupe = knobs.dedupe_cache.to_string();
    let node = TestNode::start_with_env(&[
        ("TROUPE_ACTORS__RED_PACKET_TTL", ttl.as_str()),
        ("TROUPE_ACTORS__RED_PACKET_SWEEP_INTERVAL", "0.2"),
        ("TROUPE_ACTORS__RED_PACKET_CHECK_AFTER", "1"),
        ("TROUPE_ACTORS__DEDUPE_CACHE_PER_GROUP", dedupe.as_str()),
    ])
    .await;
    let (endpoint_tx, endpoint) = watch::channel(node.url.clone());
    let cast = Cast::sign_up(&node, &knobs).await;
    let run = Arc::new(Run::new(knobs, endpoint, cast));

    let mut receivers = Vec::new();
    let mut texts = tokio::task::JoinSet::new();
    let mut packet_senders = tokio::task::JoinSet::new();
    let mut grabbers = tokio::task::JoinSet::new();
    for (g, group) in run.cast.groups.iter().enumerate() {
        for user in &group.receivers {
            receivers.push(tokio::spawn(receive(run.clone(), g, user.clone())));
        }
        for (s, user) in group.senders.iter().enumerate() {
            texts.spawn(send_texts(run.clone(), g, s, user.clone()));
        }
        packet_senders.spawn(send_packets(run.clone(), g, group.packet_sender.clone()));
        for user in &group.grabbers {
            grabbers.spawn(grab_packets(run.clone(), g, user.clone()));
        }
    }
    let (stop_killer, stopped) = watch::channel(false);
    let killer = tokio::spawn(kill_and_restart(run.clone(), node, endpoint_tx, stopped, started));

    supervise(&run, started, async {
        while let Some(done) = texts.join_next().await {
            done.expect("a text sender panicked");
        }
        run.texts_done.store(true, Relaxed);
        while let Some(done) = packet_senders.join_next().await {
            done.expect("a red packet sender panicked");
        }
        run.packets_done.store(true, Relaxed);
        while let Some(done) = grabbers.join_next().await {
            done.expect("a grabber panicked");
        }
    })
    .await;
    stop_killer.send(true).expect("the killer runs");
    let (mut node, endpoint_tx, mut checked) =
        supervise(&run, started, async { killer.await.expect("the killer panicked") }).await;

    // One last crash, then everything is read from the node that recovered from it.
    crash(&run, &mut node, &endpoint_tx).await;
    let mut auditor = Session::new(run.clone(), run.cast.owner.token.clone());
    let mut logs = Vec::new();
    for group in &run.cast.groups {
        logs.push(read_log(&mut auditor, group.id).await);
    }
    run.judging.store(true, Relaxed);
    let verdict = judge_logs(&run, &logs);
    for (g, log) in logs.iter().enumerate() {
        run.finish[g].send_replace(Some(log.len() as u64));
    }
    let mut views = Vec::new();
    for receiver in receivers {
        views.push(supervise(&run, started, async { receiver.await.expect("a receiver panicked") }).await);
    }
    for view in &views {
        judge_view(&run, view, &logs[view.group]);
    }
    let money = check_money(&run, &node, &mut checked, true).await;
    print_summary(&run, &verdict, &views, &money, started.elapsed());

    let violations = run.violations.lock().unwrap().clone();
    assert!(violations.is_empty(), "{} violations:\n{}", violations.len(), violations.join("\n"));
    assert_eq!((verdict.lost, verdict.duplicated, verdict.gaps), (0, 0, 0));
    let texts = run.counters.acked_texts.load(Relaxed);
    assert!(texts >= run.knobs.messages, "{texts} text messages acked, wanted {}", run.knobs.messages);
}

// ---- knobs -------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Knobs {
    messages: u64,
    kill_every: Duration,
    rate: f64,
    groups: usize,
    senders: usize,
    receivers: usize,
    window: usize,
    grabbers: usize,
    packets: usize,
    packet_every: Duration,
    packet_ttl: Duration,
    dedupe_cache: usize,
    seed: u64,
    deadline: Duration,
}

impl Knobs {
    fn from_env() -> Knobs {
        let clock = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
        let mut knobs = Knobs {
            messages: knob("SOAK_MESSAGES", 4_000),
            kill_every: Duration::from_millis(knob("SOAK_KILL_EVERY_MS", 2_000)),
            rate: knob("SOAK_RATE", 250.0),
            groups: knob("SOAK_GROUPS", 3),
            senders: knob("SOAK_SENDERS", 2),
            receivers: knob("SOAK_RECEIVERS", 2),
            window: knob("SOAK_WINDOW", 32),
            grabbers: knob("SOAK_GRABBERS", 4),
            packets: knob("SOAK_PACKETS", 40),
            packet_every: Duration::from_millis(knob("SOAK_PACKET_EVERY_MS", 300)),
            packet_ttl: Duration::from_millis(knob("SOAK_PACKET_TTL_MS", 2_000)),
            dedupe_cache: knob("SOAK_DEDUPE_CACHE", 8),
            seed: knob("SOAK_SEED", clock),
            deadline: Duration::ZERO,
        };
        let sending = if knobs.rate > 0.0 { knobs.messages as f64 / knobs.rate } else { 0.0 };
        knobs.deadline = Duration::from_secs(knob("SOAK_DEADLINE_S", 300 + 2 * sending as u64));
        // A packet's debit, and maybe its refund, are two entries on its sender's ledger,
        // which the money check reads whole from one `wallet` page.
        assert!(1 + 2 * knobs.packets < WALLET_PAGE, "SOAK_PACKETS must be at most {}", (WALLET_PAGE - 2) / 2);
        assert!(knobs.groups >= 1 && knobs.senders >= 1 && knobs.window >= 1, "{knobs:?}");
        knobs
    }
}

fn knob<T: FromStr>(name: &str, default: T) -> T
where
    T::Err: Display,
{
    match std::env::var(name) {
        Ok(value) => value.parse().unwrap_or_else(|e| panic!("{name}={value}: {e}")),
        Err(_) => default,
    }
}
