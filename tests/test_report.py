"""zivsync-report: a plan or a run folder, as text on the terminal and as one HTML page.

The run folders here are built by hand the way zivsync run writes them (summary.json, the
plan, the results), from the golden plan; the HTML page is checked as text, and once as a
person sees it: rendered by a headless Chromium, its DOM and its screenshot.
"""

from __future__ import annotations

import collections
import html.parser
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import orjson
import pytest
from conftest import need
from helpers import ROOT, jsonl, read_jsonl, run, segment, write_stream

from stages.cli import ExitStatus, ZivsyncError
from stages.operator import html_report as htmlreport
from stages.operator import reports as reporting

GOLDEN_PLAN = ROOT / "tests" / "golden" / "plan.jsonl"
RUN_ID = "20261127T013304Z"


# -- building plans and run folders ---------------------------------------------------------------


def golden() -> tuple[dict, list[dict]]:
    """The golden plan's header and records (changes, links, skips)."""
    lines = read_jsonl(GOLDEN_PLAN)
    return lines[0], lines[1:-1]


def write_plan(path: Path, header: dict, records: list[dict]) -> Path:
    extra = {k: v for k, v in header.items() if k not in ("type", "stream", "version", "producer", "created")}
    return write_stream(path, "plan", records, **extra)


def change(email: str, op: str = "update_user", number: int = 0, **fields) -> dict:
    """A valid change record; ``fields`` are (before, after) pairs."""
    return {"type": "change", "id": f"{number:016x}", "op": op, "kind": "functional" if "functional" in op else "user",
            "email": email, "zivver_id": None if op.startswith("create_") else f"z-{number}",
            "before": {name: pair[0] for name, pair in fields.items() if pair[0] is not None},
            "after": {name: pair[1] for name, pair in fields.items()}}


def result(change: dict, status: str = "applied", message: str | None = None, http: int | None = None) -> dict:
    return {"type": "result", "change_id": change["id"], "op": change["op"], "kind": change["kind"],
            "email": change["email"], "zivver_id": change["zivver_id"], "status": status,
            "http_status": http, "message": message, "requests": 1}


def stage(name: str, exit_code: int | None = 0, seconds: float = 1.5, output: str | None = None, **extra) -> dict:
    return {"name": name, "command": f"zivsync {name} --config /srv/zivsync/zivsync.toml", "exit_code": exit_code,
            "started": "2026-11-27T01:33:04Z", "seconds": seconds, "output": output, **extra}


def summary(**changes) -> dict:
    return {"run": RUN_ID, "producer": "zivsync run 0.1.0", "config": "/srv/zivsync/zivsync.toml",
            "config_sha256": "ab" * 32, "apply": True, "started": "2026-11-27T01:33:04Z",
            "ended": "2026-11-27T01:34:10Z", "seconds": 66.1, "exit_code": 0, "outcome": "ok",
            "message": "12 changes applied", **changes}


FAILED_EMAIL = "n.kowalski@fabrikam.example"
CONFLICT_EMAIL = "r.smit@fabrikam.example"


def applied_run(folder: Path) -> Path:
    """A run that applied the golden plan: one create failed, one update conflicted."""
    folder.mkdir(parents=True)
    header, records = golden()
    write_plan(folder / "plan.jsonl", header, records)
    results = []
    for record in records:
        if record["type"] != "change":
            continue
        if record["email"] == FAILED_EMAIL:
            results.append(result(record, "failed", "Zivver answered 500: Internal Server Error", 500))
        elif record["email"] == CONFLICT_EMAIL:
            results.append(result(record, "conflict", "the account changed since the plan was made: delegates"))
        else:
            results.append(result(record))
    write_stream(folder / "results.jsonl", "results", results, plan=[{"name": "plan.jsonl", "sha256": "0" * 64}],
                 zivver={"url": "https://app.zivver.com/api/scim/v2"}, resumed_from=None)
    stages = [stage("extract-ldap", output="directory-ldap.jsonl", records=2512, complete=True, seconds=5.2),
              stage("extract-exchange", output="directory-exchange.jsonl", records=310, complete=True),
              stage("normalize", output="desired.jsonl", records=48),
              stage("snapshot", output="current.jsonl", records=50),
              stage("diff", output="plan.jsonl", records=22),
              stage("push", exit_code=2, output="results.jsonl", records=12, seconds=11.0)]
    (folder / "summary.json").write_bytes(orjson.dumps(summary(
        exit_code=2, outcome="partial", message="10 changes applied, 1 failed, 1 conflict", stages=stages,
        plan={"changes": header["summary"]["changes"], "skips": header["summary"]["skips"], "safety": header["safety"]},
        results={"applied": 10, "failed": 1, "conflict": 1})))
    return folder


def refused_run(folder: Path) -> Path:
    """A run whose plan failed its safety check: nothing applied."""
    folder.mkdir(parents=True)
    header, records = golden()
    safety = {**header["safety"], "passed": False, "max_suspend": 1,
              "reasons": ["3 accounts would be suspended, emptied or deleted: more than --max-suspend 1"]}
    write_plan(folder / "plan.jsonl", {**header, "safety": safety}, records)
    (folder / "summary.json").write_bytes(orjson.dumps(summary(
        exit_code=3, outcome="refused", message="diff refused the plan: 3 suspensions, more than 1",
        stages=[stage("extract-ldap"), stage("normalize"), stage("snapshot"), stage("diff", exit_code=3)],
        plan={"safety": safety}, results=None)))
    return folder


