//! Admission control: more sends than the node holds are refused with `overloaded` and a
//! retry-after, nothing refused is stored, the retries land exactly once, and the refusals
//! stop by themselves when the load drops.
//!
//! The figures at twice the load one node can carry (memory, acked rate, latency) come from
//! `bench admission` in release builds (BENCHMARKS.md); this test runs the same scenario
//! against tight bounds, where bursts alone must overflow them.

mod common;

use bench::scenario::admission;
use common::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overload_is_refused_with_retry_after_and_recovers_with_nothing_lost_or_doubled() {
    let node = TestNode::start_with_env(&[
        ("TROUPE_ACTORS__MAX_PENDING_SENDS", "24"),
        ("TROUPE_ACTORS__MAX_PENDING_SENDS_PER_GROUP", "6"),
        ("TROUPE_ACTORS__OVERLOAD_RETRY_AFTER", "0.05"),
    ])
    .await;
    let out = tempfile::tempdir().unwrap();
    admission::run(admission::AdmissionArgs {
        url: node.url.clone(),
        console: node.console,
        groups: 6,
        members: 2,
        base_rate: 30.0,
        // Each sender's 10 ms tick then carries ~8 sends at once: past its group's bound.
        rate: 5_000.0,
        phase: 2.0,
        body_bytes: 100,
        sources: 1,
        out: Some(out.path().join("admission")),
    })
    .await
    .unwrap();
    let text = std::fs::read_to_string(out.path().join("admission.json")).expect("result written");
    let result: Value = serde_json::from_str::<Value>(&text).unwrap()["results"].clone();
    let phase = |name: &str| result["phases"].as_array().unwrap().iter().find(|p| p["phase"] == name).unwrap().clone();
    let (normal, overload, recovery) = (phase("normal"), phase("overload"), phase("recovery"));

    assert!(overload["overloaded"].as_u64().unwrap() > 0, "refused under overload: {overload}");
    assert_eq!(overload["overloaded_without_retry_after"], 0, "every refusal says when to retry");
    assert_eq!(normal["overloaded"], 0, "nothing refused at the base rate: {normal}");
    assert!(result["backlog_drained_after_seconds"].is_number(), "the refused backlog drained: {recovery}");
    assert_eq!(recovery["refused_after_backlog_drained"], 0, "the node recovered by itself: {recovery}");
    assert_eq!(result["recovered"], true);
    assert_eq!(result["drained"], true, "every message was acked in the end");
    assert_eq!(result["unacked_after_drain"], 0);
    assert_eq!(result["acked_twice"], 0, "a refused send was never stored: its retry is its first copy");
    assert_eq!(result["groups_with_gapless_acked_seqs"], 6);
    assert_eq!(result["other_errors"], 0);

    // The node's own count and its log agree with what the bench saw.
    let (_, _, body) = http_get(node.http, "/metrics", &[]).await;
    let metrics = String::from_utf8(body).unwrap();
    let refused: u64 =
        result["phases"].as_array().unwrap().iter().map(|p| p["overloaded"].as_u64().unwrap()).sum::<u64>()
            + result["overloaded_while_draining"].as_u64().unwrap();
    assert_eq!(metric_sample(&metrics, "troupe_sends_refused_overloaded_total"), refused as f64);
    assert_eq!(metric_sample(&metrics, "troupe_sends_pending"), 0.0, "every place was given back");
    assert_eq!(metric_sample(&metrics, "troupe_messages_stored_total"), result["messages"].as_u64().unwrap() as f64);
}
