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
use schema::{GroupId, MediaId, RedPacketId, UserId};
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
async fn statements_run_at_local_quorum_and_lwts_at_serial() {
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
        // LOCAL_SERIAL would let two datacenters each win the same LWT.
        assert_eq!(call.serial_consistency, Some(SerialConsistency::Serial), "{:?}", call.name());
    }
    assert_eq!(calls[0].name(), Some("insert_user"));
    assert_eq!(calls[0].value("user_id"), V::BigInt(41));
    assert_eq!(calls[0].value("username"), V::Text("ann".into()));

    // Batches too: the conditional batch of an append, the fences before it, and the
    // unlogged batches of client ids. The append opens bucket 1 on top of a full bucket 0,
    // which it checks with a read at SERIAL.
    fake.clear_calls();
    fake.answer_with("select_bucket_last_serial", vec![Reply::Rows(vec![vec![V::BigInt(4096), V::BigInt(2)]])]);
    store.append_messages(FENCE, 4096, &[message(4097), message(4098)]).await.unwrap();
    let calls = fake.calls();
    let batches = ["open_bucket", "insert_client_id"];
    let batches = calls.iter().filter(|call| call.name().is_some_and(|name| batches.contains(&name))).count();
    assert_eq!(batches, 3, "the append and two senders' client ids: {calls:#?}");
    for call in &calls {
        let expected = if call.name() == Some("select_bucket_last_serial") {
            Consistency::Serial
        } else {
            Consistency::LocalQuorum
        };
        assert_eq!(call.consistency, expected, "{:?}", call.name());
        assert_eq!(call.serial_consistency, Some(SerialConsistency::Serial), "{:?}", call.name());
    }
    assert_eq!(fake.calls_to("select_bucket_last_serial").len(), 1);

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

fn write_timeout() -> Reply {
    Reply::Error(
        DbError::WriteTimeout {
            consistency: Consistency::LocalQuorum,
            received: 0,
            required: 1,
            write_type: WriteType::Cas,
        },
        "cas timeout".into(),
    )
}

/// After a timeout the store tries an `IF NOT EXISTS` insert again; a refusal then that
/// returns our own row is our first attempt, which landed after all.
#[tokio::test]
async fn an_insert_retried_after_a_timeout_recognises_its_own_row() {
    let (fake, store) = start().await;
    let user = UserRecord {
        id: UserId(41),
        username: "ann".into(),
        nickname: "Ann".into(),
        avatar_url: String::new(),
        created_at: 5,
    };
    let ours = [
        ("user_id", V::BigInt(41)),
        ("username", V::Text("ann".into())),
        ("nickname", V::Text("Ann".into())),
        ("avatar_url", V::Null),
        ("created_at", V::BigInt(5)),
    ];
    let mut theirs = ours.clone();
    theirs[4].1 = V::BigInt(6);
    fake.answer_with("insert_user", vec![write_timeout(), Reply::lwt(false, &ours)]);
    assert!(store.insert_user(&user).await.unwrap(), "our own row, written by the timed-out attempt");
    assert_eq!(fake.calls_to("insert_user").len(), 2);
    fake.answer_with("insert_user", vec![write_timeout(), Reply::lwt(false, &theirs)]);
    assert!(!store.insert_user(&user).await.unwrap(), "someone else's row");
    fake.answer_with("insert_user", vec![Reply::lwt(false, &ours)]);
    assert!(!store.insert_user(&user).await.unwrap(), "a first attempt refused is taken, even by an equal row");
    fake.clear_calls();
    fake.answer_with("insert_user", vec![write_timeout(), write_timeout(), write_timeout()]);
    assert!(matches!(store.insert_user(&user).await, Err(StoreError::Unavailable(_))));
    assert_eq!(fake.calls_to("insert_user").len(), 3, "a few attempts, then unavailable");

    let credential = CredentialRecord { user: UserId(41), password_hash: "$argon2id$a".into() };
    let claimed = |user: i64, hash: &str| {
        Reply::lwt(
            false,
            &[
                ("username", V::Text("ann".into())),
                ("user_id", V::BigInt(user)),
                ("password_hash", V::Text(hash.into())),
            ],
        )
    };
    fake.answer_with("claim_username", vec![write_timeout(), claimed(41, "$argon2id$a")]);
    assert!(store.claim_username("ann", &credential).await.unwrap());
    fake.answer_with("claim_username", vec![write_timeout(), claimed(42, "$argon2id$b")]);
    assert!(!store.claim_username("ann", &credential).await.unwrap());
    fake.answer_with("claim_username", vec![claimed(41, "$argon2id$a")]);
    assert!(!store.claim_username("ann", &credential).await.unwrap());

    let group = GroupRecord {
        id: FENCE.group,
        name: "g".into(),
        owner: UserId(41),
        open: true,
        max_members: 10,
        member_count: 1,
        created_at: 77,
        dissolved: false,
    };
    let owner = MemberRecord { user: UserId(41), role: Role::Owner, joined_at: 77 };
    let created = |owner: i64, at: i64| {
        Reply::lwt(false, &[("group_id", V::BigInt(7)), ("owner", V::BigInt(owner)), ("created_at", V::BigInt(at))])
    };
    fake.answer_with("insert_group", vec![write_timeout(), created(41, 77)]);
    assert!(store.create_group(&group, &owner).await.unwrap());
    fake.answer_with("insert_group", vec![write_timeout(), created(41, 78)]);
    assert!(!store.create_group(&group, &owner).await.unwrap());
    fake.answer_with("insert_group", vec![created(41, 77)]);
    assert!(!store.create_group(&group, &owner).await.unwrap());
    fake.stop().await;
}

