//! The ScyllaDB store against a fake node, with no server: the real driver connects over
//! TCP to scylla-proxy in dry mode, whose rule answers with frames forged by
//! `common/fake_scylla.rs`. What a real server decides (a refused LWT, a timeout, a page
//! boundary, a malformed row) is scripted here, and the tests check what the store makes of
//! it. The contract suite (`store_contract.rs`) covers the rest when `SCYLLA_URI` is set.

#[path = "common/fake_scylla.rs"]
mod fake_scylla;

use actors::store::*;
use fake_scylla::{Call, FakeScylla, Reply, Ty, V};
use schema::frames::{MessageKind, Role};
use schema::records::*;
use schema::{GroupId, UserId};
use scylla::statement::{Consistency, SerialConsistency};
use scylla_cql::frame::response::error::{DbError, WriteType};
use std::sync::Arc;
use std::time::{Duration, Instant};
use troupe::store::scylla::{ScyllaOptions, ScyllaStore, schema_statements, statement_texts};

const KEYSPACE: &str = "troupe_offline";
const FENCE: Fence = Fence { group: GroupId(7), epoch: 2 };

async fn start() -> (FakeScylla, Arc<ScyllaStore>) {
    start_with(|_| {}).await
}

async fn start_with(tune: impl FnOnce(&mut ScyllaOptions)) -> (FakeScylla, Arc<ScyllaStore>) {
    let fake = FakeScylla::start(KEYSPACE).await;
    let mut options = ScyllaOptions::new(&[fake.contact_point()], KEYSPACE, 1);
    tune(&mut options);
    let store = ScyllaStore::open_with(options).await.expect("the store opens against the fake");
    fake.clear_calls();
    (fake, store)
}

fn message(seq: u64) -> MessageRecord {
    MessageRecord {
        group: FENCE.group,
        seq,
        sender: UserId(3 + seq % 2),
        client_msg_id: format!("c{seq}"),
        kind: MessageKind::Text,
        body: format!("\"m{seq}\""),
        ts: 1000 + seq,
    }
}

fn message_row(seq: u64) -> Vec<V> {
    let m = message(seq);
    vec![
        V::BigInt(m.group.0 as i64),
        V::BigInt(seq as i64),
        V::BigInt(m.sender.0 as i64),
        V::Text(m.client_msg_id),
        V::Text("text".into()),
        V::Text(m.body),
        V::BigInt(m.ts as i64),
    ]
}

fn cap_row(count: i32, max: i32, dissolved: bool, epoch: i64) -> Reply {
    Reply::Rows(vec![vec![V::Int(count), V::Int(max), V::Boolean(dissolved), V::BigInt(epoch)]])
}

fn fenced(result: StoreResult<impl std::fmt::Debug>, current: u64) {
    match result {
        Err(StoreError::Fenced { group, presented, current: found }) => {
            assert_eq!((group, presented, found), (FENCE.group, FENCE.epoch, current));
        }
        other => panic!("expected Fenced at {current}, got {other:?}"),
    }
}

fn big(value: &V) -> i64 {
    match value {
        V::BigInt(v) => *v,
        other => panic!("not a bigint: {other:?}"),
    }
}

#[tokio::test]
async fn open_creates_the_schema_and_prepares_every_statement() {
    let fake = FakeScylla::start(KEYSPACE).await;
    let store = ScyllaStore::open(&[fake.contact_point()], KEYSPACE, 1).await.expect("open");
    assert_eq!(store.backend(), "scylla");
    assert_eq!(store.keyspace(), KEYSPACE);
    assert_eq!(fake.ddl(), schema_statements(KEYSPACE, 1).unwrap(), "the schema file, in order, in our keyspace");
    let prepared = fake.prepares();
    for (name, _, text) in statement_texts(KEYSPACE) {
        assert!(prepared.contains(&text), "{name} was prepared (its columns exist in the schema)");
    }
    fake.stop().await;
}

