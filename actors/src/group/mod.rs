//! The group actor: one per active group on the node that owns it.
//!
//! Its mailbox is the group's serialization point. Membership changes are handled one at a
//! time and written through before the next is looked at, which is what makes the member
//! cap exact under any concurrency. Messages get their seq here, in mailbox order, and are
//! committed in batches: while one batch is being made durable, new sends queue up and go
//! together in the next commit (group commit), so a busy group does not pay one fsync per
//! message. After a commit the actor acks each sender, encodes each message event once,
//! and hands the shared bytes to the fan-out step with the member list.
//!
//! Reads of committed history do not come here; sessions read the store directly after a
//! membership check, so a slow reader never delays a group's writes.

pub mod create;
pub mod dedupe;
pub mod rules;

use crate::admission::Admitted;
use crate::directory::MailboxGauge;
use crate::error::ApiError;
use crate::redpacket::actor::{NewPacket, RedPacketMsg, Start as PacketStart};
use crate::store::{AddMemberOutcome, Fence, StoreError, WriteDone};
use crate::{System, now_ms, views};
use bytes::Bytes;
use dedupe::RecentIds;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};
use schema::cluster::{GroupCommand, GroupEnvelope, ReplyTo};
use schema::frames::client::RedPacketBody;
use schema::frames::server::{self as wire, AddMemberOutcome as AddLine, AddStatus, Event, LeaveReason};
use schema::frames::{MessageKind, Role};
use schema::records::{GroupRecord, MemberRecord, MessageRecord, UserGroupRecord};
use schema::{GroupId, NodeId, RedPacketId, Seq, UserId};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::oneshot;

/// What a group actor handles.
pub enum GroupMsg {
    /// A request from a member (counted in the mailbox gauge), with its admission if it is
    /// a send (held until the send is answered).
    Command(GroupEnvelope, Option<Admitted>),
    /// The outcome of the commit started for the in-flight batch.
    Committed(Result<(), StoreError>),
    /// The idle sweeper asks the actor to stop if it has nothing to do.
    Retire,
    /// The group belongs to another node now (one joined, or this one is draining): finish
    /// the commit under way, pass everything else on, and stop.
    Handoff,
    /// Start over from the store: this node was frozen and may have been deposed.
    Restart,
    /// Another node does (or does not) have members of this group online.
    Interest {
        /// The node.
        node: NodeId,
        /// Whether it wants the group's deliveries.
        wanted: bool,
        /// Answer the node once taken in.
        ack: Option<u64>,
        /// For `wanted: false`, the stamp of the delivery that reached nobody.
        stamp: u64,
    },
    /// The debug console asks what the actor holds.
    Inspect(oneshot::Sender<GroupSnapshot>),
    /// A red packet's actor has had nothing to do for a while, or found no packet: stop it
    /// if nothing is on its way to it (only this actor sends to it, so that is known here).
    PacketIdle(RedPacketId),
    /// A red packet's actor has the packet paid for: append its message (unless the log
    /// has it already) and ack the sender.
    RedPacketReady {
        /// The message, without its seq.
        record: MessageRecord,
        /// The sender's request (or nobody's, when the sweeper finishes a send).
        reply_to: ReplyTo,
    },
}

// Local only: requests from other nodes reach a group actor through its node's actor, which
// decodes a `NodeMessage`; this enum never crosses the network.
impl ractor::Message for GroupMsg {}

/// What the debug console shows of a group actor.
#[derive(Debug, Clone, Serialize)]
pub struct GroupSnapshot {
    /// The group.
    pub group: GroupId,
    /// Its name.
    pub name: String,
    /// Its members and roles.
    pub members: Vec<(UserId, Role)>,
    /// Its cap.
    pub max_members: u32,
    /// The last durable seq.
    pub last_seq: Seq,
    /// Messages waiting for the next commit.
    pub queued: usize,
    /// Messages in the commit under way.
    pub in_flight: usize,
    /// Remembered client_msg_ids.
    pub recent_ids: usize,
    /// The epoch this actor claimed.
    pub epoch: u64,
}

/// The group actor's behaviour (its data is [`GroupState`]).
pub struct GroupActor;

/// Everything a group actor holds.
pub struct GroupState {
    system: Arc<System>,
    gauge: Arc<MailboxGauge>,
    /// This actor's claim on the group; every write carries it.
    fence: Fence,
    record: GroupRecord,
    /// Days its messages are kept (0: forever); the store has it apart from `record`.
    retention_days: u32,
    members: BTreeMap<UserId, Role>,
    /// The member list handed to the fan-out step; rebuilt only when membership changes.
    recipients: Arc<[UserId]>,
    committed_seq: Seq,
    queued: Vec<Pending>,
    in_flight: Vec<Pending>,
    /// (sender, client_msg_id) of every message in `queued` and `in_flight`.
    pending_ids: HashSet<(UserId, String)>,
    /// Events emitted while a batch was being committed, delivered after its messages so
    /// every member sees messages and membership changes in the order they happened.
    deferred: Vec<(Arc<[UserId]>, Bytes)>,
    /// The member list when the batch in flight was started: its messages go to them.
    batch_recipients: Arc<[UserId]>,
    recent: RecentIds,
    dissolved: bool,
    /// Set once the actor is on its way out; it has left the directory, so new requests
    /// reach a successor.
    leaving: Option<Leaving>,
    /// Requests that arrived after a handoff while a commit was still under way: passed on
    /// once it is answered, so the new owner's messages never overtake this one's.
    held: Vec<GroupEnvelope>,
    /// Nodes that said no member of this group is online there: deliveries skip them.
    unwanted: HashSet<NodeId>,
    /// Deliveries made so far (each carries the count as its stamp).
    deliveries: u64,
    /// Per node, the delivery count when a member showed up there (a request came from
    /// it); a "wanted: false" about an earlier delivery is stale and ignored.
    present_since: HashMap<NodeId, u64>,
    /// The delivery count when membership last grew (anyone could be anywhere).
    grown_since: u64,
    /// The actors of this group's red packets in use.
    packets: HashMap<RedPacketId, PacketEntry>,
    /// Messages handed to packet actors and not yet handled by them.
    packet_work: Arc<AtomicUsize>,
}

