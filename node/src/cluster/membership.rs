//! Who is in the cluster and who is up, as this node sees it; the [`Cluster`] the actors
//! route with.
//!
//! `ractor_cluster` tells us which nodes are connected (their node actors appear in the
//! process group [`super::node_group`]), but a connected node may be frozen (a stopped
//! process keeps its TCP connections). So a peer counts as up only while its heartbeats
//! arrive: it is marked down after `down_after` of silence, and up again at the next one.
//! Group placement runs over the nodes that are up and not draining, this one included.

use super::ClusterMsg;
use actors::cluster::{Cluster, place};
use ractor::ActorRef;
use schema::cluster::{Heartbeat, NodeMessage};
use schema::{GroupId, NodeId};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// This node's view of the cluster.
pub struct Membership {
    me: NodeId,
    cluster_addr: String,
    down_after: Duration,
    draining: AtomicBool,
    /// Set once another node was seen with this node's id (logged once).
    duplicate_id: AtomicBool,
    state: RwLock<State>,
}

struct State {
    peers: HashMap<NodeId, Peer>,
    /// The nodes that take groups now (up, not draining), sorted; placement runs over it.
    placement: Vec<NodeId>,
    last_tick: Option<Instant>,
    started: Instant,
    /// Whether this node knows the cluster well enough to place groups (see `settle`).
    settled: bool,
}

struct Peer {
    actor: ActorRef<ClusterMsg>,
    last_heard: Option<Instant>,
    up: bool,
    heartbeat: Option<Heartbeat>,
}

/// What a [`Membership::tick`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// The set of nodes that take groups changed.
    pub placement_changed: bool,
    /// This node's own clock stood still for longer than `down_after` (it was frozen): the
    /// others may have taken its groups meanwhile.
    pub stalled: bool,
}

/// One node in the console's `nodes` listing.
#[derive(Debug, Clone, Serialize)]
pub struct NodeLine {
    /// The node.
    pub node: NodeId,
    /// Its cluster address, once heard from.
    pub cluster_addr: String,
    /// `self`, `up`, `down` (connected but silent), `joining` (connected, not heard yet), or
    /// `draining`.
    pub state: &'static str,
    /// Milliseconds since its last heartbeat (0 for this node).
    pub last_heard_ms: u64,
    /// Live group actors on it.
    pub groups: u32,
    /// Live user actors on it.
    pub users: u32,
    /// Open client connections on it.
    pub connections: u32,
}

impl Membership {
    /// A view with no peers yet: every group is placed here until others are heard from.
    pub fn new(me: NodeId, cluster_addr: String, down_after: Duration) -> Self {
        let state = State {
            peers: HashMap::new(),
            placement: vec![me],
            last_tick: None,
            started: Instant::now(),
            settled: false,
        };
        Membership {
            me,
            cluster_addr,
            down_after,
            draining: AtomicBool::new(false),
            duplicate_id: AtomicBool::new(false),
            state: RwLock::new(state),
        }
    }

    /// This node.
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// The address this node listens on for others.
    pub fn cluster_addr(&self) -> &str {
        &self.cluster_addr
    }

    /// Whether this node is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Stops placing groups here; true if the placement changed (it was not draining).
    pub fn start_draining(&self) -> bool {
        if self.draining.swap(true, Ordering::Relaxed) {
            return false;
        }
        let mut state = self.write();
        self.replace(&mut state)
    }

    /// The cluster addresses of peers that are up (a seed among them needs no dialing).
    pub fn up_addresses(&self) -> Vec<String> {
        self.read()
            .peers
            .values()
            .filter(|p| p.up)
            .filter_map(|p| p.heartbeat.as_ref().map(|h| h.cluster_addr.clone()))
            .collect()
    }

