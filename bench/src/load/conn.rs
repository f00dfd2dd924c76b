//! A lean connection for the load generator: small buffers (thousands of them live in one
//! process), an optional source address (to spread connections over 127.0.0.x and get past
//! the ephemeral port range), and a request helper for setup steps.

use super::wire::{Event, decode_frame};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// The socket type of a load connection.
pub type Socket = WebSocketStream<TcpStream>;

/// What went wrong on a load connection.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The URL is not `ws://host:port/path`.
    #[error("bad url {0}")]
    Url(String),
    /// TCP or WebSocket failure.
    #[error("connection: {0}")]
    Connection(String),
    /// The node answered a setup request with an error.
    #[error("{op}: {code}")]
    Refused {
        /// The op.
        op: String,
        /// The error code.
        code: String,
    },
    /// The connection closed or a reply did not come.
    #[error("no reply to {0}")]
    NoReply(String),
}

/// Where to connect.
#[derive(Debug, Clone)]
pub struct Target {
    /// The node's address.
    pub addr: SocketAddr,
    /// The full URL, for the handshake.
    pub url: String,
}

impl Target {
    /// Parses `ws://host:port/path` (host must be an IP address).
    pub fn parse(url: &str) -> Result<Target, LoadError> {
        let rest = url.strip_prefix("ws://").ok_or_else(|| LoadError::Url(url.into()))?;
        let authority = rest.split('/').next().unwrap_or(rest);
        let addr = authority.parse().map_err(|_| LoadError::Url(url.into()))?;
        Ok(Target { addr, url: url.to_owned() })
    }
}

/// Opens a WebSocket from `source` (an address on this machine, port chosen by the kernel).
pub async fn connect(target: &Target, source: Option<IpAddr>) -> Result<Socket, LoadError> {
    connect_with_receive_buffer(target, source, None).await
}

/// [`connect`] with the socket's kernel receive buffer set to `bytes`: a client that stops
/// reading then fills it (and the node's send buffer) within kilobytes, the way a phone on a
/// stalled link does, instead of after the megabytes loopback would take.
pub async fn connect_with_receive_buffer(
    target: &Target,
    source: Option<IpAddr>,
    bytes: Option<u32>,
) -> Result<Socket, LoadError> {
    let error = |e: std::io::Error| LoadError::Connection(e.to_string());
    let socket = if target.addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.map_err(error)?;
    if let Some(bytes) = bytes {
        socket.set_recv_buffer_size(bytes).map_err(error)?;
    }
    if let Some(ip) = source {
        if ip.is_ipv4() {
            choose_port_at_connect(&socket).map_err(error)?;
        }
        socket.bind(SocketAddr::new(ip, 0)).map_err(error)?;
    }
    let stream = socket.connect(target.addr).await.map_err(error)?;
    stream.set_nodelay(true).map_err(error)?;
    let config = WebSocketConfig::default().read_buffer_size(1024).write_buffer_size(0);
    let (ws, _) = tokio_tungstenite::client_async_with_config(target.url.as_str(), stream, Some(config))
        .await
        .map_err(|e| LoadError::Connection(e.to_string()))?;
    Ok(ws)
}

/// Leaves the source port to `connect`, which knows the destination and may share a port
/// among different 4-tuples. A `bind` to port 0 must find a port no socket on that address
/// holds, TIME_WAIT ones included; after a few runs of 19,000 connections that search
/// stalled connects for up to a second.
fn choose_port_at_connect(socket: &TcpSocket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    set_socket_option(socket.as_raw_fd(), libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT, &1i32.to_ne_bytes())
}

/// `setsockopt` for the options tokio and std do not expose; `value` is the option's bytes.
pub fn set_socket_option(fd: std::os::fd::RawFd, level: i32, name: i32, value: &[u8]) -> std::io::Result<()> {
    // SAFETY: setsockopt reads `value.len()` bytes from a live slice; the caller owns `fd`.
    let rc = unsafe { libc::setsockopt(fd, level, name, value.as_ptr().cast(), value.len() as libc::socklen_t) };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// Sends a request and waits for its reply, ignoring other events (for setup steps).
pub async fn request(ws: &mut Socket, id: u64, op: &str, mut fields: Value) -> Result<Value, LoadError> {
    fields["id"] = json!(id);
    fields["op"] = json!(op);
    ws.send(Message::Text(fields.to_string().into())).await.map_err(|e| LoadError::Connection(e.to_string()))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next()).await.map_err(|_| LoadError::NoReply(op.into()))?;
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(_)) => continue,
            _ => return Err(LoadError::NoReply(op.into())),
        };
        let events = decode_frame(text.as_str()).map_err(|e| LoadError::Connection(e.to_string()))?;
        if let Some(answer) = events.iter().find(|e: &&Event| e.id == Some(id)) {
            if answer.event == "error" {
                let code = answer.code.as_deref().unwrap_or("?").to_owned();
                return Err(LoadError::Refused { op: op.into(), code });
            }
            let result = answer.result.map(|r| r.get()).unwrap_or("null");
            return serde_json::from_str(result).map_err(|e| LoadError::Connection(e.to_string()));
        }
    }
}

/// The source addresses to spread connections over: 127.0.0.1 ... 127.0.0.n.
pub fn loopback_sources(n: u8) -> Vec<IpAddr> {
    (1..=n.max(1)).map(|i| IpAddr::from([127, 0, 0, i])).collect()
}
