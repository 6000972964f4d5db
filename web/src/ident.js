// How a comet user is named on the SIP side (contract section 4).

/** SIP user name: the dev_id zero-padded to 6 digits, then the user_id (dev 0, user 123: `000000123`). */
export function sipUser(devId, userId) {
  const dev = String(devId === undefined || devId === null || devId === "" ? 0 : devId);
  return dev.padStart(6, "0") + String(userId);
}

/** The SIP WebSocket URL browsers are told in `sys_sipCall`: wss unless `secure` is false. */
export function sipSocketUrl(sys, secure) {
  return (secure ? "wss" : "ws") + "://" + sys.serverName + ":" + sys.serverPort;
}

/**
 * Whether to use TLS towards the server: pages served over https must (browsers refuse
 * ws:// from them); plain http pages are only allowed media on localhost, where the default
 * listeners speak plain ws://. `explicit` (true/false) wins.
 */
export function useTls(explicit, pageProtocol) {
  if (explicit === true || explicit === false) {
    return explicit;
  }
  return pageProtocol === "https:";
}

/**
 * Parses the `message` of a `sys_sipCall`: a JSON text becomes an object, also when it
 * arrives backslash-escaped (queued delivery); anything else stays as it is.
 */
export function parseMessage(message, stripslashes) {
  if (typeof message !== "string") {
    return message;
  }
  for (const text of [message, stripslashes(message)]) {
    try {
      const v = JSON.parse(text);
      if (v !== null && typeof v === "object") {
        return v;
      }
    } catch (_) {
      // not JSON: try the next form
    }
  }
  return message;
}

/** Undoes PHP-style addslashes: `\\x` becomes `x`, `\\0` a NUL. */
export function stripslashes(s) {
  return String(s).replace(/\\(.?)/g, (_, c) => (c === "0" ? "\u0000" : c));
}
