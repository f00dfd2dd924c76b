//! Connections that come back: requests that tell a lost connection from a refusal, and
//! sessions that reconnect to wherever the node is now.

use crate::common::{Client, ClientError};
use crate::run::Run;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// How long a request may go unanswered before its connection counts as lost.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client keeps trying to reconnect before the run fails.
const RECONNECT_DEADLINE: Duration = Duration::from_secs(60);
/// The pause between two connection attempts.
const RECONNECT_PAUSE: Duration = Duration::from_millis(50);

/// Why a request got no result.
pub(crate) enum Failure {
    /// The connection is gone or silent: reconnect and ask again.
    Lost,
    /// `unavailable` or `rate_limited`: ask again after the pause.
    Transient(Duration),
    /// Any other error: the request was refused.
    Refused(ClientError),
}

pub(crate) type Reply = oneshot::Receiver<Result<Value, ClientError>>;

/// Sends a request without waiting for its reply.
pub(crate) async fn start(client: &Client, op: &str, fields: Value) -> Result<Reply, Failure> {
    let reply = client.start_request(op, fields).await.map_err(|_| Failure::Lost)?;
    // A request written just after the read side saw the socket close would wait for
    // nothing: the client forgets pending requests once, when it sees the close.
    if client.closed(Duration::ZERO).await.is_some() {
        return Err(Failure::Lost);
    }
    Ok(reply)
}

/// Waits for a reply.
pub(crate) async fn wait(run: &Run, reply: Reply) -> Result<Value, Failure> {
    match tokio::time::timeout(REQUEST_TIMEOUT, reply).await {
        Err(_) => {
            run.counters.timeouts.fetch_add(1, Relaxed);
            Err(Failure::Lost)
        }
        Ok(Err(_)) => Err(Failure::Lost),
        Ok(Ok(Ok(result))) => Ok(result),
        Ok(Ok(Err(error))) => Err(match &error {
            ClientError::Server { code, retry_after_ms, .. } if code == "rate_limited" => {
                Failure::Transient(Duration::from_millis(retry_after_ms.unwrap_or(100)))
            }
            ClientError::Server { code, .. } if code == "unavailable" => Failure::Transient(Duration::from_millis(50)),
            ClientError::Server { .. } => Failure::Refused(error),
            _ => Failure::Lost,
        }),
    }
}

/// Closes a connection, which may be dead already.
pub(crate) async fn hang_up(client: &Client) {
    let _ = tokio::time::timeout(Duration::from_secs(1), client.close()).await;
}

pub(crate) async fn call(run: &Run, client: &Client, op: &str, fields: Value) -> Result<Value, Failure> {
    let reply = start(client, op, fields).await?;
    wait(run, reply).await
}

/// A new connection to wherever the node is now, authenticated with the token.
pub(crate) async fn connect(run: &Run, token: &str) -> Client {
    let deadline = Instant::now() + RECONNECT_DEADLINE;
    loop {
        let url = run.endpoint.borrow().clone();
        if let Ok(Ok(client)) = tokio::time::timeout(Duration::from_secs(5), Client::connect(&url)).await {
            match call(run, &client, "auth", json!({ "token": token })).await {
                Ok(_) => {
                    run.counters.connections.fetch_add(1, Relaxed);
                    return client;
                }
                Err(Failure::Refused(error)) if error.code() != Some("too_many_connections") => {
                    panic!("auth with a session token failed after a restart: {error}")
                }
                Err(_) => hang_up(&client).await,
            }
        }
        assert!(Instant::now() < deadline, "could not reconnect to the node for {RECONNECT_DEADLINE:?}");
        tokio::time::sleep(RECONNECT_PAUSE).await;
    }
}

/// A user's connection that reconnects whenever it is lost and asks again what is
/// transient: for requests that are safe to repeat.
pub(crate) struct Session {
    run: Arc<Run>,
    token: String,
    pub(crate) client: Option<Client>,
}

impl Session {
    pub(crate) fn new(run: Arc<Run>, token: String) -> Session {
        Session { run, token, client: None }
    }

    /// The result, or the refusal, and how many times the request was sent.
    pub(crate) async fn request(&mut self, op: &str, fields: &Value) -> (Result<Value, ClientError>, u32) {
        let mut attempts = 0;
        loop {
            if self.client.is_none() {
                self.client = Some(connect(&self.run, &self.token).await);
            }
            let client = self.client.as_ref().expect("connected");
            attempts += 1;
            match call(&self.run, client, op, fields.clone()).await {
                Ok(result) => return (Ok(result), attempts),
                Err(Failure::Refused(error)) => return (Err(error), attempts),
                Err(Failure::Transient(pause)) => {
                    self.run.counters.transient_retries.fetch_add(1, Relaxed);
                    tokio::time::sleep(pause).await;
                }
                Err(Failure::Lost) => {
                    if let Some(client) = self.client.take() {
                        hang_up(&client).await;
                    }
                }
            }
        }
    }

    /// Like [`Session::request`], for a request that must not be refused.
    pub(crate) async fn must(&mut self, op: &str, fields: &Value) -> Value {
        match self.request(op, fields).await.0 {
            Ok(result) => result,
            Err(error) => panic!("{op} {fields} refused: {error}"),
        }
    }
}