#[tokio::test]
async fn opening_fails_cleanly_without_a_server_or_with_a_bad_keyspace() {
    let fake = FakeScylla::start(KEYSPACE).await;
    let bad = ScyllaStore::open(&[fake.contact_point()], "no-dashes", 1).await;
    assert!(matches!(bad, Err(troupe::store::scylla::OpenError::Config(_))));
    let nothing = ScyllaStore::open(&[], KEYSPACE, 1).await;
    assert!(matches!(nothing, Err(troupe::store::scylla::OpenError::Config(_))));
    let address = fake.address;
    fake.stop().await;
    let mut options = ScyllaOptions::new(&[address.to_string()], KEYSPACE, 1);
    options.connect_timeout = Duration::from_millis(500);
    let started = Instant::now();
    let unreachable = ScyllaStore::open_with(options).await.err();
    assert!(matches!(unreachable, Some(troupe::store::scylla::OpenError::Connect(_))), "{unreachable:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

#[tokio::test]
async fn statements_run_at_local_quorum_and_lwts_at_local_serial() {
    let (fake, store) = start().await;
    let user = UserRecord {
        id: UserId(41),
        username: "ann".into(),
        nickname: "A".into(),
        avatar_url: String::new(),
        created_at: 5,
    };
    assert!(store.insert_user(&user).await.unwrap());
    assert_eq!(store.user(UserId(41)).await.unwrap(), None, "the fake's empty table");
    let calls = fake.calls();
    assert_eq!(calls.len(), 2);
    for call in &calls {
        assert_eq!(call.consistency, Consistency::LocalQuorum, "{:?}", call.name());
        assert_eq!(call.serial_consistency, Some(SerialConsistency::LocalSerial), "{:?}", call.name());
    }
    assert_eq!(calls[0].name(), Some("insert_user"));
    assert_eq!(calls[0].value("user_id"), V::BigInt(41));
    assert_eq!(calls[0].value("username"), V::Text("ann".into()));

    // Absent profile fields are bound UNSET, so they stay as they are.
    fake.answer_with("update_profile", vec![Reply::lwt(false, &[])]);
    assert_eq!(store.update_profile(UserId(41), Some("B"), None).await.unwrap(), None, "no such user");
    let update = fake.calls_to("update_profile").remove(0);
    assert_eq!((update.value("nickname"), update.value("avatar_url")), (V::Text("B".into()), V::Unset));

    // Sessions live for their remaining lifetime, at least a minute.
    let token = [9u8; 32];
    let session = SessionRecord { user: UserId(41), created_at: 1, expires_at: actors::now_ms() + 3_600_000 };
    store.insert_session(&token, &session).await.unwrap();
    let insert = fake.calls_to("insert_session").remove(0);
    assert!(
        matches!(insert.value("[ttl]"), V::Int(ttl) if (3599..=3600).contains(&ttl)),
        "{:?}",
        insert.value("[ttl]")
    );
    assert_eq!(insert.value("token_hash"), V::Blob(token.to_vec()));
    fake.stop().await;
}

#[tokio::test]
async fn refused_inserts_are_false() {
    let (fake, store) = start().await;
    let existing = [("user_id", V::BigInt(41)), ("username", V::Text("bob".into()))];
    fake.answer_with("insert_user", vec![Reply::lwt(false, &existing)]);
    fake.answer_with("claim_username", vec![Reply::lwt(false, &[("username", V::Text("bob".into()))])]);
    let user = UserRecord {
        id: UserId(41),
        username: "ann".into(),
        nickname: String::new(),
        avatar_url: String::new(),
        created_at: 5,
    };
    assert!(!store.insert_user(&user).await.unwrap());
    let credential = CredentialRecord { user: UserId(41), password_hash: "$argon2id$".into() };
    assert!(!store.claim_username("bob", &credential).await.unwrap());
    assert!(store.claim_username("bob", &credential).await.unwrap(), "the next one applies");
    fake.stop().await;
}

#[tokio::test]
async fn a_refused_member_insert_says_why() {
    let (fake, store) = start().await;
    let member = MemberRecord { user: UserId(9), role: Role::Member, joined_at: 3 };
    let read = || (0..8).map(|_| cap_row(1, 10, false, 2)).collect::<Vec<_>>();

    // Another owner claimed the group between the read and the write.
    fake.answer_with("select_cap", read());
    fake.answer_with("add_member", vec![Reply::lwt(false, &[("epoch", V::BigInt(3)), ("member_count", V::Int(1))])]);
    fenced(store.add_member_if_below_cap(FENCE, &member).await, 3);

    fake.answer_with("select_cap", read());
    fake.answer_with(
        "add_member",
        vec![Reply::lwt(
            false,
            &[("epoch", V::BigInt(2)), ("member_count", V::Int(1)), ("role", V::Text("member".into()))],
        )],
    );
    assert_eq!(store.add_member_if_below_cap(FENCE, &member).await.unwrap(), AddMemberOutcome::AlreadyMember);

    fake.answer_with("select_cap", read());
    fake.answer_with(
        "add_member",
        vec![Reply::lwt(false, &[("epoch", V::BigInt(2)), ("dissolved", V::Boolean(true))])],
    );
    assert_eq!(store.add_member_if_below_cap(FENCE, &member).await.unwrap(), AddMemberOutcome::NoGroup);

    // The count moved (a racing add): read again and retry with the new count.
    fake.clear_calls();
    fake.answer_with("select_cap", vec![cap_row(1, 10, false, 2), cap_row(2, 10, false, 2)]);
    fake.answer_with("add_member", vec![Reply::lwt(false, &[("epoch", V::BigInt(2)), ("member_count", V::Int(2))])]);
    assert_eq!(store.add_member_if_below_cap(FENCE, &member).await.unwrap(), AddMemberOutcome::Added(3));
    let attempts = fake.calls_to("add_member");
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[1].values_of("member_count"), vec![V::Int(3), V::Int(2)], "SET n + 1 IF member_count = n");
    assert_eq!(attempts[1].values_of("epoch"), vec![V::BigInt(2)], "IF epoch = mine");

    // At the cap: Full, unless already a member; no write is tried.
    fake.clear_calls();
    fake.answer_with("select_cap", vec![cap_row(10, 10, false, 2), cap_row(10, 10, false, 2)]);
    fake.answer_with(
        "select_member",
        vec![Reply::Rows(vec![vec![V::BigInt(9), V::Text("member".into()), V::BigInt(1)]])],
    );
    assert_eq!(store.add_member_if_below_cap(FENCE, &member).await.unwrap(), AddMemberOutcome::AlreadyMember);
    assert_eq!(store.add_member_if_below_cap(FENCE, &member).await.unwrap(), AddMemberOutcome::Full);
    assert!(fake.calls_to("add_member").is_empty());

    // A stale fence is caught by the read already; no group is NoGroup.
    fake.answer_with("select_cap", vec![cap_row(1, 10, false, 5)]);
    fenced(store.add_member_if_below_cap(FENCE, &member).await, 5);
    assert_eq!(store.add_member_if_below_cap(FENCE, &member).await.unwrap(), AddMemberOutcome::NoGroup);
    fake.stop().await;
}

#[tokio::test]
async fn refused_fenced_writes_tell_fenced_from_missing() {
    let (fake, store) = start().await;
    let old = |rows: &[&[(&str, V)]]| Reply::lwt_rows(false, rows);

    // remove_member: a batch of the count update and the member delete.
    fake.answer_with("select_cap", (0..4).map(|_| cap_row(2, 10, false, 2)).collect());
    fake.answer_with(
        "lower_count",
        vec![
            old(&[&[("epoch", V::BigInt(2)), ("member_count", V::Int(2))], &[("role", V::Null)]]),
            old(&[&[("epoch", V::BigInt(4)), ("member_count", V::Int(2))], &[("role", V::Text("member".into()))]]),
        ],
    );
    assert_eq!(store.remove_member(FENCE, UserId(9)).await.unwrap(), None, "not a member");
    fenced(store.remove_member(FENCE, UserId(9)).await, 4);
    assert_eq!(store.remove_member(FENCE, UserId(9)).await.unwrap(), Some(1));
    let batch = fake.calls_to("lower_count").pop().unwrap();
    assert_eq!(batch.statements.iter().map(|s| s.name.unwrap()).collect::<Vec<_>>(), ["lower_count", "delete_member"]);
    assert_eq!(batch.statements[0].values_of("member_count"), vec![V::Int(1), V::Int(2)]);

    fake.answer_with(
        "set_role",
        vec![
            Reply::lwt(false, &[("epoch", V::BigInt(2)), ("role", V::Null)]),
            Reply::lwt(false, &[("epoch", V::BigInt(6)), ("role", V::Text("member".into()))]),
            Reply::lwt(false, &[("epoch", V::Null), ("role", V::Null)]),
        ],
    );
    assert!(!store.set_member_role(FENCE, UserId(9), Role::Admin).await.unwrap(), "not a member");
    fenced(store.set_member_role(FENCE, UserId(9), Role::Admin).await, 6);
    assert!(!store.set_member_role(FENCE, UserId(9), Role::Admin).await.unwrap(), "no group");
    assert!(store.set_member_role(FENCE, UserId(9), Role::Admin).await.unwrap());

    let owner = V::Text("owner".into());
    fake.answer_with(
        "set_owner",
        vec![
            old(&[&[("epoch", V::BigInt(2))], &[("role", owner.clone())], &[("role", V::Null)]]),
            old(&[&[("epoch", V::BigInt(8))], &[("role", owner.clone())], &[("role", owner.clone())]]),
        ],
    );
    assert!(!store.transfer_ownership(FENCE, UserId(1), UserId(9)).await.unwrap(), "one of them is no member");
    fenced(store.transfer_ownership(FENCE, UserId(1), UserId(9)).await, 8);
    assert!(store.transfer_ownership(FENCE, UserId(1), UserId(9)).await.unwrap());
    let batch = fake.calls_to("set_owner").pop().unwrap();
    assert_eq!(batch.statements[1].value("role"), V::Text("admin".into()));
    assert_eq!(batch.statements[2].value("role"), owner);

    fake.answer_with(
        "update_group",
        vec![Reply::lwt(false, &[("epoch", V::Null)]), Reply::lwt(false, &[("epoch", V::BigInt(9))])],
    );
    assert_eq!(store.update_group(FENCE, Some("x"), None).await.unwrap(), None, "no group");
    fenced(store.update_group(FENCE, Some("x"), None).await, 9);
    let update = fake.calls_to("update_group").pop().unwrap();
    assert_eq!((update.value("name"), update.value("open")), (V::Text("x".into()), V::Unset));
    assert_eq!(update.values_of("epoch"), vec![V::BigInt(2), V::BigInt(2)], "SET epoch = mine IF epoch = mine");

    fake.answer_with(
        "dissolve_group",
        vec![Reply::lwt(false, &[("epoch", V::Null)]), Reply::lwt(false, &[("epoch", V::BigInt(3))])],
    );
    assert!(!store.dissolve_group(FENCE).await.unwrap());
    fenced(store.dissolve_group(FENCE).await, 3);
    assert!(store.dissolve_group(FENCE).await.unwrap());
    fake.stop().await;
}

#[tokio::test]
async fn a_claim_goes_one_past_the_epoch_it_finds_and_fences_the_log() {
    let (fake, store) = start().await;
    assert_eq!(store.claim_group(GroupId(5)).await.unwrap(), None, "no group, no claim");

    fake.answer_with("select_epoch", vec![Reply::Rows(vec![vec![V::BigInt(4)]])]);
    // A racing claim took 6 first.
    fake.answer_with("claim_epoch", vec![Reply::lwt(false, &[("epoch", V::BigInt(6))])]);
    // The log ends in bucket 1.
    fake.on("select_bucket_last", |call: &Call| match call.value("bucket") {
        V::BigInt(0) => Reply::Rows(vec![vec![V::BigInt(4096)]]),
        V::BigInt(1) => Reply::Rows(vec![vec![V::BigInt(5000)]]),
        _ => Reply::Default,
    });
    assert_eq!(store.claim_group(GroupId(5)).await.unwrap(), Some(Fence { group: GroupId(5), epoch: 7 }));
    let claims = fake.calls_to("claim_epoch");
    assert_eq!(claims.len(), 2);
    assert_eq!(claims[1].values_of("epoch"), vec![V::BigInt(7), V::BigInt(6)], "SET epoch = 7 IF epoch = 6");
    let mut fences: Vec<(i64, i64, i64)> = fake
        .calls_to("fence_bucket")
        .iter()
        .map(|c| (big(&c.value("bucket")), big(&c.value("epoch")), big(&c.value("[timestamp]"))))
        .collect();
    fences.sort_unstable();
    assert_eq!(fences, vec![(1, 7, 7), (2, 7, 7)], "the current bucket and the next, written at timestamp = epoch");
    fake.stop().await;
}

#[tokio::test]
async fn appends_are_conditional_per_bucket() {
    let (fake, store) = start().await;
    store.append_messages(FENCE, 0, &[message(1), message(2)]).await.unwrap();
    let calls = fake.calls();
    let names: Vec<_> = calls.iter().map(|c| c.name().unwrap()).collect();
    assert_eq!(&names[..2], ["fence_bucket", "open_bucket"], "bucket 1 is fenced before bucket 0 is opened");
    assert_eq!(big(&calls[0].value("bucket")), 1);
    let batch = &calls[1];
    assert_eq!(batch.statements.len(), 3, "the last_seq condition and two inserts");
    assert_eq!(
        (batch.statements[0].value("last_seq"), batch.statements[0].value("epoch")),
        (V::BigInt(2), V::BigInt(2)),
        "SET last_seq = 2 IF last_seq = null AND epoch = mine"
    );
    assert_eq!(batch.statements[2].value("seq"), V::BigInt(2));
    let ids = fake.calls_to("insert_client_id");
    assert_eq!(ids.len(), 2, "one batch per sender");

    fake.clear_calls();
    fake.answer_with(
        "extend_bucket",
        vec![
            Reply::lwt(false, &[("last_seq", V::BigInt(2)), ("epoch", V::BigInt(3))]),
            Reply::lwt(false, &[("last_seq", V::BigInt(5)), ("epoch", V::BigInt(2))]),
            Reply::lwt(false, &[("last_seq", V::Null), ("epoch", V::Null)]),
        ],
    );
    fenced(store.append_messages(FENCE, 2, &[message(3)]).await, 3);
    assert!(matches!(store.append_messages(FENCE, 2, &[message(3)]).await, Err(StoreError::Conflict(_))), "log at 5");
    assert!(matches!(store.append_messages(FENCE, 2, &[message(3)]).await, Err(StoreError::Conflict(_))), "no fence");
    assert!(fake.calls_to("insert_client_id").is_empty(), "nothing more after a refusal");
    let gap = store.append_messages(FENCE, 2, &[message(4)]).await;
    assert!(matches!(gap, Err(StoreError::Conflict(_))), "{gap:?}");
    assert_eq!(fake.calls().len(), 3, "a gap is refused before any request");

    // Across a bucket boundary: the second bucket's refusal after the first landed is
    // ambiguous for the caller.
    fake.clear_calls();
    fake.answer_with("open_bucket", vec![Reply::lwt(false, &[("last_seq", V::Null), ("epoch", V::BigInt(3))])]);
    let crossing = store.append_messages(FENCE, 4095, &[message(4096), message(4097)]).await;
    assert!(matches!(crossing, Err(StoreError::Unavailable(_))), "{crossing:?}");
    let names: Vec<_> = fake.calls().iter().map(|c| c.name().unwrap()).collect();
    assert_eq!(names, ["extend_bucket", "fence_bucket", "open_bucket"]);
    fake.stop().await;
}

#[tokio::test]
async fn writes_without_waiting_call_done_once_in_submission_order() {
    let (fake, store) = start().await;
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let record = |what: &'static str| -> WriteDone {
        let (order, tx) = (order.clone(), tx.clone());
        Box::new(move |result| {
            order.lock().unwrap().push((what, result.is_ok()));
            let _ = tx.send(());
        })
    };
    store.advance_read_marks_then(FENCE.group, vec![(UserId(1), 3), (UserId(2), 3)], record("marks"));
    store.append_messages_then(FENCE, 0, vec![message(1)], record("append"));
    store.append_messages_then(FENCE, 0, vec![message(3)], record("gap"));
    for _ in 0..3 {
        tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("done runs").expect("open");
    }
    assert!(tokio::time::timeout(Duration::from_millis(200), rx.recv()).await.is_err(), "each done runs once");
    let order = order.lock().unwrap().clone();
    assert_eq!(order.len(), 3);
    assert!(order.contains(&("gap", false)), "refused before it is queued");
    let queued: Vec<_> = order.iter().filter(|(what, _)| *what != "gap").cloned().collect();
    assert_eq!(queued, vec![("marks", true), ("append", true)], "a group's writes apply in submission order");
    let names: Vec<_> = fake.calls().iter().map(|c| c.name().unwrap()).collect();
    assert_eq!(&names[..2], ["advance_read_mark", "advance_read_mark"]);
    fake.stop().await;
}

