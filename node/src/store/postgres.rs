//! The PostgreSQL store, for clusters that run PostgreSQL.
//!
//! Each store call is one statement, or one transaction over the rows of one partition (a
//! user, a username, a group with its members, a group's log); the layout is
//! `schema/sql/001_init.sql`, created at startup. Statements are prepared once per pooled
//! connection. Calls that must not wait (`*_then`) run on a small set of ordered lanes, one
//! per group hash, so that writes a group actor submits for one group apply in the order it
//! submitted them (its senders' read marks before the batch that moved them).

mod media;
mod retention;
mod wallet;

use super::lanes::{Job, Lanes};
use actors::store::*;
use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use schema::frames::{MessageKind, Role};
use schema::records::*;
use schema::{GroupId, Seq, UserId};
use std::sync::Arc;
use tokio_postgres::error::SqlState;
use tokio_postgres::{NoTls, Row};

const SCHEMA: &str = include_str!("../../../schema/sql/001_init.sql");
/// Lanes for the ordered, non-waiting writes.
const LANES: usize = 8;

/// Why the PostgreSQL store could not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The URL or pool settings are wrong.
    #[error("postgres configuration: {0}")]
    Config(String),
    /// The server could not be reached or refused the schema.
    #[error("postgres: {0}")]
    Connect(String),
}

/// The PostgreSQL store.
pub struct PostgresStore {
    pool: Pool,
    lanes: Lanes,
}

impl PostgresStore {
    /// Connects to `url` with up to `pool_size` connections and creates the tables if needed.
    pub async fn open(url: &str, pool_size: usize) -> Result<Arc<Self>, OpenError> {
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e: tokio_postgres::Error| OpenError::Config(e.to_string()))?;
        // A node that freezes (SIGSTOP, a stalled VM) mid-transaction keeps its row locks
        // until the server gives up on it; the group's next owner would wait behind them. Our
        // transactions never pause between statements, so one idle for 2 s belongs to a
        // frozen or dead node: the server ends it. No statement waits more than 2 s for a
        // lock either; it fails (`unavailable`) and the client's retry finds the lock free.
        let options = [config.get_options().unwrap_or_default(), LOCK_OPTIONS].join(" ");
        config.options(options.trim());
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool =
            Pool::builder(manager).max_size(pool_size.max(2)).build().map_err(|e| OpenError::Config(e.to_string()))?;
        let client = pool.get().await.map_err(|e| OpenError::Connect(e.to_string()))?;
        // Nodes of a cluster start together; concurrent CREATE ... IF NOT EXISTS can still
        // collide in PostgreSQL's catalog, so creation runs under an advisory lock.
        let create = format!("BEGIN; SELECT pg_advisory_xact_lock({SCHEMA_LOCK}); {SCHEMA}; COMMIT;");
        client.batch_execute(&create).await.map_err(|e| OpenError::Connect(describe(&e)))?;
        drop(client);
        let lanes = Lanes::start(LANES);
        Ok(Arc::new(PostgresStore { pool, lanes }))
    }

    async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    /// Runs `job` after everything submitted before for the same group.
    fn in_order(&self, group: GroupId, job: Job) {
        self.lanes.run(group, job);
    }
}

/// Session settings for every connection (see `open`).
const LOCK_OPTIONS: &str = "-c idle_in_transaction_session_timeout=2000 -c lock_timeout=2000";

/// The advisory lock key that serializes schema creation.
const SCHEMA_LOCK: i64 = 0x7472_6f75_7065;

/// The server's message, not just "db error".
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

fn db(e: tokio_postgres::Error) -> StoreError {
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        StoreError::Conflict(describe(&e))
    } else {
        StoreError::Unavailable(describe(&e))
    }
}

fn id(v: u64) -> i64 {
    // Ids and seqs stay below 2^53 (schema::ids::MAX_ID); saturate rather than wrap.
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn unsigned(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn role_of(text: &str) -> StoreResult<Role> {
    Role::parse(text).ok_or_else(|| StoreError::Corrupt(format!("unknown role {text}")))
}

fn kind_of(text: &str) -> StoreResult<MessageKind> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|_| StoreError::Corrupt(format!("unknown message kind {text}")))
}

