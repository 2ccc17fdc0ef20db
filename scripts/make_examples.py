#!/usr/bin/env python3
"""Write the bundled sample organisation "Fabrikam" into examples/.

Everything below is written out by hand, as tables, so that an auditor can read who is who
and why each object is there; nothing is random and nothing depends on the clock, so running
this twice gives byte-identical files.  Run it from anywhere:

    python scripts/make_examples.py            # (re)write examples/ and check every file
    python scripts/make_examples.py --check    # only check that examples/ is up to date

Files written (see examples/README.md for the story and the edge case of each object):

    examples/fabrikam.ldif                   Fabrikam's AD as `ldifde -f fabrikam.ldif -d DC=fabrikam,DC=example`
                                             exports it (the demo starts from it)
    examples/directory-ldap.jsonl            what zivsync-extract-ldap reads from AD: exactly the records of
                                             `zivsync-extract-ldap --ldif examples/fabrikam.ldif
                                             --base-dn DC=fabrikam,DC=example --default-region NL`
    examples/directory-exchange.jsonl        what zivsync-extract-exchange reads from Exchange
    examples/current.jsonl                   what zivsync-snapshot reads from Zivver today
    examples/state/mapping.json              the anchor -> Zivver id mapping of a previous push
    examples/zivsync.toml                    the demo's configuration
    examples/directory-ldap-broken.jsonl     a few ldap lines, line 4 invalid (validate demo)
    examples/directory-ldap-truncated.jsonl  the ldap stream cut off half-way, no end record

After writing, the script validates every stream against schemas/ and recomputes, with a
small independent model of the normalize and diff rules (DESIGN.md sections 3-4), the plan
the data should produce; it fails if that differs from EXPECTED_PLAN below. Both the LDIF
export and the ldap stream are written from the same tables (not one from the other);
tests/test_examples.py runs the real extractor on the LDIF and checks that it gives the stream.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
import tomllib
import uuid
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import phonenumbers
from referencing import Registry, Resource

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SCHEMAS = ROOT / "schemas"

PRODUCER = "zivsync-examples 0.1.0"
CREATED = "2026-01-01T00:00:00Z"

# -- the organisation ------------------------------------------------------------------------

EX = "fabrikam.example"  # claimed: head office (Amsterdam)
NL = "fabrikam.nl"  # claimed: Dutch branch (Utrecht)
LEGACY = "fabrikam-legacy.org"  # NOT claimed: the pre-merger domain, still on some mailboxes
CLAIMED = (EX, NL)

NETBIOS = "FABRIKAM"  # the AD domain is fabrikam.example, NetBIOS name FABRIKAM
BASE_DN = "DC=fabrikam,DC=example"
DOMAIN_SID = "S-1-5-21-3623811015-3361044348-30300820"  # objectSid = DOMAIN_SID-<RID>

HQ = f"OU=Staff,OU=Amsterdam,{BASE_DN}"
UTRECHT = f"OU=Staff,OU=Utrecht,{BASE_DN}"
LEGACY_OU = f"OU=Legacy,{BASE_DN}"
SERVICE_OU = f"OU=Service Accounts,{BASE_DN}"
SHARED_OU = f"OU=Shared Mailboxes,{BASE_DN}"
RESOURCES_OU = f"OU=Resources,{BASE_DN}"
GROUPS_OU = f"OU=Groups,{BASE_DN}"

# Identifiers follow a pattern so that a reader can tell them apart at a glance:
#   ad000000-0000-4000-a000-0000000000NN  AD objectGUID of person/mailbox NN (the anchor)
#   ad000000-0000-4000-b000-0000000000NN  AD objectGUID of group NN
#   2f000000-0000-4000-8000-0000000000NN  Zivver account id; NN = the person's NN where one exists
# and objectSid = DOMAIN_SID-11NN for person NN, DOMAIN_SID-12NN for group NN.
ORPHANED_SID = f"{DOMAIN_SID}-1999"  # a deleted account still listed in a mailbox ACL


def person_anchor(n: int) -> str:
    return f"ad000000-0000-4000-a000-{n:012d}"


def group_id(n: int) -> str:
    return f"ad000000-0000-4000-b000-{n:012d}"


def zivver_id(n: int) -> str:
    return f"2f000000-0000-4000-8000-{n:012d}"


@dataclass(frozen=True)
class Person:
    n: int  # number: anchor, SID and (where present) Zivver id are derived from it, see above
    sam: str  # sAMAccountName; UPN = sam@fabrikam.example
    display_name: str
    given_name: str | None
    surname: str | None
    mail: str | None  # the primary SMTP address, as AD stores it (case kept)
    other_smtp: tuple[str, ...]  # secondary smtp: addresses, in proxyAddresses order
    enabled: bool
    mailbox: str  # user | shared | room | equipment | none
    phone: str | None
    ou: str
    case: str  # why this object is here

    @property
    def anchor(self) -> str:
        return person_anchor(self.n)

    @property
    def upn(self) -> str:
        return f"{self.sam}@{EX}"

    @property
    def sid(self) -> str:
        return f"{DOMAIN_SID}-{1100 + self.n}"

    @property
    def dn(self) -> str:
        return f"CN={self.display_name},{self.ou}"

    @property
    def addresses(self) -> list[str]:
        return ([self.mail] if self.mail else []) + list(self.other_smtp)


# fmt: off
PEOPLE: list[Person] = [
    # n   sam              display name            given        surname       primary mail (mail)                  secondary smtp addresses                                                   enabled mailbox  phone             OU
    Person(1, "r.smit",       "Robert Smit",          "Robert",    "Smit",       "r.smit@fabrikam.example",           ("robert.smit@fabrikam.nl", "r.smit@fabrikam-legacy.org"),                True,  "user", "+31201234501",   HQ,
           "director; FullAccess on his mailbox for his secretary = personal delegate; Zivver still lists the former one -> update_user (delegates)"),
    Person(2, "l.meijer",     "Lotte Meijer",         "Lotte",     "Meijer",     "l.meijer@fabrikam.example",         ("lotte.meijer@fabrikam.example",),                                        True,  "user", "+31201234502",   HQ,
           "secretary: delegate of r.smit, granted as FABRIKAM\\l.meijer (resolved by DOMAIN\\sam); in sync"),
    Person(3, "j.weiss",      "Jürgen Weiß",          "Jürgen",    "Weiß",       "juergen.weiss@fabrikam.example",    ("j.weiss@fabrikam.example", "juergen.weiss@fabrikam-legacy.org"),         True,  "user", None,             HQ,
           "ß and ü; member of SG-Finance; the former delegate of r.smit; also in the Exchange stream; in sync"),
    Person(4, "c.dubois",     "Chloé Dubois",         "Chloé",     "Dubois",     "chloe.dubois@fabrikam.example",     ("c.dubois@fabrikam.example",),                                            True,  "user", "+33612345678",   HQ,
           "é; FullAccess on info@ granted directly by e-mail; in sync"),
    Person(5, "s.ostergaard", "Søren Østergaard",     "Søren",     "Østergaard", "soren.ostergaard@fabrikam.example", (),                                                                        True,  "user", "+4520123456",    HQ,
           "ø; FullAccess on info@ granted by UPN (s.ostergaard@fabrikam.example is not an address); in sync"),
    Person(6, "w.fang",       "王芳",                  "芳",        "王",          "wang.fang@fabrikam.example",        ("fang.wang@fabrikam.example",),                                           True,  "user", "+8613800138000",  HQ,
           "Chinese name; holds only ReadPermission on info@ -> not a delegate; in sync"),
    Person(7, "s.obrien",     "Seán O'Brien",         "Seán",      "O'Brien",    "Sean.OBrien@fabrikam.example",      ("sean.o'brien@fabrikam.example", "s.obrien@fabrikam-legacy.org"),         True,  "user", "+353861234567",  HQ,
           "apostrophe in name and in an alias; mixed-case primary address -> lower-cased; in sync"),
    Person(8, "jw.jansen",    "Jan-Willem Jansen",    "Jan-Willem", "Jansen",    "jw.jansen@fabrikam.example",        ("jw.jansen@fabrikam.nl",),                                                True,  "user", None,             HQ,
           "display name changed (Zivver: 'Jan Jansen') -> update_user (name); also in the Exchange stream"),
    Person(9, "m.devries",    "Marieke de Vries",     "Marieke",   "de Vries",   "m.devries@fabrikam.example",        ("m.devries@fabrikam.nl", "marieke.devries@fabrikam.example"),             True,  "user", None,             HQ,
           "new alias marieke.devries@fabrikam.example not yet in Zivver -> update_user (aliases); also in the Exchange stream"),
    Person(10, "p.vandijk",   "Pieter van Dijk",      "Pieter",    "van Dijk",   "p.vandijk@fabrikam.example",        ("p.vandijk@fabrikam.nl",),                                                False, "user", None,             HQ,
           "disabled in AD, still active in Zivver -> suspend_user"),
    Person(11, "a.visser",    "Anouk Visser",         "Anouk",     "Visser",     "a.visser@fabrikam.nl",              ("a.visser@fabrikam.example",),                                            False, "user", None,             UTRECHT,
           "disabled, already inactive in Zivver (in sync); member of 'Support 3rd line' -> dropped from support@ delegates"),
    Person(12, "d.hendriks",  "Daan Hendriks",        "Daan",      "Hendriks",   "d.hendriks@fabrikam.example",       (),                                                                        False, "user", None,             HQ,
           "disabled, already inactive in Zivver (in sync); lingering direct FullAccess on info@ -> not a delegate"),
    Person(13, "f.elamrani",  "Fatima El Amrani",     "Fatima",    "El Amrani",  "f.elamrani@fabrikam.example",       ("fatima.elamrani@fabrikam.example",),                                     True,  "user", "+31612345613",   HQ,
           "back from long leave: enabled in AD, inactive in Zivver -> reactivate_user"),
    Person(14, "n.kowalski",  "Noah Kowalski",        "Noah",      "Kowalski",   "n.kowalski@fabrikam.example",       (),                                                                        True,  "user", "+48501234567",   HQ,
           "new hire, not in Zivver -> create_user"),
    Person(15, "b.kramer",    "Bas Kramer",           "Bas",       "Kramer",     "b.kramer@fabrikam.example",         (),                                                                        True,  "user", None,             HQ,
           "IT admin: inherited FullAccess on info@ and r.smit@ -> ignored; in sync"),
    Person(16, "e.mertens",   "Eva Mertens",          "Eva",       "Mertens",    "e.mertens@fabrikam.example",        (),                                                                        True,  "user", None,             HQ,
           "member of SG-Finance and granted directly on finance@ as well -> one delegate; in sync"),
    Person(17, "t.peeters",   "Tom Peeters",          "Tom",       "Peeters",    "t.peeters@fabrikam.example",        (),                                                                        True,  "user", None,             HQ,
           "member of SG-Finance but a Deny FullAccess entry on finance@ -> not a delegate; in sync"),
    Person(18, "i.halvorsen", "Ingrid Halvorsen",     "Ingrid",    "Halvorsen",  "i.halvorsen@fabrikam.example",      (),                                                                        True,  "user", "+4791234567",    HQ,
           "member of 'Projects core' (cycle with 'Projects extended') -> delegate of projects@; in sync"),
    Person(19, "m.yilmaz",    "Mehmet Yılmaz",        "Mehmet",    "Yılmaz",     "m.yilmaz@fabrikam.example",         (),                                                                        True,  "user", None,             HQ,
           "dotless ı; member of 'Projects core'; not in the state mapping (matched by e-mail); in sync"),
    Person(20, "a.sousa",     "Ana Sousa",            "Ana",       "Sousa",      "a.sousa@fabrikam.example",          (),                                                                        True,  "user", None,             HQ,
           "member of 'Projects extended' (reached through the cycle) -> delegate of projects@; in sync"),
    Person(21, "s.deboer",    "Sanne de Boer",        "Sanne",     "de Boer",    "s.deboer@fabrikam.nl",              ("s.deboer@fabrikam.example",),                                            True,  "user", None,             UTRECHT,
           "direct member of 'Support (all)' (nesting level 0) -> delegate of support@; in sync"),
    Person(22, "k.bos",       "Kevin Bos",            "Kevin",     "Bos",        "k.bos@fabrikam.nl",                 (),                                                                        True,  "user", "+31302345622",   UTRECHT,
           "member of 'Support 2nd line' (level 1) -> delegate of support@; in sync"),
    Person(23, "r.claes",     "Ruben Claes",          "Ruben",     "Claes",      "r.claes@fabrikam.nl",               (),                                                                        True,  "user", None,             UTRECHT,
           "member of 'Support 3rd line' (level 2) -> delegate of support@; in sync"),
    Person(24, "y.haddad",    "Yara Haddad",          "Yara",      "Haddad",     "y.haddad@fabrikam.nl",              (),                                                                        True,  "user", None,             UTRECHT,
           "joined 'Support 3rd line' (level 2), not yet a delegate in Zivver -> update_functional support@"),
    Person(25, "m.kuipers",   "Marloes Kuipers",      "Marloes",   "Kuipers",    "m.kuipers@fabrikam.nl",             (),                                                                        True,  "user", None,             UTRECHT,
           "FullAccess+ReadPermission on the new hr@ mailbox -> delegate of create_functional hr@; in sync"),
    Person(26, "j.vanleeuwen", "Joost van Leeuwen",   "Joost",     "van Leeuwen", "j.vanleeuwen@fabrikam.nl",         (),                                                                        True,  "user", None,             UTRECHT,
           "FullAccess on the new hr@ mailbox; in sync"),
    Person(27, "e.bakker",    "Emma de Wit",          "Emma",      "de Wit",     "emma.dewit@fabrikam.nl",            ("emma.bakker@fabrikam.nl", "emma.dewit@fabrikam.example", "emma.bakker@fabrikam.example"), True, "user", None, UTRECHT,
           "married: primary changed from emma.bakker@fabrikam.nl (kept as alias), name too; sam/UPN unchanged -> rename_user, matched by anchor via the state mapping; also in the Exchange stream"),
    Person(28, "z.angstrom",  "Zoë Ångström",         "Zoë",       "Ångström",   "zoe.angstrom@fabrikam.nl",          (),                                                                        True,  "user", None,             UTRECHT,
           "new hire, ë and Å, not in Zivver -> create_user"),
    Person(29, "planning",    "Planning Utrecht",     None,        None,         "planning@fabrikam.nl",              ("planning@fabrikam.example",),                                            True,  "user", None,             UTRECHT,
           "a USER mailbox in AD but a FUNCTIONAL account in Zivver -> skip (type conflict)"),
    Person(30, "l.fontaine",  "Lucas Fontaine",       "Lucas",     "Fontaine",   "l.fontaine@fabrikam.example",       (),                                                                        True,  "none", None,             HQ,
           "mail-enabled user without a mailbox (mailbox none, mail set) -> a personal account; in sync"),
    Person(31, "svc-backup",  "svc-backup",           None,        None,         None,                                (),                                                                        True,  "none", None,             SERVICE_OU,
           "service account, no mailbox and no mail -> no account; member of SG-Finance -> not a delegate"),
    Person(32, "h.mulder",    "Henk Mulder",          "Henk",      "Mulder",     "h.mulder@fabrikam-legacy.org",      (),                                                                        True,  "user", None,             LEGACY_OU,
           "primary address in the unclaimed domain -> no account; member of SG-Finance -> not a delegate"),
    Person(33, "g.lee",       "Grace Lee",            "Grace",     "Lee",        "grace.lee@fabrikam-legacy.org",     ("g.lee@fabrikam.example",),                                               True,  "user", None,             LEGACY_OU,
           "primary in the unclaimed domain, a secondary in a claimed one -> still no account; in 'Support 3rd line' -> not a delegate"),
    # ordinary colleagues, in sync (several non-ASCII names)
    Person(34, "m.wisniewska", "Małgorzata Wiśniewska", "Małgorzata", "Wiśniewska", "m.wisniewska@fabrikam.example",   (),                                                                        True,  "user", "+48601234534",   HQ, "ł and ś; in sync"),
    Person(35, "b.muller",    "Björn Müller",         "Björn",     "Müller",     "b.muller@fabrikam.example",         ("bjoern.mueller@fabrikam.example", "b.muller@fabrikam-legacy.org"),       True,  "user", None,             HQ, "ö and ü; a claimed and an unclaimed secondary; in sync"),
    Person(36, "j.alvarez",   "José Álvarez",         "José",      "Álvarez",    "j.alvarez@fabrikam.example",        (),                                                                        True,  "user", "+34612345636",   HQ, "é and Á; in sync"),
    Person(37, "a.demir",     "Ayşe Demir",           "Ayşe",      "Demir",      "a.demir@fabrikam.nl",               ("a.demir@fabrikam.example",),                                             True,  "user", None,             UTRECHT, "ş; in sync"),
    Person(38, "an.nguyen",   "Nguyễn Văn An",        "Văn An",    "Nguyễn",     "an.nguyen@fabrikam.nl",             (),                                                                        True,  "user", None,             UTRECHT, "Vietnamese diacritics, family name first; in sync"),
    Person(39, "o.jonsson",   "Ólafur Jónsson",       "Ólafur",    "Jónsson",    "o.jonsson@fabrikam.example",        (),                                                                        True,  "user", "+3546123439",    HQ, "Ó and ó; in sync"),
    Person(40, "f.janssen",   "Femke Janssen",        "Femke",     "Janssen",    "f.janssen@fabrikam.nl",             ("f.janssen@fabrikam.example",),                                           True,  "user", None,             UTRECHT, "in sync"),
    Person(41, "t.degraaf",   "Thijs de Graaf",       "Thijs",     "de Graaf",   "T.deGraaf@fabrikam.nl",             ("t.degraaf@fabrikam.example", "thijs@fabrikam-legacy.org"),               True,  "user", None,             UTRECHT, "mixed-case primary; an unclaimed secondary dropped; not in the state mapping; in sync"),
    Person(42, "p.raghunathan", "Priya Raghunathan",  "Priya",     "Raghunathan", "p.raghunathan@fabrikam.example",   (),                                                                        True,  "user", "+919812345642",  HQ, "not in the state mapping; in sync"),
    Person(43, "l.vandenberg", "Lieke van den Berg",  "Lieke",     "van den Berg", "l.vandenberg@fabrikam.nl",        (),                                                                        True,  "user", None,             UTRECHT, "not in the state mapping; in sync"),
    Person(44, "k.mensah",    "Kofi Mensah",          "Kofi",      "Mensah",     "k.mensah@fabrikam.example",         (),                                                                        True,  "user", None,             HQ, "not in the state mapping; in sync"),
    Person(45, "i.vermeulen", "Ilse Vermeulen",       "Ilse",      "Vermeulen",  "i.vermeulen@fabrikam.nl",           (),                                                                        True,  "user", None,             UTRECHT, "not in the state mapping; in sync"),
    Person(46, "h.schroeder", "Hannah Schröder",      "Hannah",    "Schröder",   "h.schroeder@fabrikam.example",      (),                                                                        True,  "user", None,             HQ, "ö; not in the state mapping; in sync"),
    Person(47, "s.wouters",   "Stijn Wouters",        "Stijn",     "Wouters",    "s.wouters@fabrikam.nl",             (),                                                                        True,  "user", None,             UTRECHT, "not in the state mapping; in sync"),
    # shared mailboxes: AD keeps their user objects disabled
    Person(51, "info",        "Info Fabrikam",        None,        None,         "info@fabrikam.example",             ("info@fabrikam.nl", "info@fabrikam-legacy.org"),                          False, "shared", None,           SHARED_OU,
           "shared (a): FullAccess to users directly, plus SELF, an orphaned SID, an inherited entry, a ReadPermission-only entry and a disabled user; in sync"),
    Person(52, "finance",     "Finance",              None,        None,         "finance@fabrikam.example",          (),                                                                        False, "shared", None,           SHARED_OU,
           "shared (b): FullAccess to the mail-enabled security group SG-Finance (by its address), a Deny for one member; in sync"),
    Person(53, "support",     "Support",              None,        None,         "support@fabrikam.nl",               ("support@fabrikam.example", "helpdesk@fabrikam.nl"),                      False, "shared", None,           SHARED_OU,
           "shared (c): FullAccess to 'Support (all)' (by group id) > 'Support 2nd line' > 'Support 3rd line' -> update_functional (+y.haddad, -a.visser)"),
    Person(54, "projects",    "Projects",             None,        None,         "projects@fabrikam.example",         (),                                                                        False, "shared", None,           SHARED_OU,
           "shared (d): FullAccess to 'Projects core' (by SID), which contains 'Projects extended', which contains 'Projects core' again (cycle); in sync"),
    Person(55, "hr",          "HR",                   None,        None,         "hr@fabrikam.nl",                    ("personeelszaken@fabrikam.nl",),                                          False, "shared", None,           SHARED_OU,
           "shared mailbox not yet in Zivver -> create_functional"),
    Person(56, "boardroom",   "Boardroom 5.01",       None,        None,         "boardroom@fabrikam.example",        (),                                                                        False, "room", None,             RESOURCES_OU,
           "room mailbox -> skipped by default (its FullAccess entry too)"),
    Person(57, "beamer-1",    "Beamer 1",             None,        None,         "beamer-1@fabrikam.example",         (),                                                                        False, "equipment", None,        RESOURCES_OU,
           "equipment mailbox -> skipped by default"),
]
# fmt: on

# The phone numbers above as people typed them into AD (what fabrikam.ldif holds): the attribute
# and its text. Dutch numbers are typed the Dutch way, without +31; zivsync-extract-ldap
# --default-region NL reads each as the E.164 number in PEOPLE (check_tables makes sure).
# fmt: off
PHONES_AS_TYPED: dict[int, tuple[str, str]] = {
    1:  ("telephoneNumber", "020 123 4501"),
    2:  ("telephoneNumber", "020 123 4502"),
    4:  ("mobile",          "+33 6 12 34 56 78"),
    5:  ("mobile",          "+45 20 12 34 56"),
    6:  ("mobile",          "+86 138 0013 8000"),
    7:  ("mobile",          "+353 86 123 4567"),
    13: ("mobile",          "06-12345613"),
    14: ("mobile",          "+48 501 234 567"),
    18: ("mobile",          "+47 912 34 567"),
    22: ("telephoneNumber", "030 234 5622"),
    34: ("mobile",          "+48 601 234 534"),
    36: ("mobile",          "+34 612 34 56 36"),
    39: ("mobile",          "+354 612 3439"),
    42: ("mobile",          "+91 98123 45642"),
}
# fmt: on
DEFAULT_REGION = "NL"  # zivsync-extract-ldap --default-region, in examples/zivsync.toml

# Objects that exist only in Zivver and in the state mapping: their AD objects were deleted.
DELETED_SHARED_MAILBOX = 60  # marketing@fabrikam.example, removed from Exchange last month
LEAVER = 61  # Thomas Berg, t.berg@fabrikam.example, left; his AD account was deleted


@dataclass(frozen=True)
class Group:
    n: int
    name: str  # the group's cn
    mail: str | None
    mail_enabled: bool
    security_enabled: bool
    members: tuple[str, ...]  # sam of a person, or "group:<name>" of a group
    case: str

    @property
    def id(self) -> str:
        return group_id(self.n)

    @property
    def sid(self) -> str:
        return f"{DOMAIN_SID}-{1200 + self.n}"

    @property
    def dn(self) -> str:
        return f"CN={self.name},{GROUPS_OU}"


# fmt: off
GROUPS: list[Group] = [
    Group(1, "SG-Finance",          "finance-team@fabrikam.example", True,  True,
          ("j.weiss", "e.mertens", "t.peeters", "h.mulder", "svc-backup"),
          "mail-enabled security group, granted FullAccess on finance@ by its address"),
    Group(2, "Support (all)",       None, False, True,
          ("group:Support 2nd line", "s.deboer"),
          "granted FullAccess on support@ (by its id); contains 'Support 2nd line'"),
    Group(3, "Support 2nd line",    None, False, True,
          ("group:Support 3rd line", "k.bos"),
          "nested one level below 'Support (all)'; contains 'Support 3rd line'"),
    Group(4, "Support 3rd line",    None, False, True,
          ("r.claes", "y.haddad", "a.visser", "g.lee"),
          "nested two levels below 'Support (all)'; holds a disabled user and an unclaimed-domain user"),
    Group(5, "Projects core",       None, False, True,
          ("group:Projects extended", "i.halvorsen", "m.yilmaz"),
          "granted FullAccess on projects@ (by its SID); contains 'Projects extended'"),
    Group(6, "Projects extended",   None, False, True,
          ("group:Projects core", "a.sousa"),
          "contains 'Projects core' again: a cycle"),
    Group(7, "All staff Utrecht",   "allstaff-utrecht@fabrikam.nl", True, False,
          ("s.deboer", "k.bos", "r.claes", "y.haddad", "a.demir", "an.nguyen", "f.janssen"),
          "distribution group with a claimed address, granted nothing -> no account, no effect"),
]
# fmt: on

FULL = ["FullAccess"]
FULL_READ = ["FullAccess", "ReadPermission"]
SELF = "NT AUTHORITY\\SELF"


def group_by_name(name: str) -> Group:
    return next(g for g in GROUPS if g.name == name)


@dataclass(frozen=True)
class Permission:
    mailbox: str  # the mailbox's primary address, as Exchange reports it
    trustee: str  # as Get-MailboxPermission's User column would resolve it
    rights: list[str]
    inherited: bool
    deny: bool
    case: str


# fmt: off
PERMISSIONS: list[Permission] = [
    # info@ (a): direct grants
    Permission("info@fabrikam.example", SELF,                              FULL_READ, False, False, "the mailbox's own SELF entry -> dropped"),
    Permission("info@fabrikam.example", "chloe.dubois@fabrikam.example",   FULL,      False, False, "direct grant by e-mail -> delegate"),
    Permission("info@fabrikam.example", "s.ostergaard@fabrikam.example",   FULL,      False, False, "direct grant by UPN -> delegate"),
    Permission("info@fabrikam.example", "d.hendriks@fabrikam.example",     FULL,      False, False, "grant to a disabled user -> not a delegate"),
    Permission("info@fabrikam.example", "wang.fang@fabrikam.example",      ["ReadPermission"], False, False, "ReadPermission only -> not a delegate"),
    Permission("info@fabrikam.example", "FABRIKAM\\b.kramer",              FULL,      True,  False, "inherited (from the database) -> ignored"),
    Permission("info@fabrikam.example", ORPHANED_SID,                      FULL,      False, False, "orphaned SID of a deleted account -> dropped"),
    # finance@ (b): a mail-enabled security group, and a deny
    Permission("finance@fabrikam.example", SELF,                           FULL_READ, False, False, "SELF -> dropped"),
    Permission("finance@fabrikam.example", "finance-team@fabrikam.example", FULL_READ, False, False, "group SG-Finance by its address -> its members"),
    Permission("finance@fabrikam.example", "e.mertens@fabrikam.example",   FULL,      False, False, "also a member of SG-Finance -> one delegate"),
    Permission("finance@fabrikam.example", "t.peeters@fabrikam.example",   FULL,      False, True,  "Deny FullAccess for a member of SG-Finance -> removed"),
    # support@ (c): nested two levels deep
    Permission("support@fabrikam.nl", SELF,                                FULL_READ, False, False, "SELF -> dropped"),
    Permission("support@fabrikam.nl", group_by_name("Support (all)").id,   FULL,      False, False, "group 'Support (all)' by its id -> members of all three levels"),
    # projects@ (d): a cycle
    Permission("projects@fabrikam.example", group_by_name("Projects core").sid, FULL, False, False, "group 'Projects core' by its SID -> members of the cycle, once each"),
    # hr@: the new shared mailbox
    Permission("hr@fabrikam.nl", "m.kuipers@fabrikam.nl",                  FULL_READ, False, False, "direct grant -> delegate"),
    Permission("hr@fabrikam.nl", "j.vanleeuwen@fabrikam.nl",               FULL,      False, False, "direct grant -> delegate"),
    # a personal mailbox: the director's secretary
    Permission("r.smit@fabrikam.example", SELF,                            FULL_READ, False, False, "SELF -> dropped"),
    Permission("r.smit@fabrikam.example", "FABRIKAM\\l.meijer",            FULL,      False, False, "personal delegate, by DOMAIN\\sam"),
    Permission("r.smit@fabrikam.example", "r.smit@fabrikam.example",       FULL,      False, False, "explicit grant to the owner -> never its own delegate"),
    Permission("r.smit@fabrikam.example", "FABRIKAM\\b.kramer",            FULL,      True,  False, "inherited -> ignored"),
    # the room mailbox is skipped, and so is its permission
    Permission("boardroom@fabrikam.example", "l.meijer@fabrikam.example",  FULL,      False, False, "on a room mailbox -> ignored with the room"),
]
# fmt: on

# The Exchange stream repeats these user mailboxes from AD (same anchor, same addresses) so that
# normalize has to merge two sources; it also lists every shared and room mailbox.
EXCHANGE_USER_MAILBOXES = ("j.weiss", "jw.jansen", "m.devries", "e.bakker")


@dataclass(frozen=True)
class ZivverAccount:
    n: int  # zivver_id = zivver_id(n); n = the person's number when there is one
    kind: str
    email: str
    name: str
    active: bool
    aliases: tuple[str, ...]
    delegates: tuple[str, ...]
    phone: str | None
    case: str


# What Zivver holds today (what zivsync-snapshot would read). Lists are written sorted.
# fmt: off
ZIVVER: list[ZivverAccount] = [
    ZivverAccount(1,  "user", "r.smit@fabrikam.example",           "Robert Smit",        True,  ("robert.smit@fabrikam.nl",), ("juergen.weiss@fabrikam.example",), "+31201234501", "former secretary as delegate -> update_user (delegates)"),
    ZivverAccount(2,  "user", "l.meijer@fabrikam.example",         "Lotte Meijer",       True,  ("lotte.meijer@fabrikam.example",), (), "+31201234502", "in sync"),
    ZivverAccount(3,  "user", "juergen.weiss@fabrikam.example",    "Jürgen Weiß",        True,  ("j.weiss@fabrikam.example",), (), None, "in sync"),
    ZivverAccount(4,  "user", "chloe.dubois@fabrikam.example",     "Chloé Dubois",       True,  ("c.dubois@fabrikam.example",), (), "+33612345678", "in sync"),
    ZivverAccount(5,  "user", "soren.ostergaard@fabrikam.example", "Søren Østergaard",   True,  (), (), "+4520123456", "in sync"),
    ZivverAccount(6,  "user", "wang.fang@fabrikam.example",        "王芳",                True,  ("fang.wang@fabrikam.example",), (), "+8613800138000", "in sync"),
    ZivverAccount(7,  "user", "sean.obrien@fabrikam.example",      "Seán O'Brien",       True,  ("sean.o'brien@fabrikam.example",), (), "+353861234567", "in sync"),
    ZivverAccount(8,  "user", "jw.jansen@fabrikam.example",        "Jan Jansen",         True,  ("jw.jansen@fabrikam.nl",), (), None, "old name -> update_user (name)"),
    ZivverAccount(9,  "user", "m.devries@fabrikam.example",        "Marieke de Vries",   True,  ("m.devries@fabrikam.nl",), (), None, "alias missing -> update_user (aliases)"),
    ZivverAccount(10, "user", "p.vandijk@fabrikam.example",        "Pieter van Dijk",    True,  ("p.vandijk@fabrikam.nl",), (), None, "disabled in AD -> suspend_user"),
    ZivverAccount(11, "user", "a.visser@fabrikam.nl",              "Anouk Visser",       False, ("a.visser@fabrikam.example",), (), None, "inactive, as in AD: in sync"),
    ZivverAccount(12, "user", "d.hendriks@fabrikam.example",       "Daan Hendriks",      False, (), (), None, "inactive, as in AD: in sync"),
    ZivverAccount(13, "user", "f.elamrani@fabrikam.example",       "Fatima El Amrani",   False, ("fatima.elamrani@fabrikam.example",), (), "+31612345613", "enabled again in AD -> reactivate_user"),
    ZivverAccount(15, "user", "b.kramer@fabrikam.example",         "Bas Kramer",         True,  (), (), None, "in sync"),
    ZivverAccount(16, "user", "e.mertens@fabrikam.example",        "Eva Mertens",        True,  (), (), None, "in sync"),
    ZivverAccount(17, "user", "t.peeters@fabrikam.example",        "Tom Peeters",        True,  (), (), None, "in sync"),
    ZivverAccount(18, "user", "i.halvorsen@fabrikam.example",      "Ingrid Halvorsen",   True,  (), (), "+4791234567", "in sync"),
    ZivverAccount(19, "user", "m.yilmaz@fabrikam.example",         "Mehmet Yılmaz",      True,  (), (), None, "in sync"),
    ZivverAccount(20, "user", "a.sousa@fabrikam.example",          "Ana Sousa",          True,  (), (), None, "in sync"),
    ZivverAccount(21, "user", "s.deboer@fabrikam.nl",              "Sanne de Boer",      True,  ("s.deboer@fabrikam.example",), (), None, "in sync"),
    ZivverAccount(22, "user", "k.bos@fabrikam.nl",                 "Kevin Bos",          True,  (), (), "+31302345622", "in sync"),
    ZivverAccount(23, "user", "r.claes@fabrikam.nl",               "Ruben Claes",        True,  (), (), None, "in sync"),
    ZivverAccount(24, "user", "y.haddad@fabrikam.nl",              "Yara Haddad",        True,  (), (), None, "in sync"),
    ZivverAccount(25, "user", "m.kuipers@fabrikam.nl",             "Marloes Kuipers",    True,  (), (), None, "in sync"),
    ZivverAccount(26, "user", "j.vanleeuwen@fabrikam.nl",          "Joost van Leeuwen",  True,  (), (), None, "in sync"),
    ZivverAccount(27, "user", "emma.bakker@fabrikam.nl",           "Emma Bakker",        True,  ("emma.bakker@fabrikam.example",), (), None, "old address and name -> rename_user"),
    ZivverAccount(29, "functional", "planning@fabrikam.nl",        "Planning Utrecht",   True,  ("planning@fabrikam.example",), ("k.bos@fabrikam.nl",), None, "a user mailbox in AD -> skip (type conflict)"),
    ZivverAccount(30, "user", "l.fontaine@fabrikam.example",       "Lucas Fontaine",     True,  (), (), None, "in sync"),
    ZivverAccount(34, "user", "m.wisniewska@fabrikam.example",     "Małgorzata Wiśniewska", True, (), (), "+48601234534", "in sync"),
    ZivverAccount(35, "user", "b.muller@fabrikam.example",         "Björn Müller",       True,  ("bjoern.mueller@fabrikam.example",), (), None, "in sync"),
    ZivverAccount(36, "user", "j.alvarez@fabrikam.example",        "José Álvarez",       True,  (), (), "+34612345636", "in sync"),
    ZivverAccount(37, "user", "a.demir@fabrikam.nl",               "Ayşe Demir",         True,  ("a.demir@fabrikam.example",), (), None, "in sync"),
    ZivverAccount(38, "user", "an.nguyen@fabrikam.nl",             "Nguyễn Văn An",      True,  (), (), None, "in sync"),
    ZivverAccount(39, "user", "o.jonsson@fabrikam.example",        "Ólafur Jónsson",     True,  (), (), "+3546123439", "in sync"),
    ZivverAccount(40, "user", "f.janssen@fabrikam.nl",             "Femke Janssen",      True,  ("f.janssen@fabrikam.example",), (), None, "in sync"),
    ZivverAccount(41, "user", "t.degraaf@fabrikam.nl",             "Thijs de Graaf",     True,  ("t.degraaf@fabrikam.example",), (), None, "in sync"),
    ZivverAccount(42, "user", "p.raghunathan@fabrikam.example",    "Priya Raghunathan",  True,  (), (), "+919812345642", "in sync"),
    ZivverAccount(43, "user", "l.vandenberg@fabrikam.nl",          "Lieke van den Berg", True,  (), (), None, "in sync"),
    ZivverAccount(44, "user", "k.mensah@fabrikam.example",         "Kofi Mensah",        True,  (), (), None, "in sync"),
    ZivverAccount(45, "user", "i.vermeulen@fabrikam.nl",           "Ilse Vermeulen",     True,  (), (), None, "in sync"),
    ZivverAccount(46, "user", "h.schroeder@fabrikam.example",      "Hannah Schröder",    True,  (), (), None, "in sync"),
    ZivverAccount(47, "user", "s.wouters@fabrikam.nl",             "Stijn Wouters",      True,  (), (), None, "in sync"),
    ZivverAccount(51, "functional", "info@fabrikam.example",       "Info Fabrikam",      True,  ("info@fabrikam.nl",), ("chloe.dubois@fabrikam.example", "soren.ostergaard@fabrikam.example"), None, "in sync"),
    ZivverAccount(52, "functional", "finance@fabrikam.example",    "Finance",            True,  (), ("e.mertens@fabrikam.example", "juergen.weiss@fabrikam.example"), None, "in sync"),
    ZivverAccount(53, "functional", "support@fabrikam.nl",         "Support",            True,  ("helpdesk@fabrikam.nl", "support@fabrikam.example"), ("a.visser@fabrikam.nl", "k.bos@fabrikam.nl", "r.claes@fabrikam.nl", "s.deboer@fabrikam.nl"), None, "delegates differ -> update_functional"),
    ZivverAccount(54, "functional", "projects@fabrikam.example",   "Projects",           True,  (), ("a.sousa@fabrikam.example", "i.halvorsen@fabrikam.example", "m.yilmaz@fabrikam.example"), None, "in sync"),
    ZivverAccount(60, "functional", "marketing@fabrikam.example",  "Marketing",          True,  ("marketing@fabrikam.nl",), ("chloe.dubois@fabrikam.example", "i.halvorsen@fabrikam.example"), None, "shared mailbox deleted -> empty_functional"),
    ZivverAccount(61, "user", "t.berg@fabrikam.example",           "Thomas Berg",        True,  (), (), None, "leaver, gone from AD -> suspend_user"),
    ZivverAccount(62, "user", "t.dekker@fabrikam-legacy.org",      "Tim Dekker",         True,  (), (), None, "unclaimed domain, not in AD -> left alone"),
]
# fmt: on

# The state mapping a previous `zivsync-push --apply` left behind: (zivver id number, anchor
# number). Accounts created before zivsync was used (19, 41-47) are absent and are matched by
# e-mail; 29 (the type conflict) and 62 (unclaimed domain) were never managed by zivsync.
# Entry 27 links Emma's anchor to the account still called emma.bakker@fabrikam.nl in Zivver.
# fmt: off
MAPPED = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15, 16, 17, 18, 20, 21, 22, 23, 24, 25, 26, 27,
          30, 34, 35, 36, 37, 38, 39, 40, 51, 52, 53, 54, DELETED_SHARED_MAILBOX, LEAVER]
# fmt: on

# The plan zivsync-diff should make from normalize(ldap + exchange) and current.jsonl with
# examples/state and examples/zivsync.toml: (op, email). For a rename the email is the new one.
EXPECTED_PLAN = [
    ("create_user", "n.kowalski@fabrikam.example"),
    ("create_user", "zoe.angstrom@fabrikam.nl"),
    ("update_user", "jw.jansen@fabrikam.example"),  # name: Jan Jansen -> Jan-Willem Jansen
    ("update_user", "m.devries@fabrikam.example"),  # aliases: + marieke.devries@fabrikam.example
    ("update_user", "r.smit@fabrikam.example"),  # delegates: juergen.weiss -> l.meijer
    ("rename_user", "emma.dewit@fabrikam.nl"),  # from emma.bakker@fabrikam.nl; name and aliases too
    ("reactivate_user", "f.elamrani@fabrikam.example"),
    ("suspend_user", "p.vandijk@fabrikam.example"),  # disabled in AD
    ("suspend_user", "t.berg@fabrikam.example"),  # gone from AD
    ("create_functional", "hr@fabrikam.nl"),
    ("update_functional", "support@fabrikam.nl"),  # delegates: + y.haddad, - a.visser
    ("empty_functional", "marketing@fabrikam.example"),
    ("skip", "planning@fabrikam.nl"),  # type conflict: user mailbox vs functional account
    # t.dekker@fabrikam-legacy.org: no change (diff may list it as a skip: outside the claimed domains)
]

# -- writing -----------------------------------------------------------------------------


def dumps(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def header(stream: str, source: dict, authority: dict | None = None) -> dict:
    made = {"type": "header", "stream": stream, "version": 1, "producer": PRODUCER, "created": CREATED,
            "source": source}
    if authority:
        made["authority"] = authority
    return made


def segment(stream: str, source: dict, records: list[dict], authority: dict | None = None) -> list[dict]:
    return [header(stream, source, authority), *records, {"type": "end", "count": len(records)}]


# What each stream speaks for, as the extractors state it (extract-exchange with --user-mailbox-permissions)
# (activedirectory.Scope.authority, exchangeonline.Scope.authority)
LDAP_AUTHORITY = {"source": "ldap", "people": True, "mailbox_kinds": ["user", "shared", "room", "equipment"],
                  "groups": True, "full_access": [], "phone": True, "sso_key": True, "scope": {"base_dn": BASE_DN}}
EXCHANGE_AUTHORITY = {"source": "exchange", "people": True, "mailbox_kinds": ["user", "shared", "room", "equipment"],
                      "groups": True, "full_access": ["shared", "user"], "phone": False, "sso_key": True, "scope": {}}


def text(lines: list[dict]) -> str:
    return "".join(dumps(line) + "\n" for line in lines)


def by_sam(sam: str) -> Person:
    return next(p for p in PEOPLE if p.sam == sam)


def groups_of(member: str) -> list[Group]:
    """The groups ``member`` (a sam, or "group:<name>") is a direct member of, in GROUPS order."""
    return [g for g in GROUPS if member in g.members]


def member_dn(member: str) -> str:
    return group_by_name(member[6:]).dn if member.startswith("group:") else by_sam(member).dn


def person_record(p: Person, source: str) -> dict:
    """The person as an extractor writes it: for ldap, exactly what zivsync-extract-ldap makes of
    the person's entry in fabrikam.ldif (addresses lower-cased, memberOf as DNs)."""
    from_exchange = source == "exchange"
    addresses = p.addresses if from_exchange else [a.lower() for a in p.addresses]
    return {
        "type": "person", "source": source, "anchor": p.anchor, "dn": p.dn, "upn": p.upn,
        "sam_account_name": p.sam, "sid": p.sid, "mail": addresses[0] if addresses else None,
        "addresses": addresses,
        "display_name": p.display_name, "given_name": p.given_name, "surname": p.surname,
        # Exchange does not say whether the AD account is enabled
        "enabled": None if from_exchange else p.enabled,
        "mailbox": p.mailbox, "phone": p.phone,
        # AD's memberOf (DNs); Exchange does not list group membership
        "groups": [] if from_exchange else [g.dn for g in groups_of(p.sam)],
        "sso_key": p.anchor,
    }


