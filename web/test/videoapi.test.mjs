import assert from "node:assert/strict";
import { test } from "node:test";
import { createVideoApi, isConference } from "../src/videoapi.js";
import { Emitter, fakeClock, settle } from "../testkit/fakes.mjs";

const PIPE = "web_syscall_vA_AOFycNkAQtLpTYMDAAjmArkHpNAA";

// The CometServer JS API as cometVideoApi sees it.
function fakeComet(userId = 7) {
  const subs = new Map();
  let next = 1;
  const authOk = [];
  const c = {
    sent: [],
    authorized: undefined,
    isAuthorized: () => c.authorized,
    onAuthSuccess: (f) => authOk.push(f),
    authorize() {
      c.authorized = true;
      authOk.forEach((f) => f());
    },
    subscription(name, cb) {
      const id = "s" + next++;
      subs.set(id, { name, cb });
      return id;
    },
    unsubscription: (id) => subs.delete(id),
    subscribed: () => [...subs.values()].map((s) => s.name),
    multi_web_pipe_send(pipe, event, msg) {
      c.sent.push({ pipe, event, msg: { ...msg } });
    },
    getUserId: () => userId,
    getDevId: () => 0,
    getRealUserKey: () => "demo_key",
    stripslashes: (s) => s.replace(/\\(.)/g, "$1"),
    deliver(name, data, info) {
      for (const s of [...subs.values()]) {
        if (s.name === name) {
          s.cb({ data, server_info: info || {} });
        }
      }
    },
    events: (event) => c.sent.filter((s) => s.event === event),
  };
  return c;
}

class FakeTrack {
  constructor(kind) {
    this.kind = kind;
    this.stopped = false;
  }
  stop() {
    this.stopped = true;
  }
}
class FakeStream {
  constructor(tracks = []) {
    this.tracks = tracks;
  }
  getTracks() {
    return this.tracks;
  }
  getAudioTracks() {
    return this.tracks.filter((t) => t.kind === "audio");
  }
  getVideoTracks() {
    return this.tracks.filter((t) => t.kind === "video");
  }
  addTrack(t) {
    this.tracks.push(t);
  }
}

class FakePc extends Emitter {
  constructor() {
    super();
    this.transceivers = [];
  }
  addTransceiver(kind, init) {
    this.transceivers.push([kind, init.direction]);
  }
  addEventListener(name, f) {
    this.on(name, f);
  }
}

// JsSIP as cometVideoApi uses it.
function fakeJsSIP() {
  const j = { uas: [] };
  j.WebSocketInterface = class {
    constructor(url) {
      this.url = url;
    }
  };
  j.UA = class extends Emitter {
    constructor(config) {
      super();
      this.config = config;
      this.calls = [];
      this.started = false;
      this.stopped = false;
      j.uas.push(this);
    }
    start() {
      this.started = true;
    }
    stop() {
      this.stopped = true;
    }
    call(target, options) {
      const s = new Emitter();
      s.target = target;
      s.options = options;
      s.muted = { audio: false, video: false };
      s.ended = false;
      s.isMuted = () => ({ ...s.muted });
      s.mute = (o) => Object.assign(s.muted, o);
      s.unmute = (o) => {
        for (const k of Object.keys(o)) {
          if (o[k]) s.muted[k] = false;
        }
      };
      s.isEnded = () => s.ended;
      s.terminate = () => {
        s.ended = true;
        options.eventHandlers.ended({ originator: "local", cause: "Terminated" });
      };
      this.calls.push(s);
      return s;
    }
  };
  return j;
}

function setup({ userId = 7, media, protocol = "http:" } = {}) {
  const comet = fakeComet(userId);
  const JsSIP = fakeJsSIP();
  const clock = fakeClock();
  const gum = [];
  const api = createVideoApi({
    comet: () => comet,
    JsSIP: () => JsSIP,
    mediaDevices: () => ({
      getUserMedia(c) {
        gum.push(c);
        if (media === "deny") {
          return Promise.reject(new Error("NotAllowedError"));
        }
        const tracks = [new FakeTrack("audio")];
        if (c.video) tracks.push(new FakeTrack("video"));
        return Promise.resolve(new FakeStream(tracks));
      },
    }),
    MediaStream: FakeStream,
    location: { protocol },
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    now: clock.now,
    log: { info() {}, warn() {}, error() {}, debug() {} },
  });
  const seen = [];
  const cb = (name) => (e) => seen.push([name, e]);
  api.start({
    onCall: cb("onCall"),
    onCallStart: cb("onCallStart"),
    onCallEnd: cb("onCallEnd"),
    onCallAccept: cb("onCallAccept"),
    onIn: cb("onIn"),
    onOut: cb("onOut"),
    onToggleMute: cb("onToggleMute"),
  });
  return { api, comet, JsSIP, clock, gum, seen, names: () => seen.map((s) => s[0]) };
}

