//! The actor system in-process, without sockets: sessions fed frames directly, over the
//! real embedded store. Covers supervision (a crashing group actor harms no other),
//! idle retirement and reactivation, and user actors leaving with their last connection.

use actors::config::PasswordCost;
use actors::outbox::Outbox;
use actors::session::Session;
use actors::store::*;
use actors::{ActorsConfig, System};
use async_trait::async_trait;
use bytes::Bytes;
use schema::frames::Role;
use schema::records::*;
use schema::{GroupId, MediaId, RedPacketId, Seq, UserId};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use troupe::store::embedded::EmbeddedStore;

/// One in-process connection.
struct Conn {
    session: Session,
    outbox: Arc<Outbox>,
    backlog: VecDeque<Value>,
    next_id: u64,
}

impl Conn {
    fn new(system: &Arc<System>) -> Conn {
        let session = system.open_session();
        let outbox = session.outbox().clone();
        Conn { session, outbox, backlog: VecDeque::new(), next_id: 1 }
    }

    async fn pump(&mut self, wait: Duration) -> bool {
        let mut batch: Vec<Bytes> = Vec::new();
        if !self.outbox.has_events() && tokio::time::timeout(wait, self.outbox.ready()).await.is_err() {
            return false;
        }
        self.outbox.take(usize::MAX, &mut batch);
        for event in batch {
            self.backlog.push_back(serde_json::from_slice(&event).unwrap());
        }
        true
    }

