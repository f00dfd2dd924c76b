//! Red packets on ScyllaDB: a packet and its grabs in one partition (the packet as static
//! columns, a grab as the grabber's clustering row), plus the due index in hour buckets.
//!
//! A grab is a compare-and-set on the static `next_share`, in the same conditional UPDATE
//! that writes the grabber's row `IF share = null`: a share goes to one user, a user gets
//! one share. Every fenced write first checks the fence twice: against the group's epoch,
//! read at SERIAL from the group's partition, and against the packet's own `epoch`, which
//! the write raises to the fence's by an LWT (`IF epoch < :mine`) when it is lower, and
//! which the write itself tests (`IF ... epoch = :mine`). The packet's epoch is what makes
//! the refusal atomic: once an owner has written a packet, no earlier owner can. The group
//! read covers the packets a new owner has not written yet; it is not in the write's atomic
//! step (it is another partition), so a deposed owner whose read came just before the claim
//! can still land one write, ordered before the new owner's first write to that packet.
//!
//! The due index is read from 48 hours before `before` (see `due.rs`).

use super::due::due_bucket;
use super::rows::{self, DueRow, GrabRow, RedPacketRow, StoredRedPacket, StoredRedPacketRow, id};
use super::{Inner, ScyllaStore};
use actors::store::*;
use async_trait::async_trait;
use schema::records::*;
use schema::{GroupId, RedPacketId, UserId};
use std::cmp::Ordering;

/// Rounds of a packet's compare-and-set (a grab, a state change) before it gives up as
/// `unavailable`. A round fails only if another write changed the packet since it was read.
const PACKET_ATTEMPTS: usize = 20;

impl Inner {
    /// Checks the fence against the group's epoch, read through Paxos (so it sees a claim
    /// committed in any datacenter): Ok(false) if there is no group, `Fenced` if the group
    /// has another epoch.
    async fn group_fence_holds(&self, fence: Fence) -> StoreResult<bool> {
        let values = (id(fence.group.0),);
        let Some((_, epoch)) =
            self.first::<(Option<i64>, Option<i64>)>(&self.st.select_group_epoch_serial, values).await?
        else {
            return Ok(false);
        };
        let current = rows::unsigned(epoch, "groups.epoch")?;
        if current == fence.epoch { Ok(true) } else { Err(fence.refused(current)) }
    }

    /// The packet with its epoch and share count, through Paxos.
    async fn packet_serial(&self, packet: RedPacketId) -> StoreResult<Option<StoredRedPacket>> {
        let row = self.first::<StoredRedPacketRow>(&self.st.select_red_packet_serial, (id(packet.0),)).await?;
        row.map(rows::stored_red_packet).transpose()
    }

    /// The fence check and the packet, read at once (two partitions); the packet only if it
    /// belongs to the fence's group (to that group's owner, another group's packet is none).
    async fn fenced_packet(&self, fence: Fence, packet: RedPacketId) -> StoreResult<Option<StoredRedPacket>> {
        let (group, stored) = futures_util::try_join!(self.group_fence_holds(fence), self.packet_serial(packet))?;
        Ok(stored.filter(|stored| group && stored.record.group == fence.group))
    }

    /// Makes the packet the fence's: Ok if it carries the fence's epoch (raising it by an LWT
    /// if it carries an earlier one), `Fenced` if a later one.
    async fn own_packet(&self, fence: Fence, packet: RedPacketId, epoch: u64) -> StoreResult<()> {
        match epoch.cmp(&fence.epoch) {
            Ordering::Equal => return Ok(()),
            Ordering::Greater => return Err(fence.refused(epoch)),
            Ordering::Less => {}
        }
        let mine = id(fence.epoch);
        let raised = self.lwt(&self.st.fence_red_packet, (mine, id(packet.0), mine)).await?;
        if raised.applied {
            return Ok(());
        }
        // `epoch < :mine` was false: another write of ours raised it meanwhile, or a later
        // owner did. A null epoch would be a packet without one, which no create writes.
        match raised.epoch()? {
            Some(current) if current == fence.epoch => Ok(()),
            Some(current) if current > fence.epoch => Err(fence.refused(current)),
            other => Err(StoreError::Corrupt(format!("scylla: red packet {packet} has epoch {other:?}"))),
        }
    }

