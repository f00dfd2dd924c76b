//! Several real `troupe` processes on loopback as one cluster over one PostgreSQL
//! database: placement, routing, cross-node fan-out, failover, fencing, growth and drain.

mod common;

use common::cluster::{SECRET, TestCluster, free_port, up_nodes};
use common::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Every message event for `group` a client receives until it has `count` of them.
async fn collect_messages(client: &Client, group: u64, count: usize) -> Vec<Value> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + WAIT;
    while seen.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(event) = client.next_event_named("message", left).await else {
            panic!("got {} of {count} messages", seen.len());
        };
        if event["group"] == group {
            seen.push(event);
        }
    }
    seen
}

/// The whole history of a group, ascending, paged with `history` `after`.
async fn history(client: &Client, group: u64) -> Vec<Value> {
    let mut all = Vec::new();
    loop {
        let after = all.last().and_then(|m: &Value| m["seq"].as_u64()).unwrap_or(0);
        let page = client.request("history", json!({ "group": group, "after": after, "limit": 100 })).await.expect("history");
        all.extend(page["messages"].as_array().cloned().unwrap_or_default());
        if page["has_more"] != true {
            return all;
        }
    }
}

/// (seq, client_msg_id) of each message.
fn seq_ids(messages: &[Value]) -> Vec<(u64, String)> {
    messages.iter().map(|m| (m["seq"].as_u64().unwrap(), m["client_msg_id"].as_str().unwrap().to_owned())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_on_three_nodes_get_every_message_in_one_order() {
    let cluster = TestCluster::start(3).await;
    let (alice, _) = cluster.node(0).user("alice").await;
    let (bob, _) = cluster.node(1).user("bob").await;
    let (carol, _) = cluster.node(2).user("carol").await;
    let group = create_group(&alice, "spread", true).await;
    bob.request("join", json!({ "group": group })).await.expect("bob joins through node 2");
    carol.request("join", json!({ "group": group })).await.expect("carol joins through node 3");
    let owner = cluster.owner(0, group).await;
    for via in 1..3 {
        assert_eq!(cluster.owner(via, group).await, owner, "every node places the group on the same node");
    }

    let clients = [&alice, &bob, &carol];
    let sends = clients.iter().enumerate().map(|(i, client)| async move {
        for n in 0..20 {
            send_text(client, group, &format!("c{i}-{n}"), &format!("from {i}: {n}")).await.expect("send");
        }
    });
    futures_util::future::join_all(sends).await;

    let mut orders = Vec::new();
    for client in clients {
        let order = seq_ids(&collect_messages(client, group, 60).await);
        let seqs: Vec<u64> = order.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, (1..=60).collect::<Vec<_>>(), "every message once, in seq order");
        orders.push(order);
    }
    assert_eq!(orders[0], orders[1], "alice and bob saw the same order");
    assert_eq!(orders[1], orders[2], "bob and carol saw the same order");

    // History answers the same through every node, and only to members.
    for client in clients {
        assert_eq!(seq_ids(&history(client, group).await), orders[0], "history matches what was delivered");
    }
    for slot in 0..3 {
        let (outsider, _) = cluster.node(slot).user("outsider").await;
        assert_eq!(code(outsider.request("history", json!({ "group": group })).await), "not_found");
        assert_eq!(code(outsider.request("group_info", json!({ "group": group })).await), "not_found");
    }
    // Sync after being away, through another node than before.
    let (bob_again, _) = {
        let (_, _, token) = cluster.node(1).user_with_token("bob2").await;
        cluster.node(2).auth(&token).await
    };
    drop(bob_again);
    let info = carol.request("group_info", json!({ "group": group })).await.expect("info via node 3");
    assert_eq!(info["member_count"], 3);
}
