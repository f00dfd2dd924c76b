//! Wallets and red packets in PostgreSQL: each call one transaction over one partition's
//! rows (a user's balance and ledger; a packet and its grabs), the packet writes fenced by
//! their group's epoch.

use super::{PostgresStore, db, id, lock_fence, unsigned};
use actors::store::*;
use async_trait::async_trait;
use schema::records::*;
use schema::{GroupId, RedPacketId, UserId};
use tokio_postgres::Row;

fn ledger_row(row: &Row) -> StoreResult<LedgerEntry> {
    let kind: String = row.get("kind");
    let packet: Option<i64> = row.get("packet");
    Ok(LedgerEntry {
        id: row.get("entry_id"),
        amount: row.get("amount"),
        kind: LedgerKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("ledger kind {kind:?}")))?,
        packet: packet.map(|p| RedPacketId(unsigned(p))),
        ts: unsigned(row.get("ts")),
    })
}

fn packet_row(row: &Row) -> StoreResult<RedPacketRecord> {
    let kind: String = row.get("kind");
    let state: String = row.get("state");
    Ok(RedPacketRecord {
        id: RedPacketId(unsigned(row.get("packet_id"))),
        group: GroupId(unsigned(row.get("group_id"))),
        sender: UserId(unsigned(row.get("sender"))),
        client_msg_id: row.get("client_msg_id"),
        total: row.get("total"),
        kind: RedPacketKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("red packet kind {kind:?}")))?,
        greeting: row.get("greeting"),
        shares: row.get("shares"),
        created_at: unsigned(row.get("created_at")),
        expires_at: unsigned(row.get("expires_at")),
        state: RedPacketState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("red packet state {state:?}")))?,
    })
}

fn grab_row(row: &Row) -> GrabRecord {
    let share: i32 = row.get("share");
    GrabRecord {
        user: UserId(unsigned(row.get("user_id"))),
        share: u32::try_from(share).unwrap_or(0),
        amount: row.get("amount"),
        ts: unsigned(row.get("ts")),
    }
}

const PACKET_COLUMNS: &str = "packet_id, group_id, sender, client_msg_id, total, kind, greeting, shares, \
                              created_at, expires_at, state, next_share";

#[async_trait]
impl WalletStore for PostgresStore {
    async fn apply_ledger_entry(&self, user: UserId, entry: &LedgerEntry) -> StoreResult<LedgerOutcome> {
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(db)?;
        txn.execute(
            "INSERT INTO wallet_balances (user_id, balance) VALUES ($1, 0) ON CONFLICT DO NOTHING",
            &[&id(user.0)],
        )
        .await
        .map_err(db)?;
        // The balance row lock serializes every entry of this wallet.
        let balance: i64 = txn
            .query_one("SELECT balance FROM wallet_balances WHERE user_id = $1 FOR UPDATE", &[&id(user.0)])
            .await
            .map_err(db)?
            .get(0);
        let stored = txn
            .query_opt("SELECT * FROM wallet_ledger WHERE user_id = $1 AND entry_id = $2", &[&id(user.0), &entry.id])
            .await
            .map_err(db)?;
        if let Some(row) = stored {
            return Ok(LedgerOutcome::AlreadyApplied { entry: ledger_row(&row)?, balance });
        }
        let Some(after) = balance.checked_add(entry.amount).filter(|b| *b >= 0) else {
            return Ok(LedgerOutcome::Insufficient { balance });
        };
        let packet = entry.packet.map(|p| id(p.0));
        txn.execute(
            "INSERT INTO wallet_ledger (user_id, entry_id, amount, kind, packet, ts) VALUES ($1, $2, $3, $4, $5, $6)",
            &[&id(user.0), &entry.id, &entry.amount, &entry.kind.as_str(), &packet, &id(entry.ts)],
        )
        .await
        .map_err(db)?;
        txn.execute("UPDATE wallet_balances SET balance = $2 WHERE user_id = $1", &[&id(user.0), &after])
            .await
            .map_err(db)?;
        txn.commit().await.map_err(db)?;
        Ok(LedgerOutcome::Applied { balance: after })
    }

