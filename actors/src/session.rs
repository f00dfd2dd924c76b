//! One client connection's protocol state machine, without the socket.
//!
//! The gateway feeds it text frames; everything it answers goes into the connection's
//! [`Outbox`], the same queue that carries fan-out, so a client sees one ordered stream.
//! It enforces "authenticate first", validates what needs no group state, and routes:
//! group changes and sends to the group's actor (the reply arrives later, through the
//! fan-out step), read marks to the user's actor, history and sync straight to the store
//! after a membership check, and accounts to [`crate::accounts`].

use crate::accounts::{self, SignedIn};
use crate::cache::CachedGroup;
use crate::error::ApiError;
use crate::facetoface::{self, START_ATTEMPTS, code::participant, code::point};
use crate::group::create::create_group;
use crate::limits::ConnectionLimits;
use crate::outbox::Outbox;
use crate::user::UserMsg;
use crate::{System, now_ms, views};
use bytes::Bytes;
use schema::cluster::{FaceCommand, FaceEnvelope, GroupCommand, GroupEnvelope, ReplyTo};
use schema::frames::MessageKind;
use schema::frames::client::*;
use schema::frames::server::{self as wire, GroupSummary};
use schema::records::MessageRecord;
use schema::{ErrorCode, GroupId, Seq, UserId};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;
use tracing::Instrument;

/// The most messages one `sync` reply carries across all groups; beyond it, clients page
/// with `history`.
pub const SYNC_MAX_MESSAGES: usize = 1000;
/// The largest `history` page.
pub const HISTORY_MAX_LIMIT: u32 = 100;
/// The largest `members` page.
pub const MEMBERS_MAX_LIMIT: u32 = 500;
/// The most users one `add_members` adds.
pub const ADD_MEMBERS_MAX: usize = 100;
/// The longest `client_msg_id`, in bytes.
pub const CLIENT_MSG_ID_MAX: usize = 64;
/// The longest red packet greeting, in characters.
pub const RED_PACKET_GREETING_MAX: usize = 64;
/// The most ledger entries a `wallet` reply lists.
pub const WALLET_ENTRIES: usize = 1000;

/// One connection's protocol state.
pub struct Session {
    system: Arc<System>,
    outbox: Arc<Outbox>,
    signed_in: Option<SignedIn>,
    limits: ConnectionLimits,
}

impl Session {
    pub(crate) fn new(system: Arc<System>, outbox: Arc<Outbox>) -> Self {
        let limits = ConnectionLimits::new(&system.config.rate_limits, Instant::now());
        Session { system, outbox, signed_in: None, limits }
    }

    /// The connection's outgoing queue, which the gateway drains.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// The authenticated user, if any.
    pub fn user(&self) -> Option<UserId> {
        self.signed_in.as_ref().map(|s| s.user.id)
    }

    /// Handles one text frame.
    pub async fn handle_text(&mut self, text: &str) {
        let frame = match parse_client_frame(text) {
            Ok(frame) => frame,
            Err(error) => {
                self.system.metrics.error(error.code());
                self.push(wire::encode_error(error.request_id(), error.code(), &error.to_string()));
                return;
            }
        };
        let id = frame.id;
        // Every log line a request causes carries its connection, user, request id and op
        // (a disabled span costs one check of the filter).
        let span = tracing::debug_span!("request", conn = %self.outbox.conn(), user = ?self.user(), id, op = frame.request.op());
        let result = self.dispatch(id, frame.request).instrument(span.clone()).await;
        if let Err(error) = result {
            let _entered = span.enter();
            match &error {
                ApiError::Internal(_) => tracing::error!(%error, "request failed"),
                ApiError::Unavailable(_) | ApiError::GroupMoved => tracing::debug!(%error, "request refused for now"),
                _ => {}
            }
            self.system.metrics.error(error.code());
            self.push(wire::encode_error_retry(id, error.code(), &error.to_string(), error.retry_after_ms()));
        }
    }

