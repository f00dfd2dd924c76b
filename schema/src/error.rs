//! Error codes a client sees, and the WebSocket close codes troupe uses.
//!
//! The codes are part of the protocol: they never change meaning, and new ones are only
//! added. `PROTOCOL.md` documents each one (a test checks that it does).

use serde::{Deserialize, Serialize};
use std::fmt;

/// A stable, machine-readable reason why a request failed.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not a JSON object.
    MalformedFrame,
    /// The frame's `op` names no operation.
    UnknownOp,
    /// A field is missing, has the wrong type, or is out of range.
    InvalidField,
    /// A binary frame arrived; the protocol is text frames of JSON.
    UnsupportedFrame,
    /// The connection has not authenticated and the operation needs it.
    Unauthenticated,
    /// `auth` or `login` on a connection that is already authenticated.
    AlreadyAuthenticated,
    /// `login` with an unknown username or a wrong password (deliberately not told apart).
    InvalidCredentials,
    /// `auth` with a token that is unknown, expired or revoked.
    InvalidToken,
    /// `register` with a username somebody already has.
    UsernameTaken,
    /// The object does not exist, or the caller may not know that it exists.
    NotFound,
    /// The caller is a member but lacks the role the operation needs.
    Forbidden,
    /// The group has reached its member cap.
    GroupFull,
    /// The user is already a member of the group.
    AlreadyMember,
    /// The owner tried to leave; ownership must be transferred first (or the group dissolved).
    OwnerCannotLeave,
    /// A text message body is longer than the node's limit.
    TextTooLong,
    /// The message type is reserved for a later version (none is today; the code keeps its
    /// meaning for when one is).
    UnsupportedType,
    /// A face-to-face session with this code exists near the caller, but more than 50 m
    /// from where it started.
    TooFar,
    /// The face-to-face session or the media URL has ended.
    Expired,
    /// The wallet holds less than the red packet's total.
    InsufficientFunds,
    /// An upload is larger than its kind's limit.
    MediaTooLarge,
    /// An upload would take the user past their media quota.
    QuotaExceeded,
    /// An upload's bytes are not the kind the client said (a PDF sent as an image).
    KindMismatch,
    /// An upload cannot be accepted as it is: an image whose size cannot be read, or that
    /// declares more pixels than the node decodes.
    InvalidMedia,
    /// The node cannot do this as it is configured (presigned uploads on a folder store).
    NotSupported,
    /// The user has as many connections open on this node as the node allows.
    TooManyConnections,
    /// Too many requests of this kind too fast; the error says when to try again.
    RateLimited,
    /// The node holds as many sends as it admits (more load than it can commit); the
    /// error says when to try again.
    Overloaded,
    /// A transient failure (storage, a restarting actor); retrying the same request is safe.
    Unavailable,
    /// A bug in troupe. The request may or may not have taken effect.
    Internal,
}

