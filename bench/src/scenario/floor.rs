//! `bench floor`: what one loopback write per delivery costs on this machine, with no
//! troupe in the way. It is the ceiling a node's deliveries per CPU-second can reach at
//! `fanout`'s rate, where each member gets one message every 20 ms and so each delivery is
//! one write.
//!
//! The scenario plays a bare fan-out server inside the bench process: writer threads (one
//! per core, like the node's fan-out lanes) write `fanout`'s frames, byte for byte the
//! shape the node writes, to G groups of M WebSocket connections on the same schedule. The
//! readers are the same tokio-tungstenite clients `fanout` uses. The figure is deliveries per
//! CPU-second of the writer threads alone: on loopback that includes the receivers' TCP
//! processing and their wake-ups, which the kernel charges to the writer, as it charges
//! them to the node in `fanout`. Nothing is stored and nothing is authenticated.

use crate::load::conn::{LoadError, Target, connect, set_socket_option};
use crate::load::per_thread::PerThread;
use crate::load::report::{self, Report, histogram, latency_summary};
use crate::load::sequence::SeqTracker;
use crate::load::wire::{fast_messages, now_micros, timed_body};
use futures_util::StreamExt;
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Parameters of `bench floor`.
#[derive(Debug, Clone, clap::Args)]
pub struct FloorArgs {
    /// Groups.
    #[arg(long, default_value_t = 4)]
    pub groups: usize,
    /// Members per group, each with one connection.
    #[arg(long, default_value_t = 500)]
    pub members: usize,
    /// Messages per second over all groups (`fanout`'s default: 4 groups x 5 senders x 10/s).
    #[arg(long, default_value_t = 200)]
    pub messages_per_second: u64,
    /// Message body bytes, as `fanout --body-bytes`.
    #[arg(long, default_value_t = 160)]
    pub body_bytes: usize,
    /// Writer threads (default: one per CPU, as the node's `actors.fanout_threads`).
    #[arg(long)]
    pub writers: Option<usize>,
    /// The writers' TCP congestion control (`TCP_CONGESTION`, e.g. cubic or bbr); default:
    /// the system's (`net.ipv4.tcp_congestion_control`).
    #[arg(long)]
    pub congestion: Option<String>,
    /// Seconds before measuring.
    #[arg(long, default_value_t = 3)]
    pub warmup: u64,
    /// Seconds measured.
    #[arg(long, default_value_t = 30)]
    pub duration: u64,
    /// Write `<out>.json` and pictures.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// What one reader saw; its latencies go to its thread's histogram, as in `fanout`.
struct Seen {
    tracker: SeqTracker,
    deliveries: u64,
}

/// What one writer thread did in the measured window.
struct Wrote {
    writes: u64,
    cpu_seconds: f64,
    /// The last seq written to each group.
    last_seqs: Vec<u64>,
}

/// Runs the scenario.
pub async fn run(args: FloorArgs) -> Result<(), LoadError> {
    let error = |e: std::io::Error| LoadError::Connection(e.to_string());
    let writers = args.writers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(error)?;
    let target = Target::parse(&format!("ws://{}/ws", listener.local_addr().map_err(error)?))?;
    eprintln!(
        "floor: {} groups x {} members, {} messages/s, {}-byte bodies, {writers} writer threads: \
         offering {} deliveries/s",
        args.groups,
        args.members,
        args.messages_per_second,
        args.body_bytes,
        args.messages_per_second * args.members as u64
    );

    // Connect every member; the accepted end of each is the server's socket.
    let count = args.groups * args.members;
    let accepting = tokio::task::spawn_blocking({
        let listener = listener.into_std().map_err(error)?;
        let congestion = args.congestion.clone();
        move || accept_all(listener, count, congestion.as_deref())
    });
    let mut clients = Vec::with_capacity(count);
    for _ in 0..count {
        clients.push(connect(&target, None).await?);
    }
    let servers = accepting.await.map_err(|e| LoadError::Connection(e.to_string()))?.map_err(error)?;

    // The wall clock's start of the window is taken first, so no message written in the
    // window carries an earlier send time.
    let warmup_micros = now_micros() + 200_000 + args.warmup * 1_000_000;
    let started = Instant::now() + Duration::from_millis(200);
    let measured_from = started + Duration::from_secs(args.warmup);
    let until = measured_from + Duration::from_secs(args.duration);
    let stop = Arc::new(AtomicBool::new(false));

    let latencies = Arc::new(PerThread::new(histogram));
    let mut readers = Vec::with_capacity(count);
    for (index, mut ws) in clients.into_iter().enumerate() {
        let (stop, latencies) = (stop.clone(), latencies.clone());
        readers.push(tokio::spawn(async move {
            let mut seen = Seen { tracker: SeqTracker::starting_at(0), deliveries: 0 };
            let mut out = Vec::new();
            let group = (index / args.members) as u64;
            while !stop.load(Ordering::Relaxed) {
                let frame = match tokio::time::timeout(Duration::from_millis(500), ws.next()).await {
                    Ok(Some(Ok(Message::Text(text)))) => text,
                    Ok(Some(Ok(_))) | Err(_) => continue,
                    Ok(None | Some(Err(_))) => break,
                };
                out.clear();
                if fast_messages(frame.as_str(), &mut out).is_none() {
                    continue;
                }
                let now = now_micros();
                let mut latency = latencies.local();
                for &(g, seq, sent, _) in &out {
                    if g != group || !seen.tracker.record(seq) {
                        continue;
                    }
                    if let Some(sent) = sent.filter(|&s| s >= warmup_micros) {
                        seen.deliveries += 1;
                        report::record(&mut latency, now.saturating_sub(sent));
                    }
                }
            }
            seen
        }));
    }

    // Writer w owns the connections whose index is w modulo the writer count, as a lane owns
    // the users whose id is its number modulo the lane count.
    let mut shares: Vec<Vec<(usize, TcpStream)>> = (0..writers).map(|_| Vec::new()).collect();
    for (index, stream) in servers.into_iter().enumerate() {
        shares[index % writers].push((index / args.members, stream));
    }
    let interval = Duration::from_nanos(1_000_000_000 / args.messages_per_second.max(1));
    let mut threads = Vec::with_capacity(writers);
    for (w, share) in shares.into_iter().enumerate() {
        let (groups, body_bytes) = (args.groups, args.body_bytes);
        threads.push(
            std::thread::Builder::new()
                .name(format!("floor-writer-{w}"))
                .spawn(move || write_schedule(share, groups, body_bytes, interval, started, measured_from, until))
                .map_err(error)?,
        );
    }
    let mut wrote = Vec::with_capacity(writers);
    let mut failed = 0u64;
    for thread in threads {
        match thread.join() {
            Ok(Ok(w)) => wrote.push(w),
            Ok(Err(_)) | Err(_) => failed += 1,
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);

    // Every writer runs the same schedule, so any one's last seqs are every group's.
    let last_seqs = wrote.first().map(|w| w.last_seqs.clone()).unwrap_or_default();
    let mut latency = histogram();
    let mut deliveries = 0u64;
    let (mut lost, mut duplicates, mut out_of_order) = (0u64, 0u64, 0u64);
    for (index, reader) in readers.into_iter().enumerate() {
        let last = last_seqs.get(index / args.members).copied().unwrap_or(0);
        let Ok(seen) = reader.await else {
            lost += last;
            continue;
        };
        deliveries += seen.deliveries;
        lost += seen.tracker.missing(last);
        duplicates += seen.tracker.duplicates;
        out_of_order += seen.tracker.out_of_order;
    }
    latencies.for_each(|h| {
        let _ = latency.add(h);
    });
    let writes: u64 = wrote.iter().map(|w| w.writes).sum();
    let cpu: f64 = wrote.iter().map(|w| w.cpu_seconds).sum();
    let per_cpu_second = if cpu > 0.0 { writes as f64 / cpu } else { 0.0 };
    let rate = writes as f64 / args.duration as f64;
    let summary = vec![
        format!("writes/s {rate:.0} ({writes} in {} s); received in the window {deliveries}", args.duration),
        format!("writer CPU {cpu:.2} s: {per_cpu_second:.0} deliveries per writer CPU-second"),
        format!(
            "latency ms p50 {} p99 {}",
            latency.value_at_quantile(0.5) as f64 / 1000.0,
            latency.value_at_quantile(0.99) as f64 / 1000.0
        ),
        format!("lost {lost}, duplicated {duplicates}, out of order {out_of_order}; writer threads failed {failed}"),
    ];
    Report {
        scenario: "floor",
        parameters: json!({
            "groups": args.groups, "members": args.members, "messages_per_second": args.messages_per_second,
            "body_bytes": args.body_bytes, "writers": writers, "congestion": args.congestion,
            "warmup_s": args.warmup, "duration_s": args.duration,
        }),
        results: json!({
            "writes": writes,
            "writes_per_second": rate.round(),
            "writer_cpu_seconds": (cpu * 1000.0).round() / 1000.0,
            "deliveries_per_writer_cpu_second": per_cpu_second.round(),
            "received_in_window": deliveries,
            "latency": latency_summary(&latency),
            "lost": lost,
            "duplicated": duplicates,
            "out_of_order": out_of_order,
            "writer_threads_failed": failed,
        }),
        node: None,
        summary,
        pictures: vec![("latency", report::latency_svg(&latency, "bench floor: write to receive latency"))],
    }
    .finish(args.out.as_deref())
    .map_err(error)
}

/// Accepts `count` connections and answers each one's WebSocket handshake; returns blocking
/// sockets with `TCP_NODELAY` set, as the node's listener sets it.
fn accept_all(
    listener: std::net::TcpListener,
    count: usize,
    congestion: Option<&str>,
) -> std::io::Result<Vec<TcpStream>> {
    listener.set_nonblocking(false)?;
    let mut streams = Vec::with_capacity(count);
    for _ in 0..count {
        let (mut stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        if let Some(name) = congestion {
            set_congestion(&stream, name)?;
        }
        let mut request = Vec::new();
        let mut byte = [0u8; 1024];
        while !request.ends_with(b"\r\n\r\n") {
            let n = stream.read(&mut byte[..1])?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            request.push(byte[0]);
        }
        let request = String::from_utf8_lossy(&request);
        let key = request
            .lines()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("sec-websocket-key")))
            .map(|(_, v)| v.trim().to_owned())
            .ok_or(std::io::ErrorKind::InvalidData)?;
        let accept = derive_accept_key(key.as_bytes());
        write!(
            stream,
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        )?;
        streams.push(stream);
    }
    Ok(streams)
}

fn set_congestion(stream: &TcpStream, name: &str) -> std::io::Result<()> {
    set_socket_option(stream.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_CONGESTION, name.as_bytes())
}

/// One writer thread: at every tick the next group's message is encoded once and written to
/// each of this writer's connections in that group, one write each, as the node's lanes do.
fn write_schedule(
    share: Vec<(usize, TcpStream)>,
    groups: usize,
    body_bytes: usize,
    interval: Duration,
    started: Instant,
    measured_from: Instant,
    until: Instant,
) -> std::io::Result<Wrote> {
    let mut by_group: Vec<Vec<TcpStream>> = (0..groups).map(|_| Vec::new()).collect();
    for (group, stream) in share {
        by_group[group].push(stream);
    }
    let mut seqs = vec![0u64; groups];
    let mut wrote = Wrote { writes: 0, cpu_seconds: 0.0, last_seqs: Vec::new() };
    let mut cpu_at_start = None;
    for tick in 0u64.. {
        let due = started + interval * tick as u32;
        if due >= until {
            break;
        }
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if cpu_at_start.is_none() && due >= measured_from {
            cpu_at_start = Some(thread_cpu_seconds());
        }
        let group = tick as usize % groups;
        seqs[group] += 1;
        let frame = message_frame(group, seqs[group], body_bytes);
        for stream in &mut by_group[group] {
            stream.write_all(&frame)?;
        }
        if cpu_at_start.is_some() {
            wrote.writes += by_group[group].len() as u64;
        }
    }
    wrote.cpu_seconds = thread_cpu_seconds() - cpu_at_start.unwrap_or_else(thread_cpu_seconds);
    wrote.last_seqs = seqs;
    Ok(wrote)
}

/// A server-to-client WebSocket text frame holding one message event, in the node's shape.
fn message_frame(group: usize, seq: u64, body_bytes: usize) -> Vec<u8> {
    let sent = now_micros();
    let payload = format!(
        r#"[{{"event":"message","group":{group},"seq":{seq},"sender":1,"client_msg_id":"floor-{seq}","type":"text","body":"{}","ts":{}}}]"#,
        timed_body(sent, body_bytes),
        sent / 1000
    );
    let mut frame = Vec::with_capacity(payload.len() + 10);
    frame.push(0x81);
    match payload.len() {
        n @ 0..=125 => frame.push(n as u8),
        n @ 126..=65535 => {
            frame.push(126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload.as_bytes());
    frame
}

fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the struct passed.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}
