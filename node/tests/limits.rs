//! Limits that keep one client or one web page from taking more than its share: which pages
//! may open WebSockets (`Origin`), and how many connections one user may hold.

mod common;

use common::*;
use serde_json::json;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A WebSocket handshake by hand, with an optional `Origin`; the answer's status code.
async fn handshake_status(http: SocketAddr, origin: Option<&str>) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(http).await.expect("connect");
    let origin = origin.map(|o| format!("Origin: {o}\r\n")).unwrap_or_default();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {http}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{origin}\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = vec![0u8; 256];
    let n = tokio::time::timeout(WAIT, stream.read(&mut answer)).await.expect("an answer").expect("read");
    let text = String::from_utf8_lossy(&answer[..n]);
    text.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or_else(|| panic!("no status in {text:?}"))
}

#[tokio::test]
async fn only_the_nodes_own_pages_and_allowed_origins_may_open_websockets() {
    let node = TestNode::start_with_env(&[("TROUPE_GATEWAY__ALLOWED_ORIGINS", "https://chat.example.com")]).await;
    let own = format!("http://{}", node.http);
    assert_eq!(handshake_status(node.http, None).await, 101, "no Origin: not a browser");
    assert_eq!(handshake_status(node.http, Some(&own)).await, 101, "the page the node serves");
    assert_eq!(handshake_status(node.http, Some("https://chat.example.com")).await, 101, "an allowed origin");
    assert_eq!(handshake_status(node.http, Some("https://evil.example")).await, 403, "another site's page");
    assert_eq!(handshake_status(node.http, Some("null")).await, 403, "a sandboxed page");

    let open = TestNode::start_with_env(&[("TROUPE_GATEWAY__ALLOWED_ORIGINS", "*")]).await;
    assert_eq!(handshake_status(open.http, Some("https://evil.example")).await, 101, "`*` lets any page in");
}

