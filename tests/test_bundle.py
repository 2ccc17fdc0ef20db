"""The offline bundles (scripts/bundle.py, docs/offline-install.md): both zips build (from the
download cache once it is warm); the Linux one installs with pip cut off from every index, and
zivsync runs from it the demo's first sync; the Windows one resolves completely for win_amd64 on
each Python, holds nothing for another platform, and its install.ps1 uses only cmdlets and
parameters Microsoft documents and py/python/pip options that exist. (install.ps1 cannot run
here: no Windows, no PowerShell.)"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import helpers
import pytest
import test_operator_scripts as operator_scripts
from helpers import EXAMPLES, FABRIKAM_ZIVVER, ROOT, read_jsonl

BUNDLE_PY = ROOT / "scripts" / "bundle.py"


def load_bundle():
    spec = importlib.util.spec_from_file_location("zivsync_bundle", BUNDLE_PY)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


bundle = load_bundle()
VERSION = bundle.version()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
SCRIPTS = sorted(PYPROJECT["scripts"])


def names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower() for r in requirements}


TEST_ONLY = names(PYPROJECT["optional-dependencies"]["test"])  # less what run time needs: below
WINDOWS_ONLY = {"winkerberos", "sspilib", "colorama"}  # required under sys_platform == 'win32' markers
DEAD_PROXY = "http://127.0.0.1:9"  # the discard port: nothing listens, any connection fails


@pytest.fixture(scope="module")
def zips() -> dict[str, Path]:
    """Both zips in dist/, built by scripts/bundle.py unless they are up to date."""
    done = subprocess.run([sys.executable, str(BUNDLE_PY)], check=False, capture_output=True, text=True, cwd=ROOT,
                          timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    print(done.stdout)
    built = {platform: ROOT / "dist" / f"zivsync-{VERSION}-{platform}.zip" for platform in bundle.PLATFORMS}
    assert set(built) == {"win_amd64", "linux_x86_64"} and all(z.is_file() for z in built.values())
    return built


@pytest.fixture(scope="module")
def unpacked(zips, tmp_path_factory) -> dict[str, Path]:
    """Each zip unpacked outside the checkout, as an administrator unpacks it (unzip keeps modes)."""
    folders = {}
    for platform, path in zips.items():
        where = tmp_path_factory.mktemp(f"unpacked-{platform}")
        if shutil.which("unzip"):
            subprocess.run(["unzip", "-q", str(path), "-d", str(where)], check=True)
        else:
            with zipfile.ZipFile(path) as archive:
                archive.extractall(where)
        (folders[platform],) = where.iterdir()
        assert folders[platform].name == f"zivsync-{VERSION}-{platform}"
    return folders


def wheel_names(folder: Path) -> list[str]:
    return sorted(p.name for p in (folder / "wheelhouse").iterdir())


def installer_list(text: str, name: str) -> list[str]:
    """A list the build wrote into an installer: KERBEROS_PYTHONS='3.13 3.12' or $Commands = @('a', 'b')."""
    shell = re.search(rf"^{name}='([^']*)'", text, re.MULTILINE)
    if shell:
        return shell[1].split()
    return re.findall(r"'([^']*)'", re.search(rf"^\${name} = @\(([^)]*)\)", text, re.MULTILINE)[1])


# -- what is in the zips -----------------------------------------------------------------------


def test_each_zip_holds_a_wheelhouse_an_installer_sha256sums_and_a_readme(zips):
    for platform, path in zips.items():
        top = f"zivsync-{VERSION}-{platform}/"
        with zipfile.ZipFile(path) as archive:
            members = {info.filename.removeprefix(top): info for info in archive.infolist()}
            assert all(info.filename.startswith(top) for info in archive.infolist())
            files = {name: archive.read(info) for name, info in members.items()}
        installer = bundle.PLATFORMS[platform].installer
        assert {installer, "SHA256SUMS", "README.txt", "docs/offline-install.md"} <= set(files)
        assert f"wheelhouse/zivsync-{VERSION}-py3-none-any.whl" in files
        if installer == "install.sh":
            assert members[installer].external_attr >> 16 & 0o777 == 0o755  # unzip keeps the x bit
        # SHA256SUMS: every other file, and its hash
        listed = dict(reversed(line.split("  ", 1)) for line in files["SHA256SUMS"].decode().splitlines())
        assert set(listed) == set(files) - {"SHA256SUMS"}
        for name, digest in listed.items():
            assert hashlib.sha256(files[name]).hexdigest() == digest, name
        readme = files["README.txt"].decode()
        assert f"zivsync {VERSION}" in readme and installer in readme and "SHA256SUMS" in readme
    # the zips' own checksums, to publish beside them
    sums = (ROOT / "dist" / f"zivsync-{VERSION}-SHA256SUMS").read_text(encoding="ascii").splitlines()
    assert sorted(sums) == sorted(f"{hashlib.sha256(z.read_bytes()).hexdigest()}  {z.name}" for z in zips.values())


def test_every_wheel_is_pure_python_or_for_that_platform_and_nothing_else_is_in_the_wheelhouse(unpacked):
    for platform, folder in unpacked.items():
        wheels = wheel_names(folder)
        assert wheels and all(name.endswith(".whl") for name in wheels), "no sdist, nothing else"
        for name in wheels:
            platforms = name.removesuffix(".whl").split("-")[-1].split(".")
            if name.endswith("-none-any.whl"):
                continue
            if platform == "win_amd64":
                assert name.endswith("win_amd64.whl"), name
            else:
                assert all(re.fullmatch(r"manylinux(1|2010|2014|_2_\d+)_x86_64", p) for p in platforms), name
                assert not re.search(r"win|macosx|musllinux|linux_x86_64\.whl$", name.replace("manylinux", "")), name
        # compiled wheels for each Python: CPython 3.11, 3.12 and 3.13 (or the stable ABI)
        for package in ("orjson", "msgspec", "rpds_py"):
            tags = {re.search(r"-(cp3\d+)-", n)[1] for n in wheels if n.startswith(package + "-")}
            assert tags == {"cp311", "cp312", "cp313"}, (platform, package, tags)
        assert not [n for n in wheels if n.startswith("gssapi-")]


@pytest.mark.parametrize("platform", ["win_amd64", "linux_x86_64"])
def test_the_wheelhouse_resolves_completely_offline_for_each_python(platform, unpacked, tmp_path):
    """pip itself, told the platform and the Python, with no index: every wheel it needs is there,
    each one comes from the wheelhouse, and nothing in the wheelhouse is left over."""
    folder = unpacked[platform]
    installer = (folder / bundle.PLATFORMS[platform].installer).read_text(encoding="utf-8")
    kerberos = installer_list(installer, "KERBEROS_PYTHONS" if platform == "linux_x86_64" else "KerberosPythons")
    used, resolved = set(), set()
    for python in bundle.PYTHONS:
        extra = "[kerberos]" if python in kerberos else ""
        report = tmp_path / f"report-{python}.json"
        done = subprocess.run(
            [sys.executable, str(BUNDLE_PY), "pip-as", platform, python, "install", "--dry-run", "--ignore-installed",
             "--report", str(report), "--no-index", "--find-links", str(folder / "wheelhouse"),
             *bundle.target_options(platform, python), "--target", str(tmp_path / "target"),
             f"zivsync{extra}=={VERSION}"],
            check=False, capture_output=True, text=True, env=bundle.offline_environment(), cwd=tmp_path, timeout=300)
        assert done.returncode == 0, f"{platform} Python {python}:\n{done.stdout}{done.stderr}"
        answer = json.loads(report.read_text(encoding="utf-8"))
        # the markers were the target's: pip from Linux would leave winkerberos & co. out of Windows
        assert answer["environment"]["sys_platform"] == ("win32" if platform == "win_amd64" else "linux")
        assert answer["environment"]["python_version"] == python
        files = {Path(item["download_info"]["url"].removeprefix("file://")) for item in answer["install"]}
        assert {f.parent for f in files} == {folder / "wheelhouse"}
        used |= {f.name for f in files}
        got = {item["metadata"]["name"].lower() for item in answer["install"]}
        resolved |= got
        assert "zivsync" in got and "gssapi" not in got
        if platform == "win_amd64":
            assert WINDOWS_ONLY <= got, WINDOWS_ONLY - got
        else:
            assert not WINDOWS_ONLY & got
    assert set(wheel_names(folder)) == used, "wheels no Python needs"
    assert not (TEST_ONLY - resolved) & {n.split("-")[0].lower() for n in used}, "a test dependency"
    assert platform == "linux_x86_64" or set(kerberos) == set(bundle.PYTHONS)  # winkerberos on every Python


# -- the Linux bundle, installed with no index to reach --------------------------------------------


def offline_environment() -> dict[str, str]:
    """No pip configuration, no index, and a proxy that refuses every connection."""
    environment = {k: v for k, v in os.environ.items()
                   if not k.upper().startswith(("PIP_", "ZIVSYNC_", "PYTHON"))
                   and k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
    environment.update(PIP_NO_INDEX="1", PIP_CONFIG_FILE=os.devnull, http_proxy=DEAD_PROXY,
                       https_proxy=DEAD_PROXY, HTTP_PROXY=DEAD_PROXY, HTTPS_PROXY=DEAD_PROXY, ALL_PROXY=DEAD_PROXY)
    return environment


def no_network() -> list[str]:
    """As root (CI), a network namespace of its own: no interface but a loopback that is down."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "--net", "true"], check=False, capture_output=True).returncode == 0:
        return [unshare, "--net"]
    return []


