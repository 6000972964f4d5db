#!/usr/bin/env bash
# Quick start, command 1: install what is missing, build, and start the server on the embedded
# default configuration (every listener on 127.0.0.1). Extra arguments go to comet-server,
# e.g. scripts/run.sh --config comet.ini
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh build
. scripts/env.sh
cargo build --release --locked --bin comet-server
exec "$CARGO_TARGET_DIR/release/comet-server" "$@"
