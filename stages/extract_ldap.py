"""zivsync-extract-ldap: people and groups from Active Directory, as a directory stream.

The logic: ``stages/sources/activedirectory.py`` (with ``ldif.py`` and ``ldapfilter.py`` beside it).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import click

from . import cli
from .cli import ExitStatus
from .sources.activedirectory import LdapFailure, LdifDirectory, LiveDirectory, Scope, Server, records
from .sources.directory_stream import write_directory

HELP = """Read people and groups from Active Directory (or an LDIF export of it) and write them
as a directory stream.

\b
Users: objectGUID as the anchor (ms-DS-ConsistencyGuid when set), UPN, SMTP addresses from
proxyAddresses (SMTP: primary, smtp: secondary), names, the disabled bit, the mailbox kind
from msExchRecipientTypeDetails (user, shared, room, equipment; hybrid remote mailboxes too),
a phone number in E.164, memberOf. Groups: security and distribution, with their addresses and
members (ranged values followed to the end). Searches are paged; nothing is collected in memory.

\b
Connects over LDAPS (ldaps://) or StartTLS (ldap://), verifying the DC's certificate against
--ca-file or the system's CAs; the next --url is tried when a DC is down. The password comes
from ZIVSYNC_LDAP_PASSWORD or --password-file, never from a flag. --verbose logs every search
as the equivalent ldapsearch command line.

\b
Examples:
  ZIVSYNC_LDAP_PASSWORD=... zivsync-extract-ldap --url ldaps://dc1.corp.example --url ldaps://dc2.corp.example \\
      --base-dn DC=corp,DC=example --bind-dn 'CORP\\svc-zivsync' --ca-file corp-ca.pem -o ldap.jsonl
  zivsync-extract-ldap --ldif export.ldf --base-dn DC=corp,DC=example | zivsync-normalize --claimed-domain corp.example
"""


def ldap_option(*decls, **kwargs):
    """An option whose environment variable says it is LDAP's (ZIVSYNC_LDAP_CA_FILE, not the
    ZIVSYNC_CA_FILE that zivsync-push reads for Zivver's certificate)."""
    name = next(d for d in decls if d.startswith("--"))[2:].replace("-", "_").upper()
    kwargs.setdefault("envvar", f"ZIVSYNC_LDAP_{name.removeprefix('LDAP_')}")
    return cli.option(*decls, **kwargs)


def _region(ctx, param, value):
    if value is None:
        return None
    import phonenumbers
    region = value.strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise click.BadParameter(f"{value!r} is not a region code such as NL, DE or GB")
    return region


@cli.stage("zivsync-extract-ldap", HELP, batch=False)  # ldap3 makes reference cycles per entry: keep the collector
@cli.output_option
@ldap_option("--url", "urls", multiple=True, metavar="URL",
             help="A domain controller: ldaps://HOST[:636] or ldap://HOST[:389] (StartTLS). Repeatable: the "
                  "next is tried when one is down.")
@ldap_option("--base-dn", required=True, metavar="DN", help="Where to read from, e.g. DC=corp,DC=example.")
@ldap_option("--bind-dn", metavar="NAME",
             help="The account to bind as: a DN, a UPN (svc@corp.example) or DOMAIN\\user.")
@ldap_option("--password-file", type=click.Path(dir_okay=False), metavar="FILE",
             help="Read the bind password from this file. Default: the environment variable "
                  "ZIVSYNC_LDAP_PASSWORD (never a flag: flags show up in process lists).")
@ldap_option("--kerberos", is_flag=True,
             help="Bind with Kerberos (SASL GSSAPI) instead of a password: on Linux with the ticket from kinit "
                  "or a keytab, on Windows as the account zivsync runs as (its logon, through SSPI). "
                  "Needs the optional Kerberos support: pip install 'zivsync[kerberos]'.")
@ldap_option("--kerberos-host", metavar="NAME",
             help="The DC's host name for its Kerberos service ticket (ldap/NAME), when the URL does not "
                  "name it (an IP address, an alias). Default: the URL's host.")
@ldap_option("--ca-file", type=click.Path(dir_okay=False, exists=True), metavar="FILE",
             help="Verify the DC's certificate against the CAs in this PEM file only. Default: the "
                  "operating system's trust store.")
@ldap_option("--tls-server-name", metavar="NAME",
             help="Also accept a DC certificate issued to this name (when the URL's host is not in the "
                  "certificate, e.g. connecting by IP address).")
@ldap_option("--no-verify-tls", is_flag=True,
             help="Do not verify the DC's certificate (logged loudly; for tests only).")
@ldap_option("--allow-plain-ldap", is_flag=True,
             help="Let an ldap:// URL bind without StartTLS: the password and the directory travel "
                  "unencrypted (logged loudly).")
@ldap_option("--timeout", type=click.FloatRange(min=1), default=15.0, show_default=True,
             help="Seconds to wait for a DC to connect or answer.")
@ldap_option("--page-size", type=click.IntRange(min=1, max=100000), default=1000, show_default=True,
             help="Entries per page of a paged search (Active Directory's MaxPageSize is 1000).")
@ldap_option("--include-ou", "include_ous", multiple=True, metavar="DN",
             help="Read people only under this OU (repeatable). Groups are read from the whole base DN.")
@ldap_option("--exclude-ou", "exclude_ous", multiple=True, metavar="DN",
             help="Leave out people and groups under this OU (repeatable).")
@ldap_option("--include-group", "include_groups", multiple=True, metavar="DN",
             help="Read only people who are members of this group, nested membership included (repeatable).")
@ldap_option("--exclude-group", "exclude_groups", multiple=True, metavar="DN",
             help="Leave out people who are members of this group, nested membership included (repeatable).")
@ldap_option("--filter", "people_filter", metavar="FILTER",
             help="An extra LDAP filter people must match, e.g. '(department=Sales)'.")
@ldap_option("--group-filter", metavar="FILTER", help="An extra LDAP filter groups must match.")
@ldap_option("--extra-attribute", "extra_attributes", multiple=True, metavar="NAME",
             help="Copy this attribute into each record's 'extra' (repeatable).")
@ldap_option("--sso-key-attribute", default="objectGUID", show_default=True, metavar="NAME",
             help="Where Zivver's SSO account key comes from: objectGUID, userPrincipalName, objectSid, mail "
                  "or any attribute (e.g. extensionAttribute1).")
@ldap_option("--phone-attribute", "phone_attributes", multiple=True, default=("mobile", "telephoneNumber"),
             show_default=True, metavar="NAME", help="Attributes to take the phone number from, first valid one wins.")
@ldap_option("--default-region", callback=_region, metavar="CC",
             help="The country of phone numbers written without +country code (NL, DE, GB, ...).")
@ldap_option("--source", default="ldap", show_default=True, metavar="NAME",
             help="The source name in the records (to tell several forests apart).")
@ldap_option("--ldif", type=click.Path(dir_okay=False, exists=True), metavar="FILE",
             help="Read an LDIF export (ldifde -f, or ldapsearch) instead of a domain controller.")
@cli.revocation_options
def command(output, urls, base_dn, bind_dn, password_file, kerberos, kerberos_host, ca_file, tls_server_name,
            no_verify_tls, allow_plain_ldap, timeout, page_size, include_ous, exclude_ous, include_groups, exclude_groups,
            people_filter, group_filter, extra_attributes, sso_key_attribute, phone_attributes, default_region,
            source, ldif, **revocation):
    scope = Scope(base_dn=base_dn, include_ous=include_ous, exclude_ous=exclude_ous,
                  include_groups=include_groups, exclude_groups=exclude_groups, filter=people_filter,
                  group_filter=group_filter, extra_attributes=extra_attributes, sso_key_attribute=sso_key_attribute,
                  phone_attributes=phone_attributes, default_region=default_region, source=source)
    if ldif:
        directory = LdifDirectory(ldif, scope)
        origin = {"ldif": str(ldif), "sha256": _sha256(Path(ldif))}
    else:
        if allow_plain_ldap:
            cli.log.warning("--allow-plain-ldap: ldap:// URLs bind without StartTLS, so the password and the "
                            "directory travel unencrypted")
        password = None if kerberos else cli.read_secret(password_file, "ZIVSYNC_LDAP_PASSWORD", "LDAP password",
                                                         "--password-file")
        server = Server(urls=urls, bind_dn=bind_dn, password=password, kerberos=kerberos, kerberos_host=kerberos_host,
                        ca_file=ca_file,
                        tls_server_name=tls_server_name, allow_plain=allow_plain_ldap, verify_tls=not no_verify_tls,
                        timeout=timeout, revocation={**revocation, "timeout": timeout})
        directory = LiveDirectory(server, scope, page_size).connect()
        origin = {"url": directory.url, "bind_dn": bind_dn, "page_size": page_size}
    header = {"source": {**origin, "base_dn": base_dn, "name": source, **_scope_description(scope)},
              "authority": scope.authority()}
    try:
        return _write(directory, scope, header, output)
    finally:
        if isinstance(directory, LiveDirectory):
            directory.close()


def _write(directory, scope: Scope, header: dict, output) -> ExitStatus:
    notes: Counter = Counter()
    status, counts = write_directory(records(directory, scope, notes), producer="zivsync-extract-ldap",
                                     header=header, output=output,
                                     failure=lambda error: error if isinstance(error, LdapFailure) else None,
                                     tally=lambda: Counter({f"left out: {note}": n for note, n in notes.items()}))
    for note, number in sorted(notes.items()):
        cli.log.warning("%d× %s", number, note)
    cli.log.info("%d people, %d groups%s", counts["person"], counts["group"],
                 f", {counts['error']} objects that could not be read" if counts["error"] else "")
    return status


def _scope_description(scope: Scope) -> dict:
    described = {"people_filter": scope.person_filter(), "group_filter": scope.group_search_filter()}
    for name in ("include_ous", "exclude_ous", "include_groups", "exclude_groups", "extra_attributes"):
        if getattr(scope, name):
            described[name] = list(getattr(scope, name))
    described["sso_key_attribute"] = scope.sso_key_attribute
    return described


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

