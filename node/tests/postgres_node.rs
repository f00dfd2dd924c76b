//! The real binary on the PostgreSQL backend: the same protocol, and data that survives a
//! restart.

mod common;

use common::postgres::FreshDatabase;
use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_postgres_serves_and_keeps_its_data() {
    let database = FreshDatabase::create().await;
    let env = [("TROUPE_STORE__BACKEND", "postgres"), ("TROUPE_STORE__POSTGRES_URL", database.url.as_str())];
    let mut node = TestNode::start_with_env(&env).await;
    let (alice, _, token) = node.user_with_token("alice").await;
    let (bob, bob_id) = node.user("bob").await;
    let group = create_group(&alice, "on postgres", true).await;
    bob.request("join", json!({ "group": group })).await.unwrap();
    for n in 1..=20 {
        send_text(&alice, group, &format!("p{n}"), &format!("hello {n}")).await.unwrap();
    }
    let dup = send_text(&alice, group, "p3", "hello 3").await.unwrap();
    assert_eq!((dup["seq"].as_u64(), dup["duplicate"].as_bool()), (Some(3), Some(true)));
    let stats = node.console("stats").await;
    assert!(stats["process"]["pid"].as_u64().is_some());
    let actors = node.console("actors").await;
    assert_eq!(actors["store"], "postgres");
    let (_, _, metrics) = http_get(node.http, "/metrics", &[]).await;
    let disk = metric_sample(&String::from_utf8(metrics).unwrap(), "troupe_store_disk_bytes");
    assert!(disk > 1e6, "the database's size on disk: {disk}");

    node.restart().await;
    let (alice, session) = node.auth(&token).await;
    assert_eq!(session["groups"][0]["last_seq"], 20);
    let page = alice.request("history", json!({ "group": group, "limit": 100 })).await.unwrap();
    let seqs: Vec<u64> = page["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
    let members = alice.request("members", json!({ "group": group })).await.unwrap();
    assert!(members["members"].as_array().unwrap().iter().any(|m| m["user"] == bob_id));
    let ack = send_text(&alice, group, "after", "after restart").await.unwrap();
    assert_eq!(ack["seq"], 21);
}