function invite(comet, extra = {}) {
  comet.deliver(
    "msg.sys_sipCall",
    {
      message: '{"demo":true}',
      sys: {
        callKey: "key-1",
        callPipe: PIPE,
        caller_id: 7,
        conference: "true",
        conference_name: "101",
        mode: "audio",
        serverName: "127.0.0.1",
        serverPort: 7443,
        sipNumber: "0*101*audio",
        stream: 0,
        ...extra,
      },
    },
    { pipe: "msg", event: "sys_sipCall" },
  );
}

const from = (user, event) => ({ pipe: PIPE, event, user_id: user });

async function inCall(t, opt = { type: "audio" }) {
  t.comet.authorize();
  invite(t.comet);
  const remote = { srcObject: null, play: () => Promise.resolve() };
  t.api.acceptCall({ ...opt, video_remote: remote });
  await settle();
  const ua = t.JsSIP.uas[0];
  ua.emit("registered", {});
  const session = ua.calls[0];
  const pc = new FakePc();
  session.options.eventHandlers.peerconnection({ peerconnection: pc });
  return { ua, session, pc, remote };
}

test("waits for comet authorization, then listens for invitations", () => {
  const t = setup();
  assert.deepEqual(t.comet.subscribed(), []);
  t.comet.authorize();
  assert.deepEqual(t.comet.subscribed(), ["msg.sys_sipCall"]);
  assert.equal(isConference({ conference: "true" }), true);
  assert.equal(isConference({ conference: "false" }), false);
});

test("an invitation: onCall with the parsed message, the call pipe subscribed and pinged", () => {
  const t = setup();
  t.comet.authorize();
  invite(t.comet);
  assert.deepEqual(t.names(), ["onCall"]);
  assert.deepEqual(t.seen[0][1], { data: { demo: true } });
  assert.ok(t.comet.subscribed().includes(PIPE));
  assert.deepEqual(t.comet.events("ping").map((s) => s.pipe), [PIPE]);
  t.clock.advance(1000);
  assert.equal(t.comet.events("ping").length, 2, "pinged every second while nothing arrives");
  t.comet.deliver(PIPE, { status: "pong" }, from(8, "pong"));
  t.clock.advance(999);
  assert.equal(t.comet.events("ping").length, 2, "anything on the pipe postpones the ping");
});

test("answering: one getUserMedia, accept, SIP registration and the INVITE as contract section 4 says", async () => {
  const t = setup();
  const { ua, session, pc, remote } = await inCall(t);
  assert.deepEqual(t.gum, [{ audio: true, video: false }]);
  assert.ok(t.comet.subscribed().includes("track_" + PIPE));
  assert.deepEqual(t.comet.events("pong")[0].msg, { status: "pong" });
  assert.deepEqual(t.comet.events("accept")[0].msg, { status: "start_accept", type: "audio" });
  assert.equal(ua.started, true);
  assert.equal(ua.config.sockets[0].url, "ws://127.0.0.1:7443", "ws from an http page");
  assert.equal(ua.config.uri, "sip:0000007@127.0.0.1");
  assert.equal(ua.config.authorization_user, "0000007");
  assert.equal(ua.config.password, "demo_key");
  assert.equal(ua.config.session_timers, false);
  assert.equal(session.target, "sip:0*101*audio@127.0.0.1");
  assert.deepEqual(session.options.pcConfig, { iceServers: [] });
  assert.deepEqual(session.options.mediaConstraints, { audio: true, video: false });
  assert.deepEqual(pc.transceivers, [["audio", "recvonly"], ["video", "recvonly"]]);

  const e = { originator: "local", sdp: "v=0\r\nm=audio 9 X 111\r\nc=IN IP4 0.0.0.0\r\nm=video 9 X 96\r\nc=IN IP4 0.0.0.0\r\n" };
  session.options.eventHandlers.sdp(e);
  assert.ok(e.sdp.includes("m=audio 9 X 111\r\nc=IN IP4 0.0.0.0\r\nb=AS:32\r\n"));
  assert.ok(e.sdp.includes("b=AS:256"));

  const track = new FakeTrack("audio");
  pc.emit("track", { track });
  assert.deepEqual(remote.srcObject.getTracks(), [track], "srcObject, not createObjectURL");
  assert.deepEqual(t.comet.events("mediaStart").map((s) => s.msg), [{ status: "self" }]);
  pc.emit("track", { track: new FakeTrack("video") });
  assert.equal(t.comet.events("mediaStart").length, 1, "mediaStart once");
  assert.equal(t.api.getPeerConnection(), pc);
});

