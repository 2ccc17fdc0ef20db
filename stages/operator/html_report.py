"""A report as one self-contained HTML page, for an administrator to attach to a change ticket.

Pure: ``render(report)`` returns the page and reads nothing else (no clock either, so the same
report gives the same page). Everything is inline: CSS, the SVG charts, no script and no
URL but links within the page (``#op-create_user``, ``#account-<address>``), so the page looks
the same in a ticket system's preview, a mail client or a browser years later; its
Content-Security-Policy forbids anything else, as a second lock behind the escaping.
Every value that comes from a stream (addresses, names, Zivver's messages, command lines) is
untrusted input and goes through ``html.escape``.
"""

from __future__ import annotations

import html
import re

from .. import __version__
from .reports import STATUS_ORDER, Report, describe_safety, field_changes, is_creation, list_delta

# One colour per op: the hue says what happens (green creates, blue updates, purple renames,
# teal reactivates, orange suspends, red deletes), the shade the kind (dark: a personal
# account, light: a functional one).
OP_COLOURS = {
    "create_user": "#2e7d32", "create_functional": "#81c784",
    "update_user": "#1565c0", "update_functional": "#64b5f6",
    "rename_user": "#6a1b9a", "rename_functional": "#ba68c8",
    "reactivate_user": "#00897b",
    "suspend_user": "#e65100", "empty_functional": "#ffb74d",
    "delete_user": "#b71c1c", "delete_functional": "#e57373",
}
OTHER_COLOUR = "#9e9e9e"
TOP_DOMAINS = 15  # domains charted one by one; the rest share one bar ("other")

