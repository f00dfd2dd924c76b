//! Wallets on ScyllaDB: one partition per user, the ledger's entries as clustering rows and
//! the balance as a static column, so an entry and the balance it moves are one conditional
//! UPDATE of one row (see the CQL file).
//!
//! The write is a compare-and-set on the balance: read it at SERIAL, then write the entry
//! `IF balance = :read AND amount = null`. A refusal returns the balance it found, which is
//! the next try's expectation; `amount` found set means the entry is there already.

use super::rows::{self, LedgerBalanceRow, LedgerRow, id};
use super::{Inner, ScyllaStore, unset};
use actors::store::*;
use async_trait::async_trait;
use schema::UserId;
use schema::records::LedgerEntry;

/// Compare-and-set rounds of one ledger entry before it gives up as `unavailable`. A round
/// only fails if another entry moved the balance between its read and its write.
const LEDGER_ATTEMPTS: usize = 20;

impl Inner {
    /// The balance through Paxos (None: a wallet with no entry yet). SERIAL, so it sees an
    /// entry still in flight and the compare-and-set after it usually holds at once.
    async fn balance_serial(&self, user: UserId) -> StoreResult<Option<i64>> {
        let row = self.first::<(Option<i64>, Option<String>)>(&self.st.select_balance_serial, (id(user.0),)).await?;
        Ok(row.and_then(|(balance, _)| balance))
    }

    /// One ledger entry and the balance, through Paxos; None if the entry is not there.
    async fn ledger_entry_serial(&self, user: UserId, entry_id: &str) -> StoreResult<Option<(LedgerEntry, i64)>> {
        let values = (id(user.0), entry_id);
        let row = self.first::<LedgerBalanceRow>(&self.st.select_ledger_entry_serial, values).await?;
        Ok(row.map(rows::ledger_entry_and_balance).transpose()?.flatten())
    }

    async fn apply_entry(&self, user: UserId, entry: &LedgerEntry) -> StoreResult<LedgerOutcome> {
        let mut expected = self.balance_serial(user).await?;
        for _ in 0..LEDGER_ATTEMPTS {
            let balance = expected.unwrap_or(0);
            let Some(after) = balance.checked_add(entry.amount).filter(|after| *after >= 0) else {
                // Nothing is written; but an entry already in the ledger answers as such,
                // whatever it would do to the balance now.
                return Ok(match self.ledger_entry_serial(user, &entry.id).await? {
                    Some((stored, balance)) => LedgerOutcome::AlreadyApplied { entry: stored, balance },
                    None => LedgerOutcome::Insufficient { balance },
                });
            };
            // The packet column stays unset rather than null: no tombstone for entries
            // without a packet.
            let packet = || unset(entry.packet.map(|packet| id(packet.0)));
            let (u, ts, kind, entry_id) = (id(user.0), id(entry.ts), entry.kind.as_str(), entry.id.as_str());
            let answer = match expected {
                None => {
                    let values = (after, entry.amount, kind, packet(), ts, u, entry_id);
                    self.lwt(&self.st.apply_first_entry, values).await?
                }
                Some(balance) => {
                    let values = (after, entry.amount, kind, packet(), ts, u, entry_id, balance);
                    self.lwt(&self.st.apply_entry, values).await?
                }
            };
            if answer.applied {
                return Ok(LedgerOutcome::Applied { balance: after });
            }
            if answer.rows_with("amount") > 0 {
                // The entry is there: it is returned as stored (it may differ from ours).
                if let Some((stored, balance)) = self.ledger_entry_serial(user, &entry.id).await? {
                    return Ok(LedgerOutcome::AlreadyApplied { entry: stored, balance });
                }
            }
            // Another entry moved the balance: the refusal returned it. If it says nothing
            // new, ask Paxos instead of trying the same expectation again.
            let found = answer.bigint("balance")?;
            expected = if found != expected { found } else { self.balance_serial(user).await? };
        }
        Err(StoreError::Unavailable(format!("scylla: the wallet of user {user} kept changing")))
    }
}

#[async_trait]
impl WalletStore for ScyllaStore {
    async fn apply_ledger_entry(&self, user: UserId, entry: &LedgerEntry) -> StoreResult<LedgerOutcome> {
        // A failure that may have applied (a timeout) is not retried here: a retry would find
        // its own entry and could not tell it from an earlier one. The caller retries with
        // the same entry id, and the ledger makes that safe.
        self.inner.apply_entry(user, entry).await
    }

    async fn balance(&self, user: UserId) -> StoreResult<i64> {
        let row = self.inner.first::<(Option<i64>,)>(&self.inner.st.select_balance, (id(user.0),)).await?;
        Ok(row.and_then(|(balance,)| balance).unwrap_or(0))
    }

    async fn ledger(&self, user: UserId, limit: usize) -> StoreResult<Vec<LedgerEntry>> {
        let values = (id(user.0), super::limit_value(limit));
        let page: Vec<LedgerRow> = self.inner.paged(&self.inner.st.select_ledger, values, limit).await?;
        let mut entries = Vec::with_capacity(page.len());
        for row in page {
            entries.extend(rows::ledger_entry(row)?);
        }
        Ok(entries)
    }
}
