// The resync rule of PROTOCOL.md §6.1, per group: hand messages on in seq order, each once,
// whatever mix of live events, `sync` pages and `history` pages brought them.
//
// Live events and catch-up pages overlap (a message can arrive live while the page that also
// holds it is on its way) and can leave gaps (the connection dropped between two events).
// Keeping one cursor per group, `last`, the highest seq handed on, settles both: a seq at or
// below it is a duplicate, a seq beyond `last + 1` waits until the gap before it is filled
// from `history`.
//
// Retention deletes a group's oldest messages on the node; `history` and `sync` say where the
// group now starts (`first_seq`). Seqs below it are deleted, not missing: the cursor jumps to
// `first_seq - 1`, or the gap walk would ask for them forever.

import type { GroupId, HistoryPage, Message, Seq } from "./protocol.ts";

/** Reads the messages of a group after a seq (the `history` op with `after`). */
export type FetchAfter = (group: GroupId, after: Seq) => Promise<HistoryPage>;

interface Cursor {
  /** The highest seq handed on. */
  last: Seq;
  /** Messages beyond a gap, by seq, waiting for the gap to be filled. */
  waiting: Map<Seq, Message>;
  /** Whether a `history` walk is filling this group's gap now. */
  filling: boolean;
  /** A walk was asked for while one ran (`has_more` again): walk once more after it. */
  again: boolean;
}

/** Seq cursors of every group the client follows, and the gap filling between them. */
export class GroupLog {
  private readonly cursors = new Map<GroupId, Cursor>();
  /** While set, gaps wait: a `sync` is on its way and will fill them in one go. */
  private paused = false;

  /**
   * @param fetchAfter reads history after a seq; called when a gap needs filling.
   * @param deliver receives every message once, in seq order within its group.
   * @param onFillError hears about a failed gap fill; the caller retries with
   *   {@link fetchMore} (the next message or resync would also retry it).
   */
  constructor(
    private readonly fetchAfter: FetchAfter,
    private readonly deliver: (message: Message) => void,
    private readonly onFillError: (group: GroupId, error: unknown) => void = () => {},
  ) {}

  /** The groups followed and the last seq held of each: what `sync` wants. */
  cursorsForSync(): { group: GroupId; after: Seq }[] {
    return [...this.cursors].map(([group, cursor]) => ({ group, after: cursor.last }));
  }

  /** The last seq handed on for a group, or undefined when it is not followed. */
  last(group: GroupId): Seq | undefined {
    return this.cursors.get(group)?.last;
  }

  /**
   * Starts following a group from `lastSeq`: messages up to it count as history (the app
   * pages them with `history` `before`), later ones are delivered. A followed group keeps
   * its cursor.
   */
  follow(group: GroupId, lastSeq: Seq): void {
    if (!this.cursors.has(group)) {
      this.cursors.set(group, { last: lastSeq, waiting: new Map(), filling: false, again: false });
    }
  }

  /**
   * The node keeps nothing of `group` below `firstSeq` (retention deleted it; a `history`
   * page or `sync` group said so). Moves the cursor up to `firstSeq - 1`, so the gap walk
   * stops asking for those seqs, and drops what waits below `firstSeq`: it is deleted for
   * everyone, so it is not handed on either. Messages waiting from `firstSeq` on follow.
   * A cursor already at or past `firstSeq - 1` stays where it is.
   */
  discardBefore(group: GroupId, firstSeq: Seq): void {
    const cursor = this.cursors.get(group);
    if (cursor !== undefined) this.skipDeleted(cursor, firstSeq);
  }

  /** Stops following a group (left, removed, dissolved). */
  forget(group: GroupId): void {
    this.cursors.delete(group);
  }

  /** Gaps found from now on wait for {@link resume} (a `sync` is about to fill them). */
  pause(): void {
    this.paused = true;
  }

