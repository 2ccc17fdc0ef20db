"""zivsync-validate: check streams and report every problem."""

from __future__ import annotations

import click

from . import cli
from .cli import ExitStatus
from .stream import Input, StreamError, StreamReader

HELP = """Check zivsync streams against their schemas and report every problem found.

\b
Each problem names the file, line, record type and field. Says for each stream whether it
is complete (every segment ends with an end record whose count matches). Exit 0 when every
stream is valid, 1 otherwise; an incomplete but valid stream exits 0 unless --strict.

\b
Example:
  zivsync-validate desired.jsonl plan.jsonl
  zivsync-extract-ldap | zivsync-validate
"""


@cli.stage("zivsync-validate", HELP)
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--strict", is_flag=True, help="Count an incomplete stream as invalid too.")
def command(files: tuple[str, ...], strict: bool):
    paths = files or ("-",)
    if not files:
        cli.open_inputs(())  # refuses a terminal on stdin with a clear message
    status = ExitStatus.OK
    for path in paths:
        try:
            source = Input.open(path)
        except StreamError as error:
            click.echo(f"{error}", err=True)
            status = ExitStatus.ERROR
            continue
        reader = StreamReader([source], collect=True)
        records = sum(1 for _ in reader)
        for problem in reader.problems:
            click.echo(str(problem), err=True)
        kinds = sorted({segment.kind for segment in reader.segments}) or ["no"]
        completeness = "complete" if reader.complete else "INCOMPLETE"
        verdict = "valid" if not reader.problems else f"INVALID ({len(reader.problems)} problem{'s' if len(reader.problems) > 1 else ''})"
        click.echo(f"{source.name}: {verdict}, {completeness}: {'/'.join(kinds)} stream, "
                   f"{len(reader.segments)} segment(s), {records} valid records", err=True)
        for reason in reader.incomplete_reasons:
            click.echo(f"{source.name}: incomplete: {reason}", err=True)
        if reader.problems or (strict and not reader.complete):
            status = ExitStatus.ERROR
    return status


main = cli.entry_point(command)

if __name__ == "__main__":
    main()
