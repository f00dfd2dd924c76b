//! Messages over the real WebSocket: seqs, acks, fan-out order, deduplication, limits,
//! history, sync after being away, and unread counts.

mod common;

use common::*;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// Collects `message` events for one group until `count` have arrived.
async fn collect_messages(client: &Client, group: u64, count: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < count {
        let event = client
            .next_event_named("message", WAIT)
            .await
            .unwrap_or_else(|| panic!("only {} of {count} messages arrived", out.len()));
        if event["group"] == group {
            out.push(event);
        }
    }
    out
}

fn seqs(messages: &[Value]) -> Vec<u64> {
    messages.iter().map(|m| m["seq"].as_u64().unwrap()).collect()
}

#[tokio::test]
async fn send_is_acked_with_seq_and_fanned_out_in_order() {
    let node = TestNode::start().await;
    let (alice, alice_id) = node.user("alice").await;
    let (bob, _) = node.user("bob").await;
    let (carol, _) = node.user("carol").await;
    let group = create_group(&alice, "chat", true).await;
    for c in [&bob, &carol] {
        c.request("join", json!({ "group": group })).await.unwrap();
    }
    let ack = send_text(&alice, group, "m1", "hello").await.unwrap();
    assert_eq!(
        (ack["group"].as_u64(), ack["seq"].as_u64(), ack["duplicate"].as_bool()),
        (Some(group), Some(1), Some(false))
    );
    assert!(ack["ts"].as_u64().unwrap() > 1_700_000_000_000);
    send_text(&bob, group, "m2", "hi alice").await.unwrap();
    send_text(&carol, group, "m3", "hi all").await.unwrap();
    for client in [&alice, &bob, &carol] {
        let messages = collect_messages(client, group, 3).await;
        assert_eq!(seqs(&messages), vec![1, 2, 3]);
        assert_eq!(messages[0]["sender"], alice_id);
        assert_eq!(messages[0]["body"], "hello");
        assert_eq!(messages[0]["type"], "text");
        assert_eq!(messages[0]["client_msg_id"], "m1");
    }
}

/// Many senders pipelining at once: seqs are 1..N without gaps, each acked once, and every
/// receiver sees the same order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_senders_get_gapless_seqs_and_everyone_the_same_order() {
    let node = TestNode::start().await;
    let (owner, _) = node.user("owner").await;
    let group = create_group(&owner, "busy", true).await;
    let mut senders = Vec::new();
    for i in 0..5 {
        let (client, _) = node.user(&format!("s{i}_")).await;
        client.request("join", json!({ "group": group })).await.unwrap();
        senders.push(Arc::new(client));
    }
    let per_sender = 200;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, sender) in senders.iter().enumerate() {
        let sender = sender.clone();
        tasks.spawn(async move {
            let mut pending = Vec::new();
            for n in 0..per_sender {
                let fields = json!({ "group": group, "client_msg_id": format!("{i}-{n}"), "type": "text", "body": format!("{i}:{n}") });
                pending.push(sender.start_request("send", fields).await.unwrap());
            }
            let mut acked = Vec::new();
            for rx in pending {
                acked.push(rx.await.unwrap().unwrap()["seq"].as_u64().unwrap());
            }
            acked
        });
    }
    let mut all_acks = Vec::new();
    while let Some(acks) = tasks.join_next().await {
        let acks = acks.unwrap();
        assert!(acks.windows(2).all(|w| w[0] < w[1]), "one sender's messages keep their order");
        all_acks.extend(acks);
    }
    let total = 5 * per_sender;
    all_acks.sort();
    assert_eq!(all_acks, (1..=total as u64).collect::<Vec<_>>(), "every seq acked exactly once");

    let reference = seqs(&collect_messages(&owner, group, total).await);
    assert_eq!(reference, (1..=total as u64).collect::<Vec<_>>());
    for sender in &senders {
        let got = collect_messages(sender, group, total).await;
        assert_eq!(seqs(&got), reference, "same order everywhere");
    }
}

