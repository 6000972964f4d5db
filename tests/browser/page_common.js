// What the JsSIP test pages (sip_page.html, video_page.html) share: reporting to the test over
// HTTP, loading JsSIP (2 or 3, query `jssip`), registering as cometVideoApi.js does
// (<6-digit dev_id><user_id>, the users_auth hash as password), and the call's end events.
// A page defines `call(ua, host)`, which runs once registered.
"use strict";
const q = new URLSearchParams(location.search);
const role = q.get("role");

function report(event, data) {
  const line = event + " " + JSON.stringify(data);
  document.getElementById("log").textContent += line.slice(0, 300) + "\n";
  return fetch("/report", {
    method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify({page: role, event: event, data: data || {}}),
  });
}
window.onerror = function (msg, src, line) { report("js_error", {msg: String(msg), line: line}); };

function pad6(n) { return ("000000" + n).slice(-6); }

function start() {
  report("loaded", {version: JsSIP.version});
  const host = q.get("sip").split(":")[0];
  const sipUser = pad6(0) + q.get("user");
  const socket = new JsSIP.WebSocketInterface("ws://" + q.get("sip"));
  const ua = new JsSIP.UA({
    sockets: [socket],
    uri: "sip:" + sipUser + "@" + host,
    password: q.get("hash"),
    display_name: sipUser,
    register: true,
    session_timers: false,
  });
  ua.on("registered", function () {
    report("registered", {});
    call(ua, host);
  });
  ua.on("registrationFailed", function (e) { report("registrationFailed", {cause: e.cause}); });
  ua.start();
}

// The conference of the query: sip:<dev>*<room>*<profile>@host.
function conferenceUri(host) {
  return "sip:0*" + q.get("room") + "*" + q.get("profile") + "@" + host;
}

// How the call ends, with the Reason header of a BYE (RFC 3326) when there is one.
function reportEnd(session) {
  session.on("failed", function (e) { report("failed", {cause: e.cause, originator: e.originator}); });
  session.on("ended", function (e) {
    report("ended", {cause: e.cause, originator: e.originator,
      reason: e.message && e.message.getHeader ? (e.message.getHeader("Reason") || "") : ""});
  });
}

// JsSIP 3 exposes the RTCPeerConnection; JsSIP 2 wraps it (rtcninja) as .pc.
function peerConnection(session) {
  const c = session.connection;
  return c && typeof c.getStats === "function" && !c.pc ? c : c.pc;
}

(function loadJsSIP() {
  const s = document.createElement("script");
  s.src = "/jssip" + q.get("jssip") + ".js";
  s.onload = start;
  s.onerror = function () { report("js_error", {msg: "cannot load " + s.src}); };
  document.head.appendChild(s);
})();
