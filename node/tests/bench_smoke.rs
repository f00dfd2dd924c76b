//! Every `bench` scenario, run briefly against a real node: the load generator stays in
//! working order, and its own checks (nothing lost, the cap held) pass at small scale.

mod common;

use bench::scenario::{connections, fanout, floor, joins, media, redpacket, send, sync};
use common::*;
use serde_json::Value;
use std::path::Path;

fn results(dir: &Path, name: &str) -> Value {
    let text = std::fs::read_to_string(dir.join(format!("{name}.json"))).expect("result written");
    let document: Value = serde_json::from_str(&text).expect("JSON");
    assert!(document["machine"]["cpus"].as_u64().unwrap() >= 1);
    assert!(document["command"].is_string());
    assert!(dir.join(format!("{name}-latency.svg")).exists(), "a picture comes with every result");
    document["results"].clone()
}

/// A short `send` run: 3 groups of 3 online members, a window of 4.
fn small_send(node: &TestNode, out: &Path) -> send::SendArgs {
    send::SendArgs {
        url: node.url.clone(),
        console: node.console,
        groups: 3,
        members: 3,
        online_members: true,
        window: 4,
        body_bytes: 100,
        warmup: 0.2,
        duration: 1.0,
        sources: 1,
        out: Some(out.join("send")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_scenario_runs_and_checks_itself() {
    let node = TestNode::start().await;
    let out = tempfile::tempdir().unwrap();
    let url = node.url.clone();

    fanout::run(small_fanout(vec![url.clone()], vec![node.console], out.path())).await.unwrap();
    let fan = results(out.path(), "fanout");
    assert_eq!(fan["lost"], 0);
    assert_eq!(fan["duplicated"], 0);
    assert!(fan["deliveries_in_window"].as_u64().unwrap() > 0);
    assert!(fan["node_cpu_seconds"].as_f64().is_some());

    send::run(small_send(&node, out.path())).await.unwrap();
    let sent = results(out.path(), "send");
    assert!(sent["acked_in_window"].as_u64().unwrap() > 0);
    assert_eq!(sent["groups_with_gapless_acked_seqs"], 3);
    assert_eq!(sent["errors"], 0);

    joins::run(joins::JoinsArgs {
        url: url.clone(),
        console: node.console,
        users: 40,
        cap: 10,
        sources: 1,
        out: Some(out.path().join("joins")),
    })
    .await
    .unwrap();
    let joined = results(out.path(), "joins");
    assert_eq!(joined["cap_held"], true);
    assert_eq!(joined["joined"], 9);

    sync::run(sync::SyncArgs {
        url: url.clone(),
        console: node.console,
        clients: 12,
        groups: 3,
        missed: 150,
        sources: 1,
        out: Some(out.path().join("sync")),
    })
    .await
    .unwrap();
    let synced = results(out.path(), "sync");
    assert_eq!(synced["missing"], 0);
    assert_eq!(synced["duplicates"], 0);
    assert_eq!(synced["fully_synced"], synced["clients"]);

    redpacket::run(redpacket::RedPacketArgs {
        url: url.clone(),
        console: node.console,
        members: 12,
        shares: 5,
        packets: 2,
        repeats: 2,
        sources: 1,
        out: Some(out.path().join("redpacket")),
    })
    .await
    .unwrap();
    let grabbed = results(out.path(), "redpacket");
    assert_eq!(grabbed["invariants_held"], true, "{grabbed}");
    assert_eq!(grabbed["grabbed"], 10);
    assert_eq!(grabbed["grab_requests"], 48);
    assert_eq!(grabbed["already_grabbed"], 10, "each winner's second grab");

    media::run(media::MediaArgs {
        url: url.clone(),
        console: node.console,
        mib: 3,
        downloads: 2,
        out: Some(out.path().join("media")),
    })
    .await
    .unwrap();
    let document: Value = serde_json::from_slice(&std::fs::read(out.path().join("media.json")).unwrap()).unwrap();
    assert_eq!(document["results"]["downloads_intact"], 2);
    assert_eq!(document["results"]["bytes"], 3 * 1024 * 1024);
    assert!(out.path().join("media-rss.svg").exists());

    let tokens = out.path().join("tokens.txt");
    connections::accounts(connections::AccountsArgs {
        url: url.clone(),
        count: 30,
        tokens: tokens.clone(),
        concurrency: 8,
        sources: 1,
    })
    .await
    .unwrap();
    connections::connections(connections::ConnectionsArgs {
        url,
        console: node.console,
        tokens,
        count: None,
        concurrency: 8,
        hold: 0.2,
        sources: 2,
        out: Some(out.path().join("connections")),
    })
    .await
    .unwrap();
    let held = results(out.path(), "connections");
    assert_eq!(held["connections"], 30);
    assert_eq!(held["failed"], 0);
    assert_eq!(held["node_reports_connections"], 30);
}

/// Against a node with its default send limits, the bench says which limit refused it and
/// how to lift it, instead of reporting bare errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_bench_names_the_send_limit_that_refused_it() {
    // Any RATE_LIMITS setting keeps the harness from lifting the send limits.
    let node = TestNode::start_with_env(&[("TROUPE_ACTORS__RATE_LIMITS__CONNECTION_JOINS__BURST", "20.0")]).await;
    let out = tempfile::tempdir().unwrap();
    // A window of 300 at once is past the burst of 200 a connection may send.
    send::run(send::SendArgs { groups: 1, window: 300, ..small_send(&node, out.path()) }).await.unwrap();
    let sent = results(out.path(), "send");
    assert!(sent["rate_limited"].as_u64().unwrap() > 0, "{sent}");
    let summary = std::fs::read_to_string(out.path().join("send.json")).unwrap();
    assert!(summary.contains("TROUPE_ACTORS__RATE_LIMITS__CONNECTION_SENDS__PER_SECOND"), "the hint is in the summary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floor_fans_out_without_a_node_and_checks_itself() {
    let out = tempfile::tempdir().unwrap();
    floor::run(floor::FloorArgs {
        groups: 2,
        members: 10,
        messages_per_second: 100,
        body_bytes: 160,
        writers: Some(2),
        congestion: None,
        warmup: 0,
        duration: 1,
        out: Some(out.path().join("floor")),
    })
    .await
    .unwrap();
    let floor = results(out.path(), "floor");
    assert_eq!((floor["lost"].as_u64(), floor["duplicated"].as_u64()), (Some(0), Some(0)));
    assert_eq!(floor["out_of_order"], 0);
    assert_eq!(floor["writer_threads_failed"], 0);
    // 100 messages a second, each to one group's 10 members, for one second.
    let writes = floor["writes"].as_u64().unwrap();
    assert!((900..=1100).contains(&writes), "{writes} writes");
    assert!(floor["received_in_window"].as_u64().unwrap() >= writes);
    assert!(floor["deliveries_per_writer_cpu_second"].as_f64().unwrap() > 0.0);
}
