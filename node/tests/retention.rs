//! Message retention through the real binary: the setting, and history and sync at the edge
//! of what was deleted. Retention counts days, so the node is restarted with its clock
//! moved days ahead by libfaketime (the Debian package `faketime`; `.ci/run` installs it),
//! its monotonic clock left alone so timers behave.

mod common;

use common::postgres::FreshDatabase;
use common::*;
use serde_json::{Value, json};

/// The environment that runs the node `days` ahead of the real clock.
fn days_ahead(days: u32) -> Vec<(&'static str, String)> {
    let library = ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib", "/usr/local/lib"]
        .iter()
        .map(|dir| format!("{dir}/faketime/libfaketime.so.1"))
        .find(|path| std::path::Path::new(path).exists())
        .expect("libfaketime is installed (Debian package `faketime`)");
    vec![("LD_PRELOAD", library), ("FAKETIME", format!("+{days}d")), ("FAKETIME_DONT_FAKE_MONOTONIC", "1".into())]
}

fn seqs(messages: &Value) -> Vec<u64> {
    messages.as_array().expect("messages").iter().map(|m| m["seq"].as_u64().expect("seq")).collect()
}

async fn history(client: &Client, request: Value) -> Value {
    client.request("history", request).await.expect("history")
}

/// The node keeps a setting per group, checks it, and shows it to members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_is_a_group_setting_of_owners_and_admins() {
    let node = TestNode::start().await;
    let (alice, _) = node.user("alice").await;
    let (bob, _) = node.user("bob").await;
    let info =
        alice.request("create_group", json!({ "name": "short", "open": true, "retention_days": 7 })).await.unwrap();
    assert_eq!(info["retention_days"], 7);
    let group = info["group"].as_u64().unwrap();
    let forever = alice.request("create_group", json!({ "name": "long" })).await.unwrap();
    assert_eq!(forever["retention_days"], 0, "the default keeps messages forever");
    bob.request("join", json!({ "group": group })).await.unwrap();
    let seen = bob.request("group_info", json!({ "group": group })).await.unwrap();
    assert_eq!(seen["retention_days"], 7);

    assert_eq!(code(bob.request("update_group", json!({ "group": group, "retention_days": 1 })).await), "forbidden");
    for bad in [json!(36501), json!(-1), json!("7"), json!(1.5)] {
        let result = alice.request("update_group", json!({ "group": group, "retention_days": bad })).await;
        assert_eq!(code(result), "invalid_field", "{bad}");
        let result = alice.request("create_group", json!({ "name": "bad", "retention_days": bad })).await;
        assert_eq!(code(result), "invalid_field", "{bad}");
    }
    let updated = alice.request("update_group", json!({ "group": group, "retention_days": 1 })).await.unwrap();
    assert_eq!((updated["retention_days"].as_u64(), updated["name"].as_str()), (Some(1), Some("short")));
    // Members hear of it like any other change of the group.
    let event = bob.next_event_named("group_updated", WAIT).await.expect("group_updated");
    assert_eq!((event["group"].as_u64(), event["retention_days"].as_u64()), (Some(group), Some(1)));
    let page = history(&alice, json!({ "group": group })).await;
    assert_eq!(page["first_seq"], 1, "nothing deleted yet");
    let cleared = alice.request("update_group", json!({ "group": group, "retention_days": 0 })).await.unwrap();
    assert_eq!(cleared["retention_days"], 0);
}

