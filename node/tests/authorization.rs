//! Outsiders learn nothing: a user who is not in a group gets exactly the answer an unknown
//! group id gets, for every group operation, and receives nothing from the group.

mod common;

use common::*;
use serde_json::{Value, json};

/// Every request that names a group, with the fields it needs.
fn group_requests(group: u64, someone: u64) -> Vec<(&'static str, Value)> {
    vec![
        ("group_info", json!({ "group": group })),
        ("members", json!({ "group": group })),
        ("send", json!({ "group": group, "client_msg_id": "x", "type": "text", "body": "hi" })),
        ("history", json!({ "group": group })),
        ("history", json!({ "group": group, "after": 0 })),
        ("read", json!({ "group": group, "seq": 1 })),
        ("leave", json!({ "group": group })),
        ("add_members", json!({ "group": group, "users": [someone] })),
        ("remove_member", json!({ "group": group, "user": someone })),
        ("set_role", json!({ "group": group, "user": someone, "role": "admin" })),
        ("transfer_ownership", json!({ "group": group, "user": someone })),
        ("update_group", json!({ "group": group, "name": "mine now" })),
        ("dissolve_group", json!({ "group": group })),
        ("join", json!({ "group": group })),
    ]
}

#[tokio::test]
async fn non_members_get_the_same_not_found_as_unknown_groups() {
    let node = TestNode::start().await;
    let (owner, owner_id) = node.user("owner").await;
    let (outsider, _) = node.user("outsider").await;
    let group = create_group(&owner, "private", false).await;
    send_text(&owner, group, "s1", "secret").await.unwrap();
    let unknown = group ^ 0x5555;

    for ((op, real), (_, missing)) in group_requests(group, owner_id).into_iter().zip(group_requests(unknown, owner_id))
    {
        let on_real = outsider.request(op, real).await.unwrap_err();
        let on_missing = outsider.request(op, missing).await.unwrap_err();
        assert_eq!(on_real.code(), Some("not_found"), "{op} on a group the caller is not in");
        assert_eq!(on_real, on_missing, "{op}: a real group must look exactly like a missing one");
    }

    let sync = outsider.request("sync", json!({ "groups": [{ "group": group, "after": 0 }] })).await.unwrap();
    assert_eq!(sync["groups"], json!([]));
    assert_eq!(sync["gone"], json!([group]));
    assert_eq!(outsider.request("my_groups", json!({})).await.unwrap()["groups"], json!([]));
    assert!(outsider.next_event_named("message", QUIET).await.is_none(), "outsiders receive nothing");

    // The group is untouched by all of the above.
    let info = owner.request("group_info", json!({ "group": group })).await.unwrap();
    assert_eq!(
        (info["name"].as_str(), info["member_count"].as_u64(), info["last_seq"].as_u64()),
        (Some("private"), Some(1), Some(1))
    );
}

#[tokio::test]
async fn former_members_lose_access_immediately() {
    let node = TestNode::start().await;
    let (owner, _) = node.user("owner").await;
    let (bob, bob_id) = node.user("bob").await;
    let group = create_group(&owner, "club", true).await;
    bob.request("join", json!({ "group": group })).await.unwrap();
    bob.request("history", json!({ "group": group })).await.expect("members read history");
    owner.request("remove_member", json!({ "group": group, "user": bob_id })).await.unwrap();
    for (op, fields) in group_requests(group, bob_id) {
        if op == "join" {
            continue; // the group is open: rejoining is allowed
        }
        assert_eq!(code(bob.request(op, fields).await), "not_found", "{op} after removal");
    }
}

