//! A connection's TCP socket, shared by the connection's task and by every thread that
//! delivers events to it.
//!
//! The node accepts every connection as a [`Socket`] ([`SocketListener`]), so that after the
//! WebSocket upgrade the connection's outbox can write frames to it straight from the thread
//! that delivers them (a group's fan-out writes to 500 sockets in one loop, waking no task);
//! see [`actors::outbox`]. hyper and tungstenite use the same socket through [`SocketIo`].
//!
//! Invariant: bytes reach the kernel in the order they were written, and no write is ever
//! split by another. Every write, from any thread, happens under one lock; a write the
//! kernel does not take whole leaves its rest in `kept`, and nothing else is written until
//! the connection's task has flushed `kept` (the only caller that waits for the socket).

use actors::outbox::{Wire, WriteNow};
use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// One accepted TCP connection.
#[derive(Debug)]
pub struct Socket {
    stream: TcpStream,
    out: Mutex<Out>,
}

#[derive(Debug, Default)]
struct Out {
    /// Bytes written but not yet taken by the kernel; `kept[at..]` is still to go.
    kept: Vec<u8>,
    at: usize,
    /// The socket failed: every later write fails the same way.
    failed: Option<io::ErrorKind>,
}

impl Out {
    fn waiting(&self) -> bool {
        self.at < self.kept.len()
    }
}

impl Socket {
    fn new(stream: TcpStream) -> Socket {
        Socket { stream, out: Mutex::new(Out::default()) }
    }