    /// Handles a binary frame, which the protocol does not use.
    pub fn handle_binary(&mut self) {
        let message = "binary frames are not supported; send JSON text frames";
        self.push(wire::encode_error(None, ErrorCode::UnsupportedFrame, message));
    }

    /// Detaches the connection from its user actor. Call once, when the socket is gone.
    pub async fn close(self) {
        if let Some(signed_in) = &self.signed_in {
            let conn = self.outbox.conn();
            let _ = self.system.users.try_send(&signed_in.user.id, UserMsg::Detach { conn });
        }
    }

    fn push(&self, event: Vec<u8>) {
        self.outbox.push(Bytes::from(event));
    }

    fn reply<T: Serialize>(&self, id: Option<u64>, op: &str, result: &T) {
        self.push(wire::encode_reply(id, op, result));
    }

    async fn dispatch(&mut self, id: Option<u64>, request: Request) -> Result<(), ApiError> {
        self.check_rate(&request)?;
        // Operations allowed before authentication.
        match request {
            Request::Register(r) => {
                let user = self.system.accounts.register(&r.username, &r.password, r.nickname.as_deref()).await?;
                self.reply(id, "register", &wire::RegisterResult { user });
                return Ok(());
            }
            Request::Login(r) => {
                if self.signed_in.is_some() {
                    return Err(ApiError::AlreadyAuthenticated);
                }
                let (token, signed_in) = self.system.accounts.login(&r.username, &r.password).await?;
                return self.start(id, "login", Some(token), signed_in).await;
            }
            Request::Auth(r) => {
                if self.signed_in.is_some() {
                    return Err(ApiError::AlreadyAuthenticated);
                }
                let signed_in = self.system.accounts.authenticate(&r.token).await?;
                return self.start(id, "auth", None, signed_in).await;
            }
            Request::Ping(_) => {
                self.reply(id, "ping", &wire::PongResult { ts: now_ms() });
                return Ok(());
            }
            _ => {}
        }
        let Some(signed_in) = &self.signed_in else {
            return Err(ApiError::Unauthenticated);
        };
        let me = signed_in.user.id;
        match request {
            Request::Register(_) | Request::Login(_) | Request::Auth(_) | Request::Ping(_) => Ok(()),
            Request::Logout(_) => {
                let token = signed_in.token_hash;
                self.system.accounts.logout(&token).await?;
                self.reply(id, "logout", &wire::Done {});
                // Closes every socket of this session, this one included, after this reply.
                let _ = self.system.users.try_send(&me, UserMsg::Revoke { token });
                Ok(())
            }
            Request::Profile(r) => {
                let user = r.user.unwrap_or(me);
                let record = self.system.store.user(user).await?.ok_or(ApiError::NotFound("user"))?;
                self.reply(id, "profile", &views::profile(&record));
                Ok(())
            }
            Request::UpdateProfile(r) => self.update_profile(id, me, r).await,
            Request::CreateGroup(r) => self.create_group(id, me, r).await,
            Request::MyGroups(_) => {
                // A badge refresh: last seqs may come from the cache (see `actors::cache`).
                let groups = self.summaries(me, Freshness::Cached).await?;
                self.reply(id, "my_groups", &wire::MyGroupsResult { groups });
                Ok(())
            }
            Request::GroupInfo(r) => self.to_group(id, r.group, GroupCommand::Info).await,
            Request::UpdateGroup(r) => {
                if r.name.is_none() && r.open.is_none() && r.retention_days.is_none() {
                    return Err(ApiError::InvalidField("give name, open and/or retention_days".into()));
                }
                if let Some(name) = &r.name {
                    accounts::validate_display_name("name", name)?;
                }
                let retention_days = r.retention_days.map(validate_retention).transpose()?;
                let command = GroupCommand::Update { name: r.name, open: r.open, retention_days };
                self.to_group(id, r.group, command).await
            }
            Request::AddMembers(r) => {
                let mut seen = HashSet::new();
                let users: Vec<UserId> = r.users.into_iter().filter(|u| seen.insert(*u)).collect();
                if users.is_empty() || users.len() > ADD_MEMBERS_MAX {
                    return Err(ApiError::InvalidField(format!("users must list 1-{ADD_MEMBERS_MAX} users")));
                }
                self.to_group(id, r.group, GroupCommand::AddMembers { users }).await
            }
            Request::Join(r) => self.to_group(id, r.group, GroupCommand::Join).await,
            Request::Leave(r) => self.to_group(id, r.group, GroupCommand::Leave).await,
            Request::RemoveMember(r) => self.to_group(id, r.group, GroupCommand::RemoveMember { user: r.user }).await,
            Request::SetRole(r) => {
                self.to_group(id, r.group, GroupCommand::SetRole { user: r.user, role: r.role }).await
            }
            Request::TransferOwnership(r) => {
                self.to_group(id, r.group, GroupCommand::TransferOwnership { user: r.user }).await
            }
            Request::DissolveGroup(r) => self.to_group(id, r.group, GroupCommand::Dissolve).await,
            Request::Members(r) => {
                let limit = bounded_limit(r.limit, 100, 1, MEMBERS_MAX_LIMIT)?;
                self.to_group(id, r.group, GroupCommand::Members { after: r.after, limit }).await
            }
            Request::Send(r) => {
                let command = self.validate_send(me, r.group, r.client_msg_id, r.kind, &r.body).await?;
                self.to_group(id, r.group, command).await
            }
            Request::History(r) => self.history(id, me, r).await,
            Request::Sync(r) => self.sync(id, me, r).await,
            Request::Read(r) => {
                let to = self.reply_to(id);
                let message = UserMsg::Read { to, group: r.group, seq: r.seq };
                self.system.to_user(me, message).await
            }
            Request::StartFaceToFace(r) => {
                point(r.lat, r.lon)?;
                let participant = participant(&signed_in.user);
                let command = FaceCommand::Start { lat: r.lat, lon: r.lon, participant, attempts_left: START_ATTEMPTS };
                let code = rand::random_range(0..10_000u16);
                self.system.to_face(FaceEnvelope { code, reply_to: self.reply_to(id), command }).await
            }
            Request::JoinFaceToFace(r) => {
                let code = face_code(&r.code)?;
                point(r.lat, r.lon)?;
                let command = FaceCommand::Join { lat: r.lat, lon: r.lon, participant: participant(&signed_in.user) };
                self.system.to_face(FaceEnvelope { code, reply_to: self.reply_to(id), command }).await
            }
            Request::GrabRedPacket(r) => {
                self.to_group(id, r.group, GroupCommand::GrabRedPacket { packet: r.packet }).await
            }
            Request::RedPacket(r) => self.to_group(id, r.group, GroupCommand::RedPacketInfo { packet: r.packet }).await,
            Request::Wallet(_) => self.wallet(id, me).await,
            Request::MediaUrl(r) => self.media_url(id, me, r.media, r.thumbnail).await,
            Request::ConfirmFaceToFace(r) => {
                let code = face_code(&r.code)?;
                let command = FaceCommand::Confirm { session: r.session };
                self.system.to_face(FaceEnvelope { code, reply_to: self.reply_to(id), command }).await
            }
        }
    }

