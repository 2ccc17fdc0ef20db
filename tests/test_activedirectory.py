"""The parts of extract-ldap that need no domain controller: entries to records, filters,
the ldapsearch line, and ranged retrieval (served by ldap3's mock strategy, since Samba
returns every value of a big group at once where Active Directory stops at 1,500)."""

from __future__ import annotations

import uuid
from collections import Counter

import ldap3
import pytest

from stages.sources.activedirectory import (
    CONNECTION_OPTIONS,
    LdifDirectory,
    LiveDirectory,
    Scope,
    Server,
    group_record,
    guid_text,
    ldapsearch_command,
    mail_addresses,
    person_record,
    sid_text,
)

GUID = uuid.UUID("6b29fc40-ca47-1067-b31d-00dd010662da")
SID = bytes.fromhex("010500000000000515000000a065cfc8780b0b7e86ab0b37c4040000")  # S-1-5-21-...-1220


def entry(**values) -> dict:
    attributes = {"objectguid": [GUID.bytes_le], "objectclass": [b"top", b"user"]}
    for name, value in values.items():
        items = value if isinstance(value, list) else [value]
        attributes[name.lower()] = [v if isinstance(v, bytes) else str(v).encode() for v in items]
    return attributes


def test_guid_and_sid_in_their_text_forms():
    assert guid_text(GUID.bytes_le) == str(GUID)  # objectGUID is stored mixed-endian
    assert sid_text(SID) == "S-1-5-21-3369035168-2114653048-923511686-1220"
    with pytest.raises(ValueError):
        sid_text(SID[:-1])


def test_addresses_primary_first_lower_case_without_other_kinds_or_junk():
    notes = Counter()
    attributes = entry(proxyAddresses=["smtp:B@Example.com", "X500:/o=x", "SMTP:A@Example.com", "sip:a@example.com",
                                       "smtp:not-an-address", "smtp:a@example.com"], mail="ignored@example.com")
    assert mail_addresses(attributes, notes) == ("a@example.com", ["a@example.com", "b@example.com"])
    assert notes == {"malformed e-mail address left out": 1}
    assert mail_addresses(entry(mail="Only@Example.com"), notes) == ("only@example.com", ["only@example.com"])
    assert mail_addresses(entry(), notes) == (None, [])


@pytest.mark.parametrize("kind, expected", [
    (None, "none"), (1, "user"), (2147483648, "user"), (4, "shared"), (34359738368, "shared"), (16, "room"),
    (8589934592, "room"), (32, "equipment"), (17179869184, "equipment"), (128, "none")])
def test_mailbox_kinds(kind, expected):
    values = {"msExchRecipientTypeDetails": kind} if kind is not None else {}
    assert person_record(("CN=x", entry(**values)), Scope("DC=x"), Counter())["mailbox"] == expected


def test_person_record_enabled_phone_and_sso_key():
    scope = Scope("DC=x", default_region="NL", sso_key_attribute="objectSid", extra_attributes=("objectSid", "info"))
    notes = Counter()
    record = person_record(("CN=A,DC=x", entry(userAccountControl=514, telephoneNumber="020-1234567",
                                               mobile="call me", objectSid=SID, info=["one", "two"])), scope, notes)
    assert record["enabled"] is False and record["phone"] == "+31201234567"
    assert record["sso_key"] == record["sid"] == "S-1-5-21-3369035168-2114653048-923511686-1220"
    assert record["extra"] == {"objectSid": record["sid"], "info": ["one", "two"]}
    assert notes == {"mobile is not a valid phone number": 1}
    assert person_record(("CN=A", entry()), Scope("DC=x"), notes)["enabled"] is None  # not read: unknown


