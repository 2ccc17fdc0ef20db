"""The LDIF reader (stages/sources/ldif.py) and the local LDAP filter evaluator (stages/sources/ldapfilter.py)."""

from __future__ import annotations

import base64
import codecs
import pickle

import pytest

from stages.sources.ldapfilter import FilterError, compile_filter
from stages.sources.ldif import LdifError, decode_entries, read_entries

GUID = bytes(range(0, 256, 16))  # 00 10 20 ... f0: NUL and non-UTF-8 bytes both
GUID_B64 = base64.b64encode(GUID).decode()
LONG_BINARY = bytes(range(256)) * 2  # long enough to fold several times


def fold(line: str, width: int = 76) -> list[str]:
    """Fold as ldapsearch does: ``width`` columns, continuation lines start with a space."""
    lines = [line[:width]]
    rest = line[width:]
    while rest:
        lines.append(" " + rest[:width - 1])
        rest = rest[width - 1:]
    return lines


def entries(text: str) -> list:
    return list(decode_entries(text.splitlines(keepends=True), "test.ldif"))


SAMPLE_LINES = [
    "# extended LDIF",
    "#",
    "# LDAPv3",
    "# a comment folded",
    "  over two lines",
    "version: 1",
    "",
    "# John Smith, Users, example.com",
    "dn: CN=John Smith,CN=Users,DC=example,DC=com",
    "objectClass: top",
    "objectClass: person",
    "cn: John Smith",
    *fold("objectGUID:: " + GUID_B64, 20),
    *fold("thumbnailPhoto:: " + base64.b64encode(LONG_BINARY).decode()),
    "description: a long ASCII text that ld",
    " apsearch folded",
    "# a comment inside the entry",
    "member;range=0-1499: CN=A,DC=example,DC=com",
    "userCertificate;binary:: AAE=",
    "info:",
    "mail:   john@example.com",
    "proxyAddresses: SMTP:john@example.com",
    "proxyAddresses: smtp:js@example.com",
    "proxyAddresses: SMTP:john@example.com",
    "",
    "",
    "",
    "dn:: " + base64.b64encode("CN=José Müller,CN=Users,DC=example,DC=com".encode()).decode(),
    "displayName: José Müller",
    "sn:: " + base64.b64encode("Müller".encode()).decode(),
    "title: trailing spaces kept  ",
]
SAMPLE = "\n".join(SAMPLE_LINES) + "\n"  # no blank line after the last entry

SAMPLE_ENTRIES = [
    ("CN=John Smith,CN=Users,DC=example,DC=com", {
        "objectclass": [b"top", b"person"],
        "cn": [b"John Smith"],
        "objectguid": [GUID],
        "thumbnailphoto": [LONG_BINARY],
        "description": [b"a long ASCII text that ldapsearch folded"],
        "member;range=0-1499": [b"CN=A,DC=example,DC=com"],
        "usercertificate;binary": [b"\x00\x01"],
        "info": [b""],
        "mail": [b"john@example.com"],
        "proxyaddresses": [b"SMTP:john@example.com", b"smtp:js@example.com",
                           b"SMTP:john@example.com"],
    }),
    ("CN=José Müller,CN=Users,DC=example,DC=com", {
        "displayname": ["José Müller".encode()],
        "sn": ["Müller".encode()],
        "title": [b"trailing spaces kept  "],
    }),
]


# --- reading ------------------------------------------------------------------------


def test_sample_gives_the_entries_with_exact_bytes_in_file_order():
    assert entries(SAMPLE) == SAMPLE_ENTRIES


def test_folded_base64_guid_round_trips_to_the_exact_bytes():
    ((_, attributes),) = entries("\n".join(["dn: cn=a", *fold("objectGUID:: " + GUID_B64, 15)]))
    assert attributes["objectguid"] == [GUID]


def test_base64_with_whitespace_inside_is_tolerated():
    text = f"dn: cn=a\nobjectGUID:: {GUID_B64[:8]} {GUID_B64[8:]}\n"
    assert entries(text)[0][1]["objectguid"] == [GUID]


@pytest.mark.parametrize("cut", range(1, len("café au lait")))
def test_a_fold_anywhere_in_decoded_text_is_joined(cut):
    value = "café au lait"
    ((_, attributes),) = entries(f"dn: cn=a\ncn: {value[:cut]}\n {value[cut:]}\n")
    assert attributes["cn"] == [value.encode()]