    /// Registers the connection with the user's actor, then replies with where the user
    /// stands. Registration comes first so no event can fall between the reply and the
    /// first delivery.
    async fn start(
        &mut self,
        id: Option<u64>,
        op: &str,
        token: Option<String>,
        signed_in: SignedIn,
    ) -> Result<(), ApiError> {
        let user = signed_in.user.id;
        let (done, attached) = oneshot::channel();
        let attach = UserMsg::Attach {
            outbox: self.outbox.clone(),
            token: signed_in.token_hash,
            expires_at: signed_in.expires_at,
            done,
        };
        let result = match self.system.to_user(user, attach).await {
            Ok(()) => match attached.await {
                Ok(Ok(())) => self.summaries(user, Freshness::Store).await,
                Ok(Err(limit)) => Err(ApiError::TooManyConnections { limit }),
                Err(_) => Err(ApiError::Unavailable("the user actor stopped; retry".into())),
            },
            Err(error) => Err(error),
        };
        let groups = match result {
            Ok(groups) => groups,
            Err(error) => {
                // Leave the connection as it was: unauthenticated, registered nowhere, and
                // with no new session left behind.
                let _ = self.system.users.try_send(&user, UserMsg::Detach { conn: self.outbox.conn() });
                if token.is_some() {
                    let _ = self.system.accounts.logout(&signed_in.token_hash).await;
                }
                return Err(error);
            }
        };
        let profile = views::profile(&signed_in.user);
        self.signed_in = Some(signed_in);
        self.reply(id, op, &wire::SessionResult { token, profile, groups });
        Ok(())
    }

