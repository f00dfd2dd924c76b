//! Finding the one live actor for a key (a group, a user), starting it on first use, and
//! retiring it when idle, without ever running two for the same key on this node.
//!
//! The map is sharded under std read/write locks held for a few instructions, never across
//! an `await`. A send takes a read lock, counts the message in the actor's
//! [`MailboxGauge`] and clones the actor's ref; the actor uncounts it when it handles it.
//! ractor's mailboxes expose no length, and this count is what the debug console shows,
//! and what makes retiring safe: an idle actor leaves the map only under the write lock and
//! only with nothing counted, so no message can be sent to an actor that has stopped. An
//! actor that must go while messages are queued (a failed commit) leaves the map first and
//! then drains its mailbox, answering each message; ractor refuses sends after the drain
//! starts, and a refused send is rerouted to a fresh actor.
//!
//! Activation runs outside the lock (it reads the store); concurrent requests for the same
//! key wait for the first one instead of starting a second actor.

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::Notify;

const SHARDS: usize = 32;

/// Mailbox depth bookkeeping for one actor.
#[derive(Debug, Default)]
pub struct MailboxGauge {
    depth: AtomicUsize,
    peak: AtomicUsize,
    handled: AtomicU64,
    last_active_ms: AtomicU64,
    held: AtomicUsize,
}

impl MailboxGauge {
    fn enter(&self) {
        let depth = self.depth.fetch_add(1, Ordering::AcqRel) + 1;
        self.peak.fetch_max(depth, Ordering::Relaxed);
    }

    /// Called by the actor as it starts handling a counted message.
    pub fn leave(&self) {
        self.depth.fetch_sub(1, Ordering::AcqRel);
        self.handled.fetch_add(1, Ordering::Relaxed);
        self.last_active_ms.store(crate::now_ms(), Ordering::Relaxed);
    }

    /// Takes back a count for a message that never reached the actor.
    fn uncount(&self) {
        self.depth.fetch_sub(1, Ordering::AcqRel);
    }

    /// Marks the actor active now (at start, so a new actor is not idle at once).
    pub fn touch(&self) {
        self.last_active_ms.store(crate::now_ms(), Ordering::Relaxed);
    }

    /// Messages sent to the actor and not yet handled.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Acquire)
    }

    /// Records what the actor holds beyond its mailbox (a group: sends waiting for their
    /// commit), for admission control.
    pub fn set_held(&self, held: usize) {
        self.held.store(held, Ordering::Release);
    }

    /// Messages waiting in the mailbox plus what the actor holds beyond it.
    pub fn load(&self) -> usize {
        self.depth() + self.held.load(Ordering::Acquire)
    }

    /// The highest depth seen since the actor started.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Counted messages handled since the actor started.
    pub fn handled(&self) -> u64 {
        self.handled.load(Ordering::Relaxed)
    }

    /// When the actor last handled a counted message (ms since the epoch).
    pub fn last_active_ms(&self) -> u64 {
        self.last_active_ms.load(Ordering::Relaxed)
    }
}

/// A live actor and its gauge.
pub struct Entry<M> {
    /// The actor.
    pub actor: ActorRef<M>,
    /// Its mailbox depth.
    pub gauge: Arc<MailboxGauge>,
}

impl<M> Clone for Entry<M> {
    fn clone(&self) -> Self {
        Entry { actor: self.actor.clone(), gauge: self.gauge.clone() }
    }
}

enum Slot<M> {
    Active(Entry<M>),
    Activating(Arc<Notify>),
}

/// Why a message could not be handed to an actor.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError<E> {
    /// Activation failed (for example: no such group).
    #[error(transparent)]
    Activation(E),
    /// The actor died between activation and the send; the caller may retry.
    #[error("actor stopped before the message could be delivered")]
    Stopped,
}

type Shard<K, M> = RwLock<HashMap<K, Slot<M>>>;

/// The live actors of one kind on this node.
pub struct Directory<K, M> {
    kind: &'static str,
    shards: Box<[Shard<K, M>]>,
    ids: Mutex<HashMap<ActorId, K>>,
    supervisor: Mutex<Option<ActorCell>>,
}

