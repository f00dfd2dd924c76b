//! Message retention: the sweeper that deletes what groups no longer keep.
//!
//! A group's retention (`retention_days`, set by its owner or admins) says how long its
//! messages are kept. Every node sweeps every `actors.retention_sweep_interval` and trims
//! the groups it owns (each group is looked at by one node, however many there are): it
//! deletes the longest prefix of the log sent before the cut-off, never a message in the
//! middle, so what is left stays gapless from the group's `first_seq` on. Clients learn
//! `first_seq` from `history` and `sync` and know that every seq below it is gone for good.
//!
//! The sweeper works on the store directly, not through the group actor: a trim only ever
//! deletes what is old enough whoever asks, the store orders it with appends, and readers
//! filter by the trim point, which the store records before it deletes.

use crate::System;
use crate::now_ms;
use crate::store::{Retention, StoreError, StoreResult};
use schema::GroupId;
use std::sync::Weak;
use std::time::Duration;

/// Groups read per page of the store's list of groups with a retention.
const GROUPS_PER_PAGE: usize = 256;
/// Messages looked at (and at most deleted) per trim: bounds one store write.
const MESSAGES_PER_TRIM: usize = 512;
/// A day, as retention counts it.
pub const DAY_MS: u64 = 24 * 3600 * 1000;

/// Starts the sweeper: a pass right away, then one every `every`.
pub fn spawn_sweeper(system: Weak<System>, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(system) = system.upgrade() else { return };
            match sweep(&system).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "retention deleted old messages"),
                Err(error) => tracing::warn!(%error, "could not list the groups with a retention"),
            }
        }
    });
}

/// One pass over the groups with a retention that this node owns; the messages deleted.
/// A group that fails is logged and left for the next pass.
pub async fn sweep(system: &System) -> Result<u64, StoreError> {
    let mut deleted = 0;
    let mut after = None;
    loop {
        let page = system.store.retained_groups(after, GROUPS_PER_PAGE).await?;
        let Some(&(last, _)) = page.last() else { break };
        after = Some(last);
        for (group, retention) in page {
            if system.owner(group) != Some(system.node) {
                continue;
            }
            let cutoff = now_ms().saturating_sub(u64::from(retention.days) * DAY_MS);
            match trim_group(system, group, retention, cutoff).await {
                Ok(n) => deleted += n,
                Err(error) => tracing::warn!(%group, %error, "could not apply the group's retention"),
            }
        }
    }
    Ok(deleted)
}

/// Deletes the group's messages sent before `cutoff` (ms since the epoch), oldest first,
/// stopping at the first one sent at or after it; the number deleted.
async fn trim_group(system: &System, group: GroupId, retention: Retention, cutoff: u64) -> StoreResult<u64> {
    let store = &system.store;
    let mut trimmed = retention.trimmed_through;
    let mut deleted = 0;
    loop {
        let page = store.messages_after(group, trimmed, MESSAGES_PER_TRIM).await?;
        let old = page.iter().take_while(|message| message.ts < cutoff).count();
        let Some(newest_old) = page[..old].last() else { break };
        // The store trims only if the retention is still the one the cut-off came from: an
        // owner may have lengthened it since the list was read.
        let now_trimmed = store.trim_log(group, newest_old.seq, retention.days).await?;
        let n = now_trimmed.saturating_sub(trimmed);
        system.metrics.messages_deleted.add(n);
        deleted += n;
        if now_trimmed < newest_old.seq || old < page.len() || page.len() < MESSAGES_PER_TRIM {
            break; // the retention changed, or the group is gone, or nothing older is left
        }
        trimmed = now_trimmed;
    }
    Ok(deleted)
}
