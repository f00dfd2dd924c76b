//! Groups and their members on ScyllaDB: one partition per group, every fenced write a
//! conditional statement or batch carrying `epoch = :mine`.
//!
//! A refused LWT answers with the old values of the columns it tested; those tell apart a
//! stale fence (another epoch), no group (null epoch), a dissolved group, a member there or
//! not (role), and a count that moved since it was read (then the call reads and tries again).

use super::rows::{self, CapRow, GroupRow, MemberRow, id};
use super::{BatchPart, Inner, Lwt, ScyllaStore};
use actors::store::*;
use async_trait::async_trait;
use schema::frames::Role;
use schema::records::*;
use schema::{GroupId, UserId};

/// Attempts of a read-then-write loop (a claim, a count change) before giving up as
/// `unavailable`. Only a burst of concurrent writers to one group needs more than one.
const ATTEMPTS: usize = 64;

/// The fence check on a refused LWT: `Fenced` if the group has another epoch; Ok(false) if
/// there is no group (null epoch); Ok(true) if the fence holds, so the refusal had another
/// reason.
fn fence_holds(fence: Fence, answer: &Lwt) -> StoreResult<bool> {
    match answer.epoch()? {
        None => Ok(false),
        Some(current) if current != fence.epoch => Err(fence.refused(current)),
        Some(_) => Ok(true),
    }
}

/// The fence check on a row read before a write.
fn check_read_epoch(fence: Fence, epoch: Option<i64>) -> StoreResult<()> {
    let current = rows::unsigned(epoch, "groups.epoch")?;
    if current == fence.epoch { Ok(()) } else { Err(fence.refused(current)) }
}

impl Inner {
    /// The group's (member_count, max_members, dissolved, epoch), None if there is no group.
    async fn cap(&self, group: GroupId) -> StoreResult<Option<CapRow>> {
        self.first::<CapRow>(&self.st.select_cap, (id(group.0),)).await
    }
}

#[async_trait]
impl GroupStore for ScyllaStore {
    async fn create_group(&self, group: &GroupRecord, owner: &MemberRecord) -> StoreResult<bool> {
        let st = &self.inner.st;
        let g = id(group.id.0);
        let row = (
            g,
            group.name.as_str(),
            id(group.owner.0),
            group.open,
            i32::try_from(group.max_members).unwrap_or(i32::MAX),
            id(group.created_at),
            group.dissolved,
        );
        let owner_row = (g, id(owner.user.0), owner.role.as_str(), id(owner.joined_at));
        let attempt = || {
            let parts: Vec<BatchPart<'_>> =
                vec![(&st.insert_group, Box::new(row)), (&st.insert_owner, Box::new(owner_row))];
            self.inner.lwt_batch(parts)
        };
        // The group row that refused a retry is ours if it has our owner and creation time.
        let is_ours = |there: &Lwt| {
            Ok(there.bigint("owner")? == Some(id(group.owner.0))
                && there.bigint("created_at")? == Some(id(group.created_at)))
        };
        self.inner.insert_if_absent(attempt, is_ours).await
    }

    async fn claim_group(&self, group: GroupId) -> StoreResult<Option<Fence>> {
        let inner = &self.inner;
        let Some((epoch,)) = inner.first::<(Option<i64>,)>(&inner.st.select_epoch, (id(group.0),)).await? else {
            return Ok(None);
        };
        let mut current = rows::unsigned(epoch, "groups.epoch")?;
        for _ in 0..ATTEMPTS {
            let next = current + 1;
            let answer = inner.lwt(&inner.st.claim_epoch, (id(next), id(group.0), id(current))).await?;
            if answer.applied {
                // The group row is ours; now the log, which carries its own copy of the fence
                // (see `fence.rs`): once this returns, a deposed owner's appends are refused.
                let fence = Fence { group, epoch: next };
                inner.fence_log(fence).await?;
                return Ok(Some(fence));
            }
            // Another claim won meanwhile: its epoch came back; go one past it.
            match answer.epoch()? {
                Some(seen) => current = seen,
                None => return Ok(None),
            }
        }
        Err(StoreError::Unavailable(format!("scylla: claims of group {group} kept colliding")))
    }

    async fn group(&self, group: GroupId) -> StoreResult<Option<GroupRecord>> {
        self.inner.first::<GroupRow>(&self.inner.st.select_group, (id(group.0),)).await?.map(rows::group).transpose()
    }

    async fn member(&self, group: GroupId, user: UserId) -> StoreResult<Option<MemberRecord>> {
        let row = self.inner.first::<MemberRow>(&self.inner.st.select_member, (id(group.0), id(user.0))).await?;
        Ok(row.map(rows::member).transpose()?.flatten())
    }

    async fn members(&self, group: GroupId, after: Option<UserId>, limit: usize) -> StoreResult<Vec<MemberRecord>> {
        // Ids are never negative, so -1 starts before the first.
        let after = after.map_or(-1, |user| id(user.0));
        let values = (id(group.0), after, super::limit_value(limit));
        let page: Vec<MemberRow> = self.inner.paged(&self.inner.st.select_members, values, limit).await?;
        let mut members = Vec::with_capacity(page.len());
        for row in page {
            members.extend(rows::member(row)?);
        }
        Ok(members)
    }

