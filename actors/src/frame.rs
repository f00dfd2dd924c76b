//! Encoding server-to-client WebSocket frames (RFC 6455 section 5.2) straight into the
//! bytes written to the socket.
//!
//! Events leave the node as data frames built here, not through tungstenite's sink: a frame
//! is a header and the events, built in one buffer and written in one syscall, with no copy
//! into a second buffer and no waker bookkeeping. Server frames are never masked, so
//! encoding is just the header. It lives beside the [`outbox`](crate::outbox) because the
//! outbox writes frames itself (see [`crate::outbox::Wire`]); tungstenite, in the gateway,
//! still reads, answers pings and closes.

use bytes::Bytes;
use std::sync::OnceLock;

/// Events on their way to many connections, framed at most once: a fan-out shares one
/// frame's bytes across every recipient it writes to straight away.
pub struct Framed<'a> {
    events: &'a [Bytes],
    frame: OnceLock<Vec<u8>>,
}

impl<'a> Framed<'a> {
    /// Events to frame when (and if) a recipient needs them framed.
    pub fn new(events: &'a [Bytes]) -> Self {
        Framed { events, frame: OnceLock::new() }
    }

    /// The events, in order.
    pub fn events(&self) -> &'a [Bytes] {
        self.events
    }

    /// The events as one text frame, built on the first call.
    pub fn frame(&self) -> &[u8] {
        self.frame.get_or_init(|| text_frame_of_events(self.events))
    }
}

const FIN: u8 = 0x80;
const OPCODE_TEXT: u8 = 0x1;
const OPCODE_PING: u8 = 0x9;

/// A text frame whose payload is the events joined as a JSON array: `[e1,e2,...]`.
pub fn text_frame_of_events<'a, I>(events: I) -> Vec<u8>
where
    I: IntoIterator<Item = &'a Bytes>,
    I::IntoIter: Clone,
{
    let events = events.into_iter();
    let (count, bytes) = events.clone().fold((0usize, 0usize), |(n, len), e| (n + 1, len + e.len()));
    let payload_len = 2 + bytes + count.saturating_sub(1);
    let mut out = Vec::with_capacity(payload_len + 10);
    header(&mut out, OPCODE_TEXT, payload_len);
    out.push(b'[');
    for (i, event) in events.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(event);
    }
    out.push(b']');
    out
}

/// An empty ping frame.
pub fn ping_frame() -> [u8; 2] {
    [FIN | OPCODE_PING, 0]
}

fn header(out: &mut Vec<u8>, opcode: u8, len: usize) {
    out.push(FIN | opcode);
    if len < 126 {
        out.push(len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocket};

    /// Decodes bytes as a client would, with tungstenite.
    fn client_reads(bytes: Vec<u8>) -> Vec<Message> {
        let mut socket = WebSocket::from_raw_socket(std::io::Cursor::new(bytes), Role::Client, None);
        let mut out = Vec::new();
        while let Ok(message) = socket.read() {
            out.push(message);
        }
        out
    }

    #[test]
    fn every_length_class_decodes() {
        for size in [0usize, 1, 100, 123, 124, 125, 126, 1000, 65_533, 65_534, 65_535, 70_000, 300_000] {
            let event = Bytes::from(format!("\"{}\"", "x".repeat(size.saturating_sub(2))));
            let frame = text_frame_of_events(std::slice::from_ref(&event));
            let messages = client_reads(frame);
            assert_eq!(messages.len(), 1, "size {size}");
            let Message::Text(text) = &messages[0] else { panic!("not text") };
            assert_eq!(text.len(), event.len() + 2, "size {size}");
        }
    }

    #[test]
    fn events_join_into_one_json_array() {
        let events = [Bytes::from_static(br#"{"a":1}"#), Bytes::from_static(br#"{"b":2}"#)];
        let mut bytes = text_frame_of_events(&events);
        bytes.extend_from_slice(&ping_frame());
        let messages = client_reads(bytes);
        assert_eq!(messages[0], Message::Text(r#"[{"a":1},{"b":2}]"#.into()));
        assert!(matches!(messages[1], Message::Ping(_)));
    }
}