/// A red packet's actor, with the count of messages passed to it and not yet handled.
struct PacketEntry {
    actor: ActorRef<RedPacketMsg>,
    work: Arc<AtomicUsize>,
}

/// The request that moves a queued message to the group's new owner: a red packet's message
/// goes back through its packet's actor (its body is not what a client sends).
fn pass_on_command(record: &MessageRecord) -> GroupCommand {
    if record.kind == MessageKind::RedPacket {
        let packet = crate::redpacket::packet_id(record.group, record.sender, &record.client_msg_id);
        return GroupCommand::PostRedPacket { packet };
    }
    GroupCommand::Send { client_msg_id: record.client_msg_id.clone(), kind: record.kind, body: record.body.clone() }
}

/// Why a group actor is on its way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leaving {
    /// A commit failed or another actor claimed the group: whatever reaches this one is
    /// answered `unavailable`, and the client's retry reaches the successor.
    Failed,
    /// The group moved to another node: what reaches this one is passed on to it.
    HandedOff,
}

struct Pending {
    record: MessageRecord,
    reply_to: ReplyTo,
    /// Resends of the same message that arrived while it was uncommitted.
    waiters: Vec<ReplyTo>,
    /// The send's place in the node's admission count, given back when this is dropped.
    _admitted: Option<Admitted>,
}

/// The most red packet actors one group keeps at once (each packet in use has one; idle
/// ones stop). Beyond it, requests for other packets are answered `unavailable`.
const MAX_PACKET_ACTORS: usize = 1024;

/// The most messages one commit carries.
const MAX_BATCH_MESSAGES: usize = 512;
/// About the most bytes one commit carries (a single larger message still goes alone).
const MAX_BATCH_BYTES: usize = 512 * 1024;

/// How many of the newest messages a starting group actor reads to remember their ids.
const RECENT_AT_START: usize = 100;

/// Loads a group from the store and starts its actor. `NotFound` if there is no such group.
pub async fn activate(
    system: Arc<System>,
    group: GroupId,
    gauge: Arc<MailboxGauge>,
    supervisor: Option<ActorCell>,
) -> Result<ActorRef<GroupMsg>, ApiError> {
    let store = &system.store;
    // Claim first, read second: everything read below is at least as new as the last write
    // of any earlier owner, since those writes either landed before the claim or are refused.
    let fence = store.claim_group(group).await?.ok_or_else(ApiError::group_not_found)?;
    // A dissolved group still starts: it answers `not_found` to everyone, but its red
    // packets must still expire and refund their senders.
    let record = store.group(group).await?.ok_or_else(ApiError::group_not_found)?;
    let retention_days = store.retention(group).await?.days;
    let mut members = BTreeMap::new();
    let mut after = None;
    loop {
        let page = store.members(group, after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.user);
        members.extend(page.iter().map(|m| (m.user, m.role)));
    }
    let committed_seq = store.last_seq(group).await?;
    // The newest messages' ids, so a resend of one of them is recognised even by a store
    // whose id index is written apart from the log (ScyllaDB: a crash between the two writes
    // leaves a logged, un-acked message without its index row).
    let mut recent = RecentIds::new(system.config.dedupe_cache_per_group);
    for message in store.messages_before(group, Seq::MAX, RECENT_AT_START).await? {
        recent.insert(message.sender, &message.client_msg_id, message.seq, message.ts);
    }
    let roles: Vec<(UserId, Role)> = members.iter().map(|(u, r)| (*u, *r)).collect();
    system.cache().owner_started(&record, committed_seq, &roles);
    let dissolved = record.dissolved;
    gauge.touch();
    let state = GroupState {
        recent,
        system: system.clone(),
        gauge,
        fence,
        record,
        retention_days,
        recipients: members.keys().copied().collect(),
        members,
        committed_seq,
        queued: Vec::new(),
        in_flight: Vec::new(),
        pending_ids: HashSet::new(),
        deferred: Vec::new(),
        batch_recipients: Arc::from([]),
        dissolved,
        leaving: None,
        held: Vec::new(),
        unwanted: HashSet::new(),
        deliveries: 0,
        present_since: HashMap::new(),
        grown_since: 0,
        packets: HashMap::new(),
        packet_work: Arc::new(AtomicUsize::new(0)),
    };
    let spawned = match supervisor {
        Some(supervisor) => Actor::spawn_linked(None, GroupActor, state, supervisor).await,
        None => Actor::spawn(None, GroupActor, state).await,
    };
    spawned.map(|(actor, _)| actor).map_err(|e| ApiError::Internal(format!("spawn group actor: {e}")))
}

impl Actor for GroupActor {
    type Msg = GroupMsg;
    type State = GroupState;
    type Arguments = GroupState;

    async fn pre_start(&self, _: ActorRef<GroupMsg>, state: GroupState) -> Result<GroupState, ActorProcessingErr> {
        Ok(state)
    }

