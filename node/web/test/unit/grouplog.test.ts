// GroupLog, the resync rule of PROTOCOL.md §6.1, as a pure state machine: whatever order,
// duplicates and gaps the messages come in, each is handed on once and in seq order. The
// node's log is an in-memory array here, and `fetchAfter` pages it as `history` `after` does.
import { test } from "node:test";
import assert from "node:assert/strict";
import { GroupLog, type FetchAfter } from "../../client/grouplog.ts";
import type { GroupId, HistoryPage, Message, Seq } from "../../client/protocol.ts";

const G = 7;

function msg(seq: Seq, group: GroupId = G): Message {
  return { group, seq, sender: 1, client_msg_id: `c-${group}-${seq}`, type: "text", body: `m${seq}`, ts: 1000 + seq };
}

/** Lets every promise chain that needs no timer run to its end (fills over instant pages). */
function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * The node's log of group G: `history` `after` over `messages`, `pageSize` at a time. Its
 * `first_seq` is the lowest seq stored (as if retention deleted everything before it).
 */
function history(messages: Message[], pageSize = 3) {
  const calls: Seq[] = [];
  const fetchAfter: FetchAfter = async (group, after) => {
    calls.push(after);
    // A walk that never ends would spin in microtasks and hang the test: make it fail instead.
    if (calls.length > 50) throw new Error(`history read ${calls.length} times: ${calls.slice(0, 10).join(",")},...`);
    const stored = messages.filter((m) => m.group === group).map((m) => m.seq);
    const lastSeq = Math.max(0, ...stored);
    const firstSeq = Math.min(lastSeq + 1, ...stored);
    const newer = messages.filter((m) => m.group === group && m.seq > after).sort((a, b) => a.seq - b.seq);
    return page(group, newer.slice(0, pageSize), newer.length > pageSize, lastSeq, firstSeq);
  };
  return { calls, fetchAfter };
}

function page(group: GroupId, messages: Message[], hasMore: boolean, lastSeq = messages.at(-1)?.seq ?? 0, firstSeq = 1): HistoryPage {
  return { group, messages, has_more: hasMore, last_seq: lastSeq, first_seq: firstSeq };
}

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** A GroupLog that records what it delivers, as "group:seq" when several groups are in play. */
function logOver(fetchAfter: FetchAfter, onFillError?: (group: GroupId, error: unknown) => void) {
  const delivered: Message[] = [];
  const log = new GroupLog(fetchAfter, (m) => delivered.push(m), onFillError);
  const seqs = (group: GroupId = G) => delivered.filter((m) => m.group === group).map((m) => m.seq);
  return { log, delivered, seqs };
}

/** A fetchAfter whose answers the test gives by hand, to act while a fill is in flight. */
function manualHistory() {
  const requests: { after: Seq; answer: (page: HistoryPage) => void; fail: (error: unknown) => void }[] = [];
  const fetchAfter: FetchAfter = (_group, after) =>
    new Promise((answer, fail) => {
      requests.push({ after, answer, fail });
    });
  return { requests, fetchAfter };
}

test("in-order messages are delivered as they come; duplicates (seq <= last) are dropped", async () => {
  const { calls, fetchAfter } = history([]);
  const { log, seqs } = logOver(fetchAfter);
  log.follow(G, 0);
  for (const seq of [1, 2, 2, 1, 3, 3, 4]) log.accept(msg(seq));
  await settle();
  assert.deepEqual(seqs(), [1, 2, 3, 4]);
  assert.equal(log.last(G), 4);
  assert.deepEqual(calls, [], "no gap, so no history read");
  // A message at or below where the group was followed from is history, not news.
  log.follow(9, 5);
  log.accept(msg(5, 9));
  log.accept(msg(3, 9));
  assert.deepEqual(seqs(9), []);
});

test("a gap is filled from history across pages, then the waiting message follows", async () => {
  const { calls, fetchAfter } = history(range(1, 10).map((s) => msg(s)));
  const { log, seqs } = logOver(fetchAfter);
  log.follow(G, 0);
  log.accept(msg(10));
  await settle();
  assert.deepEqual(seqs(), range(1, 10));
  // Pages of 3 after 0, 3 and 6; at most one more look past 10 because the last page said has_more.
  assert.deepEqual(calls.slice(0, 3), [0, 3, 6]);
  assert.ok(calls.length <= 4, `walked ${JSON.stringify(calls)}`);
});

