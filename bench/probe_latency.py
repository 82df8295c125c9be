#!/usr/bin/env python3
"""/healthz latency on Envoy + s3crypt while 4 uploads of BENCH_SIZE_MIB (default 128) run
on its 2 workers: `.venv/bin/python bench/probe_latency.py`. Used to choose the buffer
limits in envoy/local.yaml.in (see docs/BENCHMARKS.md)."""
import sys, os, tempfile, threading, time, pathlib
ROOT = str(pathlib.Path(__file__).resolve().parent.parent)
sys.path.insert(0, ROOT + "/tests"); sys.path.insert(0, ROOT + "/bench")
import requests
os.environ.setdefault("BENCH_SIZE_MIB", "128")
import bench
from stack import Stack
tmp = pathlib.Path(tempfile.mkdtemp()); src = tmp / "s.bin"
src.write_bytes(os.urandom(bench.SIZE))
st = Stack.start(tmp / "st")
try:
    c = st.s3(); c.create_bucket(Bucket="hzb")
    lat = []; stop = threading.Event()
    def probe():
        s = requests.Session()
        while not stop.is_set():
            t = time.perf_counter(); s.get(st.endpoint + "/healthz", timeout=5); lat.append((time.perf_counter() - t) * 1000); time.sleep(0.01)
    p = threading.Thread(target=probe); p.start()
    t = time.perf_counter()
    bench.parallel(bench.put, [(bench.presign(c, "PUT", "hzb", f"k{j}"), src) for j in range(4)])
    el = time.perf_counter() - t
    stop.set(); p.join(); lat.sort()
    print(f"put x4 {4*bench.SIZE/1e6/el:.1f} MB/s; healthz p50 {lat[len(lat)//2]:.2f} p99 {lat[int(len(lat)*0.99)]:.2f} max {lat[-1]:.2f} n={len(lat)}")
finally:
    st.stop()