    async fn post_stop(&self, _: ActorRef<GroupMsg>, state: &mut GroupState) -> Result<(), ActorProcessingErr> {
        // Drained, not stopped: what they hold is answered (a deposed owner's writes are
        // refused, so those answers are `unavailable` and the retries reach the successor).
        for packet in state.packets.values() {
            let _ = packet.actor.drain();
        }
        if state.leaving.is_some() {
            state.system.leaving_groups.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<GroupMsg>,
        message: GroupMsg,
        state: &mut GroupState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            GroupMsg::Command(envelope, admitted) => {
                state.gauge.leave();
                let reply_to = envelope.reply_to;
                // Whoever asks from a node has a connection there: it gets deliveries again.
                state.unwanted.remove(&reply_to.node);
                state.present_since.insert(reply_to.node, state.deliveries);
                match state.leaving {
                    Some(Leaving::Failed) => {
                        state.reply_error(&reply_to, &ApiError::Unavailable("the group is restarting; retry".into()));
                        return Ok(());
                    }
                    Some(Leaving::HandedOff) => {
                        if state.in_flight.is_empty() {
                            state.pass_on(envelope).await;
                        } else {
                            state.held.push(envelope);
                        }
                        return Ok(());
                    }
                    None => {}
                }
                let op = envelope.command.op();
                if let Err(error) = state.command(&myself, envelope, admitted).await {
                    state.reply_error(&reply_to, &error);
                    match error {
                        ApiError::GroupMoved => {
                            tracing::warn!(group = %state.record.id, epoch = state.fence.epoch, op, "deposed: another actor claimed the group");
                            state.leave(&myself, Leaving::Failed);
                        }
                        // A store write whose outcome is unknown (or a store that disagrees
                        // with memory): memory may be wrong now, so start over from the store.
                        ApiError::Internal(_) | ApiError::Unavailable(_) => {
                            tracing::warn!(group = %state.record.id, op, %error, "group request failed; restarting the actor");
                            state.leave(&myself, Leaving::Failed);
                        }
                        _ => {}
                    }
                }
            }
            GroupMsg::Committed(result) => {
                state.committed(&myself, result);
                if state.leaving == Some(Leaving::HandedOff) && state.in_flight.is_empty() {
                    state.pass_on_everything().await;
                    state.stop_when_settled(&myself);
                }
            }
            GroupMsg::Interest { node, wanted, ack, stamp } => {
                if wanted {
                    state.unwanted.remove(&node);
                    state.present_since.insert(node, state.deliveries);
                } else {
                    let since = state.present_since.get(&node).copied().unwrap_or(0).max(state.grown_since);
                    // Only a delivery made after the node's members last showed up counts
                    // (`since` is the count of deliveries made before that; stamps start at 1).
                    if stamp > since {
                        state.unwanted.insert(node);
                    }
                }
                if let Some(ack) = ack {
                    state.system.interest_taken(node, ack);
                }
            }
            GroupMsg::Restart => {
                if state.leaving.is_none() {
                    state.leave(&myself, Leaving::Failed);
                }
            }
            GroupMsg::RedPacketReady { record, reply_to } => match state.leaving {
                None => {
                    if let Err(error) = state.red_packet_ready(&myself, record, reply_to).await {
                        state.reply_error(&reply_to, &error);
                    }
                }
                // The new owner asks the packet's actor again; the message is never lost
                // with this actor (and the sweeper checks it was posted, in any case).
                Some(Leaving::HandedOff) => {
                    let envelope = GroupEnvelope { group: record.group, reply_to, command: pass_on_command(&record) };
                    if state.in_flight.is_empty() {
                        state.pass_on(envelope).await;
                    } else {
                        state.held.push(envelope);
                    }
                }
                Some(Leaving::Failed) => {
                    state.reply_error(&reply_to, &ApiError::Unavailable("the group is restarting; retry".into()));
                }
            },
            GroupMsg::PacketIdle(packet) => {
                let idle = state.packets.get(&packet).is_some_and(|p| p.work.load(Ordering::Acquire) == 0);
                if idle && let Some(entry) = state.packets.remove(&packet) {
                    entry.actor.stop(None);
                }
            }
            GroupMsg::Retire => {
                let idle = state.queued.is_empty()
                    && state.in_flight.is_empty()
                    && state.leaving.is_none()
                    && state.packet_work.load(Ordering::Acquire) == 0;
                if idle && state.system.groups.retire_if_idle(&state.record.id, myself.get_id()) {
                    myself.stop(None);
                }
            }
            GroupMsg::Handoff => {
                if state.leaving.is_none() {
                    tracing::debug!(group = %state.record.id, "handing the group off to its new node");
                    state.leave(&myself, Leaving::HandedOff);
                    // With a commit under way, what is queued waits for it (see `held`).
                    if state.in_flight.is_empty() {
                        state.pass_on_everything().await;
                    }
                }
            }
            GroupMsg::Inspect(reply) => {
                let _ = reply.send(state.snapshot());
            }
        }
        Ok(())
    }
}

