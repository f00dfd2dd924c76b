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

mod common;

use common::*;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt::Display;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{RwLock, oneshot, watch};
use tokio::time::Instant;

/// How long a request may go unanswered before its connection counts as lost.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client keeps trying to reconnect before the run fails.
const RECONNECT_DEADLINE: Duration = Duration::from_secs(60);
/// The pause between two connection attempts.
const RECONNECT_PAUSE: Duration = Duration::from_millis(50);
/// How long the money check waits for the red packet requests under way to be answered.
const GATE_DEADLINE: Duration = Duration::from_secs(60);
/// The longest a receiver waits before it reconnects.
const RECEIVER_BACKOFF_MS: u64 = 1_000;
/// What each red packet sender is credited with at the start.
const FUNDING: i64 = 1_000_000;
/// The ledger entries the `wallet` op shows (PROTOCOL.md: the first 1000).
const WALLET_PAGE: usize = 1000;

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

// ---- knobs and shared state ---------------------------------------------------------------

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

#[derive(Debug, Clone)]
struct User {
    id: u64,
    token: String,
}

/// The users and groups of the run, made before the first kill.
struct Cast {
    /// Creates the groups and reads everything at the end.
    owner: User,
    groups: Vec<CastGroup>,
}

struct CastGroup {
    id: u64,
    senders: Vec<User>,
    receivers: Vec<User>,
    packet_sender: User,
    grabbers: Vec<User>,
}

impl Cast {
    async fn sign_up(node: &TestNode, knobs: &Knobs) -> Cast {
        let (owner_client, owner_id, owner_token) = node.user_with_token("owner").await;
        let mut groups = Vec::new();
        for g in 0..knobs.groups {
            let id = create_group(&owner_client, &format!("soak {g}"), true).await;
            let mut senders = Vec::new();
            for _ in 0..knobs.senders {
                senders.push(member(node, id, &format!("g{g}sender")).await);
            }
            let mut receivers = Vec::new();
            for _ in 0..knobs.receivers {
                receivers.push(member(node, id, &format!("g{g}receiver")).await);
            }
            let packet_sender = member(node, id, &format!("g{g}packets")).await;
            let mut grabbers = Vec::new();
            for _ in 0..knobs.grabbers {
                grabbers.push(member(node, id, &format!("g{g}grabber")).await);
            }
            let answer = node.console(&format!("credit {} {FUNDING} soak-{g}", packet_sender.id)).await;
            assert_eq!(answer["credited"], FUNDING, "{answer}");
            groups.push(CastGroup { id, senders, receivers, packet_sender, grabbers });
        }
        owner_client.close().await;
        Cast { owner: User { id: owner_id, token: owner_token }, groups }
    }

    /// Everyone, once.
    fn everyone(&self) -> Vec<&User> {
        let mut all = vec![&self.owner];
        for group in &self.groups {
            all.extend(group.senders.iter().chain(&group.receivers).chain(&group.grabbers));
            all.push(&group.packet_sender);
        }
        all
    }
}

/// A new user who joins the group.
async fn member(node: &TestNode, group: u64, prefix: &str) -> User {
    let (client, id, token) = node.user_with_token(prefix).await;
    client.request("join", json!({ "group": group })).await.expect("join");
    client.close().await;
    User { id, token }
}

/// What an ack named.
#[derive(Debug, Clone, PartialEq)]
struct Ack {
    group: usize,
    seq: u64,
    sender: u64,
    /// The text sent (None for a red packet).
    body: Option<String>,
}

#[derive(Debug, Clone)]
struct Packet {
    id: u64,
    group: usize,
    total: i64,
    count: u64,
}

#[derive(Default)]
struct Counters {
    acked_texts: AtomicU64,
    acked_packets: AtomicU64,
    resends: AtomicU64,
    duplicate_acks: AtomicU64,
    transient_retries: AtomicU64,
    timeouts: AtomicU64,
    connections: AtomicU64,
    kills: AtomicU64,
    /// From each kill to the restarted node's ready line, summed.
    down_ms: AtomicU64,
    live: AtomicU64,
    via_sync: AtomicU64,
    via_history: AtomicU64,
    live_gaps: AtomicU64,
    grabs_won: AtomicU64,
    grabs_empty: AtomicU64,
    grabs_expired: AtomicU64,
    lost_grab_replies: AtomicU64,
    regrabs: AtomicU64,
    money_checks: AtomicU64,
}

/// Everything the tasks share.
struct Run {
    knobs: Knobs,
    cast: Cast,
    /// The node's WebSocket URL: it changes with every restart (ports are ephemeral).
    endpoint: watch::Receiver<String>,
    /// Red packet requests hold it for reading until they are answered; the money check
    /// holds it for writing, so it sees no money on the move.
    gate: RwLock<()>,
    /// Text messages taken by the senders, in all.
    taken: AtomicU64,
    pacer: Mutex<Instant>,
    texts_done: AtomicBool,
    packets_done: AtomicBool,
    judging: AtomicBool,
    acks: Mutex<HashMap<String, Ack>>,
    packets: Mutex<Vec<Vec<Packet>>>,
    /// Each answered grab, by (packet, user): the amount, or None (empty or expired).
    grabs: Mutex<HashMap<(u64, u64), Option<i64>>>,
    /// Per group: the last seq of the log, once the run is over.
    finish: Vec<watch::Sender<Option<u64>>>,
    counters: Counters,
    violations: Mutex<Vec<String>>,
}