impl<K, M> Directory<K, M>
where
    K: Copy + Eq + Hash + Send + Sync + std::fmt::Debug + 'static,
    M: ractor::Message,
{
    /// An empty directory with its supervisor actor, which cleans up after actors that
    /// crash so the next request starts a fresh one.
    pub async fn start(kind: &'static str) -> Result<Arc<Self>, ractor::SpawnErr> {
        let directory = Arc::new(Directory {
            kind,
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            ids: Mutex::new(HashMap::new()),
            supervisor: Mutex::new(None),
        });
        let cleanup: Cleanup = {
            let weak = Arc::downgrade(&directory);
            Arc::new(move |id| {
                if let Some(directory) = weak.upgrade() {
                    directory.forget(id);
                }
            })
        };
        let (supervisor, _) = Actor::spawn(None, Supervisor { kind }, cleanup).await?;
        *directory.supervisor.lock().unwrap_or_else(|e| e.into_inner()) = Some(supervisor.get_cell());
        Ok(directory)
    }

    /// The actor kind, for logs and the console.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The cell new actors link to, so their crashes reach the supervisor.
    pub fn supervisor(&self) -> Option<ActorCell> {
        self.supervisor.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn shard(&self, key: &K) -> &Shard<K, M> {
        use std::hash::{BuildHasher, RandomState};
        // One hasher per process: keys only need spreading across shards.
        static STATE: std::sync::OnceLock<RandomState> = std::sync::OnceLock::new();
        let state = STATE.get_or_init(RandomState::new);
        &self.shards[(state.hash_one(key) as usize) % SHARDS]
    }

    /// The live actor for `key`, if there is one.
    pub fn get(&self, key: &K) -> Option<Entry<M>> {
        match self.shard(key).read().unwrap_or_else(|e| e.into_inner()).get(key) {
            Some(Slot::Active(entry)) => Some(entry.clone()),
            _ => None,
        }
    }

    /// Sends to the live actor for `key`, counting the message; gives it back if there is no
    /// live actor (`Err(None)`: the actor died and took the message with it).
    pub fn try_send(&self, key: &K, message: M) -> Result<(), Option<M>> {
        let entry = {
            let shard = self.shard(key).read().unwrap_or_else(|e| e.into_inner());
            match shard.get(key) {
                Some(Slot::Active(entry)) => {
                    entry.gauge.enter();
                    entry.clone()
                }
                _ => return Err(Some(message)),
            }
        };
        match entry.actor.send_message(message) {
            Ok(()) => Ok(()),
            Err(error) => {
                entry.gauge.uncount();
                self.forget(entry.actor.get_id());
                match error {
                    ractor::MessagingErr::SendErr(message) => Err(Some(message)),
                    _ => Err(None),
                }
            }
        }
    }

    /// Sends to the actor for `key`, activating it first if needed.
    pub async fn send<F, Fut, E>(&self, key: K, message: M, activate: F) -> Result<(), DirectoryError<E>>
    where
        F: FnOnce(Arc<MailboxGauge>, Option<ActorCell>) -> Fut,
        Fut: Future<Output = Result<ActorRef<M>, E>>,
    {
        let message = match self.try_send(&key, message) {
            Ok(()) => return Ok(()),
            Err(Some(message)) => message,
            Err(None) => return Err(DirectoryError::Stopped),
        };
        self.get_or_activate(key, activate).await.map_err(DirectoryError::Activation)?;
        self.try_send(&key, message).map_err(|_| DirectoryError::Stopped)
    }

    /// The live actor for `key`, activated if needed.
    pub async fn get_or_activate<F, Fut, E>(&self, key: K, activate: F) -> Result<Entry<M>, E>
    where
        F: FnOnce(Arc<MailboxGauge>, Option<ActorCell>) -> Fut,
        Fut: Future<Output = Result<ActorRef<M>, E>>,
    {
        let mut activate = Some(activate);
        loop {
            let waiting = {
                let mut shard = self.shard(&key).write().unwrap_or_else(|e| e.into_inner());
                match shard.get(&key) {
                    Some(Slot::Active(entry)) => return Ok(entry.clone()),
                    Some(Slot::Activating(notify)) => {
                        // Registered while the lock is held: the activator can only finish
                        // (and notify) after we let go, so the wake-up cannot be missed.
                        let mut notified = Box::pin(notify.clone().notified_owned());
                        notified.as_mut().enable();
                        Some(notified)
                    }
                    None => {
                        shard.insert(key, Slot::Activating(Arc::new(Notify::new())));
                        None
                    }
                }
            };
            match waiting {
                Some(notified) => notified.await,
                None => {
                    let Some(activate) = activate.take() else {
                        // Only the first pass can become the activator, and it returns.
                        continue;
                    };
                    let guard = ActivationGuard { directory: self, key, done: false };
                    let gauge = Arc::new(MailboxGauge::default());
                    let result = activate(gauge.clone(), self.supervisor()).await;
                    return guard.finish(result.map(|actor| Entry { actor, gauge }));
                }
            }
        }
    }

    /// Called by an idle actor: removes it from the map if nothing is counted for it, and
    /// then it must stop. False means a message is on its way and it must stay.
    pub fn retire_if_idle(&self, key: &K, actor: ActorId) -> bool {
        let mut shard = self.shard(key).write().unwrap_or_else(|e| e.into_inner());
        match shard.get(key) {
            Some(Slot::Active(entry)) if entry.actor.get_id() == actor => {
                if entry.gauge.depth() > 0 {
                    return false;
                }
                shard.remove(key);
                drop(shard);
                self.ids.lock().unwrap_or_else(|e| e.into_inner()).remove(&actor);
                true
            }
            // Already replaced or removed: nothing can reach this actor through the map.
            _ => true,
        }
    }

    /// Removes an actor from the map whatever its mailbox holds: it is going away (a
    /// failed commit) and answers what is queued itself; new messages go to a successor.
    pub fn remove(&self, key: &K, actor: ActorId) {
        let mut shard = self.shard(key).write().unwrap_or_else(|e| e.into_inner());
        if let Some(Slot::Active(entry)) = shard.get(key)
            && entry.actor.get_id() == actor
        {
            shard.remove(key);
        }
        drop(shard);
        self.ids.lock().unwrap_or_else(|e| e.into_inner()).remove(&actor);
    }

    /// Drops a dead actor from the map (supervision, failed sends).
    fn forget(&self, actor: ActorId) {
        let key = self.ids.lock().unwrap_or_else(|e| e.into_inner()).remove(&actor);
        let Some(key) = key else { return };
        let mut shard = self.shard(&key).write().unwrap_or_else(|e| e.into_inner());
        if let Some(Slot::Active(entry)) = shard.get(&key)
            && entry.actor.get_id() == actor
        {
            shard.remove(&key);
        }
    }

    /// Every live actor, for the console and the idle sweeper.
    pub fn snapshot(&self) -> Vec<(K, Entry<M>)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            for (key, slot) in shard.read().unwrap_or_else(|e| e.into_inner()).iter() {
                if let Slot::Active(entry) = slot {
                    out.push((*key, entry.clone()));
                }
            }
        }
        out
    }

    /// Live actors now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.read().unwrap_or_else(|e| e.into_inner()).values().filter(|v| matches!(v, Slot::Active(_))).count()
            })
            .sum()
    }

    /// True when no actor is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops every actor and the supervisor (node shutdown).
    pub async fn stop_all(&self) {
        for (_, entry) in self.snapshot() {
            let _ = entry.actor.stop_and_wait(None, Some(std::time::Duration::from_secs(5))).await;
        }
        if let Some(supervisor) = self.supervisor() {
            supervisor.stop(None);
        }
    }
}

