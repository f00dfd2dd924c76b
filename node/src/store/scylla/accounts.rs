//! Accounts, sessions and users' group indexes on ScyllaDB: one partition per user, per
//! username, per session. "If free" is `IF NOT EXISTS`; a user's partitions are only ever
//! written by LWTs (deletes too), so their writes are ordered by Paxos, not by clocks.

use super::rows::{self, Lwt, id};
use super::{Inner, ScyllaStore, unset};
use actors::store::*;
use async_trait::async_trait;
use schema::records::*;
use schema::{GroupId, Seq, UserId};

/// The shortest TTL a session gets. The actors refuse an expired session by its
/// `expires_at`; the TTL only collects garbage, so a session is never dropped before it
/// can be read back.
const MIN_SESSION_TTL_SECONDS: u64 = 60;

/// ScyllaDB's longest TTL (20 years).
const MAX_TTL_SECONDS: u64 = 20 * 365 * 24 * 3600;

/// The TTL of a session: its remaining lifetime, within ScyllaDB's bounds.
fn session_ttl_seconds(expires_at_ms: u64, now_ms: u64) -> i32 {
    let remaining = expires_at_ms.saturating_sub(now_ms).div_ceil(1000);
    remaining.clamp(MIN_SESSION_TTL_SECONDS, MAX_TTL_SECONDS) as i32
}

/// Whether the row a refused `insert_user` found is `user` (a profile field never set
/// reads as null, the record's empty string).
fn is_user(there: &Lwt, user: &UserRecord) -> StoreResult<bool> {
    Ok(there.bigint("user_id")? == Some(id(user.id.0))
        && there.text("username")? == Some(user.username.as_str())
        && there.text("nickname")?.unwrap_or_default() == user.nickname
        && there.text("avatar_url")?.unwrap_or_default() == user.avatar_url
        && there.bigint("created_at")? == Some(id(user.created_at)))
}

#[async_trait]
impl AccountStore for ScyllaStore {
    async fn insert_user(&self, user: &UserRecord) -> StoreResult<bool> {
        let values = (
            id(user.id.0),
            user.username.as_str(),
            user.nickname.as_str(),
            user.avatar_url.as_str(),
            id(user.created_at),
        );
        let inner = &self.inner;
        inner.insert_if_absent(|| inner.lwt(&inner.st.insert_user, values), |there| is_user(there, user)).await
    }

    async fn user(&self, user: UserId) -> StoreResult<Option<UserRecord>> {
        self.inner.first(&self.inner.st.select_user, (id(user.0),)).await?.map(rows::user).transpose()
    }

    async fn delete_user(&self, user: UserId) -> StoreResult<()> {
        self.inner.lwt(&self.inner.st.delete_user, (id(user.0),)).await.map(drop)
    }

    async fn update_profile(
        &self,
        user: UserId,
        nickname: Option<&str>,
        avatar_url: Option<&str>,
    ) -> StoreResult<Option<UserRecord>> {
        if nickname.is_some() || avatar_url.is_some() {
            // Absent fields are bound UNSET, so two devices editing different fields both win.
            let values = (unset(nickname), unset(avatar_url), id(user.0));
            if !self.inner.lwt(&self.inner.st.update_profile, values).await?.applied {
                return Ok(None);
            }
        }
        self.user(user).await
    }

    async fn claim_username(&self, username: &str, credential: &CredentialRecord) -> StoreResult<bool> {
        let values = (username, id(credential.user.0), credential.password_hash.as_str());
        let inner = &self.inner;
        let is_ours = |there: &Lwt| {
            Ok(there.bigint("user_id")? == Some(id(credential.user.0))
                && there.text("password_hash")? == Some(credential.password_hash.as_str()))
        };
        inner.insert_if_absent(|| inner.lwt(&inner.st.claim_username, values), is_ours).await
    }

    async fn credential(&self, username: &str) -> StoreResult<Option<CredentialRecord>> {
        self.inner.first(&self.inner.st.select_credential, (username,)).await?.map(rows::credential).transpose()
    }

