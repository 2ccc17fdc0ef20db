"""The nightly job behind ``zivsync run``: each stage as its own process, into a run folder.

A run is exactly what a person could repeat by hand: every stage is started as the command
line the log shows (``zivsync extract-ldap --config … -o runs/…/directory-ldap.jsonl``), its
stream lands in the run folder, its log lines in ``run.log``, and ``summary.json`` says what
happened, rewritten after every stage so that even a run killed half-way leaves its account.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Iterator

import filelock
import orjson

from .. import __version__
from ..core import account_mapping, console, files, winproc
from ..core.console import log
from ..core.configfile import read_toml
from ..core.errors import ExitStatus, ZivsyncError
from ..core.stream import GZIP_MAGIC, compressed_if_gz, end_record, opened_stream

#: source name -> the extractor's command; the order in which they run
SOURCES = {"ldap": "extract-ldap", "exo": "extract-exo", "exchange": "extract-exchange"}
RUN_ID = re.compile(r"^\d{8}T\d{6}Z(-\d+)?$")
LOCK_NAME = account_mapping.LOCK_FILE  # in the runs folder and in the state folder
OUTCOMES = {ExitStatus.OK: "ok", ExitStatus.ERROR: "error", ExitStatus.PARTIAL: "partial",
            ExitStatus.REFUSED: "refused", ExitStatus.UNREACHABLE: "unreachable", ExitStatus.PENDING: "pending"}
INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
TERMINATED = 143  # SIGTERM (128 + 15): systemd stopping the job, kill
BROKEN = 149  # Windows' Ctrl-Break (128 + SIGBREAK 21)
STOPPED_BY = {INTERRUPTED: "Ctrl-C", TERMINATED: "SIGTERM", BROKEN: "Ctrl-Break"}


@dataclass(frozen=True)
class Step:
    """One stage of a run: the command and its arguments after ``zivsync``."""

    name: str
    args: tuple[str, ...]
    output: str | None = None  # the stream it writes, a file name in the run folder

    def argv(self) -> list[str]:
        return [self.name, *self.args]


@dataclass
class StepResult:
    name: str
    command: str
    exit_code: int | None = None
    started: str = ""
    seconds: float = 0.0
    output: str | None = None
    complete: bool | None = None
    records: int | None = None
    peak_mb: float | None = None  # the stage's largest resident memory (POSIX)


@dataclass
class Settings:
    config: Path
    runs_dir: Path
    sources: tuple[str, ...]
    apply: bool = False
    keep: int = 30
    lock_wait: float = 0.0
    stage_options: tuple[str, ...] = ()  # --verbose / --log-format, passed on to every stage
    directories: tuple[Path, ...] = ()  # directory streams made elsewhere (a script of your own)
    state_dir: Path | None = None  # the account mapping that diff and push keep (locked too)
    stage_timeout: float = 0.0  # seconds a stage may take; 0: no limit
    quiet: bool = False  # on the console only warnings and errors; run.log keeps everything


def configured_sources(config: dict) -> tuple[str, ...]:
    """The sources whose extractor has a table in the config file, in run order."""
    return tuple(source for source, command in SOURCES.items() if isinstance(config.get(command), dict))


def make_settings(params: dict, *, apply_: bool = False, sources=(), runs_dir=None, keep: int = 0,
                  lock_wait: float = 0.0, directories=(), stage_timeout: float = 0.0,
                  need_source: bool = True, state_dir_of: Callable[[dict, Path], Path | None] = lambda data, path: None
                  ) -> Settings:
    """The run's settings from the command's parameters (those every stage has included).
    ``state_dir_of(config data, config path)``: the state folder push will use (the command knows)."""
    if not params.get("config"):
        raise ZivsyncError("this command needs a config file: --config zivsync.toml (or ZIVSYNC_CONFIG)")
    config = Path(params["config"]).resolve()
    data = read_toml(config)
    found = configured_sources(data)
    chosen = tuple(s for s in SOURCES if s in sources) if sources else found
    left_out = [s for s in found if s not in chosen]
    if apply_ and left_out:
        # normalize would see a complete directory without them: everyone they bring is "gone"
        raise ZivsyncError(f"--source leaves out the configured source(s) {', '.join(left_out)}: applying would "
                           f"suspend everyone only they know. Run without --apply, or remove their table from {config}")
    if need_source and not chosen and not directories:
        raise ZivsyncError(f"{config}: no source configured: add an [extract-ldap], [extract-exo] or "
                           "[extract-exchange] table, or name directory streams with --directory")
    # -q only quiets the console: the stages always log in full into run.log
    forwarded = (("--verbose",) if params.get("verbose") else ()) \
        + (("--log-format", "json") if params.get("log_format") == "json" else ())
    return Settings(config=config, runs_dir=Path(runs_dir).resolve() if runs_dir else config.parent / "runs",
                    sources=chosen, apply=apply_, keep=keep, lock_wait=lock_wait, stage_options=forwarded,
                    directories=tuple(Path(d).resolve() for d in directories),
                    state_dir=state_dir_of(data, config), stage_timeout=stage_timeout,
                    quiet=bool(params.get("quiet")))


def plan_steps(settings: Settings, folder: Path) -> list[Step]:
    """The stages of one run, in order, with the files they read and write (pure)."""
    config = ("--config", str(settings.config))
    common = config + settings.stage_options

    def at(name: str) -> str:
        return str(folder / name)

    directory, current, desired, plan = (stored(f"directory-{source}") for source in settings.sources), \
        stored("current"), stored("desired"), stored("plan")
    directory = list(directory)
    steps = [Step(SOURCES[source], common + ("-o", at(name)), name) for source, name in zip(settings.sources, directory)]
    steps.append(Step("snapshot", common + ("-o", at(current)), current))
    directories = [arg for name in directory + staged_names(settings) for arg in ("-i", at(name))]
    steps.append(Step("normalize", common + tuple(directories) + ("-o", at(desired)), desired))
    steps.append(Step("diff", common + ("-i", at(desired), "--current", at(current), "-o", at(plan)), plan))
    if settings.apply:
        steps.append(Step("push", common + ("-i", at(plan), "--apply", "-o", at(RESULTS)), RESULTS))
    return steps


# A run folder's streams are gzip-compressed (a tenth of the size: thirty kept runs at 100,000
# people were 4 GB plain), except the results: push writes them a line at a time, so that a push
# killed half-way leaves every result it wrote, and they are small.
STORED = ".jsonl.gz"
RESULTS = "results.jsonl"


def stored(stem: str) -> str:
    return stem + STORED


def stream_file(folder: Path, stem: str) -> Path:
    """The stream ``stem`` of a run folder: compressed, or plain as runs before 0.2 kept them."""
    compressed = folder / stored(stem)
    return compressed if compressed.exists() or not (folder / f"{stem}.jsonl").exists() else folder / f"{stem}.jsonl"


def directory_files(folder: Path) -> list[Path]:
    """The directory streams a run read: its sources' (directory-*) and its copies of the
    --directory streams (input-N-*), compressed or plain."""
    return sorted([*(p for p in folder.glob("directory-*.jsonl*") if p.name.endswith((".jsonl", ".jsonl.gz"))),
                   *folder.glob("input-[0-9]*-*")])  # a copy keeps its stream's own name, whatever it is


def staged_names(settings: Settings) -> list[str]:
    """The run folder's copies of the --directory streams: normalize reads those, so the folder
    holds exactly what the run read (compressed as it is kept, the same content)."""
    return [f"input-{number}-{path.name}" + ("" if path.name.lower().endswith(".gz") else ".gz")
            for number, path in enumerate(settings.directories, 1)]


def stage_directories(settings: Settings, folder: Path) -> None:
    for path, name in zip(settings.directories, staged_names(settings)):
        try:
            with open(path, "rb") as source, open(folder / name, "wb") as target:
                compressed = source.read(2) == GZIP_MAGIC
                source.seek(0)
                with contextlib.nullcontext(target) if compressed else compressed_if_gz(target, folder / name) as out:
                    shutil.copyfileobj(source, out, 1 << 20)
        except OSError as error:
            raise ZivsyncError(f"cannot read the directory stream {path}: {error.strerror}") from None


def shown(step: Step) -> str:
    """The command line a person would type to repeat the step, quoted for this system's shell."""
    argv = ["zivsync", *step.argv()]
    return subprocess.list2cmdline(argv) if os.name == "nt" else shlex.join(argv)


