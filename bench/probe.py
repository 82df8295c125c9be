#!/usr/bin/env python3
"""A liveness prober in its own process, like the kubelet: `probe.py URL INTERVAL_MS`.
Every INTERVAL_MS it opens a new connection, GETs URL and records the latency until stdin
closes; then prints one JSON list of latencies in ms (any non-200 answer is an error)."""
import http.client
import json
import sys
import threading
import time
import urllib.parse

url = urllib.parse.urlsplit(sys.argv[1])
interval = float(sys.argv[2]) / 1000
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
lat = []
while not stop.is_set():
    t = time.perf_counter()
    c = http.client.HTTPConnection(url.hostname, url.port, timeout=5)
    c.request("GET", url.path)
    r = c.getresponse()
    r.read()
    c.close()
    lat.append((time.perf_counter() - t) * 1000)
    if r.status != 200:
        sys.exit(f"{sys.argv[1]} answered {r.status}")
    time.sleep(interval)
print(json.dumps(lat))
