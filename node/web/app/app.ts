// The chat screen: the group list with unread badges, the open group's messages (older ones
// load as you scroll up, new ones arrive at the bottom), the composer, and the members.
// On a phone-sized screen the list and the open group take turns.

import {
  httpOrigin,
  mediaKindOf,
  unreadLabel,
  uploadMedia,
  UNREAD_CAP,
  type ConnectionState,
  type GroupId,
  type GroupInfo,
  type GroupSummary,
  type Message,
  type PushEvent,
  type TroupeClient,
} from "../client/index.ts";
import { h, replaceChildren } from "./dom.ts";
import { errorText, money } from "./format.ts";
import { createGroupDialog, faceToFaceDialog, joinGroupDialog, leaveGroupDialog, redPacketDialog, walletDialog } from "./dialogs.ts";
import { messageRow, pendingRow } from "./messages.ts";
import { Profiles } from "./profiles.ts";

/** Messages per `history` page as the user scrolls up. */
const PAGE = 30;
/** Within this many pixels of the bottom, new messages keep the view at the bottom. */
const STICKY_BOTTOM_PX = 80;

/** What the screen knows of one group. */
interface GroupState {
  summary: GroupSummary;
  info: GroupInfo | null;
  /** The loaded window of the log, ascending by seq, without gaps. */
  messages: Message[];
  /** Whether the newest page was read (the window reaches the present). */
  loaded: boolean;
  /** Whether the newest page is being read. */
  loading: boolean;
  hasOlder: boolean;
  loadingOlder: boolean;
  /** Rows already built, by seq: a redraw moves them rather than rebuilding them, so images
   * are not fetched again and a red packet keeps what its grab said. */
  rows: Map<number, HTMLElement>;
  /** Sends on their way, by client_msg_id. */
  pending: Map<string, { text: string; failed: string | null }>;
  preview: string;
}

/** The signed-in app. One per page; `onSignedOut` brings back the login form. */
export class App {
  readonly profiles: Profiles;
  wallet: number | null = null;
  private readonly groups = new Map<GroupId, GroupState>();
  /** Sidebar order: most recent activity first. */
  private order: GroupId[] = [];
  private current: GroupId | null = null;
  private readonly view: {
    root: HTMLElement;
    list: HTMLElement;
    status: HTMLElement;
    wallet: HTMLElement;
    chat: HTMLElement;
    messages: HTMLElement | null;
    members: HTMLElement | null;
  };
  private readTimer: ReturnType<typeof setTimeout> | null = null;
  private refreshingGroups = false;
  /** Redraws asked for since the last frame: a resync's burst of messages draws once. */
  private pendingRender: { list: boolean; messages: boolean; stickToBottom: boolean } | null = null;

  constructor(
    readonly client: TroupeClient,
    root: HTMLElement,
    summaries: GroupSummary[],
  ) {
    this.profiles = new Profiles(client);
    if (client.profile !== null) this.profiles.remember(client.profile);
    const list = h("ul", { class: "groups", "data-testid": "group-list" });
    const status = h("div", { class: "status", role: "status", "data-testid": "connection" });
    const wallet = h("button", { class: "wallet link", "data-testid": "wallet", onclick: () => void walletDialog(this) }, "¥…");
    const chat = h("section", { class: "chat" });
    const sidebar = h(
      "aside",
      { class: "sidebar" },
      h(
        "header",
        {},
        h("strong", { class: "me", "data-testid": "me" }, client.profile?.nickname ?? ""),
        wallet,
        h("button", { class: "link", "data-testid": "logout", onclick: () => void this.client.logout().catch(() => {}) }, "Log out"),
      ),
      status,
      h(
        "div",
        { class: "actions" },
        h("button", { "data-testid": "new-group", onclick: () => createGroupDialog(this) }, "New group"),
        h("button", { "data-testid": "join-group", onclick: () => joinGroupDialog(this) }, "Join"),
        h("button", { "data-testid": "face-to-face", onclick: () => faceToFaceDialog(this) }, "Face to face"),
      ),
      list,
    );
    replaceChildren(root, sidebar, chat);
    root.className = "app main";
    this.view = { root, list, status, wallet, chat, messages: null, members: null };
    this.mergeSummaries(summaries);
    this.renderChat();
    this.showState(client.state);

    client.on("message", (message) => this.onMessage(message));
    client.on("groups", (fresh) => this.mergeSummaries(fresh));
    client.on("gone", (gone) => gone.forEach((group) => this.removeGroup(group)));
    client.on("push", (event) => this.onPush(event));
    client.on("state", (state) => this.showState(state));
    document.addEventListener("visibilitychange", () => this.markReadSoon());
    void this.refreshWallet();
  }

