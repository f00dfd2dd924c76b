//! The node's HTTP surface. One port serves the WebSocket upgrade and plain HTTP.

use crate::gateway::{self, Gateway};
use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

/// Every route the node serves.
pub fn router(gateway: Gateway) -> Router {
    Router::new()
        .route(gateway::PATH, get(gateway::upgrade))
        .route("/health", get(health))
        .route("/", get(index))
        .with_state(gateway)
}

/// Liveness for load balancers: 200 while the process serves.
async fn health() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], "{\"status\":\"ok\"}\n")
}

async fn index() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        concat!("troupe ", env!("CARGO_PKG_VERSION"), ": connect a WebSocket client to /ws (see PROTOCOL.md)\n"),
    )
}
