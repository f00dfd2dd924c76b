// The client library (client/) against the real node over a real WebSocket: replies matched
// to their requests, a dropped link resynced without losing or doubling a message, sends
// queued offline and across a kill -9 stored exactly once, logout reaching every
// connection of the session, and media uploads.

import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { TroupeClient, TroupeError, httpOrigin, mediaKindOf, uploadMedia } from "../../client/index.ts";
import type { ClientErrorCode, ClientOptions, GroupId, GroupSummary, Message, SendAck, ServerEvent, WebSocketLike } from "../../client/index.ts";
import { startNode, type TestNode } from "../support/node.ts";
import { expect, eventually } from "../support/expect.ts";
import { gradientPng } from "../support/png.ts";

let node: TestNode;
const clients: TroupeClient[] = [];

before(async () => {
  node = await startNode();
});

after(async () => {
  await node?.stop();
});

// A client left open keeps its ping and reconnect timers, and the test process, alive.
afterEach(() => {
  for (const client of clients.splice(0)) client.close();
});

function client(options: Partial<ClientOptions> = {}, on: TestNode = node): TroupeClient {
  const created = new TroupeClient({ url: on.ws, ...options });
  clients.push(created);
  return created;
}

let accounts = 0;

/** A registered user whose client has not logged in yet: `login()` when ready. */
async function registered(prefix: string, options: Partial<ClientOptions> = {}, on: TestNode = node) {
  const username = `${prefix}${++accounts}`;
  const password = `pw-${username}-secret`;
  const created = client(options, on);
  const { user } = await created.register({ username, password });
  return { client: created, user, username, password, login: () => created.login(username, password) };
}

async function loggedIn(prefix: string, options: Partial<ClientOptions> = {}, on: TestNode = node) {
  const account = await registered(prefix, options, on);
  await account.login();
  return account;
}

/** The client's `message` events of one group, as they come. */
function received(client: TroupeClient, group: GroupId): Message[] {
  const messages: Message[] = [];
  client.on("message", (message) => {
    if (message.group === group) messages.push(message);
  });
  return messages;
}

/**
 * Sockets that record what the client writes and what the node sends, and that can go deaf:
 * frames from the node stop reaching the client (acks lost on the way) while what the client
 * writes still arrives. The next socket hears again.
 */
function tappedSockets() {
  const sent: Record<string, unknown>[] = [];
  const events: ServerEvent[] = [];
  let current: WebSocket | null = null;
  let deaf: WebSocket | null = null;
  const createSocket = (url: string): WebSocketLike => {
    const socket = new WebSocket(url);
    current = socket;
    const like: WebSocketLike = {
      get readyState() {
        return socket.readyState;
      },
      onopen: null,
      onmessage: null,
      onclose: null,
      onerror: null,
      send(data) {
        sent.push(JSON.parse(data) as Record<string, unknown>);
        socket.send(data);
      },
      close: (code, reason) => socket.close(code, reason),
    };
    socket.onopen = (event) => like.onopen?.(event);
    socket.onclose = (event) => like.onclose?.(event);
    socket.onerror = (event) => like.onerror?.(event);
    socket.onmessage = (event) => {
      if (deaf === socket) return;
      events.push(...(JSON.parse(String(event.data)) as ServerEvent[]));
      like.onmessage?.(event);
    };
    return like;
  };
  return { sent, events, createSocket, deafen: () => (deaf = current) };
}

async function rejectsWith(promise: Promise<unknown>, code: ClientErrorCode): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof TroupeError, `a TroupeError, not ${String(error)}`);
    assert.equal(error.code, code);
    return true;
  });
}

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** Every message of a group, oldest first, read with `history` `after`. */
async function wholeHistory(client: TroupeClient, group: GroupId): Promise<Message[]> {
  const all: Message[] = [];
  for (;;) {
    const page = await client.request("history", { group, after: all.at(-1)?.seq ?? 0, limit: 100 });
    all.push(...page.messages);
    if (!page.has_more) return all;
  }
}

test("concurrent requests on one connection each resolve with their own reply; errors reject with the protocol code", async () => {
  const { client: alice, username } = await loggedIn("req");
  const groups = await Promise.all(["red", "green", "blue"].map((name) => alice.request("create_group", { name })));
  // Group i holds i + 1 messages, so each history reply is recognisably its own.
  await Promise.all(groups.flatMap((g, i) => range(1, i + 1).map((k) => alice.send({ group: g.group, type: "text", body: `${g.name} ${k}` }))));
  const ids = groups.map((g) => g.group).sort((x, y) => x - y);

  // All of these are on the wire before the first reply comes back (request() writes at once
  // on a ready connection), so only the ids can pair replies with requests.
  const work: Promise<void>[] = [];
  for (let round = 0; round < 8; round++) {
    work.push(alice.request("ping", {}).then((pong) => assert.equal(typeof pong.ts, "number")));
    groups.forEach((g, i) => {
      work.push(alice.request("history", { group: g.group, limit: 100 }).then((page) => assert.deepEqual(page.messages.map((m) => m.body), range(1, i + 1).map((k) => `${g.name} ${k}`))));
      work.push(alice.request("group_info", { group: g.group }).then((info) => assert.equal(info.name, g.name)));
    });
    work.push(alice.request("my_groups", {}).then((mine) => assert.deepEqual(mine.groups.map((g) => g.group), ids)));
    work.push(rejectsWith(alice.request("group_info", { group: 987_654_321 }), "not_found"));
    work.push(rejectsWith(alice.request("history", { group: ids[0]!, limit: 0 }), "invalid_field"));
  }
  await Promise.all(work);

  await rejectsWith(client().register({ username, password: "another-password" }), "username_taken");
});