# -- the library: load and describe ----------------------------------------------------------------


def test_a_plan_counts_its_changes_by_op_and_by_domain():
    report = reporting.load(GOLDEN_PLAN)
    header, _ = golden()
    assert not report.is_run and report.title == f"plan {GOLDEN_PLAN}"
    assert report.counts_by_op == header["summary"]["changes"]
    assert report.counts_by_domain == {
        "fabrikam.example": {"create_user": 1, "update_user": 3, "reactivate_user": 1, "suspend_user": 2,
                             "empty_functional": 1},
        "fabrikam.nl": {"create_user": 1, "create_functional": 1, "update_functional": 1, "rename_user": 1},
    }
    assert len(report.skips) == 2 and report.results == [] and report.failures == []
    assert (report.outcome, report.severity, report.message) == ("pending", "warn", "12 changes to review")


def test_a_plan_is_described_as_diff_describes_it_then_the_safety_check():
    text = reporting.describe_report(reporting.load(GOLDEN_PLAN), limit=3)
    lines = text.splitlines()
    assert lines[0] == f"plan {GOLDEN_PLAN}: PENDING: 12 changes to review"
    assert "plan: 12 changes, 2 accounts left alone" in lines
    assert "  … and 9 more (--all lists all)" in lines
    assert lines[-3].startswith("safety: passed: 3 of 48 managed accounts")
    # support@ and r.smit lose one (marketing@ is emptied: counted above); 7 have delegates
    assert lines[-2:] == ["  2 of 7 managed accounts with delegates lose one (limits: 50 and 20 %)",
                          "  0 of 21 managed accounts with aliases lose one (limits: 50 and 20 %)"]
    every = reporting.describe_report(reporting.load(GOLDEN_PLAN), limit=None)
    assert "more (--all" not in every and "  empty_functional   marketing@fabrikam.example: delegates " \
        "-chloe.dubois@fabrikam.example -i.halvorsen@fabrikam.example" in every


def test_a_plan_that_powershell_wrote_as_utf16_reads_the_same(tmp_path):
    utf16 = tmp_path / "plan.jsonl"
    utf16.write_bytes(GOLDEN_PLAN.read_text(encoding="utf-8").replace("\n", "\r\n").encode("utf-16"))
    assert reporting.load(utf16).changes == reporting.load(GOLDEN_PLAN).changes


def test_an_applied_run_shows_its_stages_results_and_failures(tmp_path):
    report = reporting.load(applied_run(tmp_path / RUN_ID))
    assert report.is_run and report.title == f"run {RUN_ID}" and report.notes == []
    assert (report.outcome, report.severity) == ("partial", "warn")
    assert report.counts_by_status == {"applied": 10, "conflict": 1, "failed": 1}
    assert [f["email"] for f in report.failures] == [FAILED_EMAIL, CONFLICT_EMAIL]
    assert report.result_of(report.changes[0])["status"] == "failed"

    text = reporting.describe_report(report)
    lines = text.splitlines()
    assert lines[0] == f"run {RUN_ID}: PARTIAL: 10 changes applied, 1 failed, 1 conflict"
    assert "  started 2026-11-27T01:33:04Z, ended 2026-11-27T01:34:10Z, 66.1 s, exit code 2" in lines
    assert "  applied to Zivver (--apply): 10 of 12 changes applied" in lines
    assert "  extract-ldap        exit 0        5.2 s  2512 records  → directory-ldap.jsonl" in lines
    assert "      zivsync push --config /srv/zivsync/zivsync.toml" in lines
    assert any(line.startswith("  push ") and "exit 2" in line for line in lines)
    assert "results: 10 applied, 1 conflict, 1 failed" in lines
    assert (f"  failed   create_user        {FAILED_EMAIL} (HTTP 500): Zivver answered 500: Internal Server Error"
            in lines)
    assert f"  conflict update_user        {CONFLICT_EMAIL}: the account changed since the plan was made: delegates" \
        in lines
    # the order a reader goes through it: the run, the plan, what happened, the safety check last
    order = [text.index(marker) for marker in ("stages:", "plan: 12 changes", "results:", "safety: passed")]
    assert order == sorted(order)


def test_a_refused_run_says_so_with_the_reasons(tmp_path):
    report = reporting.load(refused_run(tmp_path / RUN_ID))
    assert (report.outcome, report.severity, report.refused) == ("refused", "bad", True)
    text = reporting.describe_report(report)
    assert text.splitlines()[0] == f"run {RUN_ID}: REFUSED: diff refused the plan: 3 suspensions, more than 1"
    assert text.endswith("safety: REFUSED: this plan must not be applied\n"
                         "  - 3 accounts would be suspended, emptied or deleted: more than --max-suspend 1")
    assert "results:" not in text and "  diff                exit 3" in text
    assert "  not applied: the run was to apply the plan (--apply) but ended before zivsync push" in text


def test_a_dry_run_says_nothing_was_sent(tmp_path):
    folder = refused_run(tmp_path / RUN_ID)
    header, records = golden()
    write_plan(folder / "plan.jsonl", header, records)
    (folder / "summary.json").write_bytes(orjson.dumps(summary(apply=False, outcome="pending", message="12 changes")))
    report = reporting.load(folder)
    assert (report.outcome, report.severity, report.application) == (
        "pending", "warn", "a dry run: nothing was sent to Zivver")
    assert "  a dry run: nothing was sent to Zivver" in reporting.describe_report(report).splitlines()


