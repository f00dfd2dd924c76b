// How numbers, times and failures read on screen.

import { TroupeError } from "../client/index.ts";

/** Cents as money: 1234 → "¥12.34". */
export function money(cents: number): string {
  const sign = cents < 0 ? "-" : "";
  const abs = Math.abs(cents);
  return `${sign}¥${Math.floor(abs / 100)}.${String(abs % 100).padStart(2, "0")}`;
}

/** "12.34" or "12" typed by a user → 1234 cents, or null when it is not an amount. */
export function parseMoney(text: string): number | null {
  const match = /^\s*(\d{1,7})(?:\.(\d{1,2}))?\s*$/.exec(text);
  if (match === null) return null;
  return Number(match[1]) * 100 + Number((match[2] ?? "0").padEnd(2, "0"));
}

/** A message time: "14:05" today, "3 Nov 14:05" before. */
export function clock(ts: number): string {
  const date = new Date(ts);
  const time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  if (date.toDateString() === new Date().toDateString()) return time;
  return `${date.toLocaleDateString([], { day: "numeric", month: "short" })} ${time}`;
}

/** A size in bytes: "1.4 MB". */
export function bytes(size: number): string {
  if (size < 1024) return `${size} B`;
  if (size < 1024 * 1024) return `${(size / 1024).toFixed(1)} KB`;
  if (size < 1024 * 1024 * 1024) return `${(size / 1024 / 1024).toFixed(1)} MB`;
  return `${(size / 1024 / 1024 / 1024).toFixed(1)} GB`;
}

const FRIENDLY: Partial<Record<string, string>> = {
  invalid_credentials: "Wrong username or password.",
  username_taken: "That username is taken.",
  not_found: "Not found, or you are not a member.",
  group_full: "The group is full.",
  already_member: "You are already a member.",
  owner_cannot_leave: "The owner cannot leave: transfer ownership or dissolve the group first.",
  forbidden: "Your role does not allow that.",
  insufficient_funds: "Your wallet does not hold that much.",
  too_far: "That session started more than 50 m from here.",
  expired: "That has expired.",
  media_too_large: "The file is too large.",
  quota_exceeded: "Your media quota is used up.",
  kind_mismatch: "The file's content does not match its type.",
  too_many_connections: "You are connected from too many places: close another tab or device.",
  rate_limited: "Slow down a little, then try again.",
  overloaded: "The server is very busy; try again in a moment.",
  disconnected: "The connection dropped; try again.",
  timeout: "No answer from the server; try again.",
  unavailable: "The server is busy; try again.",
};

/** A failure as a sentence for the user; `invalid_field` keeps the node's own explanation. */
export function errorText(error: unknown): string {
  if (error instanceof TroupeError) {
    if (error.code === "invalid_field" || error.code === "text_too_long") return error.message;
    return FRIENDLY[error.code] ?? `${error.message} (${error.code})`;
  }
  if (error instanceof GeolocationPositionErrorLike) return "Your position is not available.";
  return String(error);
}

/** A browser's GeolocationPositionError, without relying on the global existing in tests. */
class GeolocationPositionErrorLike {
  static [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === "object" && value !== null && "code" in value && "PERMISSION_DENIED" in value;
  }
}
