"""zivsync-report: a plan, or a run folder of zivsync run, summarised for people.

The logic: ``stages/operator/reports.py`` (text) and ``stages/operator/html_report.py``.
"""

from __future__ import annotations

import click

from . import cli
from .cli import ExitStatus
from .core.stream import open_output
from .operator import html_report as htmlreport
from .operator import reports as reporting

HELP = """Summarise a plan, or a run folder of zivsync run, for people to review.

\b
Prints the changes counted by operation and listed with each field before → after, the
accounts left alone and why, the safety check, and for a run folder when it ran, whether it
applied the plan, each stage's command line, exit code and time, and every change that failed
or conflicted with Zivver's message. --html writes the same as one self-contained page to
attach to a change ticket (no scripts, nothing fetched from anywhere), with charts of the
changes by operation and by domain, and every change listed. Exit 0; 1 when the plan or the
run folder cannot be read.

\b
Example:
  zivsync-report plan.jsonl
  zivsync-report plan.jsonl results.jsonl                         # a push run by hand
  zivsync-report runs/20261127T013304Z --html change-1234.html
  zivsync-report runs/20261127T013304Z --why l.meijer@fabrikam.example
  zivsync-diff -i desired.jsonl --current current.jsonl | zivsync-report - --all
"""


@cli.stage("zivsync-report", HELP)
@click.argument("path", metavar="PLAN_OR_RUNDIR", type=click.Path(allow_dash=True))
@click.argument("results", metavar="[RESULTS]", required=False, type=click.Path(dir_okay=False))
@click.option("--html", "html_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Also write the report as one self-contained HTML page (atomically).")
@click.option("--all", "show_all", is_flag=True,
              help=f"List every change and skipped account, not only the first {reporting.SHOWN}.")
@click.option("--why", "why", metavar="EMAIL",
              help="Instead, tell the whole story of one account across the run's streams: the directory "
                   "objects that name it, the desired account (and how it got its delegates), Zivver's account, "
                   "the plan's change or skip with its reason, and the result.")
def command(path: str, results: str | None, html_file: str | None, show_all: bool, why: str | None):
    if why:
        click.echo(reporting.story(path, why))
        return ExitStatus.OK
    report = reporting.load(path, results)
    if html_file:
        with open_output(html_file) as (handle, _):
            handle.write(htmlreport.render(report).encode("utf-8"))
        cli.log.info("wrote %s", html_file)
    click.echo(reporting.describe_report(report, limit=None if show_all else reporting.SHOWN))
    return ExitStatus.OK

