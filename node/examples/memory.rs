//! Measures what an idle connection is made of, for BENCHMARKS.md:
//! `cargo run --release -p troupe --example memory -- 20000`.
//!
//! Prints the resident memory of idle ractor actors (the user actor's share) and the sizes
//! of the per-connection structures the node keeps.

use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::sync::Arc;

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

type Ws = tokio_tungstenite::WebSocketStream<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;

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
    println!("idle ractor actor (task, four channels, cell): {} bytes resident each", (after - before) / n as u64);
    // Each of an actor's two unbounded channels allocates its first block of 32 slots at
    // spawn. ractor's `cluster` feature (needed by ractor_cluster) puts a serialized-message
    // variant in every message slot; the patch in vendor/ boxes it (24 bytes, not 112).
    println!(
        "ractor channel slots: BoxedMessage {} bytes, SupervisionEvent {} bytes (boxed in its slot by the patch in vendor/; first blocks: 32 slots each)",
        std::mem::size_of::<ractor::message::BoxedMessage>(),
        std::mem::size_of::<ractor::SupervisionEvent>()
    );
    println!(
        "size_of WebSocketStream (tungstenite state, without its 1 KiB read buffer): {} bytes",
        std::mem::size_of::<Ws>()
    );
    println!("size_of Outbox: {} bytes", std::mem::size_of::<actors::outbox::Outbox>());
    println!("size_of Session: {} bytes", std::mem::size_of::<actors::session::Session>());
    println!("size_of MailboxGauge: {} bytes", std::mem::size_of::<actors::directory::MailboxGauge>());
    println!(
        "size_of Arc<Outbox> slot in the fan-out map: {} bytes",
        std::mem::size_of::<(schema::UserId, Arc<[Arc<actors::outbox::Outbox>]>)>()
    );
    drop(warm);
}
