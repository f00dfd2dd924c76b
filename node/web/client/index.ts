// troupe's client library: typed frames (protocol.ts), a connection that stays up and keeps
// every group's messages in order (client.ts, grouplog.ts), and media uploads (media.ts).

export * from "./protocol.ts";
export { TroupeClient, TroupeError, randomId } from "./client.ts";
export type { ClientEvents, ClientErrorCode, ClientOptions, ConnectionState, WebSocketLike } from "./client.ts";
export { GroupLog } from "./grouplog.ts";
export type { FetchAfter } from "./grouplog.ts";
export { backoffDelay, DEFAULT_BACKOFF } from "./backoff.ts";
export type { BackoffOptions } from "./backoff.ts";
export { httpOrigin, mediaKindOf, uploadMedia } from "./media.ts";
export { unreadLabel } from "./unread.ts";
