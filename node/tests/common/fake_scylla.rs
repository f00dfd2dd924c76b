//! A fake ScyllaDB node for tests that run without a server: scylla-proxy in dry mode (a
//! proxy with no node behind it) listens on a loopback address, and one catch-all rule
//! answers every request the real driver sends with a frame forged here.
//!
//! It speaks enough CQL v4 for the driver to connect (OPTIONS, STARTUP, REGISTER, the
//! topology queries), to run the store's DDL and to prepare its statements. Bind markers are
//! typed from the columns of `schema/cql/001_init.cql`, so a statement that names a column
//! the schema lacks fails to prepare here as it would on a server. Executions are answered by
//! scripts a test installs per statement name; without one, reads find nothing, plain writes
//! succeed and conditional writes apply. LIMIT and paging are applied here, as a server
//! would, so the driver really pages.
//!
//! Each answer takes about 40 ms: the proxy writes a frame's header and body in two writes
//! on a socket without TCP_NODELAY, so the body waits for the driver's delayed ACK. Opening
//! a store (some 50 requests) therefore takes about 2 s here; it is the proxy, not the store.
//! `RUST_LOG` (e.g. `scylla=debug,scylla_proxy=info`) shows both sides.

#![allow(dead_code)]

use bytes::Bytes;
use scylla_cql::Consistency;
use scylla_cql::frame::protocol_features::ProtocolFeatures;
use scylla_cql::frame::request::RequestV2;
use scylla_cql::frame::request::batch::BatchStatement;
use scylla_cql::frame::response::error::DbError;
use scylla_cql::frame::types::{RawValue, SerialConsistency};
use scylla_cql::serialize::row::SerializedValues;
use scylla_proxy::{
    Condition, Node, Proxy, Reaction, RequestFrame, RequestOpcode, RequestReaction, RequestRule, ResponseFrame,
    ResponseOpcode, RunningProxy,
};
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

const SCHEMA: &str = include_str!("../../../schema/cql/001_init.cql");

/// A CQL type, as far as the store and the driver's topology queries need.
#[derive(Debug, Clone, PartialEq)]
pub enum Ty {
    BigInt,
    Int,
    Text,
    Boolean,
    Blob,
    Uuid,
    Inet,
    List(Box<Ty>),
    Set(Box<Ty>),
    Map(Box<Ty>, Box<Ty>),
}

impl Ty {
    fn parse(name: &str) -> Option<Ty> {
        // A frozen collection has the same wire type as its unfrozen form.
        if let Some(inner) = name.strip_prefix("frozen<").and_then(|rest| rest.strip_suffix('>')) {
            return Ty::parse(inner);
        }
        if let Some(inner) = name.strip_prefix("list<").and_then(|rest| rest.strip_suffix('>')) {
            return Some(Ty::List(Box::new(Ty::parse(inner)?)));
        }
        Some(match name {
            "bigint" => Ty::BigInt,
            "int" => Ty::Int,
            "text" => Ty::Text,
            "boolean" => Ty::Boolean,
            "blob" => Ty::Blob,
            _ => return None,
        })
    }

    fn write(&self, out: &mut Vec<u8>) {
        let id: u16 = match self {
            Ty::BigInt => 0x0002,
            Ty::Int => 0x0009,
            Ty::Text => 0x000D,
            Ty::Boolean => 0x0004,
            Ty::Blob => 0x0003,
            Ty::Uuid => 0x000C,
            Ty::Inet => 0x0010,
            Ty::List(_) => 0x0020,
            Ty::Map(..) => 0x0021,
            Ty::Set(_) => 0x0022,
        };
        out.extend_from_slice(&id.to_be_bytes());
        match self {
            Ty::List(inner) | Ty::Set(inner) => inner.write(out),
            Ty::Map(key, value) => {
                key.write(out);
                value.write(out);
            }
            _ => {}
        }
    }
}

/// A value sent or answered.
#[derive(Debug, Clone, PartialEq)]
pub enum V {
    Null,
    Unset,
    BigInt(i64),
    Int(i32),
    Text(String),
    Boolean(bool),
    Blob(Vec<u8>),
    Uuid([u8; 16]),
    Inet(IpAddr),
    TextSet(Vec<String>),
    /// A list (a red packet's shares).
    List(Vec<V>),
    /// Bytes the fake could not type (a bind of a type it does not decode).
    Raw(Vec<u8>),
}

