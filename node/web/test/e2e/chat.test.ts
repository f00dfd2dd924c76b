// The web client end to end: two people in two browser contexts (one on a laptop screen,
// one on a phone screen) register, make a group, chat, one goes offline and comes back to
// what they missed, badges count (99+ past the cap) and clear, history loads as they scroll
// up, members show, and one leaves. Real node, real WebSocket, real Chromium.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import type { Browser, Page } from "playwright-core";
import { TroupeClient } from "../../client/index.ts";
import { startNode, type TestNode } from "../support/node.ts";
import { launchBrowser, person, registerAndLogIn, horizontalOverflow, createGroup, joinGroup, say, DESKTOP, PHONE } from "../support/browser.ts";
import { expect } from "../support/expect.ts";

let node: TestNode;
let browser: Browser;

before(async () => {
  node = await startNode();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await node?.stop();
});

/** The texts of the messages shown in the open group, in order. */
function shownTexts(page: Page): Promise<string[]> {
  return page.locator("[data-testid=message] .bubble").allTextContents();
}

/** The badge of a group in the list ("" when none). */
async function badge(page: Page, group: string): Promise<string> {
  const item = page.locator(`[data-testid=group-item][data-group="${group}"]`);
  if ((await item.count()) === 0) return "(no such group)";
  const badges = item.locator("[data-testid=unread]");
  return (await badges.count()) === 0 ? "" : ((await badges.textContent()) ?? "");
}

test("two people chat, one goes offline and catches up, badges count and clear", async () => {
  const alice = await person(browser, node.http, DESKTOP);
  const bob = await person(browser, node.http, PHONE);
  await registerAndLogIn(alice.page, "alice", "wonderland", "Alice");
  await registerAndLogIn(bob.page, "bob", "builder42", "Bob");

  // Alice makes an open group; its id is on the header for others to join with.
  const group = await createGroup(alice.page, "lobby");

  // Bob joins it by id, from the phone.
  await joinGroup(bob.page, group, "lobby");

  // They exchange messages; each sees both, in order, live.
  await say(alice.page, "hi Bob");
  await expect(() => shownTexts(bob.page), ["hi Bob"]);
  await bob.page.getByTestId("composer").fill("hello Alice");
  await bob.page.getByTestId("send").click();
  await expect(() => shownTexts(alice.page), ["hi Bob", "hello Alice"]);
  await expect(() => shownTexts(bob.page), ["hi Bob", "hello Alice"]);
  const names = await alice.page.locator("[data-testid=message] .meta .name").allTextContents();
  assert.deepEqual(names, ["Alice", "Bob"], "senders are shown by nickname");

  // Members: both, the owner marked.
  await bob.page.getByTestId("show-members").click();
  await expect(async () => (await bob.page.locator("[data-testid=member]").allTextContents()).sort(), ["Aliceowner", "Bob"]);
  await bob.page.getByTestId("show-members").click();

  // Bob goes back to his list and his phone goes offline.
  await bob.page.getByTestId("back").click();
  await bob.context.setOffline(true);
  await expect(() => bob.page.getByTestId("connection").getAttribute("data-state"), "offline");

  // Alice writes while he is away: 3 from the page, then 120 more through the client library
  // (the badge caps at 99+).
  for (const text of ["are you there?", "we moved the meeting", "see you at 5"]) {
    await say(alice.page, text);
  }
  await expect(async () => (await shownTexts(alice.page)).length, 5);

  // Bob comes back: the client reconnects, resyncs, and the badge counts what he missed.
  await bob.context.setOffline(false);
  await expect(() => bob.page.getByTestId("connection").getAttribute("data-state"), "ready");
  await expect(() => badge(bob.page, group), "3");

  // He opens the group: what he missed is there, once each, in order; the badge clears.
  await bob.page.locator(`[data-testid=group-item][data-group="${group}"]`).click();
  await expect(() => shownTexts(bob.page), ["hi Bob", "hello Alice", "are you there?", "we moved the meeting", "see you at 5"]);
  await bob.page.getByTestId("back").click();
  await expect(() => badge(bob.page, group), "");

  // Offline again while 120 messages come: past the cap the badge says 99+.
  await bob.context.setOffline(true);
  await expect(() => bob.page.getByTestId("connection").getAttribute("data-state"), "offline");
  const library = new TroupeClient({ url: node.ws });
  await library.login("alice", "wonderland");
  await Promise.all(Array.from({ length: 120 }, (_, i) => library.send({ group: Number(group), type: "text", body: `burst ${i + 1}` })));
  library.close();
  await bob.context.setOffline(false);
  await expect(() => badge(bob.page, group), "99+", 15_000);

  // Opening the group shows the newest page; scrolling up loads older pages until the
  // beginning, with every message once and in order.
  await bob.page.locator(`[data-testid=group-item][data-group="${group}"]`).click();
  await expect(async () => (await shownTexts(bob.page)).at(-1), "burst 120");
  const messages = bob.page.getByTestId("messages");
  for (let i = 0; i < 20; i++) {
    const texts = await shownTexts(bob.page);
    if (texts[0] === "hi Bob") break;
    await messages.evaluate((element) => (element.scrollTop = 0));
    await bob.page.waitForTimeout(150);
  }
  const all = await shownTexts(bob.page);
  assert.deepEqual(all, ["hi Bob", "hello Alice", "are you there?", "we moved the meeting", "see you at 5", ...Array.from({ length: 120 }, (_, i) => `burst ${i + 1}`)]);
  const seqs = await bob.page.locator("[data-testid=message]").evaluateAll((rows) => rows.map((row) => Number(row.getAttribute("data-seq"))));
  assert.deepEqual(seqs, Array.from({ length: 125 }, (_, i) => i + 1), "seqs 1..125 without gaps or doubles");
  await bob.page.getByTestId("back").click();
  await expect(() => badge(bob.page, group), "");

  // A long unbroken line must wrap on the phone, not push the page sideways.
  await say(alice.page, "https://example.com/" + "a".repeat(300));
  await bob.page.locator(`[data-testid=group-item][data-group="${group}"]`).click();
  await expect(async () => (await shownTexts(bob.page)).at(-1)?.length, 320);
  assert.deepEqual(await horizontalOverflow(bob.page), [], "nothing overflows at 390x844 (chat)");
  await bob.page.getByTestId("back").click();
  assert.deepEqual(await horizontalOverflow(bob.page), [], "nothing overflows at 390x844 (list)");

  // Bob leaves: the group is gone from his list, and Alice sees one member.
  await bob.page.locator(`[data-testid=group-item][data-group="${group}"]`).click();
  await bob.page.getByTestId("leave").click();
  await bob.page.getByTestId("confirm-leave").click();
  await expect(() => badge(bob.page, group), "(no such group)");
  await expect(async () => (await alice.page.locator(".chat-header small").textContent())?.endsWith("1 member"), true);

  assert.deepEqual(alice.errors, [], "no errors on Alice's page");
  assert.deepEqual(bob.errors, [], "no errors on Bob's page");
  await alice.context.close();
  await bob.context.close();
});

