#!/usr/bin/env python3
"""Cold-start benchmark of the five Lambda binaries against a local Lambda Runtime API stand-in.

Each run execs one function binary (or the Python/boto3 baseline under awslambdaric) with
AWS_LAMBDA_RUNTIME_API pointing at an http.server on 127.0.0.1 that implements the Runtime API
(`invocation/next`, `invocation/{id}/response`, `invocation/{id}/error`, `init/error`), hands it
one typical event, and measures, from just before exec:

  * next_ms  - until the first `GET /2018-06-01/runtime/invocation/next` (the init phase:
               config, clients, policy);
  * resp_ms  - until the response for that event has been POSTed (init + one invocation);
  * rss_mib  - peak RSS (VmHWM from /proc/<pid>/status, read before the process is killed).

With `--warm N`, each run then hands the same process N more events, one after another, each
freshly made (a new delivery id, a new signature), and reports the CPU the function's own
process spent per warm event: utime + stime from /proc/<pid>/stat, read when the cold event's
response arrives and again when the N-th warm response arrives. The stand-in, moto and this
script run in other processes, so their CPU is not counted.

AWS calls go to a moto server this script starts on loopback (AWS_ENDPOINT_URL), with a fresh
DynamoDB table per run, so every run does the same work. Slack, PagerDuty and GitHub response
URLs point at stubs on the stand-in server. Runs are interleaved across targets (run i of every
target, then run i+1) so background load on a shared machine spreads evenly over them.

Python 3.11 standard library only (moto and awslambdaric run as separate processes).

Usage:
  scripts/cold-start/run.py [--runs 20] [--bin-dir target/release] [--only github-webhook,python]
                            [--secrets-manager] [--ssl-cert-file PATH] [--warm 1000] [--json out.json]
The Python baseline needs scripts/cold-start/.venv (`python3.11 -m venv scripts/cold-start/.venv
&& scripts/cold-start/.venv/bin/pip install awslambdaric boto3`); it is skipped with a warning
when that venv is missing.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import http.server
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
EVENTS = ROOT / "events"
REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
TOPIC_NAME = "shipgate-coldstart"
TOPIC_ARN = f"arn:aws:sns:{REGION}:{ACCOUNT}:{TOPIC_NAME}"

GITHUB_SECRET = "shipgate-demo-webhook-secret"  # the one events/github-webhook is signed with
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"  # Slack's documented example secret
ALERT_TOKEN = "shipgate-demo-alert-token"
SLACK_BOT_TOKEN = "xoxb-coldstart-not-a-token"

RUNTIME_PREFIX = "/2018-06-01/runtime"


# ------------------------------------------------------------------------------------------
# Runtime API stand-in (plus Slack / PagerDuty stubs on the same port)
# ------------------------------------------------------------------------------------------


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a whole process (every thread, live or exited), from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class Invocation:
    """One cold start: the first event handed out and what came back, then any warm events."""

    def __init__(self, event: bytes, timeout_ms: int = 30_000, warm: int = 0, make_event=None):
        self.request_id = str(uuid.uuid4())
        self.event = event
        self.timeout_ms = timeout_ms
        self.pid: int | None = None
        # Warm phase: `warm` more events from `make_event`, served after the cold response.
        self.make_event = make_event
        self.warm_left = warm
        self.warm_total = warm
        self.warm_ids: set[str] = set()
        self.warm_answered = 0
        self.warm_statuses: dict[str, int] = {}
        self.cpu_at_cold: float | None = None
        self.cpu_at_warm_end: float | None = None
        self.warm_started_ns: int | None = None
        self.warm_done_ns: int | None = None
        self.warm_done = threading.Event()
        if warm == 0:
            self.warm_done.set()
        self.lock = threading.Lock()
        self.delivered = False
        self.first_next_ns: int | None = None
        self.done_ns: int | None = None
        self.outcome: str | None = None  # response | error | init-error
        self.body: bytes = b""
        self.done = threading.Event()
        # A second `next` blocks (Lambda would freeze the sandbox there) until teardown.
        self.released = threading.Event()

    def finish(self, outcome: str, body: bytes) -> None:
        with self.lock:
            if self.outcome is None:
                self.done_ns = time.monotonic_ns()
                self.outcome = outcome
                self.body = body
                if self.pid is not None and self.warm_total:
                    self.cpu_at_cold = cpu_seconds(self.pid)
                    self.warm_started_ns = time.monotonic_ns()
            if outcome != "response":
                self.warm_left = 0
                self.warm_done.set()
        self.done.set()

    def next_warm(self) -> tuple[str, bytes] | None:
        """The next warm event, once the cold one was answered; None when there is none."""
        with self.lock:
            if self.outcome != "response" or self.warm_left == 0:
                return None
            self.warm_left -= 1
            request_id = str(uuid.uuid4())
            self.warm_ids.add(request_id)
        return request_id, self.make_event()

    def finish_warm(self, request_id: str, outcome: str, body: bytes) -> bool:
        with self.lock:
            if request_id not in self.warm_ids:
                return False
            self.warm_ids.discard(request_id)
            self.warm_answered += 1
            key = status_of(body) if outcome == "response" else outcome
            self.warm_statuses[key] = self.warm_statuses.get(key, 0) + 1
            if self.warm_answered == self.warm_total:
                if self.pid is not None:
                    self.cpu_at_warm_end = cpu_seconds(self.pid)
                self.warm_done_ns = time.monotonic_ns()
                self.warm_done.set()
        return True


class StandIn(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    current: Invocation | None = None

    def handle_error(self, request, client_address):
        # A killed function drops its connections mid-request; that is how every run ends.
        if not isinstance(sys.exc_info()[1], (ConnectionError, BrokenPipeError)):
            super().handle_error(request, client_address)


class RuntimeApiHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: StandIn

    def log_message(self, format, *args):  # noqa: A002 - quiet: one line per request is noise
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    # Trailer section ends with an empty line.
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {"Content-Type": "application/json"}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802 - http.server's naming
        if self.path != f"{RUNTIME_PREFIX}/invocation/next":
            self._send(404, b'{"errorMessage":"not found"}')
            return
        inv = self.server.current
        now = time.monotonic_ns()
        if inv is None:
            self._send(500, b'{"errorMessage":"no invocation"}')
            return
        with inv.lock:
            first = not inv.delivered
            if first:
                inv.delivered = True
                inv.first_next_ns = now
        request_id, event = inv.request_id, inv.event
        if not first:
            warm = inv.next_warm()
            if warm is None:
                inv.released.wait(60)
                self.close_connection = True
                return
            request_id, event = warm
        deadline_ms = int(time.time() * 1000) + inv.timeout_ms
        trace = f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Parent={uuid.uuid4().hex[:16]};Sampled=0"
        self._send(
            200,
            event,
            {
                "Content-Type": "application/json",
                "Lambda-Runtime-Aws-Request-Id": request_id,
                "Lambda-Runtime-Deadline-Ms": str(deadline_ms),
                "Lambda-Runtime-Invoked-Function-Arn": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:coldstart",
                "Lambda-Runtime-Trace-Id": trace,
            },
        )

    def do_POST(self):  # noqa: N802
        body = self._read_body()
        path = self.path
        inv = self.server.current
        m = re.fullmatch(rf"{RUNTIME_PREFIX}/invocation/([^/]+)/(response|error)", path)
        if m:
            if inv is not None and m.group(1) == inv.request_id:
                inv.finish(m.group(2), body)
                self._send(202, b'{"status":"OK"}')
            elif inv is not None and inv.finish_warm(m.group(1), m.group(2), body):
                self._send(202, b'{"status":"OK"}')
            else:
                self._send(400, b'{"errorMessage":"unknown request id"}')
            return
        if path == f"{RUNTIME_PREFIX}/init/error":
            if inv is not None:
                inv.finish("init-error", body)
            self._send(202, b'{"status":"OK"}')
            return
        if path.startswith("/slack/api/"):
            # chat.postMessage / chat.update / views.open: Slack's minimal success shape.
            self._send(200, b'{"ok":true,"channel":"C0COLDSTART","ts":"1748858400.000100"}')
            return
        if path.startswith("/slack/respond"):
            self._send(200, b"ok", {"Content-Type": "text/plain"})
            return
        if path.startswith("/pagerduty"):
            self._send(202, b'{"status":"success","message":"Event processed","dedup_key":"coldstart"}')
            return
        self._send(404, b'{"errorMessage":"not found"}')


# ------------------------------------------------------------------------------------------
# moto (raw AWS JSON/query calls: moto does not check signatures, only the region in scope)
# ------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Moto:
    def __init__(self, binary: Path, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log, "wb")
        self.proc = subprocess.Popen(
            [str(binary), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    raise SystemExit(f"moto_server exited early; see {log}")
                time.sleep(0.1)
        raise SystemExit("moto_server did not start listening within 30 s")

    def _call(self, service: str, headers: dict[str, str], body: bytes) -> bytes:
        headers = {
            **headers,
            "Authorization": f"AWS4-HMAC-SHA256 Credential=testing/20260101/{REGION}/{service}/aws4_request, "
            "SignedHeaders=host, Signature=0",
        }
        req = urllib.request.Request(self.url + "/", data=body, headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.read()

    def json_call(self, service: str, target: str, version: str, payload: dict) -> dict:
        out = self._call(
            service,
            {"Content-Type": f"application/x-amz-json-{version}", "X-Amz-Target": target},
            json.dumps(payload).encode(),
        )
        return json.loads(out or b"{}")

    def create_table(self, name: str) -> None:
        """The StateTable of template.yaml: pk/sk plus the `timeline` GSI."""
        self.json_call(
            "dynamodb",
            "DynamoDB_20120810.CreateTable",
            "1.0",
            {
                "TableName": name,
                "BillingMode": "PAY_PER_REQUEST",
                "AttributeDefinitions": [
                    {"AttributeName": a, "AttributeType": "S"} for a in ("pk", "sk", "tl_pk", "tl_sk")
                ],
                "KeySchema": [
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "sk", "KeyType": "RANGE"},
                ],
                "GlobalSecondaryIndexes": [
                    {
                        "IndexName": "timeline",
                        "KeySchema": [
                            {"AttributeName": "tl_pk", "KeyType": "HASH"},
                            {"AttributeName": "tl_sk", "KeyType": "RANGE"},
                        ],
                        "Projection": {"ProjectionType": "ALL"},
                    }
                ],
            },
        )

    def delete_table(self, name: str) -> None:
        self.json_call("dynamodb", "DynamoDB_20120810.DeleteTable", "1.0", {"TableName": name})

    def item_count(self, name: str) -> int:
        out = self.json_call("dynamodb", "DynamoDB_20120810.Scan", "1.0", {"TableName": name, "Select": "COUNT"})
        return int(out.get("Count", 0))

    def create_topic(self, name: str) -> str:
        body = urllib.parse.urlencode({"Action": "CreateTopic", "Name": name, "Version": "2010-03-31"})
        out = self._call(
            "sns", {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}, body.encode()
        ).decode()
        m = re.search(r"<TopicArn>([^<]+)</TopicArn>", out)
        if not m:
            raise SystemExit(f"moto CreateTopic answered without a TopicArn: {out[:200]}")
        return m.group(1)

    def create_secret(self, name: str, values: dict[str, str]) -> None:
        self.json_call(
            "secretsmanager",
            "secretsmanager.CreateSecret",
            "1.1",
            {"Name": name, "SecretString": json.dumps(values)},
        )

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


# ------------------------------------------------------------------------------------------
# Events: the samples in events/, re-signed (and pointed at the stubs) for every run
# ------------------------------------------------------------------------------------------


def load_event(relative: str) -> dict:
    with open(EVENTS / relative, encoding="utf-8") as f:
        return json.load(f)


def body_bytes(event: dict) -> bytes:
    body = event.get("body") or ""
    return base64.b64decode(body) if event.get("isBase64Encoded") else body.encode()


def github_event() -> bytes:
    event = load_event("github-webhook/apigw-deployment-protection-rule-staging.json")
    raw = body_bytes(event)
    headers = {k.lower(): v for k, v in event["headers"].items()}
    headers["x-github-delivery"] = str(uuid.uuid4())
    headers["x-hub-signature-256"] = "sha256=" + hmac.new(GITHUB_SECRET.encode(), raw, hashlib.sha256).hexdigest()
    headers["x-hub-signature"] = "sha1=" + hmac.new(GITHUB_SECRET.encode(), raw, hashlib.sha1).hexdigest()
    event["headers"] = headers
    return json.dumps(event).encode()


def slack_event(stub: str) -> bytes:
    event = load_event("slack-approval/apigw-block-actions-approve.json")
    form = urllib.parse.parse_qs(body_bytes(event).decode(), keep_blank_values=True)
    payload = json.loads(form["payload"][0])
    # The click's response_url would go to hooks.slack.com; the stub answers instead.
    payload["response_url"] = f"{stub}/slack/respond/{uuid.uuid4().hex}"
    raw = urllib.parse.urlencode({"payload": json.dumps(payload, separators=(",", ":"))}).encode()
    ts = str(int(time.time()))
    sig = hmac.new(SLACK_SECRET.encode(), b"v0:" + ts.encode() + b":" + raw, hashlib.sha256).hexdigest()
    headers = {k.lower(): v for k, v in event["headers"].items()}
    headers["x-slack-request-timestamp"] = ts
    headers["x-slack-signature"] = f"v0={sig}"
    headers["content-length"] = str(len(raw))
    event["headers"] = headers
    event["body"] = raw.decode()
    event["isBase64Encoded"] = False
    return json.dumps(event).encode()


def alert_event() -> bytes:
    return (EVENTS / "alert-webhook/apigw-alertmanager-firing.json").read_bytes()


def notifier_event() -> bytes:
    return (EVENTS / "notifier/sqs-approval-requested.json").read_bytes()


def jobs_event() -> bytes:
    return (EVENTS / "scheduled-jobs/sweeper.json").read_bytes()


# ------------------------------------------------------------------------------------------
# Targets
# ------------------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    argv: list[str]
    event: object  # () -> bytes, called per run
    env: dict[str, str]
    secrets: dict[str, str]  # SHIPGATE_ variables that production keeps in Secrets Manager
    cwd: Path = ROOT
    # The function's Timeout in template.yaml: the deadline the stand-in gives each event.
    timeout_ms: int = 10_000
    samples: list[dict] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def bin_dirs(args) -> list[tuple[str, Path]]:
    """`--bin-dir [LABEL=]DIR`, repeatable; relative paths are from the repository root."""
    out = []
    for spec in args.bin_dir or ["target/release"]:
        label, _, path = spec.rpartition("=")
        p = Path(path)
        out.append((label or path, p if p.is_absolute() else ROOT / p))
    return out


def build_targets(args, stub: str) -> list[Target]:
    slack_api = {"SHIPGATE_SLACK_API_URL": f"{stub}/slack/api"}
    functions = [
        ("github-webhook", github_event, {}, {"SHIPGATE_GITHUB_WEBHOOK_SECRET": GITHUB_SECRET}, 10),
        ("slack-approval", lambda: slack_event(stub), slack_api,
         {"SHIPGATE_SLACK_SIGNING_SECRET": SLACK_SECRET, "SHIPGATE_SLACK_BOT_TOKEN": SLACK_BOT_TOKEN,
          "SHIPGATE_SLACK_TEAM_ID": "T0TEAM0001"}, 10),
        ("alert-webhook", alert_event, {}, {"SHIPGATE_ALERT_TOKEN": ALERT_TOKEN}, 10),
        ("scheduled-jobs", jobs_event, {}, {}, 900),
        # The notifier starts a record only with 30 s of its 60 s left (DEFAULT_DELIVERY_BUDGET).
        ("notifier", notifier_event, {**slack_api, "SHIPGATE_PAGERDUTY_URL": f"{stub}/pagerduty"},
         {"SHIPGATE_SLACK_BOT_TOKEN": SLACK_BOT_TOKEN, "SHIPGATE_PAGERDUTY_ROUTING_KEY_CRITICAL": "coldstart-routing-key"}, 60),
    ]
    if args.warm:
        # The Python baseline's work per warm event: check, parse, one conditional PutItem.
        # The same delivery sent again does that in the Rust function (the claim is refused
        # as a duplicate, then read back), so this pair compares like with like.
        def redelivery():
            first = github_event()
            return lambda: first

        functions.append(("github-webhook", redelivery(), {}, {"SHIPGATE_GITHUB_WEBHOOK_SECRET": GITHUB_SECRET},
                          10, " (same delivery again)"))
    dirs = bin_dirs(args)
    targets = []
    for name, event, env, secrets, timeout_s, *variant in functions:
        for label, directory in dirs:
            binary = directory / name
            if not binary.exists():
                print(f"warning: {binary} missing (cargo build --release -p {name}); skipped", file=sys.stderr)
                continue
            shown = (name if len(dirs) == 1 else f"{name} [{label}]") + "".join(variant)
            targets.append(Target(shown, [str(binary)], event, env, secrets, timeout_ms=timeout_s * 1000))
    py = HERE / ".venv" / "bin" / "python"
    if py.exists():
        targets.append(
            Target("python-boto3 (github-webhook work)", [str(py), "-m", "awslambdaric", "handler.handler"],
                   github_event, {"LAMBDA_TASK_ROOT": str(HERE / "python_baseline"), "_HANDLER": "handler.handler"},
                   {"SHIPGATE_GITHUB_WEBHOOK_SECRET": GITHUB_SECRET}, cwd=HERE / "python_baseline")
        )
    else:
        print(f"warning: {py} missing; the Python baseline is skipped", file=sys.stderr)
    if args.only:
        wanted = {w.strip() for w in args.only.split(",")}
        targets = [t for t in targets if any(t.name.startswith(w) for w in wanted)]
    if not targets:
        raise SystemExit("nothing to run")
    return targets


def base_env(name: str, runtime_api: str, moto: Moto, table: str, home: str) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": home,
        "TZ": "UTC",
        "AWS_LAMBDA_RUNTIME_API": runtime_api,
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "2026/01/01/[$LATEST]coldstart",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_ENDPOINT_URL": moto.url,
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_EC2_METADATA_DISABLED": "true",
        "RUST_LOG": "info",
        "SHIPGATE_TABLE": table,
        "SHIPGATE_TOPIC_ARN": TOPIC_ARN,
        "SHIPGATE_POLICY_FILE": str(ROOT / "shared" / "policy.example.toml"),
    }


def peak_rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def status_of(body: bytes) -> str:
    """The HTTP status of an API Gateway answer, or a short summary of other answers."""
    try:
        doc = json.loads(body or b"null")
    except ValueError:
        return "non-JSON"
    if isinstance(doc, dict) and "statusCode" in doc:
        return str(doc["statusCode"])
    if isinstance(doc, dict) and "batchItemFailures" in doc:
        return f"{len(doc['batchItemFailures'])} failed"
    return "ok"


def run_once(server: StandIn, runtime_api: str, moto: Moto, target: Target, index: int,
             secrets_manager: bool, logs: Path, timeout: float, warm: int = 0,
             ssl_cert_file: str | None = None) -> dict | None:
    table = f"shipgate-cs-{index}-{uuid.uuid4().hex[:8]}"
    moto.create_table(table)
    env = base_env(target.name.split()[0], runtime_api, moto, table, str(logs))
    if ssl_cert_file:
        env["SSL_CERT_FILE"] = ssl_cert_file
    env.update(target.env)
    if secrets_manager and target.secrets:
        name = f"shipgate/coldstart/{uuid.uuid4().hex[:8]}"
        moto.create_secret(name, target.secrets)
        env["SHIPGATE_SECRETS"] = name
    else:
        env.update(target.secrets)
    inv = Invocation(target.event(), target.timeout_ms, warm=warm, make_event=target.event)
    server.current = inv
    log_path = logs / f"{target.name.split()[0]}-{index}.log"
    with open(log_path, "wb") as log:
        t0 = time.monotonic_ns()
        proc = subprocess.Popen(target.argv, env=env, cwd=target.cwd, stdout=log, stderr=subprocess.STDOUT)
        inv.pid = proc.pid
        finished = inv.done.wait(timeout)
        warm_finished = inv.warm_done.wait(timeout + warm * 1.0) if finished else False
        rss = peak_rss_kib(proc.pid)
        proc.kill()
        _, _, usage = os.wait4(proc.pid, 0)
        proc.returncode = -9  # reaped by wait4; keeps Popen from waiting again
    inv.released.set()
    items = moto.item_count(table)
    moto.delete_table(table)
    if not finished or inv.outcome != "response":
        what = "timed out" if not finished else f"{inv.outcome}: {inv.body[:300]!r}"
        target.failures.append(f"run {index}: {what} (log {log_path})")
        return None
    warm_sample = {}
    if warm:
        failed_warm = {k: v for k, v in inv.warm_statuses.items() if k in ("error", "non-JSON") or k.startswith("5")}
        if not warm_finished or inv.cpu_at_cold is None or inv.cpu_at_warm_end is None or failed_warm:
            what = f"{inv.warm_answered}/{warm} warm events answered: {inv.warm_statuses}"
            target.failures.append(f"run {index}: {what} (log {log_path})")
            return None
        warm_sample = {
            "warm_events": warm,
            "warm_cpu_us_per_event": (inv.cpu_at_warm_end - inv.cpu_at_cold) * 1e6 / warm,
            "warm_wall_ms_per_event": (inv.warm_done_ns - inv.warm_started_ns) / 1e6 / warm,
            "warm_statuses": inv.warm_statuses,
        }
    log_path.unlink()
    return {
        **warm_sample,
        "next_ms": (inv.first_next_ns - t0) / 1e6 if inv.first_next_ns else None,
        "resp_ms": (inv.done_ns - t0) / 1e6,
        "rss_kib": rss if rss is not None else usage.ru_maxrss,
        "status": status_of(inv.body),
        "items": items,
        "answer": inv.body[:400].decode("utf-8", "replace"),
    }


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile (p90 of 20 samples is the 18th smallest)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 1))
    return ordered[int(rank) - 1]


def summarise(t: Target) -> dict:
    s = t.samples
    nexts = [x["next_ms"] for x in s if x["next_ms"] is not None]
    resps = [x["resp_ms"] for x in s]
    rss = [x["rss_kib"] / 1024 for x in s]
    return {
        "target": t.name,
        "runs": len(s),
        "failures": len(t.failures),
        "next_median_ms": statistics.median(nexts) if nexts else None,
        "next_p90_ms": quantile(nexts, 0.9) if nexts else None,
        "resp_median_ms": statistics.median(resps) if resps else None,
        "resp_p90_ms": quantile(resps, 0.9) if resps else None,
        "rss_median_mib": statistics.median(rss) if rss else None,
        "rss_max_mib": max(rss) if rss else None,
        "statuses": sorted({x["status"] for x in s}),
        "items_written": sorted({x["items"] for x in s}),
        "binary_bytes": None if t.name.startswith("python") else os.path.getsize(t.argv[0]),
        "warm_cpu_us_median": statistics.median(w) if (w := [x["warm_cpu_us_per_event"] for x in s
                                                             if "warm_cpu_us_per_event" in x]) else None,
        "warm_wall_ms_median": statistics.median(w) if (w := [x["warm_wall_ms_per_event"] for x in s
                                                              if "warm_wall_ms_per_event" in x]) else None,
        "warm_statuses": sorted({k for x in s for k in x.get("warm_statuses", {})}),
    }


def fmt(v, digits=1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20, help="measured runs per target (default 20)")
    ap.add_argument("--warmup", type=int, default=1, help="unmeasured runs per target first (page cache)")
    ap.add_argument("--bin-dir", action="append",
                    help="[LABEL=]DIR holding the function binaries (default target/release); repeat to compare builds")
    ap.add_argument("--only", help="comma-separated target names (python = the baseline)")
    ap.add_argument("--secrets-manager", action="store_true",
                    help="put the secrets in moto's Secrets Manager (SHIPGATE_SECRETS) instead of plain env")
    ap.add_argument("--moto", default=str(ROOT / ".venv" / "bin" / "moto_server"))
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per run before it counts as failed")
    ap.add_argument("--ssl-cert-file", metavar="PATH",
                    help="set SSL_CERT_FILE for every process, so TLS roots come from this one bundle "
                         "instead of the bundle plus every file of the system's certificate directory")
    ap.add_argument("--warm", type=int, default=0,
                    help="after the cold event, hand each process N more events and report its CPU per event")
    ap.add_argument("--json", help="also write every sample and the summary here")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="shipgate-coldstart-"))
    server = StandIn(("127.0.0.1", 0), RuntimeApiHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    runtime_api = f"127.0.0.1:{server.server_address[1]}"
    stub = f"http://{runtime_api}"
    moto = Moto(Path(args.moto), work / "moto.log")
    try:
        topic = moto.create_topic(TOPIC_NAME)
        assert topic == TOPIC_ARN, topic
        targets = build_targets(args, stub)
        py = HERE / ".venv" / "bin" / "python"
        if any(t.argv[0] == str(py) for t in targets):
            # Lambda's Python runtimes ship compiled bytecode; make sure this venv has it too.
            subprocess.run([str(py), "-m", "compileall", "-q", str(HERE / ".venv" / "lib"),
                            str(HERE / "python_baseline")], check=False, stdout=subprocess.DEVNULL)
        for t in targets:
            for w in range(args.warmup):
                run_once(server, runtime_api, moto, t, -1 - w, args.secrets_manager, work, args.timeout,
                         0, args.ssl_cert_file)
            t.failures.clear()
        for i in range(args.runs):
            for t in targets:
                sample = run_once(server, runtime_api, moto, t, i, args.secrets_manager, work, args.timeout,
                                  args.warm, args.ssl_cert_file)
                if sample:
                    t.samples.append(sample)
            print(f"run {i + 1}/{args.runs} done", file=sys.stderr)
    finally:
        moto.stop()
        server.shutdown()

    summary = [summarise(t) for t in targets]
    print(f"\n{platform.node()} {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}; "
          f"runs {args.runs} (+{args.warmup} warm-up); secrets from "
          f"{'Secrets Manager (moto)' if args.secrets_manager else 'plain env'}; "
          f"TLS roots: {args.ssl_cert_file or 'system default'}; "
          f"binaries: {', '.join(f'{label}={d}' for label, d in bin_dirs(args))}")
    print("\n| target | to first /next, median (p90) ms | to first response, median (p90) ms "
          "| peak RSS median (max) MiB | binary MiB | answer | ok runs |")
    print("|---|---:|---:|---:|---:|---|---:|")
    for s in summary:
        print(f"| {s['target']} | {fmt(s['next_median_ms'])} ({fmt(s['next_p90_ms'])}) "
              f"| {fmt(s['resp_median_ms'])} ({fmt(s['resp_p90_ms'])}) "
              f"| {fmt(s['rss_median_mib'])} ({fmt(s['rss_max_mib'])}) "
              f"| {fmt(s['binary_bytes'] / 2**20 if s['binary_bytes'] else None)} "
              f"| {', '.join(s['statuses']) or '-'} | {s['runs']}/{args.runs} |")
    base = next((s for s in summary if s["target"].startswith("python")), None)
    if base and base["runs"]:
        print("\nRatio Python baseline / function (higher = the Rust function is faster or smaller):\n")
        print("| function | first /next | first response | peak RSS |")
        print("|---|---:|---:|---:|")
        for s in summary:
            if s is base or not s["runs"]:
                continue
            print(f"| {s['target']} | {base['next_median_ms'] / s['next_median_ms']:.1f}x "
                  f"| {base['resp_median_ms'] / s['resp_median_ms']:.1f}x "
                  f"| {base['rss_median_mib'] / s['rss_median_mib']:.1f}x |")
    if args.warm:
        print(f"\nWarm events: {args.warm} per process after the cold one; CPU of the function's process "
              "only (utime + stime), median over runs:\n")
        print("| target | CPU per warm event, µs | wall per warm event, ms | answers |")
        print("|---|---:|---:|---|")
        for s in summary:
            print(f"| {s['target']} | {fmt(s['warm_cpu_us_median'], 0)} | {fmt(s['warm_wall_ms_median'], 2)} "
                  f"| {', '.join(s['warm_statuses']) or '-'} |")
        if base and base["warm_cpu_us_median"]:
            print("\n| function | Python CPU per event / function CPU per event |")
            print("|---|---:|")
            for s in summary:
                if s is not base and s["warm_cpu_us_median"]:
                    print(f"| {s['target']} | {base['warm_cpu_us_median'] / s['warm_cpu_us_median']:.1f}x |")
    for t in targets:
        for f in t.failures:
            print(f"FAILED {t.name} {f}", file=sys.stderr)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"summary": summary, "samples": {t.name: t.samples for t in targets},
                       "failures": {t.name: t.failures for t in targets}}, f, indent=1)
    if any(t.failures for t in targets):
        print(f"logs of failed runs kept in {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if any(t.failures for t in targets) else 0


if __name__ == "__main__":
    sys.exit(main())