fn user_row(row: &Row) -> UserRecord {
    UserRecord {
        id: UserId(unsigned(row.get("user_id"))),
        username: row.get("username"),
        nickname: row.get("nickname"),
        avatar_url: row.get("avatar_url"),
        created_at: unsigned(row.get("created_at")),
    }
}

fn group_row(row: &Row) -> GroupRecord {
    GroupRecord {
        id: GroupId(unsigned(row.get("group_id"))),
        name: row.get("name"),
        owner: UserId(unsigned(row.get("owner"))),
        open: row.get("open"),
        max_members: u32::try_from(row.get::<_, i32>("max_members")).unwrap_or(0),
        member_count: u32::try_from(row.get::<_, i32>("member_count")).unwrap_or(0),
        created_at: unsigned(row.get("created_at")),
        dissolved: row.get("dissolved"),
    }
}

fn member_row(row: &Row) -> StoreResult<MemberRecord> {
    Ok(MemberRecord {
        user: UserId(unsigned(row.get("user_id"))),
        role: role_of(row.get("role"))?,
        joined_at: unsigned(row.get("joined_at")),
    })
}

fn link_row(row: &Row) -> UserGroupRecord {
    UserGroupRecord {
        group: GroupId(unsigned(row.get("group_id"))),
        read_seq: unsigned(row.get("read_seq")),
        joined_at: unsigned(row.get("joined_at")),
    }
}

fn message_row(row: &Row) -> StoreResult<MessageRecord> {
    Ok(MessageRecord {
        group: GroupId(unsigned(row.get("group_id"))),
        seq: unsigned(row.get("seq")),
        sender: UserId(unsigned(row.get("sender"))),
        client_msg_id: row.get("client_msg_id"),
        kind: kind_of(row.get("kind"))?,
        body: row.get("body"),
        ts: unsigned(row.get("ts")),
    })
}

const GROUP_COLUMNS: &str = "group_id, name, owner, open, max_members, member_count, created_at, dissolved";
const MESSAGE_COLUMNS: &str = "group_id, seq, sender, client_msg_id, kind, body, ts";

#[async_trait]
impl AccountStore for PostgresStore {
    async fn insert_user(&self, user: &UserRecord) -> StoreResult<bool> {
        let client = self.client().await?;
        let sql = "INSERT INTO users (user_id, username, nickname, avatar_url, created_at) VALUES ($1, $2, $3, $4, $5) \
                   ON CONFLICT (user_id) DO NOTHING";
        let statement = client.prepare_cached(sql).await.map_err(db)?;
        let inserted = client
            .execute(
                &statement,
                &[&id(user.id.0), &user.username, &user.nickname, &user.avatar_url, &id(user.created_at)],
            )
            .await
            .map_err(db)?;
        Ok(inserted == 1)
    }

