"""Active Directory as directory records: the logic behind zivsync-extract-ldap.

Two readers give the same *entries* (a DN and its raw attribute values, keys lower-cased):
:class:`LiveDirectory` pages through a domain controller over LDAPS or StartTLS with ldap3,
:class:`LdifDirectory` reads an export made with ``ldifde`` or ``ldapsearch``. One set of pure
functions (:func:`person_record`, :func:`group_record`) turns entries into records, so a live
read and an export of the same directory give the same stream, and both apply the same scope:
OUs to include and exclude, groups whose (nested) members to include or exclude, an extra
LDAP filter.

Nothing here keeps people in memory: entries are turned into records and written as they come,
a page (``--page-size``) at a time. Group members are written as the DNs Active Directory gives;
zivsync-normalize resolves them (a DN-to-anchor map here would grow with the directory).
"""

from __future__ import annotations

import logging
import re
import shlex
import ssl
import sys
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator
from urllib.parse import urlsplit

from ..core.dn import canonical as _canonical
from ..core.dn import under as _under
from ..core.errors import ServerUnreachable, ZivsyncError, speaks_no_tls
from ..core.tls import check_revocation_of, verification_failed

log = logging.getLogger("zivsync")

Attributes = dict[str, list[bytes]]  # lower-cased attribute name -> raw values
Entry = tuple[str, Attributes]

IN_CHAIN = "1.2.840.113556.1.4.1941"  # LDAP_MATCHING_RULE_IN_CHAIN: nested membership
PAGED_RESULTS = "1.2.840.113556.1.4.319"
ACCOUNT_DISABLED = 0x2  # userAccountControl ACCOUNTDISABLE
SECURITY_GROUP = 0x80000000  # groupType: a security (not distribution) group

# msExchRecipientTypeDetails -> the record's mailbox kind (exchange.md §2.3; hybrid "Remote"
# kinds are the on-premise side of Exchange Online mailboxes and count the same)
MAILBOX_KINDS = {
    1: "user", 2: "user", 2147483648: "user",  # UserMailbox, LinkedMailbox, RemoteUserMailbox
    4: "shared", 34359738368: "shared",  # SharedMailbox, RemoteSharedMailbox
    16: "room", 8589934592: "room",  # RoomMailbox, RemoteRoomMailbox
    32: "equipment", 17179869184: "equipment",  # EquipmentMailbox, RemoteEquipmentMailbox
}

PERSON_ATTRIBUTES = ("objectClass", "objectGUID", "mS-DS-ConsistencyGuid", "objectSid", "sAMAccountName",
                     "userPrincipalName", "mail", "proxyAddresses", "displayName", "givenName", "sn",
                     "userAccountControl", "msExchRecipientTypeDetails", "memberOf")
GROUP_ATTRIBUTES = ("objectClass", "objectGUID", "objectSid", "sAMAccountName", "cn", "displayName", "mail",
                    "proxyAddresses", "groupType", "member")
PERSON_FILTER = "(&(objectCategory=person)(objectClass=user))"
GROUP_FILTER = "(objectClass=group)"
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")  # the schemas' test for an address


