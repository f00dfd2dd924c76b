// Starts the real `troupe` binary for a test: a fresh data directory, ephemeral ports, and
// the addresses from its ready line. TEST_TROUPE_BINARY names the binary (test.sh sets it); by
// default the debug build of this checkout.

import { spawn, execFile, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";

/** The repository root, found from this file (source or bundled under build/). */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "schema", "PROTOCOL.md"))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error("cannot find the repository root above " + fileURLToPath(import.meta.url));
    dir = parent;
  }
  return dir;
}

/** The troupe binary the tests run. */
export function troupeBinary(): string {
  const binary = process.env.TEST_TROUPE_BINARY ?? join(repoRoot(), "target", "debug", "troupe");
  if (!existsSync(binary)) throw new Error(`no troupe binary at ${binary}: run \`cargo build -p troupe\` or set TEST_TROUPE_BINARY`);
  return resolve(binary);
}

/** A running node. */
export interface TestNode {
  /** `http://127.0.0.1:PORT`: the page and the uploads. */
  http: string;
  /** `ws://127.0.0.1:PORT/ws`. */
  ws: string;
  /** The debug console's `host:port`. */
  console: string;
  /** The data directory (kept across {@link TestNode.restart}). */
  data: string;
  process: ChildProcess;
  /** Kills the process with SIGKILL and waits for it. */
  kill9(): Promise<void>;
  /** Starts the node again on the same data directory and HTTP port. */
  restart(): Promise<void>;
  /** Runs a console command (`credit USER CENTS`), returning its output. */
  consoleCommand(...words: string[]): Promise<string>;
  /** Stops the node and removes its data. */
  stop(): Promise<void>;
}

/** Starts a node on ephemeral ports with a fresh data directory. */
export async function startNode(extraArgs: string[] = []): Promise<TestNode> {
  const data = mkdtempSync(join(tmpdir(), "troupe-web-test-"));
  let child: ChildProcess;
  let http = "";
  let ws = "";
  let consoleAddress = "";

  const launch = async (listen: string) => {
    child = spawn(
      troupeBinary(),
      ["serve", "--listen", listen, "--console-listen", "127.0.0.1:0", "--password-cost", "test", "--data", data, ...extraArgs],
      { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, RUST_LOG: process.env.TEST_LOG ?? "warn" } },
    );
    const lines = createInterface({ input: child.stdout! });
    const ready = await new Promise<string>((resolveLine, reject) => {
      const timer = setTimeout(() => reject(new Error("troupe printed no ready line within 30 s")), 30_000);
      child.once("exit", (code) => reject(new Error(`troupe exited with ${code} before it was ready`)));
      lines.on("line", (line) => {
        if (line.startsWith("troupe ready")) {
          clearTimeout(timer);
          resolveLine(line);
        }
      });
    });
    const field = (name: string) => {
      const word = ready.split(/\s+/).find((w) => w.startsWith(`${name}=`));
      if (word === undefined) throw new Error(`no ${name}= in ${ready}`);
      return word.slice(name.length + 1);
    };
    http = `http://${field("http")}`;
    ws = field("ws");
    consoleAddress = field("console");
  };

  await launch("127.0.0.1:0");
  const node: TestNode = {
    get http() {
      return http;
    },
    get ws() {
      return ws;
    },
    get console() {
      return consoleAddress;
    },
    data,
    get process() {
      return child;
    },
    async kill9() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((done) => child.once("exit", done));
      child.kill("SIGKILL");
      await exited;
    },
    async restart() {
      await node.kill9();
      await launch(http.replace("http://", ""));
    },
    consoleCommand(...words: string[]) {
      return new Promise((done, fail) => {
        execFile(troupeBinary(), ["console", "--addr", consoleAddress, ...words], (error, stdout, stderr) => {
          if (error) fail(new Error(`console ${words.join(" ")}: ${stderr || error.message}`));
          else done(stdout);
        });
      });
    },
    async stop() {
      await node.kill9();
      rmSync(data, { recursive: true, force: true });
    },
  };
  return node;
}
