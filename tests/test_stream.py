"""The stream contract (DESIGN.md §2, §6): the one reader and the one writer, and zivsync-validate."""

from __future__ import annotations

import codecs
import hashlib
import io
import re
import time

import orjson
import pytest
from helpers import FIXED_EPOCH, account, header, jsonl, read_jsonl, run, segment, write_stream

from stages import __version__
from stages.core.stream import Input, StreamError, StreamReader, StreamWriter, open_output

UNICODE_NAME = "Zoë Ødegård 王芳"
RECORDS = [
    account("ann@example.com", name=UNICODE_NAME, aliases=["a.nn@example.com"]),
    account("bob@example.com", name="Bob 😀 Bakker", active=False),
    account("help@example.com", kind="functional", name="Helpdesk", delegates=["ann@example.com"]),
]
PLAIN = jsonl(segment("accounts", RECORDS))  # UTF-8, LF, no BOM: what every other variant must equal


def read(data: bytes, name: str = "in.jsonl", **kwargs) -> tuple[list[dict], StreamReader]:
    reader = StreamReader([Input(name, io.BytesIO(data))], **kwargs)
    return list(reader), reader


def error_of(data: bytes, name: str = "in.jsonl", **kwargs):
    """The single problem a reader raises for ``data``."""
    with pytest.raises(StreamError) as raised:
        read(data, name, **kwargs)
    (problem,) = raised.value.problems
    return problem


def utf16(data: bytes, byteorder: str = "le", crlf: bool = False) -> bytes:
    text = data.decode("utf-8")
    if crlf:
        text = text.replace("\n", "\r\n")
    bom = codecs.BOM_UTF16_LE if byteorder == "le" else codecs.BOM_UTF16_BE
    return bom + text.encode(f"utf-16-{byteorder}")


ENCODINGS = {
    "utf-8": lambda data: data,
    "utf-8 with BOM": lambda data: codecs.BOM_UTF8 + data,
    "utf-8 CRLF": lambda data: data.replace(b"\n", b"\r\n"),
    "utf-16 LE with BOM": lambda data: utf16(data, "le"),
    "utf-16 BE with BOM": lambda data: utf16(data, "be"),
    "PowerShell 5.1 (utf-16 LE, BOM, CRLF)": lambda data: utf16(data, "le", crlf=True),
}


# -- segments and completeness ----------------------------------------------------------------


def test_a_valid_segment_reads_back_complete():
    records, reader = read(PLAIN)
    assert records == RECORDS
    assert reader.complete and reader.incomplete_reasons == []
    assert len(reader.segments) == 1
    assert reader.segments[0].count == 3
    assert reader.headers[0]["stream"] == "accounts"


def test_an_empty_input_is_incomplete():
    records, reader = read(b"")
    assert records == [] and not reader.complete
    assert "empty" in reader.incomplete_reasons[0]


def test_several_segments_in_one_input():
    data = jsonl(segment("accounts", RECORDS[:1]) + segment("accounts", []) + segment("accounts", RECORDS[1:]))
    records, reader = read(data)
    assert records == RECORDS
    assert reader.complete
    assert [(s.line, s.count) for s in reader.segments] == [(1, 1), (4, 0), (6, 2)]


def test_segments_across_several_inputs_read_like_cat():
    a, b = jsonl(segment("accounts", RECORDS[:2])), jsonl(segment("accounts", RECORDS[2:]))
    reader = StreamReader([Input("a.jsonl", io.BytesIO(a)), Input("b.jsonl", io.BytesIO(b))])
    assert list(reader) == RECORDS
    assert reader.complete
    assert [(s.file, s.count) for s in reader.segments] == [("a.jsonl", 2), ("b.jsonl", 1)]
    concatenated, cat_reader = read(a + b)
    assert concatenated == RECORDS and cat_reader.complete