test("out-of-order arrivals (5 before 4) come out in order, once", async () => {
  const { requests, fetchAfter } = manualHistory();
  const { log, seqs } = logOver(fetchAfter);
  log.follow(G, 3);
  log.accept(msg(5));
  assert.deepEqual(seqs(), [], "5 waits for 4");
  assert.deepEqual(requests.map((r) => r.after), [3], "the gap is being filled");
  log.accept(msg(4));
  assert.deepEqual(seqs(), [4, 5], "4 arriving live closes the gap at once");
  // The fill's page, now stale, brings 4 and 5 again: neither is delivered twice.
  requests[0]!.answer(page(G, [msg(4), msg(5)], false));
  await settle();
  log.accept(msg(5));
  assert.deepEqual(seqs(), [4, 5]);
});

test("gaps found while paused wait for resume(), then are filled", async () => {
  const { calls, fetchAfter } = history(range(1, 6).map((s) => msg(s)));
  const { log, seqs } = logOver(fetchAfter);
  log.follow(G, 2);
  log.pause();
  log.accept(msg(6));
  log.accept(msg(4));
  await settle();
  assert.deepEqual(calls, [], "no history read while paused (a sync is on its way)");
  assert.deepEqual(seqs(), []);
  log.resume();
  await settle();
  assert.deepEqual(seqs(), [3, 4, 5, 6]);
  assert.equal(calls[0], 2);
});

test("fetchMore walks has_more to the end though no later message showed a gap", async () => {
  const { calls, fetchAfter } = history(range(1, 7).map((s) => msg(s)));
  const { log, seqs } = logOver(fetchAfter);
  log.follow(G, 0);
  log.fetchMore(G);
  await settle();
  assert.deepEqual(seqs(), range(1, 7));
  assert.deepEqual(calls, [0, 3, 6]);
});

test("forget() stops delivery, even of a page already on its way", async () => {
  const { requests, fetchAfter } = manualHistory();
  const { log, seqs } = logOver(fetchAfter);
  log.follow(G, 0);
  log.accept(msg(1));
  log.accept(msg(4));
  assert.deepEqual(seqs(), [1]);
  log.forget(G);
  assert.equal(log.last(G), undefined);
  assert.deepEqual(log.cursorsForSync(), []);
  requests[0]!.answer(page(G, [msg(2), msg(3), msg(4)], false));
  await settle();
  assert.deepEqual(seqs(), [1], "nothing of a forgotten group is delivered");
  assert.equal(requests.length, 1, "and its history is not walked further");
});

test("a message of an unfollowed group starts following it at seq - 1", async () => {
  const { calls, fetchAfter } = history([]);
  const { log, seqs } = logOver(fetchAfter);
  log.accept(msg(12, 3));
  log.accept(msg(13, 3));
  await settle();
  assert.deepEqual(seqs(3), [12, 13], "the first message shows; what came before is history");
  assert.deepEqual(calls, [], "seqs 1..11 are not treated as a gap");
  assert.deepEqual(log.cursorsForSync(), [{ group: 3, after: 13 }]);
});

test("a gap whose messages are gone is skipped, not fetched forever", async () => {
  // History lost 3..6 and 9..11: only 1, 2, 7, 8 and 12 are left.
  const { calls, fetchAfter } = history([1, 2, 7, 8, 12].map((s) => msg(s)), 2);
  const { log, seqs } = logOver(fetchAfter);
  log.follow(G, 2);
  log.accept(msg(12));
  await settle();
  assert.deepEqual(seqs(), [7, 8, 12], "what exists is delivered, in order, past both holes");
  assert.ok(calls.length <= 6, `a bounded walk, not ${calls.length} reads`);
  log.accept(msg(13));
  assert.deepEqual(seqs(), [7, 8, 12, 13], "and the cursor carries on from there");
});

test("retention: a history page's first_seq moves the cursor past the deleted seqs and drops what waits below it", async () => {
  const { requests, fetchAfter } = manualHistory();
  const { log, seqs } = logOver(fetchAfter);
  log.follow(G, 3);
  // Held from before retention deleted it: the node no longer has 10, so neither should we.
  log.accept(msg(10));
  assert.deepEqual(requests.map((r) => r.after), [3]);
  // The node keeps 21..25 only: seqs 4..20 are deleted, not a gap to fill.
  requests[0]!.answer(page(G, range(21, 25).map((s) => msg(s)), false, 25, 21));
  await settle();
  assert.deepEqual(seqs(), range(21, 25), "10 is dropped, 21..25 delivered in order");
  assert.equal(log.last(G), 25);
  assert.equal(requests.length, 1, "no further history request for the deleted seqs");
});