test("wss from an https page, and the page's bandwidth and ICE servers", async () => {
  const t = setup({ protocol: "https:" });
  t.api.setBandwidth({ audio: 48, video: 0 });
  t.api.opt.iceServers = [{ urls: "turn:turn.example" }];
  const { ua, session } = await inCall(t, { type: "video" });
  assert.equal(ua.config.sockets[0].url, "wss://127.0.0.1:7443");
  assert.deepEqual(t.gum, [{ audio: true, video: true }]);
  assert.deepEqual(session.options.mediaConstraints, { audio: true, video: true });
  assert.deepEqual(session.options.pcConfig.iceServers, [{ urls: "turn:turn.example" }]);
  assert.deepEqual(t.api.setBandwidth(), { audio: 48, video: 0 });
});

test("others joining and leaving: onIn, onCallStart, onOut, pong", async () => {
  const t = setup();
  const { pc } = await inCall(t);
  pc.emit("track", { track: new FakeTrack("audio") });
  t.comet.deliver(PIPE, { status: "self" }, from(8, "mediaStart"));
  assert.deepEqual(t.names(), ["onCall", "onCallStart", "onIn"]);
  assert.equal(t.seen[2][1].user_id, 8);
  assert.deepEqual(t.comet.events("mediaStart").map((s) => s.msg.status), ["self", "answer"]);

  t.comet.deliver(PIPE, { status: "answer" }, from(9, "mediaStart"));
  assert.equal(t.names().filter((n) => n === "onIn").length, 1, "an answer is not a join");
  assert.equal(t.comet.events("mediaStart").length, 2, "no answer to an answer");

  t.comet.deliver(PIPE, { status: "ping" }, from(8, "ping"));
  assert.equal(t.comet.events("pong").length, 2);

  t.comet.deliver(PIPE, { isMute: true }, from(8, "toggleMute"));
  assert.equal(t.seen.at(-1)[1].isMute, true);

  t.comet.deliver(PIPE, { status: "hangup", callKey: "other" }, from(8, "out"));
  assert.equal(t.seen.at(-1)[0], "onOut");
  assert.equal(t.seen.at(-1)[1].user_id, 8);
  assert.equal(t.api.isInCall(), true, "one member leaving a conference does not end ours");
});

test("the caller hears onCallAccept once when someone picks up", async () => {
  const t = setup();
  await inCall(t);
  t.comet.deliver(PIPE, { status: "start_accept", type: "video" }, from(8, "accept"));
  t.comet.deliver(PIPE, { status: "start_accept", type: "video" }, from(9, "accept"));
  const accepts = t.seen.filter((s) => s[0] === "onCallAccept");
  assert.equal(accepts.length, 1);
  assert.equal(accepts[0][1].accept_type, "video");
});

test("hangup: out with the callKey, BYE, UA stopped, onCallEnd; a new invitation rings again", async () => {
  const t = setup();
  const { ua, session } = await inCall(t);
  t.api.hangup();
  assert.deepEqual(t.comet.events("out")[0], { pipe: PIPE, event: "out", msg: { status: "hangup", callKey: "key-1" } });
  assert.equal(session.ended, true);
  assert.equal(ua.stopped, true);
  assert.equal(t.api.isInCall(), false);
  assert.ok(!t.comet.subscribed().includes(PIPE) && !t.comet.subscribed().includes("track_" + PIPE));
  const ends = t.seen.filter((s) => s[0] === "onCallEnd");
  assert.equal(ends.length, 1);
  assert.equal(ends[0][1].status, "hangup");
  assert.equal(t.comet.events("out").length, 1, "told once");
  const pings = t.comet.events("ping").length;
  t.clock.advance(10000);
  assert.equal(t.comet.events("ping").length, pings, "no pings after the call");
  invite(t.comet);
  assert.equal(t.names().filter((n) => n === "onCall").length, 2);
});