def test_a_segment_without_end_record_is_incomplete_naming_file_and_line():
    data = jsonl(segment("accounts", RECORDS[:1]) + segment("accounts", RECORDS[1:], end=False))
    records, reader = read(data, "desired.jsonl")
    assert records == RECORDS  # everything is still read: the caller decides what to do with it
    assert not reader.complete
    (reason,) = reader.incomplete_reasons
    assert "desired.jsonl" in reason and "line 4" in reason and "no end record" in reason
    assert [s.complete for s in reader.segments] == [True, False]


def test_an_incomplete_first_input_makes_the_stream_incomplete():
    a = jsonl(segment("accounts", RECORDS[:1], end=False))
    b = jsonl(segment("accounts", RECORDS[1:]))
    reader = StreamReader([Input("a.jsonl", io.BytesIO(a)), Input("b.jsonl", io.BytesIO(b))])
    assert list(reader) == RECORDS
    assert not reader.complete
    (reason,) = reader.incomplete_reasons
    assert "a.jsonl" in reason and "line 1" in reason


@pytest.mark.parametrize("count", [0, 2, 4])
def test_an_end_count_that_does_not_match_is_incomplete(count):
    records, reader = read(jsonl(segment("accounts", RECORDS, count=count)))
    assert records == RECORDS
    assert not reader.complete
    (reason,) = reader.incomplete_reasons
    assert f"has 3 records but its end record says {count}" in reason


def test_an_end_record_marked_incomplete_by_its_producer_carries_the_reasons():
    end = {"type": "end", "count": 3, "complete": False,
           "incomplete_reasons": ["ldap: paged search stopped at page 7", "exo: 429 storm"]}
    records, reader = read(jsonl([header("accounts"), *RECORDS, end]))
    assert records == RECORDS
    assert not reader.complete
    reasons = reader.incomplete_reasons
    assert len(reasons) == 2
    assert "ldap: paged search stopped at page 7" in reasons[0] and "exo: 429 storm" in reasons[1]


def test_an_end_record_marked_complete_true_is_complete():
    _, reader = read(jsonl([header("accounts"), *RECORDS, {"type": "end", "count": 3, "complete": True}]))
    assert reader.complete


def test_a_last_line_cut_off_mid_record_is_incomplete_not_an_error():
    data = jsonl(segment("accounts", RECORDS))[:-10]  # inside the end record, no newline
    records, reader = read(data, "cut.jsonl")
    assert records == RECORDS
    assert not reader.complete
    (reason,) = reader.incomplete_reasons
    assert "cut.jsonl" in reason and "cut off" in reason


def test_a_last_line_cut_inside_a_multibyte_character_is_incomplete():
    data = jsonl([header("accounts"), RECORDS[0]])
    cut = data.index(UNICODE_NAME.encode()) + len("Zo") + 1  # between the two bytes of ë
    records, reader = read(data[:cut])
    assert records == [] and not reader.complete


def test_an_invalid_last_line_with_its_newline_is_an_error_not_a_truncation():
    problem = error_of(jsonl(segment("accounts", RECORDS[:1], end=False)) + b'{"type": "acc\n')
    assert problem.line == 3


def test_invalid_json_in_the_middle_is_an_error_naming_file_and_line():
    lines = jsonl([header("accounts"), RECORDS[0]]) + b"{not json}\n" + jsonl([RECORDS[1], {"type": "end", "count": 2}])
    with pytest.raises(StreamError) as raised:
        read(lines, "desired.jsonl")
    (problem,) = raised.value.problems
    assert (problem.file, problem.line) == ("desired.jsonl", 3)
    assert "desired.jsonl:3" in str(raised.value)
    assert "JSON" in problem.message


def test_invalid_utf8_in_the_middle_is_an_error_naming_file_and_line():
    data = PLAIN.replace("Zoë".encode(), b"Zo\xff")  # Latin-1 ë is 0xEB; 0xFF is never UTF-8
    problem = error_of(data, "latin.jsonl")
    assert (problem.file, problem.line) == ("latin.jsonl", 2)


def test_a_line_that_is_not_an_object_is_an_error():
    problem = error_of(jsonl([header("accounts"), ["account"], {"type": "end", "count": 0}]))
    assert problem.line == 2 and "object" in problem.message


