//! One node's actor system: the store, the fan-out step, the directories of live actors,
//! and accounts, shared by every session.

use crate::accounts::Accounts;
use crate::cache::{Cache, NoCache};
use crate::cluster::Cluster;
use crate::config::ActorsConfig;
use crate::directory::{Directory, DirectoryError};
use crate::error::ApiError;
use crate::facetoface::code::{self as face_code, FaceCodeMsg};
use crate::fanout::Fanout;
use crate::group::{self, GroupMsg, GroupSnapshot};
use crate::outbox::Outbox;
use crate::session::Session;
use crate::store::Store;
use crate::user::{self, UserMsg, UserSnapshot};
use bytes::Bytes;
use schema::cluster::{FaceEnvelope, GroupEnvelope, NodeDelivery, NodeMessage, ReplyTo};
use schema::frames::server as wire;
use schema::{ConnId, GroupId, NodeId, UserId};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;
use tokio::sync::oneshot;

/// The shared state of one node's actors.
pub struct System {
    /// Limits and timings.
    pub config: ActorsConfig,
    /// This node.
    pub node: NodeId,
    /// The store every actor reads and writes.
    pub store: Arc<dyn Store>,
    /// The node-local fan-out step.
    pub fanout: Fanout,
    /// Live group actors.
    pub groups: Arc<Directory<GroupId, GroupMsg>>,
    /// Live user actors.
    pub users: Arc<Directory<UserId, UserMsg>>,
    /// When each connection's session ends (see [`crate::expiry`]).
    pub expiries: Arc<crate::expiry::Expiries>,
    /// Live face-to-face code actors, by code.
    pub faces: Arc<Directory<u16, FaceCodeMsg>>,
    /// Registration and login.
    pub accounts: Accounts,
    /// Rate limits shared by the node's connections (per user, per username).
    pub limits: NodeLimits,
    /// What the node counts for operators (`GET /metrics`).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// How many sends the node holds at once (see [`crate::admission`]).
    pub admission: Arc<crate::admission::Admission>,
    /// Where group actors run. A group actor's mailbox must not wait behind the thousands of
    /// connection tasks its own fan-outs wake, so group actors get a runtime (a thread) of
    /// their own when the node provides one.
    group_runtime: Option<tokio::runtime::Handle>,
    /// The other nodes, once this node has joined a cluster; unset on a single node.
    cluster: OnceLock<Arc<dyn Cluster>>,
    /// Copies of hot data, if the node has a cache.
    cache: OnceLock<Arc<dyn Cache>>,
    /// The key that signs media download URLs (every node of a cluster has the same).
    media_secret: OnceLock<Vec<u8>>,
    next_conn: AtomicU64,
    /// Group actors that have left the directory and are finishing (handing off, failing).
    pub(crate) leaving_groups: AtomicUsize,
    /// Groups whose owner this node told it wants no deliveries (none of their members was
    /// online here), with the owner told.
    unwanted: Mutex<HashMap<GroupId, NodeId>>,
    /// Sessions waiting for a group actor to take in their node's renewed interest.
    interest_waiters: Mutex<HashMap<u64, oneshot::Sender<()>>>,
    next_ack: AtomicU64,
    /// Group deliveries received from other nodes, for the console.
    pub remote_deliveries: AtomicU64,
}

/// Why the system could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A supervisor actor could not be spawned.
    #[error("spawn supervisor: {0}")]
    Spawn(#[from] ractor::SpawnErr),
}

/// One live actor in the console's listing.
#[derive(Debug, Clone, Serialize)]
pub struct ActorLine {
    /// `group` or `user`.
    pub kind: &'static str,
    /// The group or user id.
    pub id: u64,
    /// Messages sent and not yet handled.
    pub mailbox_depth: usize,
    /// The highest depth since the actor started.
    pub mailbox_peak: usize,
    /// Messages handled.
    pub handled: u64,
}