    /// Sends a request and returns its reply or error event (None if none comes).
    async fn request(&mut self, op: &str, mut fields: Value) -> Option<Value> {
        let id = self.next_id;
        self.next_id += 1;
        fields["id"] = json!(id);
        fields["op"] = json!(op);
        self.session.handle_text(&fields.to_string()).await;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
        loop {
            if let Some(i) = self.backlog.iter().position(|e| e["id"] == id) {
                return self.backlog.remove(i);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() || !self.pump(left).await {
                return None;
            }
        }
    }

    /// The replies (or errors) to requests sent by hand with these ids, by id.
    async fn answers_to(&mut self, ids: &[u64]) -> std::collections::HashMap<u64, Value> {
        let mut answers = std::collections::HashMap::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while answers.len() < ids.len() {
            assert!(tokio::time::Instant::now() < deadline, "answers: {answers:?}");
            self.pump(Duration::from_millis(100)).await;
            while let Some(i) = self.backlog.iter().position(|e| ids.iter().any(|id| e["id"] == *id)) {
                let event = self.backlog.remove(i).unwrap();
                answers.insert(event["id"].as_u64().unwrap(), event);
            }
        }
        answers
    }

    async fn ok(&mut self, op: &str, fields: Value) -> Value {
        let reply = self.request(op, fields).await.expect("a reply");
        assert_eq!(reply["event"], "reply", "{op}: {reply}");
        reply["result"].clone()
    }

    async fn next_message(&mut self) -> Option<Value> {
        loop {
            if let Some(i) = self.backlog.iter().position(|e| e["event"] == "message") {
                return self.backlog.remove(i);
            }
            if !self.pump(Duration::from_millis(1500)).await {
                return None;
            }
        }
    }
}

async fn user(system: &Arc<System>, name: &str) -> (Conn, u64) {
    let mut conn = Conn::new(system);
    conn.ok("register", json!({ "username": name, "password": "password123" })).await;
    let session = conn.ok("login", json!({ "username": name, "password": "password123" })).await;
    let id = session["profile"]["user"].as_u64().unwrap();
    (conn, id)
}

/// Test settings: cheap hashing, and no send limit (the tests send in bulk, like a bench).
fn config() -> ActorsConfig {
    let unlimited = actors::limits::Rate { per_second: 1e6, burst: 1e6 };
    let rate_limits =
        actors::limits::RateLimits { connection_sends: unlimited, user_sends: unlimited, ..Default::default() };
    ActorsConfig { password_cost: PasswordCost::Test, rate_limits, ..ActorsConfig::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_group_actor_harms_no_other_and_restarts_on_next_use() {
    let dir = tempfile::tempdir().unwrap();
    let store = Faulty::open(dir.path());
    let system = System::start(config(), store.clone(), None).await.unwrap();
    let (mut alice, _) = user(&system, "alice").await;
    let (mut bob, _) = user(&system, "bob").await;
    let doomed = alice.ok("create_group", json!({ "name": "doomed", "open": true })).await["group"].as_u64().unwrap();
    let healthy = alice.ok("create_group", json!({ "name": "healthy", "open": true })).await["group"].as_u64().unwrap();
    for group in [doomed, healthy] {
        bob.ok("join", json!({ "group": group })).await;
    }
    let send = |group: u64, id: &str| json!({ "group": group, "client_msg_id": id, "type": "text", "body": "hi" });

    store.panic_on.store(doomed, Ordering::SeqCst);
    assert!(alice.request("send", send(doomed, "x")).await.is_none(), "the crash took that request with it");
    assert_eq!(system.groups.len(), 1, "the supervisor dropped the dead actor; the other lives");

    let ack = alice.ok("send", send(healthy, "y")).await;
    assert_eq!(ack["seq"], 1);
    assert_eq!(bob.next_message().await.unwrap()["group"], healthy);

    // The next request starts a fresh actor from the store; the retried send lands once.
    let ack = alice.ok("send", send(doomed, "x")).await;
    assert_eq!((ack["seq"].as_u64(), ack["duplicate"].as_bool()), (Some(1), Some(false)));
    assert_eq!(bob.next_message().await.unwrap()["group"], doomed);
    assert_eq!(system.groups.len(), 2);
}

/// A failed commit: every request the group had queued or still receives is answered (none
/// is dropped), the log stays gapless, and retries with the same ids land exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_answers_every_request_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Faulty::open(dir.path());
    let system = System::start(config(), store.clone(), None).await.unwrap();
    let (mut alice, _) = user(&system, "alice").await;
    let group = alice.ok("create_group", json!({ "name": "shaky", "open": true })).await["group"].as_u64().unwrap();
    store.fail_append.store(group, Ordering::SeqCst);
    let first_id = alice.next_id;
    for n in 0..200 {
        let frame = json!({ "id": first_id + n, "op": "send", "group": group, "client_msg_id": format!("m{n}"), "type": "text", "body": "x" });
        alice.session.handle_text(&frame.to_string()).await;
    }
    alice.next_id += 200;
    let mut failed = Vec::new();
    let mut acked = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while failed.len() + acked.len() < 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of 200 requests were answered",
            failed.len() + acked.len()
        );
        alice.pump(Duration::from_millis(200)).await;
        while let Some(i) = alice.backlog.iter().position(|e| e["id"].as_u64().is_some_and(|id| id >= first_id)) {
            let event = alice.backlog.remove(i).unwrap();
            let n = event["id"].as_u64().unwrap() - first_id;
            match event["event"].as_str() {
                Some("reply") => acked.push((n, event["result"]["seq"].as_u64().unwrap())),
                _ => {
                    assert_eq!(event["code"], "unavailable", "{event}");
                    failed.push(n);
                }
            }
        }
    }
    assert!(!failed.is_empty(), "the injected failure hit at least the first batch");
    for n in &failed {
        let ack = alice
            .ok("send", json!({ "group": group, "client_msg_id": format!("m{n}"), "type": "text", "body": "x" }))
            .await;
        assert_eq!(ack["duplicate"], false, "the failed batch did not land, so the retry is new");
    }
    let mut seqs = Vec::new();
    let mut after = 0;
    loop {
        let page = alice.ok("history", json!({ "group": group, "after": after, "limit": 100 })).await;
        let got: Vec<u64> = page["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
        if let Some(last) = got.last() {
            after = *last;
        }
        seqs.extend(got);
        if !page["has_more"].as_bool().unwrap() {
            break;
        }
    }
    assert_eq!(seqs, (1..=200).collect::<Vec<u64>>(), "200 messages, gapless, none twice");
}

/// A member removed while their send waits for the commit under way: that send is refused,
/// it does not land after their departure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_members_queued_send_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Faulty::open(dir.path());
    let system = System::start(config(), store.clone(), None).await.unwrap();
    let (mut owner, _) = user(&system, "owner").await;
    let (mut eve, eve_id) = user(&system, "eve").await;
    let group = owner.ok("create_group", json!({ "name": "g", "open": true })).await["group"].as_u64().unwrap();
    eve.ok("join", json!({ "group": group })).await;
    store.slow_append.store(group, Ordering::SeqCst);
    // First send goes into the (slow) commit; the second queues behind it.
    for (id, cmid) in [(100, "e1"), (101, "e2")] {
        let frame =
            json!({ "id": id, "op": "send", "group": group, "client_msg_id": cmid, "type": "text", "body": "x" });
        eve.session.handle_text(&frame.to_string()).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    owner.ok("remove_member", json!({ "group": group, "user": eve_id })).await;
    let answers = eve.answers_to(&[100, 101]).await;
    assert_eq!(answers[&100]["result"]["seq"], 1, "the send already in the commit lands");
    assert_eq!(answers[&101]["code"], "not_found", "the queued one does not");
    store.slow_append.store(0, Ordering::SeqCst);
    let page = owner.ok("history", json!({ "group": group })).await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 1);
}