# -- settings ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """What to read and how to describe it (the same for a live read and an LDIF file)."""

    base_dn: str
    include_ous: tuple[str, ...] = ()  # people only under these (groups are read from the base DN)
    exclude_ous: tuple[str, ...] = ()  # nobody and no group under these
    include_groups: tuple[str, ...] = ()  # people who are (nested) members of one of these
    exclude_groups: tuple[str, ...] = ()  # ... and of none of these
    filter: str | None = None  # an extra LDAP filter for people
    group_filter: str | None = None  # an extra LDAP filter for groups
    extra_attributes: tuple[str, ...] = ()
    sso_key_attribute: str = "objectGUID"
    phone_attributes: tuple[str, ...] = ("mobile", "telephoneNumber")
    default_region: str | None = None
    source: str = "ldap"

    def authority(self) -> dict:
        """What a stream read with this scope speaks for (the header's ``authority``): people of
        every mailbox kind and groups; no Full Access (that lives in Exchange); phone numbers
        and SSO keys as configured; and the scope itself."""
        scope = {"base_dn": self.base_dn}
        for name in ("include_ous", "exclude_ous", "include_groups", "exclude_groups"):
            if getattr(self, name):
                scope[name] = list(getattr(self, name))
        if self.filter:
            scope["filter"] = self.filter
        return {"source": self.source, "people": True, "mailbox_kinds": ["user", "shared", "room", "equipment"],
                "groups": True, "full_access": [], "phone": bool(self.phone_attributes),
                "sso_key": bool(self.sso_key_attribute), "scope": scope}

    def person_attributes(self) -> list[str]:
        return _unique([*PERSON_ATTRIBUTES, *self.phone_attributes, self.sso_key_attribute, *self.extra_attributes])

    def group_attributes(self) -> list[str]:
        return _unique([*GROUP_ATTRIBUTES, *self.extra_attributes])

    def outside(self, dn: str, person: bool) -> bool:
        """Whether the OU lists leave this object out."""
        if any(_under(dn, ou) for ou in self.exclude_ous):
            return True
        return person and bool(self.include_ous) and not any(_under(dn, ou) for ou in self.include_ous)

    def person_filter(self) -> str:
        from ldap3.utils.conv import escape_filter_chars
        parts = [PERSON_FILTER]
        if self.include_groups:
            chain = "".join(f"(memberOf:{IN_CHAIN}:={escape_filter_chars(g)})" for g in self.include_groups)
            parts.append(f"(|{chain})" if len(self.include_groups) > 1 else chain)
        parts += [f"(!(memberOf:{IN_CHAIN}:={escape_filter_chars(g)}))" for g in self.exclude_groups]
        if self.filter:
            parts.append(_parenthesized(self.filter))
        return parts[0] if len(parts) == 1 else "(&" + "".join(parts) + ")"

    def group_search_filter(self) -> str:
        return f"(&{GROUP_FILTER}{_parenthesized(self.group_filter)})" if self.group_filter else GROUP_FILTER

    def search_bases(self) -> list[str]:
        """Where to search for people: the included OUs (each once, none inside another), or the
        base DN."""
        bases = list({_canonical(b): b for b in self.include_ous}.values()) or [self.base_dn]
        return [b for b in bases if not any(o != b and _under(b, o) for o in bases)]


def _unique(names: Iterable[str]) -> list[str]:
    seen: dict[str, str] = {}
    for name in names:
        seen.setdefault(name.lower(), name)
    return list(seen.values())


def _parenthesized(text: str) -> str:
    text = text.strip()
    return text if text.startswith("(") else f"({text})"


# -- entries to records (pure) ------------------------------------------------------------


def guid_text(raw: bytes) -> str:
    """objectGUID (and ms-DS-ConsistencyGuid) as Active Directory shows it: mixed-endian."""
    return str(uuid.UUID(bytes_le=bytes(raw)))


def sid_text(raw: bytes) -> str:
    """objectSid's binary form (MS-DTYP 2.4.2.2) as S-1-5-21-..."""
    raw = bytes(raw)
    if len(raw) < 8 or len(raw) != 8 + 4 * raw[1]:
        raise ValueError(f"not a SID: {len(raw)} bytes")
    authority = int.from_bytes(raw[2:8], "big")
    subs = (int.from_bytes(raw[8 + 4 * i: 12 + 4 * i], "little") for i in range(raw[1]))
    return f"S-{raw[0]}-{authority}" + "".join(f"-{s}" for s in subs)


def _text(attributes: Attributes, name: str) -> str | None:
    values = attributes.get(name.lower())
    if not values:
        return None
    value = values[0].decode("utf-8").strip()
    return value or None


def _int(attributes: Attributes, name: str) -> int | None:
    text = _text(attributes, name)
    return int(text) if text is not None else None


def _anchor(attributes: Attributes) -> str:
    consistency = attributes.get("ms-ds-consistencyguid")
    if consistency and len(consistency[0]) == 16:
        return guid_text(consistency[0])
    guid = attributes.get("objectguid")
    if not guid or len(guid[0]) != 16:
        raise ValueError("no objectGUID (an export must include it)")
    return guid_text(guid[0])


def mail_addresses(attributes: Attributes, notes: Counter) -> tuple[str | None, list[str]]:
    """(primary address, every SMTP address with the primary first), lower-cased.

    proxyAddresses is the truth (``SMTP:`` primary, ``smtp:`` secondary; X500, SIP and other
    kinds are not mail); ``mail`` stands in when there is no SMTP: entry. Addresses that are
    not addresses are left out and counted."""
    primary, secondary = None, []
    for raw in attributes.get("proxyaddresses", ()):
        kind, _, address = raw.decode("utf-8").strip().partition(":")
        if kind == "SMTP" and primary is None:
            primary = address
        elif kind.lower() == "smtp":
            secondary.append(address)
    primary = _address(primary or _text(attributes, "mail"), notes)
    addresses = [primary] if primary else []
    for address in secondary:
        address = _address(address, notes)
        if address and address not in addresses:
            addresses.append(address)
    return primary, addresses


