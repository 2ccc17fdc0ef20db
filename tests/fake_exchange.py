"""A loopback fake of Exchange on-premise's remote PowerShell endpoint (``/PowerShell``,
configuration ``Microsoft.Exchange``) for ``zivsync-extract-exchange``.

It speaks real WS-Management (SOAP over HTTP(S), Basic auth) and the PowerShell Remoting Protocol
(server side from psrpcore's sans-IO ``ServerRunspacePool``), so the real pypsrp client works against
it unchanged: ``WSMan(...)`` + ``RunspacePool(wsman, configuration_name="Microsoft.Exchange")`` +
``PowerShell(pool).add_cmdlet(...).add_parameter(...)``. See ``shared/reference/exchange.md``
section 2 and ``testinfra.md`` section 4 / appendix A (where the WSMan layer comes from).

What it serves (from an :class:`Organization`): ``Get-Mailbox``, ``Get-MailboxPermission``,
``Get-Recipient``, ``Get-DistributionGroup``, ``Get-Group``, ``Get-DistributionGroupMember``, with
Exchange's identity resolution, ``-ResultSize`` (1000 by default, with Exchange's warning), its
error records (``ManagementObjectNotFoundException`` ... in the error stream, the pipeline still
completes) and no-language mode (a script fails with ``ScriptsNotAllowed``).

How objects look on the wire. The default is what a real Exchange 2016 server sends (a CLIXML
capture of ``Get-Mailbox`` made with pypsrp, Exchange 15.1 build 2507.6, is the model): type names
WITHOUT the ``Deserialized.`` prefix (PowerShell adds that prefix in the *client*, pypsrp does
not), enum values such as ``RecipientTypeDetails`` as plain strings (``<S>``), multi-valued
properties as an ``<Obj>`` with a ``<TN>`` and a bare ``<LST>`` (pypsrp 0.9.1 hands those back as a
``GenericComplexObject`` whose ``property_sets[0]`` is the raw ``<LST>...</LST>`` string).
``FakeExchange(..., type_prefix="Deserialized.", typed_values=True)`` gives the shapes of
exchange.md 2.4 instead (prefixed type names; ``RecipientTypeDetails`` and the ``AccessRights``
elements as enum objects with a ``<ToString>`` and the numeric value).

Use it from a test::

    with FakeExchange(tmp_path, Organization.generate(mailboxes=500, shared=60)) as fake:
        wsman = WSMan("localhost", port=fake.port, path="PowerShell", ssl=True,
                      cert_validation=str(fake.ca_file), auth="basic", username=fake.username,
                      password=fake.password, encryption="auto")
        with RunspacePool(wsman, configuration_name="Microsoft.Exchange") as pool:
            ps = PowerShell(pool)
            ps.add_cmdlet("Get-Mailbox").add_parameter("ResultSize", "Unlimited")
            mailboxes = ps.invoke()

or as a process (benchmarks): ``python tests/fake_exchange.py --generate 500 --latency 0.01
--folder D --info-file J`` prints ``READY <port>`` and serves until killed (SIGTERM/SIGINT); the
info file holds url, host, port, username, password, ca_file.
"""

from __future__ import annotations

import base64
import collections
import datetime
import random
import re
import secrets
import ssl
import sys
import threading
import time
import traceback
import uuid
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape

import loopback
import psrpcore
import testcerts
from psrpcore._payload import PSRPMessage, create_message
from psrpcore.types import (
    ErrorCategory,
    ErrorCategoryInfo,
    ErrorRecord,
    NETException,
    PSEnumBase,
    PSFlagBase,
    PSInt,
    PSInt64,
    PSInvocationState,
    PSList,
    PSNoteProperty,
    PSObject,
    PSRPMessageType,
    PSType,
)
from psrpcore.types._enum import PSEnumMeta
from psrpcore.types._serializer import serialize as ps_serialize

EXCHANGE_RESOURCE_URI = "http://schemas.microsoft.com/powershell/Microsoft.Exchange"
SHELL_RESOURCE_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
SELF = "NT AUTHORITY\\SELF"
MAILBOX_TYPES = ("UserMailbox", "SharedMailbox", "RoomMailbox", "EquipmentMailbox")
GROUP_TYPES = ("MailUniversalDistributionGroup", "MailUniversalSecurityGroup")
#: Microsoft.Exchange.Data.Directory.Recipient.RecipientTypeDetails (a long flags enum)
RECIPIENT_TYPE_DETAILS = {
    "None": 0, "UserMailbox": 1, "LinkedMailbox": 2, "SharedMailbox": 4, "LegacyMailbox": 8,
    "RoomMailbox": 16, "EquipmentMailbox": 32, "MailContact": 64, "MailUser": 128,
    "MailUniversalDistributionGroup": 256, "MailNonUniversalGroup": 512,
    "MailUniversalSecurityGroup": 1024, "DynamicDistributionGroup": 2048, "PublicFolder": 4096,
    "SystemAttendantMailbox": 8192, "SystemMailbox": 16384, "MailForestContact": 32768,
    "User": 65536, "Contact": 131072, "UniversalDistributionGroup": 262144,
    "UniversalSecurityGroup": 524288, "NonUniversalGroup": 1048576, "DisabledUser": 2097152,
    "MicrosoftExchange": 4194304, "ArbitrationMailbox": 8388608, "MailboxPlan": 16777216,
    "LinkedUser": 33554432, "RoomList": 268435456, "DiscoveryMailbox": 536870912,
    "RoleGroup": 1073741824, "RemoteUserMailbox": 2147483648, "Computer": 4294967296,
    "RemoteRoomMailbox": 8589934592, "RemoteEquipmentMailbox": 17179869184,
    "RemoteSharedMailbox": 34359738368, "PublicFolderMailbox": 68719476736,
    "TeamMailbox": 137438953472, "RemoteTeamMailbox": 274877906944,
    "MonitoringMailbox": 549755813888, "GroupMailbox": 1099511627776,
    "LinkedRoomMailbox": 2199023255552, "AuditLogMailbox": 4398046511104,
    "RemoteGroupMailbox": 8796093022208, "SchedulingMailbox": 17592186044416,
    "GuestMailUser": 35184372088832,
}
#: Microsoft.Exchange.Management.RecipientTasks.MailboxRights (an int flags enum)
MAILBOX_RIGHTS = {"FullAccess": 1, "SendAs": 2, "ExternalAccount": 4, "DeleteItem": 65536,
                  "ReadPermission": 131072, "ChangePermission": 262144, "ChangeOwner": 524288}
DEFAULT_LIMIT = 1000
DEFAULT_LIMIT_WARNING = (
    "By default, only the first 1000 items are returned. Use the ResultSize parameter to specify "
    "the number of items returned. To return all items, specify \"-ResultSize Unlimited\". Be aware "
    "that, depending on the actual number of items, returning all items can take a long time and "
    "consume a large amount of memory. Also, we don't recommend storing the results in a variable. "
    "Instead, pipe the results to another task or script to perform batch changes.")
MORE_RESULTS_WARNING = ("There are more results available than are currently displayed. To view "
                        "them, increase the value for the ResultSize parameter.")
SCRIPTS_NOT_ALLOWED = ("The syntax is not supported by this runspace. This can occur if the "
                       "runspace is in no-language mode.")
MSCORLIB = "mscorlib, Version=4.0.0.0, Culture=neutral, PublicKeyToken=b77a5c561934e089"
EX_DATA = "Microsoft.Exchange.Data, Version=15.0.0.0, Culture=neutral, PublicKeyToken=31bf3856ad364e35"
EX_DIR = ("Microsoft.Exchange.Data.Directory, Version=15.0.0.0, Culture=neutral, "
          "PublicKeyToken=31bf3856ad364e35")
ORG_NAME = "First Organization"
ADMIN_GROUP = "/o=First Organization/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)"


# --------------------------------------------------------------------------------------------
# Organization: the fixture data
# --------------------------------------------------------------------------------------------

def _address(proxy: str) -> str:
    """'SMTP:a@b' -> 'a@b'."""
    head, sep, tail = proxy.partition(":")
    return tail if sep and "@" not in head else proxy


def _norm_identity(identity: Any) -> str:
    """An -Identity value as an index key: trimmed, lower case; a GUID in its canonical form."""
    text = str(identity).strip()
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return text.lower()


