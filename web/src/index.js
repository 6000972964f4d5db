// The browser entry of cometVideoApi.js (bundled with JsSIP by build.mjs).
//
// Pages that load CometServerApi.js (the CometServer JS API, v4.08) keep using its `cometApi`;
// pages that do not get a small built-in one as `window.cometApi`, started the same way:
//   cometApi.start({node: "host:port", dev_id: 0, user_id: 2, user_key: "<users_auth hash>"})
// `cometApi` is looked up at each use, so CometServerApi.js may also be loaded after this file.

import JsSIP from "jssip";
import { createCometClient } from "./comet.js";
import { createVideoApi } from "./videoapi.js";

const w = window;

if (!w.cometApi) {
  w.cometApi = createCometClient({
    WebSocket: w.WebSocket,
    location: w.location,
    setTimeout: (f, ms) => w.setTimeout(f, ms),
    clearTimeout: (id) => w.clearTimeout(id),
    random: Math.random,
    now: () => Date.now(),
    storage: (() => {
      try {
        return w.localStorage;
      } catch (_) {
        return undefined;
      }
    })(),
    log: console,
  });
}

const api = createVideoApi({
  comet: () => w.cometApi,
  JsSIP: () => JsSIP,
  mediaDevices: () => w.navigator.mediaDevices,
  MediaStream: w.MediaStream,
  location: w.location,
  setTimeout: (f, ms) => w.setTimeout(f, ms),
  clearTimeout: (id) => w.clearTimeout(id),
  now: () => Date.now(),
  log: console,
  signal: (name) => {
    if (w.tabSignal && typeof w.tabSignal.emit === "function") {
      w.tabSignal.emit(name);
    }
  },
});
api.JsSIP = JsSIP;
w.cometVideoApi = api;
