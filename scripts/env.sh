# Sourced by the run and test scripts: cargo on PATH and a build cache outside the clone, so
# repeated runs (and CI on the same machine) rebuild incrementally.
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/comet-server/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
