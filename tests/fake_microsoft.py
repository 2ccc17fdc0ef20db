"""A loopback HTTPS fake of the Microsoft endpoints that ``zivsync-extract-exo`` talks to.

It speaks the real protocol (``shared/reference/exchange.md`` section 1 and
``testinfra.md`` section 3), so that the real client libraries work against it unchanged:

* Entra ID: ``/{tenant}/v2.0/.well-known/openid-configuration``, ``/{tenant}/oauth2/v2.0/token``
  (client credentials with a secret or a certificate assertion, device code, refresh token) and
  ``/{tenant}/oauth2/v2.0/devicecode``: enough for msal's ``ConfidentialClientApplication`` and
  ``PublicClientApplication`` with ``authority=fake.authority, instance_discovery=False``;
* the Exchange Online admin API: ``POST /adminapi/beta/{tenant}/InvokeCommand`` (paging with
  ``Prefer: odata.maxpagesize``, ``@odata.nextLink``, ``$select``) and ``POST .../$batch``;
* a little of Microsoft Graph under ``/graph/v1.0``: a group, its members and its transitive
  members (``.../transitiveMembers/microsoft.graph.user``), with ``$select``/``$top`` paging.

Faults on demand: throttling (429 + ``Retry-After``), latency, failing cmdlets
(:meth:`FakeMicrosoft.fail`), expiring or revoked tokens, a missing app role.

Use it from a test::

    with FakeMicrosoft(tmp_path, Tenant.generate(mailboxes=50, shared=20)) as fake:
        session = requests.Session(); session.verify = str(fake.ca_file); session.trust_env = False
        app = msal.ConfidentialClientApplication(fake.client_id, authority=fake.authority,
                  client_credential=fake.client_secret, instance_discovery=False, http_client=session)
        token = app.acquire_token_for_client([f"{fake.exchange_url}/.default"])["access_token"]

or as a process (benchmarks): ``python tests/fake_microsoft.py --generate 1500 --info-file info.json``
prints ``READY <port>`` and serves until killed; the info file holds the URLs, the CA, the
credentials.
"""

from __future__ import annotations

import base64
import collections
import copy
import datetime
import fnmatch
import hashlib
import itertools
import json
import random
import re
import secrets
import ssl
import string
import sys
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import jwt  # PyJWT, comes with msal
import loopback
import testcerts
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12

DEFAULT_CLIENT_ID = "6f1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
OUTLOOK_RESOURCES = ("https://outlook.office365.com", "https://outlook.office.com",
                     "00000002-0000-0ff1-ce00-000000000000")
GRAPH_RESOURCES = ("https://graph.microsoft.com", "00000003-0000-0000-c000-000000000000")
GRAPH_READ_ROLES = ("GroupMember.Read.All", "Group.Read.All", "Directory.Read.All")
SERVER_FQDN = "AM0PR01A001DC01.EURPR01A001.PROD.OUTLOOK.COM"
DOMAIN_PREFIX = "EURPR01A001"
SELF = "NT AUTHORITY\\SELF"
MAILBOX_TYPES = ("UserMailbox", "SharedMailbox", "RoomMailbox", "EquipmentMailbox")
GROUP_TYPES = ("MailUniversalDistributionGroup", "MailUniversalSecurityGroup")
KNOWN_RTD = MAILBOX_TYPES + GROUP_TYPES + (
    "LinkedMailbox", "SchedulingMailbox", "TeamMailbox", "DiscoveryMailbox", "GroupMailbox",
    "MailUser", "MailContact", "GuestMailUser", "DynamicDistributionGroup", "RoomList",
    "MailNonUniversalGroup", "RemoteUserMailbox", "RemoteSharedMailbox")
ODATA_LIST = "#Collection(String)"
ADMIN_CONTENT_TYPE = ("application/json; odata.metadata=minimal; odata.streaming=true; "
                      "IEEE754Compatible=false; charset=utf-8")
MORE_RESULTS_WARNING = ("There are more results available than are currently displayed. "
                        "To view them, increase the value for the ResultSize parameter.")


# --------------------------------------------------------------------------------------------
# Tenant: the fixture data
# --------------------------------------------------------------------------------------------

def _onmicrosoft(domain: str) -> str:
    return f"{domain.split('.')[0]}.onmicrosoft.com"


def _address(proxy: str) -> str:
    """'SMTP:a@b' -> 'a@b'; an address without a prefix stays as it is."""
    head, sep, tail = proxy.partition(":")
    return tail if sep and "@" not in head else proxy


