// SDP edits cometVideoApi.js makes to the offer it sends (contract section 4): a `b=AS:` line
// per media section, video 256 and audio 32 kbit/s unless the page chose otherwise (0 keeps
// what the browser wrote).

/**
 * Sets the `b=AS:` bandwidth of every audio and video section of `sdp`.
 * @param {string} sdp
 * @param {{audio?: number, video?: number}} kbps 0 or absent: leave that kind alone
 * @returns {string}
 */
export function setBandwidth(sdp, kbps) {
  const eol = sdp.includes("\r\n") ? "\r\n" : "\n";
  const lines = sdp.split(/\r?\n/);
  if (lines.length && lines[lines.length - 1] === "") {
    lines.pop();
  }
  const out = [];
  // Media sections: each starts at an m= line; the session part comes first.
  let section = [];
  const flush = () => {
    if (section.length) {
      out.push(...withBandwidth(section, kbps));
    }
    section = [];
  };
  for (const line of lines) {
    if (line.startsWith("m=")) {
      flush();
    }
    section.push(line);
  }
  flush();
  return out.join(eol) + eol;
}

function withBandwidth(section, kbps) {
  const m = /^m=(\w+)/.exec(section[0]);
  const value = m ? Number(kbps[m[1]]) || 0 : 0;
  if (!m || value <= 0) {
    return section;
  }
  const kept = section.filter((l) => !l.startsWith("b=AS:"));
  // RFC 4566 order inside a media section: m=, i=, c=, b=, ...
  let at = 1;
  while (at < kept.length && (kept[at].startsWith("i=") || kept[at].startsWith("c="))) {
    at += 1;
  }
  kept.splice(at, 0, "b=AS:" + Math.round(value));
  return kept;
}
