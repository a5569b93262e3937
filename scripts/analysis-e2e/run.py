#!/usr/bin/env python3
"""End-to-end check: a deploy is rolled back by a real Prometheus query.

Starts, on loopback only:
  * a controllable exporter (http_requests_total for service "api", ~100 req/s; 0.5% 500s
    while healthy, 8% while bad),
  * Debian's `prometheus` scraping it every second,
  * a fake GitHub API that records every request,
  * `shipgate serve` with an `[analysis]` error-rate check against that Prometheus,
then deploys SHA_A (healthy: it must pass analysis and succeed early), deploys SHA_B, turns the
exporter bad and expects shipgate to roll SHA_B back to SHA_A by creating a GitHub deployment.

Python 3 standard library only. Usage: python3 scripts/analysis-e2e/run.py [--shipgate PATH]
Exit status 0 on PASS, 1 on FAIL, 2 when a prerequisite is missing.
"""

import argparse
import copy
import datetime as dt
import hashlib
import hmac
import http.server
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

SCRIPT_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(SCRIPT_DIR))
EVENTS_DIR = os.path.join(REPO_ROOT, "events", "github-webhook")

# What the sample events carry, replaced per deploy.
SAMPLE_SHA = "6dcb09b5b57875f334f61aebed695e2e4193db5e"
SAMPLE_DEPLOYMENT_ID = 1523680411
SAMPLE_RUN_ID = 9384712056
SAMPLE_STATUS_ID = 3388100644

SHA_A = "aaaaaaa" + "1c0ffee5eed0123456789abcdef012345"  # 40 hex digits
SHA_B = "bbbbbbb" + "2deadbeef0123456789abcdef01234567"
assert re.fullmatch(r"[0-9a-f]{40}", SHA_A) and re.fullmatch(r"[0-9a-f]{40}", SHA_B)

ROLLBACK_GITHUB_ID = 777000
REQ_PER_SEC = 100.0
HEALTHY_ERROR_RATIO = 0.005
BAD_ERROR_RATIO = 0.08

SWEEP_EVERY = "5s"
POLL_EVERY = 5.0


def now_utc():
    return dt.datetime.now(dt.timezone.utc)


