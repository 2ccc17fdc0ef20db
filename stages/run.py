"""zivsync run: the whole pipeline from one config file, into a dated run folder."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from . import cli, htmlreport, mail, reporting
from .cli import ZivsyncError, option
from .running import (INTERRUPTED, SOURCES, Interrupted, Run, Settings, locked, make_settings, new_run_folder,
                      now_rfc3339, outcome_message, outcome_of, plan_facts, plan_steps, prune,
                      results_facts, stage_directories, terminate_as_interrupt)

HELP = """Run the configured sources, normalize, snapshot, diff and (with --apply) push.

\b
Each stage runs as its own process, exactly as the log shows it, so a run can be repeated
by hand stage by stage. Everything lands in a new folder runs/<UTC time>/: the directory
streams, current.jsonl, desired.jsonl, plan.jsonl, results.jsonl, run.log, summary.json and
report.html. The sources are those with a table in the config ([extract-ldap],
[extract-exo], [extract-exchange]) unless --source names them. One run at a time: a second
one exits 1 while the first holds the lock. The exit code is the first failing stage's.
Without --apply nothing is written to Zivver.

\b
Example:
  zivsync run --config zivsync.toml                 # dry run: review runs/<newest>/report.html
  zivsync run --config zivsync.toml --apply --mail-to it-ops@example.com
"""


@cli.stage("zivsync-run", HELP)
@click.option("--apply", "apply_", is_flag=True,
              help="Push the plan to Zivver. Without it the run stops after diff (a dry run).")
@option("--source", "sources", multiple=True, type=click.Choice(list(SOURCES)),
        help="Run this source (repeatable). Default: every source with a table in the config file.")
@option("--runs-dir", type=click.Path(file_okay=False), metavar="DIR",
        help="Where the run folders go. Default: 'runs' beside the config file.")
@option("--keep", type=click.IntRange(min=0), default=30, show_default=True,
        help="Keep this many run folders, removing the oldest (0 keeps all).")
@option("--lock-wait", type=click.FloatRange(min=0), default=0.0, show_default=True, metavar="SECONDS",
        help="Wait this long for a running zivsync run to end before giving up.")
@option("--directory", "directories", multiple=True, type=click.Path(dir_okay=False, exists=True), metavar="FILE",
        help="Also normalize this directory stream, made by a script of your own (repeatable; copied into the run folder).")
@mail.mail_options
def command(apply_, sources, runs_dir, keep, lock_wait, directories, **mail_options):
    context = click.get_current_context()
    settings = make_settings(context.params, apply_, sources, runs_dir, keep, lock_wait, directories)
    mailing = mail.settings_from_options(**mail_options)
    with locked(settings.runs_dir, settings.lock_wait):
        folder = new_run_folder(settings.runs_dir)
        code = _run_in(folder, settings, mailing)
        for removed in prune(settings.runs_dir, settings.keep, folder):
            cli.log.info("removed the old run folder %s (--keep %d)", removed, settings.keep)
    return code


def _run_in(folder: Path, settings: Settings, mailing: mail.MailSettings | None) -> int:
    with open(folder / "run.log", "ab") as log_file:
        handler = _also_into(log_file)
        run = Run(settings, folder, log_file)
        cli.log.info("run %s: %s (%s)", folder, "applying" if settings.apply else "dry run",
                     ", ".join(settings.sources))
        try:
            with terminate_as_interrupt():
                stage_directories(settings, folder)
                code, stopped = run.execute(plan_steps(settings, folder))
        except (Interrupted, KeyboardInterrupt):
            code, stopped = INTERRUPTED, ""
        plan, results = plan_facts(folder), results_facts(folder)
        message = outcome_message(code, stopped, plan, results, settings.apply)
        run.save(ended=now_rfc3339(), exit_code=int(code), outcome=outcome_of(code), message=message,
                 plan=plan, results=results)
        cli.log.log(logging.INFO if code == 0 else logging.ERROR, "%s", message)
        report = _write_report(folder)
        if mailing is not None and report is not None:
            _send(mailing, report, run.summary)
        cli.log.handlers.remove(handler)
    return code


def _also_into(log_file) -> logging.Handler:
    """The run's own log lines go into run.log too, between those of its stages."""

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            log_file.write((self.format(record) + "\n").encode("utf-8", "replace"))
            log_file.flush()

    handler = Handler()
    handler.setFormatter(cli.log.handlers[0].formatter)
    cli.log.addHandler(handler)
    return handler


def _write_report(folder: Path) -> reporting.Report | None:
    """report.html beside the streams; a report that cannot be made must not fail the run."""
    try:
        report = reporting.load(folder)
        (folder / "report.html").write_text(htmlreport.render(report), encoding="utf-8")
    except (ZivsyncError, OSError) as error:
        cli.log.error("could not write the report: %s", error)
        return None
    cli.log.info("report: %s", folder / "report.html")
    return report


def _send(mailing: mail.MailSettings, report: reporting.Report, summary: dict) -> None:
    changed = bool(sum((summary.get("plan") or {}).get("changes", {}).values()))
    problem = summary.get("exit_code") != 0
    if not mail.should_send(mailing, changed=changed, problem=problem):
        return
    subject = f"zivsync {summary['outcome']}: {summary['message']}"
    message = mail.build_message(mailing, subject, reporting.describe_report(report, limit=None),
                                 htmlreport.render(report))
    try:
        mail.send(mailing, message)
    except ZivsyncError as error:  # the run is done; a mail that did not go is logged, not fatal
        cli.log.error("the report mail was not sent: %s", error)


main = cli.entry_point(command)

if __name__ == "__main__":
    main()
