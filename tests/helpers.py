"""Shared test helpers: build streams, run the real executables as processes.

Imported by the test modules as ``from helpers import ...`` (pytest puts tests/ on the path)."""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import orjson

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
FIXED_EPOCH = "1767225600"  # 2026-01-01T00:00:00Z, via SOURCE_DATE_EPOCH


def header(stream: str, **extra) -> dict:
    return {"type": "header", "stream": stream, "version": 1, "producer": "tests 0",
            "created": "2026-01-01T00:00:00Z", **extra}


def segment(stream: str, records: list[dict], *, end: bool = True, count: int | None = None, **extra) -> list[dict]:
    lines = [header(stream, **extra), *records]
    if end:
        lines.append({"type": "end", "count": len(records) if count is None else count})
    return lines


def jsonl(lines: list[dict]) -> bytes:
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


def write_stream(path: Path, stream: str, records: list[dict], **kwargs) -> Path:
    path.write_bytes(jsonl(segment(stream, records, **kwargs)))
    return path


def read_jsonl(data: bytes | Path) -> list[dict]:
    raw = data.read_bytes() if isinstance(data, Path) else data
    if raw[:2] == b"\x1f\x8b":  # a run folder's streams are gzip-compressed
        raw = gzip.decompress(raw)
    return [orjson.loads(line) for line in raw.splitlines() if line.strip()]


def person(anchor: str, mail: str | None, *, source: str = "ldap", addresses: list[str] | None = None,
           enabled: bool | None = True, mailbox: str = "user", **extra) -> dict:
    record = {"type": "person", "source": source, "anchor": anchor, "mail": mail,
              "addresses": addresses if addresses is not None else ([mail] if mail else []),
              "enabled": enabled, "mailbox": mailbox}
    record.update(extra)
    return record


def group(gid: str, members: list[str], *, source: str = "ldap", name: str | None = None,
          mail: str | None = None, **extra) -> dict:
    record = {"type": "group", "source": source, "id": gid, "name": name or gid, "mail": mail,
              "addresses": [mail] if mail else [], "mail_enabled": bool(mail), "security_enabled": True,
              "members": members}
    record.update(extra)
    return record


def permission(mailbox: str, trustee: str, *, rights=("FullAccess",), inherited=False, deny=False,
               source: str = "ldap") -> dict:
    return {"type": "permission", "source": source, "mailbox": mailbox, "trustee": trustee,
            "rights": list(rights), "inherited": inherited, "deny": deny}


def account(email: str, *, kind: str = "user", name: str | None = None, active: bool = True,
            aliases=(), delegates=(), zivver_id: str | None = None, **extra) -> dict:
    record = {"type": "account", "kind": kind, "email": email, "name": name or email.split("@")[0],
              "active": active, "aliases": sorted(aliases), "delegates": sorted(delegates)}
    if zivver_id is not None:
        record["zivver_id"] = zivver_id
    record.update(extra)
    return record


@dataclass
class Ran:
    returncode: int
    stdout: bytes
    stderr: str

    @property
    def records(self) -> list[dict]:
        return read_jsonl(self.stdout)