    /// Refuses a send, join or login over its rate, before it costs anything else: the
    /// connection's own bucket first, then the user's (or, for `login`, the username's),
    /// shared by every connection on the node.
    fn check_rate(&mut self, request: &Request) -> Result<(), ApiError> {
        let now = Instant::now();
        let limits = &self.system.config.rate_limits;
        let node = &self.system.limits;
        let user = self.user();
        let limited = |what: &'static str| move |retry_after| ApiError::RateLimited { what, retry_after };
        match request {
            Request::Send(_) => {
                self.limits.sends.take(limits.connection_sends, now).map_err(limited("send"))?;
                if let Some(user) = user {
                    node.user_sends.take(&user, now).map_err(limited("send"))?;
                }
            }
            Request::Join(_) | Request::JoinFaceToFace(_) => {
                self.limits.joins.take(limits.connection_joins, now).map_err(limited("join"))?;
                if let Some(user) = user {
                    node.user_joins.take(&user, now).map_err(limited("join"))?;
                }
            }
            Request::Login(r) => {
                self.limits.logins.take(limits.connection_logins, now).map_err(limited("login"))?;
                node.username_logins.take(&r.username.to_ascii_lowercase(), now).map_err(limited("login"))?;
            }
            Request::Register(_) => {
                self.limits.logins.take(limits.connection_logins, now).map_err(limited("register"))?;
            }
            _ => {}
        }
        Ok(())
    }

    fn reply_to(&self, id: Option<u64>) -> ReplyTo {
        ReplyTo {
            node: self.system.node,
            user: self.user().unwrap_or(UserId(0)),
            conn: self.outbox.conn(),
            request: id,
        }
    }

    async fn to_group(&self, id: Option<u64>, group: GroupId, command: GroupCommand) -> Result<(), ApiError> {
        let envelope = GroupEnvelope { group, reply_to: self.reply_to(id), command };
        self.system.to_group(envelope).await
    }

    async fn validate_send(
        &self,
        me: UserId,
        group: GroupId,
        client_msg_id: String,
        kind: MessageKind,
        body: &serde_json::Value,
    ) -> Result<GroupCommand, ApiError> {
        if client_msg_id.is_empty() || client_msg_id.len() > CLIENT_MSG_ID_MAX {
            return Err(ApiError::InvalidField(format!("client_msg_id must be 1-{CLIENT_MSG_ID_MAX} bytes")));
        }
        let body = match kind {
            MessageKind::Text => self.validate_text(body)?,
            MessageKind::RedPacket => self.validate_red_packet(body)?,
            MessageKind::Image | MessageKind::Audio | MessageKind::Video | MessageKind::File => {
                self.validate_media(me, group, kind, body).await?
            }
        };
        Ok(GroupCommand::Send { client_msg_id, kind, body })
    }

