//! The troupe node: the process that wires actors to sockets and storage. It holds no
//! business rule (those live in `actors`).
//!
//! * [`config`]: the typed configuration and its layers.
//! * [`server`]: starts everything on pre-bound listeners.
//! * [`http`] and [`gateway`]: the HTTP routes and the WebSocket connections.
//! * [`store`]: storage backends.
//! * [`media`]: media bytes in object storage (opendal), and the upload endpoint.
//! * [`cache`]: the Redis cache.
//! * [`metrics`]: `GET /metrics` for Prometheus.
//! * [`cluster`]: joining other nodes with `ractor_cluster`; who is up; routing.
//! * [`console`]: the debug console and its client.
//! * [`web`]: the web client's files, served at `/`.

pub mod cache;
pub mod cluster;
pub mod config;
pub mod console;
pub mod gateway;
pub mod http;
pub mod media;
pub mod metrics;
pub mod server;
pub mod store;
pub mod web;