# -- the run folder ---------------------------------------------------------------------------


def new_run_folder(runs_dir: Path, now: float | None = None) -> Path:
    """``runs/<UTC timestamp>/``, made here; a suffix only if that second is taken already."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    runs_dir.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 100):
        folder = runs_dir / (stamp if attempt == 1 else f"{stamp}-{attempt}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise ZivsyncError(f"cannot make a run folder in {runs_dir}: {stamp} is taken 99 times")


def run_folders(runs_dir: Path) -> list[Path]:
    """The run folders under ``runs_dir``, oldest first; anything else there is not ours."""
    if not runs_dir.is_dir():
        return []
    return sorted((p for p in runs_dir.iterdir() if p.is_dir() and RUN_ID.match(p.name)), key=_run_order)


def close_abandoned(runs_dir: Path) -> list[Path]:
    """Runs that were ended outright (Task Scheduler's End or time limit, a killed process, a
    power loss) left a summary that still says "running": no handler of theirs could write
    more. The next run (holding the lock, so none of them is running) says so in their summary,
    so that their report and a mail do not show a run as going on for ever."""
    closed = []
    for folder in run_folders(runs_dir):
        path = folder / "summary.json"
        try:
            summary = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            continue
        if not isinstance(summary, dict) or summary.get("outcome") != "running":
            continue
        last = (summary.get("stages") or [{}])[-1].get("name", "its start")
        summary.update(outcome="killed", message=f"ended without a word during {last}: the process was killed "
                       "(Task Scheduler's End or its time limit, kill -9, a crash or a power loss); what it "
                       "did is in its streams and run.log", closed_by=now_rfc3339())
        write_json(path, summary)
        closed.append(folder)
    return closed


def _run_order(folder: Path) -> tuple[str, int]:
    stamp, _, suffix = folder.name.partition("-")
    return stamp, int(suffix or 1)


def prune(runs_dir: Path, keep: int, current: Path) -> list[Path]:
    """Remove all but the newest ``keep`` run folders (0 keeps all); never the current one, and
    only folders a run made (they hold a summary.json): nothing else that happens to be there."""
    if keep <= 0:
        return []
    folders = [f for f in run_folders(runs_dir) if f != current and (f / "summary.json").is_file()]
    removed = []
    for folder in folders[: max(0, len(folders) - (keep - 1))]:
        try:
            shutil.rmtree(folder)
        except OSError as error:  # a file held open on Windows, permissions: try again next time
            log.warning("could not remove the old run folder %s: %s", folder, error)
        else:
            removed.append(folder)
    return removed


@contextlib.contextmanager
def locked(settings: Settings) -> Iterator[None]:
    """One run at a time: a lock in the runs folder and one in the state folder (so that a run by
    hand with another --runs-dir cannot push beside the nightly one). The operating system's
    locks (fcntl on Linux, msvcrt on Windows, through filelock) die with their holder: a crashed
    run never blocks the next."""
    folders = [settings.runs_dir] + ([settings.state_dir] if settings.state_dir else [])
    with contextlib.ExitStack() as held:
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
            lock = filelock.FileLock(str(folder / LOCK_NAME), timeout=settings.lock_wait)
            try:
                held.enter_context(lock)
            except filelock.Timeout:
                waited = f" (waited {settings.lock_wait:g} s)" if settings.lock_wait else ""
                raise ZivsyncError(f"another zivsync run holds {folder / LOCK_NAME}{waited}: "
                                   "not starting a second one") from None
        yield


def stream_facts(path: Path) -> tuple[bool | None, int | None]:
    """Whether a stream file ended with a complete end record, and its record count, read from
    the last line only (diff checks the whole stream; this is for the summary)."""
    if not path.exists():
        return None, None
    end = end_record(path)
    if end is None:
        return False, None
    return end.get("complete", True) is not False, end.get("count")


def write_json(path: Path, value: dict) -> None:
    """Atomically: a reader never sees half a summary. On Windows a reader holding the file open
    makes the rename fail for a moment: tried again, then given up with a warning, for the run
    matters more than its summary."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_bytes(orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
        files.replace(temporary, path)  # retried there while another program holds it (Windows)
    except (OSError, ZivsyncError) as error:
        log.warning("could not write %s: %s", path, error)
        with contextlib.suppress(OSError):
            temporary.unlink()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def now_rfc3339(seconds: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


# -- running the stages ------------------------------------------------------------------------


#: What the stages must not inherit from the run's environment: what run passes them itself,
#: what would change what push applies (a leftover ZIVSYNC_RESUME skips changes, ZIVSYNC_CHECK
#: turns diff into a monitor), and the secret only run itself needs.
NOT_FOR_STAGES = ("ZIVSYNC_CONFIG", "ZIVSYNC_LOG_FORMAT", "ZIVSYNC_RESUME", "ZIVSYNC_CHECK", "ZIVSYNC_SMTP_PASSWORD")
TIMED_OUT = 124  # as timeout(1) says it


def stage_environment(state_lock: Path | None = None) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if k not in NOT_FOR_STAGES}
    # A pipe is in the ANSI code page on Windows: the stages' logs would reach run.log as cp1252
    environment["PYTHONIOENCODING"] = "utf-8:backslashreplace"
    environment["ZIVSYNC_RUN_PID"] = str(os.getpid())  # the stage stops when the run dies (__main__)
    if state_lock is not None:  # push: the run holds the state folder's lock for it
        environment[account_mapping.HELD_BY_RUN] = str(state_lock.resolve())
    return environment