  /** Fills every gap found while paused, and from now on fills gaps as they appear. */
  resume(): void {
    this.paused = false;
    for (const [group, cursor] of this.cursors) {
      if (cursor.waiting.size > 0) this.fill(group, cursor);
    }
  }

  /**
   * Takes a message from anywhere (a live event, `sync`, `history`). A message of a group not
   * followed yet starts following it just before its seq, so a group joined a moment ago
   * shows its first message.
   */
  accept(message: Message): void {
    this.follow(message.group, message.seq - 1);
    const cursor = this.cursors.get(message.group);
    if (cursor === undefined || message.seq <= cursor.last) return;
    cursor.waiting.set(message.seq, message);
    this.drain(cursor);
    if (cursor.waiting.size > 0 && !this.paused) this.fill(message.group, cursor);
  }

  /**
   * Marks that `has_more` messages follow `cursor.last` (a `sync` page was cut short), so
   * the group is walked with `history` even if no later message arrives to show the gap.
   */
  fetchMore(group: GroupId): void {
    const cursor = this.cursors.get(group);
    if (cursor !== undefined) this.fill(group, cursor, true);
  }

  /** See {@link discardBefore}. `firstSeq` is undefined from a node older than retention. */
  private skipDeleted(cursor: Cursor, firstSeq: Seq | undefined): void {
    if (firstSeq === undefined || firstSeq - 1 <= cursor.last) return;
    cursor.last = firstSeq - 1;
    for (const seq of cursor.waiting.keys()) {
      if (seq < firstSeq) cursor.waiting.delete(seq);
    }
    this.drain(cursor);
  }

  private drain(cursor: Cursor): void {
    for (;;) {
      const next = cursor.waiting.get(cursor.last + 1);
      if (next === undefined) break;
      cursor.waiting.delete(next.seq);
      cursor.last = next.seq;
      this.deliver(next);
    }
    for (const seq of cursor.waiting.keys()) {
      if (seq <= cursor.last) cursor.waiting.delete(seq);
    }
  }

  /** Walks `history` after the cursor until the gap is closed and nothing more is there. */
  private fill(group: GroupId, cursor: Cursor, force = false): void {
    if (!force && cursor.waiting.size === 0) return;
    if (cursor.filling) {
      // The running walk may have read its last page already; make sure it looks again.
      if (force) cursor.again = true;
      return;
    }
    cursor.filling = true;
    cursor.again = false;
    const walk = async (): Promise<void> => {
      for (;;) {
        if (this.cursors.get(group) !== cursor) return;
        const after = cursor.last;
        const page = await this.fetchAfter(group, after);
        // Forgotten while the page was on its way: nothing more of this group is handed on.
        if (this.cursors.get(group) !== cursor) return;
        // Before the page's messages, so they find the cursor where they follow on from it.
        this.skipDeleted(cursor, page.first_seq);
        for (const message of page.messages) {
          if (message.seq > cursor.last) cursor.waiting.set(message.seq, message);
        }
        this.drain(cursor);
        if (!page.has_more && cursor.waiting.size === 0) return;
        // A page that moved the cursor nothing means history holds nothing at `after + 1`
        // though `first_seq` did not say so (a hole in the log, or a node too old to send
        // it): skip to the first message that exists, in the page or held, rather than
        // ask for the same page forever. With `has_more` too: the page then starts past the
        // hole. Each turn of the loop moves the cursor, so the walk ends.
        if (cursor.last === after) {
          if (cursor.waiting.size === 0) return;
          cursor.last = Math.min(...cursor.waiting.keys()) - 1;
          this.drain(cursor);
          if (!page.has_more && cursor.waiting.size === 0) return;
        }
      }
    };
    walk().then(
      () => {
        cursor.filling = false;
        if (cursor.again && this.cursors.get(group) === cursor) this.fill(group, cursor, true);
      },
      (error: unknown) => {
        cursor.filling = false;
        cursor.again = false;
        this.onFillError(group, error);
      },
    );
  }
}