@dataclass
class Organization(loopback.JsonSaved):
    """One on-premise Exchange organisation in one AD domain.

    * ``domain``: the mail domain (``contoso.example``); ``netbios``: the NetBIOS domain name
      (``CONTOSO``, as in ``CONTOSO\\jdoe``); ``ad_domain``: the AD DNS domain (default
      ``<netbios>.local``); ``server``/``domain_controller``: names that appear in error messages.
    * ``mailboxes``: dicts with ``Guid``, ``ExchangeGuid``, ``SamAccountName``,
      ``UserPrincipalName``, ``PrimarySmtpAddress``, ``EmailAddresses`` (``["SMTP:..", "smtp:..",
      "X500:..", "SIP:.."]``), ``DisplayName``, ``Alias``, ``Name``, ``DistinguishedName``,
      ``Identity`` (canonical name, ``contoso.local/Staff/Anna Jansen``), ``OrganizationalUnit``,
      ``RecipientTypeDetails`` (one of ``MAILBOX_TYPES``), ``AccountDisabled``,
      ``GrantSendOnBehalfTo`` (Guids), ``LegacyExchangeDN``, ``WhenCreated``. Missing keys are
      filled in by :meth:`complete`, so a hand-written mailbox needs only an ``Alias``.
    * ``groups``: the same plus ``Members`` (Guids of the direct members: mailboxes or groups),
      ``ManagedBy``, ``GroupType``; ``RecipientTypeDetails`` is ``MailUniversalDistributionGroup``
      or ``MailUniversalSecurityGroup``.
    * ``permissions``: mailbox ``Guid`` -> Get-MailboxPermission rows ``{"User": "CONTOSO\\sam" |
      "NT AUTHORITY\\SELF" | "S-1-5-21-...", "AccessRights": [..], "IsInherited": bool, "Deny": bool,
      "InheritanceType": "All"}``.
    * ``scenarios``: name -> primary address of the interesting objects (see :meth:`generate`).
    """

    domain: str = "contoso.example"
    netbios: str = "CONTOSO"
    ad_domain: str = ""
    server: str = "EX01"
    domain_controller: str = ""
    org_id: str = ""
    mailboxes: list[dict] = field(default_factory=list)
    groups: list[dict] = field(default_factory=list)
    permissions: dict[str, list[dict]] = field(default_factory=dict)
    scenarios: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        self.ad_domain = self.ad_domain or f"{self.netbios.lower()}.local"
        self.domain_controller = self.domain_controller or f"dc1.{self.ad_domain}"
        self.org_id = self.org_id or str(uuid.uuid5(uuid.NAMESPACE_DNS, self.ad_domain))
        self.complete()

    # -- building ---------------------------------------------------------------------------

    @property
    def dc_suffix(self) -> str:
        return ",".join(f"DC={part}" for part in self.ad_domain.split("."))

    def _uuid(self, kind: str, name: str) -> str:
        return str(uuid.uuid5(uuid.UUID(self.org_id), f"{kind}:{name.lower()}"))

    def _ou(self, obj: dict, kind: str) -> str:
        if kind == "group":
            return "Groups"
        return "Staff" if obj.get("RecipientTypeDetails", "UserMailbox") == "UserMailbox" else "Shared Mailboxes"

    def complete(self) -> None:
        """Fill in every property a hand-written mailbox, group or ACE lacks (idempotent)."""
        for mailbox in self.mailboxes:
            self._complete_mailbox(mailbox)
        for group in self.groups:
            self._complete_group(group)
        for rows in self.permissions.values():
            for row in rows:
                self._complete_ace(row)

    def _complete_common(self, obj: dict, kind: str) -> None:
        alias = obj.get("Alias") or (obj.get("PrimarySmtpAddress") or "").split("@")[0] \
            or re.sub(r"[^A-Za-z0-9.-]", "", (obj.get("Name") or obj.get("DisplayName") or "").replace(" ", "-"))
        if not alias:
            raise ValueError(f"{kind} needs at least an Alias, Name or PrimarySmtpAddress: {obj}")
        obj.setdefault("Alias", alias)
        obj.setdefault("Name", obj.get("DisplayName") or alias)
        obj.setdefault("DisplayName", obj["Name"])
        obj.setdefault("SamAccountName", alias[:20])
        obj.setdefault("Guid", self._uuid(kind, alias))
        obj.setdefault("PrimarySmtpAddress", f"{alias}@{self.domain}")
        primary = obj["PrimarySmtpAddress"]
        addresses = obj.setdefault("EmailAddresses", [])
        if not any(a.lower() == f"smtp:{primary.lower()}" for a in addresses):
            addresses.insert(0, f"SMTP:{primary}")
        ou = self._ou(obj, kind)
        obj.setdefault("OrganizationalUnit", f"{self.ad_domain}/{ou}")
        name_rdn = re.sub(r'([,+"\\<>;=#])', r"\\\1", obj["Name"])
        obj.setdefault("DistinguishedName", f"CN={name_rdn},OU={ou},{self.dc_suffix}")
        obj.setdefault("Identity", f"{obj['OrganizationalUnit']}/{obj['Name']}")
        obj.setdefault("LegacyExchangeDN", f"{ADMIN_GROUP}/cn=Recipients/cn={uuid.UUID(obj['Guid']).hex}-{alias[:8]}")
        obj.setdefault("HiddenFromAddressListsEnabled", False)
        obj.setdefault("WhenCreated", "2019-03-14T09:26:53+00:00")
        obj.setdefault("WhenChanged", "2024-11-02T17:05:11+00:00")

    def _complete_mailbox(self, mb: dict) -> None:
        kind = mb.setdefault("RecipientTypeDetails", "UserMailbox")
        if kind not in MAILBOX_TYPES:
            raise ValueError(f"RecipientTypeDetails {kind!r} is not one of {MAILBOX_TYPES}")
        self._complete_common(mb, "mailbox")
        mb.setdefault("UserPrincipalName", mb["PrimarySmtpAddress"])
        mb.setdefault("ExchangeGuid", self._uuid("exchange", mb["Alias"]))
        mb.setdefault("AccountDisabled", kind != "UserMailbox")
        mb.setdefault("GrantSendOnBehalfTo", [])
        mb.setdefault("Database", "DB01")

    def _complete_group(self, group: dict) -> None:
        kind = group.setdefault("RecipientTypeDetails", "MailUniversalSecurityGroup")
        if kind not in GROUP_TYPES:
            raise ValueError(f"RecipientTypeDetails {kind!r} is not one of {GROUP_TYPES}")
        self._complete_common(group, "group")
        group.setdefault("GroupType", "Universal, SecurityEnabled"
                         if kind == "MailUniversalSecurityGroup" else "Universal")
        group.setdefault("ManagedBy", [])
        group.setdefault("Members", [])

    @staticmethod
    def _complete_ace(row: dict) -> None:
        rights = row.setdefault("AccessRights", ["FullAccess"])
        if isinstance(rights, str):
            row["AccessRights"] = [r.strip() for r in rights.split(",")]
        row.setdefault("IsInherited", False)
        row.setdefault("Deny", False)
        row.setdefault("InheritanceType", "All")

    def add_mailbox(self, alias: str, kind: str = "UserMailbox", *, display_name: str | None = None,
                    addresses: Iterable[str] = (), default_aces: bool = True, **properties) -> dict:
        """Add a mailbox (``addresses``: extra proxy addresses like ``"smtp:x@y"``, ``"SIP:x@y"``;
        any other property as a keyword, e.g. ``AccountDisabled=True``, ``SamAccountName=..``).
        ``default_aces`` gives it the rows every on-premise mailbox has (:func:`standard_aces`)."""
        mb = {"Alias": alias, "RecipientTypeDetails": kind, **properties}
        if display_name:
            mb["DisplayName"] = display_name
        self._complete_mailbox(mb)
        mb["EmailAddresses"].extend(a for a in addresses if a not in mb["EmailAddresses"])
        self.mailboxes.append(mb)
        if default_aces:
            for row in standard_aces(self.netbios):
                self.grant(mb, **row)
        return mb

    def add_group(self, name: str, members: Iterable[dict | str] = (), *,
                  kind: str = "MailUniversalSecurityGroup", display_name: str | None = None,
                  alias: str | None = None, **properties) -> dict:
        """Add a mail-enabled group; ``members``: mailboxes/groups (dicts) or their Guids."""
        alias = alias or re.sub(r"[^A-Za-z0-9.-]", "", name.replace(" ", "-"))
        group = {"Name": name, "Alias": alias, "RecipientTypeDetails": kind, **properties}
        group["DisplayName"] = display_name or name
        self._complete_group(group)
        self.groups.append(group)
        self.add_members(group, *members)
        return group

    def add_members(self, group: dict, *members: dict | str) -> None:
        for member in members:
            guid = member["Guid"] if isinstance(member, dict) else member
            if guid not in group["Members"]:
                group["Members"].append(guid)

    def trustee(self, obj: dict) -> str:
        """How Get-MailboxPermission names a mailbox or group in ``User``: ``CONTOSO\\sam``."""
        return f"{self.netbios}\\{obj['SamAccountName']}"

    def grant(self, mailbox: dict, user: dict | str, access_rights: Iterable[str] = ("FullAccess",),
              *, inherited: bool = False, deny: bool = False, inheritance: str = "All") -> dict:
        """Add a Get-MailboxPermission row on ``mailbox`` for ``user``: a mailbox or group (dict;
        ``User`` becomes ``CONTOSO\\sam``) or any string (``NT AUTHORITY\\SELF``, a SID, ...)."""
        if isinstance(user, dict):
            user = self.trustee(user)
        row = {"User": user, "AccessRights": list(access_rights), "IsInherited": inherited,
               "Deny": deny, "InheritanceType": inheritance}
        self._complete_ace(row)
        self.permissions.setdefault(mailbox["Guid"], []).append(row)
        return row

    # -- looking up -------------------------------------------------------------------------

    def exact_keys(self, obj: dict) -> set[str]:
        """The unique names of ``obj`` an -Identity can use (lower case): Guid, ExchangeGuid, DN,
        canonical name, DOMAIN\\sam, UPN, SMTP addresses, LegacyExchangeDN."""
        keys = {obj.get(k) for k in ("Guid", "ExchangeGuid", "DistinguishedName", "Identity",
                                     "UserPrincipalName", "PrimarySmtpAddress", "LegacyExchangeDN")}
        keys.add(self.trustee(obj))
        keys.update(_address(a) for a in obj.get("EmailAddresses", []) if a.lower().startswith("smtp:"))
        return {_norm_identity(k) for k in keys if isinstance(k, str) and k}

    @staticmethod
    def name_keys(obj: dict) -> set[str]:
        """The names that may be ambiguous: Name, DisplayName, Alias, SamAccountName."""
        return {k.lower() for k in (obj.get("Name"), obj.get("DisplayName"), obj.get("Alias"),
                                    obj.get("SamAccountName")) if isinstance(k, str) and k}

    def index(self) -> tuple[dict[str, list[dict]], dict[str, list[dict]]]:
        """(exact key -> objects, name key -> objects) over mailboxes and groups."""
        exact: dict[str, list[dict]] = collections.defaultdict(list)
        names: dict[str, list[dict]] = collections.defaultdict(list)
        for obj in self.mailboxes + self.groups:
            for key in self.exact_keys(obj):
                exact[key].append(obj)
            for key in self.name_keys(obj):
                names[key].append(obj)
        return exact, names

    def resolve(self, identity: Any, index: tuple | None = None, kinds: str = "all") -> list[dict]:
        """The objects ``identity`` names, like Exchange's RecipientIdParameter: an exact name
        (Guid, DN, canonical name, DOMAIN\\sam, UPN, address, LegacyExchangeDN) first, else Name,
        DisplayName, Alias or sam (more than one result = ambiguous). ``kinds``: ``all``,
        ``mailbox`` or ``group``."""
        exact, names = index or self.index()
        key = _norm_identity(identity)

        def keep(found: list[dict]) -> list[dict]:
            out, seen = [], set()
            for obj in found:
                is_group = obj["RecipientTypeDetails"] in GROUP_TYPES
                if (kinds == "mailbox" and is_group) or (kinds == "group" and not is_group):
                    continue
                if obj["Guid"] not in seen:
                    seen.add(obj["Guid"])
                    out.append(obj)
            return out

        return keep(exact.get(key, [])) or keep(names.get(key, []))

    def by_guid(self) -> dict[str, dict]:
        return {o["Guid"]: o for o in self.mailboxes + self.groups}

    def by_address(self, address: str) -> dict:
        found = self.resolve(address)
        if len(found) != 1:
            raise KeyError(address)
        return found[0]

    def expand(self, obj: dict, by_guid: dict | None = None) -> set[str]:
        """Guids of the mailboxes ``obj`` stands for: itself if a mailbox, else every mailbox
        reachable through its (nested) members; cycle-safe."""
        by_guid = by_guid or self.by_guid()
        if obj["RecipientTypeDetails"] not in GROUP_TYPES:
            return {obj["Guid"]}
        seen, out = {obj["Guid"]}, set()
        queue = collections.deque([obj])
        while queue:
            for guid in queue.popleft()["Members"]:
                member = by_guid.get(guid)
                if member is None:
                    continue
                if member["RecipientTypeDetails"] in GROUP_TYPES:
                    if guid not in seen:
                        seen.add(guid)
                        queue.append(member)
                else:
                    out.add(guid)
        return out

    def expected_delegates(self, include_empty: bool = True) -> dict[str, list[str]]:
        """The oracle: shared mailbox primary address -> sorted primary addresses of the ENABLED
        UserMailboxes with Full Access, by these rules: rows with FullAccess in AccessRights and
        not inherited (inherited rows, allow or deny, are ignored); the ``User`` resolved like
        ``Get-Recipient -Identity`` does (SELF, SIDs and non-recipients such as ``CONTOSO\\Domain
        Admins`` are not); groups expanded transitively (cycle-safe); Deny rows remove the
        mailboxes they stand for (expanded the same way) from the allowed set; never the mailbox
        itself. ``include_empty``: list shared mailboxes without delegates too (empty list)."""
        index, by_guid = self.index(), self.by_guid()
        result: dict[str, list[str]] = {}
        for mb in self.mailboxes:
            if mb["RecipientTypeDetails"] != "SharedMailbox":
                continue
            allow: set[str] = set()
            deny: set[str] = set()
            for row in self.permissions.get(mb["Guid"], []):
                if "FullAccess" not in row["AccessRights"] or row["IsInherited"]:
                    continue
                found = self.resolve(row["User"], index)
                if len(found) != 1:
                    continue
                (deny if row["Deny"] else allow).update(self.expand(found[0], by_guid))
            users = sorted(by_guid[g]["PrimarySmtpAddress"] for g in allow - deny - {mb["Guid"]}
                           if by_guid[g]["RecipientTypeDetails"] == "UserMailbox"
                           and not by_guid[g]["AccountDisabled"])
            if users or include_empty:
                result[mb["PrimarySmtpAddress"]] = users
        return result

    # -- generating -------------------------------------------------------------------------

    @classmethod
    def generate(cls, mailboxes: int = 500, shared: int = 60, *, seed: int = 1, rooms: int = 4,
                 equipment: int = 2, groups: int = 20, domain: str = "contoso.example",
                 netbios: str = "CONTOSO") -> Organization:
        """A realistic organisation; the same arguments give the same organisation.

        * ``mailboxes`` UserMailboxes (alias ``anna.jansen``, ``anna.jansen2``; sam ``ajansen``;
          ~3 % disabled, at least one; ~20 % with a UPN in the AD domain (``ajansen@contoso.local``)
          instead of the mail address; extra ``smtp:``, ``SIP:``, ``X500:`` addresses; duplicate
          display names happen, so a DisplayName can be ambiguous), ``shared`` SharedMailboxes
          (``sales-001`` ...), ``rooms`` RoomMailboxes, ``equipment`` EquipmentMailboxes. Every
          mailbox has the standard ACEs (:func:`standard_aces`).
        * mail-enabled security groups for the scenarios: ``SG-Direct``, ``SG-Outer`` >
          ``SG-Middle`` > ``SG-Inner``, ``SG-CycleA`` <> ``SG-CycleB``, ``SG-DenySource``,
          ``SG-DenyGroup``, ``SG-SelfIncluded``, ``SG-Empty`` (``scenarios["group:SG-Direct"]``
          etc. hold their addresses), plus ``groups`` more (half distribution groups ``DL-..``,
          half security groups ``SEC-..``, 3-25 members, some nesting an earlier group).
        * the first 15 shared mailboxes are the Full Access scenarios (``scenarios[name]`` = their
          address; needs ``shared >= 15`` and 10 enabled users, else there are no scenarios and no
          SG-* groups): ``direct_users`` (3 users), ``direct_group``
          (SG-Direct), ``nested_group`` (SG-Outer, two levels of nesting), ``cyclic_group``
          (SG-CycleA), ``deny_user`` (SG-DenySource allowed, one of its members denied),
          ``deny_group`` (3 users allowed, SG-DenyGroup with one of them denied),
          ``orphaned_sid`` (a SID of a deleted account + 1 user), ``inherited_only`` (an
          inherited grant only: nobody), ``read_permission`` (ReadPermission only for one user,
          FullAccess+ReadPermission for another), ``disabled_user`` (a disabled and an enabled
          user), ``shared_trustee`` (another shared mailbox + 1 user), ``self_in_group``
          (SG-SelfIncluded, which contains the mailbox itself and 1 user), ``empty_group``
          (SG-Empty), ``overlap`` (SG-Outer and a user of SG-Inner directly), ``inherited_deny``
          (a user allowed explicitly and denied by an inherited row: keeps access). The other
          shared mailboxes get 0-3 users and sometimes a security group; ~2 % of the users an
          assistant. :meth:`expected_delegates` is the oracle.
        """
        rng = random.Random(seed)
        org = cls(domain=domain, netbios=netbios,
                  org_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)))
        legacy = domain.replace(".", "-old.", 1)
        aliases: collections.Counter = collections.Counter()
        sams: collections.Counter = collections.Counter()
        names: collections.Counter = collections.Counter()
        users = []
        base_day = datetime.datetime(2015, 1, 5, 9, 0, tzinfo=datetime.UTC)
        for i in range(mailboxes):
            first, last = rng.choice(loopback.FIRST_NAMES), rng.choice(loopback.LAST_NAMES)
            flat = last.replace(" ", "").lower()
            base = f"{first}.{flat}".lower()
            aliases[base] += 1
            alias = base if aliases[base] == 1 else f"{base}{aliases[base]}"
            sam_base = f"{first[0]}{flat}".lower()[:17]
            sams[sam_base] += 1
            sam = sam_base if sams[sam_base] == 1 else f"{sam_base}{sams[sam_base]}"
            display = f"{first} {last}"
            names[display] += 1
            name = display if names[display] == 1 else f"{display} {names[display]}"
            extra = []
            roll = rng.random()
            if roll < 0.15:
                extra.append(f"smtp:{first[0].lower()}{flat}{i}@{domain}")
            if roll < 0.20:
                extra.append(f"smtp:{alias}@{legacy}")
            if rng.random() < 0.10:
                extra.append(f"SIP:{alias}@{domain}")
            if rng.random() < 0.05:
                extra.append(f"X500:{ADMIN_GROUP}/cn=Recipients/cn={uuid.UUID(int=rng.getrandbits(128)).hex}-{alias[:8]}")
            upn = f"{sam}@{org.ad_domain}" if rng.random() < 0.20 else f"{alias}@{domain}"
            created = base_day + datetime.timedelta(days=rng.randint(0, 3000), seconds=rng.randint(0, 86399))
            users.append(org.add_mailbox(alias, display_name=display, Name=name, SamAccountName=sam,
                                         UserPrincipalName=upn, addresses=extra,
                                         AccountDisabled=rng.random() < 0.03,
                                         WhenCreated=created.isoformat()))
        if users and not any(u["AccountDisabled"] for u in users):
            users[-1]["AccountDisabled"] = True
        topics = ["sales", "support", "finance", "hr", "info", "projects", "legal", "it",
                  "facilities", "marketing", "board", "events"]
        shared_boxes = []
        for i in range(shared):
            topic = topics[i % len(topics)]
            shared_boxes.append(org.add_mailbox(f"{topic}-{i + 1:03d}", "SharedMailbox",
                                                display_name=f"{topic.capitalize()} {i + 1:03d}"))
        for i in range(rooms):
            org.add_mailbox(f"room-{i + 1:02d}", "RoomMailbox", display_name=f"Meeting Room {i + 1}")
        for i in range(equipment):
            org.add_mailbox(f"equipment-{i + 1:02d}", "EquipmentMailbox", display_name=f"Projector {i + 1}")

        active = [u for u in users if not u["AccountDisabled"]]
        disabled = [u for u in users if u["AccountDisabled"]]
        pool = rng.sample(active, min(len(active), 60)) or [None]
        cursor = [0]

        def take(n: int) -> list[dict]:
            out = []
            for _ in range(n):
                out.append(pool[cursor[0] % len(pool)])
                cursor[0] += 1
            return out

        s = shared_boxes
        scen_groups = []
        if shared >= 15 and len(active) >= 10:
            direct = org.add_group("SG-Direct", take(3), display_name="SG Direct (Full Access)")
            inner = org.add_group("SG-Inner", take(2), display_name="SG Inner (nested two deep)")
            middle = org.add_group("SG-Middle", take(2) + [inner], display_name="SG Middle (nested)")
            outer = org.add_group("SG-Outer", take(2) + [middle], display_name="SG Outer (nesting)")
            cycle_a = org.add_group("SG-CycleA", take(2), display_name="SG Cycle A")
            cycle_b = org.add_group("SG-CycleB", take(2) + [cycle_a], display_name="SG Cycle B")
            org.add_members(cycle_a, cycle_b)
            deny_source = org.add_group("SG-DenySource", take(3), display_name="SG Deny Source")
            deny_users = take(3)
            deny_group = org.add_group("SG-DenyGroup", deny_users[1:2], display_name="SG Deny Group")
            self_included = org.add_group("SG-SelfIncluded", take(1) + [s[11]], display_name="SG Self Included")
            empty = org.add_group("SG-Empty", [], display_name="SG Empty")
            scen_groups = [direct, inner, middle, outer, cycle_a, cycle_b, deny_source, deny_group,
                           self_included, empty]
            org.scenarios.update({f"group:{g['Name']}": g["PrimarySmtpAddress"] for g in scen_groups})
            scen = {}
            scen["direct_users"] = s[0]
            for u in take(3):
                org.grant(s[0], u)
            scen["direct_group"] = s[1]
            org.grant(s[1], direct)
            scen["nested_group"] = s[2]
            org.grant(s[2], outer)
            scen["cyclic_group"] = s[3]
            org.grant(s[3], cycle_a)
            scen["deny_user"] = s[4]
            org.grant(s[4], deny_source)
            org.grant(s[4], org.by_guid()[deny_source["Members"][0]], deny=True)
            scen["deny_group"] = s[5]
            for u in deny_users:
                org.grant(s[5], u)
            org.grant(s[5], deny_group, deny=True)
            scen["orphaned_sid"] = s[6]
            org.grant(s[6], "S-1-5-21-3623811015-3361044348-30300820-1013")
            org.grant(s[6], take(1)[0])
            scen["inherited_only"] = s[7]
            org.grant(s[7], take(1)[0], inherited=True)
            scen["read_permission"] = s[8]
            org.grant(s[8], take(1)[0], ["ReadPermission"])
            org.grant(s[8], take(1)[0], ["FullAccess", "ReadPermission"])
            scen["disabled_user"] = s[9]
            org.grant(s[9], disabled[0] if disabled else take(1)[0])
            org.grant(s[9], take(1)[0])
            scen["shared_trustee"] = s[10]
            org.grant(s[10], s[14])
            org.grant(s[10], take(1)[0])
            scen["self_in_group"] = s[11]
            org.grant(s[11], self_included)
            scen["empty_group"] = s[12]
            org.grant(s[12], empty)
            scen["overlap"] = s[13]
            org.grant(s[13], outer)
            org.grant(s[13], org.by_guid()[inner["Members"][0]])
            scen["inherited_deny"] = s[14]
            kept = take(1)[0]
            org.grant(s[14], kept)
            org.grant(s[14], kept, inherited=True, deny=True)
            org.scenarios.update({k: v["PrimarySmtpAddress"] for k, v in scen.items()})
            rest = s[15:]
        else:
            rest = s

        security = [g for g in scen_groups if g["Name"] in ("SG-Direct", "SG-Outer", "SG-Inner")]
        first_extra = len(org.groups)
        for i in range(groups):
            kind = GROUP_TYPES[i % 2]
            prefix = "DL" if kind == "MailUniversalDistributionGroup" else "SEC"
            members = rng.sample(users, min(len(users), rng.randint(3, 25))) if users else []
            earlier = org.groups[first_extra:]
            if earlier and rng.random() < 0.2:
                members.append(rng.choice(earlier))
            topic = topics[i % len(topics)]
            g = org.add_group(f"{prefix}-{topic.capitalize()}-{i + 1:02d}", members, kind=kind,
                              display_name=f"{prefix} {topic} {i + 1:02d}")
            if kind == "MailUniversalSecurityGroup":
                security.append(g)
        for box in rest:
            for u in rng.sample(active, min(len(active), rng.randint(0, 3))):
                org.grant(box, u)
            if security and rng.random() < 0.15:
                org.grant(box, rng.choice(security))
        for u in users:
            if active and rng.random() < 0.02:
                assistant = rng.choice(active)
                if assistant is not u:
                    org.grant(u, assistant)
                    u["GrantSendOnBehalfTo"].append(assistant["Guid"])
        return org


