//! The properties the fuzz targets check, in one place: the cargo-fuzz targets in
//! `actors/fuzz/fuzz_targets/` include this file with `#[path]`, and the corpus replay test
//! (`actors/tests/fuzz_corpus.rs`) runs the same functions over every kept input. It lives
//! in a folder so that cargo does not build it as a test of its own.
//!
//! Each function takes the raw bytes a client or a peer node could send and panics when a
//! property does not hold. The crates are named `schema` and `actors` (the includer makes
//! `actors` resolve), plus `serde` and `serde_json`.

#![allow(dead_code)]

use actors::media::thumbnail::{THUMBNAIL_EDGE, thumbnail as make_thumbnail};
use actors::media::{
    ImageError, MAX_IMAGE_PIXELS, SNIFF_BYTES, Sniffed, check_image_pixels, image_dimensions, kind_matches, sniff,
};
use schema::ErrorCode;
use schema::cluster::{GroupCommand, NodeMessage};
use schema::codec::{self, CodecError, MAX_DECODE_BYTES};
use schema::frames::MessageKind;
use schema::frames::client::{ClientFrame, FrameError, MediaBody, OPS, RedPacketBody, Request, parse_client_frame};
use serde::Deserialize;
use serde_json::Value;

// ---- client frames -----------------------------------------------------------------------

/// `parse_client_frame`, as the gateway calls it on every text frame.
///
/// * A parsed frame's op is in [`OPS`], and is the `op` the JSON says; its id is the `id`
///   the JSON says.
/// * A parsed frame written back as JSON parses to the same frame (floats to the last bit
///   or so: serde_json's default float parsing is not exact).
/// * An error has one of the three frame codes, and the code and id that `PROTOCOL.md`
///   promises: `malformed_frame` exactly when the text is not a JSON object, `null` id when
///   the envelope (`id`, `op`) could not be read, the id otherwise; `unknown_op` only for an
///   op outside [`OPS`]. The error reply the session sends for it is valid JSON carrying
///   that code and id.
/// * The `send` bodies the session re-reads (red packets, media, text) survive the trip to
///   the group actor.
pub fn client_frame(data: &[u8]) {
    // A WebSocket text frame is UTF-8 by the time the gateway has it.
    let Ok(text) = std::str::from_utf8(data) else { return };
    let parsed = parse_client_frame(text);
    assert_eq!(parse_client_frame(text), parsed, "parsing is deterministic");
    let json = Json::read(text);
    match &parsed {
        Ok(frame) => check_parsed_frame(text, frame, &json),
        Err(error) => check_frame_error(text, error, &json),
    }
}

/// What a generic JSON reading of a frame says, as an oracle for the envelope.
enum Json {
    /// Not JSON to serde_json's `Value` (which also refuses nesting deeper than 128).
    Invalid,
    /// Valid JSON, but not an object.
    NotObject,
    /// An object (the last value of a repeated key), and the top-level keys it repeats.
    Object(serde_json::Map<String, Value>, Vec<String>),
}

impl Json {
    fn read(text: &str) -> Json {
        match serde_json::from_str::<Value>(text) {
            Err(_) => Json::Invalid,
            Ok(Value::Object(map)) => {
                let Entries(mut keys) = serde_json::from_str(text).expect("an object reads as entries");
                keys.sort();
                let mut repeated: Vec<String> =
                    keys.windows(2).filter(|w| w[0] == w[1]).map(|w| w[0].clone()).collect();
                repeated.dedup();
                Json::Object(map, repeated)
            }
            Ok(_) => Json::NotObject,
        }
    }
}

/// An object's top-level keys in order, repeats kept (`Value` keeps only the last).
struct Entries(Vec<String>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Keys;
        impl<'de> serde::de::Visitor<'de> for Keys {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut keys = Vec::new();
                while let Some((key, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                    keys.push(key);
                }
                Ok(Entries(keys))
            }
        }
        deserializer.deserialize_map(Keys)
    }
}

/// The envelope as the protocol defines it: `id` absent, null or an unsigned integer; `op`
/// absent, null (then `missing field op`) or a string; neither given twice. `None`
/// otherwise (the envelope is unreadable).
fn readable_envelope<'a>(
    map: &'a serde_json::Map<String, Value>,
    repeated: &[String],
) -> Option<(Option<u64>, Option<&'a str>)> {
    if repeated.iter().any(|key| key == "id" || key == "op") {
        return None;
    }
    let id = match map.get("id") {
        None | Some(Value::Null) => None,
        Some(value) => Some(value.as_u64()?),
    };
    let op = match map.get("op") {
        None | Some(Value::Null) => None,
        Some(value) => Some(value.as_str()?),
    };
    Some((id, op))
}

