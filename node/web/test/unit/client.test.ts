// TroupeClient's state machine (PROTOCOL.md §2, §3 and §6) against a scripted socket: the
// test plays the node, frame by frame, so every timeout, drop and reordering it needs
// happens exactly when it says. Timeouts are small (requestTimeoutMs 200, backoff 20-40 ms)
// so the whole file runs in a few seconds; waits poll for a condition instead of sleeping
// a fixed time, except where the point is that nothing happens.
import { test, afterEach } from "node:test";
import assert from "node:assert/strict";
import { TroupeClient, TroupeError, type ClientOptions, type ConnectionState, type WebSocketLike } from "../../client/client.ts";
import type { GroupId, GroupSummary, Message, Profile, Seq, SessionResult, SyncGroup } from "../../client/protocol.ts";

/** A request as the client wrote it. */
type Frame = { id: number; op: string } & Record<string, unknown>;
/** Answers a request the moment it is sent (a result, or an error event to send as is). */
type Responder = (frame: Frame) => unknown;

const REQUEST_TIMEOUT = 200;

/**
 * A WebSocket the test drives: it records what the client sends, and opens, delivers and
 * closes when told. Like a browser's, `send` throws while connecting and drops frames once
 * closing, and a close by the client fires `onclose` later (the client has let go by then).
 */
class FakeSocket implements WebSocketLike {
  readyState = 0;
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: { code: number; reason: string }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;
  /** Every request sent while open, parsed. */
  readonly sent: Frame[] = [];
  /** Whether the client closed this socket. */
  closedByClient = false;
  /** Ops the "node" answers by itself, a tick after the request. */
  readonly responders = new Map<string, Responder>();

  send(data: string): void {
    if (this.readyState === 0) throw new Error("InvalidStateError: send on a connecting socket");
    if (this.readyState !== 1) return;
    const frame = JSON.parse(data) as Frame;
    this.sent.push(frame);
    const responder = this.responders.get(frame.op);
    if (responder !== undefined) {
      setTimeout(() => {
        if (this.readyState !== 1) return;
        const answer = responder(frame);
        const isError = typeof answer === "object" && answer !== null && (answer as { event?: unknown }).event === "error";
        this.deliver(isError ? answer : { event: "reply", id: frame.id, op: frame.op, result: answer });
      }, 0);
    }
  }

  close(code?: number, reason?: string): void {
    if (this.readyState >= 2) return;
    this.closedByClient = true;
    this.readyState = 2;
    setTimeout(() => {
      this.readyState = 3;
      this.onclose?.({ code: code ?? 1005, reason: reason ?? "" });
    }, 0);
  }

  /** The connection is up. */
  open(): void {
    assert.equal(this.readyState, 0, "open() on a socket that is not connecting");
    this.readyState = 1;
    this.onopen?.({});
  }

  /** One node frame: an array of events, as the node sends them. */
  deliver(...events: unknown[]): void {
    assert.equal(this.readyState, 1, "deliver() on a socket that is not open");
    this.onmessage?.({ data: JSON.stringify(events) });
  }

  reply(request: Frame, result: unknown): void {
    this.deliver(replyTo(request, result));
  }

  fail(request: Frame, code: string): void {
    this.deliver(errorFor(request.id, code));
  }

  /** The node closes the connection (or it drops, with 1006). */
  serverClose(code: number, reason: string): void {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }

  ops(): string[] {
    return this.sent.map((frame) => frame.op);
  }

  /** The `n`th request (from 0) with this op, once it has been sent. */
  request(op: string, n = 0, ms = 1000): Promise<Frame> {
    return until(() => this.sent.filter((frame) => frame.op === op)[n], `${op} request #${n}`, ms);
  }
}

const replyTo = (request: Frame, result: unknown) => ({ event: "reply", id: request.id, op: request.op, result });
const errorFor = (id: number | null, code: string) => ({ event: "error", id, code, message: `test: ${code}` });

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Polls until `probe` gives something (not undefined/null/false), failing after `ms`. */
async function until<T>(probe: () => T | undefined | null | false, what: string, ms = 1000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const value = probe();
    if (value !== undefined && value !== null && value !== false) return value;
    if (Date.now() > end) throw new assert.AssertionError({ message: `timed out after ${ms} ms waiting for ${what}` });
    await sleep(2);
  }
}

