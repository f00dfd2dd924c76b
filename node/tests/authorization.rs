//! Outsiders learn nothing: a user who is not in a group gets exactly the answer an unknown
//! group id gets, for every group operation, and receives nothing from the group.

mod common;

use common::*;
use serde_json::{Value, json};

/// Every request that names a group, with the fields it needs.
fn group_requests(group: u64, someone: u64) -> Vec<(&'static str, Value)> {
    vec![
        ("group_info", json!({ "group": group })),
        ("members", json!({ "group": group })),
        ("send", json!({ "group": group, "client_msg_id": "x", "type": "text", "body": "hi" })),
        ("history", json!({ "group": group })),
        ("history", json!({ "group": group, "after": 0 })),
        ("read", json!({ "group": group, "seq": 1 })),
        ("leave", json!({ "group": group })),
        ("add_members", json!({ "group": group, "users": [someone] })),
        ("remove_member", json!({ "group": group, "user": someone })),
        ("set_role", json!({ "group": group, "user": someone, "role": "admin" })),
        ("transfer_ownership", json!({ "group": group, "user": someone })),
        ("update_group", json!({ "group": group, "name": "mine now" })),
        ("dissolve_group", json!({ "group": group })),
        ("join", json!({ "group": group })),
    ]
}

#[tokio::test]
async fn non_members_get_the_same_not_found_as_unknown_groups() {
    let node = TestNode::start().await;
    let (owner, owner_id) = node.user("owner").await;
    let (outsider, _) = node.user("outsider").await;
    let group = create_group(&owner, "private", false).await;
    send_text(&owner, group, "s1", "secret").await.unwrap();
    let unknown = group ^ 0x5555;

    for ((op, real), (_, missing)) in group_requests(group, owner_id).into_iter().zip(group_requests(unknown, owner_id))
    {
        let on_real = outsider.request(op, real).await.unwrap_err();
        let on_missing = outsider.request(op, missing).await.unwrap_err();
        assert_eq!(on_real.code(), Some("not_found"), "{op} on a group the caller is not in");
        assert_eq!(on_real, on_missing, "{op}: a real group must look exactly like a missing one");
    }

    let sync = outsider.request("sync", json!({ "groups": [{ "group": group, "after": 0 }] })).await.unwrap();
    assert_eq!(sync["groups"], json!([]));
    assert_eq!(sync["gone"], json!([group]));
    assert_eq!(outsider.request("my_groups", json!({})).await.unwrap()["groups"], json!([]));
    assert!(outsider.next_event_named("message", QUIET).await.is_none(), "outsiders receive nothing");

    // The group is untouched by all of the above.
    let info = owner.request("group_info", json!({ "group": group })).await.unwrap();
    assert_eq!(
        (info["name"].as_str(), info["member_count"].as_u64(), info["last_seq"].as_u64()),
        (Some("private"), Some(1), Some(1))
    );
}

#[tokio::test]
async fn former_members_lose_access_immediately() {
    let node = TestNode::start().await;
    let (owner, _) = node.user("owner").await;
    let (bob, bob_id) = node.user("bob").await;
    let group = create_group(&owner, "club", true).await;
    bob.request("join", json!({ "group": group })).await.unwrap();
    bob.request("history", json!({ "group": group })).await.expect("members read history");
    owner.request("remove_member", json!({ "group": group, "user": bob_id })).await.unwrap();
    for (op, fields) in group_requests(group, bob_id) {
        if op == "join" {
            continue; // the group is open: rejoining is allowed
        }
        assert_eq!(code(bob.request(op, fields).await), "not_found", "{op} after removal");
    }
}

/// Many connections asking about the same unknown groups at once (each activation fails
/// fast): every request is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_for_unknown_groups_are_all_answered() {
    let node = TestNode::start().await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16 {
        let (client, _) = node.user(&format!("probe{i}_")).await;
        tasks.spawn(async move {
            let mut pending = Vec::new();
            for n in 0..60u64 {
                pending.push(client.start_request("group_info", json!({ "group": 1000 + n % 3 })).await.unwrap());
            }
            for rx in pending {
                let answer = tokio::time::timeout(WAIT, rx).await.expect("answered").unwrap();
                assert_eq!(answer.unwrap_err().code(), Some("not_found"));
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}
