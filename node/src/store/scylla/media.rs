//! Media metadata on ScyllaDB: one partition per media object (the record as static columns,
//! the groups it was sent to as clustering rows), and one per user for the media bytes they
//! hold (see the CQL file).
//!
//! The record is inserted `IF NOT EXISTS`, which settles who owns an id; links and the
//! delete are plain writes (the exception to the store's LWT-only rule that the CQL file
//! explains). The byte count is a compare-and-set, as a wallet's balance is: read it at
//! SERIAL, then `SET bytes = :new IF bytes = :read`; a refusal returns the count it found,
//! which is the next try's expectation.
//!
//! The index of media to delete unless sent (`unsent_media`) is in hour buckets, read from
//! 48 hours back, as the red packets' due index is (see `due.rs`); `insert_media` writes its
//! entry before the record, so an entry may point at nothing but no record is missing from it.

use super::due::due_bucket;
use super::rows::{self, MediaRow, UnsentRow, id};
use super::{Inner, Lwt, ScyllaStore, unset};
use actors::store::*;
use async_trait::async_trait;
use schema::records::MediaRecord;
use schema::{GroupId, MediaId, UserId};

/// Compare-and-set rounds of one change to a user's byte count before it gives up as
/// `unavailable`. A round only fails if another upload moved the count between its read and
/// its write.
const QUOTA_ATTEMPTS: usize = 20;

/// A stored count of bytes: never negative.
fn stored_bytes(value: Option<i64>) -> StoreResult<Option<u64>> {
    value.map(|bytes| rows::unsigned(Some(bytes), "user_media_bytes.bytes")).transpose()
}

/// Whether the record that refused a retried insert is the one we wrote: same uploader,
/// same bytes, same time.
fn is_media(there: &Lwt, media: &MediaRecord) -> StoreResult<bool> {
    Ok(there.bigint("uploader")? == Some(id(media.uploader.0))
        && there.text("sha256")? == Some(media.sha256.as_str())
        && there.bigint("created_at")? == Some(id(media.created_at)))
}

impl Inner {
    /// The user's byte count through Paxos (None: no row yet). SERIAL, so it sees a change
    /// still in flight and the compare-and-set after it usually holds at once.
    async fn media_bytes_serial(&self, user: UserId) -> StoreResult<Option<u64>> {
        let values = (id(user.0),);
        let row = self.first::<(Option<i64>, Option<i64>)>(&self.st.select_media_bytes_serial, values).await?;
        stored_bytes(row.and_then(|(bytes, _)| bytes))
    }

    /// Moves the user's byte count from what it is to `change(count)`, by compare-and-set:
    /// Ok(false) with nothing written if `change` refuses (None), Ok(true) once a write
    /// applied or when there is nothing to change.
    async fn change_media_bytes(&self, user: UserId, change: impl Fn(u64) -> Option<u64>) -> StoreResult<bool> {
        let mut expected = self.media_bytes_serial(user).await?;
        for _ in 0..QUOTA_ATTEMPTS {
            let current = expected.unwrap_or(0);
            let Some(next) = change(current) else { return Ok(false) };
            if next == current {
                // Nothing to write (a release from zero, a reservation of zero bytes).
                return Ok(true);
            }
            let answer = match expected {
                None => self.lwt(&self.st.set_first_media_bytes, (id(next), id(user.0))).await?,
                Some(read) => self.lwt(&self.st.set_media_bytes, (id(next), id(user.0), id(read))).await?,
            };
            if answer.applied {
                return Ok(true);
            }
            // Another change moved the count: the refusal returned it. If it says nothing
            // new, ask Paxos instead of trying the same expectation again.
            let found = stored_bytes(answer.bigint("bytes")?)?;
            expected = if found != expected { found } else { self.media_bytes_serial(user).await? };
        }
        Err(StoreError::Unavailable(format!("scylla: the media bytes of user {user} kept changing")))
    }
}

