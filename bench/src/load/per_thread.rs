//! Tallies kept per bench thread, not per connection.
//!
//! A latency histogram from 1 µs to 10 minutes at 3 significant digits is an array of 170 KB
//! of counters. With one per connection and kind, a 2,000-member fan-out spread its records
//! over 6,000 such arrays, and nearly every record missed the cache (and the TLB): 8% of the
//! bench's CPU, and on a machine shared with the node, the node's cache too. Shared atomic
//! counters bumped by every connection cost a cache-line transfer between cores per frame as
//! well.
//!
//! So a connection task records into the tally of the thread it runs on (tokio may move a
//! task between threads; that only changes which tally a record lands in), and the tallies
//! are merged when they are read.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

/// More slots than the bench has threads, so two threads rarely share one; when they do,
/// they share a lock that is held for a few records.
const SLOTS: usize = 64;

static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SLOT: usize = NEXT_SLOT.fetch_add(1, Ordering::Relaxed) % SLOTS;
}

/// One `T` per thread that records, each on a cache line of its own.
pub struct PerThread<T> {
    slots: Box<[Padded<Mutex<T>>]>,
}

/// A value alone on its cache lines (128 bytes: adjacent-line prefetch pairs lines), for
/// a tally, or for per-connection progress that one thread writes and another polls.
#[repr(align(128))]
#[derive(Debug, Default)]
pub struct Padded<T>(pub T);

impl<T> PerThread<T> {
    /// A tally per slot, each made by `make`.
    pub fn new(make: impl Fn() -> T) -> Self {
        PerThread { slots: (0..SLOTS).map(|_| Padded(Mutex::new(make()))).collect() }
    }

    /// The calling thread's tally.
    pub fn local(&self) -> MutexGuard<'_, T> {
        let slot = SLOT.with(|slot| *slot);
        lock(&self.slots[slot].0)
    }

    /// Every slot's tally in turn, e.g. to merge them or add them up.
    pub fn for_each(&self, mut f: impl FnMut(&T)) {
        for slot in self.slots.iter() {
            f(&lock(&slot.0));
        }
    }
}

/// A tally is plain counts: one a panicking recorder left behind is still worth reading.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn records_from_many_threads_all_add_up() {
        let tallies = Arc::new(PerThread::new(|| 0u64));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let tallies = tallies.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        *tallies.local() += 1;
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("recorder");
        }
        let mut total = 0;
        tallies.for_each(|n| total += n);
        assert_eq!(total, 8000);
    }
}
