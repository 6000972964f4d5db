// Pure functions of the demo page (no DOM, no network), unit-tested with node's test runner.

/** `m:ss` or `h:mm:ss` for a number of seconds. */
export function formatDuration(seconds) {
  const s = Math.max(0, Math.floor(Number(seconds) || 0));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}

/** `HH:MM:SS` (local time) of a time in milliseconds. */
export function clockTime(ms) {
  const d = new Date(ms);
  return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, "0")).join(":");
}

/** Room names the server accepts: 1-64 of A-Z a-z 0-9 _ -. */
export function validRoom(room) {
  return typeof room === "string" && /^[0-9A-Za-z_-]{1,64}$/.test(room);
}

/** User ids the demo accepts: 1..999999999. */
export function validUserId(text) {
  const s = String(text).trim();
  if (!/^[0-9]{1,9}$/.test(s)) {
    return null;
  }
  const n = Number(s);
  return n >= 1 ? n : null;
}

/** A user id for a new tab: 1000-9999. */
export function randomUserId(random) {
  return 1000 + Math.floor(random() * 9000);
}

/** The comet WebSocket `node` (host:port) for a page at `location`. */
export function wsNode(location, features) {
  return `${location.hostname.includes(":") ? `[${location.hostname}]` : location.hostname}:${features.ws.port}`;
}

/**
 * The member list from `conference_members` rows: who, talking, muted, since when.
 * `nowMs` turns `join_time` (seconds ago) into a clock time.
 */
export function membersModel(rows, nowMs, selfId) {
  return (rows || [])
    .map((r) => {
      const joinedAgo = Number(r.join_time) || 0;
      return {
        userId: Number(r.user_id),
        self: Number(r.user_id) === Number(selfId),
        talking: Number(r.talking) === 1,
        energy: Math.max(0, Math.min(100, Number(r.energy) || 0)),
        muted: r.audio !== undefined && Number(r.audio) === 0,
        joinedAgo,
        joinedAt: clockTime(nowMs - joinedAgo * 1000),
        inCallFor: formatDuration(joinedAgo),
        lastTalking: r.last_talking === "N/A" || r.last_talking === undefined ? null : Number(r.last_talking),
      };
    })
    .sort((a, b) => b.joinedAgo - a.joinedAgo || a.userId - b.userId);
}

/** The HLS player link of a room, or null when the server does not broadcast. */
export function hlsLink(features, room) {
  if (!features || !features.broadcast || typeof features.hls !== "string" || !validRoom(room)) {
    return null;
  }
  return features.hls.split("{room}").join(encodeURIComponent(room));
}

/** The call type and conference profile the demo uses on this server. */
export function callPlan(features) {
  const profile = features.demo_profile || "audio";
  const p = (features.profiles || {})[profile];
  const video = !!(features.video && p && p.video);
  return { profile, type: video ? "video" : "audio", video };
}

/**
 * What the page shows of WebRTC statistics (an iterable of RTCStats, as getStats() resolves):
 * inbound audio (packets, level) and video (frames decoded, size).
 */
export function inboundSummary(stats) {
  const out = {
    audio: { packetsReceived: 0, audioLevel: 0 },
    video: { framesDecoded: 0, frameWidth: 0, frameHeight: 0 },
  };
  for (const item of stats) {
    // An RTCStatsReport iterates as [id, stats] pairs; a plain list holds the stats.
    const r = Array.isArray(item) ? item[1] : item;
    if (!r || r.type !== "inbound-rtp") {
      continue;
    }
    const kind = r.kind || r.mediaType;
    if (kind === "audio") {
      out.audio.packetsReceived += r.packetsReceived || 0;
      out.audio.audioLevel = Math.max(out.audio.audioLevel, r.audioLevel || 0);
    } else if (kind === "video") {
      out.video.framesDecoded += r.framesDecoded || 0;
      out.video.frameWidth = Math.max(out.video.frameWidth, r.frameWidth || 0);
      out.video.frameHeight = Math.max(out.video.frameHeight, r.frameHeight || 0);
    }
  }
  return out;
}

/** An error text from a failed demo API answer. */
export function errorText(status, body) {
  if (body && typeof body.error === "string") {
    return body.error;
  }
  return `the server answered ${status}`;
}