impl V {
    /// The type a value naturally has, for columns of forged answers.
    fn ty(&self) -> Ty {
        match self {
            V::Int(_) => Ty::Int,
            V::Text(_) => Ty::Text,
            V::Boolean(_) => Ty::Boolean,
            V::Blob(_) | V::Raw(_) => Ty::Blob,
            V::Uuid(_) => Ty::Uuid,
            V::Inet(_) => Ty::Inet,
            V::TextSet(_) => Ty::Set(Box::new(Ty::Text)),
            V::List(items) => Ty::List(Box::new(items.first().map_or(Ty::BigInt, V::ty))),
            V::Null | V::Unset | V::BigInt(_) => Ty::BigInt,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let body: Vec<u8> = match self {
            V::Null | V::Unset => {
                out.extend_from_slice(&(-1i32).to_be_bytes());
                return;
            }
            V::BigInt(v) => v.to_be_bytes().to_vec(),
            V::Int(v) => v.to_be_bytes().to_vec(),
            V::Text(v) => v.as_bytes().to_vec(),
            V::Boolean(v) => vec![u8::from(*v)],
            V::Blob(v) | V::Raw(v) => v.clone(),
            V::Uuid(v) => v.to_vec(),
            V::Inet(IpAddr::V4(v)) => v.octets().to_vec(),
            V::Inet(IpAddr::V6(v)) => v.octets().to_vec(),
            V::TextSet(items) => {
                let mut body = (items.len() as i32).to_be_bytes().to_vec();
                for item in items {
                    V::Text(item.clone()).encode(&mut body);
                }
                body
            }
            V::List(items) => {
                let mut body = (items.len() as i32).to_be_bytes().to_vec();
                for item in items {
                    item.encode(&mut body);
                }
                body
            }
        };
        out.extend_from_slice(&(body.len() as i32).to_be_bytes());
        out.extend_from_slice(&body);
    }

    fn decode(ty: &Ty, raw: RawValue<'_>) -> V {
        let bytes = match raw {
            RawValue::Null => return V::Null,
            RawValue::Unset => return V::Unset,
            RawValue::Value(bytes) => bytes,
        };
        match (ty, bytes.len()) {
            (Ty::BigInt, 8) => V::BigInt(i64::from_be_bytes(bytes.try_into().unwrap_or_default())),
            (Ty::Int, 4) => V::Int(i32::from_be_bytes(bytes.try_into().unwrap_or_default())),
            (Ty::Boolean, 1) => V::Boolean(bytes[0] != 0),
            (Ty::Text, _) => String::from_utf8(bytes.to_vec()).map_or_else(|e| V::Raw(e.into_bytes()), V::Text),
            (Ty::Blob, _) => V::Blob(bytes.to_vec()),
            (Ty::List(inner), _) => V::decode_list(inner, bytes).unwrap_or_else(|| V::Raw(bytes.to_vec())),
            _ => V::Raw(bytes.to_vec()),
        }
    }

    /// A list's elements: a count, then each element as [length][bytes]; None if malformed.
    fn decode_list(inner: &Ty, bytes: &[u8]) -> Option<V> {
        let take_int = |at: usize| -> Option<i32> { Some(i32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?)) };
        let count = take_int(0)?;
        let mut at = 4;
        let mut items = Vec::new();
        for _ in 0..count {
            let length = take_int(at)?;
            at += 4;
            if length < 0 {
                items.push(V::Null);
                continue;
            }
            let element = bytes.get(at..at + length as usize)?;
            at += length as usize;
            items.push(V::decode(inner, RawValue::Value(element)));
        }
        Some(V::List(items))
    }
}

/// One statement of a request, with its bound values by column (or `[ttl]`, `[limit]`,
/// `[timestamp]`).
#[derive(Debug, Clone)]
pub struct Bound {
    /// The store's name for the statement (see `statement_texts`), if it is one of its.
    pub name: Option<&'static str>,
    pub text: String,
    pub values: Vec<(String, V)>,
}

impl Bound {
    /// The value bound for `column` (the first, if bound twice).
    pub fn value(&self, column: &str) -> V {
        self.values.iter().find(|(name, _)| name == column).map_or(V::Null, |(_, value)| value.clone())
    }