def _address(text: str | None, notes: Counter) -> str | None:
    if not text:
        return None
    address = text.strip().lower()
    if EMAIL.match(address) and len(address) <= 320:
        return address
    notes["malformed e-mail address left out"] += 1
    return None


def phone_number(attributes: Attributes, scope: Scope, notes: Counter) -> str | None:
    """The first of the phone attributes that is a valid number, as E.164."""
    import phonenumbers
    for name in scope.phone_attributes:
        text = _text(attributes, name)
        if not text:
            continue
        try:
            number = phonenumbers.parse(text, scope.default_region)
        except phonenumbers.NumberParseException:
            number = None
        if number is not None and phonenumbers.is_valid_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        notes[f"{name} is not a valid phone number" + ("" if scope.default_region else
                                                       " (no --default-region for local numbers)")] += 1
    return None


def attribute_value(name: str, values: list[bytes]) -> str | list[str] | None:
    """An attribute as a record shows it: GUIDs and SIDs in their text form, text as text,
    other binary values as hex; several values as a list."""
    def one(raw: bytes) -> str:
        lowered = name.lower()
        if lowered.endswith("guid") and len(raw) == 16:
            return guid_text(raw)
        if lowered == "objectsid":
            return sid_text(raw)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.hex()
    if not values:
        return None
    return one(values[0]) if len(values) == 1 else [one(v) for v in values]


def _extra(attributes: Attributes, scope: Scope) -> dict:
    return {name: attribute_value(name, attributes.get(name.lower(), [])) for name in scope.extra_attributes}


def _sso_key(attributes: Attributes, scope: Scope) -> str | None:
    value = attribute_value(scope.sso_key_attribute, attributes.get(scope.sso_key_attribute.lower(), []))
    return value[0] if isinstance(value, list) else value


def mailbox_kind(attributes: Attributes) -> str:
    return MAILBOX_KINDS.get(_int(attributes, "msExchRecipientTypeDetails") or 0, "none")


def person_record(entry: Entry, scope: Scope, notes: Counter) -> dict:
    """A user object as a directory ``person`` record."""
    dn, attributes = entry
    primary, addresses = mail_addresses(attributes, notes)
    control = _int(attributes, "userAccountControl")
    sid = attributes.get("objectsid")
    record = {
        "type": "person", "source": scope.source, "anchor": _anchor(attributes), "dn": dn,
        "upn": _text(attributes, "userPrincipalName"), "sam_account_name": _text(attributes, "sAMAccountName"),
        "sid": sid_text(sid[0]) if sid else None, "mail": primary, "addresses": addresses,
        "display_name": _text(attributes, "displayName"), "given_name": _text(attributes, "givenName"),
        "surname": _text(attributes, "sn"),
        "enabled": None if control is None else not control & ACCOUNT_DISABLED,
        "mailbox": mailbox_kind(attributes), "phone": phone_number(attributes, scope, notes),
        "groups": [v.decode("utf-8") for v in attributes.get("memberof", ())],
        "sso_key": _sso_key(attributes, scope),
    }
    if scope.extra_attributes:
        record["extra"] = _extra(attributes, scope)
    return record


def group_record(entry: Entry, scope: Scope, notes: Counter) -> dict:
    """A group object as a directory ``group`` record; members are DNs."""
    dn, attributes = entry
    primary, addresses = mail_addresses(attributes, notes)
    group_type = _int(attributes, "groupType") or 0
    sid = attributes.get("objectsid")
    record = {
        "type": "group", "source": scope.source, "id": _anchor(attributes),
        "name": _text(attributes, "displayName") or _text(attributes, "cn") or _text(attributes, "sAMAccountName")
        or dn.partition(",")[0].partition("=")[2],
        "dn": dn, "sid": sid_text(sid[0]) if sid else None, "sam_account_name": _text(attributes, "sAMAccountName"),
        "mail": primary, "addresses": addresses,
        "mail_enabled": primary is not None, "security_enabled": bool(group_type & SECURITY_GROUP),
        "members": [v.decode("utf-8") for v in attributes.get("member", ())],
    }
    if scope.extra_attributes:
        record["extra"] = _extra(attributes, scope)
    return record


