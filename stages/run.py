"""zivsync run: the whole pipeline from one config file, into a dated run folder.

The logic: ``stages/operator/nightly.py``.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import click

from . import cli, push
from .cli import ZivsyncError, option
from .operator import html_report as htmlreport
from .operator import mail
from .operator import reports as reporting
from .operator.nightly import (
    INTERRUPTED,
    SOURCES,
    Interrupted,
    Run,
    Settings,
    close_abandoned,
    locked,
    make_settings,
    new_run_folder,
    now_rfc3339,
    outcome_message,
    outcome_of,
    plan_facts,
    plan_steps,
    prune,
    results_facts,
    stage_directories,
    terminate_as_interrupt,
)

HELP = """Run the configured sources, normalize, snapshot, diff and (with --apply) push.

\b
Each stage runs as its own process, exactly as the log shows it, so a run can be repeated
by hand stage by stage. Everything lands in a new folder runs/<UTC time>/: the directory
streams, current.jsonl.gz, desired.jsonl.gz, plan.jsonl.gz (gzip-compressed: every stage reads
them as they are), results.jsonl, run.log, summary.json and report.html. The sources are those with a table in the config ([extract-ldap],
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
        help="Run this source (repeatable). Default: every source with a table in the config file. "
             "With --apply it may not leave a configured one out.")
@option("--runs-dir", type=click.Path(file_okay=False), metavar="DIR",
        help="Where the run folders go. Default: 'runs' beside the config file.")
@option("--keep", type=click.IntRange(min=0), default=30, show_default=True,
        help="Keep this many run folders, removing the oldest (0 keeps all).")
@option("--lock-wait", type=click.FloatRange(min=0), default=0.0, show_default=True, metavar="SECONDS",
        help="Wait this long for a running zivsync run to end before giving up.")
@option("--stage-timeout", type=click.FloatRange(min=0), default=0.0, show_default=True, metavar="SECONDS",
        help="Stop a stage that takes longer than this (exit 124); 0: no limit.")
@option("--directory", "directories", multiple=True, type=click.Path(dir_okay=False, exists=True), metavar="FILE",
        help="Also normalize this directory stream, made by a script of your own (repeatable; copied into the run folder).")
@cli.mail_options
def command(apply_, sources, runs_dir, keep, lock_wait, stage_timeout, directories, **mail_options):
    context = click.get_current_context()
    settings = make_settings(context.params, state_dir_of=configured_state_dir, apply_=apply_, sources=sources, runs_dir=runs_dir, keep=keep,
                             lock_wait=lock_wait, directories=directories, stage_timeout=stage_timeout)
    mailing = mail.settings_from_options(**mail_options)
    with locked(settings):
        for abandoned in close_abandoned(settings.runs_dir):
            cli.log.warning("the run in %s was killed before it ended: its summary now says so", abandoned)
        folder = new_run_folder(settings.runs_dir)
        code = _run_in(folder, settings, mailing)
        for removed in prune(settings.runs_dir, settings.keep, folder):
            cli.log.info("removed the old run folder %s (--keep %d)", removed, settings.keep)
    return code


def _run_in(folder: Path, settings: Settings, mailing: mail.MailSettings | None) -> int:
    with open(folder / "run.log", "ab") as log_file:
        handler = _also_into(log_file)
        try:
            run = Run(settings, folder, log_file)
            cli.log.info("run %s: %s (%s)", folder, "applying" if settings.apply else "dry run",
                         ", ".join(settings.sources + tuple(str(d) for d in settings.directories)))
            code, stopped = _execute(run, settings, folder)
            plan, results = plan_facts(folder), results_facts(folder)
            during = run.stages[-1].name if run.stages and run.stages[-1].exit_code != 0 else ""
            message = outcome_message(code, stopped, plan, results, settings.apply, during)
            run.save(ended=now_rfc3339(), seconds=round(time.time() - run.started, 3), exit_code=int(code),
                     outcome=outcome_of(code), message=message, plan=plan, results=results)
            cli.log.log(logging.INFO if code == 0 else logging.ERROR, "%s", message)
            report = _write_report(folder)
            if mailing is not None:
                run.save(mail=_send(mailing, report, run.summary))
        finally:
            cli.log.removeHandler(handler)
    return code


def _execute(run: Run, settings: Settings, folder: Path) -> tuple[int, str]:
    try:
        with terminate_as_interrupt():
            stage_directories(settings, folder)
            return run.execute(plan_steps(settings, folder))
    except Interrupted as stop:  # SIGTERM: 143
        return 128 + stop.signum, ""
    except KeyboardInterrupt:  # Ctrl-C: 130
        return INTERRUPTED, ""
    except ZivsyncError as error:  # a --directory stream that could not be copied
        cli.log.error("%s", error)
        return error.status, str(error)


def _also_into(log_file) -> logging.Handler:
    """The run's own log lines go into run.log too, between those of its stages."""

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            log_file.write((self.format(record) + "\n").encode("utf-8", "replace"))
            log_file.flush()

    handler = Handler(logging.INFO)  # the whole story, whatever -q says about the console
    handler.setFormatter(cli.log.handlers[0].formatter)
    cli.log.addHandler(handler)
    if cli.log.level > logging.INFO:  # -q: the console handler filters, the logger must not
        for console in cli.log.handlers[:-1]:
            console.setLevel(cli.log.level)
        cli.log.setLevel(logging.INFO)
    return handler


def _write_report(folder: Path) -> reporting.Report | None:
    """report.html beside the streams; a report that cannot be made must not fail the run."""
    try:
        report = reporting.load(folder)
        (folder / "report.html").write_text(htmlreport.render(report), encoding="utf-8")
    except Exception as error:  # noqa: BLE001 (the run is done: its exit code must stand)
        cli.log.error("could not write the report: %s", error)
        return None
    cli.log.info("report: %s", folder / "report.html")
    return report


def _send(mailing: mail.MailSettings, report: reporting.Report | None, summary: dict) -> dict:
    """Mails the report (the text alone when the report could not be made); returns what
    happened, for the summary: a mail that did not go must not pass unnoticed."""
    changed = bool(sum((summary.get("plan") or {}).get("changes", {}).values()))
    if not mail.should_send(mailing, changed=changed, problem=summary.get("exit_code") != 0):
        return {"sent": False, "reason": f"--mail-when {mailing.when}"}
    message, outcome = summary["message"], summary["outcome"]
    said = message.startswith(f"{outcome} ")  # "interrupted by SIGTERM …": the word once
    subject = f"zivsync {message}" if said else f"zivsync {outcome}: {message}"
    if report is not None:
        text, page = reporting.describe_report(report), htmlreport.render(report, limit=reporting.SHOWN)
    else:
        text, page = f"{summary['message']}\n\nThe report could not be made: see run.log in {summary['run']}.", None
    try:
        mail.send(mailing, mail.build_message(mailing, subject, text, page))
    except Exception as error:  # noqa: BLE001 (the run is done; a mail that did not go is logged)
        cli.log.error("the report mail was not sent: %s", error)
        return {"sent": False, "to": list(mailing.to), "error": str(error)}
    return {"sent": True, "to": list(mailing.to)}


def configured_state_dir(data: dict, config: Path) -> Path | None:
    """The state folder push will use, as it will resolve it (environment, then the file)."""
    family = cli.family_of(click.get_current_context())
    value = os.environ.get("ZIVSYNC_STATE_DIR") or cli.config_defaults(data, push.command, config, family).get(
        "state_dir")
    return Path(value).resolve() if value else None