    async fn insert_session(&self, token: &TokenHash, session: &SessionRecord) -> StoreResult<()> {
        let ttl = session_ttl_seconds(session.expires_at, actors::now_ms());
        let values = (token.as_slice(), id(session.user.0), id(session.created_at), id(session.expires_at), ttl);
        self.inner.run(&self.inner.st.insert_session, values).await.map(drop)
    }

    async fn session(&self, token: &TokenHash) -> StoreResult<Option<SessionRecord>> {
        self.inner.first(&self.inner.st.select_session, (token.as_slice(),)).await?.map(rows::session).transpose()
    }

    async fn delete_session(&self, token: &TokenHash) -> StoreResult<()> {
        self.inner.run(&self.inner.st.delete_session, (token.as_slice(),)).await.map(drop)
    }
}

impl Inner {
    async fn advance_mark(&self, user: UserId, group: GroupId, seq: Seq) -> StoreResult<Option<Seq>> {
        let answer = self.lwt(&self.st.advance_read_mark, (id(seq), id(user.0), id(group.0), id(seq))).await?;
        if answer.applied {
            return Ok(Some(seq));
        }
        // Refused: the mark is already at or past `seq` (its value came back), or the
        // group is not in the index (null).
        match answer.bigint("read_seq")? {
            None => Ok(None),
            Some(mark) => Ok(Some(rows::unsigned(Some(mark), "user_groups.read_seq")?)),
        }
    }
}

#[async_trait]
impl UserGroupStore for ScyllaStore {
    async fn link_user_group(&self, user: UserId, link: &UserGroupRecord) -> StoreResult<()> {
        let values = (id(user.0), id(link.group.0), id(link.read_seq), id(link.joined_at));
        // Not applied means already linked: the existing mark stays, as the trait asks.
        self.inner.lwt(&self.inner.st.link_user_group, values).await.map(drop)
    }

    async fn unlink_user_group(&self, user: UserId, group: GroupId) -> StoreResult<()> {
        self.inner.lwt(&self.inner.st.unlink_user_group, (id(user.0), id(group.0))).await.map(drop)
    }

    async fn user_groups(&self, user: UserId) -> StoreResult<Vec<UserGroupRecord>> {
        let rows: Vec<rows::LinkRow> =
            self.inner.paged(&self.inner.st.select_user_groups, (id(user.0),), usize::MAX).await?;
        rows.into_iter().map(rows::link).collect()
    }

    async fn user_group(&self, user: UserId, group: GroupId) -> StoreResult<Option<UserGroupRecord>> {
        self.inner.first(&self.inner.st.select_user_group, (id(user.0), id(group.0))).await?.map(rows::link).transpose()
    }

    async fn advance_read_mark(&self, user: UserId, group: GroupId, seq: Seq) -> StoreResult<Option<Seq>> {
        self.inner.advance_mark(user, group, seq).await
    }

    fn advance_read_marks_then(&self, group: GroupId, marks: Vec<(UserId, Seq)>, done: WriteDone) {
        let inner = self.inner.clone();
        self.in_order(
            group,
            Box::pin(async move {
                // Each mark is its own partition; they go out together and `done` waits for all.
                let writes = marks.into_iter().map(|(user, seq)| inner.advance_mark(user, group, seq));
                let results = futures_util::future::join_all(writes).await;
                done(results.into_iter().find_map(Result::err).map_or(Ok(()), Err));
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_live_for_their_remaining_lifetime_within_bounds() {
        let now = 1_000_000;
        assert_eq!(session_ttl_seconds(now + 3_600_000, now), 3600);
        assert_eq!(session_ttl_seconds(now + 3_600_001, now), 3601, "rounded up, never early");
        assert_eq!(session_ttl_seconds(2, now), 60, "an expired session still reads back once");
        assert_eq!(session_ttl_seconds(u64::MAX, now), MAX_TTL_SECONDS as i32);
    }
}
