#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ (cargo-fuzz, libFuzzer, AddressSanitizer) for SECONDS
# each, one after the other, on a scratch corpus seeded from fuzz/corpus/<target> (what
# the fuzzer adds stays in target/fuzz-corpus, out of the tree). A crash, a leak or a
# timeout fails the run; its input is in target/fuzz-artifacts/<target>/.
#
# cargo-fuzz runs on the pinned stable toolchain (rust-toolchain.toml): RUSTC_BOOTSTRAP=1 lets it take the
# one unstable flag it passes (-Zsanitizer=address).
#
# usage: scripts/fuzz.sh SECONDS [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH="${1:?usage: scripts/fuzz.sh SECONDS [TARGET...]}"
shift
CARGO_FUZZ_VERSION=0.13.2
say() { printf '[fuzz] %s\n' "$*"; }

if ! cargo fuzz --version >/dev/null 2>&1; then
  say "installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --quiet
fi

export RUSTC_BOOTSTRAP=1
fuzz() { nice -n 10 cargo fuzz "$@"; }

targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(fuzz list)

say "building ${targets[*]}"
fuzz build >target/fuzz-build.log 2>&1 || { tail -40 target/fuzz-build.log; exit 1; }

printf '%-12s %8s %12s %8s\n' target seconds executions exec/s >target/fuzz-summary.txt
for t in "${targets[@]}"; do
  corpus="target/fuzz-corpus/$t" artifacts="target/fuzz-artifacts/$t" log="target/fuzz-logs/$t.log"
  mkdir -p "$corpus" "$artifacts" target/fuzz-logs
  cp fuzz/corpus/"$t"/* "$corpus"/
  say "$t: ${SECONDS_EACH}s (log $log)"
  if ! fuzz run "$t" "$corpus" -- -max_total_time="$SECONDS_EACH" -timeout=20 \
      -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1; then
    tail -60 "$log"
    say "$t FAILED: input in $artifacts/"
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  printf '%-12s %8s %12s %8s\n' "$t" "$secs" "$runs" "$rate" | tee -a target/fuzz-summary.txt
done
say "no crash; summary in target/fuzz-summary.txt"
