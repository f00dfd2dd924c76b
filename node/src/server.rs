//! Running a node: opens the store, starts the actors, and serves HTTP, WebSocket and the
//! console until the shutdown future resolves.
//!
//! Like mini-redis, [`run`] takes listeners that are already bound, so tests bind
//! `127.0.0.1:0` and learn the ports before the node starts.

use crate::config::Config;
use crate::gateway::{self, Gateway};
use crate::store::embedded::EmbeddedStore;
use crate::{console, http};
use actors::System;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Why a node could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The store could not open.
    #[error(transparent)]
    Store(#[from] crate::store::embedded::OpenError),
    /// The actor system could not start.
    #[error(transparent)]
    Start(#[from] actors::system::StartError),
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Http(#[from] std::io::Error),
}

/// Serves until `shutdown` resolves, then closes every connection (1001) and stops the
/// actors.
pub async fn run(
    config: Config,
    listener: TcpListener,
    console_listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let store = EmbeddedStore::open(&config.data_dir)?;
    let system = System::start(config.actors.clone(), store).await?;
    let (stop, stopped) = watch::channel(false);
    let gateway = Gateway { system: system.clone(), config: Arc::new(config.gateway.clone()), shutdown: stopped };
    let console_task = tokio::spawn(console::serve(console_listener, system.clone()));
    let router = http::router(gateway);
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stop.send(true);
        })
        .await;
    console_task.abort();
    // Give connection tasks a moment to send their close frames.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    system.shutdown().await;
    Ok(served?)
}

/// Re-exported so the binary can name the WebSocket route in its banner.
pub const WS_PATH: &str = gateway::PATH;