/// A request the server refuses as written never applied and would be refused again: it is
/// `Corrupt`, not `Unavailable` (which says "may have applied, try again").
#[tokio::test]
async fn requests_refused_as_written_are_corrupt_and_transient_errors_unavailable() {
    let (fake, store) = start().await;
    let refusal = |error: DbError, message: &str| Reply::Error(error, message.into());
    fake.answer_with(
        "select_user",
        vec![
            refusal(DbError::Invalid, "Undefined column name nickname"),
            refusal(DbError::SyntaxError, "line 1:7 no viable alternative"),
            refusal(DbError::Unauthorized, "User troupe has no SELECT permission"),
            refusal(DbError::Overloaded, "too many in-flight hints"),
            refusal(
                DbError::Unavailable { consistency: Consistency::LocalQuorum, required: 2, alive: 1 },
                "cannot achieve consistency level",
            ),
        ],
    );
    for expected in ["Undefined column name", "no viable alternative", "no SELECT permission"] {
        let result = store.user(UserId(1)).await;
        assert!(
            matches!(&result, Err(StoreError::Corrupt(message)) if message.contains(expected)),
            "{expected}: {result:?}"
        );
    }
    for what in ["overloaded", "unavailable"] {
        let result = store.user(UserId(1)).await;
        assert!(matches!(result, Err(StoreError::Unavailable(_))), "{what}: {result:?}");
    }

    // A conditional batch that spans partitions is refused as Invalid: a bug, never applied.
    let spans = "BATCH with conditions cannot span multiple partitions";
    fake.answer_with("extend_bucket", vec![refusal(DbError::Invalid, spans)]);
    let append = store.append_messages(FENCE, 2, &[message(3)]).await;
    assert!(matches!(&append, Err(StoreError::Corrupt(message)) if message.contains(spans)), "{append:?}");

    // Through the pager too.
    fake.answer_with("select_members", vec![refusal(DbError::Invalid, "bad paging")]);
    assert!(matches!(store.members(FENCE.group, None, 10).await, Err(StoreError::Corrupt(_))));
    fake.answer_with("select_members", vec![refusal(DbError::Overloaded, "busy")]);
    assert!(matches!(store.members(FENCE.group, None, 10).await, Err(StoreError::Unavailable(_))));
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

/// (bucket, epoch set, epoch tested) of each fence LWT, sorted.
fn fences(fake: &FakeScylla) -> Vec<(i64, i64, i64)> {
    let mut fences: Vec<(i64, i64, i64)> = fake
        .calls_to("fence_bucket")
        .iter()
        .map(|c| {
            let epochs = c.values_of("epoch");
            assert_eq!(epochs.len(), 2, "SET epoch = ? IF epoch < ?");
            (big(&c.value("bucket")), big(&epochs[0]), big(&epochs[1]))
        })
        .collect();
    fences.sort_unstable();
    fences
}

/// A log's buckets as `select_bucket_last(_serial)` answers them: bucket b ends at ends[b].
fn log_ending(ends: &'static [i64]) -> impl Fn(&Call) -> Reply + Send + Sync + 'static {
    move |call: &Call| match usize::try_from(big(&call.value("bucket"))).ok().and_then(|b| ends.get(b)) {
        Some(end) if call.name() == Some("select_bucket_last_serial") => {
            Reply::Rows(vec![vec![V::BigInt(*end), V::Null]])
        }
        Some(end) => Reply::Rows(vec![vec![V::BigInt(*end)]]),
        None => Reply::Default,
    }
}

#[tokio::test]
async fn a_claim_goes_one_past_the_epoch_it_finds_and_fences_the_log() {
    let (fake, store) = start().await;
    assert_eq!(store.claim_group(GroupId(5)).await.unwrap(), None, "no group, no claim");

    fake.answer_with("select_epoch", vec![Reply::Rows(vec![vec![V::BigInt(4)]])]);
    // A racing claim took 6 first.
    fake.answer_with("claim_epoch", vec![Reply::lwt(false, &[("epoch", V::BigInt(6))])]);
    // The log ends in bucket 1.
    fake.on("select_bucket_last", log_ending(&[4096, 5000]));
    fake.on("select_bucket_last_serial", log_ending(&[4096, 5000]));
    assert_eq!(store.claim_group(GroupId(5)).await.unwrap(), Some(Fence { group: GroupId(5), epoch: 7 }));
    let claims = fake.calls_to("claim_epoch");
    assert_eq!(claims.len(), 2);
    assert_eq!(claims[1].values_of("epoch"), vec![V::BigInt(7), V::BigInt(6)], "SET epoch = 7 IF epoch = 6");
    assert_eq!(fences(&fake), vec![(1, 7, 7), (2, 7, 7)], "the current bucket and the next: SET 7 IF epoch < 7");
    for fence in fake.calls_to("fence_bucket") {
        assert!(fence.statements[0].text.contains(" IF epoch < ?"), "an LWT, ordered with appends by Paxos");
        assert_eq!(fence.serial_consistency, Some(SerialConsistency::Serial));
    }
    // After fencing, the log is searched again through Paxos.
    let serial = fake.calls_to("select_bucket_last_serial");
    assert!(!serial.is_empty());
    assert!(serial.iter().all(|call| call.consistency == Consistency::Serial));
    let last_fence = fake.calls().iter().rposition(|c| c.name() == Some("fence_bucket")).unwrap();
    let first_serial = fake.calls().iter().position(|c| c.name() == Some("select_bucket_last_serial")).unwrap();
    assert!(first_serial > last_fence, "the SERIAL search comes after the fences");
    fake.stop().await;
}

/// An earlier owner opened bucket 2 while the claim searched (its append was in flight, so
/// the first search did not see it): the SERIAL search after the fences does, and the claim
/// fences bucket 3 too, so that owner cannot go on into it.
#[tokio::test]
async fn a_claim_follows_a_log_that_grew_while_it_was_fenced() {
    let (fake, store) = start().await;
    fake.answer_with("select_epoch", vec![Reply::Rows(vec![vec![V::BigInt(1)]])]);
    fake.on("select_bucket_last", log_ending(&[4096, 5000]));
    fake.on("select_bucket_last_serial", log_ending(&[4096, 8192, 8200]));
    assert_eq!(store.claim_group(FENCE.group).await.unwrap(), Some(FENCE));
    let buckets: Vec<i64> = fences(&fake).iter().map(|(bucket, _, _)| *bucket).collect();
    assert_eq!(buckets, vec![1, 2, 2, 3], "the first search's buckets, then the newest and the next");
    assert!(fences(&fake).iter().all(|(_, set, tested)| (*set, *tested) == (2, 2)));
    fake.stop().await;
}

/// A fence is an LWT that only raises: a bucket nobody fenced takes `IF epoch = null`, a
/// bucket with our epoch is left alone, and a later epoch is `Fenced`.
#[tokio::test]
async fn the_log_fence_only_raises() {
    let (fake, store) = start().await;
    fake.answer_with("select_epoch", (0..3).map(|_| Reply::Rows(vec![vec![V::BigInt(1)]])).collect());
    // The empty log's buckets 0 and 1: one never fenced, one with our epoch already.
    fake.on("fence_bucket", |call: &Call| match call.value("bucket") {
        V::BigInt(0) => Reply::lwt(false, &[("epoch", V::Null), ("last_seq", V::Null)]),
        _ => Reply::lwt(false, &[("epoch", V::BigInt(2)), ("last_seq", V::Null)]),
    });
    assert_eq!(store.claim_group(FENCE.group).await.unwrap(), Some(FENCE));
    let claimed = fake.calls_to("fence_new_bucket");
    assert_eq!(claimed.len(), 1, "only the bucket without an epoch");
    assert_eq!((claimed[0].value("bucket"), claimed[0].value("epoch")), (V::BigInt(0), V::BigInt(2)));
    assert!(claimed[0].statements[0].text.ends_with("IF epoch = null"));

    // A later claim got to the log first: this one is already deposed.
    fake.on("fence_bucket", |_: &Call| Reply::lwt(false, &[("epoch", V::BigInt(3))]));
    fenced(store.claim_group(FENCE.group).await, 3);

    // A fence that times out is tried again (it is idempotent) before the claim gives up,
    // so a won claim does not leave the log accepting the previous epoch.
    fake.clear_calls();
    fake.answer_with("fence_bucket", vec![write_timeout()]);
    assert_eq!(store.claim_group(FENCE.group).await.unwrap(), Some(FENCE));
    assert!(fake.calls_to("fence_bucket").len() >= 3, "{:#?}", fake.calls_to("fence_bucket"));
    assert_eq!(fences(&fake).last().map(|f| f.0), Some(1));
    fake.stop().await;
}

/// An append that starts a new bucket needs the bucket before it full: a log that ends at
/// 10 cannot take seq 4097.
#[tokio::test]
async fn an_append_that_opens_a_bucket_checks_the_log_ends_before_it() {
    let (fake, store) = start().await;
    fake.answer_with(
        "select_bucket_last_serial",
        vec![Reply::Rows(vec![vec![V::BigInt(10), V::BigInt(2)]]), Reply::Rows(vec![])],
    );
    let short = store.append_messages(FENCE, 4096, &[message(4097)]).await;
    assert!(matches!(&short, Err(StoreError::Conflict(m)) if m.contains("Some(10)")), "{short:?}");
    let empty = store.append_messages(FENCE, 4096, &[message(4097)]).await;
    assert!(matches!(empty, Err(StoreError::Conflict(_))), "an empty log: {empty:?}");
    let names: Vec<_> = fake.calls().iter().map(|c| c.name().unwrap()).collect();
    assert_eq!(names, ["select_bucket_last_serial", "select_bucket_last_serial"], "nothing is written");
    let check = &fake.calls()[0];
    assert_eq!((check.value("bucket"), check.consistency), (V::BigInt(0), Consistency::Serial));

    // Bucket 0 full: bucket 1 is fenced (with the next), then opened.
    fake.clear_calls();
    fake.answer_with("select_bucket_last_serial", vec![Reply::Rows(vec![vec![V::BigInt(4096), V::BigInt(2)]])]);
    store.append_messages(FENCE, 4096, &[message(4097)]).await.unwrap();
    assert_eq!(fences(&fake), vec![(1, 2, 2), (2, 2, 2)]);
    let names: Vec<_> = fake.calls().iter().filter_map(|c| c.name()).filter(|n| !n.contains("client_id")).collect();
    assert_eq!(names.first(), Some(&"select_bucket_last_serial"));
    assert_eq!(names.last(), Some(&"open_bucket"));

    // A second run of one append opens its bucket on top of the first, which it just
    // filled: no read is needed there.
    fake.clear_calls();
    store.append_messages(FENCE, 4095, &[message(4096), message(4097)]).await.unwrap();
    assert!(fake.calls_to("select_bucket_last_serial").is_empty());
    fake.stop().await;
}

#[tokio::test]
async fn appends_are_conditional_per_bucket() {
    let (fake, store) = start().await;
    store.append_messages(FENCE, 0, &[message(1), message(2)]).await.unwrap();
    let calls = fake.calls();
    let names: Vec<_> = calls.iter().map(|c| c.name().unwrap()).collect();
    assert_eq!(&names[..3], ["fence_bucket", "fence_bucket", "open_bucket"], "buckets 0 and 1 are fenced first");
    assert_eq!(fences(&fake), vec![(0, 2, 2), (1, 2, 2)]);
    let batch = &calls[2];
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
            Reply::lwt(false, &[("last_seq", V::BigInt(5)), ("epoch", V::BigInt(1))]),
        ],
    );
    fenced(store.append_messages(FENCE, 2, &[message(3)]).await, 3);
    assert!(matches!(store.append_messages(FENCE, 2, &[message(3)]).await, Err(StoreError::Conflict(_))), "log at 5");
    let behind = store.append_messages(FENCE, 2, &[message(3)]).await;
    assert!(matches!(behind, Err(StoreError::Conflict(_))), "log at 5, whatever the epoch: {behind:?}");
    assert!(fake.calls_to("insert_client_id").is_empty(), "nothing more after a refusal");
    assert!(fake.calls_to("fence_bucket").is_empty());
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
    assert_eq!(names, ["extend_bucket", "fence_bucket", "fence_bucket", "open_bucket"]);
    fake.stop().await;
}