    fn validate_text(&self, body: &serde_json::Value) -> Result<String, ApiError> {
        let Some(text) = body.as_str() else {
            return Err(ApiError::InvalidField("a text message's body must be a JSON string".into()));
        };
        let limit = self.system.config.max_text_bytes;
        if text.is_empty() {
            return Err(ApiError::InvalidField("a text message's body must not be empty".into()));
        }
        if text.len() > limit {
            return Err(ApiError::TextTooLong { len: text.len(), limit });
        }
        serde_json::to_string(body).map_err(|e| ApiError::Internal(e.to_string()))
    }

    /// Checks what needs no group state; the group's actor checks `count` against its
    /// members.
    fn validate_red_packet(&self, body: &serde_json::Value) -> Result<String, ApiError> {
        let packet = RedPacketBody::deserialize(body)
            .map_err(|e| ApiError::InvalidField(format!("a red packet's body: {e}")))?;
        let most = self.system.config.max_red_packet_total;
        if !(1..=most).contains(&packet.total) {
            return Err(ApiError::InvalidField(format!("total must be 1-{most} cents")));
        }
        let most_shares = self.system.config.max_group_members;
        if packet.count == 0 || packet.count > most_shares || i64::from(packet.count) > packet.total {
            return Err(ApiError::InvalidField(format!(
                "count must be 1-{most_shares}, at most the group's members and at most total (a share is at least a cent)"
            )));
        }
        if packet.greeting.chars().count() > RED_PACKET_GREETING_MAX || packet.greeting.chars().any(char::is_control) {
            return Err(ApiError::InvalidField(format!(
                "greeting must be at most {RED_PACKET_GREETING_MAX} characters, without control characters"
            )));
        }
        serde_json::to_string(&packet).map_err(|e| ApiError::Internal(e.to_string()))
    }

    /// A media message carries a media object its sender uploaded, of the message's type;
    /// the stored body is the object's metadata, so members can render it without asking.
    async fn validate_media(
        &self,
        me: UserId,
        group: GroupId,
        kind: MessageKind,
        body: &serde_json::Value,
    ) -> Result<String, ApiError> {
        let body =
            MediaBody::deserialize(body).map_err(|e| ApiError::InvalidField(format!("a media message's body: {e}")))?;
        let record = self.system.store.media(body.media).await?;
        let Some(record) = record.filter(|m| m.uploader == me) else {
            return Err(ApiError::NotFound("media"));
        };
        if record.kind != kind {
            return Err(ApiError::InvalidField(format!(
                "media {} is {}, not {}",
                record.id,
                record.kind.as_str(),
                kind.as_str()
            )));
        }
        // Linked before the message exists: once members see it, they may fetch the media.
        // Here, not in the group's actor, so no send waits behind this write; a sender who
        // is not a member links nothing (the group's actor refuses the send itself).
        if self.system.store.member(group, me).await?.is_some() {
            self.system.store.link_media_group(record.id, group).await?;
        }
        serde_json::to_string(&views::media(&record)).map_err(|e| ApiError::Internal(e.to_string()))
    }

