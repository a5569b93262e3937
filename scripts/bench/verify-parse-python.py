#!/usr/bin/env python3
"""Python baseline for the GitHub inbound bench: verify + parse + decide one signed delivery.

Same bytes as `cargo bench -p github-webhook --bench inbound`
(`deployment_protection_rule/30KiB`): scripts/bench/data/deployment_protection_rule.30k.json,
signed with the same secret. One event is what a small Python webhook handler would do with the
standard library: HMAC-SHA256 of the body and `hmac.compare_digest` against the header,
`json.loads`, pick the fields the gate needs (with the same fallbacks as shipgate's parser), and
a minimal decision over the same production rules (allowed ref, promotion from staging, lock,
freeze, open incidents, two approvals). It is deliberately less work than shipgate's
`evaluate_for` (no time zones, no checklist text), so the ratio flatters Python slightly.

Single process, single thread: events per second on one core.

    python3 scripts/bench/verify-parse-python.py [--seconds 2] [--rounds 5]
"""
import argparse
import hashlib
import hmac
import json
import pathlib
import platform
import re
import statistics
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
PAYLOAD = ROOT / "scripts/bench/data/deployment_protection_rule.30k.json"
SECRET = b"shipgate-bench-webhook-secret"

POLICY = {
    "production": {
        "allowed_refs": ["main", "refs/tags/v*"],
        "promotion_from": ["staging"],
        "approvals_required": 2,
        "freezes": [("2024-12-21", "2025-01-04")],
    }
}
FACTS = {"succeeded_in": {"staging"}, "open_critical_incidents": [], "lock_holder": None}
TODAY = "2026-06-02"


class Refused(Exception):
    pass


def compile_ref(pattern):
    """shipgate's ref globs: bare names are branches, `*` stays inside one path segment."""
    full = pattern if pattern.startswith("refs/") else "refs/heads/" + pattern
    return re.compile("".join("[^/]*" if c == "*" else re.escape(c) for c in full) + r"\Z")


ALLOWED = {name: [compile_ref(p) for p in env["allowed_refs"]] for name, env in POLICY.items()}


def ref_allowed(git_ref, env_name):
    if not git_ref.startswith("refs/"):
        git_ref = "refs/heads/" + git_ref
    return any(r.match(git_ref) for r in ALLOWED[env_name])


def handle(body: bytes, signature: str):
    scheme, _, given = signature.partition("=")
    if scheme != "sha256":
        raise Refused("scheme")
    expected = hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, given):
        raise Refused("signature")
    doc = json.loads(body)
    if doc.get("action") != "requested":
        return ("ignored",)
    deployment = doc.get("deployment") or {}
    sha = doc.get("sha") or deployment.get("sha")
    git_ref = doc.get("ref") or deployment.get("ref")
    url = doc["deployment_callback_url"]
    parts = url.split("/actions/runs/", 1)
    run_id = int(parts[1].split("/", 1)[0]) if len(parts) == 2 else None
    env_name = doc["environment"]
    if not (sha and git_ref and run_id and env_name.strip()):
        raise Refused("malformed")
    requester = doc["sender"]["login"]
    repo = doc["repository"]["full_name"]
    env = POLICY.get(env_name)
    if env is None:
        return ("reject", "unknown_environment")
    if not ref_allowed(git_ref, env_name):
        return ("reject", "allowed_ref")
    if not any(e in FACTS["succeeded_in"] for e in env["promotion_from"]):
        return ("reject", "promotion")
    if FACTS["lock_holder"]:
        return ("reject", "lock")
    if any(start <= TODAY <= end for start, end in env["freezes"]):
        return ("reject", "freeze")
    if FACTS["open_critical_incidents"]:
        return ("reject", "incident")
    return ("needs_approval", env["approvals_required"], repo, sha, run_id, requester)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0, help="length of one round")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    body = PAYLOAD.read_bytes()
    signature = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    decision = handle(body, signature)
    assert decision[0] == "needs_approval" and decision[1] == 2, decision

    # Warm-up, then rounds of fixed duration; each round counts whole events.
    end = time.perf_counter() + 1.0
    while time.perf_counter() < end:
        handle(body, signature)
    rates = []
    cpu_rates = []
    for _ in range(args.rounds):
        n = 0
        cpu_start = time.process_time()
        start = time.perf_counter()
        deadline = start + args.seconds
        while True:
            for _ in range(100):
                handle(body, signature)
            n += 100
            now = time.perf_counter()
            if now >= deadline:
                break
        rates.append(n / (now - start))
        cpu_rates.append(n / (time.process_time() - cpu_start))
    median = statistics.median(rates)
    print(
        f"python {platform.python_version()} ({platform.python_implementation()}): "
        f"verify+parse+decide {len(body)} B deployment_protection_rule: "
        f"median {median:,.0f} events/s (min {min(rates):,.0f}, max {max(rates):,.0f}; "
        f"{args.rounds} rounds of {args.seconds}s) = {1e6 / median:.1f} us/event; "
        f"per CPU-second {statistics.median(cpu_rates):,.0f} events"
    )


if __name__ == "__main__":
    main()