def group_record(g: Group) -> dict:
    """What zivsync-extract-ldap makes of the group's entry: members as DNs (normalize resolves them)."""
    return {
        "type": "group", "source": "ldap", "id": g.id, "name": g.name, "dn": g.dn, "sid": g.sid,
        "sam_account_name": g.name, "mail": g.mail, "addresses": [g.mail] if g.mail else [], "mail_enabled": g.mail_enabled,
        "security_enabled": g.security_enabled, "members": [member_dn(m) for m in g.members],
    }


def permission_record(p: Permission) -> dict:
    return {"type": "permission", "source": "exchange", "mailbox": p.mailbox, "trustee": p.trustee,
            "rights": list(p.rights), "inherited": p.inherited, "deny": p.deny}


def account_record(a: ZivverAccount) -> dict:
    return {
        "type": "account", "kind": a.kind, "email": a.email, "name": a.name, "active": a.active,
        "aliases": sorted(set(a.aliases)), "delegates": sorted(set(a.delegates)),
        "sso_key": None,  # Zivver never returns it
        "phone": a.phone, "anchors": [], "zivver_id": zivver_id(a.n), "external_account_id": None,
        "sources": ["zivver"],
    }


LDIF_NAME = "fabrikam.ldif"


def ldap_source() -> dict:
    """The ldap stream's header source: the LDIF export it is the reading of."""
    return {
        "ldif": LDIF_NAME, "sha256": hashlib.sha256(ldif_text().encode("ascii")).hexdigest(), "base_dn": BASE_DN,
        "default_region": DEFAULT_REGION,
        "note": "fictional sample organisation written by scripts/make_examples.py: the records "
                f"zivsync-extract-ldap --ldif {LDIF_NAME} writes",
    }


