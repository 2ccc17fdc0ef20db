"""A plan described for people, a line per change: what diff prints, what push shows before
applying, and what the reports (``operator/``) build on. Pure: records in, text out."""

from __future__ import annotations

from typing import Any, Iterable

SHOWN = 40  # changes listed by name before "… and N more"


def is_creation(change: dict) -> bool:
    return change["op"].startswith("create_")


def field_changes(change: dict) -> list[tuple[str, Any, Any]]:
    """(field, before, after) for each field the change sets. A created account has no before,
    and its address and empty fields are left out: the change already names the account."""
    before, after = change["before"], change["after"]
    if is_creation(change):
        return [(name, None, new) for name, new in after.items() if new not in (None, [], "") and name != "email"]
    return [(name, before.get(name), new) for name, new in after.items()]


def list_delta(old: list | None, new: list) -> tuple[list, list]:
    """What a list field gains and loses, each sorted."""
    return sorted(set(new) - set(old or [])), sorted(set(old or []) - set(new))


def describe_change(change: dict) -> str:
    """One line: the op, the account and each field's before → after."""
    parts = []
    for name, old, new in field_changes(change):
        if is_creation(change):
            parts.append(f"{name} {_value(new)}")
        elif isinstance(new, list):
            added, removed = list_delta(old, new)
            parts.append(f"{name} " + " ".join([f"+{a}" for a in added] + [f"-{r}" for r in removed]))
        else:
            parts.append(f"{name} {_value(old)} → {_value(new)}")
    detail = "; ".join(parts)
    return f"{change['op']:<18} {change['email']}" + (f": {detail}" if detail else "")


def describe_why(change: dict, limit: int = 3) -> str:
    """A change's reason in one line: its source facts, the first few."""
    facts = (change.get("why") or {}).get("facts") or []
    shown = "; ".join(facts[:limit])
    return shown + (f" (and {len(facts) - limit} more)" if len(facts) > limit else "")


def _value(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(value) + "]"
    if isinstance(value, str):
        return repr(value) if value else "''"
    return str(value).lower() if isinstance(value, bool) else str(value)


def describe_plan(header: dict, records: Iterable[dict], limit: int | None = SHOWN,
                  more: str = "--verbose lists all") -> str:
    records = list(records)
    changes = [r for r in records if r["type"] == "change"]
    skips = [r for r in records if r["type"] == "skip"]  # links are not listed: nothing happens to them
    summary = header.get("summary", {})
    lines = [f"plan: {len(changes)} changes, {len(skips)} accounts left alone"]
    for op, count in summary.get("changes", {}).items():
        lines.append(f"  {op:<18} {count:>7}")
    for reason, count in summary.get("skips", {}).items():
        lines.append(f"  left alone: {reason} ({count})")
    for field, count in (header.get("unmanaged") or {}).items():
        lines.append(f"  left as Zivver has them: {field} of {count} accounts (no source read speaks for them)")
    if summary.get("links"):
        lines.append(f"  in sync, newly linked to their directory object in the account mapping: {summary['links']}")
    if changes:
        lines.append("changes:")
        shown = changes if limit is None else changes[:limit]
        for change in shown:
            lines.append("  " + describe_change(change))
            if reason := describe_why(change):
                lines.append(f"      because: {reason}")
        if len(shown) < len(changes):
            lines.append(f"  … and {len(changes) - len(shown)} more ({more})")
    if skips:
        lines.append("left alone:")
        shown = skips if limit is None else skips[:limit]
        lines.extend(f"  {s['reason']:<22} {s['email']}: {s['detail']}" for s in shown)
        if len(shown) < len(skips):
            lines.append(f"  … and {len(skips) - len(shown)} more")
    lines.extend(describe_safety(header.get("safety", {})))
    return "\n".join(lines)


def describe_safety(safety: dict) -> list[str]:
    if not safety:
        return []
    if safety.get("passed"):
        lines = [f"safety: passed: {safety.get('destructive', 0)} of {safety.get('managed', 0)} managed accounts "
                 f"suspended, emptied or deleted (limits: {safety.get('max_suspend')} and "
                 f"{_percent(safety.get('max_suspend_percent'))} %)"]
        for what, plural in (("delegate", "delegates"), ("alias", "aliases")):
            if f"{what}_removals" in safety:  # plans made before zivsync had these limits lack them
                lines.append(f"  {safety[f'{what}_removals']} of {safety.get(f'with_{plural}', 0)} managed accounts "
                             f"with {plural} lose one (limits: {safety.get(f'max_{what}_removals')} and "
                             f"{_percent(safety.get(f'max_{what}_removals_percent'))} %)")
        return lines
    return ["safety: REFUSED: this plan must not be applied"] + [f"  - {r}" for r in safety.get("reasons", [])]


def _percent(value) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)