/// Old messages are really deleted, only in groups with a retention; history and sync start
/// at the group's `first_seq`; seqs go on from where they were, even in a log retention
/// emptied; and the node counts what it deleted.
async fn old_messages_are_deleted_and_reads_start_after_them(env: &[(&str, &str)]) {
    let sweep = [("TROUPE_ACTORS__RETENTION_SWEEP_INTERVAL", "0.2")];
    let env: Vec<(&str, &str)> = env.iter().chain(sweep.iter()).copied().collect();
    let mut node = TestNode::start_with_env(&env).await;
    let (alice, _, token) = node.user_with_token("alice").await;
    let new_group = async |name: &str, days: u32| -> u64 {
        let info = alice.request("create_group", json!({ "name": name, "retention_days": days })).await.unwrap();
        info["group"].as_u64().unwrap()
    };
    let (kept, emptied, forever) =
        (new_group("kept", 1).await, new_group("emptied", 2).await, new_group("forever", 0).await);
    for n in 1..=20 {
        for group in [kept, emptied, forever] {
            send_text(&alice, group, &format!("old-{n}"), &format!("old {n}")).await.unwrap();
        }
    }
    // Nothing is old enough yet: a few sweeps later everything is still there.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert_eq!(seqs(&history(&alice, json!({ "group": kept, "limit": 100 })).await["messages"]).len(), 20);

    // Three days on: every message above is past both groups' retention.
    let ahead = days_ahead(3);
    let ahead: Vec<(&str, &str)> = ahead.iter().map(|(k, v)| (*k, v.as_str())).collect();
    node.restart_with_env(&ahead).await;
    let (alice, _) = node.auth(&token).await;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (_, _, metrics) = http_get(node.http, "/metrics", &[]).await;
        let deleted = metric_sample(&String::from_utf8(metrics).unwrap(), "troupe_messages_deleted_total");
        if deleted == 40.0 {
            break;
        }
        assert!(deleted < 40.0, "only the old messages of the groups with a retention: {deleted}");
        assert!(std::time::Instant::now() < deadline, "the sweeper deleted {deleted} of 40 in time");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for n in 21..=25 {
        let ack = send_text(&alice, kept, &format!("new-{n}"), &format!("new {n}")).await.unwrap();
        assert_eq!(ack["seq"], n, "seqs go on after the deleted ones");
    }

    // history, newest first: only what is kept, and no more pages below it.
    let page = history(&alice, json!({ "group": kept, "limit": 100 })).await;
    assert_eq!(seqs(&page["messages"]), (21..=25).collect::<Vec<_>>());
    assert_eq!((page["first_seq"].as_u64(), page["last_seq"].as_u64()), (Some(21), Some(25)));
    assert_eq!(page["has_more"], false);
    let page = history(&alice, json!({ "group": kept, "before": 23, "limit": 5 })).await;
    assert_eq!((seqs(&page["messages"]), page["has_more"].as_bool()), (vec![21, 22], Some(false)));
    let page = history(&alice, json!({ "group": kept, "before": 21 })).await;
    assert_eq!((seqs(&page["messages"]), page["has_more"].as_bool()), (vec![], Some(false)), "all of it deleted");
    // history after a deleted seq starts at the first kept one, a full page.
    let page = history(&alice, json!({ "group": kept, "after": 3, "limit": 2 })).await;
    assert_eq!((seqs(&page["messages"]), page["has_more"].as_bool()), (vec![21, 22], Some(true)));
    assert_eq!(page["first_seq"], 21);

    // sync from a cursor among the deleted ones: the kept ones, and where they start.
    let cursors = [(kept, 3), (emptied, 5), (forever, 15)];
    let cursors: Vec<Value> = cursors.iter().map(|(g, after)| json!({ "group": g, "after": after })).collect();
    let sync = alice.request("sync", json!({ "groups": cursors })).await.unwrap();
    let group_of = |id: u64| sync["groups"].as_array().unwrap().iter().find(|g| g["group"] == id).unwrap().clone();
    let synced = group_of(kept);
    assert_eq!((seqs(&synced["messages"]), synced["first_seq"].as_u64()), ((21..=25).collect(), Some(21)));
    assert_eq!(synced["has_more"], false);
    let synced = group_of(emptied);
    assert_eq!((seqs(&synced["messages"]), synced["first_seq"].as_u64()), (vec![], Some(21)));
    assert_eq!((synced["last_seq"].as_u64(), synced["has_more"].as_bool()), (Some(20), Some(false)));
    let synced = group_of(forever);
    assert_eq!((seqs(&synced["messages"]), synced["first_seq"].as_u64()), ((16..=20).collect(), Some(1)));

    // A log retention emptied keeps its last seq: the next message is 21, not 1.
    let page = history(&alice, json!({ "group": emptied })).await;
    assert_eq!(
        (seqs(&page["messages"]), page["first_seq"].as_u64(), page["last_seq"].as_u64()),
        (vec![], Some(21), Some(20))
    );
    let ack = send_text(&alice, emptied, "after-empty", "after").await.unwrap();
    assert_eq!(ack["seq"], 21);
    // The group kept forever lost nothing.
    let page = history(&alice, json!({ "group": forever, "limit": 100 })).await;
    assert_eq!((seqs(&page["messages"]), page["first_seq"].as_u64()), ((1..=20).collect(), Some(1)));

    // The deletion is durable: after another restart the same.
    node.restart().await;
    let (alice, _) = node.auth(&token).await;
    let page = history(&alice, json!({ "group": kept, "limit": 100 })).await;
    assert_eq!((seqs(&page["messages"]), page["first_seq"].as_u64()), ((21..=25).collect(), Some(21)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_messages_are_deleted_on_the_embedded_store() {
    old_messages_are_deleted_and_reads_start_after_them(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_messages_are_deleted_on_postgres() {
    let database = FreshDatabase::create().await;
    let env = [("TROUPE_STORE__BACKEND", "postgres"), ("TROUPE_STORE__POSTGRES_URL", database.url.as_str())];
    old_messages_are_deleted_and_reads_start_after_them(&env).await;
}