/** Fails unless `promise` settles within `ms`: a hang shows up as this, not as a stuck run. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new assert.AssertionError({ message: `${what}: not settled within ${ms} ms` })), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

async function rejectsWith(promise: Promise<unknown>, code: string, ms = 1000): Promise<void> {
  await within(
    assert.rejects(promise, (error: unknown) => {
      assert.ok(error instanceof TroupeError, `expected a TroupeError, got ${String(error)}`);
      assert.equal(error.code, code);
      return true;
    }),
    ms,
    `a rejection with ${code}`,
  );
}

const ALICE: Profile = { user: 1, username: "alice", nickname: "Alice", avatar_url: "" };

function summary(group: GroupId, lastSeq: Seq): GroupSummary {
  return { group, name: `g${group}`, role: "member", last_seq: lastSeq, read_seq: lastSeq, unread: 0 };
}

function session(groups: GroupSummary[] = [], token?: string): SessionResult {
  return { ...(token === undefined ? {} : { token }), profile: ALICE, groups };
}

function msg(group: GroupId, seq: Seq): Message {
  return { group, seq, sender: 2, client_msg_id: `c-${group}-${seq}`, type: "text", body: `m${seq}`, ts: 1000 + seq };
}

const messageEvent = (group: GroupId, seq: Seq) => ({ event: "message", ...msg(group, seq) });
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

function syncGroup(group: GroupId, lastSeq: Seq, seqs: Seq[], hasMore = false): SyncGroup {
  return { ...summary(group, lastSeq), messages: seqs.map((seq) => msg(group, seq)), has_more: hasMore };
}

const clients: TroupeClient[] = [];
afterEach(() => {
  // Closing stops every reconnect and ping timer, so no test leaks into the next.
  for (const client of clients.splice(0)) client.close();
});

/** A client over fake sockets, with what it announced recorded. */
function harness(options: Partial<ClientOptions> = {}) {
  const sockets: FakeSocket[] = [];
  const states: ConnectionState[] = [];
  const messages: Message[] = [];
  const client = new TroupeClient({
    url: "ws://node.test/ws",
    createSocket: () => {
      const socket = new FakeSocket();
      sockets.push(socket);
      return socket;
    },
    requestTimeoutMs: REQUEST_TIMEOUT,
    backoff: { initialDelayMs: 20, maxDelayMs: 40 },
    pingIntervalMs: 60_000,
    watchNetwork: false,
    ...options,
  });
  clients.push(client);
  client.on("state", (state) => states.push(state));
  client.on("message", (message) => messages.push(message));
  return {
    client,
    sockets,
    states,
    messages,
    /** The `n`th socket the client made (from 0), once it has made it. */
    socket: (n: number, ms = 1000) => until(() => sockets[n], `socket #${n}`, ms),
    /** The seqs emitted as `message` events for a group, in emission order. */
    seqs: (group: GroupId) => messages.filter((m) => m.group === group).map((m) => m.seq),
  };
}
type Harness = ReturnType<typeof harness>;

/** Logs in as alice over the next socket; resolves with that socket, the client ready. */
async function loggedIn(h: Harness, groups: GroupSummary[] = [], token = "T1"): Promise<FakeSocket> {
  const done = h.client.login("alice", "wonderland");
  const socket = await until(() => h.sockets.at(-1), "the login socket");
  socket.open();
  socket.reply(await socket.request("login"), session(groups, token));
  await within(done, 500, "login");
  assert.equal(h.client.state, "ready");
  return socket;
}

test("replies are matched to their requests by id, in any order; an error rejects with its code", { timeout: 5000 }, async () => {
  const h = harness();
  const socket = await loggedIn(h);
  const bob: Profile = { user: 2, username: "bob", nickname: "Bob", avatar_url: "" };
  const profile = h.client.request("profile", { user: 2 });
  const groups = h.client.request("my_groups", {});
  const info = h.client.request("group_info", { group: 404 });
  const [p, g, i] = await Promise.all([socket.request("profile"), socket.request("my_groups"), socket.request("group_info")]);
  assert.equal(new Set([p.id, g.id, i.id]).size, 3, "each request has its own id");
  assert.equal(p.user, 2);

  // Backwards, two in one frame, with an answer to an id nobody asked and an id-less error.
  const serverErrors: unknown[] = [];
  h.client.on("server_error", (event) => serverErrors.push(event));
  socket.deliver(errorFor(i.id, "not_found"), replyTo(g, { groups: [summary(5, 3)] }), replyTo({ id: 999, op: "ping" }, { ts: 1 }));
  socket.deliver(errorFor(null, "malformed_frame"));
  socket.reply(p, bob);
  await rejectsWith(info, "not_found");
  assert.deepEqual(await groups, { groups: [summary(5, 3)] });
  assert.deepEqual(await profile, bob);
  assert.deepEqual(serverErrors, [errorFor(null, "malformed_frame")], "the id-less error goes to server_error");
  assert.equal(h.client.state, "ready");
});

