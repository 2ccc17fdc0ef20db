"""The Zivver side end to end: snapshot → diff → push against a real zivsync-sandbox process.

Every stage runs as its own process, as an administrator runs them; the sandbox is stopped by
its pid when the test ends, whatever happens.
"""

from __future__ import annotations

import signal
import subprocess
import time
import zlib
from pathlib import Path

import orjson
import pytest
from helpers import API_KEY, EXAMPLES, Sandbox, executable, jsonl, read_jsonl, run, write_stream

from stages.cli import ExitStatus

CONFIG = EXAMPLES / "zivsync.toml"
DIRECTORY = [EXAMPLES / "directory-ldap.jsonl", EXAMPLES / "directory-exchange.jsonl"]


class Sync:
    """The nightly job, one stage at a time, in a folder of its own."""

    def __init__(self, sandbox: Sandbox, folder: Path, directory=DIRECTORY):
        self.sandbox, self.folder, self.directory = sandbox, folder, directory
        self.state = folder / "state"
        self.runs = 0

    def stage(self, name: str, *args, expect=(0,), **kwargs):
        done = run(name, "--config", CONFIG, *args, env=self.sandbox.env, **kwargs)
        assert done.returncode in expect, f"{name} exited {done.returncode}:\n{done.stderr}"
        assert API_KEY not in done.stderr and API_KEY.encode() not in done.stdout
        return done

    def plan(self, *diff_args, expect=(0,)) -> Path:
        self.runs += 1
        run_dir = self.folder / f"run{self.runs}"
        run_dir.mkdir()
        self.stage("zivsync-snapshot", "-o", run_dir / "current.jsonl")
        inputs = [arg for path in self.directory for arg in ("-i", path)]
        self.stage("zivsync-normalize", *inputs, "-o", run_dir / "desired.jsonl")
        self.stage("zivsync-diff", "-i", run_dir / "desired.jsonl", "--current", run_dir / "current.jsonl",
                   "--state", self.state, "-o", run_dir / "plan.jsonl", *diff_args, expect=expect)
        return run_dir / "plan.jsonl"

    def push(self, plan: Path, *args, expect=(0,)):
        results = plan.with_name("results.jsonl")
        done = self.stage("zivsync-push", "-i", plan, "--apply", "--state", self.state, "-o", results, *args,
                          expect=expect)
        return done, read_jsonl(results)


def changes(plan: Path) -> list[dict]:
    return [r for r in read_jsonl(plan) if r["type"] == "change"]


@pytest.fixture
def seeded(tmp_path):
    with Sandbox("--seed", EXAMPLES / "current.jsonl", "--rate-limit", "1000", "--rate-window", "1") as sandbox:
        yield sandbox, Sync(sandbox, tmp_path)


def test_check_apply_check_leaves_nothing_to_do(seeded):
    sandbox, sync = seeded
    plan = sync.plan()
    planned = changes(plan)
    assert {c["op"] for c in planned} >= {"create_user", "update_user", "suspend_user", "create_functional",
                                          "update_functional", "empty_functional", "reactivate_user"}
    done, results = sync.push(plan, "--rate-limit", "1000", "--rate-window", "1")
    assert [r["change_id"] for r in results[1:-1]] == [c["id"] for c in planned]
    assert {r["status"] for r in results[1:-1]} == {"applied"}, [r for r in results if r.get("status") != "applied"]
    assert results[-1] == {"type": "end", "count": len(planned)}

    again = sync.plan()
    assert changes(again) == [], changes(again)
    mapping = orjson.loads((sync.state / "mapping.json").read_bytes())
    assert any("ad000000-0000-4000-a000-000000000014" in e["anchors"] for e in mapping["accounts"])


def test_the_sso_key_is_written_and_kept_on_later_updates(seeded):
    sandbox, sync = seeded
    sync.push(sync.plan(), "--rate-limit", "1000", "--rate-window", "1")
    stored = sandbox.control("GET", "/_sandbox/state")
    keys = {u["userName"]: u.get("SsoAccountKey") for u in _users(stored)}
    assert keys["n.kowalski@fabrikam.example"] == "ad000000-0000-4000-a000-000000000014"  # created
    assert keys["jw.jansen@fabrikam.example"]  # updated: a PUT without the key would have erased it


def test_tampering_in_zivver_is_repaired_by_the_next_run(seeded):
    sandbox, sync = seeded
    sync.push(sync.plan(), "--rate-limit", "1000", "--rate-window", "1")
    user = sandbox.scim("GET", "/Users").json()["Resources"][0]
    tampered = dict(user, name={"formatted": "Somebody Else"}, active=not user["active"])
    assert sandbox.scim("PUT", f"/Users/{user['id']}", tampered).status_code == 200
    plan = sync.plan()
    (repair,) = [c for c in changes(plan) if c["zivver_id"] == user["id"]]
    assert repair["before"]["name"] == "Somebody Else"
    sync.push(plan)
    assert changes(sync.plan()) == []