def standard_aces(netbios: str = "CONTOSO") -> list[dict]:
    """The rows Get-MailboxPermission shows on every on-premise mailbox (keywords of
    :meth:`Organization.grant`): SELF explicit, the rest inherited from the database/OU."""
    return [
        {"user": SELF, "access_rights": ["FullAccess", "ReadPermission"]},
        {"user": f"{netbios}\\Domain Admins", "access_rights": ["FullAccess"], "inherited": True, "deny": True},
        {"user": f"{netbios}\\Enterprise Admins", "access_rights": ["FullAccess"], "inherited": True, "deny": True},
        {"user": f"{netbios}\\Administrator", "access_rights": ["FullAccess"], "inherited": True, "deny": True},
        {"user": f"{netbios}\\Organization Management", "access_rights": ["FullAccess"], "inherited": True},
        {"user": f"{netbios}\\Exchange Servers", "access_rights": ["FullAccess", "ReadPermission"], "inherited": True},
        {"user": f"{netbios}\\Exchange Trusted Subsystem", "access_rights": ["FullAccess"], "inherited": True},
        {"user": "NT AUTHORITY\\SYSTEM", "access_rights": ["FullAccess"], "inherited": True},
        {"user": "NT AUTHORITY\\NETWORK SERVICE", "access_rights": ["ReadPermission"], "inherited": True},
        {"user": f"{netbios}\\Managed Availability Servers", "access_rights": ["ReadPermission"], "inherited": True},
    ]


# --------------------------------------------------------------------------------------------
# Certificates
# --------------------------------------------------------------------------------------------

def make_certificates(folder: Path) -> dict[str, Path]:
    """Test CA and a server certificate it signed (SAN DNS:localhost, IP:127.0.0.1)."""
    return testcerts.ca_and_server(folder, "zivsync fake Exchange test CA", prefix="exchange-")


# --------------------------------------------------------------------------------------------
# CLIXML shapes of Exchange's objects (psrpcore PSObjects with adapted properties)
# --------------------------------------------------------------------------------------------

def _make_enum(name: str, type_names: list[str], members: dict[str, int], base: type, flags: bool = False) -> type:
    parent = PSFlagBase if flags else PSEnumBase
    namespace = PSEnumMeta.__prepare__(name, (parent,))
    for key, value in members.items():
        namespace[key] = value
    cls = PSEnumMeta(name, (parent,), namespace, base_type=base)
    cls = PSType(type_names[:1], rehydrate=False)(cls)
    cls.PSObject.type_names = list(type_names)   # the members share the class's PSObject
    return cls


