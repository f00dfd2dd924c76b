// Waiting for a condition in an asynchronous system: poll until it holds or time runs out,
// and then fail with what was seen last (never sleep a fixed time and hope).

import assert from "node:assert/strict";

/** Polls `read` until it returns `wanted` (deep equality), failing after `timeoutMs`. */
export async function expect<T>(read: () => Promise<T> | T, wanted: T, timeoutMs = 10_000, what = "value"): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: T | undefined;
  for (;;) {
    try {
      last = await read();
      assert.deepStrictEqual(last, wanted);
      return;
    } catch (error) {
      if (Date.now() > deadline) {
        throw new assert.AssertionError({ message: `${what} never became ${JSON.stringify(wanted)}; last ${JSON.stringify(last)} (${String(error).slice(0, 200)})`, actual: last, expected: wanted });
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Polls `check` until it returns true. */
export async function eventually(check: () => Promise<boolean> | boolean, what: string, timeoutMs = 10_000): Promise<void> {
  await expect(check, true, timeoutMs, what);
}