fn check_parsed_frame(text: &str, frame: &ClientFrame, json: &Json) {
    let op = frame.request.op();
    assert!(OPS.contains(&op), "parsed op {op} is not in OPS");
    match json {
        Json::Object(map, repeated) => {
            assert_eq!(
                readable_envelope(map, repeated),
                Some((frame.id, Some(op))),
                "the frame's id and op are the JSON's"
            );
            // Unknown fields are ignored, even twice; the op's own fields are not.
            let fields = request_fields(&frame.request);
            assert!(
                repeated.iter().all(|key| fields.get(key).is_none()),
                "{op} accepted a repeated field among {repeated:?}"
            );
        }
        Json::Invalid => {} // Deeper than `Value` reads, in a field the op ignores.
        Json::NotObject => panic!("parsed a frame that is not a JSON object"),
    }

    // Written back, it parses to the same frame.
    let mut object = match request_fields(&frame.request) {
        Value::Object(object) => object,
        other => panic!("{op}'s fields serialise to {other}"),
    };
    object.insert("op".into(), op.into());
    object.insert("id".into(), frame.id.into());
    let again_text = Value::Object(object).to_string();
    let again = parse_client_frame(&again_text).unwrap_or_else(|e| panic!("{again_text} does not parse again: {e}"));
    assert_eq!(again.id, frame.id);
    if again != *frame {
        assert!(
            same_json(&request_fields(&again.request), &request_fields(&frame.request)),
            "{text} written back as {again_text} parses to {again:?}, not {frame:?}"
        );
    }

    if let Request::Send(send) = &frame.request {
        match send.kind {
            // The session re-serialises a valid body; the group actor parses that text again.
            MessageKind::RedPacket => {
                if let Ok(packet) = RedPacketBody::deserialize(&send.body) {
                    let stored = serde_json::to_string(&packet).expect("a red packet body serialises");
                    let back: RedPacketBody = serde_json::from_str(&stored).expect("the group actor reads it back");
                    assert_eq!(back, packet);
                }
            }
            MessageKind::Text => {
                if send.body.is_string() {
                    let stored = serde_json::to_string(&send.body).expect("a string serialises");
                    assert_eq!(serde_json::from_str::<Value>(&stored).expect("stored text is JSON"), send.body);
                }
            }
            kind => {
                assert!(kind.is_media());
                let _ = MediaBody::deserialize(&send.body);
            }
        }
    }
}

fn check_frame_error(text: &str, error: &FrameError, json: &Json) {
    let code = error.code();
    assert!(
        matches!(code, ErrorCode::MalformedFrame | ErrorCode::UnknownOp | ErrorCode::InvalidField),
        "a frame error has a frame code, not {code:?}"
    );
    match error {
        FrameError::Malformed(_) => {
            assert_eq!(error.request_id(), None);
            assert!(
                matches!(json, Json::Invalid | Json::NotObject),
                "a JSON object was refused as malformed_frame: {error}"
            );
        }
        FrameError::UnknownOp { op, .. } => {
            assert!(!OPS.contains(&op.as_str()), "unknown_op for a known op {op}");
        }
        FrameError::InvalidField { .. } => {}
    }
    if !text.trim_start().starts_with('{') {
        assert_eq!(code, ErrorCode::MalformedFrame, "not an object, but {error}");
    }
    match json {
        Json::NotObject => assert_eq!(code, ErrorCode::MalformedFrame, "a JSON non-object gave {error}"),
        Json::Object(map, repeated) => match readable_envelope(map, repeated) {
            // The envelope was readable: the error carries its id, and names the op only
            // when no op has that name.
            Some((id, op)) => {
                assert_eq!(error.request_id(), id, "{error}");
                match op {
                    Some(op) if !OPS.contains(&op) => {
                        assert_eq!(error, &FrameError::UnknownOp { id, op: op.to_owned() });
                    }
                    _ => assert_eq!(code, ErrorCode::InvalidField, "{error}"),
                }
            }
            None => {
                assert_eq!(error.request_id(), None, "an unreadable envelope has no id: {error}");
                assert_eq!(code, ErrorCode::InvalidField, "{error}");
            }
        },
        Json::Invalid => {}
    }

    // The reply the session sends is valid JSON with that code and id.
    let reply = schema::frames::server::encode_error(error.request_id(), code, &error.to_string());
    let reply: Value = serde_json::from_slice(&reply).expect("an error reply is JSON");
    assert_eq!(reply["event"], "error");
    assert_eq!(reply["code"], serde_json::to_value(code).expect("a code serialises"));
    assert_eq!(reply["id"], Value::from(error.request_id()));
    assert_eq!(reply["message"], error.to_string());
}

