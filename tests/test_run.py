"""zivsync run and zivsync check: the nightly job against the Fabrikam sample and a sandbox."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import filelock
import pytest
import testcerts
from helpers import API_KEY, EXAMPLES, FABRIKAM_ZIVVER, Sandbox, ended, executable, read_jsonl, run

from stages.operator import nightly as running

CLAIMED = ("fabrikam.example", "fabrikam.nl")


def write_config(folder: Path, *, ldif: Path = EXAMPLES / "fabrikam.ldif", extra: str = "") -> Path:
    """Fabrikam's config as an administrator would write it: AD from its LDIF export, Exchange
    from a stream file, the account mapping in state/, the run folders in runs/ (both beside it)."""
    config = folder / "zivsync.toml"
    config.write_text(f"""claimed_domains = ["fabrikam.example", "fabrikam.nl"]
state_dir = "state"

[extract-ldap]
ldif = {json.dumps(str(ldif))}
base_dn = "DC=fabrikam,DC=example"
default_region = "NL"

[push]
rate_limit = 1000

[run]
# Fabrikam's Exchange (shared mailboxes and their delegates) as a stream made elsewhere
directories = [{json.dumps(str(EXAMPLES / "directory-exchange.jsonl"))}]
{extra}""", encoding="utf-8")
    return config


def zivsync_run(config: Path, *args: str, env: dict | None = None, timeout: float = 180):
    return run("zivsync", "run", "--config", config, *args, env=env, timeout=timeout)


def run_folders(config: Path) -> list[Path]:
    return running.run_folders(config.parent / "runs")


def summary_of(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text(encoding="utf-8"))


def accounts(sandbox: Sandbox, folder: Path) -> dict[str, dict]:
    done = run("zivsync-snapshot", "-o", folder / "snapshot.jsonl", env=sandbox.env)
    assert done.returncode == 0, done.stderr
    return {r["email"]: r for r in read_jsonl(folder / "snapshot.jsonl") if r["type"] == "account"}


@pytest.fixture
def sandbox():
    with Sandbox("--seed", EXAMPLES / "current.jsonl", "--rate-limit", "1000", claimed=FABRIKAM_ZIVVER) as server:
        yield server


def test_a_dry_run_writes_every_stream_and_changes_nothing(sandbox, tmp_path):
    config = write_config(tmp_path)
    before = accounts(sandbox, tmp_path)
    done = zivsync_run(config, env=sandbox.env)
    assert done.returncode == 0, done.stderr
    [folder] = run_folders(config)
    assert running.RUN_ID.match(folder.name)
    names = {p.name for p in folder.iterdir()}
    assert {"directory-ldap.jsonl.gz", "input-1-directory-exchange.jsonl.gz", "current.jsonl.gz", "desired.jsonl.gz",
            "plan.jsonl.gz", "run.log", "summary.json", "report.html"} <= names
    assert "results.jsonl" not in names
    # issue 18: the streams are kept compressed, their digests over the content as it was made
    streams = [folder / name for name in names if name.endswith(".jsonl.gz")]
    assert all(path.read_bytes()[:2] == b"\x1f\x8b" for path in streams) and len(streams) == 5
    assert gzip.decompress((folder / "input-1-directory-exchange.jsonl.gz").read_bytes()) == \
        (EXAMPLES / "directory-exchange.jsonl").read_bytes()
    plan_header = read_jsonl(folder / "plan.jsonl.gz")[0]
    assert plan_header["inputs"]["desired"] == [{"name": "desired.jsonl.gz", "sha256": hashlib.sha256(
        gzip.decompress((folder / "desired.jsonl.gz").read_bytes())).hexdigest()}]
    validated = run("zivsync-validate", *streams)
    assert validated.returncode == 0 and validated.stdout.decode().count(": valid, complete") == 5, validated.stderr
    summary = summary_of(folder)
    assert summary["outcome"] == "ok" and summary["exit_code"] == 0 and summary["apply"] is False
    assert [s["name"] for s in summary["stages"]] == ["extract-ldap", "snapshot", "normalize", "diff"]
    assert all(s["exit_code"] == 0 and s["complete"] for s in summary["stages"])
    if sys.platform.startswith("linux"):  # each stage's own peak memory (wait4), not the run's
        assert all(15 < s["peak_mb"] < 400 for s in summary["stages"]), summary["stages"]
    changes = sum(summary["plan"]["changes"].values())
    assert changes > 0 and summary["message"].startswith(f"dry run: {changes} changes planned")
    assert summary["config_sha256"] and summary["ended"] >= summary["started"] and summary["seconds"] > 0
    assert (folder / "config.toml").read_bytes() == config.read_bytes()  # as it was, for auditors
    assert summary["python"] == sys.executable or Path(summary["python"]).name.startswith("python")
    assert accounts(sandbox, tmp_path) == before  # a dry run writes nothing to Zivver
    log = (folder / "run.log").read_text(encoding="utf-8")
    for stage in summary["stages"]:  # the log shows each command, then that stage's own lines
        assert stage["command"] in log
    assert "zivsync-extract-ldap:" in log and "zivsync-diff:" in log
    assert API_KEY not in log and API_KEY not in done.stderr and API_KEY not in (folder / "summary.json").read_text()


def test_each_stage_can_be_repeated_by_hand(sandbox, tmp_path):
    """The commands in the summary, typed by a person one after the other, give the same plan."""
    config = write_config(tmp_path)
    assert zivsync_run(config, env=sandbox.env).returncode == 0
    [folder] = run_folders(config)
    plan = gzip.decompress((folder / "plan.jsonl.gz").read_bytes())
    (folder / "plan.jsonl.gz").unlink()
    for stage in summary_of(folder)["stages"]:
        argv = shlex.split(stage["command"])
        assert argv[0] == "zivsync"
        done = run("zivsync", *argv[1:], env=sandbox.env)
        assert done.returncode == 0, done.stderr
    assert gzip.decompress((folder / "plan.jsonl.gz").read_bytes()) == plan


def test_apply_then_nothing_left_to_do(sandbox, tmp_path):
    config = write_config(tmp_path)
    done = zivsync_run(config, "--apply", env=sandbox.env)
    assert done.returncode == 0, done.stderr
    [first] = run_folders(config)
    summary = summary_of(first)
    assert summary["apply"] is True and summary["stages"][-1]["name"] == "push"
    planned = sum(summary["plan"]["changes"].values())
    assert summary["results"] == {"applied": planned}
    results = [r for r in read_jsonl(first / "results.jsonl") if r["type"] == "result"]
    # one log line per change applied, in the run's log as on stderr
    log = (first / "run.log").read_text(encoding="utf-8")
    for result in results:
        assert f"applied {result['op']} {result['email']}" in log
    assert (tmp_path / "state").is_dir()  # the account mapping, kept where the config says
    time.sleep(1.1)  # run folders are named by the second
    again = zivsync_run(config, "--apply", env=sandbox.env)
    assert again.returncode == 0, again.stderr
    second = run_folders(config)[-1]
    assert summary_of(second)["message"] == "in sync: nothing to change"
    assert summary_of(second)["plan"]["changes"] == {}


def test_json_logs_everywhere(sandbox, tmp_path):
    config = write_config(tmp_path)
    done = zivsync_run(config, "--log-format", "json", env=sandbox.env)
    assert done.returncode == 0, done.stderr
    [folder] = run_folders(config)
    lines = (folder / "run.log").read_text(encoding="utf-8").splitlines()
    entries = [json.loads(line) for line in lines]  # every line, the run's and its stages'
    assert {e["stage"] for e in entries} >= {"zivsync-run", "zivsync-extract-ldap", "zivsync-diff"}
    assert [json.loads(line) for line in done.stderr.splitlines()] == entries


def test_unreachable_zivver_stops_the_run_with_exit_4(tmp_path):
    config = write_config(tmp_path)
    done = zivsync_run(config, "--apply", "--log-format", "json",
                       env={"ZIVSYNC_ZIVVER_URL": "http://127.0.0.1:9/api/scim/v2", "ZIVSYNC_ZIVVER_API_KEY": API_KEY})
    assert done.returncode == 4, done.stderr
    entries = [json.loads(line) for line in done.stderr.splitlines()]  # the failures too: JSON, every line
    assert any(e["stage"] == "zivsync-snapshot" and e["level"] == "error" for e in entries)
    [folder] = run_folders(config)
    summary = summary_of(folder)
    assert summary["outcome"] == "unreachable" and summary["exit_code"] == 4
    assert [s["name"] for s in summary["stages"]] == ["extract-ldap", "snapshot"]
    assert summary["message"] == "snapshot failed (exit 4): the run stopped there"
    assert not (folder / "plan.jsonl.gz").exists() and (folder / "report.html").exists()


def test_a_refused_plan_is_not_pushed(sandbox, tmp_path):
    # Fabrikam's plan suspends 2 people: a limit of 1 refuses it
    config = write_config(tmp_path, extra="[diff]\nmax_suspend = 1\n")
    before = accounts(sandbox, tmp_path)
    done = zivsync_run(config, "--apply", env=sandbox.env)
    assert done.returncode == 3, done.stderr
    [folder] = run_folders(config)
    summary = summary_of(folder)
    assert summary["outcome"] == "refused" and summary["stages"][-1]["name"] == "diff"
    assert "refused" in summary["message"] and summary["plan"]["safety"]["passed"] is False
    assert not (folder / "results.jsonl").exists()
    assert accounts(sandbox, tmp_path) == before


def test_a_source_that_fails_at_once_stops_the_run(sandbox, tmp_path):
    broken = tmp_path / "broken.ldif"
    broken.write_bytes((EXAMPLES / "fabrikam.ldif").read_bytes()[:5000].rsplit(b"\n", 1)[0] + b"\nmail: half")
    config = write_config(tmp_path, ldif=broken)
    done = zivsync_run(config, "--apply", env=sandbox.env)
    assert done.returncode == 1, done.stderr
    summary = summary_of(run_folders(config)[0])
    assert [s["name"] for s in summary["stages"]] == ["extract-ldap"]
    assert summary["outcome"] == "error" and "extract-ldap failed (exit 1)" in summary["message"]
    assert "broken.ldif" in done.stderr


@pytest.mark.parametrize("where", ["runs", "state"])
def test_one_run_at_a_time(tmp_path, where):
    """The lock is in the runs folder and in the state folder: a run by hand with another
    --runs-dir must not push beside the nightly one either."""
    config = write_config(tmp_path)
    (tmp_path / where).mkdir()
    with filelock.FileLock(str(tmp_path / where / running.LOCK_NAME)):
        done = zivsync_run(config)
    assert done.returncode == 1
    assert f"another zivsync run holds {tmp_path / where / running.LOCK_NAME}" in done.stderr
    assert run_folders(config) == []


def test_old_run_folders_are_removed(sandbox, tmp_path):
    config = write_config(tmp_path)
    runs = tmp_path / "runs"
    for stamp in ("20250101T000000Z", "20250102T000000Z", "20250103T000000Z"):
        (runs / stamp).mkdir(parents=True)
        (runs / stamp / "summary.json").write_text("{}")
    (runs / "keep-me").mkdir()  # not a run folder: never touched
    (runs / "20240101T000000Z").mkdir()  # named like one, but no run made it: never touched
    done = zivsync_run(config, "--keep", "2", env=sandbox.env)
    assert done.returncode == 0, done.stderr
    left = [f.name for f in run_folders(config)]
    assert left[0] == "20240101T000000Z" and left[1] == "20250103T000000Z" and len(left) == 3
    assert (runs / "keep-me").is_dir()


def run_waiting_in_snapshot(config: Path, slow: Sandbox) -> tuple[subprocess.Popen, Path]:
    """``zivsync run`` as its own process, returned with its run folder once its snapshot stage
    is running (waiting for the slow Zivver)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ZIVSYNC_")} | slow.env
    process = subprocess.Popen(executable("zivsync") + ["run", "--config", str(config)], env=environment,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        folders = run_folders(config)
        if folders and (folders[0] / "summary.json").exists() and stage_processes(folders[0]) and \
                summary_of(folders[0])["stages"][-1]["name"] == "snapshot":
            return process, folders[0]
        time.sleep(0.1)
    process.kill()
    raise AssertionError("the run never got to its snapshot stage")


def test_a_terminated_run_says_so(tmp_path):
    """systemd stopping the job mid-run: the stage is stopped too, and the summary says so."""
    if sys.platform == "win32":
        pytest.skip("SIGTERM is POSIX")
    config = write_config(tmp_path)
    with Sandbox("--seed", EXAMPLES / "current.jsonl", "--latency", "30000", claimed=FABRIKAM_ZIVVER) as slow:  # ms
        process, folder = run_waiting_in_snapshot(config, slow)
        with ended(process):
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == running.TERMINATED  # 128 + SIGTERM (issue 14)
    summary = summary_of(folder)
    assert summary["outcome"] == "interrupted" and summary["exit_code"] == running.TERMINATED
    assert summary["message"] == "interrupted by SIGTERM during snapshot: nothing was applied"
    assert summary["stages"][-1]["name"] == "snapshot" and summary["stages"][-1]["exit_code"] != 0
    assert not stage_processes(folder)  # the stage is gone too, not left running


@pytest.mark.parametrize("signum, code, how", [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")])
def test_a_run_stopped_during_push_reports_how_far_push_got(tmp_path, signum, code, how):
    """Issue 14: the report of a run stopped half-way through its push gives the push's real
    seconds and counts ("9 of 12 changes applied"), never None, never "applied to Zivver" as if
    all were, and says "interrupted" once; run.log keeps push's own last line."""
    if sys.platform == "win32":
        pytest.skip("signals to one process are POSIX")
    config = write_config(tmp_path)
    with Sandbox("--seed", EXAMPLES / "current.jsonl", "--rate-limit", "0", "--latency", "300",
                 claimed=FABRIKAM_ZIVVER) as slow:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("ZIVSYNC_")} | slow.env
        with ended(subprocess.Popen(executable("zivsync") + ["run", "--config", str(config), "--apply"],
                                    env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)) as process:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                folders = run_folders(config)
                results = folders[0] / "results.jsonl" if folders else None
                if results and results.exists() and results.read_bytes().count(b"\n") >= 3:
                    break
                time.sleep(0.05)
            process.send_signal(signum)  # to the run alone: it passes the signal on to its stage
            _, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr
    folder = run_folders(config)[0]
    summary = summary_of(folder)
    written = [r for r in read_jsonl(folder / "results.jsonl") if r["type"] == "result"]
    applied = sum(r["status"] == "applied" for r in written)
    planned = sum(summary["plan"]["changes"].values())
    assert 2 <= len(written) < planned and applied == len(written)
    push = summary["stages"][-1]
    assert push["name"] == "push" and push["exit_code"] == code and push["seconds"] > 0.5
    assert push["records"] == len(written) and push["output"] == "results.jsonl" and push["complete"] is False
    assert summary["message"] == (f"interrupted by {how} during push: {applied} of {planned} changes applied, "
                                  f"{planned - applied} not sent (the next zivsync run --apply plans them afresh)")
    log = (folder / "run.log").read_text(encoding="utf-8")
    assert "zivsync-push: error: " in log and f"after {len(written)} of {planned} changes; {applied} applied" in log
    end = read_jsonl(folder / "results.jsonl")[-1]
    assert end["type"] == "end" and end["complete"] is False
    text = run("zivsync", "report", folder).stdout.decode()
    first = text.splitlines()[0]
    assert first == f"run {folder.name}: INTERRUPTED by {how} during push: {applied} of {planned} changes applied, " \
                    f"{planned - applied} not sent (the next zivsync run --apply plans them afresh)"
    assert f"{applied} of {planned} changes applied to Zivver (--apply), then the push was stopped: " \
           f"{planned - applied} were not sent" in text
    assert "None" not in text and f"push                exit {code}" in text
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert "None" not in page and "applied to Zivver (--apply)<" not in page
    banner = page[page.index('class="banner'):].split("</div>", 1)[0]
    assert banner.lower().count("interrupted") == 1 and f"by {how} during push" in banner


def test_a_stage_does_not_outlive_a_killed_run(tmp_path):
    """SIGKILL or the OOM killer leave the run no time to stop its stage: Linux stops it then."""
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux's")
    config = write_config(tmp_path)
    with Sandbox("--seed", EXAMPLES / "current.jsonl", "--latency", "30000", claimed=FABRIKAM_ZIVVER) as slow:  # ms
        process, folder = run_waiting_in_snapshot(config, slow)
        process.kill()
        process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while stage_processes(folder) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not stage_processes(folder)


def stage_processes(folder: Path) -> list[Path]:
    """The processes whose command line names the run folder (Linux)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(folder).encode() in cmdline.read_bytes():
                found.append(cmdline)
        except OSError:
            pass
    return found


def test_run_needs_a_config_with_a_source(tmp_path):
    done = run("zivsync", "run")
    assert done.returncode == 1 and "needs a config file" in done.stderr
    config = tmp_path / "zivsync.toml"
    config.write_text('claimed_domains = ["example.com"]\n')
    done = run("zivsync", "run", "--config", config)
    assert done.returncode == 1 and "no source configured" in done.stderr
    config.write_text('claimed_domains = ["example.com"]\n[run]\napply = true\n')
    done = run("zivsync", "run", "--config", config)
    assert done.returncode == 1 and "[run] has no option 'apply'" in done.stderr  # only a flag can apply


# -- unit: the parts of a run that are pure ----------------------------------------------------


def test_plan_steps_and_the_commands_shown(tmp_path):
    settings = running.Settings(config=tmp_path / "my config.toml", runs_dir=tmp_path / "runs",
                                sources=("ldap", "exo"), apply=True, stage_options=("--log-format", "text"))
    steps = running.plan_steps(settings, tmp_path / "runs" / "X")
    assert [s.name for s in steps] == ["extract-ldap", "extract-exo", "snapshot", "normalize", "diff", "push"]
    normalize = steps[3]
    assert normalize.args.count("-i") == 2 and normalize.output == "desired.jsonl.gz"
    assert "--apply" in steps[-1].args
    assert running.shown(steps[0]).startswith(f"zivsync extract-ldap --config '{tmp_path}/my config.toml'")
    assert shlex.split(running.shown(steps[0]))[3] == str(tmp_path / "my config.toml")
    dry = running.plan_steps(running.Settings(config=settings.config, runs_dir=settings.runs_dir, sources=("ldap",)),
                             tmp_path)
    assert shlex.split(running.shown(running.Step("diff", ("--current", "it's $HOME.jsonl"))))[-1] == "it's $HOME.jsonl"
    assert [s.name for s in dry] == ["extract-ldap", "snapshot", "normalize", "diff"]


def test_run_folder_names_and_pruning(tmp_path):
    first = running.new_run_folder(tmp_path, now=0)
    second = running.new_run_folder(tmp_path, now=0)
    for made in (first, second):
        (made / "summary.json").write_text("{}")
    assert (first.name, second.name) == ("19700101T000000Z", "19700101T000000Z-2")
    third = running.new_run_folder(tmp_path, now=60)
    assert running.run_folders(tmp_path) == [first, second, third]
    assert running.prune(tmp_path, 2, current=third) == [first]
    assert running.run_folders(tmp_path) == [second, third]
    assert running.prune(tmp_path, 0, current=third) == []


def test_stream_facts(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"type":"header"}\n{"type":"end","count":3}\n')
    assert running.stream_facts(path) == (True, 3)
    path.write_bytes(b'{"type":"header"}\n{"type":"end","count":1,"complete":false,"incomplete_reasons":["x"]}\n')
    assert running.stream_facts(path) == (False, 1)
    path.write_bytes(b'{"type":"header"}\n{"type":"person"}\n')
    assert running.stream_facts(path) == (False, None)
    assert running.stream_facts(tmp_path / "missing") == (None, None)


def test_outcome_message():
    plan = {"changes": {"create_user": 2, "suspend_user": 1}}
    assert running.outcome_message(0, "", plan, None, False).startswith("dry run: 3 changes planned")
    assert running.outcome_message(0, "", plan, {"applied": 3}, True) == "3 changes: 3 applied"
    assert running.outcome_message(2, "", plan, {"applied": 2, "failed": 1}, True) == \
        "3 changes: 2 applied, 1 failed (exit 2: see the log)"
    assert running.outcome_message(0, "", {"changes": {}}, None, True) == "in sync: nothing to change"
    assert running.outcome_message(130, "", None, None, True) == "interrupted by Ctrl-C: nothing was applied"
    assert running.outcome_message(143, "", plan, {"applied": 1, "failed": 1}, True, "push") == (
        "interrupted by SIGTERM during push: 1 of 3 changes applied, 1 failed, 1 not sent "
        "(the next zivsync run --apply plans them afresh)")
    assert running.outcome_of(3) == "refused" and running.outcome_of(130) == "interrupted"
    assert running.outcome_of(149) == "interrupted"  # Windows' Ctrl-Break: not an "error"
    assert running.outcome_message(149, "", None, None, False) == "interrupted by Ctrl-Break: nothing was applied"
    assert running.outcome_of(99) == "error"


# -- progress: on a terminal only --------------------------------------------------------------


def test_progress_shows_on_a_terminal_and_not_in_a_log(tmp_path):
    if sys.platform == "win32":
        pytest.skip("pty is POSIX")
    import fcntl
    import pty
    import struct
    import termios

    config = write_config(tmp_path)
    args = ["extract-ldap", "--config", str(config), "-o", str(tmp_path / "out.jsonl")]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ZIVSYNC_")}
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a terminal 120 wide
    process = subprocess.Popen(executable("zivsync") + args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=slave, env=environment)
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the other end closed: the process is done
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert process.wait(timeout=60) == 0
    assert b"records read" in seen and b"\r" in seen  # a bar, redrawn in place
    assert b"zivsync-extract-ldap: " in seen  # and the log lines still there

    piped = run("zivsync", *args)
    assert piped.returncode == 0 and "records read" not in piped.stderr and "\r" not in piped.stderr


# -- the report by mail ------------------------------------------------------------------------


def test_the_report_is_mailed_after_a_run(sandbox, tmp_path):
    import email
    import email.policy

    from test_mail import PASSWORD, USER, authenticate, server_context, smtp_server

    certs = testcerts.ca_and_server(tmp_path / "certs", "zivsync run mail CA")
    config = write_config(tmp_path, extra=f"""mail_to = ["beheer@fabrikam.example"]
mail_from = "zivsync@fabrikam.example"
smtp_host = "127.0.0.1"
smtp_user = "{USER}"
smtp_ca_file = {json.dumps(str(certs["ca_file"]))}
""")
    with smtp_server(tls_context=server_context(certs), require_starttls=True, authenticator=authenticate,
                     auth_require_tls=True) as (controller, handler):
        done = zivsync_run(config, "--smtp-port", str(controller.port),
                           env=sandbox.env | {"ZIVSYNC_SMTP_PASSWORD": PASSWORD})
    assert done.returncode == 0, done.stderr
    [envelope] = handler.envelopes
    assert envelope.rcpt_tos == ["beheer@fabrikam.example"]
    message = email.message_from_bytes(envelope.content, policy=email.policy.default)
    summary = summary_of(run_folders(config)[0])
    assert message["Subject"] == f"zivsync ok: {summary['message']}"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "suspend_user" in text and "p.vandijk@fabrikam.example" in text
    assert summary["run"] in html and "p.vandijk@fabrikam.example" in html and "<svg" in html
    assert PASSWORD not in done.stderr and PASSWORD not in (run_folders(config)[0] / "run.log").read_text()


def test_a_mail_that_cannot_go_does_not_fail_the_run(sandbox, tmp_path):
    config = write_config(tmp_path, extra='''mail_to = ["beheer@fabrikam.example"]
mail_from = "zivsync@fabrikam.example"
smtp_host = "127.0.0.1"
smtp_port = 9
''')
    done = zivsync_run(config, env=sandbox.env)
    assert done.returncode == 0, done.stderr
    assert "the report mail was not sent" in done.stderr and "127.0.0.1:9" in done.stderr


# -- what the review of zivsync run found: each must stay fixed -------------------------------


def test_a_closed_stderr_does_not_stop_the_run(sandbox, tmp_path):
    """`zivsync run --apply 2>&1 | head -1`, a dropped ssh session: the run goes on, and says so."""
    config = write_config(tmp_path)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ZIVSYNC_")} | sandbox.env
    process = subprocess.Popen(executable("zivsync") + ["run", "--config", str(config), "--apply"], env=environment,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    process.stderr.readline()
    process.stderr.close()
    assert process.wait(timeout=120) == 0
    summary = summary_of(run_folders(config)[0])
    assert summary["outcome"] == "ok" and summary["results"] == {"applied": sum(summary["plan"]["changes"].values())}
    assert "applied suspend_user" in (run_folders(config)[0] / "run.log").read_text(encoding="utf-8")


def test_a_leftover_resume_variable_changes_nothing(tmp_path):
    """ZIVSYNC_RESUME in the environment must not make a nightly push skip changes."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    with Sandbox("--seed", EXAMPLES / "current.jsonl", "--rate-limit", "1000", claimed=FABRIKAM_ZIVVER) as one:
        assert zivsync_run(write_config(first), "--apply", env=one.env).returncode == 0
    earlier = run_folders(first / "zivsync.toml")[0] / "results.jsonl"
    with Sandbox("--seed", EXAMPLES / "current.jsonl", "--rate-limit", "1000", claimed=FABRIKAM_ZIVVER) as two:
        done = zivsync_run(write_config(second), "--apply", env=two.env | {"ZIVSYNC_RESUME": str(earlier),
                                                                           "ZIVSYNC_CHECK": "1"})
    assert done.returncode == 0, done.stderr
    summary = summary_of(run_folders(second / "zivsync.toml")[0])
    assert summary["results"] == {"applied": sum(summary["plan"]["changes"].values())}


def test_apply_may_not_leave_a_configured_source_out(tmp_path):
    config = write_config(tmp_path, extra='[extract-exo]\ntenant = "contoso.example"\nclient_id = "x"\n')
    done = zivsync_run(config, "--source", "ldap", "--apply")
    assert done.returncode == 1 and "leaves out the configured source(s) exo" in done.stderr
    assert run_folders(config) == []


def test_a_source_failing_half_way_applies_nothing(sandbox, tmp_path):
    from fake_microsoft import FakeMicrosoft, Tenant

    tenant = Tenant.generate(mailboxes=30, shared=6, groups=3, seed=5)
    with FakeMicrosoft(tmp_path / "fake", tenant) as fake:
        fake.fail("Get-MailboxPermission", 403)  # the mailboxes are read, then Exchange refuses
        config = tmp_path / "zivsync.toml"
        config.write_text(f"""claimed_domains = ["fabrikam.example", "fabrikam.nl", "contoso.example"]
state_dir = "state"

[extract-exo]
tenant = "{tenant.tenant_id}"
client_id = "{fake.client_id}"
authority_host = "{fake.url}"
exchange_url = "{fake.exchange_url}"
ca_file = "{fake.ca_file}"

[run]
directories = [{json.dumps(str(EXAMPLES / "directory-ldap.jsonl"))}]
""", encoding="utf-8")
        before = accounts(sandbox, tmp_path)
        done = zivsync_run(config, "--apply", env=sandbox.env | {"ZIVSYNC_EXO_CLIENT_SECRET": fake.client_secret})
    assert done.returncode == 4, done.stderr
    [folder] = run_folders(config)
    summary = summary_of(folder)
    assert [s["name"] for s in summary["stages"]] == ["extract-exo", "snapshot", "normalize", "diff"]
    assert summary["stages"][0]["complete"] is False and summary["stages"][0]["records"] > 0
    assert summary["outcome"] == "unreachable"
    assert summary["message"] == "extract-exo failed (exit 4): nothing was applied"
    assert not (folder / "results.jsonl").exists() and accounts(sandbox, tmp_path) == before
    assert "Exchange.ManageAsApp" in (folder / "run.log").read_text(encoding="utf-8")


def test_a_stage_that_hangs_is_stopped(tmp_path):
    config = write_config(tmp_path)
    with Sandbox("--seed", EXAMPLES / "current.jsonl", "--latency", "30000", claimed=FABRIKAM_ZIVVER) as slow:  # ms
        done = zivsync_run(config, "--stage-timeout", "3", env=slow.env)
    assert done.returncode == running.TIMED_OUT, done.stderr
    summary = summary_of(run_folders(config)[0])
    assert summary["stages"][-1]["name"] == "snapshot" and summary["stages"][-1]["exit_code"] == running.TIMED_OUT
    assert "did not end within 3 s (--stage-timeout)" in done.stderr


def test_quiet_quiets_the_console_not_the_log(sandbox, tmp_path):
    config = write_config(tmp_path)
    done = zivsync_run(config, "-q", "--apply", env=sandbox.env)
    assert done.returncode == 0, done.stderr
    assert "applied create_user" not in done.stderr
    assert "applied create_user" in (run_folders(config)[0] / "run.log").read_text(encoding="utf-8")


def test_a_run_killed_outright_is_said_to_be_so_by_the_next(sandbox, tmp_path):
    """Issue 17: Task Scheduler's End (TerminateProcess), kill -9 or a power loss leave no time to
    write an outcome: the summary still says running. The next run, holding the lock, says what
    happened, so that the report does not show a run going on for ever."""
    config = write_config(tmp_path)
    dead = tmp_path / "runs" / "20250101T020000Z"
    dead.mkdir(parents=True)
    (dead / "summary.json").write_text(json.dumps({"run": dead.name, "outcome": "running", "stages": [
        {"name": "extract-ldap", "exit_code": 0}, {"name": "push", "exit_code": None}]}))
    done = zivsync_run(config, env=sandbox.env)
    assert done.returncode == 0, done.stderr
    assert f"the run in {dead} was killed before it ended" in done.stderr
    summary = summary_of(dead)
    assert summary["outcome"] == "killed" and summary["message"].startswith("ended without a word during push")
    assert "Task Scheduler's End" in summary["message"] and summary["closed_by"]
    report = run("zivsync", "report", dead).stdout.decode()
    assert report.splitlines()[0].startswith(f"run {dead.name}: KILLED: ended without a word during push")
    again = zivsync_run(config, env=sandbox.env)  # said once: a closed run is not closed again
    assert "was killed before it ended" not in again.stderr


def test_a_run_folder_lists_every_directory_stream_it_read_whatever_its_name(tmp_path):
    for name in ("directory-ldap.jsonl.gz", "input-1-hr.json.gz", "input-2-exchange.jsonl.gz", "plan.jsonl.gz"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in running.directory_files(tmp_path)] == [
        "directory-ldap.jsonl.gz", "input-1-hr.json.gz", "input-2-exchange.jsonl.gz"]