    async fn balance(&self, user: UserId) -> StoreResult<i64> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT balance FROM wallet_balances WHERE user_id = $1", &[&id(user.0)])
            .await
            .map_err(db)?;
        Ok(row.map_or(0, |r| r.get(0)))
    }

    async fn ledger(&self, user: UserId, limit: usize) -> StoreResult<Vec<LedgerEntry>> {
        let client = self.client().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(
                "SELECT * FROM wallet_ledger WHERE user_id = $1 ORDER BY entry_id COLLATE \"C\" LIMIT $2",
                &[&id(user.0), &limit],
            )
            .await
            .map_err(db)?;
        rows.iter().map(ledger_row).collect()
    }
}

/// Locks the group row (shared) after checking the fence, then the packet row; None if
/// there is no such packet in the fence's group.
async fn lock_packet(
    txn: &tokio_postgres::Transaction<'_>,
    fence: Fence,
    packet: RedPacketId,
) -> StoreResult<Option<(RedPacketRecord, i32)>> {
    if !lock_fence(txn, fence, "FOR SHARE").await? {
        return Ok(None);
    }
    let sql = format!("SELECT {PACKET_COLUMNS} FROM red_packets WHERE packet_id = $1 AND group_id = $2 FOR UPDATE");
    let Some(row) = txn.query_opt(&sql, &[&id(packet.0), &id(fence.group.0)]).await.map_err(db)? else {
        return Ok(None);
    };
    Ok(Some((packet_row(&row)?, row.get("next_share"))))
}

#[async_trait]
impl RedPacketStore for PostgresStore {
    async fn create_red_packet(
        &self,
        fence: Fence,
        packet: &RedPacketRecord,
        due_at: u64,
    ) -> StoreResult<RedPacketRecord> {
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(db)?;
        if !lock_fence(&txn, fence, "FOR SHARE").await? {
            return Err(StoreError::Conflict(format!("no group {}", fence.group)));
        }
        let inserted = txn
            .execute(
                "INSERT INTO red_packets (packet_id, group_id, sender, client_msg_id, total, kind, greeting, shares, \
                 created_at, expires_at, state) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                 ON CONFLICT (packet_id) DO NOTHING",
                &[
                    &id(packet.id.0),
                    &id(packet.group.0),
                    &id(packet.sender.0),
                    &packet.client_msg_id,
                    &packet.total,
                    &packet.kind.as_str(),
                    &packet.greeting,
                    &packet.shares,
                    &id(packet.created_at),
                    &id(packet.expires_at),
                    &packet.state.as_str(),
                ],
            )
            .await
            .map_err(db)?;
        if inserted == 1 {
            txn.execute(
                "INSERT INTO red_packets_due (due_at, packet_id, group_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&id(due_at), &id(packet.id.0), &id(packet.group.0)],
            )
            .await
            .map_err(db)?;
            txn.commit().await.map_err(db)?;
            return Ok(packet.clone());
        }
        let sql = format!("SELECT {PACKET_COLUMNS} FROM red_packets WHERE packet_id = $1");
        let row = txn.query_one(&sql, &[&id(packet.id.0)]).await.map_err(db)?;
        packet_row(&row)
    }

    async fn red_packet(&self, packet: RedPacketId) -> StoreResult<Option<RedPacketRecord>> {
        let client = self.client().await?;
        let sql = format!("SELECT {PACKET_COLUMNS} FROM red_packets WHERE packet_id = $1");
        client.query_opt(&sql, &[&id(packet.0)]).await.map_err(db)?.as_ref().map(packet_row).transpose()
    }