def test_dry_run_sends_nothing(seeded):
    sandbox, sync = seeded
    plan = sync.plan()
    sandbox.control("POST", "/_sandbox/stats/reset")
    done = sync.stage("zivsync-push", "-i", plan)
    assert "dry run" in done.stderr and done.stdout == b""
    assert sandbox.control("GET", "/_sandbox/stats")["requests"] == 0


def test_hand_edited_invalid_plan_is_refused_before_any_request(seeded, tmp_path):
    sandbox, sync = seeded
    plan = sync.plan()
    lines = plan.read_bytes().splitlines(keepends=True)
    broken = tmp_path / "edited.jsonl"
    broken.write_bytes(b"".join(lines[:2]) + lines[2].replace(b'"op":"', b'"op":"make_', 1) + b"".join(lines[3:]))
    sandbox.control("POST", "/_sandbox/stats/reset")
    done = sync.stage("zivsync-push", "-i", broken, "--apply", expect=(1,))
    assert f"{broken}:3: change record: field 'op'" in done.stderr
    assert sandbox.control("GET", "/_sandbox/stats")["requests"] == 0


@pytest.mark.parametrize("edit, reason", [
    (lambda h: h["safety"].update(passed=False, reasons=["too many"]), "failed its safety checks"),
    (lambda h: h.update(desired_complete=False), "incomplete desired stream"),
])
def test_unsafe_plan_is_refused_with_exit_3(seeded, tmp_path, edit, reason):
    sandbox, sync = seeded
    records = read_jsonl(sync.plan())
    edit(records[0])
    unsafe = tmp_path / "unsafe.jsonl"
    unsafe.write_bytes(jsonl(records))
    sandbox.control("POST", "/_sandbox/stats/reset")
    done = sync.stage("zivsync-push", "-i", unsafe, "--apply", expect=(ExitStatus.REFUSED,))
    assert reason in done.stderr
    assert sandbox.control("GET", "/_sandbox/stats")["requests"] == 0


def test_wrong_api_key_ends_with_exit_4_and_a_clear_message(seeded, tmp_path):
    sandbox, sync = seeded
    done = run("zivsync-snapshot", env={**sandbox.env, "ZIVSYNC_ZIVVER_API_KEY": "Z1.wrong"})
    assert done.returncode == ExitStatus.UNREACHABLE
    assert "HTTP 401" in done.stderr and "API key was refused" in done.stderr and "Z1.wrong" not in done.stderr


def test_unreachable_zivver_ends_with_exit_4(tmp_path):
    done = run("zivsync-snapshot", "--timeout", "2",
               env={"ZIVSYNC_ZIVVER_URL": "http://127.0.0.1:9/api/scim/v2", "ZIVSYNC_ZIVVER_API_KEY": API_KEY})
    assert done.returncode == ExitStatus.UNREACHABLE and "connection refused" in done.stderr  # in words (issue 14)


def test_api_key_from_a_file_and_never_in_any_output(seeded, tmp_path):
    sandbox, sync = seeded
    key_file = tmp_path / "key.txt"
    key_file.write_text(API_KEY + "\n")
    env = {"ZIVSYNC_ZIVVER_URL": sandbox.url}
    done = run("zivsync-snapshot", "--zivver-api-key-file", key_file, "-v", env=env)
    assert done.returncode == 0 and b'"type":"account"' in done.stdout
    plan = sync.plan()
    pushed = run("zivsync-push", "-i", plan, "--apply", "-v", "--zivver-api-key-file", key_file,
                 "--state", tmp_path / "state", "--rate-limit", "1000", "--rate-window", "1", env=env)
    everything = done.stdout + done.stderr.encode() + pushed.stdout + pushed.stderr.encode()
    for path in tmp_path.rglob("*"):
        if path.is_file() and path != key_file:
            everything += path.read_bytes()
    assert pushed.returncode == 0, pushed.stderr
    assert API_KEY.encode() not in everything and b"Bearer" not in everything


# -- interrupted and faulty runs -------------------------------------------------------------------


def new_hires(n: int) -> list[dict]:
    from helpers import person

    return [person(f"{i:08d}-0000-4000-a000-000000000000", f"hire{i:03d}@fabrikam.example", display_name=f"Hire {i}")
            for i in range(n)]


def hires_sync(sandbox: Sandbox, folder: Path, n: int) -> Sync:
    directory = write_stream(folder / "hires.jsonl", "directory", new_hires(n))
    return Sync(sandbox, folder, [directory])


