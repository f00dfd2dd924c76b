//! The users and groups of the run.

use crate::Knobs;
use crate::common::{TestNode, create_group};
use serde_json::json;

/// What each red packet sender is credited with at the start.
pub(crate) const FUNDING: i64 = 1_000_000;

#[derive(Debug, Clone)]
pub(crate) struct User {
    pub(crate) id: u64,
    pub(crate) token: String,
}

/// The users and groups of the run, made before the first kill.
pub(crate) struct Cast {
    /// Creates the groups and reads everything at the end.
    pub(crate) owner: User,
    pub(crate) groups: Vec<CastGroup>,
}

pub(crate) struct CastGroup {
    pub(crate) id: u64,
    pub(crate) senders: Vec<User>,
    pub(crate) receivers: Vec<User>,
    pub(crate) packet_sender: User,
    pub(crate) grabbers: Vec<User>,
}

impl Cast {
    pub(crate) async fn sign_up(node: &TestNode, knobs: &Knobs) -> Cast {
        let (owner_client, owner_id, owner_token) = node.user_with_token("owner").await;
        let mut groups = Vec::new();
        for g in 0..knobs.groups {
            let id = create_group(&owner_client, &format!("soak {g}"), true).await;
            let mut senders = Vec::new();
            for _ in 0..knobs.senders {
                senders.push(member(node, id, &format!("g{g}sender")).await);
            }
            let mut receivers = Vec::new();
            for _ in 0..knobs.receivers {
                receivers.push(member(node, id, &format!("g{g}receiver")).await);
            }
            let packet_sender = member(node, id, &format!("g{g}packets")).await;
            let mut grabbers = Vec::new();
            for _ in 0..knobs.grabbers {
                grabbers.push(member(node, id, &format!("g{g}grabber")).await);
            }
            let answer = node.console(&format!("credit {} {FUNDING} soak-{g}", packet_sender.id)).await;
            assert_eq!(answer["credited"], FUNDING, "{answer}");
            groups.push(CastGroup { id, senders, receivers, packet_sender, grabbers });
        }
        owner_client.close().await;
        Cast { owner: User { id: owner_id, token: owner_token }, groups }
    }

    /// Everyone, once.
    pub(crate) fn everyone(&self) -> Vec<&User> {
        let mut all = vec![&self.owner];
        for group in &self.groups {
            all.extend(group.senders.iter().chain(&group.receivers).chain(&group.grabbers));
            all.push(&group.packet_sender);
        }
        all
    }
}

/// A new user who joins the group.
async fn member(node: &TestNode, group: u64, prefix: &str) -> User {
    let (client, id, token) = node.user_with_token(prefix).await;
    client.request("join", json!({ "group": group })).await.expect("join");
    client.close().await;
    User { id, token }
}
