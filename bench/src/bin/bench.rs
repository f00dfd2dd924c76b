//! `bench`: drives a running troupe node like its users would and measures it.
//!
//! Every scenario checks what it receives (nothing lost, doubled or reordered), prints a
//! summary, and with `--out PREFIX` writes `PREFIX.json` (command line, node version,
//! machine, parameters, results) and SVG pictures next to it. See BENCHMARKS.md.

use clap::{Parser, Subcommand};
use troupe_bench::scenario;

#[derive(Parser)]
#[command(name = "bench", about = "Load generator for troupe")]
struct Cli {
    /// Worker threads of the bench's runtime (default: one per CPU).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// G groups of M online members; S senders per group at an offered rate.
    Fanout(scenario::fanout::FanoutArgs),
    /// No node: a bare writer's fan-out on `fanout`'s schedule; what one loopback write per
    /// delivery costs here, the ceiling for `fanout`'s deliveries per node CPU-second.
    Floor(scenario::floor::FloorArgs),
    /// Sign up users and write their tokens to a file (for `connections`).
    Accounts(scenario::connections::AccountsArgs),
    /// Hold N authenticated idle connections; node memory per connection, connect rate.
    Connections(scenario::connections::ConnectionsArgs),
    /// Durable sends with acks: S senders each keeping a window in flight.
    Send(scenario::send::SendArgs),
    /// Admission control: sends offered open-loop at a base rate, an overload rate, and the
    /// base rate again; refusals retried as the node says; everything acked once.
    Admission(scenario::admission::AdmissionArgs),
    /// K concurrent joins against one capped group; the cap must hold.
    Joins(scenario::joins::JoinsArgs),
    /// A reconnect storm: N clients sync what they missed, all at once.
    Sync(scenario::sync::SyncArgs),
    /// Grab storms on red packets; the money invariants are checked afterwards.
    Redpacket(scenario::redpacket::RedPacketArgs),
    /// One large upload and concurrent downloads; node memory during the upload.
    Media(scenario::media::MediaArgs),
}

fn main() -> anyhow::Result<()> {
    raise_open_file_limit();
    let cli = Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = cli.threads {
        builder.worker_threads(threads.max(1));
    }
    let runtime = builder.enable_all().build()?;
    runtime.block_on(async move {
        match cli.scenario {
            Scenario::Fanout(args) => scenario::fanout::run(args).await,
            Scenario::Floor(args) => scenario::floor::run(args).await,
            Scenario::Accounts(args) => scenario::connections::accounts(args).await,
            Scenario::Connections(args) => scenario::connections::connections(args).await,
            Scenario::Send(args) => scenario::send::run(args).await,
            Scenario::Admission(args) => scenario::admission::run(args).await,
            Scenario::Joins(args) => scenario::joins::run(args).await,
            Scenario::Sync(args) => scenario::sync::run(args).await,
            Scenario::Redpacket(args) => scenario::redpacket::run(args).await,
            Scenario::Media(args) => scenario::media::run(args).await,
        }
    })?;
    Ok(())
}

fn raise_open_file_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
