//! Who may do what in a group. Pure functions, so the table is testable on its own.

use schema::frames::Role;

/// Adding members and changing the group's name or openness: owner and admins.
pub fn may_manage(role: Role) -> bool {
    matches!(role, Role::Owner | Role::Admin)
}

/// Removing `target` as `actor`: the owner removes anyone but themself; admins remove plain
/// members; nobody removes themself (that is `leave`).
pub fn may_remove(actor: Role, target: Role) -> bool {
    match actor {
        Role::Owner => target != Role::Owner,
        Role::Admin => target == Role::Member,
        Role::Member => false,
    }
}

/// Appointing admins, transferring ownership, dissolving: the owner only.
pub fn is_owner(role: Role) -> bool {
    role == Role::Owner
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removal_table() {
        use Role::*;
        let table = [
            (Owner, Owner, false),
            (Owner, Admin, true),
            (Owner, Member, true),
            (Admin, Owner, false),
            (Admin, Admin, false),
            (Admin, Member, true),
            (Member, Owner, false),
            (Member, Admin, false),
            (Member, Member, false),
        ];
        for (actor, target, allowed) in table {
            assert_eq!(may_remove(actor, target), allowed, "{actor:?} removing {target:?}");
        }
        assert!(may_manage(Owner) && may_manage(Admin) && !may_manage(Member));
    }
}