def is_problem(line: bytes) -> bool:
    """A warning or an error, in a text or a JSON log line."""
    return any(mark in line for mark in (b": warning: ", b": error: ", b'"level":"warning"', b'"level":"error"'))


def spawn(step: Step, log: IO[bytes] | None = None, *, echo: bool = True, quiet: bool = False,
          timeout: float = 0.0, usage: dict | None = None, state_lock: Path | None = None) -> int:
    """Runs a stage as ``python -m stages …``: the zivsync that runs us, whatever PATH says (and no
    .exe lookup on Windows; -P: nothing imported from the working folder). Its log lines go into
    ``log`` and on to our stderr as they come; with ``quiet`` only its warnings and errors.
    ``usage`` gets the stage's ``peak_mb`` (its largest resident size) where the system says it."""
    argv = [sys.executable, "-P", "-m", "stages", *step.argv()]
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, env=stage_environment(state_lock),
                               creationflags=winproc.creation_flags())
    job = winproc.contain(process)  # Windows: the stage ends when the run does, however it ends
    expired = threading.Event()

    def stop() -> None:
        expired.set()
        process.terminate()

    timer = threading.Timer(timeout, stop) if timeout else None
    try:
        if timer:
            timer.start()
        assert process.stderr is not None
        for line in process.stderr:
            if log is not None:
                log.write(line)
                log.flush()
            if echo and (not quiet or is_problem(line)):
                echo = _echo(line)
        code = _wait(process, usage)
        if job is not None and usage is not None:
            usage["peak_mb"] = job.peak_mb()
    except BaseException as error:  # interrupted: stop the stage too, it must not go on writing alone
        error.stage_exit_code = _stop_and_drain(process, error, log, echo)  # type: ignore[attr-defined]
        raise
    finally:
        if timer:
            timer.cancel()
        if job is not None:
            job.close()
    if expired.is_set():
        console.log.error("%s did not end within %g s (--stage-timeout): stopped", step.name, timeout)
        return TIMED_OUT
    return 128 - code if code < 0 else code  # killed by signal N: 128+N, as shells say it


