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
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator

import filelock
import orjson

from . import __version__, cli
from .cli import ExitStatus, ZivsyncError

#: source name -> the extractor's command; the order in which they run
SOURCES = {"ldap": "extract-ldap", "exo": "extract-exo", "exchange": "extract-exchange"}
RUN_ID = re.compile(r"^\d{8}T\d{6}Z(-\d+)?$")
LOCK_NAME = "zivsync-run.lock"
OUTCOMES = {ExitStatus.OK: "ok", ExitStatus.ERROR: "error", ExitStatus.PARTIAL: "partial",
            ExitStatus.REFUSED: "refused", ExitStatus.UNREACHABLE: "unreachable", ExitStatus.PENDING: "pending"}
INTERRUPTED = 130


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


def configured_sources(config: dict) -> tuple[str, ...]:
    """The sources whose extractor has a table in the config file, in run order."""
    return tuple(source for source, command in SOURCES.items() if isinstance(config.get(command), dict))


def make_settings(params: dict, apply_: bool, sources, runs_dir, keep: int, lock_wait: float,
                  directories=()) -> Settings:
    """The run's settings from the command's parameters (those every stage has included)."""
    if not params.get("config"):
        raise ZivsyncError("zivsync run needs a config file: --config zivsync.toml (or ZIVSYNC_CONFIG)")
    config = Path(params["config"]).resolve()
    found = configured_sources(tomllib.loads(config.read_text(encoding="utf-8-sig")))
    chosen = tuple(s for s in SOURCES if s in sources) if sources else found
    if not chosen and not directories:
        raise ZivsyncError(f"{config}: no source configured: add an [extract-ldap], [extract-exo] or "
                           "[extract-exchange] table, or name directory streams with --directory")
    forwarded = (("--verbose",) if params.get("verbose") else ()) + (("--quiet",) if params.get("quiet") else ()) \
        + (("--log-format", "json") if params.get("log_format") == "json" else ())
    return Settings(config=config, runs_dir=Path(runs_dir).resolve() if runs_dir else config.parent / "runs",
                    sources=chosen, apply=apply_, keep=keep, lock_wait=lock_wait, stage_options=forwarded,
                    directories=tuple(Path(d).resolve() for d in directories))


def plan_steps(settings: Settings, folder: Path) -> list[Step]:
    """The stages of one run, in order, with the files they read and write (pure)."""
    config = ("--config", str(settings.config))
    common = config + settings.stage_options

    def at(name: str) -> str:
        return str(folder / name)

    steps = [Step(SOURCES[source], common + ("-o", at(f"directory-{source}.jsonl")), f"directory-{source}.jsonl")
             for source in settings.sources]
    steps.append(Step("snapshot", common + ("-o", at("current.jsonl")), "current.jsonl"))
    streams = [f"directory-{source}.jsonl" for source in settings.sources] + staged_names(settings)
    directories = [arg for name in streams for arg in ("-i", at(name))]
    steps.append(Step("normalize", common + tuple(directories) + ("-o", at("desired.jsonl")), "desired.jsonl"))
    steps.append(Step("diff", common + ("-i", at("desired.jsonl"), "--current", at("current.jsonl"),
                                        "-o", at("plan.jsonl")), "plan.jsonl"))
    if settings.apply:
        steps.append(Step("push", common + ("-i", at("plan.jsonl"), "--apply", "-o", at("results.jsonl")),
                          "results.jsonl"))
    return steps


def staged_names(settings: Settings) -> list[str]:
    """The run folder's copies of the --directory streams: normalize reads those, so the folder
    holds exactly what the run read."""
    return [f"input-{number}-{path.name}" for number, path in enumerate(settings.directories, 1)]


def stage_directories(settings: Settings, folder: Path) -> None:
    for path, name in zip(settings.directories, staged_names(settings)):
        try:
            shutil.copyfile(path, folder / name)
        except OSError as error:
            raise ZivsyncError(f"cannot read the directory stream {path}: {error.strerror}") from None


def shown(step: Step) -> str:
    """The command line a person would type to repeat the step."""
    return " ".join(["zivsync", *(_quoted(arg) for arg in step.argv())])


def _quoted(arg: str) -> str:
    return f'"{arg}"' if not arg or any(c.isspace() or c in "'\"&|;<>()$`" for c in arg) else arg


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


def _run_order(folder: Path) -> tuple[str, int]:
    stamp, _, suffix = folder.name.partition("-")
    return stamp, int(suffix or 1)


def prune(runs_dir: Path, keep: int, current: Path) -> list[Path]:
    """Remove all but the newest ``keep`` run folders (0 keeps all); never the current one."""
    if keep <= 0:
        return []
    folders = [f for f in run_folders(runs_dir) if f != current]
    doomed = folders[: max(0, len(folders) - (keep - 1))]
    for folder in doomed:
        shutil.rmtree(folder, ignore_errors=True)
    return doomed


