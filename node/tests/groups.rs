//! Groups over the real WebSocket: lifecycle, roles, paging, and the member cap under
//! concurrency.

mod common;

use common::*;
use serde_json::{Value, json};
use std::sync::Arc;

#[tokio::test]
async fn create_info_list_and_join() {
    let node = TestNode::start().await;
    let (alice, alice_id) = node.user("alice").await;
    let (bob, bob_id) = node.user("bob").await;
    let group = create_group(&alice, "lobby", true).await;

    let info = alice.request("group_info", json!({ "group": group })).await.unwrap();
    assert_eq!(info["name"], "lobby");
    assert_eq!(info["owner"], alice_id);
    assert_eq!(info["member_count"], 1);
    assert_eq!(info["max_members"], 500);
    assert_eq!(info["last_seq"], 0);

    let joined = bob.request("join", json!({ "group": group })).await.unwrap();
    assert_eq!(joined["member_count"], 2);
    let event = alice.next_event_named("member_joined", WAIT).await.expect("alice hears bob join");
    assert_eq!((event["group"].as_u64(), event["user"].as_u64()), (Some(group), Some(bob_id)));
    assert_eq!(code(bob.request("join", json!({ "group": group })).await), "already_member");

    let mine = bob.request("my_groups", json!({})).await.unwrap();
    let groups = mine["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["group"], group);
    assert_eq!(groups[0]["role"], "member");
    assert_eq!(groups[0]["unread"], 0);
}

#[tokio::test]
async fn closed_groups_admit_only_by_owner_or_admin() {
    let node = TestNode::start().await;
    let (owner, _) = node.user("owner").await;
    let (admin, admin_id) = node.user("admin").await;
    let (carol, carol_id) = node.user("carol").await;
    let (dave, dave_id) = node.user("dave").await;
    let group = create_group(&owner, "private", false).await;

    assert_eq!(code(carol.request("join", json!({ "group": group })).await), "not_found", "closed looks missing");

    let added =
        owner.request("add_members", json!({ "group": group, "users": [admin_id, 999, admin_id] })).await.unwrap();
    assert_eq!(
        added["results"],
        json!([{ "user": admin_id, "status": "added" }, { "user": 999, "status": "not_found" }])
    );
    assert_eq!(added["member_count"], 2);

    let refused = admin.request("add_members", json!({ "group": group, "users": [carol_id] })).await;
    assert_eq!(code(refused), "forbidden", "plain members do not add");
    owner.request("set_role", json!({ "group": group, "user": admin_id, "role": "admin" })).await.unwrap();
    admin.request("add_members", json!({ "group": group, "users": [carol_id, dave_id] })).await.unwrap();

    // Admins remove plain members but not other admins or the owner.
    admin.request("remove_member", json!({ "group": group, "user": dave_id })).await.unwrap();
    let gone = dave.next_event_named("member_left", WAIT).await.expect("dave is told");
    assert_eq!(gone["reason"], "removed");
    let info = owner.request("group_info", json!({ "group": group })).await.unwrap();
    assert_eq!(info["member_count"], 3);
    let owner_id = info["owner"].clone();
    assert_eq!(code(admin.request("remove_member", json!({ "group": group, "user": owner_id })).await), "forbidden");
    assert_eq!(code(carol.request("remove_member", json!({ "group": group, "user": admin_id })).await), "forbidden");
    assert_eq!(
        code(carol.request("set_role", json!({ "group": group, "user": carol_id, "role": "admin" })).await),
        "forbidden"
    );
    assert_eq!(
        code(owner.request("set_role", json!({ "group": group, "user": admin_id, "role": "owner" })).await),
        "invalid_field"
    );
    assert_eq!(code(dave.request("group_info", json!({ "group": group })).await), "not_found");
}

#[tokio::test]
async fn ownership_transfer_leave_and_dissolve() {
    let node = TestNode::start().await;
    let (alice, alice_id) = node.user("alice").await;
    let (bob, bob_id) = node.user("bob").await;
    let group = create_group(&alice, "club", true).await;
    bob.request("join", json!({ "group": group })).await.unwrap();

    assert_eq!(code(alice.request("leave", json!({ "group": group })).await), "owner_cannot_leave");
    alice.request("transfer_ownership", json!({ "group": group, "user": bob_id })).await.unwrap();
    let info = bob.request("group_info", json!({ "group": group })).await.unwrap();
    assert_eq!(info["owner"], bob_id);
    let members = bob.request("members", json!({ "group": group })).await.unwrap();
    let roles: Vec<(u64, String)> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["user"].as_u64().unwrap(), m["role"].as_str().unwrap().to_owned()))
        .collect();
    assert!(roles.contains(&(alice_id, "admin".into())) && roles.contains(&(bob_id, "owner".into())), "{roles:?}");

    let left = alice.request("leave", json!({ "group": group })).await.unwrap();
    assert_eq!(left["member_count"], 1);
    assert_eq!(alice.request("my_groups", json!({})).await.unwrap()["groups"], json!([]));

    alice.request("join", json!({ "group": group })).await.unwrap();
    assert_eq!(code(alice.request("dissolve_group", json!({ "group": group })).await), "forbidden");
    bob.request("dissolve_group", json!({ "group": group })).await.unwrap();
    alice.next_event_named("group_dissolved", WAIT).await.expect("members are told");
    for client in [&alice, &bob] {
        assert_eq!(code(client.request("group_info", json!({ "group": group })).await), "not_found");
        assert_eq!(code(client.request("join", json!({ "group": group })).await), "not_found");
        assert_eq!(client.request("my_groups", json!({})).await.unwrap()["groups"], json!([]));
    }
}

