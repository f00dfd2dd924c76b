//! `troupe console`: sends one command to a node's console and prints the answer, or reads
//! commands from stdin when none is given.

use serde_json::Value;
use std::net::SocketAddr;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Sends one command line and returns the node's JSON answer.
pub async fn ask(addr: SocketAddr, command: &str) -> std::io::Result<Value> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(format!("{command}\n").as_bytes()).await?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await?;
    serde_json::from_slice(&reply).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Runs one command, or a read-eval-print loop over stdin, printing answers.
pub async fn run(addr: SocketAddr, command: Vec<String>, json: bool) -> std::io::Result<()> {
    if !command.is_empty() {
        let reply = ask(addr, &command.join(" ")).await?;
        println!("{}", render(&reply, json));
        return Ok(());
    }
    eprintln!(
        "troupe console at {addr}: actors | users | stats | nodes | group ID | user ID | owner ID | drain (Ctrl-D to quit)"
    );
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        match ask(addr, line.trim()).await {
            Ok(reply) => println!("{}", render(&reply, json)),
            Err(error) => eprintln!("error: {error}"),
        }
    }
    Ok(())
}

/// A human rendering of an answer (JSON when asked, or when there is no table for it).
pub fn render(reply: &Value, json: bool) -> String {
    if json {
        return serde_json::to_string_pretty(reply).unwrap_or_default();
    }
    if let Some(actors) = reply.get("actors").and_then(Value::as_array) {
        let number = |v: &Value| v.as_u64().unwrap_or(0);
        let mut out = format!(
            "node {} store {}: {} connections, {} online users, {} group actors, {} user actors\n",
            number(&reply["node"]),
            reply["store"].as_str().unwrap_or("?"),
            number(&reply["connections"]),
            number(&reply["online_users"]),
            number(&reply["counts"]["group"]),
            number(&reply["counts"]["user"]),
        );
        out.push_str(&format!("{:<6} {:>18} {:>8} {:>8} {:>10}\n", "KIND", "ID", "DEPTH", "PEAK", "HANDLED"));
        for a in actors {
            out.push_str(&format!(
                "{:<6} {:>18} {:>8} {:>8} {:>10}\n",
                a["kind"].as_str().unwrap_or("?"),
                number(&a["id"]),
                number(&a["mailbox_depth"]),
                number(&a["mailbox_peak"]),
                number(&a["handled"]),
            ));
        }
        return out;
    }
    if let Some(owner) = reply.get("owner") {
        let here = if reply["live_here"] == true { "; its actor runs on this node" } else { "" };
        return match owner.as_u64() {
            Some(node) => format!("group {} is owned by node {node}{here}", reply["group"]),
            None => format!("group {}: this node does not know the cluster yet", reply["group"]),
        };
    }
    if let Some(nodes) = reply.get("nodes").and_then(Value::as_array) {
        let number = |v: &Value| v.as_u64().unwrap_or(0);
        let mut out = format!(
            "{:>6} {:<22} {:<9} {:>10} {:>7} {:>7} {:>11}\n",
            "NODE", "CLUSTER ADDR", "STATE", "HEARD (MS)", "GROUPS", "USERS", "CONNECTIONS"
        );
        for n in nodes {
            out.push_str(&format!(
                "{:>6} {:<22} {:<9} {:>10} {:>7} {:>7} {:>11}\n",
                number(&n["node"]),
                n["cluster_addr"].as_str().unwrap_or(""),
                n["state"].as_str().unwrap_or("?"),
                number(&n["last_heard_ms"]),
                number(&n["groups"]),
                number(&n["users"]),
                number(&n["connections"]),
            ));
        }
        return out;
    }
    if let Some(group) = reply.get("group").filter(|g| g.is_object()) {
        let mut out = format!(
            "group {} \"{}\": last_seq {}, {} members (max {}), queued {}, in flight {}, epoch {}\n",
            group["group"],
            group["name"].as_str().unwrap_or(""),
            group["last_seq"],
            group["members"].as_array().map_or(0, Vec::len),
            group["max_members"],
            group["queued"],
            group["in_flight"],
            group["epoch"],
        );
        for member in group["members"].as_array().into_iter().flatten() {
            out.push_str(&format!("  {:>18} {}\n", member[0].as_u64().unwrap_or(0), member[1].as_str().unwrap_or("")));
        }
        return out;
    }
    serde_json::to_string_pretty(reply).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cluster_answers_render_as_lines_and_tables() {
        let owner = render(&json!({ "group": 1234, "owner": 2, "live_here": true }), false);
        assert_eq!(owner, "group 1234 is owned by node 2; its actor runs on this node");
        let unknown = render(&json!({ "group": 1234, "owner": null, "live_here": false }), false);
        assert!(unknown.contains("does not know the cluster yet"), "{unknown}");
        let nodes = json!({ "nodes": [
            { "node": 1, "cluster_addr": "10.0.0.1:7901", "state": "self", "last_heard_ms": 0, "groups": 3, "users": 9, "connections": 12 },
            { "node": 2, "cluster_addr": "10.0.0.2:7901", "state": "draining", "last_heard_ms": 120, "groups": 0, "users": 1, "connections": 1 },
        ] });
        let table = render(&nodes, false);
        assert_eq!(table.lines().count(), 3, "{table}");
        assert!(table.lines().nth(2).is_some_and(|l| l.contains("10.0.0.2:7901") && l.contains("draining")), "{table}");
        assert!(render(&nodes, true).starts_with('{'), "--json prints JSON");
    }
}
