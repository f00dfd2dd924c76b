//! Receivers: what arrives live, resynced by seq after every reconnect (PROTOCOL.md §6.1).

use crate::cast::User;
use crate::clients::{Failure, call, connect, hang_up};
use crate::common::Client;
use crate::run::{Rng, Run};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// The longest a receiver waits before it reconnects.
const RECEIVER_BACKOFF_MS: u64 = 1_000;

/// What one receiver holds of its group: every message by seq, 1..=last.
pub(crate) struct View {
    pub(crate) group: usize,
    pub(crate) user: u64,
    pub(crate) messages: Vec<Value>,
}

impl View {
    fn last(&self) -> u64 {
        self.messages.len() as u64
    }

    /// Takes a message from a live event, `sync` or `history` (§6.1): a seq held already
    /// must be the same message, the next one is appended. False if it is beyond a gap.
    fn accept(&mut self, run: &Run, message: &Value) -> bool {
        let message = normalized(message);
        let seq = message["seq"].as_u64().expect("seq");
        if seq == 0 || seq > self.last() + 1 {
            return false;
        }
        if seq == self.last() + 1 {
            self.messages.push(message);
        } else if self.messages[seq as usize - 1] != message {
            let held = &self.messages[seq as usize - 1];
            run.violation(format!("receiver {} holds {held} at seq {seq}, the node now says {message}", self.user));
        }
        true
    }
}

/// A message as history shows it (a live event has `"event": "message"` besides).
pub(crate) fn normalized(message: &Value) -> Value {
    let mut message = message.clone();
    if let Some(fields) = message.as_object_mut() {
        fields.remove("event");
    }
    message
}

/// One receiver: records what arrives live, and after every reconnect resyncs with `sync`
/// and `history` (PROTOCOL.md §6.1). Returns its view once it holds the whole log.
pub(crate) async fn receive(run: Arc<Run>, g: usize, user: User) -> View {
    let group = run.cast.groups[g].id;
    let mut view = View { group: g, user: user.id, messages: Vec::new() };
    let mut finish = run.finish[g].subscribe();
    let mut rng = Rng::new(run.knobs.seed, 3_000_000 + user.id);
    let mut first = true;
    loop {
        // Like a phone, come back after a while: messages pile up to resync.
        if !std::mem::take(&mut first) {
            tokio::time::sleep(Duration::from_millis(rng.below(RECEIVER_BACKOFF_MS))).await;
        }
        let client = connect(&run, &user.token).await;
        if resync(&run, &client, group, &mut view).await.is_err() {
            hang_up(&client).await;
            continue;
        }
        // The last seq that arrived live on this connection.
        let mut last_live = None;
        loop {
            let end = *finish.borrow_and_update();
            if end.is_some_and(|end| view.last() >= end) {
                hang_up(&client).await;
                return view;
            }
            let Some(event) = client.next_event(Duration::from_millis(250)).await else {
                if client.closed(Duration::ZERO).await.is_some() {
                    break;
                }
                if finish.borrow().is_some() && catch_up(&run, &client, group, &mut view).await.is_err() {
                    break;
                }
                continue;
            };
            if event["event"] != "message" || event["group"] != group {
                continue;
            }
            let seq = event["seq"].as_u64().expect("seq");
            if let Some(previous) = last_live {
                if seq <= previous {
                    run.violation(format!("receiver {} got seq {seq} live after {previous}", user.id));
                } else if seq > previous + 1 {
                    run.counters.live_gaps.fetch_add(1, Relaxed);
                }
            }
            last_live = Some(seq);
            if seq > view.last() + 1 && catch_up(&run, &client, group, &mut view).await.is_err() {
                break;
            }
            if seq == view.last() + 1 {
                run.counters.live.fetch_add(1, Relaxed);
            }
            if !view.accept(&run, &event) {
                run.violation(format!("receiver {} cannot place seq {seq} after {}", user.id, view.last()));
            }
        }
        hang_up(&client).await;
    }
}

/// After a reconnect: `sync` from the last seq held, then `history` while there is more.
async fn resync(run: &Run, client: &Client, group: u64, view: &mut View) -> Result<(), Failure> {
    let fields = json!({ "groups": [{ "group": group, "after": view.last() }], "limit": 50 });
    let reply = loop {
        match call(run, client, "sync", fields.clone()).await {
            Err(Failure::Transient(pause)) => tokio::time::sleep(pause).await,
            other => break other?,
        }
    };
    let Some(summary) = reply["groups"].as_array().and_then(|groups| groups.iter().find(|s| s["group"] == group))
    else {
        panic!("sync does not list group {group}: {reply}");
    };
    for message in summary["messages"].as_array().expect("messages") {
        let before = view.last();
        if !view.accept(run, message) {
            run.violation(format!("sync after {before} gave seq {} first", message["seq"]));
        }
        if view.last() > before {
            run.counters.via_sync.fetch_add(1, Relaxed);
        }
    }
    if summary["has_more"] == true || summary["last_seq"].as_u64() > Some(view.last()) {
        catch_up(run, client, group, view).await?;
    }
    Ok(())
}

/// Pages `history` after the last seq held until there is no more.
async fn catch_up(run: &Run, client: &Client, group: u64, view: &mut View) -> Result<(), Failure> {
    loop {
        let fields = json!({ "group": group, "after": view.last(), "limit": 100 });
        let page = match call(run, client, "history", fields).await {
            Err(Failure::Transient(pause)) => {
                tokio::time::sleep(pause).await;
                continue;
            }
            other => other?,
        };
        for message in page["messages"].as_array().expect("messages") {
            let before = view.last();
            if !view.accept(run, message) {
                run.violation(format!("history after {before} gave seq {} first", message["seq"]));
            }
            if view.last() > before {
                run.counters.via_history.fetch_add(1, Relaxed);
            }
        }
        if page["has_more"] != true {
            return Ok(());
        }
    }
}