    /// Every value bound for `column`, in order.
    pub fn values_of(&self, column: &str) -> Vec<V> {
        self.values.iter().filter(|(name, _)| name == column).map(|(_, value)| value.clone()).collect()
    }
}

/// One request the driver sent: a QUERY or EXECUTE (one statement) or a BATCH.
#[derive(Debug, Clone)]
pub struct Call {
    pub statements: Vec<Bound>,
    pub consistency: Consistency,
    pub serial_consistency: Option<SerialConsistency>,
    pub page_size: Option<i32>,
    pub paging_state: Option<Vec<u8>>,
    pub timestamp: Option<i64>,
}

impl Call {
    /// The name of the (first) statement.
    pub fn name(&self) -> Option<&'static str> {
        self.statements.first().and_then(|s| s.name)
    }

    /// A value of the first statement.
    pub fn value(&self, column: &str) -> V {
        self.statements.first().map_or(V::Null, |s| s.value(column))
    }

    /// Every value of the first statement bound for `column`.
    pub fn values_of(&self, column: &str) -> Vec<V> {
        self.statements.first().map_or_else(Vec::new, |s| s.values_of(column))
    }
}

/// How the fake answers an execution.
pub enum Reply {
    /// What an empty database answers: no rows, writes succeed, conditions hold.
    Default,
    /// Rows typed as the statement's SELECT columns.
    Rows(Vec<Vec<V>>),
    /// Rows with columns of the test's choosing (to forge an answer of the wrong shape).
    Table(Vec<(String, Ty)>, Vec<Vec<V>>),
    /// An error response.
    Error(DbError, String),
}

impl Reply {
    /// A conditional write's answer: `[applied]` and the old values of the tested columns.
    pub fn lwt(applied: bool, old: &[(&str, V)]) -> Reply {
        Reply::lwt_rows(applied, &[old])
    }

    /// A conditional batch's answer, one row per conditional statement (ScyllaDB's shape).
    pub fn lwt_rows(applied: bool, rows: &[&[(&str, V)]]) -> Reply {
        let mut columns: Vec<(String, Ty)> = vec![("[applied]".into(), Ty::Boolean)];
        for row in rows {
            for (name, value) in *row {
                if !columns.iter().any(|(c, _)| c == name) {
                    columns.push((name.to_string(), value.ty()));
                } else if *value != V::Null
                    && let Some(column) = columns.iter_mut().find(|(c, _)| c == name)
                {
                    column.1 = value.ty();
                }
            }
        }
        let rows = rows
            .iter()
            .map(|row| {
                columns
                    .iter()
                    .map(|(name, _)| {
                        if name == "[applied]" {
                            return V::Boolean(applied);
                        }
                        row.iter().find(|(c, _)| c == name).map_or(V::Null, |(_, v)| v.clone())
                    })
                    .collect()
            })
            .collect();
        Reply::Table(columns, rows)
    }
}

type Script = Box<dyn Fn(&Call) -> Reply + Send + Sync>;

/// What the fake knows about a prepared statement.
#[derive(Clone)]
struct Prepared {
    name: Option<&'static str>,
    text: String,
    binds: Vec<(String, Ty)>,
    columns: Vec<(String, Ty)>,
    system: bool,
    conditional: bool,
    limit: Option<usize>,
}

struct State {
    keyspace: String,
    address: IpAddr,
    tables: HashMap<String, Vec<(String, Ty)>>,
    names: HashMap<String, &'static str>,
    prepared: HashMap<Vec<u8>, Prepared>,
    scripts: HashMap<&'static str, Script>,
    calls: Vec<Call>,
    ddl: Vec<String>,
    prepares: Vec<String>,
}

/// A fake node: the proxy and what it has seen.
pub struct FakeScylla {
    /// Where the driver connects.
    pub address: SocketAddr,
    proxy: Option<RunningProxy>,
    state: Arc<Mutex<State>>,
}

/// The statement id the fake gives `text` (deterministic, so a test can match on it).
pub fn prepared_id(text: &str) -> Vec<u8> {
    let mut id = Vec::with_capacity(16);
    for salt in [0u8, 1] {
        let mut hasher = DefaultHasher::new();
        salt.hash(&mut hasher);
        text.hash(&mut hasher);
        id.extend_from_slice(&hasher.finish().to_be_bytes());
    }
    id
}

