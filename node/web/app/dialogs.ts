// Modal dialogs: create and join a group, send a red packet, face-to-face groups, the
// wallet. Each is a form over a request; its failure shows in the dialog, in words.

import { TroupeError, type FaceToFaceView, type GroupId, type WalletView } from "../client/index.ts";
import { h, replaceChildren } from "./dom.ts";
import { errorText, money, parseMoney } from "./format.ts";
import type { App } from "./app.ts";

/** An open dialog: its body, a line for errors, and how to close it. */
export interface Dialog {
  body: HTMLElement;
  error: HTMLElement;
  close: () => void;
  /** Runs when the dialog closes, however it closes (Escape, the backdrop, or `close`). */
  onClose: (cleanup: () => void) => void;
}

/** Opens a modal with a title and content; Escape and the backdrop close it. */
export function openDialog(title: string, testId: string, ...content: HTMLElement[]): Dialog {
  const error = h("p", { class: "dialog-error", role: "alert" });
  const body = h("div", { class: "dialog", role: "dialog", "aria-label": title, "data-testid": testId }, h("h2", {}, title), ...content, error);
  const overlay = h("div", { class: "overlay" }, body);
  const cleanups: (() => void)[] = [];
  const close = () => {
    overlay.remove();
    document.removeEventListener("keydown", onKey);
    for (const cleanup of cleanups.splice(0)) cleanup();
  };
  const onKey = (event: KeyboardEvent) => {
    if (event.key === "Escape") close();
  };
  overlay.addEventListener("click", (event) => {
    if (event.target === overlay) close();
  });
  document.addEventListener("keydown", onKey);
  document.body.append(overlay);
  body.querySelector<HTMLElement>("input, select, textarea, button")?.focus();
  return { body, error, close, onClose: (cleanup) => cleanups.push(cleanup) };
}

/** Runs a dialog's action with its buttons disabled, showing a failure in the dialog. */
export async function busy(dialog: Dialog, action: () => Promise<void>): Promise<void> {
  const buttons = [...dialog.body.querySelectorAll("button")];
  for (const button of buttons) button.disabled = true;
  dialog.error.textContent = "";
  try {
    await action();
  } catch (error) {
    dialog.error.textContent = errorText(error);
  } finally {
    for (const button of buttons) button.disabled = false;
  }
}

/** "New group": a name and whether anyone may join by id. */
export function createGroupDialog(app: App): void {
  const name = h("input", { name: "name", maxlength: 64, required: true, placeholder: "Group name", autocomplete: "off" });
  const open = h("input", { type: "checkbox", name: "open", checked: true });
  const form = h(
    "form",
    {},
    h("label", {}, "Name", name),
    h("label", { class: "check" }, open, "Anyone with the group id may join"),
    h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary" }, "Create")),
  );
  const dialog = openDialog("New group", "create-group-dialog", form);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void busy(dialog, async () => {
      const info = await app.client.request("create_group", { name: name.value, open: open.checked });
      app.addGroup(info);
      dialog.close();
      app.openGroup(info.group);
    });
  });
}

/** "Join": an open group, by the id its members share. */
export function joinGroupDialog(app: App): void {
  const id = h("input", { name: "group", inputmode: "numeric", required: true, placeholder: "Group id", autocomplete: "off" });
  const form = h("form", {}, h("label", {}, "Group id", id), h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary" }, "Join")));
  const dialog = openDialog("Join a group", "join-group-dialog", form);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void busy(dialog, async () => {
      const group = Number(id.value.trim().replace(/^#/, ""));
      if (!Number.isSafeInteger(group) || group <= 0) throw new Error("A group id is a number.");
      const info = await app.client.request("join", { group });
      app.addGroup(info);
      dialog.close();
      app.openGroup(info.group);
    });
  });
}

/** Asks before leaving: the history stays behind. */
export function leaveGroupDialog(app: App, group: GroupId, name: string): void {
  const leave = h("button", { class: "danger", "data-testid": "confirm-leave" }, "Leave");
  const dialog = openDialog(`Leave ${name}?`, "leave-dialog", h("p", {}, "You will stop receiving its messages."), h("div", { class: "buttons" }, leave));
  leave.addEventListener("click", () => {
    void busy(dialog, async () => {
      await app.client.request("leave", { group });
      app.removeGroup(group);
      dialog.close();
    });
  });
}

/** "Red packet": money from the wallet, split into shares the members grab. */
export function redPacketDialog(app: App, group: GroupId): void {
  const amount = h("input", { name: "amount", inputmode: "decimal", required: true, placeholder: "0.00", autocomplete: "off" });
  const count = h("input", { name: "count", type: "number", min: 1, value: 1, required: true });
  const kind = h("select", { name: "kind" }, h("option", { value: "lucky" }, "Lucky (random shares)"), h("option", { value: "equal" }, "Equal shares"));
  const greeting = h("input", { name: "greeting", maxlength: 64, placeholder: "Best wishes!", autocomplete: "off" });
  const form = h(
    "form",
    {},
    h("p", { class: "hint" }, `Wallet: ${app.wallet === null ? "…" : money(app.wallet)}`),
    h("label", {}, "Total (¥)", amount),
    h("label", {}, "Shares", count),
    h("label", {}, "Split", kind),
    h("label", {}, "Greeting", greeting),
    h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary" }, "Send red packet")),
  );
  const dialog = openDialog("Red packet", "red-packet-dialog", form);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void busy(dialog, async () => {
      const total = parseMoney(amount.value);
      if (total === null || total <= 0) throw new Error("Enter an amount such as 8.88.");
      const body = { total, count: Number(count.value), kind: kind.value as "lucky" | "equal", greeting: greeting.value.trim() || undefined };
      await app.client.send({ group, type: "red_packet", body });
      dialog.close();
      void app.refreshWallet();
    });
  });
}