EXCHANGE_SOURCE = {
    "url": "https://ex01.fabrikam.example/PowerShell",
    "cmdlets": ["Get-Mailbox", "Get-MailboxPermission"],
    "note": "fictional sample organisation written by scripts/make_examples.py",
}
ZIVVER_SOURCE = {
    "url": "https://app.zivver.com/api/scim/v2/",
    "note": "fictional sample organisation written by scripts/make_examples.py",
}


def ldap_lines() -> list[dict]:
    records = [person_record(p, "ldap") for p in PEOPLE] + [group_record(g) for g in GROUPS]
    lines = segment("directory", ldap_source(), records, LDAP_AUTHORITY)
    # the extractor's tally: the records it wrote, by type (nothing left out of this export)
    lines[-1]["tally"] = {f"{kind} records": sum(r["type"] == kind for r in records) for kind in ("group", "person")}
    return lines


def exchange_lines() -> list[dict]:
    mailboxes = [by_sam(sam) for sam in EXCHANGE_USER_MAILBOXES]
    mailboxes += [p for p in PEOPLE if p.mailbox in ("shared", "room")]
    records = [person_record(p, "exchange") for p in mailboxes] + [permission_record(p) for p in PERMISSIONS]
    return segment("directory", EXCHANGE_SOURCE, records, EXCHANGE_AUTHORITY)


