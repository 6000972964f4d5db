//! The browser files the server serves, embedded at build time so the binary runs without the
//! repository: `cometVideoApi.js` (our source in `web/src/` bundled with JsSIP from npm into
//! `web/dist/` by `npm run build` in `web/`; the bundle is committed so building needs no
//! Node.js, and `web/test/bundle.test.mjs` fails when it is stale) and the demo page
//! (`web/demo/`, served as written).

/// `/api/cometVideoApi.js`: the drop-in video API with JsSIP 3 inside.
pub const COMET_VIDEO_API: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/web/dist/cometVideoApi.js"
));

/// `/`: the demo page.
pub const DEMO_HTML: &str = include_str!("../web/demo/index.html");
/// `/demo/demo.js`: the page's script (browser side).
pub const DEMO_JS: &str = include_str!("../web/demo/demo.js");
/// `/demo/logic.js`: the page's pure functions (also unit-tested with node's test runner).
pub const DEMO_LOGIC_JS: &str = include_str!("../web/demo/logic.js");
/// `/demo/demo.css`.
pub const DEMO_CSS: &str = include_str!("../web/demo/demo.css");
