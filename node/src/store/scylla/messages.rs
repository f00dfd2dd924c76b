//! Message logs on ScyllaDB: partitions of 4096 seqs, appended by one conditional batch per
//! bucket, and read by walking buckets with paged, limited queries.
//!
//! Each batch is conditional on the bucket's `last_seq` (gapless seqs) and its `epoch` (the
//! log's copy of the group fence, see `fence.rs`). An append that starts a bucket first
//! checks, at SERIAL, that the bucket before it is full, so buckets fill in order.

use super::log::{self, BucketRun};
use super::rows::{self, MessageRow, id};
use super::{BatchPart, Inner, ScyllaStore};
use actors::store::*;
use async_trait::async_trait;
use schema::records::MessageRecord;
use schema::{GroupId, Seq, UserId};
use std::collections::BTreeMap;

impl Inner {
    /// The last_seq of one bucket, None if it has none (not yet appended to).
    async fn bucket_last(&self, group: GroupId, bucket: u64) -> StoreResult<Option<Seq>> {
        let row = self.first::<(Option<i64>,)>(&self.st.select_bucket_last, (id(group.0), id(bucket))).await?;
        last_of(row.and_then(|(last,)| last))
    }

    /// [`Inner::bucket_last`] at SERIAL: sees every append that landed, and completes one
    /// still in flight first.
    async fn bucket_last_serial(&self, group: GroupId, bucket: u64) -> StoreResult<Option<Seq>> {
        let values = (id(group.0), id(bucket));
        let row = self.first::<(Option<i64>, Option<i64>)>(&self.st.select_bucket_last_serial, values).await?;
        last_of(row.and_then(|(last, _)| last))
    }

    pub(super) async fn last_seq(&self, group: GroupId) -> StoreResult<Seq> {
        log::find_last_seq(|bucket| self.bucket_last(group, bucket)).await
    }

    /// [`Inner::last_seq`] with every probe at SERIAL.
    pub(super) async fn last_seq_serial(&self, group: GroupId) -> StoreResult<Seq> {
        log::find_last_seq(|bucket| self.bucket_last_serial(group, bucket)).await
    }

    /// The conditional batch that writes one bucket's part of an append.
    fn run_batch<'a>(&'a self, fence: Fence, run: &BucketRun<'a>) -> Vec<BatchPart<'a>> {
        let (g, b) = (id(fence.group.0), id(run.bucket));
        let mut parts: Vec<BatchPart<'a>> = Vec::with_capacity(run.messages.len() + 1);
        match run.expected_last {
            None => parts.push((&self.st.open_bucket, Box::new((id(run.new_last), g, b, id(fence.epoch))))),
            Some(last) => {
                parts.push((&self.st.extend_bucket, Box::new((id(run.new_last), g, b, id(last), id(fence.epoch)))))
            }
        }
        for message in run.messages {
            let row = (
                g,
                b,
                id(message.seq),
                id(message.sender.0),
                message.client_msg_id.as_str(),
                message.kind.as_str(),
                message.body.as_str(),
                id(message.ts),
            );
            parts.push((&self.st.insert_message, Box::new(row)));
        }
        parts
    }

