//! One WebSocket connection's task: it reads and writes the socket, nothing else.
//!
//! One task does both directions so an idle connection costs one task, not two. It is a
//! hand-written poll rather than a `select!` because it runs once per delivery: a wake-up
//! from the outbox must not also poll the socket's read side (which costs a buffer fill
//! and a waker registration in tungstenite). A small [`ReadGate`] waker records whether the
//! socket itself woke the task, and the read side is polled only then.
//!
//! Most events never pass through this task: whoever delivers them writes them to the
//! socket itself while nothing is queued (see [`actors::outbox`]). The task writes the rest.
//! Each time the outbox wakes it, it finishes what the socket did not take, then writes
//! everything queued as few frames as possible (a frame is a JSON array of events): under
//! load, one write per wake-up, however many events arrived. Heartbeats arrive through the
//! outbox too (a node-wide sweep, see [`super::spawn_heartbeats`]), so an idle connection
//! holds no timer.

use crate::config::GatewayConfig;
use actors::metrics::Metrics;
use actors::outbox::Outbox;
use actors::session::Session;
use futures_util::task::AtomicWaker;
use futures_util::{SinkExt, StreamExt};
use schema::error::CloseReason;
use std::future::{Future, poll_fn};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// How long a closing connection waits for the client to take the close frame.
const LINGER: Duration = Duration::from_secs(2);

/// Remembers whether the socket woke the task, so outbox wake-ups skip the read side.
struct ReadGate {
    socket_woke: AtomicBool,
    task: AtomicWaker,
}

impl Wake for ReadGate {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.socket_woke.store(true, Ordering::Release);
        self.task.wake();
    }
}

enum Turn {
    Outbox,
    Frame(Option<Result<Message, WsError>>),
    AuthDeadline,
}

/// Serves one connection until it closes.
pub async fn run<S>(mut ws: WebSocketStream<S>, mut session: Session, config: Arc<GatewayConfig>, metrics: Arc<Metrics>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let outbox = session.outbox().clone();
    let gate = Arc::new(ReadGate { socket_woke: AtomicBool::new(true), task: AtomicWaker::new() });
    let read_waker = Waker::from(gate.clone());
    // Boxed and dropped once authenticated: an idle connection keeps no timer.
    let mut auth_deadline = Some(Box::pin(tokio::time::sleep(config.auth_timeout)));
    let mut last_heard = Instant::now();

    let ending: Ending = loop {
        let turn = poll_fn(|cx| {
            gate.task.register(cx.waker());
            if outbox.poll_ready(cx).is_ready() {
                return Poll::Ready(Turn::Outbox);
            }
            if gate.socket_woke.swap(false, Ordering::AcqRel) {
                let mut read_cx = Context::from_waker(&read_waker);
                if let Poll::Ready(frame) = ws.poll_next_unpin(&mut read_cx) {
                    // tungstenite may hold more frames from the same read: look again next turn.
                    gate.socket_woke.store(true, Ordering::Release);
                    return Poll::Ready(Turn::Frame(frame));
                }
            }
            if let Some(deadline) = auth_deadline.as_mut() {
                if session.user().is_some() {
                    auth_deadline = None;
                } else if deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Turn::AuthDeadline);
                }
            }
            Poll::Pending
        })
        .await;
        match turn {
            Turn::Outbox => match write_queued(&mut ws, &outbox, config.heartbeat_timeout).await {
                Ok(taken) => {
                    if let Some(reason) = taken.close {
                        break Ending::Close(reason);
                    }
                    if taken.heartbeat {
                        if last_heard.elapsed() >= config.heartbeat_timeout {
                            break Ending::Close(CloseReason::HeartbeatTimeout);
                        }
                        let socket = ws.get_mut();
                        let ping = async {
                            socket.write_all(&actors::frame::ping_frame()).await?;
                            socket.flush().await
                        };
                        match guarded(ping, &outbox, config.heartbeat_timeout).await {
                            Ok(()) => {}
                            Err(WriteStop::Overflowed) => break Ending::Drop(CloseReason::SlowConsumer),
                            Err(WriteStop::Io) => break Ending::Quiet,
                        }
                    }
                }
                Err(WriteStop::Overflowed) => break Ending::Drop(CloseReason::SlowConsumer),
                Err(WriteStop::Io) => break Ending::Quiet,
            },
            Turn::Frame(frame) => {
                last_heard = Instant::now();
                match frame {
                    // Boxed so the connection's idle task stays small: a request's future
                    // (login, sync) is large and lives only while it runs.
                    Some(Ok(Message::Text(text))) => Box::pin(session.handle_text(text.as_str())).await,
                    Some(Ok(Message::Binary(_))) => session.handle_binary(),
                    // tungstenite answers pings itself; the flush sends the pong now.
                    Some(Ok(Message::Ping(_))) => {
                        let pong = async {
                            ws.flush().await.map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
                        };
                        match guarded(pong, &outbox, config.heartbeat_timeout).await {
                            Ok(()) => {}
                            Err(WriteStop::Overflowed) => break Ending::Drop(CloseReason::SlowConsumer),
                            Err(WriteStop::Io) => break Ending::Quiet,
                        }
                    }
                    Some(Ok(Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Close(_))) | None => break Ending::Quiet,
                    Some(Err(WsError::Capacity(_))) => break Ending::Close(CloseReason::FrameTooLarge),
                    Some(Err(WsError::Protocol(_) | WsError::Utf8(_))) => {
                        break Ending::Close(CloseReason::ProtocolError);
                    }
                    Some(Err(_)) => break Ending::Quiet,
                }
            }
            Turn::AuthDeadline => break Ending::Close(CloseReason::AuthTimeout),
        }
    };

    match ending {
        Ending::Quiet => {}
        Ending::Close(reason) => {
            metrics.close(reason);
            // Boxed: the close path is long and runs once, so it should not size the task.
            Box::pin(close_with(ws, &outbox, reason)).await;
        }
        Ending::Drop(reason) => {
            metrics.close(reason);
            tracing::debug!(conn = %outbox.conn(), reason = reason.as_str(), "dropped connection mid-write");
            drop(ws);
        }
    }
    // The outbox holds the socket too: let go of it, so the socket closes now.
    outbox.detach();
    session.close().await;
}

