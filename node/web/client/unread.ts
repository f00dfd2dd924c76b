// Unread counts as PROTOCOL.md §6.2 defines them: capped at 100, shown as "99+" there.

import { UNREAD_CAP } from "./protocol.ts";

/** The badge text for an unread count: empty for none, "99+" at the cap. */
export function unreadLabel(unread: number): string {
  if (unread <= 0) return "";
  return unread >= UNREAD_CAP ? "99+" : String(unread);
}