impl FakeScylla {
    /// Starts a fake node for a store in `keyspace`, on a loopback address of its own.
    pub async fn start(keyspace: &str) -> FakeScylla {
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
        let ip = scylla_proxy::get_exclusive_local_address();
        // A free port on that address: bound and released just before the proxy binds it.
        let port = std::net::TcpListener::bind((ip, 0)).expect("a free port").local_addr().expect("address").port();
        let address = SocketAddr::new(ip, port);
        let names =
            troupe::store::scylla::statement_texts(keyspace).into_iter().map(|(name, _, text)| (text, name)).collect();
        let state = Arc::new(Mutex::new(State {
            keyspace: keyspace.to_owned(),
            address: ip,
            tables: schema_tables(),
            names,
            prepared: HashMap::new(),
            scripts: HashMap::new(),
            calls: Vec::new(),
            ddl: Vec::new(),
            prepares: Vec::new(),
        }));
        let answering = state.clone();
        let answer =
            RequestReaction::forge_response(Arc::new(move |request: RequestFrame| answer(&answering, request)));
        let node = Node::builder().proxy_address(address).request_rules(vec![RequestRule(Condition::True, answer)]);
        let proxy = Proxy::builder().with_node(node.build_dry_mode()).build().run().await.expect("the proxy starts");
        // The proxy accepts in a task of its own, which subscribes to the stop signal before
        // its first accept; a stop sent earlier would be lost. An accepted connection says
        // the task is there.
        tokio::net::TcpStream::connect(address).await.expect("the proxy accepts");
        FakeScylla { address, proxy: Some(proxy), state }
    }

    /// The contact point for the store.
    pub fn contact_point(&self) -> String {
        self.address.to_string()
    }

    /// Answers executions of the store's statement `name` with `script`.
    pub fn on(&self, name: &'static str, script: impl Fn(&Call) -> Reply + Send + Sync + 'static) {
        self.lock().scripts.insert(name, Box::new(script));
    }

    /// Answers the next executions of `name` with `replies`, in order, then as an empty
    /// database would.
    pub fn answer_with(&self, name: &'static str, replies: Vec<Reply>) {
        let queue = Mutex::new(std::collections::VecDeque::from(replies));
        self.on(name, move |_| queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front().unwrap_or(Reply::Default));
    }

    /// Drops every execution of the statement `name` without an answer (a node that hangs).
    pub fn silence(&mut self, name: &str) {
        self.react_to(name, RequestReaction::drop_frame());
    }

    /// Answers every execution of the statement `name` only after `delay` (a slow node), as
    /// its script says; the call is recorded when the answer is made, after the delay.
    /// Other requests are answered meanwhile.
    pub fn slow(&mut self, name: &str, delay: std::time::Duration) {
        let answering = self.state.clone();
        let late = Arc::new(move |request: RequestFrame| answer(&answering, request));
        self.react_to(name, RequestReaction::forge_response_with_delay(delay, late));
    }

    /// Puts `reaction` ahead of the catch-all rule for executions of the statement `name`.
    fn react_to(&mut self, name: &str, reaction: RequestReaction) {
        let text = {
            let state = self.lock();
            state.names.iter().find(|(_, n)| **n == name).map(|(text, _)| text.clone()).expect("a statement name")
        };
        let id = prepared_id(&text).into_boxed_slice();
        let rule = RequestRule(
            Condition::RequestOpcode(RequestOpcode::Execute).and(Condition::BodyContainsCaseSensitive(id)),
            reaction,
        );
        if let Some(proxy) = self.proxy.as_mut() {
            proxy.running_nodes[0].prepend_request_rules(vec![rule]);
        }
    }

    /// Every request for the store's statements (batches by their first statement), in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The requests whose (first) statement is `name`.
    pub fn calls_to(&self, name: &str) -> Vec<Call> {
        self.calls().into_iter().filter(|call| call.statements.iter().any(|s| s.name == Some(name))).collect()
    }

    /// The schema statements run, in order.
    pub fn ddl(&self) -> Vec<String> {
        self.lock().ddl.clone()
    }

    /// The statements prepared, in order.
    pub fn prepares(&self) -> Vec<String> {
        self.lock().prepares.clone()
    }

