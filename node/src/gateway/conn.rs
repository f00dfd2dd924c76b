//! One WebSocket connection's task: it reads and writes the socket, nothing else.
//!
//! One task does both directions (a `select!` over the socket and the outbox) so an idle
//! connection costs one task, not two. Each time the outbox wakes it, it takes everything
//! queued and writes it as few frames as possible (a frame is a JSON array of events),
//! then flushes once: one write per wake-up, however many events arrived.

use crate::config::GatewayConfig;
use actors::session::Session;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use schema::error::CloseReason;
use schema::frames::server::join_frame;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Serves one connection until it closes.
pub async fn run<S>(
    mut ws: WebSocketStream<S>,
    mut session: Session,
    config: Arc<GatewayConfig>,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let outbox = session.outbox().clone();
    let auth_deadline = tokio::time::sleep(config.auth_timeout);
    tokio::pin!(auth_deadline);
    let mut heartbeat = tokio::time::interval_at(Instant::now() + config.heartbeat_interval, config.heartbeat_interval);
    let mut last_heard = Instant::now();

    let close: Option<CloseReason> = loop {
        tokio::select! {
            biased;
            _ = outbox.ready() => {
                match write_queued(&mut ws, &outbox, config.max_events_per_frame).await {
                    Ok(None) => {}
                    Ok(Some(reason)) => break Some(reason),
                    Err(_) => break None,
                }
            }
            frame = ws.next() => {
                last_heard = Instant::now();
                match frame {
                    Some(Ok(Message::Text(text))) => session.handle_text(text.as_str()).await,
                    Some(Ok(Message::Binary(_))) => session.handle_binary(),
                    // tungstenite answers pings itself; the flush sends the pong now.
                    Some(Ok(Message::Ping(_))) => {
                        if ws.flush().await.is_err() {
                            break None;
                        }
                    }
                    Some(Ok(Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Close(_))) | None => break None,
                    Some(Err(WsError::Capacity(_))) => break Some(CloseReason::FrameTooLarge),
                    Some(Err(WsError::Protocol(_) | WsError::Utf8(_))) => break Some(CloseReason::ProtocolError),
                    Some(Err(_)) => break None,
                }
            }
            _ = &mut auth_deadline, if session.user().is_none() => break Some(CloseReason::AuthTimeout),
            _ = heartbeat.tick() => {
                if last_heard.elapsed() >= config.heartbeat_timeout {
                    break Some(CloseReason::HeartbeatTimeout);
                }
                if ws.send(Message::Ping(Bytes::new())).await.is_err() {
                    break None;
                }
            }
            _ = shutdown.changed() => break Some(CloseReason::GoingAway),
        }
    };

    if let Some(reason) = close {
        // Whatever was queued before the close goes out first (replies to the last requests).
        let _ = write_queued(&mut ws, &outbox, config.max_events_per_frame).await;
        let frame = CloseFrame { code: CloseCode::from(reason.code()), reason: reason.as_str().into() };
        if let Ok(Ok(())) = tokio::time::timeout(LINGER, ws.close(Some(frame))).await {
            linger(ws.get_mut()).await;
        }
        tracing::debug!(conn = %outbox.conn(), reason = reason.as_str(), "closed connection");
    }
    session.close().await;
}

/// How long a closing connection waits for the client to take the close frame.
const LINGER: Duration = Duration::from_secs(2);

/// Half-closes the socket and discards what the client still sends until it closes too.
/// Without this, unread input (say, the rest of an oversized frame) makes the kernel answer
/// with a reset, and the client loses the close frame that says why.
async fn linger<S: AsyncRead + AsyncWrite + Unpin>(socket: &mut S) {
    let _ = socket.shutdown().await;
    let mut sink = [0u8; 4096];
    let mut budget: usize = 4 * 1024 * 1024;
    let deadline = Instant::now() + LINGER;
    while budget > 0 {
        match tokio::time::timeout_at(deadline, socket.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => budget = budget.saturating_sub(n),
            _ => return,
        }
    }
}

/// Writes everything queued, in frames of at most `max_events` events, then flushes.
/// Returns the close the outbox asks for, if any.
async fn write_queued<S>(
    ws: &mut WebSocketStream<S>,
    outbox: &actors::outbox::Outbox,
    max_events: usize,
) -> Result<Option<CloseReason>, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // A fresh vector per wake-up: keeping one per connection would pin a burst's worth of
    // memory on every idle connection.
    let mut batch = Vec::new();
    loop {
        batch.clear();
        let close = outbox.take(max_events, &mut batch);
        if !batch.is_empty() {
            let frame = join_frame(batch.iter().map(|b| b.as_ref()));
            ws.feed(Message::Text(frame.into())).await?;
        }
        if close.is_some() || batch.len() < max_events {
            ws.flush().await?;
            return Ok(close);
        }
    }
}
