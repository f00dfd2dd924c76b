//! Wallets and red packets in the embedded store. Each call is one job of the group commit,
//! so it is atomic, and the fenced ones check the group's epoch in the same transaction.

use super::{EmbeddedStore, check_fence, db_error, decode, encode};
use actors::store::*;
use async_trait::async_trait;
use redb::{ReadableTable, TableDefinition, WriteTransaction};
use schema::records::*;
use schema::{GroupId, RedPacketId, UserId};

/// (user, entry id) → ledger entry.
const LEDGER: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("wallet_ledger");
/// user → balance in cents, the sum of the user's ledger (kept in the same transaction).
const BALANCES: TableDefinition<u64, i64> = TableDefinition::new("wallet_balances");
/// packet → the packet.
const RED_PACKETS: TableDefinition<u64, &[u8]> = TableDefinition::new("red_packets");
/// (packet, user) → that user's grab.
const GRABS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("red_packet_grabs");
/// packet → shares handed out so far.
const NEXT_SHARE: TableDefinition<u64, u32> = TableDefinition::new("red_packet_next_share");
/// (due time, packet) → group: what the sweeper must look at.
const DUE: TableDefinition<(u64, u64), u64> = TableDefinition::new("red_packets_due");

/// Creates the tables (at open).
pub(super) fn init(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(LEDGER)?;
    txn.open_table(BALANCES)?;
    txn.open_table(RED_PACKETS)?;
    txn.open_table(GRABS)?;
    txn.open_table(NEXT_SHARE)?;
    txn.open_table(DUE)?;
    Ok(())
}

#[async_trait]
impl WalletStore for EmbeddedStore {
    async fn apply_ledger_entry(&self, user: UserId, entry: &LedgerEntry) -> StoreResult<LedgerOutcome> {
        let entry = entry.clone();
        self.write(move |txn| {
            let mut balances = txn.open_table(BALANCES).map_err(db_error)?;
            let balance = balances.get(user.0).map_err(db_error)?.map_or(0, |v| v.value());
            let mut ledger = txn.open_table(LEDGER).map_err(db_error)?;
            if let Some(stored) = ledger.get((user.0, entry.id.as_str())).map_err(db_error)? {
                return Ok(LedgerOutcome::AlreadyApplied { entry: decode(stored.value())?, balance });
            }
            let Some(after) = balance.checked_add(entry.amount).filter(|b| *b >= 0) else {
                return Ok(LedgerOutcome::Insufficient { balance });
            };
            ledger.insert((user.0, entry.id.as_str()), encode(&entry)?.as_slice()).map_err(db_error)?;
            balances.insert(user.0, after).map_err(db_error)?;
            Ok(LedgerOutcome::Applied { balance: after })
        })
        .await
    }

    async fn balance(&self, user: UserId) -> StoreResult<i64> {
        self.read(|txn| {
            let balances = txn.open_table(BALANCES).map_err(db_error)?;
            Ok(balances.get(user.0).map_err(db_error)?.map_or(0, |v| v.value()))
        })
    }

    async fn ledger(&self, user: UserId, limit: usize) -> StoreResult<Vec<LedgerEntry>> {
        self.read(|txn| {
            let ledger = txn.open_table(LEDGER).map_err(db_error)?;
            let range = ledger.range((user.0, "")..(user.0 + 1, "")).map_err(db_error)?;
            range.take(limit).map(|entry| decode(entry.map_err(db_error)?.1.value())).collect()
        })
    }
}

fn read_packet(txn: &WriteTransaction, id: u64) -> StoreResult<Option<RedPacketRecord>> {
    let packets = txn.open_table(RED_PACKETS).map_err(db_error)?;
    packets.get(id).map_err(db_error)?.map(|v| decode(v.value())).transpose()
}

/// The packet, if it belongs to the fence's group (a packet of another group is, to this
/// group's owner, no packet at all).
fn fenced_packet(txn: &WriteTransaction, fence: Fence, id: RedPacketId) -> StoreResult<Option<RedPacketRecord>> {
    check_fence(txn, fence)?;
    Ok(read_packet(txn, id.0)?.filter(|p| p.group == fence.group))
}