test("a request that waited for the connection past its timeout rejects with timeout and is never sent", { timeout: 5000 }, async () => {
  const h = harness();
  const first = await loggedIn(h);
  first.serverClose(1001, "going_away");
  assert.equal(h.client.state, "offline");

  const started = Date.now();
  const late = h.client.request("profile", {});
  await rejectsWith(late, "timeout");
  assert.ok(Date.now() - started >= REQUEST_TIMEOUT - 5, `timed out after ${Date.now() - started} ms`);

  // The link comes back only now: the request the caller gave up on must not run.
  const second = await h.socket(1);
  second.open();
  second.reply(await second.request("auth"), session());
  await until(() => h.client.state === "ready", "ready again");
  await sleep(20);
  assert.deepEqual(second.ops(), ["auth"], "nothing but auth on the new link");

  // A request made now goes out at once.
  const fresh = h.client.request("profile", {});
  second.reply(await second.request("profile"), ALICE);
  assert.deepEqual(await fresh, ALICE);
});

test("an unanswered auth or sync during a reconnect drops that socket after the timeout and reconnects", { timeout: 5000 }, async () => {
  const h = harness();
  const first = await loggedIn(h, [summary(81, 5)]);
  first.serverClose(1001, "going_away");

  // auth goes unanswered.
  const second = await h.socket(1);
  second.open();
  await second.request("auth");
  assert.equal(h.client.state, "syncing");
  const authSent = Date.now();
  const third = await h.socket(2, 1000);
  assert.ok(Date.now() - authSent >= REQUEST_TIMEOUT - 5, "given the request timeout first");
  assert.ok(second.closedByClient, "the silent socket was closed");

  // auth is answered, sync is not.
  third.open();
  third.reply(await third.request("auth"), session([summary(81, 5)]));
  await third.request("sync");
  assert.equal(h.client.state, "syncing");
  const fourth = await h.socket(3, 1000);
  assert.ok(third.closedByClient, "the socket whose sync went unanswered was closed");

  // And a node that answers gets the client ready.
  fourth.open();
  fourth.reply(await fourth.request("auth"), session([summary(81, 5)]));
  fourth.reply(await fourth.request("sync"), { groups: [syncGroup(81, 5, [])], gone: [] });
  await until(() => h.client.state === "ready", "ready on the fourth socket");
  assert.equal(h.sockets.length, 4);
});

test("a socket dropped while opening settles resume() and request() at once", { timeout: 5000 }, async () => {
  // dropConnection() before onopen: the waiters hear `disconnected`, and the client goes on
  // reconnecting with its token.
  const h = harness();
  const resumed = h.client.resume("T1");
  const ping = h.client.request("ping", {});
  const first = await h.socket(0);
  h.client.dropConnection();
  await rejectsWith(resumed, "disconnected", 100);
  await rejectsWith(ping, "disconnected", 100);
  assert.ok(first.closedByClient);
  const second = await h.socket(1);
  second.open();
  assert.equal((await second.request("auth")).token, "T1");

  // The node refusing the connection (onclose without onopen) is the same.
  const other = harness();
  const register = other.client.register({ username: "carol", password: "carol-secret" });
  (await other.socket(0)).serverClose(1006, "");
  await rejectsWith(register, "disconnected", 100);
  assert.equal(other.client.state, "offline");
});

