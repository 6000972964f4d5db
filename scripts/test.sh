#!/usr/bin/env bash
# Quick start, command 2: install what is missing, build, and run the whole test suite:
# formatting, lints, and every unit and integration test of the workspace (real MySQL clients,
# real peers, all on 127.0.0.1). Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
. scripts/env.sh
start=$(date +%s)
step() { echo "== $* ($(( $(date +%s) - start ))s)"; }

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "cargo test"
cargo test --workspace --locked
step "done"