    async fn user(&self, user: UserId) -> StoreResult<Option<UserRecord>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT user_id, username, nickname, avatar_url, created_at FROM users WHERE user_id = $1")
            .await
            .map_err(db)?;
        Ok(client.query_opt(&statement, &[&id(user.0)]).await.map_err(db)?.as_ref().map(user_row))
    }

    async fn delete_user(&self, user: UserId) -> StoreResult<()> {
        let client = self.client().await?;
        let statement = client.prepare_cached("DELETE FROM users WHERE user_id = $1").await.map_err(db)?;
        client.execute(&statement, &[&id(user.0)]).await.map_err(db)?;
        Ok(())
    }

    async fn update_profile(
        &self,
        user: UserId,
        nickname: Option<&str>,
        avatar_url: Option<&str>,
    ) -> StoreResult<Option<UserRecord>> {
        let client = self.client().await?;
        let sql = "UPDATE users SET nickname = COALESCE($2, nickname), avatar_url = COALESCE($3, avatar_url) \
                   WHERE user_id = $1 RETURNING user_id, username, nickname, avatar_url, created_at";
        let statement = client.prepare_cached(sql).await.map_err(db)?;
        Ok(client
            .query_opt(&statement, &[&id(user.0), &nickname, &avatar_url])
            .await
            .map_err(db)?
            .as_ref()
            .map(user_row))
    }

    async fn claim_username(&self, username: &str, credential: &CredentialRecord) -> StoreResult<bool> {
        let client = self.client().await?;
        let sql = "INSERT INTO usernames (username, user_id, password_hash) VALUES ($1, $2, $3) ON CONFLICT (username) DO NOTHING";
        let statement = client.prepare_cached(sql).await.map_err(db)?;
        let inserted = client
            .execute(&statement, &[&username, &id(credential.user.0), &credential.password_hash])
            .await
            .map_err(db)?;
        Ok(inserted == 1)
    }

    async fn credential(&self, username: &str) -> StoreResult<Option<CredentialRecord>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT user_id, password_hash FROM usernames WHERE username = $1")
            .await
            .map_err(db)?;
        let row = client.query_opt(&statement, &[&username]).await.map_err(db)?;
        Ok(row.map(|row| CredentialRecord { user: UserId(unsigned(row.get(0))), password_hash: row.get(1) }))
    }

    async fn insert_session(&self, token: &TokenHash, session: &SessionRecord) -> StoreResult<()> {
        let client = self.client().await?;
        let sql = "INSERT INTO sessions (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4) \
                   ON CONFLICT (token_hash) DO UPDATE SET user_id = $2, created_at = $3, expires_at = $4";
        let statement = client.prepare_cached(sql).await.map_err(db)?;
        client
            .execute(
                &statement,
                &[&token.as_slice(), &id(session.user.0), &id(session.created_at), &id(session.expires_at)],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn session(&self, token: &TokenHash) -> StoreResult<Option<SessionRecord>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT user_id, created_at, expires_at FROM sessions WHERE token_hash = $1")
            .await
            .map_err(db)?;
        let row = client.query_opt(&statement, &[&token.as_slice()]).await.map_err(db)?;
        Ok(row.map(|row| SessionRecord {
            user: UserId(unsigned(row.get(0))),
            created_at: unsigned(row.get(1)),
            expires_at: unsigned(row.get(2)),
        }))
    }

    async fn delete_session(&self, token: &TokenHash) -> StoreResult<()> {
        let client = self.client().await?;
        let statement = client.prepare_cached("DELETE FROM sessions WHERE token_hash = $1").await.map_err(db)?;
        client.execute(&statement, &[&token.as_slice()]).await.map_err(db)?;
        Ok(())
    }
}

#[async_trait]
impl GroupStore for PostgresStore {
    async fn create_group(&self, group: &GroupRecord, owner: &MemberRecord) -> StoreResult<bool> {
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(db)?;
        let sql = format!(
            "INSERT INTO groups ({GROUP_COLUMNS}) VALUES ($1, $2, $3, $4, $5, 1, $6, $7) ON CONFLICT (group_id) DO NOTHING"
        );
        let inserted = txn
            .execute(
                &sql,
                &[
                    &id(group.id.0),
                    &group.name,
                    &id(group.owner.0),
                    &group.open,
                    &i32::try_from(group.max_members).unwrap_or(i32::MAX),
                    &id(group.created_at),
                    &group.dissolved,
                ],
            )
            .await
            .map_err(db)?;
        if inserted != 1 {
            return Ok(false);
        }
        txn.execute(
            "INSERT INTO members (group_id, user_id, role, joined_at) VALUES ($1, $2, $3, $4)",
            &[&id(group.id.0), &id(owner.user.0), &owner.role.as_str(), &id(owner.joined_at)],
        )
        .await
        .map_err(db)?;
        txn.commit().await.map_err(db)?;
        Ok(true)
    }