/// Clears an `Activating` slot even if the activating task is cancelled, so waiters never
/// hang.
struct ActivationGuard<'a, K, M>
where
    K: Copy + Eq + Hash + Send + Sync + std::fmt::Debug + 'static,
    M: ractor::Message,
{
    directory: &'a Directory<K, M>,
    key: K,
    done: bool,
}

impl<K, M> ActivationGuard<'_, K, M>
where
    K: Copy + Eq + Hash + Send + Sync + std::fmt::Debug + 'static,
    M: ractor::Message,
{
    fn finish<E>(mut self, result: Result<Entry<M>, E>) -> Result<Entry<M>, E> {
        self.done = true;
        let mut shard = self.directory.shard(&self.key).write().unwrap_or_else(|e| e.into_inner());
        let previous = match &result {
            Ok(entry) => {
                self.directory.ids.lock().unwrap_or_else(|e| e.into_inner()).insert(entry.actor.get_id(), self.key);
                shard.insert(self.key, Slot::Active(entry.clone()))
            }
            Err(_) => shard.remove(&self.key),
        };
        drop(shard);
        if let Some(Slot::Activating(notify)) = previous {
            notify.notify_waiters();
        }
        result
    }
}

impl<K, M> Drop for ActivationGuard<'_, K, M>
where
    K: Copy + Eq + Hash + Send + Sync + std::fmt::Debug + 'static,
    M: ractor::Message,
{
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut shard = self.directory.shard(&self.key).write().unwrap_or_else(|e| e.into_inner());
        if let Some(Slot::Activating(notify)) = shard.remove(&self.key) {
            notify.notify_waiters();
        }
    }
}

type Cleanup = Arc<dyn Fn(ActorId) + Send + Sync>;

/// Links to every actor of a directory and forgets the ones that stop or crash.
struct Supervisor {
    kind: &'static str,
}

impl Actor for Supervisor {
    type Msg = ();
    type State = Cleanup;
    type Arguments = Cleanup;

    async fn pre_start(&self, _: ActorRef<()>, cleanup: Cleanup) -> Result<Cleanup, ActorProcessingErr> {
        Ok(cleanup)
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<()>,
        event: SupervisionEvent,
        cleanup: &mut Cleanup,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => cleanup(cell.get_id()),
            SupervisionEvent::ActorFailed(cell, error) => {
                tracing::error!(kind = self.kind, actor = %cell.get_id(), %error, "actor crashed; it restarts on next use");
                cleanup(cell.get_id());
            }
            _ => {}
        }
        Ok(())
    }
}
