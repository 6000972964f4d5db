// A minimal comet client: the part of the CometServer JS API (v4.08) that cometVideoApi.js
// needs, for pages that do not load CometServerApi.js. It speaks the comet WebSocket protocol
// of contract section 3: the positional URL, serverInfo, `subscription` (the whole list every
// time), `web_pipe2`, and de-duplication of messages sent several times.

import { stripslashes } from "./ident.js";

export const PROTOCOL_VERSION = "4.08";

const ALNUM = "qwertyuiopasdfghjklzxcvbnmQWERTYUIOPASDFGHJKLZXCVBNM1234567890";

function randomText(n, random) {
  let s = "";
  for (let i = 0; i < n; i += 1) {
    s += ALNUM[Math.floor(random() * ALNUM.length)];
  }
  return s;
}

/** The comet WebSocket URL (parameters in the order the server reads them). */
export function cometUrl(o) {
  return (
    (o.tls ? "wss" : "ws") +
    "://" +
    o.node +
    "/ws/sesion=" +
    (o.user_key === undefined || o.user_key === null ? "" : o.user_key) +
    "&myid=" +
    (o.user_id === undefined || o.user_id === null ? "" : o.user_id) +
    "&devid=" +
    (o.dev_id === undefined || o.dev_id === null ? 0 : o.dev_id) +
    "&v=" +
    PROTOCOL_VERSION +
    "&uuid=" +
    o.uuid +
    "&api=js"
  );
}

/**
 * The server-side pipe a subscription name listens on, or null for names that are only local:
 * `msg` and `msg.*` (personal messages), `#pipe` and `answer_to_*` (delivery reports).
 * `pipe.event` listens on `pipe`.
 */
export function serverPipe(name) {
  if (name === "" || name === "msg" || name.startsWith("msg.")) {
    return null;
  }
  if (name.startsWith("#") || name.startsWith("answer_to_") || name.startsWith("_answer_to_")) {
    return null;
  }
  const m = /^([^.]+)\.([^.]+)$/.exec(name);
  return m ? m[1] : name;
}

/** The local name a delivery-report subscription listens on. */
function localName(name) {
  return name.startsWith("#") ? "_answer_to_" + name.slice(1) : name;
}

/**
 * Turns a server frame into what subscribers get: `{data, server_info}` with `data` parsed
 * when it is JSON text (relayed web_pipe2 data and queued messages arrive as text).
 */
export function toEvent(frame) {
  let data = frame.data;
  if (typeof data === "string") {
    for (const text of [data, stripslashes(data)]) {
      try {
        data = JSON.parse(text);
        break;
      } catch (_) {
        // keep trying
      }
    }
  }
  return {
    data,
    server_info: {
      user_id: frame.user_id,
      pipe: frame.pipe,
      event: frame.event,
      history: frame.history === true,
      marker: frame.marker,
      uuid: frame.uuid,
    },
  };
}

/**
 * Creates a client. `env` gives the browser pieces (so tests can fake them): WebSocket,
 * location, setTimeout, clearTimeout, random, now, storage (localStorage or undefined).
 */
