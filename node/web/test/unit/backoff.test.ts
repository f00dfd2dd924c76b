// Reconnect delays (backoff.ts) and unread badges (unread.ts): the small pure rules a
// client's behaviour under a node restart and its badge text rest on.
import { test } from "node:test";
import assert from "node:assert/strict";
import { backoffDelay, DEFAULT_BACKOFF, type BackoffOptions } from "../../client/backoff.ts";
import { unreadLabel } from "../../client/unread.ts";

const options: BackoffOptions = { initialDelayMs: 100, maxDelayMs: 5_000 };
const low = () => 0;
const high = () => 1;

test("attempt 0 waits about the initial delay: between half of it and all of it", () => {
  assert.equal(backoffDelay(0, options, low), 50);
  assert.equal(backoffDelay(0, options, high), 100);
  assert.equal(backoffDelay(0, DEFAULT_BACKOFF, high), DEFAULT_BACKOFF.initialDelayMs);
});

test("the ceiling doubles per attempt and stops at maxDelayMs; delays stay in its upper half", () => {
  const ceilings = [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000];
  ceilings.forEach((ceiling, attempt) => {
    assert.equal(backoffDelay(attempt, options, high), ceiling, `attempt ${attempt} at most the ceiling`);
    assert.equal(backoffDelay(attempt, options, low), ceiling / 2, `attempt ${attempt} at least half of it`);
    for (const r of [0.1, 0.5, 0.9, 0.999]) {
      const delay = backoffDelay(attempt, options, () => r);
      assert.ok(delay >= ceiling / 2 && delay <= ceiling, `attempt ${attempt}, random ${r}: ${delay} outside [${ceiling / 2}, ${ceiling}]`);
    }
  });
  // Huge attempt counts (a node down for a day) neither overflow nor exceed the cap.
  assert.equal(backoffDelay(10_000, options, high), 5_000);
  assert.equal(backoffDelay(10_000, DEFAULT_BACKOFF, high), DEFAULT_BACKOFF.maxDelayMs);
  assert.equal(backoffDelay(-3, options, high), 100, "a negative attempt counts as the first");
});

test("jitter spreads clients that dropped together", () => {
  const delays = [0, 0.25, 0.5, 0.75, 1].map((r) => backoffDelay(4, options, () => r));
  assert.deepEqual(delays, [800, 1000, 1200, 1400, 1600], "the random value moves the delay across the upper half");
  const spread = new Set(Array.from({ length: 50 }, () => backoffDelay(3, options)));
  assert.ok(spread.size > 10, `Math.random by default: ${spread.size} distinct delays of 50`);
});

test("unread badges: nothing for 0, the count up to 99, 99+ at the cap", () => {
  assert.equal(unreadLabel(0), "");
  assert.equal(unreadLabel(-1), "");
  assert.equal(unreadLabel(1), "1");
  assert.equal(unreadLabel(5), "5");
  assert.equal(unreadLabel(99), "99");
  assert.equal(unreadLabel(100), "99+");
  assert.equal(unreadLabel(101), "99+");
  assert.equal(unreadLabel(5000), "99+");
});