/// A bucket that carries an earlier epoch (or none) than the appender's is not a deposed
/// appender: a claim fences only the buckets it finds, and an earlier owner may have fenced
/// the next bucket with its own epoch. The appender raises the bucket to its epoch and tries
/// once more, instead of reporting itself fenced by an epoch older than its own.
#[tokio::test]
async fn an_append_raises_an_earlier_epoch_and_tries_once_more() {
    let (fake, store) = start().await;
    let earlier = |last: V, epoch: V| Reply::lwt(false, &[("last_seq", last), ("epoch", epoch)]);
    fake.answer_with("extend_bucket", vec![earlier(V::BigInt(2), V::BigInt(1))]);
    store.append_messages(FENCE, 2, &[message(3)]).await.unwrap();
    assert_eq!(fences(&fake), vec![(0, 2, 2)], "bucket 0 raised to our epoch");
    let names: Vec<_> = fake.calls().iter().filter_map(|c| c.name()).filter(|n| !n.contains("client_id")).collect();
    assert_eq!(names, ["extend_bucket", "fence_bucket", "extend_bucket"]);

    // Bucket 1 was fenced by the earlier owner at epoch 1 (B's search missed its bucket):
    // opening it raises it, and the open goes through.
    fake.clear_calls();
    fake.answer_with("select_bucket_last_serial", vec![Reply::Rows(vec![vec![V::BigInt(4096), V::BigInt(1)]])]);
    fake.answer_with("open_bucket", vec![earlier(V::Null, V::BigInt(1))]);
    store.append_messages(FENCE, 4096, &[message(4097)]).await.unwrap();
    assert_eq!(fake.calls_to("open_bucket").len(), 2);

    // No epoch at all: the same.
    fake.clear_calls();
    fake.answer_with("extend_bucket", vec![earlier(V::BigInt(2), V::Null)]);
    store.append_messages(FENCE, 2, &[message(3)]).await.unwrap();
    assert_eq!(fake.calls_to("extend_bucket").len(), 2);

    // Once only: still refused after the raise is a conflict, never a loop.
    fake.clear_calls();
    fake.answer_with(
        "extend_bucket",
        vec![
            earlier(V::BigInt(2), V::BigInt(1)),
            earlier(V::BigInt(2), V::BigInt(1)),
            earlier(V::BigInt(2), V::BigInt(1)),
        ],
    );
    assert!(matches!(store.append_messages(FENCE, 2, &[message(3)]).await, Err(StoreError::Conflict(_))));
    assert_eq!(fake.calls_to("extend_bucket").len(), 2);

    // The raise itself finding a later epoch: fenced.
    fake.clear_calls();
    fake.answer_with("extend_bucket", vec![earlier(V::BigInt(2), V::BigInt(1))]);
    fake.answer_with("fence_bucket", vec![Reply::lwt(false, &[("epoch", V::BigInt(4))])]);
    fenced(store.append_messages(FENCE, 2, &[message(3)]).await, 4);
    assert_eq!(fake.calls_to("extend_bucket").len(), 1);
    fake.stop().await;
}