impl Run {
    fn new(knobs: Knobs, endpoint: watch::Receiver<String>, cast: Cast) -> Run {
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

    fn violation(&self, what: String) {
        eprintln!("soak VIOLATION: {what}");
        self.violations.lock().unwrap().push(what);
    }

    /// Takes one of the `SOAK_MESSAGES` text messages: the time it may be sent (paced to
    /// `SOAK_RATE`), or None once all are taken.
    fn take_text(&self) -> Option<Instant> {
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

    fn record_ack(&self, client_msg_id: &str, ack: Ack) {
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
async fn supervise<T>(run: &Run, started: Instant, work: impl Future<Output = T>) -> T {
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
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Rng {
        Rng(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

// ---- connections that come back --------------------------------------------------------

/// Why a request got no result.
enum Failure {
    /// The connection is gone or silent: reconnect and ask again.
    Lost,
    /// `unavailable` or `rate_limited`: ask again after the pause.
    Transient(Duration),
    /// Any other error: the request was refused.
    Refused(ClientError),
}

type Reply = oneshot::Receiver<Result<Value, ClientError>>;

/// Sends a request without waiting for its reply.
async fn start(client: &Client, op: &str, fields: Value) -> Result<Reply, Failure> {
    let reply = client.start_request(op, fields).await.map_err(|_| Failure::Lost)?;
    // A request written just after the read side saw the socket close would wait for
    // nothing: the client forgets pending requests once, when it sees the close.
    if client.closed(Duration::ZERO).await.is_some() {
        return Err(Failure::Lost);
    }
    Ok(reply)
}

/// Waits for a reply.
async fn wait(run: &Run, reply: Reply) -> Result<Value, Failure> {
    match tokio::time::timeout(REQUEST_TIMEOUT, reply).await {
        Err(_) => {
            run.counters.timeouts.fetch_add(1, Relaxed);
            Err(Failure::Lost)
        }
        Ok(Err(_)) => Err(Failure::Lost),
        Ok(Ok(Ok(result))) => Ok(result),
        Ok(Ok(Err(error))) => Err(match &error {
            ClientError::Server { code, retry_after_ms, .. } if code == "rate_limited" => {
                Failure::Transient(Duration::from_millis(retry_after_ms.unwrap_or(100)))
            }
            ClientError::Server { code, .. } if code == "unavailable" => Failure::Transient(Duration::from_millis(50)),
            ClientError::Server { .. } => Failure::Refused(error),
            _ => Failure::Lost,
        }),
    }
}

/// Closes a connection, which may be dead already.
async fn hang_up(client: &Client) {
    let _ = tokio::time::timeout(Duration::from_secs(1), client.close()).await;
}

async fn call(run: &Run, client: &Client, op: &str, fields: Value) -> Result<Value, Failure> {
    let reply = start(client, op, fields).await?;
    wait(run, reply).await
}

/// A new connection to wherever the node is now, authenticated with the token.
async fn connect(run: &Run, token: &str) -> Client {
    let deadline = Instant::now() + RECONNECT_DEADLINE;
    loop {
        let url = run.endpoint.borrow().clone();
        if let Ok(Ok(client)) = tokio::time::timeout(Duration::from_secs(5), Client::connect(&url)).await {
            match call(run, &client, "auth", json!({ "token": token })).await {
                Ok(_) => {
                    run.counters.connections.fetch_add(1, Relaxed);
                    return client;
                }
                Err(Failure::Refused(error)) if error.code() != Some("too_many_connections") => {
                    panic!("auth with a session token failed after a restart: {error}")
                }
                Err(_) => hang_up(&client).await,
            }
        }
        assert!(Instant::now() < deadline, "could not reconnect to the node for {RECONNECT_DEADLINE:?}");
        tokio::time::sleep(RECONNECT_PAUSE).await;
    }
}

/// A user's connection that reconnects whenever it is lost and asks again what is
/// transient: for requests that are safe to repeat.
struct Session {
    run: Arc<Run>,
    token: String,
    client: Option<Client>,
}

impl Session {
    fn new(run: Arc<Run>, token: String) -> Session {
        Session { run, token, client: None }
    }

    /// The result, or the refusal, and how many times the request was sent.
    async fn request(&mut self, op: &str, fields: &Value) -> (Result<Value, ClientError>, u32) {
        let mut attempts = 0;
        loop {
            if self.client.is_none() {
                self.client = Some(connect(&self.run, &self.token).await);
            }
            let client = self.client.as_ref().expect("connected");
            attempts += 1;
            match call(&self.run, client, op, fields.clone()).await {
                Ok(result) => return (Ok(result), attempts),
                Err(Failure::Refused(error)) => return (Err(error), attempts),
                Err(Failure::Transient(pause)) => {
                    self.run.counters.transient_retries.fetch_add(1, Relaxed);
                    tokio::time::sleep(pause).await;
                }
                Err(Failure::Lost) => {
                    if let Some(client) = self.client.take() {
                        hang_up(&client).await;
                    }
                }
            }
        }
    }

    /// Like [`Session::request`], for a request that must not be refused.
    async fn must(&mut self, op: &str, fields: &Value) -> Value {
        match self.request(op, fields).await.0 {
            Ok(result) => result,
            Err(error) => panic!("{op} {fields} refused: {error}"),
        }
    }
}

// ---- text senders ------------------------------------------------------------------------

/// One sender: keeps up to `SOAK_WINDOW` sends in flight; after a lost connection,
/// reconnects and sends everything not acked again with the same `client_msg_id`, until
/// all are acked.
async fn send_texts(run: Arc<Run>, g: usize, s: usize, user: User) {
    let pad = Rng::new(run.knobs.seed, (g * 1000 + s) as u64).below(1 << 20);
    let mut sender = TextSender { run: run.clone(), g, s, user, pad, unacked: BTreeMap::new(), queue: VecDeque::new() };
    let mut next = 0u64;
    // The send time of the next new message, once taken.
    let mut slot = run.take_text();
    loop {
        let client = connect(&run, &sender.user.token).await;
        sender.queue = sender.unacked.keys().copied().collect();
        let mut in_flight = FuturesUnordered::new();
        let mut lost = false;
        while !lost {
            // Resends first, then new messages when their time comes.
            let room = in_flight.len() < run.knobs.window;
            let n = if room && let Some(n) = sender.queue.pop_front() {
                Some(n)
            } else {
                let due = slot.filter(|_| room);
                tokio::select! {
                    Some((n, outcome)) = in_flight.next() => {
                        lost = sender.settle(n, outcome).await;
                        None
                    }
                    _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                        slot = run.take_text();
                        next += 1;
                        sender.unacked.insert(next - 1, 0);
                        Some(next - 1)
                    }
                    else => break,
                }
            };
            let Some(n) = n else { continue };
            let fields = sender.fields(n);
            let sent = sender.unacked.get_mut(&n).expect("unacked");
            if *sent > 0 {
                run.counters.resends.fetch_add(1, Relaxed);
            }
            *sent += 1;
            match start(&client, "send", fields).await {
                Ok(reply) => in_flight.push({
                    let run = &run;
                    async move { (n, wait(run, reply).await) }
                }),
                Err(_) => {
                    sender.queue.push_front(n);
                    lost = true;
                }
            }
        }
        // Acks that came before the connection went count; what has none goes again.
        hang_up(&client).await;
        while let Some((n, outcome)) = in_flight.next().await {
            sender.settle(n, outcome).await;
        }
        drop(in_flight);
        if !lost {
            return;
        }
    }
}

/// A text sender's messages: those taken and not acked yet, with how many times each was sent.
struct TextSender {
    run: Arc<Run>,
    g: usize,
    s: usize,
    user: User,
    pad: u64,
    unacked: BTreeMap<u64, u32>,
    /// What waits to be sent again on this connection.
    queue: VecDeque<u64>,
}

impl TextSender {
    fn text(&self, n: u64) -> String {
        format!("soak g{} s{} n{n} {}", self.g, self.s, "x".repeat(((n + self.pad) % 97) as usize))
    }

    fn id(&self, n: u64) -> String {
        format!("g{}s{}-{n}", self.g, self.s)
    }

    fn fields(&self, n: u64) -> Value {
        let group = self.run.cast.groups[self.g].id;
        json!({ "group": group, "client_msg_id": self.id(n), "type": "text", "body": self.text(n) })
    }

    /// Takes a send's outcome; true if the connection is lost.
    async fn settle(&mut self, n: u64, outcome: Result<Value, Failure>) -> bool {
        let run = &self.run;
        let id = self.id(n);
        match outcome {
            Ok(ack) => {
                let Some(sent) = self.unacked.remove(&n) else {
                    run.violation(format!("{id} acked again: {ack}"));
                    return false;
                };
                if ack["duplicate"] == true {
                    run.counters.duplicate_acks.fetch_add(1, Relaxed);
                    if sent == 1 {
                        run.violation(format!("{id} sent once, acked as a duplicate: {ack}"));
                    }
                }
                let Some(seq) = ack["seq"].as_u64() else { panic!("an ack without a seq: {ack}") };
                let ack = Ack { group: self.g, seq, sender: self.user.id, body: Some(self.text(n)) };
                run.record_ack(&id, ack);
                run.counters.acked_texts.fetch_add(1, Relaxed);
                false
            }
            Err(Failure::Transient(pause)) => {
                run.counters.transient_retries.fetch_add(1, Relaxed);
                tokio::time::sleep(pause).await;
                self.queue.push_back(n);
                false
            }
            Err(Failure::Lost) => true,
            Err(Failure::Refused(error)) => {
                run.violation(format!("send {id} refused: {error}"));
                self.unacked.remove(&n);
                false
            }
        }
    }
}

// ---- receivers -------------------------------------------------------------------------

/// What one receiver holds of its group: every message by seq, 1..=last.
struct View {
    group: usize,
    user: u64,
    messages: Vec<Value>,
}

impl View {
    fn last(&self) -> u64 {
        self.messages.len() as u64
    }

    /// Takes a message from a live event, `sync` or `history` (§6.1): a seq held already
    /// must be the same message, the next one is appended. False if it is beyond a gap.
    fn accept(&mut self, run: &Run, message: &Value) -> bool {
        let message = normalized(message);
        let seq = message["seq"].as_u64().expect("seq");
        if seq == 0 || seq > self.last() + 1 {
            return false;
        }
        if seq == self.last() + 1 {
            self.messages.push(message);
        } else if self.messages[seq as usize - 1] != message {
            let held = &self.messages[seq as usize - 1];
            run.violation(format!("receiver {} holds {held} at seq {seq}, the node now says {message}", self.user));
        }
        true
    }
}

/// A message as history shows it (a live event has `"event": "message"` besides).
fn normalized(message: &Value) -> Value {
    let mut message = message.clone();
    if let Some(fields) = message.as_object_mut() {
        fields.remove("event");
    }
    message
}

/// One receiver: records what arrives live, and after every reconnect resyncs with `sync`
/// and `history` (PROTOCOL.md §6.1). Returns its view once it holds the whole log.
async fn receive(run: Arc<Run>, g: usize, user: User) -> View {
    let group = run.cast.groups[g].id;
    let mut view = View { group: g, user: user.id, messages: Vec::new() };
    let mut finish = run.finish[g].subscribe();
    let mut rng = Rng::new(run.knobs.seed, 3_000_000 + user.id);
    let mut first = true;
    loop {
        // Like a phone, come back after a while: messages pile up to resync.
        if !std::mem::take(&mut first) {
            tokio::time::sleep(Duration::from_millis(rng.below(RECEIVER_BACKOFF_MS))).await;
        }
        let client = connect(&run, &user.token).await;
        if resync(&run, &client, group, &mut view).await.is_err() {
            hang_up(&client).await;
            continue;
        }
        // The last seq that arrived live on this connection.
        let mut last_live = None;
        loop {
            let end = *finish.borrow_and_update();
            if end.is_some_and(|end| view.last() >= end) {
                hang_up(&client).await;
                return view;
            }
            let Some(event) = client.next_event(Duration::from_millis(250)).await else {
                if client.closed(Duration::ZERO).await.is_some() {
                    break;
                }
                if finish.borrow().is_some() && catch_up(&run, &client, group, &mut view).await.is_err() {
                    break;
                }
                continue;
            };
            if event["event"] != "message" || event["group"] != group {
                continue;
            }
            let seq = event["seq"].as_u64().expect("seq");
            if let Some(previous) = last_live {
                if seq <= previous {
                    run.violation(format!("receiver {} got seq {seq} live after {previous}", user.id));
                } else if seq > previous + 1 {
                    run.counters.live_gaps.fetch_add(1, Relaxed);
                }
            }
            last_live = Some(seq);
            if seq > view.last() + 1 && catch_up(&run, &client, group, &mut view).await.is_err() {
                break;
            }
            if seq == view.last() + 1 {
                run.counters.live.fetch_add(1, Relaxed);
            }
            if !view.accept(&run, &event) {
                run.violation(format!("receiver {} cannot place seq {seq} after {}", user.id, view.last()));
            }
        }
        hang_up(&client).await;
    }
}

/// After a reconnect: `sync` from the last seq held, then `history` while there is more.
async fn resync(run: &Run, client: &Client, group: u64, view: &mut View) -> Result<(), Failure> {
    let fields = json!({ "groups": [{ "group": group, "after": view.last() }], "limit": 50 });
    let reply = loop {
        match call(run, client, "sync", fields.clone()).await {
            Err(Failure::Transient(pause)) => tokio::time::sleep(pause).await,
            other => break other?,
        }
    };
    let Some(summary) = reply["groups"].as_array().and_then(|groups| groups.iter().find(|s| s["group"] == group))
    else {
        panic!("sync does not list group {group}: {reply}");
    };
    for message in summary["messages"].as_array().expect("messages") {
        let before = view.last();
        if !view.accept(run, message) {
            run.violation(format!("sync after {before} gave seq {} first", message["seq"]));
        }
        if view.last() > before {
            run.counters.via_sync.fetch_add(1, Relaxed);
        }
    }
    if summary["has_more"] == true || summary["last_seq"].as_u64() > Some(view.last()) {
        catch_up(run, client, group, view).await?;
    }
    Ok(())
}

/// Pages `history` after the last seq held until there is no more.
async fn catch_up(run: &Run, client: &Client, group: u64, view: &mut View) -> Result<(), Failure> {
    loop {
        let fields = json!({ "group": group, "after": view.last(), "limit": 100 });
        let page = match call(run, client, "history", fields).await {
            Err(Failure::Transient(pause)) => {
                tokio::time::sleep(pause).await;
                continue;
            }
            other => other?,
        };
        for message in page["messages"].as_array().expect("messages") {
            let before = view.last();
            if !view.accept(run, message) {
                run.violation(format!("history after {before} gave seq {} first", message["seq"]));
            }
            if view.last() > before {
                run.counters.via_history.fetch_add(1, Relaxed);
            }
        }
        if page["has_more"] != true {
            return Ok(());
        }
    }
}

// ---- red packets ------------------------------------------------------------------------

/// One group's red packet sender: a packet every `SOAK_PACKET_EVERY_MS` while text flows,
/// each sent until acked (the same `client_msg_id`), then its id read from its message.
async fn send_packets(run: Arc<Run>, g: usize, user: User) {
    let group = run.cast.groups[g].id;
    let mut rng = Rng::new(run.knobs.seed, 1_000_000 + g as u64);
    let mut session = Session::new(run.clone(), user.token.clone());
    for n in 0..run.knobs.packets {
        tokio::time::sleep(run.knobs.packet_every).await;
        if run.texts_done.load(Relaxed) {
            break;
        }
        let _gate = run.gate.read().await;
        let id = format!("rp{g}-{n}");
        // Sometimes fewer shares than grabbers (some find it empty), sometimes more (the
        // rest is refunded when it expires).
        let count = 1 + rng.below(run.knobs.grabbers as u64 + 2);
        let total = (count + rng.below(1_000)) as i64;
        let kind = if rng.below(2) == 0 { "lucky" } else { "equal" };
        let body = json!({ "total": total, "count": count, "kind": kind, "greeting": "soak" });
        let fields = json!({ "group": group, "client_msg_id": id, "type": "red_packet", "body": body });
        let (ack, attempts) = session.request("send", &fields).await;
        let ack = match ack {
            Ok(ack) => ack,
            Err(error) => {
                run.violation(format!("red packet {id} refused: {error}"));
                continue;
            }
        };
        run.counters.resends.fetch_add(u64::from(attempts - 1), Relaxed);
        if ack["duplicate"] == true {
            run.counters.duplicate_acks.fetch_add(1, Relaxed);
            if attempts == 1 {
                run.violation(format!("{id} sent once, acked as a duplicate: {ack}"));
            }
        }
        let seq = ack["seq"].as_u64().expect("seq");
        run.record_ack(&id, Ack { group: g, seq, sender: user.id, body: None });
        run.counters.acked_packets.fetch_add(1, Relaxed);
        let page = session.must("history", &json!({ "group": group, "after": seq - 1, "limit": 1 })).await;
        let message = &page["messages"][0];
        if message["client_msg_id"] != id.as_str() || message["type"] != "red_packet" {
            run.violation(format!("red packet {id} was acked at seq {seq}, which holds {message}"));
            continue;
        }
        let packet = message["body"]["packet"].as_u64().expect("packet id");
        run.packets.lock().unwrap()[g].push(Packet { id: packet, group: g, total, count });
    }
}

/// One grabber: grabs every packet of its group once, asking again after a lost
/// connection until answered; now and then grabs a won packet again.
async fn grab_packets(run: Arc<Run>, g: usize, user: User) {
    let group = run.cast.groups[g].id;
    let mut rng = Rng::new(run.knobs.seed, 2_000_000 + user.id);
    let mut session = Session::new(run.clone(), user.token.clone());
    let mut next = 0;
    loop {
        let done = run.packets_done.load(Relaxed);
        let Some(packet) = run.packets.lock().unwrap()[g].get(next).map(|p| p.id) else {
            if done {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        next += 1;
        let _gate = run.gate.read().await;
        let fields = json!({ "group": group, "packet": packet });
        let (result, attempts) = session.request("grab_red_packet", &fields).await;
        let result = match result {
            Ok(result) => result,
            Err(error) => {
                run.violation(format!("user {} grabbing {packet}: {error}", user.id));
                continue;
            }
        };
        let amount = result["amount"].as_i64();
        match (result["status"].as_str(), attempts) {
            (Some("grabbed"), _) => run.counters.grabs_won.fetch_add(1, Relaxed),
            // A grab taken by an attempt whose reply was lost.
            (Some("already_grabbed"), 2..) => run.counters.lost_grab_replies.fetch_add(1, Relaxed),
            (Some("empty"), _) => run.counters.grabs_empty.fetch_add(1, Relaxed),
            (Some("expired"), _) => run.counters.grabs_expired.fetch_add(1, Relaxed),
            _ => {
                run.violation(format!("user {}'s first grab of {packet} answered {result}", user.id));
                continue;
            }
        };
        run.grabs.lock().unwrap().insert((packet, user.id), amount);
        if amount.is_some() && rng.below(4) == 0 {
            run.counters.regrabs.fetch_add(1, Relaxed);
            let again = session.must("grab_red_packet", &fields).await;
            if again["status"] != "already_grabbed" || again["amount"].as_i64() != amount {
                run.violation(format!("user {} won {amount:?} of {packet}, grabbing again answers {again}", user.id));
            }
        }
    }
}

// ---- the killer --------------------------------------------------------------------------

/// Every `SOAK_KILL_EVERY_MS`: `kill -9`, restart on the same data directory, tell the
/// clients where the node is now, and check the money. Returns the node when told to stop.
async fn kill_and_restart(
    run: Arc<Run>,
    mut node: TestNode,
    endpoint: watch::Sender<String>,
    mut stop: watch::Receiver<bool>,
    started: Instant,
) -> (TestNode, watch::Sender<String>, HashMap<u64, PacketFacts>) {
    let mut settled = HashMap::new();
    let mut restarted = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(restarted + run.knobs.kill_every) => {}
            _ = stop.changed() => break,
        }
        let kills = crash(&run, &mut node, &endpoint).await;
        restarted = Instant::now();
        let money = check_money(&run, &node, &mut settled, false).await;
        eprintln!(
            "soak: kill {kills} at {:.1}s (money checked in {:.2}s): {} texts and {} red packets acked, {} resends; \
             {} open packets hold {} cents",
            (restarted - started).as_secs_f64(),
            restarted.elapsed().as_secs_f64(),
            run.counters.acked_texts.load(Relaxed),
            run.counters.acked_packets.load(Relaxed),
            run.counters.resends.load(Relaxed),
            money.open,
            money.held,
        );
    }
    (node, endpoint, settled)
}

/// `kill -9`, then a restart on the same data directory; the clients learn the new
/// address. Returns the number of kills so far.
async fn crash(run: &Run, node: &mut TestNode, endpoint: &watch::Sender<String>) -> u64 {
    let killed = Instant::now();
    node.restart().await;
    run.counters.down_ms.fetch_add(killed.elapsed().as_millis() as u64, Relaxed);
    endpoint.send_replace(node.url.clone());
    run.counters.kills.fetch_add(1, Relaxed) + 1
}

// ---- money -------------------------------------------------------------------------------

/// How a packet stood at a money check.
#[derive(Debug, Clone, PartialEq)]
struct PacketFacts {
    status: String,
    grabbed_amount: i64,
    grabbed_count: u64,
    /// Who got what, once the packet is over.
    grabs: Option<Vec<(u64, i64)>>,
    refund: Option<i64>,
}

/// What a red packet sender's ledger holds, by packet.
#[derive(Debug, Default, PartialEq)]
struct SenderLedger {
    debits: HashMap<u64, i64>,
    refunds: HashMap<u64, i64>,
    credits: i64,
    odd: Vec<Value>,
}

#[derive(Debug, Default)]
struct MoneyFigures {
    open: usize,
    held: i64,
    refunded: i64,
    refunds: usize,
    grabbed: i64,
}

/// With no red packet request under way: every wallet's balance equals its ledger,
/// every grabber holds exactly what its acked grabs won, every packet was debited once,
/// its grabs sum to at most its total and its refund to the rest, and the wallets plus
/// what open packets still hold make exactly what was funded. `settled` keeps the facts
/// of packets that are over (checked again at the end, when `last`; then every packet
/// must be over).
async fn check_money(
    run: &Arc<Run>,
    node: &TestNode,
    settled: &mut HashMap<u64, PacketFacts>,
    last: bool,
) -> MoneyFigures {
    let Ok(_gate) = tokio::time::timeout(GATE_DEADLINE, run.gate.write()).await else {
        run.violation(format!("red packet requests still unanswered {GATE_DEADLINE:?} after a restart"));
        return MoneyFigures::default();
    };
    run.counters.money_checks.fetch_add(1, Relaxed);
    let packets: Vec<Packet> = run.packets.lock().unwrap().iter().flatten().cloned().collect();
    let senders: Vec<&User> = run.cast.groups.iter().map(|g| &g.packet_sender).collect();
    let mut auditor = Session::new(run.clone(), run.cast.owner.token.clone());
    let mut sessions: Vec<Session> = senders.iter().map(|u| Session::new(run.clone(), u.token.clone())).collect();
    let settle_by = Instant::now() + run.knobs.packet_ttl + Duration::from_secs(30);
    // Refunds land while this reads (the node expires packets by itself): read the
    // senders' ledgers before and after everything else, until no refund came between.
    let (ledgers, facts, balances) = loop {
        let before = read_ledgers(&mut sessions).await;
        let mut facts = HashMap::new();
        for packet in &packets {
            if let Some(known) = settled.get(&packet.id).filter(|_| !last) {
                facts.insert(packet.id, known.clone());
                continue;
            }
            let group = run.cast.groups[packet.group].id;
            let info = auditor.must("red_packet", &json!({ "group": group, "packet": packet.id })).await;
            let refund = before[packet.group].refunds.get(&packet.id).copied();
            facts.insert(packet.id, packet_facts(&info, refund));
        }
        let mut balances = HashMap::new();
        for user in run.cast.everyone() {
            let answer = node.console(&format!("wallet {}", user.id)).await;
            let (Some(balance), Some(sum)) = (answer["balance"].as_i64(), answer["ledger_sum"].as_i64()) else {
                panic!("console wallet {}: {answer}", user.id);
            };
            balances.insert(user.id, (balance, sum));
        }
        let after = read_ledgers(&mut sessions).await;
        if before != after {
            continue;
        }
        let over = |f: &PacketFacts| f.status == "empty" || f.refund.is_some();
        if last && !facts.values().all(over) && Instant::now() < settle_by {
            // At the end, wait for every packet to expire and be refunded.
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        break (after, facts, balances);
    };

    let kill = run.counters.kills.load(Relaxed);
    let mut wrong = Vec::new();
    let grabs = run.grabs.lock().unwrap().clone();
    let mut figures = MoneyFigures::default();
    let mut won_by: HashMap<u64, i64> = HashMap::new();
    for ((_, user), amount) in &grabs {
        *won_by.entry(*user).or_default() += amount.unwrap_or(0);
    }
    for packet in &packets {
        let f = &facts[&packet.id];
        let ledger = &ledgers[packet.group];
        let ours: Vec<(u64, i64)> =
            grabs.iter().filter(|((p, _), _)| *p == packet.id).filter_map(|((_, u), a)| a.map(|a| (*u, a))).collect();
        let losers: HashSet<u64> =
            grabs.iter().filter(|((p, _), a)| *p == packet.id && a.is_none()).map(|((_, u), _)| *u).collect();
        let ours_sum: i64 = ours.iter().map(|(_, a)| a).sum();
        if ledger.debits.get(&packet.id) != Some(&-packet.total) {
            wrong.push(format!(
                "packet {} of {}: its sender's debit is {:?}",
                packet.id,
                packet.total,
                ledger.debits.get(&packet.id)
            ));
        }
        if f.grabbed_amount > packet.total || f.grabbed_count > packet.count {
            wrong.push(format!("packet {} ({} in {} shares) gave out {f:?}", packet.id, packet.total, packet.count));
        }
        if (f.grabbed_amount, f.grabbed_count) != (ours_sum, ours.len() as u64) {
            wrong.push(format!("packet {}: the node says {f:?}, the acked grabs won {ours:?}", packet.id));
        }
        if let Some(listed) = &f.grabs {
            let users: HashSet<u64> = listed.iter().map(|(u, _)| *u).collect();
            let mut sorted_listed = listed.clone();
            sorted_listed.sort();
            let mut sorted_ours = ours.clone();
            sorted_ours.sort();
            if users.len() != listed.len() || sorted_listed != sorted_ours || users.iter().any(|u| losers.contains(u)) {
                wrong.push(format!(
                    "packet {}: grabs listed {listed:?}, acked {ours:?}, told empty/expired {losers:?}",
                    packet.id
                ));
            }
        }
        match f.refund {
            Some(refund) if f.status != "expired" || refund != packet.total - f.grabbed_amount => {
                wrong.push(format!("packet {} of {}: refund {refund} with {f:?}", packet.id, packet.total));
            }
            Some(refund) => {
                figures.refunded += refund;
                figures.refunds += 1;
            }
            None if last && f.status != "empty" => {
                wrong.push(format!("packet {} of {} never settled: {f:?}", packet.id, packet.total));
            }
            None => {}
        }
        let held = packet.total - f.grabbed_amount - f.refund.unwrap_or(0);
        if held > 0 {
            figures.open += 1;
        }
        figures.held += held;
        figures.grabbed += f.grabbed_amount;
        if f.status == "empty" || f.refund.is_some() {
            // What is over stays as it was, whatever crashes came since.
            if let Some(before) = settled.insert(packet.id, f.clone())
                && before != *f
            {
                wrong.push(format!("packet {} was settled as {before:?}, now {f:?}", packet.id));
            }
        }
    }
    let known: HashSet<u64> = packets.iter().map(|p| p.id).collect();
    for (g, ledger) in ledgers.iter().enumerate() {
        let strays: Vec<&u64> =
            ledger.debits.keys().chain(ledger.refunds.keys()).filter(|p| !known.contains(p)).collect();
        if !strays.is_empty() || !ledger.odd.is_empty() || ledger.credits != FUNDING {
            wrong.push(format!(
                "group {g}'s sender's ledger: packets {strays:?} unknown, odd entries {:?}, credits {}",
                ledger.odd, ledger.credits
            ));
        }
    }
    for (user, (balance, sum)) in &balances {
        if balance != sum || *balance < 0 {
            wrong.push(format!("user {user}: balance {balance}, ledger sum {sum}"));
        }
    }
    for group in &run.cast.groups {
        for grabber in &group.grabbers {
            let won = won_by.get(&grabber.id).copied().unwrap_or(0);
            if balances[&grabber.id].0 != won {
                wrong.push(format!(
                    "grabber {} holds {}, its acked grabs won {won}",
                    grabber.id, balances[&grabber.id].0
                ));
            }
        }
    }
    let funded = FUNDING * run.cast.groups.len() as i64;
    let wallets: i64 = balances.values().map(|(balance, _)| balance).sum();
    if wallets + figures.held != funded {
        wrong.push(format!(
            "wallets hold {wallets}, open packets {}: {} in all, {funded} was funded",
            figures.held,
            wallets + figures.held
        ));
    }
    for what in wrong {
        run.violation(format!("money after kill {kill}: {what}"));
    }
    for session in sessions.into_iter().chain([auditor]) {
        if let Some(client) = session.client {
            hang_up(&client).await;
        }
    }
    figures
}

fn packet_facts(info: &Value, refund: Option<i64>) -> PacketFacts {
    let grabs = info["grabs"].as_array().map(|grabs| {
        grabs.iter().map(|g| (g["user"].as_u64().expect("user"), g["amount"].as_i64().expect("amount"))).collect()
    });
    PacketFacts {
        status: info["status"].as_str().expect("status").to_owned(),
        grabbed_amount: info["grabbed_amount"].as_i64().expect("grabbed_amount"),
        grabbed_count: info["grabbed_count"].as_u64().expect("grabbed_count"),
        grabs,
        refund,
    }
}

async fn read_ledgers(sessions: &mut [Session]) -> Vec<SenderLedger> {
    let mut ledgers = Vec::new();
    for session in sessions {
        let wallet = session.must("wallet", &json!({})).await;
        let entries = wallet["entries"].as_array().expect("entries");
        assert!(entries.len() < WALLET_PAGE, "a sender's ledger outgrew one wallet page: lower SOAK_PACKETS");
        let mut ledger = SenderLedger::default();
        for entry in entries {
            let (amount, packet) = (entry["amount"].as_i64().expect("amount"), entry["packet"].as_u64());
            match (entry["kind"].as_str(), packet) {
                (Some("credit"), None) => ledger.credits += amount,
                (Some("red_packet_send"), Some(p)) if ledger.debits.insert(p, amount).is_none() => {}
                (Some("red_packet_refund"), Some(p)) if ledger.refunds.insert(p, amount).is_none() => {}
                _ => ledger.odd.push(entry.clone()),
            }
        }
        let sum: i64 = entries.iter().filter_map(|e| e["amount"].as_i64()).sum();
        assert_eq!(wallet["balance"].as_i64(), Some(sum), "a sender's balance is its ledger's sum: {wallet}");
        ledgers.push(ledger);
    }
    ledgers
}

// ---- the verdict ---------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Verdict {
    lost: usize,
    duplicated: usize,
    gaps: usize,
    messages: usize,
}

/// Reads a group's whole log with `history`, oldest first.
async fn read_log(session: &mut Session, group: u64) -> Vec<Value> {
    let mut log: Vec<Value> = Vec::new();
    loop {
        let after = log.last().map_or(0, |m| m["seq"].as_u64().expect("seq"));
        let page = session.must("history", &json!({ "group": group, "after": after, "limit": 100 })).await;
        log.extend(page["messages"].as_array().expect("messages").iter().map(normalized));
        if page["has_more"] != true {
            return log;
        }
    }
}

/// Every acked message is in its group's log once, at the seq its ack named, with what was
/// sent; the log holds nothing else, twice, or with a gap.
fn judge_logs(run: &Run, logs: &[Vec<Value>]) -> Verdict {
    let acks = run.acks.lock().unwrap().clone();
    let mut verdict = Verdict::default();
    for (g, log) in logs.iter().enumerate() {
        verdict.messages += log.len();
        let mut seen: HashMap<(u64, &str), u64> = HashMap::new();
        for (i, message) in log.iter().enumerate() {
            let seq = message["seq"].as_u64().expect("seq");
            if seq != i as u64 + 1 {
                verdict.gaps += 1;
                run.violation(format!("group {g}: seq {seq} at position {}", i + 1));
            }
            let id = message["client_msg_id"].as_str().expect("client_msg_id");
            let sender = message["sender"].as_u64().expect("sender");
            if let Some(first) = seen.insert((sender, id), seq) {
                verdict.duplicated += 1;
                run.violation(format!("group {g}: {id} of {sender} at seqs {first} and {seq}"));
            }
            match acks.get(id) {
                Some(ack) if ack.group == g && ack.sender == sender => {}
                _ => run.violation(format!("group {g}: seq {seq} holds {message}, which nobody was acked for")),
            }
        }
        for (id, ack) in acks.iter().filter(|(_, ack)| ack.group == g) {
            let at = log.get(ack.seq as usize - 1);
            let kind = if ack.body.is_some() { "text" } else { "red_packet" };
            let same = at.is_some_and(|m| {
                m["client_msg_id"] == id.as_str()
                    && m["sender"] == ack.sender
                    && m["type"] == kind
                    && ack.body.as_ref().is_none_or(|body| m["body"] == body.as_str())
            });
            if !same {
                verdict.lost += 1;
                run.violation(format!("group {g}: {id} was acked at seq {}, which holds {at:?}", ack.seq));
            }
        }
    }
    verdict
}

/// A receiver's view is the log, message for message.
fn judge_view(run: &Run, view: &View, log: &[Value]) {
    if view.messages.len() != log.len() {
        run.violation(format!("receiver {} holds {} messages, the log {}", view.user, view.messages.len(), log.len()));
    }
    if let Some((i, (held, logged))) = view.messages.iter().zip(log).enumerate().find(|(_, (a, b))| a != b) {
        run.violation(format!("receiver {} holds {held} at seq {}, the log {logged}", view.user, i + 1));
    }
}

fn print_summary(run: &Run, verdict: &Verdict, views: &[View], money: &MoneyFigures, took: Duration) {
    let c = &run.counters;
    let n = |counter: &AtomicU64| counter.load(Relaxed);
    let grabs = run.grabs.lock().unwrap();
    eprintln!(
        "soak summary: {} text + {} red packet messages acked in {} groups ({} in the logs); {} kills; \
         {} resends, {} acked as duplicates, {} unavailable/rate-limited retries, {} timeouts, {} connections; \
         lost {}, duplicated {}, gaps {}; {} receivers equal to the log ({} messages live, {} via sync, {} via history, {} live gaps); \
         red packets: {} grabs won ({} cents), {} empty, {} expired, {} lost grab replies answered on retry, {} re-grabs; \
         {} refunds ({} cents); {} money checks exact; node down {:.1}s in all; seed {}; {:.1}s",
        n(&c.acked_texts),
        n(&c.acked_packets),
        run.cast.groups.len(),
        verdict.messages,
        n(&c.kills),
        n(&c.resends),
        n(&c.duplicate_acks),
        n(&c.transient_retries),
        n(&c.timeouts),
        n(&c.connections),
        verdict.lost,
        verdict.duplicated,
        verdict.gaps,
        views.len(),
        n(&c.live),
        n(&c.via_sync),
        n(&c.via_history),
        n(&c.live_gaps),
        grabs.values().filter(|a| a.is_some()).count(),
        money.grabbed,
        n(&c.grabs_empty),
        n(&c.grabs_expired),
        n(&c.lost_grab_replies),
        n(&c.regrabs),
        money.refunds,
        money.refunded,
        n(&c.money_checks),
        n(&c.down_ms) as f64 / 1000.0,
        run.knobs.seed,
        took.as_secs_f64(),
    );
}
