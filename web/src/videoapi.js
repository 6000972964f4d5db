// cometVideoApi: calls and conferences for pages, written for this server. It keeps the public
// surface of CppComet's cometVideoApi.js 1.0 (start, acceptCall, hangup, busy, setBandwidth,
// toggleMute, isMute, muteAudio, muteVideo, toggleHold, isInCall, fullScreen, the callbacks
// onCall, onCallAccept, onCallStart, onCallEnd, onIn, onOut) and its signalling on the comet
// call pipe (contract section 3: ping, pong, accept, out, mediaStart, toggleMute, each sent 3
// times with one `_cometApi_uuid`), so pages and peers running the old file interoperate.
// Differences: current browser APIs (mediaDevices, srcObject, transceivers), JsSIP 3, one
// getUserMedia per call, no public STUN servers by default, the UA stops when the call ends,
// and `onIn` is called when another member's media starts.

import { setBandwidth as sdpBandwidth } from "./sdp.js";
import { parseMessage, sipSocketUrl, sipUser, stripslashes, useTls } from "./ident.js";

export const VERSION = "2.0";

/** Whether `sys.conference` says the call is a conference (the server sends the string "true"). */
export function isConference(sys) {
  const c = sys && sys.conference;
  return c === true || c === "true" || c === 1 || c === "1";
}

function isStream(call) {
  const sys = call.data.sys || {};
  const msg = call.data.message;
  return sys.stream == true || (msg !== null && typeof msg === "object" && msg.stream == true); // eslint-disable-line eqeqeq
}

function sameUser(a, b) {
  return a !== undefined && a !== null && b !== undefined && b !== null && String(a) === String(b);
}

function stopTracks(stream) {
  if (stream && typeof stream.getTracks === "function") {
    for (const t of stream.getTracks()) {
      t.stop();
    }
  }
}

/**
 * Creates the API object. `env` provides the browser and the libraries, so tests can fake them:
 * comet() (the CometServer JS API object), JsSIP(), mediaDevices(), MediaStream, location,
 * setTimeout, clearTimeout, now(), log, signal(name) (tabSignal events of the old file).
 */