#[async_trait]
impl MediaStore for ScyllaStore {
    async fn reserve_media_bytes(&self, user: UserId, bytes: u64, quota: u64) -> StoreResult<bool> {
        // A failure that may have applied (a timeout) is not retried: a retry could not tell
        // its own write from another upload's, and would reserve twice. Left as it is, the
        // count errs high, so the quota still holds.
        let within_quota = |current: u64| current.checked_add(bytes).filter(|after| *after <= quota);
        self.inner.change_media_bytes(user, within_quota).await
    }

    async fn release_media_bytes(&self, user: UserId, bytes: u64) -> StoreResult<()> {
        self.inner.change_media_bytes(user, |current| Some(current.saturating_sub(bytes))).await.map(drop)
    }

    async fn media_bytes(&self, user: UserId) -> StoreResult<u64> {
        let row = self.inner.first::<(Option<i64>,)>(&self.inner.st.select_media_bytes, (id(user.0),)).await?;
        Ok(stored_bytes(row.and_then(|(bytes,)| bytes))?.unwrap_or(0))
    }

    async fn insert_media(&self, media: &MediaRecord, unsent_until: u64) -> StoreResult<bool> {
        let inner = &self.inner;
        // The index entry first: one that points at nothing is harmless to the sweeper, a
        // record the sweeper cannot find would never be deleted.
        let entry = (id(due_bucket(unsent_until)), id(unsent_until), id(media.id.0));
        inner.run(&inner.st.insert_unsent_media, entry).await?;
        // Without dimensions (or a thumbnail), width and height (thumb_width and thumb_height)
        // stay unset rather than null: no tombstones.
        let sides = |size: Option<(u32, u32)>| match size {
            Some((width, height)) => (unset(Some(i64::from(width))), unset(Some(i64::from(height)))),
            None => (unset(None), unset(None)),
        };
        let (width, height) = sides(media.dimensions);
        let (thumb_width, thumb_height) = sides(media.thumbnail);
        let values = (
            id(media.id.0),
            id(media.uploader.0),
            media.kind.as_str(),
            media.mime.as_str(),
            id(media.size),
            media.sha256.as_str(),
            width,
            height,
            thumb_width,
            thumb_height,
            id(media.created_at),
        );
        inner.insert_if_absent(|| inner.lwt(&inner.st.insert_media, values), |there| is_media(there, media)).await
    }

    async fn unsent_media(&self, before: u64, limit: usize) -> StoreResult<Vec<(u64, MediaId)>> {
        let inner = &self.inner;
        inner.due_scan::<UnsentRow, _>(&inner.st.select_unsent_media, before, limit, rows::unsent).await
    }

    async fn forget_unsent_media(&self, due_at: u64, media: MediaId) -> StoreResult<()> {
        let values = (id(due_bucket(due_at)), id(due_at), id(media.0));
        self.inner.run(&self.inner.st.delete_unsent_media, values).await.map(drop)
    }

    async fn media(&self, media: MediaId) -> StoreResult<Option<MediaRecord>> {
        let row = self.inner.first::<MediaRow>(&self.inner.st.select_media, (id(media.0),)).await?;
        Ok(row.map(rows::media).transpose()?.flatten())
    }

    async fn delete_media(&self, media: MediaId) -> StoreResult<()> {
        self.inner.run(&self.inner.st.delete_media, (id(media.0),)).await.map(drop)
    }

    async fn link_media_group(&self, media: MediaId, group: GroupId) -> StoreResult<()> {
        self.inner.run(&self.inner.st.link_media_group, (id(media.0), id(group.0))).await.map(drop)
    }

    async fn media_groups(&self, media: MediaId) -> StoreResult<Vec<GroupId>> {
        let page: Vec<(Option<i64>,)> =
            self.inner.paged(&self.inner.st.select_media_groups, (id(media.0),), usize::MAX).await?;
        let mut groups = Vec::with_capacity(page.len());
        // The clustering order is ascending group id, which is the order the trait promises.
        for (group_id,) in page {
            // A record without links answers with one row: its static columns, group_id null.
            if group_id.is_some() {
                groups.push(GroupId(rows::unsigned(group_id, "media.group_id")?));
            }
        }
        Ok(groups)
    }
}
