"""The I/O section of ``make bench``: the nightly job at 100,000 people against zivsync-sandbox.

What an administrator of a large organisation runs, measured stage by stage (issue 18):

1. the sandbox started with the whole organisation (the offline section's desired stream as
   Zivver's accounts): seconds until it answers, and its memory;
2. ``zivsync-snapshot`` of all of it (the sandbox's rate limit lifted: this measures the
   listing, not Zivver's budget, which the push section measures): seconds, peak memory;
3. ``zivsync run --apply`` of a night with 1 % churn (renames, new aliases, leavers disabled,
   new hires: about 1,050 changes) read from a directory stream: each stage's seconds and peak
   memory from the run's summary, the run folder's size;
4. the same run again: the requests it sends (listing pages only, not a write);
5. ``zivsync report`` of that run folder rendered to HTML: seconds.

Run by scripts/bench.py after the offline stages (it reuses their directory.jsonl and
desired.jsonl); needs the zivsync-* scripts on PATH (``make bench`` puts the venv first).
"""

from __future__ import annotations

import gzip
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import orjson
import requests

KEY = "bench-io-key-not-a-secret"
LIFTED = ("--rate-limit", "100000", "--rate-window", "1")  # the client's pacing off: the sandbox's cost
CLAIMED = ("contoso.com", "contoso.nl")
CHURN = {"rename": 400, "alias": 200, "disable": 250, "hire": 200}  # about 1 % of 100,000 people
TARGET_PEAK_MB = 400.0


def churned_directory(directory: Path, target: Path, seed: int = 7) -> dict[str, int]:
    """The directory of the next night: the same records, some people renamed, given a new
    alias or disabled, and new hires (copies of existing people with new anchors and addresses)."""
    rng = random.Random(seed)
    lines = directory.read_bytes().splitlines()
    people = [i for i, line in enumerate(lines) if b'"type":"person"' in line and b'"mailbox":"user"' in line
              and b'"enabled":true' in line]
    chosen = rng.sample(people, sum(CHURN.values()))
    counts = dict.fromkeys(CHURN, 0)
    hires = []
    at = 0
    for how, number in CHURN.items():
        for index in chosen[at:at + number]:
            record = orjson.loads(lines[index])
            if how == "rename":
                record["display_name"] = record["display_name"] + " (renamed)"
            elif how == "alias":
                local, domain = record["mail"].split("@")
                record["addresses"] = [*record["addresses"], f"{local}.alias@{domain}"]
            elif how == "disable":
                record["enabled"] = False
            else:
                hire = dict(record, anchor=f"hire-{index}", sso_key=f"hire-{index}", sid=None,
                            mail=f"new.hire.{index}@contoso.com", upn=f"new.hire.{index}@contoso.com",
                            addresses=[f"new.hire.{index}@contoso.com"], dn=f"CN=New Hire {index},OU=Staff,DC=contoso,DC=com",
                            sam_account_name=f"nhire{index}", display_name=f"New Hire {index}")
                hires.append(orjson.dumps(hire))
                counts[how] += 1
                continue
            lines[index] = orjson.dumps(record)
            counts[how] += 1
        at += number
    head, *body, end = lines
    end_record = orjson.loads(end)
    end_record["count"] = end_record["count"] + len(hires)
    target.write_bytes(b"\n".join([head, *body, *hires, orjson.dumps(end_record)]) + b"\n")
    return counts


