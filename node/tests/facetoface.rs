//! Face-to-face groups over the real WebSocket: meeting by code within 50 m, not beyond,
//! across geohash cell borders, expiry, bad input, and the member cap with a crowd.

mod common;

use actors::geo::{self, Point};
use common::*;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;

/// A point `north_m` and `east_m` metres from `from`.
fn offset(from: (f64, f64), north_m: f64, east_m: f64) -> (f64, f64) {
    let r = 6_371_008.8f64;
    let lat = from.0 + (north_m / r).to_degrees();
    let lon = from.1 + (east_m / (r * from.0.to_radians().cos())).to_degrees();
    (lat, lon)
}

const SHANGHAI: (f64, f64) = (31.2304, 121.4737);

async fn start(client: &Client, at: (f64, f64)) -> Value {
    client.request("start_face_to_face", json!({ "lat": at.0, "lon": at.1 })).await.expect("start_face_to_face")
}

async fn join(client: &Client, code: &str, at: (f64, f64)) -> Result<Value, ClientError> {
    client.request("join_face_to_face", json!({ "code": code, "lat": at.0, "lon": at.1 })).await
}

fn users_of(participants: &Value) -> Vec<u64> {
    participants.as_array().expect("participants").iter().map(|p| p["user"].as_u64().expect("user")).collect()
}

#[tokio::test]
async fn thirty_metres_apart_meet_eighty_do_not_and_confirming_makes_a_group() {
    let node = TestNode::start().await;
    let (ann, ann_id) = node.user("ann").await;
    let (bob, bob_id) = node.user("bob").await;
    let (cat, _) = node.user("cat").await;
    let (dan, dan_id) = node.user("dan").await;

    let session = start(&ann, SHANGHAI).await;
    let code = session["code"].as_str().expect("code").to_owned();
    assert_eq!(code.len(), 4, "{session}");
    assert!(code.bytes().all(|b| b.is_ascii_digit()), "{code}");
    assert_eq!(users_of(&session["participants"]), vec![ann_id]);
    assert!(session["group"].is_null());
    let id = session["session"].as_u64().expect("session id");

    // Bob stands 30 m away (18 m north, 24 m east).
    let joined = join(&bob, &code, offset(SHANGHAI, 18.0, 24.0)).await.expect("30 m away joins");
    assert_eq!(joined["session"], id);
    assert_eq!(users_of(&joined["participants"]), vec![ann_id, bob_id]);
    let pushed = ann.next_event_named("face_to_face_participants", WAIT).await.expect("ann hears the list");
    assert_eq!(users_of(&pushed["participants"]), vec![ann_id, bob_id]);
    assert_eq!(pushed["participants"][1]["nickname"], joined["participants"][1]["nickname"]);

    // Cat is 80 m away (48 m north, 64 m east): near enough to see the code, too far to join.
    assert_eq!(code_of(join(&cat, &code, offset(SHANGHAI, 48.0, 64.0)).await), "too_far");
    // The same code 5 km away is nobody's session.
    assert_eq!(code_of(join(&cat, &code, offset(SHANGHAI, 5000.0, 0.0)).await), "not_found");
    // Cat is no participant and may not confirm.
    let refused = cat.request("confirm_face_to_face", json!({ "code": code, "session": id })).await;
    assert_eq!(code_of(refused), "not_found");

    let confirmed = bob.request("confirm_face_to_face", json!({ "code": code, "session": id })).await.unwrap();
    let group = confirmed["group"]["group"].as_u64().expect("a group");
    assert_eq!(confirmed["group"]["owner"], ann_id, "the starter owns the group");
    assert_eq!(confirmed["group"]["member_count"], 2);
    assert_eq!(confirmed["group"]["name"], format!("Face-to-face {code}"));
    let told = ann.next_event_named("face_to_face_group", WAIT).await.expect("ann gets the group");
    assert_eq!(told["group"]["group"], group);
    let again = ann.request("confirm_face_to_face", json!({ "code": code, "session": id })).await.unwrap();
    assert_eq!(again["group"]["group"], group, "a second confirmation names the same group");

    // It is a normal group: messages flow.
    send_text(&bob, group, "hello-1", "hello from bob").await.unwrap();
    let message = ann.next_event_named("message", WAIT).await.expect("ann gets bob's message");
    assert_eq!(message["body"], "hello from bob");

    // A later joiner with the code joins the group itself.
    let late = join(&dan, &code, offset(SHANGHAI, -10.0, 5.0)).await.expect("late joiner");
    assert_eq!(late["group"]["group"], group);
    assert_eq!(late["group"]["member_count"], 3);
    // Confirmation announced the group once to each participant, not member by member;
    // a later joiner is announced like any join.
    let announced = ann.next_event_named("member_joined", WAIT).await.expect("ann hears dan join");
    assert_eq!(announced["user"], dan_id, "no member_joined for the participants at confirmation");
    let members = ann.request("members", json!({ "group": group })).await.unwrap();
    let ids: HashSet<u64> =
        members["members"].as_array().unwrap().iter().map(|m| m["user"].as_u64().unwrap()).collect();
    assert_eq!(ids, HashSet::from([ann_id, bob_id, dan_id]));
}

