// The built file the server serves (dist/cometVideoApi.js, made by `npm run build`): it loads
// in a page without CometServerApi.js (bringing its own cometApi) and next to it (keeping the
// page's), and carries JsSIP 3.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import vm from "node:vm";

const bundle = readFileSync(new URL("../dist/cometVideoApi.js", import.meta.url), "utf8");

function load(extra) {
  const window = {
    location: { protocol: "http:", host: "127.0.0.1:8080", hostname: "127.0.0.1" },
    navigator: { userAgent: "node", mediaDevices: {} },
    WebSocket: class {},
    MediaStream: class {},
    setTimeout,
    clearTimeout,
    ...extra,
  };
  window.window = window;
  window.self = window;
  vm.runInNewContext(bundle, window);
  return window;
}

test("a page without CometServerApi.js gets the built-in comet client", () => {
  const w = load({});
  assert.equal(typeof w.cometVideoApi.acceptCall, "function");
  assert.equal(w.cometVideoApi.version, "2.0");
  assert.equal(w.cometApi.builtin, true);
  assert.equal(typeof w.cometApi.multi_web_pipe_send, "function");
  assert.match(w.cometVideoApi.JsSIP.version, /^3\./);
  assert.equal(w.JsSIP, undefined, "the page's own JsSIP global is left alone");
});

test("a page with CometServerApi.js keeps its cometApi", () => {
  const mine = { isAuthorized: () => undefined, onAuthSuccess() {} };
  const w = load({ cometApi: mine });
  assert.equal(w.cometApi, mine);
});

test("the committed dist/cometVideoApi.js is what build.mjs makes from src/ and the lock file", () => {
  const web = fileURLToPath(new URL("..", import.meta.url));
  const dir = mkdtempSync(join(tmpdir(), "comet-bundle-"));
  try {
    const out = join(dir, "cometVideoApi.js");
    execFileSync(process.execPath, ["build.mjs", out], { cwd: web, stdio: "inherit" });
    const fresh = readFileSync(out, "utf8");
    assert.ok(
      fresh === bundle,
      "web/dist/cometVideoApi.js is stale: run `npm run build` in web/ and commit web/dist/",
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
