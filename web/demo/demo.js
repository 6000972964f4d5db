// The demo page: join a room with a user id, through the demo backend (/demo/api/, CometQL
// statements as a customer's backend would run them) and cometVideoApi.js (/api/).
// `window.demo` exposes the page's state for people poking around and for the browser test.

import {
  callPlan,
  errorText,
  hlsLink,
  inboundSummary,
  membersModel,
  randomUserId,
  validRoom,
  validUserId,
  wsNode,
} from "./logic.js";

const $ = (id) => document.getElementById(id);

const demo = {
  state: "idle", // idle | joining | in-call | left
  room: null,
  userId: null,
  features: null,
  members: [],
  stats: inboundSummary([]),
  events: [],
  error: null,
};
window.demo = demo;

let pollTimer = null;

function setStatus(text) {
  $("status").textContent = text;
}

function notice(text) {
  const n = $("notice");
  n.textContent = text || "";
  n.hidden = !text;
  demo.error = text || null;
}

function logEvent(text) {
  demo.events.push({ at: Date.now(), text });
  const li = document.createElement("li");
  li.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  $("events").prepend(li);
}

async function api(method, path, body) {
  const res = await fetch(path, {
    method,
    headers: body ? { "Content-Type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  let data = null;
  try {
    data = await res.json();
  } catch (_) {
    data = null;
  }
  if (!res.ok) {
    throw new Error(errorText(res.status, data));
  }
  return data;
}

function renderMembers(rows) {
  demo.members = membersModel(rows, Date.now(), demo.userId);
  const ul = $("members");
  ul.replaceChildren(
    ...demo.members.map((m) => {
      const li = document.createElement("li");
      li.dataset.user = String(m.userId);
      li.dataset.talking = m.talking ? "1" : "0";
      li.dataset.muted = m.muted ? "1" : "0";
      const dot = document.createElement("span");
      dot.className = "dot";
      dot.title = m.talking ? "talking" : "quiet";
      const who = document.createElement("div");
      const name = document.createElement("div");
      name.className = "who";
      name.textContent = `user ${m.userId}${m.self ? " (you)" : ""}`;
      const when = document.createElement("div");
      when.className = "when";
      when.textContent = `joined ${m.joinedAt}, ${m.inCallFor} ago`;
      const energy = document.createElement("div");
      energy.className = "energy";
      energy.style.width = `${m.energy}%`;
      who.append(name, when, energy);
      const mic = document.createElement("span");
      mic.className = "mic";
      mic.textContent = m.muted ? "muted" : "mic on";
      li.append(dot, who, mic);
      return li;
    }),
  );
  $("member-count").textContent = `(${demo.members.length})`;
  const me = demo.members.find((m) => m.self);
  const mute = $("mute");
  mute.disabled = !me;
  mute.setAttribute("aria-pressed", me && me.muted ? "true" : "false");
  mute.textContent = me && me.muted ? "Unmute" : "Mute";
}

function showVideoIfAny() {
  const v = $("remote-video");
  const stream = window.cometVideoApi.getRemoteStream();
  const live = stream && stream.getVideoTracks().some((t) => t.readyState === "live" && !t.muted);
  const showing = demo.plan.video && live && v.videoWidth > 0;
  v.hidden = !showing;
  $("no-video").hidden = showing;
}

async function poll() {
  if (demo.state !== "joining" && demo.state !== "in-call") {
    return;
  }
  try {
    const r = await api("GET", `/demo/api/members?room=${encodeURIComponent(demo.room)}`);
    renderMembers(r.members);
  } catch (e) {
    setStatus(`members: ${e.message}`);
  }
  const pc = window.cometVideoApi.getPeerConnection();
  if (pc) {
    const report = await pc.getStats();
    demo.stats = inboundSummary(report.values());
    const a = demo.stats.audio;
    const v = demo.stats.video;
    $("stats").textContent =
      `inbound audio: ${a.packetsReceived} packets, level ${a.audioLevel.toFixed(3)} · ` +
      `inbound video: ${v.framesDecoded} frames${v.frameWidth ? ` (${v.frameWidth}x${v.frameHeight})` : ""}`;
    showVideoIfAny();
  }
}

function startPolling() {
  stopPolling();
  pollTimer = setInterval(poll, 1000);
  poll();
}

function stopPolling() {
  if (pollTimer !== null) {
    clearInterval(pollTimer);
    pollTimer = null;
  }
}

function setInCall(inCall) {
  $("join").disabled = inCall;
  $("room").disabled = inCall;
  $("user").disabled = inCall;
  $("call-panel").hidden = !inCall;
  $("leave").disabled = !inCall;
}

function callEnded(why) {
  if (demo.state === "left" || demo.state === "idle") {
    return;
  }
  demo.state = "left";
  stopPolling();
  setInCall(false);
  $("mute").disabled = true;
  setStatus(`Left room ${demo.room} (${why}).`);
}

// The callbacks of cometVideoApi: the page answers the invitation its own join created.
const callbacks = {
  onCall(event) {
    logEvent(`invitation to room ${demo.room}`);
    const plan = demo.plan;
    window.cometVideoApi.acceptCall({
      type: plan.type,
      video_remote: plan.video ? $("remote-video") : undefined,
      audio_remote: plan.video ? undefined : $("remote-audio"),
      video_local: plan.video ? $("local-video") : undefined,
    });
    if (plan.video) {
      $("local-video").hidden = false;
    }
    setStatus(`Connecting to the media server (${event.data && event.data.demo ? "demo invitation" : "invitation"})…`);
  },
  onCallStart() {
    logEvent("call started: you and another member are connected");
  },
  onCallAccept(e) {
    logEvent(`user ${e.user_id} picked up`);
  },
  onIn(e) {
    logEvent(`user ${e.user_id} joined`);
  },
  onOut(e) {
    logEvent(`user ${e.user_id} left (${e.status})`);
  },
  onCallEnd(e) {
    logEvent(`call ended (${e.status})`);
    callEnded(e.status);
  },
};

async function join(room, userId) {
  notice("");
  demo.state = "joining";
  demo.room = room;
  demo.userId = userId;
  setInCall(true);
  setStatus("Creating your user (INSERT INTO users_auth)…");
  let session;
  try {
    session = await api("POST", "/demo/api/session", { user_id: userId });
  } catch (e) {
    demo.state = "idle";
    setInCall(false);
    notice(e.message);
    return;
  }
  setStatus("Connecting to the comet server…");
  const invite = async () => {
    if (demo.state !== "joining" || demo.invited) {
      return;
    }
    demo.invited = true;
    setStatus(`Inviting you to room ${room} (INSERT INTO conference)…`);
    try {
      await api("POST", "/demo/api/join", { room, user_id: userId });
    } catch (e) {
      notice(e.message);
      callEnded("not invited");
    }
  };
  // cometVideoApi first: its call handler must be in place before the invitation arrives.
  window.cometVideoApi.start(callbacks);
  window.cometApi.onAuthSuccess(invite);
  window.cometApi.start({
    node: wsNode(location, demo.features),
    dev_id: session.dev_id,
    user_id: session.user_id,
    user_key: session.user_key,
    wss: demo.features.ws.tls,
  });
  if (window.cometApi.isAuthorized() === true) {
    invite();
  }
  startPolling();
  const link = hlsLink(demo.features, room);
  $("hls").hidden = !link;
  if (link) {
    $("hls").href = link;
  }
}

// Once the remote stream plays, the call is up from this page's point of view.
$("remote-audio").addEventListener("playing", () => markInCall());
$("remote-video").addEventListener("playing", () => markInCall());
$("remote-video").addEventListener("resize", () => showVideoIfAny());

function markInCall() {
  if (demo.state === "joining") {
    demo.state = "in-call";
    setStatus(`In room ${demo.room} as user ${demo.userId}.`);
  }
}

$("join-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const room = $("room").value.trim();
  const userId = validUserId($("user").value);
  if (!validRoom(room)) {
    notice("A room name is 1-64 characters of A-Z a-z 0-9 _ -.");
    return;
  }
  if (userId === null) {
    notice("A user id is a number from 1 to 999999999.");
    return;
  }
  if (demo.state === "left") {
    // A second join from the same page: start from a fresh page state.
    location.search = `?room=${encodeURIComponent(room)}&user=${userId}&autojoin=1`;
    return;
  }
  join(room, userId);
});

$("mute").addEventListener("click", async () => {
  const me = demo.members.find((m) => m.self);
  if (!me) {
    return;
  }
  $("mute").disabled = true;
  try {
    // A server-side mute: UPDATE conference_members SET audio = 0|1.
    await api("POST", "/demo/api/mute", { room: demo.room, user_id: demo.userId, audio: me.muted });
    logEvent(me.muted ? "unmuted" : "muted (server-side)");
  } catch (e) {
    notice(e.message);
  }
  await poll();
});

$("leave").addEventListener("click", async () => {
  $("leave").disabled = true;
  window.cometVideoApi.hangup();
  try {
    await api("POST", "/demo/api/leave", { room: demo.room, user_id: demo.userId });
  } catch (e) {
    notice(e.message);
  }
  logEvent("you left");
  callEnded("you left");
});

async function boot() {
  const q = new URLSearchParams(location.search);
  $("user").value = q.get("user") || String(randomUserId(Math.random));
  if (q.get("room")) {
    $("room").value = q.get("room");
  }
  try {
    demo.features = await api("GET", "/api/features");
  } catch (e) {
    notice(`cannot read /api/features: ${e.message}`);
    return;
  }
  demo.plan = callPlan(demo.features);
  $("no-video-text").textContent = demo.plan.video
    ? "Waiting for the composed video…"
    : "Audio conference: this server mixes audio; video composition is not available here yet.";
  setStatus("Pick a room and a user id, then join.");
  demo.ready = true;
  if (q.get("autojoin") === "1") {
    $("join-form").requestSubmit();
  }
}

boot();
