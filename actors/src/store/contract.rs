//! The contract every store backend passes. A backend's test file calls
//! [`store_contract_tests!`](crate::store_contract_tests) with a function that opens a
//! fresh store; each case below becomes one test.
//!
//! Cases use random ids, so they would not interfere even on a shared store.

use super::*;
use crate::{now_ms, random_id};
use std::sync::Arc;

/// Generates one `#[tokio::test]` per contract case. `$open` is an async fn returning
/// `(guard, Arc<dyn Store>)`; the guard (a temp dir, a database handle) lives for the test.
/// With `optional`, `$open` returns an `Option` of that, and None skips the case (a backend
/// whose server is not always there: ScyllaDB).
#[macro_export]
macro_rules! store_contract_tests {
    (optional $open:path) => {
        $crate::store_contract_tests!(@list optional $open);
    };
    ($open:path) => {
        $crate::store_contract_tests!(@list required $open);
    };
    (@list $mode:ident $open:path) => {
        $crate::store_contract_tests!(@cases $mode $open;
            users_and_usernames,
            sessions,
            group_lifecycle,
            member_cap_holds,
            concurrent_adds_respect_the_cap,
            member_paging,
            removal_and_roles,
            user_index_and_read_marks,
            append_is_fenced,
            claims_fence_off_earlier_owners,
            history_pages,
            client_ids_are_remembered,
            retention_trims_the_oldest_messages,
            writes_without_waiting,
            ledger_entries_apply_once_and_never_overdraw,
            concurrent_debits_never_overdraw,
            red_packets_hand_out_each_share_once,
            concurrent_grabs_take_each_share_once,
            red_packet_writes_are_fenced,
            red_packets_come_due,
            media_records_and_links,
            media_quota_holds_under_concurrency,
            unsent_media_come_due,
        );
    };
    (@cases required $open:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (_guard, store) = $open().await;
                $crate::store::contract::$case(store).await;
            }
        )*
    };
    (@cases optional $open:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some((_guard, store)) = $open().await else {
                    eprintln!("skipped: this backend's server is not configured");
                    return;
                };
                $crate::store::contract::$case(store).await;
            }
        )*
    };
}

fn user(id: u64, name: &str) -> UserRecord {
    UserRecord {
        id: UserId(id),
        username: name.into(),
        nickname: name.into(),
        avatar_url: String::new(),
        created_at: now_ms(),
    }
}

fn group(id: u64, max_members: u32) -> GroupRecord {
    GroupRecord {
        id: GroupId(id),
        name: format!("g{id}"),
        owner: UserId(1),
        open: true,
        max_members,
        member_count: 1,
        created_at: now_ms(),
        dissolved: false,
    }
}

fn member(user: u64, role: Role) -> MemberRecord {
    MemberRecord { user: UserId(user), role, joined_at: now_ms() }
}

fn message(group: GroupId, seq: Seq, sender: u64, client_msg_id: &str) -> MessageRecord {
    MessageRecord {
        group,
        seq,
        sender: UserId(sender),
        client_msg_id: client_msg_id.into(),
        kind: schema::frames::MessageKind::Text,
        body: format!("\"m{seq}\""),
        ts: 1000 + seq,
    }
}

/// A fresh group and its first owner's fence.
async fn new_group(store: &dyn Store, max_members: u32) -> (GroupId, Fence) {
    let g = group(random_id(), max_members);
    assert!(store.create_group(&g, &member(1, Role::Owner)).await.unwrap());
    let fence = store.claim_group(g.id).await.unwrap().expect("the group exists");
    (g.id, fence)
}

/// Users insert once per id; usernames are claimed once; profiles update.
pub async fn users_and_usernames(store: Arc<dyn Store>) {
    let id = random_id();
    let name = format!("u{id}");
    let record = user(id, &name);
    assert!(store.insert_user(&record).await.unwrap());
    assert!(!store.insert_user(&record).await.unwrap(), "an id is inserted once");
    assert_eq!(store.user(UserId(id)).await.unwrap(), Some(record));
    assert_eq!(store.user(UserId(random_id())).await.unwrap(), None);

    let credential = CredentialRecord { user: UserId(id), password_hash: "$argon2id$x".into() };
    assert!(store.claim_username(&name, &credential).await.unwrap());
    let other = CredentialRecord { user: UserId(id + 1), password_hash: "$argon2id$y".into() };
    assert!(!store.claim_username(&name, &other).await.unwrap(), "a username is claimed once");
    assert_eq!(store.credential(&name).await.unwrap(), Some(credential));
    assert_eq!(store.credential("nobody-here").await.unwrap(), None);

    let updated = store.update_profile(UserId(id), Some("Nick"), Some("https://a/b.png")).await.unwrap().unwrap();
    assert_eq!((updated.nickname.as_str(), updated.avatar_url.as_str()), ("Nick", "https://a/b.png"));
    let partial = store.update_profile(UserId(id), None, Some("")).await.unwrap().unwrap();
    assert_eq!((partial.nickname.as_str(), partial.avatar_url.as_str()), ("Nick", ""), "absent fields stay");
    assert_eq!(store.user(UserId(id)).await.unwrap(), Some(partial));
    assert_eq!(store.update_profile(UserId(random_id()), Some("x"), None).await.unwrap(), None);

    store.delete_user(UserId(id)).await.unwrap();
    assert_eq!(store.user(UserId(id)).await.unwrap(), None);
    store.delete_user(UserId(id)).await.unwrap();
}

