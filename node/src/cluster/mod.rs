//! Joining several nodes into one system with `ractor_cluster`.
//!
//! Each node runs a `ractor_cluster` node server (authenticated by the shared secret, in
//! transitive mode so that knowing one node is enough to meet all) and one node actor,
//! which joins the process group [`node_group`]`(id)`. `ractor_cluster`
//! mirrors process groups across connected nodes, so every node sees every other node's
//! actor as a remote actor it can send to; that actor is the single door between nodes:
//! group requests, deliveries, replies and heartbeats all go through it, encoded by
//! [`schema::codec`].
//!
//! * [`membership`]: who is up, the placement set, and the [`actors::cluster::Cluster`]
//!   implementation the actors route with.
//! * This module: the node actor, the heartbeat tick and the seed dialer.

pub mod membership;

use crate::config::ClusterConfig;
use actors::System;
use membership::Membership;
use ractor::message::{BoxedDowncastErr, SerializedMessage};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::node::NodeConnectionMode;
use ractor_cluster::{NodeServer, NodeServerMessage};
use schema::NodeId;
use schema::cluster::{GroupEnvelope, Heartbeat, NodeMessage};
use schema::codec;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The process group of one node's actor, so a node is found by its id.
pub fn node_group(node: NodeId) -> String {
    format!("troupe.node.{}", node.0)
}

/// What the node actor handles.
pub enum ClusterMsg {
    /// A message from another node (the only variant that crosses the network).
    Peer(NodeMessage),
    /// Time to send heartbeats and look for silent peers.
    Tick,
}

impl ractor::Message for ClusterMsg {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        match self {
            ClusterMsg::Peer(message) => {
                let args = codec::encode(&message).map_err(|_| BoxedDowncastErr)?;
                Ok(SerializedMessage::Cast { variant: String::new(), args, metadata: None })
            }
            ClusterMsg::Tick => Err(BoxedDowncastErr),
        }
    }

    fn deserialize(bytes: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        // A frame that does not decode is refused here, before any actor sees it; ractor
        // drops it and logs.
        match bytes {
            SerializedMessage::Cast { args, .. } => {
                codec::decode(&args).map(ClusterMsg::Peer).map_err(|_| BoxedDowncastErr)
            }
            _ => Err(BoxedDowncastErr),
        }
    }
}

/// Why the cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The shared secret is empty.
    #[error("cluster.secret must be set when cluster.listen is")]
    NoSecret,
    /// Each node would have its own data: a cluster needs a shared store.
    #[error("a cluster needs a shared store (--postgres or --scylla), not the embedded one")]
    EmbeddedStore,
    /// Heartbeats too slow for the deadline: a live node would be taken for dead.
    #[error("cluster.heartbeat_ms ({heartbeat_ms}) must be at most a third of cluster.down_after_ms ({down_after_ms})")]
    Timing {
        /// The heartbeat period.
        heartbeat_ms: u64,
        /// The silence deadline.
        down_after_ms: u64,
    },
    /// The other nodes would be told to dial 0.0.0.0 or [::].
    #[error("--cluster-listen must name this node's own address, not {0}")]
    Unspecified(std::net::IpAddr),
    /// An actor could not be spawned.
    #[error("spawn: {0}")]
    Spawn(#[from] ractor::SpawnErr),
}