def _ps_datetime(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text)


class _Shapes:
    """Builds the PSObjects for one wire style (``prefix``: "" or "Deserialized."; ``typed``:
    enum values as enum objects instead of strings)."""

    def __init__(self, org: Organization, prefix: str, typed: bool):
        self.org, self.prefix, self.typed = org, prefix, typed
        self.rtd_enum = _make_enum(
            "RecipientTypeDetails",
            self.t("Microsoft.Exchange.Data.Directory.Recipient.RecipientTypeDetails", "System.Enum",
                   "System.ValueType", "System.Object"),
            RECIPIENT_TYPE_DETAILS, PSInt64)
        self.rights_enum = _make_enum(
            "MailboxRights",
            self.t("Microsoft.Exchange.Management.RecipientTasks.MailboxRights", "System.Enum",
                   "System.ValueType", "System.Object"),
            MAILBOX_RIGHTS, PSInt, flags=True)
        self.canonical: dict[str, str] = {}

    def reindex(self, org: Organization) -> None:
        self.org = org
        self.canonical = {o["Guid"]: o["Identity"] for o in org.mailboxes + org.groups}

    def t(self, *names: str) -> list[str]:
        return [self.prefix + n for n in names]

    def obj(self, types: list[str], to_string: str | None, props: list[tuple[str, Any]]) -> PSObject:
        o = PSObject()
        o.PSObject.type_names = types
        if to_string is not None:
            o.PSObject.to_string = to_string
        o.PSObject.adapted_properties = [PSNoteProperty(k, v) for k, v in props]
        return o

    def lst(self, items: list, types: list[str]) -> PSList:
        value = PSList(items)
        value.PSObject.type_names = types
        return value

    def mvp(self, items: list[str], element: str = f"System.String, {MSCORLIB}") -> PSList:
        return self.lst(items, self.t(f"Microsoft.Exchange.Data.MultiValuedProperty`1[[{element}]]",
                                      "Microsoft.Exchange.Data.MultiValuedPropertyBase", "System.Object"))

    def adids(self, guids: list[str]) -> PSList:
        element = f"Microsoft.Exchange.Data.Directory.ADObjectId, {EX_DIR}"
        return self.lst([self.canonical.get(g, g) for g in guids],
                        self.t(f"Microsoft.Exchange.Data.Directory.ADMultiValuedProperty`1[[{element}]]",
                               f"Microsoft.Exchange.Data.MultiValuedProperty`1[[{element}]]",
                               "Microsoft.Exchange.Data.MultiValuedPropertyBase", "System.Object"))

    def proxies(self, addresses: list[str]) -> PSList:
        element = f"Microsoft.Exchange.Data.ProxyAddress, {EX_DATA}"
        return self.lst(list(addresses), self.t(
            "Microsoft.Exchange.Data.ProxyAddressCollection",
            f"Microsoft.Exchange.Data.ProxyAddressBaseCollection`1[[{element}]]",
            f"Microsoft.Exchange.Data.MultiValuedProperty`1[[{element}]]",
            "Microsoft.Exchange.Data.MultiValuedPropertyBase", "System.Object"))

    def rtd(self, name: str) -> Any:
        return self.rtd_enum[name] if self.typed else name

    def rights(self, names: list[str]) -> PSList:
        # Exchange writes one object per ACE, whose AccessRights is a MailboxRights[] of ONE flags
        # value (MailboxAcePresentationObject.cs: new MailboxRights[] { (MailboxRights)ace.Rights }):
        # Full Access + Read Permission is one element, "FullAccess, ReadPermission" (131073), as
        # Get-MailboxPermission prints {FullAccess, ReadPermission}. Typed, it is one flags enum
        # object (MS-PSRP §2.2.5.2.7: <ToString> and the number); untyped, its text.
        if self.typed:
            combined = self.rights_enum(0)
            for name in names:
                combined |= self.rights_enum[name]
            items = [combined]
        else:
            items = [", ".join(sorted(names, key=MAILBOX_RIGHTS.__getitem__))]
        return self.lst(items, self.t("Microsoft.Exchange.Management.RecipientTasks.MailboxRights[]",
                                      "System.Array", "System.Object"))

    def _tail(self, o: dict, category: str, classes: list[str]) -> list[tuple[str, Any]]:
        created = _ps_datetime(o["WhenCreated"])
        changed = _ps_datetime(o["WhenChanged"])
        return [
            ("Identity", o["Identity"]), ("IsValid", True), ("ExchangeVersion", "0.20 (15.0.0.0)"),
            ("Name", o["Name"]), ("DistinguishedName", o["DistinguishedName"]),
            ("Guid", uuid.UUID(o["Guid"])),
            ("ObjectCategory", f"{self.org.ad_domain}/Configuration/Schema/{category}"),
            ("ObjectClass", self.mvp(classes)),
            ("WhenChanged", changed), ("WhenCreated", created),
            ("WhenChangedUTC", changed.astimezone(datetime.UTC)),
            ("WhenCreatedUTC", created.astimezone(datetime.UTC)),
            ("OrganizationId", ""), ("Id", o["Identity"]),
            ("OriginatingServer", self.org.domain_controller), ("ObjectState", "Unchanged"),
        ]

    def mailbox(self, mb: dict) -> PSObject:
        kind = mb["RecipientTypeDetails"]
        resource = {"RoomMailbox": "Room", "EquipmentMailbox": "Equipment"}.get(kind)
        props = [
            ("Database", mb["Database"]), ("ExchangeGuid", uuid.UUID(mb["ExchangeGuid"])),
            ("IsMailboxEnabled", True), ("IsResource", resource is not None), ("IsLinked", False),
            ("IsShared", kind == "SharedMailbox"), ("ResourceType", resource),
            ("SamAccountName", mb["SamAccountName"]),
            ("ServerLegacyDN", f"{ADMIN_GROUP}/cn=Configuration/cn=Servers/cn={self.org.server}"),
            ("ServerName", self.org.server.lower()), ("UserPrincipalName", mb["UserPrincipalName"]),
            ("AccountDisabled", bool(mb["AccountDisabled"])),
            ("GrantSendOnBehalfTo", self.adids(mb["GrantSendOnBehalfTo"])),
            ("Alias", mb["Alias"]), ("OrganizationalUnit", mb["OrganizationalUnit"]),
        ]
        props += [
            ("DisplayName", mb["DisplayName"]), ("EmailAddresses", self.proxies(mb["EmailAddresses"])),
            ("ExternalDirectoryObjectId", ""),
            ("HiddenFromAddressListsEnabled", bool(mb["HiddenFromAddressListsEnabled"])),
            ("LegacyExchangeDN", mb["LegacyExchangeDN"]), ("EmailAddressPolicyEnabled", True),
            ("PrimarySmtpAddress", mb["PrimarySmtpAddress"]), ("RecipientType", "UserMailbox"),
            ("RecipientTypeDetails", self.rtd(kind)), ("WindowsEmailAddress", mb["PrimarySmtpAddress"]),
        ]
        props += self._tail(mb, "Person", ["top", "person", "organizationalPerson", "user"])
        types = self.t("Microsoft.Exchange.Data.Directory.Management.Mailbox",
                       "Microsoft.Exchange.Data.Directory.Management.MailEnabledOrgPerson",
                       "Microsoft.Exchange.Data.Directory.Management.MailEnabledRecipient",
                       "Microsoft.Exchange.Data.Directory.Management.ADPresentationObject",
                       "Microsoft.Exchange.Data.Directory.ADObject",
                       "Microsoft.Exchange.Data.Directory.ADRawEntry",
                       "Microsoft.Exchange.Data.ConfigurableObject", "System.Object")
        return self.obj(types, mb["Name"], props)

    def _group_common(self, g: dict) -> list[tuple[str, Any]]:
        return [("GroupType", g["GroupType"]), ("SamAccountName", g["SamAccountName"]),
                ("ManagedBy", self.adids(g["ManagedBy"])), ("DisplayName", g["DisplayName"])]

    def distribution_group(self, g: dict) -> PSObject:
        kind = g["RecipientTypeDetails"]
        props = self._group_common(g) + [
            ("MemberJoinRestriction", "Closed"), ("MemberDepartRestriction", "Closed"),
            ("Alias", g["Alias"]), ("OrganizationalUnit", g["OrganizationalUnit"]),
            ("EmailAddresses", self.proxies(g["EmailAddresses"])), ("ExternalDirectoryObjectId", ""),
            ("HiddenFromAddressListsEnabled", bool(g["HiddenFromAddressListsEnabled"])),
            ("LegacyExchangeDN", g["LegacyExchangeDN"]), ("EmailAddressPolicyEnabled", True),
            ("PrimarySmtpAddress", g["PrimarySmtpAddress"]), ("RecipientType", kind),
            ("RecipientTypeDetails", self.rtd(kind)), ("WindowsEmailAddress", g["PrimarySmtpAddress"]),
        ] + self._tail(g, "Group", ["top", "group"])
        types = self.t("Microsoft.Exchange.Data.Directory.Management.DistributionGroup",
                       "Microsoft.Exchange.Data.Directory.Management.DistributionGroupBase",
                       "Microsoft.Exchange.Data.Directory.Management.MailEnabledRecipient",
                       "Microsoft.Exchange.Data.Directory.Management.ADPresentationObject",
                       "Microsoft.Exchange.Data.Directory.ADObject",
                       "Microsoft.Exchange.Data.Directory.ADRawEntry",
                       "Microsoft.Exchange.Data.ConfigurableObject", "System.Object")
        return self.obj(types, g["Name"], props)

    def windows_group(self, g: dict) -> PSObject:
        kind = g["RecipientTypeDetails"]
        props = self._group_common(g) + [
            ("Members", self.adids(g["Members"])), ("SimpleDisplayName", ""),
            ("RecipientType", kind), ("RecipientTypeDetails", self.rtd(kind)),
            ("WindowsEmailAddress", g["PrimarySmtpAddress"]), ("IsSecurityPrincipal", kind == "MailUniversalSecurityGroup"),
        ] + self._tail(g, "Group", ["top", "group"])
        types = self.t("Microsoft.Exchange.Data.Directory.Management.WindowsGroup",
                       "Microsoft.Exchange.Data.Directory.Management.ADPresentationObject",
                       "Microsoft.Exchange.Data.Directory.ADObject",
                       "Microsoft.Exchange.Data.Directory.ADRawEntry",
                       "Microsoft.Exchange.Data.ConfigurableObject", "System.Object")
        return self.obj(types, g["Name"], props)

    def recipient(self, r: dict) -> PSObject:
        kind = r["RecipientTypeDetails"]
        is_group = kind in GROUP_TYPES
        props = [
            ("Alias", r["Alias"]), ("DisplayName", r["DisplayName"]),
            ("EmailAddresses", self.proxies(r["EmailAddresses"])),
            ("ExchangeGuid", uuid.UUID(r["ExchangeGuid"]) if not is_group else uuid.UUID(int=0)),
            ("ExternalDirectoryObjectId", ""),
            ("HiddenFromAddressListsEnabled", bool(r["HiddenFromAddressListsEnabled"])),
            ("OrganizationalUnit", r["OrganizationalUnit"]),
            ("PrimarySmtpAddress", r["PrimarySmtpAddress"]),
            ("RecipientType", kind if is_group else "UserMailbox"),
            ("RecipientTypeDetails", self.rtd(kind)), ("SamAccountName", r["SamAccountName"]),
            ("WindowsLiveID", ""),
        ] + self._tail(r, "Group" if is_group else "Person",
                       ["top", "group"] if is_group else ["top", "person", "organizationalPerson", "user"])
        types = self.t("Microsoft.Exchange.Data.Directory.Management.ReducedRecipient",
                       "Microsoft.Exchange.Data.Directory.ADObject",
                       "Microsoft.Exchange.Data.Directory.ADRawEntry",
                       "Microsoft.Exchange.Data.ConfigurableObject", "System.Object")
        return self.obj(types, r["Name"], props)

    def ace(self, mb: dict, row: dict) -> PSObject:
        props = [
            ("AccessRights", self.rights(row["AccessRights"])), ("Deny", bool(row["Deny"])),
            ("InheritanceType", row["InheritanceType"]), ("User", row["User"]),
            ("Identity", mb["Identity"]), ("IsInherited", bool(row["IsInherited"])),
            ("IsValid", True), ("ObjectState", "Unchanged"),
        ]
        types = self.t("Microsoft.Exchange.Management.RecipientTasks.MailboxAcePresentationObject",
                       "Microsoft.Exchange.Management.RecipientTasks.AcePresentationObject",
                       "Microsoft.Exchange.Data.ConfigurableObject", "System.Object")
        return self.obj(types, None, props)


