"""The fast check (schemas translated to msgspec types) must agree with jsonschema, which
has the last word: on every record we ship, and on records broken in every way we can think of."""

from __future__ import annotations

import copy

import jsonschema
import orjson
import pytest
from helpers import EXAMPLES, ROOT

from stages.core import schema

SHIPPED = sorted(EXAMPLES.glob("*.jsonl")) + sorted((ROOT / "tests" / "golden").glob("*.jsonl"))


def full_valid(kind: str, record: dict) -> bool:
    return not list(schema.checker(kind, record["type"]).full.iter_errors(record))


def shipped_records():
    for path in SHIPPED:
        kind = None
        for line in path.read_bytes().splitlines():
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # the truncated example's last line
            kind = record.get("stream", kind)
            yield kind, record


@pytest.mark.parametrize("kind", schema.STREAM_KINDS)
def test_every_record_type_translates(kind):
    for record_type in schema.record_types(kind):
        assert schema.checker(kind, record_type) is not None


def test_fast_check_agrees_on_every_shipped_record():
    seen = 0
    for kind, record in shipped_records():
        assert schema.checker(kind, record["type"]).valid(record) == full_valid(kind, record), record
        seen += 1
    assert seen > 200


def mutations(record: dict):
    """The record broken (or not) in many small ways."""
    for key in list(record):
        if key == "type":
            continue
        dropped = dict(record)
        del dropped[key]
        yield dropped
        for value in (None, True, 0, -1, 1.5, "", "x", "not an address", "+31 6", [], ["a@b.cd", "a@b.cd"], [1], {},
                      {"email": "bad"}, {"aliases": ["a@b.cd", "a@b.cd"]}, "2026-01-01T00:00:00Z"):
            changed = dict(record)
            changed[key] = value
            yield changed
    yield dict(record, unexpected_field=1)


def test_fast_check_agrees_on_mutated_records():
    checked, per_type = 0, {}
    for kind, record in shipped_records():
        per_type[kind, record["type"]] = per_type.get((kind, record["type"]), 0) + 1
        if record["type"] == "header" or per_type[kind, record["type"]] > 4:
            continue
        for mutated in mutations(copy.deepcopy(record)):
            fast = schema.checker(kind, record["type"]).valid(mutated)
            assert fast == full_valid(kind, mutated), (kind, mutated)
            checked += 1
    assert checked > 2000


def test_unsupported_schema_construct_is_refused():
    with pytest.raises(ValueError, match="not supported"):
        schema._translate({"type": "number", "multipleOf": 3}, ())


def test_schema_files_are_valid_json_schemas():
    for path in sorted((ROOT / "schemas").glob("*.json")):
        jsonschema.Draft202012Validator.check_schema(orjson.loads(path.read_bytes()))
