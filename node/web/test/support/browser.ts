// Headless Chromium for the end-to-end tests: Debian's /usr/bin/chromium driven by
// playwright-core (no browser download), with the flags a machine without outside network
// needs.

import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";
import { expect } from "./expect.ts";

/** The browser binary: CHROMIUM names another one. */
export const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";

/** Launches headless Chromium. */
export function launchBrowser(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

/** A phone-sized screen, as the issue asks the client to handle. */
export const PHONE = { width: 390, height: 844 };
/** A laptop screen. */
export const DESKTOP = { width: 1280, height: 800 };

/** A browser context (one person) with the page open and page errors collected. */
export async function person(browser: Browser, origin: string, viewport = DESKTOP, options: Parameters<Browser["newContext"]>[0] = {}): Promise<{ context: BrowserContext; page: Page; errors: string[] }> {
  const context = await browser.newContext({ viewport, ...options });
  const page = await context.newPage();
  const errors: string[] = [];
  page.on("pageerror", (error) => errors.push(error.message));
  page.on("console", (message) => {
    if (message.type() === "error") errors.push(message.text());
  });
  await page.goto(origin);
  return { context, page, errors };
}

/** Registers through the login form and waits for the chat screen. */
export async function registerAndLogIn(page: Page, username: string, password: string, nickname?: string): Promise<void> {
  await page.getByTestId("username").fill(username);
  await page.getByTestId("password").fill(password);
  if (nickname !== undefined) await page.getByTestId("nickname").fill(nickname);
  await page.getByTestId("register").click();
  await page.getByTestId("new-group").waitFor();
  await expect(() => page.getByTestId("me").textContent(), nickname ?? username);
}

/** Whether anything on the page is wider than the window (a phone layout must not be). */
export function horizontalOverflow(page: Page): Promise<string[]> {
  return page.evaluate(() => {
    const width = document.documentElement.clientWidth;
    const wide: string[] = [];
    if (document.documentElement.scrollWidth > width) wide.push(`document ${document.documentElement.scrollWidth} > ${width}`);
    for (const element of document.querySelectorAll<HTMLElement>("body *")) {
      const box = element.getBoundingClientRect();
      if (box.width === 0 && box.height === 0) continue;
      if (box.right > width + 0.5 || box.left < -0.5) wide.push(`${element.tagName.toLowerCase()}.${element.className} spans ${Math.round(box.left)}..${Math.round(box.right)} of ${width}`);
    }
    return wide;
  });
}

/** Creates a group through the "New group" dialog; returns its id as the page shows it. */
export async function createGroup(page: Page, name: string): Promise<string> {
  await page.getByTestId("new-group").click();
  await page.locator("[data-testid=create-group-dialog] input[name=name]").fill(name);
  await page.locator("[data-testid=create-group-dialog] button[type=submit]").click();
  await expect(() => page.getByTestId("group-title").textContent(), name);
  const group = await page.locator("[data-testid=group-item].current").getAttribute("data-group");
  if (group === null || !/^\d+$/.test(group)) throw new Error(`the open group has no id: ${group}`);
  return group;
}

/** Joins a group by id through the "Join" dialog and waits until it is open. */
export async function joinGroup(page: Page, group: string, name: string): Promise<void> {
  await page.getByTestId("join-group").click();
  await page.locator("[data-testid=join-group-dialog] input[name=group]").fill(group);
  await page.locator("[data-testid=join-group-dialog] button[type=submit]").click();
  await expect(() => page.getByTestId("group-title").textContent(), name);
}

/** Types a message into the open group and sends it with Enter. */
export async function say(page: Page, text: string): Promise<void> {
  await page.getByTestId("composer").fill(text);
  await page.getByTestId("composer").press("Enter");
}
