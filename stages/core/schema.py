"""The JSON Schemas of the four stream kinds, and a fast check of one record.

The schemas in ``schemas/`` are the truth about every record (DESIGN.md §2). Checking
135,000 records with jsonschema alone takes ten seconds, so each record type is also
translated into msgspec types, which check a record in C; jsonschema only runs when that
check fails, because its errors say best which field is wrong, and it has the last word.
The translation covers the subset of JSON Schema our schemas use, and refuses the rest.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union
from urllib.parse import urljoin

import msgspec
import orjson

STREAM_KINDS = ("directory", "accounts", "plan", "results")
BASE_URI = "https://zivsync.invalid/schemas/"


def schema_dir() -> Path:
    """Where the schema files are: inside the wheel, or ``schemas/`` of a source checkout."""
    packaged = resources.files("stages") / "schemas"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "schemas"


@functools.cache
def _documents() -> dict[str, dict]:
    """Every schema document by its ``$id``."""
    docs = {}
    for path in sorted(schema_dir().glob("*.json")):
        doc = orjson.loads(path.read_bytes())
        docs[doc["$id"]] = doc
    return docs


@functools.cache
def _registry():
    from referencing import Registry, Resource  # imported when first needed, as jsonschema is

    return Registry().with_resources(
        (uri, Resource.from_contents(doc)) for uri, doc in _documents().items()
    )


def record_types(kind: str) -> tuple[str, ...]:
    """The record types a stream of this kind may hold, header and end included."""
    doc = _documents()[f"{BASE_URI}{kind}.json"]
    return tuple(doc["properties"]["type"]["enum"])


def _definition_uri(kind: str, record_type: str) -> str:
    if record_type in ("header", "end"):
        return f"{BASE_URI}common.json#/$defs/{record_type}"
    return f"{BASE_URI}{kind}.json#/$defs/{record_type}"


def _inline(node: Any, base: str) -> Any:
    """Replace every ``$ref`` by what it points to (our schemas have no recursion)."""
    if isinstance(node, list):
        return [_inline(item, base) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        document, _, fragment = node["$ref"].partition("#")
        uri = urljoin(base, document) if document else base
        target = _documents()[uri]
        for part in filter(None, fragment.split("/")):
            target = target[part]
        return _inline(target, uri)
    return {key: _inline(value, base) for key, value in node.items()}


@dataclass(frozen=True)
class Violation:
    """Why a record does not match its schema: the field (dotted path) and the message."""

    field: str | None
    message: str


class RecordChecker:
    """Checks records of one (stream kind, record type) pair.

    ``struct`` is the record type as a msgspec Struct tagged by its ``type`` field (data
    records only): readers can decode and check a line in one pass into it."""

    def __init__(self, kind: str, record_type: str):
        ref = {"$ref": _definition_uri(kind, record_type)}
        tag = None if record_type in ("header", "end") else record_type
        self.struct, self._unique = _translate(_inline(ref, f"{BASE_URI}{kind}.json"), (), tag)
        self._ref = ref

    @functools.cached_property
    def full(self):
        """The schema's own validator (jsonschema), for messages and the last word."""
        import jsonschema

        return jsonschema.Draft202012Validator(self._ref, registry=_registry())

    def valid(self, record: Any) -> bool:
        """The fast check alone (for records we just made ourselves, and tests)."""
        try:
            msgspec.convert(record, self.struct)
        except msgspec.ValidationError:
            return False
        return self.distinct(record)

    def distinct(self, record: Any) -> bool:
        """The uniqueItems constraints, which msgspec types cannot express."""
        for path in self._unique:
            if len(path) == 1 and isinstance(record, dict):  # the common case, kept quick
                value = record.get(path[0])
                if value is None or len(value) < 2 or len(set(value)) == len(value):
                    continue
            if not _distinct(record, path):
                return False
        return True

    def violation(self, record: Any) -> Violation | None:
        if self.valid(record):
            return None
        import jsonschema  # only a record that fails the quick check needs it: 0.1 s less for every run

        error = jsonschema.exceptions.best_match(self.full.iter_errors(record))
        if error is None:  # the two checks disagree; the schema's own validator has the last word
            return None
        return _describe(error)


def _distinct(record: Any, path: tuple[str, ...]) -> bool:
    value = record
    for key in path:
        value = value.get(key) if isinstance(value, dict) else getattr(value, key, None)
    if not isinstance(value, list) or len(value) < 2:
        return True
    try:
        return len(value) == len(set(value))
    except TypeError:  # unhashable items: compare their JSON
        return len(value) == len({orjson.dumps(item, option=orjson.OPT_SORT_KEYS) for item in value})


_STRUCTS = 0