class Sandbox:
    def __init__(self, seed: Path):
        env = dict(os.environ, ZIVSYNC_ZIVVER_API_KEY=KEY)
        began = time.monotonic()
        self.process = subprocess.Popen(
            ["zivsync-sandbox", "--port", "0", "--seed", str(seed), "--rate-limit", "100000", "--rate-window", "1",
             *[arg for domain in CLAIMED for arg in ("--claimed-domain", domain)]],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        self.url = self.process.stdout.readline().decode().strip()
        self.start_seconds = time.monotonic() - began
        self.env = dict(os.environ, ZIVSYNC_ZIVVER_URL=self.url, ZIVSYNC_ZIVVER_API_KEY=KEY)

    def stats(self) -> dict:
        return requests.get(self.url.split("/api/")[0] + "/_sandbox/stats",
                            headers={"Authorization": f"Bearer {KEY}"}, timeout=30).json()

    def peak_mb(self) -> float | None:
        """The sandbox's largest resident size so far (Linux's VmHWM)."""
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return None

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.process.stdout.close()


def _config(work: Path, directory: Path) -> Path:
    config = work / "zivsync.toml"
    config.write_text(f"""claimed_domains = {orjson.dumps(list(CLAIMED)).decode()}
state_dir = "state"
# the pacing to Zivver's budget is measured by the push section: here, what the stages cost
rate_limit = 100000
rate_window = 1

[diff]
# a 100,000-person organisation sets its limits for its size: 1 % churn is 250 leavers, who
# were delegates of some 250 shared mailboxes
max_suspend = 1000
max_delegate_removals = 1000


[run]
directories = [{orjson.dumps(str(directory)).decode()}]
""", encoding="utf-8")
    return config


def _run(config: Path, sandbox: Sandbox) -> tuple[int, float, Path]:
    runs = config.parent / "runs"
    before = set(runs.glob("2*")) if runs.exists() else set()
    began = time.monotonic()
    done = subprocess.run(["zivsync", "run", "--config", str(config), "--apply", "-q"], env=sandbox.env,
                          capture_output=True, text=True)
    seconds = time.monotonic() - began
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
    (folder,) = set(runs.glob("2*")) - before  # runs/<UTC time>
    return done.returncode, seconds, folder


def _measure(command: list[str], env: dict, work: Path) -> tuple[int, float, float | None]:
    """Exit code, seconds and peak memory of one command, through bench.py's launcher: a child
    of this (large) process would report this process's size as its own peak (see bench.py)."""
    from bench import measure

    name = command[0].removeprefix("zivsync-") if command[0] != "zivsync" else command[1]
    stderr = work / f"{name}.stderr"
    done = measure(command, work, None, stderr, env={k: v for k, v in env.items() if k.startswith("ZIVSYNC_")})
    if done.exit_code:
        print(stderr.read_text(errors="replace")[-2000:], file=sys.stderr)
    return done.exit_code, done.wall_s or 0.0, done.peak_mb


def folder_bytes(folder: Path) -> tuple[int, int]:
    """(bytes on disk, bytes the same streams would take uncompressed)."""
    stored = plain = 0
    for path in folder.iterdir():
        size = path.stat().st_size
        stored += size
        plain += len(gzip.decompress(path.read_bytes())) if path.name.endswith(".gz") else size
    return stored, plain


def run_io_bench(work: Path, directory: Path, desired: Path) -> tuple[dict, bool]:
    work.mkdir(parents=True, exist_ok=True)
    figures: dict = {}
    churned = work / "directory-tonight.jsonl"
    figures["churn"] = churned_directory(directory, churned)
    sandbox = Sandbox(desired)
    try:
        figures["sandbox_start_s"] = round(sandbox.start_seconds, 2)
        accounts = sum(1 for line in desired.read_bytes().splitlines() if b'"type":"account"' in line)
        figures["accounts"] = accounts
        code, seconds, peak = _measure(["zivsync-snapshot", "-o", str(work / "snapshot.jsonl.gz"), *LIFTED],
                                       sandbox.env, work)
        figures["snapshot"] = {"exit": code, "seconds": round(seconds, 2), "peak_mb": round(peak, 1)}
        before = sandbox.stats()["requests"]
        code, seconds, _ = _measure(["zivsync-snapshot", "-o", str(work / "paced.jsonl.gz")], sandbox.env, work)
        figures["snapshot_paced"] = {"exit": code, "seconds": round(seconds, 2),
                                     "requests": sandbox.stats()["requests"] - before}

        config = _config(work, churned)
        before = sandbox.stats()
        code, seconds, folder = _run(config, sandbox)
        after = sandbox.stats()
        summary = orjson.loads((folder / "summary.json").read_bytes())
        stored, plain = folder_bytes(folder)
        figures["run"] = {
            "exit": code, "seconds": round(seconds, 2), "changes": summary.get("plan", {}).get("changes", {}),
            "results": summary.get("results"), "requests": after["requests"] - before["requests"],
            "writes": after["writes"] - before["writes"],
            "stages": [{k: s.get(k) for k in ("name", "seconds", "peak_mb", "records")} for s in summary["stages"]],
            "folder_mb": round(stored / 1e6, 1), "folder_uncompressed_mb": round(plain / 1e6, 1)}

        before = sandbox.stats()
        code, seconds, again = _run(config, sandbox)
        after = sandbox.stats()
        figures["second_run"] = {"exit": code, "seconds": round(seconds, 2),
                                 "requests": after["requests"] - before["requests"],
                                 "writes": after["writes"] - before["writes"]}
        figures["sandbox_peak_mb"] = sandbox.peak_mb()
    finally:
        sandbox.close()
    code, seconds, peak = _measure(["zivsync", "report", str(folder), "--html", str(work / "report.html")], {},
                                   work)
    figures["report"] = {"exit": code, "seconds": round(seconds, 2), "peak_mb": round(peak, 1),
                         "html_mb": round((work / "report.html").stat().st_size / 1e6, 2) if code == 0 else None}
    run = figures["run"]
    ok = (figures["snapshot"]["exit"] == 0 and figures["snapshot_paced"]["exit"] == 0 and run["exit"] == 0 and figures["second_run"]["exit"] == 0
          and figures["second_run"]["writes"] == 0 and figures["report"]["exit"] == 0
          and all((s["peak_mb"] or 0) <= TARGET_PEAK_MB for s in run["stages"])
          and figures["snapshot"]["peak_mb"] <= TARGET_PEAK_MB)
    return figures, ok


def print_io(figures: dict, ok: bool) -> None:
    run, again = figures["run"], figures["second_run"]
    print(f"\nthe nightly job against zivsync-sandbox holding {figures['accounts']:,} accounts")
    print(f"  sandbox start (seeded): {figures['sandbox_start_s']} s, its peak memory "
          f"{figures['sandbox_peak_mb'] or 0:.0f} MB (after both runs)")
    snap = figures["snapshot"]
    paced = figures["snapshot_paced"]
    print(f"  zivsync-snapshot, all accounts, pacing lifted: {snap['seconds']} s, peak {snap['peak_mb']:.0f} MB; "
          f"paced to Zivver's 50 per 10 s: {paced['seconds']} s for {paced['requests']} requests")
    changes = sum(run["changes"].values())
    print(f"  zivsync run --apply, 1 % churn {figures['churn']}: {changes:,} changes, results {run['results']}, "
          f"{run['seconds']} s, {run['requests']:,} requests ({run['writes']:,} writes)")
    print("    stage          seconds  peak MB  records")
    for stage in run["stages"]:
        print(f"    {stage['name']:<14} {stage['seconds']:>7.2f}  {stage['peak_mb'] or 0:>7.0f}  "
              f"{stage['records'] if stage['records'] is not None else '':>7}")
    print(f"    run folder: {run['folder_mb']} MB on disk ({run['folder_uncompressed_mb']} MB uncompressed)")
    print(f"  the same night again: {again['seconds']} s, {again['requests']} requests, {again['writes']} writes")
    report = figures["report"]
    print(f"  zivsync report --html of that run: {report['seconds']} s, peak {report['peak_mb']:.0f} MB, "
          f"{report['html_mb']} MB of HTML")
    print(f"  targets (every stage ≤ {TARGET_PEAK_MB:.0f} MB, no write on the second run): "
          + ("OK" if ok else "MISSED"))