test("a reload resumes the session from the saved token; logging out forgets it", async () => {
  const carol = await person(browser, node.http, PHONE);
  await registerAndLogIn(carol.page, "carol", "carolpass1");
  await carol.page.reload();
  await expect(() => carol.page.getByTestId("me").textContent(), "carol");
  await carol.page.getByTestId("logout").click();
  await carol.page.getByTestId("username").waitFor();
  await carol.page.reload();
  await carol.page.getByTestId("username").waitFor();
  // Wrong passwords are refused in words.
  await carol.page.getByTestId("username").fill("carol");
  await carol.page.getByTestId("password").fill("not-her-password");
  await carol.page.getByTestId("login").click();
  await expect(() => carol.page.getByTestId("login-error").textContent(), "Wrong username or password.");
  await carol.context.close();
});

test("the page rides out a node crash: kill -9, restart, and the chat goes on without loss", async () => {
  const hana = await person(browser, node.http, DESKTOP);
  const ivan = await person(browser, node.http, DESKTOP);
  await registerAndLogIn(hana.page, "hana", "hana-secret");
  await registerAndLogIn(ivan.page, "ivan", "ivan-secret");
  const group = await createGroup(hana.page, "ops");
  await joinGroup(ivan.page, group, "ops");
  await say(hana.page, "before the crash");
  await expect(() => shownTexts(ivan.page), ["before the crash"]);

  // The node dies without a word and comes back on the same port and data.
  await node.kill9();
  for (const page of [hana.page, ivan.page]) {
    await expect(async () => ["offline", "connecting"].includes((await page.getByTestId("connection").getAttribute("data-state")) ?? ""), true);
  }
  await node.restart();
  // Hana types while her page is still reconnecting: the send waits in the outbox and goes
  // out once, after the resync.
  await say(hana.page, "after the crash");
  for (const page of [hana.page, ivan.page]) {
    await expect(() => page.getByTestId("connection").getAttribute("data-state"), "ready", 20_000);
  }
  await expect(() => shownTexts(ivan.page), ["before the crash", "after the crash"], 20_000);
  await expect(() => shownTexts(hana.page), ["before the crash", "after the crash"]);
  assert.equal(await hana.page.getByTestId("pending-message").count(), 0, "nothing left pending");
  // A WebSocket that cannot connect logs an error in the console; nothing else may.
  for (const errors of [hana.errors, ivan.errors]) {
    assert.deepEqual(errors.filter((text) => !text.includes("WebSocket connection")), []);
  }
  await hana.context.close();
  await ivan.context.close();
});
