//! The actor of one face-to-face session.
//!
//! It keeps who joined and pushes the list to everyone in it. Pushes are coalesced: a join
//! schedules one push a moment later, and joins until then ride along, so a crowd joining
//! at once costs a few pushes of the whole list instead of one per join per participant.
//!
//! Confirming creates the group (the starter owns it) and asks the group's actor to admit
//! every participant: the group actor, not this one, enforces the member cap, exactly as
//! for any join. Once confirmed, a later joiner is sent straight to the group.
//!
//! It stops when the session expires; its code's actor forgets it a little later.

use crate::error::ApiError;
use crate::group::create::create_group;
use crate::{System, now_ms};
use bytes::Bytes;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use schema::cluster::{GroupCommand, GroupEnvelope, ReplyTo};
use schema::frames::server::{self as wire, Event, FaceToFaceParticipant, FaceToFaceView};
use schema::{FaceSessionId, GroupId, UserId};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How long a join waits for others before the participant list is pushed.
const PUSH_DELAY: Duration = Duration::from_millis(100);

/// What a session's actor handles.
pub enum FaceSessionMsg {
    /// Someone within 50 m entered the code (or started the session).
    Join {
        /// Where the reply goes; later pushes go to the same connection.
        reply_to: ReplyTo,
        /// Who.
        participant: FaceToFaceParticipant,
        /// The op to answer (`start_face_to_face` or `join_face_to_face`).
        op: &'static str,
    },
    /// A participant confirms: the session becomes a group.
    Confirm {
        /// The participant, and where the reply goes.
        reply_to: ReplyTo,
    },
    /// Push the participant list.
    Push,
    /// The session's time is up.
    Expire,
}

// Local only: sessions are reached through their code's actor on the same node.
impl ractor::Message for FaceSessionMsg {}

/// What a new session needs.
pub struct Start {
    /// The node's actors.
    pub system: Arc<System>,
    /// The session.
    pub id: FaceSessionId,
    /// Its code.
    pub code: u16,
    /// When it ends, milliseconds since the epoch.
    pub expires_at: u64,
    /// Who started it; they will own the group.
    pub owner: UserId,
}

/// The session actor's behaviour.
pub struct FaceSessionActor;

/// What a session's actor holds.
pub struct FaceSessionState {
    start: Start,
    participants: Vec<FaceToFaceParticipant>,
    /// Each participant's connection that joined, where pushes go.
    push_to: HashMap<UserId, ReplyTo>,
    group: Option<GroupId>,
    push_scheduled: bool,
}

/// Starts a session's actor; it stops itself when the session expires.
pub async fn spawn(start: Start) -> Result<ActorRef<FaceSessionMsg>, ApiError> {
    Actor::spawn(None, FaceSessionActor, start)
        .await
        .map(|(actor, _)| actor)
        .map_err(|e| ApiError::Internal(format!("spawn face-to-face session actor: {e}")))
}

impl Actor for FaceSessionActor {
    type Msg = FaceSessionMsg;
    type State = FaceSessionState;
    type Arguments = Start;

    async fn pre_start(
        &self,
        myself: ActorRef<FaceSessionMsg>,
        start: Start,
    ) -> Result<FaceSessionState, ActorProcessingErr> {
        let left = Duration::from_millis(start.expires_at.saturating_sub(now_ms()));
        myself.send_after(left, || FaceSessionMsg::Expire);
        Ok(FaceSessionState {
            start,
            participants: Vec::new(),
            push_to: HashMap::new(),
            group: None,
            push_scheduled: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<FaceSessionMsg>,
        message: FaceSessionMsg,
        state: &mut FaceSessionState,
    ) -> Result<(), ActorProcessingErr> {
        let system = state.start.system.clone();
        match message {
            FaceSessionMsg::Join { reply_to, participant, op } => {
                if let Err(error) = state.join(&myself, reply_to, participant, op).await {
                    system.answer_error(&reply_to, &error);
                }
            }
            FaceSessionMsg::Confirm { reply_to } => {
                if let Err(error) = state.confirm(reply_to).await {
                    system.answer_error(&reply_to, &error);
                }
            }
            FaceSessionMsg::Push => {
                state.push_scheduled = false;
                state.push();
            }
            FaceSessionMsg::Expire => myself.stop(None),
        }
        Ok(())
    }
}

impl FaceSessionState {
    fn view(&self) -> FaceToFaceView {
        FaceToFaceView {
            session: self.start.id,
            code: super::code_text(self.start.code),
            expires_at: self.start.expires_at,
            participants: self.participants.clone(),
            group: None,
        }
    }

    async fn join(
        &mut self,
        myself: &ActorRef<FaceSessionMsg>,
        reply_to: ReplyTo,
        participant: FaceToFaceParticipant,
        op: &'static str,
    ) -> Result<(), ApiError> {
        let user = participant.user;
        if self.group.is_some() {
            // Confirmed: the list is frozen and joining means joining the group.
            return self.admit(reply_to, vec![user], false).await;
        }
        match self.participants.iter_mut().find(|p| p.user == user) {
            // Joining again (another device, a retry) changes nothing but where pushes go.
            Some(known) => *known = participant,
            None => {
                // The session becomes a group, so it holds no more people than a group can.
                if self.participants.len() >= self.start.system.config.max_group_members as usize {
                    return Err(ApiError::GroupFull);
                }
                self.participants.push(participant);
            }
        }
        self.push_to.insert(user, ReplyTo { request: None, ..reply_to });
        self.start.system.answer(&reply_to, op, &self.view());
        if !self.push_scheduled {
            self.push_scheduled = true;
            myself.send_after(PUSH_DELAY, || FaceSessionMsg::Push);
        }
        Ok(())
    }

    /// Sends the participant list, encoded once, to every participant's connection.
    fn push(&self) {
        let event = Event::FaceToFaceParticipants {
            session: self.start.id,
            code: super::code_text(self.start.code),
            participants: self.participants.clone(),
        };
        let bytes = Bytes::from(wire::encode_event(&event));
        for to in self.push_to.values() {
            self.start.system.reply(to, bytes.clone());
        }
    }

    async fn confirm(&mut self, reply_to: ReplyTo) -> Result<(), ApiError> {
        if !self.push_to.contains_key(&reply_to.user) {
            // Only participants may confirm; to anyone else the session does not exist.
            return Err(ApiError::NotFound("face-to-face session"));
        }
        if self.group.is_none() {
            let system = &self.start.system;
            let name = format!("Face-to-face {}", super::code_text(self.start.code));
            let record =
                create_group(system, self.start.owner, &name, false, system.config.max_group_members, 0).await?;
            tracing::info!(session = %self.start.id, group = %record.id, participants = self.participants.len(), "face-to-face session confirmed");
            self.group = Some(record.id);
        }
        let users = self.participants.iter().map(|p| p.user).collect();
        self.admit(reply_to, users, true).await
    }

    /// Asks the group's actor to admit `users`; it answers `reply_to`.
    async fn admit(&self, reply_to: ReplyTo, users: Vec<UserId>, confirm: bool) -> Result<(), ApiError> {
        let group = self.group.ok_or_else(|| ApiError::Internal("admit before the group exists".into()))?;
        let command = GroupCommand::FaceToFaceAdmit { users, view: Box::new(self.view()), confirm };
        self.start.system.to_group(GroupEnvelope { group, reply_to, command }).await
    }
}
