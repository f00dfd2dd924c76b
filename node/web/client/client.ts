// A connection to a troupe node that stays up: it authenticates, matches replies to
// requests, reconnects with backoff when the link drops, resyncs by seq so no message is
// lost or doubled, and resends unacknowledged sends with their `client_msg_id` (PROTOCOL.md
// §2, §3 and §6).

import { backoffDelay, DEFAULT_BACKOFF, type BackoffOptions } from "./backoff.ts";
import { GroupLog } from "./grouplog.ts";
import type {
  ErrorCode,
  ErrorEvent,
  FaceToFaceView,
  GroupId,
  GroupInfo,
  GroupSummary,
  Message,
  Op,
  Profile,
  PushEvent,
  RegisterRequest,
  RegisterResult,
  Requests,
  Results,
  SendAck,
  SendRequest,
  ServerEvent,
  SessionResult,
} from "./protocol.ts";

/** Where the connection stands, as an app shows it. */
export type ConnectionState =
  /** No socket: not started, or waiting to reconnect. */
  | "offline"
  /** A socket is opening. */
  | "connecting"
  /** The socket is open; the session is being resumed and the groups resynced. */
  | "syncing"
  /** Authenticated and caught up: requests go out at once. */
  | "ready"
  /** The session ended (logout, revoked or expired token): log in again. */
  | "signed_out";

/** Why a request failed: a protocol error code, or what happened to the connection. */
export type ClientErrorCode =
  | ErrorCode
  /** The connection dropped before the reply came; the request may or may not have run. */
  | "disconnected"
  /** No reply within the request timeout. */
  | "timeout"
  /** The client was closed, or the session ended. */
  | "closed";

/** A failed request, with a stable code to branch on. */
export class TroupeError extends Error {
  constructor(
    readonly code: ClientErrorCode,
    message: string,
    /** With `rate_limited` and `overloaded`: how long to wait before the same request can pass. */
    readonly retryAfterMs?: number,
  ) {
    super(message);
    this.name = "TroupeError";
  }
}

/** What the client tells its listeners. */
export interface ClientEvents {
  /** The connection state changed. */
  state: ConnectionState;
  /** A message, each exactly once and in seq order within its group, live or caught up. */
  message: Message;
  /** Every pushed event as it arrives (`message` events included, duplicates and all). */
  push: PushEvent;
  /** Fresh summaries of all the user's groups: after login, auth, and every resync. */
  groups: GroupSummary[];
  /** Groups the user turned out to be no longer in, found at a resync. */
  gone: GroupId[];
  /** An error no pending request claims: `id: null` (a frame the node could not read at
   * all), or a late answer to a send attempt the client already gave up on. */
  server_error: ErrorEvent;
}

/** The subset of the browser's WebSocket the client needs; Node 20 and browsers both have it. */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

/** Tuning; every field has a default that suits a browser. */
export interface ClientOptions {
  /** The node's WebSocket address, `ws://HOST:PORT/ws`. */
  url: string;
  /** Makes sockets; defaults to the global `WebSocket`. */
  createSocket?: (url: string) => WebSocketLike;
  /** How long a request may wait for its reply, connection included (default 15 s). */
  requestTimeoutMs?: number;
  /** Reconnect delays (default 0.5 s doubling to 30 s, jittered). */
  backoff?: BackoffOptions;
  /** How often to ping a quiet link to find out it is dead (default 20 s). */
  pingIntervalMs?: number;
  /** How long a ping may go unanswered before the link counts as dead (default 10 s). */
  pingTimeoutMs?: number;
  /** Random numbers for the reconnect jitter (tests pass a fixed one). */
  random?: () => number;
  /**
   * Follow the browser's `online`/`offline` events (default: where they exist): drop the link
   * when the device goes offline, and reconnect at once, without waiting out the backoff,
   * when it is back. A socket on a dead network can otherwise look open for a long time.
   */
  watchNetwork?: boolean;
}

/** A send the node has not acknowledged yet; it survives reconnects. */
type SendFields = DistributiveOmit<SendRequest, "client_msg_id"> & { client_msg_id?: string };
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

