"""Plans and runs described for people: what zivsync-report shows of a plan or of a run folder
written by zivsync run (the plan lines themselves are ``core/describe.py``'s)."""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterator

import orjson

from ..core.describe import (  # noqa: F401
    SHOWN,
    describe_change,
    describe_plan,
    describe_safety,
    field_changes,
    is_creation,
    list_delta,
)
from ..core.errors import ZivsyncError
from ..core.planning import OP_ORDER
from ..core.stream import Input, StreamError, StreamReader, end_record
from .nightly import RESULTS, directory_files, stream_file

PROBLEMS = ("failed", "conflict")  # the results an administrator has to look at
STATUS_ORDER = ("applied", "conflict", "failed", "skipped")
# How a run's outcome looks: fine, worth a look, or needing someone to act.
SEVERITY = {"ok": "good", "pending": "warn", "partial": "warn", "interrupted": "warn", "running": "warn", "killed": "bad",
            "refused": "bad", "unreachable": "bad", "error": "bad"}


# -- a plan or a run, as zivsync-report shows it ---------------------------------------------


@dataclass
class Report:
    """What zivsync-report shows: a plan stream, or a run folder that zivsync run wrote.

    ``summary`` is the run's summary.json (``{}`` when the run left none), None for a bare
    plan. ``notes`` say what was missing or incomplete in what was read: a report is most
    wanted when a run went wrong, so it shows what there is instead of refusing. The counts
    are worked out once, when first asked for: fill a Report before reading them.
    """

    source: str
    summary: dict | None = None
    plan_header: dict | None = None
    changes: list[dict] = field(default_factory=list)
    skips: list[dict] = field(default_factory=list)
    results: list[dict] = field(default_factory=list)
    results_header: dict | None = None
    results_unfinished: bool = False  # the results stream does not end as a finished push's does
    notes: list[str] = field(default_factory=list)
    tallies: dict[str, dict[str, int]] = field(default_factory=dict)  # stream file -> its end's tally

    @property
    def is_run(self) -> bool:
        return self.summary is not None

    @property
    def title(self) -> str:
        if self.is_run:
            return f"run {self.summary.get('run') or Path(self.source).name}"
        return f"plan {self.source}"

    @property
    def safety(self) -> dict:
        if self.plan_header is not None:
            return self.plan_header.get("safety") or {}
        return ((self.summary or {}).get("plan") or {}).get("safety") or {}

    @property
    def refused(self) -> bool:
        return bool(self.safety) and self.safety.get("passed") is not True

    @property
    def outcome(self) -> str:
        """One word, as zivsync run's summary says it: ok, pending, partial, refused, … ."""
        if self.is_run:
            return self.summary.get("outcome") or "unknown"
        if self.refused:
            return "refused"
        return "pending" if self.changes else "ok"

    @property
    def message_after_outcome(self) -> str:
        """The message, without the outcome word it starts with: "INTERRUPTED by Ctrl-C during
        push: …", the word said once, in capitals."""
        message = self.message
        if message.lower().startswith(self.outcome.lower() + " "):
            return message[len(self.outcome) + 1:]
        return message

    @property
    def headline(self) -> str:
        rest = self.message_after_outcome
        return f"{self.outcome.upper()}{' ' if rest != self.message else ': '}{rest}"

    @property
    def message(self) -> str:
        if self.is_run and self.summary.get("message"):
            return self.summary["message"]
        if self.refused:
            return "refused by the safety checks: " + "; ".join(self.safety.get("reasons") or ["no reason given"])
        if self.plan_header is None:
            return "no plan"
        return f"{_count(len(self.changes), 'change')} to review" if self.changes else "nothing to change"

    @property
    def severity(self) -> str:
        """good, warn or bad: the colour of the outcome."""
        if self.refused:
            return "bad"
        severity = SEVERITY.get(self.outcome, "warn")  # an outcome we do not know: worth a look
        return "warn" if severity == "good" and (self.failures or self.notes) else severity

    @cached_property
    def counts_by_op(self) -> dict[str, int]:
        return _in_op_order(Counter(change["op"] for change in self.changes))

    @cached_property
    def counts_by_domain(self) -> dict[str, dict[str, int]]:
        """Changes by the domain of the account's address, then by op; most changed domain first."""
        domains: dict[str, Counter] = {}
        for change in self.changes:
            domains.setdefault(domain_of(change["email"]), Counter())[change["op"]] += 1
        ranked = sorted(domains.items(), key=lambda item: (-sum(item[1].values()), item[0]))
        return {domain: _in_op_order(ops) for domain, ops in ranked}

    @cached_property
    def counts_by_status(self) -> dict[str, int]:
        counts = Counter(result["status"] for result in self.results)
        return {status: counts[status] for status in STATUS_ORDER if counts[status]}

    @cached_property
    def failures(self) -> list[dict]:
        return [result for result in self.results if result["status"] in PROBLEMS]

    @property
    def application(self) -> str | None:
        """Whether the plan reached Zivver, in words (None when nothing says)."""
        if self.results_header is not None:
            applied = self.counts_by_status.get("applied", 0)
            if not self.results_unfinished:
                return f"applied to Zivver (--apply): {applied} of {_count(len(self.changes), 'change')} applied"
            if self.plan_header is None:  # a results stream alone: what the plan held is unknown
                return f"{applied} changes applied to Zivver (--apply), then the push was stopped before it ended"
            return (f"{applied} of {_count(len(self.changes), 'change')} applied to Zivver (--apply), then the push "
                    f"was stopped: {len(self.changes) - len(self.results)} were not sent")
        if not self.is_run or "apply" not in self.summary:
            return None
        if self.summary["apply"]:
            return "not applied: the run was to apply the plan (--apply) but ended before zivsync push"
        return "a dry run: nothing was sent to Zivver"

    def result_of(self, change: dict) -> dict | None:
        """The result push wrote for this change, if it got that far."""
        return self._results_by_change.get(change["id"])

    @cached_property
    def _results_by_change(self) -> dict[str, dict]:
        return {result["change_id"]: result for result in self.results}


