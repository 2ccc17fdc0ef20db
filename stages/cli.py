"""The base every zivsync executable stands on (csvkit's CSVKitUtility, done with click).

It owns what all stages share, so that a stage module is only its own options and a call
into plain functions:

- the exit codes (:class:`ExitStatus`) and how errors become a message and a code;
- ``--config`` (TOML, or ``ZIVSYNC_CONFIG``), with every option also a flag and an
  environment variable ``ZIVSYNC_<OPTION>``: flags > environment > file;
- ``-i/--input`` (repeatable, ``-`` is stdin) and ``-o/--output`` (atomic);
- ``--verbose``, ``--quiet``, ``--log-format text|json`` and ``--version``;
- a closed pipe (``| head``) ending the stage quietly.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import sys
import time
import tomllib
from enum import IntEnum
from pathlib import Path
from typing import Any, Callable

import click
import orjson

from . import __version__
from .stream import Input, StreamError

log = logging.getLogger("zivsync")

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
ENV_PREFIX = "ZIVSYNC_"
# Options that every stage has; they are not configuration, so the config file cannot set them.
BASE_OPTIONS = {"config", "verbose", "quiet", "log_format", "inputs", "output"}
# Options only a command line may give: writing to Zivver must be asked for where the job is
# started, never switched on for good by a line in a config file; the others name one
# invocation's own output.
FLAG_ONLY = {"apply_", "resume", "version", "html_file", "show_all", "keep_files"}


class ExitStatus(IntEnum):
    """What a zivsync executable's exit code means. The README documents this table."""

    OK = 0  #: done; for --check: nothing to change
    ERROR = 1  #: usage, configuration or input error; nothing was written to Zivver
    PARTIAL = 2  #: some changes failed (see the results stream)
    REFUSED = 3  #: a safety check refused to go on (see the report on stderr)
    UNREACHABLE = 4  #: could not reach or authenticate to a server
    PENDING = 5  #: --check: changes are pending


class ZivsyncError(Exception):
    """An error the user can act on: printed without a traceback, exits with ``status``."""

    def __init__(self, message: str, status: ExitStatus = ExitStatus.ERROR):
        super().__init__(message)
        self.status = status


class ServerUnreachable(ZivsyncError):
    """Could not reach, trust or sign in to a server: exit 4. Each source names its own kind."""

    def __init__(self, message: str):
        super().__init__(message, ExitStatus.UNREACHABLE)


# -- options ----------------------------------------------------------------------------


def option(*decls: str, **kwargs: Any) -> Callable:
    """A click option that also reads ``ZIVSYNC_<NAME>`` from the environment."""
    name = next((d for d in decls if d.isidentifier()), None) or next(
        d[2:].replace("-", "_") for d in decls if d.startswith("--"))
    kwargs.setdefault("envvar", ENV_PREFIX + name.upper())
    kwargs.setdefault("show_envvar", True)
    return click.option(*decls, **kwargs)


def input_options(func: Callable) -> Callable:
    return click.option(
        "-i", "--input", "inputs", multiple=True, type=click.Path(dir_okay=False, allow_dash=True),
        help="Read this stream file (repeatable; - is standard input). Default: standard input.",
    )(func)


def output_option(func: Callable) -> Callable:
    return click.option(
        "-o", "--output", type=click.Path(dir_okay=False, writable=True, allow_dash=True),
        help="Write the stream to this file (atomically: it appears only when complete). Default: standard output.",
    )(func)


def open_inputs(paths: tuple[str, ...]) -> list[Input]:
    """The inputs named by -i, or standard input when none was named and it is not a terminal."""
    if not paths:
        if sys.stdin is None or sys.stdin.isatty():
            raise ZivsyncError("no input: pipe a stream in or name a file with -i FILE")
        paths = ("-",)
    if list(paths).count("-") > 1:
        raise ZivsyncError("standard input (-) can be read only once")
    return [Input.open(path) for path in paths]