/// Sessions are stored, read and deleted by token hash.
pub async fn sessions(store: Arc<dyn Store>) {
    let token: TokenHash = rand::random();
    let session = SessionRecord { user: UserId(7), created_at: 1, expires_at: 2 };
    assert_eq!(store.session(&token).await.unwrap(), None);
    store.insert_session(&token, &session).await.unwrap();
    assert_eq!(store.session(&token).await.unwrap(), Some(session));
    store.delete_session(&token).await.unwrap();
    assert_eq!(store.session(&token).await.unwrap(), None);
    store.delete_session(&token).await.unwrap();
}

/// Groups are created once, updated, and dissolved.
pub async fn group_lifecycle(store: Arc<dyn Store>) {
    let g = group(random_id(), 10);
    let owner = member(1, Role::Owner);
    assert!(store.create_group(&g, &owner).await.unwrap());
    assert!(!store.create_group(&g, &owner).await.unwrap(), "a group id is created once");
    let stored = store.group(g.id).await.unwrap().unwrap();
    assert_eq!((stored.member_count, stored.max_members, stored.owner), (1, 10, UserId(1)));
    assert_eq!(store.member(g.id, UserId(1)).await.unwrap(), Some(owner));
    let f = store.claim_group(g.id).await.unwrap().unwrap();
    assert_eq!(store.claim_group(GroupId(random_id())).await.unwrap(), None, "no group, no claim");

    let updated = store.update_group(f, Some("renamed"), Some(false)).await.unwrap().unwrap();
    assert_eq!((updated.name.as_str(), updated.open), ("renamed", false));
    let kept = store.update_group(f, None, None).await.unwrap().unwrap();
    assert_eq!(kept.name, "renamed");
    let nowhere = Fence { group: GroupId(random_id()), epoch: 1 };
    assert!(matches!(store.update_group(nowhere, None, None).await, Ok(None) | Err(StoreError::Fenced { .. })));

    assert!(store.dissolve_group(f).await.unwrap());
    assert!(store.group(g.id).await.unwrap().unwrap().dissolved);
    assert_eq!(
        store.add_member_if_below_cap(f, &member(2, Role::Member)).await.unwrap(),
        AddMemberOutcome::NoGroup,
        "a dissolved group takes no members"
    );
    assert!(matches!(store.dissolve_group(nowhere).await, Ok(false) | Err(StoreError::Fenced { .. })));
}

/// The cap is enforced by the store itself; the count matches the membership.
pub async fn member_cap_holds(store: Arc<dyn Store>) {
    let (g, f) = new_group(&*store, 3).await;
    assert_eq!(store.add_member_if_below_cap(f, &member(2, Role::Member)).await.unwrap(), AddMemberOutcome::Added(2));
    assert_eq!(
        store.add_member_if_below_cap(f, &member(2, Role::Member)).await.unwrap(),
        AddMemberOutcome::AlreadyMember
    );
    assert_eq!(store.add_member_if_below_cap(f, &member(3, Role::Member)).await.unwrap(), AddMemberOutcome::Added(3));
    assert_eq!(store.add_member_if_below_cap(f, &member(4, Role::Member)).await.unwrap(), AddMemberOutcome::Full);
    assert_eq!(store.group(g).await.unwrap().unwrap().member_count, 3);
    assert_eq!(store.members(g, None, 100).await.unwrap().len(), 3);
    assert_eq!(
        store
            .add_member_if_below_cap(Fence { group: GroupId(random_id()), epoch: 1 }, &member(2, Role::Member))
            .await
            .unwrap_or(AddMemberOutcome::NoGroup),
        AddMemberOutcome::NoGroup
    );
}

/// Racing writers cannot push a group past its cap.
pub async fn concurrent_adds_respect_the_cap(store: Arc<dyn Store>) {
    let (g, f) = new_group(&*store, 10).await;
    let tasks: Vec<_> = (100..150u64)
        .map(|u| {
            let store = store.clone();
            tokio::spawn(async move { store.add_member_if_below_cap(f, &member(u, Role::Member)).await.unwrap() })
        })
        .collect();
    let mut added = 0;
    for task in tasks {
        if let AddMemberOutcome::Added(_) = task.await.unwrap() {
            added += 1;
        }
    }
    assert_eq!(added, 9, "owner + 9 = cap of 10");
    assert_eq!(store.group(g).await.unwrap().unwrap().member_count, 10);
    assert_eq!(store.members(g, None, 100).await.unwrap().len(), 10);
}

/// Members page in ascending user id.
pub async fn member_paging(store: Arc<dyn Store>) {
    let (g, f) = new_group(&*store, 100).await;
    for u in [50u64, 20, 40, 30] {
        store.add_member_if_below_cap(f, &member(u, Role::Member)).await.unwrap();
    }
    let ids = |page: Vec<MemberRecord>| page.into_iter().map(|m| m.user.0).collect::<Vec<_>>();
    assert_eq!(ids(store.members(g, None, 3).await.unwrap()), vec![1, 20, 30]);
    assert_eq!(ids(store.members(g, Some(UserId(30)), 3).await.unwrap()), vec![40, 50]);
    assert_eq!(ids(store.members(g, Some(UserId(50)), 3).await.unwrap()), Vec::<u64>::new());
    assert_eq!(ids(store.members(g, Some(UserId(u64::MAX)), 3).await.unwrap()), Vec::<u64>::new());
}