test("close() while opening settles everything with closed; later requests and sends reject without a socket", { timeout: 5000 }, async () => {
  const h = harness();
  const resumed = h.client.resume("T1");
  const ping = h.client.request("ping", {});
  const waiting = h.client.request("profile", {});
  const socket = await h.socket(0);
  h.client.close();
  await rejectsWith(resumed, "closed", 100);
  await rejectsWith(ping, "closed", 100);
  await rejectsWith(waiting, "closed", 100);
  assert.ok(socket.closedByClient);
  assert.equal(h.client.state, "offline");

  await rejectsWith(h.client.request("profile", {}), "closed", 100);
  await rejectsWith(h.client.request("ping", {}), "closed", 100);
  await rejectsWith(h.client.send({ group: 81, type: "text", body: "hi" }), "closed", 100);
  await sleep(60); // past the longest backoff
  assert.equal(h.sockets.length, 1, "no socket after close()");
  assert.equal(h.client.unacknowledgedSends, 0);
});

test("close() on a ready client fails its requests and sends with closed and reconnects no more", { timeout: 5000 }, async () => {
  const h = harness();
  const socket = await loggedIn(h, [summary(81, 5)]);
  const pending = h.client.request("profile", {});
  const sending = h.client.send({ group: 81, type: "text", body: "hi" });
  await socket.request("send");
  h.client.close();
  await rejectsWith(pending, "closed", 100);
  await rejectsWith(sending, "closed", 100);
  await rejectsWith(h.client.send({ group: 81, type: "text", body: "again" }), "closed", 100);
  await rejectsWith(h.client.request("ping", {}), "closed", 100);
  await sleep(60);
  assert.equal(h.sockets.length, 1);
  assert.equal(h.client.state, "offline");
});

test("sends wait offline and go out after the resync with the same client_msg_id, once", { timeout: 5000 }, async () => {
  const h = harness();
  const first = await loggedIn(h, [summary(81, 5)]);
  const one = h.client.send({ group: 81, type: "text", body: "one" });
  const attempt = await first.request("send");
  assert.equal(typeof attempt.client_msg_id, "string");
  first.serverClose(1006, ""); // lost before its reply

  const two = h.client.send({ group: 81, type: "text", body: "two", client_msg_id: "mine-2" });
  assert.equal(h.client.state, "offline");
  assert.equal(h.client.unacknowledgedSends, 2);

  const second = await h.socket(1);
  second.open();
  // Sent on an unauthenticated link it would be refused (`unauthenticated`): it must wait too.
  assert.equal(h.client.state, "syncing");
  const three = h.client.send({ group: 81, type: "text", body: "three", client_msg_id: "mine-3" });
  second.reply(await second.request("auth"), session([summary(81, 5)]));
  const sync = await second.request("sync");
  assert.deepEqual(second.ops(), ["auth", "sync"], "no send before the resync is done");
  second.reply(sync, { groups: [syncGroup(81, 5, [])], gone: [] });

  const frames = await Promise.all([0, 1, 2].map((n) => second.request("send", n)));
  assert.deepEqual(
    frames.map((f) => [f.client_msg_id, f.body]),
    [
      [attempt.client_msg_id, "one"],
      ["mine-2", "two"],
      ["mine-3", "three"],
    ],
  );
  frames.forEach((frame, i) => second.reply(frame, { group: 81, seq: 6 + i, ts: 6 + i, duplicate: i === 0 }));
  assert.deepEqual(await within(one, 100, "send one"), { group: 81, seq: 6, ts: 6, duplicate: true });
  assert.deepEqual(await within(two, 100, "send two"), { group: 81, seq: 7, ts: 7, duplicate: false });
  assert.deepEqual(await within(three, 100, "send three"), { group: 81, seq: 8, ts: 8, duplicate: false });
  assert.equal(h.client.unacknowledgedSends, 0);

  // Acknowledged means done: no resend when the attempt timer would have run, nor at a resync.
  await sleep(REQUEST_TIMEOUT + 50);
  second.serverClose(1001, "going_away");
  const third = await h.socket(2);
  third.open();
  third.reply(await third.request("auth"), session([summary(81, 8)]));
  third.reply(await third.request("sync"), { groups: [syncGroup(81, 8, [])], gone: [] });
  await until(() => h.client.state === "ready", "ready again");
  await sleep(20);
  assert.equal(second.ops().filter((op) => op === "send").length, 3);
  assert.deepEqual(third.ops(), ["auth", "sync"]);
});

