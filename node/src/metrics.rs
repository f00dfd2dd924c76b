//! `GET /metrics`: the node's numbers in Prometheus' text format, for a scraper. Counters and
//! histograms come from [`actors::metrics::Metrics`]; gauges are read at scrape time from
//! what the node already tracks, so an unscraped node pays nothing for them.

use crate::console::process;
use actors::System;
use actors::metrics::{Histogram, LATENCY_BUCKETS};
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use std::fmt::Write;
use std::sync::Arc;

/// `GET /metrics`.
pub async fn scrape(State(system): State<Arc<System>>) -> impl IntoResponse {
    // A store that cannot say (or fails to) leaves the sample out rather than failing the scrape.
    let disk = system.store.disk_usage_bytes().await.ok().flatten();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], render(&system, disk))
}

/// The exposition text. Metric names are `troupe_` + the concept's name in the code.
pub fn render(system: &System, store_disk_bytes: Option<u64>) -> String {
    let metrics = &system.metrics;
    let mut out = String::new();
    let (online_users, connections) = system.fanout.counts();
    let process = process::current();
    single(&mut out, "gauge", "troupe_connections", "Authenticated WebSocket connections on this node.", connections);
    single(&mut out, "gauge", "troupe_online_users", "Users with at least one connection on this node.", online_users);
    header_line(&mut out, "troupe_actors", "gauge", "Live actors on this node, by kind.");
    for (kind, count) in
        [("group", system.groups.len()), ("user", system.users.len()), ("face_to_face_code", system.faces.len())]
    {
        let _ = writeln!(out, "troupe_actors{{kind=\"{kind}\"}} {count}");
    }
    single(
        &mut out,
        "counter",
        "troupe_messages_stored_total",
        "Messages made durable (duplicates not counted).",
        metrics.messages_stored.get(),
    );
    single(
        &mut out,
        "counter",
        "troupe_deliveries_total",
        "Events handed to this node's connections.",
        system.fanout.handed(),
    );
    single(
        &mut out,
        "counter",
        "troupe_messages_deleted_total",
        "Messages deleted by retention (by this node's sweeper).",
        metrics.messages_deleted.get(),
    );
    histogram(
        &mut out,
        "troupe_fanout_latency_seconds",
        "From a send reaching its group actor to its event handed to this node's connections.",
        &metrics.fanout_latency,
    );
    histogram(
        &mut out,
        "troupe_store_commit_latency_seconds",
        "One durable append of a group's batch.",
        &metrics.store_commit_latency,
    );
    header_line(&mut out, "troupe_errors_total", "counter", "Error replies to clients, by code.");
    for (code, count) in metrics.errors() {
        let _ = writeln!(out, "troupe_errors_total{{code=\"{code}\"}} {count}");
    }
    if let Some(bytes) = store_disk_bytes {
        single(
            &mut out,
            "gauge",
            "troupe_store_disk_bytes",
            "Bytes the message store takes on disk (embedded file or PostgreSQL database).",
            bytes,
        );
    }
    single(
        &mut out,
        "gauge",
        "troupe_sends_pending",
        "Sends held by this node's group actors, not yet answered (admission control).",
        system.admission.pending() as u64,
    );
    single(
        &mut out,
        "counter",
        "troupe_sends_refused_overloaded_total",
        "Sends refused with `overloaded` by admission control.",
        system.admission.refused(),
    );
    header_line(
        &mut out,
        "troupe_connections_closed_total",
        "counter",
        "Connections the node closed, by close reason.",
    );
    for (reason, count) in metrics.closes() {
        let _ = writeln!(out, "troupe_connections_closed_total{{reason=\"{}\"}} {count}", reason.as_str());
    }
    single(
        &mut out,
        "gauge",
        "troupe_process_resident_memory_bytes",
        "Resident memory of the node process.",
        process.rss_bytes,
    );
    single(
        &mut out,
        "counter",
        "troupe_process_cpu_seconds_total",
        "CPU time of the node process.",
        process.cpu_seconds,
    );
    single(
        &mut out,
        "gauge",
        "troupe_process_open_fds",
        "Open file descriptors (sockets included).",
        process.open_files,
    );
    out
}

fn header_line(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// One sample with its HELP and TYPE lines.
fn single(out: &mut String, kind: &str, name: &str, help: &str, value: impl std::fmt::Display) {
    header_line(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

fn histogram(out: &mut String, name: &str, help: &str, histogram: &Histogram) {
    header_line(out, name, "histogram", help);
    let (cumulative, count, sum) = histogram.snapshot();
    for (bound, total) in LATENCY_BUCKETS.iter().zip(cumulative) {
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {total}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {sum}\n{name}_count {count}");
}