def _wait(process: subprocess.Popen, usage: dict | None) -> int:
    """The stage's exit status; on POSIX through wait4, which also gives its own peak memory
    (ru_maxrss: kilobytes on Linux, bytes on macOS), for the summary and the benchmark."""
    if usage is None or not hasattr(os, "wait4"):
        return process.wait()
    try:
        _, status, resources = os.wait4(process.pid, 0)
    except ChildProcessError:  # the --stage-timeout thread's terminate() reaped it first (poll)
        return process.wait()
    process.returncode = os.waitstatus_to_exitcode(status)
    kilobytes = resources.ru_maxrss / (1024 if sys.platform == "darwin" else 1)
    usage["peak_mb"] = round(kilobytes / 1024, 1)
    return process.returncode


def _stop_and_drain(process: subprocess.Popen, stop: BaseException, log: IO[bytes] | None, echo: bool) -> int:
    """Stops a stage with the signal that stopped the run and keeps what it says as it goes: its
    last line says how far it got (push: "interrupted after 6 of 12 changes …"), which run.log and
    the console must not lose. Returns its exit code (128 + the signal, as shells say it)."""
    signum = getattr(stop, "signum", None) or (signal.SIGINT if isinstance(stop, KeyboardInterrupt) else signal.SIGTERM)
    if signum == signal.SIGINT and os.name == "posix":  # Ctrl-C at a console reached the whole group
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=2)
    if process.poll() is None:
        _pass_on(process, signum)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    # what the stage said last, from the same buffered reader the loop read from (its buffer
    # may hold lines already), to the end: the stage has ended, so the pipe has too
    rest = process.stderr.read() if process.stderr is not None else b""
    for line in (rest or b"").splitlines(keepends=True):
        if log is not None:
            log.write(line)
            log.flush()
        if echo:
            echo = _echo(line)
    code = process.returncode
    return 128 - code if code < 0 else code


