//! The arithmetic of a group's log in buckets: which bucket holds a seq, how an append
//! splits over buckets, and how the newest bucket is found without a counter anywhere.
//!
//! Buckets fill in order and never skip (seqs are gapless, and an append that opens a bucket
//! checks that the one before it is full), so "bucket b has a last_seq" is true for b = 0..=k
//! and false after: the newest is found by an exponential then a binary search, each probe
//! one read of a static column.

use actors::store::{StoreError, StoreResult};
use schema::Seq;
use schema::records::MessageRecord;
use std::future::Future;

/// Seqs per bucket: a bucket (a partition) holds at most this many messages.
pub const BUCKET_SEQS: u64 = 4096;

/// The highest bucket a real log can reach (ids and seqs stay below 2^53); a search that
/// goes past it is reading corrupt data.
const MAX_BUCKET: u64 = (1 << 53) / BUCKET_SEQS;

/// The bucket that holds `seq` (seqs start at 1).
pub fn bucket_of(seq: Seq) -> u64 {
    seq.saturating_sub(1) / BUCKET_SEQS
}

/// The first seq of `bucket`.
pub fn first_seq(bucket: u64) -> Seq {
    bucket * BUCKET_SEQS + 1
}

/// The last seq `bucket` can hold.
pub fn last_seq_of(bucket: u64) -> Seq {
    (bucket + 1) * BUCKET_SEQS
}

/// The part of an append that lands in one bucket: one conditional batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketRun<'a> {
    /// The bucket.
    pub bucket: u64,
    /// The bucket's last_seq the batch expects; None for the bucket's first append
    /// (`IF last_seq = null`), which is also when it and the next bucket are fenced first.
    pub expected_last: Option<Seq>,
    /// The bucket's last_seq after the batch.
    pub new_last: Seq,
    /// The messages, consecutive seqs.
    pub messages: &'a [MessageRecord],
}

/// Splits an append of `messages` (already checked to be `after + 1, after + 2, ...`) into
/// one run per bucket, in order.
pub fn split_by_bucket(after: Seq, messages: &[MessageRecord]) -> Vec<BucketRun<'_>> {
    let mut runs = Vec::new();
    let mut rest = messages;
    let mut last = after;
    while let Some(first) = rest.first() {
        let bucket = bucket_of(first.seq);
        let room = (last_seq_of(bucket) - last) as usize;
        let (run, tail) = rest.split_at(room.min(rest.len()));
        let new_last = last + run.len() as Seq;
        let expected_last = (last >= first_seq(bucket)).then_some(last);
        runs.push(BucketRun { bucket, expected_last, new_last, messages: run });
        last = new_last;
        rest = tail;
    }
    runs
}