test("a dropped link resyncs: 150 messages missed offline arrive once each, in order, through sync then history", async () => {
  const tap = tappedSockets();
  // random () => 1 puts every reconnect at the top of its range: exactly 6 s, ample time
  // for the 150 sends to be done while A is certainly away.
  const a = await registered("resync-a", { backoff: { initialDelayMs: 6000, maxDelayMs: 6000 }, random: () => 1, createSocket: tap.createSocket });
  const { client: b } = await loggedIn("resync-b");
  const { group } = await b.request("create_group", { name: "resync" });
  await b.request("add_members", { group, users: [a.user] });
  await a.login();
  assert.equal(a.client.log.last(group), 0, "A follows the group from its login summary");
  const got = received(a.client, group);
  const summaries: GroupSummary[][] = [];
  a.client.on("groups", (groups) => summaries.push(groups));

  a.client.dropConnection();
  await Promise.all(range(1, 150).map((i) => b.send({ group, type: "text", body: `missed ${i}` })));
  assert.equal(a.client.state, "offline", "A was away for every send");
  assert.equal(got.length, 0, "and heard none of them");

  await eventually(() => got.length >= 150 && a.client.state === "ready", "A caught up", 30_000);
  assert.deepEqual(got.map((m) => m.seq), range(1, 150), "seqs 1..150, once each, in order");
  assert.deepEqual(got.map((m) => m.body), range(1, 150).map((i) => `missed ${i}`));

  // The path taken: a sync capped at 100 with has_more, then history after 100.
  const sync = tap.events.find((e) => e.event === "reply" && e.op === "sync");
  if (sync?.event !== "reply" || sync.op !== "sync") throw new assert.AssertionError({ message: "no sync reply" });
  const synced = sync.result.groups.find((g) => g.group === group);
  assert.equal(synced?.messages.length, 100);
  assert.equal(synced?.has_more, true);
  assert.ok(tap.sent.some((f) => f.op === "history" && f.group === group && f.after === 100), "history after 100 was read");
  assert.equal(summaries.at(-1)?.find((g) => g.group === group)?.last_seq, 150, "the groups event after the resync has the new last_seq");
});

test("sends made offline wait in the outbox and are stored once each after the reconnect", async () => {
  const { client: a } = await loggedIn("outbox", { backoff: { initialDelayMs: 1000, maxDelayMs: 1000 } });
  const { group } = await a.request("create_group", { name: "outbox" });
  a.dropConnection();
  const sends = range(1, 5).map((i) => a.send({ group, type: "text", body: `queued ${i}` }));
  assert.equal(a.state, "offline");
  assert.equal(a.unacknowledgedSends, 5);

  const acks = await Promise.all(sends);
  assert.equal(a.state, "ready");
  assert.equal(a.unacknowledgedSends, 0);
  assert.deepEqual(acks.map((ack) => ack.seq).sort((x, y) => x - y), range(1, 5));
  const stored = await wholeHistory(a, group);
  assert.deepEqual(stored.map((m) => m.body).sort(), range(1, 5).map((i) => `queued ${i}`));
  assert.equal(new Set(stored.map((m) => m.client_msg_id)).size, 5, "five distinct client_msg_ids, each once");
});

