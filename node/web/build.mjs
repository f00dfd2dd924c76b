// Builds the web client the node serves (app/ -> dist/) and the tests (test/ -> build/test/).
//
// dist/ is committed: the node embeds it at compile time, so `cargo run` serves the page
// without Node.js. `node build.mjs --check` rebuilds it in memory and fails when the
// committed copy differs, which the test command runs so the two never drift.
import * as esbuild from "esbuild";
import { readFileSync, writeFileSync, mkdirSync, readdirSync, copyFileSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const root = dirname(fileURLToPath(import.meta.url));
const check = process.argv.includes("--check");

/** The page's files, as they are served: the bundle and the static files beside it. */
async function buildApp() {
  const bundle = await esbuild.build({
    entryPoints: [join(root, "app/main.ts")],
    bundle: true,
    format: "esm",
    target: "es2022",
    minify: true,
    legalComments: "none",
    write: false,
  });
  const files = { "app.js": bundle.outputFiles[0].text };
  for (const name of ["index.html", "style.css"]) {
    files[name] = readFileSync(join(root, "app", name), "utf8");
  }
  return files;
}

async function buildTests() {
  const entries = [];
  for (const dir of ["unit", "e2e"]) {
    for (const name of readdirSync(join(root, "test", dir))) {
      if (name.endsWith(".test.ts")) entries.push(join(root, "test", dir, name));
    }
  }
  await esbuild.build({
    entryPoints: entries,
    outbase: join(root, "test"),
    outdir: join(root, "build/test"),
    outExtension: { ".js": ".mjs" },
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    packages: "external",
    sourcemap: "inline",
  });
}

const app = await buildApp();
if (check) {
  const stale = Object.entries(app).filter(([name, text]) => {
    try {
      return readFileSync(join(root, "dist", name), "utf8") !== text;
    } catch {
      return true;
    }
  });
  if (stale.length > 0) {
    console.error(`dist/ is stale (${stale.map(([n]) => n).join(", ")}): run \`npm run build\` in node/web and commit dist/`);
    process.exit(1);
  }
} else {
  mkdirSync(join(root, "dist"), { recursive: true });
  for (const [name, text] of Object.entries(app)) writeFileSync(join(root, "dist", name), text);
}
await buildTests();