/// A running cluster membership.
pub struct ClusterHandle {
    /// The view the actors route with.
    pub membership: Arc<Membership>,
    system: Arc<System>,
    node_actor: ActorRef<ClusterMsg>,
    server: ActorRef<NodeServerMessage>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ClusterHandle {
    /// This node's own heartbeat, as it would send it now.
    pub fn own_heartbeat(&self) -> Heartbeat {
        heartbeat(&self.system, &self.membership)
    }

    /// Stops taking groups and hands off the ones here; resolves when no group actor is
    /// left (not even one finishing a handoff) or `timeout` passes, with the number still
    /// here.
    pub async fn drain(&self, timeout: Duration) -> usize {
        if self.membership.start_draining() {
            tracing::info!(node = %self.membership.me(), "draining: handing groups to the other nodes");
            // Tell the others at once rather than at the next tick.
            let _ = self.node_actor.cast(ClusterMsg::Tick);
        }
        let deadline = Instant::now() + timeout;
        loop {
            self.system.rebalance();
            let left = self.system.group_actors();
            if left == 0 || Instant::now() >= deadline {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Leaves the cluster: stops the node actor and the node server.
    pub fn stop(&self) {
        for task in &self.tasks {
            task.abort();
        }
        self.node_actor.stop(None);
        self.server.stop(None);
    }
}

/// Starts the node server on `listen`, joins the system to the cluster and starts dialing
/// the seeds.
pub async fn start(
    config: &ClusterConfig,
    listen: SocketAddr,
    system: Arc<System>,
) -> Result<ClusterHandle, ClusterError> {
    if config.secret.is_empty() {
        return Err(ClusterError::NoSecret);
    }
    if config.heartbeat_ms == 0 || config.heartbeat_ms * 3 > config.down_after_ms {
        return Err(ClusterError::Timing { heartbeat_ms: config.heartbeat_ms, down_after_ms: config.down_after_ms });
    }
    // The listen address is also what this node tells the others to dial.
    if listen.ip().is_unspecified() {
        return Err(ClusterError::Unspecified(listen.ip()));
    }
    let me = system.node;
    let down_after = Duration::from_millis(config.down_after_ms);
    let membership = Arc::new(Membership::new(me, listen.to_string(), down_after));
    let server = NodeServer::new(
        listen.port(),
        config.secret.clone(),
        format!("troupe-{}", me.0),
        listen.ip().to_string(),
        None,
        Some(NodeConnectionMode::Transitive),
    )
    .with_listen_addr(listen.ip());
    let (server, _) = Actor::spawn(None, server, ()).await?;
    let node = NodeActor { system: system.clone(), membership: membership.clone(), lanes: request_lanes(&system) };
    let (node_actor, _) = Actor::spawn(None, node, ()).await?;
    ractor::pg::join(node_group(me), vec![node_actor.get_cell()]);
    system.join_cluster(membership.clone());

    let ticker = {
        let node_actor = node_actor.clone();
        let period = Duration::from_millis(config.heartbeat_ms);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if node_actor.cast(ClusterMsg::Tick).is_err() {
                    return;
                }
            }
        })
    };
    let mut tasks = vec![ticker];
    for seed in &config.seeds {
        if seed.as_str() != listen.to_string() {
            tasks.push(tokio::spawn(dial(seed.clone(), server.clone(), membership.clone())));
        }
    }
    tracing::info!(node = %me, %listen, seeds = ?config.seeds, "cluster listening");
    Ok(ClusterHandle { membership, system, node_actor, server, tasks })
}

/// Keeps a seed connected: dials it whenever no node that is up has its address, backing
/// off from 100 ms to 5 s between failed attempts.
async fn dial(seed: String, server: ActorRef<NodeServerMessage>, membership: Arc<Membership>) {
    const FIRST: Duration = Duration::from_millis(100);
    const MOST: Duration = Duration::from_secs(5);
    let mut backoff = FIRST;
    loop {
        if membership.up_addresses().contains(&seed) || connected_to(&server, &seed).await {
            backoff = FIRST;
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        match ractor_cluster::client_connect(&server, seed.as_str()).await {
            Ok(()) => tracing::debug!(%seed, "dialed seed"),
            Err(error) => tracing::debug!(%seed, %error, "seed not reachable"),
        }
        // Give the handshake time to finish before judging the attempt.
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MOST);
    }
}

/// Whether a session with the node that listens at `addr` is open (perhaps not heard from
/// yet): dialing it again would only make a duplicate connection for ractor_cluster to
/// resolve.
async fn connected_to(server: &ActorRef<NodeServerMessage>, addr: &str) -> bool {
    match ractor::call_t!(server, NodeServerMessage::GetSessions, 1000) {
        Ok(sessions) => sessions.values().any(|s| s.peer_name.as_ref().is_some_and(|p| p.connection_string == addr)),
        Err(_) => false,
    }
}

fn heartbeat(system: &System, membership: &Membership) -> Heartbeat {
    let (users, connections) = system.fanout.counts();
    Heartbeat {
        from: system.node,
        cluster_addr: membership.cluster_addr().to_owned(),
        draining: membership.is_draining(),
        groups: system.groups.len() as u32,
        users: users as u32,
        connections: connections as u32,
    }
}

/// The node actor: the door between this node and the others.
struct NodeActor {
    system: Arc<System>,
    membership: Arc<Membership>,
    /// Where requests for this node's groups wait their turn (see [`request_lanes`]).
    lanes: Vec<mpsc::UnboundedSender<GroupEnvelope>>,
}

/// Lanes for requests from other nodes, each served by its own task. Handing a request to
/// a group actor can wait (the actor may have to start, and a start reads the store), and
/// the node actor must never wait: it carries the heartbeats, and a node whose heartbeats
/// stall is taken for dead. A group always uses the same lane, so its requests keep their
/// order; a group that is slow to start holds up only the groups in its lane.
fn request_lanes(system: &Arc<System>) -> Vec<mpsc::UnboundedSender<GroupEnvelope>> {
    (0..REQUEST_LANES)
        .map(|_| {
            let (tx, mut rx) = mpsc::unbounded_channel::<GroupEnvelope>();
            let system = Arc::downgrade(system);
            tokio::spawn(async move {
                while let Some(envelope) = rx.recv().await {
                    let Some(system) = system.upgrade() else { return };
                    serve(&system, envelope).await;
                }
            });
            tx
        })
        .collect()
}

/// How many [`request_lanes`] a node runs.
const REQUEST_LANES: usize = 16;

/// Runs a request against the group's actor here; errors go back to the asker.
async fn serve(system: &Arc<System>, envelope: GroupEnvelope) {
    let to = envelope.reply_to;
    if let Err(error) = system.to_local_group(envelope).await {
        // With its retry-after (`overloaded`), counted like every error answer.
        system.answer_error(&to, &error);
    }
}

impl Actor for NodeActor {
    type Msg = ClusterMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<ClusterMsg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(&self, _: ActorRef<ClusterMsg>, message: ClusterMsg, _: &mut ()) -> Result<(), ActorProcessingErr> {
        match message {
            ClusterMsg::Tick => {
                if self.membership.tick(connected_peers(), Instant::now()).stalled {
                    // Frozen for longer than it takes the others to replace us: our group
                    // actors may have been deposed and hold stale state. Restart them all
                    // (a write would be fenced anyway; this also stops stale reads).
                    tracing::warn!("this node was frozen; restarting its group actors");
                    self.system.restart_groups();
                }
                // Every tick, not only when the placement changes: a request forwarded by a
                // node whose view was behind may have started an actor here for a group
                // that belongs elsewhere; this hands it on within one tick.
                self.system.rebalance();
                let beat = NodeMessage::Heartbeat(heartbeat(&self.system, &self.membership));
                for peer in self.membership.connected() {
                    let _ = peer.cast(ClusterMsg::Peer(beat.clone()));
                }
            }
            ClusterMsg::Peer(NodeMessage::Heartbeat(beat)) => {
                if self.membership.heard(beat, Instant::now()) {
                    self.system.rebalance();
                }
            }
            ClusterMsg::Peer(NodeMessage::Deliver(delivery)) => self.system.apply_remote(delivery),
            ClusterMsg::Peer(NodeMessage::Interest { group, node, wanted, ack, stamp }) => {
                self.system.interest(group, node, wanted, ack, stamp);
            }
            ClusterMsg::Peer(NodeMessage::InterestAck { ack }) => self.system.interest_acked(ack),
            ClusterMsg::Peer(NodeMessage::Group(envelope)) => {
                // Unknown (this node just started): the sender thinks it is here; serve it.
                let owner = self.system.owner(envelope.group).unwrap_or(self.system.node);
                if owner != self.system.node {
                    // The sender's view is behind ours: pass it on once.
                    use actors::cluster::Cluster;
                    if self.membership.send(owner, NodeMessage::Forwarded(envelope.clone())) {
                        return Ok(());
                    }
                }
                self.enqueue(envelope);
            }
            ClusterMsg::Peer(NodeMessage::Forwarded(envelope)) => self.enqueue(envelope),
            ClusterMsg::Peer(NodeMessage::FaceToFace(envelope)) => {
                // Served where it lands, like a forwarded group request: a code's actor
                // starts in microseconds, but not on this actor's turn.
                let system = self.system.clone();
                tokio::spawn(async move {
                    let to = envelope.reply_to;
                    if let Err(error) = system.to_local_face(envelope).await {
                        system.answer_error(&to, &error);
                    }
                });
            }
        }
        Ok(())
    }
}

impl NodeActor {
    fn enqueue(&self, envelope: GroupEnvelope) {
        let lane = &self.lanes[(envelope.group.0 % self.lanes.len() as u64) as usize];
        if let Err(mpsc::error::SendError(envelope)) = lane.send(envelope) {
            let to = envelope.reply_to;
            let bytes =
                schema::frames::server::encode_error(to.request, schema::ErrorCode::Unavailable, "shutting down");
            self.system.reply(&to, bytes.into());
        }
    }
}

/// The node actors of other nodes that `ractor_cluster` currently shows, by node id.
fn connected_peers() -> Vec<(NodeId, ActorRef<ClusterMsg>)> {
    let mut peers = Vec::new();
    for group in ractor::pg::which_groups() {
        let Some(id) = group.strip_prefix("troupe.node.").and_then(|id| id.parse::<u16>().ok()) else {
            continue;
        };
        if let Some(cell) = ractor::pg::get_members(&group).into_iter().find(|c| !c.get_id().is_local()) {
            peers.push((NodeId(id), ActorRef::from(cell)));
        }
    }
    peers
}

#[cfg(test)]
mod tests {
    use super::*;
    use ractor::Message;
    use schema::cluster::NodeDelivery;
    use schema::{ConnId, UserId};

    #[test]
    fn node_messages_cross_the_wire_and_garbage_is_refused() {
        let message =
            NodeMessage::Deliver(NodeDelivery::Reply { user: UserId(7), conn: ConnId(9), event: b"{}".to_vec() });
        let wire = ClusterMsg::Peer(message.clone()).serialize().expect("serializable");
        match ClusterMsg::deserialize(wire) {
            Ok(ClusterMsg::Peer(back)) => assert_eq!(back, message),
            _ => panic!("round trip failed"),
        }
        assert!(ClusterMsg::Tick.serialize().is_err(), "local ticks never cross the wire");
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in 0..2000usize {
            let args: Vec<u8> = (0..len % 97)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            // Must not panic; most are refused.
            let _ = ClusterMsg::deserialize(SerializedMessage::Cast { variant: String::new(), args, metadata: None });
        }
    }
}
