#!/usr/bin/env python3
"""Frame AEAD throughput, natively and inside V8 (node, the engine Envoy embeds).

Builds `cryptobench` for the host and for wasm32-wasip1 (+simd128 from .cargo/config.toml),
runs each REPEAT times (every run prints the median of RUNS measurements per case), and
prints a Markdown table of the medians over the repeats: wall-clock MB/s, MB/s by process CPU
time (robust on a shared machine) and the fastest-frame MB/s. With --write, the table
replaces the `crypto-bench` section of docs/BENCHMARKS.md.

Usage: bench/crypto_bench.py [--repeat 3] [--runs 7] [--mb 32] [--write]
"""

import argparse
import datetime
import json
import os
import pathlib
import platform
import statistics
import subprocess

ROOT = pathlib.Path(__file__).resolve().parent.parent
WASM = ROOT / "target" / "wasm32-wasip1" / "release" / "cryptobench.wasm"
NATIVE = ROOT / "target" / "release" / "cryptobench"
# The same RustCrypto code built without +simd128: what the filter shipped before fastgcm.
NOSIMD_DIR = ROOT / "target" / "cryptobench-nosimd"
NOSIMD = NOSIMD_DIR / "wasm32-wasip1" / "release" / "cryptobench.wasm"
BEGIN, END = "<!-- crypto-bench:begin -->", "<!-- crypto-bench:end -->"


def sh(cmd):
    subprocess.run(cmd, cwd=ROOT, check=True)


def run(cmd):
    out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--mb", type=int, default=32)
    ap.add_argument("--write", action="store_true")
    a = ap.parse_args()
    sh(["cargo", "build", "--release", "-q", "-p", "cryptobench"])
    sh(["cargo", "build", "--release", "-q", "-p", "cryptobench", "--target", "wasm32-wasip1"])
    subprocess.run(
        ["cargo", "build", "--release", "-q", "-p", "cryptobench", "--target", "wasm32-wasip1",
         "--target-dir", str(NOSIMD_DIR)],
        cwd=ROOT, check=True, env={**os.environ, "RUSTFLAGS": "-C target-feature=-simd128"},
    )
    args = ["--runs", str(a.runs), "--mb", str(a.mb)]
    # With --digests: MD5, SHA-256, SHA-1 and the CRCs exactly as the filter computes them
    # over object data (what a PUT costs besides the AEAD).
    node = ["node", "--no-warnings", "bench/wasi_run.mjs", str(WASM.relative_to(ROOT)), "--"] + args + ["--digests"]
    nosimd = ["node", "--no-warnings", "bench/wasi_run.mjs", str(NOSIMD.relative_to(ROOT)), "--"] + args
    envs = {
        "V8 (node)": node,
        "V8 (node), no simd128": nosimd + ["--only", "rustcrypto"],
        "native": [str(NATIVE)] + args + ["--digests"],
    }
    node_v = subprocess.run(["node", "-p", "process.versions.v8"], capture_output=True, text=True).stdout.strip()
    results = {}  # (env, impl, op, frame) -> list of records
    for _ in range(a.repeat):
        for env, cmd in envs.items():  # alternate, so slow phases of a noisy machine hit both
            for r in run(cmd):
                results.setdefault((env, r["impl"], r["op"], r["frame"]), []).append(r)

    def med(recs, k):
        return statistics.median(r[k] for r in recs)

    base = {env: med(results[(env, "rustcrypto-aes256gcm", "seal", 65536)], "median") for env in envs}
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    lines = [
        f"Measured {datetime.date.today().isoformat()} on {os.cpu_count()} cores ({cpu}), "
        f"node {subprocess.run(['node', '--version'], capture_output=True, text=True).stdout.strip()} (V8 {node_v}), "
        f"`bench/crypto_bench.py --repeat {a.repeat} --runs {a.runs} --mb {a.mb}`. "
        f"MB/s = 10^6 bytes/s of plaintext, 31-byte AAD per frame, in place; each cell is the median over "
        f"{a.repeat} processes of the median of {a.runs} runs; *cpu* = by process CPU time, *best* = fastest "
        "single frame (what the code does undisturbed; the machine is shared and noisy). "
        "× = wall MB/s relative to RustCrypto AES-256-GCM seal, 64 KiB, same environment and run "
        "(*no simd128*: the same RustCrypto code built without `+simd128`, as the filter was before; "
        "fast-aes256gcm needs SIMD128 and natively runs its portable `u128` emulation, shown for reference only).",
        "",
        "| env | implementation | op | frame | MB/s | cpu MB/s | best MB/s | × |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for (env, impl, op, frame), recs in results.items():
        m = med(recs, "median")
        lines.append(
            f"| {env} | {impl} | {op} | {frame // 1024} KiB | {m:.0f} | {med(recs, 'cpu_median'):.0f} | "
            f"{med(recs, 'best_frame'):.0f} | {m / base[env]:.1f} |"
        )
    text = "\n".join(lines)
    print(text)
    if a.write:
        doc = ROOT / "docs" / "BENCHMARKS.md"
        cur = doc.read_text()
        if BEGIN in cur and END in cur:
            head, rest = cur.split(BEGIN, 1)
            tail = rest.split(END, 1)[1]
        else:
            head, tail = cur.rstrip("\n") + "\n\n", "\n"
        old = cur.split(BEGIN, 1)[1].split(END, 1)[0] if BEGIN in cur else ""
        # Keep the hand-written part of the section (everything before the generated table).
        intro = old.split("<!-- crypto-bench:table -->")[0].strip("\n") if "<!-- crypto-bench:table -->" in old else ""
        body = (intro + "\n\n" if intro else "") + "<!-- crypto-bench:table -->\n" + text + "\n"
        doc.write_text(head + BEGIN + "\n" + body + END + tail)


if __name__ == "__main__":
    main()
