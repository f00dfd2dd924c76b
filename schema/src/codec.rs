//! The one binary codec: cluster messages and stored records go through here and nowhere
//! else, so the format (bincode 2 today) can be swapped in one place.
//!
//! Decoding never panics on bad bytes and refuses inputs over [`MAX_DECODE_BYTES`] (the
//! cluster link's frame cap), so a hostile peer cannot make it allocate without bound.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The largest value the codec decodes: ractor_cluster's frame cap.
pub const MAX_DECODE_BYTES: usize = 16 * 1024 * 1024;

/// Why bytes could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The value could not be encoded.
    #[error("encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    /// The bytes are not a valid encoding of the expected type.
    #[error("decode: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    /// The bytes decoded but had bytes left over.
    #[error("decode: {0} trailing bytes")]
    Trailing(usize),
    /// The input is larger than [`MAX_DECODE_BYTES`].
    #[error("decode: {0} bytes is over the limit")]
    TooLarge(usize),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_DECODE_BYTES>()
}

/// Encodes a value.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(bincode::serde::encode_to_vec(value, config())?)
}

/// Decodes a value, refusing trailing bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    if bytes.len() > MAX_DECODE_BYTES {
        return Err(CodecError::TooLarge(bytes.len()));
    }
    let (value, read) = bincode::serde::decode_from_slice(bytes, config())?;
    if read != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - read));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::*;
    use crate::frames::{MessageKind, Role};
    use crate::ids::*;
    use crate::records::*;
    use proptest::prelude::*;

    fn reply_to() -> ReplyTo {
        ReplyTo { node: NodeId(3), user: UserId(4), conn: ConnId(5), request: Some(6) }
    }

    #[test]
    fn cluster_messages_roundtrip() {
        let commands = vec![
            GroupCommand::Send { client_msg_id: "m".into(), kind: MessageKind::Text, body: "\"x\"".into() },
            GroupCommand::Info,
            GroupCommand::Members { after: Some(UserId(1)), limit: 10 },
            GroupCommand::Join,
            GroupCommand::AddMembers { users: vec![UserId(1), UserId(2)] },
            GroupCommand::Leave,
            GroupCommand::RemoveMember { user: UserId(9) },
            GroupCommand::SetRole { user: UserId(9), role: Role::Admin },
            GroupCommand::TransferOwnership { user: UserId(9) },
            GroupCommand::Update { name: Some("n".into()), open: None, retention_days: Some(7) },
            GroupCommand::Dissolve,
        ];
        for command in commands {
            let msg = NodeMessage::Group(GroupEnvelope { group: GroupId(1), reply_to: reply_to(), command });
            let back: NodeMessage = decode(&encode(&msg).unwrap()).unwrap();
            assert_eq!(back, msg);
        }
        let deliveries = [
            NodeDelivery::Fanout {
                group: GroupId(3),
                from: NodeId(2),
                stamp: 9,
                recipients: vec![UserId(1)],
                events: vec![b"{}".to_vec()],
            },
            NodeDelivery::Reply { user: UserId(1), conn: ConnId(2), event: b"{}".to_vec() },
        ];
        for delivery in deliveries {
            let msg = NodeMessage::Deliver(delivery);
            let back: NodeMessage = decode(&encode(&msg).unwrap()).unwrap();
            assert_eq!(back, msg);
        }
    }

    #[test]
    fn records_roundtrip() {
        let message = MessageRecord {
            group: GroupId(1),
            seq: 2,
            sender: UserId(3),
            client_msg_id: "c".into(),
            kind: MessageKind::Text,
            body: "\"hi\"".into(),
            ts: 4,
        };
        let back: MessageRecord = decode(&encode(&message).unwrap()).unwrap();
        assert_eq!(back, message);
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = encode(&UserId(5)).unwrap();
        bytes.push(0);
        assert!(matches!(decode::<UserId>(&bytes), Err(CodecError::Trailing(1))));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode::<NodeMessage>(&bytes);
            let _ = decode::<MessageRecord>(&bytes);
        }
    }
}