def domain_of(email: str) -> str:
    return email.rpartition("@")[2]


def _in_op_order(counts: Counter) -> dict[str, int]:
    """Counts in the order push applies the ops (the order the plan's summary uses)."""
    known = [op for op in OP_ORDER if counts[op]]
    return {op: counts[op] for op in known + sorted(set(counts) - set(known))}


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


# -- loading ---------------------------------------------------------------------------------


def load(path: str | Path, results: str | Path | None = None) -> Report:
    """A plan stream file (``-`` for standard input), with the results stream of its push when
    given; a results stream alone (a push run by hand); or a run folder of zivsync run.

    Streams are read with the reader every stage uses (UTF-8 or UTF-16, every record checked
    against its schema); anything unreadable is a ZivsyncError naming the file (and line).
    """
    if str(path) != "-" and Path(path).is_dir():
        return _load_run(Path(path))
    for named in (path, results):
        if named is not None and str(named) != "-" and not Path(named).exists():
            raise ZivsyncError(f"{named}: no such plan file or run folder")
    report = Report(source=str(path))
    if results is None and _stream_kind(path) == "results":
        path, results = None, path  # a results stream alone
    if path is not None:
        _read_plan(report, path)
        if report.plan_header is None:
            raise ZivsyncError(f"{path}: is empty: not a plan stream")
    if results is not None:
        report.results_header, report.results, reasons = _read_stream(results, "results")
        report.notes.extend(reasons)
        report.results_unfinished = bool(reasons)
        if path is None:  # what a results stream says of its changes is all there is
            report.changes = [{"type": "change", "id": r["change_id"], "op": r["op"], "kind": r["kind"],
                               "email": r["email"], "zivver_id": r["zivver_id"], "before": {}, "after": {}}
                              for r in report.results]
    return report


def _stream_kind(path: str | Path) -> str | None:
    """The kind a stream's header names (without reading the rest); None for standard input."""
    if str(path) == "-":
        return None
    try:
        with open(path, "rb") as handle:
            first = handle.readline().decode("utf-8-sig", "replace")
        return orjson.loads(first).get("stream") if first.strip() else None
    except (OSError, orjson.JSONDecodeError, AttributeError):
        return None


def _load_run(folder: Path) -> Report:
    summary, plan, results = folder / "summary.json", stream_file(folder, "plan"), folder / RESULTS
    if not summary.exists() and not plan.exists():
        raise ZivsyncError(f"{folder}: not a run folder of zivsync run (it has neither summary.json nor a plan)")
    report = Report(source=str(folder), summary=_read_summary(summary) if summary.exists() else {})
    if not summary.exists():
        report.notes.append(f"{summary} is missing: the run ended before it could write it")
    if plan.exists():
        _read_plan(report, plan)
    elif report.summary.get("plan") is not None:
        report.notes.append(f"{plan} is missing, though the summary says the run made a plan")
    if results.exists():
        report.results_header, records, reasons = _read_stream(results, "results")
        report.results = records
        report.notes.extend(reasons)
        report.results_unfinished = bool(reasons)
    elif report.summary.get("results") is not None:
        report.notes.append(f"{results} is missing, though the summary says the plan was applied")
    report.tallies = stream_tallies(folder)
    return report


