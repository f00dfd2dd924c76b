//! The node-local fan-out step: who is connected to this node, and handing encoded events
//! to their connections.
//!
//! A group actor encodes each event once and hands the bytes here with its member list;
//! this step looks up each member's connections on this node and hands the shared bytes
//! to each (see [`crate::outbox`] for how they reach the socket). In a cluster every node runs one, and a group actor sends one
//! [`schema::cluster::NodeDelivery`] per node instead of one message per member.
//!
//! The registry is written by user actors (who own their user's connections) and read by
//! everyone, so it is a sharded map under short read locks rather than an actor: a
//! delivery costs no mailbox hop.
//!
//! Handing bytes to an idle connection writes them to its socket (see [`crate::outbox`]),
//! which costs a syscall and the kernel's TCP work: a 500-member fan-out is milliseconds of
//! CPU. So the writing is spread over *lanes*, one thread per core
//! (`actors.fanout_threads`): the caller splits the recipients by lane and hands each lane
//! its share, one channel message per lane, not per recipient.
//! The caller (a group actor) is back to its mailbox at once, and the lanes write one
//! fan-out on all cores together. A lane that falls behind takes every waiting fan-out at
//! once and writes each connection one frame for all of them: under load a write carries
//! many events, so deliveries per second are not bound by writes per second.
//!
//! Invariant: a user's connections always go through the same lane (by the user's id), and
//! a lane works in order, so one caller's deliveries and replies reach each connection in the order it
//! made them.

use crate::frame::Framed;
use crate::outbox::Outbox;
use bytes::Bytes;
use schema::cluster::NodeDelivery;
use schema::{ConnId, UserId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, RwLock};

const SHARDS: usize = 64;

type Connections = Arc<[Arc<Outbox>]>;
type Shards = [RwLock<HashMap<UserId, Connections>>];

fn shard(shards: &Shards, user: UserId) -> &RwLock<HashMap<UserId, Connections>> {
    // Ids are random, so their low bits spread evenly.
    &shards[(user.0 as usize) % SHARDS]
}

/// How many times events were handed to a connection (`troupe_deliveries_total`), counted
/// by whoever hands them over: each lane, or the caller when there are none. A counter
/// each, alone on its cache lines, so counting costs no traffic between cores.
#[repr(align(128))]
#[derive(Debug, Default)]
struct Handed(AtomicU64);

/// Hands `events` to every connection of `recipients`, on the calling thread; returns how
/// many connections took them. `handed` counts the connections found, before the first
/// write, so a client never sees an event the count does not include yet.
fn deliver(shards: &Shards, recipients: &[UserId], events: &[Bytes], handed: &Handed) -> usize {
    let framed = Framed::new(events);
    let mut reached = 0;
    for &user in recipients {
        // Pushing under the shard's read lock saves cloning the connection list; a push
        // is a short write or append, and writers of this shard are rare (connects,
        // disconnects).
        let shard = shard(shards, user).read().unwrap_or_else(|e| e.into_inner());
        let Some(connections) = shard.get(&user) else { continue };
        handed.0.fetch_add(connections.len() as u64, Ordering::Relaxed);
        for outbox in connections.iter() {
            if outbox.push_framed(&framed) {
                reached += 1;
            }
        }
    }
    reached
}

/// This node's online users and their connections, and the lanes that write to them.
pub struct Fanout {
    shards: Arc<Shards>,
    /// Empty: the caller writes itself (tests, and `actors.fanout_threads = 0`).
    lanes: Box<[mpsc::Sender<Job>]>,
    /// One counter per lane, and a last one for callers writing on their own thread.
    handed: Arc<[Handed]>,
}

/// One lane's share of a delivery.
enum Job {
    Deliver { events: Arc<[Bytes]>, to: Vec<UserId> },
    Reply { event: Bytes, user: UserId, to: Arc<Outbox> },
}

impl Job {
    fn events(&self) -> usize {
        match self {
            Job::Deliver { events, .. } => events.len(),
            Job::Reply { .. } => 1,
        }
    }
}

/// The most events a lane takes from its channel for one round of writes. It keeps a
/// round's frame per connection within `gateway.max_events_per_frame`'s default and far
/// below an outbox's bound.
const LANE_BATCH_EVENTS: usize = 256;

