//! Test harness: starts the real `troupe` binary on ephemeral ports with a fresh data
//! directory, and connects protocol clients to it.

#![allow(dead_code)]

pub mod cluster;
pub mod postgres;
pub mod redis;
pub mod s3;

pub use bench::{Client, ClientError};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a test waits for an event it expects.
pub const WAIT: Duration = Duration::from_secs(10);
/// How long a test waits to be sure something does NOT arrive.
pub const QUIET: Duration = Duration::from_millis(300);

/// A running node.
pub struct TestNode {
    child: Child,
    pub http: SocketAddr,
    pub console: SocketAddr,
    pub url: String,
    pub data: PathBuf,
    env: Vec<(String, String)>,
    args: Vec<String>,
    _dir: Option<TempDir>,
}

impl TestNode {
    /// A node on a fresh data directory.
    pub async fn start() -> TestNode {
        Self::start_with_env(&[]).await
    }

    /// A node on a fresh data directory with extra `TROUPE_...` settings.
    pub async fn start_with_env(env: &[(&str, &str)]) -> TestNode {
        Self::start_with(env, &[]).await
    }

    /// A node on a fresh data directory with extra settings and extra `serve` flags.
    pub async fn start_with(env: &[(&str, &str)], args: &[String]) -> TestNode {
        Self::try_start_with(env, args).await.expect("troupe exited before it was ready")
    }

    /// Like [`TestNode::start_with`], but None if the node exits before it is ready (a
    /// port it was given was taken meanwhile, say).
    pub async fn try_start_with(env: &[(&str, &str)], args: &[String]) -> Option<TestNode> {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().to_path_buf();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut node = Self::try_spawn(&data, env, args.to_vec()).await?;
        node._dir = Some(dir);
        Some(node)
    }

    async fn spawn(data: &Path, env: Vec<(String, String)>, args: Vec<String>) -> TestNode {
        Self::try_spawn(data, env, args).await.expect("troupe exited before it was ready")
    }

    async fn try_spawn(data: &Path, env: Vec<(String, String)>, args: Vec<String>) -> Option<TestNode> {
        raise_open_file_limit();
        let mut command = Command::new(env!("CARGO_BIN_EXE_troupe"));
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--console-listen", "127.0.0.1:0", "--password-cost", "test"])
            .arg("--data")
            .arg(data)
            .args(&args)
            .env("RUST_LOG", std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .envs(bulk_sends(&env))
            .envs(env.iter().cloned())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("spawn troupe");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("troupe printed no ready line within 30 s")
            .expect("read stdout")?;
        // Keep draining stdout so the node never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let field = |name: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name}= in ready line {line:?}"))
                .parse()
                .expect("address")
        };
        let (http, console) = (field("http"), field("console"));
        Some(TestNode {
            child,
            http,
            console,
            url: format!("ws://{http}/ws"),
            data: data.to_path_buf(),
            env,
            args,
            _dir: None,
        })
    }

    /// The node's process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the node is running")
    }

    /// Sends a signal (`STOP`, `CONT`, ...) to the node's process.
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([format!("-{name}"), self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit by itself; None if it is still running after `wait`.
    pub async fn wait_exit(&mut self, wait: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(wait, self.child.wait()).await.ok().and_then(Result::ok)
    }

    /// Kills the process with SIGKILL: no shutdown code runs.
    pub async fn kill9(&mut self) {
        self.child.start_kill().expect("kill");
        let _ = self.child.wait().await;
    }

    /// Stops the node (SIGKILL) and starts it again on the same data directory.
    pub async fn restart(&mut self) {
        self.kill9().await;
        let dir = self._dir.take();
        let mut node = Self::spawn(&self.data, self.env.clone(), self.args.clone()).await;
        node._dir = dir;
        *self = node;
    }

    /// [`TestNode::restart`] with `extra` settings (or environment) added from now on.
    pub async fn restart_with_env(&mut self, extra: &[(&str, &str)]) {
        self.env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.restart().await;
    }

    /// A fresh, unauthenticated connection.
    pub async fn connect(&self) -> Client {
        Client::connect(&self.url).await.expect("connect")
    }

    /// Registers a new user with a unique name and returns its logged-in connection and id.
    pub async fn user(&self, prefix: &str) -> (Client, u64) {
        let name = unique_name(prefix);
        let (client, session) = Client::login(&self.url, &name, "password123", true).await.expect("register+login");
        let id = session["profile"]["user"].as_u64().expect("user id");
        (client, id)
    }

    /// Like [`TestNode::user`], also returning the session token.
    pub async fn user_with_token(&self, prefix: &str) -> (Client, u64, String) {
        let name = unique_name(prefix);
        let (client, session) = Client::login(&self.url, &name, "password123", true).await.expect("register+login");
        let id = session["profile"]["user"].as_u64().expect("user id");
        (client, id, session["token"].as_str().expect("token").to_owned())
    }

    /// A new connection authenticated with a token; returns it with the auth result.
    pub async fn auth(&self, token: &str) -> (Client, Value) {
        let client = self.connect().await;
        let session = client.request("auth", json!({ "token": token })).await.expect("auth");
        (client, session)
    }

    /// Asks the console a command and returns its JSON answer.
    pub async fn console(&self, command: &str) -> Value {
        troupe::console::client::ask(self.console, command).await.expect("console")
    }
}

/// A short `bench fanout` run against these nodes (members spread over them), writing its
/// results under `out`: enough to check every delivery, small enough for a test.
pub fn small_fanout(urls: Vec<String>, consoles: Vec<SocketAddr>, out: &Path) -> bench::scenario::fanout::FanoutArgs {
    bench::scenario::fanout::FanoutArgs {
        url: urls,
        console: consoles,
        groups: 2,
        members: 20,
        senders: 2,
        rate: 20.0,
        body_bytes: 160,
        warmup: 0.5,
        duration: 1.5,
        sources: 2,
        stalled: 0,
        out: Some(out.join("fanout")),
    }
}

/// The value of one sample line (`name{labels} value`) of a `/metrics` text.
pub fn metric_sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
}