def test_a_record_without_a_type_is_an_error():
    problem = error_of(jsonl([header("accounts"), {"email": "a@example.com"}, {"type": "end", "count": 0}]))
    assert (problem.line, problem.field) == (2, "type")


def test_a_record_before_any_header_is_an_error():
    problem = error_of(jsonl([RECORDS[0], *segment("accounts", RECORDS[1:])]))
    assert (problem.line, problem.record_type) == (1, "account")
    assert "before any header" in problem.message


def test_a_record_after_the_end_record_without_a_new_header_is_an_error():
    problem = error_of(jsonl(segment("accounts", RECORDS[:1]) + [RECORDS[1]]))
    assert (problem.line, problem.record_type) == (4, "account")
    assert "end record" in problem.message


def test_a_second_end_record_is_an_error():
    problem = error_of(jsonl(segment("accounts", RECORDS) + [{"type": "end", "count": 3}]))
    assert (problem.line, problem.record_type) == (6, "end")


def test_a_record_type_of_another_stream_kind_is_an_error():
    person = {"type": "person", "source": "ldap", "anchor": "x", "mail": None, "addresses": [],
              "enabled": True, "mailbox": "user"}
    problem = error_of(jsonl(segment("accounts", [RECORDS[0], person])))
    assert (problem.line, problem.record_type, problem.field) == (3, "person", "type")


def test_a_stream_of_the_wrong_kind_is_refused_when_the_reader_is_restricted():
    problem = error_of(PLAIN, "current.jsonl", kinds=["directory"])
    assert (problem.file, problem.line, problem.record_type, problem.field) == ("current.jsonl", 1, "header", "stream")
    assert "accounts" in problem.message and "directory" in problem.message


def test_a_stream_of_an_accepted_kind_is_read_when_the_reader_is_restricted():
    records, reader = read(PLAIN, kinds=["directory", "accounts"])
    assert records == RECORDS and reader.complete


# -- schema violations ----------------------------------------------------------------------


def without(record: dict, key: str) -> dict:
    return {k: v for k, v in record.items() if k != key}


@pytest.mark.parametrize("bad, field", [
    (without(RECORDS[0], "name"), "name"),
    (without(RECORDS[0], "active"), "active"),
    ({**RECORDS[0], "active": "yes"}, "active"),
    ({**RECORDS[0], "aliases": "a.nn@example.com"}, "aliases"),
    ({**RECORDS[0], "kind": "robot"}, "kind"),
    ({**RECORDS[0], "email": "not an address"}, "email"),
    ({**RECORDS[0], "email": "Ann@Example.com"}, "email"),  # accounts streams carry lower case
    ({**RECORDS[0], "aliases": ["a.nn@example.com", "nope"]}, "aliases.1"),
    ({**RECORDS[0], "phone": "0612345678"}, "phone"),
    ({**RECORDS[0], "colour": "red"}, "colour"),
], ids=["missing name", "missing active", "active not boolean", "aliases not a list", "unknown kind",
        "bad e-mail", "upper-case e-mail", "bad alias", "phone not E.164", "unknown field"])
def test_a_schema_violation_names_file_line_record_type_and_field(bad, field):
    data = jsonl([header("accounts"), RECORDS[1], bad, {"type": "end", "count": 2}])
    with pytest.raises(StreamError) as raised:
        read(data, "desired.jsonl")
    (problem,) = raised.value.problems
    assert (problem.file, problem.line, problem.record_type, problem.field) == ("desired.jsonl", 3, "account", field)
    assert f"desired.jsonl:3: account record: field '{field}'" in str(raised.value)


def test_a_header_violation_names_the_header_field():
    problem = error_of(jsonl([without(header("accounts"), "producer"), {"type": "end", "count": 0}]))
    assert (problem.line, problem.record_type, problem.field) == (1, "header", "producer")


def test_an_end_record_violation_names_the_end_field():
    problem = error_of(jsonl([header("accounts"), {"type": "end", "count": "0"}]))
    assert (problem.line, problem.record_type, problem.field) == (2, "end", "count")


