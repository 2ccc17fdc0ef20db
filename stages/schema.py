"""The JSON Schemas of the four stream kinds, and a fast check of one record.

The schemas in ``schemas/`` are the truth about every record (DESIGN.md §2). Checking
135,000 records with jsonschema alone takes several seconds, so each record type is
also compiled with fastjsonschema; jsonschema only runs when a record is invalid,
because its errors say best which field is wrong.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urljoin

import fastjsonschema
import jsonschema
import orjson
from referencing import Registry, Resource

STREAM_KINDS = ("directory", "accounts", "plan", "results")
BASE_URI = "https://zivsync.invalid/schemas/"


def schema_dir() -> Path:
    """Where the schema files are: inside the wheel, or ``schemas/`` of a source checkout."""
    packaged = resources.files("stages") / "schemas"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "schemas"


@functools.cache
def _documents() -> dict[str, dict]:
    """Every schema document by its ``$id``."""
    docs = {}
    for path in sorted(schema_dir().glob("*.json")):
        doc = orjson.loads(path.read_bytes())
        docs[doc["$id"]] = doc
    return docs


@functools.cache
def _registry() -> Registry:
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
    """Checks records of one (stream kind, record type) pair."""

    def __init__(self, kind: str, record_type: str):
        ref = {"$ref": _definition_uri(kind, record_type)}
        # Inlined, the generated code runs twice as fast as with fastjsonschema's own $ref calls.
        self._fast: Callable[[Any], Any] = fastjsonschema.compile(
            _inline(ref, f"{BASE_URI}{kind}.json"), use_default=False
        )
        self._full = jsonschema.Draft202012Validator(ref, registry=_registry())

    def violation(self, record: dict) -> Violation | None:
        try:
            self._fast(record)
            return None
        except fastjsonschema.JsonSchemaException:
            pass
        error = jsonschema.exceptions.best_match(self._full.iter_errors(record))
        if error is None:  # the two validators disagree; trust the thorough one
            return None
        return _describe(error)


def _describe(error: jsonschema.ValidationError) -> Violation:
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
