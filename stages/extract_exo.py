"""zivsync-extract-exo: mailboxes, groups and Full Access from Exchange Online, as a directory stream.

The logic: ``stages/sources/exchangeonline.py``.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import click

from . import cli
from .cli import ExitStatus, ZivsyncError
from .core.http import ApiError
from .core.tls import check_revocation, system_trust
from .sources.directory_stream import write_directory
from .sources.exchangeonline import (
    CLOUDS,
    KIND_NAMES,
    Cloud,
    ExchangeApi,
    Login,
    Reader,
    Scope,
    Tokens,
)

HELP = """Read mailboxes, groups and Full Access permissions from Exchange Online (through the
Exchange admin API, no PowerShell) and write them as a directory stream.

\b
User, shared, room and equipment mailboxes with every SMTP address, the Entra object id as the
anchor and SSO key, and the disabled state; distribution and mail-enabled security groups with
their members; Full Access on shared mailboxes (--user-mailbox-permissions: on user mailboxes
too), trustees resolved to mailboxes and groups. Every page is read; per-mailbox calls go ten
to a $batch request. Throttling (429) is waited out as the service asks.

\b
Sign in as an application (unattended): with a certificate (--certificate-key and
--certificate, or --pfx) or a client secret (ZIVSYNC_EXO_CLIENT_SECRET or
--client-secret-file). The application needs Exchange.ManageAsApp and an Exchange role (Global
Reader or Exchange Administrator). Or sign in as an administrator with --device-code (by hand,
MFA included). --verbose logs every cmdlet with its parameters and the URL it went to.

\b
Examples:
  zivsync-extract-exo --tenant contoso.onmicrosoft.com --client-id 0b5f...c1 \\
      --certificate-key zivsync.key --certificate zivsync.pem -o exo.jsonl
  zivsync-extract-exo --tenant contoso.onmicrosoft.com --client-id 0b5f...c1 --device-code \\
      --claimed-domain contoso.com | zivsync-normalize --claimed-domain contoso.com
"""


def exo_option(*decls, **kwargs):
    """An option whose environment variable says it is Exchange Online's (ZIVSYNC_EXO_...)."""
    name = next(d for d in decls if d.startswith("--"))[2:].replace("-", "_").upper()
    kwargs.setdefault("envvar", f"ZIVSYNC_EXO_{name}")
    return cli.option(*decls, **kwargs)


KINDS = sorted(KIND_NAMES)  # user, shared, room, equipment


@cli.stage("zivsync-extract-exo", HELP, batch=False)
@cli.output_option
@exo_option("--tenant", required=True, metavar="TENANT",
            help="The tenant: its id or a domain (contoso.onmicrosoft.com).")
@exo_option("--client-id", required=True, metavar="ID", help="The application (client) id to sign in as.")
@exo_option("--client-secret-file", type=click.Path(dir_okay=False), metavar="FILE",
            help="Read the client secret from this file. Default: ZIVSYNC_EXO_CLIENT_SECRET (never a flag).")
@exo_option("--certificate-key", type=click.Path(dir_okay=False, exists=True), metavar="FILE",
            help="The application certificate's private key (PEM; the certificate may be in the same file).")
@exo_option("--certificate", type=click.Path(dir_okay=False, exists=True), metavar="FILE",
            help="The application certificate (PEM), for its thumbprint.")
@exo_option("--thumbprint", metavar="HEX", help="The certificate's SHA-1 thumbprint, when --certificate is not given.")
@exo_option("--pfx", type=click.Path(dir_okay=False, exists=True), metavar="FILE",
            help="The application certificate and key as a PFX (PKCS#12) file.")
@exo_option("--certificate-passphrase-file", type=click.Path(dir_okay=False), metavar="FILE",
            help="Read the key's or PFX's passphrase from this file. Default: ZIVSYNC_EXO_CERTIFICATE_PASSPHRASE.")
@exo_option("--device-code", is_flag=True,
            help="Sign in as an administrator in a browser with a code (by hand; MFA works).")
@exo_option("--cloud", type=click.Choice(sorted(CLOUDS)), default="global", show_default=True,
            help="The Microsoft cloud (sovereign clouds have other endpoints).")
@exo_option("--authority-host", metavar="URL", help="Override the cloud's sign-in host (https://login...).")
@exo_option("--exchange-url", metavar="URL", help="Override the cloud's Exchange Online endpoint.")
@exo_option("--ca-file", type=click.Path(dir_okay=False, exists=True), metavar="FILE",
            help="Verify the services' TLS certificates against the CAs in this PEM file only (e.g. a "
                 "TLS-inspecting proxy's). Default: the operating system's trust store (on Windows, its "
                 "certificate store).")
@exo_option("--timeout", type=click.FloatRange(min=1), default=60.0, show_default=True,
            help="Seconds to wait for an answer.")
@exo_option("--page-size", type=click.IntRange(min=1, max=1000), default=1000, show_default=True,
            help="Objects per page the admin API is asked for.")
@exo_option("--batch/--no-batch", default=True, show_default=True,
            help="Send per-mailbox and per-group cmdlets ten to a $batch request.")