interface OutgoingSend {
  request: SendRequest;
  resolve: (ack: SendAck) => void;
  reject: (error: TroupeError) => void;
  /** The request id of the attempt on the wire, if one is. */
  attemptId: number | null;
  attemptTimer: ReturnType<typeof setTimeout> | null;
  /** `overloaded` answers in a row: each doubles the wait the node asked for. */
  refusals: number;
}

interface Pending {
  op: Op;
  resolve: (result: unknown) => void;
  reject: (error: TroupeError) => void;
}

/** Ops that work on a connection that has not authenticated (PROTOCOL.md §3). */
const BEFORE_AUTH: ReadonlySet<Op> = new Set<Op>(["register", "login", "auth", "ping"]);
/** Error codes after which a resend of the same send can succeed. */
const TRANSIENT: ReadonlySet<ClientErrorCode> = new Set<ClientErrorCode>(["unavailable", "rate_limited", "overloaded", "disconnected", "timeout"]);

/**
 * One user's connection to a node. Create it, call {@link login} or {@link resume}, listen
 * with {@link on}, and call {@link request} or {@link send}. It reconnects by itself until
 * {@link close} or the session ends.
 */
export class TroupeClient {
  /** The connection's state; `state` events announce changes. */
  state: ConnectionState = "offline";
  /** The session token, once logged in: keep it to {@link resume} later. */
  token: string | null = null;
  /** The user's own profile, once authenticated. */
  profile: Profile | null = null;
  /** The per-group seq cursors behind the `message` events. */
  readonly log: GroupLog;

  private readonly options: Required<ClientOptions>;
  private socket: WebSocketLike | null = null;
  private opened: Promise<void> | null = null;
  /** Fails {@link opened} when the socket is dropped before it opened. */
  private failOpen: ((error: TroupeError) => void) | null = null;
  private nextRequestId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly outbox = new Map<string, OutgoingSend>();
  private readonly listeners = new Map<keyof ClientEvents, Set<(value: never) => void>>();
  private readyWaiters: { resolve: () => void; reject: (error: TroupeError) => void }[] = [];
  private reconnectAttempt = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private pingTimer: ReturnType<typeof setInterval> | null = null;
  private closedByUser = false;

  constructor(options: ClientOptions) {
    this.options = {
      createSocket: (url) => new WebSocket(url) as unknown as WebSocketLike,
      requestTimeoutMs: 15_000,
      backoff: DEFAULT_BACKOFF,
      pingIntervalMs: 20_000,
      pingTimeoutMs: 10_000,
      random: Math.random,
      watchNetwork: typeof window !== "undefined" && typeof window.addEventListener === "function",
      ...options,
    };
    if (this.options.watchNetwork) {
      window.addEventListener("offline", () => {
        if (this.socket !== null) this.dropConnection();
      });
      window.addEventListener("online", () => this.reconnectSoon());
    }
    this.log = new GroupLog(
      (group, after) => this.request("history", { group, after, limit: 100 }),
      (message) => this.emit("message", message),
      (group, error) => this.retryFill(group, error),
    );
  }

  /** Listens for an event; returns the function that stops listening. */
  on<K extends keyof ClientEvents>(name: K, handler: (value: ClientEvents[K]) => void): () => void {
    let set = this.listeners.get(name);
    if (set === undefined) {
      set = new Set();
      this.listeners.set(name, set);
    }
    set.add(handler as (value: never) => void);
    return () => set.delete(handler as (value: never) => void);
  }

  /** Creates an account (the connection stays unauthenticated: {@link login} next). */
  async register(fields: RegisterRequest): Promise<RegisterResult> {
    return this.request("register", fields);
  }

  /** Logs in with a password; the connection is ready when this resolves. */
  async login(username: string, password: string): Promise<SessionResult> {
    this.closedByUser = false;
    if (this.token !== null || this.state === "ready" || this.state === "signed_out") {
      // Another session's link (or its reconnect timer) would `auth` first; start afresh.
      this.clearTimers();
      this.dropSocket();
      this.token = null;
      // What the old session queued must not go out as whoever logs in now.
      this.failAll(new TroupeError("closed", "another session started"));
      this.setState("offline");
    }
    const result = await this.request("login", { username, password });
    this.token = result.token ?? null;
    this.authenticated(result);
    return result;
  }