def _translate(node: dict, path: tuple[str, ...], tag: str | None = None) -> tuple[Any, list[tuple[str, ...]]]:
    """A msgspec type that accepts what this (inlined) schema accepts, and the paths of arrays
    whose items must be distinct (msgspec has no uniqueItems). With ``tag``, the object's
    ``type`` property becomes the Struct's tag."""
    global _STRUCTS
    if not node:
        return Any, []
    if "anyOf" in node or "oneOf" in node:
        options = [_translate(option, path) for option in node.get("anyOf") or node["oneOf"]]
        return Union[tuple(t for t, _ in options)], [p for _, paths in options for p in paths]
    if "const" in node:
        return Literal[node["const"]], []
    if "enum" in node:
        values = tuple(v for v in node["enum"] if v is not None)
        return (Optional[Literal[values]] if None in node["enum"] else Literal[values]), []
    types = node["type"] if isinstance(node["type"], list) else [node["type"]]
    nullable = "null" in types
    if types == ["null"]:
        return type(None), []
    (main,) = [t for t in types if t != "null"]
    unique: list[tuple[str, ...]] = []
    if main == "string":
        python = _constrained(str, pattern=node.get("pattern"), min_length=node.get("minLength"),
                              max_length=node.get("maxLength"))
    elif main == "boolean":
        python = bool
    elif main == "integer":
        python = _constrained(int, ge=node.get("minimum"))
    elif main == "array":
        item, unique = _translate(node.get("items", {}), path)
        python = _constrained(list[item], min_length=node.get("minItems"))
        if node.get("uniqueItems"):
            unique = [*unique, path]
    elif main == "object" and "properties" not in node and isinstance(node.get("additionalProperties"), dict):
        value, paths = _translate(node["additionalProperties"], (*path, "*"))  # a map: every value checked
        unique.extend(paths)
        python = dict[str, value]
    elif main == "object" and "properties" not in node:
        python = dict
    elif main == "object":
        required = set(node.get("required", ()))
        fields = []
        for name, schema in node["properties"].items():
            if tag and name == "type":
                continue
            kind, paths = _translate(schema, (*path, name))
            unique.extend(paths)
            fields.append((name, kind) if name in required else (name, kind, None))
        fields.sort(key=len)  # fields without a default first, as Python requires
        _STRUCTS += 1
        tagging = {"tag_field": "type", "tag": tag} if tag else {}
        python = msgspec.defstruct(tag.title() if tag else f"Record{_STRUCTS}", fields, kw_only=True,
                                   forbid_unknown_fields=node.get("additionalProperties", True) is False,
                                   **tagging)
    else:
        raise ValueError(f"schema construct not supported by the fast check: {node}")
    return (Optional[python] if nullable else python), unique


def _constrained(python: Any, **constraints: Any) -> Any:
    given = {k: v for k, v in constraints.items() if v is not None}
    return Annotated[python, msgspec.Meta(**given)] if given else python


def _describe(error) -> Violation:
    path = [str(p) for p in error.absolute_path]
    message = error.message
    if error.validator == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        path.append(missing[0] if missing else "?")
        message = "is required but missing"
    elif error.validator == "additionalProperties":
        known = error.schema.get("properties", {})
        extra = sorted(k for k in error.instance if k not in known)
        path.append(extra[0] if extra else "?")
        message = "is not a known field"
    elif error.validator == "pattern" and "title" in error.schema:
        message = f"{error.instance!r} is not {error.schema['title']}"
    elif error.validator in ("oneOf", "anyOf") and error.context:
        # "x is not valid under any of the given schemas" helps nobody: show the first reason
        message = error.context[0].message
    return Violation(".".join(path) or None, _shorten(message))


def _shorten(message: str, limit: int = 200) -> str:
    return message if len(message) <= limit else message[: limit - 1] + "…"


@functools.cache
def checker(kind: str, record_type: str) -> RecordChecker:
    return RecordChecker(kind, record_type)


@functools.cache
def decoder(kind: str) -> msgspec.json.Decoder:
    """Decodes and checks a data record of this stream kind into its Struct, in one pass."""
    structs = tuple(c.struct for c in data_checkers(kind).values())
    return msgspec.json.Decoder(Union[structs] if len(structs) > 1 else structs[0])


def type_of(record: Any) -> str:
    """The record type of a record, whether a dict or a Struct from :func:`decoder`."""
    return record["type"] if isinstance(record, dict) else type(record).__struct_config__.tag


@functools.cache
def uniqueness_checks(kind: str) -> dict[type, RecordChecker]:
    """By Struct class, the checkers of the record types that have uniqueItems constraints."""
    return {c.struct: c for c in data_checkers(kind).values() if c._unique}


@functools.cache
def data_checkers(kind: str) -> dict[str, RecordChecker]:
    """The checkers of a stream kind's data records (all but header and end), by type."""
    return {t: checker(kind, t) for t in record_types(kind) if t not in ("header", "end")}