def test_a_fold_between_a_letter_and_its_combining_accent():
    ((_, attributes),) = entries("dn: cn=a\ncn: cafe\n \u0301\n")
    assert attributes["cn"] == ["cafe\u0301".encode()]


def test_a_folded_dn_and_only_one_space_removed():
    ((dn, attributes),) = entries("dn: CN=John,CN=Us\n ers,DC=x\ncn: a\n  b\n")
    assert dn == "CN=John,CN=Users,DC=x"
    assert attributes["cn"] == [b"a b"]


def test_spaces_after_the_colon_are_ignored_and_none_are_needed():
    ((_, attributes),) = entries("dn:cn=a\ncn:a\nsn:    b\n")
    assert attributes == {"cn": [b"a"], "sn": [b"b"]}


def test_utf8_dn_in_base64():
    dn = "CN=Zoë Ångström,OU=Ünits,DC=example,DC=com"
    ((read, _),) = entries(f"dn:: {base64.b64encode(dn.encode()).decode()}\ncn: x\n")
    assert read == dn


def test_empty_and_comment_only_input_give_no_entries():
    assert entries("") == []
    assert entries("# nothing\n#  here\n\n\n") == []
    assert entries("version: 1\n\n# no entries\n") == []


def test_version_line_may_be_followed_directly_by_the_first_record():
    assert entries("version: 1\ndn: cn=a\ncn: a\n") == [("cn=a", {"cn": [b"a"]})]


def test_a_record_of_only_a_dn():
    assert entries("dn: cn=a\n\ndn: cn=b\n") == [("cn=a", {}), ("cn=b", {})]


def test_attribute_names_are_lower_cased_and_values_merged_across_spellings():
    ((_, attributes),) = entries("dn: cn=a\nproxyAddresses: a\nPROXYADDRESSES: b\n")
    assert attributes == {"proxyaddresses": [b"a", b"b"]}


def test_changetype_add_from_ldifde_is_ignored():
    text = "dn: CN=A,DC=x\nchangetype: add\nobjectClass: user\n\ndn: CN=B,DC=x\nchangetype: Add\n"
    assert entries(text) == [("CN=A,DC=x", {"objectclass": [b"user"]}), ("CN=B,DC=x", {})]


def test_crlf_line_ends():
    assert entries(SAMPLE.replace("\n", "\r\n")) == SAMPLE_ENTRIES
    assert entries(SAMPLE.replace("\n", "\r\n") + "\r\n") == SAMPLE_ENTRIES


def test_lines_without_line_ends_are_accepted():
    assert list(decode_entries(SAMPLE_LINES)) == SAMPLE_ENTRIES


def test_ldapsearch_references_are_skipped_and_a_good_result_accepted():
    text = "\n".join([
        "dn: cn=a,dc=x", "cn: a", "",
        "# search reference", "ref: ldap://ForestDnsZones.x/DC=ForestDnsZones,DC=x", "",
        "# search result", "search: 2", "result: 0 Success",
        "control: 1.2.840.113556.1.4.319 false MAUCAQAEAA==", "",
        "# numResponses: 3", "# numEntries: 1", "",
    ])
    assert entries(text) == [("cn=a,dc=x", {"cn": [b"a"]})]


def test_an_ldapsearch_size_limit_means_an_incomplete_export():
    text = "dn: cn=a\ncn: a\n\n# search result\nsearch: 2\nresult: 4 Size limit exceeded\n"
    with pytest.raises(LdifError, match="incomplete") as error:
        entries(text)
    assert error.value.line == 6


# --- errors -------------------------------------------------------------------------


