//! Accounts over the real WebSocket: registration, login, tokens, profiles, and the rule
//! that a connection authenticates before anything else.

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn register_login_and_auth_with_the_token() {
    let node = TestNode::start().await;
    let client = node.connect().await;
    let name = unique_name("alice");
    let registered = client
        .request("register", json!({ "username": name, "password": "password123", "nickname": "Alice" }))
        .await
        .unwrap();
    let user = registered["user"].as_u64().unwrap();

    let session = client.request("login", json!({ "username": name, "password": "password123" })).await.unwrap();
    let token = session["token"].as_str().unwrap().to_owned();
    assert_eq!(token.len(), 64);
    assert_eq!(session["profile"]["user"], user);
    assert_eq!(session["profile"]["nickname"], "Alice");
    assert_eq!(session["groups"], json!([]));

    // A second connection authenticates with the token alone.
    let other = node.connect().await;
    let auth = other.request("auth", json!({ "token": token })).await.unwrap();
    assert_eq!(auth["profile"]["user"], user);
    assert!(auth.get("token").is_none(), "auth does not echo the token");
    assert_eq!(code(other.request("auth", json!({ "token": token })).await), "already_authenticated");
}

#[tokio::test]
async fn bad_credentials_and_taken_names() {
    let node = TestNode::start().await;
    let client = node.connect().await;
    let name = unique_name("bob");
    client.request("register", json!({ "username": name, "password": "password123" })).await.unwrap();
    let again = client.request("register", json!({ "username": name, "password": "different123" })).await;
    assert_eq!(code(again), "username_taken");
    let wrong = client.request("login", json!({ "username": name, "password": "wrong-password" })).await;
    assert_eq!(code(wrong), "invalid_credentials");
    let nobody = client.request("login", json!({ "username": "nobody-at-all", "password": "password123" })).await;
    assert_eq!(code(nobody), "invalid_credentials", "unknown users look like wrong passwords");
    let bad_token = client.request("auth", json!({ "token": "0".repeat(64) })).await;
    assert_eq!(code(bad_token), "invalid_token");
    for (username, password) in [("ab", "password123"), ("UPPER", "password123"), ("fine_name", "short")] {
        let result = client.request("register", json!({ "username": username, "password": password })).await;
        assert_eq!(code(result), "invalid_field", "{username}/{password}");
    }
}

#[tokio::test]
async fn everything_but_auth_needs_authentication() {
    let node = TestNode::start().await;
    let client = node.connect().await;
    for (op, fields) in [
        ("my_groups", json!({})),
        ("create_group", json!({ "name": "x" })),
        ("send", json!({ "group": 1, "client_msg_id": "a", "type": "text", "body": "hi" })),
        ("history", json!({ "group": 1 })),
        ("sync", json!({})),
        ("profile", json!({})),
        ("logout", json!({})),
    ] {
        assert_eq!(code(client.request(op, fields).await), "unauthenticated", "{op}");
    }
    let pong = client.request("ping", json!({})).await.unwrap();
    assert!(pong["ts"].as_u64().unwrap() > 0, "ping works before auth");
}

#[tokio::test]
async fn unauthenticated_connections_are_closed_at_the_deadline() {
    let node = TestNode::start_with_env(&[("TROUPE_GATEWAY__AUTH_TIMEOUT", "0.5")]).await;
    let idle = node.connect().await;
    let (authed, _) = node.user("carol").await;
    let closed = idle.closed(Duration::from_secs(5)).await.expect("closed");
    assert_eq!(closed.code, Some(1008));
    assert_eq!(closed.reason, "auth_timeout");
    tokio::time::sleep(Duration::from_millis(700)).await;
    authed.request("ping", json!({})).await.expect("an authenticated connection stays open");
}

#[tokio::test]
async fn logout_revokes_the_token_and_closes_its_sockets() {
    let node = TestNode::start().await;
    let name = unique_name("dave");
    let (first, session) = Client::login(&node.url, &name, "password123", true).await.unwrap();
    let token = session["token"].as_str().unwrap().to_owned();
    let second = node.connect().await;
    second.request("auth", json!({ "token": token })).await.unwrap();
    // A different session of the same user is unaffected.
    let (third, _) = Client::login(&node.url, &name, "password123", false).await.unwrap();

    first.request("logout", json!({})).await.unwrap();
    for client in [&first, &second] {
        let closed = client.closed(Duration::from_secs(2)).await.expect("closed within 1 s");
        assert_eq!((closed.code, closed.reason.as_str()), (Some(1008), "session_revoked"));
    }
    let fresh = node.connect().await;
    assert_eq!(code(fresh.request("auth", json!({ "token": token })).await), "invalid_token");
    third.request("ping", json!({})).await.expect("other sessions stay");
}

#[tokio::test]
async fn profiles_are_visible_and_editable() {
    let node = TestNode::start().await;
    let (alice, alice_id) = node.user("alice").await;
    let (bob, _) = node.user("bob").await;
    let updated = alice
        .request("update_profile", json!({ "nickname": "Alice A.", "avatar_url": "https://example.com/a.png" }))
        .await
        .unwrap();
    assert_eq!(updated["nickname"], "Alice A.");
    let seen = bob.request("profile", json!({ "user": alice_id })).await.unwrap();
    assert_eq!(seen["nickname"], "Alice A.");
    assert_eq!(seen["avatar_url"], "https://example.com/a.png");
    let bad = alice.request("update_profile", json!({ "avatar_url": "javascript:alert(1)" })).await;
    assert_eq!(code(bad), "invalid_field");
    assert_eq!(code(bob.request("profile", json!({ "user": 12345 })).await), "not_found");
}

/// A session that ends while its sockets are open closes them within a second of its end
/// (not at the next heartbeat), and its token stops working.
#[tokio::test]
async fn sockets_close_when_their_session_expires() {
    let node = TestNode::start_with_env(&[("TROUPE_ACTORS__SESSION_TTL", "2")]).await;
    let name = unique_name("erin");
    let before = std::time::Instant::now();
    let (first, session) = Client::login(&node.url, &name, "password123", true).await.unwrap();
    let after = std::time::Instant::now();
    let token = session["token"].as_str().unwrap().to_owned();
    let second = node.connect().await;
    second.request("auth", json!({ "token": token })).await.unwrap();
    // A session opened a second later ends a second later.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (later, _) = Client::login(&node.url, &name, "password123", false).await.unwrap();

    for client in [&first, &second] {
        let closed = client.closed(Duration::from_secs(5)).await.expect("closed");
        let at = std::time::Instant::now();
        assert_eq!((closed.code, closed.reason.as_str()), (Some(1008), "session_expired"));
        assert!(at >= before + Duration::from_secs(2), "not before the session ended");
        assert!(at <= after + Duration::from_secs(3), "within a second of its end: {:?}", at - after);
    }
    later.request("ping", json!({})).await.expect("the later session is still open");
    let fresh = node.connect().await;
    assert_eq!(code(fresh.request("auth", json!({ "token": token })).await), "invalid_token");
    let closed = later.closed(Duration::from_secs(5)).await.expect("the later one ends too");
    assert_eq!(closed.reason, "session_expired");
}