def read_secret(path: str | None, variable: str, what: str, file_option: str) -> str:
    """A secret from the file named by ``file_option``, else from the environment variable:
    never from a flag, which process lists and shell histories show to everyone."""
    if path:
        try:
            raw = Path(path).read_bytes()
        except OSError as error:
            raise ZivsyncError(f"cannot read the {what} file {path}: {error.strerror}") from None
        # PowerShell 5.1's `>` and Out-File write UTF-16 with a BOM
        encoding = "utf-16" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"
        try:
            secret = raw.decode(encoding).strip()
        except UnicodeDecodeError:
            raise ZivsyncError(f"the {what} file {path} is neither UTF-8 nor UTF-16 text") from None
    else:
        secret = os.environ.get(variable, "").strip()
    if not secret:
        raise ZivsyncError(f"no {what}: set {variable} or name a file with {file_option}")
    return secret


# -- configuration ----------------------------------------------------------------------


def section_name(command: click.Command) -> str:
    return command.name.removeprefix("zivsync-")


def _config_params(command: click.Command) -> dict[str, click.Parameter]:
    return {p.name: p for p in command.params
            if p.name not in BASE_OPTIONS | FLAG_ONLY and isinstance(p, click.Option)}


def config_defaults(data: dict, command: click.Command, path: Path) -> dict:
    """The option defaults that a config file gives ``command``, checked strictly.

    Top-level keys are shared by every stage that has an option of that name (for example
    ``claimed_domains``); a ``[normalize]``-style table holds one stage's own options and wins
    over the top level. Unknown keys are errors, with the valid ones listed: a typo in a
    nightly job's config must not silently fall back to a default.
    """
    from .umbrella import STAGES  # imported late: it imports every stage, this one included

    sections = {section_name(c): c for c in STAGES}
    shared = {name for c in STAGES for name in _config_params(c)}
    own = _config_params(command)
    defaults: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            if key not in sections:
                raise ZivsyncError(f"{path}: unknown table [{key}]; known: {', '.join(sorted(sections))}")
            known = _config_params(sections[key])
            for name in value:
                if name not in known:
                    raise ZivsyncError(
                        f"{path}: [{key}] has no option '{name}'; known: {', '.join(sorted(known))}")
        elif key not in shared:
            raise ZivsyncError(f"{path}: unknown option '{key}'; known: {', '.join(sorted(shared))}")
        elif key in own:
            defaults[key] = value
    defaults.update(data.get(section_name(command), {}))
    return {name: _relative_to(path.parent, own[name], value) for name, value in defaults.items()}


def _relative_to(base: Path, param: click.Parameter, value: Any) -> Any:
    """Paths in a config file are relative to the file, not to wherever the job starts."""
    if not isinstance(param.type, click.Path):
        return value
    if isinstance(value, list):
        return [str(base / v) for v in value]
    return str(base / value)