    async fn claim_group(&self, group: GroupId) -> StoreResult<Option<Fence>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("UPDATE groups SET epoch = epoch + 1 WHERE group_id = $1 RETURNING epoch")
            .await
            .map_err(db)?;
        let row = client.query_opt(&statement, &[&id(group.0)]).await.map_err(db)?;
        Ok(row.map(|row| Fence { group, epoch: unsigned(row.get(0)) }))
    }

    async fn group(&self, group: GroupId) -> StoreResult<Option<GroupRecord>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!("SELECT {GROUP_COLUMNS} FROM groups WHERE group_id = $1"))
            .await
            .map_err(db)?;
        Ok(client.query_opt(&statement, &[&id(group.0)]).await.map_err(db)?.as_ref().map(group_row))
    }

    async fn member(&self, group: GroupId, user: UserId) -> StoreResult<Option<MemberRecord>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT user_id, role, joined_at FROM members WHERE group_id = $1 AND user_id = $2")
            .await
            .map_err(db)?;
        client
            .query_opt(&statement, &[&id(group.0), &id(user.0)])
            .await
            .map_err(db)?
            .as_ref()
            .map(member_row)
            .transpose()
    }

    async fn members(&self, group: GroupId, after: Option<UserId>, limit: usize) -> StoreResult<Vec<MemberRecord>> {
        let after = match after {
            Some(user) if user.0 >= i64::MAX as u64 => return Ok(Vec::new()),
            Some(user) => id(user.0),
            None => -1,
        };
        let client = self.client().await?;
        let sql = "SELECT user_id, role, joined_at FROM members WHERE group_id = $1 AND user_id > $2 ORDER BY user_id LIMIT $3";
        let statement = client.prepare_cached(sql).await.map_err(db)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client.query(&statement, &[&id(group.0), &after, &limit]).await.map_err(db)?;
        rows.iter().map(member_row).collect()
    }

    async fn add_member_if_below_cap(&self, fence: Fence, member: &MemberRecord) -> StoreResult<AddMemberOutcome> {
        let group = fence.group;
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(db)?;
        // The row lock serializes every membership change of this group.
        let row = txn
            .query_opt(
                "SELECT member_count, max_members, dissolved, epoch FROM groups WHERE group_id = $1 FOR UPDATE",
                &[&id(group.0)],
            )
            .await
            .map_err(db)?;
        let Some(row) = row else { return Ok(AddMemberOutcome::NoGroup) };
        let (count, max, dissolved): (i32, i32, bool) = (row.get(0), row.get(1), row.get(2));
        check_epoch(fence, row.get(3))?;
        if dissolved {
            return Ok(AddMemberOutcome::NoGroup);
        }
        let exists = txn
            .query_opt(
                "SELECT 1 FROM members WHERE group_id = $1 AND user_id = $2",
                &[&id(group.0), &id(member.user.0)],
            )
            .await
            .map_err(db)?;
        if exists.is_some() {
            return Ok(AddMemberOutcome::AlreadyMember);
        }
        if count >= max {
            return Ok(AddMemberOutcome::Full);
        }
        txn.execute(
            "INSERT INTO members (group_id, user_id, role, joined_at) VALUES ($1, $2, $3, $4)",
            &[&id(group.0), &id(member.user.0), &member.role.as_str(), &id(member.joined_at)],
        )
        .await
        .map_err(db)?;
        let row = txn
            .query_one(
                "UPDATE groups SET member_count = member_count + 1 WHERE group_id = $1 RETURNING member_count",
                &[&id(group.0)],
            )
            .await
            .map_err(db)?;
        txn.commit().await.map_err(db)?;
        Ok(AddMemberOutcome::Added(u32::try_from(row.get::<_, i32>(0)).unwrap_or(0)))
    }

    async fn remove_member(&self, fence: Fence, user: UserId) -> StoreResult<Option<u32>> {
        let group = fence.group;
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(db)?;
        if !lock_fence(&txn, fence, "FOR UPDATE").await? {
            return Ok(None);
        }
        let deleted = txn
            .execute("DELETE FROM members WHERE group_id = $1 AND user_id = $2", &[&id(group.0), &id(user.0)])
            .await
            .map_err(db)?;
        if deleted != 1 {
            return Ok(None);
        }
        let row = txn
            .query_one(
                "UPDATE groups SET member_count = GREATEST(member_count - 1, 0) WHERE group_id = $1 RETURNING member_count",
                &[&id(group.0)],
            )
            .await
            .map_err(db)?;
        txn.commit().await.map_err(db)?;
        Ok(Some(u32::try_from(row.get::<_, i32>(0)).unwrap_or(0)))
    }

    async fn set_member_role(&self, fence: Fence, user: UserId, role: Role) -> StoreResult<bool> {
        let group = fence.group;
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(db)?;
        if !lock_fence(&txn, fence, "FOR UPDATE").await? {
            return Ok(false);
        }
        let changed = txn
            .execute(
                "UPDATE members SET role = $3 WHERE group_id = $1 AND user_id = $2",
                &[&id(group.0), &id(user.0), &role.as_str()],
            )
            .await
            .map_err(db)?;
        txn.commit().await.map_err(db)?;
        Ok(changed == 1)
    }

    async fn transfer_ownership(&self, fence: Fence, from: UserId, to: UserId) -> StoreResult<bool> {
        let group = fence.group;
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(db)?;
        if !lock_fence(&txn, fence, "FOR UPDATE").await? {
            return Ok(false);
        }
        let both = txn
            .query_one(
                "SELECT count(*) FROM members WHERE group_id = $1 AND user_id IN ($2, $3)",
                &[&id(group.0), &id(from.0), &id(to.0)],
            )
            .await
            .map_err(db)?;
        if both.get::<_, i64>(0) != 2 {
            return Ok(false);
        }
        txn.execute(
            "UPDATE members SET role = 'admin' WHERE group_id = $1 AND user_id = $2",
            &[&id(group.0), &id(from.0)],
        )
        .await
        .map_err(db)?;
        txn.execute(
            "UPDATE members SET role = 'owner' WHERE group_id = $1 AND user_id = $2",
            &[&id(group.0), &id(to.0)],
        )
        .await
        .map_err(db)?;
        txn.execute("UPDATE groups SET owner = $2 WHERE group_id = $1", &[&id(group.0), &id(to.0)])
            .await
            .map_err(db)?;
        txn.commit().await.map_err(db)?;
        Ok(true)
    }

    async fn update_group(
        &self,
        fence: Fence,
        name: Option<&str>,
        open: Option<bool>,
    ) -> StoreResult<Option<GroupRecord>> {
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(db)?;
        if !lock_fence(&txn, fence, "FOR UPDATE").await? {
            return Ok(None);
        }
        let sql = format!(
            "UPDATE groups SET name = COALESCE($2, name), open = COALESCE($3, open) WHERE group_id = $1 RETURNING {GROUP_COLUMNS}"
        );
        let row = txn.query_one(&sql, &[&id(fence.group.0), &name, &open]).await.map_err(db)?;
        txn.commit().await.map_err(db)?;
        Ok(Some(group_row(&row)))
    }

    async fn dissolve_group(&self, fence: Fence) -> StoreResult<bool> {
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(db)?;
        if !lock_fence(&txn, fence, "FOR UPDATE").await? {
            return Ok(false);
        }
        txn.execute("UPDATE groups SET dissolved = TRUE WHERE group_id = $1", &[&id(fence.group.0)])
            .await
            .map_err(db)?;
        txn.commit().await.map_err(db)?;
        Ok(true)
    }
}

