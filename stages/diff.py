"""zivsync-diff: desired and current accounts in, the plan out.

The logic: ``stages/core/planning.py`` (diff's rules) and ``stages/core/account_mapping.py``.
"""

from __future__ import annotations

import hashlib

import click

from . import cli
from .cli import ExitStatus, ZivsyncError, option
from .core import account_mapping as state
from .core import schema
from .core.describe import describe_plan
from .core.planning import Account, DiffOptions, PlanError, Reading, diff
from .core.stream import Input, StreamReader, StreamWriter, dumps_canonical, input_digests, open_output

HELP = """Compare the desired accounts with Zivver's current ones and write the plan.

\b
Matches accounts by the local account mapping (--state), then by address, then by alias,
and plans creates, updates, renames, reactivations, suspensions and emptied functional
accounts, each with its fields before and after. Nothing is written to Zivver: review the
plan, then give it to zivsync-push. Safety limits are on by default: more suspensions than
--max-suspend or --max-suspend-percent, more accounts losing a delegate or an alias than
--max-delegate-removals/--max-alias-removals (or their -percent), or any of these from an
incomplete or empty desired stream, and the plan is marked refused (exit 3) so that push
will not apply it.

\b
Example:
  zivsync-diff -i desired.jsonl --current current.jsonl --state state/ -o plan.jsonl
  zivsync-normalize -i ldap.jsonl | zivsync-diff --current current.jsonl --check
"""


@cli.stage("zivsync-diff", HELP)
@cli.input_options
@cli.output_option
@option("--current", type=click.Path(dir_okay=False, allow_dash=False), required=True, metavar="FILE",
        help="Zivver's current accounts (an accounts stream, as zivsync-snapshot writes it).")
@option("--state", "state_dir", type=click.Path(file_okay=False), metavar="DIR",
        help="The state folder holding the account mapping that zivsync-push keeps (absent on a first run).")
@option("--claimed-domain", "claimed_domains", multiple=True, required=True, metavar="DOMAIN",
        help="A domain claimed by the Zivver organisation (repeatable): accounts elsewhere are left alone.")
@option("--target-exclude", multiple=True, metavar="PATTERN",
        help="Never touch Zivver accounts whose address matches this pattern, e.g. 'admin-*@example.com' (repeatable).")
@option("--max-suspend", type=click.IntRange(min=0), default=50, show_default=True,
        help="Refuse the plan if it suspends or empties more accounts than this.")
@option("--max-suspend-percent", type=click.FloatRange(min=0, max=100), default=10.0, show_default=True,
        help="Refuse the plan if it suspends or empties more than this share of the managed accounts.")
@option("--delete-missing/--no-delete-missing", default=False,
        help="Delete (irreversibly) Zivver accounts that the directory no longer has, instead of suspending them.")
@option("--max-delete", type=click.IntRange(min=0), default=0, show_default=True,
        help="Refuse the plan if it deletes more accounts than this.")
@option("--max-delegate-removals", type=click.IntRange(min=0), default=50, show_default=True,
        help="Refuse the plan if more accounts than this would lose a delegate (in an update).")
@option("--max-delegate-removals-percent", type=click.FloatRange(min=0, max=100), default=20.0, show_default=True,
        help="Refuse the plan if more than this share of the managed accounts with delegates would lose one "
             "(checked beyond 5 accounts).")
@option("--max-alias-removals", type=click.IntRange(min=0), default=50, show_default=True,
        help="Refuse the plan if more accounts than this would lose an alias (in an update).")
@option("--max-alias-removals-percent", type=click.FloatRange(min=0, max=100), default=20.0, show_default=True,
        help="Refuse the plan if more than this share of the managed accounts with aliases would lose one "
             "(checked beyond 5 accounts).")
@option("--update-sso-keys/--no-update-sso-keys", default=False,
        help="Plan changes of the SSO account key (only on Zivver Support's advice: a wrong key blocks sign-in).")