    /// Brings the list of connected peers in line with the node actors `ractor_cluster`
    /// shows, and marks silent peers down.
    pub fn tick(&self, connected: Vec<(NodeId, ActorRef<ClusterMsg>)>, now: Instant) -> Tick {
        let mut state = self.write();
        // A node that was itself frozen (SIGSTOP, a long GC-like stall, a suspended VM)
        // would wake up to find every peer silent and take all groups for itself. A tick
        // that comes far too late means our own clock stalled, not theirs: start their
        // silence from now.
        let stalled = state.last_tick.is_some_and(|last| now.duration_since(last) > self.down_after);
        state.last_tick = Some(now);
        if connected.iter().any(|(node, _)| *node == self.me) && !self.duplicate_id.swap(true, Ordering::Relaxed) {
            tracing::error!(node = %self.me, "another node uses this node's id; give each node its own --node-id");
        }
        let mut connected: HashMap<NodeId, ActorRef<ClusterMsg>> =
            connected.into_iter().filter(|(node, _)| *node != self.me).collect();
        let before = state.peers.len();
        state.peers.retain(|node, _| connected.contains_key(node));
        let mut changed = state.peers.len() != before;
        for (node, actor) in connected.drain() {
            let peer = state.peers.entry(node).or_insert_with(|| Peer {
                actor: actor.clone(),
                last_heard: None,
                up: false,
                heartbeat: None,
            });
            peer.actor = actor;
            if stalled && peer.last_heard.is_some() {
                peer.last_heard = Some(now);
            }
            let silent = peer.last_heard.is_none_or(|heard| now.duration_since(heard) > self.down_after);
            if peer.up && silent {
                tracing::warn!(node = %node, silent_ms = self.down_after.as_millis() as u64, "node marked down");
                peer.up = false;
                changed = true;
            }
        }
        self.settle(&mut state, now);
        let placement_changed = changed && self.replace(&mut state);
        Tick { placement_changed, stalled }
    }

    /// A node that just started places no group until it has heard every node it is
    /// connected to (and has had a second for the others to connect: one seed introduces the
    /// rest), or until `down_after` has passed (then nobody else is there). Otherwise a
    /// restarted node would take every group its clients ask for and depose the owners.
    fn settle(&self, state: &mut State, now: Instant) {
        if state.settled {
            return;
        }
        let waited = now.saturating_duration_since(state.started);
        let heard_all = !state.peers.is_empty() && state.peers.values().all(|p| p.up);
        if waited >= self.down_after || (heard_all && waited >= SETTLE_AT_LEAST) {
            tracing::info!(nodes = ?state.placement, waited_ms = waited.as_millis() as u64, "placing groups");
            state.settled = true;
        }
    }

    /// Records a heartbeat; true if the placement changed (the peer came up, or started
    /// draining).
    pub fn heard(&self, heartbeat: Heartbeat, now: Instant) -> bool {
        let mut state = self.write();
        let Some(peer) = state.peers.get_mut(&heartbeat.from) else {
            // Not connected as far as ractor_cluster has told us yet; the next tick adds it
            // and the next heartbeat counts.
            return false;
        };
        peer.last_heard = Some(now);
        let draining_changed = peer.heartbeat.as_ref().is_some_and(|h| h.draining != heartbeat.draining);
        let came_up = !peer.up;
        if came_up {
            tracing::info!(node = %heartbeat.from, addr = %heartbeat.cluster_addr, "node up");
        }
        peer.up = true;
        peer.heartbeat = Some(heartbeat);
        if came_up || draining_changed { self.replace(&mut state) } else { false }
    }

