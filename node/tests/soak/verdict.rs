//! The verdict: the logs against the acks, the receivers' views against the logs, and the summary.

use crate::clients::Session;
use crate::money::MoneyFigures;
use crate::receivers::{View, normalized};
use crate::run::Run;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

#[derive(Debug, Default)]
pub(crate) struct Verdict {
    pub(crate) lost: usize,
    pub(crate) duplicated: usize,
    pub(crate) gaps: usize,
    pub(crate) messages: usize,
}

/// Reads a group's whole log with `history`, oldest first.
pub(crate) async fn read_log(session: &mut Session, group: u64) -> Vec<Value> {
    let mut log: Vec<Value> = Vec::new();
    loop {
        let after = log.last().map_or(0, |m| m["seq"].as_u64().expect("seq"));
        let page = session.must("history", &json!({ "group": group, "after": after, "limit": 100 })).await;
        log.extend(page["messages"].as_array().expect("messages").iter().map(normalized));
        if page["has_more"] != true {
            return log;
        }
    }
}

/// Every acked message is in its group's log once, at the seq its ack named, with what was
/// sent; the log holds nothing else, twice, or with a gap.
pub(crate) fn judge_logs(run: &Run, logs: &[Vec<Value>]) -> Verdict {
    let acks = run.acks.lock().unwrap().clone();
    let mut verdict = Verdict::default();
    for (g, log) in logs.iter().enumerate() {
        verdict.messages += log.len();
        let mut seen: HashMap<(u64, &str), u64> = HashMap::new();
        for (i, message) in log.iter().enumerate() {
            let seq = message["seq"].as_u64().expect("seq");
            if seq != i as u64 + 1 {
                verdict.gaps += 1;
                run.violation(format!("group {g}: seq {seq} at position {}", i + 1));
            }
            let id = message["client_msg_id"].as_str().expect("client_msg_id");
            let sender = message["sender"].as_u64().expect("sender");
            if let Some(first) = seen.insert((sender, id), seq) {
                verdict.duplicated += 1;
                run.violation(format!("group {g}: {id} of {sender} at seqs {first} and {seq}"));
            }
            match acks.get(id) {
                Some(ack) if ack.group == g && ack.sender == sender => {}
                _ => run.violation(format!("group {g}: seq {seq} holds {message}, which nobody was acked for")),
            }
        }
        for (id, ack) in acks.iter().filter(|(_, ack)| ack.group == g) {
            let at = log.get(ack.seq as usize - 1);
            let kind = if ack.body.is_some() { "text" } else { "red_packet" };
            let same = at.is_some_and(|m| {
                m["client_msg_id"] == id.as_str()
                    && m["sender"] == ack.sender
                    && m["type"] == kind
                    && ack.body.as_ref().is_none_or(|body| m["body"] == body.as_str())
            });
            if !same {
                verdict.lost += 1;
                run.violation(format!("group {g}: {id} was acked at seq {}, which holds {at:?}", ack.seq));
            }
        }
    }
    verdict
}

/// A receiver's view is the log, message for message.
pub(crate) fn judge_view(run: &Run, view: &View, log: &[Value]) {
    if view.messages.len() != log.len() {
        run.violation(format!("receiver {} holds {} messages, the log {}", view.user, view.messages.len(), log.len()));
    }
    if let Some((i, (held, logged))) = view.messages.iter().zip(log).enumerate().find(|(_, (a, b))| a != b) {
        run.violation(format!("receiver {} holds {held} at seq {}, the log {logged}", view.user, i + 1));
    }
}

pub(crate) fn print_summary(run: &Run, verdict: &Verdict, views: &[View], money: &MoneyFigures, took: Duration) {
    let c = &run.counters;
    let n = |counter: &AtomicU64| counter.load(Relaxed);
    let grabs = run.grabs.lock().unwrap();
    eprintln!(
        "soak summary: {} text + {} red packet messages acked in {} groups ({} in the logs); {} kills; \
         {} resends, {} acked as duplicates, {} unavailable/rate-limited retries, {} timeouts, {} connections; \
         lost {}, duplicated {}, gaps {}; {} receivers equal to the log ({} messages live, {} via sync, {} via history, {} live gaps); \
         red packets: {} grabs won ({} cents), {} empty, {} expired, {} lost grab replies answered on retry, {} re-grabs; \
         {} refunds ({} cents); {} money checks exact; node down {:.1}s in all; seed {}; {:.1}s",
        n(&c.acked_texts),
        n(&c.acked_packets),
        run.cast.groups.len(),
        verdict.messages,
        n(&c.kills),
        n(&c.resends),
        n(&c.duplicate_acks),
        n(&c.transient_retries),
        n(&c.timeouts),
        n(&c.connections),
        verdict.lost,
        verdict.duplicated,
        verdict.gaps,
        views.len(),
        n(&c.live),
        n(&c.via_sync),
        n(&c.via_history),
        n(&c.live_gaps),
        grabs.values().filter(|a| a.is_some()).count(),
        money.grabbed,
        n(&c.grabs_empty),
        n(&c.grabs_expired),
        n(&c.lost_grab_replies),
        n(&c.regrabs),
        money.refunds,
        money.refunded,
        n(&c.money_checks),
        n(&c.down_ms) as f64 / 1000.0,
        run.knobs.seed,
        took.as_secs_f64(),
    );
}