    /// A user's grab, through Paxos.
    async fn grab_serial(&self, packet: RedPacketId, user: UserId) -> StoreResult<Option<GrabRecord>> {
        let row = self.first::<GrabRow>(&self.st.select_grab_serial, (id(packet.0), id(user.0))).await?;
        Ok(row.map(rows::grab).transpose()?.flatten())
    }

    async fn create_packet(&self, fence: Fence, packet: &RedPacketRecord, due_at: u64) -> StoreResult<RedPacketRecord> {
        if !self.group_fence_holds(fence).await? {
            return Err(StoreError::Conflict(format!("no group {}", fence.group)));
        }
        // The index entry first: one that points at nothing is harmless to the sweeper, a
        // packet the sweeper cannot find would never expire.
        let due = (id(due_bucket(due_at)), id(due_at), id(packet.id.0), id(packet.group.0));
        self.run(&self.st.insert_due, due).await?;
        let values = (
            id(packet.id.0),
            id(packet.group.0),
            id(packet.sender.0),
            packet.client_msg_id.as_str(),
            packet.total,
            packet.kind.as_str(),
            packet.greeting.as_str(),
            &packet.shares,
            id(packet.created_at),
            id(packet.expires_at),
            packet.state.as_str(),
            id(fence.epoch),
        );
        // Whoever wrote the row that refuses us, the answer is the stored packet; so a
        // refusal after a timed-out attempt needs no telling apart.
        let inserted = self.insert_if_absent(|| self.lwt(&self.st.insert_red_packet, values), |_| Ok(false)).await?;
        if inserted {
            return Ok(packet.clone());
        }
        match self.packet_serial(packet.id).await? {
            Some(stored) => Ok(stored.record),
            None => Err(StoreError::Unavailable(format!(
                "scylla: red packet {} refused an insert and then read as missing",
                packet.id
            ))),
        }
    }

    async fn move_packet(
        &self,
        fence: Fence,
        packet: RedPacketId,
        from: RedPacketState,
        to: RedPacketState,
    ) -> StoreResult<Option<RedPacketRecord>> {
        let mut stored = self.fenced_packet(fence, packet).await?;
        for _ in 0..PACKET_ATTEMPTS {
            let Some(current) = stored.filter(|s| s.record.group == fence.group) else { return Ok(None) };
            self.own_packet(fence, packet, current.epoch).await?;
            if current.record.state != from {
                return Ok(Some(current.record));
            }
            let values = (to.as_str(), id(packet.0), from.as_str(), id(fence.epoch));
            let answer = self.lwt(&self.st.move_red_packet, values).await?;
            if answer.applied {
                // The state is the only column the write changed, and the others never change.
                let mut record = current.record;
                record.state = to;
                return Ok(Some(record));
            }
            match answer.epoch()? {
                None => return Ok(None),
                Some(epoch) if epoch > fence.epoch => return Err(fence.refused(epoch)),
                // The state moved, or an earlier owner's epoch came back: read and decide again.
                Some(_) => stored = self.packet_serial(packet).await?,
            }
        }
        Err(StoreError::Unavailable(format!("scylla: red packet {packet} kept changing")))
    }

