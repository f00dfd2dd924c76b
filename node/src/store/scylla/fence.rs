//! The log's copy of the group fence: each bucket's static `epoch`, only ever raised by an
//! LWT (`IF epoch < :new`, or `IF epoch = null` for a bucket nobody fenced yet), so Paxos
//! orders a fence with the appends it must stop: an append still in flight on a bucket either
//! lands before the fence (and a SERIAL read after the fence sees it) or is refused.
//!
//! Two callers keep every bucket an owner can reach fenced:
//! - an owner, before it opens bucket b, raises b and b + 1 to its epoch;
//! - a claim raises the newest bucket and the next, then searches the log again at SERIAL
//!   and, if an earlier owner opened a later bucket meanwhile, fences there too, until the
//!   search stands still. It then ends on a bucket that was found empty after it was fenced
//!   (the one after the newest, or bucket 0 of an empty log), so no earlier owner can ever
//!   open it; the newest bucket is fenced, and the ones below it are full and never change.
//!   No earlier epoch can append anywhere.

use super::Inner;
use super::log;
use super::rows::id;
use actors::store::*;
use std::cmp::Ordering;
use std::time::Duration;

/// Rounds of one bucket's compare-and-set before it gives up: a round only fails to settle
/// if the bucket changed between its two statements.
const FENCE_ROUNDS: usize = 8;

/// Attempts at fencing the log for a claim, after an ambiguous failure. Every step is
/// idempotent (reads, and raises to the same epoch); giving up leaves the log accepting the
/// previous owner's epoch until the next claim, so it is worth a few tries.
const FENCE_LOG_ATTEMPTS: u64 = 4;

/// How often a claim follows a log that grew past the buckets it fenced. Each time means an
/// earlier owner filled a whole bucket between two of the claim's round trips.
const FOLLOW_ROUNDS: usize = 16;

/// Whether a bucket carrying `current` is settled for `fence`: Ok if it carries our epoch,
/// `Fenced` if a later one; None if it is still below ours.
fn settled(fence: Fence, current: u64) -> Option<StoreResult<()>> {
    match current.cmp(&fence.epoch) {
        Ordering::Equal => Some(Ok(())),
        Ordering::Greater => Some(Err(fence.refused(current))),
        Ordering::Less => None,
    }
}

impl Inner {
    /// Raises the epoch of log bucket `bucket` to `fence.epoch`: Ok once the bucket carries
    /// it, `Fenced` if it carries a later one. Idempotent.
    pub(super) async fn fence_bucket(&self, fence: Fence, bucket: u64) -> StoreResult<()> {
        let (g, b, epoch) = (id(fence.group.0), id(bucket), id(fence.epoch));
        for _ in 0..FENCE_ROUNDS {
            let raised = self.lwt(&self.st.fence_bucket, (epoch, g, b, epoch)).await?;
            if raised.applied {
                return Ok(());
            }
            let current = match raised.epoch()? {
                Some(current) => current,
                None => {
                    // `epoch < :new` is false for a null epoch: a bucket nobody fenced yet.
                    let claimed = self.lwt(&self.st.fence_new_bucket, (epoch, g, b)).await?;
                    if claimed.applied {
                        return Ok(());
                    }
                    // Another fence got there between the two statements.
                    match claimed.epoch()? {
                        Some(current) => current,
                        None => continue,
                    }
                }
            };
            if let Some(done) = settled(fence, current) {
                return done;
            }
        }
        Err(StoreError::Unavailable(format!(
            "scylla: fencing log bucket {bucket} of group {} kept colliding",
            fence.group
        )))
    }

    /// Fences the log for a claim that has just won the group row (see the module doc),
    /// trying again after an ambiguous failure. `Fenced` if a later claim got there first.
    pub(super) async fn fence_log(&self, fence: Fence) -> StoreResult<()> {
        let mut attempt = 1;
        loop {
            match self.try_fence_log(fence).await {
                Err(StoreError::Unavailable(message)) if attempt < FENCE_LOG_ATTEMPTS => {
                    tracing::warn!(group = %fence.group, epoch = fence.epoch, %message, "scylla: fencing the log failed; trying again");
                    tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn try_fence_log(&self, fence: Fence) -> StoreResult<()> {
        // A LOCAL_QUORUM search first: cheap, and right unless an append raced the claim.
        let mut newest = log::bucket_of(self.last_seq(fence.group).await?);
        for _ in 0..FOLLOW_ROUNDS {
            futures_util::try_join!(self.fence_bucket(fence, newest), self.fence_bucket(fence, newest + 1))?;
            // Through Paxos, after the fences: this sees every append that landed before
            // them, including one that was still in flight when the first search ran.
            let now = log::bucket_of(self.last_seq_serial(fence.group).await?);
            if now == newest {
                return Ok(());
            }
            newest = now;
        }
        Err(StoreError::Unavailable(format!(
            "scylla: the log of group {} kept growing while it was being fenced",
            fence.group
        )))
    }
}
