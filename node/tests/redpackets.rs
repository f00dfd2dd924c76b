//! Red packets and wallets over the real WebSocket: sending, grabbing once, the storm,
//! expiry and refund, bad input, and kill -9 in the middle of a grab storm.

mod common;

use common::*;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// Credits a user's wallet through the operator console.
async fn credit(node: &TestNode, user: u64, cents: i64) {
    let answer = node.console(&format!("credit {user} {cents} test-{}", unique_name("c"))).await;
    assert_eq!(answer["credited"], cents, "{answer}");
}

/// A user's balance and ledger sum, from the console.
async fn wallet(node: &TestNode, user: u64) -> (i64, i64) {
    let answer = node.console(&format!("wallet {user}")).await;
    (answer["balance"].as_i64().expect("balance"), answer["ledger_sum"].as_i64().expect("sum"))
}

/// Sends a red packet; returns the ack and the packet id from the message event.
async fn send_packet(
    client: &Client,
    group: u64,
    id: &str,
    total: i64,
    count: u32,
    kind: &str,
) -> Result<Value, ClientError> {
    let body = json!({ "total": total, "count": count, "kind": kind, "greeting": "恭喜发财" });
    client.request("send", json!({ "group": group, "client_msg_id": id, "type": "red_packet", "body": body })).await
}

/// The packet id in the first `red_packet` message the client receives.
async fn packet_of(client: &Client) -> u64 {
    loop {
        let message = client.next_event_named("message", WAIT).await.expect("the red packet message");
        if message["type"] == "red_packet" {
            return message["body"]["packet"].as_u64().expect("packet id");
        }
    }
}

/// A node whose red packets expire after a second, swept every 0.1 s.
async fn short_lived_packets() -> TestNode {
    TestNode::start_with_env(&[
        ("TROUPE_ACTORS__RED_PACKET_TTL", "1"),
        ("TROUPE_ACTORS__RED_PACKET_SWEEP_INTERVAL", "0.1"),
        ("TROUPE_ACTORS__RED_PACKET_CHECK_AFTER", "0.2"),
    ])
    .await
}

async fn grab(client: &Client, group: u64, packet: u64) -> Result<Value, ClientError> {
    client.request("grab_red_packet", json!({ "group": group, "packet": packet })).await
}

/// A group of `n` members besides its owner, all logged in.
async fn group_of(node: &Arc<TestNode>, n: usize) -> (Client, u64, u64, Vec<(Client, u64)>) {
    let (owner, owner_id) = node.user("sender").await;
    let group = create_group(&owner, "red", true).await;
    let mut logins = tokio::task::JoinSet::new();
    for i in 0..n {
        let node = node.clone();
        logins.spawn(async move {
            let (client, id) = node.user(&format!("m{i}_")).await;
            client.request("join", json!({ "group": group })).await.expect("join");
            (client, id)
        });
    }
    let mut members = Vec::new();
    while let Some(member) = logins.join_next().await {
        members.push(member.unwrap());
    }
    (owner, owner_id, group, members)
}