@dataclass
class Tenant(loopback.JsonSaved):
    """One Exchange Online organisation: mailboxes, groups and mailbox permissions, in the shapes
    the cmdlets return (``Get-Mailbox``, ``Get-DistributionGroup``, ``Get-MailboxPermission``).

    * ``mailboxes``: Get-Mailbox rows (``Guid``, ``ExternalDirectoryObjectId``,
      ``PrimarySmtpAddress``, ``EmailAddresses``, ``DisplayName``, ``UserPrincipalName``, ``Alias``,
      ``Name``, ``Identity``, ``RecipientTypeDetails``, ``AccountDisabled``, ...). Missing keys are
      filled in (see :meth:`complete`), so a test may give only ``Alias`` and a type.
    * ``groups``: Get-DistributionGroup rows plus ``Members``: the ``Guid`` of each direct member
      (a mailbox or a group; an address or a Name works too). ``Members`` is never served as a
      property.
    * ``permissions``: mailbox ``Guid`` -> Get-MailboxPermission rows (``Identity``, ``User``,
      ``AccessRights``, ``IsInherited``, ``Deny``, ``InheritanceType``).
    * ``app_roles``: the application roles in app-only tokens for the Exchange resource (the admin
      API needs ``Exchange.ManageAsApp``); ``graph_roles`` the same for Graph (it needs one of
      GroupMember.Read.All, Group.Read.All, Directory.Read.All); ``user_scopes``: the delegated
      scopes (``scp``) in tokens an administrator gets by the device code flow (the admin API
      needs ``Exchange.Manage``).
    * ``scenarios``: names -> primary addresses of the interesting objects (see :meth:`generate`).
    """

    tenant_id: str = ""
    domain: str = "contoso.example"
    mailboxes: list[dict] = field(default_factory=list)
    groups: list[dict] = field(default_factory=list)
    permissions: dict[str, list[dict]] = field(default_factory=dict)
    app_roles: list[str] = field(default_factory=lambda: ["Exchange.ManageAsApp"])
    graph_roles: list[str] = field(default_factory=lambda: ["GroupMember.Read.All"])
    user_scopes: list[str] = field(default_factory=lambda: ["Exchange.Manage", "GroupMember.Read.All"])
    admin_upn: str = ""
    scenarios: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if not self.tenant_id:
            self.tenant_id = str(uuid.uuid5(uuid.NAMESPACE_DNS, self.domain))
        if not self.admin_upn:
            self.admin_upn = f"admin@{self.domain}"
        self.complete()

    # -- building ---------------------------------------------------------------------------

    def _uuid(self, kind: str, name: str) -> str:
        return str(uuid.uuid5(uuid.UUID(self.tenant_id), f"{kind}:{name.lower()}"))

    def complete(self) -> None:
        """Fill in every property a hand-written mailbox or group lacks (idempotent)."""
        for mailbox in self.mailboxes:
            self._complete_mailbox(mailbox)
        for group in self.groups:
            self._complete_group(group)
        by_guid = {m["Guid"]: m for m in self.mailboxes}
        for guid, rows in self.permissions.items():
            owner = by_guid.get(guid)
            for row in rows:
                self._complete_ace(row, owner)

    def _complete_common(self, obj: dict, kind: str) -> None:
        alias = obj.get("Alias") or (obj.get("PrimarySmtpAddress") or "").split("@")[0] \
            or re.sub(r"[^A-Za-z0-9.-]", "", obj.get("Name") or obj.get("DisplayName") or "")
        if not alias:
            raise ValueError(f"{kind} needs at least an Alias, Name or PrimarySmtpAddress: {obj}")
        obj.setdefault("Alias", alias)
        obj.setdefault("Name", alias)
        obj.setdefault("DisplayName", obj["Name"])
        obj.setdefault("Identity", obj["Name"])
        obj.setdefault("Id", obj["Identity"])
        obj.setdefault("Guid", self._uuid(kind, alias))
        obj.setdefault("ExchangeObjectId", obj["Guid"])
        obj.setdefault("ExternalDirectoryObjectId", self._uuid(kind + "-entra", alias))
        obj.setdefault("PrimarySmtpAddress", f"{alias}@{self.domain}")
        obj.setdefault("WindowsEmailAddress", obj["PrimarySmtpAddress"])
        primary = obj["PrimarySmtpAddress"]
        addresses = obj.setdefault("EmailAddresses", [])
        if not any(a.lower() == f"smtp:{primary.lower()}" for a in addresses):
            addresses.insert(0, f"SMTP:{primary}")
        obj.setdefault("DistinguishedName",
                       f"CN={obj['Name']},OU={_onmicrosoft(self.domain)},OU=Microsoft Exchange Hosted "
                       f"Organizations,DC={DOMAIN_PREFIX},DC=PROD,DC=OUTLOOK,DC=COM")
        obj.setdefault("OrganizationalUnit", f"{DOMAIN_PREFIX}.PROD.OUTLOOK.COM/Microsoft Exchange "
                                             f"Hosted Organizations/{_onmicrosoft(self.domain)}")
        obj.setdefault("HiddenFromAddressListsEnabled", False)
        obj.setdefault("IsDirSynced", False)
        obj.setdefault("WhenCreated", "2022-03-14T09:26:53Z")
        obj.setdefault("WhenChanged", "2024-11-02T17:05:11Z")

    def _complete_mailbox(self, mb: dict) -> None:
        self._complete_common(mb, "mailbox")
        kind = mb.setdefault("RecipientTypeDetails", "UserMailbox")
        if kind not in MAILBOX_TYPES:
            raise ValueError(f"RecipientTypeDetails {kind!r} is not one of {MAILBOX_TYPES}")
        mb.setdefault("RecipientType", "UserMailbox")
        mb.setdefault("UserPrincipalName", mb["PrimarySmtpAddress"])
        mb.setdefault("MicrosoftOnlineServicesID", mb["UserPrincipalName"])
        mb.setdefault("ExchangeGuid", self._uuid("exchange", mb["Alias"]))
        mb.setdefault("AccountDisabled", kind != "UserMailbox")
        mb.setdefault("IsMailboxEnabled", True)
        mb.setdefault("IsShared", kind == "SharedMailbox")
        mb.setdefault("IsResource", kind in ("RoomMailbox", "EquipmentMailbox"))
        mb.setdefault("GrantSendOnBehalfTo", [])
        mb.setdefault("Database", "EURPR01DG123-db045")

    def _complete_group(self, group: dict) -> None:
        self._complete_common(group, "group")
        kind = group.setdefault("RecipientTypeDetails", "MailUniversalSecurityGroup")
        if kind not in GROUP_TYPES:
            raise ValueError(f"RecipientTypeDetails {kind!r} is not one of {GROUP_TYPES}")
        group.setdefault("RecipientType", kind)
        group.setdefault("GroupType", "Universal, SecurityEnabled"
                         if kind == "MailUniversalSecurityGroup" else "Universal")
        group.setdefault("ManagedBy", [])
        group.setdefault("MemberJoinRestriction", "Closed")
        group.setdefault("MemberDepartRestriction", "Closed")
        group.setdefault("Members", [])

    def _complete_ace(self, row: dict, owner: dict | None) -> None:
        if owner is not None:
            row.setdefault("Identity", owner["Identity"])
        rights = row.setdefault("AccessRights", ["FullAccess"])
        if isinstance(rights, str):
            row["AccessRights"] = [r.strip() for r in rights.split(",")]
        row.setdefault("IsInherited", False)
        row.setdefault("Deny", False)
        row.setdefault("InheritanceType", "All")
        row.setdefault("IsValid", True)
        row.setdefault("ObjectState", "Unchanged")

    def add_mailbox(self, alias: str, kind: str = "UserMailbox", *, display_name: str | None = None,
                    addresses: Iterable[str] = (), default_aces: bool = True, **properties) -> dict:
        """Add a mailbox (``addresses``: extra proxy addresses like ``"smtp:x@y"``, ``"SIP:x@y"``);
        ``default_aces`` gives it the SELF and inherited rows every Exchange Online mailbox has."""
        mb = {"Alias": alias, "RecipientTypeDetails": kind, **properties}
        if display_name:
            mb["DisplayName"] = display_name
        self._complete_mailbox(mb)
        mb["EmailAddresses"].extend(a for a in addresses if a not in mb["EmailAddresses"])
        onms = f"smtp:{alias}@{_onmicrosoft(self.domain)}"
        if onms.lower() not in (a.lower() for a in mb["EmailAddresses"]):
            mb["EmailAddresses"].append(onms)
        self.mailboxes.append(mb)
        if default_aces:
            for row in standard_aces():
                self.grant(mb, **row)
        return mb

    def add_group(self, name: str, members: Iterable[dict | str] = (), *,
                  kind: str = "MailUniversalSecurityGroup", display_name: str | None = None,
                  alias: str | None = None, **properties) -> dict:
        alias = alias or re.sub(r"[^A-Za-z0-9.-]", "", name.replace(" ", "-")).lower()
        group = {"Name": name, "Alias": alias, "RecipientTypeDetails": kind, **properties}
        group["DisplayName"] = display_name or name
        self._complete_group(group)
        group["EmailAddresses"].append(f"smtp:{alias}@{_onmicrosoft(self.domain)}")
        self.groups.append(group)
        self.add_members(group, *members)
        return group

    def add_members(self, group: dict, *members: dict | str) -> None:
        for member in members:
            guid = member["Guid"] if isinstance(member, dict) else member
            if guid not in group["Members"]:
                group["Members"].append(guid)

    def grant(self, mailbox: dict, user: dict | str, access_rights: Iterable[str] = ("FullAccess",),
              *, inherited: bool = False, deny: bool = False, inheritance: str = "All",
              **properties) -> dict:
        """Add a Get-MailboxPermission row on ``mailbox`` for ``user``: a mailbox (its UPN becomes
        ``User``), a group (its ``Name``) or any string (a UPN, ``NT AUTHORITY\\SELF``, a SID)."""
        if isinstance(user, dict):
            user = user["UserPrincipalName"] if "UserPrincipalName" in user else user["Name"]
        row = {"Identity": mailbox["Identity"], "User": user, "AccessRights": list(access_rights),
               "IsInherited": inherited, "Deny": deny, "InheritanceType": inheritance, **properties}
        self._complete_ace(row, mailbox)
        self.permissions.setdefault(mailbox["Guid"], []).append(row)
        return row

    # -- looking up -------------------------------------------------------------------------

    def identity_keys(self, obj: dict) -> set[str]:
        """Every string that names ``obj`` as an ``-Identity`` (lower case)."""
        keys = {obj.get(k) for k in ("Guid", "ExternalDirectoryObjectId", "ExchangeObjectId",
                                     "PrimarySmtpAddress", "UserPrincipalName", "Name", "DisplayName",
                                     "Alias", "Identity", "DistinguishedName", "ExchangeGuid")}
        keys.update(_address(a) for a in obj.get("EmailAddresses", []) if a.lower().startswith("smtp:"))
        return {k.lower() for k in keys if isinstance(k, str) and k}

    def index(self) -> dict[str, list[dict]]:
        """Lower-case identity string -> the mailboxes and groups it names."""
        index: dict[str, list[dict]] = collections.defaultdict(list)
        for obj in self.mailboxes + self.groups:
            for key in self.identity_keys(obj):
                index[key].append(obj)
        return index

    def find(self, identity: str, index: dict | None = None) -> list[dict]:
        """The mailboxes and groups ``identity`` names (an empty list if none)."""
        key = identity.strip().lower()
        if index is not None:
            return list(index.get(key, []))
        return [o for o in self.mailboxes + self.groups if key in self.identity_keys(o)]

    def member_objects(self, group: dict, index: dict | None = None) -> list[dict]:
        """The direct members of ``group`` (references that name nothing are skipped)."""
        out = []
        for ref in group.get("Members", []):
            found = self.find(ref, index)
            if found:
                out.append(found[0])
        return out

    def transitive_users(self, group: dict, index: dict | None = None) -> list[dict]:
        """The mailboxes reachable from ``group`` through nested groups (cycle-safe, each once)."""
        seen_groups, seen_users, out = {group["Guid"]}, set(), []
        queue = collections.deque([group])
        while queue:
            for member in self.member_objects(queue.popleft(), index):
                if member["RecipientTypeDetails"] in GROUP_TYPES:
                    if member["Guid"] not in seen_groups:
                        seen_groups.add(member["Guid"])
                        queue.append(member)
                elif member["Guid"] not in seen_users:
                    seen_users.add(member["Guid"])
                    out.append(member)
        return out

    def expected_full_access(self) -> dict[str, set[str]]:
        """The oracle: mailbox primary address -> primary addresses of the mailboxes with Full
        Access to it, by the rules of exchange.md section 1.6: rows with FullAccess, not inherited,
        not Deny (a Deny row is dropped, never subtracted), not SELF, not a SID; the trustee resolved
        like Get-Recipient does (unresolvable trustees, e.g. deleted users, are left out), groups
        expanded transitively. Mailboxes with nobody are left out."""
        result: dict[str, set[str]] = {}
        index = self.index()
        by_guid = {m["Guid"]: m for m in self.mailboxes}
        for guid, rows in self.permissions.items():
            owner = by_guid.get(guid)
            if owner is None:
                continue
            users: set[str] = set()
            for row in rows:
                if ("FullAccess" not in row["AccessRights"] or row["IsInherited"] or row["Deny"]
                        or row["User"] == SELF or row["User"].upper().startswith("S-1-5-")):
                    continue
                found = self.find(row["User"], index)
                if len(found) != 1:
                    continue
                trustee = found[0]
                if trustee["RecipientTypeDetails"] in GROUP_TYPES:
                    users.update(u["PrimarySmtpAddress"] for u in self.transitive_users(trustee, index))
                else:
                    users.add(trustee["PrimarySmtpAddress"])
            if users:
                result[owner["PrimarySmtpAddress"]] = users
        return result

    def by_address(self, address: str) -> dict:
        found = self.find(address)
        if len(found) != 1:
            raise KeyError(address)
        return found[0]

    # -- generating -------------------------------------------------------------------------

    @classmethod
    def generate(cls, mailboxes: int = 1500, shared: int = 300, *, seed: int = 1, rooms: int = 4,
                 equipment: int = 2, groups: int = 40, domain: str = "contoso.example",
                 tenant_id: str | None = None) -> Tenant:
        """A realistic tenant; the same arguments give the same tenant.

        * ``mailboxes`` UserMailboxes (aliases like ``anna.jansen``, ``anna.jansen2``; ~3 % disabled;
          extra ``smtp:`` aliases, ``SIP:``/``X500:`` entries, a legacy-domain address for some),
          ``shared`` SharedMailboxes (``sales-001`` ...), ``rooms`` RoomMailboxes, ``equipment``
          EquipmentMailboxes; every mailbox has ``smtp:alias@<tenant>.onmicrosoft.com`` and the
          standard ACEs (SELF, inherited Deny for Administrator/Domain Admins, inherited allow for
          Organization Management and SYSTEM).
        * security groups for the scenarios (``scenarios`` maps a name to the address):
          ``SG-Direct`` (users), ``SG-Outer`` > ``SG-Middle`` > ``SG-Inner`` (nested two deep),
          ``SG-CycleA`` <> ``SG-CycleB`` (a cycle), ``SG-Empty``; plus ``groups`` more groups (half
          distribution, half security, 3-25 users, some nesting an earlier group).
        * the first 12 shared mailboxes are the scenarios (needs ``shared >= 12``): see
          ``SCENARIOS`` in the source and :meth:`expected_full_access` for the oracle. The other
          shared mailboxes have 0-3 users with Full Access and sometimes a random security group;
          about 2 % of the user mailboxes have an assistant with Full Access.
        """
        rng = random.Random(seed)
        tid = tenant_id or str(uuid.UUID(int=rng.getrandbits(128), version=4))
        t = cls(tenant_id=tid, domain=domain)
        legacy = domain.replace(".", "-old.", 1)
        taken: collections.Counter = collections.Counter()
        users = []
        for i in range(mailboxes):
            first, last = rng.choice(loopback.FIRST_NAMES), rng.choice(loopback.LAST_NAMES)
            base = f"{first}.{last.replace(' ', '')}".lower()
            taken[base] += 1
            alias = base if taken[base] == 1 else f"{base}{taken[base]}"
            extra = []
            roll = rng.random()
            if roll < 0.15:
                extra.append(f"smtp:{first[0].lower()}{last.replace(' ', '').lower()}{i}@{domain}")
            if roll < 0.20:
                extra.append(f"smtp:{alias}@{legacy}")
            if rng.random() < 0.10:
                extra.append(f"SIP:{alias}@{domain}")
            if rng.random() < 0.05:
                extra.append(f"X500:/o=ExchangeLabs/ou=Exchange Administrative Group "
                             f"(FYDIBOHF23SPDLT)/cn=Recipients/cn={uuid.UUID(int=rng.getrandbits(128)).hex}-{alias}")
            users.append(t.add_mailbox(alias, display_name=f"{first} {last}", addresses=extra,
                                       AccountDisabled=rng.random() < 0.03))
        topics = ["sales", "support", "finance", "hr", "info", "projects", "legal", "it",
                  "facilities", "marketing", "board", "events"]
        shared_boxes = []
        for i in range(shared):
            topic = topics[i % len(topics)]
            shared_boxes.append(t.add_mailbox(f"{topic}-{i + 1:03d}", "SharedMailbox",
                                              display_name=f"{topic.capitalize()} {i + 1:03d}"))
        for i in range(rooms):
            t.add_mailbox(f"room-{i + 1:02d}", "RoomMailbox", display_name=f"Meeting Room {i + 1}")
        for i in range(equipment):
            t.add_mailbox(f"equipment-{i + 1:02d}", "EquipmentMailbox", display_name=f"Projector {i + 1}")

        active = [u for u in users if not u["AccountDisabled"]]
        pick = itertools.cycle(rng.sample(active, min(len(active), 40)) or [None])

        def take(n: int) -> list[dict]:
            return [next(pick) for _ in range(n)]

        direct = t.add_group("SG-Direct", take(3), display_name="SG Direct (Full Access)")
        inner = t.add_group("SG-Inner", take(2), display_name="SG Inner (nested two deep)")
        middle = t.add_group("SG-Middle", take(2) + [inner], display_name="SG Middle (nested)")
        outer = t.add_group("SG-Outer", take(2) + [middle], display_name="SG Outer (nesting)")
        cycle_a = t.add_group("SG-CycleA", take(2), display_name="SG Cycle A")
        cycle_b = t.add_group("SG-CycleB", take(2) + [cycle_a], display_name="SG Cycle B")
        t.add_members(cycle_a, cycle_b)
        empty = t.add_group("SG-Empty", [], display_name="SG Empty")
        t.scenarios.update({f"group:{g['Name']}": g["PrimarySmtpAddress"]
                            for g in (direct, inner, middle, outer, cycle_a, cycle_b, empty)})

        if shared >= 12:
            s = shared_boxes
            scen = {}
            scen["direct_users"] = s[0]
            for u in take(3):
                t.grant(s[0], u)
            scen["direct_group"] = s[1]
            t.grant(s[1], direct)
            scen["nested_group"] = s[2]
            t.grant(s[2], outer)
            scen["cyclic_group"] = s[3]
            t.grant(s[3], cycle_a)
            scen["denied"] = s[4]
            allowed, denied = take(2)
            t.grant(s[4], allowed)
            t.grant(s[4], denied, deny=True)
            scen["orphaned_sid"] = s[5]
            t.grant(s[5], "S-1-5-21-3623811015-3361044348-30300820-1013")
            t.grant(s[5], take(1)[0])
            scen["inherited_only"] = s[6]
            t.grant(s[6], take(1)[0], inherited=True)
            scen["read_permission"] = s[7]
            t.grant(s[7], take(1)[0], ["ReadPermission"])
            t.grant(s[7], take(1)[0], ["FullAccess", "ReadPermission"])
            scen["unresolvable_user"] = s[8]
            t.grant(s[8], f"departed.user@{domain}")
            t.grant(s[8], take(1)[0])
            scen["group_by_display_name"] = s[9]
            t.grant(s[9], direct["DisplayName"])
            scen["empty_group"] = s[10]
            t.grant(s[10], empty)
            scen["overlap"] = s[11]
            t.grant(s[11], outer)
            t.grant(s[11], t.member_objects(inner)[0])
            t.scenarios.update({k: v["PrimarySmtpAddress"] for k, v in scen.items()})
            rest = s[12:]
        else:
            rest = shared_boxes

        security = [g for g in t.groups if g["Name"].startswith("SG-") and g is not empty]
        for i in range(groups):
            kind = GROUP_TYPES[i % 2]
            prefix = "DL" if kind == "MailUniversalDistributionGroup" else "SEC"
            members = rng.sample(users, min(len(users), rng.randint(3, 25)))
            earlier = [g for g in t.groups[7:]]
            if earlier and rng.random() < 0.2:
                members.append(rng.choice(earlier))
            g = t.add_group(f"{prefix}-{topics[i % len(topics)].capitalize()}-{i + 1:02d}", members,
                            kind=kind, display_name=f"{prefix} {topics[i % len(topics)]} {i + 1:02d}")
            if kind == "MailUniversalSecurityGroup":
                security.append(g)
        for box in rest:
            for u in rng.sample(active, rng.randint(0, 3)):
                t.grant(box, u)
            if rng.random() < 0.15:
                t.grant(box, rng.choice(security))
        for u in users:
            if rng.random() < 0.02:
                assistant = rng.choice(active)
                if assistant is not u:
                    t.grant(u, assistant)
        return t


