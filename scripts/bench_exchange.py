"""The Exchange on-premise section of ``make bench``: zivsync-extract-exchange against the
loopback fake of Exchange's remote PowerShell (tests/fake_exchange.py: WSMan + PSRP over HTTPS,
Basic sign-in) with 10 ms added to every answer, on 500 user mailboxes and 60 shared ones: the
cmdlets, HTTP round trips and wall time, with pipelines one at a time and four at a time."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

LATENCY = 0.010


def run_exchange_bench(work: Path, mailboxes: int = 500, shared: int = 60) -> tuple[dict, bool]:
    from bench import _invocation
    from fake_exchange import FakeExchange, Organization
    work.mkdir(parents=True, exist_ok=True)
    organization = Organization.generate(mailboxes=mailboxes, shared=shared, seed=11)
    figures = {"mailboxes": len(organization.mailboxes), "shared": shared, "groups": len(organization.groups),
               "latency_ms": LATENCY * 1000, "runs": {}}
    ok = True
    with FakeExchange(work / "fake", organization, latency=LATENCY) as fake:
        for name, concurrency in (("4 pipelines at a time", "4"), ("1 pipeline at a time", "1")):
            command = [*_invocation("extract-exchange"), "--url", fake.url, "--auth", "basic", "--username",
                       fake.username, "--ca-file", str(fake.ca_file), "--concurrency", concurrency,
                       "-o", str(work / "exchange.jsonl")]
            fake.reset_log()
            start = time.perf_counter()
            done = subprocess.run(command, env=dict(os.environ, ZIVSYNC_EXCHANGE_PASSWORD=fake.password),
                                  capture_output=True, text=True)
            wall = time.perf_counter() - start
            summary = re.search(r"(\d+) cmdlets in (\d+) round trips", done.stderr)
            figures["runs"][name] = {"wall_s": round(wall, 2), "exit": done.returncode,
                                     "cmdlets": int(summary[1]) if summary else None,
                                     "round_trips": int(summary[2]) if summary else None,
                                     "server_requests": fake.round_trips}
            ok = ok and done.returncode == 0
            if done.returncode:
                figures["runs"][name]["error"] = done.stderr[-1000:]
    return figures, ok


def print_exchange(figures: dict, ok: bool) -> None:
    print()
    print(f"zivsync bench, Exchange on-premise: fake endpoint with {figures['mailboxes']:,} mailboxes "
          f"({figures['shared']} shared), {figures['groups']} groups, {figures['latency_ms']:.0f} ms per answer")
    print(f"  {'run':24} {'wall':>7} {'cmdlets':>8} {'round trips':>12}")
    for name, run in figures["runs"].items():
        print(f"  {name:24} {run['wall_s']:6.2f}s {run['cmdlets'] or 0:8d} {run['round_trips'] or 0:12d}"
              + (f"  FAILED: {run.get('error', '')[:200]}" if run["exit"] else ""))
    if not ok:
        print("  EXCHANGE SECTION FAILED")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    folder = Path(tempfile.mkdtemp(prefix="zivsync-bench-exchange-"))
    try:
        result, passed = run_exchange_bench(folder)
        print_exchange(result, passed)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