    /// A signed download URL for a media object the caller may see: their own upload, or
    /// one sent to a group they are in. Anyone else gets `not_found`, as for no media.
    async fn media_url(
        &self,
        id: Option<u64>,
        me: UserId,
        media: schema::MediaId,
        thumbnail: bool,
    ) -> Result<(), ApiError> {
        let store = &self.system.store;
        let record = store.media(media).await?.ok_or(ApiError::NotFound("media"))?;
        let mut allowed = record.uploader == me;
        if !allowed {
            for group in store.media_groups(media).await? {
                let live = store.group(group).await?.is_some_and(|g| !g.dissolved);
                if live && store.member(group, me).await?.is_some() {
                    allowed = true;
                    break;
                }
            }
        }
        if !allowed {
            return Err(ApiError::NotFound("media"));
        }
        if thumbnail && record.thumbnail.is_none() {
            return Err(ApiError::NotFound("thumbnail"));
        }
        let variant = if thumbnail { "thumbnail" } else { "" };
        let expires_at = now_ms() + self.system.config.media_url_ttl.as_millis() as u64;
        let signature = crate::media::sign_url(self.system.media_secret(), media, variant, expires_at);
        let path = if thumbnail { format!("/media/{media}/thumbnail") } else { format!("/media/{media}") };
        let url = format!("{path}?exp={expires_at}&sig={signature}");
        self.reply(id, "media_url", &wire::MediaUrl { media, url, expires_at });
        Ok(())
    }

    async fn wallet(&self, id: Option<u64>, me: UserId) -> Result<(), ApiError> {
        let store = &self.system.store;
        let balance = store.balance(me).await?;
        let entries = store
            .ledger(me, WALLET_ENTRIES)
            .await?
            .into_iter()
            .map(|e| wire::LedgerView { id: e.id, amount: e.amount, kind: e.kind, packet: e.packet, ts: e.ts })
            .collect();
        self.reply(id, "wallet", &wire::WalletView { balance, entries });
        Ok(())
    }

    async fn update_profile(&mut self, id: Option<u64>, me: UserId, r: UpdateProfileRequest) -> Result<(), ApiError> {
        if let Some(nickname) = &r.nickname {
            accounts::validate_display_name("nickname", nickname)?;
        }
        if let Some(url) = &r.avatar_url {
            accounts::validate_avatar_url(url)?;
        }
        let store = &self.system.store;
        let user = store
            .update_profile(me, r.nickname.as_deref(), r.avatar_url.as_deref())
            .await?
            .ok_or(ApiError::NotFound("user"))?;
        self.reply(id, "update_profile", &views::profile(&user));
        if let Some(signed_in) = &mut self.signed_in {
            signed_in.user = user;
        }
        Ok(())
    }

    async fn create_group(&self, id: Option<u64>, me: UserId, r: CreateGroupRequest) -> Result<(), ApiError> {
        accounts::validate_display_name("name", &r.name)?;
        let cap = self.system.config.max_group_members;
        let max_members = r.max_members.unwrap_or(cap);
        if !(2..=cap).contains(&max_members) {
            return Err(ApiError::InvalidField(format!("max_members must be 2-{cap}")));
        }
        let retention_days = validate_retention(r.retention_days.unwrap_or(0))?;
        let record = create_group(&self.system, me, &r.name, r.open, max_members, retention_days).await?;
        self.reply(id, "create_group", &views::group_info(&record, 0, retention_days));
        Ok(())
    }

    /// The caller's groups and unread counts. Reads the cache, then the store for what it
    /// lacks; no group actor starts.
    async fn summaries(&self, me: UserId, last_seqs: Freshness) -> Result<Vec<GroupSummary>, ApiError> {
        Ok(self.checked_summaries(me, last_seqs).await?.into_iter().map(|(summary, _)| summary).collect())
    }

