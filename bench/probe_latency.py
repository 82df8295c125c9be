#!/usr/bin/env python3
"""/healthz latency on Envoy + s3crypt while 4 uploads of BENCH_SIZE_MIB (default 128) run
on its 2 workers: `.venv/bin/python bench/probe_latency.py`. Used to choose the buffer
limits in envoy/local.yaml.in (see docs/BENCHMARKS.md)."""
import os
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("BENCH_SIZE_MIB", "128")
import bench  # noqa: E402
from stack import Stack  # noqa: E402

tmp = pathlib.Path(tempfile.mkdtemp())
src = tmp / "s.bin"
src.write_bytes(os.urandom(bench.SIZE))
st = Stack.start(tmp / "st")
try:
    c = st.s3()
    c.create_bucket(Bucket="bench")
    t = time.perf_counter()
    p50, p99, mx, n = bench.health_under_load(st.main, c, src, uploads=4)
    el = time.perf_counter() - t
    print(f"put x4 {4 * bench.SIZE / 1e6 / el:.1f} MB/s; healthz p50 {p50:.2f} p99 {p99:.2f} max {mx:.2f} n={n}")
finally:
    st.stop()