@pytest.mark.parametrize("name", ["killed.jsonl", "killed.jsonl.gz"])
def test_push_killed_half_way_and_resumed_applies_everything_once(tmp_path, name):
    """Plain or gzip (issue 18: each result is flushed through the compressor as it is written)."""
    with Sandbox("--latency", "40", "--rate-limit", "1000", "--rate-window", "1") as sandbox:
        sync = hires_sync(sandbox, tmp_path, 40)
        plan = sync.plan()
        assert len(changes(plan)) == 40
        results = tmp_path / name
        pushing = subprocess.Popen(
            executable("zivsync-push") + ["-i", str(plan), "--apply", "--state", str(sync.state), "-o", str(results),
                                          "--rate-limit", "1000", "--rate-window", "1"],
            env={**_environment(), **sandbox.env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while written(results).count(b'"type":"result"') < 10 if results.exists() else True:
                assert time.monotonic() < deadline and pushing.poll() is None
                time.sleep(0.02)
            pushing.send_signal(signal.SIGKILL)  # not a polite exception: the process just ends
        finally:
            pushing.wait()
        first = read_jsonl_lenient(results)
        assert 10 <= len(first) < 40 and first[-1]["type"] == "result"  # no end record: it was killed

        resumed = tmp_path / "resumed.jsonl"
        sync.stage("zivsync-push", "-i", plan, "--apply", "--state", sync.state, "--resume", results,
                   "-o", resumed, "--rate-limit", "1000", "--rate-window", "1")
        second = read_jsonl(resumed)[1:-1]
        assert len(second) == 40 and {r["status"] for r in second} <= {"applied", "skipped"}
        skipped = {r["change_id"] for r in second if r["status"] == "skipped"}
        assert skipped == {r["change_id"] for r in first if r["status"] == "applied"}
        stats = sandbox.control("GET", "/_sandbox/stats")
        assert stats["by_method"].get("POST", 0) == 40  # each account created once, however it went
        users = sandbox.scim("GET", "/Users").json()
        assert sorted(u["userName"] for u in users["Resources"]) == [f"hire{i:03d}@fabrikam.example" for i in range(40)]
        assert changes(sync.plan()) == []


@pytest.mark.parametrize("faults", [
    ("--fail-rate", "0.25"),
    ("--drop-rate", "0.2"),
    ("--drop-after-write-rate", "0.3"),
    ("--rate-limit", "5", "--rate-window", "1"),
])
def test_push_under_faults_loses_and_duplicates_nothing(tmp_path, faults):
    with Sandbox("--fault-seed", "7", "--latency", "5", *faults) as sandbox:
        sync = hires_sync(sandbox, tmp_path, 25)
        plan = sync.plan()  # snapshot's reads are retried on their own; the faults are for push
        planned = changes(plan)
        assert len(planned) == 25
        done, results = sync.push(plan, expect=(0, 2))
        outcome = results[1:-1]
        assert [r["change_id"] for r in outcome] == [c["id"] for c in planned]  # one result each, none lost
        assert {r["status"] for r in outcome} <= {"applied", "failed"}
        names = [u["userName"] for u in _users(sandbox.control("GET", "/_sandbox/state"))]
        assert len(names) == len(set(names))  # nobody created twice
        applied = {r["email"] for r in outcome if r["status"] == "applied"}
        assert applied <= set(names)
        stats = sandbox.control("GET", "/_sandbox/stats")
        if "--rate-limit" in faults:
            assert stats["throttled"] > 0 and applied == {c["email"] for c in planned}
        else:
            assert stats["faults"] > 0
        if "--drop-after-write-rate" in faults:  # every create happened; the client looked before retrying
            assert applied == {c["email"] for c in planned} and stats["by_method"]["POST"] == len(planned)


def _users(state: dict) -> list[dict]:
    users = state.get("users") or state.get("Users") or []
    return list(users.values()) if isinstance(users, dict) else users


def _environment() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("ZIVSYNC_")}


def written(path: Path) -> bytes:
    """What a results file holds so far, decompressed when it is gzip (without its end: a push
    still writing, or killed, has not written the gzip trailer)."""
    data = path.read_bytes()
    return zlib.decompressobj(wbits=31).decompress(data) if data[:2] == b"\x1f\x8b" else data


def read_jsonl_lenient(path: Path) -> list[dict]:
    """The records of a results file a killed push left: header skipped, a cut last line ignored."""
    records = []
    for line in written(path).splitlines():
        try:
            records.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            pass
    return [r for r in records if r["type"] == "result"]


def test_resuming_from_the_results_of_another_plan_is_refused(seeded):
    sandbox, sync = seeded
    first = sync.plan()
    sync.push(first, "--rate-limit", "1000", "--rate-window", "1")
    user = sandbox.scim("GET", "/Users").json()["Resources"][0]
    assert sandbox.scim("PUT", f"/Users/{user['id']}", dict(user, name={"formatted": "Tampered"})).status_code == 200
    second = sync.plan()
    done = sync.stage("zivsync-push", "-i", second, "--apply", "--state", sync.state, "--resume",
                      first.with_name("results.jsonl"), "-o", second.with_name("results.jsonl"), expect=(1,))
    assert done.returncode == 1 and "records the push of another plan" in done.stderr
    assert not second.with_name("results.jsonl").exists()
    assert sandbox.scim("GET", f"/Users/{user['id']}").json()["name"]["formatted"] == "Tampered"  # nothing sent
