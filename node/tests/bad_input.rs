//! Hostile and broken clients: every bad frame gets a stable error code or the right close
//! code, and the node keeps serving everyone else.

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn malformed_frames_get_stable_codes_and_the_connection_stays() {
    let node = TestNode::start().await;
    let (alice, _) = node.user("alice").await;
    let group = create_group(&alice, "g", true).await;
    let cases = [
        ("{not json", "malformed_frame", None),
        ("[1,2,3]", "malformed_frame", None),
        ("\"just a string\"", "malformed_frame", None),
        (r#"{"id":1,"op":"teleport"}"#, "unknown_op", Some(1)),
        (r#"{"id":2}"#, "invalid_field", Some(2)),
        (r#"{"id":"three","op":"ping"}"#, "invalid_field", None),
        (
            r#"{"id":4,"op":"send","group":"not-a-number","client_msg_id":"a","type":"text","body":"x"}"#,
            "invalid_field",
            Some(4),
        ),
        (r#"{"id":5,"op":"send","group":1}"#, "invalid_field", Some(5)),
        (r#"{"id":6,"op":"history","group":1,"limit":-1}"#, "invalid_field", Some(6)),
        (r#"{"id":7,"op":"join","group":1.5}"#, "invalid_field", Some(7)),
        (r#"{"id":8,"op":"read","group":1,"seq":18446744073709551616}"#, "invalid_field", Some(8)),
    ];
    for (frame, expected, id) in cases {
        alice.send_text(frame).await.unwrap();
        let error = alice.next_event_named("error", WAIT).await.unwrap_or_else(|| panic!("no error for {frame}"));
        assert_eq!(error["code"], expected, "{frame}");
        assert_eq!(error["id"].as_u64(), id, "{frame}");
        assert!(!error["message"].as_str().unwrap().is_empty());
    }
    alice.send_binary(vec![0, 1, 2, 3]).await.unwrap();
    let error = alice.next_event_named("error", WAIT).await.unwrap();
    assert_eq!(error["code"], "unsupported_frame");
    // Still serving this connection.
    send_text(&alice, group, "after", "still here").await.unwrap();
}

#[tokio::test]
async fn an_oversized_frame_closes_that_socket_only() {
    let node = TestNode::start_with_env(&[("TROUPE_GATEWAY__MAX_FRAME_BYTES", "2048")]).await;
    let (alice, _) = node.user("alice").await;
    let (bob, _) = node.user("bob").await;
    let group = create_group(&alice, "g", true).await;
    bob.request("join", json!({ "group": group })).await.unwrap();
    let huge = format!(r#"{{"id":1,"op":"ping","pad":"{}"}}"#, "x".repeat(4096));
    let _ = alice.send_text(&huge).await;
    let closed = alice.closed(Duration::from_secs(5)).await.expect("closed");
    assert_eq!((closed.code, closed.reason.as_str()), (Some(1009), "frame_too_large"));
    let ack = send_text(&bob, group, "b1", "unaffected").await.unwrap();
    assert_eq!(ack["seq"], 1);
}

#[tokio::test]
async fn peers_that_vanish_mid_request_harm_nobody() {
    let node = TestNode::start().await;
    let (alice, _) = node.user("alice").await;
    let group = create_group(&alice, "g", true).await;
    for i in 0..20 {
        let (client, _) = node.user(&format!("ghost{i}_")).await;
        client.request("join", json!({ "group": group })).await.unwrap();
        // Fire a send and drop the connection without a close frame.
        let fields = json!({ "group": group, "client_msg_id": format!("g{i}"), "type": "text", "body": "boo" });
        let _ = client.start_request("send", fields).await;
        drop(client);
    }
    // Raw TCP: a half-written upgrade request, then gone.
    let mut raw = tokio::net::TcpStream::connect(node.http).await.unwrap();
    raw.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n").await.unwrap();
    drop(raw);
    let ack = send_text(&alice, group, "alive", "still serving").await.unwrap();
    assert!(ack["seq"].as_u64().unwrap() >= 1);
    let history = alice.request("history", json!({ "group": group })).await.unwrap();
    let seqs: Vec<u64> = history["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "the log has no gaps");
}

#[tokio::test]
async fn plain_http_is_served_and_non_websocket_requests_to_ws_are_refused() {
    let node = TestNode::start().await;
    let get = |path: &'static str| async move {
        let mut stream = tokio::net::TcpStream::connect(node.http).await.unwrap();
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    };
    let health = get("/health").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains("\"status\":\"ok\""));
    let ws = get("/ws").await;
    assert!(ws.starts_with("HTTP/1.1 426"), "{ws}");
    assert!(get("/nope").await.starts_with("HTTP/1.1 404"));
}

/// Random frames (bytes, broken JSON, valid JSON of wrong shapes) from many connections:
/// each gets an error or a close, and the node never stops serving.
#[tokio::test]
async fn random_garbage_never_takes_the_node_down() {
    let node = TestNode::start().await;
    let (alice, _) = node.user("alice").await;
    let group = create_group(&alice, "g", true).await;
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let ops = ["send", "join", "history", "sync", "read", "members", "auth", "login", "register", "create_group"];
    let values = ["1", "-1", "null", "true", "\"x\"", "[]", "{}", "1e400", "18446744073709551615", "\"\\u0000\""];
    for round in 0..10 {
        let client = node.connect().await;
        if round % 2 == 0 {
            let (c, _) = node.user(&format!("fuzz{round}_")).await;
            drop(client);
            let client = c;
            fire(&client, &mut next, &ops, &values, group).await;
        } else {
            fire(&client, &mut next, &ops, &values, group).await;
        }
    }
    send_text(&alice, group, "ok", "the node is fine").await.unwrap();
}

async fn fire(client: &Client, next: &mut impl FnMut() -> u64, ops: &[&str], values: &[&str], group: u64) {
    for _ in 0..50 {
        let frame = match next() % 4 {
            0 => {
                let len = (next() % 64) as usize;
                (0..len).map(|_| char::from_u32((next() % 0x7f) as u32).unwrap_or('?')).collect()
            }
            1 => {
                let op = ops[(next() % ops.len() as u64) as usize];
                let v = values[(next() % values.len() as u64) as usize];
                format!(
                    r#"{{"id":{},"op":"{op}","group":{v},"seq":{v},"body":{v},"users":{v},"limit":{v}}}"#,
                    next() % 1000
                )
            }
            2 => {
                let v = values[(next() % values.len() as u64) as usize];
                format!(r#"{{"op":"send","group":{group},"client_msg_id":{v},"type":"text","body":{v}}}"#)
            }
            _ => {
                let _ = client.send_binary((0..(next() % 32)).map(|_| next() as u8).collect()).await;
                continue;
            }
        };
        if client.send_text(&frame).await.is_err() {
            return;
        }
    }
    let _ = client.request("ping", json!({})).await;
}