CSS = """
:root { color-scheme: light; --ink: #1f2328; --muted: #59636e; --line: #d8dee4; --head: #f6f8fa;
  --good: #1a7f37; --good-bg: #dafbe1; --warn: #7d4e00; --warn-bg: #fff8c5; --bad: #b42318; --bad-bg: #ffebe9; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, "Segoe UI", "DejaVu Sans", Arial, sans-serif; color: var(--ink);
  background: #fff; max-width: 78rem; margin: 1.5rem auto; padding: 0 1.5rem; }
h1 { font-size: 1.6rem; margin: 0; }
h2 { font-size: 1.15rem; margin: 2rem 0 .6rem; padding-bottom: .25rem; border-bottom: 1px solid var(--line); }
h3 { font-size: 1rem; margin: 1.2rem 0 .4rem; }
.muted, .source { color: var(--muted); }
.why { font-size: .9em; margin-top: .15rem; }
code { font: .9em/1.4 ui-monospace, "DejaVu Sans Mono", Consolas, monospace; overflow-wrap: anywhere; }
.banner { margin: 1rem 0; padding: .8rem 1rem; border: 1px solid; border-left-width: 8px; border-radius: 6px;
  font-size: 1.05rem; }
.banner strong { letter-spacing: .04em; margin-right: .6rem; }
.banner.good { color: var(--good); background: var(--good-bg); }
.banner.warn { color: var(--warn); background: var(--warn-bg); }
.banner.bad { color: var(--bad); background: var(--bad-bg); }
.notes li { color: var(--warn); }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; margin: 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; }
table { border-collapse: collapse; width: 100%; }
table.counts { width: auto; min-width: 24rem; }
th, td { padding: .3rem .5rem; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
/* The lists lay out automatically, with no fixed widths: a column is never narrower than its
   longest word (see LONG_WORD); "fit" columns take no more than their content, "wide" ones the rest. */
table.list th.fit { width: 1%; }
table.list th.wide { width: 70%; }
table.list td.n, table.list td.st, table.list .op { white-space: nowrap; }
/* the reasons are read, not looked up: a DN (CN=…,OU=…,DC=…) wider than its column may break anywhere */
.long, .why { overflow-wrap: anywhere; }
.word { white-space: nowrap; }
td:target { background: var(--warn-bg); }
tr:has(> td:target) > td { background: var(--warn-bg); } /* apart: a browser without :has() drops its rule */
nav.index ul { list-style: none; margin: 0 0 .8rem; padding: 0; display: flex; flex-wrap: wrap; gap: .2rem 1.4rem; }
nav.index a, table.counts a { color: inherit; }
nav.index .count { color: var(--muted); font-variant-numeric: tabular-nums; }
details.group { margin: 1rem 0 1.4rem; }
details.group > summary { cursor: pointer; margin-bottom: .4rem; }
details.group > summary h3 { display: inline; margin: 0; }
table.stages th, table.stages td:not(:last-child) { white-space: nowrap; }
th { background: var(--head); font-weight: 600; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.total td { font-weight: 600; }
tr.bad td, .bad-text { color: var(--bad); }
.good-text { color: var(--good); }
.op { white-space: nowrap; }
.op::before { content: ""; display: inline-block; width: .75em; height: .75em; margin-right: .4em;
  border-radius: 2px; background: OTHER; }
ins { color: var(--good); text-decoration: none; }
del { color: var(--bad); }
.field b { font-weight: 600; }
.st.applied { color: var(--good); }
.st.failed { color: var(--bad); font-weight: 600; }
.st.conflict { color: var(--warn); font-weight: 600; }
.st.skipped { color: var(--muted); }
figure { margin: 1rem 0; }
figcaption { font-weight: 600; margin-bottom: .3rem; }
svg { display: block; max-width: 100%; height: auto; }
svg text { font: 12px system-ui, "Segoe UI", "DejaVu Sans", Arial, sans-serif; fill: var(--ink); }
svg text.total { fill: var(--muted); }
footer { margin-top: 2.5rem; color: var(--muted); font-size: .85rem; }
@page { size: A4; margin: 12mm; }
/* On paper: small type and tight cells (a thousand changes in tens of pages, not hundreds), each
   change's fields on one line where they fit, the table header again on every page, no row split
   over two pages. The groups are open (see _changes): a closed <details> would not print. */
@media print {
  body { max-width: none; margin: 0; padding: 0; font-size: 8pt; line-height: 1.25; }
  h1 { font-size: 14pt; }
  h2 { font-size: 11pt; margin: 12pt 0 4pt; }
  h3, details.group > summary h3 { font-size: 9.5pt; }
  th, td { padding: 1.5pt 4pt; }
  .field { display: inline-block; margin-right: 1em; }
  .why { margin-top: 0; }
  details.group { margin: 8pt 0; }
  details.group > summary { list-style: none; margin-bottom: 2pt; }
  details.group > summary::-webkit-details-marker { display: none; }
  a { color: inherit; text-decoration: none; }
  .banner, .op::before, svg, .st { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  thead { display: table-header-group; }
  tr, figure, .banner { break-inside: avoid; }
  h2, h3, summary, figcaption, nav.index { break-after: avoid; }
}
""".replace("OTHER", OTHER_COLOUR) + "".join(
    f".op-{op}::before {{ background: {colour}; }}\n" for op, colour in OP_COLOURS.items())

# Nothing may load or run: no scripts, no fetched fonts or images, no forms.
POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'; base-uri 'none'"


def render(report: Report, limit: int | None = None) -> str:
    """The whole page for a report; with ``limit``, only the first so many changes and skipped
    accounts are listed (a mail must stay small: the run folder's report.html has them all)."""
    anchors = Anchors()  # one set of ids for the page: changes first, then the accounts left alone
    listed = report.changes[:limit] if limit is not None else report.changes
    grouped = {change["op"] for change in listed}  # the ops with a group of changes on this page
    sections = [
        _heading(report), _banner(report), _notes(report), _facts(report), _stages(report),
        # what needs someone's attention first, then the whole picture, then every detail
        _failures(report), _safety(report), _overview(report, grouped),
        _changes(report, listed, anchors), _skips(report, anchors, limit),
        _tallies(report), _footer(report),
    ]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{POLICY}\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<meta name=\"generator\" content=\"zivsync-report {e(__version__)}\">\n"
        f"<title>zivsync report: {e(report.title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "".join(section for section in sections if section)
        + "</body>\n</html>\n"
    )


def e(value) -> str:
    """Escaped for HTML text and attribute values alike."""
    return html.escape(str(value), quote=True)