def install_sh(folder: Path, *args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*no_network(), "bash", str(folder / "install.sh"), *map(str, args)],
                          check=False, capture_output=True, text=True, env=offline_environment(), cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def installed(unpacked, tmp_path_factory) -> Path:
    """The Linux bundle installed into a folder outside the checkout, pip with no index to reach."""
    folder = unpacked["linux_x86_64"]
    sums = subprocess.run(["sha256sum", "--check", "--quiet", "--strict", "SHA256SUMS"], cwd=folder,
                          check=False, capture_output=True, text=True)
    assert sums.returncode == 0, sums.stdout + sums.stderr
    target = tmp_path_factory.mktemp("opt") / "zivsync"
    done = install_sh(folder, target, "--python", sys.executable, cwd=target.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Checking the files against SHA256SUMS" in done.stdout
    assert f"zivsync {VERSION} is installed in {target}" in done.stdout
    assert f'export PATH="{target}/bin:$PATH"' in done.stdout
    return target


def test_the_linux_bundle_installs_offline_with_a_launcher_for_every_executable(installed, tmp_path):
    assert sorted(p.name for p in (installed / "bin").iterdir()) == SCRIPTS
    for launcher in (installed / "bin").iterdir():
        assert os.access(launcher, os.X_OK)
    plain = {k: v for k, v in os.environ.items() if not k.startswith(("ZIVSYNC_", "PYTHON"))}
    version = subprocess.run([str(installed / "bin" / "zivsync"), "--version"], check=False, capture_output=True,
                             text=True, cwd=tmp_path, env=plain)
    assert version.returncode == 0 and version.stdout.strip() == f"zivsync {VERSION}", version.stderr
    diff_help = subprocess.run([str(installed / "bin" / "zivsync-diff"), "--help"], check=False,
                               capture_output=True, text=True, cwd=tmp_path, env=plain)
    assert diff_help.returncode == 0 and "Usage: zivsync-diff [OPTIONS]" in diff_help.stdout, diff_help.stderr
    # zivsync is the installed one, not the checkout's; and the Kerberos extra is not there (no wheel)
    code = "import importlib.util, stages; print(stages.__file__); print(importlib.util.find_spec('gssapi') is None)"
    where = subprocess.run([str(installed / "venv" / "bin" / "python"), "-c", code], check=False,
                           capture_output=True, text=True, cwd=tmp_path, env=plain)
    site = installed / "venv" / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    assert where.stdout.split() == [str(site / "stages" / "__init__.py"), "True"], where.stderr


def test_the_demos_first_sync_runs_from_the_installed_bundle(installed, tmp_path, monkeypatch):
    """Step 1 of zivsync demo (stages/operator/demo.py), each stage the installed launcher: read AD from
    its LDIF export, validate, snapshot a sandbox holding Fabrikam's Zivver, normalize, diff, push --apply."""
    monkeypatch.setattr(helpers, "executable", lambda name: [str(installed / "bin" / name)])
    config = {"ZIVSYNC_CONFIG": str(EXAMPLES / "zivsync.toml")}
    run1 = tmp_path / "run1"
    run1.mkdir()
    exchange = EXAMPLES / "directory-exchange.jsonl"
    with helpers.Sandbox("--seed", EXAMPLES / "current.jsonl", "--rate-limit", "1000", "--rate-window", "1",
                         claimed=FABRIKAM_ZIVVER) as sandbox:
        env = {**sandbox.env, **config}
        for name, *args in [
            ("zivsync-extract-ldap", "--config", EXAMPLES / "zivsync.toml", "--ldif", EXAMPLES / "fabrikam.ldif",
             "-o", run1 / "directory-ldap.jsonl"),
            ("zivsync-validate", run1 / "directory-ldap.jsonl", exchange),
            ("zivsync-snapshot", "-q", "-o", run1 / "current.jsonl"),
            ("zivsync-normalize", "-q", "-i", run1 / "directory-ldap.jsonl", "-i", exchange,
             "-o", run1 / "desired.jsonl"),
            ("zivsync-diff", "-i", run1 / "desired.jsonl", "--current", run1 / "current.jsonl", "--state",
             tmp_path / "state", "-o", run1 / "plan.jsonl"),
            ("zivsync-push", "-q", "-i", run1 / "plan.jsonl", "--apply", "--state", tmp_path / "state", "-o",
             run1 / "results.jsonl", "--rate-limit", "1000", "--rate-window", "1"),
        ]:
            done = helpers.run(name, *args, env=env, cwd=tmp_path)
            assert done.returncode == 0, f"{name}: {done.stderr}"
    planned = [r for r in read_jsonl(run1 / "plan.jsonl") if r["type"] == "change"]
    applied = [r for r in read_jsonl(run1 / "results.jsonl") if r.get("status") == "applied"]
    assert planned and len(applied) == len(planned)


def test_install_sh_refuses_a_changed_bundle_an_unknown_wheel_and_a_python_it_has_no_wheels_for(unpacked, tmp_path):
    changed = tmp_path / "changed"
    shutil.copytree(unpacked["linux_x86_64"], changed, symlinks=True)
    wheel = changed / "wheelhouse" / f"zivsync-{VERSION}-py3-none-any.whl"
    wheel.write_bytes(wheel.read_bytes() + b"\0")
    done = install_sh(changed, tmp_path / "target", "--python", sys.executable, cwd=tmp_path)
    assert done.returncode == 1 and "does not match SHA256SUMS" in done.stderr, done.stdout + done.stderr
    assert not (tmp_path / "target").exists()  # nothing installed

    stray = tmp_path / "stray"
    shutil.copytree(unpacked["linux_x86_64"], stray, symlinks=True)
    (stray / "wheelhouse" / "evil-1.0-py3-none-any.whl").write_bytes(b"PK")
    done = install_sh(stray, tmp_path / "target", "--python", sys.executable, cwd=tmp_path)
    assert done.returncode == 1 and "wheelhouse/evil-1.0-py3-none-any.whl is not in SHA256SUMS" in done.stderr
    assert not (tmp_path / "target").exists()

    old = tmp_path / "python3.10"
    old.write_text("#!/bin/sh\necho '3.10 x86_64 64'\n", encoding="utf-8")
    old.chmod(0o755)
    done = install_sh(unpacked["linux_x86_64"], tmp_path / "target", "--python", old, cwd=tmp_path)
    assert done.returncode == 1 and "is Python 3.10; this bundle has wheels for Python 3.13, 3.12, 3.11 only" \
        in done.stderr, done.stdout + done.stderr
    assert not (tmp_path / "target").exists()


def test_install_sh_replaces_an_earlier_install_only_when_told(installed, unpacked, tmp_path):
    again = install_sh(unpacked["linux_x86_64"], installed, "--python", sys.executable, cwd=tmp_path)
    assert again.returncode == 1 and "already holds zivsync: add --force" in again.stderr
    assert subprocess.run(["bash", "-n", str(unpacked["linux_x86_64"] / "install.sh")], check=False).returncode == 0
    usage = subprocess.run(["bash", str(unpacked["linux_x86_64"] / "install.sh"), "--help"], check=False,
                           capture_output=True, text=True)
    assert usage.returncode == 0 and "--python PYTHON" in usage.stdout and "--force" in usage.stdout


# -- install.ps1: documented cmdlets, options that exist ------------------------------------------

LEARN = operator_scripts.LEARN
CMDLETS = {  # the cmdlets install.ps1 uses besides those of scripts/windows/*.ps1 (test_operator_scripts)
    "Get-FileHash": (LEARN + "microsoft.powershell.utility/get-filehash",
                     {"Path", "LiteralPath", "InputStream", "Algorithm"}),
    "Remove-Item": (LEARN + "microsoft.powershell.management/remove-item",
                    {"Path", "LiteralPath", "Filter", "Include", "Exclude", "Recurse", "Force", "Credential",
                     "Stream", "WhatIf", "Confirm"}),
    "Set-Content": (LEARN + "microsoft.powershell.management/set-content",
                    {"Path", "LiteralPath", "Value", "Encoding", "NoNewline", "Force", "PassThru", "Filter",
                     "Include", "Exclude", "Credential", "AsByteStream", "Stream", "WhatIf", "Confirm"}),
    "Set-StrictMode": (LEARN + "microsoft.powershell.core/set-strictmode", {"Version", "Off"}),
}
# https://docs.python.org/3/using/cmdline.html, and the py launcher's (using/windows.html): -X.Y, -0
PYTHON_OPTIONS = {"-c", "-m", "-I", "-E", "-s", "-S", "-u", "-B", "-X", "-W", "-V", "--version"}
PY_LAUNCHER = re.compile(r"-\d+(\.\d+)?|-0p?|--list(-paths)?")


def options_in_help(*command: str) -> set[str]:
    done = subprocess.run([sys.executable, *command, "--help"], capture_output=True, text=True, check=True)
    return set(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", done.stdout))


@pytest.fixture(scope="module")
def install_ps1(unpacked) -> str:
    text = (unpacked["win_amd64"] / "install.ps1").read_text(encoding="utf-8")
    assert text.isascii()  # Windows PowerShell 5.1 reads a script without a BOM in the ANSI code page
    return text


def test_install_ps1_brackets_balance(install_ps1):
    """No PowerShell here to parse it: at least every (, { and [ outside strings and comments closes."""
    code = operator_scripts.STRING.sub("''", "\n".join(operator_scripts.powershell_statements(install_ps1)))
    stack = []
    for char in code:
        if char in "({[":
            stack.append({"(": ")", "{": "}", "[": "]"}[char])
        elif char in ")}]":
            assert stack and stack.pop() == char, code
    assert not stack


def test_install_ps1_uses_only_documented_cmdlets_and_parameters(install_ps1, monkeypatch):
    monkeypatch.setattr(operator_scripts, "CMDLETS", {**operator_scripts.CMDLETS, **CMDLETS})
    assert operator_scripts.undocumented(install_ps1) == set()
    template = (ROOT / "scripts" / "bundle" / "install.ps1").read_text(encoding="utf-8")
    assert template.isascii() and operator_scripts.undocumented(template) == set()
    for cmdlet, (page, _) in CMDLETS.items():
        assert page in template, f"install.ps1 should name {cmdlet}'s page"


def native_calls(text: str) -> list[tuple[str, list[str]]]:
    """(program, arguments) of every Python install.ps1 runs: `& $pythonExe ...`, `& $venvPython ...`
    and `Invoke-Python PROGRAM @(ARGUMENTS)`; a string argument as it is written, quotes and all."""
    calls = []
    word = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"`]|`.)*\"|@\(|\)|[^\s()]+")
    for statement in operator_scripts.powershell_statements(text):
        invoke = re.search(r"\bInvoke-Python\s+('[^']*'|\$\w+|\([^)]*\))\s+@\((.*?)\)", statement)
        native = re.search(r"&\s+\$(pythonExe|venvPython)\s+(.*)$", statement)
        if invoke:
            calls.append((invoke[1], [w.strip() for w in invoke[2].split(",")]))
        elif native:
            calls.append(("$" + native[1], [w for w in word.findall(native[2]) if w not in ("@(", ")")]))
    return calls


def unquoted(argument: str) -> str:
    return argument[1:-1] if argument[:1] in "'\"" and argument[-1:] == argument[:1] else argument


def test_install_ps1_uses_only_py_python_venv_and_pip_options_that_exist(install_ps1):
    pip_general = options_in_help("-m", "pip")
    pip_install = options_in_help("-m", "pip", "install")
    venv = options_in_help("-m", "venv")
    calls = native_calls(install_ps1)
    seen = set()
    for program, arguments in calls:
        words = [unquoted(a) for a in arguments]
        if program == "'py.exe'":  # the launcher's version first: "-$Python", "-$candidate"
            assert re.fullmatch(r"-\$(Python|candidate)", words[0]), words
            words = words[1:]
            seen.add("py -X.Y")
        if "zivsync.exe" in program:
            assert words == ["--version"]
            continue
        i = 0
        while i < len(words) and words[i].startswith("-"):  # the interpreter's own options
            assert words[i] in PYTHON_OPTIONS, (program, words[i])
            if words[i] in ("-c", "-m"):
                break
            i += 1
        assert words[i] in ("-c", "-m"), (program, words)
        if words[i] == "-c":
            assert words[i + 1] in ("$WhereAmI", "$WhichVersion")
            seen.add("-c")
            continue
        module, rest = words[i + 1], words[i + 2:]
        if module == "venv":
            assert all(w in venv for w in rest if w.startswith("-")), rest
            assert rest == ["$Target"]
            seen.add("venv")
        elif module == "pip":
            command = next(w for w in rest if not w.startswith("-"))
            general, after = rest[:rest.index(command)], rest[rest.index(command) + 1:]
            assert command == "install" and all(w in pip_general for w in general), rest
            assert all(w in pip_install | pip_general for w in after if w.startswith("-")), after
            assert "--no-index" in after and after[after.index("--find-links") + 1] == "$Wheelhouse"
            assert after[after.index("--only-binary") + 1] == ":all:"
            seen.add("pip install")
        else:
            raise AssertionError(f"an unexpected module: {module}")
    assert seen == {"py -X.Y", "-c", "venv", "pip install"}
    # "-$Python" only ever holds a version: install.ps1 takes -Python 3.12 to py.exe only when it is one
    assert re.search(r"if \(\$Python -match '\^\\d\+\\\.\\d\+\$'\)", install_ps1)
    assert all(re.fullmatch(r"3\.\d+", v) for v in installer_list(install_ps1, "Pythons"))


def test_install_ps1_checks_sha256sums_first_and_writes_a_launcher_for_every_executable(install_ps1):
    code = "\n".join(operator_scripts.powershell_statements(install_ps1))
    checked = code.index("Get-FileHash -LiteralPath $file -Algorithm SHA256")
    assert checked < code.index("& $pythonExe -m venv $Target") < code.index("& $venvPython -m pip")
    assert "if ($actual -ne $expected)" in code and 'ContainsKey("wheelhouse/$($wheel.Name)")' in code
    assert installer_list(install_ps1, "Commands") == SCRIPTS
    assert installer_list(install_ps1, "KerberosPythons") == installer_list(install_ps1, "Pythons")
    assert re.search(r'Set-Content -LiteralPath \(Join-Path \$binFolder "\$command\.cmd"\) -Encoding Ascii\s+'
                     r'-Value "@`"%~dp0\.\.\\Scripts\\\$command\.exe`" %\*"', code)
    assert "[Environment]::SetEnvironmentVariable('PIP_CONFIG_FILE', 'nul')" in code  # os.devnull on Windows
    assert f"$Version = '{VERSION}'" in code


def test_the_offline_install_page_has_the_checksum_step_and_the_installers_options():
    page = (ROOT / "docs" / "offline-install.md").read_text(encoding="utf-8")
    assert page.startswith("# Installing on a server without internet access\n")
    assert "Get-FileHash -LiteralPath $zip -Algorithm SHA256" in page
    assert "sha256sum --check --ignore-missing zivsync-0.1.0-SHA256SUMS" in page
    assert "make bundle" in page and "install.ps1 'C:\\Program Files\\zivsync'" in page
    assert "bash install.sh /opt/zivsync" in page
    ps1 = (ROOT / "scripts" / "bundle" / "install.ps1").read_text(encoding="utf-8")
    declared = set(re.findall(r"\[(?:string|switch)\] \$(\w+)", ps1))
    for option in re.findall(r"`(-[A-Z]\w+)[ `]", page):
        if option not in ("-Force", "-Python"):
            continue
        assert option[1:] in declared
    sh = (ROOT / "scripts" / "bundle" / "install.sh").read_text(encoding="utf-8")
    for option in set(re.findall(r"`(--[a-z]+)", page)) & {"--python", "--force"}:
        assert f"        {option})" in sh
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^bundle:.*\n\t.*scripts/bundle\.py", makefile, re.MULTILINE)