#[tokio::test]
async fn a_packet_is_paid_once_grabbed_once_each_and_shown_when_empty() {
    let node = Arc::new(TestNode::start().await);
    let (sender, sender_id, group, members) = group_of(&node, 4).await;
    credit(&node, sender_id, 1_000).await;

    let ack = send_packet(&sender, group, "rp-1", 600, 3, "lucky").await.expect("send");
    assert_eq!(ack["duplicate"], false);
    let resent = send_packet(&sender, group, "rp-1", 600, 3, "lucky").await.expect("resend");
    assert_eq!((resent["seq"].clone(), resent["duplicate"].clone()), (ack["seq"].clone(), json!(true)));
    let packet = packet_of(&members[0].0).await;
    assert_eq!(wallet(&node, sender_id).await, (400, 400), "600 left once, resend or not");

    let mine = sender.request("wallet", json!({})).await.unwrap();
    assert_eq!(mine["balance"], 400);
    let kinds: Vec<&str> = mine["entries"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["credit", "red_packet_send"]);

    let before = sender.request("red_packet", json!({ "group": group, "packet": packet })).await.unwrap();
    assert_eq!((before["status"].as_str(), before["count"].as_u64()), (Some("open"), Some(3)));
    assert!(before["grabs"].is_null(), "who got what is shown once it is over");

    let mut got = HashMap::new();
    for (client, id) in members.iter().take(3) {
        let result = grab(client, group, packet).await.unwrap();
        assert_eq!(result["status"], "grabbed", "{result}");
        let amount = result["amount"].as_i64().unwrap();
        assert!(amount >= 1);
        got.insert(*id, amount);
        let again = grab(client, group, packet).await.unwrap();
        assert_eq!((again["status"].as_str(), again["amount"].as_i64()), (Some("already_grabbed"), Some(amount)));
    }
    assert_eq!(got.values().sum::<i64>(), 600, "the shares sum to the total");
    let late = grab(&members[3].0, group, packet).await.unwrap();
    assert_eq!((late["status"].as_str(), late["amount"].clone()), (Some("empty"), Value::Null));
    for (id, amount) in &got {
        assert_eq!(wallet(&node, *id).await, (*amount, *amount));
    }

    let after = members[3].0.request("red_packet", json!({ "group": group, "packet": packet })).await.unwrap();
    assert_eq!(after["status"], "empty");
    let grabs = after["grabs"].as_array().unwrap();
    assert_eq!(grabs.len(), 3);
    let luckiest: Vec<&Value> = grabs.iter().filter(|g| g["luckiest"] == true).collect();
    assert_eq!(luckiest.len(), 1);
    let best = *got.values().max().unwrap();
    assert_eq!(luckiest[0]["amount"], best);

    // Outsiders learn nothing, as everywhere.
    let (stranger, _) = node.user("stranger").await;
    assert_eq!(code(grab(&stranger, group, packet).await), "not_found");
    assert_eq!(code(stranger.request("red_packet", json!({ "group": group, "packet": packet })).await), "not_found");
    assert_eq!(code(grab(&members[0].0, group, 12345).await), "not_found", "unknown packet");
}

#[tokio::test]
async fn an_empty_wallet_sends_nothing() {
    let node = Arc::new(TestNode::start().await);
    let (sender, sender_id, group, members) = group_of(&node, 2).await;
    credit(&node, sender_id, 99).await;
    assert_eq!(code(send_packet(&sender, group, "rp-poor", 100, 2, "equal").await), "insufficient_funds");
    assert_eq!(wallet(&node, sender_id).await, (99, 99));
    // The same client_msg_id stays refused (that packet is cancelled); a new one works.
    credit(&node, sender_id, 1).await;
    assert_eq!(code(send_packet(&sender, group, "rp-poor", 100, 2, "equal").await), "insufficient_funds");
    send_packet(&sender, group, "rp-rich", 100, 2, "equal").await.expect("paid for");
    let history = members[0].0.request("history", json!({ "group": group })).await.unwrap();
    let packets: Vec<&Value> =
        history["messages"].as_array().unwrap().iter().filter(|m| m["type"] == "red_packet").collect();
    assert_eq!(packets.len(), 1, "the refused packet never appeared");
    let packet = packets[0]["body"]["packet"].as_u64().unwrap();
    for (client, _) in &members {
        assert_eq!(grab(client, group, packet).await.unwrap()["amount"], 50, "equal shares");
    }
}

#[tokio::test]
async fn bad_red_packets_get_clear_errors() {
    let node = Arc::new(TestNode::start().await);
    let (sender, sender_id, group, _members) = group_of(&node, 2).await;
    credit(&node, sender_id, 10_000).await;
    let cases = [
        json!({ "total": 0, "count": 1, "kind": "lucky" }),
        json!({ "total": -5, "count": 1, "kind": "lucky" }),
        json!({ "total": 100, "count": 0, "kind": "lucky" }),
        json!({ "total": 3, "count": 4, "kind": "lucky" }),
        json!({ "total": 100, "count": 4, "kind": "lucky" }),
        json!({ "total": 100, "count": 2, "kind": "greedy" }),
        json!({ "total": "100", "count": 2, "kind": "lucky" }),
        json!({ "total": 100, "count": 2, "kind": "lucky", "greeting": "x".repeat(65) }),
        json!({ "total": 100, "count": 2, "kind": "lucky", "extra": 1 }),
        json!("100 cents please"),
        json!({ "total": 100_000_000, "count": 2, "kind": "lucky" }),
    ];
    for (i, body) in cases.into_iter().enumerate() {
        let sent = sender
            .request(
                "send",
                json!({ "group": group, "client_msg_id": format!("bad{i}"), "type": "red_packet", "body": body }),
            )
            .await;
        assert_eq!(code(sent), "invalid_field", "case {i}: {body}");
    }
    assert_eq!(wallet(&node, sender_id).await, (10_000, 10_000), "nothing left the wallet");
    let answer = node.console("credit 424242 100").await;
    assert_eq!(answer["code"], "not_found", "{answer}");
    let answer = node.console(&format!("credit {sender_id} -5")).await;
    assert_eq!(answer["code"], "invalid_field", "{answer}");
}