# A table column is never narrower than its longest word, so a printed table stays readable
# (nothing squeezed to a few characters) as long as its words fit the page. A word longer than
# this (an address of 60 characters, a token) could push a table off the paper: as the last
# resort it may break at its dots and before its @ and, where a piece is still this long, anywhere.
LONG_WORD = 40


def words(value) -> str:
    """Escaped like ``e``, breaking only between words: a word longer than LONG_WORD may break too."""
    return "".join(_word(part) for part in re.split(r"(\s+)", str(value)))


def _word(word: str) -> str:
    if len(word) > LONG_WORD and word.strip():
        return _long_word(word)
    if "-" in word or "/" in word:  # a browser breaks a line after these: not in an address, a UUID, a name
        return f"<span class=\"word\">{e(word)}</span>"
    return e(word)


def _long_word(word: str) -> str:
    pieces = re.split(r"(?<=[.,/\\])|(?=@)", word)
    return "<wbr>".join(f"<span class=\"long\">{e(piece)}</span>" if len(piece) > LONG_WORD else e(piece)
                        for piece in pieces)


def op_class(op: str) -> str:
    """A CSS class for an op: only the ops we know become class names."""
    return f"op op-{op}" if op in OP_COLOURS else "op"


def op_colour(op: str) -> str:
    return OP_COLOURS.get(op, OTHER_COLOUR)


def _section(heading: str, body: str, id: str) -> str:
    return f"<section id=\"{id}\">\n<h2>{e(heading)}</h2>\n{body}</section>\n"


# -- the top of the page ----------------------------------------------------------------------


def _heading(report: Report) -> str:
    source = "" if report.source in report.title else f"<p class=\"source\">{e(report.source)}</p>\n"
    return f"<header>\n<h1>zivsync report: {e(report.title)}</h1>\n{source}</header>\n"


def _banner(report: Report) -> str:
    return (f"<div class=\"banner {report.severity}\" role=\"status\"><strong>{e(report.outcome.upper())}</strong>"
            f"{e(report.message_after_outcome)}</div>\n")


def _notes(report: Report) -> str:
    if not report.notes:
        return ""
    return "<ul class=\"notes\">\n" + "".join(f"<li>{e(note)}</li>\n" for note in report.notes) + "</ul>\n"


def facts(report: Report) -> list[tuple[str, str]]:
    """What, when, where from: the lines at the top of a ticket's attachment."""
    summary, header = report.summary or {}, report.plan_header or {}
    rows = []
    for label, key in (("started", "started"), ("ended", "ended"), ("exit code", "exit_code")):
        if summary.get(key) is not None:
            rows.append((label, str(summary[key])))
    if isinstance(summary.get("seconds"), (int, float)):
        rows.append(("took", f"{summary['seconds']:.1f} s"))
    if report.application:
        rows.append(("Zivver", report.application))
    if summary.get("config"):
        rows.append(("config", f"{summary['config']}" + (
            f" (sha256 {summary['config_sha256']})" if summary.get("config_sha256") else "")))
    if header:
        rows.append(("plan made by", f"{header.get('producer', '?')} at {header.get('created', '?')}"))
        if header.get("desired_complete") is False:
            rows.append(("directory", "INCOMPLETE: nobody was suspended or emptied on its account"))
    if report.results_header:
        made = f"{report.results_header.get('producer', '?')} at {report.results_header.get('created', '?')}"
        rows.append(("results by", made))
        if (report.results_header.get("zivver") or {}).get("url"):
            rows.append(("Zivver URL", report.results_header["zivver"]["url"]))
    return rows


def _facts(report: Report) -> str:
    rows = facts(report)
    if not rows:
        return ""
    return "<dl class=\"facts\">\n" + "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>\n" for k, v in rows) + "</dl>\n"


def _stages(report: Report) -> str:
    stages = (report.summary or {}).get("stages") or []
    if not stages:
        return ""
    rows = "".join(_stage_row(stage) for stage in stages)
    return _section("Stages", (
        "<table class=\"stages\">\n<thead><tr><th>stage</th><th class=\"n\">exit code</th><th class=\"n\">seconds</th>"
        "<th class=\"n\">records</th><th>output</th><th>command</th></tr></thead>\n"
        f"<tbody>\n{rows}</tbody>\n</table>\n"), "stages")