def standard_aces() -> list[dict]:
    """The rows Get-MailboxPermission shows on every Exchange Online mailbox."""
    return [
        {"user": SELF, "access_rights": ["FullAccess", "ReadPermission"]},
        {"user": f"{DOMAIN_PREFIX}\\Administrator", "access_rights": ["FullAccess"], "inherited": True, "deny": True},
        {"user": f"{DOMAIN_PREFIX}\\Domain Admins", "access_rights": ["FullAccess"], "inherited": True, "deny": True},
        {"user": f"{DOMAIN_PREFIX}\\Organization Management", "access_rights": ["FullAccess"], "inherited": True},
        {"user": "NT AUTHORITY\\SYSTEM", "access_rights": ["FullAccess"], "inherited": True},
    ]


# --------------------------------------------------------------------------------------------
# Certificates
# --------------------------------------------------------------------------------------------

def make_certificates(folder: Path, passphrase: str) -> dict[str, Any]:
    """Test CA (EC P-256), server certificate (SAN localhost + 127.0.0.1, serverAuth) signed by
    it, and a self-signed RSA-2048 app certificate as PEM key + PEM cert + PKCS#12."""
    files = testcerts.ca_and_server(folder, "zivsync fake Microsoft test CA")
    start, end = testcerts.validity()
    app_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    app_cert = (x509.CertificateBuilder().subject_name(testcerts.name("zivsync-extract-exo"))
                .issuer_name(testcerts.name("zivsync-extract-exo")).public_key(app_key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
                .sign(app_key, hashes.SHA256()))

    pem = serialization.Encoding.PEM
    plain = serialization.NoEncryption()
    pkcs8 = serialization.PrivateFormat.PKCS8
    files.update(app_key_pem=folder / "app.key", app_cert_pem=folder / "app.pem", app_pfx=folder / "app.pfx")
    files["app_key_pem"].write_bytes(app_key.private_bytes(pem, pkcs8, plain))
    files["app_cert_pem"].write_bytes(app_cert.public_bytes(pem))
    files["app_pfx"].write_bytes(pkcs12.serialize_key_and_certificates(
        b"zivsync-extract-exo", app_key, app_cert, None,
        serialization.BestAvailableEncryption(passphrase.encode())))
    return {**files, "app_cert": app_cert,
            "thumbprint": app_cert.fingerprint(hashes.SHA1()).hex(),
            "thumbprint_sha256": app_cert.fingerprint(hashes.SHA256()).hex()}


# --------------------------------------------------------------------------------------------
# Errors and small helpers
# --------------------------------------------------------------------------------------------

class _Reply(Exception):
    """Raised anywhere in request handling to answer at once."""

    def __init__(self, status: int, body: Any, headers: dict | None = None):
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _exchange_error(status: int, exception: str, message: str, *, code: str | None = None,
                    ex: str = "Ex6F9304") -> _Reply:
    """An admin API cmdlet error, shaped like Exchange Online's."""
    detail = f"{ex}|{exception}|{message}"
    code = code or {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
                    429: "TooManyRequests", 500: "InternalServerError",
                    503: "ServiceUnavailable"}.get(status, "InternalServerError")
    return _Reply(status, {"error": {
        "code": code, "message": "Error executing cmdlet",
        "details": [{"code": "Context", "target": "", "message": detail}],
        "innererror": {"message": "Error executing cmdlet",
                       "type": "Microsoft.Exchange.Admin.OData.Core.ODataServiceException",
                       "stacktrace": "",
                       "internalexception": {"message": message, "type": exception, "stacktrace": ""}}}})


def _odata_error(status: int, code: str, message: str, headers: dict | None = None,
                 details: list | None = None) -> _Reply:
    error = {"code": code, "message": message}
    if details:
        error["details"] = details
    error["innerError"] = {"date": datetime.datetime.now(datetime.UTC)
                           .strftime("%Y-%m-%dT%H:%M:%S"),
                           "request-id": str(uuid.uuid4()), "client-request-id": str(uuid.uuid4())}
    return _Reply(status, {"error": error}, headers)


def _not_found(identity: str) -> _Reply:
    return _exchange_error(
        404, "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException",
        f"The operation couldn't be performed because object '{identity}' couldn't be found on "
        f"'{SERVER_FQDN}'.")


def _bad_parameter(message: str) -> _Reply:
    return _exchange_error(400, "System.Management.Automation.ParameterBindingException", message,
                           ex="")


def _aad_error(status: int, error: str, code: int, description: str) -> _Reply:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return _Reply(status, {"error": error, "error_description": f"AADSTS{code}: {description} "
                           f"Trace ID: {uuid.uuid4()} Correlation ID: {uuid.uuid4()} Timestamp: {now}",
                           "error_codes": [code], "timestamp": now, "trace_id": str(uuid.uuid4()),
                           "correlation_id": str(uuid.uuid4())})


def _with_annotations(obj: dict, keys: Iterable[str] | None = None) -> dict:
    """The object as the admin API serves it: lists get an ``X@odata.type`` sibling first."""
    out = {}
    for key in (obj if keys is None else keys):
        value = obj.get(key)
        if isinstance(value, list):
            out[f"{key}@odata.type"] = ODATA_LIST
        out[key] = copy.copy(value)
    return out


@dataclass
class Failure:
    """A rule of :meth:`FakeMicrosoft.fail`."""
    target: str                  # a cmdlet name, "graph" or "token"
    status: int
    message: str
    times: int | None            # None: always
    identity: str | None = None  # only calls whose Parameters.Identity is this (case-insensitive)
    retry_after: float | None = None
    exception: str = "Microsoft.Exchange.Data.Storage.TransientException"
    used: int = 0
    page: bytes | None = None    # answer this web page (text/html) instead: a proxy's or a portal's


# --------------------------------------------------------------------------------------------
# Filter (OPATH) subset
# --------------------------------------------------------------------------------------------

FILTERABLE = {"emailaddresses": "EmailAddresses", "primarysmtpaddress": "PrimarySmtpAddress",
              "userprincipalname": "UserPrincipalName", "alias": "Alias", "name": "Name",
              "displayname": "DisplayName", "recipienttypedetails": "RecipientTypeDetails",
              "externaldirectoryobjectid": "ExternalDirectoryObjectId", "guid": "Guid",
              "accountdisabled": "AccountDisabled", "windowsemailaddress": "WindowsEmailAddress",
              "hiddenfromaddresslistsenabled": "HiddenFromAddressListsEnabled"}
_TOKEN = re.compile(r"""\s*(?:(\()|(\))|(-(?:and|or|not|eq|ne|like|notlike)\b)|'((?:[^']|'')*)'|"([^"]*)"|(\$(?:true|false|null))|([A-Za-z][A-Za-z0-9]*))""",
                    re.IGNORECASE)


def compile_filter(text: str):
    """Compile an OPATH filter (comparisons with -eq/-ne/-like/-notlike joined by -and/-or/-not and
    parentheses) into a predicate over a recipient dict; ValueError for anything else."""
    tokens, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"unexpected text at position {pos}: {text[pos:pos + 20]!r}")
        pos = m.end()
        lparen, rparen, op, sq, dq, const, word = m.groups()
        if lparen:
            tokens.append(("(", None))
        elif rparen:
            tokens.append((")", None))
        elif op:
            tokens.append(("op", op.lower()))
        elif sq is not None:
            tokens.append(("str", sq.replace("''", "'")))
        elif dq is not None:
            tokens.append(("str", dq))
        elif const:
            tokens.append(("const", {"$true": True, "$false": False, "$null": None}[const.lower()]))
        elif word:
            tokens.append(("word", word))
    index = 0

    def peek():
        return tokens[index] if index < len(tokens) else (None, None)

    def advance():
        nonlocal index
        index += 1
        return tokens[index - 1]

    def expr():
        left = term()
        while peek() == ("op", "-or"):
            advance()
            right = term()
            left = _either(left, right)
        return left

    def term():
        left = factor()
        while peek() == ("op", "-and"):
            advance()
            right = factor()
            left = _both(left, right)
        return left

    def factor():
        kind, value = peek()
        if (kind, value) == ("op", "-not"):
            advance()
            inner = factor()
            return lambda o: not inner(o)
        if kind == "(":
            advance()
            inner = expr()
            if advance()[0] != ")":
                raise ValueError("missing ')'")
            return inner
        if kind != "word":
            raise ValueError(f"expected a property name, got {value!r}")
        prop = FILTERABLE.get(advance()[1].lower())
        if prop is None:
            raise ValueError(f"the property '{tokens[index - 1][1]}' is not filterable")
        kind, op = advance() if index < len(tokens) else (None, None)
        if kind != "op" or op not in ("-eq", "-ne", "-like", "-notlike"):
            raise ValueError(f"expected a comparison operator after {prop}")
        kind, operand = advance() if index < len(tokens) else (None, None)
        if kind not in ("str", "const"):
            raise ValueError(f"expected a quoted value after {prop} {op}")
        return _comparison(prop, op, operand)

    predicate = expr()
    if index != len(tokens):
        raise ValueError(f"unexpected {tokens[index][1] or tokens[index][0]!r}")
    return predicate


