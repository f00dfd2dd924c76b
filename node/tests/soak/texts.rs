//! Text senders: pipelined sends, resent with the same `client_msg_id` after a reconnect.

use crate::cast::User;
use crate::clients::{Failure, connect, hang_up, start, wait};
use crate::run::{Ack, Rng, Run};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use tokio::time::Instant;

/// One sender: keeps up to `SOAK_WINDOW` sends in flight; after a lost connection,
/// reconnects and sends everything not acked again with the same `client_msg_id`, until
/// all are acked.
pub(crate) async fn send_texts(run: Arc<Run>, g: usize, s: usize, user: User) {
    let pad = Rng::new(run.knobs.seed, (g * 1000 + s) as u64).below(1 << 20);
    let mut sender = TextSender { run: run.clone(), g, s, user, pad, unacked: BTreeMap::new(), queue: VecDeque::new() };
    let mut next = 0u64;
    // The send time of the next new message, once taken.
    let mut slot = run.take_text();
    loop {
        let client = connect(&run, &sender.user.token).await;
        sender.queue = sender.unacked.keys().copied().collect();
        let mut in_flight = FuturesUnordered::new();
        let mut lost = false;
        while !lost {
            // Resends first, then new messages when their time comes.
            let room = in_flight.len() < run.knobs.window;
            let n = if room && let Some(n) = sender.queue.pop_front() {
                Some(n)
            } else {
                let due = slot.filter(|_| room);
                tokio::select! {
                    Some((n, outcome)) = in_flight.next() => {
                        lost = sender.settle(n, outcome).await;
                        None
                    }
                    _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                        slot = run.take_text();
                        next += 1;
                        sender.unacked.insert(next - 1, 0);
                        Some(next - 1)
                    }
                    else => break,
                }
            };
            let Some(n) = n else { continue };
            let fields = sender.fields(n);
            let sent = sender.unacked.get_mut(&n).expect("unacked");
            if *sent > 0 {
                run.counters.resends.fetch_add(1, Relaxed);
            }
            *sent += 1;
            match start(&client, "send", fields).await {
                Ok(reply) => in_flight.push({
                    let run = &run;
                    async move { (n, wait(run, reply).await) }
                }),
                Err(_) => {
                    sender.queue.push_front(n);
                    lost = true;
                }
            }
        }
        // Acks that came before the connection went count; what has none goes again.
        hang_up(&client).await;
        while let Some((n, outcome)) = in_flight.next().await {
            sender.settle(n, outcome).await;
        }
        drop(in_flight);
        if !lost {
            return;
        }
    }
}

/// A text sender's messages: those taken and not acked yet, with how many times each was sent.
struct TextSender {
    run: Arc<Run>,
    g: usize,
    s: usize,
    user: User,
    pad: u64,
    unacked: BTreeMap<u64, u32>,
    /// What waits to be sent again on this connection.
    queue: VecDeque<u64>,
}

impl TextSender {
    fn text(&self, n: u64) -> String {
        format!("soak g{} s{} n{n} {}", self.g, self.s, "x".repeat(((n + self.pad) % 97) as usize))
    }

    fn id(&self, n: u64) -> String {
        format!("g{}s{}-{n}", self.g, self.s)
    }

    fn fields(&self, n: u64) -> Value {
        let group = self.run.cast.groups[self.g].id;
        json!({ "group": group, "client_msg_id": self.id(n), "type": "text", "body": self.text(n) })
    }

    /// Takes a send's outcome; true if the connection is lost.
    async fn settle(&mut self, n: u64, outcome: Result<Value, Failure>) -> bool {
        let run = &self.run;
        let id = self.id(n);
        match outcome {
            Ok(ack) => {
                let Some(sent) = self.unacked.remove(&n) else {
                    run.violation(format!("{id} acked again: {ack}"));
                    return false;
                };
                if ack["duplicate"] == true {
                    run.counters.duplicate_acks.fetch_add(1, Relaxed);
                    if sent == 1 {
                        run.violation(format!("{id} sent once, acked as a duplicate: {ack}"));
                    }
                }
                let Some(seq) = ack["seq"].as_u64() else { panic!("an ack without a seq: {ack}") };
                let ack = Ack { group: self.g, seq, sender: self.user.id, body: Some(self.text(n)) };
                run.record_ack(&id, ack);
                run.counters.acked_texts.fetch_add(1, Relaxed);
                false
            }
            Err(Failure::Transient(pause)) => {
                run.counters.transient_retries.fetch_add(1, Relaxed);
                tokio::time::sleep(pause).await;
                self.queue.push_back(n);
                false
            }
            Err(Failure::Lost) => true,
            Err(Failure::Refused(error)) => {
                run.violation(format!("send {id} refused: {error}"));
                self.unacked.remove(&n);
                false
            }
        }
    }
}