impl ErrorCode {
    /// Every code, for documentation checks and exhaustive tests.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::MalformedFrame,
        ErrorCode::UnknownOp,
        ErrorCode::InvalidField,
        ErrorCode::UnsupportedFrame,
        ErrorCode::Unauthenticated,
        ErrorCode::AlreadyAuthenticated,
        ErrorCode::InvalidCredentials,
        ErrorCode::InvalidToken,
        ErrorCode::UsernameTaken,
        ErrorCode::NotFound,
        ErrorCode::Forbidden,
        ErrorCode::GroupFull,
        ErrorCode::AlreadyMember,
        ErrorCode::OwnerCannotLeave,
        ErrorCode::TextTooLong,
        ErrorCode::UnsupportedType,
        ErrorCode::TooFar,
        ErrorCode::Expired,
        ErrorCode::InsufficientFunds,
        ErrorCode::MediaTooLarge,
        ErrorCode::QuotaExceeded,
        ErrorCode::KindMismatch,
        ErrorCode::InvalidMedia,
        ErrorCode::NotSupported,
        ErrorCode::TooManyConnections,
        ErrorCode::RateLimited,
        ErrorCode::Overloaded,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedFrame => "malformed_frame",
            ErrorCode::UnknownOp => "unknown_op",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::UnsupportedFrame => "unsupported_frame",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::AlreadyAuthenticated => "already_authenticated",
            ErrorCode::InvalidCredentials => "invalid_credentials",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::UsernameTaken => "username_taken",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::GroupFull => "group_full",
            ErrorCode::AlreadyMember => "already_member",
            ErrorCode::OwnerCannotLeave => "owner_cannot_leave",
            ErrorCode::TextTooLong => "text_too_long",
            ErrorCode::UnsupportedType => "unsupported_type",
            ErrorCode::TooFar => "too_far",
            ErrorCode::Expired => "expired",
            ErrorCode::InsufficientFunds => "insufficient_funds",
            ErrorCode::MediaTooLarge => "media_too_large",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::KindMismatch => "kind_mismatch",
            ErrorCode::InvalidMedia => "invalid_media",
            ErrorCode::NotSupported => "not_supported",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the node closed a WebSocket. The numeric code follows RFC 6455; the close frame's
/// reason text is [`CloseReason::as_str`], so clients can tell the cases apart.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The node is shutting down (1001).
    GoingAway,
    /// No `auth`, `login` within the auth deadline (1008).
    AuthTimeout,
    /// The session token was revoked (`logout` elsewhere) (1008).
    SessionRevoked,
    /// The session token reached the end of its lifetime while connected (1008).
    SessionExpired,
    /// The client stopped reading and its outgoing queue overflowed (1008).
    SlowConsumer,
    /// Nothing arrived from the client within the heartbeat timeout (1001).
    HeartbeatTimeout,
    /// A frame exceeded the node's frame size limit (1009).
    FrameTooLarge,
    /// The client broke the WebSocket protocol itself (1002).
    ProtocolError,
}

impl CloseReason {
    /// Every reason, for documentation checks.
    pub const ALL: &'static [CloseReason] = &[
        CloseReason::GoingAway,
        CloseReason::AuthTimeout,
        CloseReason::SessionRevoked,
        CloseReason::SessionExpired,
        CloseReason::SlowConsumer,
        CloseReason::HeartbeatTimeout,
        CloseReason::FrameTooLarge,
        CloseReason::ProtocolError,
    ];

    /// The RFC 6455 status code sent in the close frame.
    pub fn code(self) -> u16 {
        match self {
            CloseReason::GoingAway | CloseReason::HeartbeatTimeout => 1001,
            CloseReason::ProtocolError => 1002,
            CloseReason::AuthTimeout
            | CloseReason::SessionRevoked
            | CloseReason::SessionExpired
            | CloseReason::SlowConsumer => 1008,
            CloseReason::FrameTooLarge => 1009,
        }
    }

    /// The reason text sent in the close frame.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::GoingAway => "going_away",
            CloseReason::AuthTimeout => "auth_timeout",
            CloseReason::SessionRevoked => "session_revoked",
            CloseReason::SessionExpired => "session_expired",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::HeartbeatTimeout => "heartbeat_timeout",
            CloseReason::FrameTooLarge => "frame_too_large",
            CloseReason::ProtocolError => "protocol_error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_match_serde() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    #[test]
    fn protocol_doc_lists_every_code_and_close_reason() {
        let doc = include_str!("../PROTOCOL.md");
        for code in ErrorCode::ALL {
            assert!(doc.contains(&format!("`{}`", code.as_str())), "PROTOCOL.md misses {code}");
        }
        for reason in CloseReason::ALL {
            assert!(
                doc.contains(&format!("`{}`", reason.as_str())),
                "PROTOCOL.md misses close reason {}",
                reason.as_str()
            );
        }
    }
}