  /**
   * Resumes a session with a token from an earlier {@link login}, e.g. after a page reload.
   * Rejects with `disconnected` when the node cannot be reached (the client keeps trying in
   * the background: watch for the `ready` state), `closed` when the token is no good.
   */
  async resume(token: string): Promise<SessionResult> {
    this.closedByUser = false;
    if (this.state === "ready" || this.state === "signed_out") {
      this.clearTimers();
      this.dropSocket();
      this.setState("offline");
    }
    this.token = token;
    const socket = this.socket;
    if (socket !== null && socket.readyState === 1) {
      // Open but unauthenticated (after `register` or `ping`): its `onopen` has passed.
      void this.resumeSession(socket);
    } else {
      await this.connect();
    }
    if (this.state !== "ready") await this.whenReady();
    // The summaries came with the `auth` reply; hand them back for the caller's first render.
    return this.lastSession as SessionResult;
  }

  /**
   * Sends one request and resolves with its result, or rejects with a {@link TroupeError}.
   * Requests that need a session wait (within the timeout) until the connection is ready.
   */
  async request<K extends Op>(op: K, fields: Requests[K]): Promise<Results[K]> {
    // Only login() and resume() reopen a closed client: `ping` or `register` would otherwise
    // open a socket nobody closes, and fail only at the timeout.
    if (this.closedByUser) throw new TroupeError("closed", "client closed");
    const deadline = Date.now() + this.options.requestTimeoutMs;
    return withTimeout(
      (async () => {
        if (BEFORE_AUTH.has(op)) await this.connect();
        else if (this.state !== "ready") await this.whenReady();
        // The caller heard `timeout` already: sending now would run what they may retry.
        if (Date.now() >= deadline) throw new TroupeError("timeout", `${op}: no reply in time`);
        const result = (await this.transmit(op, fields)) as Results[K];
        // A group the reply puts the user in is followed from here, so that what is sent to
        // it while the link is down comes back at the resync (not only once a first message
        // has arrived live). Following keeps a cursor already there.
        const joined = groupJoinedBy(op, result);
        if (joined !== null) this.log.follow(joined.group, joined.last_seq);
        return result;
      })(),
      deadline - Date.now(),
      op,
    );
  }

  /**
   * Sends a message and resolves when it is durable. It is retried, with the same
   * `client_msg_id`, across dropped connections and `unavailable` errors until the node
   * acknowledges it or refuses it for good, so it is stored exactly once.
   */
  send(fields: SendFields): Promise<SendAck> {
    const clientMsgId = fields.client_msg_id ?? randomId();
    const request = { ...fields, client_msg_id: clientMsgId } as SendRequest;
    if (this.closedByUser || this.state === "signed_out" || (this.token === null && this.state !== "ready")) {
      return Promise.reject(new TroupeError("closed", "not logged in"));
    }
    return new Promise((resolve, reject) => {
      const outgoing: OutgoingSend = { request, resolve, reject, attemptId: null, attemptTimer: null, refusals: 0 };
      this.outbox.set(clientMsgId, outgoing);
      if (this.state === "ready") this.attemptSend(outgoing);
    });
  }

  /** The latest session summary (from `login`, `auth` or a resync), once authenticated. */
  get session(): SessionResult | null {
    return this.lastSession;
  }

  /** The node's WebSocket address this client connects to. */
  get url(): string {
    return this.options.url;
  }

  /** Sends not yet acknowledged (they go out again after a reconnect). */
  get unacknowledgedSends(): number {
    return this.outbox.size;
  }

  /** Ends the session on the node (every connection with this token closes) and here. */
  async logout(): Promise<void> {
    try {
      await this.request("logout", {});
    } finally {
      this.signOut();
    }
  }

  /** Closes the connection and stops reconnecting; pending requests fail with `closed`. */
  close(): void {
    this.closedByUser = true;
    this.clearTimers();
    this.dropSocket();
    this.failAll(new TroupeError("closed", "client closed"));
    this.setState("offline");
  }

  /** Drops the link as if the network had failed; the client reconnects after the backoff. */
  dropConnection(): void {
    this.dropSocket();
    this.linkLost();
  }

  private lastSession: SessionResult | null = null;

