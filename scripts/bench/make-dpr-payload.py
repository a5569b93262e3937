#!/usr/bin/env python3
"""Writes the 30 KiB signed-delivery body shared by the Rust and Python verify+parse benchmarks.

Source: functions/github-webhook/tests/data/deployment_protection_rule.requested.payload.json
(octokit/webhooks.net, MIT; see that folder's README). The shape example is turned into a
delivery shipgate would gate: a real `deployment_callback_url` (the gate needs the run id in
it), `production` environment, `push` event, top-level `sha`/`ref` and an `installation`. It is
then serialised compactly, as GitHub sends it, and `deployment.description` is padded with prose
so the body is exactly 30 KiB: big deliveries are the ones that stress the parser.

Deterministic: running it twice gives the same bytes (checked by --check).

    python3 scripts/bench/make-dpr-payload.py           # (re)write the file
    python3 scripts/bench/make-dpr-payload.py --check   # fail if the file differs
"""
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
SOURCE = ROOT / "functions/github-webhook/tests/data/deployment_protection_rule.requested.payload.json"
OUT = ROOT / "scripts/bench/data/deployment_protection_rule.30k.json"
TARGET_BYTES = 30 * 1024
FILLER = (
    "Release notes: bump dependencies, tighten retry budgets on the payments client, "
    "roll out the new cache layer behind a flag, and remove the legacy v1 routes. "
)


def build() -> bytes:
    d = json.loads(SOURCE.read_text(encoding="utf-8"))
    sha = d["deployment"]["sha"]
    d["environment"] = "production"
    d["event"] = "push"
    d["sha"] = sha
    d["ref"] = "refs/heads/main"
    d["deployment_callback_url"] = (
        "https://api.github.com/repos/Codertocat/Hello-World/actions/runs/9384790213"
        "/deployment_protection_rule"
    )
    d["installation"] = {"id": 41732105, "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uNDE3MzIxMDU="}
    d["deployment"]["description"] = ""
    base = len(json.dumps(d, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    missing = TARGET_BYTES - base
    if missing < 0:
        raise SystemExit(f"source is already {base} bytes, over {TARGET_BYTES}")
    d["deployment"]["description"] = (FILLER * (missing // len(FILLER) + 1))[:missing]
    body = json.dumps(d, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    assert len(body) == TARGET_BYTES, len(body)
    return body


def main() -> None:
    body = build()
    if "--check" in sys.argv[1:]:
        if OUT.read_bytes() != body:
            raise SystemExit(f"{OUT} is out of date; rerun without --check")
        print(f"{OUT.relative_to(ROOT)} is up to date ({len(body)} bytes)")
        return
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_bytes(body)
    print(f"wrote {OUT.relative_to(ROOT)} ({len(body)} bytes)")


if __name__ == "__main__":
    main()