def test_a_refused_plan_alone_is_refused_too(tmp_path):
    header, records = golden()
    plan = write_plan(tmp_path / "plan.jsonl", {**header, "safety": {**header["safety"], "passed": False,
                                                                     "reasons": ["too many"]}}, records)
    report = reporting.load(plan)
    assert (report.outcome, report.severity) == ("refused", "bad")
    assert report.message == "refused by the safety checks: too many"


def test_a_run_that_died_early_shows_what_there_is(tmp_path):
    folder = tmp_path / RUN_ID
    folder.mkdir()
    (folder / "summary.json").write_bytes(orjson.dumps(
        {"run": RUN_ID, "outcome": "unreachable", "message": "extract-ldap could not reach ldaps://dc1:636"}))
    report = reporting.load(folder)
    assert (report.outcome, report.severity, report.changes) == ("unreachable", "bad", [])
    text = reporting.describe_report(report)
    assert text.splitlines()[:3] == [f"run {RUN_ID}: UNREACHABLE: extract-ldap could not reach ldaps://dc1:636",
                                     f"  folder {folder}", "no plan: the run stopped before zivsync diff"]
    assert htmlreport.render(report).count("<svg") == 0


def test_a_push_that_was_killed_leaves_results_that_are_shown_as_incomplete(tmp_path):
    folder = applied_run(tmp_path / RUN_ID)
    lines = (folder / "results.jsonl").read_bytes().splitlines(keepends=True)
    (folder / "results.jsonl").write_bytes(b"".join(lines[:4]))  # the header and three results, no end
    (folder / "summary.json").unlink()
    report = reporting.load(folder)
    assert len(report.results) == 3 and report.summary == {} and report.outcome == "unknown"
    assert any("summary.json is missing" in note for note in report.notes)
    assert any("has no end record" in note for note in report.notes)
    assert "warning: " + report.notes[1] in reporting.describe_report(report).splitlines()


def test_what_cannot_be_read_is_an_error_naming_the_file(tmp_path):
    with pytest.raises(ZivsyncError, match=f"{tmp_path}: not a run folder"):
        reporting.load(tmp_path)
    (tmp_path / "summary.json").write_text('{"run": ')
    with pytest.raises(ZivsyncError, match=r"summary.json:1: is not valid JSON"):
        reporting.load(tmp_path)
    (tmp_path / "summary.json").write_text('{"run": "x"}')
    (tmp_path / "plan.jsonl").write_bytes(jsonl(segment("plan", [{"type": "change", "op": "create_user"}])))
    with pytest.raises(ZivsyncError, match=r"plan.jsonl:2: change record: "):
        reporting.load(tmp_path)
    with pytest.raises(ZivsyncError, match="missing.jsonl: no such plan file or run folder"):
        reporting.load(tmp_path / "missing.jsonl")


# -- the command -----------------------------------------------------------------------------------


def test_the_command_prints_the_report_and_writes_the_page_atomically(tmp_path):
    folder = applied_run(tmp_path / RUN_ID)
    page = tmp_path / "ticket" / "report.html"
    page.parent.mkdir()
    done = run("zivsync-report", folder, "--html", page)
    assert done.returncode == ExitStatus.OK, done.stderr
    assert done.stdout.decode().splitlines()[0] == f"run {RUN_ID}: PARTIAL: 10 changes applied, 1 failed, 1 conflict"
    assert page.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [p.name for p in page.parent.iterdir()] == ["report.html"]  # no temporary file left behind
    assert f"wrote {page}" in done.stderr


def test_the_command_reads_a_plan_from_standard_input_and_lists_all_with_all(tmp_path):
    header, _ = golden()
    changes = [change(f"user{n:02}@example.com", number=n, name=(f"Old {n}", f"New {n}")) for n in range(50)]
    plan = jsonl(segment("plan", changes, **{k: header[k] for k in ("summary", "safety", "desired_complete")}))
    shown = run("zivsync-report", "-", input=plan)
    assert shown.returncode == 0, shown.stderr
    assert "  … and 10 more (--all lists all)" in shown.stdout.decode()
    every = run("zivsync-report", "-", "--all", input=plan).stdout.decode()
    assert "user49@example.com: name 'Old 49' → 'New 49'" in every and "more (--all" not in every


def test_a_missing_file_exits_1_naming_it(tmp_path):
    done = run("zivsync-report", tmp_path / "nowhere.jsonl")
    assert done.returncode == ExitStatus.ERROR and done.stdout == b""
    assert f"{tmp_path / 'nowhere.jsonl'}: no such plan file or run folder" in done.stderr


def test_a_garbage_file_exits_1_naming_the_file_and_line(tmp_path):
    garbage = tmp_path / "plan.jsonl"
    garbage.write_bytes(jsonl(segment("plan", [])).replace(b'{"type":"end"', b'{"type":"end" oops'))
    done = run("zivsync-report", garbage, "--html", tmp_path / "report.html")
    assert done.returncode == ExitStatus.ERROR
    assert f"{garbage}:2: is not valid JSON" in done.stderr
    assert not (tmp_path / "report.html").exists()