async fn advance_mark(
    client: &deadpool_postgres::Object,
    user: UserId,
    group: GroupId,
    seq: Seq,
) -> StoreResult<Option<Seq>> {
    let sql = "UPDATE user_groups SET read_seq = GREATEST(read_seq, $3) WHERE user_id = $1 AND group_id = $2 RETURNING read_seq";
    let statement = client.prepare_cached(sql).await.map_err(db)?;
    let row = client.query_opt(&statement, &[&id(user.0), &id(group.0), &id(seq)]).await.map_err(db)?;
    Ok(row.map(|row| unsigned(row.get(0))))
}

#[async_trait]
impl UserGroupStore for PostgresStore {
    async fn link_user_group(&self, user: UserId, link: &UserGroupRecord) -> StoreResult<()> {
        let client = self.client().await?;
        let sql = "INSERT INTO user_groups (user_id, group_id, read_seq, joined_at) VALUES ($1, $2, $3, $4) \
                   ON CONFLICT (user_id, group_id) DO NOTHING";
        let statement = client.prepare_cached(sql).await.map_err(db)?;
        client
            .execute(&statement, &[&id(user.0), &id(link.group.0), &id(link.read_seq), &id(link.joined_at)])
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn unlink_user_group(&self, user: UserId, group: GroupId) -> StoreResult<()> {
        let client = self.client().await?;
        let statement =
            client.prepare_cached("DELETE FROM user_groups WHERE user_id = $1 AND group_id = $2").await.map_err(db)?;
        client.execute(&statement, &[&id(user.0), &id(group.0)]).await.map_err(db)?;
        Ok(())
    }

    async fn user_groups(&self, user: UserId) -> StoreResult<Vec<UserGroupRecord>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT group_id, read_seq, joined_at FROM user_groups WHERE user_id = $1 ORDER BY group_id",
            )
            .await
            .map_err(db)?;
        Ok(client.query(&statement, &[&id(user.0)]).await.map_err(db)?.iter().map(link_row).collect())
    }

    async fn user_group(&self, user: UserId, group: GroupId) -> StoreResult<Option<UserGroupRecord>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT group_id, read_seq, joined_at FROM user_groups WHERE user_id = $1 AND group_id = $2",
            )
            .await
            .map_err(db)?;
        Ok(client.query_opt(&statement, &[&id(user.0), &id(group.0)]).await.map_err(db)?.as_ref().map(link_row))
    }

    async fn advance_read_mark(&self, user: UserId, group: GroupId, seq: Seq) -> StoreResult<Option<Seq>> {
        let client = self.client().await?;
        advance_mark(&client, user, group, seq).await
    }

    fn advance_read_marks_then(&self, group: GroupId, marks: Vec<(UserId, Seq)>, done: WriteDone) {
        let pool = self.pool.clone();
        self.in_order(
            group,
            Box::pin(async move {
                let result = async {
                    let client = pool.get().await.map_err(|e| StoreError::Unavailable(e.to_string()))?;
                    for (user, seq) in marks {
                        advance_mark(&client, user, group, seq).await?;
                    }
                    Ok(())
                }
                .await;
                done(result);
            }),
        );
    }
}