  /**
   * A gap fill failed. A quiet group would otherwise keep its gap until its next message, so
   * try again after a pause; a reconnect's resync fills it anyway if the link is down.
   */
  private retryFill(group: GroupId, error: unknown): void {
    const transient = error instanceof TroupeError && TRANSIENT.has(error.code);
    if (!transient || this.closedByUser) return;
    setTimeout(() => {
      if (this.state === "ready") this.log.fetchMore(group);
    }, backoffDelay(2, this.options.backoff, this.options.random));
  }

  /** Skips the rest of a backoff wait: the network is back. */
  private reconnectSoon(): void {
    if (this.reconnectTimer === null) return;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    void this.connect();
  }

  /** Opens a socket unless one is open or opening; resolves when it is open. */
  private connect(): Promise<void> {
    if (this.opened !== null) return this.opened;
    this.setState("connecting");
    const socket = this.options.createSocket(this.options.url);
    this.socket = socket;
    this.opened = new Promise<void>((resolve, reject) => {
      this.failOpen = reject;
      socket.onopen = () => {
        this.failOpen = null;
        resolve();
        if (this.token !== null) void this.resumeSession(socket);
      };
      socket.onmessage = (event) => {
        if (typeof event.data === "string") this.receive(event.data);
      };
      socket.onclose = (event) => {
        reject(new TroupeError("disconnected", `connection closed (${event.code} ${event.reason})`));
        if (this.socket === socket) this.socketClosed(event.reason);
      };
      socket.onerror = () => {};
    });
    // Nobody may be waiting for the open; a failed one is handled by onclose.
    this.opened.catch(() => {});
    return this.opened;
  }

  /** After a (re)connect with a token: `auth`, then `sync` every followed group. */
  private async resumeSession(socket: WebSocketLike): Promise<void> {
    this.setState("syncing");
    try {
      const token = this.token ?? "";
      const timeout = this.options.requestTimeoutMs;
      const session = await withTimeout(this.transmit("auth", { token }), timeout, "auth");
      const cursors = this.log.cursorsForSync();
      this.log.pause();
      if (cursors.length > 0) {
        const sync = await withTimeout(this.transmit("sync", { groups: cursors, limit: 100 }), timeout, "sync");
        for (const group of sync.groups) {
          if (this.log.last(group.group) === undefined) this.log.follow(group.group, group.last_seq);
          // Retention deleted the seqs below first_seq: skip the cursor past them before the
          // messages (which start there), or they would wait on a gap no history can fill.
          if (group.first_seq !== undefined) this.log.discardBefore(group.group, group.first_seq);
          for (const message of group.messages) this.log.accept(message);
          if (group.has_more) this.log.fetchMore(group.group);
        }
        for (const group of sync.gone) this.log.forget(group);
        if (sync.gone.length > 0) this.emit("gone", sync.gone);
        session.groups = sync.groups.map(({ messages: _m, has_more: _h, first_seq: _f, ...summary }) => summary);
      }
      if (this.socket !== socket) return;
      this.authenticated(session);
    } catch (error) {
      if (this.socket !== socket) return;
      if (error instanceof TroupeError && error.code === "invalid_token") {
        this.signOut();
      } else {
        // The node could not resume us now (restarting, overloaded): try again later.
        this.dropConnection();
      }
    } finally {
      this.log.resume();
    }
  }

  /** The connection is authenticated and caught up: release everything that waited. */
  private authenticated(session: SessionResult): void {
    this.lastSession = session;
    this.profile = session.profile;
    for (const group of session.groups) this.log.follow(group.group, group.last_seq);
    this.reconnectAttempt = 0;
    this.setState("ready");
    this.emit("groups", session.groups);
    for (const waiter of this.readyWaiters.splice(0)) waiter.resolve();
    for (const outgoing of this.outbox.values()) this.attemptSend(outgoing);
    this.startPinging();
  }

  private whenReady(): Promise<void> {
    if (this.closedByUser) return Promise.reject(new TroupeError("closed", "client closed"));
    if (this.state === "signed_out" || (this.token === null && this.state !== "ready")) {
      return Promise.reject(new TroupeError("unauthenticated", "log in first"));
    }
    if (this.state === "offline" && this.reconnectTimer === null) void this.connect();
    return new Promise((resolve, reject) => this.readyWaiters.push({ resolve, reject }));
  }