def test_another_kind_of_stream_is_refused(tmp_path):
    """A results stream alone is reported since issue 14 (a push run by hand); a directory stream is not."""
    directory = write_stream(tmp_path / "directory.jsonl", "directory", [])
    done = run("zivsync-report", directory)
    assert done.returncode == ExitStatus.ERROR and "is a directory stream, expected plan" in done.stderr


# -- the HTML page -----------------------------------------------------------------------------------


def test_untrusted_values_are_escaped_everywhere(tmp_path):
    evil = "<script>alert(1)</script>@evil.example"
    bad_domain = "ann@<b>bold</b>.example"
    changes = [change(evil, "create_user", 1, name=(None, "<img src=x onerror=alert(2)>")),
               change(bad_domain, number=2, name=("\"quoted\" & 'single'", "</td></tr></table>"))]
    header, _ = golden()
    report = reporting.Report(source="<i>plan</i>.jsonl", plan_header=header, changes=changes,
                              results=[result(changes[0], "failed", "<script>alert(3)</script>", 400)],
                              skips=[{"type": "skip", "email": evil, "reason": "excluded", "detail": "<b>x</b>"}])
    page = htmlreport.render(report)
    for raw in ("<script", "<img", "<b>bold", "<i>plan", "</td></tr></table>", "<b>x"):
        assert raw not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;@evil.example" in page
    assert "&lt;b&gt;bold&lt;/b&gt;.example" in page  # the domain, in the chart's label
    assert "&quot;quoted&quot; &amp; &#x27;single&#x27;" in page


def test_summary_and_header_values_are_escaped_too(tmp_path):
    """What a run folder says of itself (commands, paths, messages, the safety verdict) is data
    too: a crafted summary.json or plan header must not put markup into the page."""
    folder = applied_run(tmp_path / RUN_ID)
    evil = "<meta http-equiv=refresh content=0;url=http://evil.example>"
    summary = orjson.loads((folder / "summary.json").read_bytes())
    summary.update(config=evil, message=evil, producer=evil, run=evil,
                   stages=[{**s, "command": evil, "output": evil} for s in summary["stages"]])
    (folder / "summary.json").write_bytes(orjson.dumps(summary))
    header, records = golden()
    header = {**header, "producer": evil, "safety": {**header["safety"], "withheld": evil, "reasons": [evil],
                                                     "max_suspend_percent": evil}}
    write_plan(folder / "plan.jsonl", header, records)
    page = htmlreport.render(reporting.load(folder))
    assert "<meta http-equiv=refresh" not in page and "&lt;meta http-equiv=refresh" in page


def test_a_page_for_a_mail_lists_only_the_first_changes(tmp_path):
    header, records = golden()
    report = reporting.load(write_plan(tmp_path / "plan.jsonl", header, records))
    full, short = htmlreport.render(report), htmlreport.render(report, limit=3)
    hidden = len(report.changes) - 3
    assert f"… and {hidden} more" in short and "more: report.html" not in full
    assert short.count("<tr><td class=\"n\">") == 3 < full.count("<tr><td class=\"n\">")


def test_the_page_is_self_contained(tmp_path):
    page = htmlreport.render(reporting.load(applied_run(tmp_path / RUN_ID)))
    for fetching in ("<script", "src=", "url(", "@import", "<link", "<iframe"):
        assert fetching not in page
    links = re.findall(r'href="([^"]*)"', page)  # links within the page only: to a group of changes
    assert links and all(link.startswith("#") and f' id="{link[1:]}"' in page for link in links)
    assert "Content-Security-Policy" in page and "@media print" in page


def test_the_domain_chart_shows_the_15_busiest_domains_and_the_rest_as_other():
    changes = [change(f"u{n}@d{n % 40:02}.example", number=n) for n in range(400 + 15)]  # d00..d14: 11 each
    report = reporting.Report(source="plan.jsonl", plan_header={}, changes=changes)
    rows = htmlreport.domain_rows(report)
    assert [name for name, _ in rows] == [f"d{n:02}.example" for n in range(15)] + ["other (25 domains)"]
    assert rows[-1][1] == {"update_user": 250} and sum(sum(c.values()) for _, c in rows) == len(changes)
    one = reporting.Report(source="plan.jsonl", plan_header={}, changes=changes[:1])
    assert htmlreport.domain_rows(one) == [("d00.example", {"update_user": 1})]
    chart = htmlreport.render(report).split('id="chart-domains"')[1].split("</figure>")[0]
    assert "d14.example" in chart and "d15.example" not in chart


def test_a_plan_of_10000_changes_makes_a_page_of_a_few_megabytes():
    ops = ["create_user", "update_user", "suspend_user", "update_functional", "rename_user"]
    changes = [change(f"person.number{n}@site{n % 60}.fabrikam.example", ops[n % 5], n,
                      name=(None if n % 5 == 0 else f"Person {n}", f"Person Number {n}"),
                      delegates=(["a@fabrikam.example"], ["a@fabrikam.example", "b@fabrikam.example"]))
               for n in range(10_000)]
    page = htmlreport.render(reporting.Report(source="plan.jsonl", plan_header={}, changes=changes))
    assert 1_000_000 < len(page.encode()) < 6_000_000
    assert page.count("<tr><td class=\"n\">") == 10_000