impl System {
    /// Starts the directories and the idle sweeper. Group actors run on `group_runtime` when
    /// given, else on the current runtime.
    pub async fn start(
        config: ActorsConfig,
        store: Arc<dyn Store>,
        group_runtime: Option<tokio::runtime::Handle>,
    ) -> Result<Arc<Self>, StartError> {
        let accounts =
            Accounts::new(store.clone(), config.password_cost, config.max_concurrent_hashes, config.session_ttl);
        let system = Arc::new(System {
            node: NodeId(config.node_id),
            store,
            fanout: Fanout::new(config.fanout_threads),
            groups: Directory::start("group").await?,
            users: Directory::start("user").await?,
            expiries: crate::expiry::Expiries::start(),
            faces: Directory::start("face_to_face_code").await?,
            accounts,
            limits: NodeLimits::new(&config.rate_limits),
            metrics: Arc::default(),
            admission: Arc::new(crate::admission::Admission::new(
                config.max_pending_sends,
                config.max_pending_sends_per_group,
                config.overload_retry_after,
            )),
            group_runtime,
            cluster: OnceLock::new(),
            cache: OnceLock::new(),
            media_secret: OnceLock::new(),
            next_conn: AtomicU64::new(1),
            leaving_groups: AtomicUsize::new(0),
            unwanted: Mutex::new(HashMap::new()),
            interest_waiters: Mutex::new(HashMap::new()),
            next_ack: AtomicU64::new(1),
            remote_deliveries: AtomicU64::new(0),
            config,
        });
        spawn_idle_sweeper(Arc::downgrade(&system), system.config.group_idle_after);
        spawn_red_packet_sweeper(Arc::downgrade(&system), system.config.red_packet_sweep_interval);
        crate::retention::spawn_sweeper(Arc::downgrade(&system), system.config.retention_sweep_interval);
        Ok(system)
    }

