//! A protocol client: one WebSocket, requests with ids, replies matched by id, everything
//! else delivered as events in arrival order.
//!
//! It speaks the wire protocol as `schema/PROTOCOL.md` describes it, with untyped JSON, so
//! that tests exercise exactly what a client in any language would send and see.

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, ClientError>>>>>;

/// What went wrong with a request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClientError {
    /// The node answered with an error event.
    #[error("{code}: {message}")]
    Server {
        /// The stable error code.
        code: String,
        /// The human explanation.
        message: String,
        /// With `rate_limited`: how long to wait, in milliseconds.
        retry_after_ms: Option<u64>,
    },
    /// The connection failed or closed.
    #[error("connection: {0}")]
    Connection(String),
    /// No reply in time.
    #[error("timed out waiting for a reply")]
    Timeout,
}

impl ClientError {
    /// The server's error code, if this is a server error.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Server { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// How the node closed the connection.
#[derive(Debug, Clone, PartialEq)]
pub struct Closed {
    /// The close code (1000, 1008, ...), if the node sent a close frame.
    pub code: Option<u16>,
    /// The close reason text (`slow_consumer`, `auth_timeout`, ...).
    pub reason: String,
}

/// One connection to a node.
pub struct Client {
    sink: tokio::sync::Mutex<SplitSink<Socket, Message>>,
    pending: Pending,
    events: tokio::sync::Mutex<mpsc::UnboundedReceiver<Value>>,
    closed: Arc<Mutex<Option<Closed>>>,
    closed_rx: tokio::sync::Mutex<oneshot::Receiver<()>>,
    next_id: AtomicU64,
    frames: Arc<AtomicU64>,
    /// How long [`Client::request`] waits for a reply.
    pub timeout: Duration,
}

impl Client {
    /// Connects to a node's WebSocket URL (`ws://host:port/ws`).
    pub async fn connect(url: &str) -> Result<Client, ClientError> {
        let (socket, _) =
            tokio_tungstenite::connect_async(url).await.map_err(|e| ClientError::Connection(e.to_string()))?;
        let (sink, stream) = socket.split();
        let pending: Pending = Arc::default();
        let closed = Arc::new(Mutex::new(None));
        let frames = Arc::new(AtomicU64::new(0));
        let (events_tx, events) = mpsc::unbounded_channel();
        let (closed_tx, closed_rx) = oneshot::channel();
        tokio::spawn(read_loop(stream, pending.clone(), events_tx, closed.clone(), closed_tx, frames.clone()));
        Ok(Client {
            sink: tokio::sync::Mutex::new(sink),
            pending,
            events: tokio::sync::Mutex::new(events),
            closed,
            closed_rx: tokio::sync::Mutex::new(closed_rx),
            next_id: AtomicU64::new(1),
            frames,
            timeout: Duration::from_secs(30),
        })
    }

