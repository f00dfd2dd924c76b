// Keeps client/protocol.ts from drifting: its runtime lists (ops, error codes, close
// reasons, events, enums) must equal what the Rust schema declares and what PROTOCOL.md
// documents. The shapes of the types are checked separately, by scripts/doc-examples.mjs
// running every doc example through `tsc`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  ADD_STATUSES,
  CLOSE_REASONS,
  CLOSE_STATUS_CODES,
  ERROR_CODES,
  GRAB_STATUSES,
  LEAVE_REASONS,
  LEDGER_KINDS,
  MEDIA_KINDS,
  MESSAGE_TYPES,
  OPS,
  PUSH_EVENTS,
  RED_PACKET_KINDS,
  RED_PACKET_STATUSES,
  ROLES,
} from "../../client/protocol";

/**
 * The repository root: the first directory above this file that holds `schema/`. Walking
 * up works both from the source (test/unit/) and from the bundle (build/test/unit/).
 */
function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, "schema", "PROTOCOL.md"))) return dir;
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`no schema/PROTOCOL.md above ${fileURLToPath(import.meta.url)}`);
    dir = parent;
  }
}

const root = repoRoot();
const read = (path: string): string => readFileSync(join(root, path), "utf8");
const doc = read("schema/PROTOCOL.md");
const clientRs = read("schema/src/frames/client.rs");
const serverRs = read("schema/src/frames/server.rs");
const framesRs = read("schema/src/frames/mod.rs");
const errorRs = read("schema/src/error.rs");
const recordsRs = read("schema/src/records.rs");
const protocolTs = read("node/web/client/protocol.ts");

/** The text from the line that starts with `start` to the next line that is exactly `}`. */
function rustBlock(source: string, start: string): string {
  const from = source.indexOf(start);
  assert.notEqual(from, -1, `no \`${start}\` in the Rust source`);
  const to = source.indexOf("\n}", from);
  assert.notEqual(to, -1, `\`${start}\` never closes`);
  return source.slice(from, to);
}

/** `MalformedFrame` -> `malformed_frame`, as serde's `rename_all = "snake_case"` does. */
function snakeCase(variant: string): string {
  return variant.replace(/(?<=[a-z0-9])([A-Z])/g, "_$1").toLowerCase();
}

/**
 * The wire names of a `rename_all = "snake_case"` enum, in declaration order. Variants are
 * the identifiers at the enum's first indentation level; their fields are deeper.
 */