    /// A new connection's session and outgoing queue.
    pub fn open_session(self: &Arc<Self>) -> Session {
        let conn = ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed));
        let outbox = Arc::new(Outbox::new(conn, self.config.outbox_max_events));
        Session::new(self.clone(), outbox)
    }

    /// Makes this node part of a cluster: from now on groups are placed over its nodes.
    /// Called once, before clients connect; false if a cluster was set already.
    pub fn join_cluster(&self, cluster: Arc<dyn Cluster>) -> bool {
        self.cluster.set(cluster).is_ok()
    }

    /// Gives the node a cache. Called once, before clients connect; false if one was set.
    pub fn use_cache(&self, cache: Arc<dyn Cache>) -> bool {
        self.cache.set(cache).is_ok()
    }

    /// Sets the key that signs media download URLs. Called once, before clients connect;
    /// false if one was set.
    pub fn use_media_secret(&self, secret: Vec<u8>) -> bool {
        self.media_secret.set(secret).is_ok()
    }

    /// The key that signs media download URLs (empty until the node sets one: then no URL
    /// verifies).
    pub fn media_secret(&self) -> &[u8] {
        self.media_secret.get().map_or(&[], Vec::as_slice)
    }

    /// The node's cache ([`NoCache`] if it has none).
    pub fn cache(&self) -> &dyn Cache {
        match self.cache.get() {
            Some(cache) => cache.as_ref(),
            None => &NoCache,
        }
    }

    /// Whether the node has a cache (so callers can skip building what it would drop).
    pub fn has_cache(&self) -> bool {
        self.cache.get().is_some()
    }

    /// The node that runs `group`'s actor now; None while a node that just joined does not
    /// know yet.
    pub fn owner(&self, group: GroupId) -> Option<NodeId> {
        match self.cluster.get() {
            Some(cluster) => cluster.owner(group),
            None => Some(self.node),
        }
    }

    /// Hands a request to its group's actor, on this node or the one that owns the group.
    pub async fn to_group(self: &Arc<Self>, envelope: GroupEnvelope) -> Result<(), ApiError> {
        let Some(cluster) = self.cluster.get() else {
            return self.to_local_group(envelope).await;
        };
        // This node may not know the cluster yet (it just started), or a peer's connection
        // can be down for a moment (being replaced, or its node just died and the placement
        // has not caught up): wait a little for either to settle.
        for _ in 0..ROUTE_ATTEMPTS {
            match cluster.owner(envelope.group) {
                Some(owner) if owner == self.node => return self.to_local_group(envelope).await,
                Some(owner) if cluster.send(owner, NodeMessage::Group(envelope.clone())) => return Ok(()),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        Err(ApiError::Unavailable(format!("the node owning group {} is unreachable; retry", envelope.group)))
    }

    /// Hands a request to the group's actor on this node, starting it if needed, whatever
    /// the placement says (requests forwarded by another node end here, so a request hops
    /// at most once even while two nodes disagree about the owner).
    pub async fn to_local_group(self: &Arc<Self>, envelope: GroupEnvelope) -> Result<(), ApiError> {
        let group = envelope.group;
        let admitted = match envelope.command {
            schema::cluster::GroupCommand::Send { .. } => {
                let held = self.groups.get(&group).map_or(0, |entry| entry.gauge.load());
                Some(self.admission.admit(held)?)
            }
            _ => None,
        };
        let system = self.clone();
        self.groups
            .send(group, GroupMsg::Command(envelope, admitted), move |gauge, supervisor| async move {
                match system.group_runtime.clone() {
                    Some(runtime) => runtime
                        .spawn(group::activate(system, group, gauge, supervisor))
                        .await
                        .map_err(|e| ApiError::Internal(format!("group activation: {e}")))?,
                    None => group::activate(system, group, gauge, supervisor).await,
                }
            })
            .await
            .map_err(|e| match e {
                DirectoryError::Activation(e) => e,
                DirectoryError::Stopped => ApiError::Unavailable("the group is restarting; retry".into()),
            })
    }

    /// Hands a request to a face-to-face code's actor, on this node or the one the code is
    /// placed on.
    pub async fn to_face(self: &Arc<Self>, envelope: FaceEnvelope) -> Result<(), ApiError> {
        let Some(cluster) = self.cluster.get() else {
            return self.to_local_face(envelope).await;
        };
        for _ in 0..ROUTE_ATTEMPTS {
            match cluster.owner_of_face_code(envelope.code) {
                Some(owner) if owner == self.node => return self.to_local_face(envelope).await,
                Some(owner) if cluster.send(owner, NodeMessage::FaceToFace(envelope.clone())) => return Ok(()),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        Err(ApiError::Unavailable("the node serving this face-to-face code is unreachable; retry".into()))
    }

    /// Hands a request to the code's actor on this node, starting it if needed.
    pub async fn to_local_face(self: &Arc<Self>, envelope: FaceEnvelope) -> Result<(), ApiError> {
        let code = envelope.code;
        let system = self.clone();
        self.faces
            .send(code, FaceCodeMsg::Request(envelope), move |gauge, supervisor| {
                face_code::activate(system, code, gauge, supervisor)
            })
            .await
            .map_err(|e| match e {
                DirectoryError::Activation(e) => e,
                DirectoryError::Stopped => ApiError::Unavailable("the face-to-face code is restarting; retry".into()),
            })
    }

    /// Queues a group's `events` for every connection of `recipients`, on this node and on
    /// every other connected node except those in `unwanted` (nodes that said none of the
    /// group's members is online there): one message per node, never one per member.
    pub fn deliver(
        &self,
        group: GroupId,
        stamp: u64,
        recipients: &[UserId],
        events: &[Bytes],
        unwanted: &HashSet<NodeId>,
    ) {
        self.fanout.deliver(recipients, events);
        if let Some(cluster) = self.cluster.get() {
            let mut peers = cluster.peers();
            peers.retain(|node| !unwanted.contains(node));
            if peers.is_empty() {
                return;
            }
            let delivery = NodeDelivery::Fanout {
                group,
                from: self.node,
                stamp,
                recipients: recipients.to_vec(),
                events: events.iter().map(|e| e.to_vec()).collect(),
            };
            for node in peers {
                cluster.send(node, NodeMessage::Deliver(delivery.clone()));
            }
        }
    }

    /// Applies a delivery from another node. A group delivery that reaches nobody here
    /// makes this node tell the group's actor to stop sending it (see
    /// [`System::want_groups`] for how that is undone).
    pub fn apply_remote(&self, delivery: NodeDelivery) {
        let NodeDelivery::Fanout { group, from, stamp, .. } = &delivery else {
            self.fanout.apply(delivery);
            return;
        };
        let (group, from, stamp) = (*group, *from, *stamp);
        self.remote_deliveries.fetch_add(1, Ordering::Relaxed);
        // Marked before delivering: a member who connects meanwhile finds the mark and
        // asks again, so the "unwanted" can never overtake their arrival.
        self.lock_unwanted().insert(group, from);
        let handed = self.fanout.apply(delivery);
        if handed > 0 {
            self.lock_unwanted().remove(&group);
        } else if let Some(cluster) = self.cluster.get() {
            cluster.send(from, NodeMessage::Interest { group, node: self.node, wanted: false, ack: None, stamp });
        }
    }

    /// A member of these groups is now online here: asks each group this node had said it
    /// does not want to send again, and waits (up to a second) until each group actor has
    /// taken that in. Called before a session reads where the user stands, so every message
    /// is either in what it reads or delivered live.
    pub async fn want_groups(&self, groups: &[GroupId]) {
        let Some(cluster) = self.cluster.get() else { return };
        let renew: Vec<(GroupId, NodeId)> = {
            let mut unwanted = self.lock_unwanted();
            groups.iter().filter_map(|g| unwanted.remove(g).map(|owner| (*g, owner))).collect()
        };
        let mut waits = Vec::with_capacity(renew.len());
        for (group, owner) in renew {
            let ack = self.next_ack.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            self.interest_waiters.lock().unwrap_or_else(|e| e.into_inner()).insert(ack, tx);
            let asked = NodeMessage::Interest { group, node: self.node, wanted: true, ack: Some(ack), stamp: 0 };
            if cluster.send(owner, asked) {
                waits.push((ack, rx));
            } else {
                self.interest_waiters.lock().unwrap_or_else(|e| e.into_inner()).remove(&ack);
            }
        }
        for (ack, rx) in waits {
            if tokio::time::timeout(Duration::from_secs(1), rx).await.is_err() {
                self.interest_waiters.lock().unwrap_or_else(|e| e.into_inner()).remove(&ack);
            }
        }
    }

    /// Another node said whether it wants a group's deliveries: tells the group's actor if
    /// it runs here; with none running, there is nothing to change (a new actor sends to
    /// every node), so the answer goes back at once.
    pub fn interest(&self, group: GroupId, node: NodeId, wanted: bool, ack: Option<u64>, stamp: u64) {
        if let Some(entry) = self.groups.get(&group)
            && entry.actor.send_message(GroupMsg::Interest { node, wanted, ack, stamp }).is_ok()
        {
            return;
        }
        if let Some(ack) = ack {
            self.interest_taken(node, ack);
        }
    }

    /// Tells `node` that its interest `ack` has been taken in.
    pub fn interest_taken(&self, node: NodeId, ack: u64) {
        if let Some(cluster) = self.cluster.get() {
            cluster.send(node, NodeMessage::InterestAck { ack });
        }
    }

    /// A group actor took in this node's interest `ack`.
    pub fn interest_acked(&self, ack: u64) {
        if let Some(waiter) = self.interest_waiters.lock().unwrap_or_else(|e| e.into_inner()).remove(&ack) {
            let _ = waiter.send(());
        }
    }

    fn lock_unwanted(&self) -> std::sync::MutexGuard<'_, HashMap<GroupId, NodeId>> {
        self.unwanted.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a reply on the connection that asked, wherever it is.
    pub fn reply(&self, to: &ReplyTo, event: Bytes) {
        if to.node == self.node {
            self.fanout.reply(to.user, to.conn, event);
        } else if let Some(cluster) = self.cluster.get() {
            let delivery = NodeDelivery::Reply { user: to.user, conn: to.conn, event: event.to_vec() };
            cluster.send(to.node, NodeMessage::Deliver(delivery));
        }
    }

    /// Answers a request with its result, wherever the asking connection is.
    pub fn answer<T: Serialize>(&self, to: &ReplyTo, op: &str, result: &T) {
        self.reply(to, Bytes::from(wire::encode_reply(to.request, op, result)));
    }

    /// Answers a request with an error, wherever the asking connection is.
    pub fn answer_error(&self, to: &ReplyTo, error: &ApiError) {
        self.metrics.error(error.code());
        let event = wire::encode_error_retry(to.request, error.code(), &error.to_string(), error.retry_after_ms());
        self.reply(to, Bytes::from(event));
    }

    /// Asks every group actor on this node whose group the placement now gives to another
    /// node to hand it off. Called on every heartbeat tick and when the set of nodes changes.
    pub fn rebalance(&self) -> usize {
        let Some(cluster) = self.cluster.get() else { return 0 };
        let mut moved = 0;
        for (group, entry) in self.groups.snapshot() {
            let elsewhere = cluster.owner(group).is_some_and(|owner| owner != self.node);
            if elsewhere && entry.actor.send_message(GroupMsg::Handoff).is_ok() {
                moved += 1;
            }
        }
        moved
    }

    /// Group actors on this node, counting those that have left the directory but are
    /// still finishing a commit or passing requests on.
    pub fn group_actors(&self) -> usize {
        self.groups.len() + self.leaving_groups.load(Ordering::Relaxed)
    }

    /// Restarts every group actor on this node from the store (see [`GroupMsg::Restart`]).
    pub fn restart_groups(&self) {
        for (_, entry) in self.groups.snapshot() {
            let _ = entry.actor.send_message(GroupMsg::Restart);
        }
    }

    /// Hands a message to a user's actor, starting it if needed.
    pub async fn to_user(self: &Arc<Self>, user: UserId, message: UserMsg) -> Result<(), ApiError> {
        let system = self.clone();
        self.users
            .send(user, message, move |gauge, supervisor| user::activate(system, user, gauge, supervisor))
            .await
            .map_err(|e| match e {
                DirectoryError::Activation(e) => e,
                DirectoryError::Stopped => ApiError::Unavailable("the user actor is restarting; retry".into()),
            })
    }

    /// What a live group actor holds, for the console.
    pub async fn inspect_group(&self, group: GroupId) -> Option<GroupSnapshot> {
        let entry = self.groups.get(&group)?;
        let (tx, rx) = oneshot::channel();
        entry.actor.send_message(GroupMsg::Inspect(tx)).ok()?;
        tokio::time::timeout(Duration::from_secs(2), rx).await.ok()?.ok()
    }

    /// What a live user actor holds, for the console.
    pub async fn inspect_user(&self, user: UserId) -> Option<UserSnapshot> {
        let entry = self.users.get(&user)?;
        let (tx, rx) = oneshot::channel();
        entry.actor.send_message(UserMsg::Inspect(tx)).ok()?;
        tokio::time::timeout(Duration::from_secs(2), rx).await.ok()?.ok()
    }

    /// Every live group and user actor with its mailbox depth.
    pub fn actors(&self) -> Vec<ActorLine> {
        let groups = self.groups.snapshot().into_iter().map(|(id, e)| (self.groups.kind(), id.0, e.gauge));
        let users = self.users.snapshot().into_iter().map(|(id, e)| (self.users.kind(), id.0, e.gauge));
        groups
            .chain(users)
            .map(|(kind, id, gauge)| ActorLine {
                kind,
                id,
                mailbox_depth: gauge.depth(),
                mailbox_peak: gauge.peak(),
                handled: gauge.handled(),
            })
            .collect()
    }

    /// Stops every actor.
    pub async fn shutdown(&self) {
        self.groups.stop_all().await;
        self.users.stop_all().await;
        self.faces.stop_all().await;
    }
}

/// How many times (50 ms apart) a request waits for its group's owner to be known and
/// reachable before it is answered `unavailable`.
const ROUTE_ATTEMPTS: usize = 80;

/// Asks group actors that have been idle for `idle_after` to retire. One task for all
/// groups, so an idle group costs no timer.
fn spawn_idle_sweeper(system: Weak<System>, idle_after: Duration) {
    let period = (idle_after / 4).clamp(Duration::from_millis(50), Duration::from_secs(30));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(system) = system.upgrade() else {
                return;
            };
            let cutoff = crate::now_ms().saturating_sub(idle_after.as_millis() as u64);
            for (_, entry) in system.groups.snapshot() {
                if entry.gauge.depth() == 0 && entry.gauge.last_active_ms() <= cutoff {
                    let _ = entry.actor.send_message(GroupMsg::Retire);
                }
            }
        }
    });
}

