"""zivsync-extract-exchange: mailboxes, groups and Full Access from Exchange on-premise, as a
directory stream.

The logic: ``stages/sources/exchangeonprem.py`` over ``stages/sources/exchangeonline.py``.
"""

from __future__ import annotations

import os

import click

from . import cli
from .cli import ExitStatus, ZivsyncError
from .core.http import ApiError
from .core.tls import check_revocation
from .sources.directory_stream import write_directory
from .sources.exchangeonline import KIND_NAMES, Reader, Scope
from .sources.exchangeonprem import AUTHS, Endpoint, RemotePowerShell

HELP = """Read mailboxes, groups and Full Access permissions from Exchange on-premise through its
remote PowerShell endpoint (http(s)://SERVER/PowerShell/) and write them as a directory stream.

\b
Cmdlets only, as Exchange's no-language sessions allow: Get-Mailbox (user, shared, room and
equipment, -ResultSize Unlimited), Get-DistributionGroup and Get-DistributionGroupMember,
Get-MailboxPermission per shared mailbox (--user-mailbox-permissions: per user mailbox too),
Get-Recipient for trustees (DOMAIN\\user) the listings don't name. One runspace pool for the
run, --concurrency pipelines in it at a time. The Guid of each object (AD's objectGUID) is its
anchor, so the records merge with zivsync-extract-ldap's. An error Exchange writes for one
object is reported with it and the run goes on; the stream then counts as incomplete, so that
diff suspends nobody on its account.

\b
Signs in with Kerberos by default (the current ticket: on Linux from kinit or a keytab, on
Windows the logon of the account zivsync runs as; or --username and the password from
ZIVSYNC_EXCHANGE_PASSWORD or --password-file); NTLM, Negotiate and Basic (over https) can be
chosen. Over http, Kerberos and NTLM encrypt the messages themselves.

\b
Examples:
  kinit svc-zivsync@CORP.EXAMPLE          # Linux; on Windows the task's account is signed in already
  zivsync-extract-exchange --url http://ex01.corp.example/PowerShell/ -o exchange.jsonl
  ZIVSYNC_EXCHANGE_PASSWORD=... zivsync-extract-exchange --url https://ex01.corp.example/PowerShell/ \\
      --auth ntlm --username 'CORP\\svc-zivsync' --ca-file corp-ca.pem -o exchange.jsonl
"""


KINDS = sorted(KIND_NAMES)  # user, shared, room, equipment


def exchange_option(*decls, **kwargs):
    """An option whose environment variable says it is Exchange on-premise's (ZIVSYNC_EXCHANGE_...)."""
    name = next(d for d in decls if d.startswith("--"))[2:].replace("-", "_").upper()
    kwargs.setdefault("envvar", f"ZIVSYNC_EXCHANGE_{name}")
    return cli.option(*decls, **kwargs)


@cli.stage("zivsync-extract-exchange", HELP, batch=False)
@cli.output_option
@exchange_option("--url", required=True, metavar="URL",
                 help="Exchange's remote PowerShell: http(s)://SERVER/PowerShell/ (a server, not a load-balanced "
                      "name, for Kerberos).")
@exchange_option("--auth", type=click.Choice(AUTHS), default="kerberos", show_default=True,
                 help="How to sign in.")
@exchange_option("--username", metavar="NAME", help="user@DOMAIN (Kerberos, Basic) or DOMAIN\\user (NTLM). "
                 "Kerberos without it uses the current ticket.")
@exchange_option("--password-file", type=click.Path(dir_okay=False), metavar="FILE",
                 help="Read the password from this file. Default: ZIVSYNC_EXCHANGE_PASSWORD (never a flag).")
@exchange_option("--ca-file", type=click.Path(dir_okay=False, exists=True), metavar="FILE",
                 help="Verify the server's certificate (https) against the CAs in this PEM file only. "
                      "Default: the operating system's trust store (on Windows, its certificate store).")
@exchange_option("--no-verify-tls", is_flag=True, help="Do not verify the server's certificate (logged loudly).")
@exchange_option("--allow-unencrypted", is_flag=True,
                 help="Let Basic sign in over http://: the password travels unencrypted (logged loudly).")