/// Removal lowers the count; roles change; ownership moves atomically.
pub async fn removal_and_roles(store: Arc<dyn Store>) {
    let (g, f) = new_group(&*store, 10).await;
    store.add_member_if_below_cap(f, &member(2, Role::Member)).await.unwrap();
    store.add_member_if_below_cap(f, &member(3, Role::Member)).await.unwrap();
    assert_eq!(store.remove_member(f, UserId(3)).await.unwrap(), Some(2));
    assert_eq!(store.remove_member(f, UserId(3)).await.unwrap(), None);
    assert_eq!(store.member(g, UserId(3)).await.unwrap(), None);
    assert_eq!(store.group(g).await.unwrap().unwrap().member_count, 2);

    assert!(store.set_member_role(f, UserId(2), Role::Admin).await.unwrap());
    assert_eq!(store.member(g, UserId(2)).await.unwrap().unwrap().role, Role::Admin);
    assert!(!store.set_member_role(f, UserId(99), Role::Admin).await.unwrap());

    assert!(store.transfer_ownership(f, UserId(1), UserId(2)).await.unwrap());
    assert_eq!(store.group(g).await.unwrap().unwrap().owner, UserId(2));
    assert_eq!(store.member(g, UserId(2)).await.unwrap().unwrap().role, Role::Owner);
    assert_eq!(store.member(g, UserId(1)).await.unwrap().unwrap().role, Role::Admin);
    assert!(!store.transfer_ownership(f, UserId(2), UserId(99)).await.unwrap());
}

/// A user's index lists their groups; read marks only move forward.
pub async fn user_index_and_read_marks(store: Arc<dyn Store>) {
    let u = UserId(random_id());
    let (a, b) = (GroupId(10), GroupId(5));
    for g in [a, b] {
        store.link_user_group(u, &UserGroupRecord { group: g, read_seq: 3, joined_at: 1 }).await.unwrap();
    }
    // Linking again keeps the mark.
    store.advance_read_mark(u, a, 7).await.unwrap();
    store.link_user_group(u, &UserGroupRecord { group: a, read_seq: 0, joined_at: 2 }).await.unwrap();
    let index = store.user_groups(u).await.unwrap();
    assert_eq!(index.iter().map(|l| l.group).collect::<Vec<_>>(), vec![b, a], "ascending group id");
    assert_eq!(store.user_group(u, a).await.unwrap().unwrap().read_seq, 7);

    assert_eq!(store.advance_read_mark(u, a, 5).await.unwrap(), Some(7), "never backwards");
    assert_eq!(store.advance_read_mark(u, a, 9).await.unwrap(), Some(9));
    store.unlink_user_group(u, a).await.unwrap();
    store.unlink_user_group(u, a).await.unwrap();
    assert_eq!(store.advance_read_mark(u, a, 10).await.unwrap(), None);
    assert_eq!(store.user_groups(u).await.unwrap().len(), 1);
}

/// Appends land only on top of the expected last seq.
pub async fn append_is_fenced(store: Arc<dyn Store>) {
    let (g, f) = new_group(&*store, 10).await;
    assert_eq!(store.last_seq(g).await.unwrap(), 0);
    store.append_messages(f, 0, &[message(g, 1, 1, "a"), message(g, 2, 1, "b")]).await.unwrap();
    assert_eq!(store.last_seq(g).await.unwrap(), 2);
    let stale = store.append_messages(f, 1, &[message(g, 2, 1, "c")]).await;
    assert!(matches!(stale, Err(StoreError::Conflict(_))), "a stale writer is fenced off: {stale:?}");
    let gap = store.append_messages(f, 2, &[message(g, 4, 1, "d")]).await;
    assert!(matches!(gap, Err(StoreError::Conflict(_))), "seqs must follow `after`: {gap:?}");
    assert_eq!(store.last_seq(g).await.unwrap(), 2);
    assert_eq!(store.messages_after(g, 0, 10).await.unwrap().len(), 2, "nothing of a refused append lands");

    // Racing appends on the same seq: exactly one wins.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(
                async move { store.append_messages(f, 2, &[message(g, 3, 1, &format!("r{i}"))]).await.is_ok() },
            )
        })
        .collect();
    let mut wins = 0;
    for task in tasks {
        wins += usize::from(task.await.unwrap());
    }
    assert_eq!(wins, 1);
    assert_eq!(store.last_seq(g).await.unwrap(), 3);
}

