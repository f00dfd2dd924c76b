//! The debug console: a read-only window into a running node's actors, for operators.
//!
//! It listens on its own port (localhost by default) and speaks one line in, one JSON
//! document out, then closes, so `troupe console` and `nc` both work. Commands:
//!
//! * `actors`: counts by kind and every live group and user actor with its mailbox depth
//!   (messages sent and not yet handled), peak depth and messages handled.
//! * `group ID`: a live group actor's members, roles, last seq and commit queue.
//! * `user ID`: a live user actor's connections.
//! * `users`: connected users and their connection counts.
//! * `stats`: the process's memory and CPU time, connection and actor counts, version.
//! * `nodes`: every node of the cluster as this node sees it: state (self, up, down,
//!   joining, draining), last heartbeat, and each node's group, user and connection counts.
//! * `owner ID`: the node that owns a group now (and whether its actor is live here).
//! * `wallet USER`: a user's balance and the sum of their ledger (always equal).
//! * `drain`: this node stops taking groups, hands its groups to the others, and answers
//!   once none is left here (or after 30 s). Its connections stay open; stop the process
//!   afterwards to shrink the cluster.
//! * `credit USER CENTS [KEY]`: puts money in a wallet (for tests and demos), once per KEY
//!   (a random one if absent).
//!
//! Apart from `drain` and `credit`, nothing here changes state. Any node's console shows
//! the cluster.

pub mod client;
pub mod process;

use crate::cluster::ClusterHandle;
use actors::System;
use schema::{GroupId, UserId};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The longest command line accepted.
const MAX_LINE: u64 = 1024;

/// Serves console connections until the listener fails.
pub async fn serve(listener: TcpListener, system: Arc<System>, cluster: Option<Arc<ClusterHandle>>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let system = system.clone();
                let cluster = cluster.clone();
                tokio::spawn(async move {
                    if let Err(error) = handle(stream, &system, cluster.as_deref()).await {
                        tracing::debug!(%error, "console connection failed");
                    }
                });
            }
            Err(error) => {
                tracing::warn!(%error, "console accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle(stream: TcpStream, system: &Arc<System>, cluster: Option<&ClusterHandle>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_LINE));
    tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no command"))??;
    let reply = answer(line.trim(), system, cluster).await;
    let mut bytes = serde_json::to_vec_pretty(&reply).unwrap_or_default();
    bytes.push(b'\n');
    write.write_all(&bytes).await?;
    write.shutdown().await
}

/// The console's answer to one command line.
pub async fn answer(line: &str, system: &Arc<System>, cluster: Option<&ClusterHandle>) -> Value {
    let mut words = line.split_whitespace();
    let command = words.next().unwrap_or("help");
    let id = words.next().map(str::parse::<u64>);
    match (command, id) {
        ("actors", None) => actors(system),
        ("users", None) => users(system),
        ("stats", None) => stats(system),
        ("group", Some(Ok(id))) => match system.inspect_group(GroupId(id)).await {
            Some(snapshot) => json!({ "group": snapshot }),
            None => json!({ "error": format!("no live actor for group {id} on this node") }),
        },
        ("user", Some(Ok(id))) => match system.inspect_user(UserId(id)).await {
            Some(snapshot) => json!({ "user": snapshot }),
            None => json!({ "error": format!("no live actor for user {id} on this node") }),
        },
        ("nodes", None) => match cluster {
            Some(cluster) => {
                json!({ "nodes": cluster.membership.nodes(cluster.own_heartbeat(), std::time::Instant::now()) })
            }
            None => json!({ "nodes": [{ "node": system.node, "state": "self", "groups": system.groups.len(),
                "users": system.users.len(), "connections": system.fanout.counts().1 }] }),
        },
        ("owner", Some(Ok(id))) => {
            let group = GroupId(id);
            json!({ "group": group, "owner": system.owner(group), "live_here": system.groups.get(&group).is_some() })
        }
        ("wallet", Some(Ok(id))) => wallet(system, UserId(id)).await,
        ("credit", Some(Ok(id))) => {
            let cents = words.next().map(str::parse::<i64>);
            let key = words.next().map_or_else(|| actors::random_id().to_string(), str::to_owned);
            match cents {
                Some(Ok(cents)) => match actors::wallet::credit(&*system.store, UserId(id), cents, &key).await {
                    Ok((balance, applied)) => {
                        json!({ "user": id, "credited": if applied { cents } else { 0 }, "key": key, "balance": balance })
                    }
                    Err(error) => json!({ "error": error.to_string(), "code": error.code() }),
                },
                _ => json!({ "error": "usage: credit USER CENTS [KEY]" }),
            }
        }
        ("drain", None) => match cluster {
            Some(cluster) => {
                let left = cluster.drain(Duration::from_secs(30)).await;
                json!({ "drained": left == 0, "groups_left": left })
            }
            None => json!({ "error": "this node is not in a cluster; there is nowhere to drain to" }),
        },
        _ => json!({
            "error": format!("unknown command `{line}`"),
            "commands": ["actors", "users", "stats", "nodes", "group ID", "user ID", "owner ID", "wallet USER",
                "credit USER CENTS [KEY]", "drain"],
        }),
    }
}

async fn wallet(system: &Arc<System>, user: UserId) -> Value {
    let store = &system.store;
    match (store.balance(user).await, store.ledger(user, 1_000_000).await) {
        (Ok(balance), Ok(ledger)) => json!({
            "user": user,
            "balance": balance,
            "ledger_sum": ledger.iter().map(|e| e.amount).sum::<i64>(),
            "entries": ledger.len(),
        }),
        (Err(error), _) | (_, Err(error)) => json!({ "error": error.to_string() }),
    }
}

fn actors(system: &Arc<System>) -> Value {
    let mut actors = system.actors();
    actors.sort_by(|a, b| b.mailbox_depth.cmp(&a.mailbox_depth).then(b.mailbox_peak.cmp(&a.mailbox_peak)));
    let (online_users, connections) = system.fanout.counts();
    json!({
        "node": system.node.0,
        "store": system.store.backend(),
        "connections": connections,
        "online_users": online_users,
        "counts": { "group": system.groups.len(), "user": system.users.len(), "face_to_face_code": system.faces.len() },
        "actors": actors,
    })
}

fn stats(system: &Arc<System>) -> Value {
    let (online_users, connections) = system.fanout.counts();
    let (hits, misses) = system.cache().counts();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "node": system.node.0,
        "process": process::current(),
        "store": system.store.backend(),
        "cache": { "backend": system.cache().backend(), "hits": hits, "misses": misses },
        "remote_deliveries": system.remote_deliveries.load(std::sync::atomic::Ordering::Relaxed),
        "connections": connections,
        "online_users": online_users,
        "counts": { "group": system.groups.len(), "user": system.users.len() },
        "sends": { "pending": system.admission.pending(), "refused_overloaded": system.admission.refused() },
        "closes": system.metrics.closes().map(|(reason, n)| (reason.as_str(), n)).collect::<std::collections::BTreeMap<_, _>>(),
    })
}

fn users(system: &Arc<System>) -> Value {
    let mut users: Vec<Value> = system
        .users
        .snapshot()
        .into_iter()
        .map(|(user, entry)| {
            let connections = system.fanout.connections(user).map_or(0, |c| c.len());
            json!({ "user": user, "connections": connections, "mailbox_depth": entry.gauge.depth() })
        })
        .collect();
    users.sort_by_key(|u| u["user"].as_u64());
    json!({ "users": users })
}