  /** Adds a group the user just created or joined (or keeps the one known). */
  addGroup(info: GroupInfo): void {
    const me = this.client.profile?.user;
    const role = info.owner === me ? "owner" : "member";
    if (!this.groups.has(info.group)) {
      const summary: GroupSummary = { group: info.group, name: info.name, role, last_seq: info.last_seq, read_seq: info.last_seq, unread: 0 };
      this.groups.set(info.group, emptyState(summary));
      this.order.unshift(info.group);
    }
    const state = this.groups.get(info.group);
    if (state !== undefined) state.info = info;
    this.renderList();
  }

  /** Drops a group the user is no longer in. */
  removeGroup(group: GroupId): void {
    if (!this.groups.delete(group)) return;
    this.order = this.order.filter((id) => id !== group);
    this.client.log.forget(group);
    if (this.current === group) this.current = null;
    this.renderList();
    this.renderChat();
  }

  /** Shows a group: its newest page first, marked read once seen. */
  openGroup(group: GroupId): void {
    this.current = group;
    this.view.root.classList.add("show-chat");
    this.renderList();
    this.renderChat();
    const state = this.groups.get(group);
    if (state === undefined) return;
    if (!state.loaded && !state.loading) void this.loadNewest(group, state);
    void this.client.request("group_info", { group }).then(
      (info) => {
        state.info = info;
        if (this.current === group) this.renderHeader();
      },
      () => {},
    );
    this.markRead();
  }

  /** Reads the wallet's balance into the sidebar. */
  async refreshWallet(): Promise<void> {
    try {
      this.setWallet((await this.client.request("wallet", {})).balance);
    } catch {
      // The balance stays as it was; the wallet dialog shows the error if asked.
    }
  }

  /** Shows a balance the app learned. */
  setWallet(balance: number): void {
    this.wallet = balance;
    this.view.wallet.textContent = money(balance);
  }

  private mergeSummaries(summaries: GroupSummary[]): void {
    const seen = new Set<GroupId>();
    for (const summary of summaries) {
      seen.add(summary.group);
      const state = this.groups.get(summary.group);
      if (state === undefined) {
        this.groups.set(summary.group, emptyState(summary));
        this.order.push(summary.group);
      } else {
        // `my_groups` may lag what arrived live (PROTOCOL.md §4): marks only move forward.
        const last = Math.max(state.summary.last_seq, summary.last_seq);
        const read = Math.max(state.summary.read_seq, summary.read_seq);
        state.summary = { ...summary, last_seq: last, read_seq: read, unread: Math.min(summary.unread, UNREAD_CAP, last - read) };
      }
    }
    for (const group of [...this.groups.keys()]) {
      if (!seen.has(group)) this.removeGroup(group);
    }
    this.renderList();
    this.markReadSoon();
  }