def test_group_record_kinds():
    security = group_record(("CN=G,DC=x", entry(groupType=-2147483646, cn="G", member=["CN=A,DC=x"])),
                            Scope("DC=x"), Counter())
    assert security["security_enabled"] and not security["mail_enabled"] and security["members"] == ["CN=A,DC=x"]
    distribution = group_record(("CN=D,DC=x", entry(groupType=8, displayName="Sales", mail="sales@x.example")),
                                Scope("DC=x"), Counter())
    assert not distribution["security_enabled"] and distribution["mail_enabled"] and distribution["name"] == "Sales"


def test_scope_filters_escape_what_the_tool_puts_in():
    scope = Scope("DC=x", include_groups=("CN=R&D (west)*,DC=x",), exclude_groups=("CN=Old\\,Staff,DC=x",),
                  filter="department=Sales")
    assert scope.person_filter() == (
        "(&(&(objectCategory=person)(objectClass=user))"
        "(memberOf:1.2.840.113556.1.4.1941:=CN=R&D \\28west\\29\\2a,DC=x)"
        "(!(memberOf:1.2.840.113556.1.4.1941:=CN=Old\\5c,Staff,DC=x))(department=Sales))")


def test_ous_nested_in_each_other_are_searched_once():
    scope = Scope("DC=x", include_ous=("OU=A,DC=x", "OU=B,OU=A,DC=x", "OU=C,DC=x"), exclude_ous=("OU=D,OU=C,DC=x",))
    assert scope.search_bases() == ["OU=A,DC=x", "OU=C,DC=x"]
    twice = Scope("DC=x", include_ous=("OU=A,DC=x", "ou=a, dc=x"), exclude_ous=("OU=D , DC=X",))
    assert twice.search_bases() == ["ou=a, dc=x"]  # the same OU, written twice: searched once, not dropped
    assert twice.outside("CN=p,OU=D,DC=x", person=True) and not twice.outside("CN=p,OU=A,DC=x", person=True)
    assert scope.outside("CN=p,OU=D,OU=C,DC=x", person=True) and scope.outside("CN=g,OU=D,OU=C,DC=x", person=False)
    assert scope.outside("CN=p,OU=E,DC=x", person=True) and not scope.outside("CN=g,OU=E,DC=x", person=False)


def test_ldapsearch_line_quotes_and_never_holds_the_password():
    server = Server(urls=("ldap://dc1.corp.example",), bind_dn="CORP\\svc zivsync", password="s3cret!",
                    ca_file="/etc/ssl/corp ca.pem")
    line = ldapsearch_command("ldap://dc1.corp.example", server, "OU=Staff,DC=corp", "(cn=O'Brien)", ["mail"],
                              page_size=1000)
    assert line == ("LDAPTLS_CACERT='/etc/ssl/corp ca.pem' ldapsearch -H ldap://dc1.corp.example:389 -ZZ -x "
                    "-D 'CORP\\svc zivsync' -W -b OU=Staff,DC=corp -s sub -E pr=1000/noprompt "
                    "'(cn=O'\"'\"'Brien)' mail")
    assert "s3cret" not in line and "s3cret" not in repr(server)


# -- ranged retrieval -------------------------------------------------------------------------------


