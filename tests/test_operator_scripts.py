"""The operator scripts (systemd, cron, PowerShell, cmd) call commands and options that exist:
they must not drift from the executables they drive. (They can't be run here: Task Scheduler
and systemd are not in the test machine; their syntax is checked where a checker exists.)"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from helpers import ROOT

from stages.umbrella import STAGES

SCRIPTS = sorted(p for folder in ("linux", "windows") for p in (ROOT / "scripts" / folder).iterdir())
COMMANDS = {c.name: c for c in STAGES}
CALL = re.compile(r"\b(zivsync-[a-z-]+)\b(.*)$")
OPTION = re.compile(r"(?<![\w-])(--?[a-z][a-z-]*)\b")


def options_of(command) -> set[str]:
    return {o for p in command.params for o in (*p.opts, *p.secondary_opts)} | {"-h", "--help"}


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_every_command_and_option_the_script_uses_exists(script):
    calls = 0
    for line in script.read_text(encoding="utf-8").splitlines():
        code = line.split("#", 1)[0] if script.suffix in (".sh", ".ps1", ".service", ".example") else line
        for segment in code.split("|"):  # each command of a pipeline
            match = CALL.search(segment)
            if not match or match[1] in ("zivsync-nightly",):
                continue
            assert match[1] in COMMANDS, f"{script.name}: no command {match[1]}"
            used = set(OPTION.findall(match[2]))
            unknown = used - options_of(COMMANDS[match[1]])
            assert not unknown, f"{script.name}: {match[1]} has no {sorted(unknown)}"
            calls += 1
    text = script.read_text(encoding="utf-8")
    if script.suffix in (".sh", ".ps1", ".cmd") and script.stem == "zivsync-nightly":
        assert re.search(r"zivsync-run .*--apply", text)  # the nightly job applies, through zivsync run
    if script.stem == "zivsync-stages":
        assert calls >= 6  # the whole chain, stage by stage


def test_the_check_catches_an_option_that_does_not_exist():
    match = CALL.search("zivsync-diff -i plan.jsonl --curent current.jsonl")
    assert set(OPTION.findall(match[2])) - options_of(COMMANDS[match[1]]) == {"--curent"}


def test_the_shell_script_parses():
    bash = shutil.which("bash")
    assert bash
    assert subprocess.run([bash, "-n", str(ROOT / "scripts" / "linux" / "zivsync-nightly.sh")]).returncode == 0
