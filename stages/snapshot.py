"""zivsync-snapshot: Zivver's accounts as they are now, as an accounts stream. Read-only.

The logic: ``stages/zivver/scim.py`` over the SCIM client ``stages/zivver/client.py``.
"""

from __future__ import annotations

from . import cli
from .cli import ExitStatus, ZivsyncError
from .core.stream import StreamWriter, open_output
from .zivver import client as zivver
from .zivver import scim

HELP = """Read every account of the Zivver organisation and write it as an accounts stream.

\b
Personal accounts (SCIM Users) and functional accounts (SCIM Groups, their members turned
into the delegates' addresses), sorted by address, with the server and time in the header:
what zivsync-diff compares the desired accounts with. Sends only GET requests.

\b
Example:
  ZIVSYNC_ZIVVER_API_KEY=... zivsync-snapshot --zivver-url https://app.zivver.com/api/scim/v2 -o current.jsonl
"""


@cli.stage("zivsync-snapshot", HELP)
@cli.output_option
@cli.zivver_options
def command(output, **connection):
    client = zivver.connect(connection)
    incomplete: list[str] = []
    try:  # each resource read as its page arrives: what is kept is the account, not Zivver's answer
        users = _listed(client, "Users", incomplete, scim.read_user)
        emails = {account["zivver_id"]: account["email"] for account, _, _ in users if account}
        groups = _listed(client, "Groups", incomplete, lambda resource: scim.read_group(resource, emails))
    except zivver.ZivverError as error:
        raise ZivsyncError(str(error), zivver.exit_status_for(error)) from None
    finally:
        client.close()
    accounts, warnings, problems = scim.gather(users + groups)
    for warning in warnings:
        cli.log.warning("%s", warning)
    incomplete += [f"not understood, left out: {problem}" for problem in problems]
    header = {"source": {"url": client.base}, "counts": {"users": len(users), "groups": len(groups)},
              "requests": client.stats.requests}
    with open_output(output) as (handle, name):
        writer = StreamWriter(handle, "accounts", "zivsync-snapshot", header, name)
        for account in accounts:
            writer.write(account)
        writer.close(incomplete, tally={"personal accounts read": len(users), "functional accounts read": len(groups),
                                        "left out: not understood": len(problems)})
    cli.log.info("%d personal and %d functional accounts read in %d requests", len(users), len(groups),
                 client.stats.requests)
    if incomplete:
        for reason in incomplete:
            cli.log.error("%s", reason)
        # the stream is written for review, marked incomplete: diff refuses to plan from it
        raise ZivsyncError(f"Zivver's accounts could not be read completely ({len(incomplete)} problems; the "
                           "stream is marked incomplete and diff will not plan from it)", ExitStatus.UNREACHABLE)
    return ExitStatus.OK


def _listed(client, resource: str, incomplete: list[str], convert) -> list[scim.Read]:
    """The resources listed, each read by ``convert``; a listing short of Zivver's own total is
    kept but noted."""
    try:
        return client.list(resource, convert=convert)
    except zivver.ShortListing as short:
        incomplete.append(f"GET /{resource}: {short.message}")
        return short.resources
