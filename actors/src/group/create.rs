//! Creating a group: the one write that happens before the group has an actor.

use crate::error::ApiError;
use crate::store::Fence;
use crate::{System, now_ms, random_id};
use schema::GroupId;
use schema::UserId;
use schema::frames::Role;
use schema::records::{GroupRecord, MemberRecord, UserGroupRecord};

/// Creates a group owned by `owner`, its only member, under a fresh random id, with its
/// retention (0: forever). The owner's index entry is written first, so it may point at
/// nothing but never misses a group.
pub async fn create_group(
    system: &System,
    owner: UserId,
    name: &str,
    open: bool,
    max_members: u32,
    retention_days: u32,
) -> Result<GroupRecord, ApiError> {
    let store = &system.store;
    let now = now_ms();
    let member = MemberRecord { user: owner, role: Role::Owner, joined_at: now };
    loop {
        let record = GroupRecord {
            id: GroupId(random_id()),
            name: name.to_owned(),
            owner,
            open,
            max_members,
            member_count: 1,
            created_at: now,
            dissolved: false,
        };
        store.link_user_group(owner, &UserGroupRecord { group: record.id, read_seq: 0, joined_at: now }).await?;
        if store.create_group(&record, &member).await? {
            // At epoch 0, which the group has until its first actor claims it: nobody else
            // knows its id before this returns, so nothing can have claimed it yet.
            if retention_days > 0 {
                store.set_retention_days(Fence { group: record.id, epoch: 0 }, retention_days).await?;
            }
            return Ok(record);
        }
        // The id was taken (a 1 in 2^53 chance): undo the index entry and draw again.
        store.unlink_user_group(owner, record.id).await?;
    }
}
