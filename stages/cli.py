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

import errno
import functools
import gc
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import click
import orjson

from . import __version__
from .core import console
from .core.console import log, progress  # noqa: F401 (the stages use cli.log, cli.progress)
from .core.configfile import read_toml
from .core.errors import ExitStatus, Interrupted, ServerUnreachable, ZivsyncError  # noqa: F401 (re-exported)
from .core.secrets import read_secret  # noqa: F401 (re-exported for the stages)
from .core.stream import Input, StreamError
from .operator import mail

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
ENV_PREFIX = "ZIVSYNC_"
# Options that every stage has; they are not configuration, so the config file cannot set them.
BASE_OPTIONS = {"config", "verbose", "quiet", "log_format", "inputs", "output"}
# Options only a command line may give: writing to Zivver must be asked for where the job is
# started, never switched on for good by a line in a config file; the others name one
# invocation's own output.
FLAG_ONLY = {"apply_", "resume", "version", "html_file", "show_all", "keep_files", "why", "force"}


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


# -- the option sets that several commands share -------------------------------------------


def zivver_options(func: Callable) -> Callable:
    """The options of the connection to Zivver (client.CONNECTION_OPTIONS names them)."""
    decorators = [
        option("--zivver-url", metavar="URL",
               help="Zivver's SCIM API, e.g. https://app.zivver.com/api/scim/v2 (or a zivsync-sandbox)."),
        option("--zivver-api-key-file", type=click.Path(dir_okay=False), metavar="FILE",
               help="Read the API key from this file. Default: the environment variable ZIVSYNC_ZIVVER_API_KEY "
                    "(never a flag: flags show up in process lists)."),
        option("--ca-file", type=click.Path(dir_okay=False, exists=True), metavar="FILE",
               help="Verify Zivver's TLS certificate against the CAs in this PEM file only. Default: the "
                    "operating system's trust store (on Windows, its certificate store)."),
        option("--insecure", is_flag=True, help="Do not verify TLS certificates (logged loudly; for tests only)."),
        option("--rate-limit", type=click.IntRange(min=1), default=50, show_default=True,
               help="Requests per --rate-window that Zivver allows: push paces itself to it."),
        option("--rate-window", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
               help="Seconds of Zivver's rate-limit window."),
        option("--timeout", type=click.FloatRange(min=1), default=30.0, show_default=True,
               help="Seconds to wait for each answer."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return revocation_options(func)


def revocation_options(func: Callable) -> Callable:
    """Revocation checks of the TLS certificates a stage is shown (every stage that opens TLS)."""
    decorators = [
        option("--check-revocation", is_flag=True,
               help="Check each server's TLS certificate (and the intermediates, where Python gives the verified "
                    "chain) against the CRLs its CA publishes, fetched over http and cached until their nextUpdate: "
                    "a revoked certificate is refused (exit 4), and so is one whose CRL cannot be had."),
        option("--revocation-soft-fail", is_flag=True,
               help="With --check-revocation: a CRL that cannot be fetched or verified is warned about (loudly) "
                    "instead of refusing the connection. A revoked certificate is refused all the same."),
        option("--crl-cache", type=click.Path(file_okay=False), metavar="DIR",
               help="Keep fetched CRLs here until their nextUpdate (each re-verified on use). Default: zivsync's "
                    "folder in this user's cache (~/.cache/zivsync/crl; on Windows %LOCALAPPDATA%\\zivsync\\crl)."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def mail_options(func: Callable) -> Callable:
    """The options of the report mail; each also reads ZIVSYNC_<NAME> and the config file."""
    options = [
        option("--mail-to", multiple=True, metavar="ADDRESS",
               help="Mail the run's summary to this address (repeatable, or several separated by commas). "
                    "Without it, no mail is sent."),
        option("--mail-from", metavar="ADDRESS",
               help="The sender of the summary mail, e.g. 'Zivsync <zivsync@corp.example>'."),
        option("--smtp-host", metavar="HOST", help="The SMTP server that sends the summary mail."),
        option("--smtp-port", type=click.IntRange(1, 65535), metavar="N",
               help="The SMTP server's port. Default: 587, or 465 with --smtp-security tls."),
        option("--smtp-security", type=click.Choice(mail.SECURITIES), default="starttls", show_default=True,
               help="starttls: connect, then require STARTTLS; tls: TLS from the start (port 465); "
                    "none: unencrypted (logged loudly)."),
        option("--smtp-user", metavar="NAME",
               help="Sign in to the SMTP server as this user. The password comes from the environment "
                    "variable ZIVSYNC_SMTP_PASSWORD or --smtp-password-file (never a flag)."),
        option("--smtp-password-file", type=click.Path(dir_okay=False), metavar="FILE",
               help="Read the SMTP password from this file."),
        option("--smtp-ca-file", type=click.Path(dir_okay=False, exists=True), metavar="FILE",
               help="Verify the SMTP server's certificate against the CAs in this PEM file instead of "
                    "the system's."),
        option("--mail-when", type=click.Choice(mail.WHENS), default="always", show_default=True,
               help="always: mail after every run; changes: only when something changed or went wrong; "
                    "problems: only when something went wrong."),
    ]
    for decorator in reversed(options):  # click lists the last-applied option first
        func = decorator(func)
    return func


# -- configuration ----------------------------------------------------------------------


def section_name(command: click.Command) -> str:
    return command.name.removeprefix("zivsync-")


def _config_params(command: click.Command) -> dict[str, click.Parameter]:
    return {p.name: p for p in command.params
            if p.name not in BASE_OPTIONS | FLAG_ONLY and isinstance(p, click.Option)}


def family_of(ctx: click.Context) -> list[click.Command]:
    """Every command a config file may hold a table for, as the executable handed them in
    (a list, or a function that imports them: only a config file needs them all)."""
    family = ctx.find_root().obj or ()
    return list(family() if callable(family) else family)


def config_defaults(data: dict, command: click.Command, path: Path,
                    family: Iterable[click.Command] = ()) -> dict:
    """The option defaults that a config file gives ``command``, checked strictly.

    Top-level keys are shared by every stage that has an option of that name (for example
    ``claimed_domains``); a ``[normalize]``-style table holds one stage's own options and wins
    over the top level. Unknown keys are errors, with the valid ones listed: a typo in a
    nightly job's config must not silently fall back to a default. ``family`` is every command
    a config file may hold a table for: the executables hand it in (see ``umbrella.py``), so
    this base imports none of the commands standing on it.
    """
    commands = list(family) or [command]
    sections = {section_name(c): c for c in commands}
    shared = {name for c in commands for name in _config_params(c)}
    own = _config_params(command)
    defaults: dict[str, Any] = {}
    by_name = {name: p for c in commands for name, p in _config_params(c).items()}
    for key, value in data.items():
        if isinstance(value, dict):
            if key not in sections:
                raise ZivsyncError(f"{path}: unknown table [{key}]{_did_you_mean(key, sections)}")
            known = _config_params(sections[key])
            for name, item in value.items():
                if name not in known:
                    raise ZivsyncError(f"{path}: [{key}] has no option '{name}'{_secret_hint(name)}"
                                       f"{_did_you_mean(name, known)}")
                _check_type(path, f"[{key}] {name}", known[name], item)
        elif key not in shared:
            raise ZivsyncError(f"{path}: unknown option '{key}'{_secret_hint(key)}{_did_you_mean(key, shared)}")
        else:
            _check_type(path, key, by_name[key], value)
            if key in own:
                defaults[key] = value
    defaults.update(data.get(section_name(command), {}))
    return {name: _relative_to(path.parent, own[name], value) for name, value in defaults.items()}


SECRET_WORDS = ("password", "secret", "api_key", "apikey", "passphrase", "token")


def _secret_hint(key: str) -> str:
    """A key that looks like a secret: say where secrets go (never echo the value)."""
    if any(word in key.lower() for word in SECRET_WORDS) and not key.lower().endswith("_file"):
        return (" (secrets never go in the config file: set them in the environment, e.g. ZIVSYNC_ZIVVER_API_KEY, "
                "or name a file holding them with the *_file options, e.g. zivver_api_key_file)")
    return ""


def _did_you_mean(key: str, known) -> str:
    import difflib

    close = difflib.get_close_matches(key, list(known), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _check_type(path: Path, where: str, param: click.Parameter, value: Any) -> None:
    """A config value of the wrong type names the file, the table and the key (not the value:
    it may be something secret typed in the wrong place)."""
    values = value if param.multiple and isinstance(value, list) else [value]
    if param.multiple and not isinstance(value, list):
        raise ZivsyncError(f"{path}: {where} must be a list, e.g. {param.name} = [\"…\"]")
    for item in values:
        try:
            if isinstance(param.type, click.types.BoolParamType) and not isinstance(item, bool):
                raise click.BadParameter("must be true or false")
            if isinstance(item, (dict, list)):
                raise click.BadParameter(f"must be a single {param.type.name} value")
            if isinstance(param.type, click.Path):  # checked where it is used: relative to the config file
                if not isinstance(item, str):
                    raise click.BadParameter("must be a path, in quotes")
                if any(ord(c) < 32 for c in item):  # "D:\zivsync\runs" in double quotes: \r is a carriage return
                    raise click.BadParameter(
                        f"holds a control character ({_control_characters(item)}): in double quotes \\ starts an "
                        "escape (\\r is a carriage return, \\t a tab); write Windows paths in single quotes, e.g. "
                        "'D:\\zivsync\\runs', or with forward slashes")
                continue
            param.type.convert(item, param, None)
        except click.BadParameter as error:
            raise ZivsyncError(f"{path}: {where}: {error.message}") from None


def _control_characters(text: str) -> str:
    return ", ".join(sorted({repr(c)[1:-1] for c in text if ord(c) < 32}))


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
        data = read_toml(path)
    except ZivsyncError as error:
        raise click.BadParameter(str(error), ctx, param) from None
    ctx.default_map = config_defaults(data, ctx.command, path, family_of(ctx))
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


class _AboveProgress(logging.Handler):
    """Log lines printed above a progress bar instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        import tqdm

        tqdm.tqdm.write(self.format(record), file=sys.stderr)


def setup_logging(prog: str, verbose: bool, quiet: bool, log_format: str) -> None:
    # Progress bars only for a person watching: a terminal, text logs, not --quiet. A scheduled
    # job's log file or a pipe gets the log lines and nothing else.
    shown = log_format == "text" and not quiet and bool(getattr(sys.stderr, "isatty", None)) and sys.stderr.isatty()
    console.show_progress(shown)
    handler = _AboveProgress() if shown else logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter(prog) if log_format == "json" else _TextFormatter(prog))
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)


# -- commands ----------------------------------------------------------------------------


def stage(name: str, help: str, *, batch: bool = True) -> Callable[[Callable], click.Command]:
    """Make ``func`` the stage command ``name`` with the options every stage has.

    ``func`` receives its own options and returns an :class:`ExitStatus`. ``batch`` stages
    run once over their input and end; a server (the sandbox) is not one.
    """

    def decorate(func: Callable) -> click.Command:
        @functools.wraps(func)
        def callback(verbose: bool, quiet: bool, log_format: str, config: str | None, **kwargs):
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
            except OSError as error:
                if not reader_gone(error):
                    raise
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
    """Text on stdout and stderr in UTF-8 when redirected: Windows would use its ANSI code page
    (cp1252), in which 'before → after' cannot be written at all, and --help > help.txt raised
    UnicodeEncodeError. A console whose code page lacks a character shows "?" instead."""
    for stream in (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        if stream is None or not hasattr(stream, "reconfigure") or encoding == "utf8":
            continue
        try:
            if stream.isatty():
                stream.reconfigure(errors="replace")
            else:
                stream.reconfigure(encoding="utf-8", errors="backslashreplace")
        except (OSError, ValueError):  # closed, or already written to: leave it
            pass


def run(command: click.Command, args: list[str] | None = None, prog: str | None = None,
        family: Iterable[click.Command] | Callable[[], Iterable[click.Command]] = ()) -> int:
    """Run a command the way every executable does, turning errors into exit codes. ``family``:
    every command whose table a config file may hold (to tell a typo from another stage's table)."""
    prog = prog or command.name
    _stop_on_sigterm()
    _utf8_text_output()  # before click parses: --help is printed while parsing
    try:
        result = command.main(args=args, prog_name=prog, standalone_mode=False,
                              obj=family if callable(family) else tuple(family))
    except click.exceptions.Exit as done:  # --help, --version
        return done.exit_code
    except click.ClickException as error:
        error.show()
        return ExitStatus.ERROR
    except click.Abort as abort:  # click turns Ctrl-C (and our SIGTERM) into Abort
        cause = abort.__cause__ or abort.__context__
        if isinstance(cause, KeyboardInterrupt):
            return _interrupted(prog, cause)
        _error(prog, "aborted")
        return ExitStatus.ERROR
    except StreamError as error:
        for problem in error.problems:
            _error(prog, str(problem))
        return ExitStatus.ERROR
    except ZivsyncError as error:
        _error(prog, str(error))
        return error.status
    except KeyboardInterrupt as stop:
        return _interrupted(prog, stop)
    return ExitStatus.OK if result is None else int(result)


def _stop_on_sigterm() -> None:
    """SIGTERM (systemd stopping the job, kill) ends a command as Ctrl-C does, so that it can say
    what it had done, and exits 143 (128 + 15); Ctrl-C exits 130."""
    def terminate(signum, frame) -> None:
        raise Interrupted(signum)

    # SIGBREAK: Ctrl-Break in a Windows console, and what a console program gets sent to stop
    # it (GenerateConsoleCtrlEvent); Python delivers it as a signal on Windows only
    for name in ("SIGTERM", "SIGBREAK"):
        if hasattr(signal, name):
            try:
                signal.signal(getattr(signal, name), terminate)
            except ValueError:  # not the main thread (a command run from a test's thread): leave it
                pass


def _interrupted(prog: str, stop: KeyboardInterrupt) -> int:
    """The last line of an interrupted command: what stopped it and what it had done."""
    if not isinstance(stop, Interrupted):
        stop = Interrupted(signal.SIGINT, str(stop) if str(stop) else "")
    _error(prog, stop.what + (f": {stop.done}" if stop.done else ""))
    return stop.exit_code


def _error(prog: str, message: str) -> None:
    """The error that ends a command, in the command's log format once logging is set up (a JSON
    log must not end in a line a log shipper cannot read), else as plain text."""
    if log.handlers:
        log.error("%s", message)
    else:
        click.echo(f"{prog}: error: {message}", err=True)


def reader_gone(error: OSError) -> bool:
    """Whether a write failed because the reader of our output went away: on Windows a pipe
    whose reader closed (``| Select-Object -First 5``) fails with EINVAL, not EPIPE (CPython
    maps ERROR_NO_DATA to EINVAL: bpo-35754), so it must be told from a real error by errno."""
    if isinstance(error, BrokenPipeError):
        return True
    # a write to the pipe names no file; open("plan?.jsonl") fails with EINVAL too, and names it
    return sys.platform == "win32" and error.errno == errno.EINVAL and error.filename is None


def _silence_stdout() -> None:
    """After the reader of our stdout went away, stop Python complaining at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