ERRORS = [
    ("cn: a\n", 1, "must start with dn:"),
    ("# comment\n\nobjectClass: top\n", 3, "must start with dn:"),
    ("dn: a\n\nversion: 1\n", 3, "must start with dn:"),
    ("version: 2\ndn: a\n", 1, "version"),
    ("dn: a\ncn a\n", 2, "colon"),
    ("dn: a\ncn: b\n\njust text\n", 4, "colon"),
    ("dn: a\nbad name: x\n", 2, "attribute description"),
    ("dn: a\nobjectGUID:: AAE!\n", 2, "base64"),
    ("dn: a\ncn: b\nobjectGUID:: AAE\n !=\n", 3, "base64"),  # a folded line: its first line
    ("dn: a\nobjectGUID:: AAE\n", 2, "base64"),  # padding missing
    ("dn:: AAE!\n", 1, "base64"),
    ("dn:: //79\n", 1, "not UTF-8"),
    (" cn: a\ndn: b\n", 1, "start of the file"),
    ("dn: a\ncn: b\n\n continued\n", 4, "after a blank line"),
    ("dn: a\ncn: b\ndn: c\n", 3, "second dn:"),
    ("dn: a\nchangetype: modify\nreplace: cn\ncn: b\n-\n", 2,
     "only content records and changetype: add can be read"),
    ("dn: a\nchangetype: delete\n", 2, "only content records and changetype: add"),
    ("dn: a\ncn: b\n\ndn: c\nchangetype: modrdn\nnewrdn: cn=d\n", 5, "changetype: add"),
    ("dn: a\nchangetype: moddn\n", 2, "changetype: add"),
    ("dn: a\njpegPhoto:< file:///tmp/photo.jpg\n", 2, "URL values are not supported"),
    ("dn: a\n\nref: ldap://x\ncn: a\n", 4, "search reference"),
    ("dn: a\n\nsearch: 2\ncn: a\n", 4, "ldapsearch result"),
]


@pytest.mark.parametrize(("text", "line", "message"), ERRORS)
def test_errors_name_the_physical_line(text, line, message):
    with pytest.raises(LdifError) as error:
        entries(text)
    assert error.value.line == line
    assert message in error.value.message
    assert str(error.value) == f"test.ldif, line {line}: {error.value.message}"
    assert error.value.path == "test.ldif"


def test_ldif_error_is_a_value_error_and_survives_pickling():
    error = LdifError("x.ldif", 7, "bad")
    assert isinstance(error, ValueError)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.path, copy.line, copy.message, str(copy)) == ("x.ldif", 7, "bad",
                                                                "x.ldif, line 7: bad")


# --- files and encodings ------------------------------------------------------------


ENCODINGS = [
    ("utf-8", b"", "\n"),
    ("utf-8", codecs.BOM_UTF8, "\n"),
    ("utf-8", codecs.BOM_UTF8, "\r\n"),
    ("utf-16-le", codecs.BOM_UTF16_LE, "\r\n"),  # ldifde -u
    ("utf-16-le", codecs.BOM_UTF16_LE, "\n"),
    ("utf-16-be", codecs.BOM_UTF16_BE, "\n"),
    ("utf-16-le", b"", "\r\n"),  # no BOM: found from the NUL bytes
    ("utf-16-be", b"", "\n"),
]


@pytest.mark.parametrize(("encoding", "bom", "newline"), ENCODINGS)
def test_files_in_every_encoding_give_the_same_entries(tmp_path, encoding, bom, newline):
    path = tmp_path / "export.ldif"
    path.write_bytes(bom + SAMPLE.replace("\n", newline).encode(encoding))
    assert list(read_entries(path)) == SAMPLE_ENTRIES
    assert list(read_entries(str(path))) == SAMPLE_ENTRIES


def test_ldifde_style_utf16_export(tmp_path):
    path = tmp_path / "ldifde.ldf"
    text = ("dn: CN=Zoë,OU=Staff,DC=x\r\nchangetype: add\r\nobjectClass: user\r\n"
            "displayName: Zoë\r\nobjectGUID:: " + GUID_B64 + "\r\n\r\n")
    path.write_bytes(codecs.BOM_UTF16_LE + text.encode("utf-16-le"))
    assert list(read_entries(path)) == [("CN=Zoë,OU=Staff,DC=x", {
        "objectclass": [b"user"], "displayname": ["Zoë".encode()], "objectguid": [GUID]})]


def test_a_fold_splitting_the_utf8_bytes_of_a_character(tmp_path):
    path = tmp_path / "split.ldif"
    path.write_bytes(b"dn: cn=a\ncn: caf\xc3\n \xa9 au lait\n")
    assert list(read_entries(path)) == [("cn=a", {"cn": ["café au lait".encode()]})]


def test_a_fold_splitting_a_utf16_surrogate_pair(tmp_path):
    path = tmp_path / "split.ldf"
    high, low = "\U0001F600".encode("utf-16-le")[:2], "\U0001F600".encode("utf-16-le")[2:]
    path.write_bytes(codecs.BOM_UTF16_LE + "dn: cn=a\r\ncn: x".encode("utf-16-le") + high
                     + "\r\n ".encode("utf-16-le") + low + "y\r\n".encode("utf-16-le"))
    assert list(read_entries(path)) == [("cn=a", {"cn": ["x\U0001F600y".encode()]})]