  private onMessage(message: Message): void {
    let state = this.groups.get(message.group);
    if (state === undefined) {
      // A group we were added to: its summary comes with a refresh (one at a time).
      if (!this.refreshingGroups) {
        this.refreshingGroups = true;
        void this.client
          .request("my_groups", {})
          .then((result) => this.mergeSummaries(result.groups), () => {})
          .finally(() => (this.refreshingGroups = false));
      }
      return;
    }
    const mine = message.sender === this.client.profile?.user;
    state.summary.last_seq = Math.max(state.summary.last_seq, message.seq);
    if (mine) {
      state.summary.read_seq = Math.max(state.summary.read_seq, message.seq);
      state.summary.unread = 0;
      state.pending.delete(message.client_msg_id);
    } else if (message.seq > state.summary.read_seq) {
      state.summary.unread = Math.min(UNREAD_CAP, state.summary.last_seq - state.summary.read_seq);
    }
    state.preview = preview(message);
    this.order = [message.group, ...this.order.filter((id) => id !== message.group)];
    // Live messages follow on from the point the group was followed, without gaps (the
    // client's seq cursor sees to it), so they join the window even before its first page
    // is read: a message that came between the page's read and its reply is not lost.
    insertMessage(state, message);
    this.scheduleRender({ list: true, messages: this.current === message.group, stickToBottom: mine });
  }

  private onPush(event: PushEvent): void {
    const me = this.client.profile?.user;
    switch (event.event) {
      case "member_joined":
      case "member_left": {
        if (event.user === me && event.event === "member_left") {
          this.removeGroup(event.group);
          return;
        }
        if (event.user === me && !this.groups.has(event.group)) {
          void this.client.request("group_info", { group: event.group }).then((info) => this.addGroup(info), () => {});
          return;
        }
        const state = this.groups.get(event.group);
        if (state?.info) state.info.member_count = event.member_count;
        if (this.current === event.group) {
          this.renderHeader();
          if (this.view.members !== null) void this.loadMembers(event.group);
        }
        return;
      }
      case "group_updated": {
        const state = this.groups.get(event.group);
        if (state === undefined) return;
        state.info = event;
        state.summary.name = event.name;
        this.renderList();
        if (this.current === event.group) this.renderHeader();
        return;
      }
      case "role_changed": {
        const state = this.groups.get(event.group);
        if (state !== undefined && event.user === me) state.summary.role = event.role;
        return;
      }
      case "group_dissolved":
        this.removeGroup(event.group);
        return;
      case "read_mark": {
        const state = this.groups.get(event.group);
        if (state === undefined) return;
        if (event.read_seq < state.summary.read_seq) return;
        state.summary.read_seq = event.read_seq;
        state.summary.unread = event.unread;
        this.renderList();
        return;
      }
      case "face_to_face_group":
        this.addGroup(event.group);
        return;
      default:
        return;
    }
  }

  private showState(state: ConnectionState): void {
    // A first page that failed while the link was down is read again once it is back.
    const current = this.current === null ? undefined : this.groups.get(this.current);
    if (state === "ready" && this.current !== null && current !== undefined && !current.loaded && !current.loading) {
      void this.loadNewest(this.current, current);
    }
    const text: Record<ConnectionState, string> = {
      offline: "Offline: reconnecting…",
      connecting: "Connecting…",
      syncing: "Catching up…",
      ready: "",
      signed_out: "Signed out",
    };
    this.view.status.textContent = text[state];
    this.view.status.dataset.state = state;
  }

  /** Draws at the next frame whatever was asked for until then. */
  private scheduleRender(what: { list: boolean; messages: boolean; stickToBottom: boolean }): void {
    if (this.pendingRender !== null) {
      this.pendingRender.list ||= what.list;
      this.pendingRender.messages ||= what.messages;
      this.pendingRender.stickToBottom ||= what.stickToBottom;
      return;
    }
    this.pendingRender = { ...what };
    requestAnimationFrame(() => {
      const render = this.pendingRender;
      this.pendingRender = null;
      if (render === null) return;
      if (render.list) this.renderList();
      if (render.messages) {
        this.renderMessages({ stickToBottom: render.stickToBottom });
        this.markReadSoon();
      }
    });
  }

