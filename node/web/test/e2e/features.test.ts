// What troupe has beyond text, through the web page: pictures and files, red packets, and
// face-to-face groups (two phones at a café, 30 m apart). Also takes the README's
// screenshots of a group with all of them.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import type { Browser, Page } from "playwright-core";
import { TroupeClient } from "../../client/index.ts";
import { startNode, repoRoot, type TestNode } from "../support/node.ts";
import { launchBrowser, person, registerAndLogIn, horizontalOverflow, say, DESKTOP, PHONE } from "../support/browser.ts";
import { expect, eventually } from "../support/expect.ts";
import { gradientPng } from "../support/png.ts";

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

/** People stand at a café in Shanghai; a phone's position comes from the browser context. */
const CAFE = { latitude: 31.2304, longitude: 121.4737 };
/** About 30 m north-east of the café's table. */
const NEAR_CAFE = { latitude: 31.23058, longitude: 121.47391 };

function lastBubble(page: Page) {
  return page.locator("[data-testid=message] .bubble").last();
}

test("face-to-face, pictures, files and red packets in the browser", async () => {
  const alice = await person(browser, node.http, DESKTOP, { geolocation: CAFE, permissions: ["geolocation"] });
  const bob = await person(browser, node.http, PHONE, { geolocation: NEAR_CAFE, permissions: ["geolocation"] });
  await registerAndLogIn(alice.page, "dana", "dana-secret", "Dana");
  await registerAndLogIn(bob.page, "eli", "eli-secret", "Eli");

  // Face to face: Dana starts a session and reads out its code; Eli types it 30 m away.
  await alice.page.getByTestId("face-to-face").click();
  await alice.page.getByTestId("start-face").click();
  const code = (await alice.page.getByTestId("face-code").textContent()) ?? "";
  assert.match(code, /^\d{4}$/);
  await bob.page.getByTestId("face-to-face").click();
  await bob.page.locator("[data-testid=face-dialog] input[name=code]").fill(code);
  await bob.page.locator("[data-testid=face-dialog] button[type=submit]").click();
  // Both see both, the joiner's arrival pushed to the starter.
  await expect(() => bob.page.getByTestId("face-participants").locator("li").allTextContents(), ["Dana", "Eli"]);
  await expect(() => alice.page.getByTestId("face-participants").locator("li").allTextContents(), ["Dana", "Eli"]);
  // Eli turns it into a group; both land in it.
  await bob.page.getByTestId("confirm-face").click();
  await expect(() => bob.page.getByTestId("group-title").textContent(), `Face-to-face ${code}`);
  await expect(() => alice.page.getByTestId("group-title").textContent(), `Face-to-face ${code}`);
  await say(alice.page, "Welcome to the weekend trip group!");
  await expect(() => lastBubble(bob.page).textContent(), "Welcome to the weekend trip group!");
  await say(bob.page, "Thanks! Here is the view from the café");

  // A picture: uploaded over HTTP, sent by id, shown to the other through a signed URL.
  await bob.page.getByTestId("attach-input").setInputFiles({ name: "sunset.png", mimeType: "image/png", buffer: gradientPng(640, 400) });
  for (const page of [alice.page, bob.page]) {
    const image = page.getByTestId("image").last();
    await image.waitFor();
    await eventually(() => image.evaluate((element) => (element as HTMLImageElement).naturalWidth === 256), "the thumbnail (256 px wide) loads");
  }

  // A file: any bytes, kept as a file and offered for download.
  await alice.page.getByTestId("attach-input").setInputFiles({ name: "plan.txt", mimeType: "text/plain", buffer: Buffer.from("Saturday: hike. Sunday: lunch.\n") });
  await expect(async () => (await lastBubble(bob.page).textContent())?.startsWith("📎"), true);

  // A red packet: the operator credits Dana's wallet; she sends ¥8.88 in 2 lucky shares.
  const dana = new TroupeClient({ url: node.ws });
  const session = await dana.login("dana", "dana-secret");
  dana.close();
  await node.consoleCommand("credit", String(session.profile.user), "10000");
  await alice.page.getByTestId("wallet").click();
  await expect(() => alice.page.locator("[data-testid=wallet-dialog] .balance strong").textContent(), "¥100.00");
  await alice.page.keyboard.press("Escape");
  await alice.page.getByTestId("red-packet").click();
  const dialog = alice.page.getByTestId("red-packet-dialog");
  await dialog.locator("input[name=amount]").fill("8.88");
  await dialog.locator("input[name=count]").fill("2");
  await dialog.locator("input[name=greeting]").fill("Coffee is on me");
  await dialog.locator("button[type=submit]").click();
  await expect(() => alice.page.getByTestId("wallet").textContent(), "¥91.12");

  // Both open it; the two shares add up to the packet, and the wallets show them.
  const amounts: number[] = [];
  for (const page of [bob.page, alice.page]) {
    const packet = page.locator(".bubble.red_packet").last();
    await packet.getByTestId("grab").click();
    await expect(async () => (await packet.getByTestId("packet-status").textContent())?.startsWith("You got ¥"), true);
    const text = (await packet.getByTestId("packet-status").textContent()) ?? "";
    amounts.push(Math.round(Number(text.replace("You got ¥", "")) * 100));
  }
  assert.equal(amounts.reduce((a, b) => a + b, 0), 888, `shares ${amounts} add up to ¥8.88`);
  const [eliShare, danaShare] = amounts as [number, number];
  const yuan = (cents: number) => `¥${Math.floor(cents / 100)}.${String(cents % 100).padStart(2, "0")}`;
  await expect(() => bob.page.getByTestId("wallet").textContent(), yuan(eliShare));
  await expect(() => alice.page.getByTestId("wallet").textContent(), yuan(10000 - 888 + danaShare));
  // Once empty, the details list both grabs with one luckiest.
  await bob.page.locator(".bubble.red_packet").last().getByText("Details").click();
  await expect(() => bob.page.locator("[data-testid=packet-dialog] .grabs li").count(), 4);
  await bob.page.keyboard.press("Escape");

  await say(bob.page, "Next round is mine 🎉");
  await expect(() => lastBubble(alice.page).textContent(), "Next round is mine 🎉");
  assert.deepEqual(await horizontalOverflow(bob.page), [], "pictures and red packets fit a 390 px screen");

  // The README's screenshots: a laptop and a phone, the same group. They go to test-output/
  // on every run, and replace the README's with UPDATE_SCREENSHOTS=1 (so a test run does
  // not change tracked files).
  const shots = process.env.UPDATE_SCREENSHOTS === "1" ? join(repoRoot(), "docs", "screenshots") : join(repoRoot(), "node", "web", "test-output");
  mkdirSync(shots, { recursive: true });
  for (const page of [alice.page, bob.page]) {
    await page.getByTestId("messages").evaluate((element) => (element.scrollTop = element.scrollHeight));
    await page.waitForTimeout(100);
  }
  await alice.page.screenshot({ path: join(shots, "chat.png") });
  await bob.page.screenshot({ path: join(shots, "chat-phone.png") });

  assert.deepEqual(alice.errors, [], "no errors on Dana's page");
  assert.deepEqual(bob.errors, [], "no errors on Eli's page");
  await alice.context.close();
  await bob.context.close();
});

test("too far for the code: the page says so in words", async () => {
  const far = { latitude: CAFE.latitude + 0.0009, longitude: CAFE.longitude }; // about 100 m north
  const starter = await person(browser, node.http, PHONE, { geolocation: CAFE, permissions: ["geolocation"] });
  const stranger = await person(browser, node.http, PHONE, { geolocation: far, permissions: ["geolocation"] });
  await registerAndLogIn(starter.page, "fay", "fay-secret");
  await registerAndLogIn(stranger.page, "gus", "gus-secret");
  await starter.page.getByTestId("face-to-face").click();
  await starter.page.getByTestId("start-face").click();
  const code = (await starter.page.getByTestId("face-code").textContent()) ?? "";
  await stranger.page.getByTestId("face-to-face").click();
  await stranger.page.locator("[data-testid=face-dialog] input[name=code]").fill(code);
  await stranger.page.locator("[data-testid=face-dialog] button[type=submit]").click();
  await expect(() => stranger.page.locator("[data-testid=face-dialog] .dialog-error").textContent(), "That session started more than 50 m from here.");
  await starter.context.close();
  await stranger.context.close();
});