def _pass_on(process: subprocess.Popen, signum: int) -> None:
    """The stage gets the run's own stop: POSIX, the same signal (a stage that already has one
    ignores it while it writes its record down). Windows: CTRL_BREAK_EVENT to the stage's own
    process group (started with CREATE_NEW_PROCESS_GROUP), which its SIGBREAK handler turns into
    the same orderly stop; TerminateProcess only when that cannot be sent (learn.microsoft.com/
    windows/console/generateconsolectrlevent)."""
    if os.name == "posix":
        process.send_signal(signum)
        return
    try:
        process.send_signal(signal.CTRL_BREAK_EVENT)  # type: ignore[attr-defined]
    except (OSError, AttributeError, ValueError):
        process.terminate()


def _echo(line: bytes) -> bool:
    """Our stderr may be gone (a closed pipe, a service without a console): the run goes on, its
    log still goes into run.log. Returns whether to go on echoing."""
    try:
        sys.stderr.buffer.write(line)
        sys.stderr.flush()
        return True
    except (OSError, AttributeError, ValueError):
        return False


class Interrupted(Exception):
    """SIGTERM (systemd stopping the job, Task Scheduler ending it) or Ctrl-C."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(signum)
        self.signum = signum


@dataclass
class Run:
    """One run in its folder: runs the steps, keeps the summary up to date."""

    settings: Settings
    folder: Path
    log: IO[bytes]
    stages: list[StepResult] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    summary: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        # The config as it was when the run began, for auditors (it may change before they ask)
        shutil.copyfile(self.settings.config, self.folder / "config.toml")
        self.summary.update(
            run=self.folder.name, producer=f"zivsync run {__version__}", python=sys.executable,
            config=str(self.settings.config), config_sha256=sha256_of(self.folder / "config.toml"),
            apply=self.settings.apply, sources=list(self.settings.sources),
            directories=[str(d) for d in self.settings.directories], started=now_rfc3339(self.started),
            outcome="running")

    def execute(self, steps: list[Step]) -> tuple[int, str]:
        """Runs the steps until one stops the run; returns the exit code and what happened.

        A source that fails half-way leaves its stream, marked incomplete: the run goes on to
        diff, so that the plan can be read, but pushes nothing (diff and push would refuse a plan
        made from an incomplete directory anyway) and ends with the source's exit code."""
        failed_source: tuple[Step, int] | None = None
        for step in steps:
            if failed_source and step.name == "push":
                break
            code = self.step(step).exit_code
            if code == 0:
                continue
            if step.name in SOURCES.values() and (self.folder / (step.output or "")).is_file() and not failed_source:
                log.warning("%s failed (exit %d) half-way; what it read is kept, marked incomplete: going on "
                                "to a plan for review, nothing will be applied", step.name, code)
                failed_source = (step, code)
                continue
            return failed_source[1] if failed_source else code, self._stopped_by(*(failed_source or (step, code)))
        if failed_source:
            return failed_source[1], self._stopped_by(*failed_source)
        return ExitStatus.OK, ""

    def step(self, step: Step) -> StepResult:
        result = StepResult(name=step.name, command=shown(step), started=now_rfc3339())
        self.stages.append(result)
        log.info("%s", result.command)
        self.save()
        begun = time.monotonic()
        usage: dict = {}
        try:
            result.exit_code = spawn(step, self.log, quiet=self.settings.quiet, timeout=self.settings.stage_timeout,
                                     usage=usage, state_lock=self._state_lock())
            result.peak_mb = usage.get("peak_mb")
        except BaseException as stopped:  # the run interrupted: the stage's real figures still count
            result.exit_code = getattr(stopped, "stage_exit_code", None)
            self._finish(step, result, begun)
            raise
        self._finish(step, result, begun)
        log.info("%s: exit %d after %.1f s", step.name, result.exit_code, result.seconds)
        self.save()
        return result

    def _state_lock(self) -> Path | None:
        """The state folder's lock, which this run holds (see :func:`locked`)."""
        return self.settings.state_dir / LOCK_NAME if self.settings.state_dir else None

    def _finish(self, step: Step, result: StepResult, begun: float) -> None:
        result.seconds = round(time.monotonic() - begun, 3)
        if step.output and (self.folder / step.output).exists():
            result.output = step.output
            result.complete, result.records = stream_facts(self.folder / step.output)
        self.save()

    def _stopped_by(self, step: Step, code: int) -> str:
        if step.name in SOURCES.values():
            return f"{step.name} failed (exit {code}): nothing was applied"
        incomplete = [r.name for r in self.stages if r.name in SOURCES.values() and r.complete is False]
        if code == ExitStatus.REFUSED and incomplete:
            # not the safety limits' fault: a source could not read everything (see its log lines)
            return (f"the directory was read incompletely ({', '.join(incomplete)}: see run.log), so "
                    f"{step.name} refused the plan: nothing was applied")
        if step.name in ("diff", "push") and code == ExitStatus.REFUSED:
            return f"{step.name} refused the plan (a safety check): nothing was applied"
        return f"{step.name} failed (exit {code}): the run stopped there"

    def save(self, **final) -> None:
        self.summary.update(final, stages=[dataclasses.asdict(r) for r in self.stages])
        write_json(self.folder / "summary.json", self.summary)


