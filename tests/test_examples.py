"""The sample organisation's LDIF export and its ldap stream tell the same story.

scripts/make_examples.py writes examples/fabrikam.ldif (Fabrikam's AD as ldifde exports it)
and examples/directory-ldap.jsonl from the same tables, not one from the other. Here the real
zivsync-extract-ldap reads the export, as `make demo` does, and must give exactly that stream.
"""

from __future__ import annotations

import codecs

import pytest
from helpers import EXAMPLES, read_jsonl, run

LDIF = EXAMPLES / "fabrikam.ldif"
LDAP_STREAM = EXAMPLES / "directory-ldap.jsonl"
READ_FABRIKAM = ("--base-dn", "DC=fabrikam,DC=example", "--default-region", "NL")


def extracted(ldif, *options) -> list[dict]:
    ran = run("zivsync-extract-ldap", "--ldif", ldif, *(options or READ_FABRIKAM))
    assert ran.returncode == 0, ran.stderr
    assert "warning" not in ran.stderr, ran.stderr  # no unreadable phone number or address, say
    return ran.records


@pytest.fixture(scope="module")
def expected() -> list[dict]:
    return read_jsonl(LDAP_STREAM)


def test_the_ldif_export_gives_the_ldap_stream(expected):
    lines = extracted(LDIF)
    assert lines[0]["type"] == "header" and lines[0]["stream"] == "directory"
    assert lines[1:] == expected[1:]  # every record in the same order, and the end; not the header
    assert expected[0]["source"]["sha256"] == lines[0]["source"]["sha256"]  # the stream names this export


def test_the_demo_reads_base_dn_and_region_from_the_config(expected):
    lines = extracted(LDIF, "--config", EXAMPLES / "zivsync.toml")
    assert lines[1:] == expected[1:]


def test_the_export_as_ldifde_u_writes_it_utf16_with_bom_and_crlf(expected, tmp_path):
    text = LDIF.read_text(encoding="utf-8")
    unicode_export = tmp_path / "fabrikam-u.ldf"
    unicode_export.write_bytes(codecs.BOM_UTF16_LE + text.replace("\n", "\r\n").encode("utf-16-le"))
    assert extracted(unicode_export)[1:] == expected[1:]


def test_the_export_is_what_ldifde_writes():
    text = LDIF.read_text(encoding="utf-8")
    lines = text.split("\n")
    assert text.isascii()  # non-ASCII names, DNs included, are base64 (`::`), as ldifde writes them
    assert max(len(line) for line in lines) <= 79
    assert any(line.startswith(" ") for line in lines)  # long lines are folded
    entries = [line for line in lines if line.startswith("dn")]
    assert len(entries) == sum(1 for line in lines if line == "changetype: add")
    assert "dn:: " in text and "objectGUID:: " in text and "objectSid:: " in text


def test_the_broken_and_truncated_streams_are_cut_from_the_ldap_stream(expected):
    truncated = read_jsonl(EXAMPLES / "directory-ldap-truncated.jsonl")
    assert truncated[1:] == expected[1:len(truncated)] and truncated[-1]["type"] == "person"
    broken = read_jsonl(EXAMPLES / "directory-ldap-broken.jsonl")
    persons = broken[1:-1]
    assert [p["anchor"] for p in persons] == [r["anchor"] for r in expected[1:1 + len(persons)]]
    for record, original in zip(persons, expected[1:]):
        assert {**record, "mail": original["mail"]} == original  # only the deliberately invalid mail differs
