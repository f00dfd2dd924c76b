//! A real S3-compatible server of the test's own: `s3s-fs` (crates.io, which checks
//! request signatures) on a free port, keeping a bucket in a temporary folder.
//!
//! `.ci/run` installs it; elsewhere: `cargo install s3s-fs --version 0.14.1 --features
//! binary --locked`, or point `S3S_FS` at the binary.

use super::cluster::free_port;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// The access key the tests use.
pub const ACCESS_KEY: &str = "troupe-test";
/// The secret key the tests use.
pub const SECRET_KEY: &str = "troupe-test-secret";
/// The bucket the tests use.
pub const BUCKET: &str = "media";

/// A running s3s-fs.
pub struct TestS3 {
    _child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    root: tempfile::TempDir,
}

impl TestS3 {
    /// Starts a server with an empty bucket and waits until it listens.
    pub async fn start() -> TestS3 {
        let binary = std::env::var("S3S_FS").unwrap_or_else(|_| "s3s-fs".into());
        let root = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(root.path().join(BUCKET)).expect("bucket folder");
        let port = free_port();
        let child = Command::new(&binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{binary} must be installed for the S3 tests ({e}); see tests/common/s3.rs"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not come up on port {port}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        TestS3 { _child: child, port, root }
    }

    /// The settings that point a node at this server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("TROUPE_MEDIA__BACKEND", "s3".to_owned()),
            ("TROUPE_MEDIA__S3_ENDPOINT", format!("http://127.0.0.1:{}", self.port)),
            ("TROUPE_MEDIA__S3_BUCKET", BUCKET.to_owned()),
            ("TROUPE_MEDIA__S3_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("TROUPE_MEDIA__S3_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Every object in the bucket, as files of the server's folder (s3s-fs keeps an object
    /// as a file at its key; its own bookkeeping files are left out).
    pub fn objects(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            let Ok(entries) = std::fs::read_dir(dir) else { return };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else if !path.to_string_lossy().contains(".s3s") {
                    out.push(path);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.root.path().join(BUCKET), &mut out);
        out
    }
}
