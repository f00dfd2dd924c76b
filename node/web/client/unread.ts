// Unread counts as PROTOCOL.md §6.2 defines them: capped at 100, shown as "99+" there.

/** The node caps unread counts here; a client counting live messages caps at it too. */
export const UNREAD_CAP = 100;

/** The badge text for an unread count: empty for none, "99+" at the cap. */
export function unreadLabel(unread: number): string {
  if (unread <= 0) return "";
  return unread >= UNREAD_CAP ? "99+" : String(unread);
}