    /// Forgets the requests seen so far.
    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stops the proxy.
    pub async fn stop(mut self) {
        if let Some(proxy) = self.proxy.take() {
            let _ = proxy.finish().await;
        }
    }
}

/// table → its columns and types, from the CQL file.
fn schema_tables() -> HashMap<String, Vec<(String, Ty)>> {
    let mut tables = HashMap::new();
    let mut current: Option<(String, Vec<(String, Ty)>)> = None;
    for line in SCHEMA.lines() {
        let line = line.split("--").next().unwrap_or("").trim();
        if let Some(rest) = line.strip_prefix("CREATE TABLE IF NOT EXISTS troupe.") {
            let name = rest.trim_end_matches('(').trim().to_owned();
            current = Some((name, Vec::new()));
        } else if line.starts_with(')') {
            if let Some((name, columns)) = current.take() {
                tables.insert(name, columns);
            }
        } else if let Some((_, columns)) = current.as_mut() {
            let mut words = line.split_whitespace();
            if let (Some(column), Some(ty)) = (words.next(), words.next())
                && let Some(ty) = Ty::parse(ty.trim_end_matches(','))
            {
                columns.push((column.to_owned(), ty));
            }
        }
    }
    tables
}

/// Columns of the system tables the driver reads.
fn system_column(name: &str) -> Option<Ty> {
    let text = || Box::new(Ty::Text);
    Some(match name {
        "host_id" | "schema_version" => Ty::Uuid,
        "rpc_address" | "peer" | "broadcast_address" | "listen_address" => Ty::Inet,
        "tokens" => Ty::Set(text()),
        "replication" => Ty::Map(text(), text()),
        "field_names" | "field_types" => Ty::List(text()),
        "durable_writes" => Ty::Boolean,
        "position" | "port" | "tls_port" | "initial_tablets" => Ty::Int,
        "data_center" | "rack" | "cluster_name" | "keyspace_name" | "table_name" | "view_name" | "base_table_name"
        | "type_name" | "column_name" | "kind" | "type" | "partitioner" | "consistency" | "connection_id"
        | "address" | "key" | "release_version" => Ty::Text,
        _ => return None,
    })
}

fn tokenize(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' {
            let start = i;
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
            tokens.push(chars[start..i.min(chars.len())].iter().collect());
        } else if c.is_alphanumeric() || "_.[]".contains(c) {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || "_.[]".contains(chars[i])) {
                i += 1;
            }
            tokens.push(chars[start..i].iter().collect());
        } else if i + 1 < chars.len() && ["<=", ">=", "!="].contains(&format!("{c}{}", chars[i + 1]).as_str()) {
            tokens.push(format!("{c}{}", chars[i + 1]));
            i += 2;
        } else {
            tokens.push(c.to_string());
            i += 1;
        }
    }
    tokens
}