    async fn grab(&self, fence: Fence, packet: RedPacketId, user: UserId, now: u64) -> StoreResult<GrabOutcome> {
        let mut stored = self.fenced_packet(fence, packet).await?;
        for _ in 0..PACKET_ATTEMPTS {
            let Some(current) = stored.filter(|s| s.record.group == fence.group) else {
                return Ok(GrabOutcome::NotOpen);
            };
            self.own_packet(fence, packet, current.epoch).await?;
            let record = &current.record;
            let k = current.next_share;
            let closed = match record.state {
                RedPacketState::Open => None,
                RedPacketState::Expired => Some(GrabOutcome::Expired),
                RedPacketState::Pending | RedPacketState::Cancelled => Some(GrabOutcome::NotOpen),
            };
            let share = record.shares.get(k as usize).copied();
            let closed = closed
                .or_else(|| share.is_none().then_some(GrabOutcome::Empty))
                .or_else(|| (now >= record.expires_at).then_some(GrabOutcome::Expired));
            let (Some(amount), None) = (share, closed) else {
                // No share for anyone; a user who grabbed before still learns their grab.
                let Some(grab) = self.grab_serial(packet, user).await? else {
                    return Ok(closed.unwrap_or(GrabOutcome::Empty));
                };
                return Ok(GrabOutcome::AlreadyGrabbed(grab));
            };
            let n = i32::try_from(k).map_err(rows::corrupt)?;
            let values = (n + 1, n, amount, id(now), id(packet.0), id(user.0), n, id(fence.epoch));
            let answer = self.lwt(&self.st.grab_share, values).await?;
            if answer.applied {
                return Ok(GrabOutcome::Grabbed(GrabRecord { user, share: k, amount, ts: now }));
            }
            if answer.rows_with("share") > 0
                && let Some(grab) = self.grab_serial(packet, user).await?
            {
                return Ok(GrabOutcome::AlreadyGrabbed(grab));
            }
            match answer.epoch()? {
                None => return Ok(GrabOutcome::NotOpen),
                Some(epoch) if epoch > fence.epoch => return Err(fence.refused(epoch)),
                // Another grab took share k, or the state moved: read and decide again.
                Some(_) => stored = self.packet_serial(packet).await?,
            }
        }
        Err(StoreError::Unavailable(format!("scylla: grabs of red packet {packet} kept colliding")))
    }

    async fn reschedule(&self, packet: RedPacketId, group: GroupId, from: u64, to: Option<u64>) -> StoreResult<()> {
        if to == Some(from) {
            // Inserting then deleting the same entry would take it out of the index.
            return Ok(());
        }
        if let Some(to) = to {
            self.run(&self.st.insert_due, (id(due_bucket(to)), id(to), id(packet.0), id(group.0))).await?;
        }
        self.run(&self.st.delete_due, (id(due_bucket(from)), id(from), id(packet.0))).await.map(drop)
    }
}

#[async_trait]
impl RedPacketStore for ScyllaStore {
    async fn create_red_packet(
        &self,
        fence: Fence,
        packet: &RedPacketRecord,
        due_at: u64,
    ) -> StoreResult<RedPacketRecord> {
        self.inner.create_packet(fence, packet, due_at).await
    }

    async fn red_packet(&self, packet: RedPacketId) -> StoreResult<Option<RedPacketRecord>> {
        let row = self.inner.first::<RedPacketRow>(&self.inner.st.select_red_packet, (id(packet.0),)).await?;
        row.map(rows::red_packet).transpose()
    }

    async fn red_packet_grabs(&self, packet: RedPacketId) -> StoreResult<Vec<GrabRecord>> {
        let page: Vec<GrabRow> = self.inner.paged(&self.inner.st.select_grabs, (id(packet.0),), usize::MAX).await?;
        let mut grabs = Vec::with_capacity(page.len());
        for row in page {
            grabs.extend(rows::grab(row)?);
        }
        // Rows are kept in grabber order; the trait promises share order.
        grabs.sort_unstable_by_key(|grab| grab.share);
        Ok(grabs)
    }

    async fn set_red_packet_state(
        &self,
        fence: Fence,
        packet: RedPacketId,
        from: RedPacketState,
        to: RedPacketState,
    ) -> StoreResult<Option<RedPacketRecord>> {
        self.inner.move_packet(fence, packet, from, to).await
    }

    async fn grab_red_packet(
        &self,
        fence: Fence,
        packet: RedPacketId,
        user: UserId,
        now: u64,
    ) -> StoreResult<GrabOutcome> {
        self.inner.grab(fence, packet, user, now).await
    }

    async fn red_packets_due(&self, before: u64, limit: usize) -> StoreResult<Vec<(u64, GroupId, RedPacketId)>> {
        let inner = &self.inner;
        inner.due_scan::<DueRow, _>(&inner.st.select_due, before, limit, rows::due).await
    }

    async fn reschedule_red_packet(
        &self,
        packet: RedPacketId,
        group: GroupId,
        from: u64,
        to: Option<u64>,
    ) -> StoreResult<()> {
        self.inner.reschedule(packet, group, from, to).await
    }
}
