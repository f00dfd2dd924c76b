//! The actor of one red packet: a child of its group's actor, on the group's node.
//!
//! Its mailbox serializes the packet's grabs, so the storm of a popular packet queues here
//! and not in the group's mailbox, where messages are sequenced. Every write carries the
//! group actor's fence: a deposed owner's packet actors hand out nothing.
//!
//! A grab is stored (the share is the user's) before the ledger credits it, and answered
//! only after both: an acked grab is in the wallet. If the credit fails, the user's retry
//! (or the packet's expiry) credits it; the ledger entry's id makes that happen once.

use super::{debit_entry_id, draw_shares, grab_entry_id, refund_entry_id};
use crate::error::ApiError;
use crate::group::GroupMsg;
use crate::store::{Fence, GrabOutcome, LedgerOutcome};
use crate::{System, now_ms};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use schema::cluster::ReplyTo;
use schema::frames::MessageKind;
use schema::frames::server::{GrabResult, GrabStatus, GrabView, RedPacketStatus, RedPacketView};
use schema::records::{
    GrabRecord, LedgerEntry, LedgerKind, MessageRecord, RedPacketKind, RedPacketRecord, RedPacketState,
};
use schema::{ConnId, RedPacketId, UserId};
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// What a red packet's actor handles.
pub enum RedPacketMsg {
    /// A member sends this packet (or resends it: the same client_msg_id).
    Create {
        /// What the sender asked for.
        new: NewPacket,
        /// The sender's request.
        reply_to: ReplyTo,
    },
    /// A member grabs.
    Grab {
        /// The member's request.
        reply_to: ReplyTo,
    },
    /// A member asks how the packet stands.
    Info {
        /// The member's request.
        reply_to: ReplyTo,
    },
    /// The sweeper found the packet due: finish its send, or expire it.
    Due {
        /// The due time it was indexed under.
        due_at: u64,
    },
    /// Post the paid packet's message (its group moved while the message was queued).
    Post {
        /// The sender's request.
        reply_to: ReplyTo,
    },
    /// Time to tell the group actor if nothing happened since the last check.
    IdleCheck,
}

// Local only: a packet's actor is reached through its group's actor.
impl ractor::Message for RedPacketMsg {}

/// A red packet as its sender asked for it, before its shares are drawn.
#[derive(Debug, Clone)]
pub struct NewPacket {
    /// The sender.
    pub sender: UserId,
    /// The sender's id for the message that carries it.
    pub client_msg_id: String,
    /// Cents.
    pub total: i64,
    /// Shares.
    pub count: u32,
    /// How to split.
    pub kind: RedPacketKind,
    /// The sender's words.
    pub greeting: String,
}

/// What a packet's actor starts with.
pub struct Start {
    /// The node's actors.
    pub system: Arc<System>,
    /// The group's actor, which appends the packet's message.
    pub group_actor: ActorRef<GroupMsg>,
    /// The group actor's claim; every write carries it.
    pub fence: Fence,
    /// The packet.
    pub id: RedPacketId,
    /// Counts of messages the group actor passed on and this actor has not finished (the
    /// group's and this packet's), so the group actor neither retires nor stops this one
    /// with work under way.
    pub work: Vec<Arc<AtomicUsize>>,
}

/// How long a packet's actor waits with nothing to do before offering to stop.
const IDLE_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// How long the sweeper waits before it looks again at a packet whose handling failed.
const RETRY_DUE_AFTER_MS: u64 = 60_000;

/// The packet actor's behaviour.
pub struct RedPacketActor;

/// What a packet's actor holds.
pub struct PacketActorState {
    start: Start,
    loaded: bool,
    record: Option<RedPacketRecord>,
    grabs: Vec<GrabRecord>,
    /// Grabbers whose credit is known to be in the ledger (shared with the tasks that
    /// credit and answer).
    credited: Arc<Mutex<HashSet<UserId>>>,
    /// Whether a message came since the last idle check.
    busy: bool,
}

/// Starts a packet's actor (the record is read on its first message).
pub async fn spawn(start: Start) -> Result<ActorRef<RedPacketMsg>, ApiError> {
    Actor::spawn(None, RedPacketActor, start)
        .await
        .map(|(actor, _)| actor)
        .map_err(|e| ApiError::Internal(format!("spawn red packet actor: {e}")))
}