#[tokio::test]
async fn timeouts_and_server_errors_are_unavailable() {
    let (mut fake, store) = start_with(|options| options.request_timeout = Duration::from_secs(1)).await;
    fake.answer_with(
        "select_user",
        vec![Reply::Error(
            DbError::ReadTimeout {
                consistency: Consistency::LocalQuorum,
                received: 0,
                required: 1,
                data_present: false,
            },
            "read timeout".into(),
        )],
    );
    assert!(matches!(store.user(UserId(1)).await, Err(StoreError::Unavailable(_))));

    fake.answer_with(
        "claim_epoch",
        vec![Reply::Error(
            DbError::WriteTimeout {
                consistency: Consistency::LocalSerial,
                received: 0,
                required: 1,
                write_type: WriteType::Cas,
            },
            "cas contention".into(),
        )],
    );
    fake.answer_with("select_epoch", vec![Reply::Rows(vec![vec![V::BigInt(1)]])]);
    let claim = store.claim_group(GroupId(5)).await;
    assert!(matches!(claim, Err(StoreError::Unavailable(_))), "an LWT that timed out may have applied: {claim:?}");

    // A node that never answers: the client timeout ends the wait.
    fake.silence("select_session");
    let started = Instant::now();
    let hung = store.session(&[1; 32]).await;
    assert!(matches!(&hung, Err(StoreError::Unavailable(message)) if message.contains("timeout")), "{hung:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    fake.stop().await;
}

#[tokio::test]
async fn reads_page_and_stop_at_their_limit() {
    let (fake, store) = start().await;
    fake.on("select_members", |call: &Call| {
        let after = big(&call.value("user_id"));
        Reply::Rows(
            (after + 1..=1200).map(|u| vec![V::BigInt(u), V::Text("member".into()), V::BigInt(u * 10)]).collect(),
        )
    });
    let members = store.members(FENCE.group, None, 1100).await.unwrap();
    assert_eq!(members.len(), 1100);
    assert!(members.windows(2).all(|w| w[0].user < w[1].user));
    let pages = fake.calls_to("select_members");
    assert_eq!(pages.len(), 3, "pages of 500: 500, 500, 100");
    assert_eq!(pages[0].value("user_id"), V::BigInt(-1), "from the start");
    assert_eq!(pages[0].value("[limit]"), V::Int(1100));
    assert!(pages[0].paging_state.is_none() && pages[1].paging_state.is_some() && pages[2].paging_state.is_some());
    assert_eq!(store.members(FENCE.group, Some(UserId(1190)), 100).await.unwrap().len(), 10);

    fake.on("select_user_groups", |_: &Call| {
        Reply::Rows((1..=1200).map(|g| vec![V::BigInt(g), V::BigInt(0), V::BigInt(1)]).collect())
    });
    assert_eq!(store.user_groups(UserId(1)).await.unwrap().len(), 1200, "a user's whole index, page by page");

    // History walks buckets: 4091..=4096 end bucket 0, 4097..=4100 start bucket 1.
    let bucket_rows = |bucket: i64, after: i64, before: i64, descending: bool| {
        let range = if bucket == 0 { 1..=4096 } else { 4097..=4100 };
        let mut rows: Vec<Vec<V>> =
            range.filter(|s| *s > after && *s < before).map(|s| message_row(s as u64)).collect();
        if descending {
            rows.reverse();
        }
        Reply::Rows(rows)
    };
    fake.on("select_after", move |call: &Call| {
        bucket_rows(big(&call.value("bucket")), big(&call.value("seq")), i64::MAX, false)
    });
    fake.on("select_before", move |call: &Call| {
        bucket_rows(big(&call.value("bucket")), 0, big(&call.value("seq")), true)
    });
    fake.on("select_bucket_last", |call: &Call| match call.value("bucket") {
        V::BigInt(0) => Reply::Rows(vec![vec![V::BigInt(4096)]]),
        V::BigInt(1) => Reply::Rows(vec![vec![V::BigInt(4100)]]),
        _ => Reply::Default,
    });
    fake.clear_calls();
    let seqs = |page: Vec<MessageRecord>| page.into_iter().map(|m| m.seq).collect::<Vec<_>>();
    assert_eq!(seqs(store.messages_after(FENCE.group, 4090, 10).await.unwrap()), (4091..=4100).collect::<Vec<_>>());
    assert_eq!(fake.calls_to("select_after").len(), 2, "bucket 0 was full, so bucket 1 was read");
    assert_eq!(seqs(store.messages_after(FENCE.group, 4090, 3).await.unwrap()), vec![4091, 4092, 4093]);
    assert_eq!(seqs(store.messages_after(FENCE.group, 4100, 3).await.unwrap()), Vec::<u64>::new());
    assert_eq!(store.messages_after(FENCE.group, 4090, 1).await.unwrap()[0], message(4091), "records come back whole");

    fake.clear_calls();
    assert_eq!(store.last_seq(FENCE.group).await.unwrap(), 4100);
    assert!(fake.calls_to("select_bucket_last").len() <= 4, "a short search: {}", fake.calls().len());
    assert_eq!(seqs(store.messages_before(FENCE.group, u64::MAX, 6).await.unwrap()), (4095..=4100).collect::<Vec<_>>());
    assert_eq!(seqs(store.messages_before(FENCE.group, 4098, 3).await.unwrap()), vec![4095, 4096, 4097]);
    assert_eq!(seqs(store.messages_before(FENCE.group, 1, 3).await.unwrap()), Vec::<u64>::new());
    fake.stop().await;
}

#[tokio::test]
async fn rows_that_do_not_fit_are_corrupt() {
    let (fake, store) = start().await;
    let corrupt = |result: StoreResult<()>, what: &str| {
        assert!(matches!(result, Err(StoreError::Corrupt(_))), "{what}: {result:?}");
    };
    let user_columns = ["user_id", "username", "nickname", "avatar_url", "created_at"];
    let mut columns: Vec<(String, Ty)> = user_columns.iter().map(|c| (c.to_string(), Ty::Text)).collect();
    columns[4].1 = Ty::BigInt;
    let texts = vec![vec![V::Text("1".into()), V::Text("u".into()), V::Null, V::Null, V::BigInt(1)]];
    fake.answer_with("select_user", vec![Reply::Table(columns, texts)]);
    corrupt(store.user(UserId(1)).await.map(drop), "an id of the wrong type");

    fake.answer_with(
        "select_member",
        vec![Reply::Rows(vec![vec![V::BigInt(4), V::Text("emperor".into()), V::BigInt(1)]])],
    );
    corrupt(store.member(FENCE.group, UserId(4)).await.map(drop), "an unknown role");

    let no_name = vec![
        V::BigInt(7),
        V::Null,
        V::BigInt(1),
        V::Boolean(true),
        V::Int(10),
        V::Int(1),
        V::BigInt(1),
        V::Boolean(false),
    ];
    fake.answer_with("select_group", vec![Reply::Rows(vec![no_name])]);
    corrupt(store.group(FENCE.group).await.map(drop), "a group without a name");

    let mut hologram = message_row(1);
    hologram[4] = V::Text("hologram".into());
    fake.answer_with("select_after", vec![Reply::Rows(vec![hologram])]);
    corrupt(store.messages_after(FENCE.group, 0, 10).await.map(drop), "an unknown kind, through the pager");

    let wrong = vec![("user_id".to_string(), Ty::BigInt), ("role".into(), Ty::Text), ("joined_at".into(), Ty::Text)];
    fake.answer_with(
        "select_members",
        vec![Reply::Table(wrong, vec![vec![V::BigInt(1), V::Text("member".into()), V::Text("x".into())]])],
    );
    corrupt(store.members(FENCE.group, None, 10).await.map(drop), "a page of the wrong types");

    fake.answer_with("insert_user", vec![Reply::Table(vec![("x".into(), Ty::Int)], vec![vec![V::Int(1)]])]);
    let user = UserRecord {
        id: UserId(1),
        username: "u".into(),
        nickname: String::new(),
        avatar_url: String::new(),
        created_at: 1,
    };
    corrupt(store.insert_user(&user).await.map(drop), "a conditional answer without [applied]");

    fake.answer_with("advance_read_mark", vec![Reply::lwt(false, &[("read_seq", V::BigInt(-4))])]);
    corrupt(store.advance_read_mark(UserId(1), FENCE.group, 3).await.map(drop), "a negative mark");
    fake.answer_with("advance_read_mark", vec![Reply::lwt(false, &[("read_seq", V::BigInt(9))])]);
    assert_eq!(store.advance_read_mark(UserId(1), FENCE.group, 3).await.unwrap(), Some(9), "never backwards");
    fake.answer_with("advance_read_mark", vec![Reply::lwt(false, &[("read_seq", V::Null)])]);
    assert_eq!(store.advance_read_mark(UserId(1), FENCE.group, 3).await.unwrap(), None, "not linked");
    fake.stop().await;
}
