//! The money check: wallets, ledgers and red packets add up exactly after every restart.

use crate::cast::{FUNDING, User};
use crate::clients::{Session, hang_up};
use crate::common::TestNode;
use crate::run::{Packet, Run};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::time::Instant;

/// How long the money check waits for the red packet requests under way to be answered.
const GATE_DEADLINE: Duration = Duration::from_secs(60);
/// The ledger entries the `wallet` op shows (PROTOCOL.md: the first 1000).
pub(crate) const WALLET_PAGE: usize = 1000;

/// How a packet stood at a money check.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PacketFacts {
    status: String,
    grabbed_amount: i64,
    grabbed_count: u64,
    /// Who got what, once the packet is over.
    grabs: Option<Vec<(u64, i64)>>,
    refund: Option<i64>,
}

/// What a red packet sender's ledger holds, by packet.
#[derive(Debug, Default, PartialEq)]
struct SenderLedger {
    debits: HashMap<u64, i64>,
    refunds: HashMap<u64, i64>,
    credits: i64,
    odd: Vec<Value>,
}

#[derive(Debug, Default)]
pub(crate) struct MoneyFigures {
    pub(crate) open: usize,
    pub(crate) held: i64,
    pub(crate) refunded: i64,
    pub(crate) refunds: usize,
    pub(crate) grabbed: i64,
}

