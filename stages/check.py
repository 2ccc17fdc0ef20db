"""zivsync check: test every configured connection, change nothing, say what was found."""

from __future__ import annotations

import io
import tempfile
import time
from collections import Counter
from pathlib import Path

import click
import orjson

from . import cli
from .cli import ExitStatus, option
from .running import SOURCES, Step, make_settings, spawn

HELP = """Test each configured source and Zivver, read-only, and print what was found.

\b
Reads each source the way zivsync run would (the sources with a table in the config, or
those --source names) and Zivver's accounts, each as its own process, into a temporary
folder that is removed afterwards, and prints per connection: whether it worked, the counts
(people by mailbox kind, groups, Full Access permissions, objects that could not be read;
Zivver's personal and functional accounts), and otherwise the error: the server that could
not be reached, the certificate that did not verify, the password refused, the permission
or role the account lacks. Nothing is written to Zivver. Exit 0 when every connection works,
else the first failing one's exit code (4: could not reach or sign in).

\b
Example:
  zivsync check --config zivsync.toml
"""


@cli.stage("zivsync-check", HELP)
@option("--source", "sources", multiple=True, type=click.Choice(list(SOURCES)),
        help="Check this source (repeatable). Default: every source with a table in the config file.")
@click.option("--keep-files", type=click.Path(file_okay=False), metavar="DIR",
              help="Keep the streams read in this folder instead of removing them.")
def command(sources, keep_files):
    params = click.get_current_context().params
    settings = make_settings(params, False, sources, None, 0, 0.0)
    common = ("--config", str(settings.config)) + settings.stage_options
    with tempfile.TemporaryDirectory(prefix="zivsync-check-") as temporary:
        folder = Path(keep_files).resolve() if keep_files else Path(temporary)
        folder.mkdir(parents=True, exist_ok=True)
        checks = [(source, Step(SOURCES[source], common + ("-o", str(folder / f"directory-{source}.jsonl")),
                                f"directory-{source}.jsonl")) for source in settings.sources]
        checks.append(("zivver", Step("snapshot", common + ("-o", str(folder / "current.jsonl")), "current.jsonl")))
        worst = ExitStatus.OK
        click.echo(f"zivsync check: {settings.config}")
        for label, step in checks:
            code = _check(label, step, folder, echo=bool(params.get("verbose")))
            worst = worst or code
    return worst


def _check(label: str, step: Step, folder: Path, echo: bool) -> int:
    log = io.BytesIO()
    begun = time.monotonic()
    code = spawn(step, folder, log, echo=echo)
    seconds = time.monotonic() - begun
    output = folder / step.output
    found = describe_counts(label, output) if output.exists() else ""
    state = "ok" if code == 0 else f"FAILED (exit {code})"
    click.echo(f"  {label:<9} {state:<16} {found}{'; ' if found else ''}{seconds:.1f} s")
    for line in _problems(log.getvalue()):
        click.echo(f"            {line}")
    return code


def _problems(log: bytes) -> list[str]:
    """The stage's errors and warnings: what a person needs to fix the connection."""
    lines = log.decode("utf-8", "replace").splitlines()
    return [line for line in lines if ": error: " in line or ": warning: " in line
            or '"level":"error"' in line or '"level":"warning"' in line]


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


main = cli.entry_point(command)

if __name__ == "__main__":
    main()