/// A request's own fields as JSON, as a client would write them.
fn request_fields(request: &Request) -> Value {
    let value = match request {
        Request::Register(r) => serde_json::to_value(r),
        Request::Login(r) => serde_json::to_value(r),
        Request::Auth(r) => serde_json::to_value(r),
        Request::Logout(r) => serde_json::to_value(r),
        Request::Ping(r) => serde_json::to_value(r),
        Request::Profile(r) => serde_json::to_value(r),
        Request::UpdateProfile(r) => serde_json::to_value(r),
        Request::CreateGroup(r) => serde_json::to_value(r),
        Request::GroupInfo(r) => serde_json::to_value(r),
        Request::MyGroups(r) => serde_json::to_value(r),
        Request::UpdateGroup(r) => serde_json::to_value(r),
        Request::AddMembers(r) => serde_json::to_value(r),
        Request::Join(r) => serde_json::to_value(r),
        Request::Leave(r) => serde_json::to_value(r),
        Request::RemoveMember(r) => serde_json::to_value(r),
        Request::SetRole(r) => serde_json::to_value(r),
        Request::TransferOwnership(r) => serde_json::to_value(r),
        Request::DissolveGroup(r) => serde_json::to_value(r),
        Request::Members(r) => serde_json::to_value(r),
        Request::Send(r) => serde_json::to_value(r),
        Request::History(r) => serde_json::to_value(r),
        Request::Sync(r) => serde_json::to_value(r),
        Request::Read(r) => serde_json::to_value(r),
        Request::StartFaceToFace(r) => serde_json::to_value(r),
        Request::JoinFaceToFace(r) => serde_json::to_value(r),
        Request::ConfirmFaceToFace(r) => serde_json::to_value(r),
        Request::GrabRedPacket(r) => serde_json::to_value(r),
        Request::RedPacket(r) => serde_json::to_value(r),
        Request::Wallet(r) => serde_json::to_value(r),
        Request::MediaUrl(r) => serde_json::to_value(r),
    };
    value.expect("a parsed request serialises")
}

/// JSON equality, with floats equal within a few ulps.
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap_or(f64::NAN), y.as_f64().unwrap_or(f64::NAN));
            x == y || (x - y).abs() <= 4.0 * f64::EPSILON * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

// ---- the cluster envelope ----------------------------------------------------------------

/// `codec::decode::<NodeMessage>`, what the node actor's `ClusterMsg::deserialize` runs on
/// every frame from a peer.
///
/// * Bad bytes are an error (`Decode` or `Trailing`), never a panic.
/// * A decoded message re-encodes to at most as many bytes, and that encoding decodes to the
///   same message (bit-for-bit: equal, or NaN coordinates encoding identically) and encodes
///   to itself.
/// * One byte more is refused as trailing; one byte fewer is refused.
/// * A group request's command answers an op the client protocol has (or the sweeper's).
pub fn cluster_envelope(data: &[u8]) {
    let message = match codec::decode::<NodeMessage>(data) {
        Ok(message) => message,
        Err(CodecError::Decode(_) | CodecError::Trailing(_)) => return,
        Err(CodecError::TooLarge(len)) => {
            assert!(len > MAX_DECODE_BYTES && len == data.len());
            return;
        }
        Err(error) => panic!("decode gave {error}"),
    };
    let bytes = codec::encode(&message).expect("a decoded message encodes");
    assert!(bytes.len() <= data.len(), "{} bytes re-encode to {}", data.len(), bytes.len());
    let again: NodeMessage = codec::decode(&bytes).expect("a re-encoded message decodes");
    assert_eq!(codec::encode(&again).expect("encodes"), bytes, "the encoding is canonical after one round");
    #[allow(clippy::eq_op)]
    let comparable = message == message; // false only with a NaN inside
    if comparable {
        assert_eq!(again, message);
    }

    let mut longer = data.to_vec();
    longer.push(0);
    assert!(
        matches!(codec::decode::<NodeMessage>(&longer), Err(CodecError::Trailing(1))),
        "a trailing byte is refused"
    );
    assert!(codec::decode::<NodeMessage>(&data[..data.len() - 1]).is_err(), "a truncated message is refused");

    if let NodeMessage::Group(envelope) | NodeMessage::Forwarded(envelope) = &message {
        let op = envelope.command.op();
        assert!(
            OPS.contains(&op) || matches!(envelope.command, GroupCommand::RedPacketDue { .. }),
            "a group command answers op {op}, which clients do not have"
        );
    }
}