    /// [`Session::summaries`], each with whether the store (not the cache) vouched for the
    /// caller's membership.
    async fn checked_summaries(&self, me: UserId, last_seqs: Freshness) -> Result<Vec<(GroupSummary, bool)>, ApiError> {
        let store = &self.system.store;
        let links = store.user_groups(me).await?;
        let ids: Vec<GroupId> = links.iter().map(|l| l.group).collect();
        // On a cluster: make sure the groups' actors deliver to this node before reading
        // their state, so no message falls between what is read and what arrives live.
        self.system.want_groups(&ids).await;
        let cached = self.system.cache().groups(me, &ids).await;
        let mut out = Vec::new();
        for (link, cached) in links.into_iter().zip(cached) {
            let (group, cached_last, role, from_store) = match cached {
                Some(CachedGroup { record, last_seq, role: Some(role) }) => (record, last_seq, Some(role), false),
                Some(CachedGroup { record, last_seq, role: None }) => {
                    let role = store.member(link.group, me).await?.map(|m| m.role);
                    (record, last_seq, role, true)
                }
                None => {
                    let Some(group) = store.group(link.group).await? else { continue };
                    let role = store.member(link.group, me).await?.map(|m| m.role);
                    (group, None, role, true)
                }
            };
            let (Some(role), false) = (role, group.dissolved) else { continue };
            let last_seq = match (last_seqs, cached_last) {
                (Freshness::Cached, Some(last_seq)) => last_seq,
                _ => {
                    let last_seq = store.last_seq(link.group).await?;
                    if cached_last.is_none() {
                        self.system.cache().fill(&group, last_seq);
                    }
                    last_seq
                }
            };
            let summary = GroupSummary {
                group: group.id,
                name: group.name,
                role,
                last_seq,
                read_seq: link.read_seq,
                unread: wire::unread(last_seq, link.read_seq),
            };
            out.push((summary, from_store));
        }
        Ok(out)
    }

    /// `not_found` unless `me` is a member of a live group. Returns the group's last seq.
    /// Asks the store, never the cache: this decides who may read a group's messages, and
    /// a cached role can outlive a removal by a moment.
    async fn check_member(&self, group: GroupId, me: UserId) -> Result<Seq, ApiError> {
        let store = &self.system.store;
        let live = store.group(group).await?.is_some_and(|g| !g.dissolved);
        if live && store.member(group, me).await?.is_some() {
            Ok(store.last_seq(group).await?)
        } else {
            Err(ApiError::group_not_found())
        }
    }

    /// Messages `from..=to` (a range the caller has bounded by its page size), from the
    /// cache when it holds them all, else from the store.
    async fn messages_in(&self, group: GroupId, from: Seq, to: Seq) -> Result<Vec<MessageRecord>, ApiError> {
        if from > to {
            return Ok(Vec::new());
        }
        if let Some(cached) = self.system.cache().messages(group, from, to).await {
            return Ok(cached);
        }
        let mut page = self.system.store.messages_after(group, from - 1, (to - from + 1) as usize).await?;
        page.retain(|m| m.seq <= to);
        Ok(page)
    }

    /// The group's first seq as a page of `from..=to` read after `first_seq` was learnt
    /// should report it. A trim that ran in between deleted the start of the range; the
    /// page then starts later, is empty, or (on a store that reads a page in parts) lacks
    /// its first part, and the client must be told where the log starts now, or it would
    /// take the seqs it did not get for missing ones.
    async fn first_seq_after_read(
        &self,
        group: GroupId,
        first_seq: Seq,
        from: Seq,
        to: Seq,
        page: &[MessageRecord],
    ) -> Result<Seq, ApiError> {
        let whole = !page.is_empty() && page.iter().zip(from..).all(|(m, seq)| m.seq == seq);
        if from > to || whole {
            return Ok(first_seq);
        }
        Ok(self.system.store.retention(group).await?.first_seq().max(first_seq))
    }