def _either(a, b):
    return lambda obj: a(obj) or b(obj)


def _both(a, b):
    return lambda obj: a(obj) and b(obj)


def _comparison(prop: str, op: str, operand):
    def matches_one(value) -> bool:
        if isinstance(operand, bool) or operand is None or isinstance(value, bool):
            return value == operand if not isinstance(operand, str) else str(value).lower() == operand.lower()
        value, want = str(value), str(operand)
        if prop == "EmailAddresses":
            head, sep, _ = want.partition(":")
            has_prefix = sep and "@" not in head
            if not has_prefix and not want.startswith("*"):
                value = _address(value)
        if op in ("-like", "-notlike"):
            return fnmatch.fnmatchcase(value.lower(), want.lower().replace("[", "[[]"))
        return value.lower() == want.lower()

    def predicate(obj: dict) -> bool:
        value = obj.get(prop)
        values = value if isinstance(value, list) else [value]
        hit = any(matches_one(v) for v in values if v is not None) if operand is not None \
            else value in (None, [], "")
        return hit if op in ("-eq", "-like") else not hit

    return predicate


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------

class _Handler(loopback.Handler):
    server_version = "Microsoft-IIS/10.0"
    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = loopback.Handler.serve


# The shapes Get-MailboxPermission's answer can take (FakeMicrosoft(permission_shape=…,
# rights_shape=…)); zivsync must read every one of them.
# - "flat": one object per ACE with User, AccessRights, IsInherited, Deny (InvokeCommand, as the
#   cmdlet's own output: Exchange's GetMailboxPermission.cs writes one MailboxAcePresentationObject
#   per ACE; M365Permissions' get-ExOPermissions.ps1 reads it so).
# - "nested": one object per trustee with a PermissionList of {AccessRights, Deny, IsInherited,
#   InheritanceType, ChangedProperties}: the admin API's REST route Mailbox('…')/MailboxPermission,
#   as captured in ErikDoytchinov/cloud-sync docs/get_mailbox_permissions.raw.txt and read by
#   M365Permissions since its 2025-04 "new api" change.
PERMISSION_SHAPES = ("flat", "nested")
# AccessRights of Full Access + Read Permission: ["FullAccess", "ReadPermission"] (the REST capture
# above), ["FullAccess, ReadPermission"] (the one flags value's text, as remoting and M365Permissions'
# .Split(",") fix show), "FullAccess, ReadPermission" bare, or the number [131073].
RIGHTS_SHAPES = ("names", "flags", "text", "number")
MAILBOX_RIGHTS = {"FullAccess": 0x1, "SendAs": 0x2, "ExternalAccount": 0x4, "DeleteItem": 0x10000,
                  "ReadPermission": 0x20000, "ChangePermission": 0x40000, "ChangeOwner": 0x80000}


def _rights_in_shape(names: list[str], shape: str):
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return names  # a test's deliberately odd value goes out as it is
    ordered = sorted(names, key=lambda n: MAILBOX_RIGHTS.get(n, 0))
    if shape == "flags":
        return [", ".join(ordered)]
    if shape == "text":
        return ", ".join(ordered)
    if shape == "number":
        return [sum(MAILBOX_RIGHTS[n] for n in names)]
    return list(names)


def _per_trustee(mailbox: dict, rows: list[dict]) -> list[dict]:
    """The REST route's shape: an entry per trustee, its ACEs in PermissionList (capture above)."""
    entries: dict[str, dict] = {}
    for row in rows:
        entry = entries.setdefault(row["User"].lower(), {
            "PermissionId": base64.b64encode(row["User"].encode()).decode(), "MailboxIdentity": mailbox["Identity"],
            "User": row["User"], "IsOwner": False, "PermissionList": []})
        entry["PermissionList"].append({"ChangedProperties": [], "AccessRights": row["AccessRights"],
                                        "IsInherited": row["IsInherited"], "Deny": row["Deny"],
                                        "InheritanceType": row["InheritanceType"] or "All"})
    return list(entries.values())