def _or_blank(value) -> str:
    return "" if value is None else str(value)


def _stage_row(stage: dict) -> str:
    exit_code, seconds = stage.get("exit_code"), stage.get("seconds")
    failed = exit_code != 0 or stage.get("complete") is False  # no exit code: it did not finish
    output = stage.get("output") or ""
    if stage.get("complete") is False:
        output += " (INCOMPLETE)"
    row = "<tr class=\"bad\">" if failed else "<tr>"
    return (f"{row}<td>{e(stage.get('name', '?'))}</td>"
            f"<td class=\"n\">{e('did not finish' if exit_code is None else exit_code)}</td>"
            f"<td class=\"n\">{f'{seconds:.1f}' if isinstance(seconds, (int, float)) else ''}</td>"
            f"<td class=\"n\">{e(_or_blank(stage.get('records')))}</td><td>{e(output)}</td>"
            f"<td><code>{e(stage.get('command', ''))}</code></td></tr>\n")


# -- counts and charts --------------------------------------------------------------------------


def _overview(report: Report, grouped: set[str]) -> str:
    notes = _plan_notes(report)
    if not report.changes:
        return _section("Changes at a glance", "<p>No changes.</p>\n" + notes, "overview")
    return _section("Changes at a glance", _counts_table(report, grouped) + _op_chart(report) + _domain_chart(report)
                    + notes, "overview")


def _plan_notes(report: Report) -> str:
    """What the terminal's plan lines say besides the changes: accounts newly linked in the account
    mapping, and fields left as Zivver has them because no source read speaks for them."""
    header = report.plan_header or {}
    items = []
    links = (header.get("summary") or {}).get("links")
    if links:
        items.append(f"{e(links)} accounts in sync, newly linked to their directory object in the account mapping")
    for field, count in (header.get("unmanaged") or {}).items():
        items.append(f"{e(field)} of {e(count)} accounts left as Zivver has them (no source read speaks for them)")
    return "<ul class=\"muted\">\n" + "".join(f"<li>{item}</li>\n" for item in items) + "</ul>\n" if items else ""


def _counts_table(report: Report, grouped: set[str]) -> str:
    """Planned changes by op and, once applied, what became of them."""
    statuses = list(report.counts_by_status)
    by_op: dict[str, dict[str, int]] = {}
    for change in report.changes:
        result = report.result_of(change)
        if result is not None:
            counts = by_op.setdefault(change["op"], {})
            counts[result["status"]] = counts.get(result["status"], 0) + 1
    head = "".join(f"<th class=\"n\">{e(s)}</th>" for s in statuses)
    rows = "".join(
        f"<tr><td>{_op_link(op, grouped)}</td><td class=\"n\">{count}</td>"
        + "".join(f"<td class=\"n\">{by_op.get(op, {}).get(s, 0)}</td>" for s in statuses) + "</tr>\n"
        for op, count in report.counts_by_op.items())
    total = (f"<tr class=\"total\"><td>total</td><td class=\"n\">{len(report.changes)}</td>"
             + "".join(f"<td class=\"n\">{n}</td>" for n in report.counts_by_status.values()) + "</tr>\n")
    return (f"<table class=\"counts\">\n<thead><tr><th>operation</th><th class=\"n\">planned</th>{head}</tr></thead>\n"
            f"<tbody>\n{rows}{total}</tbody>\n</table>\n")


def domain_rows(report: Report, top: int = TOP_DOMAINS) -> list[tuple[str, dict[str, int]]]:
    """The domain chart's rows: the ``top`` most changed domains, then one row for the rest."""
    rows = list(report.counts_by_domain.items())
    if len(rows) <= top + 1:  # "other (1 domain)" would only hide a name
        return rows
    other: dict[str, int] = {}
    for _, ops in rows[top:]:
        for op, count in ops.items():
            other[op] = other.get(op, 0) + count
    ordered = {op: other[op] for op in report.counts_by_op if op in other}
    return rows[:top] + [(f"other ({len(rows) - top} domains)", ordered)]