def _load_config(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if not value:
        return value
    path = Path(value)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except OSError as error:
        raise click.BadParameter(f"cannot read {path}: {error.strerror}", ctx, param) from None
    except tomllib.TOMLDecodeError as error:
        raise click.BadParameter(f"{path} is not valid TOML: {error}", ctx, param) from None
    ctx.default_map = config_defaults(data, ctx.command, path)
    return value


# -- logging -----------------------------------------------------------------------------


class _TextFormatter(logging.Formatter):
    def __init__(self, prog: str):
        super().__init__()
        self.prog = prog

    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        return f"{self.prog}: {level}{record.getMessage()}"


class _JsonFormatter(logging.Formatter):
    def __init__(self, prog: str):
        super().__init__()
        self.prog = prog

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "stage": self.prog,
            "message": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        return orjson.dumps(entry, default=str).decode()


_progress_shown = False


class _AboveProgress(logging.Handler):
    """Log lines printed above a progress bar instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        import tqdm

        tqdm.tqdm.write(self.format(record), file=sys.stderr)


def setup_logging(prog: str, verbose: bool, quiet: bool, log_format: str) -> None:
    global _progress_shown
    # Progress bars only for a person watching: a terminal, text logs, not --quiet. A scheduled
    # job's log file or a pipe gets the log lines and nothing else.
    _progress_shown = log_format == "text" and not quiet and bool(getattr(sys.stderr, "isatty", None)) \
        and sys.stderr.isatty()
    handler = _AboveProgress() if _progress_shown else logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter(prog) if log_format == "json" else _TextFormatter(prog))
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)


def progress(label: str, total: int | None = None, unit: str = ""):
    """A progress bar on stderr when a person is watching (see setup_logging), else a silent one:
    ``with cli.progress("people read") as bar: bar.update()``."""
    import tqdm  # imported only by the stages that show progress

    return tqdm.tqdm(desc=label, total=total, unit=unit or " it", file=sys.stderr, disable=not _progress_shown,
                     leave=False, dynamic_ncols=True, mininterval=0.25)


# -- commands ----------------------------------------------------------------------------


def stage(name: str, help: str, *, batch: bool = True) -> Callable[[Callable], click.Command]:
    """Make ``func`` the stage command ``name`` with the options every stage has.

    ``func`` receives its own options and returns an :class:`ExitStatus`. ``batch`` stages
    run once over their input and end; a server (the sandbox) is not one.
    """

    def decorate(func: Callable) -> click.Command:
        @functools.wraps(func)
        def callback(verbose: bool, quiet: bool, log_format: str, config: str | None, **kwargs):
            _utf8_text_output()
            setup_logging(name, verbose, quiet, log_format)
            # A stage is a short batch job holding 100,000s of objects without cycles: the cyclic
            # collector would walk them all again and again for nothing (a quarter of the run time).
            if batch:
                gc.disable()
            try:
                return func(**kwargs)
            except BrokenPipeError:  # caught here: click's own handler would exit 1
                _silence_stdout()
                return ExitStatus.OK

        params = [
            click.option("--config", type=click.Path(dir_okay=False), envvar="ZIVSYNC_CONFIG",
                         show_envvar=True, is_eager=True, expose_value=True, callback=_load_config,
                         help="TOML configuration file. Flags win over environment variables, which win over the file."),
            click.option("-v", "--verbose", is_flag=True, help="Log more, including the equivalent raw queries."),
            click.option("-q", "--quiet", is_flag=True, help="Log only warnings and errors."),
            click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
                         envvar="ZIVSYNC_LOG_FORMAT", show_envvar=True, help="Log lines on stderr as text or JSON."),
            click.version_option(__version__, "--version", prog_name=name, message="%(prog)s %(version)s"),
        ]
        for decorator in params:
            callback = decorator(callback)
        command = click.command(name=name, help=help, context_settings=CONTEXT_SETTINGS)(callback)
        shared = len(params) - 1  # version_option adds its parameter too; all of them go last in --help
        command.params = command.params[shared + 1:] + command.params[: shared + 1]
        return command

    return decorate


def _utf8_text_output() -> None:
    """Text on stdout and stderr in UTF-8 when redirected: Windows would use its ANSI code page,
    in which 'before → after' cannot be written at all. (A console shows Unicode either way.)"""
    for stream in (sys.stdout, sys.stderr):
        if stream is not None and hasattr(stream, "reconfigure") and not stream.isatty() \
                and (stream.encoding or "").lower().replace("-", "") != "utf8":
            stream.reconfigure(encoding="utf-8", errors="backslashreplace")


def run(command: click.Command, args: list[str] | None = None, prog: str | None = None) -> int:
    """Run a command the way every executable does, turning errors into exit codes."""
    prog = prog or command.name
    try:
        result = command.main(args=args, prog_name=prog, standalone_mode=False)
    except click.exceptions.Exit as done:  # --help, --version
        return done.exit_code
    except click.ClickException as error:
        error.show()
        return ExitStatus.ERROR
    except click.Abort:
        _error(prog, "aborted")
        return ExitStatus.ERROR
    except StreamError as error:
        for problem in error.problems:
            _error(prog, str(problem))
        return ExitStatus.ERROR
    except ZivsyncError as error:
        _error(prog, str(error))
        return error.status
    except KeyboardInterrupt:
        _error(prog, "interrupted")
        return 130
    return ExitStatus.OK if result is None else int(result)


def _error(prog: str, message: str) -> None:
    """The error that ends a command, in the command's log format once logging is set up (a JSON
    log must not end in a line a log shipper cannot read), else as plain text."""
    if log.handlers:
        log.error("%s", message)
    else:
        click.echo(f"{prog}: error: {message}", err=True)


def _silence_stdout() -> None:
    """After the reader of our stdout went away, stop Python complaining at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def entry_point(command: click.Command) -> Callable[[], None]:
    """The console-script function for a command."""

    def main() -> None:
        sys.exit(run(command))

    return main