// ---- media headers -----------------------------------------------------------------------

/// What the node runs on the head of an upload before anything decodes it: `sniff`,
/// `kind_matches`, and `check_image_pixels` (images) or `image_dimensions` (anything else).
///
/// * `sniff` never panics, looks at no more than [`SNIFF_BYTES`], and its MIME type agrees
///   with its kind (`image/*` is an image, ...); any bytes may be sent as a file, and as
///   their own kind.
/// * Dimensions come only for images, and are what the header's bytes say (read
///   independently here), within the format's own limits.
/// * Reading more of the upload never changes dimensions already read from fewer bytes.
/// * `check_image_pixels` agrees with `image_dimensions`: refused exactly when unreadable,
///   empty, or over [`MAX_IMAGE_PIXELS`].
pub fn media_header(head: &[u8]) {
    let sniffed = sniff(head);
    check_sniffed(&sniffed);
    if head.len() > SNIFF_BYTES {
        assert_eq!(sniff(&head[..SNIFF_BYTES]), sniffed, "sniff reads past SNIFF_BYTES");
    }
    assert!(kind_matches(MessageKind::File, &sniffed));
    assert!(kind_matches(sniffed.kind, &sniffed));
    for claimed in MessageKind::MEDIA {
        assert_eq!(kind_matches(claimed, &sniffed), claimed == MessageKind::File || claimed == sniffed.kind);
    }

    let dimensions = image_dimensions(head);
    if let Some((width, height)) = dimensions {
        assert_eq!(sniffed.kind, MessageKind::Image, "{} has dimensions", sniffed.mime);
        assert!(
            declared_by_header(head, sniffed.mime, width, height),
            "{width} x {height} is not what the {} header says",
            sniffed.mime
        );
    }
    // The node reads the head in chunks of any size: fewer bytes may give no answer, never
    // another one.
    for cut in [head.len() / 2, head.len().saturating_sub(1), 32, 64, 1024] {
        if cut < head.len()
            && let Some(fewer) = image_dimensions(&head[..cut])
        {
            assert_eq!(dimensions, Some(fewer), "{cut} bytes give {fewer:?}, all {} give {dimensions:?}", head.len());
        }
    }

    match (check_image_pixels(head), dimensions) {
        (Err(ImageError::Unreadable), None) => {}
        (Err(ImageError::Empty), Some((width, height))) => assert!(width == 0 || height == 0),
        (Err(ImageError::TooManyPixels { width, height }), Some(declared)) => {
            assert_eq!((width, height), declared);
            assert!(u64::from(width) * u64::from(height) > MAX_IMAGE_PIXELS);
        }
        (Ok((width, height)), Some(declared)) => {
            assert_eq!((width, height), declared);
            assert!(width > 0 && height > 0 && u64::from(width) * u64::from(height) <= MAX_IMAGE_PIXELS);
        }
        (checked, dimensions) => panic!("check_image_pixels gave {checked:?} for dimensions {dimensions:?}"),
    }
}

fn check_sniffed(sniffed: &Sniffed) {
    let family = sniffed.mime.split('/').next().unwrap_or_default();
    let kind = match family {
        "image" => MessageKind::Image,
        "audio" => MessageKind::Audio,
        "video" => MessageKind::Video,
        "application" => MessageKind::File,
        _ => panic!("unexpected MIME type {}", sniffed.mime),
    };
    assert_eq!(sniffed.kind, kind, "{} is sniffed as {:?}", sniffed.mime, sniffed.kind);
}