#[tokio::test]
async fn an_expired_packet_refunds_what_is_left_through_the_ledger() {
    let node = Arc::new(short_lived_packets().await);
    let (sender, sender_id, group, members) = group_of(&node, 3).await;
    credit(&node, sender_id, 500).await;
    send_packet(&sender, group, "rp-exp", 500, 4, "lucky").await.expect("send");
    let packet = packet_of(&members[0].0).await;
    let a = grab(&members[0].0, group, packet).await.unwrap()["amount"].as_i64().unwrap();
    let b = grab(&members[1].0, group, packet).await.unwrap()["amount"].as_i64().unwrap();

    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let late = grab(&members[2].0, group, packet).await.unwrap();
    assert_eq!(late["status"], "expired");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (balance, sum) = wallet(&node, sender_id).await;
        assert_eq!(balance, sum);
        if balance == 500 - a - b {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "refund never came: balance {balance}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let info = members[2].0.request("red_packet", json!({ "group": group, "packet": packet })).await.unwrap();
    assert_eq!(info["status"], "expired");
    assert_eq!(info["grabs"].as_array().unwrap().len(), 2);
    let mine = sender.request("wallet", json!({})).await.unwrap();
    let kinds: Vec<&str> = mine["entries"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"red_packet_refund"), "{kinds:?}");
    // Sender (debit and refund) and grabbers: the packet's entries sum to zero.
    let total = (wallet(&node, sender_id).await.0 - 500)
        + wallet(&node, members[0].1).await.0
        + wallet(&node, members[1].1).await.0;
    assert_eq!(total, 0, "money neither made nor lost");
}

#[tokio::test]
async fn a_thousand_grabs_on_a_hundred_shares() {
    raise_open_file_limit();
    let node = Arc::new(TestNode::start().await);
    let (sender, sender_id, group, members) = group_of(&node, 499).await;
    credit(&node, sender_id, 100_000).await;
    send_packet(&sender, group, "rp-storm", 100_000, 100, "lucky").await.expect("send");
    let packet = packet_of(&members[0].0).await;

    // All 500 members grab, each twice at once: 1,000 requests, half of them repeats.
    let mut everyone: Vec<Arc<(Client, u64)>> = members.into_iter().map(Arc::new).collect();
    everyone.push(Arc::new((sender, sender_id)));
    let barrier = Arc::new(tokio::sync::Barrier::new(2 * everyone.len() + 1));
    let mut grabs = tokio::task::JoinSet::new();
    for member in &everyone {
        for _ in 0..2 {
            let (member, barrier) = (member.clone(), barrier.clone());
            grabs.spawn(async move {
                barrier.wait().await;
                (member.1, grab(&member.0, group, packet).await)
            });
        }
    }
    barrier.wait().await;
    let mut won: HashMap<u64, i64> = HashMap::new();
    let (mut requests, mut already, mut empty) = (0, 0, 0);
    while let Some(done) = grabs.join_next().await {
        let (user, result) = done.unwrap();
        let result = result.expect("every grab is answered");
        requests += 1;
        match result["status"].as_str().unwrap() {
            "grabbed" => assert!(won.insert(user, result["amount"].as_i64().unwrap()).is_none(), "{user} won twice"),
            "already_grabbed" => already += 1,
            "empty" => empty += 1,
            other => panic!("unexpected {other}"),
        }
    }
    let members = everyone;
    assert_eq!(requests, 1000);
    assert_eq!(already, 100, "each winner's second request says so");
    assert_eq!(won.len(), 100, "exactly the 100 shares were won ({already} already, {empty} empty)");
    assert_eq!(won.values().sum::<i64>(), 100_000);
    let info = members[0].0.request("red_packet", json!({ "group": group, "packet": packet })).await.unwrap();
    let listed: HashSet<u64> = info["grabs"].as_array().unwrap().iter().map(|g| g["user"].as_u64().unwrap()).collect();
    assert_eq!(listed, won.keys().copied().collect::<HashSet<_>>());
    for (user, amount) in won.iter().take(20) {
        assert_eq!(wallet(&node, *user).await, (*amount, *amount));
    }
}