# -- the page as a person sees it, in a real browser ---------------------------------------------------


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium on a file: as root it needs --no-sandbox; its profile is the test's own."""
    return subprocess.run(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
         f"--user-data-dir={profile}", "--window-size=1280,2000", *args, page.as_uri()],
        capture_output=True, timeout=60, check=True)


class Seen(html.parser.HTMLParser):
    """From a DOM: the text a person reads, and each chart's bars and labels."""

    def __init__(self):
        super().__init__()
        self.text: list[str] = []
        self.bars: dict[str, list[dict]] = collections.defaultdict(list)
        self.labels: dict[str, list[str]] = collections.defaultdict(list)
        self.figure, self.hidden, self.label = None, 0, False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "figure":
            self.figure = attrs.get("id")
        elif tag in ("style", "title", "head"):
            self.hidden += 1
        elif tag == "rect" and attrs.get("class") == "bar":
            self.bars[self.figure].append(attrs)
        elif tag == "text":
            self.label = attrs.get("class") == "label"

    def handle_endtag(self, tag):
        if tag in ("style", "title", "head"):
            self.hidden -= 1
        elif tag == "text":
            self.label = False
        elif tag == "figure":
            self.figure = None

    def handle_data(self, data):
        if self.hidden:
            return
        self.text.append(data)
        if self.label and data.strip():
            self.labels[self.figure].append(data)