def ranged_mock(members: int, limit: int = 1500):
    """An ldap3 mock DC that, like Active Directory, hands out ``member`` at most ``limit``
    values at a time (``member;range=0-1499``, then what the client asks for: ``member;range=1500-*``)."""
    connection = ldap3.Connection(ldap3.Server("mock-dc", get_info=ldap3.NONE), user="CN=admin,DC=x",
                                  password="pw", client_strategy=ldap3.MOCK_SYNC, **CONNECTION_OPTIONS)
    connection.strategy.add_entry("CN=admin,DC=x", {"userPassword": "pw"})
    names = [f"CN=User {i:05d},OU=Bulk,DC=x" for i in range(members)]
    connection.strategy.add_entry("CN=Big,DC=x", {"objectClass": ["top", "group"], "cn": "Big",
                                                  "objectGUID": GUID.bytes_le, "groupType": "-2147483646",
                                                  "member": names})
    original, asked = connection.strategy._execute_search, []

    def execute(request):
        ranges = {}
        for position, wanted in enumerate(request["attributes"]):
            name, _, span = str(wanted).partition(";range=")
            if span:
                ranges[name.lower()] = int(span.partition("-")[0])
                request["attributes"][position] = name
        asked.append(dict(ranges))
        responses, result = original(request)
        for response in responses:
            for attribute in response["attributes"]:
                values = attribute["vals"]
                if attribute["type"].lower() != "member" or (len(values) <= limit and not ranges):
                    continue
                start = ranges.get("member", 0)
                chunk = values[start:start + limit]
                end = "*" if start + limit >= len(values) else str(start + limit - 1)
                attribute["type"], attribute["vals"] = f"member;range={start}-{end}", chunk
        return responses, result

    connection.strategy._execute_search = execute
    connection.bind()
    return connection, names, asked


@pytest.mark.parametrize("members", [1500, 1501, 3200, 4500])
def test_ranged_member_values_are_followed_to_the_end(members):
    connection, names, asked = ranged_mock(members)
    directory = LiveDirectory(Server(urls=("ldap://mock-dc",)), Scope("DC=x"), page_size=1000)
    directory.connection, directory.url = connection, "ldap://mock-dc"
    groups = list(directory.groups())
    assert len(groups) == 1
    dn, attributes = groups[0]
    assert [m.decode() for m in attributes["member"]] == names  # all of them, in order, once
    assert not any(";range=" in key for key in attributes)
    follow_ups = [a for a in asked if "member" in a]
    assert [a["member"] for a in follow_ups] == list(range(1500, members, 1500))


def test_a_range_that_stops_early_is_an_error_not_a_short_group():
    connection, _, _ = ranged_mock(3200)
    original = connection.strategy._execute_search

    def forgetful(request):
        if any(";range=1500" in str(a) for a in request["attributes"]):
            request["attributes"] = ["cn"]
        return original(request)

    connection.strategy._execute_search = forgetful
    directory = LiveDirectory(Server(urls=("ldap://mock-dc",)), Scope("DC=x"))
    directory.connection, directory.url = connection, "ldap://mock-dc"
    with pytest.raises(Exception, match="stopped giving member after 1500 values"):
        list(directory.groups())


def test_ldif_directory_applies_scope_like_a_live_search(tmp_path):
    ldif = tmp_path / "export.ldif"
    ldif.write_text("\n\n".join([
        "dn: CN=Ann,OU=Staff,DC=x\nobjectClass: user\nobjectGUID:: " + _b64(uuid.uuid4().bytes_le),
        "dn: CN=Bob,OU=Staff,DC=x\nobjectClass: user\nobjectGUID:: " + _b64(uuid.uuid4().bytes_le),
        "dn: CN=PC1,OU=Staff,DC=x\nobjectClass: user\nobjectClass: computer\nobjectGUID:: " + _b64(uuid.uuid4().bytes_le),
        "dn: CN=Outer,DC=x\nobjectClass: group\nmember: CN=Inner,DC=x\nobjectGUID:: " + _b64(uuid.uuid4().bytes_le),
        "dn: CN=Inner,DC=x\nobjectClass: group\nmember: CN=Bob,OU=Staff,DC=x\nmember: CN=Outer,DC=x\nobjectGUID:: "
        + _b64(uuid.uuid4().bytes_le),
        "dn: CN=Elsewhere,DC=y\nobjectClass: user\nobjectGUID:: " + _b64(uuid.uuid4().bytes_le),
    ]) + "\n")
    everyone = LdifDirectory(ldif, Scope("DC=x"))
    assert [dn for dn, _ in everyone.people()] == ["CN=Ann,OU=Staff,DC=x", "CN=Bob,OU=Staff,DC=x"]
    assert [dn for dn, _ in everyone.groups()] == ["CN=Outer,DC=x", "CN=Inner,DC=x"]
    nested = LdifDirectory(ldif, Scope("DC=x", include_groups=("CN=Outer,DC=x",)))
    assert [dn for dn, _ in nested.people()] == ["CN=Bob,OU=Staff,DC=x"]  # through Inner, cycle and all
    chained = LdifDirectory(ldif, Scope("DC=x", filter="(!(memberOf:1.2.840.113556.1.4.1941:=CN=Outer,DC=x))"))
    assert [dn for dn, _ in chained.people()] == ["CN=Ann,OU=Staff,DC=x"]


