//! Setup shared by scenarios: users in groups, ready to drive.

use crate::load::accounts;
use crate::load::conn::{LoadError, Socket, Target, request};
use serde_json::json;
use std::net::IpAddr;

/// One signed-up member of a group, with its logged-in socket.
pub struct Seat {
    /// The member's user id.
    pub user: u64,
    /// Their session token.
    pub token: String,
    /// Their connection.
    pub socket: Socket,
}

/// Signs up `groups * members` users and puts each block of `members` in an open group
/// (the first of each block creates it, with `max_members` when given). Returns the group
/// ids and the seats, group by group.
pub async fn groups_of_members(
    target: &Target,
    sources: &[IpAddr],
    scenario: &str,
    groups: usize,
    members: usize,
    max_members: Option<u32>,
) -> Result<(Vec<u64>, Vec<Vec<Seat>>), LoadError> {
    let prefix = accounts::run_prefix(scenario);
    let signed = accounts::sign_up(target, sources, &prefix, groups * members, 128, true).await?;
    let mut seats: Vec<Seat> = Vec::with_capacity(signed.len());
    for (account, socket) in signed {
        let socket = socket.ok_or_else(|| LoadError::Connection("no socket".into()))?;
        seats.push(Seat { user: account.user, token: account.token, socket });
    }
    let mut ids = Vec::with_capacity(groups);
    let mut by_group: Vec<Vec<Seat>> = Vec::with_capacity(groups);
    let mut seats = seats.into_iter();
    for g in 0..groups {
        let mut block: Vec<Seat> = seats.by_ref().take(members).collect();
        let Some(owner) = block.first_mut() else { break };
        let mut fields = json!({ "name": format!("{prefix}g{g}"), "open": true });
        if let Some(max) = max_members {
            fields["max_members"] = json!(max);
        }
        let info = request(&mut owner.socket, 10, "create_group", fields).await?;
        let group = info["group"].as_u64().unwrap_or(0);
        ids.push(group);
        by_group.push(block);
    }
    Ok((ids, by_group))
}

/// Has every seat but the first (the owner) join its group, concurrently.
pub async fn join_all(groups: &[u64], seats: Vec<Vec<Seat>>) -> Result<Vec<Vec<Seat>>, LoadError> {
    let mut tasks = tokio::task::JoinSet::new();
    for (g, block) in seats.into_iter().enumerate() {
        for (i, mut seat) in block.into_iter().enumerate() {
            let group = groups[g];
            tasks.spawn(async move {
                if i > 0 {
                    request(&mut seat.socket, 11, "join", json!({ "group": group })).await?;
                }
                Ok::<_, LoadError>((g, i, seat))
            });
        }
    }
    let mut out: Vec<Vec<Option<Seat>>> = groups.iter().map(|_| Vec::new()).collect();
    while let Some(joined) = tasks.join_next().await {
        let (g, i, seat) = joined.map_err(|e| LoadError::Connection(e.to_string()))??;
        if out[g].len() <= i {
            out[g].resize_with(i + 1, || None);
        }
        out[g][i] = Some(seat);
    }
    Ok(out.into_iter().map(|block| block.into_iter().flatten().collect()).collect())
}