    /// Every known node, this one first.
    pub fn nodes(&self, own: Heartbeat, now: Instant) -> Vec<NodeLine> {
        let state = self.read();
        let line = |h: &Heartbeat, state: &'static str, last_heard_ms: u64| NodeLine {
            node: h.from,
            cluster_addr: h.cluster_addr.clone(),
            state,
            last_heard_ms,
            groups: h.groups,
            users: h.users,
            connections: h.connections,
        };
        let mut lines = vec![line(&own, if own.draining { "draining" } else { "self" }, 0)];
        let mut peers: Vec<_> = state.peers.iter().collect();
        peers.sort_by_key(|(node, _)| **node);
        for (node, peer) in peers {
            let heard = peer.last_heard.map_or(0, |t| now.duration_since(t).as_millis() as u64);
            match &peer.heartbeat {
                Some(h) => {
                    let label = match (peer.up, h.draining) {
                        (false, _) => "down",
                        (true, true) => "draining",
                        (true, false) => "up",
                    };
                    lines.push(line(h, label, heard));
                }
                None => lines.push(NodeLine {
                    node: *node,
                    cluster_addr: String::new(),
                    state: "joining",
                    last_heard_ms: 0,
                    groups: 0,
                    users: 0,
                    connections: 0,
                }),
            }
        }
        lines
    }

    /// The node actors of every connected peer, up or not (heartbeats go to all of them).
    pub fn connected(&self) -> Vec<ActorRef<ClusterMsg>> {
        self.read().peers.values().map(|p| p.actor.clone()).collect()
    }

    /// Recomputes the placement set; true if it changed.
    fn replace(&self, state: &mut State) -> bool {
        let mut placement: Vec<NodeId> = state
            .peers
            .iter()
            .filter(|(_, p)| p.up && !p.heartbeat.as_ref().is_some_and(|h| h.draining))
            .map(|(node, _)| *node)
            .collect();
        if !self.is_draining() {
            placement.push(self.me);
        }
        placement.sort();
        if placement == state.placement {
            return false;
        }
        tracing::info!(nodes = ?placement, "placement changed");
        state.placement = placement;
        true
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// The least a starting node waits before placing groups, for transitive connections.
const SETTLE_AT_LEAST: Duration = Duration::from_secs(1);

impl Cluster for Membership {
    fn owner(&self, group: GroupId) -> Option<NodeId> {
        // Empty only if this node drains while no other is up: then it keeps its groups,
        // since there is nowhere to move them.
        let state = self.read();
        if !state.settled {
            return None;
        }
        Some(place(group, state.placement.iter().copied()).unwrap_or(self.me))
    }

    fn peers(&self) -> Vec<NodeId> {
        // Every connected node, even one not heard from yet or marked down: a delivery that
        // turns out useless costs little, one withheld from a live node is a missed event.
        self.read().peers.keys().copied().collect()
    }

    fn send(&self, node: NodeId, message: NodeMessage) -> bool {
        let known = self.read().peers.get(&node).map(|peer| peer.actor.clone());
        let message = match known {
            Some(actor) => match actor.cast(ClusterMsg::Peer(message)) {
                Ok(()) => return true,
                Err(ractor::MessagingErr::SendErr(ClusterMsg::Peer(message))) => message,
                Err(_) => return false,
            },
            // Not added by a tick yet (it connected a moment ago): look it up directly.
            None => message,
        };
        // The session we knew was replaced (two nodes dialed each other at once and one
        // connection lost the election), or we never knew it: the node's actor may be
        // reachable through another.
        for cell in ractor::pg::get_members(&super::node_group(node)) {
            if cell.get_id().is_local() {
                continue;
            }
            let actor: ActorRef<ClusterMsg> = ActorRef::from(cell);
            if actor.cast(ClusterMsg::Peer(message.clone())).is_ok() {
                if let Some(peer) = self.write().peers.get_mut(&node) {
                    peer.actor = actor;
                }
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ractor::{Actor, ActorProcessingErr};

    struct Sink;

    impl Actor for Sink {
        type Msg = ClusterMsg;
        type State = ();
        type Arguments = ();
        async fn pre_start(&self, _: ActorRef<ClusterMsg>, _: ()) -> Result<(), ActorProcessingErr> {
            Ok(())
        }
    }

    async fn peer() -> ActorRef<ClusterMsg> {
        Actor::spawn(None, Sink, ()).await.expect("spawn").0
    }

    fn beat(from: u16, draining: bool) -> Heartbeat {
        Heartbeat {
            from: NodeId(from),
            cluster_addr: format!("127.0.0.1:{}", 7900 + from),
            draining,
            groups: 0,
            users: 0,
            connections: 0,
        }
    }

    fn placement(m: &Membership) -> Vec<NodeId> {
        m.read().placement.clone()
    }

    const DOWN: Duration = Duration::from_secs(3);

    #[tokio::test]
    async fn a_peer_counts_once_heard_and_goes_down_after_silence() {
        let m = Membership::new(NodeId(1), "127.0.0.1:7901".into(), DOWN);
        let (two, t0) = (peer().await, Instant::now());
        assert!(!m.tick(vec![(NodeId(2), two.clone())], t0).placement_changed, "connected is not yet up");
        assert_eq!(placement(&m), [NodeId(1)]);
        assert!(m.heard(beat(2, false), t0));
        assert_eq!(placement(&m), [NodeId(1), NodeId(2)]);
        assert_eq!(m.peers(), [NodeId(2)]);
        assert_eq!(m.up_addresses(), ["127.0.0.1:7902"]);
        // Ticks keep coming on time; the peer stays silent past the deadline.
        let mut now = t0;
        for _ in 0..6 {
            now += Duration::from_millis(500);
            m.tick(vec![(NodeId(2), two.clone())], now);
        }
        assert_eq!(placement(&m), [NodeId(1), NodeId(2)], "3 s is not yet past the deadline");
        now += Duration::from_millis(500);
        assert!(m.tick(vec![(NodeId(2), two.clone())], now).placement_changed, "marked down");
        assert_eq!(placement(&m), [NodeId(1)]);
        assert_eq!(m.peers(), [NodeId(2)], "still connected: deliveries still go");
        assert!(m.heard(beat(2, false), now), "a heartbeat brings it back");
        assert_eq!(placement(&m), [NodeId(1), NodeId(2)]);
    }

    #[tokio::test]
    async fn a_starting_node_places_nothing_until_it_knows_who_is_there() {
        let m = Membership::new(NodeId(1), "a".into(), DOWN);
        let (two, t0) = (peer().await, Instant::now());
        m.tick(vec![(NodeId(2), two.clone())], t0);
        assert_eq!(m.owner(GroupId(1)), None, "connected to a node not heard yet");
        m.heard(beat(2, false), t0);
        m.tick(vec![(NodeId(2), two.clone())], t0 + Duration::from_millis(500));
        assert_eq!(m.owner(GroupId(1)), None, "heard everyone, but others may still connect");
        m.tick(vec![(NodeId(2), two.clone())], t0 + Duration::from_millis(1100));
        assert!(m.owner(GroupId(1)).is_some());
        let alone = Membership::new(NodeId(1), "a".into(), DOWN);
        alone.tick(Vec::new(), t0 + Duration::from_secs(1));
        assert_eq!(alone.owner(GroupId(1)), None);
        alone.tick(Vec::new(), t0 + DOWN + Duration::from_millis(10));
        assert_eq!(alone.owner(GroupId(1)), Some(NodeId(1)), "nobody came: this node takes everything");
    }

    #[tokio::test]
    async fn a_node_that_was_frozen_does_not_declare_everyone_dead() {
        let m = Membership::new(NodeId(1), "a".into(), DOWN);
        let (two, t0) = (peer().await, Instant::now());
        m.tick(vec![(NodeId(2), two.clone())], t0);
        m.heard(beat(2, false), t0);
        // Our own process stood still for 10 s: the next tick is very late.
        let later = t0 + Duration::from_secs(10);
        let tick = m.tick(vec![(NodeId(2), two.clone())], later);
        assert!(!tick.placement_changed, "no one is marked down");
        assert!(tick.stalled, "and the node knows it was frozen");
        assert_eq!(placement(&m), [NodeId(1), NodeId(2)]);
    }

    #[tokio::test]
    async fn draining_nodes_take_no_groups_and_disconnected_ones_vanish() {
        let m = Membership::new(NodeId(1), "a".into(), DOWN);
        let (two, three, now) = (peer().await, peer().await, Instant::now() + DOWN);
        m.tick(vec![(NodeId(2), two.clone()), (NodeId(3), three.clone())], now);
        m.heard(beat(2, false), now);
        m.heard(beat(3, false), now);
        assert_eq!(placement(&m), [NodeId(1), NodeId(2), NodeId(3)]);
        assert!(m.heard(beat(3, true), now), "node 3 drains");
        assert_eq!(placement(&m), [NodeId(1), NodeId(2)]);
        assert_eq!(m.peers().len(), 2, "a draining node still gets deliveries for its connections");
        assert!(m.start_draining());
        assert!(!m.start_draining(), "once");
        assert_eq!(placement(&m), [NodeId(2)]);
        for g in 0..100 {
            assert_eq!(m.owner(GroupId(g)), Some(NodeId(2)));
        }
        assert!(m.tick(vec![(NodeId(3), three)], now).placement_changed, "node 2's session closed");
        assert!(placement(&m).is_empty());
        assert_eq!(m.owner(GroupId(7)), Some(NodeId(1)), "with nowhere to go, a draining node keeps its groups");
        let lines = m.nodes(beat(1, true), now);
        assert_eq!(lines.iter().map(|l| (l.node.0, l.state)).collect::<Vec<_>>(), [(1, "draining"), (3, "draining")]);
    }
}
