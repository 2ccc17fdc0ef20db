"""zivsync-push: apply a reviewed plan to Zivver, and write what happened.

The logic: ``stages/zivver/applying.py`` over the SCIM client ``stages/zivver/client.py``.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from pathlib import Path

import click

from . import cli
from .cli import ExitStatus, ZivsyncError, option
from .core import account_mapping as state
from .core.describe import describe_plan
from .core.planning import in_dependency_order
from .core.errors import signals_held
from .core.stream import Input, StreamError, StreamReader, StreamWriter, compressed_if_gz, input_digests
from .zivver import client as zivver
from .zivver.applying import Abort, Pusher, Zivver, touched_by

RESUMED = "applied by an earlier run (--resume)"

HELP = """Apply a plan made by zivsync-diff to Zivver; without --apply, only show it.

\b
Applies the changes in the plan's order (users first, suspensions last), each checked
against one listing of Zivver taken at the start: a change whose account no longer looks as
the plan says is a conflict and left alone. Writes one result per change, flushed as it
completes, so that an interrupted push can be resumed (--resume) without repeating what
succeeded; keeps the account mapping in --state for the next diff. Paces itself to Zivver's
rate limit. Refuses a plan that failed its safety checks or came from an incomplete stream.
Exit 0: all applied; 2: some failed or conflicted; 3: refused; 4: Zivver unreachable or
the API key refused.

\b
Example:
  zivsync-push -i plan.jsonl                                      # show what it would do
  zivsync-push -i plan.jsonl --apply --state state/ -o results.jsonl
  zivsync-push -i plan.jsonl --apply --resume results.jsonl -o results-2.jsonl