#[tokio::test]
async fn writes_without_waiting_call_done_once_in_submission_order() {
    let (mut fake, store) = start().await;
    // The marks answer slowly, so an append that did not wait for them would be answered
    // (and recorded) first.
    fake.slow("advance_read_mark", Duration::from_millis(400));
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
    assert_eq!(&names[..2], ["advance_read_mark", "advance_read_mark"], "{names:?}");
    assert!(names[2..].iter().all(|name| *name != "advance_read_mark"), "{names:?}");
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

const PACKET: RedPacketId = RedPacketId(31);
const HOUR_MS: u64 = 3_600_000;

fn packet(state: RedPacketState) -> RedPacketRecord {
    RedPacketRecord {
        id: PACKET,
        group: FENCE.group,
        sender: UserId(3),
        client_msg_id: "rp1".into(),
        total: 300,
        kind: RedPacketKind::Lucky,
        greeting: "hi".into(),
        shares: vec![100, 150, 50],
        created_at: 1000,
        expires_at: 90_000,
        state,
    }
}

/// [`packet`] as `select_red_packet_serial` answers it, with its epoch and share count.
fn packet_row(state: &str, epoch: i64, next_share: i32) -> Reply {
    Reply::Rows(vec![vec![
        V::BigInt(31),
        V::BigInt(7),
        V::BigInt(3),
        V::Text("rp1".into()),
        V::BigInt(300),
        V::Text("lucky".into()),
        V::Text("hi".into()),
        V::List(vec![V::BigInt(100), V::BigInt(150), V::BigInt(50)]),
        V::BigInt(1000),
        V::BigInt(90_000),
        V::Text(state.into()),
        V::BigInt(epoch),
        V::Int(next_share),
    ]])
}

/// The group row as `select_group_epoch_serial` answers it.
fn group_at(epoch: i64) -> impl Fn(&Call) -> Reply + Send + Sync + 'static {
    move |_: &Call| Reply::Rows(vec![vec![V::BigInt(7), V::BigInt(epoch)]])
}

fn balance_row(balance: i64) -> Reply {
    Reply::Rows(vec![vec![V::BigInt(balance), V::Text("credit:k1".into())]])
}

/// A ledger entry is a compare-and-set on the wallet's static balance, in the same write as
/// the entry's row: a refusal that found another balance is tried again on that one, an
/// entry that would take the balance below zero writes nothing, and an entry that is there
/// already comes back as stored.
#[tokio::test]
async fn ledger_entries_move_the_balance_by_compare_and_set() {
    let (fake, store) = start().await;
    let user = UserId(41);
    let credit = LedgerEntry { id: "credit:k1".into(), amount: 200, kind: LedgerKind::Credit, packet: None, ts: 4 };
    let debit = LedgerEntry {
        id: "red_packet:31".into(),
        amount: -150,
        kind: LedgerKind::RedPacketSend,
        packet: Some(PACKET),
        ts: 5,
    };

    // An empty wallet: the first entry tests `balance = null`.
    assert_eq!(store.apply_ledger_entry(user, &credit).await.unwrap(), LedgerOutcome::Applied { balance: 200 });
    let first = fake.calls_to("apply_first_entry");
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].values_of("balance"), vec![V::BigInt(200)], "SET balance = 200 IF balance = null");
    assert_eq!(first[0].value("packet"), V::Unset, "no packet: the column stays unset, no tombstone");
    assert_eq!(fake.calls_to("select_balance_serial")[0].consistency, Consistency::Serial);

    // 200 was read, but another entry made it 180 meanwhile: the refusal's balance is the
    // next try's expectation.
    fake.clear_calls();
    fake.answer_with("select_balance_serial", vec![balance_row(200)]);
    fake.answer_with("apply_entry", vec![Reply::lwt(false, &[("balance", V::BigInt(180)), ("amount", V::Null)])]);
    assert_eq!(store.apply_ledger_entry(user, &debit).await.unwrap(), LedgerOutcome::Applied { balance: 30 });
    let tries = fake.calls_to("apply_entry");
    assert_eq!(tries.len(), 2);
    assert_eq!(tries[0].values_of("balance"), vec![V::BigInt(50), V::BigInt(200)], "SET 50 IF balance = 200");
    assert_eq!(tries[1].values_of("balance"), vec![V::BigInt(30), V::BigInt(180)], "SET 30 IF balance = 180");
    assert_eq!(
        (tries[1].value("entry_id"), tries[1].value("packet")),
        (V::Text("red_packet:31".into()), V::BigInt(31))
    );
    assert_eq!(fake.calls_to("select_balance_serial").len(), 1, "the refusal said enough");

    // 100 cannot pay 150: nothing is written.
    fake.clear_calls();
    fake.answer_with("select_balance_serial", vec![balance_row(100)]);
    assert_eq!(store.apply_ledger_entry(user, &debit).await.unwrap(), LedgerOutcome::Insufficient { balance: 100 });
    let names: Vec<_> = fake.calls().iter().map(|c| c.name().unwrap()).collect();
    assert_eq!(names, ["select_balance_serial", "select_ledger_entry_serial"], "reads only");

    // ... unless the entry is there already (here a void in its place): it comes back as stored.
    let stored_void = vec![
        V::Text("red_packet:31".into()),
        V::BigInt(0),
        V::Text("void".into()),
        V::BigInt(31),
        V::BigInt(3),
        V::BigInt(100),
    ];
    fake.answer_with("select_balance_serial", vec![balance_row(100)]);
    fake.answer_with("select_ledger_entry_serial", vec![Reply::Rows(vec![stored_void])]);
    let void = LedgerEntry { amount: 0, kind: LedgerKind::Void, ts: 3, ..debit.clone() };
    assert_eq!(
        store.apply_ledger_entry(user, &debit).await.unwrap(),
        LedgerOutcome::AlreadyApplied { entry: void, balance: 100 }
    );

    // An entry there already also refuses the write itself (its amount came back set).
    fake.clear_calls();
    let stored_debit = vec![
        V::Text("red_packet:31".into()),
        V::BigInt(-150),
        V::Text("red_packet_send".into()),
        V::BigInt(31),
        V::BigInt(5),
    ];
    fake.answer_with("select_balance_serial", vec![balance_row(500)]);
    fake.answer_with(
        "apply_entry",
        vec![Reply::lwt(false, &[("balance", V::BigInt(500)), ("amount", V::BigInt(-150))])],
    );
    fake.answer_with(
        "select_ledger_entry_serial",
        vec![Reply::Rows(vec![stored_debit.into_iter().chain([V::BigInt(500)]).collect()])],
    );
    assert_eq!(
        store.apply_ledger_entry(user, &debit).await.unwrap(),
        LedgerOutcome::AlreadyApplied { entry: debit.clone(), balance: 500 }
    );
    assert_eq!(fake.calls_to("apply_entry").len(), 1, "not tried again");
    fake.stop().await;
}