/// Many connections asking about the same unknown groups at once (each activation fails
/// fast): every request is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_for_unknown_groups_are_all_answered() {
    let node = TestNode::start().await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16 {
        let (client, _) = node.user(&format!("probe{i}_")).await;
        tasks.spawn(async move {
            let mut pending = Vec::new();
            for n in 0..60u64 {
                pending.push(client.start_request("group_info", json!({ "group": 1000 + n % 3 })).await.unwrap());
            }
            for rx in pending {
                let answer = tokio::time::timeout(WAIT, rx).await.expect("answered").unwrap();
                assert_eq!(answer.unwrap_err().code(), Some("not_found"));
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

/// What an outsider can try with one op against objects of a group they are not in.
enum Probe {
    /// Requests naming the group's objects, each paired with the same request naming ids
    /// that do not exist: both must be refused with the same `not_found`.
    Refused(Vec<(Value, Value)>),
    /// `sync` naming the group: it comes back in `gone`, as an unknown group does.
    ListedAsGone,
    /// The op names no object of anyone else's group; why that is safe.
    NamesNoGroupObject(&'static str),
}

/// The objects of a closed group the outsider is not in, and ids that do not exist.
struct Victim {
    group: u64,
    owner: u64,
    media: u64,
    packet: u64,
    face_code: String,
    face_session: u64,
    /// The outsider's own group, to try someone else's media in.
    outsider_group: u64,
}

/// The probes for one op. Every op of the protocol has an arm: a new op fails to compile
/// here only if it is also missing from `OPS`, and fails the test below until it has a case.
fn probe(op: &str, v: &Victim) -> Option<Probe> {
    let g = v.group;
    let unknown = g ^ 0x5a5a;
    let pair = |real: Value, missing: Value| (real, missing);
    let text = |group: u64| json!({ "group": group, "client_msg_id": "probe", "type": "text", "body": "hi" });
    Some(match op {
        "register" | "login" | "auth" | "logout" | "ping" => {
            Probe::NamesNoGroupObject("acts on the caller's own account or connection")
        }
        "profile" => Probe::NamesNoGroupObject("profiles are public: nickname and avatar only"),
        "update_profile" | "create_group" | "my_groups" | "wallet" | "start_face_to_face" => {
            Probe::NamesNoGroupObject("acts on the caller's own things")
        }
        "join_face_to_face" => Probe::NamesNoGroupObject("the code and standing within 50 m are the capability"),
        "sync" => Probe::ListedAsGone,
        "group_info" | "members" | "history" | "leave" | "dissolve_group" | "join" => {
            Probe::Refused(vec![pair(json!({ "group": g }), json!({ "group": unknown }))])
        }
        "send" => Probe::Refused(vec![
            pair(text(g), text(unknown)),
            // The group's picture, sent on into the outsider's own group.
            pair(
                json!({ "group": v.outsider_group, "client_msg_id": "steal", "type": "image", "body": { "media": v.media } }),
                json!({ "group": v.outsider_group, "client_msg_id": "steal2", "type": "image", "body": { "media": v.media ^ 0x5a5a } }),
            ),
        ]),
        "read" => Probe::Refused(vec![pair(json!({ "group": g, "seq": 1 }), json!({ "group": unknown, "seq": 1 }))]),
        "update_group" => Probe::Refused(vec![pair(
            json!({ "group": g, "name": "mine" }),
            json!({ "group": unknown, "name": "mine" }),
        )]),
        "add_members" => Probe::Refused(vec![pair(
            json!({ "group": g, "users": [v.owner] }),
            json!({ "group": unknown, "users": [v.owner] }),
        )]),
        "remove_member" | "transfer_ownership" => Probe::Refused(vec![pair(
            json!({ "group": g, "user": v.owner }),
            json!({ "group": unknown, "user": v.owner }),
        )]),
        "set_role" => Probe::Refused(vec![pair(
            json!({ "group": g, "user": v.owner, "role": "admin" }),
            json!({ "group": unknown, "user": v.owner, "role": "admin" }),
        )]),
        "grab_red_packet" | "red_packet" => Probe::Refused(vec![
            pair(json!({ "group": g, "packet": v.packet }), json!({ "group": unknown, "packet": v.packet ^ 0x5a5a })),
            pair(json!({ "group": g, "packet": v.packet }), json!({ "group": g, "packet": v.packet ^ 0x5a5a })),
        ]),
        "media_url" => Probe::Refused(vec![
            pair(json!({ "media": v.media }), json!({ "media": v.media ^ 0x5a5a })),
            pair(
                json!({ "media": v.media, "thumbnail": true }),
                json!({ "media": v.media ^ 0x5a5a, "thumbnail": true }),
            ),
        ]),
        "confirm_face_to_face" => Probe::Refused(vec![pair(
            json!({ "code": v.face_code, "session": v.face_session }),
            json!({ "code": v.face_code, "session": v.face_session ^ 0x5a5a }),
        )]),
        _ => return None,
    })
}

/// A small real image, so the media has a thumbnail as well.
fn small_png() -> Vec<u8> {
    let image = image::RgbImage::from_fn(8, 8, |x, y| image::Rgb([x as u8 * 30, y as u8 * 30, 128]));
    let mut bytes = Vec::new();
    image.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).expect("encode");
    bytes
}

/// Every operation of the protocol, enumerated from the schema, tried by an outsider against
/// the messages, members, media, red packets and face-to-face session of a closed group:
/// every one that names such an object is refused exactly as an unknown id is, and the
/// group is untouched afterwards.
#[tokio::test]
async fn every_operation_refuses_outsiders_as_it_refuses_unknown_ids() {
    let node = TestNode::start().await;
    let (owner, owner_id, owner_token) = node.user_with_token("victim").await;
    let (outsider, _) = node.user("outsider").await;
    let group = create_group(&owner, "closed", false).await;
    let outsider_group = create_group(&outsider, "mine", false).await;
    send_text(&owner, group, "t1", "secret").await.unwrap();
    let (status, media) =
        upload(node.http, Some(&owner_token), "image", UploadBody::Whole(small_png())).await.expect("answer");
    assert_eq!(status, 201, "{media}");
    let media = media["media"].as_u64().expect("media id");
    owner
        .request("send", json!({ "group": group, "client_msg_id": "i1", "type": "image", "body": { "media": media } }))
        .await
        .unwrap();
    node.console(&format!("credit {owner_id} 1000 authz")).await;
    owner
        .request("send", json!({ "group": group, "client_msg_id": "rp1", "type": "red_packet", "body": { "total": 100, "count": 1, "kind": "equal" } }))
        .await
        .unwrap();
    let packet = loop {
        let message = owner.next_event_named("message", WAIT).await.expect("the red packet's message");
        if message["type"] == "red_packet" {
            break message["body"]["packet"].as_u64().expect("packet id");
        }
    };
    let face = owner.request("start_face_to_face", json!({ "lat": 48.8584, "lon": 2.2945 })).await.unwrap();
    let victim = Victim {
        group,
        owner: owner_id,
        media,
        packet,
        face_code: face["code"].as_str().expect("code").to_owned(),
        face_session: face["session"].as_u64().expect("session"),
        outsider_group,
    };

    let (mut refused, mut tried) = (0, 0);
    for op in schema::frames::client::OPS {
        let probe = probe(op, &victim).unwrap_or_else(|| panic!("`{op}` has no authorization case: add one"));
        match probe {
            Probe::Refused(pairs) => {
                for (real, missing) in pairs {
                    tried += 1;
                    let on_real = outsider.request(op, real.clone()).await.expect_err(op);
                    let on_missing = outsider.request(op, missing).await.expect_err(op);
                    assert_eq!(on_real.code(), Some("not_found"), "{op} {real}");
                    assert_eq!(on_real, on_missing, "{op} {real}: must look exactly like an unknown id");
                    refused += 1;
                }
            }
            Probe::ListedAsGone => {
                tried += 1;
                let unknown = group ^ 0x5a5a;
                let sync = outsider
                    .request(
                        op,
                        json!({ "groups": [{ "group": group, "after": 0 }, { "group": unknown, "after": 0 }] }),
                    )
                    .await
                    .unwrap();
                assert_eq!(sync["gone"], json!([group.min(unknown), group.max(unknown)]), "{sync}");
                assert!(sync["groups"].as_array().unwrap().iter().all(|g| g["group"] != group), "{sync}");
                refused += 1;
            }
            Probe::NamesNoGroupObject(_why) => {}
        }
    }
    println!("authorization matrix: {refused} of {tried} outsider probes refused as unknown ids");
    assert_eq!(refused, tried);
    assert!(tried >= 22, "the matrix covers every object kind ({tried} probes)");
    assert!(outsider.next_event_named("message", QUIET).await.is_none(), "outsiders receive nothing");

    // Nothing the outsider tried changed anything.
    let info = owner.request("group_info", json!({ "group": group })).await.unwrap();
    assert_eq!((info["name"].as_str(), info["member_count"].as_u64()), (Some("closed"), Some(1)));
    let packet_view = owner.request("red_packet", json!({ "group": group, "packet": packet })).await.unwrap();
    assert_eq!(packet_view["grabbed_count"], 0, "{packet_view}");
    let session = owner
        .request("join_face_to_face", json!({ "code": victim.face_code, "lat": 48.8584, "lon": 2.2945 }))
        .await
        .unwrap();
    assert_eq!(session["participants"].as_array().map(Vec::len), Some(1), "{session}");
}
