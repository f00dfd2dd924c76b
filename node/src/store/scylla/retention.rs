//! Message retention on ScyllaDB: the setting and the trim point are static columns of the
//! group's partition, the trim point moved by LWT so concurrent trims agree; the trimmed
//! messages go by range deletes, bucket by bucket.
//!
//! A range delete leaves a bucket's static `last_seq` and `epoch` alone, so the log keeps
//! its last seq and its fence however much of it is deleted. The resend index rows are not
//! deleted: they expire by their TTL (48 h), past the protocol's 24 h and never before the
//! message (retention is at least a day), and an id found for a deleted message still
//! answers its resend as a duplicate.

use super::ScyllaStore;
use super::log;
use super::rows::{self, id, next_row, pager};
use actors::store::*;
use async_trait::async_trait;
use futures_util::StreamExt;
use schema::{GroupId, Seq};

/// Attempts at moving the trim point against concurrent trims before giving up.
const ATTEMPTS: usize = 16;

fn retention_of(days: Option<i32>, trimmed: Option<i64>) -> StoreResult<Retention> {
    let days = u32::try_from(days.unwrap_or(0))
        .map_err(|_| StoreError::Corrupt(format!("scylla: groups.retention_days is {days:?}")))?;
    let trimmed_through = match trimmed {
        None => 0,
        Some(_) => rows::unsigned(trimmed, "groups.trimmed_through")?,
    };
    Ok(Retention { days, trimmed_through })
}

#[async_trait]
impl RetentionStore for ScyllaStore {
    async fn set_retention_days(&self, fence: Fence, days: u32) -> StoreResult<bool> {
        let days = i32::try_from(days).map_err(|_| StoreError::Conflict(format!("retention of {days} days")))?;
        let values = (days, id(fence.group.0), id(fence.epoch));
        let answer = self.inner.lwt(&self.inner.st.set_retention_days, values).await?;
        if answer.applied {
            return Ok(true);
        }
        match answer.epoch()? {
            None => Ok(false),
            Some(current) if current != fence.epoch => Err(fence.refused(current)),
            Some(_) => Err(StoreError::Unavailable(format!("scylla: retention of group {} refused", fence.group))),
        }
    }

    async fn retention(&self, group: GroupId) -> StoreResult<Retention> {
        let row =
            self.inner.first::<(Option<i32>, Option<i64>)>(&self.inner.st.select_retention, (id(group.0),)).await?;
        let (days, trimmed) = row.unwrap_or((None, None));
        retention_of(days, trimmed)
    }

    async fn retained_groups(&self, after: Option<GroupId>, limit: usize) -> StoreResult<Vec<(GroupId, Retention)>> {
        let inner = &self.inner;
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let pages = match after {
            None => inner.session.execute_iter(inner.st.scan_retained_groups.clone(), ()).await,
            Some(group) => {
                inner.session.execute_iter(inner.st.scan_retained_groups_after.clone(), (id(group.0),)).await
            }
        }
        .map_err(pager)?;
        let mut rows = pages.rows_stream::<(Option<i64>, Option<i32>, Option<i64>)>().map_err(rows::corrupt)?;
        while let Some(row) = rows.next().await {
            let (group, days, trimmed) = row.map_err(next_row)?;
            let retention = retention_of(days, trimmed)?;
            if retention.days > 0 {
                out.push((GroupId(rows::unsigned(group, "groups.group_id")?), retention));
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    async fn trim_log(&self, group: GroupId, through: Seq, days: u32) -> StoreResult<Seq> {
        let inner = &self.inner;
        let g = id(group.0);
        let days = i32::try_from(days).map_err(|_| StoreError::Conflict(format!("retention of {days} days")))?;
        let previous = self.retention(group).await?.trimmed_through;
        let mut current = previous;
        if days == 0 {
            return Ok(current);
        }
        let through = through.min(inner.last_seq(group).await?.max(current));
        let mut first = true;
        // Move the trim point first, so readers (who filter by it) never see a hole.
        for _ in 0..ATTEMPTS {
            if through <= current {
                break;
            }
            let answer = if current == 0 && first {
                inner.lwt(&inner.st.set_first_trimmed, (id(through), g, days)).await?
            } else {
                inner.lwt(&inner.st.set_trimmed, (id(through), g, id(current), days)).await?
            };
            if answer.applied {
                current = through;
                break;
            }
            first = false;
            current = match answer.bigint("trimmed_through")? {
                None => 0,
                found => rows::unsigned(found, "groups.trimmed_through")?,
            };
            if answer.int("retention_days")? != Some(days) {
                // The retention changed since the trim was decided (or there is no group):
                // nothing is deleted.
                return Ok(current);
            }
        }
        if current < through {
            return Err(StoreError::Unavailable(format!("scylla: trim of group {group} kept losing to other trims")));
        }
        // Delete from the start of the bucket where the previous trim point was: deleting
        // twice is harmless, and it finishes what a trim that failed part-way there left.
        // (Rows an older failure left in earlier buckets stay, below `first_seq`, unread.)
        let start = log::first_seq(log::bucket_of(previous + 1));
        for bucket in log::bucket_of(start)..=log::bucket_of(through) {
            let values = (g, id(bucket), id(start - 1), id(through));
            inner.run(&inner.st.trim_bucket, values).await?;
        }
        Ok(current)
    }
}