    fn out(&self) -> std::sync::MutexGuard<'_, Out> {
        // Every mutation under this lock is a single step; a poisoned lock holds no torn state.
        self.out.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes what the kernel takes of `bytes` now and keeps the rest; the caller must
    /// have checked that nothing is kept.
    fn write_locked(&self, out: &mut Out, bytes: &[u8]) -> WriteNow {
        match self.send_now(bytes) {
            Ok(n) if n == bytes.len() => WriteNow::Done,
            Ok(n) => {
                out.kept = bytes[n..].to_vec();
                out.at = 0;
                WriteNow::Kept
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {
                out.kept = bytes.to_vec();
                out.at = 0;
                WriteNow::Kept
            }
            Err(e) => {
                out.failed = Some(e.kind());
                WriteNow::NotWritten
            }
        }
    }

    /// `send(2)` straight on the descriptor, never waiting. tokio's `try_write` would first
    /// read the socket's readiness, a cache miss per delivery (2% of a fan-out's CPU). What
    /// this cannot send is kept, and the flush that waits for room goes through tokio: its
    /// `try_write` meets the full buffer itself and clears the readiness before it waits.
    #[cfg(unix)]
    fn send_now(&self, bytes: &[u8]) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor belongs to `self.stream`, open while `self` lives, and
        // `bytes` is valid for `bytes.len()` bytes. MSG_NOSIGNAL: a peer gone is an error,
        // not a SIGPIPE.
        let sent = unsafe {
            libc::send(
                self.stream.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        usize::try_from(sent).map_err(|_| io::Error::last_os_error())
    }

    #[cfg(not(unix))]
    fn send_now(&self, bytes: &[u8]) -> io::Result<usize> {
        self.stream.try_write(bytes)
    }

    /// Writes the kept bytes, waiting for the socket as long as it takes: ready once
    /// nothing is kept.
    fn poll_flush_kept(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut out = self.out();
        loop {
            if let Some(kind) = out.failed {
                return Poll::Ready(Err(kind.into()));
            }
            if !out.waiting() {
                if out.kept.capacity() > 0 {
                    // A stall's worth of bytes should not stay with an idle connection.
                    out.kept = Vec::new();
                    out.at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            match self.stream.try_write(&out.kept[out.at..]) {
                Ok(0) => out.failed = Some(io::ErrorKind::WriteZero),
                Ok(n) => out.at += n,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {
                    // `try_write` cleared the readiness it saw; this waits for the next.
                    if let Err(e) = ready!(self.stream.poll_write_ready(cx)) {
                        out.failed = Some(e.kind());
                    }
                }
                Err(e) => out.failed = Some(e.kind()),
            }
        }
    }
}

impl Wire for Socket {
    fn write_now(&self, frame: &[u8]) -> WriteNow {
        let mut out = self.out();
        if out.failed.is_some() || out.waiting() {
            return WriteNow::NotWritten;
        }
        self.write_locked(&mut out, frame)
    }
}

/// A [`Socket`] as hyper and tungstenite read and write it. A write returns once its bytes
/// are with the kernel or kept (so it never splits); a flush waits until nothing is kept.
#[derive(Debug, Clone)]
pub struct SocketIo(pub Arc<Socket>);

impl AsyncRead for SocketIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let stream = &self.0.stream;
        loop {
            ready!(stream.poll_read_ready(cx))?;
            match stream.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // `try_read` cleared the readiness it saw; look again for the next.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SocketIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_flush_kept(cx))?;
            let mut out = self.0.out();
            if let Some(kind) = out.failed {
                return Poll::Ready(Err(kind.into()));
            }
            // A deliverer may have kept bytes since the flush: flush again, then write.
            if !out.waiting() {
                return match self.0.write_locked(&mut out, buf) {
                    WriteNow::Done | WriteNow::Kept => Poll::Ready(Ok(buf.len())),
                    WriteNow::NotWritten => Poll::Ready(Err(out.failed.unwrap_or(io::ErrorKind::Other).into())),
                };
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_flush_kept(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.0.poll_flush_kept(cx))?;
        Poll::Ready(socket2::SockRef::from(&self.0.stream).shutdown(std::net::Shutdown::Write))
    }
}

/// The node's listener: accepts [`SocketIo`]s with `TCP_NODELAY` set (events are small and
/// latency-bound: without it, Nagle's algorithm holds a write until the previous one is
/// acked, and a client's delayed ACK can make that 40 ms) and the configured send buffer.
pub struct SocketListener {
    listener: TcpListener,
    send_buffer: usize,
}

impl SocketListener {
    /// `send_buffer` is `gateway.socket_send_buffer_bytes` (0 leaves the kernel's default).
    pub fn new(listener: TcpListener, send_buffer: usize) -> SocketListener {
        SocketListener { listener, send_buffer }
    }
}

impl Listener for SocketListener {
    type Io = SocketIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (SocketIo, SocketAddr) {
        loop {
            match self.listener.accept().await {
                Ok((stream, addr)) => {
                    if let Err(error) = stream.set_nodelay(true) {
                        tracing::debug!(%error, "could not set TCP_NODELAY");
                    }
                    if self.send_buffer > 0
                        && let Err(error) = socket2::SockRef::from(&stream).set_send_buffer_size(self.send_buffer)
                    {
                        tracing::debug!(%error, "could not set SO_SNDBUF");
                    }
                    return (SocketIo(Arc::new(Socket::new(stream))), addr);
                }
                // The client gave up before we accepted: nothing to do.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionRefused
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                    ) => {}
                // Most likely out of file descriptors: wait for some to close rather than spin.
                Err(error) => {
                    tracing::error!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// The connection's socket as every request on it sees it (axum's `ConnectInfo`), so the
/// WebSocket upgrade can hand it to the connection's outbox.
#[derive(Debug, Clone)]
pub struct Accepted(pub Arc<Socket>);

impl Connected<IncomingStream<'_, SocketListener>> for Accepted {
    fn connect_info(stream: IncomingStream<'_, SocketListener>) -> Self {
        Accepted(stream.io().0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tokio::io::AsyncWriteExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocket};

    /// A server-side [`Socket`] with a small send buffer, and its client's std socket.
    async fn pair() -> (Arc<Socket>, std::net::TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        socket2::SockRef::from(&client).set_recv_buffer_size(4096).unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        socket2::SockRef::from(&stream).set_send_buffer_size(4096).unwrap();
        (Arc::new(Socket::new(stream)), client)
    }

    fn frame(text: &str) -> Vec<u8> {
        actors::frame::text_frame_of_events(&[Bytes::from(format!("\"{text}\""))])
    }

    /// Every frame the client reads, until the server closes.
    fn client_reads(client: std::net::TcpStream) -> Vec<String> {
        let mut socket = WebSocket::from_raw_socket(client, Role::Client, None);
        let mut texts = Vec::new();
        loop {
            match socket.read() {
                Ok(Message::Text(text)) => texts.push(text.as_str().to_owned()),
                Ok(other) => panic!("unexpected {other:?}"),
                Err(_) => return texts,
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kept_bytes_go_out_first_and_nothing_cuts_in() {
        let (socket, client) = pair().await;
        let padding = "x".repeat(2000);
        // The client does not read: the socket fills, and its last frame is kept in part.
        let mut written = Vec::new();
        for n in 0.. {
            let text = format!("{n}{padding}");
            match socket.write_now(&frame(&text)) {
                WriteNow::Done => written.push(text),
                WriteNow::Kept => {
                    written.push(text);
                    break;
                }
                WriteNow::NotWritten => panic!("nothing was kept yet"),
            }
            assert!(n < 10_000, "the socket never filled");
        }
        assert_eq!(socket.write_now(&frame("cut in")), WriteNow::NotWritten);
        // The connection's task writes through hyper's and tungstenite's side: it waits.
        let mut io = SocketIo(socket.clone());
        let task = tokio::spawn(async move {
            io.write_all(&frame("from the task")).await.unwrap();
            io.flush().await.unwrap();
            io.shutdown().await.unwrap();
        });
        let reader = tokio::task::spawn_blocking(move || client_reads(client));
        task.await.unwrap();
        written.push("[\"from the task\"]".into());
        let read = reader.await.unwrap();
        let expected: Vec<String> =
            written.iter().map(|t| if t.starts_with('[') { t.clone() } else { format!("[\"{t}\"]") }).collect();
        assert_eq!(read, expected);
    }

    /// A peer that is gone fails the write: no signal kills the node, nothing is kept, and
    /// every later write (a deliverer's or the task's) fails the same way.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_to_a_peer_that_is_gone_fails_and_stays_failed() {
        let (socket, client) = pair().await;
        // Unread data at close makes the kernel answer with a reset.
        socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO)).unwrap();
        drop(client);
        let mut outcomes = Vec::new();
        for _ in 0..100 {
            let outcome = socket.write_now(&frame("after the reset"));
            outcomes.push(outcome);
            if outcome == WriteNow::NotWritten {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(outcomes.last(), Some(&WriteNow::NotWritten), "the write never failed: {outcomes:?}");
        assert!(!outcomes.contains(&WriteNow::Kept), "nothing is kept for a peer that is gone");
        assert_eq!(socket.write_now(&frame("again")), WriteNow::NotWritten);
        let mut io = SocketIo(socket.clone());
        assert!(io.write_all(&frame("from the task")).await.is_err(), "the task sees the failure too");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writers_on_many_threads_never_split_a_frame() {
        let (socket, client) = pair().await;
        let reader = tokio::task::spawn_blocking(move || client_reads(client));
        // The connection's task: flushes what was kept, as the outbox's wake-up makes it.
        let flusher = tokio::spawn({
            let mut io = SocketIo(socket.clone());
            async move {
                for n in 0..200 {
                    io.write_all(&frame(&format!("task {n}"))).await.unwrap();
                    io.flush().await.unwrap();
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        });
        let deliverers: Vec<_> = (0..3)
            .map(|t| {
                let socket = socket.clone();
                std::thread::spawn(move || {
                    let mut sent = Vec::new();
                    for n in 0..300 {
                        let text = format!("thread {t} {n} {}", "y".repeat(n % 300));
                        // Refused while earlier bytes wait: try again, as a queued event
                        // would go again.
                        while socket.write_now(&frame(&text)) == WriteNow::NotWritten {
                            std::thread::sleep(Duration::from_micros(200));
                        }
                        sent.push(format!("[\"{text}\"]"));
                    }
                    sent
                })
            })
            .collect();
        let mut sent: Vec<Vec<String>> = deliverers.into_iter().map(|d| d.join().unwrap()).collect();
        flusher.await.unwrap();
        let mut io = SocketIo(socket.clone());
        io.shutdown().await.unwrap();
        drop(io);
        let read = reader.await.unwrap();
        // Each thread's frames arrive whole and in its order; the task's all arrive.
        for (t, sent) in sent.iter_mut().enumerate() {
            let mine: Vec<String> =
                read.iter().filter(|r| r.starts_with(&format!("[\"thread {t} "))).cloned().collect();
            assert_eq!(&mine, sent, "thread {t}");
        }
        let task: Vec<&String> = read.iter().filter(|r| r.starts_with("[\"task ")).collect();
        assert_eq!(task.len(), 200);
        assert_eq!(read.len(), 200 + sent.iter().map(Vec::len).sum::<usize>());
    }
}
