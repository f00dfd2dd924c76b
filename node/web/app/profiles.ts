// Names for user ids. Messages and member lists carry ids only; a profile is fetched once
// per user and every element showing that user is updated when it arrives.

import type { Profile, TroupeClient, UserId } from "../client/index.ts";

/** A cache of profiles, filled on demand. */
export class Profiles {
  private readonly known = new Map<UserId, Profile>();
  private readonly asked = new Set<UserId>();
  private readonly waiting = new Map<UserId, Set<HTMLElement>>();

  constructor(private readonly client: TroupeClient) {}

  /** Remembers a profile the app already has (its own, or from a face-to-face list). */
  remember(profile: Pick<Profile, "user" | "nickname"> & Partial<Profile>): void {
    const full: Profile = { username: "", avatar_url: "", ...profile };
    this.known.set(full.user, full);
    for (const element of this.waiting.get(full.user) ?? []) element.textContent = full.nickname;
    this.waiting.delete(full.user);
  }

  /** An element that shows the user's nickname (their id until the profile arrives). */
  name(user: UserId): HTMLElement {
    const element = document.createElement("span");
    element.className = "name";
    const profile = this.known.get(user);
    if (profile !== undefined) {
      element.textContent = profile.nickname;
      return element;
    }
    element.textContent = `user ${user}`;
    let set = this.waiting.get(user);
    if (set === undefined) {
      set = new Set();
      this.waiting.set(user, set);
    }
    set.add(element);
    if (!this.asked.has(user)) {
      this.asked.add(user);
      this.client.request("profile", { user }).then(
        (profile) => this.remember(profile),
        () => this.asked.delete(user),
      );
    }
    return element;
  }
}