export function createCometClient(env) {
  const options = {};
  const slots = new Map(); // id -> {name, cb}
  const pipes = []; // server-side subscriptions, in order
  const seen = new Map(); // message uuid -> time seen
  const authOk = [];
  const authFail = [];
  const queue = [];
  let nextSlot = 1;
  let socket = null;
  let started = false;
  let authorized; // undefined until the first serverInfo
  let realKey;
  let retry = 0;
  let retryTimer = null;
  let uuid = null;

  function clientUuid() {
    if (uuid) {
      return uuid;
    }
    try {
      uuid = env.storage && env.storage.getItem("comet_server_uuid");
    } catch (_) {
      uuid = null;
    }
    if (!uuid || !/^[A-Za-z0-9]{32}$/.test(uuid)) {
      uuid = randomText(32, env.random);
      try {
        if (env.storage) {
          env.storage.setItem("comet_server_uuid", uuid);
        }
      } catch (_) {
        // private mode: keep it in memory
      }
    }
    return uuid;
  }

  function isOpen() {
    return socket !== null && socket.readyState === 1;
  }

  function sendRaw(text) {
    if (isOpen()) {
      socket.send(text);
      return true;
    }
    if (queue.length < 256) {
      queue.push(text);
    }
    return false;
  }

  function sendSubscriptions() {
    if (pipes.length) {
      sendRaw("subscription\n" + pipes.join("\n"));
    }
  }

  function emit(name, ev) {
    for (const s of Array.from(slots.values())) {
      if (s.name === name) {
        try {
          s.cb(ev);
        } catch (e) {
          env.log && env.log.error("comet subscriber failed", e);
        }
      }
    }
  }

  function duplicate(id) {
    if (id === undefined || id === null) {
      return false;
    }
    const now = env.now();
    for (const [k, t] of seen) {
      if (now - t > 120000) {
        seen.delete(k);
      }
    }
    if (seen.has(id)) {
      return true;
    }
    seen.set(id, now);
    return false;
  }

  function setAuthorized(status) {
    const was = authorized;
    authorized = status;
    if (status === was) {
      return;
    }
    for (const cb of status ? authOk : authFail) {
      try {
        cb();
      } catch (e) {
        env.log && env.log.error("comet auth callback failed", e);
      }
    }
  }

  function onFrame(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch (_) {
      return;
    }
    if (frame.pipe === "sys" && frame.event === "serverInfo") {
      if (frame.authorized) {
        realKey = frame.data;
      }
      setAuthorized(frame.authorized === true);
      return;
    }
    if (frame.data === undefined) {
      return;
    }
    const ev = toEvent(frame);
    if (duplicate(frame.uuid)) {
      return;
    }
    if (ev.data && typeof ev.data === "object" && ev.data._cometApi_uuid !== undefined) {
      if (duplicate(ev.data._cometApi_uuid)) {
        return;
      }
      delete ev.data._cometApi_uuid;
    }
    if (frame.pipe !== undefined) {
      emit(frame.pipe, ev);
      if (typeof frame.event === "string" || typeof frame.event === "number") {
        emit(frame.pipe + "." + frame.event, ev);
      }
    } else if (frame.event !== undefined) {
      emit("msg." + frame.event, ev);
      emit("msg", ev);
    }
    if (frame.marker) {
      emit(frame.marker, ev);
    }
    emit("comet_server_msg", ev);
  }

  function connect() {
    retryTimer = null;
    const nodes = [].concat(options.nodeArray || options.node || env.location.host);
    const node = nodes[0];
    const tls =
      options.wss === true ||
      (options.wss === undefined && env.location && env.location.protocol === "https:");
    const ws = new env.WebSocket(
      cometUrl({
        tls,
        node,
        user_key: options.user_key,
        user_id: options.user_id,
        dev_id: options.dev_id,
        uuid: clientUuid(),
      }),
    );
    socket = ws;
    ws.onopen = () => {
      retry = 0;
      sendSubscriptions();
      while (queue.length && isOpen()) {
        const text = queue.shift();
        if (!text.startsWith("subscription\n")) {
          socket.send(text);
        }
      }
      if (options._onConnect) {
        const cb = options._onConnect;
        options._onConnect = null;
        cb();
      }
    };
    ws.onmessage = (m) => onFrame(typeof m.data === "string" ? m.data : "");
    ws.onclose = () => {
      if (socket === ws) {
        socket = null;
      }
      if (started && retryTimer === null) {
        const delay = Math.min(10000, 1000 * 2 ** Math.min(retry, 4));
        retry += 1;
        retryTimer = env.setTimeout(connect, delay);
      }
    };
  }

  const api = {
    version: PROTOCOL_VERSION,
    builtin: true,
    options,

    /** Connects (`opt`: node, dev_id, user_id, user_key, wss) and calls `cb` once open. */
    start(opt, cb) {
      Object.assign(options, opt || {});
      if (typeof options.node === "string") {
        options.nodeArray = [options.node];
      } else if (Array.isArray(options.node)) {
        options.nodeArray = options.node;
      }
      if (options.dev_id === undefined || options.dev_id === null || options.dev_id === "") {
        options.dev_id = 0;
      }
      options._onConnect = cb || null;
      if (socket) {
        const old = socket;
        socket = null;
        old.onclose = null;
        old.close();
      }
      authorized = undefined;
      started = true;
      connect();
      return true;
    },

    stop() {
      started = false;
      if (retryTimer !== null) {
        env.clearTimeout(retryTimer);
        retryTimer = null;
      }
      if (socket) {
        const s = socket;
        socket = null;
        s.close();
      }
    },

    isAuthorized() {
      return authorized;
    },
    onAuthSuccess(cb) {
      authOk.push(cb);
    },
    onAuthFalill(cb) {
      authFail.push(cb);
    },
    onAuthFail(cb) {
      authFail.push(cb);
    },
    isMaster() {
      return true;
    },
    getUserId() {
      return options.user_id;
    },
    getDevId() {
      return options.dev_id;
    },
    getUserKey() {
      return options.user_key;
    },
    /** The users_auth hash the server confirmed in serverInfo: the SIP password. */
    getRealUserKey() {
      return realKey;
    },
    stripslashes,

    /** Subscribes `cb` to `name` (`pipe`, `pipe.event`, `msg.event`, `#pipe`); returns an id. */
    subscription(name, cb) {
      if (typeof name === "function") {
        cb = name;
        name = "comet_server_msg";
      }
      if (name === "") {
        name = "comet_server_msg";
      }
      const id = "slot" + nextSlot++;
      slots.set(id, { name: localName(name), cb: cb || (() => {}) });
      const pipe = name === "comet_server_msg" ? null : serverPipe(name);
      if (pipe && !pipes.includes(pipe)) {
        pipes.push(pipe);
        if (isOpen()) {
          sendSubscriptions();
        }
      }
      return id;
    },

    /** Removes a subscription; the server stops sending a pipe nobody listens to any more. */
    unsubscription(id) {
      const s = slots.get(id);
      if (!s) {
        return false;
      }
      slots.delete(id);
      const pipe = serverPipe(s.name);
      const stillUsed = pipe && Array.from(slots.values()).some((o) => serverPipe(o.name) === pipe);
      if (pipe && !stillUsed) {
        pipes.splice(pipes.indexOf(pipe), 1);
        if (isOpen()) {
          sendRaw("subscription\n" + pipes.join("\n"));
        }
      }
      return true;
    },

    /** Sends `msg` to the other subscribers of a `web_*` pipe. */
    web_pipe_send(pipe, event, msg) {
      if (!/^web(auth)?_/.test(pipe)) {
        env.log && env.log.error("comet: a pipe to send to must start with web_", pipe);
        return false;
      }
      return sendRaw("web_pipe2\n" + pipe + "\n" + event + "\n*\n" + JSON.stringify(msg));
    },

    /**
     * Sends `msg` `count` times (default 3), `interval` ms apart (default 1000), with one
     * `_cometApi_uuid` so receivers handle it once.
     */
    multi_web_pipe_send(pipe, event, msg, count, interval) {
      const n = count || 3;
      const every = interval || 1000;
      msg._cometApi_uuid = "jsapi" + randomText(11, env.random);
      for (let i = 1; i < n; i += 1) {
        env.setTimeout(() => api.web_pipe_send(pipe, event, msg), i * every);
      }
      return api.web_pipe_send(pipe, event, msg);
    },
  };
  return api;
}