/// Refuses the write unless `fence` holds the group's epoch `current`.
fn check_epoch(fence: Fence, current: i64) -> StoreResult<()> {
    let current = unsigned(current);
    if current == fence.epoch { Ok(()) } else { Err(fence.refused(current)) }
}

/// Locks the group row (`lock` is `FOR UPDATE`, or `FOR SHARE` where writers may overlap) and
/// checks the fence; false if there is no such group. A claim takes the row's exclusive lock,
/// so it waits for every fenced write under way, and every later write sees the new epoch.
async fn lock_fence(txn: &tokio_postgres::Transaction<'_>, fence: Fence, lock: &str) -> StoreResult<bool> {
    let sql = format!("SELECT epoch FROM groups WHERE group_id = $1 {lock}");
    let Some(row) = txn.query_opt(&sql, &[&id(fence.group.0)]).await.map_err(db)? else {
        return Ok(false);
    };
    check_epoch(fence, row.get(0))?;
    Ok(true)
}

/// The log's last seq: its newest message's, or where retention cut it if nothing is left
/// (COALESCE evaluates the subquery only then).
const LAST_SEQ: &str = "SELECT COALESCE(MAX(seq), (SELECT trimmed_through FROM groups WHERE group_id = $1), 0) \
                        FROM messages WHERE group_id = $1";