/// How a connection's loop ended.
enum Ending {
    /// The client closed, or the socket failed: nothing more to say.
    Quiet,
    /// The node closes, with a close frame that says why.
    Close(CloseReason),
    /// The node drops the socket without a close frame: a frame is half written to a client
    /// that does not read, so no well-formed frame can follow it.
    Drop(CloseReason),
}

/// Why [`write_queued`] stopped before writing everything.
enum WriteStop {
    /// The socket failed.
    Io,
    /// The outbox overflowed while a write waited on the socket, or the write waited too
    /// long: a slow consumer.
    Overflowed,
}

/// Writes what is still queued (replies to the last requests), sends the close frame, and
/// lingers until the client has it.
async fn close_with<S>(mut ws: WebSocketStream<S>, outbox: &Outbox, reason: CloseReason)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // From here on nothing is handed over, so no event can follow the close frame.
    outbox.close(reason);
    // Bounded: a client that stopped reading must not hold the close path forever.
    if write_queued(&mut ws, outbox, LINGER).await.is_err() {
        // Cut mid-frame, or the socket failed: no close frame can follow.
        tracing::debug!(conn = %outbox.conn(), reason = reason.as_str(), "dropped connection while closing");
        return;
    }
    let frame = CloseFrame { code: CloseCode::from(reason.code()), reason: reason.as_str().into() };
    if let Ok(Ok(())) = tokio::time::timeout(LINGER, ws.close(Some(frame))).await {
        linger(ws.get_mut()).await;
    }
    tracing::debug!(conn = %outbox.conn(), reason = reason.as_str(), "closed connection");
}

/// Half-closes the socket and discards what the client still sends until it closes too.
/// Without this, unread input (say, the rest of an oversized frame) makes the kernel answer
/// with a reset, and the client loses the close frame that says why.
async fn linger<S: AsyncRead + AsyncWrite + Unpin>(socket: &mut S) {
    let _ = socket.shutdown().await;
    let mut sink = vec![0u8; 4096];
    let mut budget: usize = 4 * 1024 * 1024;
    let deadline = Instant::now() + LINGER;
    while budget > 0 {
        match tokio::time::timeout_at(deadline, socket.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => budget = budget.saturating_sub(n),
            _ => return,
        }
    }
}

/// Finishes what the socket did not take, then writes everything queued (see
/// [`Outbox::write_queued`]) and waits until the socket has taken it all. Returns what else
/// the outbox asked for (a close, a heartbeat). A write still waiting on the socket when
/// the outbox overflows, or after `stall_limit` without finishing, gives up: the client has
/// stopped reading (the second case is a quiet group, whose events never overflow the
/// outbox).
async fn write_queued<S>(
    ws: &mut WebSocketStream<S>,
    outbox: &Outbox,
    stall_limit: Duration,
) -> Result<actors::outbox::Taken, WriteStop>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        guarded(ws.get_mut().flush(), outbox, stall_limit).await?;
        if let Some(taken) = outbox.write_queued() {
            guarded(ws.get_mut().flush(), outbox, stall_limit).await?;
            return Ok(taken);
        }
    }
}

/// Runs one write to the client (a frame, a ping, a pong's flush) unless the client has
/// stopped reading: it gives up when the outbox overflows meanwhile, or when the write has
/// waited `stall_limit`. Every write to the socket goes through here, so no write can park
/// the connection's task forever.
async fn guarded<F>(write: F, outbox: &Outbox, stall_limit: Duration) -> Result<(), WriteStop>
where
    F: Future<Output = std::io::Result<()>>,
{
    let mut write = std::pin::pin!(write);
    // Armed only once a write waits: almost every write finishes on its first poll, and a
    // timer per write would cost the fan-out path.
    let mut stalled: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    poll_fn(|cx| {
        if let Poll::Ready(done) = write.as_mut().poll(cx) {
            return Poll::Ready(done.map_err(|_| WriteStop::Io));
        }
        if outbox.poll_overflowed(cx).is_ready() {
            return Poll::Ready(Err(WriteStop::Overflowed));
        }
        let deadline = stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(stall_limit)));
        deadline.as_mut().poll(cx).map(|()| Err(WriteStop::Overflowed))
    })
    .await
}