    /// Sends `{"id": N, "op": op, ...fields}` and waits for its reply's `result`.
    pub async fn request(&self, op: &str, fields: Value) -> Result<Value, ClientError> {
        let rx = self.start_request(op, fields).await?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ClientError::Connection("closed before the reply".into())),
            Err(_) => Err(ClientError::Timeout),
        }
    }

    /// Sends a request and returns the receiver of its reply, without waiting: for
    /// pipelining many requests on one connection.
    pub async fn start_request(
        &self,
        op: &str,
        fields: Value,
    ) -> Result<oneshot::Receiver<Result<Value, ClientError>>, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut frame = match fields {
            Value::Object(map) => map,
            Value::Null => serde_json::Map::new(),
            other => return Err(ClientError::Connection(format!("fields must be an object, not {other}"))),
        };
        frame.insert("id".into(), json!(id));
        frame.insert("op".into(), json!(op));
        let (tx, rx) = oneshot::channel();
        self.lock_pending().insert(id, tx);
        if let Err(e) = self.send_text(&Value::Object(frame).to_string()).await {
            self.lock_pending().remove(&id);
            return Err(e);
        }
        Ok(rx)
    }

    /// Sends a raw text frame (for testing how the node treats bad input).
    pub async fn send_text(&self, text: &str) -> Result<(), ClientError> {
        self.sink
            .lock()
            .await
            .send(Message::Text(text.into()))
            .await
            .map_err(|e| ClientError::Connection(e.to_string()))
    }

    /// Sends a raw binary frame.
    pub async fn send_binary(&self, bytes: Vec<u8>) -> Result<(), ClientError> {
        self.sink
            .lock()
            .await
            .send(Message::Binary(bytes.into()))
            .await
            .map_err(|e| ClientError::Connection(e.to_string()))
    }

    /// The next pushed event (anything that is not a reply to a pending request), or None
    /// if none arrives within `wait` or the connection is gone.
    pub async fn next_event(&self, wait: Duration) -> Option<Value> {
        let mut events = self.events.lock().await;
        tokio::time::timeout(wait, events.recv()).await.ok().flatten()
    }

    /// Waits for the next event with this `event` name, skipping others.
    pub async fn next_event_named(&self, name: &str, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let event = self.next_event(left).await?;
            if event["event"] == name {
                return Some(event);
            }
        }
    }

    /// Drains events already received.
    pub async fn drain_events(&self) -> Vec<Value> {
        let mut events = self.events.lock().await;
        let mut out = Vec::new();
        while let Ok(event) = events.try_recv() {
            out.push(event);
        }
        out
    }

    /// Waits until the node closes the connection (or `wait` passes) and says how.
    pub async fn closed(&self, wait: Duration) -> Option<Closed> {
        if let Some(closed) = self.closed.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            // Known already: the receiver must not be polled again once it has completed.
            return Some(closed);
        }
        let mut rx = self.closed_rx.lock().await;
        let _ = tokio::time::timeout(wait, &mut *rx).await;
        self.closed.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Frames received so far (a frame may carry several events).
    pub fn frames_received(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }

    /// Sends a close frame.
    pub async fn close(&self) {
        let _ = self.sink.lock().await.close().await;
    }

    /// Registers (if `register`), logs in, and returns the connection with the login result.
    pub async fn login(
        url: &str,
        username: &str,
        password: &str,
        register: bool,
    ) -> Result<(Client, Value), ClientError> {
        let client = Client::connect(url).await?;
        if register {
            client.request("register", json!({ "username": username, "password": password })).await?;
        }
        let session = client.request("login", json!({ "username": username, "password": password })).await?;
        Ok((client, session))
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Result<Value, ClientError>>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn read_loop(
    mut stream: SplitStream<Socket>,
    pending: Pending,
    events: mpsc::UnboundedSender<Value>,
    closed: Arc<Mutex<Option<Closed>>>,
    closed_tx: oneshot::Sender<()>,
    frames: Arc<AtomicU64>,
) {
    let mut close = Closed { code: None, reason: String::new() };
    while let Some(message) = stream.next().await {
        let text = match message {
            Ok(Message::Text(text)) => text,
            Ok(Message::Close(frame)) => {
                if let Some(frame) = frame {
                    close = Closed { code: Some(frame.code.into()), reason: frame.reason.to_string() };
                }
                break;
            }
            Ok(_) => continue,
            Err(_) => break,
        };
        frames.fetch_add(1, Ordering::Relaxed);
        let Ok(Value::Array(batch)) = serde_json::from_str::<Value>(text.as_str()) else {
            let _ = events
                .send(json!({ "event": "client_error", "message": "frame is not a JSON array", "raw": text.as_str() }));
            continue;
        };
        for event in batch {
            let id = event.get("id").and_then(Value::as_u64);
            let waiter = id.and_then(|id| pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&id));
            match (waiter, event["event"].as_str()) {
                (Some(waiter), Some("reply")) => {
                    let _ = waiter.send(Ok(event["result"].clone()));
                }
                (Some(waiter), Some("error")) => {
                    let _ = waiter.send(Err(ClientError::Server {
                        code: event["code"].as_str().unwrap_or("").to_owned(),
                        message: event["message"].as_str().unwrap_or("").to_owned(),
                        retry_after_ms: event["retry_after_ms"].as_u64(),
                    }));
                }
                _ => {
                    let _ = events.send(event);
                }
            }
        }
    }
    *closed.lock().unwrap_or_else(|e| e.into_inner()) = Some(close);
    // Requests still waiting will never be answered.
    pending.lock().unwrap_or_else(|e| e.into_inner()).clear();
    let _ = closed_tx.send(());
}