def png_rows(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and the RGB rows of an 8-bit PNG, decoded with the standard library alone."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    chunks, at = collections.defaultdict(list), 8
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        chunks[kind].append(data[at + 8:at + 8 + length])
        at += 12 + length
    width, height, depth, colour, _, _, interlaced = struct.unpack(">IIBBBBB", chunks[b"IHDR"][0])
    assert depth == 8 and colour in (2, 6) and not interlaced, "a PNG as Chromium writes it"
    channels = 3 if colour == 2 else 4
    stride = width * channels
    raw = zlib.decompress(b"".join(chunks[b"IDAT"]))
    assert len(raw) == height * (stride + 1)
    rows, previous = [], bytearray(stride)
    for y in range(height):
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        _unfilter(raw[y * (stride + 1)], line, previous, channels)
        rows.append(bytes(b for i, b in enumerate(line) if i % channels < 3) if channels == 4 else bytes(line))
        previous = line
    return width, height, rows


def _unfilter(kind: int, line: bytearray, above: bytearray, step: int) -> None:
    """PNG's row filters undone in place (the PNG specification, section 9)."""
    if kind == 0:
        return
    if kind == 2:
        line[:] = bytes((a + b) & 255 for a, b in zip(line, above, strict=True))
        return
    for i in range(len(line)):
        left = line[i - step] if i >= step else 0
        upper_left = above[i - step] if i >= step else 0
        if kind == 1:
            line[i] = (line[i] + left) & 255
        elif kind == 3:
            line[i] = (line[i] + (left + above[i]) // 2) & 255
        else:  # Paeth: the neighbour nearest to left + above - upper left, ties in that order
            up = above[i]
            guess = left + up - upper_left
            to_left, to_up, to_upper_left = abs(guess - left), abs(guess - up), abs(guess - upper_left)
            nearest = left if to_left <= to_up and to_left <= to_upper_left else up if to_up <= to_upper_left \
                else upper_left
            line[i] = (line[i] + nearest) & 255


def rgb(colour: str) -> bytes:
    return bytes.fromhex(colour.removeprefix("#"))


def test_a_browser_shows_the_outcome_the_counts_and_the_charts(tmp_path):
    need(CHROMIUM is not None, "Chromium", "as root: apt-get install -y chromium fonts-dejavu-core")
    report = reporting.load(applied_run(tmp_path / RUN_ID))
    page = tmp_path / "report.html"
    page.write_text(htmlreport.render(report), encoding="utf-8")

    seen = Seen()
    seen.feed(chromium(page, tmp_path / "profile", "--dump-dom").stdout.decode("utf-8"))
    text = " ".join(" ".join(seen.text).split())
    for shown in (f"zivsync report: run {RUN_ID}", "PARTIAL 10 changes applied, 1 failed, 1 conflict",
                  "create_user 2 1 0 1", "update_user 3 2 1 0", "total 12 10 1 1",
                  "Zivver answered 500: Internal Server Error", "Changes (12)", "Left alone (2)",
                  "passed: 3 of 48 managed accounts", "zivsync push --config /srv/zivsync/zivsync.toml"):
        assert shown in text, shown
    assert len(seen.bars["chart-ops"]) == len(report.counts_by_op) == 8
    assert {b["data-op"]: int(b["data-count"]) for b in seen.bars["chart-ops"]} == report.counts_by_op
    assert len(seen.bars["chart-domains"]) == sum(len(ops) for ops in report.counts_by_domain.values()) == 9
    assert seen.labels["chart-domains"] == ["fabrikam.example", "fabrikam.nl"]

    chromium(page, tmp_path / "profile", f"--screenshot={tmp_path / 'report.png'}")
    width, height, rows = png_rows((tmp_path / "report.png").read_bytes())
    assert (width, height) == (1280, 2000)
    pixels = collections.Counter(row[x:x + 3] for row in rows for x in range(0, len(row), 3))
    background, most = pixels.most_common(1)[0]
    assert background == rgb("#ffffff") and most < 0.95 * width * height, "the page looks blank"
    assert pixels[rgb("#fff8c5")] > 20_000, "no amber banner for a partial run"
    for op in report.counts_by_op:  # every op's bar is on the screen in its colour
        assert pixels[rgb(htmlreport.OP_COLOURS[op])] > 300, op


def test_the_tallies_of_a_run_say_where_every_object_went(tmp_path):
    """Issue 12: each stream's end record carries its stage's tally; the report shows them."""
    folder = tmp_path / "20261201T020000Z"
    folder.mkdir()
    (folder / "summary.json").write_bytes(orjson.dumps({"run": folder.name, "outcome": "ok"}))
    (folder / "plan.jsonl").write_bytes(GOLDEN_PLAN.read_bytes())
    tally = {"permission entries read": 9, "left out: not Full Access": 4, "left out: shape not understood": 1}
    lines = [{"type": "header", "stream": "directory", "version": 1, "producer": "zivsync-extract-exo 0",
              "created": "2026-12-01T02:00:00Z"}, {"type": "end", "count": 0, "tally": tally}]
    (folder / "directory-exo.jsonl").write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    report = reporting.load(folder)
    assert report.tallies == {"directory-exo.jsonl": tally}
    text = reporting.describe_report(report)
    assert "tally of directory-exo.jsonl:" in text and "left out: shape not understood" in text
    page = htmlreport.render(report)
    assert "Where every object went" in page and "left out: not Full Access</td><td class=\"n\">4<" in page


def test_the_html_report_says_what_the_terminal_says_of_links_and_fields_left_alone():
    header = {"summary": {"changes": {}, "skips": {}, "links": 7}, "unmanaged": {"delegates": 5}}
    report = reporting.Report(source="plan.jsonl", plan_header=header)
    page = htmlreport.render(report)
    assert "7 accounts in sync, newly linked to their directory object" in page
    assert "delegates of 5 accounts left as Zivver has them" in page
    text = reporting.describe_report(report)
    assert "newly linked to their directory object in the account mapping: 7" in text
    assert "left as Zivver has them: delegates of 5 accounts" in text


# -- the page at scale: a thousand changes, grouped, findable, printable ------------------------------


FIRST = ("jan", "marieke", "pieter", "fatima", "noah", "emma", "robert", "sanne", "youssef", "lotte", "daan",
         "chloe", "ingrid", "juergen", "zoe", "mohammed", "anouk", "bram", "femke", "willem")
LAST = ("jansen", "devries", "vandijk", "elamrani", "kowalski", "dewit", "smit", "bakker", "haddad", "meijer",
        "visser", "dubois", "halvorsen", "weiss", "angstrom", "mulder", "bos", "vanleeuwen", "kuipers", "deboer")
CITIES = ("Amsterdam", "Utrecht", "Rotterdam", "Eindhoven")
# A large night, after a reorganisation: 1,000 changes of every ordinary op.
MIX = {"create_user": 312, "create_functional": 18, "update_functional": 40, "update_user": 380,
       "reactivate_user": 10, "rename_user": 60, "suspend_user": 170, "empty_functional": 10}


def colleague(n: int) -> tuple[str, str, str]:
    """The n-th person of Fabrikam: address, name and the DN of their directory object."""
    first, last, again = FIRST[n % 20], LAST[n // 20 % 20], f"{n // 400 + 1}" if n >= 400 else ""
    name = f"{first.title()} {last.title()}{' ' + again if again else ''}"
    domain = "fabrikam.nl" if n % 7 == 0 else "fabrikam.example"
    return f"{first}.{last}{again}@{domain}", name, f"CN={name},OU=Staff,OU={CITIES[n % 4]},DC=fabrikam,DC=example"


def realistic_change(n: int, op: str) -> dict:
    """A change as diff plans it: the fields it sets, before → after, and the facts it rests on."""
    email, name, dn = colleague(n)
    other, peer = colleague(n + 1)[0], colleague(n + 2)[0]
    team = f"team{n}@{email.partition('@')[2]}"
    shared = f"in exchange CN=Team {n},OU=Shared Mailboxes,DC=fabrikam,DC=example"
    gone = ["in no source read (ldap, exchange on 2026-11-27T01:33:04Z)",
            f"matched by anchor ad000000-0000-4000-a000-{n:012} in the account mapping"]
    fields, facts = {}, [f"in ldap {dn} (enabled)"]
    if op == "create_user":
        fields = dict(email=(None, email), name=(None, name), active=(None, True), aliases=(None, []),
                      delegates=(None, []), phone=(None, f"+3161234{n:04}"),
                      sso_key=(None, f"ad000000-0000-4000-a000-{n:012}"))
    elif op == "create_functional":
        email = team
        fields = dict(email=(None, team), name=(None, f"Team {n}"),
                      aliases=(None, [f"afdeling{n}@fabrikam.nl"]), delegates=(None, [other]))
        facts = [shared, f"delegate +{other}: Full Access for {other}"]
    elif op == "update_functional":
        email = team
        fields = dict(delegates=([f"lead{n}@fabrikam.example", other], [other, peer]))
        facts = [shared, f"delegate +{peer}: Full Access for FABRIKAM\\{peer.partition('@')[0]}",
                 f"delegate -lead{n}@fabrikam.example: holds Full Access no more (read from exchange)"]
    elif op == "update_user":
        alias = email.replace("@", ".old@")
        fields = [dict(name=(name.replace(" ", " Jansen-", 1), name)),
                  dict(aliases=([alias], [alias, email.replace("@", "2@")])),
                  dict(delegates=([peer], [other]))][n % 3]
    elif op == "reactivate_user":
        fields = dict(active=(False, True))
    elif op == "rename_user":
        old = email.replace("@", ".old@")
        fields = dict(email=(old, email), name=(f"{name} Old", name))
        facts = [f"primary address {old} → {email} in ldap {dn} (enabled)"]
    elif op == "suspend_user":
        fields, facts = dict(active=(True, False)), [f"ldap {dn} (disabled)"] if n % 2 else gone
    elif op == "empty_functional":
        email, fields, facts = team, dict(delegates=([other, peer], [])), gone
    before = {field: old for field, (old, _) in fields.items() if old is not None}
    after = {field: new for field, (_, new) in fields.items()}
    return {**change(email, op, n), "before": before, "after": after, "why": {"code": "test", "facts": facts}}


def thousand_changes() -> reporting.Report:
    """A run's report (with a result column: the layout with the least room): 1,000 changes, all
    applied but for 4 failures and 2 conflicts, and 5 accounts left alone."""
    ops = [op for op, count in MIX.items() for _ in range(count)]
    changes = [realistic_change(n, op) for n, op in enumerate(ops)]
    skips = [{"type": "skip", "email": f"extern{n}@fabrikam-legacy.org", "kind": "user", "reason": "outside_scope",
              "detail": "the Zivver account is outside the configured scope"} for n in range(5)]
    results = [result(c, "failed", "Zivver answered 500: Internal Server Error", 500) if n % 300 == 7 else
               result(c, "conflict", "the account changed since the plan was made: delegates") if n % 500 == 9 else
               result(c) for n, c in enumerate(changes)]
    return reporting.Report(source="runs/20261127T013304Z", summary={"run": "20261127T013304Z", "outcome": "partial"},
                            plan_header={}, changes=changes, skips=skips, results=results, results_header={})


class Structure(html.parser.HTMLParser):
    """From the page's markup: the groups (id, open, summary text), the index's entries (link,
    text), every id, and how many scripts."""

    def __init__(self):
        super().__init__()
        self.groups: list[dict] = []
        self.index: list[dict] = []
        self.ids: list[str] = []
        self.scripts = 0
        self.in_index = False
        self.into: dict | None = None  # the group's summary or the index entry being read

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.ids += [attrs["id"]] if "id" in attrs else []
        self.scripts += tag == "script"
        if tag == "nav" and attrs.get("class") == "index":
            self.in_index = True
        elif tag == "details":
            self.groups.append({"id": attrs.get("id"), "open": "open" in attrs, "text": ""})
        elif tag == "summary":
            self.into = self.groups[-1]
        elif tag == "li" and self.in_index:
            self.into = {"href": "", "text": ""}
            self.index.append(self.into)
        elif tag == "a" and self.in_index and self.into is not None:
            self.into["href"] = attrs.get("href")

    def handle_endtag(self, tag):
        if tag in ("summary", "li") and self.into is not None:
            self.into["text"] = " ".join(self.into["text"].split())
            self.into = None
        elif tag == "nav":
            self.in_index = False

    def handle_data(self, data):
        if self.into is not None:
            self.into["text"] += data


def test_a_thousand_changes_are_grouped_by_op_with_an_index_and_an_anchor_per_account():
    report = thousand_changes()
    page = htmlreport.render(report)
    seen = Structure()
    seen.feed(page)
    assert [g["id"] for g in seen.groups] == [f"op-{op}" for op in MIX]  # push's order, as counts_by_op
    assert [g["text"] for g in seen.groups] == [f"{op} ({count})" for op, count in MIX.items()]
    assert all(g["open"] for g in seen.groups), "a closed group does not print"
    assert seen.index == [{"href": f"#op-{op}", "text": f"{op} {count}"} for op, count in MIX.items()]
    for record in report.changes + report.skips:
        assert f"account-{record['email']}" in seen.ids, record["email"]
    assert len(seen.ids) == len(set(seen.ids)) and seen.scripts == 0 and "<script" not in page.lower()
    assert page.count('<tr><td class="n">') == 1_000  # every change listed, none folded away
    # a mail's page: the first 40 changes, grouped; the index links only to the groups it has
    short = Structure()
    short.feed(htmlreport.render(report, limit=40))
    assert [g["id"] for g in short.groups] == ["op-create_user"]
    assert short.groups[0]["text"] == "create_user (312) 40 listed here"
    assert [entry["href"] for entry in short.index] == ["#op-create_user"] + [""] * (len(MIX) - 1)


def test_an_account_anchor_is_its_address_lowercased_safe_and_unique():
    anchors = htmlreport.Anchors()
    assert anchors("Jan.Jansen@Fabrikam.example") == "account-jan.jansen@fabrikam.example"
    assert anchors("jan.jansen@fabrikam.example") == "account-jan.jansen@fabrikam.example-2"  # a second row
    assert anchors('"<a b>"@evil.example') == "account---a-b--@evil.example"  # no space, quote or markup
    assert anchors("zoë+hr@fabrikam.nl") == "account-zoë+hr@fabrikam.nl"  # a browser decodes #account-zo%C3%AB…


def printed(tmp_path: Path, report: reporting.Report) -> Path:
    """The report as Chromium prints it to an A4 PDF (the page's own @page rule: A4, its margins)."""
    page, pdf = tmp_path / "report.html", tmp_path / "report.pdf"
    page.write_text(htmlreport.render(report), encoding="utf-8")
    chromium(page, tmp_path / "profile", "--no-pdf-header-footer", f"--print-to-pdf={pdf}")
    return pdf


def pdf_pages(pdf: Path) -> int:
    """Pages in a PDF, counted with the standard library: its /Type /Page objects (not /Pages)."""
    return len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", pdf.read_bytes()))


def test_a_thousand_changes_print_on_about_fifty_five_a4_pages(tmp_path):
    """At 8 pt a change prints in 3 to 4 lines: its fields (each whole on a line where it fits),
    then the facts it rests on (a DN is most of a line). That is 53 px on average of the 1,032 an
    A4 page holds inside its 12 mm margins, so some 18 changes to a page once the header repeated
    on each page and the space left by rows that do not split are counted: 1,000 changes take
    about 54 pages, and the banner, failures, counts and charts most of one more. Measured: 56
    (Chromium 156, DejaVu Sans). The bound leaves room for other fonts (±20 %) and still fails both
    ways: the old layout's fixed column widths left before → after 40 px and printed this report
    in 1,618 pages (257 without the result column), and groups that did not print would take 2."""
    need(CHROMIUM is not None, "Chromium", "as root: apt-get install -y chromium fonts-dejavu-core")
    pages = pdf_pages(printed(tmp_path, thousand_changes()))
    assert 45 <= pages <= 70, pages


MEASURE = """<script>
addEventListener("load", () => {
  const seen = {viewport: document.documentElement.clientWidth, tables: 0, widest: 0, share: 1, overflowing: [],
                broken: []};
  for (const table of document.querySelectorAll("table.list")) {
    const width = table.getBoundingClientRect().width;
    seen.tables += 1;
    seen.widest = Math.max(seen.widest, width);
    seen.share = Math.min(seen.share, table.querySelector("th.wide").getBoundingClientRect().width / width);
    for (const cell of table.querySelectorAll("td")) {
      if (cell.scrollWidth > cell.clientWidth) seen.overflowing.push(cell.textContent);
      const text = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
      for (let node; (node = text.nextNode());) {
        for (const word of node.data.matchAll(/\\S+/g)) {  // a word on two lines: its column is too narrow
          const range = document.createRange();
          range.setStart(node, word.index);
          range.setEnd(node, word.index + word[0].length);
          const lines = new Set([...range.getClientRects()].map(rect => Math.round(rect.top)));
          if (lines.size > 1) seen.broken.push(word[0]);
        }
      }
    }
  }
  document.body.dataset.seen = JSON.stringify(seen);
});
</script>"""


def test_printed_no_column_is_narrower_than_its_words(tmp_path):
    """The page laid out as on paper, measured by a script in a copy of it (the report itself has
    none, and its policy would refuse one): the print rules applied on screen (headless Chromium
    cannot emulate print media from its command line), in a window as wide as the A4 page inside
    the @page margins. No table may be wider than the paper (Chromium would shrink the whole page
    to fit), no cell may overflow, no word may break over two lines, and before → after (or the
    detail) keeps at least a quarter of its table."""
    need(CHROMIUM is not None, "Chromium", "as root: apt-get install -y chromium fonts-dejavu-core")
    margin = float(re.search(r"@page \{ size: A4; margin: ([\d.]+)mm; \}", htmlreport.CSS).group(1))
    width = round((210 - 2 * margin) / 25.4 * 96)  # CSS pixels: 96 to the inch
    page = htmlreport.render(thousand_changes()).replace("@media print", "@media all")
    page = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", page)
    page = page.replace("</body>", MEASURE + "</body>")
    copy = tmp_path / "measured.html"
    copy.write_text(page, encoding="utf-8")
    dom = chromium(copy, tmp_path / "profile", f"--window-size={width},1123", "--virtual-time-budget=10000",
                   "--dump-dom").stdout.decode("utf-8")
    seen = orjson.loads(html.unescape(re.search(r'data-seen="([^"]*)"', dom).group(1)))
    assert seen["viewport"] == width
    assert seen["tables"] == len(MIX) + 2  # a group each, the failures, the accounts left alone
    assert seen["widest"] <= width, "a table wider than the paper"
    assert seen["overflowing"] == [] and seen["broken"] == []
    assert seen["share"] >= 0.25, seen["share"]


def test_a_word_may_break_only_when_it_is_longer_than_a_printed_column_holds():
    """Short words keep whole (a browser would break a line at a hyphen: not in an address, a UUID or
    a double name); a word over LONG_WORD characters may break at its dots and before its @, and a
    piece still that long anywhere: the last resort that keeps a table on the paper."""
    assert htmlreport.words("Jan-Willem de Vries") == '<span class="word">Jan-Willem</span> de Vries'
    address = "jan.van.den.berg.hoofdkantoor@dochterbedrijf.fabrikam.example"
    assert htmlreport.words(address) == address.replace(".", ".<wbr>").replace("@", "<wbr>@")
    token = "x" * 50
    assert htmlreport.words(f"<{token}>") == f'<span class="long">&lt;{token}&gt;</span>'
