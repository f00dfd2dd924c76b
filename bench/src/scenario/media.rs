//! `bench media`: one upload of S MiB through `POST /media`, streamed from the bench, then D
//! concurrent downloads of it through a signed URL. Reports upload and download
//! throughput, checks every download against the upload's SHA-256, and samples the node's
//! memory (RSS) every 50 ms during the upload: its peak growth is the figure issue 6 bounds.

use crate::load::accounts;
use crate::load::conn::{LoadError, Target, request};
use crate::load::node;
use crate::load::report::{self, Report};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Parameters of a media run.
#[derive(Debug, Clone, clap::Args)]
pub struct MediaArgs {
    /// The node's WebSocket URL (the upload goes to the same host and port).
    #[arg(long, default_value = "ws://127.0.0.1:7878/ws")]
    pub url: String,
    /// The node's console (for its memory).
    #[arg(long, default_value = "127.0.0.1:7879")]
    pub console: SocketAddr,
    /// MiB to upload.
    #[arg(long, default_value_t = 200)]
    pub mib: usize,
    /// Concurrent downloads of the upload.
    #[arg(long, default_value_t = 4)]
    pub downloads: usize,
    /// Write `<out>.json` and pictures next to it.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The first bytes of every upload: an MP4 header, so it is a video.
const MP4_HEAD: &[u8] = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2mp41";
/// Bytes per chunk the bench writes.
const CHUNK: usize = 256 * 1024;

/// Runs the scenario.
pub async fn run(args: MediaArgs) -> Result<(), LoadError> {
    let target = Target::parse(&args.url)?;
    let total = args.mib * 1024 * 1024;
    eprintln!("media: upload {} MiB, then {} concurrent downloads", args.mib, args.downloads);
    let prefix = accounts::run_prefix("media");
    let mut signed = accounts::sign_up(&target, &[], &prefix, 1, 1, true).await?;
    let (account, socket) = signed.pop().ok_or_else(|| LoadError::Connection("no account".into()))?;
    let mut socket = socket.ok_or_else(|| LoadError::Connection("no socket".into()))?;

    let rss = |stats: Option<serde_json::Value>| node::rss_bytes(&stats).unwrap_or(0);
    let before = rss(node::stats(args.console).await);
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (sampling, console) = (sampling.clone(), args.console);
        tokio::spawn(async move {
            let mut samples = Vec::new();
            while sampling.load(Ordering::Relaxed) {
                samples.push(node::rss_bytes(&node::stats(console).await).unwrap_or(0));
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            samples
        })
    };
    let started = Instant::now();
    let (answer, sha) = upload(target.addr, &account.token, total).await?;
    let upload_seconds = started.elapsed().as_secs_f64();
    sampling.store(false, Ordering::Relaxed);
    let samples = sampler.await.unwrap_or_default();
    let peak = samples.iter().copied().max().unwrap_or(before).max(before);
    let media = answer["media"].as_u64().ok_or_else(|| LoadError::Connection(format!("upload refused: {answer}")))?;
    if answer["sha256"].as_str() != Some(sha.as_str()) {
        return Err(LoadError::Connection(format!("the node's sha256 {} is not the upload's {sha}", answer["sha256"])));
    }

    let signed = request(&mut socket, 2, "media_url", json!({ "media": media })).await?;
    let path = signed["url"].as_str().unwrap_or("").to_owned();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.downloads {
        let (addr, path) = (target.addr, path.clone());
        tasks.spawn(async move { download(addr, &path).await });
    }
    let mut intact = 0;
    while let Some(done) = tasks.join_next().await {
        let (size, digest) = done.map_err(|e| LoadError::Connection(e.to_string()))??;
        if size == total && digest == sha {
            intact += 1;
        }
    }
    let download_seconds = started.elapsed().as_secs_f64();

    let mib = |bytes: f64| bytes / (1024.0 * 1024.0);
    let upload_rate = mib(total as f64) / upload_seconds;
    let download_rate = mib((total * args.downloads) as f64) / download_seconds;
    let growth = peak.saturating_sub(before);
    let results = json!({
        "bytes": total, "upload_seconds": upload_seconds, "upload_mib_per_second": upload_rate,
        "downloads": args.downloads, "downloads_intact": intact, "download_seconds": download_seconds,
        "download_mib_per_second": download_rate, "rss_before_bytes": before, "rss_peak_bytes": peak,
        "rss_peak_growth_bytes": growth,
    });
    let parameters = json!({ "url": args.url, "mib": args.mib, "downloads": args.downloads });
    let lines = vec![
        format!("upload: {} MiB in {upload_seconds:.2} s ({upload_rate:.0} MiB/s)", args.mib),
        format!(
            "downloads: {} x {} MiB in {download_seconds:.2} s ({download_rate:.0} MiB/s), {intact} intact",
            args.downloads, args.mib
        ),
        format!(
            "node RSS {:.0} MiB before, peak growth {:.1} MiB during the upload",
            mib(before as f64),
            mib(growth as f64)
        ),
    ];
    let timeline: Vec<f64> = samples.iter().map(|b| mib(*b as f64)).collect();
    let pictures = vec![("rss", report::timeline_svg(&timeline, "node RSS during the upload (every 50 ms)", "MiB"))];
    let stats = node::stats(args.console).await;
    Report { scenario: "media", parameters, results, node: stats, summary: lines, pictures }
        .finish(args.out.as_deref())
        .map_err(|e| LoadError::Connection(e.to_string()))?;
    if intact != args.downloads {
        return Err(LoadError::Connection(format!("{intact} of {} downloads were intact", args.downloads)));
    }
    Ok(())
}

/// Streams `total` bytes to `POST /media?kind=video`; the node's answer and the SHA-256 sent.
async fn upload(addr: SocketAddr, token: &str, total: usize) -> Result<(serde_json::Value, String), LoadError> {
    let io = |e: std::io::Error| LoadError::Connection(e.to_string());
    let mut stream = TcpStream::connect(addr).await.map_err(io)?;
    let head = format!(
        "POST /media?kind=video HTTP/1.1\r\nHost: troupe\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: {total}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.map_err(io)?;
    let mut hasher = Sha256::new();
    let mut chunk = vec![0u8; CHUNK];
    let mut sent = 0;
    while sent < total {
        let n = CHUNK.min(total - sent);
        for (i, byte) in chunk[..n].iter_mut().enumerate() {
            *byte = ((sent + i) % 251) as u8;
        }
        if sent == 0 {
            chunk[..MP4_HEAD.len()].copy_from_slice(MP4_HEAD);
        }
        hasher.update(&chunk[..n]);
        stream.write_all(&chunk[..n]).await.map_err(io)?;
        sent += n;
    }
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.map_err(io)?;
    let text = String::from_utf8_lossy(&answer);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let value = serde_json::from_str(body).map_err(|e| LoadError::Connection(format!("{e}: {text}")))?;
    Ok((value, hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()))
}

/// Downloads `path` whole: the body's size and SHA-256.
async fn download(addr: SocketAddr, path: &str) -> Result<(usize, String), LoadError> {
    let io = |e: std::io::Error| LoadError::Connection(e.to_string());
    let mut stream = TcpStream::connect(addr).await.map_err(io)?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: troupe\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; CHUNK];
    let mut header = Vec::new();
    let mut in_body = false;
    let mut size = 0;
    loop {
        let n = stream.read(&mut buffer).await.map_err(io)?;
        if n == 0 {
            break;
        }
        let mut data = &buffer[..n];
        if !in_body {
            header.extend_from_slice(data);
            let Some(at) = header.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
            let body = header.split_off(at + 4);
            in_body = true;
            size += body.len();
            hasher.update(&body);
            data = &[];
        }
        size += data.len();
        hasher.update(data);
    }
    Ok((size, hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()))
}