@contextlib.contextmanager
def locked(runs_dir: Path, wait: float) -> Iterator[None]:
    """One run at a time per runs folder. The operating system's lock (fcntl on Linux, msvcrt
    on Windows, through filelock) dies with its holder: a crashed run never blocks the next."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(runs_dir / LOCK_NAME), timeout=wait)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise ZivsyncError(f"another zivsync run holds {runs_dir / LOCK_NAME}"
                           + (f" (waited {wait:g} s)" if wait else "") + ": not starting a second one") from None
    try:
        yield
    finally:
        lock.release()


def stream_facts(path: Path) -> tuple[bool | None, int | None]:
    """Whether a stream file ended with a complete end record, and its record count, read from
    the last line only (diff checks the whole stream; this is for the summary)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 65536))
            tail = handle.read().rstrip(b"\r\n").rsplit(b"\n", 1)[-1]
    except OSError:
        return None, None
    try:
        end = orjson.loads(tail)
    except orjson.JSONDecodeError:
        return False, None
    if not isinstance(end, dict) or end.get("type") != "end":
        return False, None
    return end.get("complete", True) is not False, end.get("count")


def write_json(path: Path, value: dict) -> None:
    """Atomically: a reader never sees half a summary."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
    os.replace(temporary, path)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def now_rfc3339(seconds: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


# -- running the stages ------------------------------------------------------------------------


def spawn(step: Step, cwd: Path, log: IO[bytes] | None = None, echo: bool = True) -> int:
    """Runs a stage as ``python -m stages …``: the zivsync that runs us, whatever PATH says (and no
    .exe lookup on Windows). Its log lines go into ``log`` and on to our stderr as they come."""
    argv = [sys.executable, "-m", "stages", *step.argv()]
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, cwd=cwd)
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if log is not None:
                log.write(line)
                log.flush()
            if echo:
                sys.stderr.buffer.write(line)
                sys.stderr.flush()
        return process.wait()
    except BaseException:  # interrupted: stop the stage too, it must not go on writing alone
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        raise


class Interrupted(Exception):
    """SIGTERM (systemd stopping the job, Task Scheduler ending it) or Ctrl-C."""


@dataclass
class Run:
    """One run in its folder: runs the steps, keeps the summary up to date."""

    settings: Settings
    folder: Path
    log: IO[bytes]
    results: list[StepResult] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    summary: dict = field(default_factory=dict)

    def execute(self, steps: list[Step]) -> tuple[int, str]:
        """Runs the steps until one stops the run; returns the exit code and what happened."""
        carried = ExitStatus.OK  # a source that failed half-way: its stream is marked incomplete
        for step in steps:
            result = self.step(step)
            code = result.exit_code
            if code == 0:
                continue
            if step.name in SOURCES.values() and result.output and (self.folder / result.output).exists():
                # diff plans no suspension from an incomplete stream: the run can go on safely
                cli.log.warning("%s failed (exit %d) but wrote what it read, marked incomplete: going on; "
                                "diff will suspend nobody on its account", step.name, code)
                carried = carried or code
                continue
            return code, self._stopped_by(step, code)
        return carried, ""

    def step(self, step: Step) -> StepResult:
        result = StepResult(name=step.name, command=shown(step), started=now_rfc3339())
        self.results.append(result)
        cli.log.info("%s", result.command)
        self.save()
        begun = time.monotonic()
        result.exit_code = spawn(step, self.folder, self.log)
        result.seconds = round(time.monotonic() - begun, 3)
        if step.output and (self.folder / step.output).exists():
            result.output = step.output
            result.complete, result.records = stream_facts(self.folder / step.output)
        cli.log.info("%s: exit %d after %.1f s", step.name, result.exit_code, result.seconds)
        self.save()
        return result

    def _stopped_by(self, step: Step, code: int) -> str:
        if step.name == "diff" and code == ExitStatus.REFUSED:
            return "diff refused the plan (a safety check): nothing was applied"
        return f"{step.name} failed (exit {code}): the run stopped there"

    def save(self, **final) -> None:
        self.summary.update(final)
        self.summary.update(
            run=self.folder.name, producer=f"zivsync run {__version__}", config=str(self.settings.config),
            config_sha256=sha256_of(self.settings.config), apply=self.settings.apply,
            sources=list(self.settings.sources), started=now_rfc3339(self.started),
            stages=[dataclasses.asdict(r) for r in self.results])
        self.summary.setdefault("outcome", "running")
        write_json(self.folder / "summary.json", self.summary)


def plan_facts(folder: Path) -> dict | None:
    """The plan's summary and safety check, from its header."""
    header = _first_line(folder / "plan.jsonl")
    if header is None:
        return None
    summary = header.get("summary", {})
    return {"changes": summary.get("changes", {}), "skips": summary.get("skips", {}),
            "links": summary.get("links", 0), "safety": header.get("safety", {}),
            "desired_complete": header.get("desired_complete")}


def results_facts(folder: Path) -> dict | None:
    """Results by status, read from the results stream."""
    path = folder / "results.jsonl"
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
        with open(path, "rb") as handle:
            return orjson.loads(handle.readline())
    except (OSError, orjson.JSONDecodeError):
        return None


def outcome_message(code: int, stopped: str, plan: dict | None, results: dict | None, apply: bool) -> str:
    """One line saying what the run did, for the summary, the log's last line and the mail."""
    if code == INTERRUPTED:
        return "interrupted: the run stopped before it ended"
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
    return "interrupted" if code == INTERRUPTED else OUTCOMES.get(code, "error")


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM ends the run like Ctrl-C: the current stage is stopped and the summary says so."""

    def raise_interrupted(signum, frame):
        raise Interrupted()

    previous = signal.signal(signal.SIGTERM, raise_interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
