//! The killer: `kill -9` and a restart on the same data directory, every few seconds.

use crate::common::TestNode;
use crate::money::{PacketFacts, check_money};
use crate::run::Run;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use tokio::sync::watch;
use tokio::time::Instant;

/// Every `SOAK_KILL_EVERY_MS`: `kill -9`, restart on the same data directory, tell the
/// clients where the node is now, and check the money. Returns the node when told to stop.
pub(crate) async fn kill_and_restart(
    run: Arc<Run>,
    mut node: TestNode,
    endpoint: watch::Sender<String>,
    mut stop: watch::Receiver<bool>,
    started: Instant,
) -> (TestNode, watch::Sender<String>, HashMap<u64, PacketFacts>) {
    let mut settled = HashMap::new();
    let mut restarted = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(restarted + run.knobs.kill_every) => {}
            _ = stop.changed() => break,
        }
        let kills = crash(&run, &mut node, &endpoint).await;
        restarted = Instant::now();
        let money = check_money(&run, &node, &mut settled, false).await;
        eprintln!(
            "soak: kill {kills} at {:.1}s (money checked in {:.2}s): {} texts and {} red packets acked, {} resends; \
             {} open packets hold {} cents",
            (restarted - started).as_secs_f64(),
            restarted.elapsed().as_secs_f64(),
            run.counters.acked_texts.load(Relaxed),
            run.counters.acked_packets.load(Relaxed),
            run.counters.resends.load(Relaxed),
            money.open,
            money.held,
        );
    }
    (node, endpoint, settled)
}

/// `kill -9`, then a restart on the same data directory; the clients learn the new
/// address. Returns the number of kills so far.
pub(crate) async fn crash(run: &Run, node: &mut TestNode, endpoint: &watch::Sender<String>) -> u64 {
    let killed = Instant::now();
    node.restart().await;
    run.counters.down_ms.fetch_add(killed.elapsed().as_millis() as u64, Relaxed);
    endpoint.send_replace(node.url.clone());
    run.counters.kills.fetch_add(1, Relaxed) + 1
}
