"""zivsync demo, the first hour on any system: the whole story runs from Python alone, with no
bash (nor any other shell) to be found, and leaves behind the streams and the report it names."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import executable, read_jsonl

from stages.cli import ZivsyncError
from stages.operator import demo


def test_the_demo_runs_without_bash(tmp_path):
    # PATH holds only the folder of the Python running us (the venv's bin or Scripts): no shell there
    bare_path = str(Path(sys.executable).parent)
    assert shutil.which("bash", path=bare_path) is None and shutil.which("sh", path=bare_path) is None
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ZIVSYNC_")}
    environment["PATH"] = bare_path
    out = tmp_path / "demo"

    done = subprocess.run(executable("zivsync") + ["demo", "--output", str(out)], check=False, cwd=tmp_path,
                          env=environment, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=120)
    said = done.stdout.decode("utf-8", "replace")

    assert done.returncode == 0, said
    assert "Traceback" not in said and "\033[" not in said  # no colour codes when not on a terminal
    for step in ("== 1. First sync", "== 2. Run again right away", "== 3. The next day",
                 "== 4a. A broken stream is refused", "== 4b. A truncated directory stream",
                 "== 4c. Active Directory alone", "== 5. The report of the last run", "== Done"):
        assert step in said
    assert "diff exit code 3 (3 = refused by a safety check); suspensions planned: 0" in said
    assert f"$ zivsync run --config {out / 'nightly.toml'} -q --apply" in said  # commands are shown first

    # the streams and the report the demo says it makes
    for run in ("run1", "run2"):
        for stream in ("directory-ldap", "current", "desired", "plan"):
            assert (out / run / f"{stream}.jsonl").is_file()
    assert (out / "run1" / "results.jsonl").is_file() and (out / "report.html").is_file()
    assert not [r for r in read_jsonl(out / "run2" / "plan.jsonl") if r["type"] == "change"]  # nothing left
    # the second night planned and applied the day's changes, as one zivsync run
    last = max((out / "runs").glob("2*"))
    planned = {(r["op"], r["email"]) for r in read_jsonl(last / "plan.jsonl.gz") if r["type"] == "change"}
    assert {("suspend_user", "l.meijer@fabrikam.example"), ("create_user", "i.verbeek@fabrikam.example"),
            ("update_functional", "info@fabrikam.example"), ("update_user", "chloe.dubois@fabrikam.example")} <= planned
    applied = [r for r in read_jsonl(last / "results.jsonl") if r.get("status") == "applied"]
    assert len(applied) == len(planned)

    # the sandbox was stopped at the end
    pid = int(re.search(r"Zivver sandbox at \S+ \(pid (\d+)\)", said)[1])
    if os.name == "posix":
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_the_sandbox_stops_when_a_step_fails(tmp_path):
    examples = demo.examples_folder()
    out = tmp_path / "demo"
    out.mkdir()
    session = demo.Demo(out, examples, demo.stage_environment(examples / "zivsync.toml"))
    with pytest.raises(ZivsyncError, match="ended with exit code"), demo.sandbox(session) as process:
        session.stage("validate", examples / "directory-ldap-broken.jsonl")
    assert process.poll() is not None


def test_a_folder_that_is_not_an_earlier_demo_is_not_emptied(tmp_path):
    (tmp_path / "yours.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(ZivsyncError, match="not an earlier demo"):
        demo.prepare_output(tmp_path)
    assert (tmp_path / "yours.txt").read_text(encoding="utf-8") == "keep me"
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "sandbox.url").write_text("http://127.0.0.1:1/api/scim/v2\n", encoding="utf-8")
    demo.prepare_output(earlier)
    assert list(earlier.iterdir()) == []


def test_without_the_examples_folder_the_demo_says_where_to_get_it(tmp_path):
    with pytest.raises(ZivsyncError, match="examples/ folder of a zivsync checkout"):
        demo.examples_folder(tmp_path / "examples")
