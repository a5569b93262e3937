#!/usr/bin/env python3
"""Tiny deterministic exporter used to record the Prometheus answers in this folder.

Usage: python3 exporter.py PORT [HEALTHY_SECONDS]

Listens on 127.0.0.1:PORT and serves /metrics in the Prometheus text format.
It simulates 100 requests/second for service="api", env="production":
  - "healthy" phase (first HEALTHY_SECONDS, default 90, after start):
    0.5 % of requests answer 500, latencies mostly under 0.1 s;
  - "bad" phase (afterwards): 8 % answer 500, latencies mostly 0.25-1 s.
Counters are computed from the time elapsed since start at each scrape, so the
series are deterministic (no randomness). Standard library only.
"""

import math
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RATE = 100.0  # requests per second
LABELS = 'service="api",env="production"'
BUCKETS = ["0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf"]

PHASES = {
    # error share, cumulative share of requests per bucket (same order as BUCKETS),
    # mean latency in seconds (for _sum)
    "healthy": (0.005, [0.70, 0.97, 0.995, 0.999, 1.0, 1.0, 1.0], 0.045),
    "bad": (0.08, [0.02, 0.05, 0.15, 0.55, 0.95, 0.995, 1.0], 0.55),
}

START = time.time()
HEALTHY_SECONDS = 90.0


def counts(now):
    """Integer request counts per phase since start."""
    elapsed = max(0.0, now - START)
    n_healthy = math.floor(RATE * min(elapsed, HEALTHY_SECONDS))
    n_bad = math.floor(RATE * max(elapsed - HEALTHY_SECONDS, 0.0))
    return {"healthy": n_healthy, "bad": n_bad}


def render(now):
    n = counts(now)
    total = sum(n.values())
    errors = sum(math.floor(PHASES[p][0] * n[p]) for p in n)
    buckets = [
        sum(math.floor(PHASES[p][1][i] * n[p]) for p in n) for i in range(len(BUCKETS))
    ]
    buckets[-1] = total
    latency_sum = sum(PHASES[p][2] * n[p] for p in n)
    lines = [
        "# HELP http_requests_total Total HTTP requests.",
        "# TYPE http_requests_total counter",
        'http_requests_total{%s,code="200"} %d' % (LABELS, total - errors),
        'http_requests_total{%s,code="500"} %d' % (LABELS, errors),
        "# HELP http_request_duration_seconds HTTP request latency.",
        "# TYPE http_request_duration_seconds histogram",
    ]
    for le, c in zip(BUCKETS, buckets):
        lines.append('http_request_duration_seconds_bucket{%s,le="%s"} %d' % (LABELS, le, c))
    lines.append("http_request_duration_seconds_sum{%s} %.3f" % (LABELS, latency_sum))
    lines.append("http_request_duration_seconds_count{%s} %d" % (LABELS, total))
    return "\n".join(lines) + "\n"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.split("?")[0] != "/metrics":
            self.send_error(404)
            return
        body = render(time.time()).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        pass


def main():
    global HEALTHY_SECONDS
    port = int(sys.argv[1])
    if len(sys.argv) > 2:
        HEALTHY_SECONDS = float(sys.argv[2])
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print("start %.3f" % START, flush=True)
    print("phase_switch %.3f" % (START + HEALTHY_SECONDS), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