@pytest.mark.parametrize(("data", "line"), [
    (b"dn: a\ncn: ok\nsn: \xff\n", 3),
    (b"dn: a\ncn: caf\xc3\n ok\n", 2),  # a split character that the fold does not mend
    (b"dn: a\ncn: ok\n# comment\nsn: a\nsn: x\n b\xc3\n", 6),
    (b"dn: a\ncn: ok\n \xa9x\n", 3),  # a continuation byte with nothing before it

    (b"dn: a\n\ndn: b\r\ncn: \xed\xa0\x80\r\n", 4),  # an encoded surrogate is not UTF-8
])
def test_bytes_that_are_not_utf8_name_their_line(tmp_path, data, line):
    path = tmp_path / "bad.ldif"
    path.write_bytes(data)
    with pytest.raises(LdifError, match="not valid UTF-8") as error:
        list(read_entries(path))
    assert (error.value.path, error.value.line) == (str(path), line)


def test_decode_entries_mends_a_split_character_from_surrogateescape_lines():
    lines = b"dn: cn=a\ncn: caf\xc3\n \xa9\n".decode("utf-8", "surrogateescape").splitlines()
    assert list(decode_entries(lines)) == [("cn=a", {"cn": ["café".encode()]})]
    with pytest.raises(LdifError, match="<ldif>, line 2: text that is not valid UTF-8"):
        list(decode_entries(["dn: cn=a", "cn: \ud800"]))


def test_bad_utf16_names_its_line(tmp_path):
    path = tmp_path / "bad.ldf"
    lone = "\ud800".encode("utf-16-le", "surrogatepass")
    path.write_bytes(codecs.BOM_UTF16_LE + "dn: a\r\ncn: ok\r\nsn: ".encode("utf-16-le")
                     + lone + "\r\n".encode("utf-16-le"))
    with pytest.raises(LdifError, match="not valid UTF-16") as error:
        list(read_entries(path))
    assert error.value.line == 3


def test_a_truncated_utf16_file_names_its_last_line(tmp_path):
    path = tmp_path / "cut.ldf"
    path.write_bytes(codecs.BOM_UTF16_LE + "dn: a\ncn: b\nsn: c".encode("utf-16-le") + b"c")
    with pytest.raises(LdifError, match="not valid UTF-16") as error:
        list(read_entries(path))
    assert error.value.line == 3


def test_reading_streams_entry_by_entry(tmp_path):
    # The first entry comes out before the reader has seen the broken end of the file.
    path = tmp_path / "big.ldif"
    path.write_text("dn: cn=first\ncn: first\n\n" + "dn: cn=x\ncn: x\n\n" * 5000 + "garbage\n")
    reader = read_entries(path)
    assert next(reader) == ("cn=first", {"cn": [b"first"]})
    with pytest.raises(LdifError) as error:
        list(reader)
    assert error.value.line == 4 + 3 * 5000


# --- filters ------------------------------------------------------------------------


SCHEMA = ",CN=Schema,CN=Configuration,DC=example,DC=com"
USER = {
    "objectclass": [b"top", b"person", b"organizationalPerson", b"user"],
    "objectcategory": [f"CN=Person{SCHEMA}".encode()],
    "cn": [b"John (Jr) Smith*"],
    "sn": [b"Smith"],
    "department": [b"Sales"],
    "displayname": ["Zoë Ångström".encode()],
    "description": [b"back\\slash"],
    "useraccountcontrol": [b"514"],  # NORMAL_ACCOUNT | ACCOUNTDISABLE
    "objectguid": [GUID],
    "mail": [b"john@example.com"],
    "employeeid": [b"1200"],
    "memberof": [b"CN=Staff,OU=Groups,DC=example,DC=com"],
    "msds-binary": [b"\xff\x00\xfe"],
}
GROUP = {
    "objectclass": [b"top", b"group"],
    "objectcategory": [f"CN=Group{SCHEMA}".encode()],
    "cn": [b"Staff"],
    "grouptype": [b"-2147483646"],  # a global security group, signed as AD stores it
    "objectguid": [b"ABCDEFGHIJKLMNOP"],  # a GUID whose bytes happen to be ASCII
}
OU = {
    "objectclass": [b"top", b"organizationalUnit"],
    "objectcategory": [f"CN=Organizational-Unit{SCHEMA}".encode()],
    "ou": [b"Sales"],
}
GUID_ESCAPED = "".join(f"\\{byte:02x}" for byte in GUID)