/// A username nobody else in this test process has.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Creates a group and returns its id.
pub async fn create_group(client: &Client, name: &str, open: bool) -> u64 {
    let info = client.request("create_group", json!({ "name": name, "open": open })).await.expect("create_group");
    info["group"].as_u64().expect("group id")
}

/// Sends a text and returns the ack.
pub async fn send_text(client: &Client, group: u64, client_msg_id: &str, body: &str) -> Result<Value, ClientError> {
    client
        .request("send", json!({ "group": group, "client_msg_id": client_msg_id, "type": "text", "body": body }))
        .await
}

/// The error code of a failed request.
pub fn code(result: Result<Value, ClientError>) -> String {
    match result {
        Ok(value) => panic!("expected an error, got {value}"),
        Err(e) => e.code().unwrap_or("(not a server error)").to_owned(),
    }
}

/// Lets the test process hold as many sockets as the host allows.
pub fn raise_open_file_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// How a test sends an upload's body.
pub enum UploadBody {
    /// All at once, with its `Content-Length`.
    Whole(Vec<u8>),
    /// In `chunk`-byte pieces with chunked transfer encoding (no length): `head`, then
    /// zeros up to `total` bytes.
    Chunked { head: Vec<u8>, total: usize, chunk: usize },
    /// `Content-Length: declared`, but only `body` before the connection closes.
    Truncated { declared: usize, body: Vec<u8> },
}

/// `POST /media?kind=KIND` over a raw HTTP/1.1 connection; the status and JSON body of the
/// answer, or None if none came (a truncated upload).
pub async fn upload(http: SocketAddr, token: Option<&str>, kind: &str, body: UploadBody) -> Option<(u16, Value)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(http).await.expect("connect");
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let head = |length: &str| {
        format!("POST /media?kind={kind} HTTP/1.1\r\nHost: troupe\r\n{auth}{length}Connection: close\r\n\r\n")
    };
    // A refused upload is answered before its body is read whole, and the node may close
    // while the test still writes: write errors are expected then, the answer is not lost.
    match body {
        UploadBody::Whole(bytes) => {
            let _ = stream.write_all(head(&format!("Content-Length: {}\r\n", bytes.len())).as_bytes()).await;
            let _ = stream.write_all(&bytes).await;
        }
        UploadBody::Chunked { head: first, total, chunk } => {
            let _ = stream.write_all(head("Transfer-Encoding: chunked\r\n").as_bytes()).await;
            let mut sent = 0;
            let zeros = vec![0u8; chunk];
            while sent < total {
                let piece: &[u8] = if sent == 0 { &first } else { &zeros[..chunk.min(total - sent)] };
                let framed = [format!("{:x}\r\n", piece.len()).as_bytes(), piece, b"\r\n"].concat();
                if stream.write_all(&framed).await.is_err() {
                    break;
                }
                sent += piece.len();
            }
            let _ = stream.write_all(b"0\r\n\r\n").await;
        }
        UploadBody::Truncated { declared, body } => {
            let _ = stream.write_all(head(&format!("Content-Length: {declared}\r\n")).as_bytes()).await;
            let _ = stream.write_all(&body).await;
            return None;
        }
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Some((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

/// A `GET` over a raw HTTP/1.1 connection: the status, the headers (names lower-cased) and
/// the body.
pub async fn http_get(http: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(http).await.expect("connect");
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let request = format!("GET {path} HTTP/1.1\r\nHost: troupe\r\n{extra}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await.expect("an answer").expect("read");
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").expect("a header block");
    let head = String::from_utf8_lossy(&answer[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).expect("a status");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, answer[split + 4..].to_vec())
}

/// A header's value.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Tests drive nodes like load generators (thousands of sends from one connection, piled
/// into one group), which the default send limits and admission bounds are there to stop:
/// lift those, unless the test sets its own (`limits.rs` and `admission.rs` do, to test
/// them).
fn bulk_sends(env: &[(String, String)]) -> Vec<(String, String)> {
    let mut lifted = Vec::new();
    if !env.iter().any(|(key, _)| key.contains("RATE_LIMITS")) {
        for limit in ["CONNECTION_SENDS", "USER_SENDS"] {
            for field in ["PER_SECOND", "BURST"] {
                lifted.push((format!("TROUPE_ACTORS__RATE_LIMITS__{limit}__{field}"), "1000000.0".to_owned()));
            }
        }
    }
    if !env.iter().any(|(key, _)| key.contains("MAX_PENDING_SENDS")) {
        for bound in ["MAX_PENDING_SENDS", "MAX_PENDING_SENDS_PER_GROUP"] {
            lifted.push((format!("TROUPE_ACTORS__{bound}"), "1000000".to_owned()));
        }
    }
    lifted
}