/// A grab is a compare-and-set on the packet's share count, in the same write as the
/// grabber's row: a refusal because another grab took the share reads again and takes the
/// next one; a refusal because the grabber's row is there returns their grab.
#[tokio::test]
async fn a_grab_that_lost_its_share_to_another_takes_the_next() {
    let (fake, store) = start().await;
    fake.on("select_group_epoch_serial", group_at(2));
    let lost = |next: i32, share: V| {
        Reply::lwt(
            false,
            &[
                ("next_share", V::Int(next)),
                ("epoch", V::BigInt(2)),
                ("state", V::Text("open".into())),
                ("share", share),
            ],
        )
    };
    fake.answer_with("select_red_packet_serial", vec![packet_row("open", 2, 0), packet_row("open", 2, 1)]);
    fake.answer_with("grab_share", vec![lost(1, V::Null)]);
    let grabbed = store.grab_red_packet(FENCE, PACKET, UserId(9), 5000).await.unwrap();
    assert_eq!(grabbed, GrabOutcome::Grabbed(GrabRecord { user: UserId(9), share: 1, amount: 150, ts: 5000 }));
    let tries = fake.calls_to("grab_share");
    assert_eq!(tries.len(), 2);
    assert_eq!(tries[1].values_of("next_share"), vec![V::Int(2), V::Int(1)], "SET next_share = 2 IF next_share = 1");
    assert_eq!(
        (tries[1].value("share"), tries[1].value("amount"), tries[1].value("user_id")),
        (V::Int(1), V::BigInt(150), V::BigInt(9))
    );
    assert_eq!(tries[1].values_of("epoch"), vec![V::BigInt(2)], "IF epoch = mine");
    assert!(fake.calls_to("fence_red_packet").is_empty(), "the packet carries our epoch already");
    assert!(fake.calls_to("select_red_packet_serial").iter().all(|c| c.consistency == Consistency::Serial));

    // The grabber's row is there (another of their devices won): their grab as stored.
    fake.answer_with("select_red_packet_serial", vec![packet_row("open", 2, 1)]);
    fake.answer_with("grab_share", vec![lost(2, V::Int(1))]);
    fake.answer_with(
        "select_grab_serial",
        vec![Reply::Rows(vec![vec![V::BigInt(9), V::Int(1), V::BigInt(150), V::BigInt(4999)]])],
    );
    let again = store.grab_red_packet(FENCE, PACKET, UserId(9), 5000).await.unwrap();
    assert_eq!(again, GrabOutcome::AlreadyGrabbed(GrabRecord { user: UserId(9), share: 1, amount: 150, ts: 4999 }));

    // Every share handed out, or the time is up: nothing is written.
    fake.clear_calls();
    fake.answer_with("select_red_packet_serial", vec![packet_row("open", 2, 3), packet_row("open", 2, 0)]);
    assert_eq!(store.grab_red_packet(FENCE, PACKET, UserId(9), 5000).await.unwrap(), GrabOutcome::Empty);
    assert_eq!(store.grab_red_packet(FENCE, PACKET, UserId(9), 90_000).await.unwrap(), GrabOutcome::Expired);
    assert!(fake.calls_to("grab_share").is_empty());
    fake.stop().await;
}

/// A deposed owner hands out no share: a packet a later owner has written carries that
/// owner's epoch, and a group claimed since carries the later epoch even where the packet
/// does not yet. A packet an earlier owner wrote is raised to ours before we write it.
#[tokio::test]
async fn packet_writes_are_fenced_by_the_packet_and_by_the_group() {
    let (fake, store) = start().await;
    let writes = |fake: &FakeScylla| {
        let names = ["grab_share", "fence_red_packet", "move_red_packet"];
        fake.calls().iter().filter_map(|c| c.name()).filter(|n| names.contains(n)).collect::<Vec<_>>()
    };
    fake.on("select_group_epoch_serial", group_at(2));
    fake.answer_with("select_red_packet_serial", vec![packet_row("open", 3, 0), packet_row("pending", 3, 0)]);
    fenced(store.grab_red_packet(FENCE, PACKET, UserId(9), 5000).await, 3);
    let open = store.set_red_packet_state(FENCE, PACKET, RedPacketState::Pending, RedPacketState::Open).await;
    fenced(open, 3);

    fake.on("select_group_epoch_serial", group_at(4));
    fake.answer_with("select_red_packet_serial", vec![packet_row("open", 2, 0)]);
    fenced(store.grab_red_packet(FENCE, PACKET, UserId(9), 5000).await, 4);
    assert!(writes(&fake).is_empty(), "{:?}", writes(&fake));

    // Claimed between our reads and our write: the write's own condition refuses it.
    fake.on("select_group_epoch_serial", group_at(2));
    fake.answer_with("select_red_packet_serial", vec![packet_row("open", 2, 0)]);
    fake.answer_with(
        "grab_share",
        vec![Reply::lwt(
            false,
            &[
                ("next_share", V::Int(0)),
                ("epoch", V::BigInt(5)),
                ("state", V::Text("open".into())),
                ("share", V::Null),
            ],
        )],
    );
    fenced(store.grab_red_packet(FENCE, PACKET, UserId(9), 5000).await, 5);
    assert_eq!(fake.calls_to("grab_share").len(), 1, "not tried again");

    // An earlier owner's packet: raised to our epoch by an LWT that only raises, then grabbed.
    fake.clear_calls();
    fake.answer_with("select_red_packet_serial", vec![packet_row("open", 1, 0)]);
    assert!(matches!(store.grab_red_packet(FENCE, PACKET, UserId(9), 5000).await, Ok(GrabOutcome::Grabbed(_))));
    assert_eq!(writes(&fake), ["fence_red_packet", "grab_share"]);
    let raise = fake.calls_to("fence_red_packet").remove(0);
    assert_eq!(raise.values_of("epoch"), vec![V::BigInt(2), V::BigInt(2)], "SET epoch = 2 IF epoch < 2");
    assert!(raise.statements[0].text.ends_with("IF epoch < ?"));

    // The raise finds a later owner got there first.
    fake.clear_calls();
    fake.answer_with("select_red_packet_serial", vec![packet_row("open", 1, 0)]);
    fake.answer_with("fence_red_packet", vec![Reply::lwt(false, &[("epoch", V::BigInt(3))])]);
    fenced(store.grab_red_packet(FENCE, PACKET, UserId(9), 5000).await, 3);
    assert_eq!(writes(&fake), ["fence_red_packet"]);
    fake.stop().await;
}

