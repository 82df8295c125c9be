#!/usr/bin/env bash
# Installs the Rust toolchain rust-toolchain.toml pins (with clippy, rustfmt and the
# wasm32-wasip1 target) if it is missing: rustup does not install it by itself, and every
# cargo command in this tree uses it. A no-op when it is there.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! rustup toolchain install >/dev/null 2>&1; then
  echo "[toolchain] rustup could not install the toolchain of rust-toolchain.toml:" >&2
  rustup toolchain install
fi