#[async_trait]
impl RedPacketStore for EmbeddedStore {
    async fn create_red_packet(
        &self,
        fence: Fence,
        packet: &RedPacketRecord,
        due_at: u64,
    ) -> StoreResult<RedPacketRecord> {
        let packet = packet.clone();
        self.write(move |txn| {
            check_fence(txn, fence)?;
            if let Some(stored) = read_packet(txn, packet.id.0)? {
                return Ok(stored);
            }
            let mut due = txn.open_table(DUE).map_err(db_error)?;
            due.insert((due_at, packet.id.0), packet.group.0).map_err(db_error)?;
            let mut packets = txn.open_table(RED_PACKETS).map_err(db_error)?;
            packets.insert(packet.id.0, encode(&packet)?.as_slice()).map_err(db_error)?;
            Ok(packet)
        })
        .await
    }

    async fn red_packet(&self, id: RedPacketId) -> StoreResult<Option<RedPacketRecord>> {
        self.read(|txn| {
            let packets = txn.open_table(RED_PACKETS).map_err(db_error)?;
            packets.get(id.0).map_err(db_error)?.map(|v| decode(v.value())).transpose()
        })
    }

    async fn red_packet_grabs(&self, id: RedPacketId) -> StoreResult<Vec<GrabRecord>> {
        self.read(|txn| {
            let grabs = txn.open_table(GRABS).map_err(db_error)?;
            let range = grabs.range((id.0, 0)..=(id.0, u64::MAX)).map_err(db_error)?;
            let mut out: Vec<GrabRecord> =
                range.map(|entry| decode(entry.map_err(db_error)?.1.value())).collect::<StoreResult<_>>()?;
            out.sort_by_key(|g| g.share);
            Ok(out)
        })
    }

    async fn set_red_packet_state(
        &self,
        fence: Fence,
        id: RedPacketId,
        from: RedPacketState,
        to: RedPacketState,
    ) -> StoreResult<Option<RedPacketRecord>> {
        self.write(move |txn| {
            let Some(mut packet) = fenced_packet(txn, fence, id)? else { return Ok(None) };
            if packet.state == from {
                packet.state = to;
                let mut packets = txn.open_table(RED_PACKETS).map_err(db_error)?;
                packets.insert(id.0, encode(&packet)?.as_slice()).map_err(db_error)?;
            }
            Ok(Some(packet))
        })
        .await
    }

    async fn grab_red_packet(&self, fence: Fence, id: RedPacketId, user: UserId, now: u64) -> StoreResult<GrabOutcome> {
        self.write(move |txn| {
            let Some(packet) = fenced_packet(txn, fence, id)? else { return Ok(GrabOutcome::NotOpen) };
            let mut grabs = txn.open_table(GRABS).map_err(db_error)?;
            if let Some(grab) = grabs.get((id.0, user.0)).map_err(db_error)? {
                return Ok(GrabOutcome::AlreadyGrabbed(decode(grab.value())?));
            }
            match packet.state {
                RedPacketState::Open => {}
                RedPacketState::Expired => return Ok(GrabOutcome::Expired),
                RedPacketState::Pending | RedPacketState::Cancelled => return Ok(GrabOutcome::NotOpen),
            }
            let mut next = txn.open_table(NEXT_SHARE).map_err(db_error)?;
            let share = next.get(id.0).map_err(db_error)?.map_or(0, |v| v.value());
            let Some(&amount) = packet.shares.get(share as usize) else { return Ok(GrabOutcome::Empty) };
            if now >= packet.expires_at {
                return Ok(GrabOutcome::Expired);
            }
            let grab = GrabRecord { user, share, amount, ts: now };
            grabs.insert((id.0, user.0), encode(&grab)?.as_slice()).map_err(db_error)?;
            next.insert(id.0, share + 1).map_err(db_error)?;
            Ok(GrabOutcome::Grabbed(grab))
        })
        .await
    }

    async fn red_packets_due(&self, before: u64, limit: usize) -> StoreResult<Vec<(u64, GroupId, RedPacketId)>> {
        self.read(|txn| {
            let due = txn.open_table(DUE).map_err(db_error)?;
            let range = due.range((0, 0)..=(before, u64::MAX)).map_err(db_error)?;
            range
                .take(limit)
                .map(|entry| {
                    let (key, group) = entry.map_err(db_error)?;
                    let (at, packet) = key.value();
                    Ok((at, GroupId(group.value()), RedPacketId(packet)))
                })
                .collect()
        })
    }

    async fn reschedule_red_packet(
        &self,
        id: RedPacketId,
        group: GroupId,
        from: u64,
        to: Option<u64>,
    ) -> StoreResult<()> {
        self.write(move |txn| {
            let mut due = txn.open_table(DUE).map_err(db_error)?;
            due.remove((from, id.0)).map_err(db_error)?;
            if let Some(to) = to {
                due.insert((to, id.0), group.0).map_err(db_error)?;
            }
            Ok(())
        })
        .await
    }
}
