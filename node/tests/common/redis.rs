//! A real `redis-server` of the test's own, on a free port, that the test can kill, restart
//! and inspect.

use super::cluster::free_port;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// A running redis-server.
pub struct TestRedis {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl TestRedis {
    /// Starts a server that keeps nothing on disk, and waits until it answers.
    pub async fn start() -> TestRedis {
        let mut redis = TestRedis { child: None, port: free_port() };
        redis.spawn().await;
        redis
    }

    /// The URL nodes are given.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server must be installed for these tests");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.connection().await.is_none() {
            assert!(Instant::now() < deadline, "redis-server did not come up on port {}", self.port);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the server with SIGKILL.
    pub async fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Starts the server again on the same port (empty: it keeps nothing on disk).
    pub async fn restart(&mut self) {
        self.kill9().await;
        self.spawn().await;
    }

    async fn connection(&self) -> Option<redis::aio::MultiplexedConnection> {
        let client = redis::Client::open(self.url()).ok()?;
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("PING").query_async::<String>(&mut conn).await.ok()?;
        Some(conn)
    }

    /// Runs one command and returns its answer.
    pub async fn query<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut conn = self.connection().await.expect("redis is up");
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query_async(&mut conn).await.expect("redis command")
    }
}
