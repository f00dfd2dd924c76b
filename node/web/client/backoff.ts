// Reconnect delays. A server restart drops every client at once; exponential growth keeps
// them from hammering it, and jitter keeps them from coming back in one wave.

/** How long to wait before reconnect attempts. */
export interface BackoffOptions {
  /** The first delay, in milliseconds. */
  initialDelayMs: number;
  /** The largest delay, in milliseconds. */
  maxDelayMs: number;
}

/** Defaults fit a phone: quick first retry, at most half a minute between tries. */
export const DEFAULT_BACKOFF: BackoffOptions = { initialDelayMs: 500, maxDelayMs: 30_000 };

/**
 * The delay before reconnect attempt `attempt` (0 for the first): doubling from
 * `initialDelayMs` up to `maxDelayMs`, then a random point in its upper half ("equal
 * jitter"), so no two clients wait the same and none waits much less than the curve.
 */
export function backoffDelay(attempt: number, options: BackoffOptions = DEFAULT_BACKOFF, random: () => number = Math.random): number {
  const exponent = Math.min(Math.max(attempt, 0), 30);
  const ceiling = Math.min(options.maxDelayMs, options.initialDelayMs * 2 ** exponent);
  return Math.round(ceiling / 2 + (ceiling / 2) * random());
}