def current_lines() -> list[dict]:
    records = sorted((account_record(a) for a in ZIVVER), key=lambda r: r["email"])
    return segment("accounts", ZIVVER_SOURCE, records)


def broken_lines() -> list[dict]:
    """Header, three persons (the third with an invalid mail, on line 4), one more, end."""
    persons = [person_record(p, "ldap") for p in PEOPLE[:4]]
    persons[2] = {**persons[2], "mail": "not-an-address"}
    return segment("directory", {**ldap_source(), "note": "deliberately invalid on line 4 (mail)"}, persons)


def truncated_lines() -> list[dict]:
    """The ldap stream as an extractor that died half-way leaves it: no end record."""
    full = ldap_lines()
    return full[: 1 + 25]  # the header and the first 25 persons


def mapping_json() -> str:
    anchors = {n: person_anchor(n) for n in MAPPED}
    accounts = {a.n: a for a in ZIVVER}
    entries = [{"zivver_id": zivver_id(n), "email": accounts[n].email, "kind": accounts[n].kind,
                "anchors": [anchors[n]], "sso_key": None} for n in MAPPED]
    entries.sort(key=lambda e: e["zivver_id"])
    return json.dumps({"version": 1, "accounts": entries}, ensure_ascii=False, indent=2) + "\n"


