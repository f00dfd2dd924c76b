//! Errors of the actor layer. Each maps to one stable wire code in [`ApiError::code`], the
//! one exhaustive match between behaviour and protocol.

use crate::store::StoreError;
use schema::ErrorCode;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field's value is out of range (lengths, limits, ...).
    #[error("{0}")]
    InvalidField(String),
    /// The operation needs an authenticated connection.
    #[error("authenticate first (auth or login)")]
    Unauthenticated,
    /// The connection is authenticated already.
    #[error("this connection is already authenticated")]
    AlreadyAuthenticated,
    /// Wrong username or password.
    #[error("wrong username or password")]
    InvalidCredentials,
    /// Unknown, expired or revoked token.
    #[error("the token is unknown, expired or revoked")]
    InvalidToken,
    /// The username is taken.
    #[error("the username is taken")]
    UsernameTaken,
    /// Nothing the caller may see by that id.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The caller lacks the role.
    #[error("{0}")]
    Forbidden(&'static str),
    /// The group is at its cap.
    #[error("the group is full")]
    GroupFull,
    /// Already a member.
    #[error("already a member")]
    AlreadyMember,
    /// The owner must transfer ownership before leaving.
    #[error("the owner cannot leave; transfer ownership or dissolve the group")]
    OwnerCannotLeave,
    /// The text is over the node's limit.
    #[error("text is {len} bytes; the limit is {limit}")]
    TextTooLong {
        /// The body's length.
        len: usize,
        /// The node's limit.
        limit: usize,
    },
    /// A face-to-face session with the code is near, but not within 50 m of its start.
    #[error("the face-to-face session with this code started more than 50 m from here")]
    TooFar,
    /// The thing has expired (a face-to-face session, a red packet).
    #[error("the {0} has expired")]
    Expired(&'static str),
    /// The wallet's balance is below what the operation takes.
    #[error("the wallet holds {balance} cents; {needed} are needed")]
    InsufficientFunds {
        /// The balance now.
        balance: i64,
        /// What the operation needs.
        needed: i64,
    },
    /// Too many `what` requests too fast; try again after `retry_after`.
    #[error("too many {what} requests; retry in {} ms", retry_after.as_millis())]
    RateLimited {
        /// Which limit (`send`, `join`, `login`).
        what: &'static str,
        /// How long until the next request of this kind can pass.
        retry_after: std::time::Duration,
    },
    /// The node (or the group) holds as many sends as it admits; try again after
    /// `retry_after` (see [`crate::admission`]).
    #[error("{what} is overloaded; retry in {} ms", retry_after.as_millis())]
    Overloaded {
        /// What is full: `the node` or `its group`.
        what: &'static str,
        /// How long the client should wait.
        retry_after: std::time::Duration,
    },
    /// The user has `limit` connections open on this node already.
    #[error("{limit} connections are open for this user on this node; close one first")]
    TooManyConnections {
        /// The node's cap (`actors.max_connections_per_user`).
        limit: usize,
    },
    /// The group actor that took the request has been deposed (another claimed the group);
    /// the retry reaches the new one.
    #[error("temporarily unavailable: the group moved; retry")]
    GroupMoved,
    /// A transient failure; safe to retry.
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
    /// A bug.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The stable wire code.
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::InvalidField(_) => ErrorCode::InvalidField,
            ApiError::Unauthenticated => ErrorCode::Unauthenticated,
            ApiError::AlreadyAuthenticated => ErrorCode::AlreadyAuthenticated,
            ApiError::InvalidCredentials => ErrorCode::InvalidCredentials,
            ApiError::InvalidToken => ErrorCode::InvalidToken,
            ApiError::UsernameTaken => ErrorCode::UsernameTaken,
            ApiError::NotFound(_) => ErrorCode::NotFound,
            ApiError::Forbidden(_) => ErrorCode::Forbidden,
            ApiError::GroupFull => ErrorCode::GroupFull,
            ApiError::AlreadyMember => ErrorCode::AlreadyMember,
            ApiError::OwnerCannotLeave => ErrorCode::OwnerCannotLeave,
            ApiError::TextTooLong { .. } => ErrorCode::TextTooLong,
            ApiError::TooFar => ErrorCode::TooFar,
            ApiError::Expired(_) => ErrorCode::Expired,
            ApiError::InsufficientFunds { .. } => ErrorCode::InsufficientFunds,
            ApiError::TooManyConnections { .. } => ErrorCode::TooManyConnections,
            ApiError::RateLimited { .. } => ErrorCode::RateLimited,
            ApiError::Overloaded { .. } => ErrorCode::Overloaded,
            ApiError::Unavailable(_) | ApiError::GroupMoved => ErrorCode::Unavailable,
            ApiError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// How long the client should wait before retrying, for the errors that say
    /// (`rate_limited`, `overloaded`): rounded up, so a retry at that very millisecond passes.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            ApiError::RateLimited { retry_after, .. } | ApiError::Overloaded { retry_after, .. } => {
                Some(retry_after.as_millis() as u64 + 1)
            }
            _ => None,
        }
    }

    /// The one answer for an unknown group and a group the caller is not in.
    pub fn group_not_found() -> Self {
        ApiError::NotFound("group")
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) | StoreError::Conflict(m) => ApiError::Unavailable(m),
            StoreError::Corrupt(m) => ApiError::Internal(m),
            StoreError::Fenced { .. } => ApiError::GroupMoved,
        }
    }
}