class FakeMicrosoft(loopback.Loopback):
    """The fake, serving ``tenant`` on ``https://localhost:<port>`` from a background thread.

    Arguments: ``folder`` (certificates go there), ``tenant``; ``page_size`` (the admin API's
    largest page; ``Prefer: odata.maxpagesize`` can only lower it), ``graph_page_size`` (Graph's
    page without ``$top``), ``throttle_every`` (every Nth admin API/Graph request answers 429 with
    ``Retry-After: retry_after`` and is not processed; 0 = never), ``latency`` (seconds added to
    every admin API/Graph answer), ``errors`` (``{cmdlet: (status, message[, times])}``, see
    :meth:`fail`), ``token_lifetime`` (``exp`` and ``expires_in`` of access tokens),
    ``reject_tokens_older_than`` (seconds: the APIs answer 401 for older tokens although their
    ``exp`` is later), ``device_interval``/``device_pending_polls`` (the device code flow's polling
    interval and how many polls answer ``authorization_pending`` first), ``max_batch`` (requests per
    ``$batch``), ``client_id``/``client_secret`` (the app registration; the certificate is made).
    """

    handler = _Handler
    thread_name = "fake-microsoft"

    def __init__(self, folder: Path, tenant: Tenant, *, page_size: int = 1000, throttle_every: int = 0,
                 retry_after: float = 1.0, token_lifetime: int = 3599, latency: float = 0.0,
                 errors: dict | None = None, reject_tokens_older_than: float | None = None,
                 graph_page_size: int = 100, device_interval: int = 1, device_pending_polls: int = 1,
                 max_batch: int = 10, client_id: str = DEFAULT_CLIENT_ID,
                 client_secret: str | None = None, pfx_passphrase: str | None = None, port: int = 0,
                 permission_shape: str = "flat", rights_shape: str = "names"):
        self.folder = Path(folder)
        assert permission_shape in PERMISSION_SHAPES and rights_shape in RIGHTS_SHAPES
        self.permission_shape, self.rights_shape = permission_shape, rights_shape
        self.tenant = tenant
        self.page_size, self.graph_page_size, self.max_batch = page_size, graph_page_size, max_batch
        self.throttle_every, self.retry_after, self.latency = throttle_every, retry_after, latency
        self.token_lifetime, self.reject_tokens_older_than = token_lifetime, reject_tokens_older_than
        self.device_interval, self.device_pending_polls = device_interval, device_pending_polls
        self.client_id = client_id
        self.client_secret = client_secret or "fake~" + secrets.token_urlsafe(24)
        self.pfx_passphrase = pfx_passphrase or secrets.token_urlsafe(12)
        certs = make_certificates(self.folder, self.pfx_passphrase)
        self.ca_file: Path = certs["ca_file"]
        self.app_key_pem: Path = certs["app_key_pem"]
        self.app_cert_pem: Path = certs["app_cert_pem"]
        self.app_pfx: Path = certs["app_pfx"]
        self.thumbprint: str = certs["thumbprint"]
        self.thumbprint_sha256: str = certs["thumbprint_sha256"]
        self._app_public_key = certs["app_cert"].public_key()
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(certs["server_cert"], certs["server_key"])
        self._signing_key = secrets.token_bytes(32)
        self._requested_port = port
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._api_count = 0
        self._failures: list[Failure] = []
        self._issued: dict[str, float] = {}       # uti -> time.time() of issue
        self._revoked_before = 0.0
        self._device_codes: dict[str, dict] = {}
        self._refresh_tokens: dict[str, dict] = {}
        self.admin_oid = tenant._uuid("user-entra", tenant.admin_upn)
        for target, spec in (errors or {}).items():
            if isinstance(spec, dict):
                self.fail(target, **spec)
            else:
                status, message, *rest = spec
                self.fail(target, status=status, message=message, times=rest[0] if rest else None)
        self.reindex()

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    @property
    def authority(self) -> str:
        return f"{self.url}/{self.tenant.tenant_id}"

    @property
    def exchange_url(self) -> str:
        return self.url

    @property
    def graph_url(self) -> str:
        return f"{self.url}/graph"

    @property
    def invoke_url(self) -> str:
        return f"{self.exchange_url}/adminapi/beta/{self.tenant.tenant_id}/InvokeCommand"

    @property
    def batch_url(self) -> str:
        return f"{self.exchange_url}/adminapi/beta/{self.tenant.tenant_id}/$batch"

    @property
    def exchange_scope(self) -> str:
        return f"{self.exchange_url}/.default"

    @property
    def graph_scope(self) -> str:
        return f"{self.graph_url}/.default"

    def info(self) -> dict:
        """Everything a client needs, as JSON-able values."""
        return {"url": self.url, "port": self.port, "tenant_id": self.tenant.tenant_id,
                "domain": self.tenant.domain, "authority": self.authority,
                "exchange_url": self.exchange_url, "graph_url": self.graph_url,
                "exchange_scope": self.exchange_scope, "graph_scope": self.graph_scope,
                "ca_file": str(self.ca_file), "client_id": self.client_id,
                "client_secret": self.client_secret, "app_key_pem": str(self.app_key_pem),
                "app_cert_pem": str(self.app_cert_pem), "thumbprint": self.thumbprint,
                "app_pfx": str(self.app_pfx), "pfx_passphrase": self.pfx_passphrase}

    # -- test controls ----------------------------------------------------------------------

    def fail(self, target: str, status: int = 500, *, times: int | None = None, message: str | None = None,
             identity: str | None = None, retry_after: float | None = None,
             exception: str = "Microsoft.Exchange.Data.Storage.TransientException",
             page: bytes | None = None) -> Failure:
        """Make the next ``times`` calls (None: all) of ``target`` fail with ``status``.
        ``target`` is a cmdlet name (InvokeCommand calls and $batch items; ``identity`` narrows it
        to calls with that ``Identity`` parameter), ``"graph"`` (every Graph request) or
        ``"token"`` (the token endpoint, an AADSTS error). A 429 or 503 carries ``Retry-After``
        (``retry_after``, else the fake's). Rules are checked in the order they were added."""
        rule = Failure(target.lower(), status, message or f"Injected failure ({status})", times,
                       identity.lower() if identity else None, retry_after, exception, page=page)
        with self._lock:
            self._failures.append(rule)
        return rule

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    def expire_tokens(self) -> None:
        """Every access token issued so far is answered 401 ExpiredToken from now on."""
        with self._lock:
            self._revoked_before = time.time()

    def reset_log(self) -> None:
        with self._lock:
            self.requests.clear()

    def counts(self, by: str = "kind") -> collections.Counter:
        """How many requests were served, by ``kind`` (discovery, devicecode, token, invoke, batch,
        batch_item, graph, other), by ``cmdlet`` (invoke + batch items), or by ``status``."""
        with self._lock:
            rows = list(self.requests)
        if by == "cmdlet":
            return collections.Counter(r["cmdlet"] for r in rows if r.get("cmdlet"))
        return collections.Counter(r.get(by) for r in rows)

    def reindex(self) -> None:
        """Rebuild the lookup tables (call it after changing ``tenant`` while the fake runs)."""
        t = self.tenant
        t.complete()
        self._index = t.index()
        self._by_guid = {o["Guid"]: o for o in t.mailboxes + t.groups}
        self._by_edoi = {o["ExternalDirectoryObjectId"].lower(): o for o in t.mailboxes + t.groups}

    # -- plumbing ---------------------------------------------------------------------------

    def _log(self, entry: dict) -> None:
        with self._lock:
            self.requests.append(entry)

    def _serve(self, h: _Handler) -> None:
        started = time.time()
        split = urlsplit(h.path)
        path = unquote(split.path)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        base = f"https://{h.headers.get('Host') or f'localhost:{self.port}'}"
        entry = {"method": h.command, "path": path, "kind": "other", "cmdlet": None, "status": None,
                 "batch_size": None, "time": started}
        segs = [s for s in path.split("/") if s]
        headers: dict = {}
        self._log(entry)  # in the order of arrival; status and the rest are filled in below
        try:
            status, payload, headers = self._route(h, segs, query, body, base, entry)
        except _Reply as reply:
            status, payload, headers = reply.status, reply.body, reply.headers
        except Exception as exc:  # noqa: BLE001  (a bug in the fake: say so instead of hanging up)
            status, payload = 500, {"error": {"code": "FakeBug", "message": repr(exc)}}
        entry["duration"] = time.time() - started
        entry["status"] = status
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        try:
            h.send_response(status)
            content_type = headers.pop("Content-Type", "application/json; charset=utf-8")
            h.send_header("Content-Type", content_type)
            h.send_header("Content-Length", str(len(data)))
            h.send_header("request-id", str(uuid.uuid4()))
            for key, value in headers.items():
                h.send_header(key, str(value))
            h.end_headers()
            h.wfile.write(data)
            h.wfile.flush()
        except OSError:
            h.close_connection = True

    def _route(self, h, segs, query, body, base, entry):
        method = h.command
        if segs[:1] == ["graph"]:
            entry["kind"] = "graph"
            return self._graph(h, segs[1:], query, base, entry)
        if segs[:2] == ["adminapi", "beta"] and len(segs) == 4:
            entry["kind"] = {"InvokeCommand": "invoke", "$batch": "batch"}.get(segs[3], "other")
            return self._admin(h, segs[2], segs[3], query, body, base, entry)
        if len(segs) == 4 and segs[1:] == ["v2.0", ".well-known", "openid-configuration"] and method == "GET":
            entry["kind"] = "discovery"
            return 200, self._discovery(segs[0], base), {}
        if len(segs) == 4 and segs[1:3] == ["oauth2", "v2.0"] and segs[3] in ("token", "devicecode"):
            entry["kind"] = "token" if segs[3] == "token" else "devicecode"
            if method != "POST":
                raise _aad_error(405, "invalid_request", 900561, "The endpoint only accepts POST requests.")
            form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
            entry["grant_type"] = form.get("grant_type")
            if segs[3] == "devicecode":
                return 200, self._devicecode(segs[0], form, base), {}
            return 200, self._token(segs[0], form, base), {}
        if len(segs) == 4 and segs[1:] == ["discovery", "v2.0", "keys"]:
            return 200, {"keys": []}, {}
        raise _odata_error(404, "NotFound", f"The resource '{'/'.join(segs)}' was not found.")

    # -- Entra ID ---------------------------------------------------------------------------

    def _tenant_ok(self, segment: str, *, user_flow: bool = False) -> bool:
        seg = segment.lower()
        return seg in (self.tenant.tenant_id.lower(), self.tenant.domain.lower(),
                       _onmicrosoft(self.tenant.domain).lower()) or (
            user_flow and seg in ("organizations", "common"))

    def _discovery(self, segment: str, base: str) -> dict:
        if not self._tenant_ok(segment, user_flow=True):
            raise _aad_error(400, "invalid_tenant", 90002, f"Tenant '{segment}' not found. Check to make "
                             "sure you have the correct tenant ID and are signing into the correct cloud.")
        tid = segment if segment.lower() in ("organizations", "common") else self.tenant.tenant_id
        b = f"{base}/{tid}"
        return {
            "token_endpoint": f"{b}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt",
                                                      "client_secret_basic"],
            "jwks_uri": f"{b}/discovery/v2.0/keys", "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"], "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{b}/v2.0", "request_uri_parameter_supported": False,
            "userinfo_endpoint": f"{base}/graph/oidc/userinfo",
            "authorization_endpoint": f"{b}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{b}/oauth2/v2.0/devicecode",
            "http_logout_supported": True, "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{b}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "acr", "nonce",
                                 "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email"],
            "kerberos_endpoint": f"{b}/kerberos", "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com", "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com", "rbac_url": "https://pas.windows.net"}

    def _resource_kind(self, resource: str) -> str | None:
        r = resource.rstrip("/").lower()
        if r in OUTLOOK_RESOURCES:
            return "exchange"
        if r in GRAPH_RESOURCES:
            return "graph"
        try:
            parts = urlsplit(r)
            port = parts.port
        except ValueError:
            return None
        if parts.scheme == "https" and parts.hostname in ("localhost", "127.0.0.1") and port == self.port:
            return {"": "exchange", "/graph": "graph"}.get(parts.path.rstrip("/"))
        return None

    def _resource_from_scope(self, scope: str, *, app_only: bool) -> str:
        resources = [s[:-len("/.default")] for s in scope.split() if s.endswith("/.default")]
        if not resources and not app_only:
            resources = [s.rsplit("/", 1)[0] for s in scope.split() if "/" in s]
            if not resources:
                resources = ["00000003-0000-0000-c000-000000000000"]
        if not resources:
            raise _aad_error(400, "invalid_scope", 1002012, f"The provided value for scope {scope} is "
                             "not valid. Client credential flows must have a scope value with /.default "
                             "suffixed to the resource identifier (application ID URI).")
        if len(set(resources)) > 1:
            raise _aad_error(400, "invalid_request", 28000, "Provided value for the input parameter "
                             "scope is not valid because it contains more than one resource.")
        resource = resources[0]
        if self._resource_kind(resource) is None:
            raise _aad_error(400, "invalid_resource", 500011, f"The resource principal named {resource} "
                             f"was not found in the tenant named {self.tenant.tenant_id}. This can happen "
                             "if the application has not been installed by the administrator of the tenant.")
        return resource

    def _check_failure(self, target: str, identity: str | None = None) -> Failure | None:
        with self._lock:
            for rule in self._failures:
                if rule.target != target.lower():
                    continue
                if rule.identity and (identity or "").lower() != rule.identity:
                    continue
                if rule.times is not None and rule.used >= rule.times:
                    continue
                rule.used += 1
                return rule
        return None

    def _token(self, segment: str, form: dict, base: str) -> dict:
        grant = form.get("grant_type")
        user_flow = grant != "client_credentials"
        if not self._tenant_ok(segment, user_flow=user_flow):
            raise _aad_error(400, "invalid_request", 90002, f"Tenant '{segment}' not found.")
        rule = self._check_failure("token")
        if rule:
            raise _aad_error(rule.status, "temporarily_unavailable", 50196, rule.message)
        cid = form.get("client_id")
        if cid != self.client_id:
            raise _aad_error(400, "unauthorized_client", 700016, f"Application with identifier '{cid}' "
                             f"was not found in the directory '{self.tenant.domain}'.")
        if grant == "client_credentials":
            self._check_client_credential(form, f"{base}/{segment}/oauth2/v2.0/token")
            resource = self._resource_from_scope(form.get("scope", ""), app_only=True)
            return self._issue(resource, user=False)
        if grant == "urn:ietf:params:oauth:grant-type:device_code":
            code = form.get("device_code") or form.get("code") or ""
            with self._lock:
                flow = self._device_codes.get(code)
                if flow is None:
                    raise _aad_error(400, "invalid_grant", 70000, "Provided grant is invalid or malformed.")
                if time.time() > flow["expires_at"]:
                    del self._device_codes[code]
                    raise _aad_error(400, "expired_token", 70020, "The provided value for the input "
                                     "parameter 'device_code' is not valid. This device code has expired.")
                flow["polls"] += 1
                if flow["polls"] <= self.device_pending_polls:
                    raise _aad_error(400, "authorization_pending", 70016, "OAuth 2.0 device flow error. "
                                     "Authorization is pending. Continue polling.")
                del self._device_codes[code]
            resource = self._resource_from_scope(flow["scope"], app_only=False)
            return self._issue(resource, user=True, scope=flow["scope"])
        if grant == "refresh_token":
            with self._lock:
                known = self._refresh_tokens.pop(form.get("refresh_token", ""), None)
            if known is None:
                raise _aad_error(400, "invalid_grant", 700082, "The refresh token has expired or is invalid.")
            resource = self._resource_from_scope(form.get("scope", ""), app_only=False)
            return self._issue(resource, user=True, scope=form.get("scope", ""))
        raise _aad_error(400, "unsupported_grant_type", 70003, f"The app requested an unsupported grant "
                         f"type '{grant}'.")

    def _check_client_credential(self, form: dict, token_endpoint: str) -> None:
        if "client_secret" in form:
            if not secrets.compare_digest(form["client_secret"], self.client_secret):
                raise _aad_error(401, "invalid_client", 7000215, "Invalid client secret provided. Ensure "
                                 "the secret being sent in the request is the client secret value, not the "
                                 f"client secret ID, for a secret added to app '{self.client_id}'.")
            return
        if form.get("client_assertion_type") == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
            assertion = form.get("client_assertion", "")
            try:
                header = jwt.get_unverified_header(assertion)
                x5t, x5t256 = header.get("x5t"), header.get("x5t#S256")
                if x5t is None and x5t256 is None:
                    raise ValueError("the assertion header has neither x5t nor x5t#S256")
                if x5t is not None and _b64url_decode(x5t).hex() != self.thumbprint:
                    raise ValueError(f"Thumbprint of key used by client: '{_b64url_decode(x5t).hex().upper()}'"
                                     " is not registered")
                if x5t256 is not None and _b64url_decode(x5t256).hex() != self.thumbprint_sha256:
                    raise ValueError("the SHA-256 thumbprint of the key used by the client is not registered")
                claims = jwt.decode(assertion, self._app_public_key, algorithms=["RS256", "PS256"],
                                    audience=token_endpoint, options={"require": ["exp", "aud", "iss", "sub"]})
                if claims["iss"] != self.client_id or claims["sub"] != self.client_id:
                    raise ValueError("iss and sub must be the client id")
            except (jwt.InvalidTokenError, ValueError) as exc:
                raise _aad_error(401, "invalid_client", 700027, f"Client assertion failed signature "
                                 f"validation. [Reason - {exc}]") from None
            return
        raise _aad_error(401, "invalid_client", 7000218, "The request body must contain the following "
                         "parameter: 'client_assertion' or 'client_secret'.")

    def _issue(self, resource: str, *, user: bool, scope: str = "") -> dict:
        now = time.time()
        uti = _b64url(secrets.token_bytes(16))
        tid = self.tenant.tenant_id
        claims = {"aud": resource, "iss": f"https://sts.windows.net/{tid}/", "iat": int(now),
                  "nbf": int(now), "exp": int(now) + self.token_lifetime, "appid": self.client_id,
                  "appidacr": "0" if user else "2", "tid": tid, "uti": uti, "ver": "1.0"}
        kind = self._resource_kind(resource)
        if user:
            claims.update({"oid": self.admin_oid, "sub": self.admin_oid, "upn": self.tenant.admin_upn,
                           "unique_name": self.tenant.admin_upn, "name": "Fake Administrator",
                           "scp": " ".join(self.tenant.user_scopes), "idtyp": "user"})
        else:
            claims.update({"oid": self.tenant._uuid("sp", self.client_id), "idtyp": "app",
                           "roles": list(self.tenant.graph_roles if kind == "graph" else self.tenant.app_roles)})
            claims["sub"] = claims["oid"]
        with self._lock:
            self._issued[uti] = now
        answer = {"token_type": "Bearer", "expires_in": self.token_lifetime,
                  "ext_expires_in": self.token_lifetime,
                  "access_token": jwt.encode(claims, self._signing_key, algorithm="HS256")}
        if user:
            granted = [f"{resource}/{s}" for s in self.tenant.user_scopes
                       if s.startswith("Exchange") == (kind == "exchange")]
            answer["scope"] = " ".join(granted + [s for s in scope.split() if s.endswith("/.default")
                                                  or s in ("openid", "profile", "offline_access")])
            id_claims = {"aud": self.client_id, "iss": f"{self.url}/{tid}/v2.0", "iat": int(now),
                         "nbf": int(now), "exp": int(now) + 3600, "name": "Fake Administrator",
                         "oid": self.admin_oid, "preferred_username": self.tenant.admin_upn,
                         "sub": _b64url(hashlib.sha256(self.admin_oid.encode()).digest()[:24]),
                         "tid": tid, "ver": "2.0"}
            answer["id_token"] = jwt.encode(id_claims, self._signing_key, algorithm="HS256")
            answer["client_info"] = _b64url(json.dumps({"uid": self.admin_oid, "utid": tid}).encode())
            refresh = _b64url(secrets.token_bytes(32))
            with self._lock:
                self._refresh_tokens[refresh] = {"scope": scope}
            answer["refresh_token"] = refresh
        return answer

    def _devicecode(self, segment: str, form: dict, base: str) -> dict:
        if not self._tenant_ok(segment, user_flow=True):
            raise _aad_error(400, "invalid_request", 90002, f"Tenant '{segment}' not found.")
        if form.get("client_id") != self.client_id:
            raise _aad_error(400, "unauthorized_client", 700016, f"Application with identifier "
                             f"'{form.get('client_id')}' was not found in the directory.")
        self._resource_from_scope(form.get("scope", ""), app_only=False)
        device_code = _b64url(secrets.token_bytes(48))
        user_code = "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(9))
        expires_in = 900
        with self._lock:
            self._device_codes[device_code] = {"scope": form.get("scope", ""), "polls": 0,
                                               "expires_at": time.time() + expires_in}
        uri = f"{base}/devicelogin"
        return {"user_code": user_code, "device_code": device_code, "verification_uri": uri,
                "expires_in": expires_in, "interval": self.device_interval,
                "message": f"To sign in, use a web browser to open the page {uri} and enter the code "
                           f"{user_code} to authenticate."}

    # -- bearer tokens at the APIs ----------------------------------------------------------

    def _authorize(self, h, api: str) -> dict:
        def unauthorized(code: str, message: str) -> _Reply:
            challenge = (f'Bearer client_id="{OUTLOOK_RESOURCES[2] if api == "exchange" else GRAPH_RESOURCES[1]}", '
                         f'authorization_uri="{self.url}/common/oauth2/authorize", error="invalid_token", '
                         f'error_description="{message}"')
            if api == "graph":
                code = "InvalidAuthenticationToken"
            return _odata_error(401, code, message, {"WWW-Authenticate": challenge})

        auth = h.headers.get("Authorization") or ""
        if not auth[:7].lower() == "bearer " or not auth[7:].strip():
            raise unauthorized("InvalidAuthenticationToken", "Access token is empty.")
        try:
            claims = jwt.decode(auth[7:].strip(), self._signing_key, algorithms=["HS256"],
                                options={"verify_aud": False, "require": ["exp", "iat", "aud", "tid"]})
        except jwt.ExpiredSignatureError:
            raise unauthorized("ExpiredToken", "Lifetime validation failed, the token is expired.") from None
        except jwt.InvalidTokenError:
            raise unauthorized("InvalidAuthenticationToken", "IDX14100: JWT is not well formed or its "
                               "signature is invalid.") from None
        issued = self._issued.get(claims.get("uti"), 0.0)
        if issued <= self._revoked_before or (
                self.reject_tokens_older_than is not None
                and time.time() - issued > self.reject_tokens_older_than):
            raise unauthorized("ExpiredToken", "Lifetime validation failed, the token is expired.")
        if claims["tid"] != self.tenant.tenant_id:
            raise unauthorized("InvalidAuthenticationToken", "The token was issued for another tenant.")
        if self._resource_kind(claims["aud"]) != api:
            raise unauthorized("InvalidAuthenticationToken", f"Invalid audience '{claims['aud']}'.")
        roles, scopes = claims.get("roles", []), (claims.get("scp") or "").split()
        if api == "exchange" and "Exchange.ManageAsApp" not in roles and "Exchange.Manage" not in scopes:
            raise _odata_error(403, "Forbidden", "The user or application is not authorized to perform "
                               "this operation.", details=[{
                                   "code": "Context", "target": "",
                                   "message": f"The role assigned to application {claims['appid']} isn't "
                                              "supported in this scenario. Please check online documentation "
                                              "for assigning correct Directory Roles to Azure AD Application "
                                              "for EXO App-Only Authentication."}])
        if api == "graph" and not (set(GRAPH_READ_ROLES) & (set(roles) | set(scopes))):
            raise _odata_error(403, "Authorization_RequestDenied",
                               "Insufficient privileges to complete the operation.")
        return claims

    def _gate(self, h, api: str) -> None:
        """Throttling, latency and the bearer token, for every admin API and Graph request."""
        with self._lock:
            self._api_count += 1
            throttled = self.throttle_every and self._api_count % self.throttle_every == 0
        if self.latency:
            time.sleep(self.latency)
        if throttled:
            raise self._throttled(api, self.retry_after)
        self._authorize(h, api)

    def _throttled(self, api: str, retry_after: float) -> _Reply:
        seconds = f"{retry_after:g}"
        if api == "graph":
            return _odata_error(429, "TooManyRequests", "Too many requests, please retry after "
                                f"{seconds} seconds.", {"Retry-After": seconds})
        return _odata_error(429, "TooManyRequests", f"The request was throttled. Expected available "
                            f"in {seconds} seconds.", {"Retry-After": seconds},
                            details=[{"code": "Context", "target": "", "message": "Microsoft.Exchange."
                                      "Management.Throttling.ThrottlingException|The request was "
                                      f"throttled. Retry after {seconds} seconds."}])

    # -- the admin API ----------------------------------------------------------------------

    def _admin(self, h, tenant_segment, endpoint, query, body, base, entry):
        if endpoint not in ("InvokeCommand", "$batch"):
            raise _odata_error(404, "NotFound", f"The endpoint '{endpoint}' was not found.")
        if h.command != "POST":
            raise _odata_error(405, "MethodNotAllowed", f"The HTTP method '{h.command}' is not allowed "
                               f"on '{endpoint}'.")
        self._gate(h, "exchange")
        if not self._tenant_ok(tenant_segment):
            raise _odata_error(404, "TenantNotFound", f"The tenant '{tenant_segment}' was not found.")
        try:
            request = json.loads(body or b"null")
        except ValueError:
            raise _odata_error(400, "BadRequest", "The request body is not valid JSON.") from None
        prefer = h.headers.get("Prefer") or ""
        headers = {"Content-Type": ADMIN_CONTENT_TYPE, "OData-Version": "4.0"}
        if endpoint == "InvokeCommand":
            entry["x_anchor_mailbox"] = h.headers.get("X-AnchorMailbox")
            status, payload, extra = self._invoke_logged(request, query, prefer, base, tenant_segment, entry)
            return status, payload, {**headers, **extra}
        return 200, self._batch(request, prefer, base, tenant_segment, entry), headers

    def _invoke_logged(self, request, query, prefer, base, tenant_segment, entry):
        """One InvokeCommand call (top level or a batch item) -> (status, body, headers)."""
        try:
            payload, page_size = self._invoke(request, query, prefer, base, tenant_segment, entry)
            headers = {"Preference-Applied": f"odata.maxpagesize={page_size}"} if "maxpagesize" in prefer else {}
            return 200, payload, headers
        except _Reply as reply:
            return reply.status, reply.body, reply.headers

    def _invoke(self, request, query, prefer, base, tenant_segment, entry):
        if not isinstance(request, dict) or not isinstance(request.get("CmdletInput"), dict):
            raise _odata_error(400, "BadRequest", "The request body must be {\"CmdletInput\": "
                               "{\"CmdletName\": ..., \"Parameters\": {...}}}.")
        cmdlet_input = request["CmdletInput"]
        cmdlet = cmdlet_input.get("CmdletName")
        params = cmdlet_input.get("Parameters") or {}
        entry["cmdlet"] = cmdlet
        if not isinstance(cmdlet, str) or not isinstance(params, dict):
            raise _odata_error(400, "BadRequest", "CmdletName must be a string and Parameters an object.")
        params = {k: v for k, v in params.items() if "@" not in k}
        handler = self._CMDLETS.get(cmdlet.lower())
        if handler is None:
            raise _exchange_error(400, "System.Management.Automation.CommandNotFoundException",
                                  f"The term '{cmdlet}' is not recognized as a name of a cmdlet, function, "
                                  "script file, or executable program.", ex="")
        cmdlet = entry["cmdlet"] = handler[0]
        params = self._bind(cmdlet, params, handler[1])
        entry["identity"] = params.get("Identity")
        rule = self._check_failure(cmdlet, params.get("Identity"))
        if rule and rule.page is not None:  # e.g. a TLS-inspecting proxy's block page, which is HTML
            raise _Reply(rule.status, rule.page, {"Content-Type": "text/html; charset=utf-8"})
        if rule:
            error = _exchange_error(rule.status, rule.exception, rule.message)
            if rule.status in (429, 503):
                error.headers["Retry-After"] = f"{(rule.retry_after if rule.retry_after is not None else self.retry_after):g}"
            raise error
        select = [s.strip() for s in (query.get("$select") or "").split(",") if s.strip()]
        page_size = self.page_size
        m = re.search(r"odata\.maxpagesize\s*=\s*(\d+)", prefer, re.IGNORECASE)
        if m:
            page_size = max(1, min(page_size, int(m.group(1))))
        fingerprint = hashlib.sha1(json.dumps([cmdlet, params, select], sort_keys=True,
                                              default=str).encode()).hexdigest()[:16]
        offset = 0
        if "$skiptoken" in query:
            try:
                token = json.loads(_b64url_decode(query["$skiptoken"]))
                offset = int(token["o"])
                if token["h"] != fingerprint:
                    raise ValueError
            except (ValueError, KeyError, TypeError):
                raise _odata_error(400, "BadRequest", "The skip token is not valid for this request: POST "
                                   "the same body to @odata.nextLink.") from None
            entry["page"] = offset // page_size
        else:
            entry["page"] = 0
        rows, warnings = getattr(self, handler[2])(params)
        page = rows[offset:offset + page_size]
        if select:
            page = [_with_annotations(row, select) for row in page]
        else:
            page = [_with_annotations(row) for row in page]
        entry["items"] = len(page)
        tid = self.tenant.tenant_id
        payload = {"@odata.context": f"{base}/adminapi/beta/{tid}/$metadata#Collection(Exchange.GenericHashTable)",
                   "adminapi.warnings@odata.type": ODATA_LIST,
                   "@adminapi.warnings": warnings if offset + page_size >= len(rows) else [],
                   "value": page}
        if offset + page_size < len(rows):
            next_query = {"$skiptoken": _b64url(json.dumps({"o": offset + page_size, "h": fingerprint}).encode())}
            if select:
                next_query = {"$select": ",".join(select), **next_query}
            payload["@odata.nextLink"] = (f"{base}/adminapi/beta/{tenant_segment}/InvokeCommand?"
                                          + urlencode(next_query, safe="$,"))
        return payload, page_size

    COMMON_PARAMETERS = ("ErrorAction", "WarningAction", "Verbose", "Debug", "InformationAction")

    def _bind(self, cmdlet: str, params: dict, allowed: tuple) -> dict:
        names = {n.lower(): n for n in allowed + self.COMMON_PARAMETERS}
        bound = {}
        for key, value in params.items():
            name = names.get(key.lower())
            if name is None:
                raise _bad_parameter(f"A parameter cannot be found that matches parameter name '{key}'.")
            if name not in self.COMMON_PARAMETERS:
                bound[name] = value
        if "Identity" in bound and not isinstance(bound["Identity"], str):
            raise _bad_parameter(f"Cannot bind parameter 'Identity'. Cannot convert the "
                                 f"\"{bound['Identity']}\" value to an identity.")
        return bound

    def _result_size(self, params: dict) -> int | None:
        value = params.get("ResultSize", 1000)
        if isinstance(value, str) and value.strip().lower() == "unlimited":
            return None
        try:
            size = int(value)
            if size < 1 or isinstance(value, bool):
                raise ValueError
            return size
        except (TypeError, ValueError):
            raise _bad_parameter(f"Cannot bind parameter 'ResultSize'. Cannot convert value \"{value}\" "
                                 "to type \"Microsoft.Exchange.Data.Unlimited`1[System.UInt32]\".") from None

    def _types(self, params: dict, allowed: tuple) -> set | None:
        value = params.get("RecipientTypeDetails")
        if value is None:
            return None
        values = value if isinstance(value, list) else str(value).split(",")
        wanted = set()
        for v in values:
            match = next((k for k in KNOWN_RTD if k.lower() == str(v).strip().lower()), None)
            if match is None:
                raise _bad_parameter(f"Cannot bind parameter 'RecipientTypeDetails'. Cannot convert value "
                                     f"\"{v}\" to type \"Microsoft.Exchange.Data.Directory.Recipient."
                                     "RecipientTypeDetails\".")
            wanted.add(match)
        return wanted

    def _select_rows(self, params: dict, candidates: list[dict], kinds: tuple, identity_kinds: tuple,
                     project) -> tuple[list[dict], list[str]]:
        if "Identity" in params:
            candidates = [self._resolve(params["Identity"], identity_kinds)]
        wanted = self._types(params, kinds)
        if wanted is not None:
            candidates = [c for c in candidates if c["RecipientTypeDetails"] in wanted]
        if params.get("Filter") not in (None, ""):
            try:
                predicate = compile_filter(str(params["Filter"]))
            except ValueError as exc:
                raise _bad_parameter(f"Cannot bind parameter 'Filter' to the target. Exception setting "
                                     f"\"Filter\": \"Invalid filter syntax. For a description of the filter "
                                     f"parameter syntax see the command help. \"{params['Filter']}\": {exc}\"") from None
            candidates = [c for c in candidates if predicate(c)]
        size = self._result_size(params)
        warnings = []
        if size is not None and len(candidates) > size:
            candidates = candidates[:size]
            warnings.append(MORE_RESULTS_WARNING)
        return [project(c) for c in candidates], warnings

    def _resolve(self, identity: str, kinds: tuple) -> dict:
        key = identity.strip().lower()
        found = [o for o in self._index.get(key, []) if o["RecipientTypeDetails"] in kinds]
        if not found:
            raise _not_found(identity)
        if len(found) > 1:
            raise _exchange_error(400, "Microsoft.Exchange.Configuration.Tasks.ManagementObjectAmbiguousException",
                                  f"The operation couldn't be performed because '{identity}' matches "
                                  "multiple entries.", ex="Ex0B3ABE")
        return found[0]

    @staticmethod
    def _public(obj: dict) -> dict:
        return {k: v for k, v in obj.items() if k != "Members"}

    @staticmethod
    def _recipient(obj: dict) -> dict:
        keys = ("Name", "Alias", "DisplayName", "Identity", "Id", "Guid", "ExchangeObjectId",
                "ExternalDirectoryObjectId", "PrimarySmtpAddress", "WindowsEmailAddress",
                "EmailAddresses", "RecipientType", "RecipientTypeDetails", "IsDirSynced",
                "HiddenFromAddressListsEnabled", "DistinguishedName", "OrganizationalUnit",
                "WhenCreated", "WhenChanged")
        return {k: obj.get(k) for k in keys}

    @staticmethod
    def _member(obj: dict) -> dict:
        keys = ("Name", "Alias", "DisplayName", "Identity", "Id", "Guid", "ExchangeObjectId",
                "ExternalDirectoryObjectId", "PrimarySmtpAddress", "RecipientType", "RecipientTypeDetails",
                "IsDirSynced")
        return {k: obj.get(k) for k in keys}

    def _get_mailbox(self, params):
        return self._select_rows(params, self.tenant.mailboxes, MAILBOX_TYPES, MAILBOX_TYPES, self._public)

    def _get_recipient(self, params):
        return self._select_rows(params, self.tenant.mailboxes + self.tenant.groups, KNOWN_RTD,
                                 MAILBOX_TYPES + GROUP_TYPES, self._recipient)

    def _get_distribution_group(self, params):
        return self._select_rows(params, self.tenant.groups, GROUP_TYPES, GROUP_TYPES, self._public)

    def _get_distribution_group_member(self, params):
        if "Identity" not in params:
            raise _bad_parameter("Cannot process command because of one or more missing mandatory "
                                 "parameters: Identity.")
        group = self._resolve(params["Identity"], GROUP_TYPES)
        members = self.tenant.member_objects(group, self._index)
        size = self._result_size(params)
        warnings = []
        if size is not None and len(members) > size:
            members, warnings = members[:size], [MORE_RESULTS_WARNING]
        return [self._member(m) for m in members], warnings

    def _get_mailbox_permission(self, params):
        if "Identity" not in params:
            raise _bad_parameter("Cannot process command because of one or more missing mandatory "
                                 "parameters: Identity.")
        mailbox = self._resolve(params["Identity"], MAILBOX_TYPES)
        rows = [dict(r) for r in self.tenant.permissions.get(mailbox["Guid"], [])]
        if params.get("User"):
            wanted = params["User"].lower()
            target = self._index.get(wanted, [])
            rows = [r for r in rows if r["User"].lower() == wanted
                    or any(o in target for o in self._index.get(r["User"].lower(), []))]
        if params.get("Owner"):
            return [{"Identity": mailbox["Identity"], "Owner": f"{DOMAIN_PREFIX}\\Organization Management"}], []
        keys = ("Identity", "User", "AccessRights", "IsInherited", "Deny", "InheritanceType",
                "IsValid", "ObjectState")
        rows = [{k: r.get(k) for k in keys} for r in rows]
        for row in rows:
            row["AccessRights"] = _rights_in_shape(row["AccessRights"], self.rights_shape)
        if self.permission_shape == "nested":
            return _per_trustee(mailbox, rows), []
        return rows, []

    _CMDLETS: ClassVar[dict[str, tuple[str, tuple[str, ...], str]]] = {
        "get-mailbox": ("Get-Mailbox", ("Identity", "RecipientTypeDetails", "ResultSize", "Filter",
                                        "IncludeInactiveMailbox", "SoftDeletedMailbox", "Anr",
                                        "IncludeGrantSendOnBehalfToWithDisplayNames"), "_get_mailbox"),
        "get-mailboxpermission": ("Get-MailboxPermission", ("Identity", "User", "Owner", "ResultSize",
                                                            "SoftDeletedMailbox"), "_get_mailbox_permission"),
        "get-recipient": ("Get-Recipient", ("Identity", "RecipientTypeDetails", "ResultSize", "Filter",
                                            "Anr"), "_get_recipient"),
        "get-distributiongroup": ("Get-DistributionGroup", ("Identity", "RecipientTypeDetails",
                                                            "ResultSize", "Filter", "Anr"),
                                  "_get_distribution_group"),
        "get-distributiongroupmember": ("Get-DistributionGroupMember", ("Identity", "ResultSize"),
                                        "_get_distribution_group_member"),
    }

    def _batch(self, request, prefer, base, tenant_segment, entry) -> dict:
        items = request.get("requests") if isinstance(request, dict) else None
        if not isinstance(items, list) or not items:
            raise _odata_error(400, "BadRequest", "The batch body must be {\"requests\": [...]}.")
        entry["batch_size"] = len(items)
        if len(items) > self.max_batch:
            raise _odata_error(400, "BadRequest", f"The number of batch requests ({len(items)}) exceeds "
                               f"the limit of {self.max_batch}.")
        ids = [item.get("id") if isinstance(item, dict) else None for item in items]
        if any(i in (None, "") for i in ids) or len(set(map(str, ids))) != len(ids):
            raise _odata_error(400, "BadRequest", "Every batch request needs a unique 'id'.")
        responses = []
        for item in items:
            sub = {"method": str(item.get("method", "")).upper(), "path": str(item.get("url")),
                   "kind": "batch_item", "cmdlet": None, "status": None, "batch_size": None,
                   "time": time.time(), "batch_id": item["id"]}
            status, body, headers = self._batch_item(item, prefer, base, tenant_segment, sub)
            sub["status"] = status
            self._log(sub)
            response = {"id": item["id"], "status": status,
                        "headers": {"Content-Type": ADMIN_CONTENT_TYPE, **headers}, "body": body}
            responses.append(response)
        return {"responses": responses}

    def _batch_item(self, item, prefer, base, tenant_segment, sub):
        url = item.get("url")
        if not isinstance(url, str):
            return 400, _odata_error(400, "BadRequest", "A batch request needs a 'url'.").body, {}
        parts = urlsplit(url)
        path = unquote(parts.path)
        segs = [s for s in path.split("/") if s]
        if not (segs == ["InvokeCommand"] or (segs[:2] == ["adminapi", "beta"] and len(segs) == 4
                                               and segs[3] == "InvokeCommand")):
            return 404, _odata_error(404, "NotFound", f"The batch request url '{url}' is not an "
                                     "InvokeCommand url.").body, {}
        if len(segs) == 4 and not self._tenant_ok(segs[2]):
            return 404, _odata_error(404, "TenantNotFound", f"The tenant '{segs[2]}' was not found.").body, {}
        if sub["method"] != "POST":
            return 405, _odata_error(405, "MethodNotAllowed", "InvokeCommand only accepts POST.").body, {}
        item_headers = {str(k).lower(): str(v) for k, v in (item.get("headers") or {}).items()}
        sub["x_anchor_mailbox"] = item_headers.get("x-anchormailbox")
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        item_prefer = item_headers.get("prefer", "") or prefer
        return self._invoke_logged(item.get("body"), query, item_prefer, base, tenant_segment, sub)

    # -- Graph ------------------------------------------------------------------------------

    def _graph(self, h, segs, query, base, entry):
        if h.command != "GET":
            raise _odata_error(405, "Request_BadRequest", f"The HTTP method '{h.command}' is not supported "
                               "by this fake.")
        self._gate(h, "graph")
        rule = self._check_failure("graph")
        if rule:
            headers = {}
            if rule.status in (429, 503):
                headers["Retry-After"] = f"{(rule.retry_after if rule.retry_after is not None else self.retry_after):g}"
            raise _odata_error(rule.status, "serviceNotAvailable" if rule.status >= 500 else "BadRequest",
                               rule.message, headers)
        if segs[:1] != ["v1.0"] or len(segs) < 3 or segs[1] != "groups":
            raise _odata_error(400, "BadRequest", f"Resource not found for the segment "
                               f"'{segs[1] if len(segs) > 1 else ''}'.")
        for option in ("$filter", "$search", "$expand", "$orderby"):
            if option in query:
                raise _odata_error(400, "Request_UnsupportedQuery", f"The fake does not support {option}.")
        gid = segs[2]
        try:
            uuid.UUID(gid)
        except ValueError:
            raise _odata_error(400, "Request_BadRequest", f"Invalid object identifier '{gid}'.") from None
        group = self._by_edoi.get(gid.lower())
        if group is None or group["RecipientTypeDetails"] not in GROUP_TYPES:
            raise _odata_error(404, "Request_ResourceNotFound", f"Resource '{gid}' does not exist or one of "
                               "its queried reference-property objects are not present.")
        select = [s.strip() for s in query.get("$select", "").split(",") if s.strip()]
        rest = segs[3:]
        entry["graph"] = "/".join(rest) or "group"
        if not rest:
            return 200, {"@odata.context": f"{base}/graph/v1.0/$metadata#groups/$entity",
                         **self._graph_object(group, select)}, {}
        if rest[0] not in ("members", "transitiveMembers") or len(rest) > 2:
            raise _odata_error(400, "BadRequest", f"Resource not found for the segment '{rest[0]}'.")
        cast = rest[1] if len(rest) == 2 else None
        if cast not in (None, "microsoft.graph.user", "microsoft.graph.group"):
            raise _odata_error(400, "BadRequest", f"Resource not found for the segment '{cast}'.")
        if rest[0] == "members":
            members = self.tenant.member_objects(group, self._index)
        else:
            members = self._transitive(group)
        if cast == "microsoft.graph.user":
            members = [m for m in members if m["RecipientTypeDetails"] not in GROUP_TYPES]
        elif cast == "microsoft.graph.group":
            members = [m for m in members if m["RecipientTypeDetails"] in GROUP_TYPES]
        try:
            top = int(query.get("$top", self.graph_page_size))
            if not 1 <= top <= 999:
                raise ValueError
        except ValueError:
            raise _odata_error(400, "Request_BadRequest", "Invalid page size specified: "
                               f"'{query.get('$top')}'. Must be between 1 and 999 inclusive.") from None
        offset = 0
        if "$skiptoken" in query:
            try:
                offset = int(json.loads(_b64url_decode(query["$skiptoken"]))["o"])
            except (ValueError, KeyError, TypeError):
                raise _odata_error(400, "Request_BadRequest", "The skip token is not valid.") from None
        page = members[offset:offset + top]
        entry["items"] = len(page)
        kind = "users" if cast == "microsoft.graph.user" else "groups" if cast else "directoryObjects"
        context = f"{base}/graph/v1.0/$metadata#{kind}" + (f"({','.join(select)})" if select else "")
        payload = {"@odata.context": context,
                   "value": [self._graph_object(m, select, typed=cast is None) for m in page]}
        if offset + top < len(members):
            next_query = {k: v for k, v in query.items() if k != "$skiptoken"}
            next_query["$skiptoken"] = _b64url(json.dumps({"o": offset + top}).encode())
            payload["@odata.nextLink"] = (f"{base}/graph/{'/'.join(segs)}?"
                                          + urlencode(next_query, safe="$,.", quote_via=quote))
        return 200, payload, {}

    def _transitive(self, group: dict) -> list[dict]:
        """Users and groups below ``group``, each once, cycle-safe (Graph's transitiveMembers)."""
        seen, out = {group["Guid"]}, []
        queue = collections.deque([group])
        while queue:
            for member in self.tenant.member_objects(queue.popleft(), self._index):
                if member["Guid"] in seen:
                    continue
                seen.add(member["Guid"])
                out.append(member)
                if member["RecipientTypeDetails"] in GROUP_TYPES:
                    queue.append(member)
        return out

    @staticmethod
    def _graph_object(obj: dict, select: list[str], typed: bool = True) -> dict:
        is_group = obj["RecipientTypeDetails"] in GROUP_TYPES
        proxies = list(obj.get("EmailAddresses", []))
        if is_group:
            full = {"id": obj["ExternalDirectoryObjectId"], "displayName": obj["DisplayName"],
                    "mail": obj["PrimarySmtpAddress"], "mailNickname": obj["Alias"], "mailEnabled": True,
                    "securityEnabled": obj["RecipientTypeDetails"] == "MailUniversalSecurityGroup",
                    "groupTypes": [], "proxyAddresses": proxies, "description": None,
                    "createdDateTime": obj.get("WhenCreated")}
            default = ("id", "displayName", "mail", "mailEnabled", "mailNickname", "securityEnabled",
                       "groupTypes", "proxyAddresses", "description", "createdDateTime")
            odata_type = "#microsoft.graph.group"
        else:
            parts = obj["DisplayName"].split(" ", 1)
            full = {"businessPhones": [], "displayName": obj["DisplayName"],
                    "givenName": parts[0] if obj["RecipientTypeDetails"] == "UserMailbox" else None,
                    "jobTitle": None, "mail": obj["PrimarySmtpAddress"], "mobilePhone": None,
                    "officeLocation": None, "preferredLanguage": None,
                    "surname": parts[1] if len(parts) > 1 and obj["RecipientTypeDetails"] == "UserMailbox" else None,
                    "userPrincipalName": obj["UserPrincipalName"], "id": obj["ExternalDirectoryObjectId"],
                    "accountEnabled": not obj.get("AccountDisabled", False), "proxyAddresses": proxies,
                    "mailNickname": obj["Alias"], "userType": "Member", "onPremisesImmutableId": None}
            default = ("businessPhones", "displayName", "givenName", "jobTitle", "mail", "mobilePhone",
                       "officeLocation", "preferredLanguage", "surname", "userPrincipalName", "id")
            odata_type = "#microsoft.graph.user"
        out = {"@odata.type": odata_type} if typed else {}
        for key in (select or default):
            out[key] = full.get(key)
        return out


