//! Counters and latency histograms an operator scrapes (`GET /metrics` on the node, in
//! Prometheus' text format). Plain atomics, updated where the work happens: a counter is one
//! relaxed add, a histogram observation a few, so measuring never slows the fan-out path
//! by more than the work it measures.

use schema::ErrorCode;
use schema::error::CloseReason;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A number that only goes up.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The total so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds of the latency buckets, in seconds: 0.5 ms to 10 s.
pub const LATENCY_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0];

/// A latency histogram with fixed buckets (cumulative when rendered).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        if let Some(bucket) = LATENCY_BUCKETS.iter().position(|&bound| seconds <= bound) {
            self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(duration.as_micros() as u64, Ordering::Relaxed);
    }

    /// (cumulative counts per bucket, count, sum in seconds).
    pub fn snapshot(&self) -> (Vec<u64>, u64, f64) {
        let mut running = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|bucket| {
                running += bucket.load(Ordering::Relaxed);
                running
            })
            .collect();
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        (cumulative, self.count.load(Ordering::Relaxed), sum)
    }
}

/// Everything the node counts.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Messages made durable (each `send` stored once, duplicates not counted).
    pub messages_stored: Counter,
    /// From a send's arrival at its group actor to its event handed to this node's
    /// connections: queueing, the durable write, and the fan-out.
    pub fanout_latency: Histogram,
    /// One durable append of a group's batch of messages.
    pub store_commit_latency: Histogram,
    /// Messages deleted by retention (by this node's sweeper).
    pub messages_deleted: Counter,
    /// Error replies, by code (indexed like [`ErrorCode::ALL`]).
    errors: [Counter; ERROR_CODES],
    /// Connections the node closed, by reason (indexed like [`CloseReason::ALL`]).
    closes: [Counter; CLOSE_REASONS],
}

const ERROR_CODES: usize = ErrorCode::ALL.len();
const CLOSE_REASONS: usize = CloseReason::ALL.len();

impl Metrics {
    /// Counts one error reply.
    pub fn error(&self, code: ErrorCode) {
        if let Some(index) = ErrorCode::ALL.iter().position(|&c| c == code) {
            self.errors[index].add(1);
        }
    }

    /// Counts one connection the node closed.
    pub fn close(&self, reason: CloseReason) {
        if let Some(index) = CloseReason::ALL.iter().position(|&r| r == reason) {
            self.closes[index].add(1);
        }
    }

    /// Connections closed so far, by reason (every reason, zeros included).
    pub fn closes(&self) -> impl Iterator<Item = (CloseReason, u64)> + '_ {
        CloseReason::ALL.iter().zip(&self.closes).map(|(&reason, counter)| (reason, counter.get()))
    }

    /// Error replies so far, by code (every code, zeros included).
    pub fn errors(&self) -> impl Iterator<Item = (ErrorCode, u64)> + '_ {
        ErrorCode::ALL.iter().zip(&self.errors).map(|(&code, counter)| (code, counter.get()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_errors_counted_by_code() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_micros(300));
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_secs(60));
        let (buckets, count, sum) = histogram.snapshot();
        assert_eq!((buckets[0], buckets[3], buckets[13], count), (1, 2, 2, 3), "60 s is past the last bound");
        assert!((sum - 60.0033).abs() < 1e-6);
        let metrics = Metrics::default();
        metrics.error(ErrorCode::NotFound);
        metrics.error(ErrorCode::NotFound);
        let not_found = metrics.errors().find(|(code, _)| *code == ErrorCode::NotFound).map(|(_, n)| n);
        assert_eq!(not_found, Some(2));
    }
}