def records(directory: "LiveDirectory | LdifDirectory", scope: Scope, notes: Counter) -> Iterator[dict]:
    """People, then groups, as records; an object that can't be read becomes an ``error``
    record (which makes the desired accounts incomplete, so nobody is suspended on its account)."""
    for kind, entries, convert in (("person", directory.people(), person_record),
                                   ("group", directory.groups(), group_record)):
        for entry in entries:
            try:
                yield convert(entry, scope, notes)
            except (ValueError, UnicodeDecodeError) as error:
                notes[f"{kind} that could not be read"] += 1
                yield {"type": "error", "source": scope.source, "object": entry[0], "operation": f"read {kind}",
                       "message": str(error)}


# -- a live directory ---------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    """How to reach and bind to the domain controllers."""

    urls: tuple[str, ...]
    bind_dn: str | None = None
    password: str | None = field(default=None, repr=False)
    kerberos: bool = False
    kerberos_host: str | None = None  # the DC's name for its service ticket (ldap/NAME), default the URL's host
    ca_file: str | None = None
    tls_server_name: str | None = None
    allow_plain: bool = False  # plain ldap:// without StartTLS: the password in clear text
    verify_tls: bool = True
    timeout: float = 15.0
    revocation: dict = field(default_factory=dict)  # --check-revocation and its options (core/tls.py)


# How every ldap3 connection is made. Ranged values are followed by _complete_ranges, not
# ldap3's auto_range (whose follow-up searches aren't logged as ldapsearch lines); and
# return_empty_attributes stays off: with it on and auto_range off, ldap3 2.9.1 fails with KeyError on
# the answer to a follow-up range request (it deletes the plain 'member' it never added).
CONNECTION_OPTIONS = dict(raise_exceptions=True, read_only=True, auto_referrals=False, auto_range=False,
                          check_names=False, return_empty_attributes=False)


def kerberos_ticket_hint() -> str:
    """Where a Kerberos ticket comes from, as this system gets it: on Windows the logon of the
    account running zivsync, through SSPI (a task's "Run as" account; no kinit there)."""
    if sys.platform == "win32":
        return ("the ticket is that of the account zivsync runs as (Windows logon, SSPI): is it a domain account, "
                "and does the task run as it with 'Run whether user is logged on or not'?")
    return "is there a ticket from kinit or a keytab (KRB5_CLIENT_KTNAME)?"


class LdapFailure(ServerUnreachable):
    """Could not reach, trust or bind to a domain controller: exit 4."""


def _endpoint(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url if "://" in url else f"ldaps://{url}")
    if parts.scheme not in ("ldap", "ldaps") or not parts.hostname:
        raise ZivsyncError(f"--url {url!r}: give ldaps://HOST[:PORT] or ldap://HOST[:PORT]")
    return parts.scheme, parts.hostname, parts.port or (636 if parts.scheme == "ldaps" else 389)


def _tls_failure(error: BaseException) -> bool:
    """Whether a connection failed on the certificate. ldap3 wraps ssl's errors into its own
    with the text only, so the text is what there is to go by."""
    text = f"{error} {error.__cause__ or ''} {error.__context__ or ''}".lower()
    return "certificate" in text or "hostname" in text or ("ssl" in text and "verify" in text)