def stream_tallies(folder: Path) -> dict[str, dict[str, int]]:
    """The tally each stream of a run folder ends with (what its stage read and left out, by
    reason), in pipeline order; read from the last line only, however large the stream."""
    order = directory_files(folder) + [stream_file(folder, "current"), stream_file(folder, "desired")]
    tallies = {}
    for path in order:
        end = end_record(path)  # None for a stream cut short: its reader says so; here there is only no tally
        if end is not None and isinstance(end.get("tally"), dict):
            tallies[path.name] = {str(k): v for k, v in end["tally"].items() if isinstance(v, int)}
    return tallies


def _read_summary(path: Path) -> dict:
    try:
        summary = orjson.loads(path.read_bytes())
    except OSError as error:
        raise ZivsyncError(f"{path}: cannot read: {error.strerror}") from None
    except orjson.JSONDecodeError as error:
        raise ZivsyncError(f"{path}:{error.lineno}: is not valid JSON ({error.msg})") from None
    if not isinstance(summary, dict):
        raise ZivsyncError(f"{path}: is not a JSON object")
    return summary


def _read_plan(report: Report, path: str | Path) -> None:
    report.plan_header, records, reasons = _read_stream(path, "plan")
    report.changes = [r for r in records if r["type"] == "change"]
    report.skips = [r for r in records if r["type"] == "skip"]  # links change nothing: not shown
    report.notes.extend(reasons)


def _read_stream(path: str | Path, kind: str) -> tuple[dict | None, list[dict], list[str]]:
    """The first header, the records and what makes the stream incomplete."""
    try:
        with _opened(path) as source:
            reader = StreamReader([source], [kind])
            records = list(reader)
    except StreamError as error:
        raise ZivsyncError(str(error)) from None
    header = reader.headers[0] if reader.headers else None
    return header, records, reader.incomplete_reasons if header else [f"{path}: is empty"]


@contextlib.contextmanager
def _opened(path: str | Path) -> Iterator[Input]:
    source = Input.open(path)
    try:
        yield source
    finally:
        if str(path) != "-":
            source.handle.close()


# -- the terminal text -----------------------------------------------------------------------


def describe_report(report: Report, limit: int | None = SHOWN) -> str:
    """The report as text: the run (its stages), the plan, the results, the safety check."""
    lines = [f"{report.title}: {report.headline}"]
    lines += _describe_run(report) if report.is_run else _describe_origin(report.plan_header or {})
    lines += [f"warning: {note}" for note in report.notes]
    if report.plan_header is not None:
        without_safety = {**report.plan_header, "safety": {}}  # said last, after the results
        lines.append(describe_plan(without_safety, report.changes + report.skips, limit, more="--all lists all"))
    elif report.results_header is not None:
        lines.append("no plan given: the changes as the results name them")
    else:
        lines.append("no plan: the run stopped before zivsync diff")
    lines += _describe_results(report)
    lines += describe_tallies(report.tallies)
    lines += describe_safety(report.safety)
    return "\n".join(lines)


def describe_tallies(tallies: dict[str, dict[str, int]]) -> list[str]:
    """Where every object went, stream by stream: what was read, used, and left out by reason."""
    lines = []
    for name, tally in tallies.items():
        lines.append(f"tally of {name}:")
        lines += [f"  {what:<60} {number:>8}" for what, number in tally.items()]
    return lines


def _describe_run(report: Report) -> list[str]:
    summary = report.summary
    lines = [f"  folder {report.source}"]
    when = ", ".join(part for part in (
        f"started {summary['started']}" if summary.get("started") else "",
        f"ended {summary['ended']}" if summary.get("ended") else "",
        seconds(summary.get("seconds")),
        f"exit code {summary['exit_code']}" if summary.get("exit_code") is not None else "") if part)
    if when:
        lines.append(f"  {when}")
    if report.application:
        lines.append(f"  {report.application}")
    if summary.get("config"):
        digest = f" (sha256 {summary['config_sha256'][:12]}…)" if summary.get("config_sha256") else ""
        lines.append(f"  config {summary['config']}{digest}")
    stages = summary.get("stages") or []
    if stages:
        lines.append("stages:")
        for stage in stages:
            lines += _describe_stage(stage)
    return lines