def test_collect_gathers_every_problem_and_keeps_reading():
    lines = [
        header("accounts"),
        RECORDS[0],
        {**RECORDS[1], "email": "BOB"},  # 3: schema
        {"type": "person"},  # 4: wrong record type
        RECORDS[2],
        {"type": "end", "count": 4},
        RECORDS[0],  # 7: after the end record
    ]
    data = jsonl(lines[:5]) + b"{oops\n" + jsonl(lines[5:])  # 6: not JSON; the end is line 7
    records, reader = read(data, collect=True)
    assert records == [RECORDS[0], RECORDS[2]]  # invalid records are not yielded
    assert [(p.line, p.record_type, p.field) for p in reader.problems] == [
        (3, "account", "email"), (4, "person", "type"), (6, None, None), (8, "account", None)]
    assert reader.complete  # the end record counts lines, valid or not: completeness is about framing


# -- decodings ------------------------------------------------------------------------------


@pytest.mark.parametrize("encode", ENCODINGS.values(), ids=ENCODINGS.keys())
def test_every_input_encoding_gives_the_same_records(encode):
    records, reader = read(encode(PLAIN))
    assert records == RECORDS
    assert records[0]["name"] == UNICODE_NAME
    assert reader.complete
    assert reader.headers == [header("accounts")]


@pytest.mark.parametrize("encode", ENCODINGS.values(), ids=ENCODINGS.keys())
def test_every_input_encoding_reports_the_right_line(encode):
    data = jsonl([header("accounts"), RECORDS[0], {**RECORDS[1], "active": 1}, {"type": "end", "count": 2}])
    problem = error_of(encode(data))
    assert (problem.line, problem.field) == (3, "active")


@pytest.mark.parametrize("encode", ENCODINGS.values(), ids=ENCODINGS.keys())
def test_the_input_digest_is_the_sha256_of_the_raw_bytes(encode):
    raw = encode(PLAIN)
    source = Input("in.jsonl", io.BytesIO(raw))
    list(StreamReader([source]))
    assert source.sha256 == hashlib.sha256(raw).hexdigest()


@pytest.mark.parametrize("encode", ENCODINGS.values(), ids=ENCODINGS.keys())
def test_a_large_stream_reads_across_buffer_boundaries(encode):
    many = [account(f"user{i}@example.com", name=f"Zoë 😀 {i}") for i in range(3000)]  # > 64 KiB
    raw = encode(jsonl(segment("accounts", many)))
    source = Input("big.jsonl", io.BytesIO(raw))
    reader = StreamReader([source])
    assert list(reader) == many
    assert reader.complete
    assert source.sha256 == hashlib.sha256(raw).hexdigest()


def test_the_digest_of_an_empty_input():
    source = Input("empty.jsonl", io.BytesIO(b""))
    list(StreamReader([source]))
    assert source.sha256 == hashlib.sha256(b"").hexdigest()


def test_blank_lines_are_ignored_but_counted_in_line_numbers():
    lines = PLAIN.split(b"\n")
    spaced = b"\n" + b"\n  \r\n".join(lines) + b"\n\n"
    records, reader = read(spaced)
    assert records == RECORDS and reader.complete
    bad = b"\n\n" + jsonl([header("accounts"), {**RECORDS[0], "name": None}])
    assert error_of(bad).line == 4


def test_a_utf16_stream_cut_inside_a_surrogate_pair_is_incomplete_not_a_crash():
    data = utf16(jsonl([header("accounts"), RECORDS[1]]))  # Bob's name holds 😀, two UTF-16 units
    cut = data.index("😀".encode("utf-16-le")) + 2
    records, reader = read(data[:cut])
    assert records == [] and not reader.complete


def test_a_utf16_stream_cut_at_an_odd_byte_is_incomplete_not_a_crash():
    data = utf16(PLAIN)
    records, reader = read(data[:-3])
    assert records == RECORDS and not reader.complete


