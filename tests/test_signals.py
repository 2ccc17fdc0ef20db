"""Issue 14: Ctrl-C and SIGTERM end every executable with 130 and 143, and a last line saying what
was done; exit 1 ("nothing was written") is never used once something was written. Real processes,
real signals, a zivsync-sandbox slowed down so that the push is caught half-way."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from helpers import EXAMPLES, FABRIKAM_ZIVVER, Sandbox, ended, executable, read_jsonl, run

CLAIMED = ("fabrikam.example", "fabrikam.nl")
DOMAINS = [arg for domain in CLAIMED for arg in ("--claimed-domain", domain)]


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_push_stopped_half_way_says_how_far_it_got(tmp_path, signum, code):
    with Sandbox("--rate-limit", "0", "--latency", "250", "--seed", EXAMPLES / "current.jsonl",
                 claimed=FABRIKAM_ZIVVER) as sandbox:
        for name, args in [
            ("zivsync-normalize", ["-i", EXAMPLES / "directory-ldap.jsonl", "-i", EXAMPLES / "directory-exchange.jsonl",
                                   *DOMAINS, "-o", tmp_path / "desired.jsonl"]),
            ("zivsync-snapshot", ["-o", tmp_path / "current.jsonl"]),
            ("zivsync-diff", ["-i", tmp_path / "desired.jsonl", "--current", tmp_path / "current.jsonl", *DOMAINS,
                              "--state", tmp_path / "state", "-o", tmp_path / "plan.jsonl"])]:
            done = run(name, *args, env=sandbox.env)
            assert done.returncode == 0, done.stderr
        planned = sum(r["type"] == "change" for r in read_jsonl(tmp_path / "plan.jsonl"))
        results = tmp_path / "results.jsonl"
        environment = {k: v for k, v in os.environ.items() if not k.startswith("ZIVSYNC_")} | sandbox.env
        with ended(subprocess.Popen(executable("zivsync-push") + [
                "-i", str(tmp_path / "plan.jsonl"), "--apply", "--state", str(tmp_path / "state"), "--rate-limit",
                "1000", "-o", str(results)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment)) as push:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and (not results.exists() or results.read_bytes().count(b"\n") < 3):
                time.sleep(0.05)
            push.send_signal(signum)
            _, stderr = push.communicate(timeout=60)
    stderr = stderr.decode()
    written = [r for r in read_jsonl(results) if r["type"] == "result"]
    applied = sum(r["status"] == "applied" for r in written)
    assert push.returncode == code, stderr
    assert 2 <= len(written) < planned and applied >= 1
    last = stderr.strip().splitlines()[-1]
    assert f"after {len(written)} of {planned} changes; {applied} applied" in last, last
    assert f"zivsync-push --resume {results} finishes the plan" in last
    assert "aborted" not in stderr and "Traceback" not in stderr
    if signum == signal.SIGINT:  # the unfinished results are an audit record: never overwritten unasked
        again = run("zivsync-push", "-i", tmp_path / "plan.jsonl", "--apply", "--state", tmp_path / "state",
                    "-o", results, env={"ZIVSYNC_ZIVVER_URL": "http://127.0.0.1:9/api/scim/v2",
                                        "ZIVSYNC_ZIVVER_API_KEY": "k"})
        assert again.returncode == 1 and "holds the results of an unfinished push of this plan" in again.stderr
        assert f"--resume {results} -o NEW.jsonl" in again.stderr and "--force" in again.stderr
        assert sum(r["type"] == "result" for r in read_jsonl(results)) == len(written)


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_every_executable_exits_128_plus_the_signal(signum, code):
    """A stage waiting for its input (no pipe ever closes): the signal ends it, never with exit 1."""
    with ended(subprocess.Popen(executable("zivsync-validate") + ["-"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)) as stage:
        time.sleep(1.0)  # started and reading
        stage.send_signal(signum)
        _, stderr = stage.communicate(timeout=30)
    assert stage.returncode == code, stderr
    assert b"Traceback" not in stderr


def test_results_carry_the_http_status_of_the_request_that_applied_them(tmp_path):
    with Sandbox("--rate-limit", "0", "--seed", EXAMPLES / "current.jsonl", claimed=FABRIKAM_ZIVVER) as sandbox:
        for name, args in [
            ("zivsync-normalize", ["-i", EXAMPLES / "directory-ldap.jsonl", "-i", EXAMPLES / "directory-exchange.jsonl",
                                   *DOMAINS, "-o", tmp_path / "desired.jsonl"]),
            ("zivsync-snapshot", ["-o", tmp_path / "current.jsonl"]),
            ("zivsync-diff", ["-i", tmp_path / "desired.jsonl", "--current", tmp_path / "current.jsonl", *DOMAINS,
                              "--state", tmp_path / "state", "-o", tmp_path / "plan.jsonl"]),
            ("zivsync-push", ["-i", tmp_path / "plan.jsonl", "--apply", "--state", tmp_path / "state",
                              "--rate-limit", "1000", "-o", tmp_path / "results.jsonl"])]:
            done = run(name, *args, env=sandbox.env)
            assert done.returncode == 0, done.stderr
    results = {r["op"]: r for r in read_jsonl(tmp_path / "results.jsonl") if r["type"] == "result"}
    assert results["create_user"]["status"] == "applied" and results["create_user"]["http_status"] in (200, 201)
    assert results["suspend_user"]["http_status"] == 200


def test_a_push_run_by_hand_is_reported_from_its_plan_and_results_or_its_results_alone(tmp_path):
    test_results_carry_the_http_status_of_the_request_that_applied_them(tmp_path)
    both = run("zivsync-report", tmp_path / "plan.jsonl", tmp_path / "results.jsonl")
    assert both.returncode == 0, both.stderr
    text = both.stdout.decode()
    assert "results: " in text and "applied" in text and "suspend_user" in text
    alone = run("zivsync-report", tmp_path / "results.jsonl", "--html", tmp_path / "r.html")
    assert alone.returncode == 0, alone.stderr
    assert "no plan given" in alone.stdout.decode() and "applied" in alone.stdout.decode()
    assert "suspend_user" in (tmp_path / "r.html").read_text(encoding="utf-8")
