//! Fast decoding of node frames for the load generator: events are borrowed from the frame
//! text, and only the fields the bench checks are read.

use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// One event of a node frame, as far as the bench cares.
#[derive(Debug, Deserialize)]
pub struct Event<'a> {
    /// `message`, `reply`, `error`, ...
    #[serde(borrow)]
    pub event: Cow<'a, str>,
    /// The request id of a reply or error.
    #[serde(default)]
    pub id: Option<u64>,
    /// The group of a message.
    #[serde(default)]
    pub group: Option<u64>,
    /// The seq of a message.
    #[serde(default)]
    pub seq: Option<u64>,
    /// A message's body, undecoded (a JSON string for text, an object for a red packet).
    #[serde(default, borrow)]
    pub body: Option<&'a RawValue>,
    /// A message's accept time on the node, ms since the epoch.
    #[serde(default)]
    pub ts: Option<u64>,
    /// An error's code.
    #[serde(default, borrow)]
    pub code: Option<Cow<'a, str>>,
    /// With `rate_limited` and `overloaded`: how long to wait before retrying.
    #[serde(default)]
    pub retry_after_ms: Option<u64>,
    /// A reply's result, undecoded.
    #[serde(default, borrow)]
    pub result: Option<&'a RawValue>,
}

impl Event<'_> {
    /// A text message's body; None for other bodies.
    pub fn text_body(&self) -> Option<String> {
        serde_json::from_str(self.body?.get()).ok()
    }
}

/// Decodes a node frame (a JSON array of events).
pub fn decode_frame(text: &str) -> Result<Vec<Event<'_>>, serde_json::Error> {
    serde_json::from_str(text)
}

/// One text message as the bench needs it: (group, seq, send time from its timed body in
/// µs, the node's accept time `ts` in ms).
pub type Delivery = (u64, u64, Option<u64>, u64);

/// Reads a frame that holds only message events, without a general JSON parser: the node
/// encodes them in a fixed shape (`{"event":"message","group":G,"seq":S,...,"body":"...",
/// "ts":T}`), and at a million deliveries a second the bench must not cost more than the
/// node it measures. Returns None for any frame it does not recognise; the caller then
/// falls back to [`decode_frame`].
pub fn fast_messages(text: &str, out: &mut Vec<Delivery>) -> Option<()> {
    let mut rest = text.strip_prefix('[')?;
    loop {
        rest = rest.strip_prefix(r#"{"event":"message","group":"#)?;
        let (group, after) = number(rest)?;
        let after = after.strip_prefix(r#","seq":"#)?;
        let (seq, after) = number(after)?;
        // Skip sender, client_msg_id and type to the body (ids are bench-made: no quotes).
        let body_at = after.find(r#","body":""#)?;
        let body = &after[body_at + 9..];
        let body_end = body.find('"')?;
        let sent = body_time(&body[..body_end]);
        let after = body[body_end + 1..].strip_prefix(r#","ts":"#)?;
        let (ts, after) = number(after)?;
        let after = after.strip_prefix('}')?;
        out.push((group, seq, sent, ts));
        match after.as_bytes().first()? {
            b',' => rest = &after[1..],
            b']' if after.len() == 1 => return Some(()),
            _ => return None,
        }
    }
}

fn number(text: &str) -> Option<(u64, &str)> {
    let end = text.bytes().position(|b| !b.is_ascii_digit()).unwrap_or(text.len());
    Some((text[..end].parse().ok()?, &text[end..]))
}

/// A message body that carries its send time: `t=<unix micros>;` padded to `len` bytes.
pub fn timed_body(sent_micros: u64, len: usize) -> String {
    let mut body = format!("t={sent_micros};");
    while body.len() < len {
        body.push('x');
    }
    body
}

/// The send time carried by a body made by [`timed_body`].
pub fn body_time(body: &str) -> Option<u64> {
    let rest = body.strip_prefix("t=")?;
    let end = rest.find(';')?;
    rest[..end].parse().ok()
}

/// Microseconds since the Unix epoch (all bench processes on one machine share the clock).
pub fn now_micros() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_carry_their_send_time() {
        let body = timed_body(1_764_480_000_123_456, 160);
        assert_eq!(body.len(), 160);
        assert_eq!(body_time(&body), Some(1_764_480_000_123_456));
        assert_eq!(body_time("hello"), None);
    }

    #[test]
    fn fast_path_reads_what_the_node_writes() {
        let frame = r#"[{"event":"message","group":11,"seq":7,"sender":3,"client_msg_id":"b1-9","type":"text","body":"t=55;xxx","ts":99},{"event":"message","group":11,"seq":8,"sender":3,"client_msg_id":"b1-10","type":"text","body":"hello","ts":100}]"#;
        let mut out = Vec::new();
        assert_eq!(fast_messages(frame, &mut out), Some(()));
        assert_eq!(out, vec![(11, 7, Some(55), 99), (11, 8, None, 100)]);
        let mut other = Vec::new();
        assert_eq!(fast_messages(r#"[{"event":"reply","id":1}]"#, &mut other), None);
        assert_eq!(fast_messages(r#"[{"event":"message","group":1,"seq":2}]"#, &mut other), None);
    }

    #[test]
    fn decodes_a_batch() {
        let frame = r#"[{"event":"message","group":1,"seq":2,"sender":3,"client_msg_id":"c","type":"text","body":"t=5;xx","ts":9},
                        {"event":"reply","id":7,"op":"send","result":{"group":1,"seq":2,"ts":9,"duplicate":false}}]"#;
        let events = decode_frame(frame).unwrap();
        assert_eq!(events[0].event, "message");
        assert_eq!((events[0].group, events[0].seq), (Some(1), Some(2)));
        assert_eq!(body_time(&events[0].text_body().unwrap()), Some(5));
        assert_eq!(events[1].id, Some(7));
        assert!(events[1].result.unwrap().get().contains("\"seq\":2"));
    }
}