# --------------------------------------------------------------------------------------------
# Error records
# --------------------------------------------------------------------------------------------

class _CategoryInfo(ErrorCategoryInfo):
    """ErrorCategoryInfo whose message reads like Windows PowerShell's:
    ``NotSpecified: (:) [Get-Mailbox], ManagementObjectNotFoundException``."""

    def __str__(self) -> str:
        return (f"{self.Category.name}: ({self.TargetName or ''}:{self.TargetType or ''}) "
                f"[{self.Activity or ''}], {self.Reason or ''}")


RUNTIME_EXCEPTION = ["System.Management.Automation.RuntimeException", "System.SystemException"]
TASKS = {
    "Get-Mailbox": "Microsoft.Exchange.Management.RecipientTasks.GetMailbox",
    "Get-MailboxPermission": "Microsoft.Exchange.Management.RecipientTasks.GetMailboxPermission",
    "Get-Recipient": "Microsoft.Exchange.Management.RecipientTasks.GetRecipient",
    "Get-DistributionGroup": "Microsoft.Exchange.Management.RecipientTasks.GetDistributionGroup",
    "Get-DistributionGroupMember": "Microsoft.Exchange.Management.RecipientTasks.GetDistributionGroupMember",
    "Get-Group": "Microsoft.Exchange.Management.RecipientTasks.GetGroup",
}


def _record(message: str, exception_types: list[str], category: ErrorCategory, reason: str, fqid: str,
            *, activity: str = "", target_name: str = "", target_type: str = "",
            target: Any = None) -> ErrorRecord:
    exception = NETException(Message=message, HResult=-2146233088)
    exception.PSObject.type_names = list(exception_types) + ["System.Exception", "System.Object"]
    info = _CategoryInfo(Category=category, Activity=activity, Reason=reason,
                         TargetName=target_name, TargetType=target_type)
    record = ErrorRecord(Exception=exception, CategoryInfo=info, TargetObject=target,
                         FullyQualifiedErrorId=fqid)
    record.serialize_extended_info = False
    return record


class _Failed(Exception):
    """A terminating error: the pipeline ends Failed with ``record`` as its reason."""

    def __init__(self, record: ErrorRecord):
        super().__init__(str(record))
        self.record = record


@dataclass
class Failure:
    """A rule made by :meth:`FakeExchange.fail`."""

    identity: str
    message: str | None
    cmdlet: str | None
    times: int | None
    exception: str
    hits: int = 0


# --------------------------------------------------------------------------------------------
# Cmdlets
# --------------------------------------------------------------------------------------------

@dataclass
class _Cmdlet:
    name: str
    params: tuple[str, ...]
    run: str                                   # FakeExchange method name
    mandatory: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ("DomainController", "ReadFromDomainController", "IgnoreDefaultScope")
    unsupported: tuple[str, ...] = ()


COMMON_PARAMETERS = ("ErrorAction", "WarningAction", "Verbose", "Debug", "ErrorVariable",
                     "WarningVariable", "OutVariable", "OutBuffer", "PipelineVariable",
                     "InformationAction", "InformationVariable")
CMDLETS = {c.name.lower(): c for c in [
    _Cmdlet("Get-Mailbox", ("Identity", "RecipientTypeDetails", "ResultSize"), "_get_mailbox",
            unsupported=("Filter", "Anr", "OrganizationalUnit", "SortBy", "Database", "Server",
                         "Arbitration", "Archive", "PublicFolder", "SoftDeletedMailbox",
                         "InactiveMailboxOnly", "IncludeInactiveMailbox", "Monitoring",
                         "RemoteArchive", "AuditLog", "Migration", "GroupMailbox", "Credential")),
    _Cmdlet("Get-MailboxPermission", ("Identity", "User", "ResultSize"), "_get_mailbox_permission",
            mandatory=("Identity",), unsupported=("Owner", "Credential", "SoftDeletedMailbox",
                                                  "IncludeSoftDeletedUserPermissions", "IncludeUnresolvedPermissions")),
    _Cmdlet("Get-Recipient", ("Identity", "RecipientTypeDetails", "ResultSize"), "_get_recipient",
            unsupported=("Filter", "Anr", "OrganizationalUnit", "SortBy", "RecipientType",
                         "RecipientPreviewFilter", "PropertySet", "Properties", "Database",
                         "BookmarkDisplayName", "IncludeBookmarkObject", "Credential")),
    _Cmdlet("Get-DistributionGroup", ("Identity", "RecipientTypeDetails", "ResultSize"),
            "_get_distribution_group",
            unsupported=("Filter", "Anr", "OrganizationalUnit", "SortBy", "ManagedBy", "Credential")),
    _Cmdlet("Get-Group", ("Identity", "RecipientTypeDetails", "ResultSize"), "_get_group",
            unsupported=("Filter", "Anr", "OrganizationalUnit", "SortBy")),
    _Cmdlet("Get-DistributionGroupMember", ("Identity", "ResultSize"), "_get_distribution_group_member",
            mandatory=("Identity",), unsupported=("Credential",)),
]}


class _Context:
    """One cmdlet's run: its name, bound parameters and error/warning preferences."""

    def __init__(self, cmdlet: _Cmdlet, params: dict[str, Any]):
        self.cmdlet, self.params = cmdlet, params
        self.error_action = str(params.get("ErrorAction") or "Continue").lower()
        self.warning_action = str(params.get("WarningAction") or "Continue").lower()