test("a send refused for good rejects and is never resent", { timeout: 5000 }, async () => {
  const h = harness();
  const first = await loggedIn(h);
  const refused = h.client.send({ group: 404, type: "text", body: "hi" });
  first.fail(await first.request("send"), "not_found");
  await rejectsWith(refused, "not_found", 100);
  assert.equal(h.client.unacknowledgedSends, 0);

  await sleep(REQUEST_TIMEOUT + 50);
  first.serverClose(1001, "going_away");
  const second = await h.socket(1);
  second.open();
  second.reply(await second.request("auth"), session());
  await until(() => h.client.state === "ready", "ready again");
  await sleep(20);
  assert.deepEqual(first.ops(), ["login", "send"]);
  assert.deepEqual(second.ops(), ["auth"]);
});

test("a send answered unavailable is retried shortly with the same client_msg_id", { timeout: 5000 }, async () => {
  const h = harness();
  const socket = await loggedIn(h);
  const sending = h.client.send({ group: 81, type: "text", body: "hi" });
  const a1 = await socket.request("send");
  const refused = Date.now();
  socket.fail(a1, "unavailable");
  const a2 = await socket.request("send", 1);
  assert.ok(Date.now() - refused < REQUEST_TIMEOUT - 50, "retried after a short pause, not the request timeout");
  assert.equal(a2.client_msg_id, a1.client_msg_id);
  assert.notEqual(a2.id, a1.id);
  assert.equal(h.client.unacknowledgedSends, 1);
  socket.reply(a2, { group: 81, seq: 1, ts: 1, duplicate: false });
  assert.deepEqual(await within(sending, 100, "send"), { group: 81, seq: 1, ts: 1, duplicate: false });
  assert.equal(h.client.unacknowledgedSends, 0);
});

for (const code of ["rate_limited", "overloaded"] as const) test(`a send answered ${code} waits retry_after_ms, then goes again with the same client_msg_id`, { timeout: 5000 }, async () => {
  const h = harness();
  const socket = await loggedIn(h);
  const sending = h.client.send({ group: 81, type: "text", body: "hi" });
  const a1 = await socket.request("send");
  const refused = Date.now();
  socket.deliver({ event: "error", id: a1.id, code, message: "too many send requests", retry_after_ms: 80 });
  const a2 = await socket.request("send", 1);
  const waited = Date.now() - refused;
  assert.ok(waited >= 75, `waited what the node said, not less (${waited} ms)`);
  assert.ok(waited < REQUEST_TIMEOUT - 30, `resent because of the error, not the request timeout (${waited} ms)`);
  assert.equal(a2.client_msg_id, a1.client_msg_id);
  socket.reply(a2, { group: 81, seq: 1, ts: 1, duplicate: false });
  assert.deepEqual(await within(sending, 100, "send"), { group: 81, seq: 1, ts: 1, duplicate: false });
});

test("a send refused overloaded twice waits twice as long the second time", { timeout: 5000 }, async () => {
  const h = harness();
  const socket = await loggedIn(h);
  const sending = h.client.send({ group: 81, type: "text", body: "hi" });
  const a1 = await socket.request("send");
  socket.deliver({ event: "error", id: a1.id, code: "overloaded", message: "the node is overloaded", retry_after_ms: 40 });
  const a2 = await socket.request("send", 1);
  const refused = Date.now();
  socket.deliver({ event: "error", id: a2.id, code: "overloaded", message: "the node is overloaded", retry_after_ms: 40 });
  const a3 = await socket.request("send", 2);
  const waited = Date.now() - refused;
  assert.ok(waited >= 75, `the second refusal doubled the wait (${waited} ms)`);
  assert.equal(a3.client_msg_id, a1.client_msg_id);
  socket.reply(a3, { group: 81, seq: 1, ts: 1, duplicate: false });
  assert.deepEqual(await within(sending, 100, "send"), { group: 81, seq: 1, ts: 1, duplicate: false });
});

