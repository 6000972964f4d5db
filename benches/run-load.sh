#!/usr/bin/env bash
# The audio load sweep of benches/README.md: comet-server and Janus AudioBridge side by side,
# N = 3..1000 in one conference and in conferences of 4, on this machine, loopback only.
# Writes benches/results/{sweep.json,sweep.md,cpu_per_participant.svg,delay.svg}.
#
#   benches/run-load.sh                      # the whole sweep (under 20 minutes on 2 cores)
#   benches/run-load.sh --targets comet      # only comet-server
#   benches/run-load.sh --single 10,100 --small 25 --duration 5
#
# Installs Debian's `janus` if it is missing (without letting the package start its service:
# Janus runs only as started by comet-loadgen, on 127.0.0.1, with a getifaddrs shim).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/comet-server/target}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi

# Build packages plus Debian's janus (its service is kept from starting: Janus runs only as
# comet-loadgen starts it, on 127.0.0.1, with a getifaddrs shim).
scripts/setup.sh bench
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet janus.service 2>/dev/null; then
  $sudo systemctl disable --now janus.service || true
fi

cargo build --release --bin comet-server --bin comet-loadgen
# A UDP socket and a WebSocket per peer on the load side, as many on the server side.
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
exec "$CARGO_TARGET_DIR/release/comet-loadgen" sweep --out benches/results "$@"
