// Media uploads (PROTOCOL.md §7a) go over plain HTTP beside the WebSocket, so a large file
// never holds up a connection's events. These helpers wrap `fetch` with the same errors as
// the WebSocket requests.

import { TroupeError } from "./client.ts";
import type { ErrorCode, MediaView, MediaKind } from "./protocol.ts";

/** The node's HTTP origin for its WebSocket address: `ws://h:p/ws` → `http://h:p`. */
export function httpOrigin(webSocketUrl: string): string {
  const url = new URL(webSocketUrl);
  url.protocol = url.protocol === "wss:" ? "https:" : "http:";
  return url.origin;
}

/** The kind to upload a file as, from its MIME type; the node checks the bytes anyway. */
export function mediaKindOf(mimeType: string): MediaKind {
  if (mimeType.startsWith("image/")) return "image";
  if (mimeType.startsWith("audio/")) return "audio";
  if (mimeType.startsWith("video/")) return "video";
  return "file";
}

/**
 * Uploads bytes as a media object of `kind` and returns its view; send it with
 * `send({type: kind, body: {media: view.media}})`. Fails with the node's error code
 * (`media_too_large`, `kind_mismatch`, `quota_exceeded`, ...).
 */
export async function uploadMedia(origin: string, token: string, kind: MediaKind, bytes: Blob | ArrayBuffer | Uint8Array): Promise<MediaView> {
  let response: Response;
  try {
    response = await fetch(`${origin}/media?kind=${encodeURIComponent(kind)}`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}` },
      body: bytes as BodyInit,
    });
  } catch (error) {
    throw new TroupeError("disconnected", `upload failed: ${String(error)}`);
  }
  const body: unknown = await response.json().catch(() => null);
  if (!response.ok) {
    const failure = body as { code?: ErrorCode; message?: string } | null;
    throw new TroupeError(failure?.code ?? "internal", failure?.message ?? `upload answered ${response.status}`);
  }
  return body as MediaView;
}
