"""Issue 12, property tests: answers of all three sources and of Zivver, generated in every
documented shape, with fields null, missing, of another type, reordered or added. The reader
gives either exactly the records the canonical shape gives, or an error record / a named
problem: never fewer delegates in a stream that says complete."""

from __future__ import annotations

import uuid
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stages.sources import activedirectory
from stages.sources.exchangeonline import MAILBOX_RIGHTS, Reader, Scope
from stages.zivver import scim
from stages.zivver.client import ZIVVER_USER

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- Exchange (both transports share this reader): Get-MailboxPermission answers ------------------

PEOPLE = [{"Guid": str(uuid.UUID(int=n + 1)), "PrimarySmtpAddress": f"p{n}@x.example", "RecipientTypeDetails":
           "UserMailbox", "EmailAddresses": [f"SMTP:p{n}@x.example"], "Alias": f"p{n}"} for n in range(4)]
SHARED = {"Guid": str(uuid.UUID(int=100)), "PrimarySmtpAddress": "team@x.example",
          "RecipientTypeDetails": "SharedMailbox", "EmailAddresses": ["SMTP:team@x.example"]}


class Answers:
    """Stands in for the transport: the reader under test is the parser, not the I/O."""

    def __init__(self, rows):
        self.rows = rows

    def invoke_many(self, cmdlets, **_):
        return [self.rows for _ in cmdlets]


class Enum(int):
    """An enum object as psrpcore gives it: the number, its text the flags' names."""

    def __new__(cls, value: int, text: str):
        obj = super().__new__(cls, value)
        obj.text = text
        return obj

    def __str__(self):
        return self.text


grant = st.fixed_dictionaries({
    "user": st.sampled_from([p["PrimarySmtpAddress"] for p in PEOPLE] + [p["Alias"] for p in PEOPLE]),
    "rights": st.sets(st.sampled_from(sorted(MAILBOX_RIGHTS)), min_size=1),
    "deny": st.booleans(), "inherited": st.booleans()})


@st.composite
def rendered(draw, grants: list[dict]) -> tuple[list, bool]:
    """The grants in one of the documented shapes; and whether something was made odd."""
    def rights(names: set) -> object:
        ordered = sorted(names, key=MAILBOX_RIGHTS.get)
        mask = sum(MAILBOX_RIGHTS[n] for n in names)
        return draw(st.sampled_from([
            ordered, [", ".join(ordered)], ", ".join(ordered), [mask], mask, [str(mask)],
            [Enum(mask, ", ".join(ordered))], [n.lower() for n in ordered]]))

    entries = [{"User": g["user"], "AccessRights": rights(g["rights"]), "Deny": g["deny"],
                "IsInherited": g["inherited"], "InheritanceType": "All", "IsValid": True} for g in grants]
    if draw(st.booleans()):  # the REST route: one entry per trustee, its ACEs in PermissionList
        by_user: dict[str, dict] = {}
        for e in entries:
            by_user.setdefault(e["User"], {"User": e["User"], "PermissionId": "x", "PermissionList": []})[
                "PermissionList"].append({k: v for k, v in e.items() if k != "User"})
        entries = list(by_user.values())
    odd = False
    if entries and draw(st.booleans()):
        target = draw(st.sampled_from(entries))
        inner = target["PermissionList"][0] if "PermissionList" in target else target
        field = draw(st.sampled_from(["AccessRights", "Deny", "IsInherited", "User"]))
        if field in inner:
            how = draw(st.sampled_from(["null", "missing", "other type"]))
            if how == "missing":
                del inner[field]
            else:
                inner[field] = None if how == "null" else {"odd": [1]}
            odd = True
    for entry in entries:  # the service adds properties; their order means nothing
        entry["ChangedProperties"] = []
        keys = draw(st.permutations(list(entry)))
        entry_copy = {k: entry[k] for k in keys}
        entry.clear()
        entry.update(entry_copy)
    return entries, odd