class LiveDirectory:
    """Entries paged from a domain controller."""

    def __init__(self, server: Server, scope: Scope, page_size: int = 1000):
        self.server, self.scope, self.page_size = server, scope, page_size
        self.url: str | None = None
        self.connection = None

    # connecting

    def connect(self) -> "LiveDirectory":
        """Bind to the first domain controller that answers; the next URL only when one is down
        (not when TLS or the password fails: other DCs would say the same, and every wrong
        password counts towards the account's lockout)."""
        if not self.server.urls:
            raise ZivsyncError("no domain controller: give --url ldaps://dc.example.com")
        down = []
        for url in self.server.urls:
            try:
                self.connection = self._bind(url)
            except _Down as error:
                log.warning("%s is not reachable (%s)%s", url, error, "; trying the next one"
                            if url != self.server.urls[-1] else "")
                down.append(f"{url} ({error})")
                continue
            self.url = url
            log.info("bound to %s as %s", url, self.server.bind_dn or "the Kerberos ticket's principal")
            self._check_bases()
            return self
        raise LdapFailure("no domain controller reachable: " + "; ".join(down))

    def _bind(self, url: str):
        import ldap3
        from ldap3.core import exceptions as ldap_errors

        scheme, host, port = _endpoint(url)
        server = ldap3.Server(host, port=port, use_ssl=scheme == "ldaps", tls=self._tls(),
                              get_info=ldap3.NONE, connect_timeout=self.server.timeout)
        options = dict(CONNECTION_OPTIONS, auto_bind=ldap3.AUTO_BIND_NONE, receive_timeout=int(self.server.timeout))
        if self.server.kerberos:
            if not _kerberos_available():
                raise ZivsyncError("Kerberos needs an optional package: pip install gssapi (Linux, macOS; it "
                                   "builds against the system's Kerberos libraries) or winkerberos (Windows)")
            connection = ldap3.Connection(server, authentication=ldap3.SASL, sasl_mechanism=ldap3.KERBEROS,
                                          sasl_credentials=(self.server.kerberos_host or host,), **options)
        else:
            if not self.server.bind_dn:
                raise ZivsyncError("no --bind-dn: give the account to bind as (DN, UPN or DOMAIN\\user), "
                                   "or use --kerberos")
            if not self.server.password:
                raise ZivsyncError("no LDAP password: set ZIVSYNC_LDAP_PASSWORD or name a file with --password-file")
            connection = ldap3.Connection(server, user=self.server.bind_dn, password=self.server.password,
                                          authentication=ldap3.SIMPLE, **options)
        _decode_raw_entries_only(connection.strategy)
        try:
            connection.open()
            if scheme == "ldap" and not self.server.allow_plain:
                connection.start_tls()
            if (scheme == "ldaps" or not self.server.allow_plain) and self.server.verify_tls:
                # the certificate of this very connection (LDAPS, or after StartTLS), before the password goes
                check_revocation_of("the domain controller", connection.socket, self.server.ca_file,
                                    self.server.revocation)
            connection.bind()
        except ldap_errors.LDAPInvalidCredentialsResult:
            raise LdapFailure(f"{url}: invalid credentials for {self.server.bind_dn} (the password comes from "
                              "ZIVSYNC_LDAP_PASSWORD or --password-file)") from None
        except ldap_errors.LDAPStrongerAuthRequiredResult:
            raise LdapFailure(f"{url}: the server requires an encrypted connection: use ldaps:// or StartTLS "
                              "(leave out --allow-plain-ldap)") from None
        except (ldap_errors.LDAPSocketOpenError, ldap_errors.LDAPStartTLSError,
                ldap_errors.LDAPSocketReceiveError, ldap_errors.LDAPSocketSendError, OSError) as error:
            if speaks_no_tls(error):
                raise LdapFailure(f"{url}: the server at {host}:{port} does not speak TLS (it answered in plain "
                                  "text): ldaps:// needs the DC's LDAPS port (636); port 389 is ldap://, which "
                                  "zivsync secures with StartTLS") from None
            if _tls_failure(error):
                failed = verification_failed(_reason(error), host, port if scheme == "ldaps" else None,
                                             self.server.ca_file)
                hint = "give the CA that signed the DC's certificate with --ca-file"
                raise LdapFailure(f"{url}: {failed}: {hint}") from None
            raise _Down(_reason(error)) from None
        except (KeyError, IndexError, TypeError, ValueError) as error:  # ldap3's decoder on an answer not LDAP's
            raise LdapFailure(f"{url}: the server at {host}:{port} does not speak LDAP (its answer is no LDAP "
                              f"message: {type(error).__name__}); is it the domain controller's LDAP port "
                              "(389, or 636 for ldaps://)?") from None
        except Exception as error:  # noqa: BLE001  (ldap3's LDAPException, or gssapi's GSSError)
            kerberos = _kerberos_failure(error) if self.server.kerberos else None
            if kerberos:
                raise LdapFailure(f"{url}: Kerberos authentication failed: {kerberos} ({kerberos_ticket_hint()}, "
                                  f"and is ldap/{self.server.kerberos_host or host} the DC's service principal? "
                                  "see --kerberos-host)") from None
            if not isinstance(error, ldap_errors.LDAPException):
                raise
            raise LdapFailure(f"{url}: bind failed: {_reason(error)}") from None
        return connection

    def _tls(self):
        import ldap3
        if not self.server.verify_tls:
            log.warning("TLS certificates are NOT verified (--no-verify-tls): anyone in between can read the "
                        "password and the directory")
        return ldap3.Tls(validate=ssl.CERT_REQUIRED if self.server.verify_tls else ssl.CERT_NONE,
                         ca_certs_file=self.server.ca_file, version=ssl.PROTOCOL_TLS_CLIENT,
                         valid_names=[self.server.tls_server_name] if self.server.tls_server_name else None)

    def _check_bases(self) -> None:
        """Every base the read starts from exists: a typo must fail, not read nothing."""
        for base in [self.scope.base_dn, *self.scope.include_ous]:
            if not self._exists(base, "(objectClass=*)"):
                raise LdapFailure(f"{self.url}: base DN not found: {base}")
        for group in [*self.scope.include_groups, *self.scope.exclude_groups]:
            if not self._exists(group, "(objectClass=group)"):
                raise ZivsyncError(f"no such group: {group} (a typo, or was it renamed or moved?)")

    def _exists(self, dn: str, search_filter: str) -> bool:
        import ldap3
        from ldap3.core import exceptions as ldap_errors
        try:
            self.connection.search(dn, search_filter, ldap3.BASE, attributes=["objectClass"])
        except ldap_errors.LDAPNoSuchObjectResult:
            return False
        except ldap_errors.LDAPException as error:
            raise LdapFailure(f"{self.url}: cannot read {dn}: {_reason(error)}") from None
        found = any(item.get("type") == "searchResEntry" for item in self.connection.response or ())
        return found and (self.connection.result or {}).get("result", 0) == 0

    def close(self) -> None:
        if self.connection is not None:
            try:
                self.connection.unbind()
            except Exception as error:  # noqa: BLE001 (a dead connection must not hide the run's result)
                log.debug("unbind: %s", error)
            self.connection = None

    # reading

    def people(self) -> Iterator[Entry]:
        for base in self.scope.search_bases():
            for entry in self._search(base, self.scope.person_filter(), self.scope.person_attributes()):
                if not self.scope.outside(entry[0], person=True):
                    yield entry

    def groups(self) -> Iterator[Entry]:
        for entry in self._search(self.scope.base_dn, self.scope.group_search_filter(), self.scope.group_attributes()):
            if not self.scope.outside(entry[0], person=False):
                yield entry

    def _search(self, base: str, search_filter: str, attributes: list[str]) -> Iterator[Entry]:
        """A paged subtree search; each page is taken off the connection before its entries are
        handed on, so following a ranged attribute in between does not disturb the paging."""
        import ldap3
        log.debug("%s", self.ldapsearch_command(base, search_filter, attributes, paged=True))
        cookie, page = None, 0
        while True:
            response = self._call(base, search_filter, ldap3.SUBTREE, attributes, paged_size=self.page_size,
                                  paged_cookie=cookie)
            page += 1
            log.debug("page %d: %d entries", page, len(response))
            controls = (self.connection.result or {}).get("controls") or {}
            cookie = controls.get(PAGED_RESULTS, {}).get("value", {}).get("cookie")
            for dn, raw in response:
                yield dn, self._complete_ranges(dn, raw)
            response = dn = raw = None  # let this page go before the next arrives: one page in memory
            if not cookie:
                return

    def _call(self, base, search_filter, scope, attributes, **paging) -> list[tuple[str, Attributes]]:
        from ldap3.core import exceptions as ldap_errors
        try:
            self.connection.search(base, search_filter, scope, attributes=attributes, **paging)
        except ldap_errors.LDAPInvalidFilterError as error:
            raise ZivsyncError(f"invalid LDAP filter {search_filter}: {error}") from None
        except ldap_errors.LDAPNoSuchObjectResult:
            raise LdapFailure(f"{self.url}: base DN not found: {base}") from None
        except ldap_errors.LDAPException as error:
            raise LdapFailure(f"{self.url}: search under {base} failed: {_reason(error)}") from None
        result = self.connection.result or {}
        if result.get("result", 0) != 0:
            # ldap3 does not raise for these (sizeLimitExceeded, timeLimitExceeded, referral...), and a
            # page cut short has no cookie: it would look like the end of the directory
            raise LdapFailure(f"{self.url}: search under {base} ended with {result.get('description')} "
                              f"({result.get('result')}): {result.get('message') or 'no message'}")
        entries = [(item["dn"], {k.lower(): list(v) for k, v in item["raw_attributes"].items()})
                   for item in self.connection.response or () if item.get("type") == "searchResEntry"]
        self.connection.response = None  # ldap3's copy (decoded twice over) is not needed any more
        return entries

    def _complete_ranges(self, dn: str, attributes: Attributes) -> Attributes:
        """Follow ranged values (``member;range=0-1499``: Active Directory gives at most 1,500
        values of an attribute at a time) to the end (``;range=N-*``)."""
        import ldap3
        for key in [k for k in attributes if ";range=" in k]:
            name, _, span = key.partition(";range=")
            values = attributes.pop(key)
            last = span.partition("-")[2]
            while last != "*":
                wanted = f"{name};range={int(last) + 1}-*"
                log.debug("%s", self.ldapsearch_command(dn, "(objectClass=*)", [wanted], paged=False, base_scope=True))
                found = self._call(dn, "(objectClass=*)", ldap3.BASE, [wanted])
                more = next((k for k in (found[0][1] if found else {}) if k.startswith(name + ";range=")), None)
                if more is None or more.partition(";range=")[2].partition("-")[0] != str(int(last) + 1):
                    raise LdapFailure(f"{self.url}: {dn}: the server stopped giving {name} after {len(values)} values")
                values += found[0][1][more]
                last = more.partition(";range=")[2].partition("-")[2]
            attributes[name] = attributes.get(name, []) + values
        return attributes

    def ldapsearch_command(self, base: str, search_filter: str, attributes: list[str], *, paged: bool,
                           base_scope: bool = False) -> str:
        """The OpenLDAP ``ldapsearch`` command line that asks the same (the password prompted
        for with -W, never shown), so an administrator can see what the tool saw."""
        return ldapsearch_command(self.url or self.server.urls[0], self.server, base, search_filter, attributes,
                                  page_size=self.page_size if paged else None, base_scope=base_scope)


