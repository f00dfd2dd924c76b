//! Message retention in PostgreSQL: the setting and the trim point are columns of the group
//! row, so a trim takes the row's lock like every write to the group's log.

use super::{LAST_SEQ, PostgresStore, db, id, lock_fence, unsigned};
use actors::store::*;
use async_trait::async_trait;
use schema::{GroupId, Seq};

fn days_of(v: i32) -> StoreResult<u32> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("retention_days {v}")))
}

#[async_trait]
impl RetentionStore for PostgresStore {
    async fn set_retention_days(&self, fence: Fence, days: u32) -> StoreResult<bool> {
        let days = i32::try_from(days).map_err(|_| StoreError::Conflict(format!("retention of {days} days")))?;
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(db)?;
        if !lock_fence(&txn, fence, "FOR UPDATE").await? {
            return Ok(false);
        }
        txn.execute("UPDATE groups SET retention_days = $2 WHERE group_id = $1", &[&id(fence.group.0), &days])
            .await
            .map_err(db)?;
        txn.commit().await.map_err(db)?;
        Ok(true)
    }

    async fn retention(&self, group: GroupId) -> StoreResult<Retention> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT retention_days, trimmed_through FROM groups WHERE group_id = $1")
            .await
            .map_err(db)?;
        match client.query_opt(&statement, &[&id(group.0)]).await.map_err(db)? {
            Some(row) => Ok(Retention { days: days_of(row.get(0))?, trimmed_through: unsigned(row.get(1)) }),
            None => Ok(Retention::default()),
        }
    }

    async fn retained_groups(&self, after: Option<GroupId>, limit: usize) -> StoreResult<Vec<(GroupId, Retention)>> {
        let client = self.client().await?;
        let after = after.map_or(i64::MIN, |g| id(g.0));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(
                "SELECT group_id, retention_days, trimmed_through FROM groups \
                 WHERE retention_days > 0 AND group_id > $1 ORDER BY group_id LIMIT $2",
                &[&after, &limit],
            )
            .await
            .map_err(db)?;
        rows.iter()
            .map(|row| {
                let retention = Retention { days: days_of(row.get(1))?, trimmed_through: unsigned(row.get(2)) };
                Ok((GroupId(unsigned(row.get(0))), retention))
            })
            .collect()
    }

    async fn trim_log(&self, group: GroupId, through: Seq, days: u32) -> StoreResult<Seq> {
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(db)?;
        // The row's exclusive lock orders the trim with appends (they take it shared), so the
        // last seq read below cannot move until the commit.
        let Some(row) = txn
            .query_opt(
                "SELECT trimmed_through, retention_days FROM groups WHERE group_id = $1 FOR UPDATE",
                &[&id(group.0)],
            )
            .await
            .map_err(db)?
        else {
            return Ok(0);
        };
        let trimmed = unsigned(row.get(0));
        if days == 0 || days_of(row.get(1))? != days {
            return Ok(trimmed);
        }
        let last = unsigned(txn.query_one(LAST_SEQ, &[&id(group.0)]).await.map_err(db)?.get(0));
        let through = through.min(last.max(trimmed));
        if through <= trimmed {
            return Ok(trimmed);
        }
        txn.execute("UPDATE groups SET trimmed_through = $2 WHERE group_id = $1", &[&id(group.0), &id(through)])
            .await
            .map_err(db)?;
        // The resend index is on the rows themselves, so it goes with them.
        txn.execute(
            "DELETE FROM messages WHERE group_id = $1 AND seq > $2 AND seq <= $3",
            &[&id(group.0), &id(trimmed), &id(through)],
        )
        .await
        .map_err(db)?;
        txn.commit().await.map_err(db)?;
        Ok(through)
    }
}
