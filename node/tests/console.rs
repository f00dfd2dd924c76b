//! The debug console, against a running node: live actors by kind with mailbox depth,
//! group members and last seq, connected users.

mod common;

use common::*;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[tokio::test]
async fn shows_actors_groups_and_users() {
    let node = TestNode::start().await;
    let (alice, alice_id) = node.user("alice").await;
    let (bob, bob_id) = node.user("bob").await;
    let group = create_group(&alice, "watched", true).await;
    bob.request("join", json!({ "group": group })).await.unwrap();
    send_text(&alice, group, "c1", "one").await.unwrap();
    send_text(&bob, group, "c2", "two").await.unwrap();

    let actors = node.console("actors").await;
    assert_eq!(actors["counts"]["group"], 1);
    assert_eq!(actors["counts"]["user"], 2);
    assert_eq!(actors["connections"], 2);
    let kinds: Vec<(&str, u64)> = actors["actors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["kind"].as_str().unwrap(), a["id"].as_u64().unwrap()))
        .collect();
    assert!(
        kinds.contains(&("group", group)) && kinds.contains(&("user", alice_id)) && kinds.contains(&("user", bob_id))
    );
    assert!(actors["actors"][0].get("mailbox_depth").is_some());

    let snapshot = node.console(&format!("group {group}")).await;
    assert_eq!(snapshot["group"]["last_seq"], 2);
    assert_eq!(snapshot["group"]["name"], "watched");
    let members: Vec<u64> =
        snapshot["group"]["members"].as_array().unwrap().iter().map(|m| m[0].as_u64().unwrap()).collect();
    assert_eq!(members.len(), 2);
    assert!(members.contains(&alice_id) && members.contains(&bob_id));

    let stats = node.console("stats").await;
    assert!(stats["process"]["rss_bytes"].as_u64().unwrap() > 0);
    assert!(stats["process"]["cpu_seconds"].as_f64().is_some(), "CPU time is reported (it may still round to 0)");
    assert_eq!(stats["connections"], 2);

    let users = node.console("users").await;
    assert_eq!(users["users"].as_array().unwrap().len(), 2);
    assert!(node.console("group 1").await["error"].is_string());
    assert!(node.console("launch missiles").await["error"].is_string(), "unknown commands are refused, nothing runs");

    // The CLI renders the same data as a table.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_troupe"))
        .args(["console", "--addr", &node.console.to_string(), "actors"])
        .output()
        .await
        .unwrap();
    let table = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success());
    assert!(table.contains("DEPTH") && table.contains(&group.to_string()), "{table}");
}

/// Under a flood of sends the group actor's mailbox is seen non-empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mailbox_depth_is_visible_under_load() {
    let node = Arc::new(TestNode::start().await);
    let (owner, _) = node.user("owner").await;
    let group = create_group(&owner, "flood", true).await;
    let mut senders = Vec::new();
    for i in 0..8 {
        let (client, _) = node.user(&format!("f{i}_")).await;
        client.request("join", json!({ "group": group })).await.unwrap();
        senders.push(Arc::new(client));
    }
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (node, done) = (node.clone(), done.clone());
        tokio::spawn(async move {
            let mut max_depth = 0;
            let mut max_peak = 0;
            while !done.load(Ordering::Relaxed) {
                let actors = node.console("actors").await;
                for actor in actors["actors"].as_array().unwrap() {
                    if actor["kind"] == "group" && actor["id"] == group {
                        max_depth = max_depth.max(actor["mailbox_depth"].as_u64().unwrap());
                        max_peak = max_peak.max(actor["mailbox_peak"].as_u64().unwrap());
                    }
                }
            }
            (max_depth, max_peak)
        })
    };
    let mut tasks = tokio::task::JoinSet::new();
    for (i, sender) in senders.iter().enumerate() {
        let sender = sender.clone();
        tasks.spawn(async move {
            let mut pending = Vec::new();
            for n in 0..1000 {
                let fields =
                    json!({ "group": group, "client_msg_id": format!("{i}-{n}"), "type": "text", "body": "x" });
                pending.push(sender.start_request("send", fields).await.unwrap());
            }
            for rx in pending {
                rx.await.unwrap().unwrap();
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    done.store(true, Ordering::Relaxed);
    let (max_depth, max_peak) = watcher.await.unwrap();
    println!("console saw mailbox depth up to {max_depth}, peak {max_peak}");
    assert!(max_depth > 0, "the console saw a queue in the group actor's mailbox");
    assert!(max_peak >= max_depth);
    let after: Value = node.console(&format!("group {group}")).await;
    assert_eq!(after["group"]["last_seq"], 8000);
}
