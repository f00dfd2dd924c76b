//! What is acked is durable: across a clean restart, and across `kill -9` in the middle of
//! a burst of sends.

mod common;

use common::*;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[tokio::test]
async fn everything_survives_a_restart() {
    let mut node = TestNode::start().await;
    let (alice, alice_id, token) = node.user_with_token("alice").await;
    let (bob, bob_id, bob_token) = node.user_with_token("bob").await;
    let group = create_group(&alice, "kept", true).await;
    bob.request("join", json!({ "group": group })).await.unwrap();
    alice.request("set_role", json!({ "group": group, "user": bob_id, "role": "admin" })).await.unwrap();
    alice.request("update_profile", json!({ "nickname": "Alice R." })).await.unwrap();
    for n in 1..=10 {
        send_text(&alice, group, &format!("k{n}"), &format!("kept {n}")).await.unwrap();
    }
    bob.request("read", json!({ "group": group, "seq": 4 })).await.unwrap();
    drop((alice, bob));

    node.restart().await;
    let (alice, session) = node.auth(&token).await;
    assert_eq!(session["profile"]["nickname"], "Alice R.");
    let (bob, bob_session) = node.auth(&bob_token).await;
    let summary = &bob_session["groups"][0];
    assert_eq!(
        (
            summary["group"].as_u64(),
            summary["last_seq"].as_u64(),
            summary["read_seq"].as_u64(),
            summary["unread"].as_u64()
        ),
        (Some(group), Some(10), Some(4), Some(6))
    );
    assert_eq!(summary["role"], "admin");
    let info = bob.request("group_info", json!({ "group": group })).await.unwrap();
    assert_eq!(
        (info["owner"].as_u64(), info["member_count"].as_u64(), info["last_seq"].as_u64()),
        (Some(alice_id), Some(2), Some(10))
    );
    let history = alice.request("history", json!({ "group": group })).await.unwrap();
    let bodies: Vec<&str> =
        history["messages"].as_array().unwrap().iter().map(|m| m["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, (1..=10).map(|n| format!("kept {n}")).collect::<Vec<_>>());
    let ack = send_text(&bob, group, "after-restart", "next").await.unwrap();
    assert_eq!(ack["seq"], 11, "seqs continue where the log ends");
}

/// Senders pipeline sends; the node is killed with SIGKILL mid-burst. After restart every
/// acked message is in the log with the seq its ack named, seqs have no gaps or repeats, and
/// resending what was not acked never duplicates anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_burst_loses_no_acked_message() {
    let mut node = TestNode::start().await;
    let (owner, _, owner_token) = node.user_with_token("owner").await;
    let group = create_group(&owner, "burst", true).await;
    let acked: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();
    let mut tokens = Vec::new();
    for s in 0..4 {
        let (client, _, token) = node.user_with_token(&format!("sender{s}_")).await;
        client.request("join", json!({ "group": group })).await.unwrap();
        tokens.push(token);
        let acked = acked.clone();
        tasks.spawn(async move {
            // Keep up to 64 sends in flight, until the node dies.
            let mut window = std::collections::VecDeque::new();
            for n in 0..100_000u64 {
                let id = format!("{s}-{n}");
                let fields =
                    json!({ "group": group, "client_msg_id": id, "type": "text", "body": format!("burst {id}") });
                let Ok(rx) = client.start_request("send", fields).await else { break };
                window.push_back((id, rx));
                if window.len() >= 64 {
                    let (id, rx) = window.pop_front().unwrap();
                    match rx.await {
                        Ok(Ok(ack)) => {
                            acked.lock().unwrap().insert(id, ack["seq"].as_u64().unwrap());
                        }
                        _ => break,
                    }
                }
            }
            for (id, rx) in window {
                if let Ok(Ok(ack)) = rx.await {
                    acked.lock().unwrap().insert(id, ack["seq"].as_u64().unwrap());
                }
            }
        });
    }
    // Let a good number of acks land, then pull the plug.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 2000 {
        assert!(tokio::time::Instant::now() < deadline, "too few acks before the kill");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.kill9().await;
    while tasks.join_next().await.is_some() {}
    let acked = acked.lock().unwrap().clone();
    drop(owner);

    node.restart().await;
    let (owner, _) = node.auth(&owner_token).await;
    let log = read_log(&owner, group).await;
    let seqs: Vec<u64> = log.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "no gap, no repeat");
    let by_id: HashMap<String, u64> =
        log.iter().map(|m| (m["client_msg_id"].as_str().unwrap().to_owned(), m["seq"].as_u64().unwrap())).collect();
    let senders: HashSet<(u64, String)> =
        log.iter().map(|m| (m["sender"].as_u64().unwrap(), m["client_msg_id"].as_str().unwrap().to_owned())).collect();
    assert_eq!(senders.len(), log.len(), "no (sender, client_msg_id) twice");
    for (id, seq) in &acked {
        assert_eq!(by_id.get(id), Some(seq), "acked message {id} must be at seq {seq}");
    }
    println!("{} acked before the kill, {} in the log after restart", acked.len(), log.len());

    // Resend a range around the kill point from sender 0: acked ones come back as
    // duplicates with their seq, the rest are appended once.
    let (sender0, _) = node.auth(&tokens[0]).await;
    let last_acked = (0..100_000u64).take_while(|n| acked.contains_key(&format!("0-{n}"))).count() as u64;
    for n in last_acked.saturating_sub(5)..last_acked + 5 {
        let id = format!("0-{n}");
        let ack = send_text(&sender0, group, &id, &format!("burst {id}")).await.unwrap();
        if let Some(seq) = by_id.get(&id) {
            assert_eq!((ack["seq"].as_u64(), ack["duplicate"].as_bool()), (Some(*seq), Some(true)), "{id}");
        }
    }
    let after = read_log(&owner, group).await;
    let ids: HashSet<&str> =
        after.iter().map(|m| m["client_msg_id"].as_str().unwrap()).filter(|id| id.starts_with("0-")).collect();
    assert_eq!(ids.len(), after.iter().filter(|m| m["client_msg_id"].as_str().unwrap().starts_with("0-")).count());
}

