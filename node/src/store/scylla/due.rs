//! The due indexes in hour buckets (`red_packets_due`, `unsent_media`): partition
//! `bucket = due_at / DUE_BUCKET_MS`, clustered by due time, written only by plain
//! statements. A scan reads every bucket from [`DUE_LOOKBACK_MS`] before `before` up to
//! `before`'s own, oldest first.

use super::Inner;
use super::rows::id;
use actors::store::StoreResult;
use futures_util::StreamExt;
use scylla::deserialize::row::DeserializeRow;
use scylla::statement::prepared::PreparedStatement;

/// Milliseconds per bucket of a due index: bucket = due_at / DUE_BUCKET_MS.
pub const DUE_BUCKET_MS: u64 = 3_600_000;

/// How far back a due scan looks: it reads every hour bucket from `before` minus this up to
/// `before`'s own. The node's sweepers ask every few seconds and move what they find, so an
/// entry older than this is left behind only if the store was down for two days.
pub const DUE_LOOKBACK_MS: u64 = 48 * DUE_BUCKET_MS;

/// Due buckets read at once: enough to hide most of the round trips of a 49-bucket scan,
/// few enough not to flood a node every few seconds.
const DUE_READS_IN_FLIGHT: usize = 8;

/// The due index bucket of a time.
pub fn due_bucket(due_at: u64) -> u64 {
    due_at / DUE_BUCKET_MS
}

/// The due buckets a scan up to `before` reads, oldest first.
pub fn due_buckets(before: u64) -> std::ops::RangeInclusive<u64> {
    due_bucket(before.saturating_sub(DUE_LOOKBACK_MS))..=due_bucket(before)
}

impl Inner {
    /// Up to `limit` entries due at or before `before`, oldest first: `select` binds
    /// (bucket, before, limit) and is run on each of [`due_buckets`], and `entry` reads a row.
    pub(super) async fn due_scan<R, T>(
        &self,
        select: &PreparedStatement,
        before: u64,
        limit: usize,
        entry: impl Fn(R) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>>
    where
        R: for<'frame, 'metadata> DeserializeRow<'frame, 'metadata> + Unpin + Send,
    {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        // Buckets are read a few at a time but taken in order, so the answer is oldest first
        // and stops at the limit.
        let reads = futures_util::stream::iter(due_buckets(before))
            .map(|bucket| {
                let values = (id(bucket), id(before), super::limit_value(limit));
                async move { self.paged::<R>(select, values, limit).await }
            })
            .buffered(DUE_READS_IN_FLIGHT);
        futures_util::pin_mut!(reads);
        while let Some(page) = reads.next().await {
            for row in page? {
                out.push(entry(row)?);
                if out.len() >= limit {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_due_scan_covers_two_days_of_hour_buckets() {
        let before = 100 * DUE_BUCKET_MS + 5;
        assert_eq!(due_buckets(before), 52..=100, "49 buckets: the 48 hours before, and before's own");
        assert_eq!(due_buckets(5), 0..=0, "no bucket before the epoch");
        assert_eq!(due_bucket(DUE_BUCKET_MS - 1), 0);
        assert_eq!(due_bucket(DUE_BUCKET_MS), 1);
    }
}