@exchange_option("--kerberos-service", default="HTTP", show_default=True, metavar="NAME",
                 help="The Kerberos service of the /PowerShell site.")
@exchange_option("--timeout", type=click.FloatRange(min=1), default=120.0, show_default=True,
                 help="Seconds to wait for the server.")
@exchange_option("--concurrency", type=click.IntRange(min=1, max=16), default=4, show_default=True,
                 help="Pipelines running at once in the runspace pool.")
@exchange_option("--mailbox-kind", "mailbox_kinds", multiple=True, type=click.Choice(KINDS),
                 default=tuple(KINDS), show_default=True, help="Which mailboxes to read (repeatable).")
@exchange_option("--user-mailbox-permissions", is_flag=True,
                 help="Read Full Access on user mailboxes too (one cmdlet per mailbox), not only on shared ones.")
@exchange_option("--claimed-domain", "claimed_domains", multiple=True, metavar="DOMAIN",
                 help="Only mailboxes whose primary address is in this domain (repeatable).")
@exchange_option("--address-filter", "address_filters", multiple=True, metavar="PATTERN",
                 help="Only mailboxes with an address matching this pattern, e.g. '*@sales.corp.example' (repeatable).")
@exchange_option("--member-of", multiple=True, metavar="GROUP",
                 help="Only mailboxes that are members of this group, nested membership included (repeatable).")
@exchange_option("--source", default="exchange", show_default=True, metavar="NAME",
                 help="The source name in the records.")
@cli.revocation_options
def command(output, url, auth, username, password_file, ca_file, no_verify_tls, allow_unencrypted, kerberos_service,
            timeout, concurrency, mailbox_kinds, user_mailbox_permissions, claimed_domains, address_filters,
            member_of, source, **revocation):
    password = None
    if auth != "kerberos" or username or password_file:
        if not username:
            raise ZivsyncError(f"--auth {auth} needs --username")
        password = cli.read_secret(password_file, "ZIVSYNC_EXCHANGE_PASSWORD", "Exchange password", "--password-file")
    elif os.environ.get("ZIVSYNC_EXCHANGE_PASSWORD"):
        cli.log.warning("ZIVSYNC_EXCHANGE_PASSWORD is set but no --username: signing in with the Kerberos ticket")
    endpoint = Endpoint(url=url, auth=auth, username=username, password=password, ca_file=ca_file,
                        verify_tls=not no_verify_tls, allow_unencrypted=allow_unencrypted, service=kerberos_service,
                        timeout=timeout)
    https, host, port, _ = endpoint.parts()
    if https and endpoint.verify_tls:
        check_revocation("Exchange", host, port, ca_file, {**revocation, "timeout": timeout})
    elif revocation.get("check_revocation"):
        cli.log.warning("--check-revocation: %s is not verified https: there is no certificate to check", url)
    shell = RemotePowerShell(endpoint, concurrency=concurrency).open()
    scope = Scope.of(mailbox_kinds, user_mailbox_permissions, claimed_domains, address_filters, member_of, source)
    header = {"source": {"url": url, "auth": auth, "username": username, **scope.describe()},
              "authority": scope.authority()}
    try:
        reader = Reader(shell, scope, batch=False, concurrency=concurrency)
        status, counts = write_directory(reader.records(), producer="zivsync-extract-exchange", header=header,
                                         output=output, failure=_failure, tally=lambda: reader.tally)
    finally:
        shell.close()
    cli.log.info("%d people, %d groups, %d permissions%s; %d cmdlets in %d round trips", counts["person"],
                 counts["group"], counts["permission"],
                 f", {counts['error']} objects that could not be read (the stream counts as incomplete)"
                 if counts["error"] else "", shell.calls, shell.round_trips)
    return status


def _failure(error: Exception) -> ZivsyncError | None:
    """Exit 4 when the server failed the run as a whole, with Exchange's own words."""
    if isinstance(error, ZivsyncError):
        return error
    if isinstance(error, ApiError):
        return ZivsyncError(f"Exchange: {error.path}: {error.message}", ExitStatus.UNREACHABLE)
    return None