    /// Writes one bucket's part of an append: `Fenced` if the bucket carries a later epoch,
    /// `Conflict` if the log does not end where the run expects. `starts_append`: this is
    /// the append's first run, so nothing in this call has checked the bucket before it.
    async fn append_run(&self, fence: Fence, run: &BucketRun<'_>, starts_append: bool) -> StoreResult<()> {
        let group = fence.group;
        if run.expected_last.is_none() {
            if starts_append && run.bucket > 0 {
                // The append opens a bucket, so the log must end exactly where the bucket
                // before it does. A full bucket never changes, so this cannot go stale
                // before the open below; and buckets keep filling in order.
                let previous = run.bucket - 1;
                let found = self.bucket_last_serial(group, previous).await?;
                if found != Some(log::last_seq_of(previous)) {
                    return Err(StoreError::Conflict(format!(
                        "log of group {group} ends at {found:?} in bucket {previous}, not {}",
                        log::last_seq_of(previous)
                    )));
                }
            }
            // Opening bucket b: b and b + 1 get our epoch first. A claim fences only the
            // buckets it finds, so every bucket must carry an epoch before the log can reach
            // it; a later claim's higher epoch still wins there (the fence only raises).
            futures_util::try_join!(self.fence_bucket(fence, run.bucket), self.fence_bucket(fence, run.bucket + 1))?;
        }
        let mut raised = false;
        loop {
            let answer = self.lwt_batch(self.run_batch(fence, run)).await?;
            if answer.applied {
                return Ok(());
            }
            let current = answer.epoch()?;
            if let Some(current) = current
                && current > fence.epoch
            {
                return Err(fence.refused(current));
            }
            let found = answer.bigint("last_seq")?;
            if found != run.expected_last.map(id) {
                return Err(StoreError::Conflict(format!(
                    "log of group {group} ends at {found:?} in bucket {}, not {:?}",
                    run.bucket, run.expected_last
                )));
            }
            if raised || current == Some(fence.epoch) {
                return Err(StoreError::Conflict(format!(
                    "log bucket {} of group {group} refused an append at epoch {current:?} for no reason it returned",
                    run.bucket
                )));
            }
            // The log ends where we expect, and the bucket carries an earlier owner's epoch
            // (or none): a claim fences only the buckets it finds. Raise it to ours, which
            // Paxos orders after anything that owner had in flight here, and try once more.
            self.fence_bucket(fence, run.bucket).await?;
            raised = true;
        }
    }

    pub(super) async fn append(&self, fence: Fence, after: Seq, messages: &[MessageRecord]) -> StoreResult<()> {
        check_append(fence.group, after, messages)?;
        for (i, run) in log::split_by_bucket(after, messages).iter().enumerate() {
            if let Err(error) = self.append_run(fence, run, i == 0).await {
                if i == 0 {
                    return Err(error);
                }
                // The earlier buckets' part is durable: the log is gapless but holds part of
                // the append, so the caller must treat it as possibly written.
                return Err(StoreError::Unavailable(format!(
                    "scylla: append to group {} landed up to seq {}, then: {error}",
                    fence.group,
                    run.messages[0].seq - 1
                )));
            }
        }
        self.record_client_ids(fence.group, messages).await
    }

    /// Writes (group, sender, client_msg_id) → (seq, ts): one unlogged batch per sender,
    /// each a partition of its own, all at once.
    async fn record_client_ids(&self, group: GroupId, messages: &[MessageRecord]) -> StoreResult<()> {
        let mut by_sender: BTreeMap<UserId, Vec<&MessageRecord>> = BTreeMap::new();
        for message in messages {
            by_sender.entry(message.sender).or_default().push(message);
        }
        let writes = by_sender.into_values().map(|sent| {
            let mut batch = scylla::statement::batch::Batch::new(scylla::statement::batch::BatchType::Unlogged);
            let mut values = Vec::with_capacity(sent.len());
            for message in sent {
                batch.append_statement(self.st.insert_client_id.clone());
                values.push((
                    id(group.0),
                    id(message.sender.0),
                    message.client_msg_id.as_str(),
                    id(message.seq),
                    id(message.ts),
                ));
            }
            async move { self.session.batch(&batch, values).await.map(drop) }
        });
        for result in futures_util::future::join_all(writes).await {
            result.map_err(|e| {
                StoreError::Unavailable(format!("scylla: the append landed, its client ids may not have: {e}"))
            })?;
        }
        Ok(())
    }
}

/// A bucket's last_seq as read.
fn last_of(last: Option<i64>) -> StoreResult<Option<Seq>> {
    last.map(|last| rows::unsigned(Some(last), "messages.last_seq")).transpose()
}