/// A claim deposes every earlier owner: each fenced write with an old epoch is refused
/// and changes nothing, while the new owner's writes go through.
pub async fn claims_fence_off_earlier_owners(store: Arc<dyn Store>) {
    let (g, old) = new_group(&*store, 10).await;
    store.add_member_if_below_cap(old, &member(2, Role::Member)).await.unwrap();
    store.append_messages(old, 0, &[message(g, 1, 1, "a")]).await.unwrap();
    let new = store.claim_group(g).await.unwrap().unwrap();
    assert!(new.epoch > old.epoch, "{new:?} after {old:?}");

    let fenced = |result: StoreResult<()>, what: &str| {
        assert!(matches!(result, Err(StoreError::Fenced { .. })), "{what} by a deposed owner: {result:?}");
    };
    fenced(store.append_messages(old, 1, &[message(g, 2, 1, "b")]).await, "append");
    let (done, rx) = waiter();
    store.append_messages_then(old, 1, vec![message(g, 2, 1, "b")], done);
    fenced(rx.await.expect("done ran"), "append_then");
    fenced(store.add_member_if_below_cap(old, &member(3, Role::Member)).await.map(drop), "add member");
    fenced(store.remove_member(old, UserId(2)).await.map(drop), "remove member");
    fenced(store.set_member_role(old, UserId(2), Role::Admin).await.map(drop), "set role");
    fenced(store.transfer_ownership(old, UserId(1), UserId(2)).await.map(drop), "transfer");
    fenced(store.update_group(old, Some("stale"), Some(false)).await.map(drop), "update");
    fenced(store.dissolve_group(old).await.map(drop), "dissolve");

    let record = store.group(g).await.unwrap().unwrap();
    let expected_name = format!("g{}", g.0);
    assert_eq!((record.name.as_str(), record.open, record.dissolved), (expected_name.as_str(), true, false));
    assert_eq!((record.owner, record.member_count), (UserId(1), 2));
    assert_eq!(store.member(g, UserId(2)).await.unwrap().unwrap().role, Role::Member);
    assert_eq!(store.member(g, UserId(3)).await.unwrap(), None);
    assert_eq!(store.last_seq(g).await.unwrap(), 1, "nothing of the deposed owner's appends landed");

    store.append_messages(new, 1, &[message(g, 2, 1, "b")]).await.unwrap();
    assert_eq!(store.add_member_if_below_cap(new, &member(3, Role::Member)).await.unwrap(), AddMemberOutcome::Added(3));
    assert!(store.dissolve_group(new).await.unwrap());
}

/// History pages forwards and backwards, ascending, without gaps.
pub async fn history_pages(store: Arc<dyn Store>) {
    let (g, f) = new_group(&*store, 10).await;
    let batch: Vec<_> = (1..=25).map(|s| message(g, s, 1, &format!("c{s}"))).collect();
    store.append_messages(f, 0, &batch[..10]).await.unwrap();
    store.append_messages(f, 10, &batch[10..]).await.unwrap();
    let seqs = |page: Vec<MessageRecord>| page.into_iter().map(|m| m.seq).collect::<Vec<_>>();
    assert_eq!(seqs(store.messages_after(g, 0, 3).await.unwrap()), vec![1, 2, 3]);
    assert_eq!(seqs(store.messages_after(g, 23, 10).await.unwrap()), vec![24, 25]);
    assert_eq!(seqs(store.messages_after(g, 25, 10).await.unwrap()), Vec::<u64>::new());
    assert_eq!(seqs(store.messages_after(g, u64::MAX, 10).await.unwrap()), Vec::<u64>::new());
    assert_eq!(seqs(store.messages_before(g, u64::MAX, 3).await.unwrap()), vec![23, 24, 25]);
    assert_eq!(seqs(store.messages_before(g, 3, 10).await.unwrap()), vec![1, 2]);
    assert_eq!(seqs(store.messages_before(g, 0, 10).await.unwrap()), Vec::<u64>::new());
    let stored = store.messages_after(g, 4, 1).await.unwrap().remove(0);
    assert_eq!(stored, batch[4], "records come back as written");
    // Other groups' logs are separate.
    assert_eq!(store.messages_after(GroupId(g.0 + 1), 0, 10).await.unwrap().len(), 0);
}

/// (group, sender, client_msg_id) finds the message's seq.
pub async fn client_ids_are_remembered(store: Arc<dyn Store>) {
    let (g, f) = new_group(&*store, 10).await;
    store.append_messages(f, 0, &[message(g, 1, 5, "x"), message(g, 2, 6, "x")]).await.unwrap();
    assert_eq!(store.message_by_client_id(g, UserId(5), "x").await.unwrap(), Some((1, 1001)));
    assert_eq!(store.message_by_client_id(g, UserId(6), "x").await.unwrap(), Some((2, 1002)));
    assert_eq!(store.message_by_client_id(g, UserId(7), "x").await.unwrap(), None, "scoped to the sender");
    assert_eq!(
        store.message_by_client_id(GroupId(g.0 + 1), UserId(5), "x").await.unwrap(),
        None,
        "scoped to the group"
    );
}