/// A group handed off while a commit is under way finishes that commit (its sender is
/// acked) before what was queued behind it goes to the successor, which then cannot depose
/// it mid-commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handed_off_group_finishes_its_commit_before_passing_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = Faulty::open(dir.path());
    let system = System::start(config(), store.clone(), None).await.unwrap();
    let (mut owner, _) = user(&system, "owner").await;
    let group = owner.ok("create_group", json!({ "name": "g", "open": true })).await["group"].as_u64().unwrap();
    owner.ok("group_info", json!({ "group": group })).await;
    store.slow_append.store(group, Ordering::SeqCst);
    for (id, cmid) in [(100, "h1"), (101, "h2")] {
        let frame =
            json!({ "id": id, "op": "send", "group": group, "client_msg_id": cmid, "type": "text", "body": "x" });
        owner.session.handle_text(&frame.to_string()).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let entry = system.groups.get(&GroupId(group)).expect("the group's actor is live");
    entry.actor.send_message(actors::group::GroupMsg::Handoff).expect("handoff");
    let answers = owner.answers_to(&[100, 101]).await;
    store.slow_append.store(0, Ordering::SeqCst);
    assert_eq!(answers[&100]["result"]["seq"], 1, "the commit under way lands and is acked: {}", answers[&100]);
    assert_eq!(answers[&101]["result"]["seq"], 2, "the queued send lands after it: {}", answers[&101]);
}

