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
    eprintln!("troupe console at {addr}: actors | users | stats | group ID | user ID (Ctrl-D to quit)");
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
    if let Some(group) = reply.get("group") {
        let mut out = format!(
            "group {} \"{}\": last_seq {}, {} members (max {}), queued {}, in flight {}\n",
            group["group"],
            group["name"].as_str().unwrap_or(""),
            group["last_seq"],
            group["members"].as_array().map_or(0, Vec::len),
            group["max_members"],
            group["queued"],
            group["in_flight"],
        );
        for member in group["members"].as_array().into_iter().flatten() {
            out.push_str(&format!("  {:>18} {}\n", member[0].as_u64().unwrap_or(0), member[1].as_str().unwrap_or("")));
        }
        return out;
    }
    serde_json::to_string_pretty(reply).unwrap_or_default()
}
