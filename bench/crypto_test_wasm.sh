#!/usr/bin/env bash
# Runs the fast AES-256-GCM tests (core/src/crypto/fastgcm/tests.rs: S-box circuit,
# FIPS-197, GF(2^128) reference, NIST and Wycheproof GCM vectors, proptest differential
# against RustCrypto) compiled for wasm32-wasip1 with +simd128 (.cargo/config.toml), under
# node's WASI, i.e. in V8 with real SIMD128 instructions — the engine Envoy embeds.
# The tests are built through the `cryptobench` crate, which includes the same source file
# (the filter crate's test binary would also pull in the proxy-wasm glue).
# Usage: bench/crypto_test_wasm.sh [extra libtest args, e.g. a test name filter]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v node >/dev/null || { echo "node is required (apt-get install nodejs)" >&2; exit 1; }
rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1
wasm=$(cargo test -p cryptobench --release --target wasm32-wasip1 --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import sys,json
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m.get("profile",{}).get("test") and m.get("executable"):
        print(m["executable"])' | tail -1)
[ -n "$wasm" ] || { echo "build failed:" >&2; cargo test -p cryptobench --release --target wasm32-wasip1 --no-run; exit 1; }
if command -v wasm-objdump >/dev/null; then
  n=$(wasm-objdump -d "$wasm" | grep -c 'i8x16.shuffle' || true)
  echo "test binary: $wasm ($n i8x16.shuffle instructions)"
fi
# node's WASI is marked experimental: silence the warning. --test-threads=1: no threads in WASI.
exec node --no-warnings bench/wasi_run.mjs "$wasm" -- --test-threads=1 "$@"
