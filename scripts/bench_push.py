"""The push section of ``make bench``: zivsync-push against a zivsync-sandbox.

Zivver allows about 50 requests per 10 s, so a push's speed is the API's budget. Three runs:

1. 300 creates against the sandbox with its default limit (50 per 10 s) and push with its
   default pacing: the request rate must stay at ≥ 90 % of the budget (5 requests/s), with
   no change failing and at most a handful of 429s;
2. the same with the limit raised to 1,000 per 10 s and 20 ms added to every answer:
   changes per second when the API is not the bottleneck;
3. diff and push again with nothing to change: how many requests that sends (it must send
   no write at all).

Run by scripts/bench.py (``--push-only`` for this part alone); needs the zivsync-* scripts on
PATH (``make bench`` puts the project's virtual environment first).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import orjson
import requests

KEY = "bench-key-not-a-secret"
DOMAIN = "contoso.com"


def _stream(path: Path, kind: str, records: list[dict]) -> None:
    head = {"type": "header", "stream": kind, "version": 1, "producer": "zivsync-bench 0",
            "created": "2026-01-01T00:00:00Z"}
    lines = [head, *records, {"type": "end", "count": len(records)}]
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))


def _hires(count: int, offset: int = 0) -> list[dict]:
    return [{"type": "account", "kind": "user", "email": f"hire{n:05d}@{DOMAIN}", "name": f"Hire {n}",
             "active": True, "aliases": [], "delegates": [], "sso_key": f"sso-{n}", "phone": None,
             "anchors": [f"anchor-{n}"], "sources": ["bench"]} for n in range(offset, offset + count)]


class Sandbox:
    def __init__(self, *args: str):
        env = dict(os.environ, ZIVSYNC_ZIVVER_API_KEY=KEY)
        self.process = subprocess.Popen(["zivsync-sandbox", "--port", "0", "--claimed-domain", DOMAIN, *args],
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        self.url = self.process.stdout.readline().decode().strip()

    def stats(self) -> dict:
        return requests.get(self.url.split("/api/")[0] + "/_sandbox/stats",
                            headers={"Authorization": f"Bearer {KEY}"}, timeout=10).json()

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self.process.stdout.close()


def _run(work: Path, sandbox: Sandbox, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ZIVSYNC_ZIVVER_URL=sandbox.url, ZIVSYNC_ZIVVER_API_KEY=KEY)
    return subprocess.run(list(args), cwd=work, env=env, capture_output=True, text=True)


def _sync(work: Path, sandbox: Sandbox, name: str, desired: Path, *push_args: str) -> dict:
    """snapshot → diff → push --apply, the push timed; its figures."""
    _run(work, sandbox, "zivsync-snapshot", "-o", f"{name}-current.jsonl").check_returncode()
    diffed = _run(work, sandbox, "zivsync-diff", "-i", str(desired), "--current", f"{name}-current.jsonl",
                  "--claimed-domain", DOMAIN, "--state", "state", "-o", f"{name}-plan.jsonl")
    diffed.check_returncode()
    changes = sum(1 for line in (work / f"{name}-plan.jsonl").read_bytes().splitlines() if b'"type":"change"' in line)
    before = sandbox.stats()
    started = time.monotonic()
    pushed = _run(work, sandbox, "zivsync-push", "-i", f"{name}-plan.jsonl", "--apply", "--state", "state",
                  "-o", f"{name}-results.jsonl", *push_args)
    seconds = time.monotonic() - started
    after = sandbox.stats()
    results = [orjson.loads(line) for line in (work / f"{name}-results.jsonl").read_bytes().splitlines()]
    statuses: dict[str, int] = {}
    for result in results:
        if result.get("type") == "result":
            statuses[result["status"]] = statuses.get(result["status"], 0) + 1
    requests_sent = after["requests"] - before["requests"]
    return {
        "changes": changes, "exit": pushed.returncode, "seconds": round(seconds, 2),
        "requests": requests_sent, "writes": after["writes"] - before["writes"],
        "throttled": after["throttled"] - before["throttled"], "statuses": statuses,
        "requests_per_second": round(requests_sent / seconds, 2) if seconds else None,
        "changes_per_second": round(changes / seconds, 2) if seconds and changes else None,
    }


def run_push_bench(work: Path, creates: int = 300) -> tuple[dict, bool]:
    work.mkdir(parents=True, exist_ok=True)
    figures: dict = {}
    first = work / "push-desired.jsonl"
    _stream(first, "accounts", _hires(creates))

    sandbox = Sandbox()  # Zivver's default budget: 50 requests per 10 s
    try:
        paced = _sync(work / "", sandbox, "paced", first)
        again = _sync(work, sandbox, "again", first)
    finally:
        sandbox.close()
    budget = 50 / 10
    paced["share_of_budget"] = round(paced["requests_per_second"] / budget, 3)
    figures["paced"], figures["nothing_to_do"] = paced, again

    fast_desired = work / "push-desired-fast.jsonl"
    _stream(fast_desired, "accounts", _hires(creates))
    (work / "state" / "mapping.json").unlink(missing_ok=True)
    sandbox = Sandbox("--rate-limit", "1000", "--rate-window", "10", "--latency", "20")
    try:
        figures["fast"] = _sync(work, sandbox, "fast", fast_desired, "--rate-limit", "1000", "--rate-window", "10")
    finally:
        sandbox.close()

    ok = (paced["statuses"] == {"applied": creates} and paced["share_of_budget"] >= 0.9 and paced["throttled"] <= 5
          and again["changes"] == 0 and again["writes"] == 0 and figures["fast"]["statuses"] == {"applied": creates})
    return figures, ok


def print_push(figures: dict, ok: bool) -> None:
    paced, fast, again = figures["paced"], figures["fast"], figures["nothing_to_do"]
    print("\nzivsync push against zivsync-sandbox")
    print(f"  {paced['changes']} creates, limit 50 per 10 s: {paced['seconds']} s, {paced['requests']} requests, "
          f"{paced['requests_per_second']} requests/s = {paced['share_of_budget']:.0%} of the budget, "
          f"{paced['throttled']} answered 429, results {paced['statuses']}")
    print(f"  {fast['changes']} creates, limit 1,000 per 10 s, 20 ms latency: {fast['seconds']} s, "
          f"{fast['changes_per_second']} changes/s, {fast['requests']} requests, results {fast['statuses']}")
    print(f"  re-run with nothing to change: {again['changes']} changes, {again['requests']} requests sent, "
          f"{again['writes']} writes")
    print("  push targets (≥ 90 % of the budget, no failure, a handful of 429s at most, no write on a re-run): "
          + ("OK" if ok else "MISSED"))