#[tokio::test]
async fn a_user_holds_at_most_the_nodes_cap_of_connections() {
    let node = TestNode::start_with_env(&[("TROUPE_ACTORS__MAX_CONNECTIONS_PER_USER", "3")]).await;
    let (first, _, token) = node.user_with_token("many").await;
    let (second, _) = node.auth(&token).await;
    let (_third, _) = node.auth(&token).await;

    let fourth = node.connect().await;
    let refused = fourth.request("auth", json!({ "token": token })).await;
    assert_eq!(code(refused), "too_many_connections");
    // The refused connection stays usable, unauthenticated, and the session is intact.
    assert_eq!(code(fourth.request("my_groups", json!({})).await), "unauthenticated");
    first.request("my_groups", json!({})).await.expect("the others are untouched");

    // Once one closes, there is room again.
    second.close().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match fourth.request("auth", json!({ "token": token })).await {
            Ok(_) => break,
            Err(error) => {
                assert_eq!(error.code(), Some("too_many_connections"), "{error:?}");
                assert!(tokio::time::Instant::now() < deadline, "the closed connection never freed its place");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
    // Another user is not affected by this one's connections.
    let (_other, _) = node.user("other").await;
}

/// The error's `retry_after_ms`.
fn retry_after(error: &bench::client::ClientError) -> u64 {
    match error {
        bench::client::ClientError::Server { retry_after_ms: Some(ms), .. } => *ms,
        other => panic!("no retry_after_ms in {other:?}"),
    }
}

#[tokio::test]
async fn sends_over_the_rate_are_refused_with_a_time_to_wait_and_pass_after_it() {
    let node = TestNode::start_with_env(&[
        ("TROUPE_ACTORS__RATE_LIMITS__CONNECTION_SENDS__PER_SECOND", "5.0"),
        ("TROUPE_ACTORS__RATE_LIMITS__CONNECTION_SENDS__BURST", "5.0"),
        ("TROUPE_ACTORS__RATE_LIMITS__USER_SENDS__PER_SECOND", "5.0"),
        ("TROUPE_ACTORS__RATE_LIMITS__USER_SENDS__BURST", "8.0"),
    ])
    .await;
    let (alice, _, token) = node.user_with_token("fast").await;
    let group = create_group(&alice, "limits", true).await;
    for i in 0..5 {
        send_text(&alice, group, &format!("m{i}"), "hi").await.expect("within the burst");
    }
    let refused = send_text(&alice, group, "m5", "hi").await.expect_err("over the connection's rate");
    assert_eq!(refused.code(), Some("rate_limited"));
    let wait = retry_after(&refused);
    assert!((1..=250).contains(&wait), "one token at 5/s is at most 200 ms away: {wait}");
    tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
    send_text(&alice, group, "m5", "hi").await.expect("after the wait, the same send passes");

    // The user's limit spans connections: another connection of the same user has its own
    // connection bucket but shares the user's 8.
    let (second, _) = node.auth(&token).await;
    let mut passed = 0;
    for i in 0..5 {
        match send_text(&second, group, &format!("s{i}"), "hi").await {
            Ok(_) => passed += 1,
            Err(error) => assert_eq!(error.code(), Some("rate_limited")),
        }
    }
    assert!(passed < 5, "the user's bucket held back the second connection ({passed} passed)");
    // Another user is not slowed by this one.
    let (bob, _) = node.user("bob").await;
    bob.request("join", json!({ "group": group })).await.unwrap();
    send_text(&bob, group, "b0", "hi").await.expect("others are unaffected");

    // Nothing refused was stored: exactly the sends that passed are in the log.
    let history = alice.request("history", json!({ "group": group, "limit": 100 })).await.unwrap();
    let ids: Vec<&str> =
        history["messages"].as_array().unwrap().iter().map(|m| m["client_msg_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 6 + passed + 1, "{ids:?}");
}

#[tokio::test]
async fn password_guessing_on_one_username_is_slowed_whatever_the_connection() {
    let node = TestNode::start_with_env(&[
        ("TROUPE_ACTORS__RATE_LIMITS__USERNAME_LOGINS__PER_SECOND", "0.1"),
        ("TROUPE_ACTORS__RATE_LIMITS__USERNAME_LOGINS__BURST", "3.0"),
    ])
    .await;
    let name = unique_name("target");
    Client::login(&node.url, &name, "password123", true).await.unwrap();
    // Guesses from fresh connections each time (the per-connection bucket does not help).
    let mut codes = Vec::new();
    for _ in 0..4 {
        let guesser = node.connect().await;
        let answer = guesser.request("login", json!({ "username": name, "password": "guess-guess" })).await;
        codes.push(code(answer));
    }
    assert_eq!(codes, ["invalid_credentials", "invalid_credentials", "rate_limited", "rate_limited"]);
    // Even the right password waits now: the limit does not tell guesses from the owner.
    let owner = node.connect().await;
    assert_eq!(
        code(owner.request("login", json!({ "username": name, "password": "password123" })).await),
        "rate_limited"
    );
    // Other usernames are not affected.
    node.user("bystander").await;
}

#[tokio::test]
async fn joins_over_the_rate_are_refused() {
    let node = TestNode::start_with_env(&[
        ("TROUPE_ACTORS__RATE_LIMITS__CONNECTION_JOINS__PER_SECOND", "1.0"),
        ("TROUPE_ACTORS__RATE_LIMITS__CONNECTION_JOINS__BURST", "2.0"),
    ])
    .await;
    let (owner, _) = node.user("owner").await;
    let mut groups = Vec::new();
    for i in 0..3 {
        groups.push(create_group(&owner, &format!("g{i}"), true).await);
    }
    let (joiner, _) = node.user("joiner").await;
    let answers: Vec<String> = {
        let mut answers = Vec::new();
        for group in &groups {
            answers.push(match joiner.request("join", json!({ "group": group })).await {
                Ok(_) => "joined".to_owned(),
                Err(error) => error.code().unwrap_or("?").to_owned(),
            });
        }
        answers
    };
    assert_eq!(answers, ["joined", "joined", "rate_limited"]);
    let mine = joiner.request("my_groups", json!({})).await.unwrap();
    assert_eq!(mine["groups"].as_array().map(Vec::len), Some(2), "the refused join did not happen");
}
