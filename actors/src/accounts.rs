//! Accounts: registration, password checks and session tokens.
//!
//! Passwords are hashed with argon2id on tokio's blocking pool (never on the async
//! threads), at most `max_concurrent_hashes` at a time because each hash holds its memory
//! cost. Tokens are 32 random bytes in hex; the store keeps only their SHA-256, so a
//! database dump holds no usable token. A token is revoked by deleting its session.

use crate::config::PasswordCost;
use crate::error::ApiError;
use crate::store::{Store, TokenHash};
use crate::{now_ms, random_id};
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use schema::UserId;
use schema::records::{CredentialRecord, SessionRecord, UserRecord};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Registration and login for one node.
pub struct Accounts {
    store: Arc<dyn Store>,
    cost: PasswordCost,
    hashing: Semaphore,
    session_ttl: Duration,
    /// A hash of a random password, verified against when the username is unknown so that
    /// a login for a missing user takes as long as one with a wrong password.
    decoy_hash: String,
}

/// A signed-in user.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// The user's record.
    pub user: UserRecord,
    /// Their session's token hash (to revoke it, or to find the sockets that use it).
    pub token_hash: TokenHash,
    /// When the session ends, in milliseconds since the Unix epoch: its sockets close then.
    pub expires_at: u64,
}

impl Accounts {
    /// Accounts over a store.
    pub fn new(store: Arc<dyn Store>, cost: PasswordCost, max_concurrent_hashes: usize, session_ttl: Duration) -> Self {
        let decoy_password = format!("{:x}", rand::random::<u128>());
        let decoy_hash = hash_password(cost, &decoy_password).unwrap_or_default();
        Accounts { store, cost, hashing: Semaphore::new(max_concurrent_hashes.max(1)), session_ttl, decoy_hash }
    }

    /// Creates an account.
    pub async fn register(&self, username: &str, password: &str, nickname: Option<&str>) -> Result<UserId, ApiError> {
        validate_username(username)?;
        validate_password(password)?;
        let nickname = nickname.unwrap_or(username);
        validate_nickname(nickname)?;
        // Cheap early answer; the conditional claim below is what actually decides.
        if self.store.credential(username).await?.is_some() {
            return Err(ApiError::UsernameTaken);
        }
        let password_hash = self.hash(password.to_owned()).await?;
        let user = loop {
            let user = UserRecord {
                id: UserId(random_id()),
                username: username.to_owned(),
                nickname: nickname.to_owned(),
                avatar_url: String::new(),
                created_at: now_ms(),
            };
            if self.store.insert_user(&user).await? {
                break user;
            }
        };
        let credential = CredentialRecord { user: user.id, password_hash };
        if !self.store.claim_username(username, &credential).await? {
            // Another registration won the name between our check and our claim.
            self.store.delete_user(user.id).await?;
            return Err(ApiError::UsernameTaken);
        }
        Ok(user.id)
    }

    /// Checks a password and opens a session; returns the token (shown once) and the user.
    pub async fn login(&self, username: &str, password: &str) -> Result<(String, SignedIn), ApiError> {
        let credential = self.store.credential(username).await?;
        let (hash, user) = match &credential {
            Some(c) => (c.password_hash.clone(), Some(c.user)),
            None => (self.decoy_hash.clone(), None),
        };
        let matches = self.verify(password.to_owned(), hash).await?;
        let Some(user) = user.filter(|_| matches) else {
            return Err(ApiError::InvalidCredentials);
        };
        let Some(user) = self.store.user(user).await? else {
            return Err(ApiError::InvalidCredentials);
        };
        let token = new_token();
        let token_hash = token_hash(&token);
        let now = now_ms();
        let session = SessionRecord {
            user: user.id,
            created_at: now,
            expires_at: now.saturating_add(self.session_ttl.as_millis() as u64),
        };
        self.store.insert_session(&token_hash, &session).await?;
        Ok((token, SignedIn { user, token_hash, expires_at: session.expires_at }))
    }