/// A lane's thread: writes its jobs in order. While it keeps up, each job is one fan-out
/// with one frame shared by every recipient. When jobs wait (the lane is behind, under
/// load), it takes all that wait and gives each connection everything they hold for it in
/// one frame: one write per socket per round, however many events, which is what lets a
/// node deliver far more events per second than it can make writes.
fn run_lane(shards: &Shards, rx: &mpsc::Receiver<Job>, handed: &Handed) {
    let mut round = Vec::new();
    while let Ok(job) = rx.recv() {
        let mut events = job.events();
        round.push(job);
        while events < LANE_BATCH_EVENTS
            && let Ok(job) = rx.try_recv()
        {
            events += job.events();
            round.push(job);
        }
        if round.len() == 1 {
            match round.pop() {
                Some(Job::Deliver { events, to }) => {
                    deliver(shards, &to, &events, handed);
                }
                Some(Job::Reply { event, to, .. }) => {
                    to.push(event);
                }
                None => {}
            }
        } else {
            deliver_round(shards, &round, handed);
            round.clear();
        }
    }
}

/// Writes several jobs at once: each connection gets, in the jobs' order, every event the
/// round holds for it (deliveries to its user, replies to it), handed over in one push.
fn deliver_round(shards: &Shards, round: &[Job], handed: &Handed) {
    // Each user's jobs, in order; the users in the order they first appear.
    let mut jobs_of: HashMap<UserId, Vec<usize>> = HashMap::new();
    let mut users = Vec::new();
    for (index, job) in round.iter().enumerate() {
        let mut note = |user: UserId| {
            let jobs = jobs_of.entry(user).or_default();
            if jobs.is_empty() {
                users.push(user);
            }
            if jobs.last() != Some(&index) {
                jobs.push(index);
            }
        };
        match job {
            Job::Deliver { to, .. } => to.iter().copied().for_each(&mut note),
            Job::Reply { user, .. } => note(*user),
        }
    }
    let mut events = Vec::new();
    for user in users {
        // A user gone offline has no connections; replies to its connections are still owed.
        let connections: Connections =
            shard(shards, user).read().unwrap_or_else(|e| e.into_inner()).get(&user).cloned().unwrap_or_default();
        let jobs = jobs_of.get(&user).map(Vec::as_slice).unwrap_or_default();
        let deliveries = jobs.iter().filter(|&&index| matches!(round[index], Job::Deliver { .. })).count();
        handed.0.fetch_add((deliveries * connections.len()) as u64, Ordering::Relaxed);
        for outbox in connections.iter() {
            events.clear();
            for &index in jobs {
                match &round[index] {
                    Job::Deliver { events: delivered, .. } => events.extend(delivered.iter().cloned()),
                    Job::Reply { event, to, .. } if Arc::ptr_eq(to, outbox) => events.push(event.clone()),
                    Job::Reply { .. } => {}
                }
            }
            if !events.is_empty() {
                outbox.push_all(&events);
            }
        }
        // A reply to a connection the user no longer lists still goes to it, alone.
        for &index in jobs {
            if let Job::Reply { event, to, .. } = &round[index]
                && !connections.iter().any(|o| Arc::ptr_eq(o, to))
            {
                to.push(event.clone());
            }
        }
    }
}

impl Default for Fanout {
    fn default() -> Self {
        Fanout::new(0)
    }
}

