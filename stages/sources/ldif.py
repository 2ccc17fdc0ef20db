"""Read RFC 2849 LDIF content files: directory exports made by ``ldifde`` or ``ldapsearch``.

``zivsync-extract-ldap --ldif FILE`` reads such an export instead of a live directory, so
the entries must come out exactly as a live LDAP read gives them: the DN as text, and per
attribute the raw value bytes in file order, keyed by the attribute description
lower-cased (``objectguid``, ``member;range=0-1499``).

What is read:

- UTF-8 (with or without BOM) and UTF-16 LE/BE (``ldifde -u`` writes UTF-16 LE with a
  BOM), CRLF or LF line ends, decoded as the file streams in;
- ``version: 1``, ``#`` comments (folded ones too), folded lines (also where the fold
  splits the bytes of a character), ``attr: text``, ``attr:: base64``, ``attr:``
  (empty), ``dn:`` and ``dn::``;
- ``changetype: add``, which ``ldifde`` writes into its exports, is ignored;
- the non-entry records ``ldapsearch`` prints unless given ``-LLL``: search references
  (``ref:``) are skipped, as a live read skips them, and the ``search:``/``result:``
  trailer is checked, because a non-zero result (a size limit, say) means the export is
  incomplete.

Anything else -- change records, ``attr:< URL`` values, malformed lines -- raises
:class:`LdifError` naming the file and the physical line.
"""

from __future__ import annotations

import base64
import codecs
import re
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, NoReturn

Attributes = dict[str, list[bytes]]
Entry = tuple[str, Attributes]

# An attribute type (name or OID) with options such as ";binary" or ";range=0-*".
_DESCRIPTION = re.compile(r"[A-Za-z0-9][A-Za-z0-9;=.*_-]*\Z")
# Undecodable input arrives as lone surrogates (see _Codec).
_SURROGATE = re.compile("[\ud800-\udfff]")
# The lines ldapsearch writes in its result record.
_TRAILER_LINES = frozenset({"search", "result", "text", "matcheddn", "control", "ref"})


class LdifError(ValueError):
    """A file that cannot be read as LDIF content; names the file and the line."""

    def __init__(self, path: str, line: int, message: str):
        # args carry the three parts so that the error survives pickling (worker pools).
        super().__init__(path, line, message)
        self.path = path
        self.line = line
        self.message = message

    def __str__(self) -> str:
        return f"{self.path}, line {self.line}: {self.message}"


class _Codec(NamedTuple):
    """How a file is decoded, and how a logical line is checked afterwards.

    ``errors`` lets undecodable bytes through as lone surrogates rather than failing
    somewhere in an 8 KiB chunk: once folded lines are joined, _decoded turns them back
    into bytes and decodes strictly, which both mends a fold that split a character's
    bytes and names the physical line of bytes that really are bad.
    """

    name: str  # for open()
    errors: str
    exact: str  # the codec, without BOM handling, to re-encode and decode a line with
    label: str  # for messages


_UTF8 = _Codec("utf-8", "surrogateescape", "utf-8", "UTF-8")


def read_entries(path: str | Path) -> Iterator[Entry]:
    """Yield ``(dn, attributes)`` for each entry of the LDIF file at ``path``, streaming.

    The encoding is taken from the byte-order mark (UTF-8 without one); see the module
    docstring for what is read and what raises :class:`LdifError`.
    """
    name = str(path)
    codec = _sniff_encoding(_head(path))
    # newline="\n": only LF ends a line (CR before it is dropped later); a stray CR is
    # not a line end in LDIF and must not shift the line numbers in error messages.
    with open(path, encoding=codec.name, errors=codec.errors, newline="\n") as handle:
        yield from _entries(_counted(_ending_whole(handle, name), name, codec), name, codec)


def _ending_whole(lines: Iterable[str], path: str) -> Iterator[str]:
    """The lines, and an error when the last one has no line end: ldifde and ldapsearch end
    every line, so a file ending mid-line was cut short, and the entries after the cut are
    missing (an extractor must not pass that off as the whole directory)."""
    number, last = 0, "\n"
    for number, last in enumerate(lines, 1):
        yield last
    if not last.endswith("\n"):
        raise LdifError(path, number, "the file ends in the middle of a line: the export is cut short")


def decode_entries(lines: Iterable[str], path: str = "<ldif>") -> Iterator[Entry]:
    """Yield ``(dn, attributes)`` for each entry of already-decoded LDIF text lines.

    ``lines`` are physical lines, with or without their line ends; ``path`` only names
    the source in error messages. Lines decoded from UTF-8 with ``surrogateescape`` are
    mended where a fold split a character's bytes.
    """
    return _entries(lines, path, _UTF8)