/// Types a statement's bind markers and result columns, as a server does at PREPARE.
fn analyse(state: &State, text: &str) -> Result<Prepared, String> {
    let tokens = tokenize(text);
    let upper: Vec<String> = tokens.iter().map(|t| t.to_ascii_uppercase()).collect();
    let at = |word: &str| upper.iter().position(|t| t == word);
    let table_token = match upper.first().map(String::as_str) {
        Some("SELECT") | Some("DELETE") => at("FROM").map(|i| i + 1),
        Some("INSERT") => at("INTO").map(|i| i + 1),
        Some("UPDATE") => Some(1),
        _ => None,
    }
    .and_then(|i| tokens.get(i))
    .ok_or_else(|| format!("no table in {text}"))?;
    let (keyspace, table) = table_token.split_once('.').ok_or_else(|| format!("unqualified table in {text}"))?;
    let system = keyspace.starts_with("system");
    if !system && keyspace != state.keyspace {
        return Err(format!("keyspace {keyspace} does not exist"));
    }
    let schema_columns = if system { None } else { Some(state.tables.get(table).ok_or(format!("no table {table}"))?) };
    let column_type = |column: &str| -> Result<Ty, String> {
        match schema_columns {
            Some(columns) => columns
                .iter()
                .find(|(c, _)| c == column)
                .map(|(_, ty)| ty.clone())
                .ok_or_else(|| format!("Undefined column name {column} in table {table}")),
            None => system_column(column).ok_or_else(|| format!("unknown system column {column}")),
        }
    };
    // INSERT: the column list pairs with the VALUES list.
    let mut insert_binds: HashMap<usize, String> = HashMap::new();
    if upper[0] == "INSERT" {
        let open = at("(").ok_or("no column list")?;
        let close = open + upper[open..].iter().position(|t| t == ")").ok_or("unclosed column list")?;
        let columns: Vec<&String> = tokens[open + 1..close].iter().filter(|t| *t != ",").collect();
        let values = at("VALUES").ok_or("no VALUES")? + 2;
        let mut item = 0;
        for (i, token) in tokens.iter().enumerate().skip(values) {
            match token.as_str() {
                ")" => break,
                "," => item += 1,
                "?" => {
                    insert_binds.insert(i, columns.get(item).ok_or("more values than columns")?.to_string());
                }
                _ => {}
            }
        }
    }
    let mut binds = Vec::new();
    let mut limit = None;
    for (i, token) in tokens.iter().enumerate() {
        if token != "?" {
            continue;
        }
        if let Some(column) = insert_binds.get(&i) {
            binds.push((column.clone(), column_type(column)?));
            continue;
        }
        let previous = upper.get(i.wrapping_sub(1)).map(String::as_str).unwrap_or("");
        let column = tokens.get(i.wrapping_sub(2)).cloned().unwrap_or_default();
        match previous {
            "=" | "<" | ">" | "<=" | ">=" | "!=" => binds.push((column.clone(), column_type(&column)?)),
            "IN" => binds.push((column.clone(), Ty::List(Box::new(column_type(&column)?)))),
            "TIMESTAMP" => binds.push(("[timestamp]".into(), Ty::BigInt)),
            "TTL" => binds.push(("[ttl]".into(), Ty::Int)),
            // `token(key) > token(?)`: the marker has the key's type.
            "(" if upper.get(i.wrapping_sub(2)).is_some_and(|t| t == "TOKEN") => {
                let key = tokens.get(i.wrapping_sub(5)).cloned().unwrap_or_default();
                binds.push((key.clone(), column_type(&key)?));
            }
            "LIMIT" => {
                limit = Some(binds.len());
                binds.push(("[limit]".into(), Ty::Int));
            }
            other => return Err(format!("cannot type the marker after {other} in {text}")),
        }
    }
    let mut columns = Vec::new();
    if upper[0] == "SELECT" {
        let from = at("FROM").ok_or("no FROM")?;
        for column in tokens[1..from].iter().filter(|t| *t != ",") {
            columns.push((column.clone(), column_type(column)?));
        }
    }
    Ok(Prepared {
        name: state.names.get(text).copied(),
        text: text.to_owned(),
        binds,
        columns,
        system,
        conditional: upper.iter().any(|t| t == "IF"),
        limit,
    })
}

fn write_string(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// Result metadata, with a paging state if there are more pages.
fn write_metadata(out: &mut Vec<u8>, columns: &[(String, Ty)], paging_state: Option<&[u8]>) {
    let mut flags = 0i32;
    if !columns.is_empty() {
        flags |= 0x0001;
    }
    if paging_state.is_some() {
        flags |= 0x0002;
    }
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&(columns.len() as i32).to_be_bytes());
    if let Some(state) = paging_state {
        out.extend_from_slice(&(state.len() as i32).to_be_bytes());
        out.extend_from_slice(state);
    }
    if !columns.is_empty() {
        write_string(out, "ks");
        write_string(out, "t");
        for (name, ty) in columns {
            write_string(out, name);
            ty.write(out);
        }
    }
}

fn rows_body(columns: &[(String, Ty)], mut rows: Vec<Vec<V>>, call: &Call, limit: Option<usize>) -> Vec<u8> {
    if let Some(limit) = limit {
        rows.truncate(limit);
    }
    let offset = call
        .paging_state
        .as_deref()
        .and_then(|state| state.try_into().ok())
        .map_or(0, |state: [u8; 8]| u64::from_be_bytes(state) as usize)
        .min(rows.len());
    let end = match call.page_size {
        Some(size) if size > 0 => (offset + size as usize).min(rows.len()),
        _ => rows.len(),
    };
    let next = (end < rows.len()).then(|| (end as u64).to_be_bytes());
    let mut out = 2i32.to_be_bytes().to_vec();
    write_metadata(&mut out, columns, next.as_ref().map(|n| &n[..]));
    out.extend_from_slice(&((end - offset) as i32).to_be_bytes());
    for row in &rows[offset..end] {
        for value in row {
            value.encode(&mut out);
        }
    }
    out
}