    /// Resolves a token to its user, if the session is live.
    pub async fn authenticate(&self, token: &str) -> Result<SignedIn, ApiError> {
        if token.len() != 64 {
            return Err(ApiError::InvalidToken);
        }
        let token_hash = token_hash(token);
        let Some(session) = self.store.session(&token_hash).await? else {
            return Err(ApiError::InvalidToken);
        };
        if session.expires_at <= now_ms() {
            self.store.delete_session(&token_hash).await?;
            return Err(ApiError::InvalidToken);
        }
        let Some(user) = self.store.user(session.user).await? else {
            return Err(ApiError::InvalidToken);
        };
        Ok(SignedIn { user, token_hash, expires_at: session.expires_at })
    }

    /// Revokes a session.
    pub async fn logout(&self, token_hash: &TokenHash) -> Result<(), ApiError> {
        Ok(self.store.delete_session(token_hash).await?)
    }

    async fn hash(&self, password: String) -> Result<String, ApiError> {
        let _permit = self.hashing.acquire().await.map_err(|e| ApiError::Internal(e.to_string()))?;
        let cost = self.cost;
        tokio::task::spawn_blocking(move || hash_password(cost, &password))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
    }

    async fn verify(&self, password: String, hash: String) -> Result<bool, ApiError> {
        let _permit = self.hashing.acquire().await.map_err(|e| ApiError::Internal(e.to_string()))?;
        tokio::task::spawn_blocking(move || {
            Argon2::default().verify_password(password.as_bytes(), hash.as_str()).is_ok()
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))
    }
}

fn hash_password(cost: PasswordCost, password: &str) -> Result<String, ApiError> {
    let (memory, passes, lanes) = cost.params();
    let params = Params::new(memory, passes, lanes, None).map_err(|e| ApiError::Internal(e.to_string()))?;
    let hash = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes())
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(hash.to_string())
}

fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of a token, the key its session is stored under.
pub fn token_hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// Usernames: 3-32 bytes of `a-z 0-9 _ . -`, so they are safe in URLs and logs.
pub fn validate_username(username: &str) -> Result<(), ApiError> {
    let ok_len = (3..=32).contains(&username.len());
    let ok_chars = username.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
    if ok_len && ok_chars {
        Ok(())
    } else {
        Err(ApiError::InvalidField("username must be 3-32 characters of a-z, 0-9, _ . -".into()))
    }
}

/// Passwords: 8-128 bytes.
pub fn validate_password(password: &str) -> Result<(), ApiError> {
    if (8..=128).contains(&password.len()) {
        Ok(())
    } else {
        Err(ApiError::InvalidField("password must be 8-128 bytes".into()))
    }
}

/// Nicknames and group names: 1-64 characters, no control characters.
pub fn validate_display_name(what: &str, name: &str) -> Result<(), ApiError> {
    let chars = name.chars().count();
    if (1..=64).contains(&chars) && !name.chars().any(char::is_control) && !name.trim().is_empty() {
        Ok(())
    } else {
        Err(ApiError::InvalidField(format!("{what} must be 1-64 characters without control characters")))
    }
}

fn validate_nickname(nickname: &str) -> Result<(), ApiError> {
    validate_display_name("nickname", nickname)
}

/// Avatar URLs: empty, or http(s) and at most 512 bytes.
pub fn validate_avatar_url(url: &str) -> Result<(), ApiError> {
    let ok = url.is_empty()
        || (url.len() <= 512
            && (url.starts_with("https://") || url.starts_with("http://"))
            && !url.chars().any(|c| c.is_control() || c.is_whitespace()));
    if ok {
        Ok(())
    } else {
        Err(ApiError::InvalidField("avatar_url must be an http(s) URL of at most 512 bytes".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert!(validate_username("alice_01").is_ok());
        assert!(validate_username("al").is_err());
        assert!(validate_username("Alice").is_err());
        assert!(validate_username("a b c").is_err());
        assert!(validate_username(&"a".repeat(33)).is_err());
    }

    #[test]
    fn hashes_verify() {
        let hash = hash_password(PasswordCost::Test, "correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(Argon2::default().verify_password(b"correct horse", hash.as_str()).is_ok());
        assert!(Argon2::default().verify_password(b"wrong horse", hash.as_str()).is_err());
    }

    #[test]
    fn tokens_are_hex_and_distinct() {
        let a = new_token();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, new_token());
    }
}