/// With no red packet request under way: every wallet's balance equals its ledger,
/// every grabber holds exactly what its acked grabs won, every packet was debited once,
/// its grabs sum to at most its total and its refund to the rest, and the wallets plus
/// what open packets still hold make exactly what was funded. `settled` keeps the facts
/// of packets that are over (checked again at the end, when `last`; then every packet
/// must be over).
pub(crate) async fn check_money(
    run: &Arc<Run>,
    node: &TestNode,
    settled: &mut HashMap<u64, PacketFacts>,
    last: bool,
) -> MoneyFigures {
    let Ok(_gate) = tokio::time::timeout(GATE_DEADLINE, run.gate.write()).await else {
        run.violation(format!("red packet requests still unanswered {GATE_DEADLINE:?} after a restart"));
        return MoneyFigures::default();
    };
    run.counters.money_checks.fetch_add(1, Relaxed);
    let packets: Vec<Packet> = run.packets.lock().unwrap().iter().flatten().cloned().collect();
    let senders: Vec<&User> = run.cast.groups.iter().map(|g| &g.packet_sender).collect();
    let mut auditor = Session::new(run.clone(), run.cast.owner.token.clone());
    let mut sessions: Vec<Session> = senders.iter().map(|u| Session::new(run.clone(), u.token.clone())).collect();
    let settle_by = Instant::now() + run.knobs.packet_ttl + Duration::from_secs(30);
    // Refunds land while this reads (the node expires packets by itself): read the
    // senders' ledgers before and after everything else, until no refund came between.
    let (ledgers, facts, balances) = loop {
        let before = read_ledgers(&mut sessions).await;
        let mut facts = HashMap::new();
        for packet in &packets {
            if let Some(known) = settled.get(&packet.id).filter(|_| !last) {
                facts.insert(packet.id, known.clone());
                continue;
            }
            let group = run.cast.groups[packet.group].id;
            let info = auditor.must("red_packet", &json!({ "group": group, "packet": packet.id })).await;
            let refund = before[packet.group].refunds.get(&packet.id).copied();
            facts.insert(packet.id, packet_facts(&info, refund));
        }
        let mut balances = HashMap::new();
        for user in run.cast.everyone() {
            let answer = node.console(&format!("wallet {}", user.id)).await;
            let (Some(balance), Some(sum)) = (answer["balance"].as_i64(), answer["ledger_sum"].as_i64()) else {
                panic!("console wallet {}: {answer}", user.id);
            };
            balances.insert(user.id, (balance, sum));
        }
        let after = read_ledgers(&mut sessions).await;
        if before != after {
            continue;
        }
        let over = |f: &PacketFacts| f.status == "empty" || f.refund.is_some();
        if last && !facts.values().all(over) && Instant::now() < settle_by {
            // At the end, wait for every packet to expire and be refunded.
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        break (after, facts, balances);
    };

    let kill = run.counters.kills.load(Relaxed);
    let mut wrong = Vec::new();
    let grabs = run.grabs.lock().unwrap().clone();
    let mut figures = MoneyFigures::default();
    let mut won_by: HashMap<u64, i64> = HashMap::new();
    for ((_, user), amount) in &grabs {
        *won_by.entry(*user).or_default() += amount.unwrap_or(0);
    }
    for packet in &packets {
        let f = &facts[&packet.id];
        let ledger = &ledgers[packet.group];
        let ours: Vec<(u64, i64)> =
            grabs.iter().filter(|((p, _), _)| *p == packet.id).filter_map(|((_, u), a)| a.map(|a| (*u, a))).collect();
        let losers: HashSet<u64> =
            grabs.iter().filter(|((p, _), a)| *p == packet.id && a.is_none()).map(|((_, u), _)| *u).collect();
        let ours_sum: i64 = ours.iter().map(|(_, a)| a).sum();
        if ledger.debits.get(&packet.id) != Some(&-packet.total) {
            wrong.push(format!(
                "packet {} of {}: its sender's debit is {:?}",
                packet.id,
                packet.total,
                ledger.debits.get(&packet.id)
            ));
        }
        if f.grabbed_amount > packet.total || f.grabbed_count > packet.count {
            wrong.push(format!("packet {} ({} in {} shares) gave out {f:?}", packet.id, packet.total, packet.count));
        }
        if (f.grabbed_amount, f.grabbed_count) != (ours_sum, ours.len() as u64) {
            wrong.push(format!("packet {}: the node says {f:?}, the acked grabs won {ours:?}", packet.id));
        }
        if let Some(listed) = &f.grabs {
            let users: HashSet<u64> = listed.iter().map(|(u, _)| *u).collect();
            let mut sorted_listed = listed.clone();
            sorted_listed.sort();
            let mut sorted_ours = ours.clone();
            sorted_ours.sort();
            if users.len() != listed.len() || sorted_listed != sorted_ours || users.iter().any(|u| losers.contains(u)) {
                wrong.push(format!(
                    "packet {}: grabs listed {listed:?}, acked {ours:?}, told empty/expired {losers:?}",
                    packet.id
                ));
            }
        }
        match f.refund {
            Some(refund) if f.status != "expired" || refund != packet.total - f.grabbed_amount => {
                wrong.push(format!("packet {} of {}: refund {refund} with {f:?}", packet.id, packet.total));
            }
            Some(refund) => {
                figures.refunded += refund;
                figures.refunds += 1;
            }
            None if last && f.status != "empty" => {
                wrong.push(format!("packet {} of {} never settled: {f:?}", packet.id, packet.total));
            }
            None => {}
        }
        let held = packet.total - f.grabbed_amount - f.refund.unwrap_or(0);
        if held > 0 {
            figures.open += 1;
        }
        figures.held += held;
        figures.grabbed += f.grabbed_amount;
        if f.status == "empty" || f.refund.is_some() {
            // What is over stays as it was, whatever crashes came since.
            if let Some(before) = settled.insert(packet.id, f.clone())
                && before != *f
            {
                wrong.push(format!("packet {} was settled as {before:?}, now {f:?}", packet.id));
            }
        }
    }
    let known: HashSet<u64> = packets.iter().map(|p| p.id).collect();
    for (g, ledger) in ledgers.iter().enumerate() {
        let strays: Vec<&u64> =
            ledger.debits.keys().chain(ledger.refunds.keys()).filter(|p| !known.contains(p)).collect();
        if !strays.is_empty() || !ledger.odd.is_empty() || ledger.credits != FUNDING {
            wrong.push(format!(
                "group {g}'s sender's ledger: packets {strays:?} unknown, odd entries {:?}, credits {}",
                ledger.odd, ledger.credits
            ));
        }
    }
    for (user, (balance, sum)) in &balances {
        if balance != sum || *balance < 0 {
            wrong.push(format!("user {user}: balance {balance}, ledger sum {sum}"));
        }
    }
    for group in &run.cast.groups {
        for grabber in &group.grabbers {
            let won = won_by.get(&grabber.id).copied().unwrap_or(0);
            if balances[&grabber.id].0 != won {
                wrong.push(format!(
                    "grabber {} holds {}, its acked grabs won {won}",
                    grabber.id, balances[&grabber.id].0
                ));
            }
        }
    }
    let funded = FUNDING * run.cast.groups.len() as i64;
    let wallets: i64 = balances.values().map(|(balance, _)| balance).sum();
    if wallets + figures.held != funded {
        wrong.push(format!(
            "wallets hold {wallets}, open packets {}: {} in all, {funded} was funded",
            figures.held,
            wallets + figures.held
        ));
    }
    for what in wrong {
        run.violation(format!("money after kill {kill}: {what}"));
    }
    for session in sessions.into_iter().chain([auditor]) {
        if let Some(client) = session.client {
            hang_up(&client).await;
        }
    }
    figures
}

fn packet_facts(info: &Value, refund: Option<i64>) -> PacketFacts {
    let grabs = info["grabs"].as_array().map(|grabs| {
        grabs.iter().map(|g| (g["user"].as_u64().expect("user"), g["amount"].as_i64().expect("amount"))).collect()
    });
    PacketFacts {
        status: info["status"].as_str().expect("status").to_owned(),
        grabbed_amount: info["grabbed_amount"].as_i64().expect("grabbed_amount"),
        grabbed_count: info["grabbed_count"].as_u64().expect("grabbed_count"),
        grabs,
        refund,
    }
}

async fn read_ledgers(sessions: &mut [Session]) -> Vec<SenderLedger> {
    let mut ledgers = Vec::new();
    for session in sessions {
        let wallet = session.must("wallet", &json!({})).await;
        let entries = wallet["entries"].as_array().expect("entries");
        assert!(entries.len() < WALLET_PAGE, "a sender's ledger outgrew one wallet page: lower SOAK_PACKETS");
        let mut ledger = SenderLedger::default();
        for entry in entries {
            let (amount, packet) = (entry["amount"].as_i64().expect("amount"), entry["packet"].as_u64());
            match (entry["kind"].as_str(), packet) {
                (Some("credit"), None) => ledger.credits += amount,
                (Some("red_packet_send"), Some(p)) if ledger.debits.insert(p, amount).is_none() => {}
                (Some("red_packet_refund"), Some(p)) if ledger.refunds.insert(p, amount).is_none() => {}
                _ => ledger.odd.push(entry.clone()),
            }
        }
        let sum: i64 = entries.iter().filter_map(|e| e["amount"].as_i64()).sum();
        assert_eq!(wallet["balance"].as_i64(), Some(sum), "a sender's balance is its ledger's sum: {wallet}");
        ledgers.push(ledger);
    }
    ledgers
}