def expected_permissions(grants: list[dict]) -> Counter:
    people = {**{p["PrimarySmtpAddress"]: p for p in PEOPLE}, **{p["Alias"]: p for p in PEOPLE}}
    return Counter((str(uuid.UUID(people[g["user"]]["Guid"])), g["deny"], g["inherited"])
                   for g in grants if "FullAccess" in g["rights"])


@SETTINGS
@given(grants=st.lists(grant, max_size=6), data=st.data())
def test_permission_answers_give_the_canonical_records_or_an_error(grants, data):
    entries, odd = data.draw(rendered(grants))
    reader = Reader(Answers(entries), Scope())
    for item in (*PEOPLE, SHARED):
        reader.names.add(item)
    records = list(reader.permissions([SHARED]))
    got = Counter((r["trustee"], r["deny"], r["inherited"]) for r in records)
    if reader.errors:  # the stream is incomplete: diff takes nothing away on its account
        assert odd and all(e["operation"] == "Get-MailboxPermission" for e in reader.errors)
        assert got <= expected_permissions(grants)
    else:
        assert got == expected_permissions(grants)


# -- Active Directory: an attribute that does not read is an error record, never a guess ------------


@SETTINGS
@given(control=st.one_of(st.integers(0, 2**31), st.sampled_from([b"", b"abc", b"\xff\xfe", b"12x", b" 514 "])),
       mail=st.sampled_from([[b"a@corp.example"], [], [b"\xff"], [b"not an address"]]))
def test_ldap_attributes_read_or_refused(control, mail):
    raw = str(control).encode() if isinstance(control, int) else control
    attributes = {"objectguid": [uuid.UUID(int=7).bytes_le], "useraccountcontrol": [raw], "mail": mail,
                  "proxyaddresses": [b"SMTP:" + m for m in mail if m.startswith(b"a@")],
                  "samaccountname": [b"jdoe"]}
    scope = activedirectory.Scope(base_dn="DC=corp,DC=example")

    class Export:
        def people(self):
            return [("CN=J,DC=corp,DC=example", attributes)]

        def groups(self):
            return []

    (record,) = list(activedirectory.records(Export(), scope, Counter()))
    try:
        number = int(raw.decode("utf-8").strip()) if raw.strip() else None
    except (UnicodeDecodeError, ValueError):
        assert record["type"] == "error"
        return
    if record["type"] == "error":  # the mail attribute may be what did not read
        assert mail == [b"\xff"]
        return
    assert record["enabled"] == (None if number is None else not number & 2)


# -- Zivver: SCIM resources ----------------------------------------------------------------------


@st.composite
def resource(draw, number: int) -> tuple[dict, dict | None]:
    """A User as Zivver lists it, possibly odd; and the account it must give (None: a problem)."""
    active = draw(st.booleans())
    user = {"id": f"u{number}", "userName": f"U{number}@x.example", "active": active,
            "name": {"formatted": f"User {number}"}, "phoneNumbers": [], "schemas": [],
            ZIVVER_USER: {"aliases": [], "delegates": []}, "meta": {"created": "2024-01-01"}}
    expected = {"email": f"u{number}@x.example", "active": active}
    if draw(st.booleans()):
        field = draw(st.sampled_from(["userName", "active", ZIVVER_USER, "name", "id"]))
        how = draw(st.sampled_from(["null", "missing", "other type"]))
        if how == "missing":
            del user[field]
        else:
            user[field] = None if how == "null" else 17
        tolerated = field in ("name", ZIVVER_USER) and how in ("null", "missing")  # optional: empty
        expected = expected if tolerated else None
    keys = draw(st.permutations(list(user)))
    return {k: user[k] for k in keys}, expected


@SETTINGS
@given(data=st.data(), size=st.integers(0, 6))
def test_scim_users_give_their_accounts_or_a_named_problem(data, size):
    drawn = [data.draw(resource(n)) for n in range(size)]
    accounts, _, problems = scim.snapshot_accounts([r for r, _ in drawn], [])
    assert [(a["email"], a["active"]) for a in accounts] == sorted(
        (e["email"], e["active"]) for _, e in drawn if e is not None)
    assert len(problems) == sum(e is None for _, e in drawn)