def _describe_origin(header: dict) -> list[str]:
    if not header:
        return []
    made = f"  made by {header.get('producer', '?')} at {header.get('created', '?')}"
    if header.get("desired_complete") is False:
        made += " from an INCOMPLETE desired stream: nobody is suspended on its account"
    return [made]


def _describe_stage(stage: dict) -> list[str]:
    exit_code = stage.get("exit_code")
    parts = [f"{stage.get('name', '?'):<18}", "did not finish" if exit_code is None else f"exit {exit_code:<3}",
             f"{seconds(stage.get('seconds')):>9}"]
    if stage.get("records") is not None:
        parts.append(f"{stage['records']} records")
    if stage.get("peak_mb") is not None:
        parts.append(f"{stage['peak_mb']:.0f} MB")
    if stage.get("complete") is False:
        parts.append("INCOMPLETE")
    if stage.get("output"):
        parts.append(f"→ {stage['output']}")
    lines = ["  " + "  ".join(parts)]
    if stage.get("command"):
        lines.append(f"      {stage['command']}")
    return lines


def seconds(value) -> str:
    return f"{value:.1f} s" if isinstance(value, (int, float)) else ""


def _describe_results(report: Report) -> list[str]:
    if not report.results and report.results_header is None:
        return []
    counts = ", ".join(f"{n} {status}" for status, n in report.counts_by_status.items()) or "none"
    lines = [f"results: {counts}"]
    lines += [f"  {r['status']:<8} {describe_result(r)}" for r in report.failures]
    return lines


def describe_result(result: dict) -> str:
    """The op, the account, the HTTP status and Zivver's message of one result."""
    http = f" (HTTP {result['http_status']})" if result.get("http_status") else ""
    message = f": {result['message']}" if result.get("message") else ""
    return f"{result['op']:<18} {result['email']}{http}{message}"


# -- one account's story across a run (zivsync report --why) ----------------------------------------


def story(path: str | Path, email: str) -> str:
    """Everything a run's streams say about one account, in pipeline order: the directory records
    that name the address (or the anchor of one that does), the desired account and its conflicts,
    Zivver's account, the plan's change or skip with its reason, and what push did."""
    email = email.strip().lower()
    folder = Path(path)
    streams = (directory_files(folder) + [stream_file(folder, stem) for stem in ("desired", "current", "plan")]
               + [folder / RESULTS]) if folder.is_dir() else [folder]
    lines = [f"the story of {email} in {path}:"]
    anchors: set[str] = set()
    for stream in streams:
        if not stream.exists():
            continue
        _, records, _ = _read_stream(stream, _kind_of(stream))
        found = [r for r in records if _names(r, email, anchors)]
        for record in found:
            anchors.update(a.lower() for a in (record.get("anchors") or [record.get("anchor")]) if a)
        lines.append(f"{stream.name}: " + ("nothing about it" if not found else f"{len(found)} records"))
        lines += [f"  {_one_line(r)}" for r in found]
    return "\n".join(lines)


def _kind_of(path: Path) -> str:
    name = path.name
    return ("directory" if name.startswith(("directory", "input-")) else
            "accounts" if name.startswith(("desired.", "current.")) else "results" if name.startswith("results") else "plan")


def _names(record: dict, email: str, anchors: set[str]) -> bool:
    """Whether a record is about this account: by address, alias or delegate, or by an anchor seen."""
    addresses = [record.get("email"), record.get("mail"), *(record.get("addresses") or ()),
                 *(record.get("aliases") or ())]
    if email in (a.lower() for a in addresses if a):
        return True
    ids = {str(x).lower() for x in (record.get("anchor"), record.get("id"), record.get("mailbox"),
                                    record.get("trustee"), *(record.get("anchors") or ())) if x}
    return bool(ids & (anchors | {email})) or email in (record.get("delegates") or ())


def _one_line(record: dict) -> str:
    kind = record["type"]
    if kind == "change":
        why = record.get("why") or {}
        return f"{describe_change(record)} [because ({why.get('code', '?')}): {'; '.join(why.get('facts', []))}]"
    if kind == "skip":
        return f"left alone ({record['reason']}): {record['detail']}"
    if kind == "result":
        return f"result: {record['status']} {record.get('op', '')}: {record.get('message') or ''}".rstrip(": ")
    shown = {k: v for k, v in record.items() if v not in (None, [], {}, "")}
    return orjson.dumps(shown).decode()