    async fn red_packet_grabs(&self, packet: RedPacketId) -> StoreResult<Vec<GrabRecord>> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT * FROM red_packet_grabs WHERE packet_id = $1 ORDER BY share", &[&id(packet.0)])
            .await
            .map_err(db)?;
        Ok(rows.iter().map(grab_row).collect())
    }

    async fn set_red_packet_state(
        &self,
        fence: Fence,
        packet: RedPacketId,
        from: RedPacketState,
        to: RedPacketState,
    ) -> StoreResult<Option<RedPacketRecord>> {
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(db)?;
        let Some((mut record, _)) = lock_packet(&txn, fence, packet).await? else { return Ok(None) };
        if record.state == from {
            txn.execute("UPDATE red_packets SET state = $2 WHERE packet_id = $1", &[&id(packet.0), &to.as_str()])
                .await
                .map_err(db)?;
            txn.commit().await.map_err(db)?;
            record.state = to;
        }
        Ok(Some(record))
    }

    async fn grab_red_packet(
        &self,
        fence: Fence,
        packet: RedPacketId,
        user: UserId,
        now: u64,
    ) -> StoreResult<GrabOutcome> {
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(db)?;
        let Some((record, next)) = lock_packet(&txn, fence, packet).await? else {
            return Ok(GrabOutcome::NotOpen);
        };
        let grabbed = txn
            .query_opt(
                "SELECT * FROM red_packet_grabs WHERE packet_id = $1 AND user_id = $2",
                &[&id(packet.0), &id(user.0)],
            )
            .await
            .map_err(db)?;
        if let Some(row) = grabbed {
            return Ok(GrabOutcome::AlreadyGrabbed(grab_row(&row)));
        }
        match record.state {
            RedPacketState::Open => {}
            RedPacketState::Expired => return Ok(GrabOutcome::Expired),
            RedPacketState::Pending | RedPacketState::Cancelled => return Ok(GrabOutcome::NotOpen),
        }
        let share = u32::try_from(next).unwrap_or(u32::MAX);
        let Some(&amount) = record.shares.get(share as usize) else { return Ok(GrabOutcome::Empty) };
        if now >= record.expires_at {
            return Ok(GrabOutcome::Expired);
        }
        txn.execute(
            "INSERT INTO red_packet_grabs (packet_id, user_id, share, amount, ts) VALUES ($1, $2, $3, $4, $5)",
            &[&id(packet.0), &id(user.0), &next, &amount, &id(now)],
        )
        .await
        .map_err(db)?;
        txn.execute("UPDATE red_packets SET next_share = $2 WHERE packet_id = $1", &[&id(packet.0), &(next + 1)])
            .await
            .map_err(db)?;
        txn.commit().await.map_err(db)?;
        Ok(GrabOutcome::Grabbed(GrabRecord { user, share, amount, ts: now }))
    }

    async fn red_packets_due(&self, before: u64, limit: usize) -> StoreResult<Vec<(u64, GroupId, RedPacketId)>> {
        let client = self.client().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(
                "SELECT due_at, group_id, packet_id FROM red_packets_due WHERE due_at <= $1 ORDER BY due_at LIMIT $2",
                &[&id(before), &limit],
            )
            .await
            .map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| (unsigned(r.get(0)), GroupId(unsigned(r.get(1))), RedPacketId(unsigned(r.get(2)))))
            .collect())
    }

    async fn reschedule_red_packet(
        &self,
        packet: RedPacketId,
        group: GroupId,
        from: u64,
        to: Option<u64>,
    ) -> StoreResult<()> {
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(db)?;
        // Delete first: `to` may equal `from`.
        txn.execute("DELETE FROM red_packets_due WHERE due_at = $1 AND packet_id = $2", &[&id(from), &id(packet.0)])
            .await
            .map_err(db)?;
        if let Some(to) = to {
            txn.execute(
                "INSERT INTO red_packets_due (due_at, packet_id, group_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&id(to), &id(packet.0), &id(group.0)],
            )
            .await
            .map_err(db)?;
        }
        txn.commit().await.map_err(db)?;
        Ok(())
    }
}
