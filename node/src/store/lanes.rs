//! Ordered lanes for the store calls that must not wait (`*_then`): each group always uses
//! the same lane, and a lane runs its jobs one after another, so a group's writes happen in
//! the order they were submitted (a sender's read mark before the batch it sent, one batch
//! before the next) while different groups' writes overlap across lanes.

use schema::GroupId;
use std::future::Future;
use std::pin::Pin;
use tokio::sync::mpsc;

/// One submitted write.
pub type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A fixed set of lanes, each drained by its own task.
pub struct Lanes {
    lanes: Vec<mpsc::UnboundedSender<Job>>,
}

impl Lanes {
    /// Starts `count` lanes on the current runtime.
    pub fn start(count: usize) -> Lanes {
        let lanes = (0..count.max(1))
            .map(|_| {
                let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
                tokio::spawn(async move {
                    while let Some(job) = rx.recv().await {
                        job.await;
                    }
                });
                tx
            })
            .collect();
        Lanes { lanes }
    }

    /// Runs `job` after everything submitted before for the same group.
    pub fn run(&self, group: GroupId, job: Job) {
        let lane = &self.lanes[(group.0 % self.lanes.len() as u64) as usize];
        if let Err(mpsc::error::SendError(job)) = lane.send(job) {
            // The lane's task is gone (runtime shutting down): run it unordered.
            tokio::spawn(job);
        }
    }
}
