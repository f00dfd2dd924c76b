//! Several real nodes on loopback forming one cluster over a fresh PostgreSQL database,
//! caching in a Redis of their own.

use super::postgres::FreshDatabase;
use super::redis::TestRedis;
use super::{TestNode, WAIT};
use serde_json::Value;
use std::time::{Duration, Instant};

/// The shared secret of test clusters.
pub const SECRET: &str = "test-cluster-secret";

/// A cluster of nodes; node `i` has node id `i + 1`.
pub struct TestCluster {
    /// The nodes, in start order; a removed node's slot is None.
    pub nodes: Vec<Option<TestNode>>,
    /// Cluster addresses, by slot.
    pub addrs: Vec<String>,
    /// The database every node shares.
    pub database: FreshDatabase,
    /// The Redis every node caches in.
    pub redis: TestRedis,
    env: Vec<(String, String)>,
}

/// A loopback port nobody listens on right now, below the ephemeral range (so outgoing
/// connections, which the tests make by the thousand, do not take it meanwhile).
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    loop {
        let port = 20_000 + (RandomState::new().hash_one(std::time::SystemTime::now()) % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl TestCluster {
    /// Starts `n` nodes that know each other as seeds, and waits until each sees all others.
    pub async fn start(n: usize) -> TestCluster {
        Self::start_with_env(n, &[]).await
    }

    /// Like [`TestCluster::start`] with extra `TROUPE_...` settings on every node.
    pub async fn start_with_env(n: usize, env: &[(&str, &str)]) -> TestCluster {
        let database = FreshDatabase::create().await;
        let redis = TestRedis::start().await;
        let mut env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        env.push(("TROUPE_STORE__BACKEND".into(), "postgres".into()));
        env.push(("TROUPE_STORE__POSTGRES_URL".into(), database.url.clone()));
        env.push(("TROUPE_STORE__POSTGRES_POOL".into(), "8".into()));
        env.push(("TROUPE_CLUSTER__SECRET".into(), SECRET.into()));
        env.push(("TROUPE_CACHE__REDIS_URL".into(), redis.url()));
        let addrs: Vec<String> = (0..n).map(|_| format!("127.0.0.1:{}", free_port())).collect();
        let mut cluster = TestCluster { nodes: Vec::new(), addrs: addrs.clone(), database, redis, env };
        for i in 0..n {
            let node = cluster.spawn(i, &addrs).await;
            cluster.nodes.push(Some(node));
        }
        cluster.converge().await;
        cluster
    }

    /// Starts the node of `slot`; if its cluster port was taken meanwhile, on another port.
    async fn spawn(&mut self, slot: usize, seeds: &[String]) -> TestNode {
        for _ in 0..5 {
            if let Some(node) = self.try_spawn(slot, seeds).await {
                return node;
            }
            self.addrs[slot] = format!("127.0.0.1:{}", free_port());
        }
        panic!("node {} could not start", slot + 1);
    }

    async fn try_spawn(&self, slot: usize, seeds: &[String]) -> Option<TestNode> {
        let args = vec![
            "--cluster-listen".to_string(),
            self.addrs[slot].clone(),
            "--node-id".to_string(),
            (slot + 1).to_string(),
            "--seeds".to_string(),
            seeds.join(","),
        ];
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        TestNode::try_start_with(&env, &args).await
    }

    /// Starts one more node, seeded with the first live node only, and waits until every
    /// node sees every other. Returns its slot.
    pub async fn add_node(&mut self) -> usize {
        let slot = self.addrs.len();
        self.addrs.push(format!("127.0.0.1:{}", free_port()));
        let seed = self.live().next().map(|(i, _)| self.addrs[i].clone()).expect("a live node");
        let node = self.spawn(slot, &[seed]).await;
        self.nodes.push(Some(node));
        self.converge().await;
        slot
    }

    /// The node in `slot`.
    pub fn node(&self, slot: usize) -> &TestNode {
        self.nodes[slot].as_ref().expect("that node was removed")
    }

    /// Mutable access to the node in `slot`.
    pub fn node_mut(&mut self, slot: usize) -> &mut TestNode {
        self.nodes[slot].as_mut().expect("that node was removed")
    }

    /// Live nodes with their slots.
    pub fn live(&self) -> impl Iterator<Item = (usize, &TestNode)> {
        self.nodes.iter().enumerate().filter_map(|(i, n)| n.as_ref().map(|n| (i, n)))
    }

    /// Kills a node for good (SIGKILL) and forgets it.
    pub async fn remove(&mut self, slot: usize) {
        if let Some(mut node) = self.nodes[slot].take() {
            node.kill9().await;
        }
    }

    /// Waits until every live node sees every other live node up (and nothing else up) and
    /// places groups.
    pub async fn converge(&self) {
        let expected: Vec<u64> = {
            let mut ids: Vec<u64> = self.live().map(|(i, _)| i as u64 + 1).collect();
            ids.sort();
            ids
        };
        let deadline = Instant::now() + WAIT;
        loop {
            let mut agreed = true;
            for (_, node) in self.live() {
                let mut up = up_nodes(&node.console("nodes").await);
                up.sort();
                agreed &= up == expected;
                // And the node places groups (a starting node waits a moment first).
                agreed &= !node.console("owner 1").await["owner"].is_null();
            }
            if agreed {
                return;
            }
            assert!(Instant::now() < deadline, "nodes did not converge on {expected:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The slot of the node that owns `group`, as `via` sees it.
    pub async fn owner(&self, via: usize, group: u64) -> usize {
        let answer = self.node(via).console(&format!("owner {group}")).await;
        let id = answer["owner"].as_u64().unwrap_or_else(|| panic!("no owner in {answer}"));
        id as usize - 1
    }
}

/// Node ids a `nodes` answer shows as taking part (this node, and peers that are up).
pub fn up_nodes(nodes: &Value) -> Vec<u64> {
    nodes["nodes"]
        .as_array()
        .map(|lines| {
            lines
                .iter()
                .filter(|l| matches!(l["state"].as_str(), Some("self" | "up" | "draining")))
                .filter_map(|l| l["node"].as_u64())
                .collect()
        })
        .unwrap_or_default()
}
