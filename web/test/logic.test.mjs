import assert from "node:assert/strict";
import { test } from "node:test";
import {
  callPlan,
  errorText,
  formatDuration,
  hlsLink,
  inboundSummary,
  membersModel,
  randomUserId,
  validRoom,
  validUserId,
  wsNode,
} from "../demo/logic.js";

test("durations", () => {
  assert.equal(formatDuration(0), "0:00");
  assert.equal(formatDuration(65), "1:05");
  assert.equal(formatDuration(3723), "1:02:03");
  assert.equal(formatDuration(-4), "0:00");
  assert.equal(formatDuration("x"), "0:00");
});

test("room names and user ids", () => {
  assert.ok(validRoom("101") && validRoom("team_a-1"));
  assert.ok(!validRoom("") && !validRoom("a b") && !validRoom("x".repeat(65)) && !validRoom("1'"));
  assert.equal(validUserId(" 42 "), 42);
  assert.equal(validUserId("0"), null);
  assert.equal(validUserId("1234567890"), null);
  assert.equal(validUserId("-1"), null);
  assert.equal(validUserId("4e3"), null);
  const id = randomUserId(() => 0.99999);
  assert.ok(id >= 1000 && id <= 9999);
  assert.equal(randomUserId(() => 0), 1000);
});

test("the comet node is the page's host with the ws port", () => {
  const f = { ws: { port: 8087, tls: false } };
  assert.equal(wsNode({ hostname: "127.0.0.1" }, f), "127.0.0.1:8087");
  assert.equal(wsNode({ hostname: "::1" }, f), "[::1]:8087");
});

test("members: longest in the call first, talking, muted, join clock time", () => {
  const now = new Date(2025, 0, 1, 12, 0, 0).getTime();
  const rows = [
    { name: "101", user_id: 2, join_time: 5, last_talking: "N/A", talking: 0, energy: 0, audio: 0 },
    { name: "101", user_id: 1, join_time: 65, last_talking: 0, talking: 1, energy: 140, audio: 1 },
  ];
  const m = membersModel(rows, now, 2);
  assert.deepEqual(
    m.map((x) => [x.userId, x.self, x.talking, x.muted, x.energy, x.inCallFor, x.joinedAt, x.lastTalking]),
    [
      [1, false, true, false, 100, "1:05", "11:58:55", 0],
      [2, true, false, true, 0, "0:05", "11:59:55", null],
    ],
  );
  assert.deepEqual(membersModel(undefined, now, 1), []);
});

test("HLS link only when the server broadcasts", () => {
  assert.equal(hlsLink({ broadcast: false, hls: null }, "101"), null);
  assert.equal(hlsLink({ broadcast: true, hls: null }, "101"), null);
  assert.equal(hlsLink({ broadcast: true, hls: "/hls/{room}/index.m3u8" }, "101"), "/hls/101/index.m3u8");
  assert.equal(hlsLink({ broadcast: true, hls: "/hls/{room}.m3u8" }, "bad room"), null);
});

test("the call plan follows the server's video support", () => {
  const profiles = { audio: { video: false }, video: { video: true } };
  assert.deepEqual(callPlan({ video: false, demo_profile: "audio", profiles }), {
    profile: "audio",
    type: "audio",
    video: false,
  });
  assert.deepEqual(callPlan({ video: true, demo_profile: "video", profiles }), {
    profile: "video",
    type: "video",
    video: true,
  });
  assert.equal(callPlan({ video: true, demo_profile: "audio", profiles }).type, "audio");
});

test("inbound stats from a report (Map entries) or a list", () => {
  const report = new Map([
    ["a", { type: "inbound-rtp", kind: "audio", packetsReceived: 120, audioLevel: 0.25 }],
    ["v", { type: "inbound-rtp", kind: "video", framesDecoded: 30, frameWidth: 640, frameHeight: 360 }],
    ["o", { type: "outbound-rtp", kind: "audio", packetsSent: 99 }],
  ]);
  assert.deepEqual(inboundSummary(report), {
    audio: { packetsReceived: 120, audioLevel: 0.25 },
    video: { framesDecoded: 30, frameWidth: 640, frameHeight: 360 },
  });
  assert.deepEqual(inboundSummary(report.values()), inboundSummary(report));
  assert.equal(inboundSummary([]).audio.packetsReceived, 0);
});

test("error texts", () => {
  assert.equal(errorText(409, { error: "room in use" }), "room in use");
  assert.equal(errorText(502, null), "the server answered 502");
});