/// A new packet goes into the due index before its own partition is written (an entry may
/// point at nothing; a packet must not be missing from the index), then its static row
/// `IF NOT EXISTS` with our epoch. The index is read by hour buckets, oldest first.
#[tokio::test]
async fn a_packet_is_indexed_before_it_is_written_and_the_index_is_read_by_hour() {
    let (fake, store) = start().await;
    fake.on("select_group_epoch_serial", group_at(2));
    let sent = packet(RedPacketState::Pending);
    assert_eq!(store.create_red_packet(FENCE, &sent, 90_000).await.unwrap(), sent);
    let names: Vec<_> = fake.calls().iter().map(|c| c.name().unwrap()).collect();
    assert_eq!(names, ["select_group_epoch_serial", "insert_due", "insert_red_packet"]);
    let insert = fake.calls_to("insert_red_packet").remove(0);
    assert_eq!(insert.value("shares"), V::List(vec![V::BigInt(100), V::BigInt(150), V::BigInt(50)]));
    assert_eq!((insert.value("epoch"), insert.value("state")), (V::BigInt(2), V::Text("pending".into())));
    let due = fake.calls_to("insert_due").remove(0);
    assert_eq!((due.value("bucket"), due.value("due_at")), (V::BigInt(0), V::BigInt(90_000)));

    // Resent: the packet as stored, with the shares drawn the first time.
    fake.answer_with("insert_red_packet", vec![Reply::lwt(false, &[("packet_id", V::BigInt(31))])]);
    fake.answer_with("select_red_packet_serial", vec![packet_row("open", 2, 0)]);
    assert_eq!(store.create_red_packet(FENCE, &sent, 90_000).await.unwrap(), packet(RedPacketState::Open));

    // A deposed owner creates nothing.
    fake.clear_calls();
    fake.on("select_group_epoch_serial", group_at(3));
    fenced(store.create_red_packet(FENCE, &sent, 90_000).await, 3);
    assert_eq!(fake.calls().len(), 1, "the fence check only");

    // Two days of hour buckets, up to `before`'s own.
    let before = 100 * HOUR_MS + 5;
    let entry = |at: u64, packet: i64| vec![V::BigInt(at as i64), V::BigInt(7), V::BigInt(packet)];
    fake.on("select_due", move |call: &Call| match call.value("bucket") {
        V::BigInt(60) => Reply::Rows(vec![entry(60 * HOUR_MS + 1, 31), entry(60 * HOUR_MS + 2, 32)]),
        V::BigInt(100) => Reply::Rows(vec![entry(100 * HOUR_MS, 33)]),
        _ => Reply::Default,
    });
    fake.clear_calls();
    let due = store.red_packets_due(before, 10).await.unwrap();
    let expected = [(60 * HOUR_MS + 1, 31), (60 * HOUR_MS + 2, 32), (100 * HOUR_MS, 33)];
    assert_eq!(due, expected.map(|(at, p)| (at, FENCE.group, RedPacketId(p))).to_vec());
    let reads = fake.calls_to("select_due");
    let mut buckets: Vec<i64> = reads.iter().map(|c| big(&c.value("bucket"))).collect();
    buckets.sort_unstable();
    assert_eq!(buckets, (52..=100).collect::<Vec<_>>(), "the 48 hours before, and before's own hour");
    assert!(reads.iter().all(|c| c.value("due_at") == V::BigInt(before as i64)), "due_at <= before");
    assert_eq!(store.red_packets_due(before, 2).await.unwrap().len(), 2, "stops at the limit");

    // Rescheduling writes the new entry, then deletes the old one.
    fake.clear_calls();
    store.reschedule_red_packet(PACKET, FENCE.group, 90_000, Some(4 * HOUR_MS)).await.unwrap();
    let calls = fake.calls();
    let names: Vec<_> = calls.iter().map(|c| c.name().unwrap()).collect();
    assert_eq!(names, ["insert_due", "delete_due"]);
    assert_eq!((calls[0].value("bucket"), calls[1].value("bucket")), (V::BigInt(4), V::BigInt(0)));
    store.reschedule_red_packet(PACKET, FENCE.group, 90_000, Some(90_000)).await.unwrap();
    assert_eq!(fake.calls().len(), 2, "to where it is: nothing to do (a delete would take it out)");
    fake.stop().await;
}

fn bytes_row(bytes: i64) -> Reply {
    Reply::Rows(vec![vec![V::BigInt(bytes), V::BigInt(41)]])
}

/// A user's media bytes are a compare-and-set: a refused reservation is tried again on the
/// count the refusal returned, a reservation over the quota writes nothing, a release stops
/// at zero, and a count that keeps moving gives up as unavailable after a bounded number
/// of rounds.
#[tokio::test]
async fn media_bytes_move_by_compare_and_set_within_the_quota() {
    let (fake, store) = start().await;
    let user = UserId(41);

    // A user with no row: the first reservation tests `bytes = null`.
    assert!(store.reserve_media_bytes(user, 100, 1000).await.unwrap());
    let first = fake.calls_to("set_first_media_bytes");
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].values_of("bytes"), vec![V::BigInt(100)], "SET bytes = 100 IF bytes = null");
    assert_eq!(fake.calls_to("select_media_bytes_serial")[0].consistency, Consistency::Serial);

    // 300 was read, but another upload made it 850 meanwhile: the next try expects 850.
    fake.clear_calls();
    fake.answer_with("select_media_bytes_serial", vec![bytes_row(300)]);
    fake.answer_with("set_media_bytes", vec![Reply::lwt(false, &[("bytes", V::BigInt(850))])]);
    assert!(store.reserve_media_bytes(user, 100, 1000).await.unwrap());
    let tries = fake.calls_to("set_media_bytes");
    assert_eq!(tries.len(), 2);
    assert_eq!(tries[0].values_of("bytes"), vec![V::BigInt(400), V::BigInt(300)], "SET 400 IF bytes = 300");
    assert_eq!(tries[1].values_of("bytes"), vec![V::BigInt(950), V::BigInt(850)], "SET 950 IF bytes = 850");
    assert_eq!(tries[1].value("user_id"), V::BigInt(41));
    assert_eq!(fake.calls_to("select_media_bytes_serial").len(), 1, "the refusal said enough");

    // ... and if the count it returns leaves no room, nothing more is written.
    fake.clear_calls();
    fake.answer_with("select_media_bytes_serial", vec![bytes_row(300)]);
    fake.answer_with("set_media_bytes", vec![Reply::lwt(false, &[("bytes", V::BigInt(950))])]);
    assert!(!store.reserve_media_bytes(user, 100, 1000).await.unwrap());
    assert_eq!(fake.calls_to("set_media_bytes").len(), 1);

    // Over the quota from the start: a read, no write.
    fake.clear_calls();
    fake.answer_with("select_media_bytes_serial", vec![bytes_row(990)]);
    assert!(!store.reserve_media_bytes(user, 11, 1000).await.unwrap());
    let names: Vec<_> = fake.calls().iter().map(|c| c.name().unwrap()).collect();
    assert_eq!(names, ["select_media_bytes_serial"], "reads only");

    // A release never goes below zero, and a user with nothing to release writes nothing.
    fake.clear_calls();
    fake.answer_with("select_media_bytes_serial", vec![bytes_row(50)]);
    store.release_media_bytes(user, 80).await.unwrap();
    assert_eq!(fake.calls_to("set_media_bytes")[0].values_of("bytes"), vec![V::BigInt(0), V::BigInt(50)]);
    fake.clear_calls();
    store.release_media_bytes(user, 80).await.unwrap();
    assert!(fake.calls_to("set_media_bytes").is_empty() && fake.calls_to("set_first_media_bytes").is_empty());

    // Another upload wins every round: the reservation gives up, it does not spin.
    fake.clear_calls();
    let moved = std::sync::atomic::AtomicI64::new(0);
    fake.on("set_media_bytes", move |_| {
        let found = moved.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        Reply::lwt(false, &[("bytes", V::BigInt(found))])
    });
    fake.answer_with("select_media_bytes_serial", vec![bytes_row(0)]);
    let gave_up = store.reserve_media_bytes(user, 1, 1000).await;
    assert!(matches!(gave_up, Err(StoreError::Unavailable(_))), "{gave_up:?}");
    assert_eq!(fake.calls_to("set_media_bytes").len(), 20);

    // The plain read: no row is zero, a negative count is corrupt.
    assert_eq!(store.media_bytes(UserId(42)).await.unwrap(), 0);
    assert_eq!(fake.calls_to("select_media_bytes")[0].consistency, Consistency::LocalQuorum);
    fake.answer_with("select_media_bytes", vec![Reply::Rows(vec![vec![V::BigInt(-5)]])]);
    assert!(matches!(store.media_bytes(user).await, Err(StoreError::Corrupt(_))));
    fake.stop().await;
}

