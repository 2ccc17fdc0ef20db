"""zivsync check: test every configured connection, change nothing, say what was found.

The logic: ``stages/operator/nightly.py`` (the stages it starts) and ``stages/operator/mail.py``.
"""

from __future__ import annotations

import io
import tempfile
import time
from collections import Counter
from pathlib import Path

import click
import orjson

from . import cli
from .cli import ExitStatus, ZivsyncError, option
from .operator import mail
from .operator.nightly import SOURCES, Step, is_problem, make_settings, spawn
from .run import configured_state_dir

HELP = """Test each configured source and Zivver, read-only, and print what was found.

\b
Reads each source the way zivsync run would (the sources with a table in the config, or
those --source names) and Zivver's accounts, each as its own process, into a temporary
folder that is removed afterwards, and prints per connection: whether it worked, the counts
(people by mailbox kind, groups, Full Access permissions, objects that could not be read;
Zivver's personal and functional accounts), and otherwise the error: the server that could
not be reached, the certificate that did not verify, the password refused, the permission
or role the account lacks. With --mail-to, also the SMTP server the report is mailed through
(connected, TLS verified, signed in; no mail sent). Nothing is written to Zivver. Exit 0 when
every connection works, else the first failing one's exit code (4: could not reach or sign in).

\b
Example:
  zivsync check --config zivsync.toml
"""


@cli.stage("zivsync-check", HELP)
@option("--source", "sources", multiple=True, type=click.Choice(list(SOURCES)),
        help="Check this source (repeatable). Default: every source with a table in the config file.")
@click.option("--keep-files", type=click.Path(file_okay=False), metavar="DIR",
              help="Keep the streams read in this folder instead of removing them.")
@cli.mail_options
def command(sources, keep_files, **mail_options):
    params = click.get_current_context().params
    settings = make_settings(params, sources=sources, need_source=False, state_dir_of=configured_state_dir)
    mailing = mail.settings_from_options(**mail_options)
    common = ("--config", str(settings.config)) + settings.stage_options
    # ignore_cleanup_errors: on Windows a virus scanner may still hold a file; the check is done
    with tempfile.TemporaryDirectory(prefix="zivsync-check-", ignore_cleanup_errors=True) as temporary:
        folder = Path(keep_files).resolve() if keep_files else Path(temporary)
        folder.mkdir(parents=True, exist_ok=True)
        checks = [(source, Step(SOURCES[source], common + ("-o", str(folder / f"directory-{source}.jsonl")),
                                f"directory-{source}.jsonl")) for source in settings.sources]
        checks.append(("zivver", Step("snapshot", common + ("-o", str(folder / "current.jsonl")), "current.jsonl")))
        click.echo(f"zivsync check: {settings.config}")
        codes = [_check(label, step, folder, echo=bool(params.get("verbose"))) for label, step in checks]
        if mailing is not None:
            codes.append(_check_mail(mailing))
    # every connection is checked, not only up to the first that fails; the first failure's code
    return next((code for code in codes if code), ExitStatus.OK)


def _check(label: str, step: Step, folder: Path, echo: bool) -> int:
    output = folder / step.output
    output.unlink(missing_ok=True)  # a --keep-files folder's stream of last time is not this one's
    log = io.BytesIO()
    begun = time.monotonic()
    code = spawn(step, log, echo=echo)
    seconds = time.monotonic() - begun
    found = describe_counts(label, output) if output.exists() else ""
    _line(label, code, f"{found}{'; ' if found else ''}{seconds:.1f} s")
    for line in reasons(log.getvalue(), code):
        click.echo(f"            {line}")
    return code


def reasons(log: bytes, code: int) -> list[str]:
    """What to show under a connection's line: its warnings and errors; for a failure that logged
    none (a crash), the last lines it wrote, so that a failure is never only an exit code."""
    lines = [line.decode("utf-8", "replace") for line in log.splitlines()]
    # with --check-revocation, each certificate's status, good or not, is part of the answer
    problems = [line for raw, line in zip(log.splitlines(), lines) if is_problem(raw) or b": revocation: " in raw]
    if code and not any(":" in p and "error" in p.lower() for p in problems):
        tail = [line for line in lines if line.strip()][-3:]
        problems += tail or [f"it ended with exit code {code} and said nothing"]
    return problems


def _check_mail(mailing: mail.MailSettings) -> int:
    """The SMTP server the report is mailed through: connected, TLS verified, signed in."""
    try:
        mail.send(mailing, None)
    except ZivsyncError as error:
        _line("mail", error.status, "")
        click.echo(f"            {error}")
        return error.status
    _line("mail", 0, f"{mailing.host}:{mailing.port}, {mailing.security}"
                     + (f", signed in as {mailing.username}" if mailing.username else ""))
    return 0


def _line(label: str, code: int, found: str) -> None:
    state = "ok" if code == 0 else f"FAILED (exit {code})"
    click.echo(f"  {label:<9} {state:<16} {found}")


def describe_counts(label: str, path: Path) -> str:
    counts = count_records(path)
    if label == "zivver":
        return f"{counts['user']} personal and {counts['functional']} functional accounts"
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()) if kind.startswith("mailbox:"))
    text = (f"{counts['person']} people ({kinds.replace('mailbox:', '') or 'no mailboxes'}), "
            f"{counts['group']} groups, {counts['permission']} Full Access permissions")
    if counts["error"]:
        text += f", {counts['error']} objects that could not be read"
    if counts["incomplete"]:
        text += ", INCOMPLETE"
    return text


def count_records(path: Path) -> Counter:
    """Records by type, people by mailbox kind, accounts by kind; 'incomplete' when the stream
    did not end with a complete end record."""
    counts: Counter = Counter()
    ended = False
    with open(path, "rb") as handle:
        for line in handle:
            record = orjson.loads(line)
            kind = record.get("type")
            ended = kind == "end" and record.get("complete", True) is not False
            counts[kind] += 1
            if kind == "person":
                counts[f"mailbox:{record.get('mailbox') or 'none'}"] += 1
            elif kind == "account":
                counts[record.get("kind")] += 1
    counts["incomplete"] = 0 if ended else 1
    return counts

