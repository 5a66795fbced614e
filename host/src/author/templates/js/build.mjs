// Builds the {{name}} driver into a component: {{name}}.wasm (or the path given as the first
// argument). Run it with `npm run build` after `npm install`, or with build.sh.
//
// It runs jco's `componentize` with the QuickJS backend (about 250 µs per event, against
// 4.5 ms for the default StarlingMonkey engine), bundling app.js with the conveyor-driver SDK.
// Two workarounds make it work offline with jco 1.35.0:
// - jco reads the WIT through its bundled WASI shim, which starts with no filesystem preopens
//   ("failed to get path metadata ... os error 44"); every copy of the shim gets `/` here,
//   before jco is loaded in this same process.
// - The QuickJS backend needs absolute paths for the source and the WIT.
import { readdirSync, existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] ?? join(here, "{{name}}.wasm"));
// Anything after the output path goes to `jco componentize` as is. `--backend starlingmonkey`
// replaces the QuickJS settings (StarlingMonkey is slower per event, and imports wasi:http
// unless built with `--disable http`).
const extra = process.argv.slice(3);
const backend = extra.includes("--backend")
  ? []
  : ["--backend", "qjs", "--backend-qjs-disable-async"];

function shimCopies(dir, found = []) {
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return found;
  }
  for (const e of entries) {
    if (!e.isDirectory()) continue;
    const path = join(dir, e.name);
    if (e.name === "preview2-shim") {
      const fs = join(path, "dist/nodejs/filesystem.js");
      if (existsSync(fs)) found.push(fs);
    } else if (e.name === "node_modules" || e.name.startsWith("@") || dir.endsWith("node_modules") || dir.includes("@")) {
      shimCopies(path, found);
    }
  }
  return found;
}

const modules = join(here, "node_modules");
if (!existsSync(join(modules, "@bytecodealliance/jco"))) {
  console.error(`jco is not installed in ${modules}: run \`npm install\` in ${here} first`);
  process.exit(1);
}
for (const shim of shimCopies(modules)) {
  const { _setPreopens } = await import(pathToFileURL(shim).href);
  _setPreopens({ "/": "/" });
}

process.argv = [
  process.argv[0],
  "jco",
  "componentize",
  join(here, "app.js"),
  "--wit",
  join(here, "wit"),
  "--world-name",
  "driver",
  ...backend,
  "--bundle",
  "--bundle-config",
  join(here, "bundle.config.mjs"),
  "--out",
  out,
  ...extra,
];
await import(pathToFileURL(join(modules, "@bytecodealliance/jco/dist/jco.js")).href);