#[tokio::test]
async fn update_group_and_members_paging() {
    let node = TestNode::start().await;
    let (owner, owner_id) = node.user("owner").await;
    let group = create_group(&owner, "before", true).await;
    let mut ids = vec![owner_id];
    for i in 0..7 {
        let (client, id) = node.user(&format!("m{i}_")).await;
        client.request("join", json!({ "group": group })).await.unwrap();
        ids.push(id);
    }
    ids.sort();
    let mut seen = Vec::new();
    let mut after: Option<u64> = None;
    loop {
        let page = owner.request("members", json!({ "group": group, "after": after, "limit": 3 })).await.unwrap();
        let members = page["members"].as_array().unwrap();
        assert!(members.len() <= 3);
        seen.extend(members.iter().map(|m| m["user"].as_u64().unwrap()));
        match page.get("next").and_then(Value::as_u64) {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ids, "pages cover every member once, in id order");
    assert_eq!(code(owner.request("members", json!({ "group": group, "limit": 0 })).await), "invalid_field");

    let updated =
        owner.request("update_group", json!({ "group": group, "name": "after", "open": false })).await.unwrap();
    assert_eq!((updated["name"].as_str(), updated["open"].as_bool()), (Some("after"), Some(false)));
    assert_eq!(code(owner.request("update_group", json!({ "group": group, "name": "" })).await), "invalid_field");
}

/// The seed's concurrency problem: 2,000 users join one open group at once from 2,000
/// connections; exactly 500 get in.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_thousand_concurrent_joins_fill_exactly_500() {
    let node = Arc::new(TestNode::start().await);
    let (owner, _) = node.user("owner").await;
    let group = create_group(&owner, "popular", true).await;

    // Connect and log everyone in first, so the joins really are concurrent.
    let mut clients = Vec::new();
    let mut logins = tokio::task::JoinSet::new();
    for i in 0..1999 {
        let node = node.clone();
        logins.spawn(async move { node.user(&format!("j{i}_")).await });
    }
    while let Some(joined) = logins.join_next().await {
        clients.push(joined.unwrap());
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(clients.len()));
    let mut joins = tokio::task::JoinSet::new();
    for (client, id) in clients {
        let barrier = barrier.clone();
        joins.spawn(async move {
            barrier.wait().await;
            let result = client.request("join", json!({ "group": group })).await;
            (client, id, result)
        });
    }
    let (mut added, mut full, mut members) = (0, 0, vec![]);
    let mut keep = Vec::new();
    while let Some(done) = joins.join_next().await {
        let (client, id, result) = done.unwrap();
        match result {
            Ok(_) => {
                added += 1;
                members.push(id);
            }
            Err(e) => {
                assert_eq!(e.code(), Some("group_full"), "{e}");
                full += 1;
            }
        }
        keep.push(client);
    }
    assert_eq!(added, 499, "owner + 499 joiners = 500");
    assert_eq!(full, 1500);

    let info = owner.request("group_info", json!({ "group": group })).await.unwrap();
    assert_eq!(info["member_count"], 500);
    let mut listed = Vec::new();
    let mut after: Option<u64> = None;
    loop {
        let page = owner.request("members", json!({ "group": group, "after": after, "limit": 500 })).await.unwrap();
        listed.extend(page["members"].as_array().unwrap().iter().map(|m| m["user"].as_u64().unwrap()));
        match page.get("next").and_then(Value::as_u64) {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(listed.len(), 500, "member_count equals the stored membership");

    // And the count survives a restart (it is what the store holds, not memory).
    drop(keep);
    let node = Arc::try_unwrap(node).ok().expect("sole owner");
    let mut node = node;
    node.restart().await;
    let (again, _) = node.user("late").await;
    assert_eq!(code(again.request("join", json!({ "group": group })).await), "group_full");
}