fn result(request: &RequestFrame, body: Vec<u8>) -> ResponseFrame {
    ResponseFrame::new(request.params.for_response(), ResponseOpcode::Result, Bytes::from(body))
}

fn error(request: &RequestFrame, error: DbError, message: &str) -> ResponseFrame {
    ResponseFrame::forged_error(request.params.for_response(), error, Some(message)).expect("a forgeable error")
}

fn answer(state: &Mutex<State>, request: RequestFrame) -> ResponseFrame {
    let mut state = state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    match request.opcode {
        RequestOpcode::Options => {
            let options = HashMap::from([("CQL_VERSION".to_owned(), vec!["3.4.5".to_owned()])]);
            ResponseFrame::forged_supported(request.params.for_response(), &options).expect("supported")
        }
        RequestOpcode::Startup | RequestOpcode::Register => ResponseFrame::forged_ready(request.params.for_response()),
        RequestOpcode::Prepare => prepare(&mut state, &request),
        RequestOpcode::Query | RequestOpcode::Execute | RequestOpcode::Batch => execute(&mut state, &request),
        other => error(&request, DbError::ProtocolError, &format!("the fake does not answer {other:?}")),
    }
}

fn prepare(state: &mut State, request: &RequestFrame) -> ResponseFrame {
    let body = &request.body[..];
    let text = body
        .get(..4)
        .and_then(|len| body.get(4..4 + i32::from_be_bytes(len.try_into().ok()?) as usize))
        .and_then(|text| std::str::from_utf8(text).ok())
        .map(str::to_owned);
    let Some(text) = text else { return error(request, DbError::ProtocolError, "bad PREPARE") };
    let prepared = match analyse(state, &text) {
        Ok(prepared) => prepared,
        Err(message) => return error(request, DbError::Invalid, &message),
    };
    let id = prepared_id(&text);
    state.prepares.push(text);
    let mut out = 4i32.to_be_bytes().to_vec();
    out.extend_from_slice(&(id.len() as u16).to_be_bytes());
    out.extend_from_slice(&id);
    // Bind metadata: no partition key indexes, so the driver routes without a token.
    let flags: i32 = if prepared.binds.is_empty() { 0 } else { 0x0001 };
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&(prepared.binds.len() as i32).to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes());
    if !prepared.binds.is_empty() {
        write_string(&mut out, "ks");
        write_string(&mut out, "t");
        for (name, ty) in &prepared.binds {
            write_string(&mut out, name);
            ty.write(&mut out);
        }
    }
    if prepared.columns.is_empty() {
        out.extend_from_slice(&0x0004i32.to_be_bytes());
        out.extend_from_slice(&0i32.to_be_bytes());
    } else {
        write_metadata(&mut out, &prepared.columns, None);
    }
    state.prepared.insert(id, prepared);
    result(request, out)
}

fn bind(prepared: &Prepared, values: &SerializedValues) -> Bound {
    Bound {
        name: prepared.name,
        text: prepared.text.clone(),
        values: prepared
            .binds
            .iter()
            .zip(values.iter())
            .map(|((name, ty), raw)| (name.clone(), V::decode(ty, raw)))
            .collect(),
    }
}

