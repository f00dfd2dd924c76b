//! `chat`: a terminal chat client for trying troupe with two terminals.
//!
//! ```text
//! chat --user alice --password wonderland --register
//! > /create lobby          (prints the group id)
//! chat --user bob --password builder42 --register
//! > /join 1234567          (the id alice saw)
//! > hello alice            (plain lines are sent to the current group)
//! ```

use clap::Parser;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use troupe_bench::Client;

#[derive(Parser)]
#[command(about = "A terminal chat client for troupe")]
struct Args {
    /// The node's WebSocket URL.
    #[arg(long, default_value = "ws://127.0.0.1:7878/ws")]
    url: String,
    /// Username.
    #[arg(long)]
    user: String,
    /// Password.
    #[arg(long)]
    password: String,
    /// Create the account first.
    #[arg(long)]
    register: bool,
}

const HELP: &str = "commands: /create NAME | /join ID | /open ID | /groups | /history | /members | /add USER_ID | /quit; other lines are sent to the open group";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (client, session) = Client::login(&args.url, &args.user, &args.password, args.register).await?;
    let client = Arc::new(client);
    let me = session["profile"]["user"].as_u64().unwrap_or(0);
    println!("logged in as {} (user {me}). {HELP}", args.user);
    let mut current: Option<u64> = None;
    for group in session["groups"].as_array().into_iter().flatten() {
        println!("  group {} \"{}\": {} unread", group["group"], group["name"].as_str().unwrap_or(""), group["unread"]);
        current.get_or_insert(group["group"].as_u64().unwrap_or(0));
    }
    if let Some(group) = current {
        println!("open group: {group}");
    }

    let printer = client.clone();
    tokio::spawn(async move {
        let mut names: HashMap<u64, String> = HashMap::new();
        loop {
            let Some(event) = printer.next_event(Duration::from_secs(3600)).await else {
                if let Some(closed) = printer.closed(Duration::ZERO).await {
                    println!("connection closed: {:?} {}", closed.code, closed.reason);
                    std::process::exit(0);
                }
                continue;
            };
            match event["event"].as_str() {
                Some("message") => {
                    let sender = event["sender"].as_u64().unwrap_or(0);
                    let name = match names.get(&sender) {
                        Some(name) => name.clone(),
                        None => {
                            let name = printer
                                .request("profile", json!({ "user": sender }))
                                .await
                                .ok()
                                .and_then(|p| p["nickname"].as_str().map(str::to_owned))
                                .unwrap_or_else(|| sender.to_string());
                            names.insert(sender, name.clone());
                            name
                        }
                    };
                    println!(
                        "[{} #{}] {}: {}",
                        event["group"],
                        event["seq"],
                        name,
                        event["body"].as_str().unwrap_or("?")
                    );
                }
                Some(other) => println!("* {other}: {event}"),
                None => println!("* {event}"),
            }
        }
    });

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut counter = 0u64;
    while let Some(line) = lines.next_line().await? {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (command, rest) = line.split_once(' ').unwrap_or((line, ""));
        let result: Result<Value, _> = match command {
            "/quit" => break,
            "/help" => {
                println!("{HELP}");
                continue;
            }
            "/create" => {
                let reply = client.request("create_group", json!({ "name": rest, "open": true })).await;
                if let Ok(info) = &reply {
                    current = info["group"].as_u64();
                }
                reply
            }
            "/join" | "/open" => {
                let Ok(group) = rest.trim().parse::<u64>() else {
                    println!("usage: {command} GROUP_ID");
                    continue;
                };
                current = Some(group);
                if command == "/join" {
                    client.request("join", json!({ "group": group })).await
                } else {
                    client.request("group_info", json!({ "group": group })).await
                }
            }
            "/groups" => client.request("my_groups", json!({})).await,
            "/history" => client.request("history", json!({ "group": current, "limit": 20 })).await,
            "/members" => client.request("members", json!({ "group": current })).await,
            "/add" => {
                let users: Vec<u64> = rest.split_whitespace().filter_map(|u| u.parse().ok()).collect();
                client.request("add_members", json!({ "group": current, "users": users })).await
            }
            _ if command.starts_with('/') => {
                println!("{HELP}");
                continue;
            }
            _ => {
                let Some(group) = current else {
                    println!("open a group first (/create NAME or /join ID)");
                    continue;
                };
                counter += 1;
                let client_msg_id = format!("{me}-{}-{counter}", std::process::id());
                let send = json!({ "group": group, "client_msg_id": client_msg_id, "type": "text", "body": line });
                match client.request("send", send).await {
                    Ok(_) => continue,
                    Err(e) => Err(e),
                }
            }
        };
        match result {
            Ok(value) => println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default()),
            Err(error) => println!("error: {error}"),
        }
    }
    client.close().await;
    Ok(())
}