def _kerberos_available() -> bool:
    """ldap3 binds with Kerberos through gssapi (POSIX) or winkerberos (Windows)."""
    import importlib.util
    return any(importlib.util.find_spec(name) for name in ("gssapi", "winkerberos"))


def _kerberos_failure(error: BaseException) -> str | None:
    """What the Kerberos library said, when it is behind this error: ldap3 aborts the bind on
    a GSSAPI failure and the abort's LDAP error hides the cause, which is in the chain."""
    while error is not None:
        if type(error).__module__.startswith(("gssapi", "winkerberos")) or "GSSError" in type(error).__name__:
            return " ".join(str(error).split())[:400]
        error = error.__context__ or error.__cause__
    return None


def _decode_raw_entries_only(strategy) -> None:
    """ldap3 turns every entry into a dict twice, raw bytes and decoded text, through a
    config lookup per value; we use only the raw bytes. Decoding just those halves the CPU
    time of a large read (this instance's method only; ldap3 does the rest as before)."""
    from ldap3.utils.conv import to_unicode
    decode = strategy.decode_response_fast

    def raw_only(message):
        if message["protocolOp"] != 4:  # not a searchResEntry
            return decode(message)
        name, attributes = message["payload"][0][3], message["payload"][1][3]
        return {"type": "searchResEntry", "raw_dn": name, "dn": to_unicode(name, from_server=True), "attributes": {},
                "raw_attributes": {a[3][0][3].decode("utf-8"): [bytes(v[3]) for v in a[3][1][3]] for a in attributes}}

    strategy.decode_response_fast = raw_only