# -- the LDIF export -----------------------------------------------------------------------
#
# What `ldifde -f fabrikam.ldif -d DC=fabrikam,DC=example` writes on one of Fabrikam's domain
# controllers, cut down to what the tables above know: every entry as `changetype: add`,
# binary values (objectGUID, objectSid) and non-ASCII text as base64 (`::`), lines longer than
# 79 columns folded onto continuation lines that start with a space. (ldifde also writes
# CRLF line ends, and UTF-16 with -u; this file keeps LF for readable diffs, and the reader
# takes both, see tests/test_examples.py.)

LDIF_WIDTH = 79
LDIFDE_COMMAND = f"ldifde -f {LDIF_NAME} -d {BASE_DN}"

# The OUs, parents first (every DN above lives in one of them).
ORGANIZATIONAL_UNITS = [
    f"OU=Amsterdam,{BASE_DN}", HQ, f"OU=Utrecht,{BASE_DN}", UTRECHT, LEGACY_OU, SERVICE_OU, SHARED_OU,
    RESOURCES_OU, GROUPS_OU,
]

# msExchRecipientTypeDetails per mailbox kind; "none" with a mail address is a MailUser (128),
# without one the attribute is absent (not mail-enabled at all).
RECIPIENT_TYPE_DETAILS = {"user": 1, "shared": 4, "room": 16, "equipment": 32, "none": 128}
UAC_NORMAL_ACCOUNT, UAC_DISABLED = 512, 514  # userAccountControl: NORMAL_ACCOUNT (+ ACCOUNTDISABLE)
# groupType: mail-enabled groups are universal (Exchange requires it), the others global.
GLOBAL_SECURITY, UNIVERSAL_SECURITY, UNIVERSAL_DISTRIBUTION = -2147483646, -2147483640, 8