def plan_facts(folder: Path) -> dict | None:
    """The plan's summary and safety check, from its header."""
    header = _first_line(stream_file(folder, "plan"))
    if header is None:
        return None
    summary = header.get("summary", {})
    return {"changes": summary.get("changes", {}), "skips": summary.get("skips", {}),
            "links": summary.get("links", 0), "safety": header.get("safety", {}),
            "desired_complete": header.get("desired_complete")}


def results_facts(folder: Path) -> dict | None:
    """Results by status, read from the results stream."""
    path = folder / RESULTS
    if not path.exists():
        return None
    counts: dict[str, int] = {}
    with open(path, "rb") as handle:
        for line in handle:
            with contextlib.suppress(orjson.JSONDecodeError):
                record = orjson.loads(line)
                if isinstance(record, dict) and record.get("type") == "result":
                    counts[record["status"]] = counts.get(record["status"], 0) + 1
    return counts


def _first_line(path: Path) -> dict | None:
    try:
        with open(path, "rb") as raw, opened_stream(raw) as handle:
            return orjson.loads(handle.readline())
    except (OSError, EOFError, orjson.JSONDecodeError):
        return None


def outcome_message(code: int, stopped: str, plan: dict | None, results: dict | None, apply: bool,
                    during: str = "") -> str:
    """One line saying what the run did, for the summary, the log's last line and the mail."""
    if code in STOPPED_BY:
        how = f"interrupted by {STOPPED_BY[code]}"
        where = f" during {during}" if during else ""
        if results is None:
            return f"{how}{where}: nothing was applied"
        planned, done = sum((plan or {}).get("changes", {}).values()), sum(results.values())
        others = "".join(f", {n} {status}" for status, n in sorted(results.items()) if status != "applied")
        return (f"{how}{where}: {results.get('applied', 0)} of {planned} changes applied{others}, "
                f"{planned - done} not sent (the next zivsync run --apply plans them afresh)")
    if stopped:
        return stopped
    changes = sum((plan or {}).get("changes", {}).values())
    if not apply:
        return (f"dry run: {changes} changes planned, nothing applied (zivsync run --apply applies them)"
                if changes else "in sync: nothing to change")
    done = ", ".join(f"{n} {status}" for status, n in sorted((results or {}).items()))
    text = f"{changes} changes: {done}" if changes else "in sync: nothing to change"
    if code:
        text += f" (exit {code}: see the log)"
    return text


def outcome_of(code: int) -> str:
    return "interrupted" if code in STOPPED_BY else OUTCOMES.get(code, "error")


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM ends the run like Ctrl-C: the current stage is stopped and the summary says so."""

    def raise_interrupted(signum, frame):
        raise Interrupted(signum)

    names = [name for name in ("SIGTERM", "SIGBREAK") if hasattr(signal, name)]  # SIGBREAK: Windows' Ctrl-Break
    previous = {name: signal.signal(getattr(signal, name), raise_interrupted) for name in names}
    try:
        yield
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler)