FILTERS = [  # filter, whether it selects USER, GROUP, OU
    ("(objectClass=user)", True, False, False),
    ("(OBJECTCLASS=USER)", True, False, False),
    ("objectClass=user", True, False, False),  # no parentheses
    ("  (objectClass=group)  ", False, True, False),
    ("(department=sales)", True, False, False),
    ("(department= Sales )", True, False, False),  # ldap3 strips it for the live search
    ("(cn=John \\28Jr\\29 Smith\\2a)", True, False, False),
    ("(cn=John \\28jr\\29 smith\\2A)", True, False, False),
    ("(cn=John \\28Jr\\29 Smith)", False, False, False),
    ("(cn=*\\2a)", True, False, False),
    ("(cn=john*smith*)", True, False, False),
    ("(cn=*JR*)", True, False, False),
    ("(cn=*smith*john*)", False, False, False),  # the pieces must come in order
    ("(sn=Sm*th)", True, False, False),
    ("(sn=Smi*ith)", False, False, False),  # initial and final must not overlap
    ("(sn=S**h)", True, False, False),
    ("(cn=st*)", False, True, False),
    ("(description=back\\5cslash)", True, False, False),
    ("(displayName=zoë*)", True, False, False),
    ("(displayName=ZOË ÅNGSTRÖM)", True, False, False),
    ("(displayName=Zo\\c3\\ab*)", True, False, False),  # escaped UTF-8
    ("(mail=*)", True, False, False),
    ("(!(mail=*))", False, True, True),
    ("(!(department=Sales))", False, True, True),  # a missing attribute: NOT selects it
    ("(sn~=smith)", True, False, False),
    ("(cn:=staff)", False, True, False),
    ("(memberOf=cn=staff,ou=groups,dc=example,dc=com)", True, False, False),
    ("(employeeID>=1000)", True, False, False),
    ("(employeeID>=200)", True, False, False),  # as numbers; as text "1200" < "200"
    ("(employeeID<=999)", False, False, False),
    ("(employeeID<=1200)", True, False, False),
    ("(sn>=s)", True, False, False),
    ("(sn<=Sa)", False, False, False),
    (f"(objectGUID={GUID_ESCAPED})", True, False, False),
    (f"(objectGUID={GUID_ESCAPED.upper()})", True, False, False),  # hex in upper case
    (f"(objectGUID={GUID_ESCAPED[:-3]}\\f1)", False, False, False),
    ("(objectGUID=\\00\\10*)", True, False, False),
    ("(objectGUID=ABCDEFGHIJKLMNOP)", False, True, False),
    ("(objectGUID=abcdefghijklmnop)", False, False, False),  # binary: no case folding
    ("(msds-binary=\\ff\\00\\fe)", True, False, False),  # not UTF-8: byte for byte
    ("(msds-binary=\\FF\\00*)", True, False, False),
    ("(userAccountControl:1.2.840.113556.1.4.803:=2)", True, False, False),
    ("(userAccountControl:1.2.840.113556.1.4.803:=3)", False, False, False),
    ("(userAccountControl:1.2.840.113556.1.4.804:=3)", True, False, False),
    ("(userAccountControl:1.2.840.113556.1.4.804:=1)", False, False, False),
    ("(&(objectClass=user)(!(userAccountControl:1.2.840.113556.1.4.803:=2)))",
     False, False, False),
    ("(groupType:1.2.840.113556.1.4.803:=2147483648)", False, True, False),
    ("(groupType:1.2.840.113556.1.4.803:=2147483650)", False, True, False),
    ("(groupType:1.2.840.113556.1.4.803:=4)", False, False, False),
    ("(objectCategory=person)", True, False, False),
    ("(objectCategory=Person)", True, False, False),
    ("(objectCategory=user)", True, False, False),  # user's category is Person
    ("(objectCategory=group)", False, True, False),
    ("(objectCategory=organizationalUnit)", False, False, True),
    (f"(objectCategory=cn=person{SCHEMA})", True, False, False),
    ("(objectCategory=CN=Person,CN=Schema,DC=other)", False, False, False),
    ("(|(cn=nobody)(&(objectClass=group)(cn=staff)))", False, True, False),
    ("(!(|(objectClass=user)(objectClass=group)))", False, False, True),
    ("(&(|(objectCategory=person)(objectCategory=group))(!(cn=staff)))", True, False, False),
    ("( & (objectClass=user) (sn=Smith) )", True, False, False),
    ("(&)", True, True, True),
    ("(|)", False, False, False),
    ("(cn=)", False, False, False),
]


