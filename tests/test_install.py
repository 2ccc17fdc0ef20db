"""`pip install .` into a fresh virtual environment, then run from outside the checkout:
the schemas must ship inside the wheel, and every console script must be there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib

import orjson
from helpers import EXAMPLES, ROOT

SCRIPTS = list(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"])


def test_installed_wheel_works_outside_the_checkout(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    installed = subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", str(ROOT)],
                               capture_output=True, text=True, cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr

    for script in SCRIPTS:
        assert (bin_dir / script).exists(), f"console script {script} missing"
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(EXAMPLES / "directory-ldap.jsonl", work)
    environment = {"PATH": str(bin_dir), "SOURCE_DATE_EPOCH": "0", "SYSTEMROOT": os.environ.get("SYSTEMROOT", "")}
    checked = subprocess.run([str(bin_dir / "zivsync-validate"), "directory-ldap.jsonl"],
                             capture_output=True, text=True, cwd=work, env=environment)
    assert checked.returncode == 0 and "valid, complete" in checked.stdout, checked.stderr

    normalized = subprocess.run([str(bin_dir / "zivsync"), "normalize", "--claimed-domain", "fabrikam.example",
                                 "-i", "directory-ldap.jsonl", "-o", "desired.jsonl"],
                                capture_output=True, text=True, cwd=work, env=environment)
    assert normalized.returncode == 0, normalized.stderr
    desired = (work / "desired.jsonl").read_bytes().splitlines()
    assert orjson.loads(desired[-1])["count"] == len(desired) - 2

    where = subprocess.run([str(bin_dir / "python"), "-c", "import stages.core.schema as s; print(s.schema_dir())"],
                           capture_output=True, text=True, cwd=work, env=environment)
    assert str(venv) in where.stdout, "schemas must come from the installed wheel, not the checkout"