"""


@cli.stage("zivsync-push", HELP)
@cli.input_options
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True),
              help="Write the results stream here, each result flushed as it completes. Default: standard output.")
@click.option("--apply", "apply_", is_flag=True, help="Really change Zivver. Without it nothing is sent.")
@option("--resume", type=click.Path(dir_okay=False, exists=True), metavar="RESULTS",
        help="Results of an earlier, interrupted push of this plan: what they say was applied is skipped.")
@option("--state", "state_dir", type=click.Path(file_okay=False), metavar="DIR",
        help="The state folder holding the account mapping (anchor → Zivver id) that diff reads.")
@click.option("--force", is_flag=True,
              help="Overwrite an -o file that holds the results of an unfinished push of this plan (start over).")
@cli.zivver_options
def command(inputs, output, apply_, resume, state_dir, force, **connection):
    sources = cli.open_inputs(inputs)
    reader = StreamReader(sources, ["plan"])
    records = list(reader)  # every record checked before anything is sent
    header = reader.headers[0] if reader.headers else {}
    refusal = _refusal(reader, header)
    changes = in_dependency_order([r for r in records if r["type"] == "change"])
    links = [r for r in records if r["type"] == "link"]
    cli.log.info("%s", describe_plan(header, records))
    if refusal:
        cli.log.error("plan refused: %s", refusal)
        return ExitStatus.REFUSED
    if not apply_:
        cli.log.info("dry run: nothing was sent to Zivver. Add --apply to apply these %d changes.", len(changes))
        return ExitStatus.OK
    if not changes:
        cli.log.info("nothing to do: no request sent to Zivver")
    if not force:
        _keep_unfinished(output, resume, input_digests(sources))
    done = _applied_before(resume, input_digests(sources)) if resume else set()
    with state.applying_lock(state_dir):
        return _apply(changes, links, done, state_dir, output, sources, resume, connection)


def _apply(changes, links, done, state_dir, output, sources, resume, connection) -> ExitStatus:
    mapping = _load_mapping(state_dir)
    for link in links:  # accounts in sync: only the local mapping learns something
        known = mapping.accounts.get(link["zivver_id"])
        mapping.record(state.MappedAccount(link["zivver_id"], link["email"], link["kind"], link["anchors"],
                                           known.sso_key if known else None,
                                           link.get("sources") or (known.sources if known else []),
                                           link.get("dn") or (known.dn if known else None)))
    client = zivver.connect(connection)
    try:
        return _push(client, changes, done, mapping, state_dir, output, sources, resume)
    finally:
        client.close()


def _refusal(reader: StreamReader, header: dict) -> str | None:
    if not reader.complete:
        return "the plan stream is incomplete: " + "; ".join(reader.incomplete_reasons)
    if len(reader.segments) != 1:
        return "a plan must be one segment, as zivsync-diff writes it"
    if header.get("desired_complete") is not True:
        return "the plan was made from an incomplete desired stream"
    if (header.get("safety") or {}).get("passed") is not True:
        return "the plan failed its safety checks: " + "; ".join((header.get("safety") or {}).get("reasons", []))
    return None


def _plan_digests(reader: StreamReader) -> list[str]:
    """The digests of the plan whose push a results stream records (its header says)."""
    return [d["sha256"] for d in (reader.headers[0].get("plan") or [])] if reader.headers else []


def _keep_unfinished(output: str | None, resume: str | None, plan: list[dict]) -> None:
    """An -o file holding the results of an unfinished push of this plan is an audit record of
    changes Zivver may have taken: it is never overwritten unasked (nothing was sent)."""
    if not output or output == "-" or not Path(output).is_file():
        return
    if resume and Path(resume).resolve() == Path(output).resolve():
        raise ZivsyncError(f"--resume {resume} and -o {output} are one file: write the new results elsewhere "
                           "(nothing was sent)")
    try:
        reader = StreamReader([Input.open(output)], ["results"])
        for _ in reader:
            pass
    except StreamError:
        return  # not a results stream: not ours to keep
    earlier = _plan_digests(reader)
    if not reader.complete and earlier == [d["sha256"] for d in plan]:
        raise ZivsyncError(f"{output} holds the results of an unfinished push of this plan: continue it with "
                           f"--resume {output} -o NEW.jsonl, or start over with --force (nothing was sent)")


def _applied_before(path: str, plan: list[dict]) -> set[str]:
    """Change ids that an earlier run's results say were applied (that run may have been cut off)."""
    reader = StreamReader([Input.open(path)], ["results"])
    try:
        done = {r["change_id"] for r in reader if r["status"] == "applied" or (
            r["status"] == "skipped" and (r.get("message") or "").startswith(RESUMED))}
    except StreamError as error:
        raise ZivsyncError(f"cannot resume from {path}: {error}") from None
    earlier = _plan_digests(reader)
    if earlier != [d["sha256"] for d in plan]:
        # A change's id is its content: the same suspension planned again months later has the
        # same id, and must not be skipped because another plan's push once applied it.
        raise ZivsyncError(f"{path} records the push of another plan: --resume continues only the push of "
                           "the same plan file (nothing was sent)")
    return done


def _load_mapping(state_dir: str | None) -> state.Mapping:
    try:
        return state.load(state_dir)
    except state.StateError as error:
        raise ZivsyncError(str(error)) from None


def _push(client, changes, done, mapping, state_dir, output, sources, resume) -> ExitStatus:
    try:
        # nothing to do: not even a listing; else all of it, held whole where the plan touches it
        listing = Zivver.listed(client, keep=touched_by(changes)) if changes else Zivver([])
    except zivver.ZivverError as error:
        raise ZivsyncError(f"cannot read Zivver's accounts: {error}", zivver.exit_status_for(error)) from None
    saver = _MappingSaver(mapping, state_dir)
    saver.dirty = True  # the links, if nothing else
    pusher = Pusher(client, listing, mapping, saver.changed)
    header = {"plan": input_digests(sources), "zivver": {"url": client.base}, "resumed_from": resume}
    statuses: dict[str, int] = {}
    abort: Abort | None = None
    try:
        with _results_output(output) as (handle, name), \
                cli.progress("changes pushed", total=len(changes), unit=" changes") as bar:
            writer = StreamWriter(handle, "results", "zivsync-push", header, name, flush_each=True)
            try:
                abort = _apply_all(changes, done, pusher, writer, statuses, bar, saver)
            except KeyboardInterrupt:  # the audit record ends saying so, not cut off mid-air
                with signals_held():
                    writer.close([f"interrupted after {sum(statuses.values())} of {len(changes)} changes"])
                raise
            except ZivsyncError as error:  # the mapping could not be saved: the results end saying so
                writer.close([f"stopped after {sum(statuses.values())} of {len(changes)} changes: {error}"])
                raise
            writer.close()
    except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM: what was applied is recorded; say so, then stop
        with signals_held():
            saver.save()
        signum = getattr(stop, "signum", signal.SIGINT)
        finished = sum(statuses.values())
        resume = f"zivsync-push --resume {output}" if output and output != "-" else \
            "zivsync-push --resume with the results written so far"
        raise cli.Interrupted(signum, f"after {finished} of {len(changes)} changes; {statuses.get('applied', 0)} "
                                      f"applied — {resume} finishes the plan") from None
    saver.save()
    stats = client.stats
    cli.log.info("%s; %d requests (%d writes), %d throttled, %d retried",
                 ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())) or "nothing to do",
                 stats.requests, stats.writes, stats.throttled, stats.retries)
    if abort is not None:
        raise ZivsyncError(str(abort.error), zivver.exit_status_for(abort.error))
    return ExitStatus.PARTIAL if statuses.get("failed") or statuses.get("conflict") else ExitStatus.OK


