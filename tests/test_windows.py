"""Issue 17: Windows behaviour, simulated on Linux (a fake sys.platform, an os.replace that
raises as Windows does, a console in an OEM code page), each against the code path that runs
there. What cannot be simulated is listed in the issue's closing note."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import API_KEY, Sandbox, account, read_jsonl, run, write_stream

from stages import cli
from stages.core import files
from stages.core.errors import ExitStatus, ZivsyncError
from stages.umbrella import command_of, commands


def system_trust_undone(monkeypatch) -> None:
    """A push run in this process trusts the system's store process-wide (truststore injected):
    undone, so that the tests after it see ssl as it was."""
    import truststore

    from stages.core import tls

    truststore.extract_from_ssl()
    monkeypatch.setattr(tls, "_SYSTEM_TRUST", False)


def sharing_violation_on(target_name: str, times: int | None):
    """os.replace as Windows behaves while another program holds ``target_name`` open: ERROR_
    SHARING_VIOLATION (winerror 32) as PermissionError, ``times`` times (None: for ever)."""
    real, failed = os.replace, []

    def replace(source, target):
        if Path(target).name == target_name and (times is None or len(failed) < times):
            failed.append(target)
            raise PermissionError(13, "The process cannot access the file because it is being used by another "
                                      "process", str(target))
        return real(source, target)

    return replace, failed


def test_a_file_held_open_on_windows_is_replaced_once_it_is_let_go(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "platform", "win32")
    replace, failed = sharing_violation_on("summary.json", times=3)
    monkeypatch.setattr(os, "replace", replace)
    slept = []
    (tmp_path / "new").write_text("new")
    files.replace(tmp_path / "new", tmp_path / "summary.json", sleep=slept.append)
    assert (tmp_path / "summary.json").read_text() == "new" and len(failed) == 3
    assert slept == [files.FIRST_WAIT, files.FIRST_WAIT * 2, files.FIRST_WAIT * 4]


def test_a_file_held_open_for_good_fails_clearly_and_posix_does_not_wait(tmp_path, monkeypatch):
    replace, failed = sharing_violation_on("mapping.json", times=None)
    monkeypatch.setattr(os, "replace", replace)
    (tmp_path / "new").write_text("new")
    with pytest.raises(PermissionError):  # POSIX: a real permission problem, said at once
        files.replace(tmp_path / "new", tmp_path / "mapping.json", sleep=lambda s: None)
    assert len(failed) == 1
    monkeypatch.setattr(sys, "platform", "win32")
    with pytest.raises(ZivsyncError) as raised:
        files.replace(tmp_path / "new", tmp_path / "mapping.json", sleep=lambda s: None)
    assert f"cannot replace {tmp_path / 'mapping.json'}: another program keeps it open" in str(raised.value)
    assert "virus scanner" in str(raised.value) and len(failed) == 1 + files.ATTEMPTS


def test_push_keeps_the_record_of_what_zivver_accepted_when_the_mapping_cannot_be_saved(tmp_path, monkeypatch):
    """The result line is written before the mapping is saved: a mapping held open for good (on
    Windows) stops push with exit 2 (changes were applied), every applied change recorded."""
    with Sandbox("--rate-limit", "1000") as sandbox:
        desired = write_stream(tmp_path / "desired.jsonl", "accounts",
                               [account(f"hire{n}@example.com", name=f"Hire {n}") for n in range(3)])
        for name, args in [("zivsync-snapshot", ["-o", tmp_path / "current.jsonl"]),
                           ("zivsync-diff", ["-i", desired, "--current", tmp_path / "current.jsonl",
                                             "--claimed-domain", "example.com", "--state", tmp_path / "state",
                                             "-o", tmp_path / "plan.jsonl"])]:
            done = run(name, *args, env=sandbox.env)
            assert done.returncode == 0, done.stderr
        import filelock  # noqa: F401 (imported as on Linux before the platform is Windows': it picks its lock then)

        monkeypatch.setattr(sys, "platform", "win32")
        monkeypatch.setattr(files, "FIRST_WAIT", 0.001)
        replace, failed = sharing_violation_on("mapping.json", times=None)
        monkeypatch.setattr(os, "replace", replace)
        for key, value in sandbox.env.items():
            monkeypatch.setenv(key, value)
        try:
            code = cli.run(command_of("push"), ["-i", str(tmp_path / "plan.jsonl"), "--apply", "--state",
                                                str(tmp_path / "state"), "--rate-limit", "1000", "-o",
                                                str(tmp_path / "results.jsonl")], family=commands)
        finally:
            system_trust_undone(monkeypatch)
    assert code == ExitStatus.PARTIAL and failed
    records = read_jsonl(tmp_path / "results.jsonl")
    applied = [r for r in records if r["type"] == "result" and r["status"] == "applied"]
    assert len(applied) == 3  # every change Zivver accepted is on record, though the mapping is not
    assert API_KEY not in str(records)


@pytest.mark.parametrize("oem", ["cp437", "cp850"])
def test_a_stream_piped_through_powershells_oem_decoding_arrives_unchanged(tmp_path, oem):
    """Windows PowerShell 5.1 (and 7.0-7.3) decode a native program's output in the console's
    OEM code page and encode it again for the next program (or for > in UTF-16): "Jürgen Weiß"
    came through as "J├╝rgen Wei├ƒ", valid JSON, and diff planned renames. On standard output
    every stream is now ASCII (non-ASCII as \\u escapes): the round trip changes nothing."""
    from helpers import EXAMPLES

    args = ["-i", EXAMPLES / "directory-ldap.jsonl", "--claimed-domain", "fabrikam.example",
            "--claimed-domain", "fabrikam.nl"]
    piped = run("zivsync-normalize", *args)
    assert piped.returncode == 0 and piped.stdout.isascii(), piped.stderr
    written = run("zivsync-normalize", *args, "-o", tmp_path / "desired.jsonl")
    assert written.returncode == 0
    as_file = (tmp_path / "desired.jsonl").read_bytes()
    assert not as_file.isascii()  # a file zivsync opens itself stays UTF-8: "Jürgen" in it

    def through_powershell(data: bytes) -> bytes:  # decoded as OEM, handed on as UTF-8 (PS 7.0-7.3)
        return data.decode(oem).encode("utf-8")

    def accounts(data: bytes) -> list[dict]:
        return [r for r in read_jsonl(data) if r["type"] == "account"]

    assert accounts(through_powershell(piped.stdout)) == accounts(as_file)
    assert any("Jürgen" in a["name"] for a in accounts(as_file))
    assert accounts(through_powershell(as_file)) != accounts(as_file)  # what UTF-8 on the pipe suffered
    again = tmp_path / "again.jsonl"
    again.write_bytes(through_powershell(piped.stdout))
    validated = run("zivsync-validate", again)
    assert validated.returncode == 0, validated.stderr


def test_help_redirected_to_a_file_in_an_ansi_code_page_is_written(tmp_path):
    """Windows gives a redirected stdout its ANSI code page (cp1252, no "→"): --help > help.txt
    raised UnicodeEncodeError for every command whose help shows "before → after"."""
    from helpers import executable

    for name in ("zivsync-push", "zivsync-report", "zivsync-diff"):
        with open(tmp_path / "help.txt", "wb") as out:
            done = subprocess.run(executable(name) + ["--help"], stdout=out, stderr=subprocess.PIPE,
                                  env={**os.environ, "PYTHONIOENCODING": "cp1252"}, timeout=60)
        assert done.returncode == 0 and b"UnicodeEncodeError" not in done.stderr, done.stderr
        assert (tmp_path / "help.txt").read_text(encoding="utf-8").startswith("Usage:")


def test_a_reader_gone_on_windows_ends_the_stage_quietly():
    """On Windows a pipe whose reader closed (| Select-Object -First 5) fails with EINVAL, not
    BrokenPipeError: the stage ends quietly with 0, as on POSIX, not with a traceback."""
    from helpers import EXAMPLES

    driver = (
        "import errno, io, sys\n"
        "from stages import cli\n"
        "from stages.umbrella import command_of, commands\n"
        "command = command_of('normalize')\n"
        "sys.platform = 'win32'  # imported as on Linux; from here on, Windows' rules\n"
        "import os, stat\n"
        "read_end, write_end = os.pipe()\n"
        "class Gone(io.RawIOBase):  # a pipe whose reader left, as Windows reports it\n"
        "    def writable(self): return True\n"
        "    def fileno(self): return write_end\n"
        "    def write(self, data):\n"
        "        if stat.S_ISFIFO(os.fstat(write_end).st_mode):\n"
        "            raise OSError(errno.EINVAL, 'Invalid argument')\n"
        "        return os.write(write_end, data)  # silenced: the null device\n"
        "sys.stdout = io.TextIOWrapper(io.BufferedWriter(Gone()), encoding='utf-8')\n"
        f"sys.exit(cli.run(command, ['-i', {str(EXAMPLES / 'directory-ldap.jsonl')!r}, "
        "'--claimed-domain', 'fabrikam.example'], family=commands))\n")
    done = subprocess.run([sys.executable, "-c", driver], capture_output=True, timeout=60)
    assert done.returncode == 0 and b"Traceback" not in done.stderr, done.stderr


CONFIG = 'claimed_domains = ["fabrikam.example"]\n# Jürgen\'s config\n'


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16"])  # utf-16: with its BOM, as Notepad's "Unicode"
def test_a_config_saved_by_a_windows_editor_is_read(tmp_path, encoding):
    from helpers import EXAMPLES

    config = tmp_path / "zivsync.toml"
    config.write_bytes(CONFIG.encode(encoding))
    done = run("zivsync-normalize", "--config", config, "-i", EXAMPLES / "directory-ldap.jsonl",
               "-o", tmp_path / "desired.jsonl")
    assert done.returncode == 0, done.stderr
    assert read_jsonl(tmp_path / "desired.jsonl")[0]["claimed_domains"] == ["fabrikam.example"]


def test_a_config_in_an_ansi_code_page_or_with_a_windows_path_in_double_quotes_says_what_to_do(tmp_path):
    config = tmp_path / "zivsync.toml"
    config.write_bytes(CONFIG.encode("cp1252"))
    ansi = run("zivsync-normalize", "--config", config, "-i", "-", input=b"")
    assert ansi.returncode == 1 and "Traceback" not in ansi.stderr
    assert f"{config}:2: is not UTF-8 (byte 0xfc" in ansi.stderr and "save the file as UTF-8" in ansi.stderr
    config.write_text('claimed_domains = ["fabrikam.example"]\n[run]\nruns_dir = "D:\\zivsync\\runs"\n')
    escaped = run("zivsync", "run", "--config", config)
    assert escaped.returncode == 1 and "is not valid TOML" in escaped.stderr
    assert "write it in single quotes, runs_dir = 'D:\\zivsync\\runs'" in escaped.stderr, escaped.stderr
    config.write_text('claimed_domains = ["fabrikam.example"]\n[run]\nruns_dir = "D:\\\\zivsync\\runs"\n')
    carriage = run("zivsync", "run", "--config", config)  # valid TOML: "\r" is a carriage return
    assert carriage.returncode == 1, carriage.stderr
    assert "[run] runs_dir: holds a control character (\\r)" in carriage.stderr, carriage.stderr
    assert "write Windows paths in single quotes" in carriage.stderr


def test_kerberos_hints_name_kinit_only_where_there_is_one(monkeypatch):
    from stages.sources.activedirectory import kerberos_ticket_hint

    assert "kinit" in kerberos_ticket_hint()
    monkeypatch.setattr(sys, "platform", "win32")
    windows = kerberos_ticket_hint()
    assert "kinit" not in windows and "SSPI" in windows and "the account zivsync runs as" in windows


def test_https_without_a_ca_file_trusts_what_the_operating_system_trusts(tmp_path):
    """An internal CA or a TLS-inspecting proxy that the system trusts (on Windows, its
    certificate store) is trusted without --ca-file, as LDAPS and SMTP already were. Here the
    system's store is OpenSSL's, pointed at the fake's CA with SSL_CERT_FILE; certifi's bundle
    alone (requests' default) would refuse it."""
    from fake_microsoft import FakeMicrosoft, Tenant

    with FakeMicrosoft(tmp_path / "fake", Tenant.generate(mailboxes=3, shared=1, groups=1, seed=1)) as fake:
        args = ["--tenant", fake.tenant.tenant_id, "--client-id", fake.client_id, "--authority-host", fake.url,
                "--exchange-url", fake.exchange_url, "-o", tmp_path / "exo.jsonl"]
        secret = {"ZIVSYNC_EXO_CLIENT_SECRET": fake.client_secret}
        trusted = run("zivsync-extract-exo", *args, env={**secret, "SSL_CERT_FILE": str(fake.ca_file)})
        untrusted = run("zivsync-extract-exo", *args, env=secret)
    assert trusted.returncode == 0, trusted.stderr
    assert untrusted.returncode == ExitStatus.UNREACHABLE
    assert "checked against the system CA store" in untrusted.stderr, untrusted.stderr


def test_a_ca_file_is_the_only_trust_and_no_ca_file_means_the_systems(monkeypatch):
    import ssl

    from stages.core import tls

    monkeypatch.setattr(tls, "_SYSTEM_TRUST", False)
    original = ssl.SSLContext
    try:
        assert tls.system_trust("corp-ca.pem") == "corp-ca.pem" and ssl.SSLContext is original
        assert tls.system_trust(False) is False and ssl.SSLContext is original
        assert tls.system_trust(True) is True and ssl.SSLContext is not original
    finally:
        import truststore

        truststore.extract_from_ssl()
    assert ssl.SSLContext is original


def test_push_takes_the_state_folders_lock_itself_whoever_started_it(tmp_path):
    """Issue 17: a push by hand while the nightly run applies (holding the state folder's lock)
    refuses before sending anything; the run's own push is told the run holds it."""
    import filelock

    from stages.core.account_mapping import HELD_BY_RUN, LOCK_FILE

    with Sandbox("--rate-limit", "1000") as sandbox:
        desired = write_stream(tmp_path / "desired.jsonl", "accounts", [account("hire@example.com", name="Hire")])
        for name, args in [("zivsync-snapshot", ["-o", tmp_path / "current.jsonl"]),
                           ("zivsync-diff", ["-i", desired, "--current", tmp_path / "current.jsonl",
                                             "--claimed-domain", "example.com", "--state", tmp_path / "state",
                                             "-o", tmp_path / "plan.jsonl"])]:
            assert run(name, *args, env=sandbox.env).returncode == 0
        push = ["zivsync-push", "-i", tmp_path / "plan.jsonl", "--apply", "--state", tmp_path / "state",
                "--rate-limit", "1000"]
        lock = tmp_path / "state" / LOCK_FILE
        (tmp_path / "state").mkdir(exist_ok=True)
        with filelock.FileLock(str(lock)):  # the nightly run, applying
            refused = run(*push, env=sandbox.env)
            assert refused.returncode == 1, refused.stderr
            assert f"another zivsync run or push holds {lock}" in refused.stderr
            assert sandbox.control("GET", "/_sandbox/stats")["writes"] == 0  # nothing sent
            as_its_stage = run(*push, env={**sandbox.env, HELD_BY_RUN: str(lock.resolve())})
        assert as_its_stage.returncode == 0, as_its_stage.stderr
        assert sandbox.control("GET", "/_sandbox/stats")["writes"] == 1


class FakeKernel32:
    """kernel32 as the Job Object code calls it, recording each call (a process handle is a
    number Popen holds as ``_handle`` on Windows)."""

    def __init__(self, console: int = 0):
        self.calls, self.console, self.peak = [], console, 300 * 2**20

    def GetConsoleWindow(self):
        return self.console

    def CreateJobObjectW(self, attributes, name):
        self.calls.append(("CreateJobObjectW", attributes, name))
        return 4242

    def SetInformationJobObject(self, job, kind, info, size):
        from stages.core.winproc import JOBOBJECT_EXTENDED_LIMIT_INFORMATION

        limits = ctypes.cast(info, ctypes.POINTER(JOBOBJECT_EXTENDED_LIMIT_INFORMATION)).contents
        self.calls.append(("SetInformationJobObject", job, kind, limits.BasicLimitInformation.LimitFlags, size))
        return 1

    def AssignProcessToJobObject(self, job, process):
        self.calls.append(("AssignProcessToJobObject", job, process))
        return 1

    def QueryInformationJobObject(self, job, kind, info, size, returned):
        from stages.core.winproc import JOBOBJECT_EXTENDED_LIMIT_INFORMATION

        ctypes.cast(info, ctypes.POINTER(JOBOBJECT_EXTENDED_LIMIT_INFORMATION)).contents.PeakProcessMemoryUsed = self.peak
        self.calls.append(("QueryInformationJobObject", job, kind))
        return 1

    def CloseHandle(self, handle):
        self.calls.append(("CloseHandle", handle))
        return 1


def test_on_windows_each_stage_is_in_a_kill_on_close_job_without_a_window(tmp_path, monkeypatch):
    """A run started by Task Scheduler (no console): each stage starts with CREATE_NO_WINDOW and
    is put in its own Job Object with KILL_ON_JOB_CLOSE, whose handle the run holds until the
    stage ends (and Windows closes when the run dies); its peak memory comes from the job."""
    from stages.core import winproc
    from stages.operator import nightly

    kernel32 = FakeKernel32(console=0)
    started = []
    real_popen = subprocess.Popen

    def popen(*args, creationflags=0, **kwargs):  # Linux's Popen takes no creation flags
        started.append(creationflags)
        process = real_popen(*args, **kwargs)
        process._handle = 777
        return process

    monkeypatch.setattr(winproc, "_kernel32", lambda: kernel32)
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(subprocess, "Popen", popen)
    monkeypatch.delattr(os, "wait4")  # Windows has none: the job gives the peak
    usage: dict = {}
    code = nightly.spawn(nightly.Step("validate", ("--help",), None), echo=False, usage=usage)
    assert code == 0 and started == [winproc.CREATE_NO_WINDOW | winproc.CREATE_NEW_PROCESS_GROUP]
    size = ctypes.sizeof(winproc.JOBOBJECT_EXTENDED_LIMIT_INFORMATION)
    assert kernel32.calls[:3] == [("CreateJobObjectW", None, None),
                                  ("SetInformationJobObject", 4242, 9, winproc.JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE, size),
                                  ("AssignProcessToJobObject", 4242, 777)]
    assert kernel32.calls[-1] == ("CloseHandle", 4242) and usage == {"peak_mb": 300.0}
    kernel32.console = 1  # a run in a console window: its stages share it, each its own process group
    assert winproc.creation_flags() == winproc.CREATE_NEW_PROCESS_GROUP


def test_the_job_structure_is_laid_out_as_windows_declares_it():
    """JOBOBJECT_EXTENDED_LIMIT_INFORMATION is 144 bytes on 64-bit Windows (winnt.h): LimitFlags
    at offset 16, PeakProcessMemoryUsed at 128; a wrong layout would set another limit."""
    from stages.core import winproc

    info = winproc.JOBOBJECT_EXTENDED_LIMIT_INFORMATION
    if ctypes.sizeof(ctypes.c_void_p) == 8:
        assert ctypes.sizeof(info) == 144
        assert winproc.JOBOBJECT_BASIC_LIMIT_INFORMATION.LimitFlags.offset == 16
        assert info.PeakProcessMemoryUsed.offset == 128


def test_ctrl_break_stops_a_command_as_windows_sends_it(monkeypatch):
    """SIGBREAK exists on Windows only: simulated with another signal under its name."""
    import signal
    import time

    from stages.core.errors import Interrupted

    monkeypatch.setattr(signal, "SIGBREAK", signal.SIGUSR1, raising=False)
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        cli._stop_on_sigterm()
        with pytest.raises(Interrupted) as stopped:
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(2)
        assert stopped.value.exit_code == 128 + signal.SIGUSR1 and stopped.value.what == "stopped by Ctrl-Break"
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)


def test_einval_is_a_reader_gone_only_when_writing_the_pipe_and_signals_held_include_ctrl_break(monkeypatch):
    import errno
    import signal

    from stages.core.errors import signals_held

    monkeypatch.setattr(sys, "platform", "win32")
    assert cli.reader_gone(OSError(errno.EINVAL, "Invalid argument"))
    assert not cli.reader_gone(OSError(errno.EINVAL, "Invalid argument", "plan?.jsonl"))  # a bad file name
    monkeypatch.setattr(signal, "SIGBREAK", signal.SIGUSR1, raising=False)
    before = signal.getsignal(signal.SIGUSR1)
    with signals_held():
        assert signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN  # a second Ctrl-Break waits
    assert signal.getsignal(signal.SIGUSR1) == before
