//! The user actor: one per user with connections on this node.
//!
//! It owns the list of the user's connections here and publishes it to the fan-out step,
//! so a group's fan-out reaches every device. It serializes what is per user: read marks
//! (and tells the user's other devices when one moves) and closing the sockets of a
//! revoked session. It schedules each connection's close at its session's end with the
//! node's [`crate::expiry`] (one timer for the node, not one per user). It stops when the
//! user's last connection closes.

use crate::System;
use crate::directory::MailboxGauge;
use crate::error::ApiError;
use crate::outbox::Outbox;
use crate::store::TokenHash;
use bytes::Bytes;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};
use schema::cluster::ReplyTo;
use schema::error::CloseReason;
use schema::frames::server::{self as wire, Event, ReadAck};
use schema::{ConnId, GroupId, Seq, UserId};
use serde::Serialize;
use std::sync::Arc;
use tokio::sync::oneshot;

/// What a user actor handles. Everything but `Inspect` is counted in its mailbox gauge.
pub enum UserMsg {
    /// A connection authenticated as this user.
    Attach {
        /// Its outgoing queue.
        outbox: Arc<Outbox>,
        /// The session it authenticated with.
        token: TokenHash,
        /// When that session ends (ms since the epoch): the connection is closed then.
        expires_at: u64,
        /// Answered `Ok` once the fan-out step can reach the connection, or with the cap
        /// when the user holds as many connections here as the node allows.
        done: oneshot::Sender<Result<(), usize>>,
    },
    /// A connection closed.
    Detach {
        /// Which.
        conn: ConnId,
    },
    /// Move a read mark.
    Read {
        /// The asking connection.
        to: ReplyTo,
        /// The group.
        group: GroupId,
        /// The new mark.
        seq: Seq,
    },
    /// Close every connection that uses this session.
    Revoke {
        /// The revoked session.
        token: TokenHash,
    },
    /// The debug console asks what the actor holds.
    Inspect(oneshot::Sender<UserSnapshot>),
}

// Local only: a user actor serves the connections of its own node.
impl ractor::Message for UserMsg {}

/// What the debug console shows of a user actor.
#[derive(Debug, Clone, Serialize)]
pub struct UserSnapshot {
    /// The user.
    pub user: UserId,
    /// Their connections on this node.
    pub connections: Vec<ConnId>,
}

/// The user actor's behaviour.
pub struct UserActor;

/// Everything a user actor holds.
pub struct UserState {
    system: Arc<System>,
    gauge: Arc<MailboxGauge>,
    user: UserId,
    connections: Vec<Connection>,
}

/// One of the user's connections on this node.
struct Connection {
    outbox: Arc<Outbox>,
    token: TokenHash,
    expires_at: u64,
}

/// Starts the actor for a user who just connected.
pub async fn activate(
    system: Arc<System>,
    user: UserId,
    gauge: Arc<MailboxGauge>,
    supervisor: Option<ActorCell>,
) -> Result<ActorRef<UserMsg>, ApiError> {
    gauge.touch();
    // Most users hold one connection per node; a Vec grown by push would start at four.
    let state = UserState { system, gauge, user, connections: Vec::with_capacity(1) };
    let spawned = match supervisor {
        Some(supervisor) => Actor::spawn_linked(None, UserActor, state, supervisor).await,
        None => Actor::spawn(None, UserActor, state).await,
    };
    spawned.map(|(actor, _)| actor).map_err(|e| ApiError::Internal(format!("spawn user actor: {e}")))
}

impl Actor for UserActor {
    type Msg = UserMsg;
    type State = UserState;
    type Arguments = UserState;

    async fn pre_start(&self, _: ActorRef<UserMsg>, state: UserState) -> Result<UserState, ActorProcessingErr> {
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<UserMsg>,
        message: UserMsg,
        state: &mut UserState,
    ) -> Result<(), ActorProcessingErr> {
        if let UserMsg::Inspect(reply) = message {
            let connections = state.connections.iter().map(|c| c.outbox.conn()).collect();
            let _ = reply.send(UserSnapshot { user: state.user, connections });
            return Ok(());
        }
        state.gauge.leave();
        match message {
            UserMsg::Attach { outbox, token, expires_at, done } => {
                let limit = state.system.config.max_connections_per_user;
                if state.connections.len() >= limit {
                    let _ = done.send(Err(limit));
                } else {
                    state.system.expiries.add(expires_at, &outbox);
                    state.connections.push(Connection { outbox, token, expires_at });
                    state.publish();
                    let _ = done.send(Ok(()));
                }
            }
            UserMsg::Detach { conn } => {
                for connection in state.connections.iter().filter(|c| c.outbox.conn() == conn) {
                    state.system.expiries.remove(connection.expires_at, conn);
                }
                state.connections.retain(|c| c.outbox.conn() != conn);
                state.publish();
            }
            UserMsg::Read { to, group, seq } => {
                if let Err(error) = state.read(to, group, seq).await {
                    let bytes = wire::encode_error(to.request, error.code(), &error.to_string());
                    state.send_to(to.conn, Bytes::from(bytes));
                }
            }
            UserMsg::Revoke { token } => {
                for connection in state.connections.iter().filter(|c| c.token == token) {
                    connection.outbox.close(CloseReason::SessionRevoked);
                }
            }
            UserMsg::Inspect(_) => {}
        }
        // With no connection left the actor goes, unless a message for it is on the way
        // (then it retries after handling that one).
        if state.connections.is_empty() && state.system.users.retire_if_idle(&state.user, myself.get_id()) {
            myself.stop(None);
        }
        Ok(())
    }
}

impl UserState {
    fn publish(&self) {
        let outboxes = self.connections.iter().map(|c| c.outbox.clone()).collect();
        self.system.fanout.set_connections(self.user, outboxes);
    }

    fn send_to(&self, conn: ConnId, event: Bytes) {
        if let Some(connection) = self.connections.iter().find(|c| c.outbox.conn() == conn) {
            connection.outbox.push(event);
        }
    }

    async fn read(&mut self, to: ReplyTo, group: GroupId, seq: Seq) -> Result<(), ApiError> {
        let store = &self.system.store;
        let last_seq = store.last_seq(group).await?;
        let mark = store
            .advance_read_mark(self.user, group, seq.min(last_seq))
            .await?
            .ok_or_else(ApiError::group_not_found)?;
        let ack = ReadAck { group, read_seq: mark, unread: wire::unread(last_seq, mark) };
        self.send_to(to.conn, Bytes::from(wire::encode_reply(to.request, "read", &ack)));
        let event = Bytes::from(wire::encode_event(&Event::ReadMark(ack)));
        for connection in self.connections.iter().filter(|c| c.outbox.conn() != to.conn) {
            let outbox = &connection.outbox;
            outbox.push(event.clone());
        }
        Ok(())
    }
}