/// The most due red packets one sweep takes on.
const RED_PACKETS_PER_SWEEP: usize = 256;

/// Looks for red packets that are due (a send to finish, a packet to expire) and hands each
/// to its group's actor, if this node owns the group (every node sweeps; each takes its
/// own groups, so a packet is looked at once however many nodes there are). A packet handed
/// on is not handed on again for a minute, while its group actor works on it.
fn spawn_red_packet_sweeper(system: Weak<System>, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(20)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut handed: HashMap<(u64, schema::RedPacketId), u64> = HashMap::new();
        loop {
            tick.tick().await;
            let Some(system) = system.upgrade() else { return };
            let now = crate::now_ms();
            handed.retain(|_, at| now.saturating_sub(*at) < 60_000);
            let due = match system.store.red_packets_due(now, RED_PACKETS_PER_SWEEP).await {
                Ok(due) => due,
                Err(error) => {
                    tracing::warn!(%error, "could not look for due red packets");
                    continue;
                }
            };
            for (due_at, group, packet) in due {
                if system.owner(group) != Some(system.node) || handed.contains_key(&(due_at, packet)) {
                    continue;
                }
                handed.insert((due_at, packet), now);
                let reply_to = ReplyTo { node: system.node, user: UserId(0), conn: ConnId(0), request: None };
                let command = schema::cluster::GroupCommand::RedPacketDue { packet, due_at };
                if let Err(error) = system.to_local_group(GroupEnvelope { group, reply_to, command }).await {
                    tracing::warn!(%group, %packet, %error, "could not hand a due red packet to its group");
                    // Out of the way of the others for a minute (the index is read oldest first).
                    let later = Some(now + 60_000);
                    let _ = system.store.reschedule_red_packet(packet, group, due_at, later).await;
                }
            }
        }
    });
}

/// The node-wide rate limits (the per-connection ones live in each session).
pub struct NodeLimits {
    /// `send` per user.
    pub user_sends: crate::limits::Limiter<UserId>,
    /// `join` and `join_face_to_face` per user.
    pub user_joins: crate::limits::Limiter<UserId>,
    /// `login` per username.
    pub username_logins: crate::limits::Limiter<String>,
}

impl NodeLimits {
    fn new(limits: &crate::limits::RateLimits) -> NodeLimits {
        NodeLimits {
            user_sends: crate::limits::Limiter::new(limits.user_sends),
            user_joins: crate::limits::Limiter::new(limits.user_joins),
            username_logins: crate::limits::Limiter::new(limits.username_logins),
        }
    }
}