def _entries(lines: Iterable[str], path: str, codec: _Codec) -> Iterator[Entry]:
    record = _Record(path)
    for number, text in _logical_lines(lines, path, codec):
        if text is not None:
            record.add(number, text)
            continue
        entry = record.finish()  # a blank line ends the record
        if entry is not None:
            yield entry
    entry = record.finish()  # the last record needs no blank line after it
    if entry is not None:
        yield entry


def _head(path: str | Path) -> bytes:
    with open(path, "rb") as raw:
        return raw.read(4)


def _sniff_encoding(head: bytes) -> _Codec:
    """The codec for a file whose first bytes are ``head``."""
    if head.startswith(codecs.BOM_UTF8):
        return _Codec("utf-8-sig", "surrogateescape", "utf-8", "UTF-8")
    if head.startswith(codecs.BOM_UTF16_LE):
        return _Codec("utf-16", "surrogatepass", "utf-16-le", "UTF-16")  # drops the BOM
    if head.startswith(codecs.BOM_UTF16_BE):
        return _Codec("utf-16", "surrogatepass", "utf-16-be", "UTF-16")
    # UTF-16 without a BOM shows as NUL bytes next to ASCII; read as UTF-8 it would give
    # a baffling "a record must start with dn:" instead.
    if len(head) >= 2 and head[0] == 0 and head[1] != 0:
        return _Codec("utf-16-be", "surrogatepass", "utf-16-be", "UTF-16")
    if len(head) >= 2 and head[0] != 0 and head[1] == 0:
        return _Codec("utf-16-le", "surrogatepass", "utf-16-le", "UTF-16")
    return _UTF8


def _counted(lines: Iterable[str], path: str, codec: _Codec) -> Iterator[str]:
    """Pass the lines on; a decoder error left (a truncated last UTF-16 code unit, as
    the error handlers take the rest) gets the number of the line being read."""
    number = 0
    try:
        for number, line in enumerate(lines, 1):
            yield line
    except UnicodeDecodeError as error:
        raise LdifError(path, number + 1, f"bytes that are not valid {codec.label} text "
                        f"({error.reason})") from None


def _logical_lines(lines: Iterable[str], path: str,
                   codec: _Codec) -> Iterator[tuple[int, str | None]]:
    """Unfold and drop comments: yield (first physical line, text), or (line, None) for a
    blank line."""
    pending: list[tuple[int, str]] = []  # the physical lines of one logical line
    previous = "start"  # what the last line was: start, blank, comment or line
    for number, line in enumerate(lines, 1):
        line = _without_line_end(line, number)
        if line.startswith(" "):
            if pending:
                pending.append((number, line[1:]))  # exactly one space is the fold marker
            elif previous != "comment":  # a folded comment is still a comment
                raise LdifError(path, number, f"a continuation line (starting with a space) "
                                f"{_NOTHING_TO_CONTINUE[previous]}")
            continue
        if pending:
            yield pending[0][0], _decoded(pending, path, codec)
            pending = []
        if line.startswith("#"):
            previous = "comment"
        elif line == "":
            previous = "blank"
            yield number, None
        else:
            previous = "line"
            pending = [(number, line)]
    if pending:
        yield pending[0][0], _decoded(pending, path, codec)


def _decoded(parts: list[tuple[int, str]], path: str, codec: _Codec) -> str:
    """The logical line of these physical lines, with any undecoded bytes decoded."""
    text = parts[0][1] if len(parts) == 1 else "".join(part for _, part in parts)
    if not _SURROGATE.search(text):
        return text  # all of it decoded: the usual case
    # Decode the bytes again across the folds, so a character split by a fold is whole.
    decoder = codecs.getincrementaldecoder(codec.exact)()
    pieces, previous = [], parts[0][0]
    for number, part in [*parts, (parts[-1][0], None)]:  # None: the end of the line
        carried = len(decoder.getstate()[0])  # bytes held over from the line before
        try:
            data = b"" if part is None else part.encode(codec.exact, codec.errors)
            pieces.append(decoder.decode(data, final=part is None))
        except UnicodeEncodeError:
            raise LdifError(path, number, f"text that is not valid {codec.label}") from None
        except UnicodeDecodeError as error:
            # Blame the line the bad bytes start on, which may be the one before the fold.
            line = previous if error.start < carried else number
            raise LdifError(path, line, f"bytes that are not valid {codec.label} text") from None
        previous = number
    return "".join(pieces)


