//! Wallets: a balance in cents that is the sum of a ledger of entries, never a number
//! updated on its own. Money only enters a wallet here, by an operator's credit; red
//! packets move it between wallets ([`crate::redpacket`]).

use crate::error::ApiError;
use crate::now_ms;
use crate::store::{LedgerOutcome, Store};
use schema::UserId;
use schema::records::{LedgerEntry, LedgerKind};

/// The largest single credit, in cents (a guard against a typo, not a business limit).
pub const MAX_CREDIT: i64 = 1_000_000_000;

/// Credits `cents` to a user's wallet, once per `key` (the same key again changes nothing).
/// Returns the balance after, and whether this call credited (false: the key was used).
pub async fn credit(store: &dyn Store, user: UserId, cents: i64, key: &str) -> Result<(i64, bool), ApiError> {
    if !(1..=MAX_CREDIT).contains(&cents) {
        return Err(ApiError::InvalidField(format!("a credit is 1-{MAX_CREDIT} cents")));
    }
    if key.is_empty() || key.len() > 64 {
        return Err(ApiError::InvalidField("a credit's key is 1-64 bytes".into()));
    }
    if store.user(user).await?.is_none() {
        return Err(ApiError::NotFound("user"));
    }
    let entry = LedgerEntry {
        id: format!("credit:{key}"),
        amount: cents,
        kind: LedgerKind::Credit,
        packet: None,
        ts: now_ms(),
    };
    match store.apply_ledger_entry(user, &entry).await? {
        LedgerOutcome::Applied { balance } => Ok((balance, true)),
        LedgerOutcome::AlreadyApplied { balance, .. } | LedgerOutcome::Insufficient { balance } => Ok((balance, false)),
    }
}
