// Bundles src/index.js with JsSIP (from node_modules) into dist/cometVideoApi.js, which the
// server embeds and serves at /api/cometVideoApi.js. The output is committed (so `cargo build`
// needs no Node.js); run `npm run build` after changing src/ or package-lock.json, and commit
// dist/. test/bundle.test.mjs rebuilds it into a temporary file and fails when the committed
// one differs. `node build.mjs <outfile>` writes elsewhere. Runs offline once `npm ci` has run.
import { readdirSync, readFileSync } from "node:fs";
import { build } from "esbuild";

const own = JSON.parse(readFileSync("package.json", "utf8"));
const bundled = ["jssip", "sdp-transform", "debug", "ms", "events"].map((name) => {
  const dir = `node_modules/${name}`;
  const pkg = JSON.parse(readFileSync(`${dir}/package.json`, "utf8"));
  const file = readdirSync(dir).find((f) => /^licen[cs]e/i.test(f));
  const text = file ? readFileSync(`${dir}/${file}`, "utf8").trim() : `License: ${pkg.license}`;
  return { line: `${name} ${pkg.version} (${pkg.license})`, text: `${name} ${pkg.version}:\n${text}` };
});

await build({
  entryPoints: ["src/index.js"],
  bundle: true,
  format: "iife",
  platform: "browser",
  target: ["es2020"],
  minify: true,
  legalComments: "none",
  outfile: process.argv[2] || "dist/cometVideoApi.js",
  banner: {
    js:
      `/* cometVideoApi.js ${own.version} for comet-server (AGPL-3.0-or-later).\n` +
      ` * Bundles from npm: ${bundled.map((b) => b.line).join(", ")}; their licenses follow the code. */`,
  },
  footer: {
    js: `/*\n${bundled.map((b) => b.text).join("\n\n").replace(/\*\//g, "* /")}\n*/`,
  },
  logLevel: "warning",
});