async fn append(pool: &Pool, fence: Fence, after: Seq, messages: &[MessageRecord]) -> StoreResult<()> {
    let group = fence.group;
    check_append(group, after, messages)?;
    let mut client = pool.get().await.map_err(|e| StoreError::Unavailable(e.to_string()))?;
    let txn = client.transaction().await.map_err(db)?;
    if !lock_fence(&txn, fence, "FOR SHARE").await? {
        return Err(StoreError::Conflict(format!("no group {group}")));
    }
    let last: i64 = txn.query_one(LAST_SEQ, &[&id(group.0)]).await.map_err(db)?.get(0);
    if unsigned(last) != after {
        return Err(StoreError::Conflict(format!("log of group {group} ends at {last}, not {after}")));
    }
    // A writer racing on the same `after` inserts the same first seq: the primary key makes
    // one of them fail (as a conflict), so seqs stay unique and gapless.
    let insert = txn
        .prepare_cached(&format!("INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"))
        .await
        .map_err(db)?;
    for message in messages {
        txn.execute(
            &insert,
            &[
                &id(group.0),
                &id(message.seq),
                &id(message.sender.0),
                &message.client_msg_id,
                &message.kind.as_str(),
                &message.body,
                &id(message.ts),
            ],
        )
        .await
        .map_err(db)?;
    }
    txn.commit().await.map_err(db)
}

#[async_trait]
impl MessageStore for PostgresStore {
    async fn append_messages(&self, fence: Fence, after: Seq, messages: &[MessageRecord]) -> StoreResult<()> {
        append(&self.pool, fence, after, messages).await
    }

    fn append_messages_then(&self, fence: Fence, after: Seq, messages: Vec<MessageRecord>, done: WriteDone) {
        let pool = self.pool.clone();
        self.in_order(
            fence.group,
            Box::pin(async move {
                done(append(&pool, fence, after, &messages).await);
            }),
        );
    }

    async fn last_seq(&self, group: GroupId) -> StoreResult<Seq> {
        let client = self.client().await?;
        let statement = client.prepare_cached(LAST_SEQ).await.map_err(db)?;
        Ok(unsigned(client.query_one(&statement, &[&id(group.0)]).await.map_err(db)?.get(0)))
    }

    async fn messages_after(&self, group: GroupId, after: Seq, limit: usize) -> StoreResult<Vec<MessageRecord>> {
        if after >= i64::MAX as u64 {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let sql =
            format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE group_id = $1 AND seq > $2 ORDER BY seq LIMIT $3");
        let statement = client.prepare_cached(&sql).await.map_err(db)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client.query(&statement, &[&id(group.0), &id(after), &limit]).await.map_err(db)?;
        rows.iter().map(message_row).collect()
    }

    async fn messages_before(&self, group: GroupId, before: Seq, limit: usize) -> StoreResult<Vec<MessageRecord>> {
        if before == 0 {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE group_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
        );
        let statement = client.prepare_cached(&sql).await.map_err(db)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client.query(&statement, &[&id(group.0), &id(before), &limit]).await.map_err(db)?;
        let mut page = rows.iter().map(message_row).collect::<StoreResult<Vec<_>>>()?;
        page.reverse();
        Ok(page)
    }

    async fn message_by_client_id(
        &self,
        group: GroupId,
        sender: UserId,
        client_msg_id: &str,
    ) -> StoreResult<Option<(Seq, u64)>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT seq, ts FROM messages WHERE group_id = $1 AND sender = $2 AND client_msg_id = $3")
            .await
            .map_err(db)?;
        let row = client.query_opt(&statement, &[&id(group.0), &id(sender.0), &client_msg_id]).await.map_err(db)?;
        Ok(row.map(|row| (unsigned(row.get(0)), unsigned(row.get(1)))))
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn disk_usage_bytes(&self) -> StoreResult<Option<u64>> {
        let client = self.client().await?;
        let row = client.query_one("SELECT pg_database_size(current_database())", &[]).await.map_err(db)?;
        Ok(Some(unsigned(row.get(0))))
    }
}
