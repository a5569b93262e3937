#!/usr/bin/env python3
"""Record Prometheus HTTP API answers as JSON fixtures (standard library only).

Usage: python3 record.py PROMETHEUS_BASE_URL OUT_DIR START SWITCH END
  START   unix time the exporter started (its "start" line)
  SWITCH  unix time of the healthy -> bad phase switch (its "phase_switch" line)
  END     end of the recorded range (unix seconds)

Each fixture has the shape
  {"request": {"method", "path", "query" | "form"}, "status", "content_type", "body"}
"""

import json
import math
import sys
import urllib.error
import urllib.parse
import urllib.request

ERROR_RATIO = (
    'sum(rate(http_requests_total{service="api",env="production",code=~"5.."}[30s]))'
    ' / sum(rate(http_requests_total{service="api",env="production"}[30s]))'
)
P99 = (
    "histogram_quantile(0.99, sum by (le) "
    '(rate(http_request_duration_seconds_bucket{service="api",env="production"}[30s])))'
)


def call(base, method, path, params):
    encoded = urllib.parse.urlencode(params)
    if method == "GET":
        req = urllib.request.Request(base + path + "?" + encoded, method="GET")
    else:
        req = urllib.request.Request(
            base + path,
            data=encoded.encode(),
            method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    try:
        with urllib.request.urlopen(req) as resp:
            status, ctype, raw = resp.status, resp.headers.get("Content-Type"), resp.read()
    except urllib.error.HTTPError as err:
        status, ctype, raw = err.code, err.headers.get("Content-Type"), err.read()
    return status, ctype, raw


def record(base, out_dir, name, method, path, params):
    status, ctype, raw = call(base, method, path, params)
    fixture = {
        "request": {"method": method, "path": path, ("query" if method == "GET" else "form"): params},
        "status": status,
        "content_type": ctype,
        "body": json.loads(raw),
    }
    with open(f"{out_dir}/{name}", "w") as f:
        json.dump(fixture, f, indent=2)
        f.write("\n")
    print(name, status, ctype, raw.decode(errors="replace"))
    return fixture


def main():
    base, out_dir = sys.argv[1], sys.argv[2]
    start, switch, end = (float(a) for a in sys.argv[3:6])
    t_healthy = str(math.floor(start + 60))  # ~60 s into the healthy phase
    t_bad = str(math.floor(switch + 60))  # ~60 s into the bad phase
    q = "/api/v1/query"

    record(base, out_dir, "error-ratio-healthy.json", "GET", q, {"query": ERROR_RATIO, "time": t_healthy})
    record(base, out_dir, "error-ratio-healthy-post.json", "POST", q, {"query": ERROR_RATIO, "time": t_healthy})
    record(base, out_dir, "error-ratio-bad.json", "GET", q, {"query": ERROR_RATIO, "time": t_bad})
    record(
        base,
        out_dir,
        "error-ratio-range.json",
        "GET",
        "/api/v1/query_range",
        {
            "query": ERROR_RATIO,
            "start": str(math.ceil(start)),
            "end": str(math.floor(end)),
            "step": "10s",
        },
    )
    record(base, out_dir, "latency-p99-healthy.json", "GET", q, {"query": P99, "time": t_healthy})
    record(base, out_dir, "latency-p99-bad.json", "GET", q, {"query": P99, "time": t_bad})
    record(
        base, out_dir, "empty.json", "GET", q,
        {"query": 'sum(rate(http_requests_total{service="checkout"}[30s]))', "time": t_healthy},
    )
    record(
        base, out_dir, "two-series.json", "GET", q,
        {"query": 'rate(http_requests_total{service="api",env="production"}[30s])', "time": t_healthy},
    )
    record(
        base, out_dir, "bad-query.json", "GET", q,
        {"query": "sum(rate(http_requests_total[30s])", "time": t_healthy},
    )
    nan = record(
        base, out_dir, "nan.json", "GET", q,
        {
            "query": 'sum(rate(http_requests_total{code="404"}[30s]))'
            ' / sum(rate(http_requests_total{code="404"}[30s]))',
            "time": t_healthy,
        },
    )
    if nan["body"].get("data", {}).get("result") == []:
        print("404 ratio gave an empty vector; recording 0/0 instead")
        record(base, out_dir, "nan.json", "GET", q, {"query": "0/0", "time": t_healthy})
    # Extra: NaN inside an instant vector (0/0 on a real series).
    zero = '(sum(rate(http_requests_total{service="api",env="production",code="500"}[30s])) * 0)'
    record(base, out_dir, "nan-vector.json", "GET", q, {"query": zero + " / " + zero, "time": t_healthy})


if __name__ == "__main__":
    main()
