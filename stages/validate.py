"""zivsync-validate: check streams and report every problem.

The logic: ``stages/core/stream.py`` and ``stages/core/schema.py``.
"""

from __future__ import annotations

import click

from . import cli
from .cli import ExitStatus
from .core.stream import Input, StreamError, StreamReader, open_output

HELP = """Check zivsync streams against their schemas and report every problem found.

\b
Each problem names the file, line, record type and field. Says for each stream whether it
is complete (every segment ends with an end record whose count matches). Exit 0 when every
stream is valid, 1 otherwise; an incomplete but valid stream exits 0 unless --strict.

\b
Example:
  zivsync-validate desired.jsonl plan.jsonl
  zivsync-validate -i plan.jsonl -o plan-report.txt
  zivsync-extract-ldap | zivsync-validate
"""


@cli.stage("zivsync-validate", HELP)
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, allow_dash=True))
@cli.input_options
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True),
              help="Write the report to this file (atomically) instead of standard output.")
@click.option("--strict", is_flag=True, help="Count an incomplete stream as invalid too.")
def command(files: tuple[str, ...], inputs: tuple[str, ...], output: str | None, strict: bool):
    paths = files + inputs
    if not paths:
        cli.open_inputs(())  # refuses a terminal on stdin with a clear message
        paths = ("-",)
    lines: list[str] = []
    status = ExitStatus.OK
    for path in paths:
        try:
            source = Input.open(path)
        except StreamError as error:  # cannot be read at all: an error, on stderr
            cli.log.error("%s", error)
            status = ExitStatus.ERROR
            continue
        valid, report = _check(source, strict)
        lines.extend(report)
        status = status if valid else ExitStatus.ERROR
    if output:
        with open_output(output) as (handle, _):
            handle.write("".join(line + "\n" for line in lines).encode("utf-8"))
    else:  # the report is data: standard output (errors go to stderr)
        for line in lines:
            click.echo(line)
    return status


def _check(source: Input, strict: bool) -> tuple[bool, list[str]]:
    """Whether the stream is valid (and complete, if strict), and the report about it."""
    reader = StreamReader([source], collect=True)
    records = sum(1 for _ in reader)
    report = [str(problem) for problem in reader.problems]
    kinds = sorted({segment.kind for segment in reader.segments}) or ["no"]
    problems = len(reader.problems)
    verdict = "valid" if not problems else f"INVALID ({problems} problem{'s' if problems > 1 else ''})"
    report.append(f"{source.name}: {verdict}, {'complete' if reader.complete else 'INCOMPLETE'}: "
                  f"{'/'.join(kinds)} stream, {len(reader.segments)} segment(s), {records} valid records")
    report.extend(f"{source.name}: incomplete: {reason}" for reason in reader.incomplete_reasons)
    return not problems and (reader.complete or not strict), report