# --------------------------------------------------------------------------------------------
# As a process
# --------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = loopback.process_arguments("Serve the fake Microsoft endpoints until killed.")
    parser.add_argument("--tenant-file", type=Path, help="a Tenant saved with Tenant.save()")
    parser.add_argument("--generate", type=int, metavar="N", help="generate a tenant with N user mailboxes")
    parser.add_argument("--shared", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--throttle-every", type=int, default=0)
    parser.add_argument("--retry-after", type=float, default=1.0)
    parser.add_argument("--token-lifetime", type=int, default=3599)
    parser.add_argument("--client-secret")
    args = parser.parse_args(argv)
    if args.tenant_file:
        tenant = Tenant.load(args.tenant_file)
    elif args.generate is not None:
        tenant = Tenant.generate(args.generate, args.shared, seed=args.seed)
    else:
        parser.error("give --tenant-file or --generate")
    return loopback.serve_until_signalled(
        lambda folder: FakeMicrosoft(folder, tenant, page_size=args.page_size, throttle_every=args.throttle_every,
                                     retry_after=args.retry_after, latency=args.latency,
                                     token_lifetime=args.token_lifetime, client_secret=args.client_secret,
                                     port=args.port),
        args.folder, args.info_file, "fake-microsoft-")


if __name__ == "__main__":
    sys.exit(main())