#[tokio::test]
async fn a_geohash_cell_border_does_not_keep_people_apart() {
    let node = TestNode::start().await;
    // Walk until the starter and a joiner 25 m east stand in different 6-character cells
    // (and different 4-character ones for good measure: 1.2 km cells rarely split them).
    let mut found = None;
    for i in 0..20_000 {
        let start = (52.52 + i as f64 * 0.000_9, 13.40 + i as f64 * 0.000_37);
        let joiner = offset(start, 5.0, 25.0);
        let cell = |p: (f64, f64)| geo::encode(Point::new(p.0, p.1).unwrap(), 6);
        if cell(start) != cell(joiner) {
            found = Some((start, joiner));
            break;
        }
    }
    let (start_at, join_at) = found.expect("a border within the walk");
    let (ann, _) = node.user("ann").await;
    let (bob, bob_id) = node.user("bob").await;
    let session = start(&ann, start_at).await;
    let code = session["code"].as_str().unwrap();
    let joined = join(&bob, code, join_at).await.expect("joins across the border");
    assert!(users_of(&joined["participants"]).contains(&bob_id));
}

#[tokio::test]
async fn a_session_expires_after_its_ttl() {
    let node = TestNode::start_with_env(&[("TROUPE_ACTORS__FACE_TO_FACE_TTL", "1")]).await;
    let (ann, _) = node.user("ann").await;
    let (bob, _) = node.user("bob").await;
    let session = start(&ann, SHANGHAI).await;
    let code = session["code"].as_str().unwrap().to_owned();
    let id = session["session"].as_u64().unwrap();
    let expires_at = session["expires_at"].as_u64().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    assert!(expires_at <= now + 1_000 && expires_at + 2_000 > now, "expires a second after the start");

    tokio::time::sleep(std::time::Duration::from_millis(1_300)).await;
    assert_eq!(code_of(join(&bob, &code, SHANGHAI).await), "expired");
    let late = ann.request("confirm_face_to_face", json!({ "code": code, "session": id })).await;
    assert_eq!(code_of(late), "expired");
    // The place is free again: a new session starts here (its code is random, and its
    // uniqueness within 1 km no longer counts the old one: see the code table's tests).
    let again = start(&ann, SHANGHAI).await;
    assert_ne!(again["session"], id);
    join(&bob, again["code"].as_str().unwrap(), SHANGHAI).await.expect("the new session takes joiners");
}

#[tokio::test]
async fn bad_face_to_face_input_gets_clear_errors() {
    let node = TestNode::start().await;
    let (ann, _) = node.user("ann").await;
    for code in ["123", "12345", "12a4", "", "١٢٣٤"] {
        assert_eq!(code_of(join(&ann, code, SHANGHAI).await), "invalid_field", "code {code:?}");
    }
    let numeric = ann.request("join_face_to_face", json!({ "code": 1234, "lat": 1.0, "lon": 1.0 })).await;
    assert_eq!(code_of(numeric), "invalid_field", "a code is a string, so 0427 keeps its zero");
    for (lat, lon) in [(91.0, 0.0), (-90.5, 0.0), (0.0, 180.5), (0.0, -181.0)] {
        let started = ann.request("start_face_to_face", json!({ "lat": lat, "lon": lon })).await;
        assert_eq!(code_of(started), "invalid_field", "({lat}, {lon})");
        assert_eq!(code_of(join(&ann, "0427", (lat, lon)).await), "invalid_field", "({lat}, {lon})");
    }
    let missing = ann.request("start_face_to_face", json!({ "lat": 1.0 })).await;
    assert_eq!(code_of(missing), "invalid_field");
    let unknown = ann.request("confirm_face_to_face", json!({ "code": "0000", "session": 77 })).await;
    assert_eq!(code_of(unknown), "not_found");
    let stranger = node.connect().await;
    let unauthenticated = stranger.request("start_face_to_face", json!({ "lat": 1.0, "lon": 1.0 })).await;
    assert_eq!(code_of(unauthenticated), "unauthenticated");
}

