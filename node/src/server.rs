//! Running a node: opens the store, starts the actors, and serves HTTP, WebSocket and the
//! console until the shutdown future resolves.
//!
//! Like mini-redis, [`run`] takes listeners that are already bound, so tests bind
//! `127.0.0.1:0` and learn the ports before the node starts.

use crate::config::Config;
use crate::gateway::{self, Gateway};
use crate::{console, http};
use actors::System;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Why a node could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The store could not open.
    #[error(transparent)]
    Store(#[from] crate::store::OpenError),
    /// The actor system could not start.
    #[error(transparent)]
    Start(#[from] actors::system::StartError),
    /// The cache is misconfigured.
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
    /// The node could not join its cluster.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    /// Media storage is misconfigured.
    #[error(transparent)]
    Media(#[from] crate::media::MediaOpenError),
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Http(#[from] std::io::Error),
}

/// Serves until `shutdown` resolves, then closes every connection (1001) and stops the
/// actors. `ready` is called once the store is open and the cluster listener is bound, so
/// that whoever waits for it (scripts, tests) never sees a node that will still fail to
/// start.
pub async fn run(
    config: Config,
    listener: TcpListener,
    console_listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(),
) -> Result<(), ServeError> {
    let store = crate::store::open(&config.store, &config.data_dir).await?;
    let groups = GroupRuntime::start()?;
    let system = System::start(config.actors.clone(), store, Some(groups.handle.clone())).await?;
    if !config.cache.redis_url.is_empty() {
        let cache = crate::cache::RedisCache::new(
            &config.cache.redis_url,
            &config.cache.prefix,
            std::time::Duration::from_secs(config.cache.ttl_secs),
        )?;
        system.use_cache(cache);
    }
    let cluster = match config.cluster.listen {
        Some(listen) => {
            if config.store.backend == crate::config::StoreBackend::Embedded {
                return Err(crate::cluster::ClusterError::EmbeddedStore.into());
            }
            Some(Arc::new(crate::cluster::start(&config.cluster, listen, system.clone()).await?))
        }
        None => None,
    };
    let gateway = Gateway {
        system: system.clone(),
        config: Arc::new(config.gateway.clone()),
        origins: Arc::new(crate::gateway::origin::OriginPolicy::parse(&config.gateway.allowed_origins)),
    };
    let console_task = tokio::spawn(console::serve(console_listener, system.clone(), cluster.clone()));
    let heartbeats = gateway::spawn_heartbeats(system.clone(), config.gateway.heartbeat_interval);
    system.use_media_secret(crate::media::Media::url_secret(&config.media, &config.cluster.secret));
    let media = crate::media::Media::open(&config.media, &config.data_dir, system.clone())?;
    let unsent_sweeper = crate::media::spawn_unsent_sweeper(media.clone());
    let router = http::router(gateway, media);
    ready();
    let closing = system.clone();
    let listener = gateway::socket::SocketListener::new(listener, config.gateway.socket_send_buffer_bytes);
    let served = axum::serve(listener, router.into_make_service_with_connect_info::<gateway::socket::Accepted>())
        .with_graceful_shutdown(async move {
            shutdown.await;
            gateway::close_all(&closing);
        })
        .await;
    console_task.abort();
    unsent_sweeper.abort();
    heartbeats.abort();
    // Give connection tasks a moment to send their close frames.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    system.shutdown().await;
    if let Some(cluster) = cluster {
        cluster.stop();
    }
    groups.stop();
    Ok(served?)
}

/// A thread with its own single-threaded runtime for group actors. Their mailboxes then
/// never wait in the same run queue as the connection tasks that every fan-out wakes by the
/// hundred, so a commit's completion is handled (and the next batch started) promptly.
struct GroupRuntime {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GroupRuntime {
    fn start() -> std::io::Result<GroupRuntime> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name("troupe-groups".into()).spawn(move || {
            runtime.block_on(async {
                let _ = stopped.await;
            });
        })?;
        Ok(GroupRuntime { handle, stop: Some(stop), thread: Some(thread) })
    }

    fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Re-exported so the binary can name the WebSocket route in its banner.
pub const WS_PATH: &str = gateway::PATH;
