//! The actor of one face-to-face code.
//!
//! Every session that shares a code, wherever on Earth, is known to this one actor, which
//! the cluster places by the code alone: two people on either side of a geohash border
//! reach the same actor and so the same table. It serializes starts, so two sessions within
//! 1 km can never take the same code, and it sends each join to its session's actor.
//!
//! It stops once every session it knew has expired and been forgotten.

use super::session::{self, FaceSessionMsg};
use super::table::{CodeTable, Lookup};
use crate::directory::MailboxGauge;
use crate::error::ApiError;
use crate::geo::Point;
use crate::{System, now_ms, random_id};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};
use schema::FaceSessionId;
use schema::cluster::{FaceCommand, FaceEnvelope};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// What a code's actor handles.
pub enum FaceCodeMsg {
    /// A client's request (counted in the mailbox gauge).
    Request(FaceEnvelope),
    /// Time to forget expired sessions, and to stop if none is left.
    Sweep,
}

// Local only: requests from other nodes arrive as `NodeMessage::FaceToFace`.
impl ractor::Message for FaceCodeMsg {}

/// The code actor's behaviour.
pub struct FaceCodeActor;

/// What a code's actor holds.
pub struct FaceCodeState {
    system: Arc<System>,
    gauge: Arc<MailboxGauge>,
    code: u16,
    table: CodeTable,
    sessions: HashMap<FaceSessionId, ActorRef<FaceSessionMsg>>,
}

/// Starts the actor of `code`.
pub async fn activate(
    system: Arc<System>,
    code: u16,
    gauge: Arc<MailboxGauge>,
    supervisor: Option<ActorCell>,
) -> Result<ActorRef<FaceCodeMsg>, ApiError> {
    gauge.touch();
    let state = FaceCodeState { system, gauge, code, table: CodeTable::default(), sessions: HashMap::new() };
    let spawned = match supervisor {
        Some(supervisor) => Actor::spawn_linked(None, FaceCodeActor, state, supervisor).await,
        None => Actor::spawn(None, FaceCodeActor, state).await,
    };
    spawned.map(|(actor, _)| actor).map_err(|e| ApiError::Internal(format!("spawn face-to-face code actor: {e}")))
}

impl Actor for FaceCodeActor {
    type Msg = FaceCodeMsg;
    type State = FaceCodeState;
    type Arguments = FaceCodeState;

    async fn pre_start(
        &self,
        _: ActorRef<FaceCodeMsg>,
        state: FaceCodeState,
    ) -> Result<FaceCodeState, ActorProcessingErr> {
        Ok(state)
    }

    async fn post_stop(&self, _: ActorRef<FaceCodeMsg>, state: &mut FaceCodeState) -> Result<(), ActorProcessingErr> {
        for session in state.sessions.values() {
            session.stop(None);
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<FaceCodeMsg>,
        message: FaceCodeMsg,
        state: &mut FaceCodeState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            FaceCodeMsg::Request(envelope) => {
                state.gauge.leave();
                let to = envelope.reply_to;
                if let Err(error) = state.request(envelope).await {
                    state.system.answer_error(&to, &error);
                }
            }
            FaceCodeMsg::Sweep => {
                let ttl = state.system.config.face_to_face_ttl.as_millis() as u64;
                // Expired sessions are remembered for one more TTL, to answer `expired`.
                let remaining = state.table.forget_expired(now_ms().saturating_sub(ttl));
                let now = now_ms();
                state.sessions.retain(|id, actor| {
                    let live = state.table.is_live(id.0, now) == Some(true);
                    if !live {
                        actor.stop(None);
                    }
                    live
                });
                if remaining == 0 && state.system.faces.retire_if_idle(&state.code, myself.get_id()) {
                    myself.stop(None);
                } else {
                    myself.send_after(sweep_period(&state.system), || FaceCodeMsg::Sweep);
                }
            }
        }
        Ok(())
    }
}

fn sweep_period(system: &System) -> Duration {
    system.config.face_to_face_ttl.clamp(Duration::from_millis(50), Duration::from_secs(60))
}

impl FaceCodeState {
    async fn request(&mut self, envelope: FaceEnvelope) -> Result<(), ApiError> {
        let to = envelope.reply_to;
        let now = now_ms();
        match envelope.command {
            FaceCommand::Start { lat, lon, participant, attempts_left } => {
                let at = point(lat, lon)?;
                let id = FaceSessionId(random_id());
                let expires_at = now + self.system.config.face_to_face_ttl.as_millis() as u64;
                if self.table.open(id.0, at, now, expires_at).is_err() {
                    if attempts_left == 0 {
                        return Err(ApiError::Unavailable("no free code near here; retry".into()));
                    }
                    // Taken nearby: try another random code, at that code's actor.
                    let code = rand::random_range(0..10_000u16);
                    let command = FaceCommand::Start { lat, lon, participant, attempts_left: attempts_left - 1 };
                    let system = self.system.clone();
                    tokio::spawn(async move {
                        if let Err(error) = system.to_face(FaceEnvelope { code, reply_to: to, command }).await {
                            system.answer_error(&to, &error);
                        }
                    });
                    return Ok(());
                }
                let owner = participant.user;
                let args = session::Start { system: self.system.clone(), id, code: self.code, expires_at, owner };
                let actor = match session::spawn(args).await {
                    Ok(actor) => actor,
                    Err(error) => {
                        self.table.close(id.0);
                        return Err(error);
                    }
                };
                let _ =
                    actor.send_message(FaceSessionMsg::Join { reply_to: to, participant, op: "start_face_to_face" });
                self.sessions.insert(id, actor);
                Ok(())
            }
            FaceCommand::Join { lat, lon, participant } => match self.table.lookup(point(lat, lon)?, now) {
                Lookup::Found(id) => {
                    let message = FaceSessionMsg::Join { reply_to: to, participant, op: "join_face_to_face" };
                    self.to_session(FaceSessionId(id), message)
                }
                Lookup::Expired => Err(ApiError::Expired("face-to-face session")),
                Lookup::TooFar => Err(ApiError::TooFar),
                Lookup::Nothing => Err(ApiError::NotFound("face-to-face session")),
            },
            FaceCommand::Confirm { session } => match self.table.is_live(session.0, now) {
                Some(true) => self.to_session(session, FaceSessionMsg::Confirm { reply_to: to }),
                Some(false) => Err(ApiError::Expired("face-to-face session")),
                None => Err(ApiError::NotFound("face-to-face session")),
            },
        }
    }

    fn to_session(&self, id: FaceSessionId, message: FaceSessionMsg) -> Result<(), ApiError> {
        let actor = self.sessions.get(&id).ok_or(ApiError::Expired("face-to-face session"))?;
        // A session actor stops itself when it expires; a send that finds it gone is late.
        actor.send_message(message).map_err(|_| ApiError::Expired("face-to-face session"))
    }
}

/// A position from a request; `invalid_field` unless it is on Earth.
pub fn point(lat: f64, lon: f64) -> Result<Point, ApiError> {
    Point::new(lat, lon)
        .ok_or_else(|| ApiError::InvalidField("lat must be -90 to 90 and lon -180 to 180 (degrees)".into()))
}

/// The user's part of a session: who they are, as others in it see them.
pub fn participant(user: &schema::records::UserRecord) -> schema::frames::server::FaceToFaceParticipant {
    schema::frames::server::FaceToFaceParticipant {
        user: user.id,
        nickname: user.nickname.clone(),
        avatar_url: user.avatar_url.clone(),
    }
}