impl GroupState {
    /// Takes the actor out of the directory, so new requests reach a successor, and stops
    /// it once the commit under way (if any) has been answered.
    fn leave(&mut self, myself: &ActorRef<GroupMsg>, why: Leaving) {
        if self.leaving.is_none() {
            self.system.leaving_groups.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.leaving = Some(why);
        self.system.groups.remove(&self.record.id, myself.get_id());
        if why == Leaving::Failed {
            self.refuse_queued(|_| true, &ApiError::Unavailable("the group is restarting; retry".into()));
        }
        self.stop_when_settled(myself);
    }

    /// Stops after the mailbox is drained, unless a commit is still to be answered (then
    /// `committed` calls this again).
    fn stop_when_settled(&self, myself: &ActorRef<GroupMsg>) {
        if self.in_flight.is_empty() && myself.drain().is_err() {
            myself.stop(None);
        }
    }

    /// After a handoff: passes queued sends and held requests to the new owner, in order.
    async fn pass_on_everything(&mut self) {
        for pending in std::mem::take(&mut self.queued) {
            self.pending_ids.remove(&(pending.record.sender, pending.record.client_msg_id.clone()));
            for to in std::iter::once(pending.reply_to).chain(pending.waiters) {
                let command = pass_on_command(&pending.record);
                self.pass_on(GroupEnvelope { group: pending.record.group, reply_to: to, command }).await;
            }
        }
        for envelope in std::mem::take(&mut self.held) {
            self.pass_on(envelope).await;
        }
    }

    /// Sends a request on to wherever the group lives now.
    async fn pass_on(&self, envelope: GroupEnvelope) {
        let to = envelope.reply_to;
        if let Err(error) = self.system.to_group(envelope).await {
            self.reply_error(&to, &error);
        }
    }

    async fn command(
        &mut self,
        myself: &ActorRef<GroupMsg>,
        envelope: GroupEnvelope,
        admitted: Option<Admitted>,
    ) -> Result<(), ApiError> {
        let to = envelope.reply_to;
        let from = to.user;
        match envelope.command {
            GroupCommand::Send { client_msg_id, kind, body } => {
                self.send(myself, to, client_msg_id, kind, body, admitted).await
            }
            GroupCommand::Info => {
                self.role_of(from)?;
                self.reply(&to, "group_info", &self.info());
                Ok(())
            }
            GroupCommand::Members { after, limit } => {
                self.role_of(from)?;
                let page = self.members_page(after, limit as usize);
                self.reply(&to, "members", &page);
                Ok(())
            }
            GroupCommand::Join => self.join(to).await,
            GroupCommand::AddMembers { users } => self.add_members(to, users).await,
            GroupCommand::Leave => {
                if self.role_of(from)? == Role::Owner {
                    return Err(ApiError::OwnerCannotLeave);
                }
                let count = self.remove(from, LeaveReason::Left).await?;
                self.reply(&to, "leave", &wire::MemberCountResult { member_count: count });
                Ok(())
            }
            GroupCommand::RemoveMember { user } => {
                let actor = self.role_of(from)?;
                let target = *self.members.get(&user).ok_or(ApiError::NotFound("member"))?;
                if user == from {
                    return Err(ApiError::Forbidden("to remove yourself, leave"));
                }
                if !rules::may_remove(actor, target) {
                    return Err(ApiError::Forbidden("your role may not remove this member"));
                }
                let count = self.remove(user, LeaveReason::Removed).await?;
                self.reply(&to, "remove_member", &wire::MemberCountResult { member_count: count });
                Ok(())
            }
            GroupCommand::SetRole { user, role } => self.set_role(to, user, role).await,
            GroupCommand::TransferOwnership { user } => self.transfer(to, user).await,
            GroupCommand::Update { name, open, retention_days } => self.update(to, name, open, retention_days).await,
            GroupCommand::Dissolve => self.dissolve(to).await,
            GroupCommand::GrabRedPacket { packet } => {
                self.role_of(from)?;
                self.pass_to_packet(myself, packet, RedPacketMsg::Grab { reply_to: to }).await
            }
            GroupCommand::RedPacketInfo { packet } => {
                self.role_of(from)?;
                self.pass_to_packet(myself, packet, RedPacketMsg::Info { reply_to: to }).await
            }
            GroupCommand::RedPacketDue { packet, due_at } => {
                self.pass_to_packet(myself, packet, RedPacketMsg::Due { due_at }).await
            }
            GroupCommand::PostRedPacket { packet } => {
                self.role_of(from)?;
                self.pass_to_packet(myself, packet, RedPacketMsg::Post { reply_to: to }).await
            }
            GroupCommand::FaceToFaceAdmit { users, view, confirm } => {
                self.face_to_face_admit(to, users, view, confirm).await
            }
        }
    }

    /// The caller's role; `not_found` for non-members, exactly as for a missing group.
    fn role_of(&self, user: UserId) -> Result<Role, ApiError> {
        if self.dissolved {
            return Err(ApiError::group_not_found());
        }
        self.members.get(&user).copied().ok_or_else(ApiError::group_not_found)
    }

    fn info(&self) -> wire::GroupInfo {
        views::group_info(&self.record, self.committed_seq, self.retention_days)
    }

    fn members_page(&self, after: Option<schema::UserId>, limit: usize) -> wire::MembersPage {
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut members: Vec<wire::MemberView> = self
            .members
            .range((start, Bound::Unbounded))
            .take(limit + 1)
            .map(|(&user, &role)| wire::MemberView { user, role })
            .collect();
        let next = if members.len() > limit {
            members.truncate(limit);
            members.last().map(|m| m.user)
        } else {
            None
        };
        wire::MembersPage { members, next }
    }

    // ---- messages ------------------------------------------------------------------

    async fn send(
        &mut self,
        myself: &ActorRef<GroupMsg>,
        to: ReplyTo,
        client_msg_id: String,
        kind: MessageKind,
        body: String,
        admitted: Option<Admitted>,
    ) -> Result<(), ApiError> {
        let sender = to.user;
        self.role_of(sender)?;
        if self.answered_duplicate(&to, &client_msg_id).await? {
            return Ok(());
        }
        if kind == MessageKind::RedPacket {
            return self.start_red_packet(myself, to, client_msg_id, &body).await;
        }
        let record = MessageRecord { group: self.record.id, seq: 0, sender, client_msg_id, kind, body, ts: now_ms() };
        self.enqueue(myself, record, to, admitted);
        Ok(())
    }

    /// Answers a resend of a message this group has (committed, or waiting to be); true if
    /// it was one.
    async fn answered_duplicate(&mut self, to: &ReplyTo, client_msg_id: &str) -> Result<bool, ApiError> {
        let sender = to.user;
        if let Some((seq, ts)) = self.recent.get(sender, client_msg_id) {
            self.ack(to, seq, ts, true);
            return Ok(true);
        }
        if self.pending_ids.contains(&(sender, client_msg_id.to_owned())) {
            // A resend of a message that is not committed yet: answer it with the original.
            let pending = self
                .queued
                .iter_mut()
                .chain(self.in_flight.iter_mut())
                .find(|p| p.record.sender == sender && p.record.client_msg_id == client_msg_id);
            if let Some(pending) = pending {
                pending.waiters.push(*to);
                return Ok(true);
            }
        }
        let group = self.record.id;
        if let Some((seq, ts)) = self.system.store.message_by_client_id(group, sender, client_msg_id).await? {
            self.recent.insert(sender, client_msg_id, seq, ts);
            self.ack(to, seq, ts, true);
            return Ok(true);
        }
        Ok(false)
    }

    /// Queues a new message for the next commit.
    fn enqueue(&mut self, myself: &ActorRef<GroupMsg>, record: MessageRecord, to: ReplyTo, admitted: Option<Admitted>) {
        self.pending_ids.insert((record.sender, record.client_msg_id.clone()));
        self.queued.push(Pending { record, reply_to: to, waiters: Vec::new(), _admitted: admitted });
        self.flush(myself);
        self.gauge.set_held(self.queued.len() + self.in_flight.len());
    }

    // ---- red packets -----------------------------------------------------------------

    /// A red packet is sent: its actor draws the shares, stores the packet and debits the
    /// sender, off this mailbox; then it hands the message back ([`GroupMsg::RedPacketReady`]).
    async fn start_red_packet(
        &mut self,
        myself: &ActorRef<GroupMsg>,
        to: ReplyTo,
        client_msg_id: String,
        body: &str,
    ) -> Result<(), ApiError> {
        let body: RedPacketBody =
            serde_json::from_str(body).map_err(|e| ApiError::InvalidField(format!("a red packet's body: {e}")))?;
        if body.count as usize > self.members.len() {
            return Err(ApiError::InvalidField(format!(
                "count must be at most the group's {} members",
                self.members.len()
            )));
        }
        let packet = crate::redpacket::packet_id(self.record.id, to.user, &client_msg_id);
        let new = NewPacket {
            sender: to.user,
            client_msg_id,
            total: body.total,
            count: body.count,
            kind: body.kind,
            greeting: body.greeting,
        };
        self.pass_to_packet(myself, packet, RedPacketMsg::Create { new, reply_to: to }).await
    }

    /// The packet's message, once it is paid for.
    async fn red_packet_ready(
        &mut self,
        myself: &ActorRef<GroupMsg>,
        record: MessageRecord,
        to: ReplyTo,
    ) -> Result<(), ApiError> {
        // A sender removed meanwhile posts nothing; the packet expires and is refunded.
        self.role_of(to.user)?;
        if self.answered_duplicate(&to, &record.client_msg_id).await? {
            return Ok(());
        }
        self.enqueue(myself, MessageRecord { ts: now_ms(), ..record }, to, None);
        Ok(())
    }

    /// Hands a message to a packet's actor, starting it if needed.
    async fn pass_to_packet(
        &mut self,
        myself: &ActorRef<GroupMsg>,
        packet: RedPacketId,
        message: RedPacketMsg,
    ) -> Result<(), ApiError> {
        if !self.packets.contains_key(&packet) && self.packets.len() >= MAX_PACKET_ACTORS {
            return Err(ApiError::Unavailable("too many red packets are busy in this group; retry".into()));
        }
        let mut message = message;
        // Twice at most: a packet actor that stopped after a fault is replaced once.
        for _ in 0..2 {
            if !self.packets.contains_key(&packet) {
                let work = Arc::new(AtomicUsize::new(0));
                let start = PacketStart {
                    system: self.system.clone(),
                    group_actor: myself.clone(),
                    fence: self.fence,
                    id: packet,
                    work: vec![self.packet_work.clone(), work.clone()],
                };
                let actor = crate::redpacket::actor::spawn(start).await?;
                self.packets.insert(packet, PacketEntry { actor, work });
            }
            let Some(entry) = self.packets.get(&packet) else { break };
            for counter in [&self.packet_work, &entry.work] {
                counter.fetch_add(1, Ordering::AcqRel);
            }
            match entry.actor.send_message(message) {
                Ok(()) => return Ok(()),
                Err(error) => {
                    for counter in [&self.packet_work, &entry.work] {
                        counter.fetch_sub(1, Ordering::AcqRel);
                    }
                    self.packets.remove(&packet);
                    match error {
                        ractor::MessagingErr::SendErr(back) => message = back,
                        _ => break,
                    }
                }
            }
        }
        Err(ApiError::Unavailable("the red packet is restarting; retry".into()))
    }

    /// Starts committing everything queued, unless a commit is under way (its completion
    /// calls this again). The store reports the outcome straight into this actor's mailbox
    /// (no task in between); acks and deliveries then go out from here, on a runtime thread,
    /// where waking connection tasks is cheapest.
    fn flush(&mut self, myself: &ActorRef<GroupMsg>) {
        if self.queued.is_empty() || !self.in_flight.is_empty() {
            return;
        }
        // One commit carries a bounded batch: stores cap a transaction's size (ScyllaDB
        // refuses batches over 1 MiB by default), and a huge batch would delay every ack in it.
        let mut size = 0;
        let take = self
            .queued
            .iter()
            .take_while(|p| {
                size += p.record.body.len() + p.record.client_msg_id.len() + 64;
                size <= MAX_BATCH_BYTES
            })
            .count()
            .clamp(1, MAX_BATCH_MESSAGES);
        let rest = self.queued.split_off(take.min(self.queued.len()));
        self.in_flight = std::mem::replace(&mut self.queued, rest);
        self.batch_recipients = self.recipients.clone();
        let after = self.committed_seq;
        let group = self.record.id;
        let mut records = Vec::with_capacity(self.in_flight.len());
        let mut marks: HashMap<UserId, Seq> = HashMap::new();
        for (i, pending) in self.in_flight.iter_mut().enumerate() {
            pending.record.seq = after + 1 + i as Seq;
            marks.insert(pending.record.sender, pending.record.seq);
            records.push(pending.record.clone());
        }
        // Sending moves the sender's read mark. Submitted ahead of the append, it is durable
        // by the time the sender is acked; it is a separate partition, so a failure here only
        // leaves a mark behind (more unread), never a message.
        let marks_done: WriteDone = Box::new(move |result| {
            if let Err(error) = result {
                tracing::warn!(%group, %error, "could not move the senders' read marks");
            }
        });
        self.system.store.advance_read_marks_then(group, marks.into_iter().collect(), marks_done);
        let myself = myself.clone();
        let (metrics, started) = (self.system.metrics.clone(), std::time::Instant::now());
        let done: WriteDone = Box::new(move |result| {
            metrics.store_commit_latency.observe(started.elapsed());
            // If the actor is gone, nobody was acked; the senders retry.
            let _ = myself.send_message(GroupMsg::Committed(result));
        });
        self.system.store.append_messages_then(self.fence, after, records, done);
    }

    fn committed(&mut self, myself: &ActorRef<GroupMsg>, result: Result<(), StoreError>) {
        let batch = std::mem::take(&mut self.in_flight);
        self.gauge.set_held(self.queued.len());
        if let Err(error) = result {
            self.release_deferred();
            // The log may or may not hold the batch (a timeout is ambiguous). Fail every
            // uncommitted send and hand the group to a successor that starts from the
            // store, which knows; senders retry with the same client_msg_id and are
            // deduplicated if the batch did land. This actor leaves the directory now and
            // drains its mailbox, answering each request, so nothing is dropped unanswered.
            if matches!(error, StoreError::Fenced { .. }) {
                tracing::warn!(group = %self.record.id, %error, "deposed: another actor claimed the group");
            } else {
                tracing::error!(group = %self.record.id, %error, "commit failed; handing the group to a fresh actor");
            }
            let failed = ApiError::Unavailable("commit failed; retry".into());
            for pending in &batch {
                self.pending_ids.remove(&(pending.record.sender, pending.record.client_msg_id.clone()));
                for to in std::iter::once(&pending.reply_to).chain(&pending.waiters) {
                    self.reply_error(to, &failed);
                }
            }
            match self.leaving {
                // Handing off: the caller passes on what waited for this commit, then stops.
                Some(Leaving::HandedOff) => {}
                _ => self.leave(myself, Leaving::Failed),
            }
            return;
        }
        let mut events = Vec::with_capacity(batch.len());
        for pending in &batch {
            let record = &pending.record;
            self.pending_ids.remove(&(record.sender, record.client_msg_id.clone()));
            self.recent.insert(record.sender, &record.client_msg_id, record.seq, record.ts);
            self.ack(&pending.reply_to, record.seq, record.ts, false);
            for to in &pending.waiters {
                self.ack(to, record.seq, record.ts, true);
            }
            events.push(Bytes::from(wire::encode_event(&Event::Message(views::message_view(record)))));
        }
        if let Some(last) = batch.last() {
            self.committed_seq = last.record.seq;
        }
        if self.system.has_cache() {
            let records: Vec<MessageRecord> = batch.iter().map(|p| p.record.clone()).collect();
            self.system.cache().appended(self.record.id, &records);
        }
        // The batch's messages go out with the member list they were accepted under, then
        // whatever membership events happened meanwhile.
        let recipients = self.batch_recipients.clone();
        self.deliver(&recipients, &events);
        let metrics = &self.system.metrics;
        metrics.messages_stored.add(batch.len() as u64);
        let now = crate::now_ms();
        for pending in &batch {
            // `ts` is set when the send reaches this actor, in milliseconds.
            metrics.fanout_latency.observe(std::time::Duration::from_millis(now.saturating_sub(pending.record.ts)));
        }
        self.release_deferred();
        match self.leaving {
            None => self.flush(myself),
            Some(Leaving::Failed) => self.stop_when_settled(myself),
            // The caller passes on what waited for this commit, then stops.
            Some(Leaving::HandedOff) => {}
        }
    }

    fn ack(&self, to: &ReplyTo, seq: Seq, ts: u64, duplicate: bool) {
        let ack = wire::SendAck { group: self.record.id, seq, ts, duplicate };
        self.reply(to, "send", &ack);
    }

    // ---- membership ----------------------------------------------------------------

    async fn join(&mut self, to: ReplyTo) -> Result<(), ApiError> {
        if self.dissolved {
            return Err(ApiError::group_not_found());
        }
        if self.members.contains_key(&to.user) {
            return Err(ApiError::AlreadyMember);
        }
        if !self.record.open {
            // A closed group is invisible to outsiders, exactly like a missing one.
            return Err(ApiError::group_not_found());
        }
        match self.admit(to.user, Role::Member, true).await? {
            AddStatus::Added => {
                self.reply(&to, "join", &self.info());
                Ok(())
            }
            AddStatus::AlreadyMember => Err(ApiError::AlreadyMember),
            AddStatus::GroupFull => Err(ApiError::GroupFull),
            AddStatus::NotFound => Err(ApiError::group_not_found()),
        }
    }

    async fn add_members(&mut self, to: ReplyTo, users: Vec<UserId>) -> Result<(), ApiError> {
        if !rules::may_manage(self.role_of(to.user)?) {
            return Err(ApiError::Forbidden("only the owner and admins add members"));
        }
        let mut results = Vec::with_capacity(users.len());
        for user in users {
            let status = if self.members.contains_key(&user) {
                AddStatus::AlreadyMember
            } else if self.system.store.user(user).await?.is_none() {
                AddStatus::NotFound
            } else {
                self.admit(user, Role::Member, true).await?
            };
            results.push(AddLine { user, status });
        }
        let member_count = self.record.member_count;
        self.reply(&to, "add_members", &wire::AddMembersResult { results, member_count });
        Ok(())
    }

    /// Makes `user` a member if the cap allows. The user's index is written first, so it
    /// never misses a group the user is in.
    /// Unless `announce` is false, members hear `member_joined`.
    async fn admit(&mut self, user: UserId, role: Role, announce: bool) -> Result<AddStatus, ApiError> {
        if self.members.len() >= self.record.max_members as usize {
            return Ok(AddStatus::GroupFull);
        }
        let group = self.record.id;
        let now = now_ms();
        let store = &self.system.store;
        let link = UserGroupRecord { group, read_seq: self.committed_seq, joined_at: now };
        store.link_user_group(user, &link).await?;
        let member = MemberRecord { user, role, joined_at: now };
        match store.add_member_if_below_cap(self.fence, &member).await? {
            AddMemberOutcome::Added(count) => {
                self.members.insert(user, role);
                self.record.member_count = count;
                self.membership_changed();
                self.system.cache().member_changed(group, user, Some(role));
                self.system.cache().record_changed(&self.record);
                // The new member may be online on a node that said it wants nothing of this
                // group: deliver everywhere again (nodes still without members say so again).
                self.unwanted.clear();
                self.grown_since = self.deliveries;
                if announce {
                    self.broadcast(&Event::MemberJoined { group, user, role, member_count: count });
                }
                Ok(AddStatus::Added)
            }
            AddMemberOutcome::AlreadyMember => {
                // Memory was behind the store (it cannot be, with one actor per group); trust
                // the store.
                if let Some(member) = store.member(group, user).await? {
                    self.members.insert(user, member.role);
                    self.membership_changed();
                }
                Ok(AddStatus::AlreadyMember)
            }
            AddMemberOutcome::Full => {
                store.unlink_user_group(user, group).await?;
                Ok(AddStatus::GroupFull)
            }
            AddMemberOutcome::NoGroup => {
                store.unlink_user_group(user, group).await?;
                self.dissolved = true;
                Ok(AddStatus::NotFound)
            }
        }
    }

    /// Admits the participants of a face-to-face session (its actor is the only sender).
    /// On confirmation everyone admitted hears `face_to_face_group`, one event each, instead
    /// of a `member_joined` for every other participant (500 people would make 125,000); a
    /// later joiner gets the group in the reply, or `group_full`, and is announced as any
    /// join is.
    async fn face_to_face_admit(
        &mut self,
        to: ReplyTo,
        users: Vec<UserId>,
        mut view: Box<wire::FaceToFaceView>,
        confirm: bool,
    ) -> Result<(), ApiError> {
        if self.dissolved {
            return Err(ApiError::group_not_found());
        }
        let mut members = Vec::with_capacity(users.len());
        for user in users {
            let status = if self.members.contains_key(&user) {
                AddStatus::AlreadyMember
            } else {
                self.admit(user, Role::Member, !confirm).await?
            };
            match status {
                AddStatus::Added | AddStatus::AlreadyMember => members.push(user),
                AddStatus::GroupFull => {}
                AddStatus::NotFound => return Err(ApiError::group_not_found()),
            }
        }
        if !members.contains(&to.user) {
            return Err(ApiError::GroupFull);
        }
        view.group = Some(self.info());
        if confirm && let Some(group) = view.group.clone() {
            let event = Event::FaceToFaceGroup { session: view.session, code: view.code.clone(), group };
            self.emit(Arc::from(members), Bytes::from(wire::encode_event(&event)));
        }
        self.reply(&to, if confirm { "confirm_face_to_face" } else { "join_face_to_face" }, &view);
        Ok(())
    }

    /// Removes a member; they stop receiving at once (the next fan-out leaves them out),
    /// and get the `member_left` event as the last thing from this group.
    async fn remove(&mut self, user: UserId, reason: LeaveReason) -> Result<u32, ApiError> {
        let group = self.record.id;
        let store = self.system.store.clone();
        let count = match store.remove_member(self.fence, user).await? {
            Some(count) => count,
            None => self.record.member_count,
        };
        self.members.remove(&user);
        self.record.member_count = count;
        self.membership_changed();
        self.system.cache().member_changed(group, user, None);
        self.system.cache().record_changed(&self.record);
        // Sends of theirs that have no seq yet would land after their departure: refuse them.
        self.refuse_queued(|p| p.record.sender == user, &ApiError::group_not_found());
        let event = Bytes::from(wire::encode_event(&Event::MemberLeft { group, user, reason, member_count: count }));
        self.emit(self.recipients.clone(), event.clone());
        self.emit(Arc::from([user]), event);
        // The index entry goes after the membership row, so it never misses a group. If this
        // write fails the entry lingers; readers check membership, so it shows nothing.
        if let Err(error) = store.unlink_user_group(user, group).await {
            tracing::warn!(%group, %user, %error, "could not unlink a departed member");
        }
        Ok(count)
    }

    async fn set_role(&mut self, to: ReplyTo, user: UserId, role: Role) -> Result<(), ApiError> {
        if !rules::is_owner(self.role_of(to.user)?) {
            return Err(ApiError::Forbidden("only the owner sets roles"));
        }
        if role == Role::Owner {
            return Err(ApiError::InvalidField("role must be admin or member; use transfer_ownership".into()));
        }
        let current = *self.members.get(&user).ok_or(ApiError::NotFound("member"))?;
        if current == Role::Owner {
            return Err(ApiError::Forbidden("the owner's role changes only by transfer_ownership"));
        }
        if current != role {
            self.system.store.set_member_role(self.fence, user, role).await?;
            self.members.insert(user, role);
            self.system.cache().member_changed(self.record.id, user, Some(role));
            self.broadcast(&Event::RoleChanged { group: self.record.id, user, role });
        }
        self.reply(&to, "set_role", &wire::Done {});
        Ok(())
    }

    async fn transfer(&mut self, to: ReplyTo, user: UserId) -> Result<(), ApiError> {
        let from = to.user;
        if !rules::is_owner(self.role_of(from)?) {
            return Err(ApiError::Forbidden("only the owner transfers ownership"));
        }
        if user == from {
            return Err(ApiError::InvalidField("you own this group already".into()));
        }
        if !self.members.contains_key(&user) {
            return Err(ApiError::NotFound("member"));
        }
        let group = self.record.id;
        if !self.system.store.transfer_ownership(self.fence, from, user).await? {
            return Err(ApiError::Internal("store membership disagrees with the group actor".into()));
        }
        self.members.insert(user, Role::Owner);
        self.members.insert(from, Role::Admin);
        self.record.owner = user;
        self.system.cache().member_changed(group, user, Some(Role::Owner));
        self.system.cache().member_changed(group, from, Some(Role::Admin));
        self.system.cache().record_changed(&self.record);
        self.broadcast(&Event::RoleChanged { group, user, role: Role::Owner });
        self.broadcast(&Event::RoleChanged { group, user: from, role: Role::Admin });
        self.broadcast(&Event::GroupUpdated(self.info()));
        self.reply(&to, "transfer_ownership", &wire::Done {});
        Ok(())
    }

    async fn update(
        &mut self,
        to: ReplyTo,
        name: Option<String>,
        open: Option<bool>,
        retention_days: Option<u32>,
    ) -> Result<(), ApiError> {
        if !rules::may_manage(self.role_of(to.user)?) {
            return Err(ApiError::Forbidden("only the owner and admins change the group"));
        }
        if let Some(name) = &name {
            crate::accounts::validate_display_name("name", name)?;
        }
        let store = &self.system.store;
        // The retention first: the row update below then answers with the group as it is.
        if let Some(days) = retention_days {
            if !store.set_retention_days(self.fence, days).await? {
                return Err(ApiError::group_not_found());
            }
            self.retention_days = days;
        }
        let updated = store.update_group(self.fence, name.as_deref(), open).await?;
        let Some(updated) = updated else {
            return Err(ApiError::group_not_found());
        };
        self.record.name = updated.name;
        self.record.open = updated.open;
        self.system.cache().record_changed(&self.record);
        self.broadcast(&Event::GroupUpdated(self.info()));
        self.reply(&to, "update_group", &self.info());
        Ok(())
    }

    async fn dissolve(&mut self, to: ReplyTo) -> Result<(), ApiError> {
        if !rules::is_owner(self.role_of(to.user)?) {
            return Err(ApiError::Forbidden("only the owner dissolves the group"));
        }
        let group = self.record.id;
        self.system.store.dissolve_group(self.fence).await?;
        self.dissolved = true;
        self.record.dissolved = true;
        self.system.cache().record_changed(&self.record);
        self.refuse_queued(|_| true, &ApiError::group_not_found());
        self.broadcast(&Event::GroupDissolved { group });
        self.reply(&to, "dissolve_group", &wire::Done {});
        let members: Vec<UserId> = std::mem::take(&mut self.members).into_keys().collect();
        self.membership_changed();
        // Index entries of a dissolved group are harmless (listings skip dissolved groups);
        // clearing them is tidiness, done off the actor.
        let store = self.system.store.clone();
        tokio::spawn(async move {
            for user in members {
                if let Err(error) = store.unlink_user_group(user, group).await {
                    tracing::warn!(%group, %user, %error, "could not unlink a dissolved group");
                }
            }
        });
        Ok(())
    }

    /// Answers and drops queued sends (not yet given a seq) that match.
    fn refuse_queued(&mut self, matches: impl Fn(&Pending) -> bool, error: &ApiError) {
        let (refused, kept): (Vec<Pending>, Vec<Pending>) =
            std::mem::take(&mut self.queued).into_iter().partition(matches);
        self.queued = kept;
        for pending in refused {
            self.pending_ids.remove(&(pending.record.sender, pending.record.client_msg_id.clone()));
            for to in std::iter::once(&pending.reply_to).chain(&pending.waiters) {
                self.reply_error(to, error);
            }
        }
    }

    fn membership_changed(&mut self) {
        self.recipients = self.members.keys().copied().collect();
    }

    // ---- output --------------------------------------------------------------------

    fn broadcast(&mut self, event: &Event) {
        let bytes = Bytes::from(wire::encode_event(event));
        self.emit(self.recipients.clone(), bytes);
    }

    /// Delivers an event now, or after the batch being committed if there is one.
    fn emit(&mut self, recipients: Arc<[UserId]>, event: Bytes) {
        if self.in_flight.is_empty() {
            self.deliver(&recipients, std::slice::from_ref(&event));
        } else {
            self.deferred.push((recipients, event));
        }
    }

    fn release_deferred(&mut self) {
        for (recipients, event) in std::mem::take(&mut self.deferred) {
            self.deliver(&recipients, std::slice::from_ref(&event));
        }
    }

    /// Hands events to every node that wants this group's deliveries, stamped.
    fn deliver(&mut self, recipients: &[UserId], events: &[Bytes]) {
        self.deliveries += 1;
        self.system.deliver(self.record.id, self.deliveries, recipients, events, &self.unwanted);
    }

    fn reply<T: Serialize>(&self, to: &ReplyTo, op: &str, result: &T) {
        self.system.answer(to, op, result);
    }

    fn reply_error(&self, to: &ReplyTo, error: &ApiError) {
        self.system.answer_error(to, error);
    }

    fn snapshot(&self) -> GroupSnapshot {
        GroupSnapshot {
            group: self.record.id,
            name: self.record.name.clone(),
            members: self.members.iter().map(|(&u, &r)| (u, r)).collect(),
            max_members: self.record.max_members,
            last_seq: self.committed_seq,
            queued: self.queued.len(),
            in_flight: self.in_flight.len(),
            recent_ids: self.recent.len(),
            epoch: self.fence.epoch,
        }
    }
}