@exo_option("--concurrency", type=click.IntRange(min=1, max=16), default=4, show_default=True,
            help="Requests in flight at once, at most.")
@exo_option("--mailbox-kind", "mailbox_kinds", multiple=True, type=click.Choice(KINDS),
            default=tuple(KINDS), show_default=True, help="Which mailboxes to read (repeatable).")
@exo_option("--user-mailbox-permissions", is_flag=True,
            help="Read Full Access on user mailboxes too (one cmdlet per mailbox), not only on shared ones.")
@exo_option("--claimed-domain", "claimed_domains", multiple=True, metavar="DOMAIN",
            help="Only mailboxes whose primary address is in this domain (repeatable).")
@exo_option("--address-filter", "address_filters", multiple=True, metavar="PATTERN",
            help="Only mailboxes with an address matching this pattern, e.g. '*@sales.contoso.com' "
                 "(repeatable; the Synctool's EmailAddresses filter).")
@exo_option("--member-of", multiple=True, metavar="GROUP",
            help="Only mailboxes that are members of this group, nested membership included: its address, "
                 "name or id (repeatable).")
@exo_option("--source", default="exo", show_default=True, metavar="NAME", help="The source name in the records.")
@cli.revocation_options
def command(output, tenant, client_id, client_secret_file, certificate_key, certificate, thumbprint, pfx,
            certificate_passphrase_file, device_code, cloud, authority_host, exchange_url, ca_file, timeout,
            page_size, batch, concurrency, mailbox_kinds, user_mailbox_permissions, claimed_domains,
            address_filters, member_of, source, **revocation):
    base = CLOUDS[cloud]
    endpoints = Cloud(authority_host or base.authority_host, exchange_url or base.exchange_url, base.graph_url)
    login = _login(tenant, client_id, client_secret_file, certificate_key, certificate, thumbprint, pfx,
                   certificate_passphrase_file, device_code)
    for what, url in (("Entra ID", endpoints.authority_host), ("Exchange Online", endpoints.exchange_url)):
        parts = urlsplit(url)
        check_revocation(what, parts.hostname or "", parts.port or 443, ca_file, {**revocation, "timeout": timeout})
    verify = system_trust(ca_file or True)
    tokens = Tokens(login, endpoints, verify=verify, timeout=timeout,
                    prompt=lambda text: click.echo(text, err=True))
    api = ExchangeApi(endpoints, tenant, tokens, page_size=page_size, verify=verify, timeout=timeout)
    scope = Scope.of(mailbox_kinds, user_mailbox_permissions, claimed_domains, address_filters, member_of, source)
    header = {"source": {"tenant": tenant, "client_id": client_id, "sign_in": login.method(), "exchange": api.base,
                         **scope.describe()}, "authority": scope.authority()}
    try:
        return _write(Reader(api, scope, batch=batch, concurrency=concurrency), api, tokens, header, output)
    finally:
        api.close()


def _login(tenant, client_id, secret_file, key, certificate, thumbprint, pfx, passphrase_file, device_code) -> Login:
    import os
    secret = None
    if secret_file or (os.environ.get("ZIVSYNC_EXO_CLIENT_SECRET") and not (key or pfx or device_code)):
        secret = cli.read_secret(secret_file, "ZIVSYNC_EXO_CLIENT_SECRET", "client secret", "--client-secret-file")
    passphrase = None
    if passphrase_file or os.environ.get("ZIVSYNC_EXO_CERTIFICATE_PASSPHRASE"):
        passphrase = cli.read_secret(passphrase_file, "ZIVSYNC_EXO_CERTIFICATE_PASSPHRASE", "certificate passphrase",
                                     "--certificate-passphrase-file")
    login = Login(tenant=tenant, client_id=client_id, secret=secret, key_file=Path(key) if key else None,
                  certificate_file=Path(certificate) if certificate else None, thumbprint=thumbprint,
                  pfx_file=Path(pfx) if pfx else None, passphrase=passphrase, device_code=device_code)
    login.method()  # exactly one way to sign in, or a usage error now
    return login


def _write(reader: Reader, api: ExchangeApi, tokens: Tokens, header: dict, output) -> ExitStatus:
    status, counts = write_directory(reader.records(), producer="zivsync-extract-exo", header=header,
                                     output=output, failure=_failure, tally=lambda: reader.tally)
    stats = api.stats
    cli.log.info("%d people, %d groups, %d permissions%s; %d requests to Exchange (%d cmdlet calls), %d throttled, "
                 "%d retried; %d token requests", counts["person"], counts["group"], counts["permission"],
                 f", {counts['error']} objects that could not be read" if counts["error"] else "",
                 stats.requests, api.calls, stats.throttled, stats.retries, tokens.requests)
    return status


def _failure(error: Exception) -> ZivsyncError | None:
    """Exit 4 for whatever kept us from reading Exchange Online (refused, unreachable, or a
    listing cmdlet failing), with Exchange's own words and the cmdlet."""
    if isinstance(error, ZivsyncError):
        return error
    if isinstance(error, ApiError):
        return ZivsyncError(f"Exchange Online: {error}", ExitStatus.UNREACHABLE)
    return None