def test_invalid_utf16_is_a_stream_error_naming_the_file():
    data = utf16(PLAIN)
    pair = "😀".encode("utf-16-le")
    broken = data.replace(pair, pair[:2] + "x".encode("utf-16-le"))  # a lone high surrogate
    with pytest.raises(StreamError) as raised:
        read(broken, "ps.jsonl")
    assert raised.value.problems[0].file == "ps.jsonl"


def test_opening_a_missing_file_is_a_stream_error(tmp_path):
    with pytest.raises(StreamError) as raised:
        Input.open(tmp_path / "nope.jsonl")
    assert "nope.jsonl" in str(raised.value) and "cannot open" in str(raised.value)


# -- writing --------------------------------------------------------------------------------


def written(records=RECORDS, *, kind="accounts", header_extra=None, reasons=()) -> bytes:
    out = io.BytesIO()
    writer = StreamWriter(out, kind, "zivsync-test", header_extra)
    for record in records:
        writer.write(record)
    writer.close(incomplete_reasons=reasons)
    return out.getvalue()


def written_to(name: str) -> bytes:
    out = io.BytesIO()
    writer = StreamWriter(out, "accounts", "zivsync-test", None, name)
    for record in RECORDS:
        writer.write(record)
    writer.close()
    return out.getvalue()


def test_the_writer_writes_utf8_without_bom_and_lf_only_to_a_file_and_ascii_to_standard_output():
    data = written_to("desired.jsonl")
    assert not data.startswith(codecs.BOM_UTF8)
    assert b"\r" not in data and data.endswith(b"\n")
    assert UNICODE_NAME.encode("utf-8") in data  # a file zivsync opens itself: UTF-8, not \u-escaped
    assert data.count(b"\n") == len(RECORDS) + 2
    piped = written()  # standard output: every non-ASCII character \u-escaped (issue 17)
    assert piped.isascii() and UNICODE_NAME.encode("utf-8") not in piped
    assert read(piped)[0] == read(data)[0] == RECORDS


