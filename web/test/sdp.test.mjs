import assert from "node:assert/strict";
import { test } from "node:test";
import { setBandwidth } from "../src/sdp.js";

const offer = [
  "v=0",
  "o=- 1 2 IN IP4 127.0.0.1",
  "s=-",
  "t=0 0",
  "b=AS:1000",
  "m=audio 9 UDP/TLS/RTP/SAVPF 111",
  "c=IN IP4 0.0.0.0",
  "b=AS:64",
  "a=mid:0",
  "m=video 9 UDP/TLS/RTP/SAVPF 96",
  "c=IN IP4 0.0.0.0",
  "a=mid:1",
  "",
].join("\r\n");

test("each media section gets its b=AS after c=, replacing the browser's", () => {
  const out = setBandwidth(offer, { audio: 32, video: 256 }).split("\r\n");
  const audio = out.indexOf("m=audio 9 UDP/TLS/RTP/SAVPF 111");
  assert.deepEqual(out.slice(audio, audio + 4), [
    "m=audio 9 UDP/TLS/RTP/SAVPF 111",
    "c=IN IP4 0.0.0.0",
    "b=AS:32",
    "a=mid:0",
  ]);
  const video = out.indexOf("m=video 9 UDP/TLS/RTP/SAVPF 96");
  assert.deepEqual(out.slice(video, video + 3), ["m=video 9 UDP/TLS/RTP/SAVPF 96", "c=IN IP4 0.0.0.0", "b=AS:256"]);
  assert.equal(out.filter((l) => l.startsWith("b=AS:")).length, 3, "the session-level line stays");
  assert.ok(out.includes("b=AS:1000"));
});

test("0 keeps what the browser wrote; line endings are kept", () => {
  assert.equal(setBandwidth(offer, { audio: 0, video: 0 }), offer);
  const lf = offer.replace(/\r\n/g, "\n");
  const out = setBandwidth(lf, { video: 100 });
  assert.ok(!out.includes("\r"));
  assert.ok(out.includes("c=IN IP4 0.0.0.0\nb=AS:100\na=mid:1"));
  assert.ok(out.includes("b=AS:64"), "audio untouched");
});

test("a section without c= gets b= right after m=", () => {
  const out = setBandwidth("v=0\r\nm=audio 9 RTP/AVP 0\r\na=x\r\n", { audio: 32 });
  assert.equal(out, "v=0\r\nm=audio 9 RTP/AVP 0\r\nb=AS:32\r\na=x\r\n");
});