impl Fanout {
    /// A fan-out step with `threads` lanes (0: callers write on their own thread). The
    /// lanes' threads end when this is dropped.
    pub fn new(threads: usize) -> Fanout {
        let shards: Arc<Shards> = (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect::<Box<[_]>>().into();
        let handed: Arc<[Handed]> = (0..=threads).map(|_| Handed::default()).collect();
        let lanes = (0..threads)
            .filter_map(|i| {
                let (tx, rx) = mpsc::channel::<Job>();
                let (shards, handed) = (shards.clone(), handed.clone());
                let spawned = std::thread::Builder::new()
                    .name(format!("troupe-fanout-{i}"))
                    .spawn(move || run_lane(&shards, &rx, &handed[i]));
                match spawned {
                    Ok(_) => Some(tx),
                    Err(error) => {
                        tracing::error!(%error, "could not start a fan-out lane; fewer lanes write");
                        None
                    }
                }
            })
            .collect();
        Fanout { shards, lanes, handed }
    }

    /// How many times events were handed to a connection on this node
    /// (`troupe_deliveries_total`): one per connection per fan-out or round.
    pub fn handed(&self) -> u64 {
        self.handed.iter().map(|h| h.0.load(Ordering::Relaxed)).sum()
    }

    /// A user's lane: all of a user's connections share one, chosen without touching them.
    fn lane(&self, user: UserId) -> Option<&mpsc::Sender<Job>> {
        if self.lanes.is_empty() { None } else { Some(&self.lanes[(user.0 as usize) % self.lanes.len()]) }
    }

    fn send(lane: &mpsc::Sender<Job>, job: Job) {
        // A lane's thread only ends when the fan-out step is dropped, so this cannot fail
        // while `self` is alive; a failed send would just drop the events, like a closed
        // connection.
        let _ = lane.send(job);
    }

    fn shard(&self, user: UserId) -> &RwLock<HashMap<UserId, Connections>> {
        shard(&self.shards, user)
    }

    /// Replaces a user's connections on this node; an empty list takes the user offline.
    /// Only the user's actor calls this, so updates for one user never race.
    pub fn set_connections(&self, user: UserId, connections: Vec<Arc<Outbox>>) {
        let mut shard = self.shard(user).write().unwrap_or_else(|e| e.into_inner());
        if connections.is_empty() {
            shard.remove(&user);
        } else {
            shard.insert(user, connections.into());
        }
    }

    /// A user's connections on this node.
    pub fn connections(&self, user: UserId) -> Option<Connections> {
        self.shard(user).read().unwrap_or_else(|e| e.into_inner()).get(&user).cloned()
    }

    /// Hands `events`, in order, to every connection of every recipient on this node: each
    /// connection with nothing queued gets the frame written to its socket now (one frame,
    /// built once per lane, shared by all of them); the others queue the events.
    pub fn deliver(&self, recipients: &[UserId], events: &[Bytes]) {
        let Some(own) = self.handed.last() else { return };
        if self.lanes.is_empty() {
            deliver(&self.shards, recipients, events, own);
            return;
        }
        // Split by id alone: the lanes look the users up. The caller (a group actor's
        // thread, on the way from the commit to the sockets) touches neither the map nor
        // the connections, which the lanes' cores hold.
        let mut shares: Vec<Vec<UserId>> = vec![Vec::new(); self.lanes.len()];
        for &user in recipients {
            shares[(user.0 as usize) % self.lanes.len()].push(user);
        }
        let events: Arc<[Bytes]> = events.into();
        for (lane, to) in self.lanes.iter().zip(shares) {
            if !to.is_empty() {
                Self::send(lane, Job::Deliver { events: events.clone(), to });
            }
        }
    }

    /// Calls `f` for every connection on this node (heartbeats, shutdown).
    pub fn for_each_connection(&self, mut f: impl FnMut(&Outbox)) {
        for shard in self.shards.iter() {
            let shard = shard.read().unwrap_or_else(|e| e.into_inner());
            for outbox in shard.values().flat_map(|c| c.iter()) {
                f(outbox);
            }
        }
    }

    /// Hands one event to one connection, through its lane (so it keeps its place after
    /// the caller's earlier deliveries); false if the connection is gone.
    pub fn reply(&self, user: UserId, conn: ConnId, event: Bytes) -> bool {
        let Some(connections) = self.connections(user) else {
            return false;
        };
        let Some(outbox) = connections.iter().find(|o| o.conn() == conn) else {
            return false;
        };
        match self.lane(user) {
            Some(lane) => {
                Self::send(lane, Job::Reply { event, user, to: outbox.clone() });
                true
            }
            None => outbox.push(event),
        }
    }

    /// Applies a delivery that arrived from another node; returns how many connections
    /// here it is for (none tells the group's owner to stop sending it here).
    pub fn apply(&self, delivery: NodeDelivery) -> usize {
        match delivery {
            NodeDelivery::Fanout { recipients, events, .. } => {
                let here = recipients.iter().filter_map(|&user| self.connections(user)).map(|c| c.len()).sum();
                let events: Vec<Bytes> = events.into_iter().map(Bytes::from).collect();
                self.deliver(&recipients, &events);
                here
            }
            NodeDelivery::Reply { user, conn, event } => usize::from(self.reply(user, conn, Bytes::from(event))),
        }
    }

    /// (online users, connections) on this node.
    pub fn counts(&self) -> (usize, usize) {
        let mut users = 0;
        let mut conns = 0;
        for shard in self.shards.iter() {
            let shard = shard.read().unwrap_or_else(|e| e.into_inner());
            users += shard.len();
            conns += shard.values().map(|c| c.len()).sum::<usize>();
        }
        (users, conns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivers_shared_bytes_to_every_connection_in_order() {
        let fanout = Fanout::default();
        let a1 = Arc::new(Outbox::new(ConnId(1), 10));
        let a2 = Arc::new(Outbox::new(ConnId(2), 10));
        let b = Arc::new(Outbox::new(ConnId(3), 10));
        fanout.set_connections(UserId(1), vec![a1.clone(), a2.clone()]);
        fanout.set_connections(UserId(2), vec![b.clone()]);
        let events = [Bytes::from_static(b"1"), Bytes::from_static(b"2")];
        fanout.deliver(&[UserId(1), UserId(2), UserId(3)], &events);
        assert_eq!(fanout.handed(), 3, "counted once per connection, whatever the events");
        for outbox in [&a1, &a2, &b] {
            let mut out = Vec::new();
            outbox.take(10, &mut out);
            assert_eq!(out, events);
            assert_eq!(out[0].as_ptr(), events[0].as_ptr(), "bytes are shared, not copied");
        }
        assert!(fanout.reply(UserId(1), ConnId(2), Bytes::from_static(b"r")));
        assert!(!fanout.reply(UserId(1), ConnId(3), Bytes::from_static(b"r")));
        fanout.set_connections(UserId(1), vec![]);
        assert_eq!(fanout.counts(), (1, 1));
    }

    #[test]
    fn lanes_keep_each_connections_deliveries_and_replies_in_order() {
        let fanout = Fanout::new(3);
        let outboxes: Vec<Arc<Outbox>> = (0..20).map(|i| Arc::new(Outbox::new(ConnId(i), 10_000))).collect();
        let users: Vec<UserId> = (0..10).map(UserId).collect();
        for (i, user) in users.iter().enumerate() {
            fanout.set_connections(*user, vec![outboxes[2 * i].clone(), outboxes[2 * i + 1].clone()]);
        }
        for n in 0..200u32 {
            let event = Bytes::from(n.to_string());
            if n % 10 == 0 {
                // A reply to one connection keeps its place among the deliveries.
                assert!(fanout.reply(UserId(3), ConnId(7), event));
            } else {
                fanout.deliver(&users, std::slice::from_ref(&event));
            }
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while outboxes.iter().any(|o| o.depth() < if o.conn() == ConnId(7) { 200 } else { 180 }) {
            assert!(std::time::Instant::now() < deadline, "the lanes did not deliver everything");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(fanout.handed(), 180 * 20, "each lane counts what it hands over; replies are not counted");
        drop(fanout); // the lanes end
        for outbox in &outboxes {
            let mut out = Vec::new();
            outbox.take(10_000, &mut out);
            let expected: Vec<Bytes> = (0..200u32)
                .filter(|n| n % 10 != 0 || outbox.conn() == ConnId(7))
                .map(|n| Bytes::from(n.to_string()))
                .collect();
            assert_eq!(out, expected, "{:?}", outbox.conn());
        }
    }

    #[test]
    fn a_round_gives_each_connection_its_events_in_order() {
        let fanout = Fanout::default();
        let a1 = Arc::new(Outbox::new(ConnId(1), 100));
        let a2 = Arc::new(Outbox::new(ConnId(2), 100));
        let b = Arc::new(Outbox::new(ConnId(3), 100));
        fanout.set_connections(UserId(1), vec![a1.clone(), a2.clone()]);
        fanout.set_connections(UserId(2), vec![b.clone()]);
        let event = |s: &'static str| Bytes::from_static(s.as_bytes());
        let round = [
            Job::Deliver { events: vec![event("1"), event("2")].into(), to: vec![UserId(1), UserId(2)] },
            Job::Reply { event: event("r"), user: UserId(1), to: a2.clone() },
            Job::Deliver { events: vec![event("3")].into(), to: vec![UserId(2), UserId(1), UserId(9)] },
            Job::Reply { event: event("s"), user: UserId(2), to: b.clone() },
        ];
        let handed = Handed::default();
        deliver_round(&fanout.shards, &round, &handed);
        assert_eq!(
            handed.0.load(Ordering::Relaxed),
            6,
            "2 deliveries to each of user 1's 2 connections and user 2's 1"
        );
        let queued = |outbox: &Outbox| {
            let mut out = Vec::new();
            outbox.take(100, &mut out);
            out
        };
        assert_eq!(queued(&a1), [event("1"), event("2"), event("3")]);
        assert_eq!(queued(&a2), [event("1"), event("2"), event("r"), event("3")], "the reply keeps its place");
        assert_eq!(queued(&b), [event("1"), event("2"), event("3"), event("s")]);
    }

    /// A socket that takes everything and remembers each write.
    #[derive(Debug, Default)]
    struct Recorder(std::sync::Mutex<Vec<Vec<u8>>>);

    impl crate::outbox::Wire for Recorder {
        fn write_now(&self, frame: &[u8]) -> crate::outbox::WriteNow {
            self.0.lock().unwrap().push(frame.to_vec());
            crate::outbox::WriteNow::Done
        }
    }

    #[test]
    fn a_round_is_one_write_per_connection() {
        // Without this, a lane behind by N fan-outs makes N writes per member, and under
        // overload the node delivers only as many events as it can make writes.
        let fanout = Fanout::default();
        let users: Vec<UserId> = (1..=3).map(UserId).collect();
        let wires: Vec<Arc<Recorder>> = users.iter().map(|_| Arc::new(Recorder::default())).collect();
        for (i, (user, wire)) in users.iter().zip(&wires).enumerate() {
            let outbox = Arc::new(Outbox::new(ConnId(i as u64), 100));
            outbox.attach(wire.clone(), 256);
            fanout.set_connections(*user, vec![outbox]);
        }
        let round: Vec<Job> = (0..5u8)
            .map(|n| Job::Deliver { events: vec![Bytes::from(format!("{n}"))].into(), to: users.clone() })
            .collect();
        deliver_round(&fanout.shards, &round, &Handed::default());
        let expected = crate::frame::text_frame_of_events(&[0u8, 1, 2, 3, 4].map(|n| Bytes::from(format!("{n}"))));
        for wire in &wires {
            assert_eq!(*wire.0.lock().unwrap(), vec![expected.clone()], "one frame with all five events");
        }
    }

    /// A socket whose first write waits until the test lets it go: it holds its lane up.
    #[derive(Debug)]
    struct Gate {
        writes: std::sync::Mutex<Vec<Vec<u8>>>,
        entered: std::sync::Mutex<std::sync::mpsc::Sender<()>>,
        open: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
    }

    impl crate::outbox::Wire for Gate {
        fn write_now(&self, frame: &[u8]) -> crate::outbox::WriteNow {
            let first = self.writes.lock().unwrap().is_empty();
            if first {
                let _ = self.entered.lock().unwrap().send(());
                let _ = self.open.lock().unwrap().recv();
            }
            self.writes.lock().unwrap().push(frame.to_vec());
            crate::outbox::WriteNow::Done
        }
    }

    #[test]
    fn a_lane_that_fell_behind_writes_what_waits_in_one_round() {
        let fanout = Fanout::new(1);
        let (release, open) = std::sync::mpsc::channel();
        let (entered, in_write) = std::sync::mpsc::channel();
        let gate = Arc::new(Gate {
            writes: Default::default(),
            entered: std::sync::Mutex::new(entered),
            open: std::sync::Mutex::new(open),
        });
        let outbox = Arc::new(Outbox::new(ConnId(1), 100));
        outbox.attach(gate.clone(), 256);
        fanout.set_connections(UserId(1), vec![outbox]);
        let event = |n: u8| Bytes::from(format!("{n}"));
        fanout.deliver(&[UserId(1)], &[event(0)]);
        in_write.recv_timeout(std::time::Duration::from_secs(10)).expect("the lane writes the first");
        for n in 1..6 {
            fanout.deliver(&[UserId(1)], &[event(n)]);
        }
        release.send(()).unwrap();
        drop(fanout); // the lane finishes its work, then ends
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while gate.writes.lock().unwrap().len() < 2 {
            assert!(std::time::Instant::now() < deadline, "the lane did not write the rest");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let rest: Vec<Bytes> = (1..6).map(event).collect();
        assert_eq!(
            *gate.writes.lock().unwrap(),
            vec![crate::frame::text_frame_of_events(&[event(0)]), crate::frame::text_frame_of_events(&rest)]
        );
    }
}
