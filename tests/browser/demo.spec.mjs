// The demo as a person uses it: two browser contexts open the demo page, both join room 101,
// each receives the other's audio through the MCU (and video, when the server composes it),
// the member list shows two members, one mutes (server-side: conference_members.audio = 0,
// checked over CometQL with mysql2), then both leave. Screenshots go to $ARTIFACTS.
//
// Run by tests/demo_browser.rs with DEMO_URL, COMETQL_HOST, COMETQL_PORT, COMETQL_PASSWORD,
// ARTIFACTS (and CHROMIUM, default /usr/bin/chromium).

import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import mysql from "mysql2/promise";
import { chromium } from "playwright-core";

const env = (k, d) => {
  const v = process.env[k] ?? d;
  if (v === undefined) {
    throw new Error(`${k} is not set`);
  }
  return v;
};
const BASE = env("DEMO_URL");
const ROOM = "101";
const ARTIFACTS = env("ARTIFACTS");
mkdirSync(ARTIFACTS, { recursive: true });

const started = Date.now();
const step = (text) => console.log(`[demo ${((Date.now() - started) / 1000).toFixed(1)}s] ${text}`);

/** Waits until the page's inbound video has decoded frames and the canvas shows them. */
async function expectInboundVideo(page) {
  await page.waitForFunction(
    () => window.demo.stats.video.framesDecoded > 10 && document.getElementById("remote-video").videoWidth > 0,
    null,
    { timeout: 60_000, polling: 250 },
  );
}

async function expectInboundAudio(page) {
  // More than 50 packets (a second) of the mix, with sound in it: the other page's fake
  // microphone beeps.
  await page.waitForFunction(
    () => window.demo.stats.audio.packetsReceived > 50 && window.demo.stats.audio.audioLevel > 0,
    null,
    { timeout: 60_000, polling: 250 },
  );
}

async function expectMembers(page, n) {
  await page.waitForFunction((n) => document.querySelectorAll("#members li").length === n, n, {
    timeout: 30_000,
    polling: 200,
  });
}

async function expectEvent(page, text) {
  await page.waitForFunction((t) => window.demo.events.some((e) => e.text === t), text, {
    timeout: 30_000,
    polling: 200,
  });
}

