"""The executables as an administrator runs them: processes, exit codes, files, pipes, config."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from helpers import account, executable, header, jsonl, person, read_jsonl, run, segment, write_stream

from stages.cli import ExitStatus
from stages.umbrella import STAGES

CLAIMED = ["--claimed-domain", "example.com"]


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    return write_stream(tmp_path / "directory.jsonl", "directory", [
        person("a", "ann@example.com", display_name="Ann"),
        person("b", "bob@example.com", display_name="Bob"),
    ])


@pytest.fixture
def current(tmp_path: Path) -> Path:
    return write_stream(tmp_path / "current.jsonl", "accounts", [
        account("ann@example.com", name="Ann", zivver_id="z1"),
        account("bob@example.com", name="Bob", zivver_id="z2"),
        account("carl@example.com", name="Carl", zivver_id="z3"),
    ])


@pytest.mark.parametrize("command", ["zivsync"] + [c.name for c in STAGES])
def test_every_command_has_help_with_an_example_and_a_version(command):
    helped = run(command, "--help")
    assert helped.returncode == 0 and "Example" in helped.stdout.decode()
    versioned = run(command, "--version")
    assert versioned.returncode == 0 and versioned.stdout.decode().startswith(command)


@pytest.mark.parametrize("stage", [c.name for c in STAGES])
def test_umbrella_subcommand_is_the_same_command(stage):
    sub = stage.removeprefix("zivsync-")
    def same(text: bytes) -> bytes:  # the usage line names the command as it was called; examples may use either
        return text.replace(f"zivsync {sub}".encode(), stage.encode())

    assert same(run("zivsync", sub, "--help").stdout) == same(run(stage, "--help").stdout)


def test_pipeline_through_pipes(directory, current):
    desired = run("zivsync-normalize", *CLAIMED, "-i", directory)
    assert desired.returncode == 0, desired.stderr
    planned = run("zivsync-diff", *CLAIMED, "--current", current, "--max-suspend-percent", "50", input=desired.stdout)
    assert planned.returncode == 0, planned.stderr
    assert [(r["op"], r["email"]) for r in planned.records if r["type"] == "change"] == [("suspend_user", "carl@example.com")]
    assert "suspend_user" in planned.stderr and "safety: passed" in planned.stderr


def test_output_file_is_written_atomically_and_stdout_stays_empty(directory, tmp_path):
    target = tmp_path / "desired.jsonl"
    done = run("zivsync-normalize", *CLAIMED, "-i", directory, "-o", target)
    assert done.returncode == 0 and done.stdout == b""
    end = read_jsonl(target)[-1]
    assert (end["type"], end["count"], end["tally"]["personal accounts"]) == ("end", 2, 2)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_failed_stage_leaves_no_output_file(tmp_path):
    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(jsonl(segment("directory", [person("a", "not-an-address")])))
    target = tmp_path / "desired.jsonl"
    done = run("zivsync-normalize", *CLAIMED, "-i", broken, "-o", target)
    assert done.returncode == ExitStatus.ERROR
    assert not target.exists() and list(tmp_path.iterdir()) == [broken]


def test_bad_record_is_named_by_file_line_type_and_field(tmp_path):
    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(jsonl(segment("directory", [person("a", "ann@example.com"), person("b", "not-an-address")])))
    done = run("zivsync-normalize", *CLAIMED, "-i", broken)
    assert done.returncode == 1 and done.stdout == b""
    assert f"{broken}:3: person record: field 'mail' 'not-an-address' is not an e-mail address" in done.stderr
    assert "Traceback" not in done.stderr


def test_invalid_json_is_named_by_line(tmp_path):
    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(jsonl(segment("directory", [person("a", "ann@example.com")])).replace(b'"ann', b'ann', 1))
    done = run("zivsync-normalize", *CLAIMED, "-i", broken)
    assert done.returncode == 1 and f"{broken}:2: is not valid JSON" in done.stderr


def test_wrong_stream_kind_is_refused(current):
    done = run("zivsync-normalize", *CLAIMED, "-i", current)
    assert done.returncode == 1 and "is a accounts stream, expected directory" in done.stderr.replace("an accounts", "a accounts")


def test_missing_input_file_is_a_clear_error(tmp_path):
    done = run("zivsync-normalize", *CLAIMED, "-i", tmp_path / "nope.jsonl")
    assert done.returncode == 1 and "nope.jsonl: cannot open" in done.stderr


def test_missing_required_option_exits_1():
    done = run("zivsync-diff", "-i", "-")
    assert done.returncode == 1 and "--current" in done.stderr


def test_powershell_51_utf16_input_is_read(directory, tmp_path):
    utf16 = tmp_path / "ps51.jsonl"
    utf16.write_bytes(b"\xff\xfe" + directory.read_text("utf-8").replace("\n", "\r\n").encode("utf-16-le"))
    plain = run("zivsync-normalize", *CLAIMED, "-i", directory)
    converted = run("zivsync-normalize", *CLAIMED, "-i", utf16)
    assert converted.returncode == 0, converted.stderr
    strip = lambda records: [r for r in records if r["type"] != "header"]  # noqa: E731 (digests differ)
    assert strip(converted.records) == strip(plain.records)
    assert not converted.stdout.startswith(b"\xef\xbb\xbf") and b"\r\n" not in converted.stdout


def test_truncated_desired_stream_never_yields_a_suspension(directory, current, tmp_path):
    desired = run("zivsync-normalize", *CLAIMED, "-i", directory).stdout
    for cut in (desired.rfind(b'{"type":"end"'), len(desired) - 5, desired.find(b"\n") + 20):
        planned = run("zivsync-diff", *CLAIMED, "--current", current, "--max-suspend-percent", "100",
                      input=desired[:cut])
        assert planned.returncode == ExitStatus.REFUSED, planned.stderr
        assert not [r for r in planned.records if r["type"] == "change" and r["op"] == "suspend_user"]
        header = planned.records[0]
        assert header["desired_complete"] is False and header["safety"]["passed"] is False


def test_incomplete_directory_gives_incomplete_accounts_stream(directory):
    truncated = directory.read_bytes().rsplit(b'{"type":"end"', 1)[0]
    done = run("zivsync-normalize", *CLAIMED, input=truncated)
    assert done.returncode == 0
    end = done.records[-1]
    assert end["complete"] is False and "no end record" in end["incomplete_reasons"][0]
    assert "marked incomplete" in done.stderr


def test_safety_breach_exits_3_with_a_readable_report(tmp_path):
    current = write_stream(tmp_path / "current.jsonl", "accounts",
                           [account(f"u{i}@example.com", zivver_id=f"z{i}") for i in range(20)])
    desired = write_stream(tmp_path / "desired.jsonl", "accounts", [account("u0@example.com")])
    done = run("zivsync-diff", *CLAIMED, "-i", desired, "--current", current, "-o", tmp_path / "plan.jsonl")
    assert done.returncode == ExitStatus.REFUSED
    assert "REFUSED" in done.stderr and "19 of 20 managed accounts (95.0 %)" in done.stderr
    assert read_jsonl(tmp_path / "plan.jsonl")[0]["safety"]["passed"] is False


def test_check_exits_5_when_changes_are_pending_and_0_in_sync(directory, tmp_path):
    desired = tmp_path / "desired.jsonl"
    run("zivsync-normalize", *CLAIMED, "-i", directory, "-o", desired)
    in_sync = write_stream(tmp_path / "same.jsonl", "accounts",
                           [dict(r, zivver_id=f"z{n}") for n, r in enumerate(read_jsonl(desired)[1:-1])])
    behind = write_stream(tmp_path / "behind.jsonl", "accounts", [account("ann@example.com", name="Ann", zivver_id="z1")])
    assert run("zivsync-diff", *CLAIMED, "-i", desired, "--current", in_sync, "--check").returncode == ExitStatus.OK
    assert run("zivsync-diff", *CLAIMED, "-i", desired, "--current", behind, "--check").returncode == ExitStatus.PENDING


def test_same_inputs_give_byte_identical_plans(directory, current, tmp_path):
    desired = run("zivsync-normalize", *CLAIMED, "-i", directory).stdout
    args = (*CLAIMED, "--current", current, "--max-suspend-percent", "50")
    first = run("zivsync-diff", *args, input=desired, env={"SOURCE_DATE_EPOCH": "1"})
    second = run("zivsync-diff", *args, input=desired, env={"SOURCE_DATE_EPOCH": "2000000000"})
    drop_created = lambda out: out.replace(read_jsonl(out)[0]["created"].encode(), b"")  # noqa: E731
    assert drop_created(first.stdout) == drop_created(second.stdout)
    assert first.stdout != second.stdout  # only the timestamp differs


def test_closed_pipe_ends_quietly(tmp_path):
    many = write_stream(tmp_path / "many.jsonl", "directory",
                        [person(str(n), f"user{n}@example.com") for n in range(20000)])
    normalize = subprocess.Popen(executable("zivsync-normalize") + [*CLAIMED, "-i", str(many)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = normalize.stdout.readline()
    normalize.stdout.close()  # what `| head -1` does
    _, stderr = normalize.communicate(timeout=60)
    assert head.startswith(b'{"type":"header"')
    assert normalize.returncode == 0 and b"Traceback" not in stderr and b"BrokenPipe" not in stderr


# -- configuration: flags > environment > file ---------------------------------------------


def config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "zivsync.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_config_file_gives_options_to_each_stage(tmp_path, current):
    config = config_file(tmp_path, 'claimed_domains = ["example.com"]\n[diff]\nmax_suspend = 0\n')
    desired = write_stream(tmp_path / "d.jsonl", "accounts", [account("ann@example.com", name="Ann"),
                                                              account("bob@example.com", name="Bob")])
    refused = run("zivsync-diff", "--config", config, "-i", desired, "--current", current)
    assert refused.returncode == ExitStatus.REFUSED and "limit of 0 (--max-suspend)" in refused.stderr
    by_env = run("zivsync-diff", "--config", config, "-i", desired, "--current", current,
                 env={"ZIVSYNC_MAX_SUSPEND": "5", "ZIVSYNC_MAX_SUSPEND_PERCENT": "50"})
    assert by_env.returncode == ExitStatus.OK, by_env.stderr
    by_flag = run("zivsync-diff", "--config", config, "-i", desired, "--current", current, "--max-suspend", "0",
                  env={"ZIVSYNC_MAX_SUSPEND": "5", "ZIVSYNC_MAX_SUSPEND_PERCENT": "50"})
    assert by_flag.returncode == ExitStatus.REFUSED


def test_config_from_environment_variable(tmp_path, directory):
    config = config_file(tmp_path, 'claimed_domains = ["example.com"]\n')
    done = run("zivsync-normalize", "-i", directory, env={"ZIVSYNC_CONFIG": str(config)})
    assert done.returncode == 0 and len(done.records) == 4


def test_paths_in_the_config_are_relative_to_it(tmp_path, directory, current):
    (tmp_path / "conf").mkdir()
    config = config_file(tmp_path / "conf", 'claimed_domains = ["example.com"]\n[diff]\ncurrent = "../current.jsonl"\n'
                                            'max_suspend_percent = 50.0\n')
    desired = run("zivsync-normalize", "--config", config, "-i", directory).stdout
    done = run("zivsync-diff", "--config", config, input=desired, cwd=Path("/"))
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("text, message", [
    ('claimed_domain = ["example.com"]\n', "unknown option 'claimed_domain'"),
    ('[diff]\nmax_suspends = 3\n', "[diff] has no option 'max_suspends'"),
    ('[dif]\nmax_suspend = 3\n', "unknown table [dif]"),
    ('claimed_domains = [\n', "is not valid TOML"),
])
def test_config_mistakes_are_errors_not_defaults(tmp_path, directory, text, message):
    done = run("zivsync-normalize", "--config", config_file(tmp_path, text), *CLAIMED, "-i", directory)
    assert done.returncode == 1 and message in done.stderr and done.stdout == b""


def test_json_logs(directory):
    done = run("zivsync-normalize", *CLAIMED, "-i", directory, "--log-format", "json")
    lines = [line for line in done.stderr.splitlines() if line]
    assert lines and all(line.startswith("{") for line in lines)
    assert read_jsonl("\n".join(lines).encode())[0]["stage"] == "zivsync-normalize"


def test_validate_reports_every_problem(tmp_path):
    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(jsonl(segment("directory", [person("a", "bad"), person("b", "ann@example.com", mailbox="box")],
                                     end=False)))
    done = run("zivsync-validate", broken)
    assert done.returncode == 1
    assert f"{broken}:2: person record: field 'mail'" in done.stdout.decode()
    assert f"{broken}:3: person record: field 'mailbox'" in done.stdout.decode()
    assert "INVALID (2 problems), INCOMPLETE" in done.stdout.decode()


def test_validate_takes_input_options_and_writes_its_report_to_a_file(tmp_path, directory):
    report = tmp_path / "report.txt"
    done = run("zivsync-validate", "-i", directory, "-o", report)
    assert done.returncode == 0 and done.stderr == ""
    assert report.read_text().startswith(f"{directory}: valid, complete: directory stream")


@pytest.mark.parametrize("text, words", [
    ('[diff]\nmax_suspnd = 3\n', "[diff] has no option 'max_suspnd'; did you mean 'max_suspend'"),
    ('claimed_domain = ["x.example"]\n', "unknown option 'claimed_domain'; did you mean 'claimed_domains'?"),
    ('[diff]\nmax_suspend = "many"\n', "[diff] max_suspend: 'many' is not a valid integer"),
    ('[diff]\nclaimed_domains = "x.example"\n', "[diff] claimed_domains must be a list"),
    ('zivver_api_key = "Z1.1.2.topsecret"\n', "secrets never go in the config file"),
])
def test_config_mistakes_are_named_with_a_hint_and_no_secret_is_echoed(tmp_path, text, words):
    config = config_file(tmp_path, text)
    done = run("zivsync-diff", "--config", config, "-i", "-", "--current", config)
    assert done.returncode == 1 and words in done.stderr, done.stderr
    assert str(config) in done.stderr and "topsecret" not in done.stderr
    assert "known:" not in done.stderr  # no list of every key


def test_diff_warns_when_its_inputs_look_swapped(tmp_path):
    desired = tmp_path / "desired.jsonl"
    current = tmp_path / "current.jsonl"
    desired.write_bytes(jsonl([dict(header("accounts"), producer="zivsync-normalize 0.1.0"), account("a@example.com"),
                               {"type": "end", "count": 1}]))
    current.write_bytes(jsonl([dict(header("accounts"), producer="zivsync-snapshot 0.1.0"),
                               account("a@example.com", zivver_id="z1"), {"type": "end", "count": 1}]))
    right = run("zivsync-diff", "-i", desired, "--current", current, *CLAIMED)
    assert right.returncode == 0 and "swapped" not in right.stderr, right.stderr
    swapped = run("zivsync-diff", "-i", current, "--current", desired, *CLAIMED)
    assert swapped.returncode == 0 and "the inputs look swapped" in swapped.stderr, swapped.stderr