def _b64(raw: bytes) -> str:
    import base64
    return base64.b64encode(raw).decode()


def test_kerberos_without_its_package_says_what_to_install(monkeypatch):
    import importlib.util

    from stages.cli import ZivsyncError
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("gssapi", "winkerberos") else real(name, *a))
    directory = LiveDirectory(Server(urls=("ldap://127.0.0.1:1",), kerberos=True), Scope("DC=x"))
    with pytest.raises(ZivsyncError, match="pip install gssapi .* or winkerberos"):
        directory.connect()


def test_a_search_the_server_cuts_short_is_a_failure_not_the_end(monkeypatch):
    connection, _, _ = ranged_mock(10)
    original = connection.strategy._execute_search

    def time_limit(request):
        responses, result = original(request)
        return responses, {**result, "resultCode": 3, "diagnosticMessage": "time limit exceeded"}

    connection.strategy._execute_search = time_limit
    directory = LiveDirectory(Server(urls=("ldap://mock-dc",)), Scope("DC=x"))
    directory.connection, directory.url = connection, "ldap://mock-dc"
    with pytest.raises(Exception, match="timeLimitExceeded"):
        list(directory.groups())


def test_an_ldif_export_with_part_of_a_ranged_attribute_is_refused(tmp_path):
    from stages.cli import ZivsyncError
    ldif = tmp_path / "export.ldif"
    ldif.write_text("dn: CN=Big,DC=x\nobjectClass: group\nobjectGUID:: " + _b64(uuid.uuid4().bytes_le)
                    + "\nmember;range=0-1: CN=A,DC=x\nmember;range=0-1: CN=B,DC=x\n\n")
    with pytest.raises(ZivsyncError, match="exported in part"):
        list(LdifDirectory(ldif, Scope("DC=x")).groups())
    whole = tmp_path / "whole.ldif"
    whole.write_text("dn: CN=Big,DC=x\nobjectClass: group\nobjectGUID:: " + _b64(uuid.uuid4().bytes_le)
                     + "\nmember;range=0-0: CN=A,DC=x\nmember;range=1-*: CN=B,DC=x\n\n")
    [(_, attributes)] = list(LdifDirectory(whole, Scope("DC=x")).groups())
    assert attributes["member"] == [b"CN=A,DC=x", b"CN=B,DC=x"]


def test_an_include_group_that_does_not_exist_is_an_error(tmp_path):
    from stages.cli import ZivsyncError
    ldif = tmp_path / "export.ldif"
    ldif.write_text("dn: CN=Ann,DC=x\nobjectClass: user\nobjectGUID:: " + _b64(uuid.uuid4().bytes_le) + "\n\n"
                    "dn: CN=Team,DC=x\nobjectClass: group\nmember: CN=Ann,DC=x\nobjectGUID:: "
                    + _b64(uuid.uuid4().bytes_le) + "\n\n")
    with pytest.raises(ZivsyncError, match="no such group"):
        list(LdifDirectory(ldif, Scope("DC=x", include_groups=("CN=Taem,DC=x",))).people())
    spaced = LdifDirectory(ldif, Scope("DC=x", include_groups=("cn=team, dc=x",)))  # the same DN, written loosely
    assert [dn for dn, _ in spaced.people()] == ["CN=Ann,DC=x"]