/// Retention: the setting is fenced and listed for the sweeper; a trim deletes a prefix of
/// the log, never moves back, and leaves the log's last seq where it was, even when it
/// deletes everything, so the next append goes on from there.
pub async fn retention_trims_the_oldest_messages(store: Arc<dyn Store>) {
    let (g, f) = new_group(&*store, 10).await;
    assert_eq!(store.retention(g).await.unwrap(), Retention::default());
    assert_eq!(store.retention(GroupId(random_id())).await.unwrap(), Retention::default(), "no such group");
    assert!(store.set_retention_days(f, 3).await.unwrap());
    let stale = Fence { group: g, epoch: f.epoch - 1 };
    assert!(matches!(store.set_retention_days(stale, 9).await, Err(StoreError::Fenced { .. })));
    assert!(!store.set_retention_days(Fence { group: GroupId(random_id()), epoch: 0 }, 3).await.unwrap());
    assert_eq!(store.retention(g).await.unwrap(), Retention { days: 3, trimmed_through: 0 });

    // The sweeper's list: every group with a retention, none kept forever, paged.
    let (forever, _) = new_group(&*store, 10).await;
    let (other, other_fence) = new_group(&*store, 10).await;
    assert!(store.set_retention_days(other_fence, 1).await.unwrap());
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let page = store.retained_groups(after, 1).await.unwrap();
        assert!(page.len() <= 1);
        let Some(last) = page.last() else { break };
        after = Some(last.0);
        listed.extend(page);
        assert!(listed.len() < 10_000, "paging ends");
    }
    assert!(listed.contains(&(g, Retention { days: 3, trimmed_through: 0 })), "{listed:?}");
    assert!(listed.contains(&(other, Retention { days: 1, trimmed_through: 0 })));
    assert!(!listed.iter().any(|(group, _)| *group == forever), "kept forever: not the sweeper's");

    let batch: Vec<_> = (1..=10).map(|s| message(g, s, 1, &format!("r{s}"))).collect();
    store.append_messages(f, 0, &batch).await.unwrap();
    let seqs = |page: Vec<MessageRecord>| page.into_iter().map(|m| m.seq).collect::<Vec<_>>();
    assert_eq!(store.trim_log(g, 4, 3).await.unwrap(), 4);
    assert_eq!(seqs(store.messages_after(g, 4, 100).await.unwrap()), (5..=10).collect::<Vec<_>>());
    assert_eq!(seqs(store.messages_before(g, 6, 100).await.unwrap()), vec![5], "nothing below the trim");
    assert_eq!(store.retention(g).await.unwrap(), Retention { days: 3, trimmed_through: 4 });
    assert_eq!(store.retention(g).await.unwrap().first_seq(), 5);
    assert_eq!(store.trim_log(g, 2, 3).await.unwrap(), 4, "a trim never moves back");
    // A trim decided under another retention (lengthened since) deletes nothing.
    assert_eq!(store.trim_log(g, 6, 1).await.unwrap(), 4, "the retention is 3 days, not 1");
    assert_eq!(seqs(store.messages_after(g, 4, 100).await.unwrap()), (5..=10).collect::<Vec<_>>());
    assert_eq!(store.last_seq(g).await.unwrap(), 10);

    // Everything, and past the end (taken as the end): the log keeps its last seq.
    assert_eq!(store.trim_log(g, 99, 3).await.unwrap(), 10);
    assert_eq!(seqs(store.messages_after(g, 10, 100).await.unwrap()), Vec::<u64>::new());
    assert_eq!(seqs(store.messages_before(g, u64::MAX, 100).await.unwrap()), Vec::<u64>::new());
    assert_eq!(store.last_seq(g).await.unwrap(), 10, "seqs are never reused");
    assert!(
        matches!(store.append_messages(f, 0, &[message(g, 1, 1, "again")]).await, Err(StoreError::Conflict(_))),
        "an emptied log does not start over"
    );
    store.append_messages(f, 10, &[message(g, 11, 1, "r11")]).await.unwrap();
    assert_eq!(seqs(store.messages_after(g, 10, 100).await.unwrap()), vec![11]);
    assert_eq!(store.last_seq(g).await.unwrap(), 11);
    assert_eq!(store.retention(g).await.unwrap(), Retention { days: 3, trimmed_through: 10 }, "the setting stays");
    // Other groups' logs are untouched.
    assert_eq!(store.trim_log(forever, 5, 0).await.unwrap(), 0, "an empty log has nothing to trim");
}

fn waiter() -> (WriteDone, tokio::sync::oneshot::Receiver<StoreResult<()>>) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    (
        Box::new(move |result| {
            let _ = tx.send(result);
        }),
        rx,
    )
}

/// The `_then` calls run `done` exactly once with the outcome; a mark submitted before an
/// append is durable by the time the append's `done` runs.
pub async fn writes_without_waiting(store: Arc<dyn Store>) {
    let (g, f) = new_group(&*store, 10).await;
    let (alice, bob) = (UserId(random_id()), UserId(random_id()));
    for user in [alice, bob] {
        store.link_user_group(user, &UserGroupRecord { group: g, read_seq: 0, joined_at: 1 }).await.unwrap();
    }
    let (marks_done, marks_rx) = waiter();
    store.advance_read_marks_then(g, vec![(alice, 2), (bob, 1)], marks_done);
    let (append_done, append_rx) = waiter();
    store.append_messages_then(f, 0, vec![message(g, 1, alice.0, "a"), message(g, 2, alice.0, "b")], append_done);
    append_rx.await.expect("done ran").unwrap();
    assert_eq!(store.user_group(alice, g).await.unwrap().unwrap().read_seq, 2, "the earlier mark is durable");
    assert_eq!(store.user_group(bob, g).await.unwrap().unwrap().read_seq, 1);
    marks_rx.await.expect("done ran").unwrap();
    assert_eq!(store.last_seq(g).await.unwrap(), 2);

    let (stale_done, stale_rx) = waiter();
    store.append_messages_then(f, 1, vec![message(g, 2, alice.0, "c")], stale_done);
    assert!(matches!(stale_rx.await.expect("done ran"), Err(StoreError::Conflict(_))), "the fence holds here too");
    let (gap_done, gap_rx) = waiter();
    store.append_messages_then(f, 2, vec![message(g, 5, alice.0, "d")], gap_done);
    assert!(matches!(gap_rx.await.expect("done ran"), Err(StoreError::Conflict(_))));
    assert_eq!(store.last_seq(g).await.unwrap(), 2);
}

fn entry(id: &str, amount: i64, kind: LedgerKind) -> LedgerEntry {
    LedgerEntry { id: id.into(), amount, kind, packet: None, ts: now_ms() }
}

