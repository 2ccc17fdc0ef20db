"""zivsync-normalize: directory streams in, the desired Zivver accounts out.

The logic: ``stages/core/directory.py`` (normalize's rules).
"""

from __future__ import annotations

from collections import Counter

from . import cli
from .cli import ExitStatus, ZivsyncError, option
from .core import schema
from .core.directory import Scope, ScopeError, normalize, rendered
from .core.stream import StreamReader, StreamWriter, input_digests, open_output

HELP = """Turn one or more directory streams into the accounts Zivver should have.

\b
User mailboxes and mail-enabled users become personal accounts, shared mailboxes
functional accounts; secondary SMTP addresses in claimed domains become aliases; FullAccess
holders become delegates (groups expanded through every level of nesting). Several
sources merge by anchor, then by address; where they disagree, a conflict record says so.
An incomplete input gives an output marked incomplete, from which diff never suspends.

\b
Example:
  zivsync-normalize -i ldap.jsonl -i exchange.jsonl --claimed-domain example.com -o desired.jsonl
  zivsync-extract-ldap | zivsync-normalize --config zivsync.toml > desired.jsonl
"""


@cli.stage("zivsync-normalize", HELP)
@cli.input_options
@cli.output_option
@option("--claimed-domain", "claimed_domains", multiple=True, required=True, metavar="DOMAIN",
        help="A domain claimed by the Zivver organisation (repeatable). Accounts, aliases and "
             "delegates outside them are dropped.")
@option("--include-ou", "include_ous", multiple=True, metavar="DN",
        help="Only objects under this OU (repeatable; applies to sources that give DNs).")
@option("--exclude-ou", "exclude_ous", multiple=True, metavar="DN", help="Leave out objects under this OU (repeatable).")
@option("--include-group", "include_groups", multiple=True, metavar="GROUP",
        help="Only members (nested included) of this group: id, name, address or DN (repeatable).")
@option("--exclude-group", "exclude_groups", multiple=True, metavar="GROUP",
        help="Leave out members (nested included) of this group (repeatable).")
@option("--include-address", "include_addresses", multiple=True, metavar="PATTERN",
        help="Only accounts whose address matches this pattern, e.g. '*@example.com' (repeatable).")
@option("--exclude-address", "exclude_addresses", multiple=True, metavar="PATTERN",
        help="Leave out accounts whose address matches this pattern (repeatable).")
@option("--resource-mailboxes/--no-resource-mailboxes", default=False,
        help="Room and equipment mailboxes become functional accounts (default: skipped).")
@option("--groups-as-functional/--no-groups-as-functional", default=False,
        help="Mail-enabled groups become functional accounts whose members are the delegates.")
@option("--source-priority", multiple=True, metavar="SOURCE",
        help="Whose display name and phone win when sources disagree (repeatable, highest first; "
             "default: the order the sources come in).")
@option("--expand-shared-delegates/--no-expand-shared-delegates", default=False,
        help="A shared mailbox granted Full Access on another passes its delegates on, through any chain "
             "(as Zivver's own sync does; default: such grants give no delegate).")
def command(inputs, output, claimed_domains, include_ous, exclude_ous, include_groups, exclude_groups,
            include_addresses, exclude_addresses, resource_mailboxes, groups_as_functional, source_priority,
            expand_shared_delegates):
    scope = Scope(
        claimed_domains=frozenset(d.lower().strip() for d in claimed_domains),
        include_ous=include_ous, exclude_ous=exclude_ous,
        include_groups=include_groups, exclude_groups=exclude_groups,
        include_addresses=include_addresses, exclude_addresses=exclude_addresses,
        resource_mailboxes=resource_mailboxes, groups_as_functional=groups_as_functional,
        source_priority=source_priority, expand_shared_delegates=expand_shared_delegates,
    )
    sources = cli.open_inputs(inputs)
    reader = StreamReader(sources, ["directory"], typed=True)
    read: Counter = Counter()
    try:
        result = normalize(_counted(reader, read), scope, authorities=lambda: _authorities(reader))
    except ScopeError as error:
        raise ZivsyncError(str(error)) from None
    incomplete = reader.incomplete_reasons + result.incomplete_reasons
    header = {
        "inputs": input_digests(sources),
        "sources": result.sources,
        "claimed_domains": sorted(scope.claimed_domains),
        "filters": {name: list(value) for name, value in (
            ("include_ous", include_ous), ("exclude_ous", exclude_ous), ("include_groups", include_groups),
            ("exclude_groups", exclude_groups), ("include_addresses", include_addresses),
            ("exclude_addresses", exclude_addresses)) if value},
        "resource_mailboxes": resource_mailboxes,
        "groups_as_functional": groups_as_functional,
        **({"expand_shared_delegates": True} if expand_shared_delegates else {}),
    }
    if any(result.authorities.values()):  # what each source speaks for (null: it states nothing, so everything)
        # every source read, also one whose stream held no record tonight (its scope read nothing)
        sources_read = result.sources + [source for source in result.authorities if source not in result.sources]
        header["authorities"] = {source: result.authorities.get(source) for source in sources_read}
    with open_output(output) as (handle, name):
        writer = StreamWriter(handle, "accounts", "zivsync-normalize", header, name)
        for record in result.accounts:
            writer.write(rendered(record))
        for record in result.conflicts:
            writer.write(record)
        writer.close(incomplete, tally=_tally(read, result))
    _report(result, incomplete)
    return ExitStatus.OK


def _authorities(reader: StreamReader) -> dict[str, dict]:
    """What each source speaks for, as its stream's header states it."""
    return {authority["source"]: authority for header in reader.headers
            if isinstance(authority := header.get("authority"), dict)}


def _counted(records, read: Counter):
    """The records, counted by type as normalize reads them (for the tally)."""
    for record in records:
        read[schema.type_of(record)] += 1
        yield record


def _tally(read: Counter, result) -> dict[str, int]:
    """Where every object read went: records read by type, accounts written, left out by reason."""
    kinds = Counter(a["kind"] for a in result.accounts)
    return {**{f"{kind} records read": n for kind, n in read.items()},
            "personal accounts": kinds["user"], "functional accounts": kinds["functional"],
            **{f"left out: {reason}": n for reason, n in result.dropped.items()}}


def _report(result, incomplete: list[str]) -> None:
    users = sum(1 for a in result.accounts if a["kind"] == "user")
    inactive = sum(1 for a in result.accounts if not a["active"])
    cli.log.info("%d accounts: %d personal (%d inactive), %d functional; %d conflicts",
                 len(result.accounts), users, inactive, len(result.accounts) - users, len(result.conflicts))
    for reason, count in sorted(result.dropped.items()):
        cli.log.info("left out: %s: %d", reason, count)
    for conflict in result.conflicts:
        if conflict["held"]:
            cli.log.warning("sources disagree on %s of %s: %s", conflict["field"], conflict["email"],
                            ", ".join(f"{v['source']}={v['value']!r}" for v in conflict["values"]))
    for warning in result.warnings:
        cli.log.warning("%s", warning)
    for reason in incomplete:
        cli.log.warning("incomplete input: %s", reason)
    if incomplete:
        cli.log.warning("the accounts stream is marked incomplete: diff will suspend nobody from it")