  /** Writes one request on the current socket and waits for its reply. */
  private transmit<K extends Op>(op: K, fields: Requests[K]): Promise<Results[K]> {
    const socket = this.socket;
    if (socket === null || socket.readyState !== 1) {
      return Promise.reject(new TroupeError("disconnected", "not connected"));
    }
    const id = this.nextRequestId++;
    return new Promise<Results[K]>((resolve, reject) => {
      this.pending.set(id, { op, resolve: resolve as (result: unknown) => void, reject });
      socket.send(JSON.stringify({ ...fields, id, op }));
    });
  }

  private attemptSend(outgoing: OutgoingSend): void {
    if (outgoing.attemptId !== null || this.socket === null) return;
    const socket = this.socket;
    const id = this.nextRequestId++;
    outgoing.attemptId = id;
    const settle = () => {
      if (outgoing.attemptTimer !== null) clearTimeout(outgoing.attemptTimer);
      outgoing.attemptTimer = null;
      outgoing.attemptId = null;
    };
    this.pending.set(id, {
      op: "send",
      resolve: (ack) => {
        settle();
        this.outbox.delete(outgoing.request.client_msg_id);
        outgoing.resolve(ack as SendAck);
      },
      reject: (error) => {
        settle();
        if (!TRANSIENT.has(error.code)) {
          this.outbox.delete(outgoing.request.client_msg_id);
          outgoing.reject(error);
        } else if (error.code !== "disconnected" && error.code !== "timeout" && this.socket === socket) {
          // The node is busy, overloaded or moving the group, or this client sends too fast:
          // the same request again, shortly (when the node says, if it says).
          // A node still overloaded after the wait it named is told so by waiting longer each
          // time (PROTOCOL.md section 2), so refused clients do not keep it busy refusing.
          outgoing.refusals = error.code === "overloaded" ? outgoing.refusals + 1 : 0;
          const asked = error.retryAfterMs ?? backoffDelay(0, this.options.backoff, this.options.random);
          const doubled = asked * 2 ** Math.min(Math.max(outgoing.refusals - 1, 0), 6);
          // Jitter, so clients refused together do not come back together.
          const delay = Math.min(doubled + Math.floor(this.options.random() * doubled / 2), 30_000);
          outgoing.attemptTimer = setTimeout(() => {
            outgoing.attemptTimer = null;
            if (this.state === "ready") this.attemptSend(outgoing);
          }, delay);
        }
        // disconnected: resent after the resync.
      },
    });
    // A reply that never comes (its node died holding it) is sent again, same id.
    outgoing.attemptTimer = setTimeout(() => {
      if (outgoing.attemptId !== id) return;
      this.pending.delete(id);
      settle();
      if (this.state === "ready") this.attemptSend(outgoing);
    }, this.options.requestTimeoutMs);
    socket.send(JSON.stringify({ ...outgoing.request, id, op: "send" }));
  }

  private receive(text: string): void {
    let events: ServerEvent[];
    try {
      const parsed: unknown = JSON.parse(text);
      events = (Array.isArray(parsed) ? parsed : [parsed]) as ServerEvent[];
    } catch {
      return;
    }
    for (const event of events) {
      if (event.event === "reply") {
        const pending = event.id === null ? undefined : this.pending.get(event.id);
        if (pending !== undefined && event.id !== null) {
          this.pending.delete(event.id);
          pending.resolve(event.result);
        }
      } else if (event.event === "error") {
        const pending = event.id === null ? undefined : this.pending.get(event.id);
        if (pending !== undefined && event.id !== null) {
          this.pending.delete(event.id);
          pending.reject(new TroupeError(event.code, event.message, event.retry_after_ms));
        } else {
          this.emit("server_error", event);
        }
      } else {
        this.pushed(event);
      }
    }
  }

  private pushed(event: PushEvent): void {
    const me = this.profile?.user;
    switch (event.event) {
      case "message": {
        const { event: _event, ...message } = event;
        this.emit("push", event);
        this.log.accept(message as Message);
        return;
      }
      case "member_left":
        if (event.user === me) this.log.forget(event.group);
        break;
      case "group_dissolved":
        this.log.forget(event.group);
        break;
      case "face_to_face_group":
        this.log.follow(event.group.group, event.group.last_seq);
        break;
      default:
        break;
    }
    this.emit("push", event);
  }