  private renderList(): void {
    replaceChildren(
      this.view.list,
      ...this.order.map((group) => {
        const state = this.groups.get(group);
        if (state === undefined) return null;
        const badge = unreadLabel(state.summary.unread);
        return h(
          "li",
          {},
          h(
            "button",
            {
              class: group === this.current ? "group-item current" : "group-item",
              "data-group": group,
              "data-testid": "group-item",
              onclick: () => this.openGroup(group),
            },
            h("span", { class: "group-name" }, state.summary.name),
            badge === "" ? null : h("span", { class: "badge", "data-testid": "unread" }, badge),
            h("span", { class: "preview" }, state.preview),
          ),
        );
      }),
    );
    if (this.order.length === 0) this.view.list.append(h("li", { class: "hint" }, "No groups yet: create one or join one by its id."));
  }

  private renderChat(): void {
    const state = this.current === null ? undefined : this.groups.get(this.current);
    this.view.members = null;
    if (this.current === null || state === undefined) {
      this.view.root.classList.remove("show-chat");
      this.view.messages = null;
      replaceChildren(this.view.chat, h("p", { class: "empty" }, "Pick a group, or start one."));
      return;
    }
    const group = this.current;
    const messages = h("div", { class: "messages", "data-testid": "messages" });
    messages.addEventListener("scroll", () => {
      if (messages.scrollTop < 120) void this.loadOlder(group);
      if (atBottom(messages)) this.markReadSoon();
    });
    this.view.messages = messages;
    const input = h("textarea", { rows: 1, placeholder: "Message", "aria-label": "Message", "data-testid": "composer", maxlength: 4096 });
    const fileInput = h("input", { type: "file", hidden: true, "data-testid": "attach-input" });
    const composer = h(
      "form",
      { class: "composer" },
      h("button", { type: "button", class: "icon", title: "Send a file", "aria-label": "Send a file", onclick: () => fileInput.click() }, "📎"),
      h("button", { type: "button", class: "icon", title: "Red packet", "aria-label": "Red packet", "data-testid": "red-packet", onclick: () => redPacketDialog(this, group) }, "🧧"),
      fileInput,
      input,
      h("button", { type: "submit", class: "primary", "data-testid": "send" }, "Send"),
    );
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        composer.requestSubmit();
      }
    });
    composer.addEventListener("submit", (event) => {
      event.preventDefault();
      const text = input.value.trim();
      if (text === "") return;
      input.value = "";
      this.sendText(group, text);
    });
    fileInput.addEventListener("change", () => {
      const file = fileInput.files?.[0];
      fileInput.value = "";
      if (file !== undefined) void this.sendFile(group, file);
    });
    replaceChildren(this.view.chat, h("header", { class: "chat-header" }), messages, composer);
    this.renderHeader();
    this.renderMessages({ stickToBottom: true });
    if (window.matchMedia("(min-width: 700px)").matches) input.focus();
  }

  private renderHeader(): void {
    const header = this.view.chat.querySelector(".chat-header");
    const group = this.current;
    const state = group === null ? undefined : this.groups.get(group);
    if (header === null || group === null || state === undefined) return;
    const count = state.info === null ? "" : `${state.info.member_count} ${state.info.member_count === 1 ? "member" : "members"}`;
    replaceChildren(
      header,
      h("button", { class: "icon back", "aria-label": "Back to groups", "data-testid": "back", onclick: () => this.closeGroup() }, "←"),
      h("div", { class: "title" }, h("strong", { "data-testid": "group-title" }, state.summary.name), h("small", {}, `#${group} · ${count}`)),
      h("button", { class: "link", "data-testid": "show-members", onclick: () => this.toggleMembers(group) }, "Members"),
      h("button", { class: "link", "data-testid": "leave", onclick: () => leaveGroupDialog(this, group, state.summary.name) }, "Leave"),
    );
  }

  private closeGroup(): void {
    this.current = null;
    this.renderList();
    this.renderChat();
  }

  /** Redraws the message list; keeps the reader's place unless they were at the bottom. */
  private renderMessages({ stickToBottom }: { stickToBottom: boolean }): void {
    const container = this.view.messages;
    const state = this.current === null ? undefined : this.groups.get(this.current);
    if (container === null || state === undefined) return;
    const wasAtBottom = stickToBottom || atBottom(container);
    const fromBottom = container.scrollHeight - container.scrollTop;
    const top = !state.loaded
      ? h("p", { class: "hint" }, "Loading…")
      : state.hasOlder
        ? h("p", { class: "hint older" }, state.loadingOlder ? "Loading older messages…" : "Scroll up for older messages")
        : h("p", { class: "hint" }, "The beginning of this group.");
    replaceChildren(
      container,
      top,
      ...state.messages.map((message) => {
        let row = state.rows.get(message.seq);
        if (row === undefined) {
          row = messageRow(this, message);
          state.rows.set(message.seq, row);
        }
        return row;
      }),
      ...[...state.pending.values()].map((send) => pendingRow(send.text, send.failed)),
    );
    if (wasAtBottom) container.scrollTop = container.scrollHeight;
    else container.scrollTop = container.scrollHeight - fromBottom;
  }

  private async loadNewest(group: GroupId, state: GroupState): Promise<void> {
    state.loading = true;
    try {
      const page = await this.client.request("history", { group, limit: PAGE });
      for (const message of page.messages) insertMessage(state, message);
      state.hasOlder = page.has_more;
      state.loaded = true;
      const last = state.messages.at(-1);
      if (last !== undefined && state.preview === "") state.preview = preview(last);
    } catch (error) {
      state.loaded = false;
      this.toast(errorText(error));
      return;
    } finally {
      state.loading = false;
    }
    if (this.current === group) {
      this.renderMessages({ stickToBottom: true });
      this.markRead();
      // A short first page may not fill the screen, so no scroll would ask for more.
      const container = this.view.messages;
      if (container !== null && container.scrollHeight <= container.clientHeight) void this.loadOlder(group);
    }
  }

  private async loadOlder(group: GroupId): Promise<void> {
    const state = this.groups.get(group);
    const oldest = state?.messages[0];
    if (state === undefined || !state.loaded || !state.hasOlder || state.loadingOlder || oldest === undefined) return;
    state.loadingOlder = true;
    try {
      const page = await this.client.request("history", { group, before: oldest.seq, limit: PAGE });
      for (const message of page.messages) insertMessage(state, message);
      state.hasOlder = page.has_more;
    } catch (error) {
      this.toast(errorText(error));
    } finally {
      state.loadingOlder = false;
    }
    if (this.current === group) this.renderMessages({ stickToBottom: false });
  }

  private sendText(group: GroupId, text: string): void {
    const state = this.groups.get(group);
    if (state === undefined) return;
    const clientMsgId = crypto.getRandomValues(new Uint32Array(4)).join("-");
    state.pending.set(clientMsgId, { text, failed: null });
    this.renderMessages({ stickToBottom: true });
    this.client.send({ group, type: "text", body: text, client_msg_id: clientMsgId }).then(
      () => {
        // The message event (which may come before this) replaces the pending row.
      },
      (error: unknown) => {
        const pending = state.pending.get(clientMsgId);
        if (pending !== undefined) pending.failed = `not sent: ${errorText(error)}`;
        if (this.current === group) this.renderMessages({ stickToBottom: false });
      },
    );
  }

  private async sendFile(group: GroupId, file: File): Promise<void> {
    const state = this.groups.get(group);
    const token = this.client.token;
    if (state === undefined || token === null) return;
    const key = `upload-${Date.now()}`;
    state.pending.set(key, { text: `Uploading ${file.name}…`, failed: null });
    this.renderMessages({ stickToBottom: true });
    try {
      const kind = mediaKindOf(file.type);
      const media = await uploadMedia(httpOrigin(this.client.url), token, kind, file);
      await this.client.send({ group, type: kind, body: { media: media.media } });
      state.pending.delete(key);
    } catch (error) {
      const pending = state.pending.get(key);
      if (pending !== undefined) pending.failed = `${file.name} not sent: ${errorText(error)}`;
    }
    if (this.current === group) this.renderMessages({ stickToBottom: false });
  }

  private toggleMembers(group: GroupId): void {
    if (this.view.members !== null) {
      this.view.members.remove();
      this.view.members = null;
      return;
    }
    const panel = h("div", { class: "members", "data-testid": "members" }, h("p", { class: "hint" }, "Loading…"));
    this.view.members = panel;
    this.view.chat.querySelector(".chat-header")?.after(panel);
    void this.loadMembers(group);
  }

  private async loadMembers(group: GroupId): Promise<void> {
    const panel = this.view.members;
    if (panel === null) return;
    try {
      const rows: HTMLElement[] = [];
      let after: number | undefined;
      // Up to the member cap in pages; a group holds at most 500.
      for (let page = 0; page < 5; page++) {
        const result = await this.client.request("members", { group, limit: 100, ...(after === undefined ? {} : { after }) });
        for (const member of result.members) {
          rows.push(h("li", { "data-testid": "member" }, this.profiles.name(member.user), member.role === "member" ? null : h("span", { class: "role" }, member.role)));
        }
        if (result.next === undefined || result.next === null) break;
        after = result.next;
      }
      replaceChildren(panel, h("ul", {}, ...rows));
    } catch (error) {
      replaceChildren(panel, h("p", { class: "hint" }, errorText(error)));
    }
  }

  /** Marks read shortly: scrolling and bursts of messages ask many times in a row. */
  private markReadSoon(): void {
    if (this.readTimer !== null) return;
    this.readTimer = setTimeout(() => {
      this.readTimer = null;
      this.markRead();
    }, 200);
  }

  /** Moves the read mark to the newest message if the user can see it. */
  private markRead(): void {
    const group = this.current;
    const state = group === null ? undefined : this.groups.get(group);
    const container = this.view.messages;
    if (group === null || state === undefined || container === null || !state.loaded) return;
    if (document.visibilityState !== "visible" || !atBottom(container)) return;
    const seq = state.summary.last_seq;
    if (seq <= state.summary.read_seq && state.summary.unread === 0) return;
    void this.client.request("read", { group, seq }).then(
      (ack) => {
        state.summary.read_seq = Math.max(state.summary.read_seq, ack.read_seq);
        state.summary.unread = ack.unread;
        this.renderList();
      },
      () => {},
    );
  }

  /** A short note at the bottom of the screen, for failures outside any dialog. */
  toast(text: string): void {
    const note = h("div", { class: "toast", role: "alert" }, text);
    document.body.append(note);
    setTimeout(() => note.remove(), 4000);
  }
}

function emptyState(summary: GroupSummary): GroupState {
  return { summary, info: null, messages: [], rows: new Map(), loaded: false, loading: false, hasOlder: false, loadingOlder: false, pending: new Map(), preview: "" };
}

/** Puts a message in its place by seq; a seq already held is skipped. */
function insertMessage(state: GroupState, message: Message): void {
  const list = state.messages;
  let index = list.length;
  while (index > 0 && (list[index - 1]?.seq ?? 0) > message.seq) index--;
  if (list[index - 1]?.seq === message.seq) return;
  list.splice(index, 0, message);
}

function atBottom(container: HTMLElement): boolean {
  return container.scrollHeight - container.scrollTop - container.clientHeight < STICKY_BOTTOM_PX;
}

function preview(message: Message): string {
  switch (message.type) {
    case "text":
      return message.body.slice(0, 80);
    case "red_packet":
      return "🧧 Red packet";
    case "image":
      return "🖼 Image";
    case "audio":
      return "🎵 Audio";
    case "video":
      return "🎬 Video";
    case "file":
      return "📎 File";
    default:
      return "";
  }
}