_NOTHING_TO_CONTINUE = {
    "start": "at the start of the file",
    "blank": "after a blank line, with nothing to continue",
}


def _without_line_end(line: str, number: int) -> str:
    if line.endswith("\n"):
        line = line[:-1]
    if line.endswith("\r"):
        line = line[:-1]
    if number == 1:
        line = line.removeprefix("\ufeff")  # a BOM left in by a caller's own decoding
    return line


class _Record:
    """Collects the logical lines of one record and turns them into an entry."""

    def __init__(self, path: str):
        self.path = path
        self.version_allowed = True  # only before the first record
        self._reset()

    def _reset(self) -> None:
        self.kind: str | None = None  # None until the first line: entry, reference, trailer
        self.dn = ""
        self.attributes: Attributes = {}

    def add(self, number: int, text: str) -> None:
        name, value = _parse_line(self.path, number, text)
        if self.kind is None:
            self._start(number, name, value)
        elif self.kind == "entry":
            self._add_to_entry(number, name, value)
        elif self.kind == "reference" and name != "ref":
            self._fail(number, f"a search reference (ref:) record with a {name}: line")
        elif self.kind == "trailer":
            self._add_to_trailer(number, name, value)

    def finish(self) -> Entry | None:
        entry = (self.dn, self.attributes) if self.kind == "entry" else None
        self._reset()
        return entry

    def _start(self, number: int, name: str, value: bytes) -> None:
        if name == "version" and self.version_allowed:
            self.version_allowed = False
            if value.strip() != b"1":
                self._fail(number, f"LDIF version {value.decode(errors='replace')!r} is not "
                           "supported, only 1")
            return  # RFC 2849 lets the first record follow without a blank line
        self.version_allowed = False
        if name == "dn":
            self.kind = "entry"
            self.dn = self._dn(number, value)
        elif name == "ref":
            self.kind = "reference"  # a live read does not return references either
        elif name == "search":
            self.kind = "trailer"
        else:
            self._fail(number, f"a record must start with dn:, not {name}:")

    def _add_to_entry(self, number: int, name: str, value: bytes) -> None:
        if name == "dn":
            self._fail(number, "a second dn: line in one record (is a blank line missing "
                       "between two entries?)")
        if name == "changetype":
            if value.strip().lower() != b"add":  # ldifde writes "add" into its exports
                self._fail(number, f"changetype: {value.decode(errors='replace')}: only "
                           "content records and changetype: add can be read")
            return
        self.attributes.setdefault(name, []).append(value)

    def _add_to_trailer(self, number: int, name: str, value: bytes) -> None:
        if name not in _TRAILER_LINES:
            self._fail(number, f"an ldapsearch result (search:) record with a {name}: line")
        code = value.split(maxsplit=1)[:1]
        if name == "result" and code != [b"0"]:
            # A size or time limit, say: what was exported is not the whole directory.
            self._fail(number, f"ldapsearch reported 'result: {value.decode(errors='replace')}'"
                       ", so the export is incomplete")

    def _dn(self, number: int, value: bytes) -> str:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            self._fail(number, "the base64 DN (dn::) is not UTF-8 text")

    def _fail(self, number: int, message: str) -> NoReturn:
        raise LdifError(self.path, number, message)


def _parse_line(path: str, number: int, text: str) -> tuple[str, bytes]:
    """``attr: text``, ``attr:: base64`` or ``attr:`` as (lower-cased description, bytes)."""
    name, colon, rest = text.partition(":")
    if not colon:
        raise LdifError(path, number, "a line without a colon (expected 'attribute: value')")
    if not _DESCRIPTION.match(name):
        raise LdifError(path, number, f"{name!r} is not an attribute description")
    if rest.startswith(":"):
        return name.lower(), _base64(path, number, name, rest[1:])
    if rest.startswith("<"):
        raise LdifError(path, number, f"{name}:< takes its value from a URL, and URL values "
                        "are not supported; export the value inline (base64) instead")
    # RFC 2849 ignores the spaces after the colon; trailing ones belong to the value.
    return name.lower(), rest.lstrip(" ").encode("utf-8")


def _base64(path: str, number: int, name: str, text: str) -> bytes:
    packed = "".join(text.split())  # folding and writers leave whitespace behind
    try:
        return base64.b64decode(packed, validate=True)
    except ValueError as error:  # binascii.Error, or non-ASCII text
        raise LdifError(path, number, f"bad base64 in the value of {name} ({error})") from None