    async fn add_member_if_below_cap(&self, fence: Fence, member: &MemberRecord) -> StoreResult<AddMemberOutcome> {
        let inner = &self.inner;
        let g = id(fence.group.0);
        for _ in 0..ATTEMPTS {
            let Some((count, max, dissolved, epoch)) = inner.cap(fence.group).await? else {
                return Ok(AddMemberOutcome::NoGroup);
            };
            check_read_epoch(fence, epoch)?;
            if rows::required(dissolved, "groups.dissolved")? {
                return Ok(AddMemberOutcome::NoGroup);
            }
            let (count, max) = (rows::count(count, "groups.member_count")?, rows::count(max, "groups.max_members")?);
            if count >= max {
                let existing = self.member(fence.group, member.user).await?;
                return Ok(if existing.is_some() { AddMemberOutcome::AlreadyMember } else { AddMemberOutcome::Full });
            }
            let n = count as i32;
            let values = (n + 1, member.role.as_str(), id(member.joined_at), g, id(member.user.0), id(fence.epoch), n);
            let answer = inner.lwt(&inner.st.add_member, values).await?;
            if answer.applied {
                return Ok(AddMemberOutcome::Added(count + 1));
            }
            if !fence_holds(fence, &answer)? || answer.boolean("dissolved")? == Some(true) {
                return Ok(AddMemberOutcome::NoGroup);
            }
            if answer.rows_with("role") > 0 {
                return Ok(AddMemberOutcome::AlreadyMember);
            }
            // The count moved since it was read: read it again.
        }
        Err(StoreError::Unavailable(format!("scylla: membership of group {} kept changing", fence.group)))
    }

    async fn remove_member(&self, fence: Fence, user: UserId) -> StoreResult<Option<u32>> {
        let inner = &self.inner;
        let g = id(fence.group.0);
        for _ in 0..ATTEMPTS {
            let Some((count, _, _, epoch)) = inner.cap(fence.group).await? else { return Ok(None) };
            check_read_epoch(fence, epoch)?;
            let count = rows::count(count, "groups.member_count")?;
            let n = count as i32;
            let lower = (n.saturating_sub(1).max(0), g, id(fence.epoch), n);
            let parts: Vec<BatchPart<'_>> =
                vec![(&inner.st.lower_count, Box::new(lower)), (&inner.st.delete_member, Box::new((g, id(user.0))))];
            let answer = inner.lwt_batch(parts).await?;
            if answer.applied {
                return Ok(Some(count.saturating_sub(1)));
            }
            if !fence_holds(fence, &answer)? || answer.rows_with("role") == 0 {
                return Ok(None);
            }
        }
        Err(StoreError::Unavailable(format!("scylla: membership of group {} kept changing", fence.group)))
    }

    async fn set_member_role(&self, fence: Fence, user: UserId, role: Role) -> StoreResult<bool> {
        let values = (role.as_str(), id(fence.group.0), id(user.0), id(fence.epoch));
        let answer = self.inner.lwt(&self.inner.st.set_role, values).await?;
        if answer.applied {
            return Ok(true);
        }
        fence_holds(fence, &answer)?;
        Ok(false)
    }

    async fn transfer_ownership(&self, fence: Fence, from: UserId, to: UserId) -> StoreResult<bool> {
        let st = &self.inner.st;
        let g = id(fence.group.0);
        let mut parts: Vec<BatchPart<'_>> = vec![(&st.set_owner, Box::new((id(to.0), g, id(fence.epoch))))];
        if from != to {
            parts.push((&st.change_role, Box::new((Role::Admin.as_str(), g, id(from.0)))));
        }
        parts.push((&st.change_role, Box::new((Role::Owner.as_str(), g, id(to.0)))));
        let members = parts.len() - 1;
        let answer = self.inner.lwt_batch(parts).await?;
        if answer.applied {
            return Ok(true);
        }
        if !fence_holds(fence, &answer)? || answer.rows_with("role") < members {
            return Ok(false);
        }
        Err(StoreError::Unavailable(format!(
            "scylla: transfer in group {} refused for no reason it returned",
            fence.group
        )))
    }

    async fn update_group(
        &self,
        fence: Fence,
        name: Option<&str>,
        open: Option<bool>,
    ) -> StoreResult<Option<GroupRecord>> {
        // Setting the epoch to itself keeps the statement a real write when both fields are
        // absent (bound UNSET), so the fence is checked either way.
        let values = (super::unset(name), super::unset(open), id(fence.epoch), id(fence.group.0), id(fence.epoch));
        let answer = self.inner.lwt(&self.inner.st.update_group, values).await?;
        if !answer.applied && !fence_holds(fence, &answer)? {
            return Ok(None);
        }
        if !answer.applied {
            return Err(StoreError::Unavailable(format!("scylla: update of group {} refused", fence.group)));
        }
        self.group(fence.group).await
    }

    async fn dissolve_group(&self, fence: Fence) -> StoreResult<bool> {
        let answer = self.inner.lwt(&self.inner.st.dissolve_group, (id(fence.group.0), id(fence.epoch))).await?;
        if answer.applied {
            return Ok(true);
        }
        fence_holds(fence, &answer)?;
        Ok(false)
    }
}