    async fn history(&self, id: Option<u64>, me: UserId, r: HistoryRequest) -> Result<(), ApiError> {
        let limit = bounded_limit(r.limit, 50, 1, HISTORY_MAX_LIMIT)? as Seq;
        let last_seq = self.check_member(r.group, me).await?;
        let first_seq = self.system.store.retention(r.group).await?.first_seq();
        // Seqs are gapless from `first_seq` on, so a page is a range of seqs, known before
        // anything is read.
        let (from, to, backwards) = match (r.before, r.after) {
            (Some(_), Some(_)) => {
                return Err(ApiError::InvalidField("give before or after, not both".into()));
            }
            (None, Some(after)) => {
                let from = after.saturating_add(1).max(first_seq);
                (from, from.saturating_add(limit - 1).min(last_seq), false)
            }
            (before, None) => {
                let to = before.unwrap_or(Seq::MAX).saturating_sub(1).min(last_seq);
                (to.saturating_sub(limit - 1).max(first_seq), to, true)
            }
        };
        let records = self.messages_in(r.group, from, to).await?;
        let first_seq = self.first_seq_after_read(r.group, first_seq, from, to, &records).await?;
        let has_more = if backwards { from > first_seq && from <= to } else { to < last_seq };
        let messages = records.iter().map(views::message_view).collect();
        let page = wire::HistoryPage { group: r.group, messages, has_more, last_seq, first_seq };
        self.reply(id, "history", &page);
        Ok(())
    }

    async fn sync(&self, id: Option<u64>, me: UserId, r: SyncRequest) -> Result<(), ApiError> {
        let limit = bounded_limit(r.limit, 50, 0, HISTORY_MAX_LIMIT)? as usize;
        let cursors: HashMap<GroupId, Seq> = r.groups.iter().map(|c| (c.group, c.after)).collect();
        let summaries = self.checked_summaries(me, Freshness::Store).await?;
        let mut budget = SYNC_MAX_MESSAGES;
        let mut groups = Vec::with_capacity(summaries.len());
        for (summary, from_store) in summaries {
            let mut messages = Vec::new();
            let mut has_more = false;
            let mut first_seq = None;
            // Messages only after the store confirms membership (the listing may come from
            // the cache).
            if let Some(&after) = cursors.get(&summary.group)
                && after < summary.last_seq
                && (from_store || self.system.store.member(summary.group, me).await?.is_some())
            {
                let first = self.system.store.retention(summary.group).await?.first_seq();
                first_seq = Some(first);
                // Past what retention deleted, the client holds everything there is.
                let after = after.max(first - 1);
                let take = limit.min(budget) as Seq;
                if take > 0 {
                    let to = after.saturating_add(take).min(summary.last_seq);
                    let page = self.messages_in(summary.group, after + 1, to).await?;
                    first_seq = Some(self.first_seq_after_read(summary.group, first, after + 1, to, &page).await?);
                    budget -= page.len();
                    messages = page.iter().map(views::message_view).collect();
                }
                let newest = messages.last().map_or(after, |m: &wire::MessageView| m.seq);
                has_more = newest < summary.last_seq;
            }
            groups.push(wire::SyncGroup { summary, messages, has_more, first_seq });
        }
        let known: HashSet<GroupId> = groups.iter().map(|g| g.summary.group).collect();
        let mut gone: Vec<GroupId> = cursors.keys().filter(|g| !known.contains(g)).copied().collect();
        gone.sort();
        self.reply(id, "sync", &wire::SyncResult { groups, gone });
        Ok(())
    }
}

/// Where a group summary's last seq may come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Freshness {
    /// The store: what the client is told is at least as new as every ack it got.
    Store,
    /// The cache when it has it (may lag a send by a moment).
    Cached,
}

fn face_code(text: &str) -> Result<u16, ApiError> {
    facetoface::parse_code(text)
        .ok_or_else(|| ApiError::InvalidField("code must be exactly 4 digits, as a string".into()))
}

/// A group's retention as asked: 0 (forever) or 1 up to the most there is.
fn validate_retention(days: u32) -> Result<u32, ApiError> {
    if days <= schema::frames::client::MAX_RETENTION_DAYS {
        Ok(days)
    } else {
        Err(ApiError::InvalidField(format!(
            "retention_days must be 0 (forever) or 1-{}",
            schema::frames::client::MAX_RETENTION_DAYS
        )))
    }
}

fn bounded_limit(limit: Option<u32>, default: u32, min: u32, max: u32) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(default);
    if (min..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::InvalidField(format!("limit must be {min}-{max}")))
    }
}