test("retention: a page of a group retention emptied moves the cursor to its last seq", async () => {
  const { requests, fetchAfter } = manualHistory();
  const { log, seqs } = logOver(fetchAfter);
  log.follow(G, 3);
  log.fetchMore(G);
  // Everything up to 25 is deleted: no messages, and first_seq is last_seq + 1.
  requests[0]!.answer(page(G, [], false, 25, 26));
  await settle();
  assert.equal(log.last(G), 25);
  assert.deepEqual(log.cursorsForSync(), [{ group: G, after: 25 }], "the next sync asks from there");
  assert.equal(requests.length, 1);
  log.accept(msg(26));
  assert.deepEqual(seqs(), [26], "the next message follows on at once");
  assert.equal(requests.length, 1, "with no history read");
});

test("discardBefore: skips the cursor to first_seq - 1, drops what waits below, delivers what follows", async () => {
  const { calls, fetchAfter } = history([]);
  const { log, seqs } = logOver(fetchAfter);
  log.follow(G, 3);
  log.pause();
  for (const seq of [10, 22, 21, 24]) log.accept(msg(seq));
  log.discardBefore(G, 21);
  assert.deepEqual(seqs(), [21, 22], "10 dropped; 21 and 22 follow on; 24 waits for 23");
  assert.equal(log.last(G), 22);
  // A first_seq at or below the cursor changes nothing, and an unfollowed group stays so.
  log.discardBefore(G, 5);
  log.discardBefore(G, 23);
  assert.equal(log.last(G), 22);
  log.discardBefore(9, 40);
  assert.equal(log.last(9), undefined);
  log.resume();
  await settle();
  assert.deepEqual(calls, [22], "only the real gap (23) is read from history");
});

test("a failing fill reports onFillError; a later message retries the gap", async () => {
  const failures: [GroupId, unknown][] = [];
  let down = true;
  const store = history(range(1, 4).map((s) => msg(s)));
  const fetchAfter: FetchAfter = (group, after) => (down ? Promise.reject(new Error("node away")) : store.fetchAfter(group, after));
  const { log, seqs } = logOver(fetchAfter, (group, error) => failures.push([group, error]));
  log.follow(G, 0);
  log.accept(msg(3));
  await settle();
  assert.equal(failures.length, 1);
  assert.equal(failures[0]![0], G);
  assert.match(String(failures[0]![1]), /node away/);
  assert.deepEqual(seqs(), []);
  down = false;
  log.accept(msg(4));
  await settle();
  assert.deepEqual(seqs(), [1, 2, 3, 4]);
  assert.equal(failures.length, 1);
});

/** mulberry32: a small seeded PRNG, so a failing seed can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

test("random order, duplicates and drops still come out 1..N, once each, in order", async () => {
  for (const seed of [1, 2, 3, 42, 1234, 99991, 7777777, 31337]) {
    const random = prng(seed);
    const n = 40 + Math.floor(random() * 160);
    const log = range(1, n).map((s) => msg(s));
    // Pages come back after a random number of event-loop turns, so live messages, pages and
    // further gaps interleave the way they do on a real link.
    let inFlight = 0;
    const fetchAfter: FetchAfter = async (group, after) => {
      inFlight++;
      for (let turns = Math.floor(random() * 4); turns > 0; turns--) await settle();
      inFlight--;
      const newer = log.filter((m) => m.group === group && m.seq > after);
      const size = 1 + Math.floor(random() * 10);
      return page(group, newer.slice(0, size), newer.length > size, n);
    };
    const { log: groupLog, seqs } = logOver(fetchAfter);
    groupLog.follow(G, 0);
    // Live arrivals: each message dropped with p 0.3 (reachable only through history), the
    // rest shuffled, with about one in five arriving twice.
    const live = log.filter(() => random() >= 0.3);
    for (const m of [...live]) if (random() < 0.2) live.push(m);
    for (let i = live.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [live[i], live[j]] = [live[j]!, live[i]!];
    }
    for (const m of live) {
      groupLog.accept(m);
      if (random() < 0.3) await settle();
    }
    // The tail may all have been dropped: a sync's has_more is what reveals it.
    groupLog.fetchMore(G);
    for (let i = 0; i < 10_000 && (inFlight > 0 || i < 2); i++) await settle();
    assert.deepEqual(seqs(), range(1, n), `seed ${seed}: ${live.length} live of ${n}`);
  }
});