/// A ledger entry happens once per id; the balance is the sum of the entries and never
/// goes below zero.
pub async fn ledger_entries_apply_once_and_never_overdraw(store: Arc<dyn Store>) {
    let user = UserId(random_id());
    assert_eq!(store.balance(user).await.unwrap(), 0, "a wallet nobody used is empty");
    let credit = entry("credit:a", 500, LedgerKind::Credit);
    assert_eq!(store.apply_ledger_entry(user, &credit).await.unwrap(), LedgerOutcome::Applied { balance: 500 });
    assert_eq!(
        store.apply_ledger_entry(user, &credit).await.unwrap(),
        LedgerOutcome::AlreadyApplied { entry: credit.clone(), balance: 500 },
        "the same id applies once"
    );
    let too_much = entry("red_packet:1", -501, LedgerKind::RedPacketSend);
    assert_eq!(store.apply_ledger_entry(user, &too_much).await.unwrap(), LedgerOutcome::Insufficient { balance: 500 });
    let debit = entry("red_packet:2", -500, LedgerKind::RedPacketSend);
    assert_eq!(store.apply_ledger_entry(user, &debit).await.unwrap(), LedgerOutcome::Applied { balance: 0 });
    // A void in place of a debit: the debit that comes later under that id is a no-op.
    let void = entry("red_packet:3", 0, LedgerKind::Void);
    store.apply_ledger_entry(user, &void).await.unwrap();
    let late = entry("red_packet:3", -1, LedgerKind::RedPacketSend);
    assert!(matches!(
        store.apply_ledger_entry(user, &late).await.unwrap(),
        LedgerOutcome::AlreadyApplied { entry, balance: 0 } if entry.kind == LedgerKind::Void
    ));
    let ledger = store.ledger(user, 100).await.unwrap();
    let ids: Vec<&str> = ledger.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["credit:a", "red_packet:2", "red_packet:3"], "ascending id; the refused entry is not there");
    assert_eq!(ledger.iter().map(|e| e.amount).sum::<i64>(), store.balance(user).await.unwrap());
    assert_eq!(store.ledger(UserId(random_id()), 100).await.unwrap(), vec![]);
}