def _apply_all(changes, done, pusher, writer, statuses: dict[str, int], bar, saver) -> "Abort | None":
    """Apply the changes in order, writing each result as it completes; after an Abort (Zivver
    unreachable, the key refused) the rest are recorded as not attempted."""
    abort: Abort | None = None
    for change in changes:
        bar.update()
        if change["id"] in done:
            result = _result(change, "skipped", RESUMED)
        elif abort is not None:
            result = _result(change, "skipped", f"not attempted: {abort.error}")
        else:
            try:
                result = pusher.apply(change)
            except Abort as stop:
                abort = stop
                result = _result(change, "failed", str(stop.error), stop.error.status)
        writer.write(result)
        statuses[result["status"]] = statuses.get(result["status"], 0) + 1  # counted as soon as it is on record
        saver.save_if_due()
        level = 20 if result["status"] in ("applied", "skipped") else 30
        cli.log.log(level, "%s %s %s: %s", result["status"], change["op"], change["email"], result["message"])
    return abort


def _result(change: dict, status: str, message: str, http: int | None = None) -> dict:
    return {"type": "result", "change_id": change["id"], "op": change["op"], "kind": change["kind"],
            "email": change["email"], "zivver_id": change["zivver_id"], "status": status,
            "http_status": http, "message": message, "requests": 0}


@contextlib.contextmanager
def _results_output(path: str | None):
    """The results file is written in place, not renamed into place at the end: a push that is
    killed must leave every result it wrote, for --resume. Named .gz, it is compressed, each
    result flushed to the file as it is written (a gzip sync flush: readable without its end)."""
    if path is None or path == "-":
        yield sys.stdout.buffer, "<stdout>"
        return
    with open(path, "wb") as handle, compressed_if_gz(handle, Path(path)) as out:
        yield out, path


class _MappingSaver:
    """Saves the account mapping atomically, at most once a second while pushing, and at the end."""

    def __init__(self, mapping: state.Mapping, state_dir: str | None):
        self.mapping, self.state_dir, self.saved = mapping, state_dir, time.monotonic()
        self.dirty = False

    def changed(self) -> None:
        self.dirty = True

    def save_if_due(self) -> None:
        """Called after a change's result is written, never before: if saving fails (a file held
        open on Windows, a full disk), the record of what Zivver accepted is already kept."""
        if time.monotonic() - self.saved > 1.0:
            self.save()

    def save(self) -> None:
        if self.state_dir and self.dirty:
            try:
                state.save(self.mapping, Path(self.state_dir))
            except (OSError, ZivsyncError) as error:
                # changes were applied (their results say which): exit 1 would say nothing was written
                raise ZivsyncError(f"the account mapping in {self.state_dir} could not be saved: {error}; the "
                                   "results record every change applied, and the next run links the accounts "
                                   "again by address", ExitStatus.PARTIAL) from None
            self.saved, self.dirty = time.monotonic(), False