def _plain(value: Any) -> Any:
    """A deserialized parameter value as plain Python (for the log)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


# --------------------------------------------------------------------------------------------
# The WSMan layer
# --------------------------------------------------------------------------------------------

NS = {"s": "http://www.w3.org/2003/05/soap-envelope", "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
      "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
      "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
      "x": "http://schemas.xmlsoap.org/ws/2004/09/transfer", "pwsh": "http://schemas.microsoft.com/powershell"}
ACTION_PREFIXES = ("http://schemas.xmlsoap.org/ws/2004/09/transfer/",
                   "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/")
NOT_FOUND_BODY = (b'<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01//EN""http://www.w3.org/TR/html4/strict.dtd">\r\n'
                  b'<HTML><HEAD><TITLE>Not Found</TITLE>\r\n<META HTTP-EQUIV="Content-Type" '
                  b'Content="text/html; charset=us-ascii"></HEAD>\r\n<BODY><h2>Not Found</h2>\r\n<hr>'
                  b'<p>HTTP Error 404. The requested resource is not found.</p>\r\n</BODY></HTML>\r\n')
UNAUTHORIZED_BODY = (b'<!DOCTYPE html><html><head><title>401 - Unauthorized: Access is denied due to '
                     b'invalid credentials.</title></head><body><h2>401 - Unauthorized: Access is denied '
                     b'due to invalid credentials.</h2><h3>You do not have permission to view this directory '
                     b'or page using the credentials that you supplied.</h3></body></html>')
DONE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done"
RUNNING = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Running"


class _WSManFault(Exception):
    def __init__(self, code: int, subcode: str, reason: str, status: int = 500, sender: bool = False):
        super().__init__(reason)
        self.code, self.subcode, self.reason, self.status, self.sender = code, subcode, reason, status, sender


class _Reply(Exception):
    def __init__(self, status: int, body: bytes = b"", headers: dict | None = None,
                 content_type: str = "text/html"):
        super().__init__(status)
        self.status, self.body, self.headers, self.content_type = status, body, headers or {}, content_type


class _Pipe:
    def __init__(self, pipe: psrpcore.ServerPipeline):
        self.pipe = pipe
        self.done = False       # the final PipelineState has been queued
        self.stop = False
        self.thread: threading.Thread | None = None


class _Shell:
    """One runspace pool (a WSMan shell): psrpcore's server pool and the per-target outgoing
    queues (``None`` = the pool itself, else a pipeline id), guarded by ``cond``."""

    def __init__(self, shell_id: str, max_envelope: int):
        self.id = shell_id
        self.pool = psrpcore.ServerRunspacePool()
        self.cond = threading.Condition()
        self.out: dict[uuid.UUID | None, collections.deque] = collections.defaultdict(collections.deque)
        self.pipes: dict[uuid.UUID, _Pipe] = {}
        self.closed = False
        self.budget = max(4096, (max_envelope - 4096) * 3 // 4)   # raw PSRP bytes per Receive

    def pump(self) -> None:
        while True:
            payload = self.pool.data_to_send(self.budget)
            if payload is None:
                return
            self.out[payload.pipeline_id].append(payload.data)


def _envelope(action: str, relates_to: str, body: str) -> bytes:
    return (f'<s:Envelope xml:lang="en-US" xmlns:s="{NS["s"]}" xmlns:a="{NS["a"]}" xmlns:x="{NS["x"]}" '
            f'xmlns:w="{NS["w"]}" xmlns:rsp="{NS["rsp"]}" xmlns:p="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd">'
            f'<s:Header><a:Action>{action}</a:Action>'
            f'<a:MessageID>uuid:{str(uuid.uuid4()).upper()}</a:MessageID>'
            f'<a:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:To>'
            f'<a:RelatesTo>{escape(relates_to)}</a:RelatesTo></s:Header><s:Body>{body}</s:Body></s:Envelope>').encode()


def _fault_body(relates_to: str, fault: _WSManFault, machine: str) -> bytes:
    reason = escape(fault.reason)
    return _envelope(
        "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault", relates_to,
        f'<s:Fault><s:Code><s:Value>s:{"Sender" if fault.sender else "Receiver"}</s:Value><s:Subcode>'
        f'<s:Value>w:{fault.subcode}</s:Value></s:Subcode></s:Code><s:Reason><s:Text xml:lang="en-US">'
        f'{reason}</s:Text></s:Reason><s:Detail><f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" '
        f'Code="{fault.code}" Machine="{escape(machine)}"><f:Message>{reason} </f:Message></f:WSManFault></s:Detail></s:Fault>')


def _duration(text: str | None, default: float) -> float:
    match = re.fullmatch(r"PT(\d+(?:\.\d+)?)S", (text or "").strip())
    return float(match.group(1)) if match else default


class _Handler(loopback.Handler):
    server_version = "Microsoft-HTTPAPI/2.0"
    timeout = 120
    do_GET = do_POST = do_PUT = do_DELETE = do_OPTIONS = loopback.Handler.serve


# --------------------------------------------------------------------------------------------
# The fake
# --------------------------------------------------------------------------------------------

class FakeExchange(loopback.Loopback):
    """The fake, serving ``organization`` on ``http(s)://localhost:<port>/<path>`` from a
    background thread (start/stop with ``with``, or :meth:`start`/:meth:`stop`).

    Arguments: ``folder`` (the test CA and server certificate go there), ``organization``;
    ``username``/``password`` (HTTP Basic; the password is random unless given), ``https``
    (False: plain HTTP, the client then needs ``encryption="never"``), ``latency`` (seconds added
    to every HTTP answer), ``path`` (the IIS virtual directory, ``PowerShell``), ``type_prefix``
    (``""`` as real servers send, or ``"Deserialized."``), ``typed_values`` (enum values as enum
    objects instead of strings), ``result_size_limit`` (what Get-* return without -ResultSize;
    Exchange's is 1000), ``port`` (0: any free port).

    Attributes: ``host`` (``localhost``), ``port``, ``url``, ``ca_file``, ``username``,
    ``password``, ``requests`` (one dict per HTTP request: ``action`` Create/Command/Send/Receive/
    Signal/Delete/Get or None, ``status``, ``shell_id``, ``command_id``, ``path``, ``seconds``),
    ``invocations`` (one dict per cmdlet run: ``cmdlet``, ``parameters``, ``script``,
    ``pipeline_id``), ``round_trips`` (number of HTTP requests).
    """

    host = "localhost"
    handler = _Handler
    thread_name = "fake-exchange"

    def __init__(self, folder: Path, organization: Organization, *, username: str = "CONTOSO\\svc-zivsync",
                 password: str | None = None, https: bool = True, latency: float = 0.0,
                 path: str = "PowerShell", type_prefix: str = "", typed_values: bool = False,
                 result_size_limit: int = DEFAULT_LIMIT, port: int = 0):
        self.folder = Path(folder)
        self.organization = organization
        self.username = username
        self.password = password or "Fake-" + secrets.token_urlsafe(12)
        self.https, self.latency, self.path = https, latency, path.strip("/")
        self.type_prefix, self.typed_values = type_prefix, typed_values
        self.result_size_limit = result_size_limit
        self._requested_port = port
        self._cache: dict[tuple, bytes] = {}
        self.ca_file: Path | None = None
        self._context: ssl.SSLContext | None = None
        if https:
            certs = make_certificates(self.folder)
            self.ca_file = certs["ca_file"]
            self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._context.load_cert_chain(certs["server_cert"], certs["server_key"])
        self.requests: list[dict] = []
        self.invocations: list[dict] = []
        self._failures: list[Failure] = []
        self._lock = threading.Lock()
        self._shells: dict[str, _Shell] = {}
        self._shells_lock = threading.Lock()
        self._shapes = _Shapes(organization, type_prefix, typed_values)
        self._stopping = threading.Event()
        self._closed_shells: list[_Shell] = []  # what stop() closed, to join their threads
        self.reindex()

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> Self:
        self._stopping.clear()
        return super().start()

    def _closing(self) -> None:
        """Wake every pipeline that waits for a Receive, so that the server's threads can end."""
        self._stopping.set()
        with self._shells_lock:
            self._closed_shells = list(self._shells.values())
            self._shells.clear()
        for shell in self._closed_shells:
            with shell.cond:
                shell.closed = True
                shell.cond.notify_all()

    def _closed(self) -> None:
        for shell in self._closed_shells:
            for entry in list(shell.pipes.values()):
                if entry.thread is not None:
                    entry.thread.join(timeout=5)

    @property
    def url(self) -> str:
        return f"{'https' if self.https else 'http'}://{self.host}:{self.port}/{self.path}"

    @property
    def round_trips(self) -> int:
        with self._lock:
            return len(self.requests)

    def info(self) -> dict:
        """Everything a client needs, as JSON-able values."""
        return {"url": self.url, "host": self.host, "port": self.port, "path": self.path,
                "https": self.https, "username": self.username, "password": self.password,
                "ca_file": str(self.ca_file) if self.ca_file else None,
                "configuration_name": "Microsoft.Exchange", "domain": self.organization.domain,
                "netbios": self.organization.netbios}

    # -- test controls ----------------------------------------------------------------------

    def fail(self, identity: str, message: str | None = None, cmdlet: str | None = None, *,
             times: int | None = None,
             exception: str = "Microsoft.Exchange.Data.Directory.ADOperationException") -> Failure:
        """Make cmdlets (``cmdlet`` only, e.g. ``"Get-MailboxPermission"``; None: all) write an
        error record instead of the object ``identity`` names (any of its names, or the exact
        -Identity text), like Exchange does for one broken object: an error in the error stream,
        no output for that object, the pipeline goes on and completes. ``times``: only the next N
        times (None: always)."""
        rule = Failure(identity, message, cmdlet.lower() if cmdlet else None, times, exception)
        with self._lock:
            self._failures.append(rule)
        return rule

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    def reset_log(self) -> None:
        with self._lock:
            self.requests.clear()
            self.invocations.clear()

    def counts(self, by: str = "action") -> collections.Counter:
        """How many HTTP requests by ``action`` (Create, Command, Send, Receive, Signal, Delete,
        Get; None for requests that never reached WSMan) or ``status``; or how many cmdlets ran,
        by ``cmdlet``."""
        with self._lock:
            if by == "cmdlet":
                return collections.Counter(i["cmdlet"] for i in self.invocations)
            return collections.Counter(r.get(by) for r in self.requests)

    def reindex(self) -> None:
        """Rebuild the lookup tables (call it after changing ``organization`` while running)."""
        org = self.organization
        org.complete()
        self._index = org.index()
        self._by_guid = org.by_guid()
        self._shapes.reindex(org)
        self._cache = {}

    # -- HTTP -------------------------------------------------------------------------------

    def _serve(self, h: _Handler) -> None:
        started = time.monotonic()
        entry: dict[str, Any] = {"method": h.command, "path": h.path, "action": None, "status": None,
                                 "shell_id": None, "command_id": None}
        try:
            length = int(h.headers.get("Content-Length") or 0)
            body = h.rfile.read(length) if length else b""
            status, payload, headers, ctype = self._handle(h, body, entry)
        except _Reply as reply:
            status, payload, headers, ctype = reply.status, reply.body, reply.headers, reply.content_type
        if self.latency:
            time.sleep(self.latency)
        entry["status"] = status
        entry["seconds"] = round(time.monotonic() - started, 4)
        with self._lock:
            self.requests.append(entry)
        try:
            h.send_response(status)
            h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(len(payload)))
            for key, value in headers.items():
                h.send_header(key, value)
            h.end_headers()
            h.wfile.write(payload)
            h.wfile.flush()
        except OSError:
            h.close_connection = True

    def _check_auth(self, h: _Handler) -> None:
        auth = h.headers.get("Authorization", "")
        ok = False
        if auth[:6].lower() == "basic ":
            try:
                user, _, password = base64.b64decode(auth[6:].strip()).decode("latin-1").partition(":")
                ok = user.lower() == self.username.lower() and password == self.password
            except ValueError:
                ok = False
        if not ok:
            raise _Reply(401, UNAUTHORIZED_BODY, {"WWW-Authenticate": f'Basic realm="{self.host}"'})

    def _handle(self, h: _Handler, body: bytes, entry: dict) -> tuple[int, bytes, dict, str]:
        path = urlsplit(h.path).path
        if path.rstrip("/").lower() != "/" + self.path.lower():
            raise _Reply(404, NOT_FOUND_BODY)
        self._check_auth(h)
        if h.command != "POST":
            raise _Reply(405, b"", {"Allow": "POST"})
        if not body:
            return 200, b"", {}, "application/soap+xml;charset=UTF-8"
        try:
            request = ET.fromstring(body)
        except ET.ParseError:
            raise _Reply(400, b"") from None
        action = request.findtext("s:Header/a:Action", "", NS)
        message_id = request.findtext("s:Header/a:MessageID", "", NS)
        resource_uri = request.findtext("s:Header/w:ResourceURI", "", NS)
        selector = request.find("s:Header/w:SelectorSet/w:Selector[@Name='ShellId']", NS)
        shell_id = selector.text.upper() if selector is not None and selector.text else None
        verb = action.rsplit("/", 1)[-1]
        entry.update(action=verb, shell_id=shell_id)
        try:
            if verb == "Get" and resource_uri == SHELL_RESOURCE_URI:
                pass
            elif resource_uri.lower() != EXCHANGE_RESOURCE_URI.lower():
                raise _WSManFault(
                    2150858811, "DestinationUnreachable",
                    f"The WS-Management service cannot process the request. The resource URI ({resource_uri}) "
                    f"was not found in the WS-Management catalog. The catalog contains the metadata that "
                    f"describes resources, or logical endpoints.", sender=True)
            handler = getattr(self, f"_h_{verb}", None)
            if handler is None or not action.startswith(ACTION_PREFIXES):
                raise _WSManFault(2150858772, "ActionNotSupported",
                                  f"The WS-Management service cannot process the request because the "
                                  f"action {action} is not supported.", sender=True)
            out = handler(request, message_id, resource_uri, shell_id, entry)
            return 200, out, {}, "application/soap+xml;charset=UTF-8"
        except _WSManFault as fault:
            return fault.status, _fault_body(message_id, fault, self.organization.server.lower()), {}, \
                "application/soap+xml;charset=UTF-8"
        except Exception as e:  # noqa: BLE001  (a bug in the fake: make it loud)
            traceback.print_exc()
            fault = _WSManFault(2147500037, "InternalError", f"FakeExchange internal error: {type(e).__name__}: {e}")
            return 500, _fault_body(message_id, fault, self.organization.server.lower()), {}, \
                "application/soap+xml;charset=UTF-8"

    # -- WSMan actions ----------------------------------------------------------------------

    def _shell(self, shell_id: str | None) -> _Shell:
        with self._shells_lock:
            shell = self._shells.get(shell_id or "")
        if shell is None:
            raise _WSManFault(
                2150858843, "InvalidSelectors",
                f"The request for the Windows Remote Shell with ShellId {shell_id} failed because the shell "
                f"was not found on the server. Possible causes are: the specified ShellId is incorrect or "
                f"the shell no longer exists on the server. Provide the correct ShellId or create a new "
                f"shell and execute the remote commands again.", sender=True)
        return shell

    def _h_Create(self, req, mid, rid, _sid, entry) -> bytes:
        shell_el = req.find("s:Body/rsp:Shell", NS)
        creation = shell_el.find("pwsh:creationXml", NS) if shell_el is not None else None
        if creation is None or not creation.text:
            raise _WSManFault(2150858882, "InvalidParameter",
                              "The WS-Management service cannot process the request because the "
                              "creationXml is missing.", sender=True)
        sid = (shell_el.get("ShellId") or str(uuid.uuid4())).upper()
        max_env = int(req.findtext("s:Header/w:MaxEnvelopeSize", "153600", NS) or 153600)
        shell = _Shell(sid, max_env)
        with self._shells_lock:
            self._shells[sid] = shell
        entry["shell_id"] = sid
        self._feed(shell, base64.b64decode(creation.text), None)
        return _envelope(
            "http://schemas.xmlsoap.org/ws/2004/09/transfer/CreateResponse", mid,
            f'<x:ResourceCreated><a:Address>{escape(self.url)}</a:Address><a:ReferenceParameters>'
            f'<w:ResourceURI>{rid}</w:ResourceURI><w:SelectorSet><w:Selector Name="ShellId">{sid}</w:Selector>'
            f'</w:SelectorSet></a:ReferenceParameters></x:ResourceCreated>'
            f'<rsp:Shell><rsp:ShellId>{sid}</rsp:ShellId><rsp:Name>Runspace1</rsp:Name>'
            f'<rsp:ResourceUri>{rid}</rsp:ResourceUri><rsp:Owner>{escape(self.username)}</rsp:Owner>'
            f'<rsp:ClientIP>127.0.0.1</rsp:ClientIP><rsp:ProcessId>4242</rsp:ProcessId>'
            f'<rsp:IdleTimeOut>PT900.000S</rsp:IdleTimeOut><rsp:InputStreams>stdin pr</rsp:InputStreams>'
            f'<rsp:OutputStreams>stdout</rsp:OutputStreams><rsp:MaxIdleTimeOut>PT43200.000S</rsp:MaxIdleTimeOut>'
            f'<rsp:Locale>en-US</rsp:Locale><rsp:DataLocale>en-US</rsp:DataLocale>'
            f'<rsp:CompressionMode>NoCompression</rsp:CompressionMode><rsp:ProfileLoaded>Yes</rsp:ProfileLoaded>'
            f'<rsp:Encoding>UTF8</rsp:Encoding><rsp:BufferMode>Block</rsp:BufferMode><rsp:State>Connected</rsp:State>'
            f'<rsp:ShellRunTime>P0DT0H0M0S</rsp:ShellRunTime><rsp:ShellInactivity>P0DT0H0M0S</rsp:ShellInactivity>'
            f'</rsp:Shell>')

    def _h_Get(self, req, mid, rid, sid, entry) -> bytes:
        shell = self._shell(sid)
        return _envelope("http://schemas.xmlsoap.org/ws/2004/09/transfer/GetResponse", mid,
                         f'<rsp:Shell><rsp:ShellId>{shell.id}</rsp:ShellId><rsp:ResourceUri>{EXCHANGE_RESOURCE_URI}'
                         f'</rsp:ResourceUri><rsp:Owner>{escape(self.username)}</rsp:Owner>'
                         f'<rsp:State>Connected</rsp:State></rsp:Shell>')

    def _h_Command(self, req, mid, rid, sid, entry) -> bytes:
        shell = self._shell(sid)
        line = req.find("s:Body/rsp:CommandLine", NS)
        cid = (line.get("CommandId") if line is not None else None) or str(uuid.uuid4()).upper()
        entry["command_id"] = cid
        arguments = line.findtext("rsp:Arguments", "", NS) if line is not None else ""
        with shell.cond:
            pipe = psrpcore.ServerPipeline(shell.pool, uuid.UUID(cid))
            shell.pipes[pipe.pipeline_id] = _Pipe(pipe)
        self._feed(shell, base64.b64decode(arguments), uuid.UUID(cid))
        return _envelope("http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandResponse", mid,
                         f"<rsp:CommandResponse><rsp:CommandId>{cid.upper()}</rsp:CommandId></rsp:CommandResponse>")

    def _h_Send(self, req, mid, rid, sid, entry) -> bytes:
        shell = self._shell(sid)
        for stream in req.findall("s:Body/rsp:Send/rsp:Stream", NS):
            cid = stream.get("CommandId")
            entry["command_id"] = cid
            self._feed(shell, base64.b64decode(stream.text or ""), uuid.UUID(cid) if cid else None)
        return _envelope("http://schemas.microsoft.com/wbem/wsman/1/windows/shell/SendResponse", mid,
                         "<rsp:SendResponse/>")

    def _h_Receive(self, req, mid, rid, sid, entry) -> bytes:
        shell = self._shell(sid)
        desired = req.find("s:Body/rsp:Receive/rsp:DesiredStream", NS)
        cid = desired.get("CommandId") if desired is not None else None
        entry["command_id"] = cid
        key = uuid.UUID(cid) if cid else None
        timeout = _duration(req.findtext("s:Header/w:OperationTimeout", None, NS), 60.0)
        deadline = time.monotonic() + max(0.0, timeout - 0.5)
        with shell.cond:
            pipe = shell.pipes.get(key) if key is not None else None
            if key is not None and pipe is None:
                raise _WSManFault(2150858843, "InvalidSelectors",
                                  f"The request for the Windows Remote Shell command with CommandId {cid} "
                                  f"failed because the command was not found on the server.", sender=True)
            while not shell.out.get(key) and not (pipe is not None and pipe.done):
                remaining = deadline - time.monotonic()
                if shell.closed or self._stopping.is_set() or remaining <= 0:
                    # what a real server answers when nothing came within OperationTimeout
                    raise _WSManFault(2150858793, "TimedOut",
                                      "The WS-Management service cannot complete the operation within the "
                                      "time specified in OperationTimeout.")
                shell.cond.wait(remaining)
            queue = shell.out.get(key) or collections.deque()
            chunks, size = [], 0
            while queue and (not chunks or size + len(queue[0]) <= shell.budget):
                chunk = queue.popleft()
                chunks.append(chunk)
                size += len(chunk)
            done = pipe is not None and pipe.done and not queue
        attr = f' CommandId="{cid}"' if cid else ""
        streams = (f'<rsp:Stream Name="stdout"{attr}>{base64.b64encode(b"".join(chunks)).decode()}</rsp:Stream>'
                   if chunks else "")
        state = ""
        if key is not None:
            state = f'<rsp:CommandState CommandId="{cid}" State="{DONE if done else RUNNING}"/>'
        return _envelope("http://schemas.microsoft.com/wbem/wsman/1/windows/shell/ReceiveResponse", mid,
                         f"<rsp:ReceiveResponse>{streams}{state}</rsp:ReceiveResponse>")

    def _h_Signal(self, req, mid, rid, sid, entry) -> bytes:
        shell = self._shell(sid)
        signal_el = req.find("s:Body/rsp:Signal", NS)
        cid = signal_el.get("CommandId") if signal_el is not None else None
        code = signal_el.findtext("rsp:Code", "", NS) if signal_el is not None else ""
        entry["command_id"] = cid
        if cid:
            key = uuid.UUID(cid)
            with shell.cond:
                pipe = shell.pipes.get(key)
                if pipe is not None:
                    pipe.stop = True
                    if code.lower().endswith("crtl_c") or code.lower().endswith("ctrl_c"):
                        if pipe.pipe.state == PSInvocationState.Running:
                            pipe.pipe.stop()
                            shell.pump()
                            pipe.done = True
                    else:   # terminate: the client is done with the command
                        shell.pipes.pop(key, None)
                        shell.out.pop(key, None)
                        if pipe.pipe.state in (PSInvocationState.Completed, PSInvocationState.Failed,
                                               PSInvocationState.Stopped):
                            pipe.pipe.close()
                            shell.pump()
                    shell.cond.notify_all()
        return _envelope("http://schemas.microsoft.com/wbem/wsman/1/windows/shell/SignalResponse", mid,
                         "<rsp:SignalResponse/>")

    def _h_Delete(self, req, mid, rid, sid, entry) -> bytes:
        with self._shells_lock:
            shell = self._shells.pop(sid or "", None)
        if shell is None:
            self._shell(sid)   # raises the not-found fault
        with shell.cond:
            shell.closed = True
            for pipe in shell.pipes.values():
                pipe.stop = True
            shell.cond.notify_all()
        return _envelope("http://schemas.xmlsoap.org/ws/2004/09/transfer/DeleteResponse", mid, "")

    # -- PSRP -------------------------------------------------------------------------------

    def _feed(self, shell: _Shell, data: bytes, pipeline_id: uuid.UUID | None) -> None:
        with shell.cond:
            pool = shell.pool
            pool.receive_data(psrpcore.PSRPPayload(data, psrpcore.StreamType.default, pipeline_id))
            while True:
                event = pool.next_event()
                if event is None:
                    break
                if isinstance(event, psrpcore.CreatePipelineEvent):
                    entry = shell.pipes.get(event.pipeline_id)
                    if entry is None:
                        entry = shell.pipes[event.pipeline_id] = _Pipe(pool.pipeline_table[event.pipeline_id])
                    entry.thread = threading.Thread(target=self._run_pipeline, args=(shell, entry),
                                                    name=f"fake-exchange-{event.pipeline_id}", daemon=True)
                    entry.thread.start()
                elif isinstance(event, (psrpcore.SetMaxRunspacesEvent, psrpcore.SetMinRunspacesEvent,
                                        psrpcore.ResetRunspaceStateEvent)):
                    pool.runspace_availability_response(event.ci, True)
                elif isinstance(event, psrpcore.GetAvailableRunspacesEvent):
                    pool.runspace_availability_response(event.ci, max(1, pool.max_runspaces))
            shell.pump()
            shell.cond.notify_all()

    def _run_pipeline(self, shell: _Shell, entry: _Pipe) -> None:
        pipe = entry.pipe
        commands = list(pipe.metadata.commands)
        final_error: ErrorRecord | None = None
        with shell.cond:
            pipe.start()
            shell.pump()
        try:
            for kind, value in self._execute(commands, pipe.pipeline_id):
                with shell.cond:
                    if entry.stop or shell.closed or pipe.state != PSInvocationState.Running:
                        return
                    if kind == "out":
                        self._write_output(shell, pipe, value)
                    elif kind == "err":
                        pipe.prepare_message(value, message_type=PSRPMessageType.ErrorRecord)
                    elif kind == "warn":
                        pipe.write_warning(value)
                    shell.pump()
                    shell.cond.notify_all()
        except _Failed as failed:
            final_error = failed.record
        except Exception as e:  # noqa: BLE001  (a bug in the fake: fail the pipeline loudly)
            traceback.print_exc()
            final_error = _record(f"FakeExchange internal error: {type(e).__name__}: {e}",
                                  ["System.InvalidOperationException"], ErrorCategory.NotSpecified,
                                  "InvalidOperationException", "FakeExchangeInternalError")
        with shell.cond:
            if not (entry.stop or shell.closed) and pipe.state == PSInvocationState.Running:
                if final_error is None:
                    pipe.complete()
                else:
                    pipe._change_state(PSInvocationState.Failed, error=final_error)
                shell.pump()
            entry.done = True
            shell.cond.notify_all()

    # -- the cmdlet engine ------------------------------------------------------------------

    def _exchange_error(self, ctx: _Context, exception: str, message: str, target: Any = None) -> ErrorRecord:
        reason = exception.rsplit(".", 1)[-1]
        task = TASKS.get(ctx.cmdlet.name, ctx.cmdlet.name)
        stamp = datetime.datetime.now().strftime("%m/%d/%Y %I:%M:%S %p").lstrip("0").replace("/0", "/")
        fqid = (f"[Server={self.organization.server},RequestId={uuid.uuid4()},TimeStamp={stamp}] "
                f"[FailureCategory=Cmdlet-{reason}] {zlib.crc32(f'{reason},{task}'.encode()):08X},{task}")
        return _record(message, [exception, "Microsoft.Exchange.Data.LocalizedException"],
                       ErrorCategory.NotSpecified, reason, fqid, activity=ctx.cmdlet.name, target=target)

    def _binding_error(self, name: str, message: str, error_id: str) -> _Failed:
        task = TASKS.get(name, name)
        return _Failed(_record(message, ["System.Management.Automation.ParameterBindingException"] + RUNTIME_EXCEPTION,
                               ErrorCategory.InvalidArgument, "ParameterBindingException",
                               f"{error_id},{task}", activity=name))

    def _execute(self, commands: list, pipeline_id: uuid.UUID) -> Iterator[tuple[str, Any]]:
        """Check and bind the whole pipeline (terminating errors first, like PowerShell), then
        stream its events: ("out", PSObject) / ("err", ErrorRecord) / ("warn", str)."""
        with self._lock:
            for command in commands:
                self.invocations.append({
                    "cmdlet": str(command.command_text), "script": bool(command.is_script),
                    "parameters": {str(n) if n is not None else None: _plain(v) for n, v in command.parameters},
                    "pipeline_id": str(pipeline_id)})
        for command in commands:
            if command.is_script:
                raise _Failed(_record(SCRIPTS_NOT_ALLOWED,
                                      ["System.Management.Automation.ParseException"] + RUNTIME_EXCEPTION,
                                      ErrorCategory.ParserError, "ParseException", "ScriptsNotAllowed",
                                      target_name=str(command.command_text), target_type="String"))
        stages = []
        for position, command in enumerate(commands):
            name = str(command.command_text)
            cmdlet = CMDLETS.get(name.lower())
            if cmdlet is None:
                raise _Failed(_record(
                    f"The term '{name}' is not recognized as the name of a cmdlet, function, script file, "
                    f"or operable program. Check the spelling of the name, or if a path was included, "
                    f"verify that the path is correct and try again.",
                    ["System.Management.Automation.CommandNotFoundException"] + RUNTIME_EXCEPTION,
                    ErrorCategory.ObjectNotFound, "CommandNotFoundException", "CommandNotFoundException",
                    target_name=name, target_type="String"))
            stages.append((cmdlet, self._bind(cmdlet, command.parameters, piped=position > 0)))
        events: Iterator[tuple[str, Any]] | None = None
        for cmdlet, params in stages:
            ctx = _Context(cmdlet, params)
            run = getattr(self, cmdlet.run)
            events = run(ctx, None) if events is None else self._chain(events, ctx, run)
            events = self._preferences(events, ctx)
        yield from events

    def _chain(self, upstream: Iterator, ctx: _Context, run) -> Iterator[tuple[str, Any]]:
        """Pipeline input: each upstream object binds the next cmdlet's -Identity."""
        for kind, value in upstream:
            if kind != "out":
                yield kind, value
                continue
            obj = value[1] if value[0] != "ace" else value[1][0]
            yield from run(ctx, obj)

    @staticmethod
    def _preferences(events: Iterator, ctx: _Context) -> Iterator[tuple[str, Any]]:
        for kind, value in events:
            if kind == "err":
                if ctx.error_action in ("silentlycontinue", "ignore"):
                    continue
                if ctx.error_action == "stop":
                    raise _Failed(value)
            if kind == "warn" and ctx.warning_action in ("silentlycontinue", "ignore"):
                continue
            yield kind, value

    def _shape(self, value: tuple[str, Any]) -> PSObject:
        kind, obj = value
        shapes = self._shapes
        if kind == "ace":
            return shapes.ace(*obj)
        return {"mailbox": shapes.mailbox, "recipient": shapes.recipient, "dgroup": shapes.distribution_group,
                "wgroup": shapes.windows_group}[kind](obj)

    def _write_output(self, shell: _Shell, pipe: psrpcore.ServerPipeline, value: tuple[str, Any]) -> None:
        """Queue one output object. Its CLIXML is cached (per object, until :meth:`reindex`): this
        is what ``pipe.write_output(self._shape(value))`` does, minus psrpcore serializing the same
        mailbox again for every test."""
        kind, obj = value
        key = (kind, obj[0]["Guid"], id(obj[1])) if kind == "ace" else (kind, obj["Guid"])
        data = self._cache.get(key)
        if data is None:
            data = ET.tostring(ps_serialize(self._shape(value), shell.pool._cipher), encoding="utf-8",
                               method="xml")
            self._cache[key] = data
        pool = shell.pool
        message = create_message(False, PSRPMessageType.PipelineOutput, data, pool.runspace_pool_id,
                                 pipe.pipeline_id)
        pool._send_buffer.append(PSRPMessage(PSRPMessageType.PipelineOutput, bytearray(message),
                                             pool.runspace_pool_id, pipe.pipeline_id, pool._fragment_counter))

    def _bind(self, cmdlet: _Cmdlet, parameters: list, piped: bool) -> dict[str, Any]:
        known = cmdlet.params + cmdlet.ignored + cmdlet.unsupported + COMMON_PARAMETERS
        params: dict[str, Any] = {}
        for raw_name, value in parameters:
            if raw_name is None:
                if "Identity" in cmdlet.params and "Identity" not in params:
                    params["Identity"] = value
                    continue
                raise self._binding_error(cmdlet.name, f"A positional parameter cannot be found that accepts "
                                                       f"argument '{value}'.", "PositionalParameterNotFound")
            name = str(raw_name).lstrip("-")
            matches = [k for k in known if k.lower() == name.lower()] or \
                      [k for k in known if k.lower().startswith(name.lower())]
            if not matches:
                raise self._binding_error(cmdlet.name, f"A parameter cannot be found that matches parameter "
                                                       f"name '{name}'.", "NamedParameterNotFound")
            if len(matches) > 1:
                raise self._binding_error(cmdlet.name, f"Parameter cannot be processed because the parameter "
                                                       f"name '{name}' is ambiguous. Possible matches include: "
                                                       f"-{' -'.join(matches)}.", "AmbiguousParameter")
            if matches[0] in cmdlet.unsupported:
                raise self._binding_error(cmdlet.name, f"FakeExchange does not implement the parameter "
                                                       f"'{matches[0]}' of {cmdlet.name}.", "NotImplementedByFake")
            params[matches[0]] = value
        missing = [m for m in cmdlet.mandatory if m not in params and not (piped and m == "Identity")]
        if missing:
            raise self._binding_error(cmdlet.name, f"Cannot process command because of one or more missing "
                                                   f"mandatory parameters: {' '.join(missing)}.",
                                      "MissingMandatoryParameter")
        if "ResultSize" in params:
            params["ResultSize"] = self._result_size(cmdlet, params["ResultSize"])
        if "RecipientTypeDetails" in params:
            params["RecipientTypeDetails"] = self._recipient_types(cmdlet, params["RecipientTypeDetails"])
        return params

    def _result_size(self, cmdlet: _Cmdlet, value: Any) -> int | None:
        text = str(value).strip()
        if text.lower() == "unlimited":
            return None
        if text.isdigit() and int(text) > 0:
            return int(text)
        raise self._binding_error(
            cmdlet.name, f"Cannot bind parameter 'ResultSize'. Cannot convert value \"{text}\" to type "
                         f"\"Microsoft.Exchange.Data.Unlimited`1[System.UInt32]\". Error: \"The value is not "
                         f"a valid Unlimited<uint> value.\"", "CannotConvertArgumentNoMessage")

    def _recipient_types(self, cmdlet: _Cmdlet, value: Any) -> set[str]:
        items = value if isinstance(value, (list, tuple)) else [value]
        names = set()
        for item in items:
            for part in str(item).split(","):
                part = part.strip()
                match = [n for n in RECIPIENT_TYPE_DETAILS if n.lower() == part.lower()]
                if not match:
                    raise self._binding_error(
                        cmdlet.name,
                        f"Cannot bind parameter 'RecipientTypeDetails'. Cannot convert value \"{part}\" to type "
                        f"\"Microsoft.Exchange.Data.Directory.Recipient.RecipientTypeDetails\". Error: \"Unable "
                        f"to match the identifier name {part} to a valid enumerator name. Specify one of the "
                        f"following enumerator names and try again:\r\n{', '.join(RECIPIENT_TYPE_DETAILS)}\"",
                        "CannotConvertArgumentNoMessage")
                names.add(match[0])
        return names

    def _failure_for(self, ctx: _Context, obj: dict | None, identity: Any) -> ErrorRecord | None:
        with self._lock:
            rules = list(self._failures)
        if not rules:
            return None
        keys = set()
        if obj is not None:
            keys = self.organization.exact_keys(obj) | self.organization.name_keys(obj)
        if identity is not None:
            keys.add(_norm_identity(identity))
        for rule in rules:
            if rule.cmdlet and rule.cmdlet != ctx.cmdlet.name.lower():
                continue
            if _norm_identity(rule.identity) not in keys:
                continue
            with self._lock:
                if rule.times is not None and rule.hits >= rule.times:
                    continue
                rule.hits += 1
            name = obj["Identity"] if obj else str(identity)
            message = rule.message or (
                f"Active Directory operation failed on {self.organization.domain_controller}. This error is "
                f"not retriable. Additional information: Access is denied. Object: {name}")
            return self._exchange_error(ctx, rule.exception, message)
        return None

    def _resolve(self, ctx: _Context, identity: Any, kinds: str) -> Iterator[tuple[str, Any]]:
        """Yield ("found", obj) or the error event for an -Identity value."""
        found = self.organization.resolve(identity, self._index, kinds)
        if not found:
            failure = self._failure_for(ctx, None, identity)
            yield "err", failure or self._exchange_error(
                ctx, "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException",
                f"The operation couldn't be performed because object '{identity}' couldn't be found on "
                f"'{self.organization.domain_controller}'.")
        elif len(found) > 1:
            yield "err", self._exchange_error(
                ctx, "Microsoft.Exchange.Configuration.Tasks.ManagementObjectAmbiguousException",
                f"The operation couldn't be performed because '{identity}' matches multiple entries.")
        else:
            yield "found", found[0]

    def _objects(self, ctx: _Context, piped: dict | None, kinds: str, pool: list[dict],
                 kind: str) -> Iterator[tuple[str, Any]]:
        """The common Get-* logic: -Identity (or pipeline input) or enumerate with
        -RecipientTypeDetails and -ResultSize; failures injected by :meth:`fail`."""
        p = ctx.params
        wanted = p.get("RecipientTypeDetails")
        if piped is not None or "Identity" in p:
            identity = piped["Guid"] if piped is not None else p["Identity"]
            for tag, obj in self._resolve(ctx, identity, kinds):
                if tag == "err":
                    yield tag, obj
                    continue
                if wanted and obj["RecipientTypeDetails"] not in wanted:
                    yield "err", self._exchange_error(
                        ctx, "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException",
                        f"The operation couldn't be performed because object '{identity}' couldn't be found "
                        f"on '{self.organization.domain_controller}'.")
                    continue
                failure = self._failure_for(ctx, obj, None if piped is not None else identity)
                yield ("err", failure) if failure else ("out", (kind, obj))
            return
        rows = [o for o in pool if not wanted or o["RecipientTypeDetails"] in wanted]
        yield from self._limited(ctx, rows, kind)

    def _limited(self, ctx: _Context, rows: list, kind: str) -> Iterator[tuple[str, Any]]:
        default = "ResultSize" not in ctx.params
        limit = self.result_size_limit if default else ctx.params["ResultSize"]
        for i, obj in enumerate(rows):
            if limit is not None and i >= limit:
                yield "warn", (DEFAULT_LIMIT_WARNING.replace("1000", str(limit)) if default
                               else MORE_RESULTS_WARNING)
                return
            target = obj if kind != "ace" else obj[0]
            failure = self._failure_for(ctx, target, None)
            yield ("err", failure) if failure else ("out", (kind, obj))

    def _get_mailbox(self, ctx: _Context, piped: dict | None) -> Iterator[tuple[str, Any]]:
        return self._objects(ctx, piped, "mailbox", self.organization.mailboxes, "mailbox")

    def _get_recipient(self, ctx: _Context, piped: dict | None) -> Iterator[tuple[str, Any]]:
        org = self.organization
        return self._objects(ctx, piped, "all", org.mailboxes + org.groups, "recipient")

    def _get_distribution_group(self, ctx: _Context, piped: dict | None) -> Iterator[tuple[str, Any]]:
        return self._objects(ctx, piped, "group", self.organization.groups, "dgroup")

    def _get_group(self, ctx: _Context, piped: dict | None) -> Iterator[tuple[str, Any]]:
        return self._objects(ctx, piped, "group", self.organization.groups, "wgroup")

    def _get_mailbox_permission(self, ctx: _Context, piped: dict | None) -> Iterator[tuple[str, Any]]:
        identity = piped["Guid"] if piped is not None else ctx.params["Identity"]
        for tag, mb in self._resolve(ctx, identity, "mailbox"):
            if tag == "err":
                yield tag, mb
                continue
            failure = self._failure_for(ctx, mb, None if piped is not None else identity)
            if failure:
                yield "err", failure
                continue
            rows = self.organization.permissions.get(mb["Guid"], [])
            rows = [r for r in rows if not r["IsInherited"]] + [r for r in rows if r["IsInherited"]]
            if "User" in ctx.params:
                user = str(ctx.params["User"])
                found = self.organization.resolve(user, self._index)
                names = {user.lower()} | {self.organization.trustee(o).lower() for o in found}
                rows = [r for r in rows if r["User"].lower() in names]
            for row in rows:
                yield "out", ("ace", (mb, row))

    def _get_distribution_group_member(self, ctx: _Context, piped: dict | None) -> Iterator[tuple[str, Any]]:
        identity = piped["Guid"] if piped is not None else ctx.params["Identity"]
        for tag, group in self._resolve(ctx, identity, "group"):
            if tag == "err":
                yield tag, group
                continue
            failure = self._failure_for(ctx, group, None if piped is not None else identity)
            if failure:
                yield "err", failure
                continue
            members = [self._by_guid[g] for g in group["Members"] if g in self._by_guid]
            yield from self._limited(ctx, members, "recipient")