@contextlib.contextmanager
def ended(process: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """The process, killed by its pid on the way out if it is still running, also when the
    block fails (a test that signals a process and waits for it must never leave it behind)."""
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def executable(name: str) -> list[str]:
    """The installed console script next to this Python, else the module."""
    script = Path(sys.executable).parent / name
    if script.exists():
        return [str(script)]
    found = shutil.which(name)
    if found:
        return [found]
    command = [] if name == "zivsync" else [name.removeprefix("zivsync-")]
    return [sys.executable, "-m", "stages", *command]


def run(name: str, *args: str | Path, input: bytes | None = None, env: dict | None = None,
        cwd: Path | None = None, timeout: float = 120) -> Ran:
    """Run a zivsync executable as its own process, as an administrator would."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ZIVSYNC_")}
    environment["SOURCE_DATE_EPOCH"] = FIXED_EPOCH
    environment.update(env or {})
    done = subprocess.run(
        executable(name) + [str(a) for a in args], input=input if input is not None else b"",
        capture_output=True, env=environment, cwd=cwd, timeout=timeout)
    return Ran(done.returncode, done.stdout, done.stderr.decode("utf-8", "replace"))


# -- a zivsync-sandbox for a test: started as its own process, stopped by its pid ----------------

API_KEY = "Z1.1.2.sandbox-test-key-never-printed-7f3a9c"


# The domains Fabrikam's Zivver organisation claims: zivsync manages the first two (the sample
# config's claimed_domains); fabrikam-legacy.org, the pre-merger domain, still holds an account
# (examples/current.jsonl) that zivsync must leave alone.
FABRIKAM_ZIVVER = ("fabrikam.example", "fabrikam.nl", "fabrikam-legacy.org")


class Sandbox:
    """``with Sandbox(...) as sandbox:`` a zivsync-sandbox on a free loopback port."""

    def __init__(self, *args: str | Path, claimed=(*FABRIKAM_ZIVVER, "example.com")):
        self.args = [str(a) for a in args]
        for domain in claimed:
            self.args += ["--claimed-domain", domain]
        self.process: subprocess.Popen | None = None
        self.url = ""

    def __enter__(self) -> "Sandbox":
        environment = dict(os.environ, ZIVSYNC_ZIVVER_API_KEY=API_KEY)
        self.process = subprocess.Popen(executable("zivsync-sandbox") + ["--port", "0", *self.args],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment)
        self.url = self.process.stdout.readline().decode().strip()
        if not self.url.startswith(("http://127.0.0.1:", "https://127.0.0.1:")):
            self.__exit__(None, None, None)
            raise RuntimeError(f"zivsync-sandbox did not start: {self.url!r} {self.process.stderr.read()!r}")
        return self

    def __exit__(self, *exc) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.output = b""
        if self.process:
            self.output = self.process.stdout.read() + self.process.stderr.read()
            self.process.stdout.close()
            self.process.stderr.close()

    @property
    def env(self) -> dict:
        """What a client stage needs to talk to this sandbox."""
        return {"ZIVSYNC_ZIVVER_URL": self.url, "ZIVSYNC_ZIVVER_API_KEY": API_KEY}

    def control(self, method: str, path: str) -> dict:
        import requests

        base = self.url.split("/api/")[0]
        answer = requests.request(method, base + path, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10)
        answer.raise_for_status()
        return answer.json() if answer.content else {}

    def scim(self, method: str, path: str, body=None, **headers) -> "object":
        import requests

        return requests.request(method, self.url + path, json=body, timeout=10,
                                headers={"Authorization": f"Bearer {API_KEY}", **headers})


def sync_into_sandbox(directory: list[Path], claimed: tuple[str, ...], folder: Path, *,
                      seed: Path | None = None, normalize_args: tuple = (), diff_args: tuple = (),
                      zivver_claims: tuple[str, ...] | None = None) -> dict[str, dict]:
    """The nightly job after the extractors, each stage as its own process: normalize the
    directory streams, snapshot a fresh sandbox (seeded with ``seed``), diff, push --apply, and
    snapshot again; returns the accounts Zivver ends up with, by address. Every stage must
    succeed and none may print the API key."""
    domains = [arg for domain in claimed for arg in ("--claimed-domain", domain)]
    inputs = [arg for path in directory for arg in ("-i", path)]
    with Sandbox("--rate-limit", "1000", *(("--seed", seed) if seed else ()),
                 claimed=zivver_claims or claimed) as sandbox:
        for name, args in [
            ("zivsync-normalize", [*inputs, *domains, *normalize_args, "-o", folder / "desired.jsonl"]),
            ("zivsync-snapshot", ["-o", folder / "current.jsonl"]),
            ("zivsync-diff", ["-i", folder / "desired.jsonl", *domains, "--current", folder / "current.jsonl",
                              "--state", folder / "state", "-o", folder / "plan.jsonl", *diff_args]),
            ("zivsync-push", ["-i", folder / "plan.jsonl", "--apply", "--state", folder / "state",
                              "--rate-limit", "1000", "-o", folder / "results.jsonl"]),
            ("zivsync-snapshot", ["-o", folder / "after.jsonl"]),
        ]:
            done = run(name, *args, env=sandbox.env)
            assert done.returncode == 0, f"{name}: {done.stderr}"
            assert API_KEY not in done.stderr and API_KEY.encode() not in done.stdout
    return {r["email"]: r for r in read_jsonl(folder / "after.jsonl") if r["type"] == "account"}