def guid_bytes(text: str) -> bytes:
    """objectGUID as AD stores it: the mixed-endian bytes of the GUID shown as text."""
    return uuid.UUID(text).bytes_le


def sid_bytes(text: str) -> bytes:
    """objectSid's binary form (MS-DTYP 2.4.2.2) of S-1-5-21-..."""
    _, revision, authority, *subs = text.split("-")
    return (bytes([int(revision), len(subs)]) + int(authority).to_bytes(6, "big")
            + b"".join(int(sub).to_bytes(4, "little") for sub in subs))


def group_type(g: Group) -> int:
    if not g.security_enabled:
        return UNIVERSAL_DISTRIBUTION
    return UNIVERSAL_SECURITY if g.mail_enabled else GLOBAL_SECURITY


def safe_string(value: str) -> bool:
    """Whether RFC 2849 lets the value be written as is (else ldifde writes it as base64)."""
    return (value.isascii() and not any(c in value for c in "\0\r\n") and value[:1] not in (" ", ":", "<")
            and not value.endswith(" "))


def ldif_lines(name: str, value: str | bytes | int) -> list[str]:
    if isinstance(value, int):
        value = str(value)
    if isinstance(value, str) and safe_string(value):
        line = f"{name}: {value}"
    else:
        raw = value if isinstance(value, bytes) else value.encode("utf-8")
        line = f"{name}:: {base64.b64encode(raw).decode('ascii')}"
    first, rest = line[:LDIF_WIDTH], line[LDIF_WIDTH:]
    step = LDIF_WIDTH - 1  # a continuation line is a space and 78 characters
    return [first, *(" " + rest[i:i + step] for i in range(0, len(rest), step))]


