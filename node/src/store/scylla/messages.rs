//! Message logs on ScyllaDB: partitions of 4096 seqs, appended by one conditional batch per
//! bucket, and read by walking buckets with paged, limited queries.

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
        match row.and_then(|(last,)| last) {
            None => Ok(None),
            Some(last) => Ok(Some(rows::unsigned(Some(last), "messages.last_seq")?)),
        }
    }

    async fn last_seq(&self, group: GroupId) -> StoreResult<Seq> {
        log::find_last_seq(|bucket| self.bucket_last(group, bucket)).await
    }

    /// Writes one bucket's part of an append: `Fenced` if the bucket carries a later epoch,
    /// `Conflict` if its last_seq is not the one expected.
    async fn append_run(&self, fence: Fence, run: &BucketRun<'_>) -> StoreResult<()> {
        let group = fence.group;
        let (g, b) = (id(group.0), id(run.bucket));
        if run.expected_last.is_none() {
            // Opening bucket b: b + 1 gets our epoch first. A claim fences only the current
            // bucket and the next, so every bucket must carry an epoch before the log can
            // reach it; a later claim's higher epoch still wins there by timestamp.
            self.fence_bucket(group, run.bucket + 1, fence.epoch).await?;
        }
        let mut parts: Vec<BatchPart<'_>> = Vec::with_capacity(run.messages.len() + 1);
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
        let answer = self.lwt_batch(parts).await?;
        if answer.applied {
            return Ok(());
        }
        match answer.epoch()? {
            Some(current) if current != fence.epoch => Err(fence.refused(current)),
            None => Err(StoreError::Conflict(format!(
                "log bucket {} of group {group} carries no fence (never claimed?)",
                run.bucket
            ))),
            Some(_) => {
                let found = answer.bigint("last_seq")?;
                Err(StoreError::Conflict(format!(
                    "log of group {group} ends at {found:?} in bucket {}, not {:?}",
                    run.bucket, run.expected_last
                )))
            }
        }
    }

    pub(super) async fn append(&self, fence: Fence, after: Seq, messages: &[MessageRecord]) -> StoreResult<()> {
        check_append(fence.group, after, messages)?;
        for (i, run) in log::split_by_bucket(after, messages).iter().enumerate() {
            if let Err(error) = self.append_run(fence, run).await {
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
        let mut newest_first = Vec::new();
        let mut bucket = log::bucket_of(top);
        loop {
            let want = limit - newest_first.len();
            let values = (id(group.0), id(bucket), id(top + 1), super::limit_value(want));
            newest_first.extend(messages_of(inner.paged(&inner.st.select_before, values, want).await?)?);
            if newest_first.len() >= limit || bucket == 0 || top == 0 {
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