test("kill -9 mid-burst: every send resolves after the restart, stored exactly once, seen once in order", async (t) => {
  const own = await startNode();
  try {
    const link = tappedSockets();
    const { client: a } = await loggedIn("kill", { backoff: { initialDelayMs: 100, maxDelayMs: 1000 }, createSocket: link.createSocket }, own);
    const { group } = await a.request("create_group", { name: "kill -9" });
    // Followed from its creation: a kill before A's first message event must not lose any.
    assert.equal(a.log.last(group), 0);
    const got = received(a, group);
    const bodies: string[] = [];
    const acks: SendAck[] = [];

    // Round 0 kills the node as the first acks come in, so sends are lost in flight. Round 1
    // first lets the node store the whole burst while its acks are lost on the way (a deaf
    // link): then only resending with the same client_msg_id keeps each message once.
    for (const round of [0, 1]) {
      let acked = 0;
      let firstAck: () => void = () => {};
      const first = new Promise<void>((resolve) => (firstAck = resolve));
      const sends = range(0, 49).map((i) => {
        bodies.push(`burst ${round}.${i}`);
        return a.send({ group, type: "text", body: `burst ${round}.${i}` }).then((ack) => {
          acked++;
          firstAck();
          return ack;
        });
      });
      await first;
      const ackedBeforeKill = acked;
      if (round === 1) {
        link.deafen();
        const probe = client({}, own);
        await probe.resume(a.token!);
        await expect(async () => (await wholeHistory(probe, group)).length, 100, 15_000, "messages stored");
        probe.close();
      }
      await own.kill9(); // SIGKILL goes out in this same turn, before any await
      await own.restart();

      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${a.unacknowledgedSends} sends still open 30 s after the restart`)), 30_000);
      });
      acks.push(...(await Promise.race([Promise.all(sends), timeout]).finally(() => clearTimeout(timer))));
      t.diagnostic(`round ${round}: ${ackedBeforeKill} of 50 sends acknowledged when the node was killed`);
      assert.ok(ackedBeforeKill < 50, "the kill came while sends were unacknowledged");
      assert.equal(a.unacknowledgedSends, 0);
    }

    const stored = await wholeHistory(a, group);
    assert.deepEqual(stored.map((m) => m.seq), range(1, 100), "100 messages, seqs without gaps");
    assert.deepEqual(stored.map((m) => m.body).sort(), [...bodies].sort(), "each body once");
    assert.equal(new Set(stored.map((m) => m.client_msg_id)).size, 100, "each client_msg_id once");
    // Each ack, before or after a kill, names the seq its message really has.
    acks.forEach((ack, i) => assert.equal(stored[ack.seq - 1]?.body, bodies[i], `${bodies[i]} acked as seq ${ack.seq}`));
    // A's own message events: each seq once, in order, and the same message the log holds.
    await eventually(() => got.length >= 100, "A's message events reach 100", 15_000);
    assert.deepEqual(got.map((m) => m.seq), range(1, 100));
    assert.deepEqual(got.map((m) => m.client_msg_id), stored.map((m) => m.client_msg_id));
  } finally {
    for (const c of clients.splice(0)) c.close();
    await own.stop();
  }
});

test("logout signs out every connection of the session; a bad token signs out at once", async () => {
  const { client: a } = await loggedIn("logout");
  const token = a.token;
  assert.ok(token !== null);
  const b = client();
  await b.resume(token);
  assert.equal(b.state, "ready");
  const bStates: string[] = [];
  b.on("state", (state) => bStates.push(state));

  await a.logout();
  assert.equal(a.state, "signed_out");
  assert.equal(a.token, null);
  // The node closes B's connection with session_revoked: B must not reconnect and retry.
  await expect(() => b.state, "signed_out");
  assert.deepEqual(bStates, ["signed_out"]);
  await rejectsWith(b.request("my_groups", {}), "unauthenticated");

  for (const bad of ["not-a-token", token]) {
    const c = client();
    await assert.rejects(c.resume(bad), TroupeError, `resume(${bad === token ? "revoked token" : "bogus token"})`);
    assert.equal(c.state, "signed_out");
    assert.equal(c.token, null);
  }
});

// A real 1x1 PNG, encoded in the test so the node's decoder reads and thumbnails it.
const PNG_1X1 = gradientPng(1, 1);

test("an uploaded image, sent, reaches the other member as its media view; mediaKindOf and httpOrigin", async () => {
  assert.equal(httpOrigin(node.ws), node.http);
  assert.equal(httpOrigin("wss://chat.example.com/ws"), "https://chat.example.com");
  assert.deepEqual(["image/png", "audio/ogg", "video/mp4", "application/pdf", ""].map(mediaKindOf), ["image", "audio", "video", "file", "file"]);

  const { client: a } = await loggedIn("media-a");
  const { client: b, user: bUser } = await loggedIn("media-b");
  const { group } = await a.request("create_group", { name: "pictures" });
  await a.request("add_members", { group, users: [bUser] });
  const got = received(b, group);

  const origin = httpOrigin(a.url);
  const view = await uploadMedia(origin, a.token!, mediaKindOf("image/png"), PNG_1X1);
  assert.equal(view.kind, "image");
  assert.equal(view.mime, "image/png");
  assert.equal(view.size, PNG_1X1.length);
  await rejectsWith(uploadMedia(origin, a.token!, "audio", PNG_1X1), "kind_mismatch");
  await rejectsWith(uploadMedia(origin, "not-a-token", "image", PNG_1X1), "invalid_token");

  const ack = await a.send({ group, type: "image", body: { media: view.media } });
  await eventually(() => got.length > 0, "B gets the image message");
  const message = got[0]!;
  assert.equal(message.seq, ack.seq);
  assert.ok(message.type === "image", `an image message, not ${message.type}`);
  assert.equal(message.body.media, view.media);
  assert.equal(message.body.mime, "image/png");
  assert.equal(message.body.width, 1);
  assert.equal(message.body.height, 1);

  // B can fetch the very bytes through a media URL.
  const { url } = await b.request("media_url", { media: view.media });
  const response = await fetch(origin + url);
  assert.equal(response.status, 200);
  assert.deepEqual(Buffer.from(await response.arrayBuffer()), PNG_1X1);
});
