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