function snakeCaseVariants(source: string, name: string): string[] {
  const start = source.indexOf(`pub enum ${name} {`);
  assert.notEqual(start, -1, `no enum ${name}`);
  const attributes = source.slice(source.lastIndexOf("#[derive", start), start);
  assert.match(attributes, /rename_all = "snake_case"/, `${name} is not renamed to snake_case; read its names some other way`);
  const body = rustBlock(source, `pub enum ${name} {`);
  return [...body.matchAll(/^ {4}([A-Z]\w*)\s*[,({]/gm)].map((m) => snakeCase(m[1]!));
}

/** The names of an `as_str` match (`Enum::Variant => "name"`), in match order. */
function asStrNames(source: string, name: string): string[] {
  const body = rustBlock(source, `impl ${name} {`);
  const asStr = body.slice(body.indexOf("pub fn as_str"));
  return [...asStr.matchAll(new RegExp(`${name}::\\w+ => "([a-z_0-9]+)"`, "g"))].map((m) => m[1]!);
}

/** The lines of one `## ` section of the doc, found by its heading's start. */
function docSection(heading: string): string {
  const from = doc.indexOf(`\n${heading}`);
  assert.notEqual(from, -1, `PROTOCOL.md has no section "${heading}"`);
  const next = doc.indexOf("\n## ", from + 1);
  return doc.slice(from, next === -1 ? undefined : next);
}

/** The first column of a section's table, where it is a `code`. */
function firstColumn(section: string): string[] {
  return [...section.matchAll(/^\| `([a-z_0-9]+)` \|/gm)].map((m) => m[1]!);
}

test("OPS are the ops of the Rust requests! macro, in order", () => {
  const invocation = rustBlock(clientRs, "requests! {");
  const ops = [...invocation.matchAll(/^\s*"([a-z_]+)" => \w+\((\w+)\),/gm)].map((m) => m[1]!);
  assert.ok(ops.length > 0, "no ops parsed from the requests! invocation");
  assert.deepEqual([...OPS], ops);
});

test("every Rust request struct has a TypeScript type of the same name", () => {
  const invocation = rustBlock(clientRs, "requests! {");
  for (const [, op, type] of invocation.matchAll(/^\s*"([a-z_]+)" => \w+\((\w+)\),/gm)) {
    assert.match(protocolTs, new RegExp(`^export (interface|type) ${type}\\b`, "m"), `${op}: no ${type} in protocol.ts`);
  }
});

test("every op has a section in PROTOCOL.md", () => {
  for (const op of OPS) assert.ok(doc.includes(`### \`${op}\``), `PROTOCOL.md has no ### \`${op}\``);
});

test("ERROR_CODES are the Rust ErrorCode variants, with their wire names, in order", () => {
  assert.deepEqual([...ERROR_CODES], snakeCaseVariants(errorRs, "ErrorCode"));
  assert.deepEqual([...ERROR_CODES], asStrNames(errorRs, "ErrorCode"));
});

test("PROTOCOL.md §7 lists exactly the error codes", () => {
  const listed = firstColumn(docSection("## 7. Error codes"));
  assert.deepEqual([...listed].sort(), [...ERROR_CODES].sort());
});

test("CLOSE_REASONS are the Rust close reasons and PROTOCOL.md §3's, with their status codes", () => {
  assert.deepEqual([...CLOSE_REASONS], asStrNames(errorRs, "CloseReason"));
  const table = docSection("## 3. Connection lifecycle");
  const rows = [...table.matchAll(/^\| `([a-z_]+)` \| (\d+) \|/gm)].map((m) => [m[1]!, Number(m[2])] as const);
  assert.deepEqual(rows.map(([reason]) => reason).sort(), [...CLOSE_REASONS].sort());
  for (const [reason, status] of rows) {
    assert.equal(CLOSE_STATUS_CODES[reason as keyof typeof CLOSE_STATUS_CODES], status, reason);
  }
});

test("PUSH_EVENTS are the Rust Event variants", () => {
  assert.deepEqual([...PUSH_EVENTS], snakeCaseVariants(serverRs, "Event"));
});

test("PROTOCOL.md §5 lists exactly the pushed events, plus the error event", () => {
  // The table also has `error`, for frames the node could not read: that is an ErrorEvent
  // (id null), not a PushEvent.
  const listed = firstColumn(docSection("## 5. Events"));
  assert.ok(listed.includes("error"), "§5 no longer lists `error`; drop this exception");
  assert.deepEqual(listed.filter((name) => name !== "error").sort(), [...PUSH_EVENTS].sort());
});

test("the small enums match their Rust wire names", () => {
  assert.deepEqual([...MESSAGE_TYPES], asStrNames(framesRs, "MessageKind"));
  assert.deepEqual([...MESSAGE_TYPES], snakeCaseVariants(framesRs, "MessageKind"));
  const media = rustBlock(framesRs, "impl MessageKind {").match(/pub const MEDIA: \[MessageKind; \d+\] = \[([^\]]*)\]/);
  assert.ok(media, "no MessageKind::MEDIA");
  assert.deepEqual([...MEDIA_KINDS], [...media[1]!.matchAll(/MessageKind::(\w+)/g)].map((m) => snakeCase(m[1]!)));
  assert.deepEqual([...ROLES], asStrNames(framesRs, "Role"));
  assert.deepEqual([...RED_PACKET_KINDS], asStrNames(recordsRs, "RedPacketKind"));
  assert.deepEqual([...LEDGER_KINDS], asStrNames(recordsRs, "LedgerKind"));
  assert.deepEqual([...LEAVE_REASONS], snakeCaseVariants(serverRs, "LeaveReason"));
  assert.deepEqual([...ADD_STATUSES], snakeCaseVariants(serverRs, "AddStatus"));
  assert.deepEqual([...GRAB_STATUSES], snakeCaseVariants(serverRs, "GrabStatus"));
  assert.deepEqual([...RED_PACKET_STATUSES], snakeCaseVariants(serverRs, "RedPacketStatus"));
});