/// A PDF uploaded by user 41.
fn pdf(id: u64) -> MediaRecord {
    MediaRecord {
        id: MediaId(id),
        uploader: UserId(41),
        kind: MessageKind::File,
        mime: "application/pdf".into(),
        size: 1234,
        sha256: "ab".repeat(32),
        dimensions: None,
        thumbnail: None,
        created_at: 9,
    }
}

/// A media record is the static row of its partition, inserted `IF NOT EXISTS`, with width
/// and height unset when it has no dimensions (thumb_width and thumb_height when it has no
/// thumbnail); its groups are clustering rows, read past the
/// row a partition without links answers with.
#[tokio::test]
async fn media_records_are_static_rows_and_their_groups_clustering_rows() {
    let (fake, store) = start().await;
    let file = pdf(77);
    assert!(store.insert_media(&file, 90_000).await.unwrap());
    let insert = fake.calls_to("insert_media").remove(0);
    assert_eq!((insert.value("kind"), insert.value("size")), (V::Text("file".into()), V::BigInt(1234)));
    assert_eq!((insert.value("width"), insert.value("height")), (V::Unset, V::Unset), "no tombstones");
    assert_eq!((insert.value("thumb_width"), insert.value("thumb_height")), (V::Unset, V::Unset), "no tombstones");
    let image = MediaRecord {
        id: MediaId(79),
        kind: MessageKind::Image,
        mime: "image/png".into(),
        dimensions: Some((640, 480)),
        thumbnail: Some((320, 240)),
        ..file.clone()
    };
    assert!(store.insert_media(&image, 90_000).await.unwrap());
    let insert = fake.calls_to("insert_media").remove(1);
    assert_eq!((insert.value("width"), insert.value("height")), (V::BigInt(640), V::BigInt(480)));
    assert_eq!((insert.value("thumb_width"), insert.value("thumb_height")), (V::BigInt(320), V::BigInt(240)));
    fake.answer_with("insert_media", vec![Reply::lwt(false, &[("uploader", V::BigInt(8))])]);
    assert!(!store.insert_media(&file, 90_000).await.unwrap(), "an id is taken once");

    let image_row = vec![
        V::BigInt(77),
        V::BigInt(41),
        V::Text("image".into()),
        V::Text("image/png".into()),
        V::BigInt(10),
        V::Text("ab".repeat(32)),
        V::BigInt(640),
        V::BigInt(480),
        V::BigInt(320),
        V::BigInt(240),
        V::BigInt(9),
    ];
    let links_only = [vec![V::BigInt(77)], vec![V::Null; 10]].concat();
    fake.answer_with("select_media", vec![Reply::Rows(vec![image_row]), Reply::Rows(vec![links_only])]);
    let image = store.media(MediaId(77)).await.unwrap().unwrap();
    assert_eq!((image.kind, image.dimensions), (MessageKind::Image, Some((640, 480))));
    assert_eq!(image.thumbnail, Some((320, 240)));
    assert_eq!(store.media(MediaId(77)).await.unwrap(), None, "links without a record are no record");
    assert_eq!(store.media(MediaId(78)).await.unwrap(), None);

    fake.answer_with(
        "select_media_groups",
        vec![Reply::Rows(vec![vec![V::Null]]), Reply::Rows(vec![vec![V::BigInt(10)], vec![V::BigInt(30)]])],
    );
    assert_eq!(store.media_groups(MediaId(77)).await.unwrap(), vec![], "the static row alone is no group");
    assert_eq!(store.media_groups(MediaId(77)).await.unwrap(), vec![GroupId(10), GroupId(30)]);

    fake.clear_calls();
    store.link_media_group(MediaId(77), GroupId(30)).await.unwrap();
    store.delete_media(MediaId(77)).await.unwrap();
    let names: Vec<_> = fake.calls().iter().map(|c| c.name().unwrap()).collect();
    assert_eq!(names, ["link_media_group", "delete_media"], "plain writes, one each");
    assert_eq!(fake.calls_to("link_media_group")[0].value("group_id"), V::BigInt(30));
    fake.stop().await;
}