/// Whether `width` x `height` is literally what the image header in `head` declares, read
/// here from the format's specification rather than from `image_dimensions`.
fn declared_by_header(head: &[u8], mime: &str, width: u32, height: u32) -> bool {
    let bytes = |at: usize, n: usize| head.get(at..at + n);
    let be = |at: usize, n: usize| bytes(at, n).map(|b| b.iter().fold(0u32, |acc, &x| acc << 8 | u32::from(x)));
    let le = |at: usize, n: usize| bytes(at, n).map(|b| b.iter().rev().fold(0u32, |acc, &x| acc << 8 | u32::from(x)));
    match mime {
        // Signature, IHDR length and type, then width and height (big-endian).
        "image/png" => bytes(12, 4) == Some(b"IHDR") && be(16, 4) == Some(width) && be(20, 4) == Some(height),
        // The logical screen descriptor follows the 6-byte signature.
        "image/gif" => le(6, 2) == Some(width) && le(8, 2) == Some(height),
        // BITMAPINFOHEADER: width, then a signed height.
        "image/bmp" => le(18, 4) == Some(width) && le(22, 4).map(|h| (h as i32).unsigned_abs()) == Some(height),
        "image/webp" => match bytes(12, 4) {
            // VP8 key frame: tag (3), start code 9d 01 2a, then 14-bit sizes and 2-bit scales.
            Some(b"VP8 ") => {
                width <= 0x3fff
                    && height <= 0x3fff
                    && le(26, 2).map(|w| w & 0x3fff) == Some(width)
                    && le(28, 2).map(|h| h & 0x3fff) == Some(height)
            }
            // VP8L: signature 0x2f, then 14 bits each of width - 1 and height - 1.
            Some(b"VP8L") => {
                let bits = le(21, 4);
                (1..=0x4000).contains(&width)
                    && (1..=0x4000).contains(&height)
                    && bits.map(|b| (b & 0x3fff) + 1) == Some(width)
                    && bits.map(|b| ((b >> 14) & 0x3fff) + 1) == Some(height)
            }
            // VP8X: flags (4), then 24-bit canvas width - 1 and height - 1.
            Some(b"VP8X") => le(24, 3).map(|w| w + 1) == Some(width) && le(27, 3).map(|h| h + 1) == Some(height),
            _ => false,
        },
        // Some start-of-frame segment (C0-CF but C4, C8, CC) says height, then width.
        "image/jpeg" => (2..head.len()).any(|at| {
            head[at] == 0xff
                && head.get(at + 1).is_some_and(|m| (0xc0..=0xcf).contains(m) && ![0xc4, 0xc8, 0xcc].contains(m))
                && be(at + 5, 2) == Some(height)
                && be(at + 7, 2) == Some(width)
        }),
        _ => false,
    }
}

// ---- thumbnails --------------------------------------------------------------------------

/// `actors::media::thumbnail::thumbnail`, which the node runs on a whole uploaded image
/// (under a decode budget, off the async threads).
///
/// * Never panics; errors or `None` for what it cannot or will not decode.
/// * A thumbnail is a JPEG of 1 to [`THUMBNAIL_EDGE`] pixels a side, and our own header
///   reader reads its size back.
/// * Only what sniffs as an image gets one, and never larger than the size the upload's
///   header declared (what `check_image_pixels` let through): the decoder cannot be handed
///   more pixels than the pixel-flood check saw.
pub fn thumbnail(bytes: &[u8]) {
    let Ok(Some(thumb)) = make_thumbnail(bytes) else { return };
    assert!((1..=THUMBNAIL_EDGE).contains(&thumb.width), "width {}", thumb.width);
    assert!((1..=THUMBNAIL_EDGE).contains(&thumb.height), "height {}", thumb.height);
    assert!(thumb.jpeg.starts_with(b"\xff\xd8\xff") && thumb.jpeg.ends_with(b"\xff\xd9"), "a JPEG");
    assert_eq!(image_dimensions(&thumb.jpeg), Some((thumb.width, thumb.height)), "the thumbnail's header");
    assert_eq!(sniff(bytes).kind, MessageKind::Image, "a thumbnail of {}", sniff(bytes).mime);
    if let Ok((width, height)) = check_image_pixels(&bytes[..bytes.len().min(SNIFF_BYTES)]) {
        assert!(
            thumb.width <= width && thumb.height <= height,
            "a {}x{} thumbnail of an image whose header says {width}x{height}",
            thumb.width,
            thumb.height
        );
    }
}
