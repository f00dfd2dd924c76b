//! The gateway: the WebSocket endpoint at `/ws`.
//!
//! [`upgrade`] checks the HTTP upgrade request and hands the socket to [`conn::run`], one
//! task per connection, which reads frames into the connection's
//! [`Session`](actors::session::Session) and writes back what its outbox could not write
//! itself. The socket ([`socket::Socket`]) is shared by the task and the outbox.

pub mod conn;
pub mod origin;
pub mod socket;

use crate::config::GatewayConfig;
use actors::System;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use schema::error::CloseReason;
use std::sync::Arc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

/// The WebSocket endpoint's path.
pub const PATH: &str = "/ws";

/// What the WebSocket endpoint needs.
#[derive(Clone)]
pub struct Gateway {
    /// The node's actors.
    pub system: Arc<System>,
    /// Limits and timings.
    pub config: Arc<GatewayConfig>,
    /// Which pages may connect (from `config.allowed_origins`).
    pub origins: Arc<origin::OriginPolicy>,
}

impl Gateway {
    fn websocket_config(&self) -> WebSocketConfig {
        let max = self.config.max_frame_bytes;
        WebSocketConfig::default()
            .read_buffer_size(self.config.read_buffer_bytes)
            .write_buffer_size(0)
            .max_write_buffer_size(usize::MAX)
            .max_message_size(Some(max))
            .max_frame_size(Some(max))
    }
}

/// `GET /ws`: validates the upgrade and starts the connection's task.
pub async fn upgrade(State(gateway): State<Gateway>, mut request: Request) -> Response {
    let key = match check_upgrade(request.headers()) {
        Ok(key) => key,
        Err(response) => return *response,
    };
    if !gateway.origins.allows(request.headers()) {
        let origin = request.headers().get(header::ORIGIN).and_then(|o| o.to_str().ok()).unwrap_or("?");
        tracing::info!(origin, "websocket refused: origin not allowed");
        return (StatusCode::FORBIDDEN, "this page's origin may not connect (gateway.allowed_origins)\n")
            .into_response();
    }
    // Every connection the node accepts carries its socket (see `socket::SocketListener`).
    let Some(ConnectInfo(socket::Accepted(socket))) =
        request.extensions().get::<ConnectInfo<socket::Accepted>>().cloned()
    else {
        tracing::error!("websocket refused: the connection came without its socket");
        return (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response();
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(%error, "websocket upgrade did not complete");
                return;
            }
        };
        let config = gateway.websocket_config();
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
        let session = gateway.system.open_session();
        session.outbox().attach(socket, gateway.config.max_events_per_frame);
        // A task of its own, so the connection's long-lived task holds only what serving
        // needs, not the handshake's state.
        tokio::spawn(conn::run(ws, session, gateway.config.clone(), gateway.system.metrics.clone()));
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

/// Asks every authenticated connection, once per `interval`, to check that its client is
/// alive and to ping it: one task for the node instead of a timer per connection.
/// (Unauthenticated connections have their auth deadline.)
pub fn spawn_heartbeats(system: Arc<System>, interval: std::time::Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            system.fanout.for_each_connection(|outbox| outbox.heartbeat());
        }
    })
}

/// Closes every authenticated connection with `going_away` (node shutdown).
pub fn close_all(system: &System) {
    system.fanout.for_each_connection(|outbox| outbox.close(CloseReason::GoingAway));
}

fn check_upgrade(headers: &HeaderMap) -> Result<String, Box<Response>> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|v| v.trim().eq_ignore_ascii_case(token))
    };
    if !has_token(header::UPGRADE, "websocket") || !has_token(header::CONNECTION, "upgrade") {
        return Err(Box::new((StatusCode::UPGRADE_REQUIRED, "this endpoint speaks WebSocket only\n").into_response()));
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).and_then(|v| v.to_str().ok()) != Some("13") {
        let mut response = (StatusCode::BAD_REQUEST, "unsupported WebSocket version\n").into_response();
        response.headers_mut().insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return Err(Box::new(response));
    }
    match headers.get(header::SEC_WEBSOCKET_KEY).and_then(|v| v.to_str().ok()) {
        Some(key) if !key.is_empty() => Ok(key.to_owned()),
        _ => Err(Box::new((StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n").into_response())),
    }
}
