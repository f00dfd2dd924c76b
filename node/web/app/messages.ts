// One message on screen: text, a red packet to open, or media fetched through a signed URL.

import type { GroupId, MediaView, Message, RedPacketMessageBody } from "../client/index.ts";
import { h, replaceChildren } from "./dom.ts";
import { bytes, clock, errorText, money } from "./format.ts";
import { busy, openDialog } from "./dialogs.ts";
import type { App } from "./app.ts";

/** The row for a message: who, when, and its content. */
export function messageRow(app: App, message: Message): HTMLElement {
  const mine = message.sender === app.client.profile?.user;
  return h(
    "div",
    { class: mine ? "message mine" : "message", "data-seq": message.seq, "data-testid": "message" },
    h("div", { class: "meta" }, app.profiles.name(message.sender), " · ", h("time", {}, clock(message.ts))),
    h("div", { class: `bubble ${message.type}` }, content(app, message)),
  );
}

/** A send on its way: shown at once, greyed until the node acknowledges it. */
export function pendingRow(text: string, failed: string | null): HTMLElement {
  return h(
    "div",
    { class: failed === null ? "message mine pending" : "message mine failed", "data-testid": "pending-message" },
    h("div", { class: "meta" }, failed ?? "sending…"),
    h("div", { class: "bubble text" }, text),
  );
}

function content(app: App, message: Message): HTMLElement | string {
  switch (message.type) {
    case "text":
      return message.body;
    case "red_packet":
      return redPacket(app, message.group, message.body);
    case "image":
      return image(app, message.body);
    case "audio":
    case "video":
      return player(app, message.type, message.body);
    case "file":
      return file(app, message.body);
    default:
      return h("em", {}, "This message type is not supported here.");
  }
}

function redPacket(app: App, group: GroupId, packet: RedPacketMessageBody): HTMLElement {
  const status = h("span", { class: "packet-status", "data-testid": "packet-status" });
  const open = h("button", { class: "packet-open", "data-testid": "grab" }, "Open");
  const details = h("button", { class: "link" }, "Details");
  open.addEventListener("click", async () => {
    open.disabled = true;
    try {
      const result = await app.client.request("grab_red_packet", { group, packet: packet.packet });
      status.textContent =
        result.status === "grabbed" || result.status === "already_grabbed"
          ? `You got ${money(result.amount ?? 0)}`
          : result.status === "empty"
            ? "All shares are taken"
            : "This red packet has expired";
      void app.refreshWallet();
    } catch (error) {
      status.textContent = errorText(error);
      open.disabled = false;
    }
  });
  details.addEventListener("click", () => {
    const list = h("ul", { class: "grabs" });
    const dialog = openDialog(packet.greeting || "Red packet", "packet-dialog", list);
    void busy(dialog, async () => {
      const view = await app.client.request("red_packet", { group, packet: packet.packet });
      replaceChildren(
        list,
        h("li", {}, `${money(view.total)} in ${view.count} shares · ${view.grabbed_count} taken (${money(view.grabbed_amount)})`),
        view.your_amount === null ? null : h("li", {}, `You got ${money(view.your_amount)}`),
        ...(view.grabs ?? []).map((grab) => h("li", {}, app.profiles.name(grab.user), ` ${money(grab.amount)}`, grab.luckiest ? " 👑" : "")),
        view.grabs === null ? h("li", { class: "hint" }, "Who got what shows once every share is taken or the packet expires.") : null,
      );
    });
  });
  return h(
    "div",
    { class: "packet" },
    h("div", { class: "packet-greeting" }, "🧧 ", packet.greeting || "Red packet"),
    h("div", { class: "packet-amount" }, `${money(packet.total)} · ${packet.count} ${packet.count === 1 ? "share" : "shares"} · ${packet.kind}`),
    h("div", { class: "packet-actions" }, open, details, status),
  );
}

function image(app: App, media: MediaView): HTMLElement {
  const size = media.thumbnail ?? (media.width !== null && media.height !== null ? { width: media.width, height: media.height } : null);
  const img = h("img", { alt: "image", class: "thumb", "data-testid": "image", ...(size === null ? {} : { width: size.width, height: size.height }) });
  void app.client
    .request("media_url", { media: media.media, thumbnail: media.thumbnail !== null })
    .then((url) => (img.src = url.url))
    .catch(() => (img.alt = "image unavailable"));
  img.addEventListener("click", () => {
    app.client.request("media_url", { media: media.media }).then(
      (url) => window.open(url.url, "_blank", "noopener"),
      (error: unknown) => app.toast(errorText(error)),
    );
  });
  return img;
}

function player(app: App, kind: "audio" | "video", media: MediaView): HTMLElement {
  const element = h(kind, { controls: true, preload: "metadata" });
  let expiresAt = 0;
  const load = () =>
    app.client.request("media_url", { media: media.media }).then(
      (url) => {
        expiresAt = url.expires_at;
        const at = element.currentTime;
        element.src = url.url;
        if (at > 0) element.currentTime = at;
      },
      () => {},
    );
  // A signed URL lasts minutes, and a player asks for more bytes (a Range request) as it
  // plays or seeks: when one fails after the URL's time, get a fresh URL and go on from
  // where it was. A failure before that is a real one and stays.
  element.addEventListener("error", () => {
    if (Date.now() >= expiresAt) void load();
  });
  void load();
  return element;
}

function file(app: App, media: MediaView): HTMLElement {
  const link = h("a", { href: "#", class: "file", title: media.mime }, `📎 File · ${bytes(media.size)}`);
  link.addEventListener("click", (event) => {
    event.preventDefault();
    app.client.request("media_url", { media: media.media }).then(
      (url) => window.location.assign(url.url),
      (error: unknown) => app.toast(errorText(error)),
    );
  });
  return link;
}