# --------------------------------------------------------------------------------------------
# As a process
# --------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = loopback.process_arguments("Serve the fake Exchange PowerShell endpoint until killed.")
    parser.add_argument("--organization-file", type=Path, help="an Organization saved with Organization.save()")
    parser.add_argument("--generate", type=int, metavar="N", help="generate an organisation with N user mailboxes")
    parser.add_argument("--shared", type=int, default=60)
    parser.add_argument("--groups", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--http", action="store_true", help="plain HTTP instead of HTTPS")
    parser.add_argument("--username", default="CONTOSO\\svc-zivsync")
    parser.add_argument("--password")
    parser.add_argument("--type-prefix", default="", help='"Deserialized." to prefix every type name')
    parser.add_argument("--typed-values", action="store_true", help="enum values as enum objects")
    args = parser.parse_args(argv)
    if args.organization_file:
        org = Organization.load(args.organization_file)
    elif args.generate is not None:
        org = Organization.generate(args.generate, args.shared, seed=args.seed, groups=args.groups)
    else:
        parser.error("give --organization-file or --generate")
    return loopback.serve_until_signalled(
        lambda folder: FakeExchange(folder, org, username=args.username, password=args.password,
                                    https=not args.http, latency=args.latency, port=args.port,
                                    type_prefix=args.type_prefix, typed_values=args.typed_values),
        args.folder, args.info_file, "fake-exchange-")


if __name__ == "__main__":
    sys.exit(main())