/// Debits racing on one wallet: exactly as many land as the balance covers.
pub async fn concurrent_debits_never_overdraw(store: Arc<dyn Store>) {
    let user = UserId(random_id());
    store.apply_ledger_entry(user, &entry("credit:x", 1_000, LedgerKind::Credit)).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..30 {
        let store = store.clone();
        tasks.spawn(async move {
            let debit = entry(&format!("red_packet:{i}"), -100, LedgerKind::RedPacketSend);
            // Conditional-write backends may give up under contention: retry like a caller.
            for _ in 0..50 {
                match store.apply_ledger_entry(user, &debit).await {
                    Err(StoreError::Unavailable(_)) => continue,
                    other => return other.unwrap(),
                }
            }
            panic!("the store stayed unavailable");
        });
    }
    let mut applied = 0;
    while let Some(outcome) = tasks.join_next().await {
        match outcome.unwrap() {
            LedgerOutcome::Applied { balance } => {
                assert!(balance >= 0);
                applied += 1;
            }
            LedgerOutcome::Insufficient { balance } => assert!(balance < 100, "refused with {balance} in the wallet"),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(applied, 10);
    assert_eq!(store.balance(user).await.unwrap(), 0);
    let ledger = store.ledger(user, 100).await.unwrap();
    assert_eq!((ledger.len(), ledger.iter().map(|e| e.amount).sum::<i64>()), (11, 0));
}

fn packet(group: GroupId, shares: Vec<i64>, expires_at: u64) -> RedPacketRecord {
    RedPacketRecord {
        id: RedPacketId(random_id()),
        group,
        sender: UserId(1),
        client_msg_id: "rp".into(),
        total: shares.iter().sum(),
        kind: RedPacketKind::Lucky,
        greeting: "恭喜发财".into(),
        shares,
        created_at: now_ms(),
        expires_at,
        state: RedPacketState::Pending,
    }
}

/// A packet is stored once with its shares; nobody grabs it until it is open; each user
/// gets one share, in order, until there are none.
pub async fn red_packets_hand_out_each_share_once(store: Arc<dyn Store>) {
    let (g, f) = new_group(&*store, 10).await;
    let later = now_ms() + 60_000;
    let first = packet(g, vec![30, 50, 20], later);
    assert_eq!(store.create_red_packet(f, &first, later).await.unwrap(), first);
    let mut resent = first.clone();
    resent.shares = vec![1, 1, 98];
    assert_eq!(store.create_red_packet(f, &resent, later).await.unwrap(), first, "a resend keeps the first shares");
    assert_eq!(store.red_packet(first.id).await.unwrap(), Some(first.clone()));
    assert_eq!(store.red_packet(RedPacketId(random_id())).await.unwrap(), None);

    let (a, b, c, d) = (UserId(11), UserId(12), UserId(13), UserId(14));
    let now = now_ms();
    assert_eq!(store.grab_red_packet(f, first.id, a, now).await.unwrap(), GrabOutcome::NotOpen, "pending");
    let opened = store.set_red_packet_state(f, first.id, RedPacketState::Pending, RedPacketState::Open).await.unwrap();
    assert_eq!(opened.map(|p| p.state), Some(RedPacketState::Open));
    let unchanged = store.set_red_packet_state(f, first.id, RedPacketState::Pending, RedPacketState::Cancelled);
    assert_eq!(unchanged.await.unwrap().map(|p| p.state), Some(RedPacketState::Open), "only from the given state");

    let grabbed = |outcome: GrabOutcome| match outcome {
        GrabOutcome::Grabbed(grab) => grab,
        other => panic!("expected a share, got {other:?}"),
    };
    let ga = grabbed(store.grab_red_packet(f, first.id, a, now).await.unwrap());
    assert_eq!((ga.user, ga.share, ga.amount), (a, 0, 30));
    assert_eq!(store.grab_red_packet(f, first.id, a, now + 5).await.unwrap(), GrabOutcome::AlreadyGrabbed(ga));
    let gb = grabbed(store.grab_red_packet(f, first.id, b, now).await.unwrap());
    let gc = grabbed(store.grab_red_packet(f, first.id, c, now).await.unwrap());
    assert_eq!((gb.amount, gc.amount), (50, 20));
    assert_eq!(store.grab_red_packet(f, first.id, d, now).await.unwrap(), GrabOutcome::Empty);
    assert_eq!(store.red_packet_grabs(first.id).await.unwrap(), vec![ga, gb, gc], "in share order");

    // Past its time nobody new grabs, though the grabs made stand.
    let short = packet(g, vec![5, 5], now + 10);
    store.create_red_packet(f, &short, now + 10).await.unwrap();
    store.set_red_packet_state(f, short.id, RedPacketState::Pending, RedPacketState::Open).await.unwrap();
    grabbed(store.grab_red_packet(f, short.id, a, now).await.unwrap());
    assert_eq!(store.grab_red_packet(f, short.id, b, now + 10).await.unwrap(), GrabOutcome::Expired);
    store.set_red_packet_state(f, short.id, RedPacketState::Open, RedPacketState::Expired).await.unwrap();
    assert_eq!(store.grab_red_packet(f, short.id, c, now).await.unwrap(), GrabOutcome::Expired, "closed");
    assert!(matches!(store.grab_red_packet(f, short.id, a, now).await.unwrap(), GrabOutcome::AlreadyGrabbed(_)));

    // A packet is its group's: another group's owner finds nothing.
    let (_, other) = new_group(&*store, 10).await;
    assert_eq!(store.grab_red_packet(other, first.id, d, now).await.unwrap(), GrabOutcome::NotOpen);
    assert_eq!(
        store.set_red_packet_state(other, first.id, RedPacketState::Open, RedPacketState::Expired).await.unwrap(),
        None
    );
}

/// Many users grabbing at once get each share exactly once.
pub async fn concurrent_grabs_take_each_share_once(store: Arc<dyn Store>) {
    let (g, f) = new_group(&*store, 10).await;
    let later = now_ms() + 60_000;
    let shares: Vec<i64> = (1..=20).collect();
    let total: i64 = shares.iter().sum();
    let p = packet(g, shares, later);
    store.create_red_packet(f, &p, later).await.unwrap();
    store.set_red_packet_state(f, p.id, RedPacketState::Pending, RedPacketState::Open).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for user in 0..60u64 {
        for _ in 0..2 {
            let store = store.clone();
            tasks.spawn(async move { (user, store.grab_red_packet(f, p.id, UserId(1000 + user), now_ms()).await) });
        }
    }
    let mut won = std::collections::HashMap::new();
    while let Some(done) = tasks.join_next().await {
        let (user, outcome) = done.unwrap();
        match outcome {
            Ok(GrabOutcome::Grabbed(grab)) => assert!(won.insert(user, grab.amount).is_none(), "user {user} twice"),
            Ok(GrabOutcome::AlreadyGrabbed(_) | GrabOutcome::Empty) => {}
            // Conditional-write backends may give up under contention; a retry decides.
            Err(StoreError::Unavailable(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let grabs = store.red_packet_grabs(p.id).await.unwrap();
    assert_eq!(grabs.len(), 20, "every share handed out");
    assert_eq!(grabs.iter().map(|g| g.amount).sum::<i64>(), total);
    let users: std::collections::HashSet<UserId> = grabs.iter().map(|g| g.user).collect();
    assert_eq!(users.len(), 20, "nobody twice");
    for (user, amount) in won {
        assert!(grabs.iter().any(|g| g.user == UserId(1000 + user) && g.amount == amount), "a reported grab is stored");
    }
}

/// A deposed owner of the group writes nothing to its packets.
pub async fn red_packet_writes_are_fenced(store: Arc<dyn Store>) {
    let (g, old) = new_group(&*store, 10).await;
    let later = now_ms() + 60_000;
    let p = packet(g, vec![10, 10], later);
    store.create_red_packet(old, &p, later).await.unwrap();
    store.set_red_packet_state(old, p.id, RedPacketState::Pending, RedPacketState::Open).await.unwrap();
    let new = store.claim_group(g).await.unwrap().unwrap();
    let fenced = |what: &str, result: StoreResult<()>| {
        assert!(matches!(result, Err(StoreError::Fenced { .. })), "{what} by a deposed owner: {result:?}");
    };
    fenced("grab", store.grab_red_packet(old, p.id, UserId(5), now_ms()).await.map(drop));
    fenced(
        "state",
        store.set_red_packet_state(old, p.id, RedPacketState::Open, RedPacketState::Expired).await.map(drop),
    );
    fenced("create", store.create_red_packet(old, &packet(g, vec![1], later), later).await.map(drop));
    assert_eq!(store.red_packet_grabs(p.id).await.unwrap(), vec![]);
    assert!(matches!(store.grab_red_packet(new, p.id, UserId(5), now_ms()).await.unwrap(), GrabOutcome::Grabbed(_)));
}

/// The due index lists packets by due time and moves them.
pub async fn red_packets_come_due(store: Arc<dyn Store>) {
    let (g, f) = new_group(&*store, 10).await;
    let base = now_ms() - 10_000;
    let p = packet(g, vec![10], base + 60_000);
    store.create_red_packet(f, &p, base).await.unwrap();
    let due = store.red_packets_due(base, 10_000).await.unwrap();
    assert!(due.contains(&(base, g, p.id)), "{due:?}");
    assert!(!store.red_packets_due(base - 1, 10_000).await.unwrap().iter().any(|d| d.2 == p.id), "not yet due");
    store.reschedule_red_packet(p.id, g, base, Some(base + 5)).await.unwrap();
    let due = store.red_packets_due(base + 5, 10_000).await.unwrap();
    assert!(due.contains(&(base + 5, g, p.id)) && !due.contains(&(base, g, p.id)), "{due:?}");
    store.reschedule_red_packet(p.id, g, base + 5, Some(base + 5)).await.unwrap();
    assert!(store.red_packets_due(base + 5, 10_000).await.unwrap().contains(&(base + 5, g, p.id)), "moved onto itself");
    store.reschedule_red_packet(p.id, g, base + 5, None).await.unwrap();
    assert!(!store.red_packets_due(now_ms(), 10_000).await.unwrap().iter().any(|d| d.2 == p.id));
}

fn media(id: u64, uploader: u64, size: u64) -> MediaRecord {
    MediaRecord {
        id: MediaId(id),
        uploader: UserId(uploader),
        kind: schema::frames::MessageKind::Image,
        mime: "image/png".into(),
        size,
        sha256: "ab".repeat(32),
        dimensions: Some((640, 480)),
        thumbnail: Some((256, 192)),
        created_at: now_ms(),
    }
}

/// A media record is inserted once, read back whole, linked to groups, and deleted.
pub async fn media_records_and_links(store: Arc<dyn Store>) {
    let id = random_id();
    let record = media(id, 7, 1234);
    assert!(store.insert_media(&record, 0).await.unwrap());
    assert!(!store.insert_media(&media(id, 8, 1), 0).await.unwrap(), "an id is taken once");
    assert_eq!(store.media(MediaId(id)).await.unwrap(), Some(record.clone()));
    let mut file = media(random_id(), 7, 10);
    (file.kind, file.mime, file.dimensions, file.thumbnail) =
        (schema::frames::MessageKind::File, "application/pdf".into(), None, None);
    store.insert_media(&file, 0).await.unwrap();
    assert_eq!(store.media(file.id).await.unwrap(), Some(file));
    assert_eq!(store.media(MediaId(random_id())).await.unwrap(), None);

    assert_eq!(store.media_groups(MediaId(id)).await.unwrap(), vec![]);
    for group in [30, 10, 30, 20] {
        store.link_media_group(MediaId(id), GroupId(group)).await.unwrap();
    }
    assert_eq!(store.media_groups(MediaId(id)).await.unwrap(), vec![GroupId(10), GroupId(20), GroupId(30)]);
    store.delete_media(MediaId(id)).await.unwrap();
    store.delete_media(MediaId(id)).await.unwrap();
    assert_eq!(store.media(MediaId(id)).await.unwrap(), None);
    assert_eq!(store.media_groups(MediaId(id)).await.unwrap(), vec![], "links go with the record");
}

/// Reservations racing for one user's quota: exactly as many land as the quota holds.
pub async fn media_quota_holds_under_concurrency(store: Arc<dyn Store>) {
    let user = UserId(random_id());
    assert_eq!(store.media_bytes(user).await.unwrap(), 0);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let store = store.clone();
        tasks.spawn(async move {
            for _ in 0..50 {
                match store.reserve_media_bytes(user, 100, 1000).await {
                    Err(StoreError::Unavailable(_)) => continue,
                    other => return other.unwrap(),
                }
            }
            panic!("the store stayed unavailable");
        });
    }
    let mut granted = 0;
    while let Some(done) = tasks.join_next().await {
        granted += usize::from(done.unwrap());
    }
    assert_eq!(granted, 10);
    assert_eq!(store.media_bytes(user).await.unwrap(), 1000);
    assert!(!store.reserve_media_bytes(user, 1, 1000).await.unwrap());
    store.release_media_bytes(user, 300).await.unwrap();
    assert_eq!(store.media_bytes(user).await.unwrap(), 700);
    assert!(store.reserve_media_bytes(user, 300, 1000).await.unwrap());
    store.release_media_bytes(user, 5000).await.unwrap();
    assert_eq!(store.media_bytes(user).await.unwrap(), 0, "never below zero");
}

/// The index of media to delete unless sent lists them by due time, and forgets them.
pub async fn unsent_media_come_due(store: Arc<dyn Store>) {
    let base = now_ms() - 10_000;
    let (early, late) = (media(random_id(), 7, 10), media(random_id(), 7, 10));
    store.insert_media(&early, base).await.unwrap();
    store.insert_media(&late, base + 60_000).await.unwrap();
    let due = store.unsent_media(base, 10_000).await.unwrap();
    assert!(due.contains(&(base, early.id)), "{due:?}");
    assert!(!due.iter().any(|(_, id)| *id == late.id), "not due yet");
    store.forget_unsent_media(base, early.id).await.unwrap();
    store.forget_unsent_media(base, early.id).await.unwrap();
    assert!(!store.unsent_media(base, 10_000).await.unwrap().iter().any(|(_, id)| *id == early.id));
}