/** The wallet: balance and the latest ledger entries. */
export async function walletDialog(app: App): Promise<void> {
  const list = h("ul", { class: "ledger" });
  const dialog = openDialog("Wallet", "wallet-dialog", list);
  await busy(dialog, async () => {
    const wallet: WalletView = await app.client.request("wallet", {});
    app.setWallet(wallet.balance);
    replaceChildren(
      list,
      h("li", { class: "balance" }, "Balance ", h("strong", {}, money(wallet.balance))),
      ...wallet.entries
        .slice(-50)
        .reverse()
        .map((entry) => h("li", {}, h("span", {}, entry.kind.replaceAll("_", " ")), h("span", { class: entry.amount < 0 ? "minus" : "plus" }, money(entry.amount)))),
    );
  });
}

/** Where the browser says we are; face-to-face needs it. */
function position(): Promise<{ lat: number; lon: number }> {
  return new Promise((resolve, reject) => {
    if (!("geolocation" in navigator)) {
      reject(new Error("This browser cannot tell where you are."));
      return;
    }
    navigator.geolocation.getCurrentPosition(
      (where) => resolve({ lat: where.coords.latitude, lon: where.coords.longitude }),
      () => reject(new Error("Allow location access: face-to-face groups are for people within 50 m.")),
      { enableHighAccuracy: true, timeout: 15_000, maximumAge: 30_000 },
    );
  });
}

/**
 * "Face to face": start a session and show its code, or type a code someone shows. The
 * dialog lists who is in; anyone may turn the session into a group, which then opens.
 */
export function faceToFaceDialog(app: App): void {
  const code = h("input", { name: "code", inputmode: "numeric", maxlength: 4, placeholder: "4-digit code", autocomplete: "off" });
  const start = h("button", { type: "button", class: "primary", "data-testid": "start-face" }, "Start a session");
  const join = h("button", { type: "submit" }, "Join");
  const choose = h("form", { class: "face-choose" }, h("p", {}, "People standing together can make a group: one starts a session, the others type its code."), start, h("div", { class: "row" }, code, join));
  const dialog = openDialog("Face to face", "face-dialog", choose);

  const show = (session: FaceToFaceView) => {
    const people = h("ul", { class: "participants", "data-testid": "face-participants" });
    const renderPeople = (participants: FaceToFaceView["participants"]) => {
      for (const person of participants) app.profiles.remember(person);
      replaceChildren(people, ...participants.map((person) => h("li", {}, person.nickname)));
    };
    renderPeople(session.participants);
    const confirm = h("button", { class: "primary", "data-testid": "confirm-face" }, "Create the group");
    const seconds = h("span", {});
    const tick = () => {
      const left = Math.max(0, Math.round((session.expires_at - Date.now()) / 1000));
      seconds.textContent = `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
    };
    tick();
    const timer = setInterval(tick, 1000);
    replaceChildren(
      choose,
      h("p", { class: "face-code", "data-testid": "face-code" }, session.code),
      h("p", { class: "hint" }, "Expires in ", seconds),
      h("h3", {}, "Here now"),
      people,
      h("div", { class: "buttons" }, confirm),
    );
    const stopParticipants = app.client.on("push", (event) => {
      if (event.event === "face_to_face_participants" && event.session === session.session) renderPeople(event.participants);
      if (event.event === "face_to_face_group" && event.session === session.session) {
        app.addGroup(event.group);
        finish();
        app.openGroup(event.group.group);
      }
    });
    const finish = () => dialog.close();
    dialog.onClose(() => {
      clearInterval(timer);
      stopParticipants();
    });
    confirm.addEventListener("click", () => {
      void busy(dialog, async () => {
        const done = await app.client.request("confirm_face_to_face", { code: session.code, session: session.session });
        if (done.group !== null) {
          app.addGroup(done.group);
          finish();
          app.openGroup(done.group.group);
        }
      });
    });
  };

  start.addEventListener("click", () => {
    void busy(dialog, async () => show(await app.client.request("start_face_to_face", await position())));
  });
  choose.addEventListener("submit", (event) => {
    event.preventDefault();
    void busy(dialog, async () => {
      if (!/^\d{4}$/.test(code.value)) throw new TroupeError("invalid_field", "A code is 4 digits.");
      const session = await app.client.request("join_face_to_face", { code: code.value, ...(await position()) });
      if (session.group !== null) {
        // Confirmed already: we are in the group now.
        app.addGroup(session.group);
        dialog.close();
        app.openGroup(session.group.group);
      } else {
        show(session);
      }
    });
  });
}
