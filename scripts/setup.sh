#!/usr/bin/env bash
# Installs what comet-server needs on Debian/Ubuntu, skipping what is already there.
#   scripts/setup.sh build   system packages to build the server
#   scripts/setup.sh test    ... plus the real clients and peers the test suite drives
#   scripts/setup.sh bench   ... build set plus Janus (AudioBridge) for benches/run-load.sh
#   scripts/setup.sh aarch64 ... build set plus the cross toolchain and qemu for
#                            scripts/test-aarch64.sh (the mixer's NEON kernels)
# Idempotent: `dpkg -s` decides; apt-get runs only for missing packages. Uses sudo when not root.
set -euo pipefail

mode="${1:-build}"

build_pkgs=(
  ca-certificates curl pkg-config gcc g++ make cmake nasm clang libclang-dev
  libopus-dev libavcodec-dev libavformat-dev libavutil-dev libswscale-dev
  libswresample-dev libavfilter-dev libavdevice-dev
)
test_pkgs=(
  mariadb-client php-cli php-mysql python3 python3-pymysql espeak-ng ffmpeg chromium
  nginx libnginx-mod-rtmp systemd
)

pkgs=("${build_pkgs[@]}")
if [ "$mode" = "test" ]; then
  pkgs+=("${test_pkgs[@]}")
fi
# The side-by-side load benchmark runs Debian's Janus (only as comet-loadgen starts it).
bench_pkgs=(janus)
if [ "$mode" = "bench" ]; then
  pkgs+=("${bench_pkgs[@]}")
fi
# Cross-testing the NEON kernels on x86_64: link with Debian's aarch64 gcc, run under qemu-user.
aarch64_pkgs=(qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
if [ "$mode" = "aarch64" ]; then
  pkgs+=("${aarch64_pkgs[@]}")
fi

# Node.js and npm for the tests (JsSIP builds, Playwright, the browser code's unit tests and the
# check that the committed web/dist/cometVideoApi.js is up to date). Building the server does
# not need them. A machine that has them already (from Debian or elsewhere) keeps its own.
if [ "$mode" = "test" ] && ! command -v npm >/dev/null 2>&1; then
  pkgs+=(nodejs npm)
fi

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg -s "$p" >/dev/null 2>&1; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
  fi
  echo "setup: installing ${missing[*]}" >&2
  # Keep packages (janus) from starting system-wide services on every interface.
  created_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod +x /usr/sbin/policy-rc.d
    created_policy=1
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  if [ -n "$created_policy" ]; then
    $sudo rm -f /usr/sbin/policy-rc.d
  fi
fi

# The Rust toolchain: the machine's if present, otherwise rustup's stable.
if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    :
  else
    echo "setup: installing the Rust toolchain with rustup" >&2
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy -c rustfmt >&2
  fi
fi

if [ "$mode" = "aarch64" ] && command -v rustup >/dev/null 2>&1; then
  if ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
    rustup target add aarch64-unknown-linux-gnu >&2
  fi
fi

root="$(cd "$(dirname "$0")/.." && pwd)"

# `npm ci` in a directory unless its node_modules already match its lock file. --prefer-offline:
# once the packages are in the npm cache, this works without the network.
npm_install() {
  if [ ! -f "$1/node_modules/.package-lock.json" ] || [ "$1/package-lock.json" -nt "$1/node_modules/.package-lock.json" ]; then
    echo "setup: npm ci in ${1#"$root"/}" >&2
    (cd "$1" && npm ci --prefer-offline --no-audit --no-fund --loglevel=error >&2)
  fi
}

# Browser-side test libraries (JsSIP 2.0.6 and 3.x from npm, bundled with esbuild; Playwright
# and mysql2 for the demo test).
if [ "$mode" = "test" ]; then
  # web/: esbuild and JsSIP, to check the committed bundle (web/test/bundle.test.mjs).
  npm_install "$root/web"
  npm_install "$root/tests/browser"
  (cd "$root/tests/browser" && npm run --silent build >&2)
fi