def test_the_writer_frames_records_with_header_and_counted_end(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", FIXED_EPOCH)
    lines = read_jsonl(written(header_extra={"inputs": [{"name": "a.jsonl", "sha256": "0" * 64}]}))
    assert lines[0] == {"type": "header", "stream": "accounts", "version": 1,
                        "producer": f"zivsync-test {__version__}", "created": "2026-01-01T00:00:00Z",
                        "inputs": [{"name": "a.jsonl", "sha256": "0" * 64}]}
    assert lines[1:-1] == RECORDS
    assert lines[-1] == {"type": "end", "count": 3}


def test_the_writer_stamps_the_current_time_without_source_date_epoch(monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    created = read_jsonl(written([]))[0]["created"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", created)
    assert abs(time.mktime(time.strptime(created, "%Y-%m-%dT%H:%M:%SZ")) - time.mktime(time.gmtime())) < 120


def test_what_the_writer_writes_reads_back_complete():
    records, reader = read(written())
    assert records == RECORDS and reader.complete


def test_closing_with_reasons_marks_the_segment_incomplete():
    data = written(RECORDS[:1], reasons=["ldap: server went away"])
    assert read_jsonl(data)[-1] == {"type": "end", "count": 1, "complete": False,
                                    "incomplete_reasons": ["ldap: server went away"]}
    _, reader = read(data)
    assert not reader.complete
    assert "ldap: server went away" in reader.incomplete_reasons[0]


@pytest.mark.parametrize("bad, field", [
    ({**RECORDS[0], "email": "Ann@Example.com"}, "email"),
    (without(RECORDS[0], "delegates"), "delegates"),
    ({**RECORDS[0], "colour": "red"}, "colour"),
    ({"type": "person", "source": "ldap"}, "type"),
    ({"type": "end", "count": 0}, "type"),
], ids=["bad e-mail", "missing field", "unknown field", "record type of another kind", "end record"])
def test_writing_an_invalid_record_raises_and_writes_nothing(bad, field):
    out = io.BytesIO()
    writer = StreamWriter(out, "accounts", "zivsync-test")
    writer.write(RECORDS[0])
    before = out.getvalue()
    with pytest.raises(StreamError) as raised:
        writer.write(bad)
    assert raised.value.problems[0].field == field
    assert out.getvalue() == before


def test_an_invalid_header_is_refused():
    with pytest.raises(StreamError) as raised:
        StreamWriter(io.BytesIO(), "accounts", "zivsync-test", {"created": "yesterday"})
    assert (raised.value.problems[0].record_type, raised.value.problems[0].field) == ("header", "created")


def test_open_output_replaces_the_target_only_on_success(tmp_path):
    target = tmp_path / "desired.jsonl"
    with open_output(target) as (handle, name):
        assert name == str(target)
        handle.write(b"new\n")
        assert not target.exists()  # nothing visible before the body is done
    assert target.read_bytes() == b"new\n"
    assert [p.name for p in tmp_path.iterdir()] == ["desired.jsonl"]


def test_open_output_leaves_no_file_when_the_body_fails(tmp_path):
    target = tmp_path / "desired.jsonl"
    with pytest.raises(RuntimeError), open_output(target) as (handle, _):
        handle.write(b"half a stream\n")
        raise RuntimeError("extractor died")
    assert list(tmp_path.iterdir()) == []


def test_open_output_keeps_the_old_content_when_the_body_fails(tmp_path):
    target = tmp_path / "desired.jsonl"
    target.write_bytes(b"yesterday\n")
    with pytest.raises(KeyboardInterrupt), open_output(target) as (handle, _):
        handle.write(b"half a stream\n")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"yesterday\n"
    assert [p.name for p in tmp_path.iterdir()] == ["desired.jsonl"]


def test_open_output_without_a_path_is_stdout():
    with open_output(None) as (_, name):
        assert name == "<stdout>"
    with open_output("-") as (_, name):
        assert name == "<stdout>"


# -- zivsync-validate as a process -------------------------------------------------------------


def test_validate_accepts_a_valid_stream(tmp_path):
    path = write_stream(tmp_path / "desired.jsonl", "accounts", RECORDS)
    ran = run("zivsync-validate", path)
    assert ran.returncode == 0, ran.stderr
    assert "valid, complete" in ran.stdout.decode() and "INCOMPLETE" not in ran.stdout.decode() and ran.stderr == ""


def test_validate_reports_file_line_and_field_of_a_broken_stream(tmp_path):
    path = write_stream(tmp_path / "desired.jsonl", "accounts", [RECORDS[0], {**RECORDS[1], "active": "yes"}])
    ran = run("zivsync-validate", path)
    assert ran.returncode == 1
    assert f"{path}:3" in ran.stdout.decode() and "'active'" in ran.stdout.decode()
    assert "INVALID" in ran.stdout.decode()


def test_validate_accepts_a_powershell_utf16_file(tmp_path):
    path = tmp_path / "desired.jsonl"
    path.write_bytes(ENCODINGS["PowerShell 5.1 (utf-16 LE, BOM, CRLF)"](PLAIN))
    ran = run("zivsync-validate", path)
    assert ran.returncode == 0, ran.stderr
    assert "valid, complete" in ran.stdout.decode()


def test_validate_reads_standard_input():
    ran = run("zivsync-validate", input=PLAIN)
    assert ran.returncode == 0, ran.stderr
    assert "<stdin>: valid, complete" in ran.stdout.decode()


def test_validate_strict_fails_an_incomplete_stream(tmp_path):
    path = write_stream(tmp_path / "desired.jsonl", "accounts", RECORDS, end=False)
    lenient = run("zivsync-validate", path)
    assert lenient.returncode == 0, lenient.stderr
    assert "INCOMPLETE" in lenient.stdout.decode() and "no end record" in lenient.stdout.decode()
    strict = run("zivsync-validate", "--strict", path)
    assert strict.returncode == 1


def test_validate_reports_each_of_several_files(tmp_path):
    good = write_stream(tmp_path / "good.jsonl", "accounts", RECORDS)
    bad = write_stream(tmp_path / "bad.jsonl", "accounts", [{**RECORDS[0], "email": "nope"}])
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(PLAIN[:-5])
    ran = run("zivsync-validate", good, bad, cut)
    assert ran.returncode == 1
    assert f"{good}: valid, complete" in ran.stdout.decode()
    assert f"{bad}:2: account record: field 'email'" in ran.stdout.decode()
    assert f"{cut}: valid, INCOMPLETE" in ran.stdout.decode() and "cut off" in ran.stdout.decode()


# -- gzip (issue 18: run folders keep their streams compressed) -------------------------------------


def test_a_gzip_stream_reads_as_its_content_with_the_same_digest(tmp_path):
    import gzip

    plain, packed = tmp_path / "s.jsonl", tmp_path / "s.jsonl.gz"
    plain.write_bytes(PLAIN)
    packed.write_bytes(gzip.compress(PLAIN))
    readers = []
    for path in (plain, packed, tmp_path / "misnamed.jsonl"):
        if path.name == "misnamed.jsonl":  # known by its first bytes, not its name
            path.write_bytes(gzip.compress(PLAIN))
        source = Input.open(path)
        reader = StreamReader([source])
        assert list(reader) == RECORDS and reader.complete
        readers.append(source.sha256)
        source.handle.close()
    assert readers == [hashlib.sha256(PLAIN).hexdigest()] * 3
    piped = run("zivsync-validate", "-", input=gzip.compress(PLAIN))  # standard input too
    assert piped.returncode == 0 and b"valid, complete" in piped.stdout, piped.stderr


def test_an_output_named_gz_is_written_compressed_and_the_same_every_time(tmp_path):
    import gzip

    target = tmp_path / "out.jsonl.gz"
    made = []
    for _ in range(2):
        with open_output(target) as (handle, name):
            handle.write(PLAIN)
        made.append(target.read_bytes())
    assert made[0][:2] == b"\x1f\x8b" and gzip.decompress(made[0]) == PLAIN
    assert made[0] == made[1]  # no time and no name in the gzip header: same content, same bytes


def test_a_gzip_stream_cut_short_is_incomplete_and_damaged_gzip_is_an_error(tmp_path):
    import gzip

    packed = gzip.compress(PLAIN)
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(packed[:len(packed) // 2])  # a copy or a disk that stopped half-way
    reader = StreamReader([Input.open(cut)])
    records = list(reader)
    assert len(records) < len(RECORDS) and not reader.complete
    damaged = tmp_path / "damaged.jsonl.gz"
    damaged.write_bytes(packed[:12] + bytes(b ^ 0xFF for b in packed[12:40]) + packed[40:])
    with pytest.raises(StreamError) as raised:
        list(StreamReader([Input.open(damaged)]))
    assert str(damaged) in str(raised.value) and "is not valid gzip data" in str(raised.value)


def test_a_gzip_stream_whose_writer_was_killed_reads_every_line_it_flushed(tmp_path):
    """push flushes each result through the compressor; killed, it leaves no gzip trailer. Every
    flushed line must read (a reader waiting for whole buffers used to lose them all)."""
    import gzip

    raw = io.BytesIO()
    writer = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0)
    for line in segment("accounts", RECORDS, end=False):
        writer.write(orjson.dumps(line) + b"\n")
        writer.flush()
    killed = tmp_path / "killed.jsonl.gz"
    killed.write_bytes(raw.getvalue())  # never closed: no trailer
    reader = StreamReader([Input.open(killed)])
    assert list(reader) == RECORDS and not reader.complete
    assert "no end record" in " ".join(reader.incomplete_reasons)


def test_the_last_line_of_a_gzip_stream_whose_writer_was_killed(tmp_path):
    """stream_facts and the tallies read a stream's last line: a gzip file without its trailer
    (push killed) still has one."""
    import gzip

    from stages.core.stream import last_line

    raw = io.BytesIO()
    writer = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0)
    for n in range(3):
        writer.write(b'{"n":%d}\n' % n)
        writer.flush()
    killed = tmp_path / "results.jsonl.gz"
    killed.write_bytes(raw.getvalue() + b"")
    assert last_line(killed) == b'{"n":2}'