#[tokio::test]
async fn kill_9_in_a_grab_storm_loses_no_acked_grab() {
    raise_open_file_limit();
    let env = [
        ("TROUPE_ACTORS__RED_PACKET_TTL", "60"),
        ("TROUPE_ACTORS__RED_PACKET_SWEEP_INTERVAL", "0.2"),
        ("TROUPE_ACTORS__RED_PACKET_CHECK_AFTER", "0.5"),
    ];
    let mut node = TestNode::start_with_env(&env).await;
    let (sender, sender_id, _) = node.user_with_token("sender").await;
    let group = create_group(&sender, "storm", true).await;
    let mut tokens = Vec::new();
    for i in 0..150 {
        let (client, id, token) = node.user_with_token(&format!("k{i}_")).await;
        client.request("join", json!({ "group": group })).await.expect("join");
        tokens.push((id, token));
    }
    let answer = node.console(&format!("credit {sender_id} 50000 storm")).await;
    assert_eq!(answer["balance"], 50_000);
    send_packet(&sender, group, "rp-kill", 50_000, 120, "lucky").await.expect("send");
    let history = sender.request("history", json!({ "group": group })).await.unwrap();
    let packet = history["messages"][0]["body"]["packet"].as_u64().expect("packet");

    // Everyone grabs; the node dies while answers are coming back.
    let acked: Arc<std::sync::Mutex<HashMap<u64, i64>>> = Arc::default();
    let mut storm = tokio::task::JoinSet::new();
    for (id, token) in tokens.clone() {
        let (url, acked) = (node.url.clone(), acked.clone());
        storm.spawn(async move {
            let Ok(client) = Client::connect(&url).await else { return };
            if client.request("auth", json!({ "token": token })).await.is_err() {
                return;
            }
            if let Ok(result) = grab(&client, group, packet).await
                && let Some(amount) = result["amount"].as_i64()
            {
                acked.lock().unwrap().insert(id, amount);
            }
        });
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while acked.lock().unwrap().len() < 20 {
        assert!(tokio::time::Instant::now() < deadline, "no grabs acked");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    node.kill9().await;
    while storm.join_next().await.is_some() {}
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() < 120, "the kill landed mid-storm ({} acked)", acked.len());
    node.restart().await;

    // Every acked grab is in its wallet before anyone retries (a retry would credit it).
    for (id, amount) in &acked {
        assert_eq!(wallet(&node, *id).await, (*amount, *amount), "user {id}'s acked grab");
    }
    let again = node.console(&format!("credit {sender_id} 50000 storm")).await;
    assert_eq!((again["credited"].as_i64(), again["balance"].as_i64()), (Some(0), Some(0)), "a credit key works once");

    // Everyone retries: an acked grab answers the same amount.
    let mut amounts = HashMap::new();
    for (id, token) in &tokens {
        let (client, _) = node.auth(token).await;
        let result = grab(&client, group, packet).await.expect("grab after restart");
        if let Some(amount) = result["amount"].as_i64() {
            amounts.insert(*id, amount);
        }
        if let Some(before) = acked.get(id) {
            assert_eq!(result["amount"].as_i64(), Some(*before), "user {id}'s acked grab changed");
            assert_eq!(result["status"], "already_grabbed");
        }
    }
    assert_eq!(amounts.len(), 120, "every share went to someone, once");
    assert_eq!(amounts.values().sum::<i64>(), 50_000);
    for (id, amount) in &amounts {
        assert_eq!(wallet(&node, *id).await, (*amount, *amount), "user {id}'s wallet");
    }
    // The ledger sums to zero over sender, grabbers and (here, nothing to) refund.
    let (sender_balance, sender_sum) = wallet(&node, sender_id).await;
    assert_eq!((sender_balance, sender_sum), (0, 0));
}

#[tokio::test]
async fn a_dissolved_groups_packets_still_go_back_to_their_senders() {
    let node = Arc::new(short_lived_packets().await);
    let (owner, owner_id, group, members) = group_of(&node, 2).await;
    credit(&node, owner_id, 300).await;
    send_packet(&owner, group, "rp-gone", 300, 3, "equal").await.expect("send");
    let packet = packet_of(&members[0].0).await;
    assert_eq!(grab(&members[0].0, group, packet).await.unwrap()["amount"], 100);
    owner.request("dissolve_group", json!({ "group": group })).await.expect("dissolve");
    assert_eq!(code(grab(&members[1].0, group, packet).await), "not_found", "the group is gone");
    let deadline = tokio::time::Instant::now() + WAIT;
    while wallet(&node, owner_id).await != (200, 200) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rest never came back: {:?}",
            wallet(&node, owner_id).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(wallet(&node, members[0].1).await, (100, 100));
}
