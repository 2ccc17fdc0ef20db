"""Golden streams: the sample organisation in, the expected accounts and plan out, byte for byte.

After a deliberate change of output, `make golden` rewrites tests/golden/ (review the diff!).
The producer's version is replaced by VERSION; the plan header's digest of the desired stream
still changes with a release (that stream names its producer's version): run `make golden` then.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import EXAMPLES, run

from stages import __version__

GOLDEN = Path(__file__).parent / "golden"
CONFIG = ("--config", EXAMPLES / "zivsync.toml")


def versionless(output: bytes) -> bytes:
    return output.replace(f" {__version__}\"".encode(), b" VERSION\"")


def check(name: str, output: bytes, update: bool) -> None:
    path = GOLDEN / name
    if update:
        path.write_bytes(versionless(output))
    assert versionless(output) == path.read_bytes(), f"{name} differs from {path} (make golden to accept)"


@pytest.fixture
def update(request) -> bool:
    return request.config.getoption("--update-golden")


def test_sample_organisation_accounts_and_plan(update, tmp_path):
    """Written with -o, as UTF-8 (on standard output a stream is ASCII, \\u-escaped: issue 17)."""
    desired = run("zivsync-normalize", *CONFIG, "-i", EXAMPLES / "directory-ldap.jsonl",
                  "-i", EXAMPLES / "directory-exchange.jsonl", "-o", tmp_path / "desired.jsonl", cwd=EXAMPLES)
    assert desired.returncode == 0, desired.stderr
    check("desired.jsonl", (tmp_path / "desired.jsonl").read_bytes(), update)

    planned = run("zivsync-diff", *CONFIG, "-i", tmp_path / "desired.jsonl", "--current", EXAMPLES / "current.jsonl",
                  "--state", EXAMPLES / "state", "-o", tmp_path / "plan.jsonl", cwd=EXAMPLES)
    assert planned.returncode == 0, planned.stderr
    check("plan.jsonl", (tmp_path / "plan.jsonl").read_bytes(), update)


def test_sample_plan_has_every_op_of_an_ordinary_night():
    ops = {line.split(b'"op":"')[1].split(b'"')[0] for line in (GOLDEN / "plan.jsonl").read_bytes().splitlines()
           if b'"type":"change"' in line}
    assert ops == {b"create_user", b"update_user", b"rename_user", b"reactivate_user", b"suspend_user",
                   b"create_functional", b"update_functional", b"empty_functional"}


def test_examples_are_what_their_generator_writes():
    checked = subprocess.run([sys.executable, str(EXAMPLES.parent / "scripts" / "make_examples.py"), "--check"],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
