import assert from "node:assert/strict";
import { test } from "node:test";
import { parseMessage, sipSocketUrl, sipUser, stripslashes, useTls } from "../src/ident.js";

test("SIP user: dev_id as 6 digits, then the user id", () => {
  assert.equal(sipUser(0, 123), "000000123");
  assert.equal(sipUser("15", 7), "0000157");
  assert.equal(sipUser(undefined, 2), "0000002");
});

test("SIP socket URL and the TLS choice", () => {
  const sys = { serverName: "meet.example.com", serverPort: 7443 };
  assert.equal(sipSocketUrl(sys, true), "wss://meet.example.com:7443");
  assert.equal(sipSocketUrl(sys, false), "ws://meet.example.com:7443");
  assert.equal(useTls(undefined, "https:"), true);
  assert.equal(useTls(undefined, "http:"), false);
  assert.equal(useTls(true, "http:"), true);
  assert.equal(useTls(false, "https:"), false);
});

test("messages: JSON, escaped JSON, or text as it came", () => {
  assert.deepEqual(parseMessage('{"a":1}', stripslashes), { a: 1 });
  assert.deepEqual(parseMessage('{\\"a\\":\\"x\\"}', stripslashes), { a: "x" });
  assert.equal(parseMessage("hello", stripslashes), "hello");
  assert.equal(parseMessage("", stripslashes), "");
  assert.equal(parseMessage("12", stripslashes), "12", "a JSON number stays text");
  const o = { b: 2 };
  assert.equal(parseMessage(o, stripslashes), o);
});

test("stripslashes undoes addslashes", () => {
  assert.equal(stripslashes("a\\'b\\\"c\\\\d"), "a'b\"c\\d");
  assert.equal(stripslashes("x\\0y"), "x\u0000y");
});
