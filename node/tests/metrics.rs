//! `GET /metrics`: what an operator's Prometheus scrapes, checked against what the test
//! did to the node.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn metrics_count_what_happened() {
    let node = TestNode::start().await;
    let (alice, _) = node.user("alice").await;
    let (bob, _) = node.user("bob").await;
    let group = create_group(&alice, "metrics", true).await;
    bob.request("join", json!({ "group": group })).await.unwrap();
    for i in 0..3 {
        send_text(&alice, group, &format!("m{i}"), "hello").await.unwrap();
    }
    send_text(&alice, group, "m0", "hello").await.unwrap(); // a retry: stored once
    assert_eq!(code(bob.request("group_info", json!({ "group": 12345 })).await), "not_found");
    assert_eq!(code(bob.request("no_such_op", json!({})).await), "unknown_op");
    // Both members receive the three messages (the sender too).
    for client in [&alice, &bob] {
        for _ in 0..3 {
            client.next_event_named("message", WAIT).await.expect("a message");
        }
    }

    let (status, headers, body) = http_get(node.http, "/metrics", &[]).await;
    assert_eq!(status, 200);
    assert!(header(&headers, "content-type").is_some_and(|t| t.starts_with("text/plain; version=0.0.4")));
    let text = String::from_utf8(body).unwrap();
    assert_eq!(metric_sample(&text, "troupe_messages_stored_total"), 3.0);
    assert!(metric_sample(&text, "troupe_deliveries_total") >= 6.0, "3 messages to 2 connections");
    assert_eq!(metric_sample(&text, "troupe_connections"), 2.0);
    assert_eq!(metric_sample(&text, "troupe_online_users"), 2.0);
    assert!(metric_sample(&text, "troupe_actors{kind=\"group\"}") >= 1.0);
    assert_eq!(metric_sample(&text, "troupe_actors{kind=\"user\"}"), 2.0);
    assert_eq!(metric_sample(&text, "troupe_errors_total{code=\"not_found\"}"), 1.0);
    assert_eq!(metric_sample(&text, "troupe_errors_total{code=\"unknown_op\"}"), 1.0);
    assert_eq!(metric_sample(&text, "troupe_errors_total{code=\"internal\"}"), 0.0);
    assert_eq!(metric_sample(&text, "troupe_fanout_latency_seconds_count"), 3.0);
    assert_eq!(metric_sample(&text, "troupe_fanout_latency_seconds_bucket{le=\"+Inf\"}"), 3.0);
    assert!(metric_sample(&text, "troupe_store_commit_latency_seconds_count") >= 1.0);
    assert!(metric_sample(&text, "troupe_process_resident_memory_bytes") > 1e6);
    assert_eq!(metric_sample(&text, "troupe_sends_pending"), 0.0);
    assert_eq!(metric_sample(&text, "troupe_connections_closed_total{reason=\"slow_consumer\"}"), 0.0);

    // The store's size on disk grows with what is stored: 1,000 texts of 4 KB. Its journal
    // grows in zero-filled 1 MiB steps, so `before` may already count a step that these
    // texts only fill (when they all arrive within the journal's checkpoint interval).
    let before = metric_sample(&text, "troupe_store_disk_bytes");
    assert!(before > 0.0);
    let body = "x".repeat(4000);
    for i in 0..1000 {
        send_text(&alice, group, &format!("big{i}"), &body).await.unwrap();
    }
    let (_, _, later) = http_get(node.http, "/metrics", &[]).await;
    let after = metric_sample(&String::from_utf8(later).unwrap(), "troupe_store_disk_bytes");
    let journal_step = f64::from(1u32 << 20);
    assert!(after >= before + 4e6 - journal_step, "disk use grew from {before} to {after} bytes");
    // Every sample line belongs to a metric with HELP and TYPE.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap();
        let family = name.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count");
        assert!(text.contains(&format!("# TYPE {family} ")) || text.contains(&format!("# TYPE {name} ")), "{line}");
    }
}