class _Down(Exception):
    """This domain controller did not answer; the next one may."""


def _reason(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text.replace("\n", " ")[:300]


def ldapsearch_command(url: str, server: Server, base: str, search_filter: str, attributes: list[str], *,
                       page_size: int | None, base_scope: bool = False) -> str:
    scheme, host, port = _endpoint(url)
    words = []
    if server.ca_file:
        words.append(f"LDAPTLS_CACERT={shlex.quote(str(server.ca_file))}")
    if not server.verify_tls:
        words.append("LDAPTLS_REQCERT=never")
    words += ["ldapsearch", "-H", f"{scheme}://{host}:{port}"]
    if scheme == "ldap" and not server.allow_plain:
        words.append("-ZZ")
    words += ["-Y", "GSSAPI"] if server.kerberos else ["-x", "-D", shlex.quote(server.bind_dn or ""), "-W"]
    words += ["-b", shlex.quote(base), "-s", "base" if base_scope else "sub"]
    if page_size:
        words += ["-E", f"pr={page_size}/noprompt"]
    words.append(shlex.quote(search_filter))
    words += [shlex.quote(a) for a in attributes]
    return " ".join(words)


# -- an LDIF export -----------------------------------------------------------------------


class LdifDirectory:
    """Entries from an LDIF export, with the scope a live search would apply applied here."""

    def __init__(self, path: str | Path, scope: Scope):
        from . import ldapfilter
        self.path, self.scope = Path(path), scope
        try:
            self._people_filter = ldapfilter.compile_filter(scope.filter) if scope.filter else None
            self._group_filter = ldapfilter.compile_filter(scope.group_filter) if scope.group_filter else None
        except ldapfilter.FilterError as error:
            raise ZivsyncError(f"invalid LDAP filter: {error}") from None
        self._nested: dict[str, set[str]] | None = None

    def _entries(self) -> Iterator[Entry]:
        from .ldif import LdifError, read_entries
        try:
            for dn, attributes in read_entries(self.path):
                try:
                    yield dn, _merge_ranges(dn, attributes)
                except ValueError as error:
                    raise ZivsyncError(f"{self.path}: {error}") from None
        except LdifError as error:
            raise ZivsyncError(str(error)) from None
        except OSError as error:
            raise ZivsyncError(f"cannot read {self.path}: {error.strerror}") from None

    def _members_graph(self) -> dict[str, set[str]]:
        """Each group's direct members (lower-cased DNs), read in a first pass for nested
        membership (what LDAP_MATCHING_RULE_IN_CHAIN asks a live DC)."""
        if self._nested is None:
            self._nested = {_canonical(dn): {_canonical(m.decode("utf-8")) for m in attributes.get("member", ())}
                            for dn, attributes in self._entries() if _is_group(attributes)}
            for group in (*self.scope.include_groups, *self.scope.exclude_groups):
                if _canonical(group) not in self._nested:
                    raise ZivsyncError(f"no such group in {self.path}: {group} (a typo, or was it renamed or moved?)")
        return self._nested

    def in_chain(self, dn: str, group: str) -> bool:
        """Whether ``dn`` is a member of ``group``, directly or through nested groups."""
        graph, target = self._members_graph(), _canonical(dn)
        seen, pending = {_canonical(group)}, [_canonical(group)]
        while pending:
            for member in graph.get(pending.pop(), ()):
                if member == target:
                    return True
                if member in graph and member not in seen:
                    seen.add(member)
                    pending.append(member)
        return False

    def _keeps_person(self, dn: str, attributes: Attributes) -> bool:
        scope = self.scope
        if not _under(dn, scope.base_dn) or scope.outside(dn, person=True):
            return False
        if scope.include_groups and not any(self.in_chain(dn, g) for g in scope.include_groups):
            return False
        if any(self.in_chain(dn, g) for g in scope.exclude_groups):
            return False
        return self._people_filter is None or self._people_filter.matches(
            attributes, lambda name, group: name == "memberof" and self.in_chain(dn, group))

    def people(self) -> Iterator[Entry]:
        if self.scope.include_groups or self.scope.exclude_groups or (
                self._people_filter and self._people_filter.needs_in_chain):
            self._members_graph()
        for dn, attributes in self._entries():
            if _is_person(attributes) and self._keeps_person(dn, attributes):
                yield dn, attributes

    def groups(self) -> Iterator[Entry]:
        for dn, attributes in self._entries():
            if not _is_group(attributes) or not _under(dn, self.scope.base_dn):
                continue
            if self.scope.outside(dn, person=False):
                continue
            if self._group_filter is None or self._group_filter.matches(
                    attributes, lambda name, group, dn=dn: name == "memberof" and self.in_chain(dn, group)):
                yield dn, attributes


def _classes(attributes: Attributes) -> set[str]:
    return {v.decode("utf-8", "replace").lower() for v in attributes.get("objectclass", ())}


def _is_person(attributes: Attributes) -> bool:
    classes = _classes(attributes)
    return "user" in classes and "computer" not in classes


def _is_group(attributes: Attributes) -> bool:
    return "group" in _classes(attributes)


def _merge_ranges(dn: str, attributes: Attributes) -> Attributes:
    """An export may hold ``member;range=0-1499`` and more ranges: one attribute again, but
    only when the ranges run from 0 to the end (``-*``). OpenLDAP's ldapsearch does not follow
    ranges: its export of a group over Active Directory's 1,500 values stops at the first."""
    ranged = sorted((k for k in attributes if ";range=" in k), key=lambda k: int(k.partition("=")[2].partition("-")[0]))
    expected: dict[str, int] = {}
    for key in ranged:
        name, _, span = key.partition(";range=")
        start, _, end = span.partition("-")
        if int(start) != expected.get(name, 0):
            raise ValueError(f"{dn}: {name} is exported in part ({key}): values are missing")
        values = attributes.pop(key)
        attributes.setdefault(name, []).extend(values)
        expected[name] = -1 if end == "*" else int(end) + 1
    unfinished = [name for name, next_start in expected.items() if next_start != -1]
    if unfinished:
        raise ValueError(f"{dn}: {', '.join(unfinished)} is exported in part (no range ending in -*): values are "
                         "missing; export with ldifde, which follows ranges")
    return attributes