def ldif_entry(dn: str, classes: tuple[str, ...], attributes: list[tuple[str, str | bytes | int | None]]) -> str:
    pairs = [("dn", dn), ("changetype", "add"), *(("objectClass", c) for c in classes)]
    pairs += [(name, value) for name, value in attributes if value is not None]
    return "".join(line + "\n" for name, value in pairs for line in ldif_lines(name, value)) + "\n"


def person_entry(p: Person) -> str:
    phone_attribute, phone = PHONES_AS_TYPED.get(p.n, (None, None))
    attributes = [("cn", p.display_name), ("sn", p.surname), ("givenName", p.given_name),
                  ("displayName", p.display_name)]
    if phone_attribute:
        attributes.append((phone_attribute, phone))
    attributes += [("memberOf", g.dn) for g in groups_of(p.sam)]
    attributes += [("objectGUID", guid_bytes(p.anchor)), ("objectSid", sid_bytes(p.sid)),
                   ("userAccountControl", UAC_NORMAL_ACCOUNT if p.enabled else UAC_DISABLED),
                   ("sAMAccountName", p.sam), ("userPrincipalName", p.upn), ("mail", p.mail)]
    if p.mail:
        attributes += [("proxyAddresses", f"SMTP:{p.mail}"), *(("proxyAddresses", f"smtp:{a}") for a in p.other_smtp),
                       ("msExchRecipientTypeDetails", RECIPIENT_TYPE_DETAILS[p.mailbox])]
    return ldif_entry(p.dn, ("top", "person", "organizationalPerson", "user"), attributes)


def group_entry(g: Group) -> str:
    attributes: list[tuple[str, str | bytes | int | None]] = [("cn", g.name)]
    if g.mail_enabled:
        attributes.append(("displayName", g.name))  # Exchange sets it on mail-enabled groups
    attributes += [("member", member_dn(m)) for m in g.members]
    attributes += [("memberOf", parent.dn) for parent in groups_of(f"group:{g.name}")]
    attributes += [("objectGUID", guid_bytes(g.id)), ("objectSid", sid_bytes(g.sid)), ("sAMAccountName", g.name),
                   ("groupType", group_type(g)), ("mail", g.mail)]
    if g.mail:
        attributes.append(("proxyAddresses", f"SMTP:{g.mail}"))
    return ldif_entry(g.dn, ("top", "group"), attributes)


def ldif_text() -> str:
    comment = [
        "# Fabrikam's Active Directory, exported on a domain controller with",
        f"#   {LDIFDE_COMMAND}",
        f"# The domain, its OUs, {len(PEOPLE)} users and mailboxes, {len(GROUPS)} groups. Fictional, and only",
        "# what scripts/make_examples.py knows of each object: written by that script",
        "# (do not edit by hand). The demo (zivsync demo, or make demo) starts from it:",
        f"#   zivsync-extract-ldap --ldif examples/{LDIF_NAME} \\",
        f"#       --base-dn {BASE_DN} --default-region {DEFAULT_REGION}",
        "# gives exactly the records of examples/directory-ldap.jsonl.",
    ]
    domain = [("dc", "fabrikam"), ("objectSid", sid_bytes(DOMAIN_SID))]
    entries = [ldif_entry(BASE_DN, ("top", "domain", "domainDNS"), domain)]
    entries += [ldif_entry(ou, ("top", "organizationalUnit"), [("ou", ou.split(",")[0].removeprefix("OU="))])
                for ou in ORGANIZATIONAL_UNITS]
    entries += [person_entry(p) for p in PEOPLE] + [group_entry(g) for g in GROUPS]
    return "\n".join(comment) + "\n\n" + "".join(entries)


CONFIG_TOML = """\
# zivsync configuration for the bundled Fabrikam demo (written by scripts/make_examples.py).
#
# Fabrikam owns three mail domains. zivsync manages the two below, so only addresses in them
# become accounts, aliases or delegates; fabrikam-legacy.org (the pre-merger domain, still
# claimed in Zivver for the one account left there) is dropped by normalize and left alone by diff.
claimed_domains = ["fabrikam.example", "fabrikam.nl"]

[extract-ldap]
# Where Fabrikam's users and groups live, and the country of phone numbers typed without
# +country code ("020 123 4501" is +31201234501). The demo reads AD from its LDIF export:
#   zivsync-extract-ldap --config examples/zivsync.toml --ldif examples/fabrikam.ldif
base_dn = "DC=fabrikam,DC=example"
default_region = "NL"

[diff]
# Safety limits: when the plan would suspend or empty more than 50 accounts, or more than 10 %
# of the managed accounts, diff exits 3 and the plan is still written, marked refused, for you
# to review; push will not apply it. The demo plans 3 of about 50.
max_suspend = 50
max_suspend_percent = 10
"""


def files() -> dict[str, str]:
    return {
        LDIF_NAME: ldif_text(),
        "directory-ldap.jsonl": text(ldap_lines()),
        "directory-exchange.jsonl": text(exchange_lines()),
        "current.jsonl": text(current_lines()),
        "state/mapping.json": mapping_json(),
        "zivsync.toml": CONFIG_TOML,
        "directory-ldap-broken.jsonl": text(broken_lines()),
        "directory-ldap-truncated.jsonl": text(truncated_lines()),
    }


# -- checking ----------------------------------------------------------------------------


def validators() -> dict[str, jsonschema.Draft202012Validator]:
    docs = [json.loads(path.read_text(encoding="utf-8")) for path in sorted(SCHEMAS.glob("*.json"))]
    registry = Registry().with_resources((doc["$id"], Resource.from_contents(doc)) for doc in docs)
    by_id = {doc["$id"]: doc for doc in docs}
    return {kind: jsonschema.Draft202012Validator(by_id[f"https://zivsync.invalid/schemas/{kind}.json"],
                                                  registry=registry)
            for kind in ("directory", "accounts")}


def invalid_lines(content: str, kind: str) -> list[tuple[int, str]]:
    validator = validators()[kind]
    problems = []
    for number, line in enumerate(content.split("\n")[:-1], 1):
        record = json.loads(line)
        for error in validator.iter_errors(record):
            problems.append((number, f"{'/'.join(map(str, error.absolute_path))}: {error.message}"))
    return problems


def check_stream(name: str, content: str, kind: str, complete: bool = True) -> None:
    assert content.endswith("\n") and "\r" not in content, f"{name}: LF line ends expected"
    lines = [json.loads(line) for line in content.split("\n")[:-1]]
    assert lines[0]["type"] == "header" and lines[0]["stream"] == kind, f"{name}: bad header"
    if complete:
        end = {k: v for k, v in lines[-1].items() if k != "tally"}
        assert end == {"type": "end", "count": len(lines) - 2}, f"{name}: bad end record"
    else:
        assert all(line["type"] != "end" for line in lines), f"{name}: must have no end record"
    if name == "directory-ldap-broken.jsonl":
        problems = invalid_lines(content, kind)
        assert [number for number, _ in problems] == [4], f"{name}: expected one problem, on line 4: {problems}"
    else:
        problems = invalid_lines(content, kind)
        assert not problems, f"{name}: {problems}"


def check_ldif(content: str) -> None:
    """Plain ASCII (ldifde's base64 carries everything else), short lines, one entry per object."""
    assert content.isascii() and "\r" not in content, f"{LDIF_NAME}: ASCII with LF line ends expected"
    lines = content.split("\n")
    assert all(len(line) <= LDIF_WIDTH for line in lines), f"{LDIF_NAME}: a line longer than {LDIF_WIDTH} columns"
    entries = sum(1 for line in lines if line.startswith(("dn: ", "dn:: ")))
    assert entries == 1 + len(ORGANIZATIONAL_UNITS) + len(PEOPLE) + len(GROUPS), entries


