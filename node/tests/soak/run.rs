//! Shared state: what the tasks share and count, and how the run is watched.

use crate::Knobs;
use crate::cast::Cast;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::sync::{RwLock, watch};
use tokio::time::Instant;

/// What an ack named.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ack {
    pub(crate) group: usize,
    pub(crate) seq: u64,
    pub(crate) sender: u64,
    /// The text sent (None for a red packet).
    pub(crate) body: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Packet {
    pub(crate) id: u64,
    pub(crate) group: usize,
    pub(crate) total: i64,
    pub(crate) count: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) acked_texts: AtomicU64,
    pub(crate) acked_packets: AtomicU64,
    pub(crate) resends: AtomicU64,
    pub(crate) duplicate_acks: AtomicU64,
    pub(crate) transient_retries: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) connections: AtomicU64,
    pub(crate) kills: AtomicU64,
    /// From each kill to the restarted node's ready line, summed.
    pub(crate) down_ms: AtomicU64,
    pub(crate) live: AtomicU64,
    pub(crate) via_sync: AtomicU64,
    pub(crate) via_history: AtomicU64,
    pub(crate) live_gaps: AtomicU64,
    pub(crate) grabs_won: AtomicU64,
    pub(crate) grabs_empty: AtomicU64,
    pub(crate) grabs_expired: AtomicU64,
    pub(crate) lost_grab_replies: AtomicU64,
    pub(crate) regrabs: AtomicU64,
    pub(crate) money_checks: AtomicU64,
}

/// Everything the tasks share.
pub(crate) struct Run {
    pub(crate) knobs: Knobs,
    pub(crate) cast: Cast,
    /// The node's WebSocket URL: it changes with every restart (ports are ephemeral).
    pub(crate) endpoint: watch::Receiver<String>,
    /// Red packet requests hold it for reading until they are answered; the money check
    /// holds it for writing, so it sees no money on the move.
    pub(crate) gate: RwLock<()>,
    /// Text messages taken by the senders, in all.
    taken: AtomicU64,
    pacer: Mutex<Instant>,
    pub(crate) texts_done: AtomicBool,
    pub(crate) packets_done: AtomicBool,
    pub(crate) judging: AtomicBool,
    pub(crate) acks: Mutex<HashMap<String, Ack>>,
    pub(crate) packets: Mutex<Vec<Vec<Packet>>>,
    /// Each answered grab, by (packet, user): the amount, or None (empty or expired).
    pub(crate) grabs: Mutex<HashMap<(u64, u64), Option<i64>>>,
    /// Per group: the last seq of the log, once the run is over.
    pub(crate) finish: Vec<watch::Sender<Option<u64>>>,
    pub(crate) counters: Counters,
    pub(crate) violations: Mutex<Vec<String>>,
}

impl Run {
    pub(crate) fn new(knobs: Knobs, endpoint: watch::Receiver<String>, cast: Cast) -> Run {
        let groups = knobs.groups;
        Run {
            knobs,
            cast,
            endpoint,
            gate: RwLock::new(()),
            taken: AtomicU64::new(0),
            pacer: Mutex::new(Instant::now()),
            texts_done: AtomicBool::new(false),
            packets_done: AtomicBool::new(false),
            judging: AtomicBool::new(false),
            acks: Mutex::default(),
            packets: Mutex::new(vec![Vec::new(); groups]),
            grabs: Mutex::default(),
            finish: (0..groups).map(|_| watch::channel(None).0).collect(),
            counters: Counters::default(),
            violations: Mutex::default(),
        }
    }

    pub(crate) fn violation(&self, what: String) {
        eprintln!("soak VIOLATION: {what}");
        self.violations.lock().unwrap().push(what);
    }

    /// Takes one of the `SOAK_MESSAGES` text messages: the time it may be sent (paced to
    /// `SOAK_RATE`), or None once all are taken.
    pub(crate) fn take_text(&self) -> Option<Instant> {
        if self.taken.fetch_add(1, Relaxed) >= self.knobs.messages {
            return None;
        }
        if self.knobs.rate <= 0.0 {
            return Some(Instant::now());
        }
        let mut next = self.pacer.lock().unwrap();
        let slot = (*next).max(Instant::now());
        *next = slot + Duration::from_secs_f64(1.0 / self.knobs.rate);
        Some(slot)
    }

    pub(crate) fn record_ack(&self, client_msg_id: &str, ack: Ack) {
        let mut acks = self.acks.lock().unwrap();
        match acks.get(client_msg_id) {
            Some(before) if *before != ack => {
                let what = format!("{client_msg_id} acked twice, differently: {before:?} then {ack:?}");
                drop(acks);
                self.violation(what);
            }
            Some(_) => {}
            None => {
                acks.insert(client_msg_id.to_owned(), ack);
            }
        }
    }
}

/// Runs `work` while watching for violations and the deadline: the run stops at the first
/// (once the verdict is being drawn, violations wait for the summary).
pub(crate) async fn supervise<T>(run: &Run, started: Instant, work: impl Future<Output = T>) -> T {
    tokio::pin!(work);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tick.tick() => {
                let violations = run.violations.lock().unwrap().clone();
                let judging = run.judging.load(Relaxed);
                assert!(judging || violations.is_empty(), "{} violations:\n{}", violations.len(), violations.join("\n"));
                assert!(
                    started.elapsed() < run.knobs.deadline,
                    "the soak is past SOAK_DEADLINE_S ({:?}): {} texts acked, {} kills",
                    run.knobs.deadline,
                    run.counters.acked_texts.load(Relaxed),
                    run.counters.kills.load(Relaxed),
                );
            }
        }
    }
}

/// splitmix64: reproducible from `SOAK_SEED`, and no dependency.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64, stream: u64) -> Rng {
        Rng(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}
