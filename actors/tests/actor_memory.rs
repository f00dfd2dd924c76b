//! What an idle actor holds on the heap, counted by a global allocator.
//!
//! Every connected user is an actor, so an idle actor's size is most of an idle
//! connection's (BENCHMARKS.md, "Idle connections"). ractor allocates two channel blocks of
//! 32 slots when it spawns an actor; with the `cluster` feature, crates.io's ractor 0.16.5
//! makes a message slot 112 bytes and a supervision slot 80: 8.8 KB per idle actor. The
//! vendored ractor (vendor/README.md) boxes both. These tests fail if the
//! `[patch.crates-io]` entry for ractor goes, or if an upgrade brings the big slots back.

use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

/// Counts the bytes live on the heap.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: defers to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// An actor that does nothing: what every actor pays before its own state.
struct Idle;

impl Actor for Idle {
    type Msg = u64;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<u64>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

/// Heap bytes per idle actor, over many, once they all run.
fn heap_per_idle_actor() -> isize {
    const ACTORS: usize = 2_000;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        // The first spawn sets up what the runtime and ractor keep for every actor.
        let (warm, _) = Actor::spawn(None, Idle, ()).await.expect("spawn");
        let mut actors = Vec::with_capacity(ACTORS);
        let before = LIVE.load(Ordering::Relaxed);
        for _ in 0..ACTORS {
            actors.push(Actor::spawn(None, Idle, ()).await.expect("spawn").0);
        }
        // Let every actor's task reach its idle wait.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let per_actor = (LIVE.load(Ordering::Relaxed) - before) / ACTORS as isize;
        for actor in actors {
            actor.stop(None);
        }
        warm.stop(None);
        per_actor
    })
}

// One test in this binary: the counter is process-wide, and tests run on threads.
#[test]
fn an_idle_actor_holds_under_five_kib() {
    assert_eq!(std::mem::size_of::<ractor::message::BoxedMessage>(), 24, "a message slot is three words");
    let bytes = heap_per_idle_actor();
    // crates.io's ractor with `cluster`: 8,771 bytes here; patched: 3,848.
    assert!(bytes < 5 * 1024, "an idle actor holds {bytes} bytes of heap");
}
