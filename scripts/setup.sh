#!/usr/bin/env bash
# Installs what comet-server needs on Debian/Ubuntu, skipping what is already there.
#   scripts/setup.sh build   system packages to build the server
#   scripts/setup.sh test    ... plus the real clients and peers the test suite drives
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
  nginx libnginx-mod-rtmp
)

pkgs=("${build_pkgs[@]}")
if [ "$mode" = "test" ]; then
  pkgs+=("${test_pkgs[@]}")
fi

# Node.js and npm bundle JsSIP for the browser tests; a machine that has them already (from
# Debian or elsewhere) keeps its own.
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
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
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

# Browser-side test libraries (JsSIP 2.0.6 and 3.x from npm, bundled with esbuild).
if [ "$mode" = "test" ]; then
  cd "$(dirname "$0")/../tests/browser"
  if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    echo "setup: npm ci in tests/browser" >&2
    npm ci --no-audit --no-fund --loglevel=error >&2
  fi
  npm run --silent build >&2
fi
