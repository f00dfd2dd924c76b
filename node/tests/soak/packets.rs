//! Red packets: one sender per group, and grabbers who grab every packet.

use crate::cast::User;
use crate::clients::Session;
use crate::run::{Ack, Packet, Rng, Run};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// One group's red packet sender: a packet every `SOAK_PACKET_EVERY_MS` while text flows,
/// each sent until acked (the same `client_msg_id`), then its id read from its message.
pub(crate) async fn send_packets(run: Arc<Run>, g: usize, user: User) {
    let group = run.cast.groups[g].id;
    let mut rng = Rng::new(run.knobs.seed, 1_000_000 + g as u64);
    let mut session = Session::new(run.clone(), user.token.clone());
    for n in 0..run.knobs.packets {
        tokio::time::sleep(run.knobs.packet_every).await;
        if run.texts_done.load(Relaxed) {
            break;
        }
        let _gate = run.gate.read().await;
        let id = format!("rp{g}-{n}");
        // Sometimes fewer shares than grabbers (some find it empty), sometimes more (the
        // rest is refunded when it expires).
        let count = 1 + rng.below(run.knobs.grabbers as u64 + 2);
        let total = (count + rng.below(1_000)) as i64;
        let kind = if rng.below(2) == 0 { "lucky" } else { "equal" };
        let body = json!({ "total": total, "count": count, "kind": kind, "greeting": "soak" });
        let fields = json!({ "group": group, "client_msg_id": id, "type": "red_packet", "body": body });
        let (ack, attempts) = session.request("send", &fields).await;
        let ack = match ack {
            Ok(ack) => ack,
            Err(error) => {
                run.violation(format!("red packet {id} refused: {error}"));
                continue;
            }
        };
        run.counters.resends.fetch_add(u64::from(attempts - 1), Relaxed);
        if ack["duplicate"] == true {
            run.counters.duplicate_acks.fetch_add(1, Relaxed);
            if attempts == 1 {
                run.violation(format!("{id} sent once, acked as a duplicate: {ack}"));
            }
        }
        let seq = ack["seq"].as_u64().expect("seq");
        run.record_ack(&id, Ack { group: g, seq, sender: user.id, body: None });
        run.counters.acked_packets.fetch_add(1, Relaxed);
        let page = session.must("history", &json!({ "group": group, "after": seq - 1, "limit": 1 })).await;
        let message = &page["messages"][0];
        if message["client_msg_id"] != id.as_str() || message["type"] != "red_packet" {
            run.violation(format!("red packet {id} was acked at seq {seq}, which holds {message}"));
            continue;
        }
        let packet = message["body"]["packet"].as_u64().expect("packet id");
        run.packets.lock().unwrap()[g].push(Packet { id: packet, group: g, total, count });
    }
}

/// One grabber: grabs every packet of its group once, asking again after a lost
/// connection until answered; now and then grabs a won packet again.
pub(crate) async fn grab_packets(run: Arc<Run>, g: usize, user: User) {
    let group = run.cast.groups[g].id;
    let mut rng = Rng::new(run.knobs.seed, 2_000_000 + user.id);
    let mut session = Session::new(run.clone(), user.token.clone());
    let mut next = 0;
    loop {
        let done = run.packets_done.load(Relaxed);
        let Some(packet) = run.packets.lock().unwrap()[g].get(next).map(|p| p.id) else {
            if done {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        next += 1;
        let _gate = run.gate.read().await;
        let fields = json!({ "group": group, "packet": packet });
        let (result, attempts) = session.request("grab_red_packet", &fields).await;
        let result = match result {
            Ok(result) => result,
            Err(error) => {
                run.violation(format!("user {} grabbing {packet}: {error}", user.id));
                continue;
            }
        };
        let amount = result["amount"].as_i64();
        match (result["status"].as_str(), attempts) {
            (Some("grabbed"), _) => run.counters.grabs_won.fetch_add(1, Relaxed),
            // A grab taken by an attempt whose reply was lost.
            (Some("already_grabbed"), 2..) => run.counters.lost_grab_replies.fetch_add(1, Relaxed),
            (Some("empty"), _) => run.counters.grabs_empty.fetch_add(1, Relaxed),
            (Some("expired"), _) => run.counters.grabs_expired.fetch_add(1, Relaxed),
            _ => {
                run.violation(format!("user {}'s first grab of {packet} answered {result}", user.id));
                continue;
            }
        };
        run.grabs.lock().unwrap().insert((packet, user.id), amount);
        if amount.is_some() && rng.below(4) == 0 {
            run.counters.regrabs.fetch_add(1, Relaxed);
            let again = session.must("grab_red_packet", &fields).await;
            if again["status"] != "already_grabbed" || again["amount"].as_i64() != amount {
                run.violation(format!("user {} won {amount:?} of {packet}, grabbing again answers {again}", user.id));
            }
        }
    }
}
