//! Message retention in the embedded store: the setting and trim point of each group in a
//! table of their own (a field more in the group row would change its encoding), and trims
//! as jobs of the group commit.

use super::{CLIENT_IDS, EmbeddedStore, MESSAGES, check_fence, db_error, decode, last_seq_in, read_group};
use actors::store::*;
use async_trait::async_trait;
use redb::{ReadableTable, TableDefinition, WriteTransaction};
use schema::records::MessageRecord;
use schema::{GroupId, Seq};

/// group → (retention days, trimmed through). Absent: kept forever, never trimmed.
pub(super) const RETENTION: TableDefinition<u64, (u32, u64)> = TableDefinition::new("group_retention");

/// Creates the table (at open).
pub(super) fn init(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(RETENTION)?;
    Ok(())
}

/// The group's retention as stored in `table`.
pub(super) fn retention_in(table: &impl ReadableTable<u64, (u32, u64)>, group: u64) -> StoreResult<Retention> {
    Ok(table.get(group).map_err(db_error)?.map_or(Retention::default(), |v| {
        let (days, trimmed_through) = v.value();
        Retention { days, trimmed_through }
    }))
}

#[async_trait]
impl RetentionStore for EmbeddedStore {
    async fn set_retention_days(&self, fence: Fence, days: u32) -> StoreResult<bool> {
        self.write(move |txn| {
            check_fence(txn, fence)?;
            if read_group(txn, fence.group.0)?.is_none() {
                return Ok(false);
            }
            let mut table = txn.open_table(RETENTION).map_err(db_error)?;
            let current = retention_in(&table, fence.group.0)?;
            table.insert(fence.group.0, (days, current.trimmed_through)).map_err(db_error)?;
            Ok(true)
        })
        .await
    }

    async fn retention(&self, group: GroupId) -> StoreResult<Retention> {
        self.read(|txn| retention_in(&txn.open_table(RETENTION).map_err(db_error)?, group.0))
    }

    async fn retained_groups(&self, after: Option<GroupId>, limit: usize) -> StoreResult<Vec<(GroupId, Retention)>> {
        let start = match after {
            Some(GroupId(u64::MAX)) => return Ok(Vec::new()),
            Some(group) => group.0 + 1,
            None => 0,
        };
        self.read(|txn| {
            let table = txn.open_table(RETENTION).map_err(db_error)?;
            let mut out = Vec::new();
            for entry in table.range(start..).map_err(db_error)? {
                let (group, value) = entry.map_err(db_error)?;
                let (days, trimmed_through) = value.value();
                if days > 0 {
                    out.push((GroupId(group.value()), Retention { days, trimmed_through }));
                    if out.len() >= limit {
                        break;
                    }
                }
            }
            Ok(out)
        })
    }

    async fn trim_log(&self, group: GroupId, through: Seq, days: u32) -> StoreResult<Seq> {
        self.write(move |txn| {
            let mut table = txn.open_table(RETENTION).map_err(db_error)?;
            let current = retention_in(&table, group.0)?;
            if days == 0 || current.days != days {
                return Ok(current.trimmed_through);
            }
            let mut messages = txn.open_table(MESSAGES).map_err(db_error)?;
            let last = last_seq_in(&messages, group.0)?.max(current.trimmed_through);
            let through = through.min(last);
            if through <= current.trimmed_through {
                return Ok(current.trimmed_through);
            }
            // Decode everything before the first write: a corrupt row fails this job alone.
            let doomed: Vec<MessageRecord> = messages
                .range((group.0, current.trimmed_through + 1)..=(group.0, through))
                .map_err(db_error)?
                .map(|entry| decode(entry.map_err(db_error)?.1.value()))
                .collect::<StoreResult<_>>()?;
            let mut ids = txn.open_table(CLIENT_IDS).map_err(db_error)?;
            for message in &doomed {
                messages.remove((group.0, message.seq)).map_err(db_error)?;
                ids.remove((group.0, message.sender.0, message.client_msg_id.as_str())).map_err(db_error)?;
            }
            table.insert(group.0, (current.days, through)).map_err(db_error)?;
            Ok(through)
        })
        .await
    }
}
