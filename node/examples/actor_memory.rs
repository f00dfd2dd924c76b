//! Measures the resident memory of idle ractor actors like troupe's user actors:
//! `cargo run --release -p troupe --example actor_memory -- 20000`.

use ractor::{Actor, ActorProcessingErr, ActorRef};

struct Idle;

impl Actor for Idle {
    type Msg = u64;
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<u64>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
        * 1024
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let (warm, _) = Actor::spawn(None, Idle, ()).await.expect("spawn");
    let before = rss();
    let mut actors = Vec::with_capacity(n);
    for _ in 0..n {
        actors.push(Actor::spawn(None, Idle, ()).await.expect("spawn").0);
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let after = rss();
    println!("{n} idle ractor actors: {} bytes each", (after - before) / n as u64);
    drop(warm);
}