test("a send attempt that gets no reply is sent again after the request timeout, same client_msg_id", { timeout: 5000 }, async () => {
  const h = harness();
  const socket = await loggedIn(h);
  const serverErrors: unknown[] = [];
  h.client.on("server_error", (event) => serverErrors.push(event));
  const sending = h.client.send({ group: 81, type: "text", body: "hi" });
  const a1 = await socket.request("send");
  const sent = Date.now();
  const a2 = await socket.request("send", 1, 1000);
  assert.ok(Date.now() - sent >= REQUEST_TIMEOUT - 5, `resent after ${Date.now() - sent} ms`);
  assert.equal(a2.client_msg_id, a1.client_msg_id);
  assert.notEqual(a2.id, a1.id);

  // The first attempt's answer, late, belongs to nobody now; the second's settles the send.
  socket.reply(a1, { group: 81, seq: 1, ts: 1, duplicate: false });
  socket.fail(a1, "unavailable");
  socket.reply(a2, { group: 81, seq: 1, ts: 1, duplicate: true });
  assert.deepEqual(await within(sending, 100, "send"), { group: 81, seq: 1, ts: 1, duplicate: true });
  assert.equal(serverErrors.length, 1, "the late error is reported as a server_error");
  assert.equal(h.client.unacknowledgedSends, 0);
});

test("send() before login rejects at once and opens no socket", { timeout: 5000 }, async () => {
  const h = harness();
  await rejectsWith(h.client.send({ group: 81, type: "text", body: "hi" }), "closed", 50);
  assert.equal(h.sockets.length, 0);
  assert.equal(h.client.unacknowledgedSends, 0);
  await rejectsWith(h.client.request("profile", {}), "unauthenticated", 50);
  assert.equal(h.sockets.length, 0);
});

test("reconnect and resync: auth with the token, sync from the cursors, each message once in seq order", { timeout: 5000 }, async () => {
  const h = harness();
  const groupsSeen: GroupSummary[][] = [];
  h.client.on("groups", (groups) => groupsSeen.push(groups));
  const first = await loggedIn(h, [summary(81, 5), summary(99, 10)], "T1");
  first.deliver(messageEvent(81, 6));
  assert.deepEqual(h.seqs(81), [6]);
  first.serverClose(1001, "going_away");
  assert.equal(h.client.state, "offline");

  // The node's logs, for whatever history the client reads.
  const stored = [...range(1, 9).map((s) => msg(81, s)), ...range(1, 14).map((s) => msg(99, s))];
  const second = await h.socket(1);
  second.responders.set("history", (frame) => {
    const newer = stored.filter((m) => m.group === frame.group && m.seq > (frame.after as number));
    return { group: frame.group, messages: newer.slice(0, 2), has_more: newer.length > 2, last_seq: 14, first_seq: 1 };
  });
  second.open();
  const auth = await second.request("auth");
  assert.equal(auth.token, "T1");
  assert.deepEqual(second.ops(), ["auth"], "auth comes first");
  // Live events can ride in the auth reply's frame: a gap (9 after 6) and a duplicate.
  second.deliver(replyTo(auth, session([summary(81, 9), summary(99, 14)])), messageEvent(81, 9), messageEvent(81, 9));
  const sync = await second.request("sync");
  assert.deepEqual(sync.groups, [
    { group: 81, after: 6 },
    { group: 99, after: 10 },
  ]);
  second.reply(sync, { groups: [syncGroup(81, 9, [7, 8, 9]), syncGroup(99, 14, [11, 12], true)], gone: [] });
  second.deliver(messageEvent(81, 8), messageEvent(99, 12));

  await until(() => h.seqs(81).length >= 4 && h.seqs(99).length >= 4, "both groups caught up");
  await sleep(30);
  assert.deepEqual(h.seqs(81), [6, 7, 8, 9]);
  assert.deepEqual(h.seqs(99), [11, 12, 13, 14]);
  assert.ok(
    second.sent.some((f) => f.op === "history" && f.group === 99 && f.after === 12),
    "has_more led to history after the last seq synced",
  );
  assert.equal(h.client.state, "ready");
  assert.deepEqual(
    groupsSeen.at(-1)?.map((g) => [g.group, g.last_seq]),
    [
      [81, 9],
      [99, 14],
    ],
    "the groups event after the resync has the synced summaries",
  );
});

test("a resync drops the groups the node reports gone", { timeout: 5000 }, async () => {
  const h = harness();
  const gone: GroupId[][] = [];
  h.client.on("gone", (groups) => gone.push(groups));
  const first = await loggedIn(h, [summary(81, 5), summary(99, 10)]);
  first.serverClose(1001, "going_away");
  const second = await h.socket(1);
  second.open();
  second.reply(await second.request("auth"), session([summary(81, 5)]));
  second.reply(await second.request("sync"), { groups: [syncGroup(81, 5, [])], gone: [99] });
  await until(() => h.client.state === "ready", "ready");
  assert.deepEqual(gone, [[99]]);
  assert.equal(h.client.log.last(99), undefined);
  assert.equal(h.client.log.last(81), 5);
});

