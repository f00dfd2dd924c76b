//! Creating the users a scenario needs: register and log in, many at a time.

use super::conn::{LoadError, Socket, Target, connect, request};
use serde_json::json;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::Semaphore;

/// A signed-up user.
#[derive(Debug, Clone)]
pub struct Account {
    /// Their id.
    pub user: u64,
    /// Their session token.
    pub token: String,
}

/// The password every bench user gets.
pub const PASSWORD: &str = "bench-password";

/// Registers `{prefix}{i}` for each i in `0..count` and logs each in on its own connection,
/// `concurrency` at a time. Returns the accounts and, when `keep`, their logged-in sockets.
pub async fn sign_up(
    target: &Target,
    sources: &[IpAddr],
    prefix: &str,
    count: usize,
    concurrency: usize,
    keep: bool,
) -> Result<Vec<(Account, Option<Socket>)>, LoadError> {
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let (target, permits, done) = (target.clone(), permits.clone(), done.clone());
        let source = sources.get(i % sources.len().max(1)).copied();
        let username = format!("{prefix}{i}");
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.map_err(|e| LoadError::Connection(e.to_string()))?;
            let mut ws = connect(&target, source).await?;
            request(&mut ws, 1, "register", json!({ "username": username, "password": PASSWORD })).await?;
            let session = request(&mut ws, 2, "login", json!({ "username": username, "password": PASSWORD })).await?;
            let account = Account {
                user: session["profile"]["user"].as_u64().unwrap_or(0),
                token: session["token"].as_str().unwrap_or("").to_owned(),
            };
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            if n % 2000 == 0 {
                eprintln!("  signed up {n} users");
            }
            let socket = if keep {
                Some(ws)
            } else {
                drop(ws);
                None
            };
            Ok::<_, LoadError>((i, account, socket))
        });
    }
    let mut out: Vec<Option<(Account, Option<Socket>)>> = (0..count).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        let (i, account, socket) = joined.map_err(|e| LoadError::Connection(e.to_string()))??;
        out[i] = Some((account, socket));
    }
    Ok(out.into_iter().flatten().collect())
}

/// A prefix no earlier run used, so runs can share a node.
pub fn run_prefix(scenario: &str) -> String {
    format!("b{}{}_", &scenario[..1.min(scenario.len())], super::wire::now_micros() % 100_000_000)
}