#[tokio::test]
async fn six_hundred_people_make_a_group_of_exactly_500() {
    raise_open_file_limit();
    let node = Arc::new(TestNode::start().await);
    let (ann, ann_id) = node.user("starter").await;
    let session = start(&ann, SHANGHAI).await;
    let code = session["code"].as_str().unwrap().to_owned();
    let id = session["session"].as_u64().unwrap();

    let mut logins = tokio::task::JoinSet::new();
    for i in 0..599 {
        let node = node.clone();
        logins.spawn(async move { node.user(&format!("crowd{i}_")).await });
    }
    let mut crowd = Vec::new();
    while let Some(login) = logins.join_next().await {
        crowd.push(login.unwrap());
    }
    let late = crowd.split_off(399);

    // 399 join the session at once, each within 40 m.
    let mut joins = tokio::task::JoinSet::new();
    for (i, (client, user)) in crowd.into_iter().enumerate() {
        let code = code.clone();
        joins.spawn(async move {
            let at = offset(SHANGHAI, (i % 40) as f64, -((i % 29) as f64));
            let result = join(&client, &code, at).await;
            (client, user, result)
        });
    }
    let mut in_session = vec![ann_id];
    let mut keep = Vec::new();
    while let Some(done) = joins.join_next().await {
        let (client, user, result) = done.unwrap();
        result.expect("room for 400 in the session");
        in_session.push(user);
        keep.push(client);
    }

    // Then one confirms while 200 more enter the code: whether each lands before the
    // confirmation (in the session) or after (in the group), the cap is 500.
    let barrier = Arc::new(tokio::sync::Barrier::new(late.len() + 1));
    let mut joins = tokio::task::JoinSet::new();
    for (client, user) in late {
        let (code, barrier) = (code.clone(), barrier.clone());
        joins.spawn(async move {
            barrier.wait().await;
            let result = join(&client, &code, offset(SHANGHAI, 10.0, 10.0)).await;
            (client, user, result)
        });
    }
    barrier.wait().await;
    let confirmed = ann.request("confirm_face_to_face", json!({ "code": code, "session": id })).await.unwrap();
    let group = confirmed["group"]["group"].as_u64().expect("group");
    let (mut admitted, mut full) = (HashSet::new(), 0);
    while let Some(done) = joins.join_next().await {
        let (client, user, result) = done.unwrap();
        match result {
            Ok(_) => {
                admitted.insert(user);
            }
            Err(e) => {
                assert_eq!(e.code(), Some("group_full"), "{e}");
                full += 1;
            }
        }
        keep.push(client);
    }
    assert_eq!(full, 100, "exactly the people beyond 500 are refused");

    let info = ann.request("group_info", json!({ "group": group })).await.unwrap();
    assert_eq!(info["member_count"], 500);
    let mut members = HashSet::new();
    let mut after: Option<u64> = None;
    loop {
        let page = ann.request("members", json!({ "group": group, "after": after, "limit": 500 })).await.unwrap();
        for m in page["members"].as_array().unwrap() {
            assert!(members.insert(m["user"].as_u64().unwrap()), "a member listed twice");
        }
        match page["next"].as_u64() {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(members.len(), 500);
    for user in in_session.iter().chain(admitted.iter()) {
        assert!(members.contains(user), "user {user} was let in but is not a member");
    }
}

fn code_of(result: Result<Value, ClientError>) -> String {
    code(result)
}