def iso(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (t.microsecond // 1000)


def log(msg):
    print("[%s] %s" % (now_utc().strftime("%H:%M:%S"), msg), flush=True)


class CheckFailed(Exception):
    pass


class Prerequisite(Exception):
    pass


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_request(url, method="GET", data=None, headers=None, timeout=10):
    """Returns (status, body text); never raises on an HTTP error status."""
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


class QuietHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # keep the report readable
        pass

    def send_body(self, status, body, content_type="application/json"):
        data = body.encode("utf-8") if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""


# --- (a) the exporter -------------------------------------------------------------------


class Exporter:
    """Counters advanced lazily from the wall clock: REQ_PER_SEC requests a second, the
    current error ratio of them answered 500. Deterministic, so a healthy ratio is exact."""

    def __init__(self):
        self.lock = threading.Lock()
        self.mode = "healthy"
        self.last = time.monotonic()
        self.total = 0.0
        self.errors = 0.0
        self.server = None

    def _advance(self):
        t = time.monotonic()
        elapsed = t - self.last
        self.last = t
        ratio = BAD_ERROR_RATIO if self.mode == "bad" else HEALTHY_ERROR_RATIO
        self.total += REQ_PER_SEC * elapsed
        self.errors += REQ_PER_SEC * elapsed * ratio

    def set_mode(self, mode):
        with self.lock:
            self._advance()  # the time so far counts at the old ratio
            self.mode = mode

    def render(self):
        with self.lock:
            self._advance()
            errors = int(self.errors)
            ok = int(self.total) - errors
        return (
            "# HELP http_requests_total Requests answered, by service and status code.\n"
            "# TYPE http_requests_total counter\n"
            'http_requests_total{service="api",code="200"} %d\n'
            'http_requests_total{service="api",code="500"} %d\n' % (ok, errors)
        )

    def start(self):
        exporter = self

        class Handler(QuietHandler):
            def do_GET(self):
                if self.path.split("?")[0] == "/metrics":
                    self.send_body(200, exporter.render(), "text/plain; version=0.0.4")
                else:
                    self.send_body(404, "not found\n", "text/plain")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self.server.server_address[1]


# --- (c) the fake GitHub API ------------------------------------------------------------


class FakeGitHub:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = []  # dicts: at, method, path, body (parsed JSON or raw text)
        self.server = None

    def record(self, method, path, raw):
        body = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
        with self.lock:
            self.requests.append({"at": iso(now_utc()), "method": method, "path": path, "body": body})
        return body

    def snapshot(self):
        with self.lock:
            return list(self.requests)

    def start(self):
        fake = self

        class Handler(QuietHandler):
            def answer(self):
                raw = self.read_body()
                path = self.path.split("?")[0]
                body = fake.record(self.command, self.path, raw)
                if self.command == "POST":
                    if re.fullmatch(r"/app/installations/\d+/access_tokens", path):
                        expires = now_utc() + dt.timedelta(hours=1)
                        return self.send_body(201, json.dumps({
                            "token": "ghs_e2e",
                            "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                        }))
                    if re.fullmatch(r"/repos/[^/]+/[^/]+/actions/runs/\d+/deployment_protection_rule", path):
                        self.send_response(204)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return None
                    if re.fullmatch(r"/repos/[^/]+/[^/]+/deployments", path):
                        ref = body.get("ref") if isinstance(body, dict) else None
                        return self.send_body(201, json.dumps({"id": ROLLBACK_GITHUB_ID, "sha": ref}))
                return self.send_body(404, json.dumps({"message": "Not Found"}))

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = answer

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self.server.server_address[1]


# --- webhooks ---------------------------------------------------------------------------


def sample_body(name):
    with open(os.path.join(EVENTS_DIR, name), encoding="utf-8") as f:
        return json.loads(json.load(f)["body"])


def rewrite(value, sha, deployment_id, run_id, status_id):
    """The sample event with this deploy's sha, GitHub deployment id and workflow run id."""
    if isinstance(value, dict):
        return {k: rewrite(v, sha, deployment_id, run_id, status_id) for k, v in value.items()}
    if isinstance(value, list):
        return [rewrite(v, sha, deployment_id, run_id, status_id) for v in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return {
            SAMPLE_DEPLOYMENT_ID: deployment_id,
            SAMPLE_RUN_ID: run_id,
            SAMPLE_STATUS_ID: status_id,
        }.get(value, value)
    if isinstance(value, str):
        value = value.replace(SAMPLE_SHA, sha)
        value = value.replace("/deployments/%d" % SAMPLE_DEPLOYMENT_ID, "/deployments/%d" % deployment_id)
        value = value.replace("/actions/runs/%d/" % SAMPLE_RUN_ID, "/actions/runs/%d/" % run_id)
        value = value.replace("/statuses/%d" % SAMPLE_STATUS_ID, "/statuses/%d" % status_id)
        return value
    return value


class Webhooks:
    def __init__(self, url, secret):
        self.url = url
        self.secret = secret.encode("utf-8")
        self.protection = sample_body("apigw-deployment-protection-rule-staging.json")
        self.success = sample_body("apigw-deployment-status-success.json")

    def deliver(self, event, payload):
        body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
        for old in (SAMPLE_SHA, str(SAMPLE_DEPLOYMENT_ID), str(SAMPLE_RUN_ID)):
            if old.encode() in body:
                raise CheckFailed("the %s body still carries the sample's %s" % (event, old))
        signature = hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        headers = {
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "Content-Type": "application/json",
            "X-Hub-Signature-256": "sha256=" + signature,
        }
        status, text = http_request(self.url, "POST", body, headers)
        log("webhook %s -> HTTP %d %s" % (event, status, text.strip()))
        return status, text

    def deploy(self, sha, deployment_id, run_id, status_id, on_success=None):
        """Protection rule, then a `success` deployment status; returns the time that answer
        came back (verification begins then)."""
        pr = rewrite(copy.deepcopy(self.protection), sha, deployment_id, run_id, status_id)
        status, text = self.deliver("deployment_protection_rule", pr)
        if status != 200 or "approv" not in text.lower():
            raise CheckFailed(
                "the protection rule for %s was not approved: HTTP %d %s" % (sha[:7], status, text.strip())
            )
        st = rewrite(copy.deepcopy(self.success), sha, deployment_id, run_id, status_id)
        status, text = self.deliver("deployment_status", st)
        answered = now_utc()
        if on_success:
            on_success()
        if status // 100 != 2:
            raise CheckFailed("the success status of %s was refused: HTTP %d %s" % (sha[:7], status, text.strip()))
        return answered


# --- shipgate commands ------------------------------------------------------------------


class Shipgate:
    def __init__(self, binary, data_dir, policy, env):
        self.binary = binary
        self.data_dir = data_dir
        self.policy = policy
        self.env = env

    def run(self, *args, check=True):
        proc = subprocess.run(
            [self.binary, *args], env=self.env, capture_output=True, text=True, timeout=60
        )
        if check and proc.returncode != 0:
            raise CheckFailed(
                "shipgate %s exited %d:\n%s%s" % (" ".join(args), proc.returncode, proc.stdout, proc.stderr)
            )
        return proc

    def json_lines(self, *args):
        out = self.run(*args, "--data", self.data_dir, "--policy", self.policy, "--json").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def staging(self):
        for line in self.json_lines("status"):
            if line.get("environment") == "staging" and line.get("repo") in (None, "acme/api"):
                return line
        return None

    def history(self):
        return self.json_lines("history", "--limit", "100000")


def wait_for_deployment(sg, sha, states, timeout, label):
    """Polls `shipgate status` until the latest deployment is `sha` in one of `states`."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        st = sg.staging()
        latest = (st or {}).get("latest_deployment") or {}
        seen = (latest.get("sha"), latest.get("state"))
        if seen != last:
            log("status: latest deployment %s %s %s; current %s; last known good %s" % (
                latest.get("id"), latest.get("state"), (latest.get("sha") or "")[:7],
                ((st or {}).get("current") or {}).get("sha", "-")[:7],
                ((st or {}).get("last_known_good") or {}).get("sha", "-")[:7],
            ))
            last = seen
        if latest.get("sha") == sha and latest.get("state") in states:
            return st, latest, now_utc()
        if latest.get("sha") == sha and latest.get("state") in ("failed", "rejected", "rolled_back", "cancelled", "expired"):
            raise CheckFailed("%s ended %s instead of %s" % (label, latest.get("state"), "/".join(states)))
        if time.monotonic() > deadline:
            raise CheckFailed(
                "%s did not reach %s within %ds (last seen: %s)" % (label, "/".join(states), timeout, latest or st)
            )
        time.sleep(POLL_EVERY)


def wait_http_ok(url, timeout, what, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise CheckFailed("%s exited with %s before it was ready" % (what, proc.returncode))
        try:
            status, _ = http_request(url, timeout=2)
            if status == 200:
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.3)
    raise CheckFailed("%s did not answer 200 at %s within %ds" % (what, url, timeout))


def prom_query(base, query):
    data = urllib.parse.urlencode({"query": query}).encode()
    status, text = http_request(
        base + "/api/v1/query", "POST", data, {"Content-Type": "application/x-www-form-urlencoded"}
    )
    if status != 200:
        return None
    result = json.loads(text)["data"]["result"]
    return result


POLICY = """\
[services]
api = "acme/api"

[analysis.sources.prom]
type = "prometheus"
url = "http://127.0.0.1:{prom_port}"

[environments.staging]
verification_window = "3m"
rollback = {{ method = "redeploy" }}

[environments.staging.analysis]
end_early = true

[[environments.staging.analysis.checks]]
name = "error-rate"
source = "prom"
query = 'sum(rate(http_requests_total{{service="{{{{service}}}}",code=~"5.."}}[30s])) / sum(rate(http_requests_total{{service="{{{{service}}}}"}}[30s]))'
condition = "< 0.01"
interval = "10s"
count = 5
failure_limit = 1
"""

PROMETHEUS_CONFIG = """\
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: exporter
    static_configs:
      - targets: ['127.0.0.1:{port}']
"""


# --- the run ----------------------------------------------------------------------------


class Run:
    def __init__(self, args):
        self.args = args
        self.procs = []  # (name, Popen, log file)
        self.servers = []
        self.tmp = tempfile.mkdtemp(prefix="shipgate-analysis-e2e-", dir="/tmp")
        self.timeline = []
        self.shipgate_log = os.path.join(self.tmp, "shipgate.log")
        self.prometheus_log = os.path.join(self.tmp, "prometheus.log")

    def mark(self, what, at=None):
        at = at or now_utc()
        self.timeline.append((at, what))
        log(what)
        return at

    def spawn(self, name, argv, log_path, env=None):
        f = open(log_path, "wb")
        p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        self.procs.append((name, p, f))
        log("started %s (pid %d), log %s" % (name, p.pid, log_path))
        return p

    def stop_all(self):
        for name, p, f in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=5)
                log("stopped %s (pid %d, exit %s)" % (name, p.pid, p.returncode))
            f.close()
        self.procs = []
        for s in self.servers:
            s.shutdown()
            s.server_close()
        self.servers = []

    def main(self):
        binary = os.path.abspath(self.args.shipgate)
        if not os.access(binary, os.X_OK):
            raise Prerequisite("no shipgate binary at %s (cargo build -p shipgate-cli)" % binary)
        prometheus = shutil.which("prometheus")
        if not prometheus:
            raise Prerequisite("prometheus is not on PATH (apt-get install prometheus)")
        if not shutil.which("openssl"):
            raise Prerequisite("openssl is not on PATH")
        log("scratch directory %s" % self.tmp)

        versions = {
            "prometheus": subprocess.run([prometheus, "--version"], capture_output=True, text=True)
            .stdout.splitlines()[0].strip(),
            "shipgate": subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip(),
        }
        log("versions: %s; %s" % (versions["prometheus"], versions["shipgate"]))

        # (a) exporter
        exporter = Exporter()
        exporter_port = exporter.start()
        self.servers.append(exporter.server)
        log("exporter on 127.0.0.1:%d (healthy: %.1f%% 500s of ~%d req/s)" % (
            exporter_port, HEALTHY_ERROR_RATIO * 100, REQ_PER_SEC))

        # (b) prometheus
        prom_port = free_port()
        prom_url = "http://127.0.0.1:%d" % prom_port
        prom_cfg = os.path.join(self.tmp, "prometheus.yml")
        with open(prom_cfg, "w") as f:
            f.write(PROMETHEUS_CONFIG.format(port=exporter_port))
        prom = self.spawn("prometheus", [
            prometheus,
            "--config.file=" + prom_cfg,
            "--storage.tsdb.path=" + os.path.join(self.tmp, "prometheus-data"),
            "--web.listen-address=127.0.0.1:%d" % prom_port,
        ], self.prometheus_log)
        wait_http_ok(prom_url + "/-/ready", 60, "prometheus", prom)
        deadline = time.monotonic() + 30
        while True:
            up = prom_query(prom_url, 'up{job="exporter"}')
            if up and up[0]["value"][1] == "1":
                break
            if time.monotonic() > deadline:
                raise CheckFailed("prometheus did not scrape the exporter within 30s: %s" % up)
            time.sleep(0.5)
        scraping_since = self.mark("prometheus %s is scraping the exporter every 1s" % prom_url)

        # (c) fake GitHub
        github = FakeGitHub()
        github_port = github.start()
        self.servers.append(github.server)
        log("fake GitHub API on 127.0.0.1:%d" % github_port)

        # (d) shipgate
        key = os.path.join(self.tmp, "key.pem")
        subprocess.run(["openssl", "genrsa", "-traditional", "-out", key, "2048"],
                       check=True, capture_output=True)
        policy = os.path.join(self.tmp, "policy.toml")
        with open(policy, "w") as f:
            f.write(POLICY.format(prom_port=prom_port))
        data_dir = os.path.join(self.tmp, "data")
        secret = secrets.token_hex(16)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("SHIPGATE_") and k not in ("RUST_LOG", "AWS_PROFILE")}
        env.update({
            "SHIPGATE_GITHUB_WEBHOOK_SECRET": secret,
            "SHIPGATE_GITHUB_APP_ID": "12345",
            "SHIPGATE_GITHUB_PRIVATE_KEY_FILE": key,
            "SHIPGATE_GITHUB_API_URL": "http://127.0.0.1:%d" % github_port,
            "RUST_LOG": "info",
        })
        sg = Shipgate(binary, data_dir, policy, env)
        checked = sg.run("policy", "check", policy)
        log("shipgate policy check: exit 0\n" + (checked.stdout + checked.stderr).rstrip())

        sg_port = free_port()
        sg_url = "http://127.0.0.1:%d" % sg_port
        serve = self.spawn("shipgate serve", [
            binary, "serve", "--data", data_dir, "--policy", policy,
            "--listen", "127.0.0.1:%d" % sg_port, "--schedule", "sweeper=" + SWEEP_EVERY,
        ], self.shipgate_log, env=env)
        wait_http_ok(sg_url + "/healthz", 60, "shipgate serve", serve)
        log("shipgate serve answers %s/healthz" % sg_url)
        hooks = Webhooks(sg_url + "/webhooks/github", secret)

        # 4. healthy data first
        healthy_for = self.args.healthy_wait - (now_utc() - scraping_since).total_seconds()
        if healthy_for > 0:
            log("waiting %.0fs so Prometheus holds healthy data" % healthy_for)
            time.sleep(healthy_for)
        log("error ratio now: %s" % prom_query(prom_url, POLICY_QUERY))

        # SHA_A: healthy; passes its five samples and ends verification early.
        a_began = hooks.deploy(SHA_A, 1523690001, 9384800001, 3388200001)
        self.mark("SHA_A %s began verifying (success status answered)" % SHA_A[:7], a_began)
        _, a_dep, a_seen = wait_for_deployment(sg, SHA_A, ("succeeded",), self.args.a_timeout, "SHA_A")
        self.mark("SHA_A %s seen succeeded (%s, %.0fs after it began verifying)" % (
            SHA_A[:7], a_dep["id"], (a_seen - a_began).total_seconds()), a_seen)

        # SHA_B: the exporter goes bad right after its success status.
        bad_at = {}

        def go_bad():
            exporter.set_mode("bad")
            bad_at["t"] = now_utc()

        b_began = hooks.deploy(SHA_B, 1523690002, 9384800002, 3388200002, on_success=go_bad)
        self.mark("SHA_B %s began verifying (success status answered)" % SHA_B[:7], b_began)
        self.mark("exporter switched to bad (%.0f%% 500s)" % (BAD_ERROR_RATIO * 100), bad_at["t"])
        st, b_dep, b_seen = wait_for_deployment(sg, SHA_B, ("rolling_back", "rolled_back"),
                                                self.args.b_timeout, "SHA_B")
        self.mark("SHA_B %s seen %s (%s, %.0fs after the exporter went bad)" % (
            SHA_B[:7], b_dep["state"], b_dep["id"], (b_seen - bad_at["t"]).total_seconds()), b_seen)
        b_id = b_dep["id"]

        # Let two more sweeps run, so a second rollback request would be seen.
        time.sleep(2.5 * float(SWEEP_EVERY.rstrip("s")))

        # 5. checks
        failures = []
        history = sg.history()
        events = [e for e in history if e.get("kind") == "deployment"]
        a_id = a_dep["id"]
        a_samples = [e for e in events if e.get("deployment_id") == a_id and e.get("what") == "analysis_sample"]
        b_samples = [e for e in events if e.get("deployment_id") == b_id and e.get("what") == "analysis_sample"]
        b_verify = [e for e in events if e.get("deployment_id") == b_id and e.get("what") == "begin_verification"]
        rollbacks = [e for e in events if e.get("deployment_id") == b_id and e.get("what") == "start_rollback"]
        for e in events:
            if e.get("deployment_id") == a_id and e.get("what") in ("begin_verification", "pass_verification"):
                self.timeline.append((parse_ts(e["at"]), "history: SHA_A %s (%s)" % (e["what"], e.get("why") or "-")))
        if b_verify:
            self.timeline.append((parse_ts(b_verify[0]["at"]), "history: SHA_B begin_verification recorded"))
        for s in b_samples:
            self.timeline.append((parse_ts(s["at"]), "history: SHA_B sample (slot time) %s" % s["why"]))
        for r in rollbacks:
            self.timeline.append((parse_ts(r["at"]), "history: SHA_B start_rollback by %s" % r.get("actor")))
        for e in events:
            if e.get("deployment_id") == b_id and e.get("what") == "rollback_requested":
                self.timeline.append((parse_ts(e["at"]), "history: SHA_B rollback_requested (%s)" % e.get("why")))

        if a_dep.get("state") != "succeeded":
            failures.append("SHA_A did not succeed")
        if b_dep.get("state") not in ("rolling_back", "rolled_back"):
            failures.append("SHA_B did not reach rolling_back")
        lkg = (st.get("last_known_good") or {}).get("sha")
        if lkg != SHA_A:
            failures.append("last_known_good is %s, not SHA_A" % lkg)

        calls = github.snapshot()
        creates = [c for c in calls if c["method"] == "POST" and c["path"].split("?")[0] == "/repos/acme/api/deployments"]
        if len(creates) != 1:
            failures.append("expected exactly one POST /repos/acme/api/deployments, got %d" % len(creates))
        for c in creates[:1]:
            body = c["body"] if isinstance(c["body"], dict) else {}
            if body.get("ref") != SHA_A:
                failures.append("the rollback deployment's ref is %r, not SHA_A" % body.get("ref"))
            rb_of = (body.get("payload") or {}).get("shipgate_rollback_of")
            if rb_of != b_id:
                failures.append("payload.shipgate_rollback_of is %r, not SHA_B's deployment %s" % (rb_of, b_id))
        if not b_samples:
            failures.append("history has no analysis_sample events for SHA_B's deployment %s" % b_id)
        by_analysis = [r for r in rollbacks if r.get("actor") == "analysis"]
        if not by_analysis:
            failures.append("history has no start_rollback by actor analysis for %s (found: %s)" % (
                b_id, [(r.get("actor"), r.get("why")) for r in rollbacks]))

        # 6. report
        print()
        print("=" * 78)
        print("shipgate analysis e2e report (%s)" % iso(now_utc()))
        print("=" * 78)
        print("versions:  %s" % versions["prometheus"])
        print("           %s" % versions["shipgate"])
        print("SHA_A %s -> shipgate deployment %s, GitHub deployment 1523690001" % (SHA_A, a_id))
        print("SHA_B %s -> shipgate deployment %s, GitHub deployment 1523690002" % (SHA_B, b_id))
        print()
        print("timeline (UTC; t relative to SHA_B's verification start):")
        for at, what in sorted(self.timeline, key=lambda x: x[0]):
            print("  %s  t=%+6.1fs  %s" % (iso(at), (at - b_began).total_seconds(), what))
        print()
        print("analysis samples of SHA_A (%s):" % a_id)
        for s in a_samples:
            print("  %s  %s" % (s["at"], s["why"]))
        print("analysis samples of SHA_B (%s):" % b_id)
        for s in b_samples:
            print("  %s  %s" % (s["at"], s["why"]))
        print()
        print("rollback reason (history start_rollback, actor %s):" % (
            by_analysis[0].get("actor") if by_analysis else "-"))
        for r in rollbacks:
            print("  %s" % r.get("why"))
        print()
        print("fake GitHub received:")
        for c in calls:
            extra = ""
            if c in creates:
                extra = " ref=%s payload=%s" % (c["body"].get("ref"), json.dumps(c["body"].get("payload")))
            print("  %s %s %s%s" % (c["at"], c["method"], c["path"], extra))
        print()
        if failures:
            for f in failures:
                print("FAIL: %s" % f)
            print("RESULT: FAIL")
            return 1
        print("checks: SHA_A succeeded; SHA_B reached %s; exactly one rollback deployment (ref SHA_A,"
              " shipgate_rollback_of %s); %d analysis_sample events for SHA_B; start_rollback by analysis"
              % (b_dep["state"], b_id, len(b_samples)))
        print("RESULT: PASS")
        return 0


POLICY_QUERY = ('sum(rate(http_requests_total{service="api",code=~"5.."}[30s])) / '
                'sum(rate(http_requests_total{service="api"}[30s]))')


def parse_ts(text):
    # RFC 3339 with Z and up to nanoseconds
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", text)
    if not m:
        return now_utc()
    base = dt.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")
    frac = float(m.group(2) or 0)
    tz = dt.timezone.utc
    if m.group(3) != "Z":
        sign = 1 if m.group(3)[0] == "+" else -1
        h, mi = m.group(3)[1:].split(":")
        tz = dt.timezone(sign * dt.timedelta(hours=int(h), minutes=int(mi)))
    return (base + dt.timedelta(seconds=frac)).replace(tzinfo=tz).astimezone(dt.timezone.utc)


def tail(path, n=40):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shipgate", default=os.path.join(REPO_ROOT, "target", "debug", "shipgate"),
                        help="the shipgate binary (default: target/debug/shipgate)")
    parser.add_argument("--healthy-wait", type=float, default=35.0,
                        help="seconds of healthy data before the first deploy (default 35)")
    parser.add_argument("--a-timeout", type=float, default=180.0,
                        help="seconds SHA_A may take to succeed (default 180)")
    parser.add_argument("--b-timeout", type=float, default=180.0,
                        help="seconds SHA_B may take to reach rolling_back (default 180)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the scratch directory under /tmp even when the run passes")
    args = parser.parse_args()

    run = Run(args)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt("signal %d" % signum)

    signal.signal(signal.SIGTERM, on_signal)
    rc = 1
    try:
        rc = run.main()
    except Prerequisite as e:
        print("MISSING PREREQUISITE: %s" % e, file=sys.stderr)
        rc = 2
    except CheckFailed as e:
        print("\nFAIL: %s" % e)
        print("RESULT: FAIL")
        rc = 1
    except KeyboardInterrupt:
        print("\ninterrupted")
        rc = 1
    finally:
        run.stop_all()
        if rc == 1:
            print("\n--- last lines of %s ---\n%s" % (run.shipgate_log, tail(run.shipgate_log)))
        if rc in (0, 2) and not args.keep:
            shutil.rmtree(run.tmp, ignore_errors=True)
        else:
            print("scratch directory kept: %s" % run.tmp)
    sys.exit(rc)


if __name__ == "__main__":
    main()