/// The log's last seq, given `probe(b)`, the last_seq of bucket b (None if it has none):
/// 0 for an empty log. Costs about 2·log2(buckets) probes, 2 for a log of one bucket.
pub async fn find_last_seq<F, Fut>(mut probe: F) -> StoreResult<Seq>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = StoreResult<Option<Seq>>>,
{
    let Some(mut found) = probe(0).await? else { return Ok(0) };
    // `low` has a last_seq, `high` has none.
    let mut low = 0u64;
    let mut step = 1u64;
    let mut high = loop {
        let candidate = low + step;
        if candidate > MAX_BUCKET {
            return Err(StoreError::Corrupt(format!("scylla: log buckets past {MAX_BUCKET} have a last_seq")));
        }
        match probe(candidate).await? {
            Some(last) => {
                low = candidate;
                found = last;
                step *= 2;
            }
            None => break candidate,
        }
    };
    while high - low > 1 {
        let middle = low + (high - low) / 2;
        match probe(middle).await? {
            Some(last) => {
                low = middle;
                found = last;
            }
            None => high = middle,
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use schema::frames::MessageKind;
    use schema::{GroupId, UserId};
    use std::cell::Cell;

    fn messages(after: Seq, count: u64) -> Vec<MessageRecord> {
        (after + 1..=after + count)
            .map(|seq| MessageRecord {
                group: GroupId(1),
                seq,
                sender: UserId(1),
                client_msg_id: format!("c{seq}"),
                kind: MessageKind::Text,
                body: "\"x\"".into(),
                ts: seq,
            })
            .collect()
    }

    #[test]
    fn buckets_hold_4096_seqs_starting_at_1() {
        assert_eq!((bucket_of(1), bucket_of(4096), bucket_of(4097)), (0, 0, 1));
        assert_eq!((first_seq(0), last_seq_of(0), first_seq(1), last_seq_of(1)), (1, 4096, 4097, 8192));
        assert_eq!(bucket_of(0), 0, "seq 0 (an empty log's last) sits with bucket 0");
    }

    #[test]
    fn an_append_splits_at_bucket_boundaries() {
        let batch = messages(4094, 5);
        let runs = split_by_bucket(4094, &batch);
        assert_eq!(runs.len(), 2);
        assert_eq!(
            (runs[0].bucket, runs[0].expected_last, runs[0].new_last, runs[0].messages.len()),
            (0, Some(4094), 4096, 2)
        );
        assert_eq!(
            (runs[1].bucket, runs[1].expected_last, runs[1].new_last, runs[1].messages.len()),
            (1, None, 4099, 3)
        );
        let first = messages(0, 3);
        assert_eq!(split_by_bucket(0, &first)[0].expected_last, None, "the first append opens bucket 0");
        assert!(split_by_bucket(7, &[]).is_empty());
    }

    fn probe_for(last: Seq, calls: &Cell<u32>) -> impl FnMut(u64) -> std::future::Ready<StoreResult<Option<Seq>>> + '_ {
        move |bucket| {
            calls.set(calls.get() + 1);
            let answer = if last == 0 || bucket > bucket_of(last) { None } else { Some(last.min(last_seq_of(bucket))) };
            std::future::ready(Ok(answer))
        }
    }

    fn block_on<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(future)
    }

    #[test]
    fn the_last_seq_is_found_in_few_probes() {
        for (last, most_probes) in [(0, 1), (1, 2), (4096, 2), (4097, 4), (5 * 4096 + 7, 6), (1 << 40, 64)] {
            let calls = Cell::new(0);
            assert_eq!(block_on(find_last_seq(probe_for(last, &calls))).unwrap(), last);
            assert!(calls.get() <= most_probes, "{last}: {} probes", calls.get());
        }
    }

    #[test]
    fn a_search_that_never_ends_is_corrupt() {
        let endless = |_| std::future::ready(Ok(Some(1)));
        assert!(matches!(block_on(find_last_seq(endless)), Err(StoreError::Corrupt(_))));
    }

    proptest! {
        #[test]
        fn runs_cover_the_append_in_order(after in 0u64..20_000, count in 1u64..10_000) {
            let batch = messages(after, count);
            let runs = split_by_bucket(after, &batch);
            let mut last = after;
            let mut seen = 0;
            for run in &runs {
                prop_assert!(!run.messages.is_empty());
                prop_assert_eq!(run.messages[0].seq, last + 1);
                prop_assert!(run.messages.iter().all(|m| bucket_of(m.seq) == run.bucket));
                prop_assert_eq!(run.new_last, run.messages[run.messages.len() - 1].seq);
                prop_assert_eq!(run.expected_last.is_none(), last + 1 == first_seq(run.bucket));
                last = run.new_last;
                seen += run.messages.len();
            }
            prop_assert_eq!(seen as u64, count);
        }

        #[test]
        fn the_search_finds_any_last_seq(last in 0u64..(1 << 45)) {
            let calls = Cell::new(0);
            prop_assert_eq!(block_on(find_last_seq(probe_for(last, &calls))).unwrap(), last);
        }
    }
}