test("a resync whose sync says first_seq beyond the cursor skips the deleted seqs without reading history", { timeout: 5000 }, async () => {
  const h = harness();
  const groupsSeen: GroupSummary[][] = [];
  h.client.on("groups", (groups) => groupsSeen.push(groups));
  const first = await loggedIn(h, [summary(81, 3), summary(99, 3)]);
  first.serverClose(1001, "going_away");
  const second = await h.socket(1);
  // Were history read, it would say the same as the sync: nothing below first_seq is kept.
  second.responders.set("history", (frame) => {
    if (frame.group === 81) return { group: 81, messages: range(21, 25).map((s) => msg(81, s)), has_more: false, last_seq: 25, first_seq: 21 };
    return { group: 99, messages: [], has_more: false, last_seq: 25, first_seq: 26 };
  });
  second.open();
  second.reply(await second.request("auth"), session([summary(81, 25), summary(99, 25)]));
  const sync = await second.request("sync");
  assert.deepEqual(sync.groups, [
    { group: 81, after: 3 },
    { group: 99, after: 3 },
  ]);
  // 81 keeps 21..25; retention emptied 99 (first_seq = last_seq + 1).
  second.reply(sync, {
    groups: [
      { ...syncGroup(81, 25, range(21, 25)), first_seq: 21 },
      { ...syncGroup(99, 25, []), first_seq: 26 },
    ],
    gone: [],
  });
  await until(() => h.client.state === "ready" && h.seqs(81).length >= 5, "81 caught up");
  await sleep(30);
  assert.deepEqual(h.seqs(81), range(21, 25));
  assert.deepEqual(h.seqs(99), []);
  assert.equal(h.client.log.last(81), 25);
  assert.equal(h.client.log.last(99), 25, "an emptied group's cursor moves to its last seq");
  assert.deepEqual(second.ops(), ["auth", "sync"], "no history request for the deleted seqs");
  assert.deepEqual(groupsSeen.at(-1), [summary(81, 25), summary(99, 25)], "the groups event carries summaries only");
});

test("session_revoked signs out with no reconnect; so does invalid_token for auth", { timeout: 5000 }, async () => {
  const h = harness();
  const socket = await loggedIn(h);
  socket.serverClose(1008, "session_revoked");
  assert.equal(h.client.state, "signed_out");
  assert.equal(h.client.token, null);
  await sleep(60);
  assert.equal(h.sockets.length, 1, "no reconnect after session_revoked");
  await rejectsWith(h.client.request("profile", {}), "unauthenticated", 50);
  await rejectsWith(h.client.send({ group: 81, type: "text", body: "hi" }), "closed", 50);

  // A session that ran out of time while connected ends the same way.
  const e = harness();
  const expiring = await loggedIn(e);
  expiring.serverClose(1008, "session_expired");
  assert.equal(e.client.state, "signed_out");
  await sleep(60);
  assert.equal(e.sockets.length, 1, "no reconnect after session_expired");

  // A token the node no longer takes, found at a reconnect.
  const r = harness();
  const first = await loggedIn(r);
  first.serverClose(1001, "going_away");
  const second = await r.socket(1);
  second.open();
  second.fail(await second.request("auth"), "invalid_token");
  await until(() => r.client.state === "signed_out", "signed out");
  assert.equal(r.client.token, null);
  await sleep(60);
  assert.equal(r.sockets.length, 2, "no reconnect after invalid_token");

  // And at resume(): it rejects rather than wait for a session that will not come.
  const b = harness();
  const resumed = b.client.resume("bogus");
  const socketB = await b.socket(0);
  socketB.open();
  socketB.fail(await socketB.request("auth"), "invalid_token");
  await rejectsWith(resumed, "closed", 100);
  assert.equal(b.client.state, "signed_out");
  await sleep(60);
  assert.equal(b.sockets.length, 1);
});