@click.option("--check", is_flag=True, help="Exit 5 when changes are pending, 0 when in sync (for monitoring).")
def command(inputs, output, current, state_dir: str | None, claimed_domains, target_exclude, max_suspend,
            max_suspend_percent, delete_missing, max_delete, max_delegate_removals, max_delegate_removals_percent,
            max_alias_removals, max_alias_removals_percent, update_sso_keys, check):
    options = DiffOptions(
        claimed_domains=frozenset(d.lower().strip() for d in claimed_domains), exclude=target_exclude,
        max_suspend=max_suspend, max_suspend_percent=max_suspend_percent, delete_missing=delete_missing,
        max_delete=max_delete, update_sso_keys=update_sso_keys, max_delegate_removals=max_delegate_removals,
        max_delegate_removals_percent=max_delegate_removals_percent, max_alias_removals=max_alias_removals,
        max_alias_removals_percent=max_alias_removals_percent,
    )
    desired_inputs = cli.open_inputs(inputs)
    desired_reader = StreamReader(desired_inputs, ["accounts"], typed=True)
    desired, held = _accounts_and_held(desired_reader)
    current_input = Input.open(current)
    current_reader = StreamReader([current_input], ["accounts"], typed=True)
    current_accounts, _ = _accounts_and_held(current_reader)
    if not current_reader.complete:
        raise ZivsyncError(f"the current accounts stream is incomplete: {'; '.join(current_reader.incomplete_reasons)}")
    try:
        mapping = state.load(state_dir)
    except state.StateError as error:
        raise ZivsyncError(str(error)) from None
    for reason in desired_reader.incomplete_reasons:
        cli.log.warning("incomplete desired stream: %s", reason)
    _warn_if_swapped(desired_reader.headers, current_reader.headers, current)

    try:
        plan = diff(desired, current_accounts, options, mapping=mapping,
                    desired_complete=desired_reader.complete, held=held, reading=_reading(desired_reader))
    except PlanError as error:
        raise ZivsyncError(f"cannot plan: {error}") from None

    safety = plan.safety
    header = {
        "inputs": {
            "desired": input_digests(desired_inputs),
            "current": {"name": current_input.label, "sha256": current_input.sha256},
            "mapping": mapping.digest,
        },
        "config": hashlib.sha256(dumps_canonical(_config(options))).hexdigest(),
        "options": _config(options),
        "desired_complete": desired_reader.complete,
        "summary": plan.summary(),
        **({"unmanaged": plan.unmanaged} if plan.unmanaged else {}),
        "safety": {
            "passed": safety.passed, "reasons": safety.reasons, "destructive": safety.destructive,
            "deletions": safety.deletions, "managed": safety.managed, "withheld": safety.withheld,
            "max_suspend": max_suspend, "max_suspend_percent": max_suspend_percent, "max_delete": max_delete,
            "delegate_removals": safety.delegate_removals, "with_delegates": safety.with_delegates,
            "max_delegate_removals": max_delegate_removals,
            "max_delegate_removals_percent": max_delegate_removals_percent,
            "alias_removals": safety.alias_removals, "with_aliases": safety.with_aliases,
            "max_alias_removals": max_alias_removals, "max_alias_removals_percent": max_alias_removals_percent,
        },
    }
    with open_output(output) as (handle, name):
        writer = StreamWriter(handle, "plan", "zivsync-diff", header, name)
        for record in plan.records:
            writer.write(record)
        writer.close()
    cli.log.info("%s", describe_plan(header, plan.records, limit=None if cli.log.isEnabledFor(10) else 40))
    if not safety.passed:
        cli.log.error("plan refused by the safety checks: %s", "; ".join(safety.reasons))
        return ExitStatus.REFUSED
    if check and plan.changes:
        return ExitStatus.PENDING
    return ExitStatus.OK


def _warn_if_swapped(desired: list[dict], current: list[dict], current_name: str) -> None:
    """-i and --current the wrong way round plan the opposite of the truth: say so. A warning, not
    an error: rehearsals and tests do diff a stream against itself."""
    def made_by(headers: list[dict], stage: str) -> bool:
        return any(str(h.get("producer", "")).startswith(stage) for h in headers)

    if made_by(current, "zivsync-normalize") or made_by(desired, "zivsync-snapshot"):
        cli.log.warning("the inputs look swapped: --current %s should be Zivver's accounts (zivsync-snapshot), "
                        "-i the desired ones (zivsync-normalize)", current_name)


def _reading(reader: StreamReader) -> Reading:
    """How the desired accounts were read, from their headers: the sources, what each speaks for."""
    sources, authorities, created = [], {}, None
    for header in reader.headers:
        sources += [s for s in header.get("sources") or () if s not in sources]
        # a source whose stream held no record is not counted as read: its accounts are left alone
        stated = header.get("authorities") if isinstance(header.get("authorities"), dict) else {}
        for source in [*(header.get("sources") or ()), *stated]:
            authorities[source] = stated.get(source)
        created = created or header.get("created")
    return Reading(tuple(sources), authorities or None, created)


def _accounts_and_held(reader: StreamReader) -> tuple[list[Account], set[str]]:
    accounts, held = [], set()
    for record in reader:
        if schema.type_of(record) == "account":
            accounts.append(Account.of(record))
        elif record.held:
            held.add(record.email)
    return accounts, held


def _config(options: DiffOptions) -> dict:
    return {
        "claimed_domains": sorted(options.claimed_domains), "target_exclude": list(options.exclude),
        "max_suspend": options.max_suspend, "max_suspend_percent": options.max_suspend_percent,
        "delete_missing": options.delete_missing, "max_delete": options.max_delete,
        "update_sso_keys": options.update_sso_keys,
        "max_delegate_removals": options.max_delegate_removals,
        "max_delegate_removals_percent": options.max_delegate_removals_percent,
        "max_alias_removals": options.max_alias_removals, "max_alias_removals_percent": options.max_alias_removals_percent,
    }