@pytest.mark.parametrize(("text", "user", "group", "ou"), FILTERS)
def test_filters_select_what_active_directory_would(text, user, group, ou):
    selects = compile_filter(text)
    assert [selects.matches(entry) for entry in (USER, GROUP, OU)] == [user, group, ou]


def test_in_chain_asks_the_callback_with_the_unescaped_dn():
    asked = []

    def in_chain(attribute: str, dn: str) -> bool:
        asked.append((attribute, dn))
        return dn == "CN=All (Staff),DC=example,DC=com"

    selects = compile_filter("(memberOf:1.2.840.113556.1.4.1941:=CN=All \\28Staff\\29,"
                             "DC=example,DC=com)")
    other = compile_filter("(&(objectClass=user)(MemberOf:1.2.840.113556.1.4.1941:=CN=X))")
    assert selects.needs_in_chain and other.needs_in_chain
    assert selects.matches(USER, in_chain)
    assert not other.matches(USER, in_chain)
    assert asked == [("memberof", "CN=All (Staff),DC=example,DC=com"), ("memberof", "CN=X")]


def test_in_chain_without_the_group_data_is_refused_up_front():
    # Refused even where the first branch alone would decide, so that the answer does
    # not depend on the entry.
    selects = compile_filter("(|(objectClass=user)(memberOf:1.2.840.113556.1.4.1941:=CN=X))")
    with pytest.raises(FilterError, match="group data"):
        selects.matches(USER)
    assert not compile_filter("(cn=a)").needs_in_chain


FILTER_ERRORS = [
    ("", "empty"),
    ("   ", "empty"),
    ("(cn=a(b))", "\\28"),
    ("(cn=a\\zz)", "bad escape"),
    ("(cn=a\\2)", "bad escape"),
    ("(&(cn=a)", "')' is missing"),
    ("(cn=a", "')' is missing"),
    ("(cn=a))", "after the end"),
    ("(cn=a)(cn=b)", "after the end"),
    ("(cn)", "no '='"),
    ("(c n=x)", "not an attribute name"),
    ("(=x)", "not an attribute name"),
    ("(!(cn=a)(cn=b))", "expected ')'"),
    ("(!)", "expected '('"),
    ("(cn>=a*)", "\\2a"),
    ("(cn~=*)", "\\2a"),
    ("(foo:1.2.3:=1)", "'1.2.3' is not supported"),
    ("(member:1.2.840.113556.1.4.2253:=x)", "1.2.840.113556.1.4.2253"),
    ("(cn:dn:=x)", ":dn"),
    ("(:1.2.840.113556.1.4.803:=2)", "without an attribute"),
    ("(userAccountControl:1.2.840.113556.1.4.803:=two)", "integer"),
]


@pytest.mark.parametrize(("text", "message"), FILTER_ERRORS)
def test_filter_errors_say_what_is_wrong(text, message):
    with pytest.raises(FilterError) as error:
        compile_filter(text)
    assert message in str(error.value)
    assert isinstance(error.value, ValueError)


def test_filter_errors_give_the_position_in_the_text_as_written():
    with pytest.raises(FilterError, match=r"position 6 of the filter 'cn=ab\(c'"):
        compile_filter("cn=ab(c")  # wrapped in parentheses inside, not in the message


def test_entries_read_from_ldif_are_matched_by_filters():
    selects = compile_filter("(|(proxyAddresses=smtp:JS@example.com)(sn=mü*))")
    people = [dn for dn, attributes in entries(SAMPLE) if selects.matches(attributes)]
    assert people == ["CN=John Smith,CN=Users,DC=example,DC=com",
                      "CN=José Müller,CN=Users,DC=example,DC=com"]


def test_an_export_cut_short_mid_line_is_an_error_not_fewer_entries(tmp_path):
    path = tmp_path / "cut.ldif"
    path.write_text("dn: cn=a,dc=x\nobjectClass: user\n\ndn: cn=b,dc=x\nobjectCl")
    with pytest.raises(LdifError, match="line 5: the file ends in the middle of a line"):
        list(read_entries(path))