test("the server ends the call (kick): onCallEnd, the others are told, ready for the next", async () => {
  const t = setup();
  const { session, ua } = await inCall(t);
  session.options.eventHandlers.ended({ originator: "remote", cause: "BYE" });
  assert.equal(t.seen.at(-1)[0], "onCallEnd");
  assert.equal(t.seen.at(-1)[1].status, "terminated");
  assert.equal(t.comet.events("out").length, 1);
  assert.equal(ua.stopped, true);
  assert.equal(t.api.isInCall(), false);
});

test("invited again into the conference we are in: accept and pong, no second onCall", async () => {
  const t = setup();
  await inCall(t);
  invite(t.comet, { callKey: "key-2" });
  assert.equal(t.names().filter((n) => n === "onCall").length, 1);
  assert.equal(t.comet.events("accept").length, 2);
  assert.equal(t.comet.events("pong").length, 2);
});

test("a dialog (not a conference) answers a second call busy", async () => {
  const t = setup();
  t.comet.authorize();
  invite(t.comet, { conference: "false" });
  t.api.acceptCall({ type: "audio" });
  await settle();
  invite(t.comet, { conference: "false", callKey: "key-2" });
  assert.deepEqual(t.comet.events("out").at(-1).msg, { status: "busy", callKey: "key-2" });
});

test("picked up by the same user on another device: this one stops quietly", () => {
  const t = setup();
  t.comet.authorize();
  invite(t.comet);
  t.comet.deliver(PIPE, { status: "start_accept" }, from(7, "accept"));
  assert.equal(t.comet.events("out").length, 0);
  assert.ok(!t.comet.subscribed().includes(PIPE));
});

test("no camera or microphone: onCallEnd no-media-stream", async () => {
  const t = setup({ media: "deny" });
  t.comet.authorize();
  invite(t.comet);
  t.api.acceptCall({ type: "video" });
  await settle();
  assert.equal(t.seen.at(-1)[0], "onCallEnd");
  assert.equal(t.seen.at(-1)[1].status, "no-media-stream");
  assert.equal(t.JsSIP.uas.length, 0);
  assert.equal(t.api.isInCall(), false);
});

test("busy declines the ringing call", () => {
  const t = setup();
  t.comet.authorize();
  invite(t.comet);
  assert.equal(t.api.busy(), true);
  assert.deepEqual(t.comet.events("out")[0].msg, { status: "busy", callKey: "key-1" });
});

test("toggleMute, muteAudio (which tells the pipe), isMute", async () => {
  const t = setup();
  const { session } = await inCall(t);
  assert.equal(t.api.toggleMute(), true);
  assert.deepEqual(session.muted, { audio: true, video: true });
  assert.equal(t.api.toggleMute(), false);
  assert.equal(t.comet.events("toggleMute").length, 0, "toggleMute is local, as before");
  assert.equal(t.api.muteAudio(true), true);
  // An audio call unmutes only audio (video stays as toggleMute left it), as before.
  assert.deepEqual(t.api.isMute(), { audio: true, video: true });
  assert.deepEqual(t.comet.events("toggleMute")[0].msg, { isMute: true });
  t.api.hangup();
  assert.equal(t.api.toggleMute(), undefined);
});

test("queued invitations arrive backslash-escaped and still parse", () => {
  const t = setup();
  t.comet.authorize();
  t.comet.deliver("msg.sys_sipCall", {
    message: '{\\"room\\":\\"101\\"}',
    sys: { callPipe: PIPE, callKey: "k", conference: "true", serverName: "h", serverPort: 1, sipNumber: "0*101*audio" },
  });
  assert.deepEqual(t.seen[0][1], { data: { room: "101" } });
});

test("the public surface of the old file is here", () => {
  const t = setup();
  for (const f of ["start", "acceptCall", "hangup", "busy", "setBandwidth", "toggleMute", "isMute",
    "muteAudio", "muteVideo", "toggleHold", "isInCall", "fullScreen", "isFullScreenSupport"]) {
    assert.equal(typeof t.api[f], "function", f);
  }
  assert.equal(t.api.opt.bandwidth_video, 256);
  assert.equal(t.api.opt.bandwidth_audio, 32);
});