async fn read_log(client: &Client, group: u64) -> Vec<Value> {
    let mut log = Vec::new();
    let mut after = 0;
    loop {
        let page = client.request("history", json!({ "group": group, "after": after, "limit": 100 })).await.unwrap();
        let messages = page["messages"].as_array().unwrap().clone();
        if let Some(last) = messages.last() {
            after = last["seq"].as_u64().unwrap();
        }
        log.extend(messages);
        if !page["has_more"].as_bool().unwrap() {
            return log;
        }
    }
}

/// SIGTERM (what a service manager sends) drains: every client gets a `going_away` close,
/// the process exits by itself and cleanly, and what was acked is there after a restart.
#[tokio::test]
async fn sigterm_closes_connections_with_going_away_and_exits_cleanly() {
    let mut node = TestNode::start().await;
    let (alice, _, token) = node.user_with_token("alice").await;
    let (bob, _) = node.user("bob").await;
    let group = create_group(&alice, "drain", true).await;
    bob.request("join", json!({ "group": group })).await.unwrap();
    for i in 0..20 {
        send_text(&alice, group, &format!("m{i}"), "before the stop").await.unwrap();
    }
    node.signal("TERM");
    for client in [&alice, &bob] {
        let closed = client.closed(Duration::from_secs(5)).await.expect("closed by the node");
        assert_eq!((closed.code, closed.reason.as_str()), (Some(1001), "going_away"));
    }
    let status = node.wait_exit(Duration::from_secs(10)).await.expect("the node exits by itself after SIGTERM");
    assert!(status.success(), "a clean exit, not {status:?}");

    node.restart().await;
    let (alice, _) = node.auth(&token).await;
    let history = alice.request("history", json!({ "group": group, "limit": 100 })).await.unwrap();
    assert_eq!(history["messages"].as_array().map(Vec::len), Some(20), "every acked message survived");
}