def check_tables() -> None:
    """Consistency of the hand-written tables (catches typos in the data)."""
    numbers = [p.n for p in PEOPLE]
    assert len(numbers) == len(set(numbers)), "duplicate person numbers"
    keys: dict[str, str] = {}
    for p in PEOPLE:
        for key in [p.anchor, p.upn.lower(), p.sid, f"{NETBIOS}\\{p.sam}".lower(), p.dn.lower(),
                    *(a.lower() for a in p.addresses)]:
            assert keys.setdefault(key, p.sam) == p.sam, f"{key} names both {keys[key]} and {p.sam}"
        assert any(p.dn.endswith("," + ou) for ou in ORGANIZATIONAL_UNITS), p.dn
    for g in GROUPS:
        for key in [g.id, g.sid, g.dn.lower(), *([g.mail.lower()] if g.mail else [])]:
            assert keys.setdefault(key, g.name) == g.name, f"{key} names both {keys[key]} and {g.name}"
    assert ORPHANED_SID not in keys
    for g in GROUPS:
        for m in g.members:
            member_dn(m)  # raises for a typo in a member's name
    assert sorted(PHONES_AS_TYPED) == [p.n for p in PEOPLE if p.phone], "a phone as typed for every phone, and no more"
    for p in PEOPLE:
        if p.phone:
            attribute, typed = PHONES_AS_TYPED[p.n]
            number = phonenumbers.parse(typed, DEFAULT_REGION)
            assert attribute in ("mobile", "telephoneNumber") and phonenumbers.is_valid_number(number), typed
            assert phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164) == p.phone, (typed, p.phone)
    claimed_users = [p for p in PEOPLE if p.mailbox == "user" and p.mail and p.mail.split("@")[1].lower() in CLAIMED]
    assert len(claimed_users) >= 40, len(claimed_users)
    assert sum(1 for p in PEOPLE if p.mailbox == "shared") == 5
    assert sum(1 for p in PEOPLE if p.mailbox == "user" and not p.enabled) >= 3
    for a in ZIVVER:
        assert a.email == a.email.lower() and list(a.aliases) == sorted(set(a.aliases)), a.email
        assert list(a.delegates) == sorted(set(a.delegates)), a.email


# A small, independent model of normalize and diff (DESIGN.md sections 3-4), only for checking
# that the tables above say what EXPECTED_PLAN says. It is not the implementation.

def claimed(address: str) -> bool:
    return address.rsplit("@", 1)[1].lower() in CLAIMED


def model_desired() -> dict[str, dict]:
    ldap = [r for r in ldap_lines() if r["type"] in ("person", "group")]
    exchange = [r for r in exchange_lines() if r["type"] in ("person", "permission")]
    persons: dict[str, dict] = {}
    for r in ldap + exchange:
        if r["type"] != "person":
            continue
        seen = persons.get(r["anchor"])
        if seen:  # the Exchange copy must agree with AD on everything an account is made of
            for key in ("mail", "addresses", "display_name", "mailbox", "phone"):
                assert seen[key] == r[key], (r["anchor"], key)
            if r["enabled"] is not None:
                seen["enabled"] = r["enabled"]
        else:
            persons[r["anchor"]] = dict(r)
    groups = {r["id"]: r for r in ldap if r["type"] == "group"}
    index: dict[str, str] = {}
    for p in persons.values():
        for key in [p["anchor"], p["upn"], p["sid"], p["dn"], f"{NETBIOS}\\{p['sam_account_name']}", *p["addresses"]]:
            index[key.lower()] = p["anchor"]
    for g in groups.values():
        for key in [g["id"], g["sid"], g["dn"], *g["addresses"]]:
            index[key.lower()] = g["id"]
    # a group's direct members: its member DNs, and the people whose memberOf names it
    members = {gid: {index[m.lower()] for m in g["members"]} for gid, g in groups.items()}
    for p in persons.values():
        for dn in p["groups"]:
            members[index[dn.lower()]].add(p["anchor"])

    def expand(object_id: str, seen: set[str]) -> set[str]:
        if object_id in seen:
            return set()
        seen.add(object_id)
        if object_id in persons:
            return {object_id}
        return set().union(*(expand(m, seen) for m in members[object_id]))

    def personal(p: dict) -> bool:
        return (p["mailbox"] == "user" or (p["mailbox"] == "none" and p["mail"] is not None)) and claimed(p["mail"])

    granted: dict[str, set[str]] = {}
    denied: dict[str, set[str]] = {}
    for perm in (r for r in exchange if r["type"] == "permission"):
        if "FullAccess" not in perm["rights"] or perm["inherited"]:
            continue
        mailbox, trustee = index.get(perm["mailbox"].lower()), index.get(perm["trustee"].lower())
        if mailbox is None or trustee is None:
            continue
        target = denied if perm["deny"] else granted
        target.setdefault(mailbox, set()).update(expand(trustee, set()))

    desired = {}
    for p in persons.values():
        if p["mailbox"] not in ("user", "shared", "none") or not p["mail"] or not claimed(p["mail"]):
            continue
        if p["mailbox"] != "shared" and not personal(p):
            continue
        delegates = granted.get(p["anchor"], set()) - denied.get(p["anchor"], set()) - {p["anchor"]}
        email = p["mail"].lower()
        desired[email] = {
            "kind": "functional" if p["mailbox"] == "shared" else "user",
            "email": email, "name": p["display_name"], "anchor": p["anchor"], "phone": p["phone"],
            "active": True if p["mailbox"] == "shared" else p["enabled"] is not False,
            "aliases": sorted({a.lower() for a in p["addresses"] if claimed(a)} - {email}),
            "delegates": sorted(persons[d]["mail"].lower() for d in delegates
                                if personal(persons[d]) and persons[d]["enabled"] is not False),
        }
    return desired


def model_plan() -> list[tuple[str, str]]:
    desired = model_desired()
    current = {a.email: account_record(a) for a in ZIVVER if claimed(a.email)}
    by_anchor = {person_anchor(n): next(a.email for a in ZIVVER if a.n == n) for n in MAPPED}
    plan, matched = [], set()
    for email, want in sorted(desired.items()):
        have_email = by_anchor.get(want["anchor"])
        if have_email is None and email in current:
            have_email = email
        if have_email is None:
            have_email = next((c for c in current if c in want["aliases"] or email in current[c]["aliases"]), None)
        have = current.get(have_email)
        if have is None:
            plan.append((f"create_{want['kind']}", email))
            continue
        matched.add(have_email)
        if have["kind"] != want["kind"]:
            plan.append(("skip", email))
            continue
        if have["email"] != email:
            plan.append(("rename_user", email))
        elif want["active"] and not have["active"]:
            plan.append(("reactivate_user", email))
        elif not want["active"] and have["active"]:
            plan.append(("suspend_user", email))
        elif any(want[k] != have[k] for k in ("name", "aliases", "delegates", "phone")):
            plan.append((f"update_{want['kind']}", email))
    for email, have in sorted(current.items()):
        if email in matched:
            continue
        if have["kind"] == "user" and have["active"]:
            plan.append(("suspend_user", email))
        elif have["kind"] == "functional" and have["delegates"]:
            plan.append(("empty_functional", email))
    return plan


def check_plan() -> None:
    got = sorted(model_plan())
    want = sorted(EXPECTED_PLAN)
    assert got == want, f"the data no longer gives EXPECTED_PLAN:\n  model:    {got}\n  expected: {want}"
    suspensions = sum(1 for op, _ in got if op in ("suspend_user", "empty_functional"))
    managed = len(model_desired()) + sum(1 for a in ZIVVER if claimed(a.email) and a.email not in model_desired())
    assert suspensions <= 0.10 * managed, (suspensions, managed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check that examples/ is up to date")
    args = parser.parse_args()

    check_tables()
    content = files()
    kinds = {"directory-ldap.jsonl": "directory", "directory-exchange.jsonl": "directory",
             "current.jsonl": "accounts", "directory-ldap-broken.jsonl": "directory",
             "directory-ldap-truncated.jsonl": "directory"}
    for name, kind in kinds.items():
        check_stream(name, content[name], kind, complete=name != "directory-ldap-truncated.jsonl")
    check_ldif(content[LDIF_NAME])
    current = [json.loads(line) for line in content["current.jsonl"].splitlines()[1:-1]]
    assert [r["email"] for r in current] == sorted(r["email"] for r in current)
    mapping = json.loads(content["state/mapping.json"])
    assert [e["zivver_id"] for e in mapping["accounts"]] == sorted(e["zivver_id"] for e in mapping["accounts"])
    config = tomllib.loads(content["zivsync.toml"])
    assert config == {"claimed_domains": list(CLAIMED),
                      "extract-ldap": {"base_dn": BASE_DN, "default_region": DEFAULT_REGION},
                      "diff": {"max_suspend": 50, "max_suspend_percent": 10}}
    check_plan()

    stale = []
    for name, body in content.items():
        path = EXAMPLES / name
        if args.check:
            if not path.exists() or path.read_bytes() != body.encode("utf-8"):
                stale.append(name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body.encode("utf-8"))
    if stale:
        print(f"examples/ is out of date ({', '.join(stale)}): run python scripts/make_examples.py", file=sys.stderr)
        return 1
    print(f"{'checked' if args.check else 'wrote'} {len(content)} files in {EXAMPLES}; expected plan:", file=sys.stderr)
    for op, email in EXPECTED_PLAN:
        print(f"  {op:18} {email}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
