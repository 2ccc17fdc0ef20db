"""The seeded test domain: what the Samba DC holds for the extract-ldap tests.

Written as LDIF and loaded with ``ldbmodify`` straight into the DC's database (10x faster than
adding over LDAP, see testinfra.md), so the server makes objectGUIDs, SIDs and the memberOf
back-links itself as Active Directory does. The names below are what the tests assert on.

Covers: UTF-8 names, a comma in a name (escaped in its DN), disabled users, users with and without mailboxes, shared (also hybrid
remote), room and equipment mailboxes, secondary addresses in and out of the claimed domains,
security and distribution groups nested three deep and one cycle, an excluded OU, a user to
move between OUs, a ms-DS-ConsistencyGuid, phone numbers in local formats, many bulk users
for paging, and a group with more members than Active Directory returns in one range.
"""

from __future__ import annotations

import base64
import uuid

from ldap3.utils.dn import escape_rdn
from samba_dc import BASE_DN

CLAIMED = ("corp.example.test", "corp.example.nl")
OTHER = "other.example"
ROOT = f"OU=Zivsync,{BASE_DN}"
STAFF = f"OU=Staff,{ROOT}"
SHARED = f"OU=Shared,{ROOT}"
GROUPS = f"OU=Groups,{ROOT}"
EXCLUDED = f"OU=Excluded,{ROOT}"
BULK = f"OU=Bulk,{ROOT}"
ALUMNI = f"OU=Alumni,{ROOT}"
OUS = (ROOT, STAFF, SHARED, GROUPS, EXCLUDED, BULK, ALUMNI)

# msExchRecipientTypeDetails
USER_MAILBOX, SHARED_MAILBOX, ROOM, EQUIPMENT, MAIL_USER = 1, 4, 16, 32, 128
REMOTE_USER, REMOTE_SHARED = 2147483648, 34359738368
ENABLED, DISABLED = 544, 546  # NORMAL_ACCOUNT | PASSWD_NOTREQD (no password to hash), + ACCOUNTDISABLE
GLOBAL_SECURITY, UNIVERSAL_SECURITY, DISTRIBUTION = -2147483646, -2147483640, 8

CONSISTENCY_GUID = uuid.UUID("0c0ffee0-1234-4abc-8def-000000000042")


def _user(cn: str, ou: str, sam: str, *, mail: str | None = None, secondaries: tuple[str, ...] = (),
          kind: int | None = USER_MAILBOX, uac: int = ENABLED, **attributes) -> dict:
    record = {"dn": f"CN={escape_rdn(cn)},{ou}", "objectClass": "user", "sAMAccountName": sam,
              "userPrincipalName": f"{sam}@corp.example.test", "displayName": cn,
              "userAccountControl": str(uac)}
    if mail:
        record["mail"] = mail
        record["proxyAddresses"] = [f"SMTP:{mail}", *(f"smtp:{a}" for a in secondaries)]
    if kind is not None:
        record["msExchRecipientTypeDetails"] = str(kind)
    record.update(attributes)
    return record


def people() -> list[dict]:
    """The named people and mailboxes (the bulk users come from :func:`bulk_users`)."""
    d = CLAIMED[0]
    return [
        _user("Jürgen Weiß", STAFF, "j.weiss", mail=f"juergen.weiss@{d}",
              secondaries=(f"j.weiss@{d}", f"jw@{OTHER}"), givenName="Jürgen", sn="Weiß",
              telephoneNumber="020 123 4567", extensionAttribute1="EMP-0042",
              proxyExtra=["X500:/o=Corp/ou=Exchange/cn=Recipients/cn=jweiss"]),
        _user("Chloé Dubois", STAFF, "c.dubois", mail=f"chloe.dubois@{d}", secondaries=(f"c.dubois@{CLAIMED[1]}",),
              givenName="Chloé", sn="Dubois", mobile="+33 6 12 34 56 78", telephoneNumber="not a number"),
        _user("王小明", STAFF, "x.wang", mail=f"xiaoming.wang@{d}", givenName="小明", sn="王"),
        _user("Dirk Disabled", STAFF, "d.disabled", mail=f"dirk.disabled@{d}", uac=DISABLED),
        _user("Nora Nomail", STAFF, "n.nomail", kind=None),
        _user("Mark Mailuser", STAFF, "m.mailuser", mail=f"mark.mailuser@{d}", kind=MAIL_USER),
        _user("Rita Remote", STAFF, "r.remote", mail=f"rita.remote@{d}", kind=REMOTE_USER),
        _user("Conny Consistent", STAFF, "c.consistent", mail=f"conny.consistent@{d}",
              **{"mS-DS-ConsistencyGuid": CONSISTENCY_GUID.bytes_le}),
        _user("Mo Mover", STAFF, "m.mover", mail=f"mo.mover@{d}"),
        _user("Jansen, Piet", STAFF, "p.jansen", mail=f"piet.jansen@{d}", givenName="Piet", sn="Jansen"),
        _user("Info", SHARED, "info", mail=f"info@{d}", secondaries=(f"info@{CLAIMED[1]}",),
              kind=SHARED_MAILBOX, uac=DISABLED),
        _user("Finance", SHARED, "finance", mail=f"finance@{d}", kind=REMOTE_SHARED, uac=DISABLED),
        _user("Room Amstel", SHARED, "room.amstel", mail=f"room.amstel@{d}", kind=ROOM, uac=DISABLED),
        _user("Beamer 1", SHARED, "beamer1", mail=f"beamer1@{d}", kind=EQUIPMENT, uac=DISABLED),
        _user("Eve Excluded", EXCLUDED, "e.excluded", mail=f"eve.excluded@{d}"),
    ]