/** Polls `sql` until `ok(rows)`, for up to `ms`. */
async function until(db, sql, ok, what, ms = 20_000) {
  const deadline = Date.now() + ms;
  let rows = [];
  for (;;) {
    [rows] = await db.query(sql);
    if (ok(rows)) {
      return rows;
    }
    if (Date.now() > deadline) {
      throw new Error(`${what}: still ${JSON.stringify(rows)} after ${ms} ms`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

const browser = await chromium.launch({
  executablePath: env("CHROMIUM", "/usr/bin/chromium"),
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
  ],
});
const db = await mysql.createConnection({
  host: env("COMETQL_HOST"),
  port: Number(env("COMETQL_PORT")),
  user: "root",
  password: env("COMETQL_PASSWORD"),
  database: "CometQL_v1",
});

const pages = {};
const problems = [];
let failed = false;
try {
  const features = await (await fetch(`${BASE}/api/features`)).json();
  step(`features: ${JSON.stringify({ video: features.video, demo: features.demo, profile: features.demo_profile })}`);
  const demoProfile = features.profiles[features.demo_profile];
  const withVideo = features.video && demoProfile && demoProfile.video;

  for (const [name, user] of [["a", 1001], ["b", 1002]]) {
    const context = await browser.newContext({ viewport: { width: 1100, height: 760 } });
    const page = await context.newPage();
    const log = [];
    page.on("console", (m) => log.push(`${m.type()}: ${m.text()}`));
    page.on("pageerror", (e) => problems.push(`${name}: ${e.message}`));
    pages[name] = { page, user, log };
    await page.goto(`${BASE}/`);
    await page.waitForFunction(() => window.demo && window.demo.ready, null, { timeout: 20_000 });
    await page.fill("#room", ROOM);
    await page.fill("#user", String(user));
    await page.click("#join");
    step(`${name}: user ${user} joins room ${ROOM}`);
    // Join one after the other, so the first page sees the second come in (onIn).
    await expectMembers(page, name === "a" ? 1 : 2);
  }
  const { a, b } = pages;

  for (const p of [a, b]) {
    await expectInboundAudio(p.page);
    await expectMembers(p.page, 2);
  }
  step("both pages receive mixed audio and list two members");
  if (withVideo) {
    for (const p of [a, b]) {
      await expectInboundVideo(p.page);
    }
    step("both pages show the composed video");
  } else {
    step("the server does not compose video (/api/features video: false): inbound video not checked");
  }
  await expectEvent(a.page, "user 1002 joined");
  step("page a heard onIn for user 1002");
  const rows = await until(
    db,
    `SELECT user_id, audio FROM conference_members WHERE name = '${ROOM}'`,
    (r) => r.length === 2,
    "two members in conference_members",
  );
  step(`conference_members: ${JSON.stringify(rows)}`);
  for (const p of [a, b]) {
    await p.page.screenshot({ path: join(ARTIFACTS, `demo-${p === a ? "a" : "b"}-in-call.png`) });
  }

  await a.page.click("#mute");
  await until(
    db,
    `SELECT user_id, audio FROM conference_members WHERE name = '${ROOM}'`,
    (r) =>
      r.length === 2 &&
      r.some((m) => String(m.user_id) === "1001" && String(m.audio) === "0") &&
      r.some((m) => String(m.user_id) === "1002" && String(m.audio) === "1"),
    "conference_members shows user 1001 muted",
  );
  step("mute on page a: conference_members.audio = 0 for user 1001");
  await b.page.waitForFunction(
    () => document.querySelector('#members li[data-user="1001"]').dataset.muted === "1",
    null,
    { timeout: 10_000, polling: 200 },
  );
  // The mix page b hears is page a's microphone alone: muted, it falls silent.
  await b.page.waitForFunction(() => window.demo.stats.audio.audioLevel < 0.001, null, {
    timeout: 20_000,
    polling: 250,
  });
  step("page b lists user 1001 as muted and hears silence");
  await a.page.screenshot({ path: join(ARTIFACTS, "demo-a-muted.png") });

  await a.page.click("#leave");
  await expectMembers(b.page, 1);
  await expectEvent(b.page, "user 1001 left (hangup)");
  await until(
    db,
    `SELECT user_id FROM conference_members WHERE name = '${ROOM}'`,
    (r) => r.length === 1 && String(r[0].user_id) === "1002",
    "only user 1002 left in the room",
  );
  step("page a left; page b lists one member and heard onOut");
  await b.page.click("#leave");
  await until(db, `SELECT user_id FROM conference_members WHERE name = '${ROOM}'`, (r) => r.length === 0, "an empty room");
  await until(db, `SELECT user_id FROM conference WHERE name = '${ROOM}'`, (r) => r.length === 0, "no invitations left");
  for (const p of [a, b]) {
    const state = await p.page.evaluate(() => window.demo.state);
    if (state !== "left") {
      throw new Error(`page of user ${p.user} is ${state}, not left`);
    }
    await p.page.screenshot({ path: join(ARTIFACTS, `demo-${p === a ? "a" : "b"}-left.png`) });
  }
  step("both left: the room is empty");
  if (problems.length) {
    throw new Error(`page errors: ${problems.join("; ")}`);
  }
} catch (e) {
  failed = true;
  console.error(`[demo] FAILED: ${e.stack || e}`);
  for (const [name, p] of Object.entries(pages)) {
    try {
      await p.page.screenshot({ path: join(ARTIFACTS, `demo-${name}-failure.png`) });
      const state = await p.page.evaluate(() => JSON.stringify(window.demo, null, 1));
      console.error(`[demo] page ${name} state: ${state}`);
    } catch (_) {
      // the page may be gone
    }
  }
} finally {
  for (const [name, p] of Object.entries(pages)) {
    writeFileSync(join(ARTIFACTS, `demo-${name}-console.log`), p.log.join("\n") + "\n");
  }
  await db.end();
  await browser.close();
}
console.log(failed ? "demo: 0 passed, 1 failed" : "demo: 1 passed, 0 failed");
process.exit(failed ? 1 : 0);