/// A red packet whose message was queued when its group moved is posted by the new owner,
/// once, and its sender is debited once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_red_packet_queued_at_a_handoff_is_posted_by_the_new_owner() {
    let dir = tempfile::tempdir().unwrap();
    let store = Faulty::open(dir.path());
    let system = System::start(config(), store.clone(), None).await.unwrap();
    let (mut owner, owner_id) = user(&system, "owner").await;
    let group = owner.ok("create_group", json!({ "name": "g", "open": true })).await["group"].as_u64().unwrap();
    actors::wallet::credit(&*store.inner, UserId(owner_id), 500, "k").await.unwrap();
    owner.ok("group_info", json!({ "group": group })).await;
    store.slow_append.store(group, Ordering::SeqCst);
    let text = json!({ "id": 100, "op": "send", "group": group, "client_msg_id": "t1", "type": "text", "body": "x" });
    owner.session.handle_text(&text.to_string()).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    let body = json!({ "total": 500, "count": 1, "kind": "equal" });
    let packet =
        json!({ "id": 101, "op": "send", "group": group, "client_msg_id": "rp", "type": "red_packet", "body": body });
    owner.session.handle_text(&packet.to_string()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let entry = system.groups.get(&GroupId(group)).expect("the group's actor is live");
    entry.actor.send_message(actors::group::GroupMsg::Handoff).expect("handoff");
    let answers = owner.answers_to(&[100, 101]).await;
    store.slow_append.store(0, Ordering::SeqCst);
    assert_eq!(answers[&100]["result"]["seq"], 1, "{}", answers[&100]);
    assert_eq!(answers[&101]["result"]["seq"], 2, "the packet's message lands after the move: {}", answers[&101]);
    let page = owner.ok("history", json!({ "group": group })).await;
    let messages = page["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!((messages[1]["type"].as_str(), messages[1]["body"]["total"].as_i64()), (Some("red_packet"), Some(500)));
    assert_eq!(store.balance(UserId(owner_id)).await.unwrap(), 0, "debited once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_group_actors_retire_and_come_back_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let config = ActorsConfig { group_idle_after: Duration::from_millis(200), ..config() };
    let system = System::start(config, store, None).await.unwrap();
    let (mut alice, _) = user(&system, "alice").await;
    let group = alice.ok("create_group", json!({ "name": "sleepy", "open": true })).await["group"].as_u64().unwrap();
    let send = |id: &str| json!({ "group": group, "client_msg_id": id, "type": "text", "body": "hi" });
    alice.ok("send", send("a")).await;
    assert_eq!(system.groups.len(), 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !system.groups.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the idle actor never retired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ack = alice.ok("send", send("b")).await;
    assert_eq!(ack["seq"], 2, "the seq continues from the store");
    let dup = alice.ok("send", send("a")).await;
    assert_eq!((dup["seq"].as_u64(), dup["duplicate"].as_bool()), (Some(1), Some(true)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_actors_live_exactly_as_long_as_their_connections() {
    let dir = tempfile::tempdir().unwrap();
    let system = System::start(config(), EmbeddedStore::open(dir.path()).unwrap(), None).await.unwrap();
    let (alice, alice_id) = user(&system, "alice").await;
    let session = {
        let mut second = Conn::new(&system);
        let token = {
            let mut login = Conn::new(&system);
            let s = login.ok("login", json!({ "username": "alice", "password": "password123" })).await;
            login.session.close().await;
            s["token"].as_str().unwrap().to_owned()
        };
        second.ok("auth", json!({ "token": token })).await;
        second
    };
    assert_eq!(system.users.len(), 1, "one actor for all of a user's connections");
    assert_eq!(system.fanout.connections(UserId(alice_id)).map(|c| c.len()), Some(2));
    assert_eq!(system.expiries.len(), 2, "each connection waits for its session's end");
    alice.session.close().await;
    session.session.close().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !system.users.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the user actor outlived its connections");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(system.fanout.counts(), (0, 0));
    assert!(system.expiries.is_empty(), "a closed connection no longer waits for its session's end");
}

/// The embedded store with injectable faults, each armed with a group id and fired once:
/// `panic_on` panics inside the group's actor (in the client-id lookup a send makes),
/// `fail_append` fails the group's next commit; `slow_append` delays every commit of that
/// group by 300 ms; `trim_on_read` trims a group's log (as the retention sweeper would) just
/// before the next read of its messages.
struct Faulty {
    inner: Arc<EmbeddedStore>,
    panic_on: AtomicU64,
    fail_append: AtomicU64,
    slow_append: AtomicU64,
    trim_on_read: std::sync::Mutex<Option<(GroupId, Seq)>>,
}

impl Faulty {
    fn open(dir: &std::path::Path) -> Arc<Faulty> {
        Arc::new(Faulty {
            inner: EmbeddedStore::open(dir).unwrap(),
            panic_on: AtomicU64::new(0),
            fail_append: AtomicU64::new(0),
            slow_append: AtomicU64::new(0),
            trim_on_read: std::sync::Mutex::new(None),
        })
    }
}

#[async_trait]
impl AccountStore for Faulty {
    async fn insert_user(&self, user: &UserRecord) -> StoreResult<bool> {
        self.inner.insert_user(user).await
    }
    async fn user(&self, id: UserId) -> StoreResult<Option<UserRecord>> {
        self.inner.user(id).await
    }
    async fn delete_user(&self, id: UserId) -> StoreResult<()> {
        self.inner.delete_user(id).await
    }
    async fn update_profile(
        &self,
        id: UserId,
        nickname: Option<&str>,
        avatar_url: Option<&str>,
    ) -> StoreResult<Option<UserRecord>> {
        self.inner.update_profile(id, nickname, avatar_url).await
    }
    async fn claim_username(&self, username: &str, credential: &CredentialRecord) -> StoreResult<bool> {
        self.inner.claim_username(username, credential).await
    }
    async fn credential(&self, username: &str) -> StoreResult<Option<CredentialRecord>> {
        self.inner.credential(username).await
    }
    async fn insert_session(&self, token: &TokenHash, session: &SessionRecord) -> StoreResult<()> {
        self.inner.insert_session(token, session).await
    }
    async fn session(&self, token: &TokenHash) -> StoreResult<Option<SessionRecord>> {
        self.inner.session(token).await
    }
    async fn delete_session(&self, token: &TokenHash) -> StoreResult<()> {
        self.inner.delete_session(token).await
    }
}

#[async_trait]
impl GroupStore for Faulty {
    async fn create_group(&self, group: &GroupRecord, owner: &MemberRecord) -> StoreResult<bool> {
        self.inner.create_group(group, owner).await
    }
    async fn claim_group(&self, group: GroupId) -> StoreResult<Option<Fence>> {
        self.inner.claim_group(group).await
    }
    async fn group(&self, id: GroupId) -> StoreResult<Option<GroupRecord>> {
        self.inner.group(id).await
    }
    async fn member(&self, group: GroupId, user: UserId) -> StoreResult<Option<MemberRecord>> {
        self.inner.member(group, user).await
    }
    async fn members(&self, group: GroupId, after: Option<UserId>, limit: usize) -> StoreResult<Vec<MemberRecord>> {
        self.inner.members(group, after, limit).await
    }
    async fn add_member_if_below_cap(&self, fence: Fence, member: &MemberRecord) -> StoreResult<AddMemberOutcome> {
        self.inner.add_member_if_below_cap(fence, member).await
    }
    async fn remove_member(&self, fence: Fence, user: UserId) -> StoreResult<Option<u32>> {
        self.inner.remove_member(fence, user).await
    }
    async fn set_member_role(&self, fence: Fence, user: UserId, role: Role) -> StoreResult<bool> {
        self.inner.set_member_role(fence, user, role).await
    }
    async fn transfer_ownership(&self, fence: Fence, from: UserId, to: UserId) -> StoreResult<bool> {
        self.inner.transfer_ownership(fence, from, to).await
    }
    async fn update_group(
        &self,
        fence: Fence,
        name: Option<&str>,
        open: Option<bool>,
    ) -> StoreResult<Option<GroupRecord>> {
        self.inner.update_group(fence, name, open).await
    }
    async fn dissolve_group(&self, fence: Fence) -> StoreResult<bool> {
        self.inner.dissolve_group(fence).await
    }
}

#[async_trait]
impl UserGroupStore for Faulty {
    async fn link_user_group(&self, user: UserId, link: &UserGroupRecord) -> StoreResult<()> {
        self.inner.link_user_group(user, link).await
    }
    async fn unlink_user_group(&self, user: UserId, group: GroupId) -> StoreResult<()> {
        self.inner.unlink_user_group(user, group).await
    }
    async fn user_groups(&self, user: UserId) -> StoreResult<Vec<UserGroupRecord>> {
        self.inner.user_groups(user).await
    }
    async fn user_group(&self, user: UserId, group: GroupId) -> StoreResult<Option<UserGroupRecord>> {
        self.inner.user_group(user, group).await
    }
    async fn advance_read_mark(&self, user: UserId, group: GroupId, seq: Seq) -> StoreResult<Option<Seq>> {
        self.inner.advance_read_mark(user, group, seq).await
    }
    fn advance_read_marks_then(&self, group: GroupId, marks: Vec<(UserId, Seq)>, done: WriteDone) {
        self.inner.advance_read_marks_then(group, marks, done)
    }
}

#[async_trait]
impl MessageStore for Faulty {
    async fn append_messages(&self, fence: Fence, after: Seq, messages: &[MessageRecord]) -> StoreResult<()> {
        let group = fence.group;
        if self.fail_append.compare_exchange(group.0, 0, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            return Err(StoreError::Unavailable("injected commit failure".into()));
        }
        if self.slow_append.load(Ordering::SeqCst) == group.0 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        self.inner.append_messages(fence, after, messages).await
    }
    fn append_messages_then(&self, fence: Fence, after: Seq, messages: Vec<MessageRecord>, done: WriteDone) {
        let group = fence.group;
        if self.fail_append.compare_exchange(group.0, 0, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            return done(Err(StoreError::Unavailable("injected commit failure".into())));
        }
        if self.slow_append.load(Ordering::SeqCst) == group.0 {
            let inner = self.inner.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                inner.append_messages_then(fence, after, messages, done);
            });
            return;
        }
        self.inner.append_messages_then(fence, after, messages, done)
    }
    async fn last_seq(&self, group: GroupId) -> StoreResult<Seq> {
        self.inner.last_seq(group).await
    }
    async fn messages_after(&self, group: GroupId, after: Seq, limit: usize) -> StoreResult<Vec<MessageRecord>> {
        let trim = self.trim_on_read.lock().unwrap().take_if(|(armed, _)| *armed == group);
        if let Some((_, through)) = trim {
            let days = self.inner.retention(group).await?.days;
            self.inner.trim_log(group, through, days).await?;
        }
        self.inner.messages_after(group, after, limit).await
    }
    async fn messages_before(&self, group: GroupId, before: Seq, limit: usize) -> StoreResult<Vec<MessageRecord>> {
        self.inner.messages_before(group, before, limit).await
    }
    async fn message_by_client_id(
        &self,
        group: GroupId,
        sender: UserId,
        client_msg_id: &str,
    ) -> StoreResult<Option<(Seq, u64)>> {
        if self.panic_on.compare_exchange(group.0, 0, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            panic!("injected fault in group {group}");
        }
        self.inner.message_by_client_id(group, sender, client_msg_id).await
    }
}

#[async_trait]
impl RetentionStore for Faulty {
    async fn set_retention_days(&self, fence: Fence, days: u32) -> StoreResult<bool> {
        self.inner.set_retention_days(fence, days).await
    }
    async fn retention(&self, group: GroupId) -> StoreResult<Retention> {
        self.inner.retention(group).await
    }
    async fn retained_groups(&self, after: Option<GroupId>, limit: usize) -> StoreResult<Vec<(GroupId, Retention)>> {
        self.inner.retained_groups(after, limit).await
    }
    async fn trim_log(&self, group: GroupId, through: Seq, days: u32) -> StoreResult<Seq> {
        self.inner.trim_log(group, through, days).await
    }
}

#[async_trait]
impl WalletStore for Faulty {
    async fn apply_ledger_entry(&self, user: UserId, entry: &LedgerEntry) -> StoreResult<LedgerOutcome> {
        self.inner.apply_ledger_entry(user, entry).await
    }
    async fn balance(&self, user: UserId) -> StoreResult<i64> {
        self.inner.balance(user).await
    }
    async fn ledger(&self, user: UserId, limit: usize) -> StoreResult<Vec<LedgerEntry>> {
        self.inner.ledger(user, limit).await
    }
}

#[async_trait]
impl RedPacketStore for Faulty {
    async fn create_red_packet(
        &self,
        fence: Fence,
        packet: &RedPacketRecord,
        due_at: u64,
    ) -> StoreResult<RedPacketRecord> {
        self.inner.create_red_packet(fence, packet, due_at).await
    }
    async fn red_packet(&self, id: RedPacketId) -> StoreResult<Option<RedPacketRecord>> {
        self.inner.red_packet(id).await
    }
    async fn red_packet_grabs(&self, id: RedPacketId) -> StoreResult<Vec<GrabRecord>> {
        self.inner.red_packet_grabs(id).await
    }
    async fn set_red_packet_state(
        &self,
        fence: Fence,
        id: RedPacketId,
        from: RedPacketState,
        to: RedPacketState,
    ) -> StoreResult<Option<RedPacketRecord>> {
        self.inner.set_red_packet_state(fence, id, from, to).await
    }
    async fn grab_red_packet(&self, fence: Fence, id: RedPacketId, user: UserId, now: u64) -> StoreResult<GrabOutcome> {
        self.inner.grab_red_packet(fence, id, user, now).await
    }
    async fn red_packets_due(&self, before: u64, limit: usize) -> StoreResult<Vec<(u64, GroupId, RedPacketId)>> {
        self.inner.red_packets_due(before, limit).await
    }
    async fn reschedule_red_packet(
        &self,
        id: RedPacketId,
        group: GroupId,
        from: u64,
        to: Option<u64>,
    ) -> StoreResult<()> {
        self.inner.reschedule_red_packet(id, group, from, to).await
    }
}

#[async_trait]
impl MediaStore for Faulty {
    async fn reserve_media_bytes(&self, user: UserId, bytes: u64, quota: u64) -> StoreResult<bool> {
        self.inner.reserve_media_bytes(user, bytes, quota).await
    }
    async fn release_media_bytes(&self, user: UserId, bytes: u64) -> StoreResult<()> {
        self.inner.release_media_bytes(user, bytes).await
    }
    async fn media_bytes(&self, user: UserId) -> StoreResult<u64> {
        self.inner.media_bytes(user).await
    }
    async fn insert_media(&self, media: &MediaRecord, unsent_until: u64) -> StoreResult<bool> {
        self.inner.insert_media(media, unsent_until).await
    }
    async fn unsent_media(&self, before: u64, limit: usize) -> StoreResult<Vec<(u64, MediaId)>> {
        self.inner.unsent_media(before, limit).await
    }
    async fn forget_unsent_media(&self, due_at: u64, id: MediaId) -> StoreResult<()> {
        self.inner.forget_unsent_media(due_at, id).await
    }
    async fn media(&self, id: MediaId) -> StoreResult<Option<MediaRecord>> {
        self.inner.media(id).await
    }
    async fn delete_media(&self, id: MediaId) -> StoreResult<()> {
        self.inner.delete_media(id).await
    }
    async fn link_media_group(&self, id: MediaId, group: GroupId) -> StoreResult<()> {
        self.inner.link_media_group(id, group).await
    }
    async fn media_groups(&self, id: MediaId) -> StoreResult<Vec<GroupId>> {
        self.inner.media_groups(id).await
    }
}

#[async_trait]
impl Store for Faulty {
    fn backend(&self) -> &'static str {
        "faulty-embedded"
    }
    async fn disk_usage_bytes(&self) -> StoreResult<Option<u64>> {
        self.inner.disk_usage_bytes().await
    }
}

/// A red packet stored before its sender was debited (the node died between the two steps)
/// is finished by the sweeper: paid for, opened and posted once; one whose sender cannot
/// pay is cancelled, with a void in the ledger so the debit can never land later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_finishes_a_red_packet_send_that_a_crash_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let config = ActorsConfig {
        red_packet_sweep_interval: Duration::from_millis(30),
        red_packet_check_after: Duration::from_millis(50),
        ..config()
    };
    let system = System::start(config, store.clone(), None).await.unwrap();
    let (mut alice, alice_id) = user(&system, "alice").await;
    let group = alice.ok("create_group", json!({ "name": "g", "open": true })).await["group"].as_u64().unwrap();
    actors::wallet::credit(&*store, UserId(alice_id), 300, "k").await.unwrap();
    assert_eq!(
        actors::wallet::credit(&*store, UserId(alice_id), 300, "k").await.unwrap(),
        (300, false),
        "once per key"
    );

    // What a crash leaves behind: the packets stored as pending, due now, nobody debited.
    let fence = store.claim_group(GroupId(group)).await.unwrap().unwrap();
    let pending = |client_msg_id: &str, total: i64| RedPacketRecord {
        id: actors::redpacket::packet_id(GroupId(group), UserId(alice_id), client_msg_id),
        group: GroupId(group),
        sender: UserId(alice_id),
        client_msg_id: client_msg_id.into(),
        total,
        kind: RedPacketKind::Equal,
        greeting: String::new(),
        shares: vec![total],
        created_at: actors::now_ms(),
        expires_at: actors::now_ms() + 60_000,
        state: RedPacketState::Pending,
    };
    let (paid, unpaid) = (pending("interrupted", 200), pending("too-big", 500));
    store.create_red_packet(fence, &paid, actors::now_ms()).await.unwrap();
    store.create_red_packet(fence, &unpaid, actors::now_ms()).await.unwrap();

    let message = alice.next_message().await.expect("the sweeper posts the packet");
    assert_eq!(
        (message["type"].as_str(), message["client_msg_id"].as_str()),
        (Some("red_packet"), Some("interrupted"))
    );
    assert_eq!(message["body"]["packet"], paid.id.0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while store.red_packet(unpaid.id).await.unwrap().unwrap().state != RedPacketState::Cancelled {
        assert!(tokio::time::Instant::now() < deadline, "the unpaid packet was never cancelled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(store.red_packet(paid.id).await.unwrap().unwrap().state, RedPacketState::Open);
    assert_eq!(store.balance(UserId(alice_id)).await.unwrap(), 100, "debited once");
    let ledger = store.ledger(UserId(alice_id), 100).await.unwrap();
    let void = ledger.iter().find(|e| e.id == actors::redpacket::debit_entry_id(unpaid.id)).expect("a void entry");
    assert_eq!((void.kind, void.amount), (LedgerKind::Void, 0));
    // Sweeps go on; nothing is posted or debited twice.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(alice.next_message().await.is_none(), "posted once");
    assert_eq!(store.balance(UserId(alice_id)).await.unwrap(), 100);
    let grabbed = alice.ok("grab_red_packet", json!({ "group": group, "packet": paid.id.0 })).await;
    assert_eq!(grabbed["amount"], 200);
}

/// The retention sweeper trims a log between a reader's look at its first seq and its read
/// of the messages: `history` and `sync` report where the log starts now, so a client never
/// takes the seqs it did not get for missing ones (and `history` backwards says there is
/// nothing older).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trim_during_a_read_moves_the_first_seq_the_reader_reports() {
    let dir = tempfile::tempdir().unwrap();
    let store = Faulty::open(dir.path());
    let system = System::start(config(), store.clone(), None).await.unwrap();
    let (mut alice, _) = user(&system, "alice").await;
    let created = alice.ok("create_group", json!({ "name": "g", "open": true, "retention_days": 30 })).await;
    let group = created["group"].as_u64().unwrap();
    for n in 1..=10 {
        let ack = alice
            .ok("send", json!({ "group": group, "client_msg_id": format!("m{n}"), "type": "text", "body": "x" }))
            .await;
        assert_eq!(ack["seq"], n);
    }
    let seqs = |page: &Value, key: &str| -> Vec<u64> {
        page[key].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect()
    };
    let arm = |through: Seq| *store.trim_on_read.lock().unwrap() = Some((GroupId(group), through));

    arm(4);
    let page = alice.ok("history", json!({ "group": group, "after": 0, "limit": 5 })).await;
    assert_eq!(seqs(&page, "messages"), [5]);
    assert_eq!((page["first_seq"].as_u64(), page["has_more"].as_bool()), (Some(5), Some(true)));

    arm(7);
    let page = alice.ok("history", json!({ "group": group, "before": 9, "limit": 5 })).await;
    assert_eq!(seqs(&page, "messages"), [8]);
    assert_eq!((page["first_seq"].as_u64(), page["has_more"].as_bool()), (Some(8), Some(false)), "nothing older");

    arm(9);
    let synced = alice.ok("sync", json!({ "groups": [{ "group": group, "after": 7 }] })).await;
    let synced = &synced["groups"][0];
    assert_eq!(seqs(synced, "messages"), [10]);
    assert_eq!(synced["first_seq"], 10);

    // Without a trim in between, a page that starts where it was asked costs no second look.
    let page = alice.ok("history", json!({ "group": group, "after": 9 })).await;
    assert_eq!((seqs(&page, "messages"), page["first_seq"].as_u64()), (vec![10], Some(10)));
}