export function createVideoApi(env) {
  const api = {};
  const log = env.log || { info() {}, warn() {}, error() {}, debug() {} };
  const comet = () => env.comet();
  const clearTimer = (id) => {
    if (id !== undefined && id !== null) {
      env.clearTimeout(id);
    }
  };
  const signal = (name) => {
    if (env.signal) {
      env.signal(name);
    }
  };

  api.version = VERSION;
  api.useJsSip = true;
  api.opt = {
    language: ["en"],
    // A conference member alone this long is only logged, as in the old file.
    alone_time: 5000,
    bandwidth_video: 256,
    bandwidth_audio: 32,
    lonelinessTimeout: 60000,
    // How often the call pipe is pinged while nothing else arrives on it.
    ping_interval: 1000,
    // ICE servers for the browser side. The server is ICE-lite with public candidates, so none
    // are needed; pages behind strict NATs may add TURN here.
    iceServers: [],
    // true/false: SIP over wss/ws; undefined: wss when the page is https.
    sip_wss: undefined,
  };
  api._callPipes = {};

  const send = (pipe, event, msg) => comet().multi_web_pipe_send(pipe, event, msg);
  const myId = () => comet().getUserId();

  // --- call pipe liveness (ping/pong), as the old file does it -------------------------------

  function ping(pipe, timeout) {
    const call = api._callPipes[pipe];
    if (!call || isStream(call) || call.isCall_onCallEnd) {
      return;
    }
    send(pipe, "ping", { status: "ping" });
    schedulePing(pipe);
    clearTimer(call.outTimeoutId);
    call.outTimeoutId = env.setTimeout(() => {
      call.outTimeoutId = undefined;
      log.info("cometVideoApi: nobody else answered on the call pipe", pipe);
    }, timeout || api.opt.alone_time);
  }

  function schedulePing(pipe) {
    const call = api._callPipes[pipe];
    if (!call || call.isCall_onCallEnd) {
      return false;
    }
    clearTimer(call.pingUpdateTimeoutId);
    call.pingUpdateTimeoutId = env.setTimeout(() => ping(pipe), api.opt.ping_interval);
    return true;
  }

  function pingCancel(pipe) {
    const call = api._callPipes[pipe];
    if (!call) {
      return;
    }
    clearTimer(call.outTimeoutId);
    clearTimer(call.pingUpdateTimeoutId);
    call.outTimeoutId = undefined;
    call.pingUpdateTimeoutId = undefined;
  }

  api.ping = ping;
  api.pingUpdate = schedulePing;
  api.pingCancel = pingCancel;

  // --- the page's callbacks ------------------------------------------------------------------

  function callType(call) {
    return (call.call_options && call.call_options.type) || (call.data.sys && call.data.sys.mode);
  }

  function callEnd(pipe, info) {
    const call = api._callPipes[pipe];
    pingCancel(pipe);
    if (!call || call.isCall_onCallEnd) {
      return false;
    }
    call.isCall_onCallEnd = true;
    call.endTime = env.now();
    if (api.opt.onCallEnd) {
      const fullTime = call.startTime ? call.endTime - call.startTime : 0;
      const time =
        info.status === "busy" || !call.mediaStartTime ? 0 : call.endTime - call.mediaStartTime;
      api.opt.onCallEnd({
        action: "out",
        callInfo: call.originalEvent.data,
        time,
        status: info.status,
        fullTime,
        type: callType(call),
      });
    }
    return true;
  }

  function callAccept(pipe, info) {
    const call = api._callPipes[pipe];
    if (!call || call.isCall_onCallAccept) {
      return false;
    }
    if (!sameUser(call.originalEvent.data.sys.caller_id, myId())) {
      return false; // only the caller hears that someone picked up
    }
    call.isCall_onCallAccept = true;
    if (api.opt.onCallAccept) {
      api.opt.onCallAccept({
        action: "accept",
        callInfo: call.originalEvent.data,
        accept_type: info.type,
        user_id: info.user_id,
      });
    }
    return true;
  }

  function callStart(pipe, who, status) {
    const call = api._callPipes[pipe];
    if (!call) {
      return false;
    }
    if (who === "interlocutor") {
      call.call_media_interlocutor_status = true;
      if (call.call_media_self_status && status !== "answer") {
        // Tell the newcomer that we are connected too.
        send(pipe, "mediaStart", { status: "answer" });
      }
    } else {
      call.call_media_self_status = true;
      send(pipe, "mediaStart", { status: "self" });
    }
    if (call.isCall_onCallStart || !call.call_media_self_status) {
      return false;
    }
    if (!call.call_media_interlocutor_status && !isStream(call)) {
      return false;
    }
    call.isCall_onCallStart = true;
    call.mediaStartTime = env.now();
    if (api.opt.onCallStart) {
      api.opt.onCallStart({
        action: "start",
        status: "start",
        callInfo: call.originalEvent,
        type: callType(call),
      });
    }
    return true;
  }

  api.callEnd = callEnd;
  api.callAccept = callAccept;
  api.callStart = callStart;
  api.isCallStart = (pipe) => !!(api._callPipes[pipe] && api._callPipes[pipe].isCall_onCallStart);

  // --- what arrives on a call pipe -------------------------------------------------------------

  function onPipeEvent(event) {
    const info = event.server_info || {};
    const pipe = info.pipe;
    const call = api._callPipes[pipe];
    if (!call) {
      return;
    }
    schedulePing(pipe);
    const data = event.data && typeof event.data === "object" ? event.data : {};
    const from = info.user_id;
    const active = api.opt.activeCallEvent;
    switch (info.event) {
      case "out":
        if (!isConference(call.data.sys)) {
          // A dialog: the other side left (the callKey guards against a stale signal).
          if (data.callKey === call.data.sys.callKey) {
            callEnd(pipe, { action: "out", uuid: info.uuid, user_id: from, status: data.status });
            api.hangup(call);
          }
        } else {
          ping(pipe);
          if (api.opt.onOut) {
            api.opt.onOut({
              action: "out",
              uuid: info.uuid,
              user_id: from,
              status: data.status,
              callInfo: call.originalEvent.data,
              type: callType(call),
            });
          }
        }
        break;
      case "toggleMute":
        if (call.isAccept && api.opt.onToggleMute) {
          api.opt.onToggleMute({
            action: "toggleMute",
            uuid: info.uuid,
            user_id: from,
            isMute: data.isMute,
            status: data.isMute,
            callInfo: call.originalEvent,
            type: callType(call),
          });
        }
        break;
      case "toggleHold": {
        const cb = api.opt.onToggleHold || api.opt.toggleHold;
        if (call.isAccept && cb) {
          cb({
            action: "toggleHold",
            uuid: info.uuid,
            user_id: from,
            isHold: data.isHold,
            status: data.isHold,
            callInfo: call.originalEvent,
            type: callType(call),
          });
        }
        break;
      }
      case "ping":
        if (call.isAccept && active === call) {
          send(pipe, "pong", { status: "pong" });
        }
        break;
      case "pong":
        clearTimer(call.outTimeoutId);
        call.outTimeoutId = undefined;
        break;
      case "accept":
        if (sameUser(from, myId())) {
          // Our user picked up on another device: this one stops ringing.
          callEnd(pipe, { action: "cancel", uuid: info.uuid, user_id: from, status: data.status });
          api.hangup(call, true);
          return;
        }
        callAccept(pipe, { uuid: info.uuid, user_id: from, type: data.type });
        break;
      case "mediaStart":
        callStart(pipe, "interlocutor", data.status);
        if (data.status === "self" && call.isAccept && !sameUser(from, myId()) && api.opt.onIn) {
          api.opt.onIn({
            action: "in",
            uuid: info.uuid,
            user_id: from,
            callInfo: call.originalEvent.data,
            type: callType(call),
          });
        }
        break;
      default:
        break;
    }
  }

  // --- invitations -----------------------------------------------------------------------------

  function onSipCall(event) {
    const data = event.data || {};
    const strip = comet().stripslashes ? (s) => comet().stripslashes(s) : stripslashes;
    data.message = parseMessage(data.message, strip);
    const sys = data.sys || {};
    const pipe = sys.callPipe;
    if (!pipe) {
      log.warn("cometVideoApi: sys_sipCall without a callPipe", event);
      return;
    }
    const active = api.opt.activeCallEvent;
    if (api._callPipes[pipe] && active && active.data.sys.callPipe === pipe) {
      if (!isConference(active.data.sys)) {
        // A second call into the dialog we are in: busy.
        send(pipe, "out", { status: "busy", callKey: sys.callKey });
        return;
      }
      // Invited again to the conference we are in: say we are here.
      send(pipe, "accept", { status: "start_accept" });
      send(pipe, "pong", { status: "pong" });
      return;
    }
    const call = { data, server_info: event.server_info || {} };
    api._callPipes[pipe] = call;
    ping(pipe, api.opt.lonelinessTimeout);
    call._callPipeId = comet().subscription(pipe, onPipeEvent);
    call.originalEvent = JSON.parse(JSON.stringify({ data, server_info: call.server_info }));
    call._isHangup = false;
    api.opt.lastCallEvent = call;
    if (api.opt.onCall) {
      api.opt.onCall({ data: data.message });
    } else {
      log.error("cometVideoApi: no onCall callback to answer calls with");
    }
  }

  function init() {
    if (api.isInit) {
      return;
    }
    api.isInit = true;
    comet().subscription("msg.sys_sipCall", onSipCall);
  }
  api._init = init;

  /** Starts listening for calls once the comet connection is authorized. */
  api.start = function (opt) {
    if (!opt) {
      return;
    }
    Object.assign(api.opt, opt);
    const c = comet();
    if (!c) {
      log.error("cometVideoApi: no comet API (window.cometApi) on this page");
      return;
    }
    if (c.isAuthorized() === true) {
      init();
    } else {
      c.onAuthSuccess(init);
    }
  };

  api.isInCall = () => api.opt.activeCallEvent !== undefined;

  /** Sets the bandwidth (kbit/s; 0: the browser's choice) of the next call's offer. */
  api.setBandwidth = function (opt) {
    if (opt && opt.video !== undefined) {
      api.opt.bandwidth_video = Number(opt.video);
    }
    if (opt && opt.audio !== undefined) {
      api.opt.bandwidth_audio = Number(opt.audio);
    }
    return { video: api.opt.bandwidth_video, audio: api.opt.bandwidth_audio };
  };

  /** Declines the last incoming call. */
  api.busy = function () {
    const call = api.opt.lastCallEvent;
    if (!call) {
      return false;
    }
    const pipe = call.data.sys.callPipe;
    call.isCall_onCallEnd = true;
    pingCancel(pipe);
    send(pipe, "out", { status: "busy", callKey: call.data.sys.callKey });
    return true;
  };

  // --- answering: local media, SIP registration, the call ----------------------------------------

  function attach(el, stream, muted) {
    if (!el) {
      return;
    }
    if (el.srcObject !== stream) {
      el.srcObject = stream;
    }
    if (muted) {
      el.muted = true;
    }
    const p = el.play && el.play();
    if (p && p.catch) {
      p.catch((e) => log.warn("cometVideoApi: cannot play", e));
    }
  }

  function localMedia(opt) {
    if (opt.custom_stream) {
      return Promise.resolve(opt.custom_stream);
    }
    if (opt.type === "none") {
      return Promise.resolve(null);
    }
    return env.mediaDevices().getUserMedia({ audio: true, video: opt.type === "video" });
  }

  function fail(call, status, error) {
    if (api.opt.activeCallEvent !== call) {
      return;
    }
    callEnd(call.data.sys.callPipe, { action: "terminated", status, error });
    api.hangup(call);
  }

  /**
   * Answers the last incoming call. `opt`: type ('audio' | 'video' | 'none'), video_remote,
   * audio_remote, video_local (elements), custom_stream (a MediaStream to send instead of the
   * camera and microphone). Returns false when a call is already active.
   */
  api.acceptCall = function (opt) {
    opt = opt || {};
    if (api.opt.activeCallEvent) {
      log.error("cometVideoApi: a call is already active; one call at a time");
      return false;
    }
    const call = api.opt.lastCallEvent;
    if (!call) {
      return false;
    }
    api.opt.activeCallEvent = call;
    call.startTime = env.now();
    call.isAccept = true;
    const pipe = call.data.sys.callPipe;
    send(pipe, "pong", { status: "pong" });
    call._trackPipeId = comet().subscription("track_" + pipe, (event) => {
      const info = event.server_info || {};
      if (api.opt.activeCallEvent === call && !isConference(call.data.sys)) {
        if (info.event === "unsubscription") {
          ping(pipe); // the other side may be gone
        }
      }
    });
    call.call_options = Object.assign({ call: {} }, opt);
    localMedia(opt).then(
      (stream) => {
        if (api.opt.activeCallEvent !== call) {
          stopTracks(stream);
          return;
        }
        call.selfStream = stream;
        if (stream && opt.video_local) {
          attach(opt.video_local, stream, true);
        }
        send(pipe, "accept", { status: "start_accept", type: opt.type });
        register(call);
      },
      (err) => {
        log.error("cometVideoApi: no camera/microphone", err);
        fail(call, "no-media-stream", err);
      },
    );
    return true;
  };

  function register(call) {
    const JsSIP = env.JsSIP();
    const sys = call.data.sys;
    const c = comet();
    const user = sipUser(c.getDevId(), c.getUserId());
    const socket = new JsSIP.WebSocketInterface(
      sipSocketUrl(sys, useTls(api.opt.sip_wss, env.location && env.location.protocol)),
    );
    const ua = new JsSIP.UA({
      sockets: [socket],
      uri: "sip:" + user + "@" + sys.serverName,
      password: c.getRealUserKey(),
      authorization_user: user,
      display_name: user,
      realm: sys.serverName,
      registrar_server: "sip:" + sys.serverName,
      register: true,
      session_timers: false,
      no_answer_timeout: 120,
      use_preloaded_route: false,
    });
    call._ua = ua;
    api.coolPhone = ua;
    ua.on("connected", () => signal("_cometVideoApi_connected"));
    ua.on("disconnected", () => signal("_cometVideoApi_stopped"));
    ua.on("registered", () => {
      if (api.opt.activeCallEvent === call && !call.jssipRTCSession) {
        dial(call);
      }
    });
    ua.on("registrationFailed", (e) => {
      log.error("cometVideoApi: SIP registration failed", e && e.cause);
      fail(call, "registration-failure");
    });
    ua.start();
  }

  function preparePeer(call, pc) {
    call._pc = pc;
    // One audio and one video section, receiving both even when we send less (the server
    // sends the mix and the composed canvas). JsSIP's addTrack reuses these transceivers.
    pc.addTransceiver("audio", { direction: "recvonly" });
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addEventListener("track", (e) => onRemoteTrack(call, e.track));
  }

  function onRemoteTrack(call, track) {
    if (api.opt.activeCallEvent !== call) {
      return;
    }
    if (!call.remoteStream) {
      call.remoteStream = new env.MediaStream();
    }
    if (!call.remoteStream.getTracks().includes(track)) {
      call.remoteStream.addTrack(track);
    }
    const o = call.call_options;
    // Like the old file: the stream plays in video_remote (sound included); audio_remote only
    // when there is no video element.
    attach(o.video_remote || o.audio_remote, call.remoteStream, false);
    if (!call._mediaStarted) {
      call._mediaStarted = true;
      callStart(call.data.sys.callPipe, "self");
    }
  }

  function dial(call) {
    const sys = call.data.sys;
    const stream = call.selfStream || null;
    const session = call._ua.call("sip:" + sys.sipNumber + "@" + sys.serverName, {
      mediaStream: stream || undefined,
      mediaConstraints: {
        audio: !!stream && stream.getAudioTracks().length > 0,
        video: !!stream && stream.getVideoTracks().length > 0,
      },
      pcConfig: { iceServers: api.opt.iceServers || [] },
      eventHandlers: {
        peerconnection: (e) => preparePeer(call, e.peerconnection),
        sdp: (e) => {
          if (e.originator === "local") {
            e.sdp = sdpBandwidth(e.sdp, {
              audio: api.opt.bandwidth_audio,
              video: api.opt.bandwidth_video,
            });
          }
        },
        failed: (e) => {
          log.warn("cometVideoApi: call failed", e && e.cause);
          signal("_cometVideoApi_terminated");
          signal("media_removestream");
          fail(call, "terminated");
        },
        ended: (e) => {
          log.info("cometVideoApi: call ended", e && e.cause);
          signal("media_removestream");
          fail(call, "terminated");
        },
      },
    });
    call.jssipRTCSession = session;
  }

  // --- during a call -----------------------------------------------------------------------------

  function session() {
    const a = api.opt.activeCallEvent;
    return a && a.jssipRTCSession;
  }

  api.isMute = function () {
    const s = session();
    return s ? s.isMuted() : undefined;
  };

  /** Mutes or unmutes what we send (audio and video together); returns whether audio is muted. */
  api.toggleMute = function () {
    const s = session();
    if (!s) {
      return undefined;
    }
    if (!s.isMuted().audio) {
      s.mute({ audio: true, video: true });
    } else {
      const a = api.opt.activeCallEvent;
      s.unmute({ audio: true, video: a.call_options.type === "video" });
    }
    return s.isMuted().audio;
  };

  function muteKind(kind, setMute) {
    const s = session();
    if (!s) {
      return undefined;
    }
    const what = {};
    what[kind] = true;
    if (setMute) {
      s.mute(what);
    } else {
      s.unmute(what);
    }
    send(api.opt.activeCallEvent.data.sys.callPipe, "toggleMute", { isMute: setMute });
    return true;
  }
  api.muteAudio = (setMute) => muteKind("audio", setMute);
  api.muteVideo = (setMute) => muteKind("video", setMute);

  /** Puts the call on hold or takes it off; returns whether it is on hold now. */
  api.toggleHold = function () {
    const s = session();
    if (!s) {
      return undefined;
    }
    if (s.isOnHold().local) {
      s.unhold();
      return false;
    }
    s.hold();
    return true;
  };

  /** The RTCPeerConnection of the active call (for getStats), if any. */
  api.getPeerConnection = function () {
    const a = api.opt.activeCallEvent;
    return (a && a._pc) || null;
  };

  /** The MediaStream the server sends in the active call (mixed audio, composed video). */
  api.getRemoteStream = function () {
    const a = api.opt.activeCallEvent;
    return (a && a.remoteStream) || null;
  };

  /**
   * Leaves the active call, or declines the ringing one. `callInfo`: a specific call;
   * `doNotNotify`: do not tell the others on the call pipe.
   */
  api.hangup = function (callInfo, doNotNotify) {
    let call = callInfo;
    if (!call) {
      call = api.opt.activeCallEvent;
      api.opt.activeCallEvent = undefined;
    }
    if (!call) {
      call = Object.values(api._callPipes).find((c) => c.isAccept && !c._isHungup);
    }
    if (call) {
      const sys = call.data.sys;
      stopTracks(call.selfStream);
      if (!doNotNotify && !call._isHungup) {
        send(sys.callPipe, "out", { status: "hangup", callKey: sys.callKey });
      }
      call._isHungup = true;
      call._isHangup = true;
      if (call._callPipeId) {
        comet().unsubscription(call._callPipeId);
        call._callPipeId = undefined;
      }
      if (call._trackPipeId) {
        comet().unsubscription(call._trackPipeId);
        call._trackPipeId = undefined;
      }
      pingCancel(sys.callPipe);
    } else {
      const last = api.opt.lastCallEvent;
      if (last && !last._isHangup) {
        last._isHangup = true;
        const sys = last.data.sys;
        if (!doNotNotify) {
          send(sys.callPipe, "out", { status: "hangup", callKey: sys.callKey });
        }
        if (last._callPipeId) {
          comet().unsubscription(last._callPipeId);
          last._callPipeId = undefined;
        }
        pingCancel(sys.callPipe);
      }
    }
    if (call && call.isAccept) {
      callEnd(call.data.sys.callPipe, { action: "terminated", status: "hangup" });
      const s = call.jssipRTCSession;
      if (s && !s.isEnded()) {
        try {
          s.terminate();
        } catch (e) {
          log.warn("cometVideoApi: terminate", e);
        }
      }
      if (call._ua) {
        call._ua.stop();
      }
      const o = call.call_options || {};
      for (const el of [o.video_remote, o.audio_remote, o.video_local]) {
        if (el && el.srcObject) {
          el.srcObject = null;
        }
      }
      if (api.opt.activeCallEvent === call) {
        api.opt.activeCallEvent = undefined;
      }
    }
  };

  api.fullScreen = function (elem) {
    const a = api.opt.activeCallEvent;
    const el = elem || (a && a.call_options && a.call_options.video_remote);
    if (el && el.requestFullscreen) {
      return el.requestFullscreen();
    }
    return undefined;
  };

  api.isFullScreenSupport = () =>
    typeof document !== "undefined" && !!document.fullscreenEnabled;

  return api;
}
