"""The Exchange Online section of ``make bench``: zivsync-extract-exo against the loopback fake
of Entra ID and the Exchange admin API (tests/fake_microsoft.py) with 20 ms added to every
answer, on a tenant of 1,500 mailboxes of which 300 shared: requests sent and wall time, with
``$batch`` (the default) and without (``--no-batch``).

What the requests are: the mailbox and group listings (a page per 1,000), then one
Get-MailboxPermission per shared mailbox and one Get-DistributionGroupMember per group, and a
Get-Recipient per trustee the listings don't name; with batching ten of those go in one request.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

LATENCY = 0.020


def _extract(fake, work: Path, *args: str) -> tuple[float, int, str]:
    from bench import _invocation
    command = [*_invocation("extract-exo"), "--tenant", fake.tenant.tenant_id, "--client-id", fake.client_id,
               "--authority-host", fake.url, "--exchange-url", fake.exchange_url, "--ca-file", str(fake.ca_file),
               "-o", str(work / "exo.jsonl"), *args]
    env = dict(os.environ, ZIVSYNC_EXO_CLIENT_SECRET=fake.client_secret)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    return time.perf_counter() - start, done.returncode, done.stderr


def run_exo_bench(work: Path, mailboxes: int = 1500, shared: int = 300) -> tuple[dict, bool]:
    from fake_microsoft import FakeMicrosoft, Tenant
    work.mkdir(parents=True, exist_ok=True)
    tenant = Tenant.generate(mailboxes=mailboxes - shared, shared=shared, rooms=0, equipment=0, seed=11)
    figures = {"mailboxes": len(tenant.mailboxes), "shared": shared, "groups": len(tenant.groups),
               "latency_ms": LATENCY * 1000, "runs": {}}
    ok = True
    with FakeMicrosoft(work / "fake", tenant, latency=LATENCY) as fake:
        for name, args in (("batched", ()), ("unbatched", ("--no-batch",)),
                           ("batched, one at a time", ("--concurrency", "1")),
                           ("unbatched, one at a time", ("--no-batch", "--concurrency", "1"))):
            fake.reset_log()
            wall, code, stderr = _extract(fake, work, *args)
            counts = fake.counts()
            figures["runs"][name] = {
                "wall_s": round(wall, 2), "exit": code,
                "requests": sum(n for kind, n in counts.items() if kind in ("invoke", "batch", "graph")),
                "cmdlets": sum(fake.counts("cmdlet").values()), "token_requests": counts["token"]}
            ok = ok and code == 0
            if code:
                figures["runs"][name]["error"] = stderr[-1000:]
    return figures, ok


def print_exo(figures: dict, ok: bool) -> None:
    print()
    print(f"zivsync bench, Exchange Online: fake tenant of {figures['mailboxes']:,} mailboxes "
          f"({figures['shared']} shared), {figures['groups']} groups, {figures['latency_ms']:.0f} ms per answer")
    print(f"  {'run':28} {'wall':>7} {'requests':>9} {'cmdlets':>8} {'tokens':>7}")
    for name, run in figures["runs"].items():
        print(f"  {name:28} {run['wall_s']:6.2f}s {run['requests']:9d} {run['cmdlets']:8d} {run['token_requests']:7d}"
              + (f"  FAILED: {run.get('error', '')[:200]}" if run["exit"] else ""))
    if not ok:
        print("  EXO SECTION FAILED")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    folder = Path(tempfile.mkdtemp(prefix="zivsync-bench-exo-"))
    try:
        result, passed = run_exo_bench(folder)
        print_exo(result, passed)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