impl Actor for RedPacketActor {
    type Msg = RedPacketMsg;
    type State = PacketActorState;
    type Arguments = Start;

    async fn pre_start(
        &self,
        myself: ActorRef<RedPacketMsg>,
        start: Start,
    ) -> Result<PacketActorState, ActorProcessingErr> {
        myself.send_after(IDLE_AFTER, || RedPacketMsg::IdleCheck);
        Ok(PacketActorState {
            start,
            loaded: false,
            record: None,
            grabs: Vec::new(),
            credited: Arc::default(),
            busy: true,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<RedPacketMsg>,
        message: RedPacketMsg,
        state: &mut PacketActorState,
    ) -> Result<(), ActorProcessingErr> {
        let (reply_to, due_at, result) = match message {
            RedPacketMsg::IdleCheck => {
                if !state.busy || state.record.is_none() {
                    let _ = state.start.group_actor.send_message(GroupMsg::PacketIdle(state.start.id));
                }
                state.busy = false;
                myself.send_after(IDLE_AFTER, || RedPacketMsg::IdleCheck);
                return Ok(());
            }
            RedPacketMsg::Create { new, reply_to } => (Some(reply_to), None, state.create(new, reply_to).await),
            RedPacketMsg::Grab { reply_to } => (Some(reply_to), None, state.grab(reply_to).await),
            RedPacketMsg::Info { reply_to } => (Some(reply_to), None, state.info(reply_to).await),
            RedPacketMsg::Post { reply_to } => (Some(reply_to), None, state.post(reply_to).await),
            RedPacketMsg::Due { due_at } => (None, Some(due_at), state.due(due_at).await),
        };
        state.busy = true;
        for counter in &state.start.work {
            counter.fetch_sub(1, Ordering::AcqRel);
        }
        if state.loaded && state.record.is_none() {
            // Nobody's packet (a wrong id): no reason to keep this actor.
            let _ = state.start.group_actor.send_message(GroupMsg::PacketIdle(state.start.id));
        }
        if let Err(error) = result {
            if let Some(to) = reply_to {
                state.start.system.answer_error(&to, &error);
            }
            if let Some(due_at) = due_at {
                // Look again later rather than at every sweep.
                let (store, id, group) = (state.start.system.store.clone(), state.start.id, state.start.fence.group);
                let _ = store.reschedule_red_packet(id, group, due_at, Some(now_ms() + RETRY_DUE_AFTER_MS)).await;
            }
            match error {
                ApiError::GroupMoved => {
                    // The group has another owner: this actor and its group actor are stale.
                    let _ = state.start.group_actor.send_message(GroupMsg::Restart);
                    myself.stop(None);
                }
                ApiError::Internal(_) | ApiError::Unavailable(_) => {
                    // An outcome may be unknown: read the packet again next time.
                    tracing::warn!(packet = %state.start.id, %error, "red packet request failed");
                    state.loaded = false;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn not_found() -> ApiError {
    ApiError::NotFound("red packet")
}

impl PacketActorState {
    fn system(&self) -> &System {
        &self.start.system
    }

    async fn load(&mut self) -> Result<(), ApiError> {
        if self.loaded {
            return Ok(());
        }
        let store = &self.start.system.store;
        let group = self.start.fence.group;
        self.record = store.red_packet(self.start.id).await?.filter(|p| p.group == group);
        self.grabs = store.red_packet_grabs(self.start.id).await?;
        self.loaded = true;
        Ok(())
    }

    async fn create(&mut self, new: NewPacket, reply_to: ReplyTo) -> Result<(), ApiError> {
        self.load().await?;
        if self.record.is_none() {
            let total =
                u64::try_from(new.total).map_err(|_| ApiError::InvalidField("total must be positive".into()))?;
            let shares = draw_shares(total, new.count, new.kind, &mut rand::rng())
                .map_err(|e| ApiError::InvalidField(e.to_string()))?;
            let config = &self.system().config;
            let now = now_ms();
            let record = RedPacketRecord {
                id: self.start.id,
                group: self.start.fence.group,
                sender: new.sender,
                client_msg_id: new.client_msg_id,
                total: new.total,
                kind: new.kind,
                greeting: new.greeting,
                shares: shares.into_iter().map(|s| s as i64).collect(),
                created_at: now,
                expires_at: now + config.red_packet_ttl.as_millis() as u64,
                state: RedPacketState::Pending,
            };
            let due_at = now + config.red_packet_check_after.as_millis() as u64;
            let stored = self.system().store.create_red_packet(self.start.fence, &record, due_at).await?;
            self.record = Some(stored);
        }
        if self.record.as_ref().is_some_and(|r| r.sender != new.sender) {
            return Err(ApiError::Internal("red packet id collision".into()));
        }
        self.settle_send(Some(reply_to)).await
    }

    /// Takes the packet as far as its send goes: a pending packet is paid for (or cancelled
    /// if the wallet cannot pay), and an open one gets its message appended by the group
    /// actor (which recognises a message it has already).
    async fn settle_send(&mut self, reply_to: Option<ReplyTo>) -> Result<(), ApiError> {
        self.pay_if_pending().await?;
        self.post_message(reply_to).await
    }

    /// A pending packet becomes open (paid for) or cancelled (the wallet could not pay).
    async fn pay_if_pending(&mut self) -> Result<(), ApiError> {
        let Some(record) = self.record.clone() else { return Err(not_found()) };
        if record.state != RedPacketState::Pending {
            return Ok(());
        }
        let paid = self.pay(&record).await?;
        let to = if paid { RedPacketState::Open } else { RedPacketState::Cancelled };
        let store = &self.start.system.store;
        let after = store.set_red_packet_state(self.start.fence, record.id, RedPacketState::Pending, to).await?;
        self.record = Some(after.ok_or_else(not_found)?);
        Ok(())
    }

    /// Asks the group actor to append the message of a paid packet (it answers `reply_to`).
    async fn post_message(&mut self, reply_to: Option<ReplyTo>) -> Result<(), ApiError> {
        let Some(record) = self.record.clone() else { return Err(not_found()) };
        match record.state {
            RedPacketState::Open | RedPacketState::Expired => {
                let to = reply_to.unwrap_or(ReplyTo {
                    node: self.system().node,
                    user: record.sender,
                    conn: ConnId(0),
                    request: None,
                });
                let message = message_record(&record);
                let _ = self.start.group_actor.send_message(GroupMsg::RedPacketReady { record: message, reply_to: to });
                Ok(())
            }
            RedPacketState::Pending => Err(ApiError::Unavailable("the red packet is not paid for yet; retry".into())),
            RedPacketState::Cancelled => {
                let balance = self.start.system.store.balance(record.sender).await?;
                Err(ApiError::InsufficientFunds { balance, needed: record.total })
            }
        }
    }

    /// The message of a packet whose group moved while it was queued.
    async fn post(&mut self, reply_to: ReplyTo) -> Result<(), ApiError> {
        self.load().await?;
        self.settle_send(Some(reply_to)).await
    }

    /// Debits the sender, once. If the wallet cannot pay, a `void` entry takes the debit's
    /// id, so a debit that a stale writer still has in flight can never land later; true
    /// if the packet is paid for.
    async fn pay(&self, record: &RedPacketRecord) -> Result<bool, ApiError> {
        let store = &self.start.system.store;
        let entry = |amount, kind| LedgerEntry {
            id: debit_entry_id(record.id),
            amount,
            kind,
            packet: Some(record.id),
            ts: now_ms(),
        };
        let debit = entry(-record.total, LedgerKind::RedPacketSend);
        Ok(match store.apply_ledger_entry(record.sender, &debit).await? {
            LedgerOutcome::Applied { .. } => true,
            LedgerOutcome::AlreadyApplied { entry, .. } => entry.kind == LedgerKind::RedPacketSend,
            LedgerOutcome::Insufficient { .. } => {
                match store.apply_ledger_entry(record.sender, &entry(0, LedgerKind::Void)).await? {
                    // The debit won the race after all.
                    LedgerOutcome::AlreadyApplied { entry, .. } => entry.kind == LedgerKind::RedPacketSend,
                    _ => false,
                }
            }
        })
    }

    async fn grab(&mut self, reply_to: ReplyTo) -> Result<(), ApiError> {
        let user = reply_to.user;
        self.load().await?;
        let Some(record) = self.record.clone() else { return Err(not_found()) };
        if let Some(grab) = self.grabs.iter().find(|g| g.user == user).copied() {
            self.credit_then_answer(grab, reply_to, GrabStatus::AlreadyGrabbed);
            return Ok(());
        }
        if matches!(record.state, RedPacketState::Pending | RedPacketState::Cancelled) {
            return Err(not_found());
        }
        // Empty wins over expired, as in `red_packet`.
        if self.grabs.len() >= record.shares.len() {
            return self.answer_grab(&reply_to, GrabStatus::Empty, None);
        }
        let now = now_ms();
        if record.state == RedPacketState::Expired || now >= record.expires_at {
            return self.answer_grab(&reply_to, GrabStatus::Expired, None);
        }
        let outcome = self.system().store.grab_red_packet(self.start.fence, record.id, user, now).await?;
        let (status, grab) = match outcome {
            GrabOutcome::Grabbed(grab) => (GrabStatus::Grabbed, grab),
            GrabOutcome::AlreadyGrabbed(grab) => (GrabStatus::AlreadyGrabbed, grab),
            GrabOutcome::Empty => return self.answer_grab(&reply_to, GrabStatus::Empty, None),
            GrabOutcome::Expired => return self.answer_grab(&reply_to, GrabStatus::Expired, None),
            GrabOutcome::NotOpen => return Err(not_found()),
        };
        self.grabs.push(grab);
        self.credit_then_answer(grab, reply_to, status);
        Ok(())
    }

    /// Credits a grab and then answers it, off this mailbox: the next grab's write need not
    /// wait for this credit (the store commits them together). The share is the user's
    /// already; if the credit fails, the answer is `unavailable` and the retry credits.
    fn credit_then_answer(&self, grab: GrabRecord, reply_to: ReplyTo, status: GrabStatus) {
        let (system, credited, packet) = (self.start.system.clone(), self.credited.clone(), self.start.id);
        tokio::spawn(async move {
            match credit(&system, &credited, packet, &grab).await {
                Ok(()) => {
                    let result = GrabResult { packet, status, amount: Some(grab.amount) };
                    system.answer(&reply_to, "grab_red_packet", &result);
                }
                Err(error) => system.answer_error(&reply_to, &error),
            }
        });
    }

    fn answer_grab(&self, to: &ReplyTo, status: GrabStatus, amount: Option<i64>) -> Result<(), ApiError> {
        self.system().answer(to, "grab_red_packet", &GrabResult { packet: self.start.id, status, amount });
        Ok(())
    }

    async fn info(&mut self, reply_to: ReplyTo) -> Result<(), ApiError> {
        self.load().await?;
        let Some(record) = &self.record else { return Err(not_found()) };
        if matches!(record.state, RedPacketState::Pending | RedPacketState::Cancelled) {
            return Err(not_found());
        }
        let grabbed_count = self.grabs.len() as u32;
        let status = if self.grabs.len() >= record.shares.len() {
            RedPacketStatus::Empty
        } else if record.state == RedPacketState::Expired || now_ms() >= record.expires_at {
            RedPacketStatus::Expired
        } else {
            RedPacketStatus::Open
        };
        let grabs = (status != RedPacketStatus::Open).then(|| grab_views(&self.grabs));
        let view = RedPacketView {
            packet: record.id,
            group: record.group,
            sender: record.sender,
            total: record.total,
            count: record.shares.len() as u32,
            kind: record.kind,
            greeting: record.greeting.clone(),
            created_at: record.created_at,
            expires_at: record.expires_at,
            status,
            grabbed_count,
            grabbed_amount: self.grabs.iter().map(|g| g.amount).sum(),
            your_amount: self.grabs.iter().find(|g| g.user == reply_to.user).map(|g| g.amount),
            grabs,
        };
        self.system().answer(&reply_to, "red_packet", &view);
        Ok(())
    }

    async fn due(&mut self, due_at: u64) -> Result<(), ApiError> {
        self.load().await?;
        let store = self.start.system.store.clone();
        let (id, group) = (self.start.id, self.start.fence.group);
        let Some(record) = self.record.clone() else {
            // An index entry written just before a crash that lost its packet.
            return Ok(store.reschedule_red_packet(id, group, due_at, None).await?);
        };
        if record.state == RedPacketState::Pending {
            self.pay_if_pending().await?;
        }
        let Some(record) = self.record.clone() else { return Err(not_found()) };
        let now = now_ms();
        let next = match record.state {
            RedPacketState::Open if now < record.expires_at => {
                let posted = store.message_by_client_id(group, record.sender, &record.client_msg_id).await?;
                if posted.is_some() {
                    // Sent, all of it; look again when it expires.
                    Some(record.expires_at)
                } else {
                    // Paid for but not posted (a crash, a handoff): post it, and come back
                    // to make sure it landed.
                    self.post_message(None).await?;
                    Some(now + self.system().config.red_packet_check_after.as_millis() as u64)
                }
            }
            RedPacketState::Open | RedPacketState::Expired => {
                let after = store
                    .set_red_packet_state(self.start.fence, id, RedPacketState::Open, RedPacketState::Expired)
                    .await?;
                self.record = Some(after.ok_or_else(not_found)?);
                self.refund().await?;
                None
            }
            RedPacketState::Pending | RedPacketState::Cancelled => None,
        };
        if next != Some(due_at) {
            store.reschedule_red_packet(id, group, due_at, next).await?;
        }
        Ok(())
    }

    /// After expiry: makes sure every grab reached its wallet, then returns what nobody
    /// grabbed to the sender. Both are ledger entries with fixed ids, so running this again
    /// changes nothing.
    async fn refund(&mut self) -> Result<(), ApiError> {
        let Some(record) = self.record.clone() else { return Ok(()) };
        let store = self.start.system.store.clone();
        // From the store, not memory: the last word on which shares were taken.
        self.grabs = store.red_packet_grabs(record.id).await?;
        for grab in &self.grabs {
            credit(&self.start.system, &self.credited, record.id, grab).await?;
        }
        let left = record.total - self.grabs.iter().map(|g| g.amount).sum::<i64>();
        if left > 0 {
            let entry = LedgerEntry {
                id: refund_entry_id(record.id),
                amount: left,
                kind: LedgerKind::RedPacketRefund,
                packet: Some(record.id),
                ts: now_ms(),
            };
            store.apply_ledger_entry(record.sender, &entry).await?;
            tracing::info!(packet = %record.id, refunded = left, "red packet expired; the rest went back to its sender");
        }
        Ok(())
    }
}

/// Puts a grab's amount in the grabber's wallet, once (the entry's id makes a repeat a
/// no-op; `credited` only spares the store the repeat).
async fn credit(
    system: &System,
    credited: &Mutex<HashSet<UserId>>,
    packet: RedPacketId,
    grab: &GrabRecord,
) -> Result<(), ApiError> {
    if credited.lock().unwrap_or_else(|e| e.into_inner()).contains(&grab.user) {
        return Ok(());
    }
    let entry = LedgerEntry {
        id: grab_entry_id(packet),
        amount: grab.amount,
        kind: LedgerKind::RedPacketGrab,
        packet: Some(packet),
        ts: grab.ts,
    };
    system.store.apply_ledger_entry(grab.user, &entry).await?;
    credited.lock().unwrap_or_else(|e| e.into_inner()).insert(grab.user);
    Ok(())
}

/// The message that shows a packet in its group.
fn message_record(record: &RedPacketRecord) -> MessageRecord {
    let body = serde_json::json!({
        "packet": record.id,
        "total": record.total,
        "count": record.shares.len(),
        "kind": record.kind,
        "greeting": record.greeting,
    });
    MessageRecord {
        group: record.group,
        seq: 0,
        sender: record.sender,
        client_msg_id: record.client_msg_id.clone(),
        kind: MessageKind::RedPacket,
        body: body.to_string(),
        ts: now_ms(),
    }
}

/// The grabs of a finished packet, in grab order, the largest share (earliest among equals)
/// marked luckiest.
fn grab_views(grabs: &[GrabRecord]) -> Vec<GrabView> {
    let mut ordered: Vec<&GrabRecord> = grabs.iter().collect();
    ordered.sort_by_key(|g| g.share);
    let luckiest = ordered.iter().max_by(|a, b| a.amount.cmp(&b.amount).then(b.share.cmp(&a.share))).map(|g| g.user);
    ordered
        .into_iter()
        .map(|g| GrabView { user: g.user, amount: g.amount, ts: g.ts, luckiest: Some(g.user) == luckiest })
        .collect()
}
