//! The node's HTTP surface. One port serves the WebSocket upgrade and plain HTTP.

use crate::gateway::{self, Gateway};
use crate::media::{self, Media};
use crate::web;
use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use std::sync::Arc;

/// Every route the node serves.
pub fn router(gateway: Gateway, media: Arc<Media>) -> Router {
    let uploads = Router::new()
        .route("/media", post(media::upload))
        .route("/media/presign", post(media::presign))
        .route("/media/{id}/complete", post(media::complete))
        .route("/media/{id}", get(media::download))
        .route("/media/{id}/thumbnail", get(media::download))
        .with_state(media);
    Router::new()
        .route(gateway::PATH, get(gateway::upgrade))
        .route("/health", get(health))
        .route("/metrics", get(crate::metrics::scrape).with_state(gateway.system.clone()))
        .route("/", get(web::index))
        .route("/app.js", get(web::script))
        .route("/style.css", get(web::stylesheet))
        .with_state(gateway)
        .merge(uploads)
}

/// Liveness for load balancers: 200 while the process serves.
async fn health() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], "{\"status\":\"ok\"}\n")
}
