#!/usr/bin/env bash
# Builds comet-mixer for aarch64 and runs its tests (including the NEON == scalar property
# tests) under qemu-user. Needs `scripts/setup.sh aarch64` once. Extra arguments go to
# `cargo test`, e.g. `scripts/test-aarch64.sh --release --test simd_equivalence`.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
cargo clippy -p comet-mixer --all-targets --target aarch64-unknown-linux-gnu -- -D warnings
cargo test -p comet-mixer --target aarch64-unknown-linux-gnu "$@"