  private socketClosed(reason: string): void {
    this.socket = null;
    this.opened = null;
    // The session is over (logout elsewhere, or its lifetime ran out): reconnecting with its
    // token could only fail, so the client signs out and the user logs in again.
    if (reason === "session_revoked" || reason === "session_expired") {
      this.signOut();
      return;
    }
    this.linkLost();
  }

  /** The link is gone: fail what was waiting for a reply, and reconnect if we have a session. */
  private linkLost(): void {
    this.stopPinging();
    this.failPending(new TroupeError("disconnected", "the connection dropped"));
    if (this.closedByUser || this.state === "signed_out") return;
    if (this.token === null) {
      this.setState("offline");
      return;
    }
    this.setState("offline");
    if (this.reconnectTimer !== null) return;
    const delay = backoffDelay(this.reconnectAttempt++, this.options.backoff, this.options.random);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      void this.connect();
    }, delay);
  }

  private signOut(): void {
    this.token = null;
    this.clearTimers();
    this.dropSocket();
    this.failAll(new TroupeError("closed", "the session ended"));
    this.setState("signed_out");
  }

  private dropSocket(): void {
    const socket = this.socket;
    this.socket = null;
    this.opened = null;
    this.failOpen?.(new TroupeError(this.closedByUser ? "closed" : "disconnected", "the connection was dropped"));
    this.failOpen = null;
    if (socket !== null) {
      socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
      try {
        socket.close(1000, "client closing");
      } catch {
        // Closing a socket that never opened can throw in some runtimes; it is gone either way.
      }
    }
  }

  private failPending(error: TroupeError): void {
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const request of pending) request.reject(error);
  }

  private failAll(error: TroupeError): void {
    this.failPending(error);
    for (const waiter of this.readyWaiters.splice(0)) waiter.reject(error);
    for (const outgoing of this.outbox.values()) {
      if (outgoing.attemptTimer !== null) clearTimeout(outgoing.attemptTimer);
      outgoing.reject(error);
    }
    this.outbox.clear();
  }

  private startPinging(): void {
    this.stopPinging();
    this.pingTimer = setInterval(() => {
      const socket = this.socket;
      withTimeout(this.transmit("ping", {}), this.options.pingTimeoutMs, "ping").catch((error: unknown) => {
        // A silent link (a phone that changed networks) never closes by itself.
        if (error instanceof TroupeError && error.code === "timeout" && this.socket === socket) this.dropConnection();
      });
    }, this.options.pingIntervalMs);
  }

  private stopPinging(): void {
    if (this.pingTimer !== null) clearInterval(this.pingTimer);
    this.pingTimer = null;
  }

  private clearTimers(): void {
    this.stopPinging();
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
  }

  private setState(state: ConnectionState): void {
    if (this.state === state) return;
    this.state = state;
    this.emit("state", state);
  }

  private emit<K extends keyof ClientEvents>(name: K, value: ClientEvents[K]): void {
    for (const handler of this.listeners.get(name) ?? []) {
      try {
        (handler as (value: ClientEvents[K]) => void)(value);
      } catch (error) {
        // One listener's bug must not stop the others or the connection.
        console.error(`troupe client: a ${name} listener threw`, error);
      }
    }
  }
}

/** The group a successful reply makes the caller a member of, if the op does that. */
function groupJoinedBy(op: Op, result: unknown): GroupInfo | null {
  switch (op) {
    case "create_group":
    case "join":
      return result as GroupInfo;
    case "join_face_to_face":
    case "confirm_face_to_face":
      return (result as FaceToFaceView).group;
    default:
      return null;
  }
}

/** Rejects with `timeout` when `promise` has not settled within `ms`. */
function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new TroupeError("timeout", `${what}: no reply in time`)), Math.max(ms, 0));
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}

/**
 * A `client_msg_id`: 16 random bytes in hex, from the platform's cryptographic source
 * (which, unlike `randomUUID`, works outside secure contexts too). Never from the
 * `random` option: a seeded jitter source must not make two messages share an id.
 */
export function randomId(): string {
  const bytes = new Uint8Array(16);
  if (typeof globalThis.crypto?.getRandomValues === "function") {
    globalThis.crypto.getRandomValues(bytes);
  } else {
    for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  }
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
