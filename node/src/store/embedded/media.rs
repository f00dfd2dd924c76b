//! Media metadata in the embedded store: each call one job of the group commit.

use super::{EmbeddedStore, db_error, decode, encode};
use actors::store::*;
use async_trait::async_trait;
use redb::{ReadableTable, TableDefinition, WriteTransaction};
use schema::records::MediaRecord;
use schema::{GroupId, MediaId, UserId};

/// media → its record.
const MEDIA: TableDefinition<u64, &[u8]> = TableDefinition::new("media");
/// (media, group) → (): the groups a media object was sent to.
const MEDIA_GROUPS: TableDefinition<(u64, u64), ()> = TableDefinition::new("media_groups");
/// user → bytes of media they hold.
const MEDIA_BYTES: TableDefinition<u64, u64> = TableDefinition::new("user_media_bytes");
/// (due time, media) → (): media to delete then unless sent.
const UNSENT: TableDefinition<(u64, u64), ()> = TableDefinition::new("unsent_media");

/// Creates the tables (at open).
pub(super) fn init(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(MEDIA)?;
    txn.open_table(MEDIA_GROUPS)?;
    txn.open_table(MEDIA_BYTES)?;
    txn.open_table(UNSENT)?;
    Ok(())
}

#[async_trait]
impl MediaStore for EmbeddedStore {
    async fn reserve_media_bytes(&self, user: UserId, bytes: u64, quota: u64) -> StoreResult<bool> {
        self.write(move |txn| {
            let mut held = txn.open_table(MEDIA_BYTES).map_err(db_error)?;
            let now = held.get(user.0).map_err(db_error)?.map_or(0, |v| v.value());
            match now.checked_add(bytes).filter(|after| *after <= quota) {
                Some(after) => {
                    held.insert(user.0, after).map_err(db_error)?;
                    Ok(true)
                }
                None => Ok(false),
            }
        })
        .await
    }

    async fn release_media_bytes(&self, user: UserId, bytes: u64) -> StoreResult<()> {
        self.write(move |txn| {
            let mut held = txn.open_table(MEDIA_BYTES).map_err(db_error)?;
            let now = held.get(user.0).map_err(db_error)?.map_or(0, |v| v.value());
            held.insert(user.0, now.saturating_sub(bytes)).map_err(db_error)?;
            Ok(())
        })
        .await
    }

    async fn media_bytes(&self, user: UserId) -> StoreResult<u64> {
        self.read(|txn| {
            let held = txn.open_table(MEDIA_BYTES).map_err(db_error)?;
            Ok(held.get(user.0).map_err(db_error)?.map_or(0, |v| v.value()))
        })
    }

    async fn insert_media(&self, media: &MediaRecord, unsent_until: u64) -> StoreResult<bool> {
        let (id, value) = (media.id.0, encode(media)?);
        self.write(move |txn| {
            let mut records = txn.open_table(MEDIA).map_err(db_error)?;
            if records.get(id).map_err(db_error)?.is_some() {
                return Ok(false);
            }
            records.insert(id, value.as_slice()).map_err(db_error)?;
            let mut unsent = txn.open_table(UNSENT).map_err(db_error)?;
            unsent.insert((unsent_until, id), ()).map_err(db_error)?;
            Ok(true)
        })
        .await
    }

    async fn unsent_media(&self, before: u64, limit: usize) -> StoreResult<Vec<(u64, MediaId)>> {
        self.read(|txn| {
            let unsent = txn.open_table(UNSENT).map_err(db_error)?;
            let range = unsent.range((0, 0)..=(before, u64::MAX)).map_err(db_error)?;
            range
                .take(limit)
                .map(|entry| {
                    let (key, _) = entry.map_err(db_error)?;
                    let (at, id) = key.value();
                    Ok((at, MediaId(id)))
                })
                .collect()
        })
    }

    async fn forget_unsent_media(&self, due_at: u64, id: MediaId) -> StoreResult<()> {
        self.write(move |txn| {
            let mut unsent = txn.open_table(UNSENT).map_err(db_error)?;
            unsent.remove((due_at, id.0)).map_err(db_error)?;
            Ok(())
        })
        .await
    }

    async fn media(&self, id: MediaId) -> StoreResult<Option<MediaRecord>> {
        self.read(|txn| {
            let records = txn.open_table(MEDIA).map_err(db_error)?;
            records.get(id.0).map_err(db_error)?.map(|v| decode(v.value())).transpose()
        })
    }

    async fn delete_media(&self, id: MediaId) -> StoreResult<()> {
        self.write(move |txn| {
            let mut records = txn.open_table(MEDIA).map_err(db_error)?;
            records.remove(id.0).map_err(db_error)?;
            let mut links = txn.open_table(MEDIA_GROUPS).map_err(db_error)?;
            let groups: Vec<u64> = links
                .range((id.0, 0)..=(id.0, u64::MAX))
                .map_err(db_error)?
                .map(|entry| entry.map(|(key, _)| key.value().1).map_err(db_error))
                .collect::<StoreResult<_>>()?;
            for group in groups {
                links.remove((id.0, group)).map_err(db_error)?;
            }
            Ok(())
        })
        .await
    }

    async fn link_media_group(&self, id: MediaId, group: GroupId) -> StoreResult<()> {
        self.write(move |txn| {
            let mut links = txn.open_table(MEDIA_GROUPS).map_err(db_error)?;
            links.insert((id.0, group.0), ()).map_err(db_error)?;
            Ok(())
        })
        .await
    }

    async fn media_groups(&self, id: MediaId) -> StoreResult<Vec<GroupId>> {
        self.read(|txn| {
            let links = txn.open_table(MEDIA_GROUPS).map_err(db_error)?;
            let range = links.range((id.0, 0)..=(id.0, u64::MAX)).map_err(db_error)?;
            range.map(|entry| entry.map(|(key, _)| GroupId(key.value().1)).map_err(db_error)).collect()
        })
    }
}