fn messages_of(page: Vec<MessageRow>) -> StoreResult<Vec<MessageRecord>> {
    let mut out = Vec::with_capacity(page.len());
    for row in page {
        out.extend(rows::message(row)?);
    }
    Ok(out)
}

#[async_trait]
impl MessageStore for ScyllaStore {
    async fn append_messages(&self, fence: Fence, after: Seq, messages: &[MessageRecord]) -> StoreResult<()> {
        self.inner.append(fence, after, messages).await
    }

    fn append_messages_then(&self, fence: Fence, after: Seq, messages: Vec<MessageRecord>, done: WriteDone) {
        if let Err(error) = check_append(fence.group, after, &messages) {
            done(Err(error));
            return;
        }
        let inner = self.inner.clone();
        self.in_order(fence.group, Box::pin(async move { done(inner.append(fence, after, &messages).await) }));
    }

    async fn last_seq(&self, group: GroupId) -> StoreResult<Seq> {
        self.inner.last_seq(group).await
    }

    async fn messages_after(&self, group: GroupId, after: Seq, limit: usize) -> StoreResult<Vec<MessageRecord>> {
        if after >= schema::ids::MAX_ID {
            return Ok(Vec::new());
        }
        let inner = &self.inner;
        let mut out = Vec::new();
        let mut from = after;
        let mut bucket = log::bucket_of(after + 1);
        while out.len() < limit {
            let want = limit - out.len();
            let values = (id(group.0), id(bucket), id(from), super::limit_value(want));
            let page = messages_of(inner.paged(&inner.st.select_after, values, want).await?)?;
            let reached = page.last().map_or(from, |message| message.seq);
            out.extend(page);
            // The log goes on in the next bucket only if this one is full up to its end.
            if reached < log::last_seq_of(bucket) {
                break;
            }
            from = reached;
            bucket += 1;
        }
        Ok(out)
    }

    async fn messages_before(&self, group: GroupId, before: Seq, limit: usize) -> StoreResult<Vec<MessageRecord>> {
        if before <= 1 || limit == 0 {
            return Ok(Vec::new());
        }
        let inner = &self.inner;
        // Start where the log is: past its end, every bucket would be empty.
        let mut top = before - 1;
        if top >= schema::ids::MAX_ID || inner.bucket_last(group, log::bucket_of(top)).await?.is_none() {
            top = top.min(inner.last_seq(group).await?);
        }
        // Nothing at or below the trim point is read: the buckets below it are empty (a walk
        // down them would cost one query each), and rows a failed trim left are gone to
        // readers.
        let trimmed = self.retention(group).await?.trimmed_through;
        if top <= trimmed {
            return Ok(Vec::new());
        }
        let floor = log::bucket_of(trimmed + 1);
        let mut newest_first = Vec::new();
        let mut bucket = log::bucket_of(top);
        loop {
            let want = limit - newest_first.len();
            let values = (id(group.0), id(bucket), id(top + 1), super::limit_value(want));
            let page = messages_of(inner.paged(&inner.st.select_before, values, want).await?)?;
            newest_first.extend(page.into_iter().filter(|message| message.seq > trimmed));
            if newest_first.len() >= limit || bucket <= floor || top == 0 {
                break;
            }
            bucket -= 1;
        }
        newest_first.reverse();
        Ok(newest_first)
    }

    async fn message_by_client_id(
        &self,
        group: GroupId,
        sender: UserId,
        client_msg_id: &str,
    ) -> StoreResult<Option<(Seq, u64)>> {
        let values = (id(group.0), id(sender.0), client_msg_id);
        let Some((seq, ts)) =
            self.inner.first::<(Option<i64>, Option<i64>)>(&self.inner.st.select_client_id, values).await?
        else {
            return Ok(None);
        };
        Ok(Some((rows::unsigned(seq, "client_msg_ids.seq")?, rows::unsigned(ts, "client_msg_ids.ts")?)))
    }
}