# Chart geometry, in SVG user units (CSS pixels at full width).
CHART_WIDTH, ROW, BAR = 760, 24, 16


def _op_chart(report: Report) -> str:
    rows = [(op, {op: count}) for op, count in report.counts_by_op.items()]
    return _figure("chart-ops", "Changes by operation", _bars(rows, label_width=170))


def _domain_chart(report: Report) -> str:
    rows = domain_rows(report)
    ops = [op for op in report.counts_by_op if any(op in counts for _, counts in rows)]
    legend, legend_height = _legend(ops)
    return _figure("chart-domains", "Changes by domain (of the account's address)",
                   _bars(rows, label_width=240, top=legend_height), legend)


def _figure(id: str, caption: str, chart: tuple[str, int], legend: str = "") -> str:
    bars, height = chart
    return (f"<figure id=\"{id}\">\n<figcaption>{e(caption)}</figcaption>\n"
            f"<svg xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" aria-label=\"{e(caption)}\" "
            f"viewBox=\"0 0 {CHART_WIDTH} {height}\" width=\"{CHART_WIDTH}\" height=\"{height}\">\n"
            f"{legend}{bars}</svg>\n</figure>\n")


def _bars(rows: list[tuple[str, dict[str, int]]], label_width: int, top: int = 0) -> tuple[str, int]:
    """Horizontal bars, one row per label, stacked by op; every bar has a tooltip with its count."""
    room = CHART_WIDTH - label_width - 60  # the total is written after the longest bar
    longest = max(sum(counts.values()) for _, counts in rows)
    parts = []
    for number, (label, counts) in enumerate(rows):
        y = top + 6 + number * ROW
        text_y = y + BAR - 4
        shown = label if len(label) <= 34 else label[:33] + "…"
        parts.append(f"<text x=\"{label_width - 8}\" y=\"{text_y}\" text-anchor=\"end\" class=\"label\">"
                     f"<title>{e(label)}</title>{e(shown)}</text>\n")
        x = float(label_width)
        for op, count in counts.items():
            width = max(2.0, room * count / longest)  # one change among thousands stays visible
            parts.append(f"<rect class=\"bar\" data-op=\"{e(op)}\" data-count=\"{count}\" x=\"{x:.1f}\" y=\"{y}\" "
                         f"width=\"{width:.1f}\" height=\"{BAR}\" fill=\"{op_colour(op)}\">"
                         f"<title>{e(label)}: {count} {e(op)}</title></rect>\n")
            x += width
        parts.append(f"<text x=\"{x + 6:.1f}\" y=\"{text_y}\" class=\"total\">{sum(counts.values())}</text>\n")
    return "".join(parts), top + 12 + len(rows) * ROW