#[tokio::test]
async fn a_resend_returns_the_original_seq_and_is_not_delivered_twice() {
    let mut node = TestNode::start().await;
    let (alice, _, token) = node.user_with_token("alice").await;
    let (bob, _) = node.user("bob").await;
    let group = create_group(&alice, "dups", true).await;
    bob.request("join", json!({ "group": group })).await.unwrap();

    let first = send_text(&alice, group, "same-id", "once").await.unwrap();
    let again = send_text(&alice, group, "same-id", "once").await.unwrap();
    assert_eq!(again["seq"], first["seq"]);
    assert_eq!(again["ts"], first["ts"]);
    assert_eq!(again["duplicate"], true);
    // Another sender may use the same id: ids are scoped to (group, sender).
    let other = send_text(&bob, group, "same-id", "mine").await.unwrap();
    assert_eq!(other["seq"], 2);
    assert_eq!(seqs(&collect_messages(&bob, group, 2).await), vec![1, 2]);
    assert!(bob.next_event_named("message", QUIET).await.is_none(), "the resend was not delivered");

    // After a restart the group actor's memory is gone; the store still remembers.
    node.restart().await;
    let (alice, _) = node.auth(&token).await;
    let after = send_text(&alice, group, "same-id", "once").await.unwrap();
    assert_eq!((after["seq"].as_u64(), after["duplicate"].as_bool()), (Some(1), Some(true)));
    let history = alice.request("history", json!({ "group": group })).await.unwrap();
    assert_eq!(history["messages"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn limits_and_reserved_types_are_refused_clearly() {
    let node = TestNode::start_with_env(&[("TROUPE_ACTORS__MAX_TEXT_BYTES", "100")]).await;
    let (alice, _) = node.user("alice").await;
    let group = create_group(&alice, "limits", true).await;
    let send = |fields: Value| alice.request("send", fields);
    let long = "x".repeat(101);
    assert_eq!(
        code(send(json!({ "group": group, "client_msg_id": "a", "type": "text", "body": long })).await),
        "text_too_long"
    );
    let exact = "é".repeat(50);
    assert!(
        send(json!({ "group": group, "client_msg_id": "b", "type": "text", "body": exact })).await.is_ok(),
        "100 bytes fit"
    );
    assert_eq!(
        code(send(json!({ "group": group, "client_msg_id": "c", "type": "text", "body": "" })).await),
        "invalid_field"
    );
    assert_eq!(
        code(send(json!({ "group": group, "client_msg_id": "d", "type": "text", "body": 5 })).await),
        "invalid_field"
    );
    assert_eq!(
        code(send(json!({ "group": group, "client_msg_id": "", "type": "text", "body": "x" })).await),
        "invalid_field"
    );
    let id = "i".repeat(65);
    assert_eq!(
        code(send(json!({ "group": group, "client_msg_id": id, "type": "text", "body": "x" })).await),
        "invalid_field"
    );
    for kind in ["image", "audio", "video", "file"] {
        let result = send(json!({ "group": group, "client_msg_id": kind, "type": kind, "body": {} })).await;
        assert_eq!(code(result), "invalid_field", "{kind} without a media id");
    }
    assert_eq!(
        code(send(json!({ "group": group, "client_msg_id": "e", "type": "sticker", "body": "x" })).await),
        "invalid_field"
    );
    let history = alice.request("history", json!({ "group": group })).await.unwrap();
    assert_eq!(history["last_seq"], 1, "refused sends take no seq");
}

#[tokio::test]
async fn history_pages_both_ways() {
    let node = TestNode::start().await;
    let (alice, _) = node.user("alice").await;
    let group = create_group(&alice, "history", true).await;
    let mut pending = Vec::new();
    for n in 1..=250 {
        let fields =
            json!({ "group": group, "client_msg_id": format!("h{n}"), "type": "text", "body": format!("n{n}") });
        pending.push(alice.start_request("send", fields).await.unwrap());
    }
    for rx in pending {
        rx.await.unwrap().unwrap();
    }
    // Newest first, paging backwards.
    let mut seen = Vec::new();
    let mut before: Option<u64> = None;
    loop {
        let page = alice.request("history", json!({ "group": group, "before": before, "limit": 100 })).await.unwrap();
        let got = seqs(page["messages"].as_array().unwrap());
        assert!(got.windows(2).all(|w| w[1] == w[0] + 1), "ascending without gaps");
        seen.splice(0..0, got.iter().copied());
        if !page["has_more"].as_bool().unwrap() {
            break;
        }
        before = got.first().copied();
    }
    assert_eq!(seen, (1..=250).collect::<Vec<_>>());
    // Forwards from a point.
    let page = alice.request("history", json!({ "group": group, "after": 240, "limit": 5 })).await.unwrap();
    assert_eq!(seqs(page["messages"].as_array().unwrap()), vec![241, 242, 243, 244, 245]);
    assert_eq!(page["has_more"], true);
    let page = alice.request("history", json!({ "group": group, "after": 245 })).await.unwrap();
    assert_eq!(page["messages"].as_array().unwrap().len(), 5);
    assert_eq!(page["has_more"], false);
    assert_eq!(page["messages"][0]["body"], "n246");
    for bad in [
        json!({ "group": group, "limit": 101 }),
        json!({ "group": group, "limit": 0 }),
        json!({ "group": group, "before": 5, "after": 1 }),
    ] {
        assert_eq!(code(alice.request("history", bad).await), "invalid_field");
    }
}

/// A client away while thousands of messages arrive catches up by seq, paged, with no gap
/// and no duplicate, and its unread count is capped at 100.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reconnect_and_sync_after_thousands_of_messages() {
    let node = TestNode::start().await;
    let (alice, _, token) = node.user_with_token("alice").await;
    let (bob, _) = node.user("bob").await;
    let group = create_group(&alice, "busy", true).await;
    let quiet = create_group(&alice, "quiet", false).await;
    bob.request("join", json!({ "group": group })).await.unwrap();
    send_text(&bob, group, "first", "before alice left").await.unwrap();
    let seen_before = collect_messages(&alice, group, 1).await;
    let last_seen = seen_before[0]["seq"].as_u64().unwrap();
    alice.close().await;
    drop(alice);

    let total = 3000;
    let mut pending = Vec::new();
    for n in 0..total {
        let fields =
            json!({ "group": group, "client_msg_id": format!("b{n}"), "type": "text", "body": format!("m{n}") });
        pending.push(bob.start_request("send", fields).await.unwrap());
    }
    for rx in pending {
        rx.await.unwrap().unwrap();
    }

    let (alice, session) = node.auth(&token).await;
    let busy = session["groups"].as_array().unwrap().iter().find(|g| g["group"] == group).unwrap().clone();
    assert_eq!(busy["unread"], 100, "unread is capped at 100");
    assert_eq!(busy["last_seq"], total + 1);

    let sync = alice
        .request("sync", json!({ "groups": [{ "group": group, "after": last_seen }, { "group": 424242, "after": 3 }] }))
        .await
        .unwrap();
    assert_eq!(sync["gone"], json!([424242]), "groups the caller is not in are listed as gone");
    let entry = sync["groups"].as_array().unwrap().iter().find(|g| g["group"] == group).unwrap();
    let quiet_entry = sync["groups"].as_array().unwrap().iter().find(|g| g["group"] == quiet).unwrap();
    assert_eq!(quiet_entry["messages"], json!([]));
    let mut got = seqs(entry["messages"].as_array().unwrap());
    assert_eq!(got.first(), Some(&(last_seen + 1)));
    let mut has_more = entry["has_more"].as_bool().unwrap();
    while has_more {
        let after = *got.last().unwrap();
        let page = alice.request("history", json!({ "group": group, "after": after, "limit": 100 })).await.unwrap();
        got.extend(seqs(page["messages"].as_array().unwrap()));
        has_more = page["has_more"].as_bool().unwrap();
    }
    let expected: Vec<u64> = (last_seen + 1..=total + 1).collect();
    assert_eq!(got.len(), expected.len(), "no duplicates");
    assert_eq!(got, expected, "no gaps");
    let unique: HashSet<u64> = got.iter().copied().collect();
    assert_eq!(unique.len(), got.len());
}

#[tokio::test]
async fn unread_counts_follow_read_marks_across_devices() {
    let node = TestNode::start().await;
    let (alice, _, token) = node.user_with_token("alice").await;
    let (phone, _) = node.auth(&token).await;
    let (bob, _) = node.user("bob").await;
    let group = create_group(&alice, "unread", true).await;
    bob.request("join", json!({ "group": group })).await.unwrap();
    for n in 1..=5 {
        send_text(&bob, group, &format!("u{n}"), "news").await.unwrap();
    }
    let unread = |groups: &Value| groups["groups"][0]["unread"].as_u64().unwrap();
    assert_eq!(unread(&alice.request("my_groups", json!({})).await.unwrap()), 5);
    assert_eq!(unread(&bob.request("my_groups", json!({})).await.unwrap()), 0, "sending moves the sender's mark");

    let read = alice.request("read", json!({ "group": group, "seq": 3 })).await.unwrap();
    assert_eq!((read["read_seq"].as_u64(), read["unread"].as_u64()), (Some(3), Some(2)));
    let mark = phone.next_event_named("read_mark", WAIT).await.expect("the other device hears the mark move");
    assert_eq!((mark["read_seq"].as_u64(), mark["unread"].as_u64()), (Some(3), Some(2)));
    let back = alice.request("read", json!({ "group": group, "seq": 1 })).await.unwrap();
    assert_eq!(back["read_seq"], 3, "marks never move back");
    let past_end = alice.request("read", json!({ "group": group, "seq": 99 })).await.unwrap();
    assert_eq!((past_end["read_seq"].as_u64(), past_end["unread"].as_u64()), (Some(5), Some(0)), "clamped to last seq");
    assert_eq!(unread(&phone.request("my_groups", json!({})).await.unwrap()), 0);
    assert_eq!(code(alice.request("read", json!({ "group": 777, "seq": 1 })).await), "not_found");
}

#[tokio::test]
async fn a_removed_member_stops_receiving_at_once() {
    let node = TestNode::start().await;
    let (owner, _) = node.user("owner").await;
    let (eve, eve_id) = node.user("eve").await;
    let group = create_group(&owner, "secret", true).await;
    eve.request("join", json!({ "group": group })).await.unwrap();
    send_text(&owner, group, "before", "eve may see this").await.unwrap();
    assert_eq!(collect_messages(&eve, group, 1).await[0]["seq"], 1);

    owner.request("remove_member", json!({ "group": group, "user": eve_id })).await.unwrap();
    send_text(&owner, group, "after", "eve must not see this").await.unwrap();
    let left = eve.next_event_named("member_left", WAIT).await.expect("eve is told she was removed");
    assert_eq!((left["user"].as_u64(), left["reason"].as_str()), (Some(eve_id), Some("removed")));
    assert!(eve.next_event_named("message", Duration::from_millis(500)).await.is_none(), "nothing after removal");
    assert_eq!(code(eve.request("history", json!({ "group": group })).await), "not_found");
}