test("login() during an old session's reconnect wait does not auth with the old token", { timeout: 5000 }, async () => {
  const h = harness();
  const first = await loggedIn(h, [], "T1");
  first.serverClose(1001, "going_away");
  assert.equal(h.client.state, "offline"); // the reconnect timer is pending now

  const login = h.client.login("bob", "builder-secret");
  const second = await h.socket(1);
  second.open();
  const frame = await second.request("login");
  assert.equal(frame.username, "bob");
  second.reply(frame, session([], "T2"));
  await within(login, 100, "login");
  await sleep(60); // past the old timer's longest delay
  assert.deepEqual(second.ops(), ["login"], "no auth, old token or new, on the new link");
  assert.equal(h.sockets.length, 2, "the old timer opened no socket");
  assert.equal(h.client.token, "T2");
  assert.equal(h.client.state, "ready");
  assert.ok(!h.sockets.some((s) => s.sent.some((f) => f.op === "auth")));
});

test("login() as another user fails the old session's queued sends instead of sending them as the new user", { timeout: 5000 }, async () => {
  const h = harness();
  const first = await loggedIn(h, [summary(81, 5)], "T1");
  first.serverClose(1001, "going_away");
  const queued = h.client.send({ group: 81, type: "text", body: "from alice" });
  assert.equal(h.client.unacknowledgedSends, 1);

  const login = h.client.login("bob", "builder-secret");
  await rejectsWith(queued, "closed", 100);
  const second = await h.socket(1);
  second.open();
  second.reply(await second.request("login"), session([summary(81, 5)], "T2"));
  await within(login, 100, "login");
  await sleep(20);
  assert.deepEqual(second.ops(), ["login"], "alice's message did not go out on bob's session");
  assert.equal(h.client.unacknowledgedSends, 0);
});

test("resume() on an open unauthenticated socket (after register) sends auth on it", { timeout: 5000 }, async () => {
  const h = harness();
  const registered = h.client.register({ username: "alice", password: "wonderland" });
  const socket = await h.socket(0);
  socket.open();
  socket.reply(await socket.request("register"), { user: 1 });
  assert.deepEqual(await registered, { user: 1 });

  const resumed = h.client.resume("T1");
  const auth = await socket.request("auth", 0, 200);
  assert.equal(auth.token, "T1");
  socket.reply(auth, session([summary(81, 3)]));
  const result = await within(resumed, 200, "resume");
  assert.deepEqual(result.groups, [summary(81, 3)]);
  assert.equal(h.client.state, "ready");
  assert.equal(h.sockets.length, 1, "no second socket");
});

test("a gap fill answered unavailable is retried later without a new message", { timeout: 5000 }, async () => {
  const h = harness();
  const socket = await loggedIn(h, [summary(81, 5)]);
  socket.deliver(messageEvent(81, 8));
  const h1 = await socket.request("history");
  assert.deepEqual([h1.group, h1.after], [81, 5]);
  socket.fail(h1, "unavailable");
  assert.deepEqual(h.seqs(81), []);

  const h2 = await socket.request("history", 1, 1000);
  assert.deepEqual([h2.group, h2.after], [81, 5]);
  socket.reply(h2, { group: 81, messages: [msg(81, 6), msg(81, 7), msg(81, 8)], has_more: false, last_seq: 8, first_seq: 1 });
  await until(() => h.seqs(81).length >= 3, "the gap filled");
  await sleep(20);
  assert.deepEqual(h.seqs(81), [6, 7, 8]);
  assert.equal(socket.ops().filter((op) => op === "history").length, 2);
});

test("an unanswered ping drops the link and a new socket is opened; answered pings keep it", { timeout: 5000 }, async () => {
  const h = harness({ pingIntervalMs: 30, pingTimeoutMs: 60 });
  const first = await loggedIn(h);
  first.responders.set("ping", () => ({ ts: Date.now() }));
  await until(() => first.ops().filter((op) => op === "ping").length >= 4, "four pings", 1000);
  assert.equal(h.sockets.length, 1, "an answered ping keeps the link");
  assert.equal(h.client.state, "ready");

  first.responders.delete("ping");
  const deaf = Date.now();
  const second = await h.socket(1, 1000);
  assert.ok(first.closedByClient, "the silent link was closed");
  assert.ok(Date.now() - deaf >= 55, `dropped after ${Date.now() - deaf} ms, before the ping timeout`);
  second.open();
  assert.equal((await second.request("auth")).token, "T1");
});
