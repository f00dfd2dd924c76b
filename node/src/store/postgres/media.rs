//! Media metadata in PostgreSQL: each call one statement or one transaction over one
//! partition's rows (a media object and its links; a user's byte count).

use super::{PostgresStore, db, id, kind_of, unsigned};
use actors::store::*;
use async_trait::async_trait;
use schema::records::MediaRecord;
use schema::{GroupId, MediaId, UserId};
use tokio_postgres::Row;

fn media_row(row: &Row) -> StoreResult<MediaRecord> {
    let kind: String = row.get("kind");
    let (width, height): (Option<i32>, Option<i32>) = (row.get("width"), row.get("height"));
    let dimension = |v: i32| u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("media dimension {v}")));
    let pair = |w: Option<i32>, h: Option<i32>| -> StoreResult<Option<(u32, u32)>> {
        match (w, h) {
            (Some(w), Some(h)) => Ok(Some((dimension(w)?, dimension(h)?))),
            _ => Ok(None),
        }
    };
    let dimensions = pair(width, height)?;
    let thumbnail = pair(row.get("thumb_width"), row.get("thumb_height"))?;
    Ok(MediaRecord {
        id: MediaId(unsigned(row.get("media_id"))),
        uploader: UserId(unsigned(row.get("uploader"))),
        kind: kind_of(&kind)?,
        mime: row.get("mime"),
        size: unsigned(row.get("size")),
        sha256: row.get("sha256"),
        dimensions,
        thumbnail,
        created_at: unsigned(row.get("created_at")),
    })
}

fn bytes_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[async_trait]
impl MediaStore for PostgresStore {
    async fn reserve_media_bytes(&self, user: UserId, bytes: u64, quota: u64) -> StoreResult<bool> {
        let client = self.client().await?;
        // One statement: the row's lock makes the check and the add one step.
        let rows = client
            .execute(
                "INSERT INTO user_media_bytes AS u (user_id, bytes) SELECT $1::BIGINT, $2::BIGINT WHERE $2::BIGINT <= $3::BIGINT \
                 ON CONFLICT (user_id) DO UPDATE SET bytes = u.bytes + $2::BIGINT WHERE u.bytes + $2::BIGINT <= $3::BIGINT",
                &[&id(user.0), &bytes_value(bytes), &bytes_value(quota)],
            )
            .await
            .map_err(db)?;
        Ok(rows == 1)
    }

    async fn release_media_bytes(&self, user: UserId, bytes: u64) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE user_media_bytes SET bytes = GREATEST(bytes - $2, 0) WHERE user_id = $1",
                &[&id(user.0), &bytes_value(bytes)],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn media_bytes(&self, user: UserId) -> StoreResult<u64> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT bytes FROM user_media_bytes WHERE user_id = $1", &[&id(user.0)])
            .await
            .map_err(db)?;
        Ok(row.map_or(0, |r| unsigned(r.get(0))))
    }

    async fn insert_media(&self, media: &MediaRecord, unsent_until: u64) -> StoreResult<bool> {
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(db)?;
        let pair = |p: Option<(u32, u32)>| match p {
            Some((w, h)) => (i32::try_from(w).ok(), i32::try_from(h).ok()),
            None => (None, None),
        };
        let (width, height) = pair(media.dimensions);
        let (thumb_width, thumb_height) = pair(media.thumbnail);
        let rows = txn
            .execute(
                "INSERT INTO media (media_id, uploader, kind, mime, size, sha256, width, height, thumb_width, \
                 thumb_height, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                 ON CONFLICT (media_id) DO NOTHING",
                &[
                    &id(media.id.0),
                    &id(media.uploader.0),
                    &media.kind.as_str(),
                    &media.mime,
                    &bytes_value(media.size),
                    &media.sha256,
                    &width,
                    &height,
                    &thumb_width,
                    &thumb_height,
                    &id(media.created_at),
                ],
            )
            .await
            .map_err(db)?;
        if rows == 1 {
            txn.execute(
                "INSERT INTO unsent_media (due_at, media_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&id(unsent_until), &id(media.id.0)],
            )
            .await
            .map_err(db)?;
        }
        txn.commit().await.map_err(db)?;
        Ok(rows == 1)
    }

    async fn unsent_media(&self, before: u64, limit: usize) -> StoreResult<Vec<(u64, MediaId)>> {
        let client = self.client().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(
                "SELECT due_at, media_id FROM unsent_media WHERE due_at <= $1 ORDER BY due_at LIMIT $2",
                &[&id(before), &limit],
            )
            .await
            .map_err(db)?;
        Ok(rows.iter().map(|r| (unsigned(r.get(0)), MediaId(unsigned(r.get(1))))).collect())
    }

    async fn forget_unsent_media(&self, due_at: u64, media: MediaId) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute("DELETE FROM unsent_media WHERE due_at = $1 AND media_id = $2", &[&id(due_at), &id(media.0)])
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn media(&self, media: MediaId) -> StoreResult<Option<MediaRecord>> {
        let client = self.client().await?;
        let row = client.query_opt("SELECT * FROM media WHERE media_id = $1", &[&id(media.0)]).await.map_err(db)?;
        row.as_ref().map(media_row).transpose()
    }

    async fn delete_media(&self, media: MediaId) -> StoreResult<()> {
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(db)?;
        txn.execute("DELETE FROM media_groups WHERE media_id = $1", &[&id(media.0)]).await.map_err(db)?;
        txn.execute("DELETE FROM media WHERE media_id = $1", &[&id(media.0)]).await.map_err(db)?;
        txn.commit().await.map_err(db)
    }

    async fn link_media_group(&self, media: MediaId, group: GroupId) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO media_groups (media_id, group_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&id(media.0), &id(group.0)],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn media_groups(&self, media: MediaId) -> StoreResult<Vec<GroupId>> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT group_id FROM media_groups WHERE media_id = $1 ORDER BY group_id", &[&id(media.0)])
            .await
            .map_err(db)?;
        Ok(rows.iter().map(|r| GroupId(unsigned(r.get(0)))).collect())
    }
}
