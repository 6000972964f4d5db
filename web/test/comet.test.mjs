import assert from "node:assert/strict";
import { test } from "node:test";
import { cometUrl, createCometClient, serverPipe, toEvent } from "../src/comet.js";
import { fakeClock } from "../testkit/fakes.mjs";

class FakeSocket {
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    FakeSocket.all.push(this);
  }
  send(t) {
    assert.equal(this.readyState, 1, "sends only on an open socket");
    this.sent.push(t);
  }
  close() {
    this.readyState = 3;
    if (this.onclose) {
      this.onclose({});
    }
  }
  open() {
    this.readyState = 1;
    this.onopen();
  }
  frame(o) {
    this.onmessage({ data: JSON.stringify(o) });
  }
}
FakeSocket.all = [];

function client(protocol = "http:") {
  FakeSocket.all = [];
  const clock = fakeClock();
  let n = 0;
  const c = createCometClient({
    WebSocket: FakeSocket,
    location: { protocol, host: "page.example:8080" },
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    random: () => ((n++ * 7) % 62) / 62,
    now: clock.now,
    storage: undefined,
    log: { error() {} },
  });
  return { c, clock };
}

test("URL parameters in the order the server reads them", () => {
  assert.equal(
    cometUrl({ tls: false, node: "127.0.0.1:8087", user_key: "k", user_id: 5, dev_id: 0, uuid: "U" }),
    "ws://127.0.0.1:8087/ws/sesion=k&myid=5&devid=0&v=4.08&uuid=U&api=js",
  );
  assert.ok(cometUrl({ tls: true, node: "h:1", uuid: "U" }).startsWith("wss://h:1/ws/sesion=&myid=&devid=0&"));
});

test("which subscription names are server pipes", () => {
  assert.equal(serverPipe("web_abc"), "web_abc");
  assert.equal(serverPipe("web_abc.ping"), "web_abc");
  assert.equal(serverPipe("msg"), null);
  assert.equal(serverPipe("msg.sys_sipCall"), null);
  assert.equal(serverPipe("#web_x"), null);
  assert.equal(serverPipe("track_web_x"), "track_web_x");
});

test("relayed data arrives as text and is parsed", () => {
  const e = toEvent({ data: '{"status":"ping"}', event: "ping", pipe: "web_p", user_id: 3 });
  assert.deepEqual(e.data, { status: "ping" });
  assert.deepEqual(e.server_info, {
    user_id: 3, pipe: "web_p", event: "ping", history: false, marker: undefined, uuid: undefined,
  });
  assert.equal(toEvent({ data: "plain" }).data, "plain");
});

test("connects, authorizes, subscribes, and dispatches once per message", () => {
  const { c, clock } = client("https:");
  let auth = 0;
  c.onAuthSuccess(() => auth++);
  c.start({ node: "127.0.0.1:8087", dev_id: 0, user_id: 7, user_key: "demo_k" });
  const ws = FakeSocket.all[0];
  assert.match(ws.url, /^wss:\/\/127\.0\.0\.1:8087\/ws\/sesion=demo_k&myid=7&devid=0&v=4\.08&uuid=[A-Za-z0-9]{32}&api=js$/);
  const calls = [];
  c.subscription("msg.sys_sipCall", (e) => calls.push(["sip", e]));
  const id = c.subscription("web_pipe1", (e) => calls.push(["pipe", e]));
  c.subscription("web_pipe1.pong", (e) => calls.push(["pong", e]));
  ws.open();
  assert.deepEqual(ws.sent, ["subscription\nweb_pipe1"]);
  assert.equal(c.isAuthorized(), undefined);
  ws.frame({ authorized: true, data: "demo_k", event: "serverInfo", pipe: "sys", server: "s" });
  assert.equal(c.isAuthorized(), true);
  assert.equal(c.getRealUserKey(), "demo_k");
  ws.frame({ authorized: true, data: "demo_k", event: "serverInfo", pipe: "sys", server: "s" });
  assert.equal(auth, 1, "auth callbacks run on a change only");

  ws.frame({ data: { message: "{}", sys: { callPipe: "web_x" } }, event: "sys_sipCall", pipe: "msg" });
  assert.equal(calls.length, 1);
  assert.equal(calls[0][0], "sip");

  const relayed = { data: JSON.stringify({ status: "pong", _cometApi_uuid: "jsapiAAA" }), event: "pong", pipe: "web_pipe1", user_id: 9 };
  ws.frame(relayed);
  ws.frame(relayed); // the second and third copies of a multi-send are dropped
  assert.deepEqual(calls.slice(1).map((x) => x[0]), ["pipe", "pong"]);
  assert.deepEqual(calls[1][1].data, { status: "pong" }, "the de-duplication id is removed");

  c.unsubscription(id);
  assert.equal(ws.sent.length, 1, "web_pipe1.pong still needs the pipe");
  clock.advance(1);
});

test("multi-send: three copies a second apart with one id; queued until open", () => {
  const { c, clock } = client();
  c.start({ node: "h:1", dev_id: 0, user_id: 7, user_key: "k" });
  const ws = FakeSocket.all[0];
  c.multi_web_pipe_send("web_call", "ping", { status: "ping" });
  assert.equal(ws.sent.length, 0);
  ws.open();
  assert.equal(ws.sent.length, 1);
  clock.advance(999);
  assert.equal(ws.sent.length, 1);
  clock.advance(1);
  assert.equal(ws.sent.length, 2);
  clock.advance(1000);
  assert.equal(ws.sent.length, 3);
  clock.advance(5000);
  assert.equal(ws.sent.length, 3);
  const bodies = ws.sent.map((t) => t.split("\n"));
  for (const b of bodies) {
    assert.deepEqual(b.slice(0, 4), ["web_pipe2", "web_call", "ping", "*"]);
  }
  const ids = new Set(bodies.map((b) => JSON.parse(b[4])._cometApi_uuid));
  assert.equal(ids.size, 1);
  assert.match([...ids][0], /^jsapi[A-Za-z0-9]{11}$/);
  assert.equal(c.web_pipe_send("not_web", "e", {}), false, "only web_ pipes");
});

test("reconnects after a close and subscribes again", () => {
  const { c, clock } = client();
  c.start({ node: "h:1", dev_id: 0, user_id: 7, user_key: "k" });
  c.subscription("web_a", () => {});
  FakeSocket.all[0].open();
  FakeSocket.all[0].close();
  assert.equal(FakeSocket.all.length, 1);
  clock.advance(1000);
  assert.equal(FakeSocket.all.length, 2);
  FakeSocket.all[1].open();
  assert.deepEqual(FakeSocket.all[1].sent, ["subscription\nweb_a"]);
  c.stop();
  clock.advance(60000);
  assert.equal(FakeSocket.all.length, 2, "no reconnect after stop");
});
