"""Evaluate an LDAP search filter (RFC 4515) locally, the way Active Directory would.

When entries come from an LDIF export rather than a live directory, the ``--filter`` from
the configuration must still select the objects it would select on Active Directory. So:

- attribute names compare case-insensitively, and so do string values (AD's default
  for directory strings); values that are not UTF-8 (objectGUID, objectSid) and the
  known binary attributes compare as raw bytes against the assertion's bytes, so an
  escaped assertion such as ``(objectGUID=\\a1\\b2...)`` works;
- ``>=`` and ``<=`` compare numbers as numbers, anything else as case-insensitive text;
  ``~=`` is case-insensitive equality;
- the AD matching rules: 1.2.840.113556.1.4.803 (bitwise AND), .804 (bitwise OR) and
  .1941 (LDAP_MATCHING_RULE_IN_CHAIN, answered by a callback from the caller, who knows
  the group graph);
- ``(objectCategory=person)``: AD accepts a class name where the attribute holds the
  category's DN (``CN=Person,CN=Schema,...``);
- an attribute the entry does not have makes its comparison false, so ``(!(mail=*))``
  selects the entries without mail, as on AD (two-valued, not RFC 4511's Undefined).

The filter is parsed here rather than with ldap3's parser, which hands back assertion
values still escaped; whitespace is treated as ldap3 treats it for the live search
(ignored between filters, stripped around attribute names and values).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, NoReturn, Protocol

Attributes = dict[str, list[bytes]]
InChain = Callable[[str, str], bool]

BIT_AND = "1.2.840.113556.1.4.803"
BIT_OR = "1.2.840.113556.1.4.804"
IN_CHAIN = "1.2.840.113556.1.4.1941"

# Binary attributes compare as bytes even when their bytes happen to be valid UTF-8: a
# GUID of ASCII-range bytes must not match case-insensitively.
BINARY_ATTRIBUTES = frozenset({
    "objectguid", "objectsid", "sidhistory", "msexchmailboxguid", "msexcharchiveguid",
    "ms-ds-consistencyguid", "msexchmasteraccountsid", "usercertificate", "cacertificate",
    "thumbnailphoto", "jpegphoto", "msexchsafesendershash", "msexchblockedsendershash",
})
# Classes whose objects AD files under another category (their defaultObjectCategory),
# so that (objectCategory=user) finds CN=Person objects as it does on AD.
DEFAULT_CATEGORIES = {
    "user": "person", "contact": "person", "organizationalperson": "person",
    "inetorgperson": "person",
}

_INTEGER = re.compile(r"-?[0-9]+\Z")
_ATTRIBUTE = re.compile(r"(?:[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)+)(?:;[A-Za-z0-9=-]+)*\Z")
_ESCAPE = re.compile(rb"\\([0-9A-Fa-f]{2})")
_BAD_ESCAPE = re.compile(rb"\\(?![0-9A-Fa-f]{2})")
_FIRST_RDN_VALUE = re.compile(r"[^=]*=((?:[^,\\]|\\.)*)")


class FilterError(ValueError):
    """The filter text is not a filter that can be evaluated here; the message says why."""


class Filter:
    """A compiled filter: ``matches`` tells whether an entry is selected."""

    def __init__(self, text: str, node: _Node, needs_in_chain: bool):
        self.text = text
        self.needs_in_chain = needs_in_chain  # whether matches() will need in_chain
        self._node = node

    def matches(self, attributes: Attributes, in_chain: InChain | None = None) -> bool:
        """Whether the entry with these attributes (keys lower-cased, as
        :func:`stages.ldif.read_entries` gives them) is selected.

        ``in_chain(attribute, dn)`` answers the in-chain rule: for ``memberof`` whether
        the entry is a member of group ``dn``, directly or through nested groups.
        """
        if in_chain is None and self.needs_in_chain:
            # Checked up front, so the answer does not depend on which branch runs first.
            raise FilterError(f"the filter {self.text!r} uses the in-chain matching rule "
                              f"{IN_CHAIN}, which needs the group data to be evaluated")
        return self._node.matches(attributes, in_chain)

    def __repr__(self) -> str:
        return f"Filter({self.text!r})"


def compile_filter(text: str) -> Filter:
    """Parse an RFC 4515 filter; ``department=Sales`` without parentheses is accepted.

    Raises FilterError on syntax errors and on matching rules that cannot be evaluated.
    """
    stripped = text.strip()
    if not stripped:
        raise FilterError("the filter is empty")
    wrapped = not stripped.startswith("(")
    parser = _Parser(f"({stripped})" if wrapped else stripped, text,
                     shift=len(text) - len(text.lstrip()) - wrapped)
    node = parser.parse_filter()
    parser.skip_space()
    if parser.pos < len(parser.source):
        parser.fail("text after the end of the filter")
    return Filter(text, node, parser.uses_in_chain)


class _Node(Protocol):
    def matches(self, attributes: Attributes, in_chain: InChain | None) -> bool: ...


@dataclass(frozen=True)
class _And:
    parts: tuple[_Node, ...]

    def matches(self, attributes: Attributes, in_chain: InChain | None) -> bool:
        return all(part.matches(attributes, in_chain) for part in self.parts)


@dataclass(frozen=True)
class _Or:
    parts: tuple[_Node, ...]

    def matches(self, attributes: Attributes, in_chain: InChain | None) -> bool:
        return any(part.matches(attributes, in_chain) for part in self.parts)


@dataclass(frozen=True)
class _Not:
    part: _Node

    def matches(self, attributes: Attributes, in_chain: InChain | None) -> bool:
        return not self.part.matches(attributes, in_chain)


@dataclass(frozen=True)
class _Present:
    attribute: str

    def matches(self, attributes: Attributes, in_chain: InChain | None) -> bool:
        return bool(attributes.get(self.attribute))


@dataclass(frozen=True)
class _Equal:
    """Equality, and approximate match (``~=``), which AD does not do fuzzily either."""

    attribute: str
    wanted: str | bytes  # through _folded

    def matches(self, attributes: Attributes, in_chain: InChain | None) -> bool:
        return any(_folded(self.attribute, stored) == self.wanted
                   for stored in attributes.get(self.attribute, ()))


@dataclass(frozen=True)
class _Category:
    """``(objectCategory=person)``: the class name against the first RDN of the DN."""

    name: str  # already through _category_key

    def matches(self, attributes: Attributes, in_chain: InChain | None) -> bool:
        return any(_category_key(_first_rdn_value(stored)) == self.name
                   for stored in attributes.get("objectcategory", ()))


@dataclass(frozen=True)
class _Substring:
    attribute: str
    pieces: tuple[bytes, ...]  # initial, the middle ones, final; "" where absent
    folded: tuple[str | bytes, ...]  # the pieces through _folded

    def matches(self, attributes: Attributes, in_chain: InChain | None) -> bool:
        for stored in attributes.get(self.attribute, ()):
            value, pieces = _folded(self.attribute, stored), self.folded
            if not all(isinstance(piece, str) for piece in (value, *pieces)):
                value, pieces = stored, self.pieces  # binary: byte for byte
            if _substring_match(value, pieces[0], pieces[1:-1], pieces[-1]):
                return True
        return False


@dataclass(frozen=True)
class _Order:
    attribute: str
    value: bytes
    greater: bool  # >= when true, <= when false

    def matches(self, attributes: Attributes, in_chain: InChain | None) -> bool:
        for stored in attributes.get(self.attribute, ()):
            left, right = _comparable(self.attribute, stored, self.value)
            if (left >= right) if self.greater else (left <= right):
                return True
        return False


@dataclass(frozen=True)
class _Bitwise:
    attribute: str
    mask: int
    every_bit: bool  # 803 (AND) when true, 804 (OR) when false

    def matches(self, attributes: Attributes, in_chain: InChain | None) -> bool:
        for stored in attributes.get(self.attribute, ()):
            text = _text(stored)
            if text is None or not _INTEGER.match(text.strip()):
                continue
            # Python's & on negative numbers works as on two's complement, so a signed
            # groupType (-2147483646) still has bit 0x80000000 set.
            bits = int(text) & self.mask
            if (bits == self.mask) if self.every_bit else (bits != 0):
                return True
        return False


@dataclass(frozen=True)
class _InChain:
    attribute: str
    dn: str

    def matches(self, attributes: Attributes, in_chain: InChain | None) -> bool:
        assert in_chain is not None  # Filter.matches has checked
        return bool(in_chain(self.attribute, self.dn))


def _text(value: bytes) -> str | None:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _folded(attribute: str, value: bytes) -> str | bytes:
    """The form values compare in: lower-cased text, or raw bytes for binary values."""
    if attribute in BINARY_ATTRIBUTES:
        return value
    text = _text(value)
    return value if text is None else text.lower()


def _comparable(attribute: str, stored: bytes, wanted: bytes) -> tuple:
    """Both sides of >= or <=: as numbers when both are integers, else as _folded."""
    left, right = _folded(attribute, stored), _folded(attribute, wanted)
    if isinstance(left, str) and isinstance(right, str):
        if _INTEGER.match(left) and _INTEGER.match(right):
            return int(left), int(right)
        return left, right
    return stored, wanted


def _substring_match(value, initial, middle, final) -> bool:
    """RFC 4517 substrings: initial at the start, the middle pieces in order, final at
    the end, none of them overlapping."""
    if not value.startswith(initial):
        return False
    position = len(initial)
    for piece in middle:
        found = value.find(piece, position)
        if found < 0:
            return False
        position = found + len(piece)
    return len(value) - position >= len(final) and value.endswith(final)


def _first_rdn_value(dn: bytes) -> str:
    match = _FIRST_RDN_VALUE.match(dn.decode("utf-8", errors="replace"))
    return re.sub(r"\\(.)", r"\1", match.group(1)) if match else ""


def _category_key(name: str) -> str:
    """Schema CNs hyphenate the class's LDAP name (Organizational-Unit for
    organizationalUnit), so compare without hyphens."""
    key = name.replace("-", "").lower()
    return DEFAULT_CATEGORIES.get(key, key)


class _Parser:
    """Recursive descent over RFC 4515 filter text."""

    def __init__(self, source: str, shown: str, shift: int):
        self.source = source
        self.shown = shown  # the text as given, for messages
        self.shift = shift  # from a position in source to one in shown
        self.pos = 0
        self.uses_in_chain = False

    def fail(self, message: str, pos: int | None = None) -> NoReturn:
        where = (self.pos if pos is None else pos) + self.shift
        where = min(max(where, 0), len(self.shown))
        raise FilterError(f"{message} at position {where + 1} of the filter {self.shown!r}")

    def skip_space(self) -> None:
        while self.pos < len(self.source) and self.source[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        return self.source[self.pos] if self.pos < len(self.source) else ""

    def expect(self, char: str) -> None:
        self.skip_space()
        if self.peek() != char:
            found = f"{self.peek()!r}" if self.peek() else "the end"
            self.fail(f"expected {char!r} but found {found}")
        self.pos += 1

    def parse_filter(self) -> _Node:
        self.expect("(")
        self.skip_space()
        operator = self.peek()
        if operator in ("&", "|"):
            self.pos += 1
            parts = self.parse_list()
            return _And(parts) if operator == "&" else _Or(parts)
        if operator == "!":
            self.pos += 1
            part = self.parse_filter()
            self.expect(")")
            return _Not(part)
        return self.parse_item()

    def parse_list(self) -> tuple[_Node, ...]:
        parts = []
        while True:
            self.skip_space()
            if self.peek() == ")":  # (&) and (|) are absolute true and false (RFC 4526)
                self.pos += 1
                return tuple(parts)
            if not self.peek():
                self.fail("a ')' is missing at the end")
            parts.append(self.parse_filter())

    def parse_item(self) -> _Node:
        start = self.pos
        while self.peek() != ")":
            if self.peek() == "(":
                self.fail("an unescaped '(' in a value (write it as \\28)")
            if not self.peek():
                self.fail("a ')' is missing at the end")
            self.pos += 1
        self.pos += 1
        return self.item(self.source[start:self.pos - 1], start)

    def item(self, text: str, start: int) -> _Node:
        left, equals, right = text.partition("=")
        if not equals:
            self.fail(f"{text!r} is not a comparison (no '=')", start)
        operator = left[-1:] if left[-1:] in ("~", ">", "<", ":") else "="
        if operator != "=":
            left = left[:-1]
        value = right.strip()  # as ldap3 strips it for the live search
        if operator == ":":
            return self.extensible(left, value, start)
        attribute = self.attribute(left, start)
        if operator == "=" and value == "*":
            return _Present(attribute)
        if operator == "=" and "*" in value:
            return self.substring(attribute, value, start)
        assertion = self.value(value, start)
        if operator in ("<", ">"):
            return _Order(attribute, assertion, greater=operator == ">")
        if attribute == "objectcategory" and b"=" not in assertion:
            return _Category(_category_key(assertion.decode("utf-8", errors="replace")))
        return _Equal(attribute, _folded(attribute, assertion))

    def attribute(self, text: str, start: int) -> str:
        name = text.strip()
        if not _ATTRIBUTE.match(name):
            self.fail(f"{name!r} is not an attribute name", start)
        return name.lower()

    def value(self, text: str, start: int) -> bytes:
        """An assertion value with its \\XX escapes turned into bytes."""
        if "*" in text:
            self.fail("an unescaped '*' in a value that is no substring (write it as \\2a)",
                      start)
        raw = text.encode("utf-8")
        bad = _BAD_ESCAPE.search(raw)
        if bad:
            escape = raw[bad.start():bad.start() + 3].decode(errors="replace")
            self.fail(f"a bad escape '{escape}' (a backslash takes two hex digits, as in "
                      "\\2a \\28 \\29 \\5c \\00)", start)
        return _ESCAPE.sub(lambda match: bytes([int(match.group(1), 16)]), raw)

    def substring(self, attribute: str, text: str, start: int) -> _Node:
        pieces = [self.value(piece, start) for piece in text.split("*")]
        middle = [piece for piece in pieces[1:-1] if piece]  # "a**b" is "a*b"
        pieces = [pieces[0], *middle, pieces[-1]]
        return _Substring(attribute, tuple(pieces),
                          tuple(_folded(attribute, piece) for piece in pieces))

    def extensible(self, left: str, text: str, start: int) -> _Node:
        """attr[:dn][:rule]:=value; AD's rules need the attribute, and :dn is not used."""
        attribute_text, *options = [part.strip() for part in left.split(":")]
        if options and options[0].lower() == "dn":
            self.fail("':dn' in an extensible match is not supported", start)
        if not attribute_text:
            self.fail("an extensible match without an attribute is not supported", start)
        if len(options) > 1:
            self.fail(f"{left!r} is not 'attribute:rule'", start)
        attribute = self.attribute(attribute_text, start)
        assertion = self.value(text, start)
        rule = options[0] if options else None
        if rule is None:
            return _Equal(attribute, _folded(attribute, assertion))  # (cn:=x) is equality
        if rule in (BIT_AND, BIT_OR):
            return _Bitwise(attribute, self.integer(assertion, rule, start), rule == BIT_AND)
        if rule == IN_CHAIN:
            self.uses_in_chain = True
            return _InChain(attribute, assertion.decode("utf-8", errors="replace"))
        self.fail(f"the matching rule {rule!r} is not supported (only {BIT_AND}, {BIT_OR} "
                  f"and {IN_CHAIN})", start)

    def integer(self, assertion: bytes, rule: str, start: int) -> int:
        text = assertion.decode("utf-8", errors="replace").strip()
        if not _INTEGER.match(text):
            self.fail(f"the bitwise rule {rule} needs an integer, not {text!r}", start)
        return int(text)