/// A new media object goes into the index of unsent media before its record is written (an
/// entry may point at nothing; a record must not be missing from the index). The index is
/// read by hour buckets, oldest first, as the red packets' is, and forgets by a plain delete.
#[tokio::test]
async fn unsent_media_are_indexed_before_they_are_written_and_read_by_hour() {
    let (fake, store) = start().await;
    assert!(store.insert_media(&pdf(77), 90_000).await.unwrap());
    let names: Vec<_> = fake.calls().iter().map(|c| c.name().unwrap()).collect();
    assert_eq!(names, ["insert_unsent_media", "insert_media"]);
    let entry = fake.calls_to("insert_unsent_media").remove(0);
    assert_eq!((entry.value("bucket"), entry.value("due_at")), (V::BigInt(0), V::BigInt(90_000)));
    assert_eq!(entry.value("media_id"), V::BigInt(77));

    let before = 100 * HOUR_MS + 5;
    let row = |at: u64, media: i64| vec![V::BigInt(at as i64), V::BigInt(media)];
    fake.on("select_unsent_media", move |call: &Call| match call.value("bucket") {
        V::BigInt(60) => Reply::Rows(vec![row(60 * HOUR_MS + 1, 31), row(60 * HOUR_MS + 2, 32)]),
        V::BigInt(100) => Reply::Rows(vec![row(100 * HOUR_MS, 33)]),
        _ => Reply::Default,
    });
    fake.clear_calls();
    let due = store.unsent_media(before, 10).await.unwrap();
    let expected = [(60 * HOUR_MS + 1, 31), (60 * HOUR_MS + 2, 32), (100 * HOUR_MS, 33)];
    assert_eq!(due, expected.map(|(at, m)| (at, MediaId(m))).to_vec());
    let reads = fake.calls_to("select_unsent_media");
    let mut buckets: Vec<i64> = reads.iter().map(|c| big(&c.value("bucket"))).collect();
    buckets.sort_unstable();
    assert_eq!(buckets, (52..=100).collect::<Vec<_>>(), "the 48 hours before, and before's own hour");
    assert!(reads.iter().all(|c| c.value("due_at") == V::BigInt(before as i64)), "due_at <= before");
    assert_eq!(store.unsent_media(before, 2).await.unwrap().len(), 2, "stops at the limit");

    fake.clear_calls();
    store.forget_unsent_media(4 * HOUR_MS, MediaId(77)).await.unwrap();
    let forget = fake.calls_to("delete_unsent_media").remove(0);
    assert_eq!((forget.value("bucket"), forget.value("due_at")), (V::BigInt(4), V::BigInt(4 * HOUR_MS as i64)));
    assert_eq!(fake.calls().len(), 1, "one plain delete");
    fake.stop().await;
}

/// A trim moves the group's trim point by LWT before it deletes anything (readers filter by
/// it, so they never see a hole), only while the retention is the one the trim was decided
/// under, follows a concurrent trim that moved it first, never goes past the log's end, and
/// deletes by range, bucket by bucket.
#[tokio::test]
async fn a_trim_moves_the_trim_point_first_then_deletes_each_bucket_by_range() {
    let (fake, store) = start().await;
    fake.answer_with("select_retention", vec![Reply::Rows(vec![vec![V::Int(7), V::BigInt(100)]])]);
    fake.on("select_bucket_last", log_ending(&[4096, 5000]));
    // Another node's trim moved the point to 4500 first.
    let other_trim = Reply::lwt(false, &[("trimmed_through", V::BigInt(4500)), ("retention_days", V::Int(7))]);
    fake.answer_with("set_trimmed", vec![other_trim, Reply::lwt(true, &[])]);
    assert_eq!(store.trim_log(FENCE.group, 9_999, 7).await.unwrap(), 5000, "clamped to the log's end");
    let moves: Vec<(Vec<V>, V)> = fake
        .calls_to("set_trimmed")
        .iter()
        .map(|c| (c.values_of("trimmed_through"), c.value("retention_days")))
        .collect();
    assert_eq!(
        moves,
        vec![(vec![V::BigInt(5000), V::BigInt(100)], V::Int(7)), (vec![V::BigInt(5000), V::BigInt(4500)], V::Int(7)),],
        "SET 5000 IF 100 AND 7 days, then IF what the other trim left"
    );
    let deletes = fake.calls_to("trim_bucket");
    let ranges: Vec<(V, Vec<V>)> = deletes.iter().map(|c| (c.value("bucket"), c.values_of("seq"))).collect();
    assert_eq!(
        ranges,
        vec![(V::BigInt(0), vec![V::BigInt(0), V::BigInt(5000)]), (V::BigInt(1), vec![V::BigInt(0), V::BigInt(5000)]),],
        "from the start of the bucket of the previous trim point: seq > 0 AND seq <= 5000"
    );
    let names: Vec<_> = fake.calls().iter().filter_map(|c| c.name()).collect();
    let last_move = names.iter().rposition(|n| *n == "set_trimmed").unwrap();
    let first_delete = names.iter().position(|n| *n == "trim_bucket").unwrap();
    assert!(last_move < first_delete, "the point moves before anything is deleted: {names:?}");

    // An owner lengthened the retention after the sweeper read it: nothing moves or goes.
    fake.clear_calls();
    fake.answer_with("select_retention", vec![Reply::Rows(vec![vec![V::Int(30), V::BigInt(100)]])]);
    fake.answer_with(
        "set_trimmed",
        vec![Reply::lwt(false, &[("trimmed_through", V::BigInt(100)), ("retention_days", V::Int(30))])],
    );
    assert_eq!(store.trim_log(FENCE.group, 4000, 7).await.unwrap(), 100);
    assert_eq!(fake.calls_to("set_trimmed").len(), 1, "not tried again");
    assert!(fake.calls_to("trim_bucket").is_empty(), "nothing deleted under a changed retention");

    // A group never trimmed takes its first point by the same condition; one that does not
    // exist is trimmed by nothing.
    fake.clear_calls();
    fake.on("select_bucket_last", log_ending(&[30]));
    let missing = Reply::lwt(false, &[("trimmed_through", V::Null), ("retention_days", V::Null)]);
    fake.answer_with("set_first_trimmed", vec![missing]);
    assert_eq!(store.trim_log(GroupId(9), 20, 7).await.unwrap(), 0);
    assert!(fake.calls_to("trim_bucket").is_empty(), "nothing deleted for a missing group");
    let first = fake.calls_to("set_first_trimmed").remove(0);
    assert!(first.statements[0].text.ends_with("IF trimmed_through = null AND retention_days = ?"));
    assert_eq!((first.value("trimmed_through"), first.value("retention_days")), (V::BigInt(20), V::Int(7)));
    fake.stop().await;
}

/// Reading back from the end stops at the trim point: the buckets below it are empty, and
/// walking down them would cost a query each (a group's actor reads this way when it starts).
#[tokio::test]
async fn reading_backwards_stops_at_the_trim_point() {
    let (fake, store) = start().await;
    fake.on("select_retention", |_: &Call| Reply::Rows(vec![vec![V::Int(7), V::BigInt(3 * 4096 + 10)]]));
    fake.on("select_bucket_last", log_ending(&[4096, 8192, 12288, 12300]));
    fake.answer_with("select_before", vec![Reply::Rows(vec![message_row(12300)])]);
    let page = store.messages_before(FENCE.group, u64::MAX, 100).await.unwrap();
    assert_eq!(page.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![12300]);
    let buckets: Vec<V> = fake.calls_to("select_before").iter().map(|c| c.value("bucket")).collect();
    assert_eq!(buckets, vec![V::BigInt(3)], "not buckets 2, 1 and 0 below the trim point");

    // Below the trim point nothing is read at all.
    fake.clear_calls();
    assert!(store.messages_before(FENCE.group, 12_000, 100).await.unwrap().is_empty());
    assert!(fake.calls_to("select_before").is_empty());
    fake.stop().await;
}