fn execute(state: &mut State, request: &RequestFrame) -> ResponseFrame {
    let parsed = match request.deserialize(&ProtocolFeatures::default()) {
        Ok(parsed) => parsed,
        Err(e) => return error(request, DbError::ProtocolError, &e.to_string()),
    };
    let (statements, prepared, consistency, serial, page_size, paging_state, timestamp) = match &parsed {
        RequestV2::Query(query) => {
            let text = query.contents.to_string();
            let upper = text.trim_start().to_ascii_uppercase();
            if upper.starts_with("CREATE") {
                state.ddl.push(text);
                return result(request, 1i32.to_be_bytes().to_vec());
            }
            let prepared = match analyse(state, &text) {
                Ok(prepared) => prepared,
                Err(message) => return error(request, DbError::Invalid, &message),
            };
            let p = &query.parameters;
            let bound = bind(&prepared, &p.values);
            (
                vec![bound],
                prepared,
                p.consistency,
                p.serial_consistency,
                p.page_size,
                p.paging_state.clone(),
                p.timestamp,
            )
        }
        RequestV2::Execute(execute) => {
            let Some(prepared) = state.prepared.get(execute.id.as_ref()).cloned() else {
                return error(
                    request,
                    DbError::Unprepared { statement_id: Bytes::copy_from_slice(execute.id.as_ref()) },
                    "unknown id",
                );
            };
            let p = &execute.parameters;
            let bound = bind(&prepared, &p.values);
            (
                vec![bound],
                prepared,
                p.consistency,
                p.serial_consistency,
                p.page_size,
                p.paging_state.clone(),
                p.timestamp,
            )
        }
        RequestV2::Batch(batch) => {
            let mut statements = Vec::new();
            let mut first = None;
            for (statement, values) in batch.statements.iter().zip(batch.values.iter()) {
                let BatchStatement::Prepared { id } = statement else {
                    return error(request, DbError::Invalid, "the store batches prepared statements only");
                };
                let Some(prepared) = state.prepared.get(id.as_ref()).cloned() else {
                    return error(
                        request,
                        DbError::Unprepared { statement_id: Bytes::copy_from_slice(id) },
                        "unknown id",
                    );
                };
                statements.push(bind(&prepared, values));
                first.get_or_insert(prepared);
            }
            let Some(first) = first else { return error(request, DbError::Invalid, "empty batch") };
            (statements, first, batch.consistency, batch.serial_consistency, None, Default::default(), batch.timestamp)
        }
        _ => return error(request, DbError::ProtocolError, "unexpected request"),
    };
    let call = Call {
        statements,
        consistency,
        serial_consistency: serial,
        page_size,
        paging_state: paging_state.as_bytes_slice().map(|state| state.to_vec()),
        timestamp,
    };
    if prepared.system {
        return result(request, system_rows(state, &prepared, &call));
    }
    let reply = match prepared.name.and_then(|name| state.scripts.get(name)) {
        Some(script) => script(&call),
        None => Reply::Default,
    };
    state.calls.push(call.clone());
    let limit = prepared.limit.and_then(|i| match call.statements[0].values.get(i) {
        Some((_, V::Int(limit))) => Some(*limit as usize),
        _ => None,
    });
    match reply {
        Reply::Default if !prepared.columns.is_empty() => {
            result(request, rows_body(&prepared.columns, Vec::new(), &call, None))
        }
        Reply::Default if prepared.conditional || call.statements.iter().any(|s| s.text.contains(" IF ")) => {
            let Reply::Table(columns, rows) = Reply::lwt(true, &[]) else { unreachable!() };
            result(request, rows_body(&columns, rows, &call, None))
        }
        Reply::Default => result(request, 1i32.to_be_bytes().to_vec()),
        Reply::Rows(rows) => result(request, rows_body(&prepared.columns, rows, &call, limit)),
        Reply::Table(columns, rows) => result(request, rows_body(&columns, rows, &call, limit)),
        Reply::Error(db_error, message) => error(request, db_error, &message),
    }
}

/// The driver's topology and schema reads: this node alone, no keyspace metadata.
fn system_rows(state: &State, prepared: &Prepared, call: &Call) -> Vec<u8> {
    let local = prepared.text.contains("system.local");
    let rows = if local {
        let row = prepared
            .columns
            .iter()
            .map(|(name, _)| match name.as_str() {
                "host_id" => V::Uuid(*b"troupe-fake-node"),
                "schema_version" => V::Uuid(*b"troupe-fake-schm"),
                "rpc_address" | "broadcast_address" | "listen_address" => V::Inet(state.address),
                "data_center" => V::Text("dc1".into()),
                "rack" => V::Text("rack1".into()),
                "tokens" => V::TextSet(vec!["0".into()]),
                "cluster_name" => V::Text("fake".into()),
                "key" => V::Text("local".into()),
                "release_version" => V::Text("3.0.8".into()),
                _ => V::Null,
            })
            .collect();
        vec![row]
    } else {
        Vec::new()
    };
    rows_body(&prepared.columns, rows, call, None)
}