def _legend(ops: list[str]) -> tuple[str, int]:
    """The ops' colours, four to a line."""
    per_line, width = 4, CHART_WIDTH // 4
    parts = []
    for number, op in enumerate(ops):
        x, y = (number % per_line) * width + 4, (number // per_line) * 20 + 4
        parts.append(f"<rect class=\"key\" x=\"{x}\" y=\"{y}\" width=\"12\" height=\"12\" fill=\"{op_colour(op)}\"/>"
                     f"<text x=\"{x + 18}\" y=\"{y + 11}\">{e(op)}</text>\n")
    lines = -(-len(ops) // per_line)
    return "".join(parts), lines * 20 + 8


# -- safety, failures, changes, skips --------------------------------------------------------------


def _safety(report: Report) -> str:
    safety = report.safety
    if not safety:
        return ""
    first, *reasons = describe_safety(safety)
    verdict = first.removeprefix("safety: ")
    body = f"<p class=\"{'good' if safety.get('passed') else 'bad'}-text\"><strong>{e(verdict)}</strong></p>\n"
    if reasons:
        body += "<ul>\n" + "".join(f"<li>{e(r.removeprefix('  - '))}</li>\n" for r in reasons) + "</ul>\n"
    if safety.get("withheld"):
        body += (f"<p>{e(safety['withheld'])} suspensions, emptyings or deletions were withheld: the directory "
                 "was read incompletely.</p>\n")
    return _section("Safety check", body, "safety")


def _tallies(report: Report) -> str:
    """What each stage read and where every object went (left out: … by reason)."""
    if not report.tallies:
        return ""
    body = ""
    for name, tally in report.tallies.items():
        rows = "".join(f"<tr><td>{e(what)}</td><td class=\"n\">{e(number)}</td></tr>\n" for what, number in tally.items())
        body += f"<h3>{e(name)}</h3>\n<table>\n<tr><th>read, used, left out</th><th class=\"n\">count</th></tr>\n" \
            f"{rows}</table>\n"
    return _section("Where every object went", body, "tallies")


def _failures(report: Report) -> str:
    if not report.failures:
        return ""
    rows = "".join(
        f"<tr><td class=\"st {r['status']}\">{e(r['status'])}</td><td><span class=\"{op_class(r['op'])}\">"
        f"{e(r['op'])}</span></td><td>{words(r['email'])}</td><td class=\"n\">{e(r.get('http_status') or '')}</td>"
        f"<td>{words(r.get('message') or '')}</td></tr>\n" for r in report.failures)
    return _section(f"Failed and conflicting changes ({len(report.failures)})", (
        "<table class=\"list\">\n<thead><tr><th class=\"fit\">status</th><th class=\"fit\">operation</th>"
        "<th>account</th><th class=\"n fit\">HTTP</th><th class=\"wide\">Zivver's message</th></tr></thead>\n"
        f"<tbody>\n{rows}</tbody>\n</table>\n"), "failures")


class Anchors:
    """The ids that make an account findable by address: ``report.html#account-jan@fabrikam.example``.

    The address is lowercased (addresses are case-insensitive; a link is typed in lower case) and
    anything but letters, digits and ``. @ + - _`` becomes ``-``, so an id never holds a space or
    markup; an id already given (the same account changed twice, or listed again as left alone,
    or two addresses that slug alike) gets ``-2``, ``-3``: the first row keeps the plain id.
    """

    def __init__(self):
        self.given: set[str] = set()

    def __call__(self, address: str) -> str:
        base = "account-" + re.sub(r"[^\w.@+-]", "-", str(address).strip().lower())
        anchor, number = base, 1
        while anchor in self.given:
            number += 1
            anchor = f"{base}-{number}"
        self.given.add(anchor)
        return anchor


def op_anchor(op: str) -> str:
    return "op-" + re.sub(r"[^\w-]", "-", op)


def _op_link(op: str, grouped: set[str]) -> str:
    """An op's name, linking to its group of changes where the page has one."""
    name = f"<span class=\"{op_class(op)}\">{e(op)}</span>"
    return f"<a href=\"#{op_anchor(op)}\">{name}</a>" if op in grouped else name


def _changes(report: Report, listed: list[dict], anchors: Anchors) -> str:
    """The changes grouped by op, in the order push applies them, after an index of the groups.

    Every group is rendered open, whatever its size: a closed <details> prints as its heading
    alone (and no stylesheet can open it), so a printed report would silently lack its changes,
    and find-in-page skips closed content in some browsers. The index is how a long page is
    navigated; a reader may still fold a group away. ``listed``: the first changes only, in a mail.
    """
    if not report.changes:
        return ""
    by_op: dict[str, list[tuple[int, dict]]] = {}
    for number, change in enumerate(listed, 1):
        by_op.setdefault(change["op"], []).append((number, change))
    groups = "".join(_group(op, report.counts_by_op[op], by_op[op], report, anchors)
                     for op in report.counts_by_op if op in by_op)
    hidden = len(report.changes) - len(listed)
    more = f"<p class=\"more\"><em>{_more_text(hidden)}</em></p>\n" if hidden > 0 else ""
    return _section(f"Changes ({len(report.changes)})", _index(report.counts_by_op, set(by_op)) + groups + more,
                    "changes")


def _index(counts: dict[str, int], grouped: set[str]) -> str:
    items = "".join(f"<li>{_op_link(op, grouped)} <span class=\"count\">{count}</span></li>\n"
                    for op, count in counts.items())
    return f"<nav class=\"index\" aria-label=\"changes by operation\">\n<ul>\n{items}</ul>\n</nav>\n"


def _group(op: str, count: int, rows: list[tuple[int, dict]], report: Report, anchors: Anchors) -> str:
    """One op's changes under a heading that names it and counts them (the op column is the heading)."""
    listed = "" if len(rows) == count else f" <span class=\"muted\">{len(rows)} listed here</span>"
    with_results = bool(report.results)
    head = "<th class=\"fit\">result</th>" if with_results else ""
    body = "".join(_change_row(number, change, report, with_results, anchors) for number, change in rows)
    return (f"<details id=\"{op_anchor(op)}\" class=\"group\" open>\n"
            f"<summary><h3><span class=\"{op_class(op)}\">{e(op)}</span> ({count}){listed}</h3></summary>\n"
            "<table class=\"list changes\">\n<thead><tr><th class=\"n fit\">#</th><th>account</th>"
            f"<th class=\"wide\">before → after</th>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>\n"
            "</details>\n")


def _change_row(number: int, change: dict, report: Report, with_results: bool, anchors: Anchors) -> str:
    # spaces between the fields and their parts: where a printed line may break (see CSS)
    fields = " ".join(f"<div class=\"field\">{_field(change, *item)}</div>" for item in field_changes(change))
    cell = ""
    if with_results:
        result = report.result_of(change)
        status = result["status"] if result else "not applied"
        known = status if status in STATUS_ORDER else "missing"
        tip = f" title=\"{e(result['message'])}\"" if result and result.get("message") else ""
        cell = f"<td class=\"st {known}\"{tip}>{e(status)}</td>"
    facts = (change.get("why") or {}).get("facts") or []
    why = f"<div class=\"why muted\">{'<br>'.join(e(f) for f in facts)}</div>" if facts else ""
    account = f"<td id=\"{e(anchors(change['email']))}\">{words(change['email'])}</td>"
    return f"<tr><td class=\"n\">{number}</td>{account}<td>{fields}{why}</td>{cell}</tr>\n"


def _field(change: dict, name: str, old, new) -> str:
    """One field: a created account's value, a list's additions and removals, or before → after."""
    if is_creation(change):
        return f"<b>{e(name)}</b> {_value(new)}"
    if isinstance(new, list):
        added, removed = list_delta(old, new)
        items = [f"<ins>+{words(a)}</ins>" for a in added] + [f"<del>−{words(r)}</del>" for r in removed]
        return f"<b>{e(name)}</b> " + " ".join(items)
    return f"<b>{e(name)}</b> {_value(old)} → {_value(new)}"


def _value(value) -> str:
    if value is None or value == "":
        return "<i class=\"muted\">none</i>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(words(item) for item in value)
    return words(value)


def _skips(report: Report, anchors: Anchors, limit: int | None = None) -> str:
    if not report.skips:
        return ""
    shown = report.skips[:limit] if limit is not None else report.skips
    rows = "".join(f"<tr><td>{e(s['reason'])}</td><td id=\"{e(anchors(s['email']))}\">{words(s['email'])}</td>"
                   f"<td>{e(s.get('kind') or '')}</td><td>{words(s['detail'])}</td></tr>\n" for s in shown)
    rows += _more(len(report.skips) - len(shown), 4)
    return _section(f"Left alone ({len(report.skips)})", (
        "<table class=\"list\">\n<thead><tr><th class=\"fit\">reason</th><th>account</th><th class=\"fit\">kind</th>"
        f"<th class=\"wide\">detail</th></tr></thead>\n<tbody>\n{rows}</tbody>\n</table>\n"), "skipped")


def _more_text(hidden: int) -> str:
    return f"… and {hidden} more: report.html in the run folder lists them all"


def _more(hidden: int, columns: int) -> str:
    if hidden <= 0:
        return ""
    return f"<tr><td colspan=\"{columns}\"><em>{_more_text(hidden)}</em></td></tr>\n"


def _footer(report: Report) -> str:
    return f"<footer>Made by zivsync-report {e(__version__)} from {e(report.source)}.</footer>\n"