def bulk_users(count: int) -> list[dict]:
    return [_user(f"Bulk User {i:05d}", BULK, f"bulk{i:05d}", mail=f"bulk{i:05d}@{CLAIMED[0]}")
            for i in range(count)]


def _group(cn: str, group_type: int, members: list[str], *, mail: str | None = None,
           secondaries: tuple[str, ...] = ()) -> dict:
    record = {"dn": f"CN={cn},{GROUPS}", "objectClass": "group", "sAMAccountName": cn,
              "groupType": str(group_type), "member": members}
    if mail:
        record["mail"] = mail
        record["proxyAddresses"] = [f"SMTP:{mail}", *(f"smtp:{a}" for a in secondaries)]
    return record


def groups(bulk_members: int) -> list[dict]:
    """Groups, in an order in which every member exists before the group naming it; the cycle's
    closing link is :func:`cycle_link` (a modify, after both exist)."""
    def person(cn):
        return next(p["dn"] for p in people() if p["dn"].startswith(f"CN={cn},"))

    def group(cn):
        return f"CN={cn},{GROUPS}"

    d = CLAIMED[0]
    return [
        _group("GG-Level3", GLOBAL_SECURITY, [person("王小明"), person("Dirk Disabled")]),
        _group("GG-Level2", GLOBAL_SECURITY, [group("GG-Level3"), person("Chloé Dubois")]),
        _group("GG-Level1", GLOBAL_SECURITY, [group("GG-Level2"), person("Jürgen Weiß")]),
        _group("GG-CycleB", GLOBAL_SECURITY, [person("Rita Remote")]),
        _group("GG-CycleA", GLOBAL_SECURITY, [group("GG-CycleB"), person("Mark Mailuser")]),
        _group("DL-Sales", DISTRIBUTION, [person("Jürgen Weiß"), group("GG-Level3")],
               mail=f"sales@{d}", secondaries=(f"verkoop@{CLAIMED[1]}", f"sales@{OTHER}")),
        _group("Team Support", UNIVERSAL_SECURITY, [person("Chloé Dubois"), person("Mark Mailuser"),
                                                    person("Jansen\\, Piet")],
               mail=f"support@{d}"),
        _group("GG-Bulk", GLOBAL_SECURITY, [f"CN=Bulk User {i:05d},{BULK}" for i in range(bulk_members)]),
    ]


def cycle_link() -> tuple[str, str]:
    """(group, member) closing the cycle GG-CycleA -> GG-CycleB -> GG-CycleA."""
    return f"CN=GG-CycleB,{GROUPS}", f"CN=GG-CycleA,{GROUPS}"


def _ldif_value(name: str, value) -> str:
    if isinstance(value, bytes):
        return f"{name}:: {base64.b64encode(value).decode()}"
    if not value.isascii() or value.startswith((" ", ":", "<")):
        return f"{name}:: {base64.b64encode(value.encode()).decode()}"
    return f"{name}: {value}"


def _add_record(entry: dict) -> str:
    lines = [_ldif_value("dn", entry["dn"]), "changetype: add"]
    for name, value in entry.items():
        if name == "dn":
            continue
        name = "proxyAddresses" if name == "proxyExtra" else name
        for item in value if isinstance(value, list) else [value]:
            lines.append(_ldif_value(name, item))
    return "\n".join(lines) + "\n"


def seed_ldif(bulk: int = 2500, bulk_group: int = 1600) -> str:
    """The whole seed as one LDIF change file for ``ldbmodify``."""
    records = [_add_record({"dn": ou, "objectClass": "organizationalUnit"}) for ou in OUS]
    records += [_add_record(entry) for entry in (*people(), *bulk_users(bulk), *groups(min(bulk_group, bulk)))]
    group, member = cycle_link()
    records.append(f"{_ldif_value('dn', group)}\nchangetype: modify\nadd: member\n{_ldif_value('member', member)}\n-\n")
    return "\n".join(records)
