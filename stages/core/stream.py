"""Read and write zivsync streams: JSON Lines with a header, typed records and an end record.

The one reader and the one writer every stage uses (DESIGN.md §2):

- a stream is one or more *segments*, each ``header`` → records → ``end`` (with the count);
- a segment without its end record, with a wrong count, cut off mid-line, or marked
  ``complete: false`` by its producer is *incomplete*; the reader says so, it does not fail;
- every record is checked against the schema of its stream kind, on read and on write;
  a bad record is an error naming the file, line, record type and field;
- input may be UTF-8 (with or without BOM) or UTF-16 with BOM, with LF or CRLF line ends
  (what Windows PowerShell 5.1 writes with ``>``); output is always UTF-8 without BOM, LF;
- input may be gzip-compressed (known by its first bytes, whatever its name); output to a file
  whose name ends in ``.gz`` is. Digests are over the uncompressed content, so a stream has
  the same digest compressed or not.
"""

from __future__ import annotations

import codecs
import contextlib
import gzip
import hashlib
import io
import os
import re
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable, Iterator

import msgspec
import orjson

from .. import __version__
from . import files, schema

FORMAT_VERSION = 1
STDIN_NAME = "<stdin>"
STDOUT_NAME = "<stdout>"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a stream, located as precisely as we can."""

    file: str
    line: int | None
    message: str
    record_type: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        what = f"{self.record_type} record: " if self.record_type else ""
        if self.field:
            what += f"field '{self.field}' "
        return f"{where}: {what}{self.message}"


class StreamError(Exception):
    """Bad input or output: carries the problem(s) found."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass
class Segment:
    """One header → records → end run inside a stream."""

    file: str
    line: int
    header: dict
    count: int = 0
    end: dict | None = None
    cut_off: bool = False

    @property
    def kind(self) -> str:
        return self.header["stream"]

    @property
    def checkers(self) -> dict[str, schema.RecordChecker]:
        return schema.data_checkers(self.kind)

    @property
    def incomplete_reasons(self) -> list[str]:
        where = f"{self.file}: segment from line {self.line}"
        if self.cut_off:
            return [f"{where} is cut off mid-line (the stream was truncated)"]
        if self.end is None:
            return [f"{where} has no end record (the producer stopped early)"]
        reasons = []
        if self.end["count"] != self.count:
            reasons.append(f"{where} has {self.count} records but its end record says {self.end['count']}")
        if self.end.get("complete", True) is False:
            marked = self.end.get("incomplete_reasons") or ["no reason given"]
            reasons.extend(f"{where} is marked incomplete by its producer: {r}" for r in marked)
        return reasons

    @property
    def complete(self) -> bool:
        return not self.incomplete_reasons


@dataclass
class Input:
    """A named binary source: a file or standard input."""

    name: str
    handle: IO[bytes]
    sha256: str | None = None  # known once read to the end

    @classmethod
    def open(cls, path: str | Path) -> "Input":
        if str(path) == "-":
            return cls(STDIN_NAME, _decompressed(sys.stdin.buffer))
        try:
            return cls(str(path), _decompressed(open(path, "rb")))
        except OSError as error:
            raise StreamError([Problem(str(path), None, f"cannot open: {error.strerror}")]) from None

    @property
    def label(self) -> str:
        """The name as headers record it: the file name alone, so digests compare across machines."""
        return self.name if self.name == STDIN_NAME else Path(self.name).name


GZIP_MAGIC = b"\x1f\x8b"  # RFC 1952 §2.3.1: ID1, ID2
GZIP_LEVEL = 6  # gzip's own default: 65 MB of JSON Lines to 7 MB in 0.7 s


@contextlib.contextmanager
def opened_stream(raw: IO[bytes]) -> Iterator[IO[bytes]]:
    """A binary file's content, decompressed when it is gzip (for readers of a line or two)."""
    handle = _decompressed(raw)
    try:
        yield handle
    finally:
        if handle is not raw:
            handle.close()  # the gzip reader; the file is its opener's to close


def _decompressed(handle) -> IO[bytes]:
    """The handle, or a gzip reader over it when its content starts as gzip does."""
    peek = getattr(handle, "peek", None)
    if peek is not None and peek(2)[:2] == GZIP_MAGIC:
        packed = gzip.GzipFile(fileobj=handle, mode="rb")
        if handle is not getattr(sys.stdin, "buffer", None):
            packed.myfileobj = handle  # closing the gzip reader closes the file too (as GzipFile(name) does)
        return packed  # type: ignore[return-value]
    return handle


class StreamReader:
    """Iterate over the records of one or more inputs, checking each.

    ``kinds`` restricts which stream kinds are accepted (None accepts any).
    With ``collect=True`` every problem is gathered in ``problems`` instead of raising
    at the first, and invalid records are not yielded (zivsync-validate uses this).
    After iteration, ``segments``, ``complete`` and ``incomplete_reasons`` describe the stream.
    """

    def __init__(self, inputs: Iterable[Input], kinds: Iterable[str] | None = None, *, collect: bool = False,
                 typed: bool = False):
        self.inputs = list(inputs)
        self.kinds = tuple(kinds) if kinds else schema.STREAM_KINDS
        self.collect = collect
        self.typed = typed  # yield msgspec Structs (compact, decoded and checked in one pass) instead of dicts
        self.file, self.line = "", 0  # where the record last yielded is: for errors that name file and line
        self.segments: list[Segment] = []
        self.problems: list[Problem] = []

    # -- results -------------------------------------------------------------------
    @property
    def incomplete_reasons(self) -> list[str]:
        if not self.segments:
            return ["the stream is empty: no header was read"]
        return [reason for segment in self.segments for reason in segment.incomplete_reasons]

    @property
    def complete(self) -> bool:
        return not self.incomplete_reasons

    @property
    def headers(self) -> list[dict]:
        return [segment.header for segment in self.segments]

    # -- reading -------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict]:
        for source in self.inputs:
            yield from self._read(source)

    def _problem(self, problem: Problem) -> None:
        if not self.collect:
            raise StreamError([problem])
        self.problems.append(problem)

    def _read(self, source: Input) -> Iterator[dict]:
        self.file = source.name
        segment: Segment | None = None
        closed = False  # the current segment saw its end record
        decode = unique = None  # the quick way, for typed reading: set for each segment
        number = 0
        for line in _lines(source):
            number += 1
            if decode is not None and not closed:
                try:  # the quick way for the valid data records that are nearly all of a stream
                    typed = decode(line)
                except (msgspec.ValidationError, msgspec.DecodeError):
                    pass  # a header, an end, or a problem: the careful way below says which
                else:
                    checker = unique.get(type(typed))
                    if checker is None or checker.distinct(typed):
                        segment.count += 1
                        self.line = number
                        yield typed
                        continue
            try:
                record = orjson.loads(line)  # JSON allows the line end (LF or CRLF) around a value
            except orjson.JSONDecodeError as error:
                if not line.strip():
                    continue
                if not line.endswith(b"\n" if isinstance(line, bytes) else "\n") and segment is not None:
                    segment.cut_off = True  # the last line, cut short: a truncated stream
                    continue
                self._problem(Problem(source.name, number, f"is not valid JSON ({error})"))
                continue
            record_type = record.get("type") if isinstance(record, dict) else None
            if not isinstance(record_type, str):
                self._problem(Problem(source.name, number, "is not a JSON object with a string 'type'", field="type"))
                continue

            if segment is not None and not closed and record_type not in ("header", "end"):
                segment.count += 1  # counted even when invalid: the count is about the lines
                checker = segment.checkers.get(record_type)
                if checker is None:
                    self._problem(Problem(
                        source.name, number, f"is not a record type of a {segment.kind} stream",
                        record_type, "type"))
                elif checker.valid(record) or self._valid(source, number, segment.kind, record):
                    self.line = number
                    yield self._typed(source, number, checker, record) if self.typed else record
            elif record_type == "header":
                if not self._valid(source, number, "plan", record):  # one header schema for all kinds
                    continue
                if record["stream"] not in self.kinds:
                    self._problem(Problem(
                        source.name, number,
                        f"is a {record['stream']} stream, expected {' or '.join(self.kinds)}",
                        "header", "stream"))
                    continue
                segment, closed = Segment(source.name, number, record), False
                self.segments.append(segment)
                if self.typed:
                    decode, unique = schema.decoder(segment.kind).decode, schema.uniqueness_checks(segment.kind)
            elif segment is None:
                self._problem(Problem(source.name, number, "comes before any header record", record_type))
            elif closed:
                self._problem(Problem(
                    source.name, number, "follows the end record without a new header", record_type))
            elif self._valid(source, number, segment.kind, record):  # the end record
                segment.end, closed = record, True

    def _typed(self, source: Input, number: int, checker: schema.RecordChecker, record: dict):
        try:
            return msgspec.convert(record, checker.struct)
        except msgspec.ValidationError as error:  # the schema accepts what the fast check does not
            raise StreamError([Problem(source.name, number, f"cannot be read: {error}", record["type"])]) from None

    def _valid(self, source: Input, number: int, kind: str, record: dict) -> bool:
        violation = schema.checker(kind, record["type"]).violation(record)
        if violation is None:
            return True
        self._problem(Problem(source.name, number, violation.message, record["type"], violation.field))
        return False


class _Hashing(io.RawIOBase):
    """Hashes what passes through it, a buffer at a time (not a line at a time)."""

    def __init__(self, handle: IO[bytes], digest):
        self.handle, self.digest = handle, digest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if isinstance(self.handle, gzip.GzipFile):
            return self._read_gzip(buffer)
        count = self.handle.readinto(buffer)
        if count:
            self.digest.update(memoryview(buffer)[:count])
        return count or 0


    def _read_gzip(self, buffer) -> int:
        """What the gzip data holds so far: read1, as readinto would wait for a whole buffer and
        lose what it had when the data ends early (a writer killed mid-stream; push's results are
        flushed a line at a time). Data that ends early ends the stream here, and the reader finds
        it cut short (no end record), as with a plain file."""
        try:
            data = self.handle.read1(len(buffer))
        except EOFError:
            return 0
        buffer[:len(data)] = data
        if data:
            self.digest.update(data)
        return len(data)


def _lines(source: Input) -> Iterator[bytes | str]:
    """The lines of an input with their line ends, decoded by its BOM: UTF-8 lines stay bytes
    (orjson and msgspec read them as they are), UTF-16 lines become str. Sets ``source.sha256``
    at the end."""
    digest = hashlib.sha256()
    reader = io.BufferedReader(_Hashing(source.handle, digest), buffer_size=1 << 20)
    try:
        start = reader.peek(4)[:4]
        if start.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            yield from _utf16_lines(source, reader)
        else:
            first = reader.readline()
            yield first.removeprefix(codecs.BOM_UTF8)
            yield from reader
    except (gzip.BadGzipFile, zlib.error) as error:
        raise StreamError([Problem(source.name, None, f"is not valid gzip data ({error})")]) from None
    source.sha256 = digest.hexdigest()


def _utf16_lines(source: Input, reader: IO[bytes]) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder("utf-16")()
    pending, lines = "", 0
    while chunk := reader.read(1 << 16):
        try:
            pending += decoder.decode(chunk)
        except UnicodeDecodeError as error:
            raise StreamError([Problem(source.name, lines + 1, f"is not valid UTF-16 ({error.reason})")]) from None
        *whole, pending = pending.split("\n")
        lines += len(whole)
        for line in whole:
            yield line + "\n"
    try:
        pending += decoder.decode(b"", final=True)
    except UnicodeDecodeError:  # cut off inside a character: a truncated stream
        pending += "\ufffd"
    if pending:
        yield pending


# -- writing ---------------------------------------------------------------------------


def created_now() -> str:
    """The header's timestamp; SOURCE_DATE_EPOCH fixes it for reproducible output."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    seconds = int(epoch) if epoch and epoch.isdigit() else time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


class StreamWriter:
    """Writes one segment: the header at once, records one by one, the end record on close."""

    def __init__(self, out: IO[bytes], kind: str, producer: str, header: dict | None = None,
                 name: str = STDOUT_NAME, flush_each: bool = False):
        self.out, self.kind, self.name, self.flush_each = out, kind, name, flush_each
        # Standard output goes through whatever the caller's shell does to it: Windows PowerShell
        # 5.1 (and 7.0-7.3) decode a native program's output in the console's OEM code page
        # ("Jürgen" arrives as "J├╝rgen", still valid JSON). Escaped as \uXXXX, the stream is
        # ASCII, which every code page carries unchanged and every JSON reader decodes to the
        # same text; on every platform, so that a piped stream is the same bytes wherever made.
        # A file zivsync opens itself (-o) is written as UTF-8.
        self.ascii_only = name == STDOUT_NAME
        self.count, self.line = 0, 0
        self._checkers = schema.data_checkers(kind)
        self._emit({
            "type": "header", "stream": kind, "version": FORMAT_VERSION,
            "producer": f"{producer} {__version__}", "created": created_now(), **(header or {}),
        })

    def write(self, record: dict) -> None:
        checker = self._checkers.get(record.get("type"))
        if checker is None:
            raise StreamError([Problem(self.name, self.line + 1, f"cannot be written into a {self.kind} stream",
                                       record.get("type"), "type")])
        if not checker.valid(record):
            self._refuse_if_invalid(record)
        self._put(record)
        self.count += 1

    def close(self, incomplete_reasons: Iterable[str] = (), tally: dict[str, int] | None = None) -> None:
        """End the segment; ``tally``: what the producer read and where it went, by name."""
        reasons = list(incomplete_reasons)
        end: dict = {"type": "end", "count": self.count}
        if reasons:
            end.update(complete=False, incomplete_reasons=reasons)
        if tally:
            end["tally"] = {str(name): int(number) for name, number in sorted(tally.items()) if number}
        self._emit(end)
        self.out.flush()

    def _emit(self, record: dict) -> None:
        self._refuse_if_invalid(record)
        self._put(record)

    def _refuse_if_invalid(self, record: dict) -> None:
        violation = schema.checker(self.kind, record["type"]).violation(record)
        if violation is not None:  # a bug of ours: never let it reach the next stage
            raise StreamError([Problem(self.name, self.line + 1, f"(output) {violation.message}",
                                       record["type"], violation.field)])

    def _put(self, record: dict) -> None:
        self.line += 1
        line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        self.out.write(ascii_escaped(line) if self.ascii_only and not line.isascii() else line)
        if self.flush_each:
            self.out.flush()


@contextlib.contextmanager
def open_output(path: str | Path | None) -> Iterator[tuple[IO[bytes], str]]:
    """Standard output, or a file written atomically: a temporary file renamed into place
    only when the stage succeeds, so a failed run never leaves half a stream behind."""
    if path is None or str(path) == "-":
        yield sys.stdout.buffer, STDOUT_NAME
        return
    target = Path(path)
    if target.exists() and not target.is_file():  # /dev/null, a named pipe: never rename over those
        with open(target, "wb") as handle:
            yield handle, str(target)
        return
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle, compressed_if_gz(handle, target) as out:
            yield out, str(target)
        os.chmod(temporary, _mode_for(target))
        files.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


@contextlib.contextmanager
def compressed_if_gz(handle: IO[bytes], target: Path) -> Iterator[IO[bytes]]:
    """A gzip writer over ``handle`` when ``target``'s name ends in .gz, else the handle. No
    name and no time in the gzip header: the same stream compresses to the same bytes."""
    if not target.name.lower().endswith(".gz"):
        yield handle
        return
    with gzip.GzipFile(filename="", mode="wb", fileobj=handle, compresslevel=GZIP_LEVEL, mtime=0) as out:
        yield out  # type: ignore[misc]


def last_line(path: Path, tail: int = 65536) -> bytes | None:
    """The last line of a stream file (its end record, when it ended well), without reading it
    all when it is plain; a gzip file is read through. None when it cannot be read."""
    try:
        with open(path, "rb") as raw:
            if raw.read(2) == GZIP_MAGIC:
                raw.seek(0)
                last = None
                with gzip.GzipFile(fileobj=raw, mode="rb") as lines:
                    with contextlib.suppress(EOFError):  # no gzip trailer (a writer killed): the lines so far
                        while chunk := lines.read1(1 << 20):
                            last = (last or b"")[-(1 << 20):] + chunk
                if not last:
                    return None
                whole = last if last.endswith(b"\n") else last.rsplit(b"\n", 1)[0]  # a cut last line is no line
                return whole.rstrip(b"\r\n").rsplit(b"\n", 1)[-1] or None
            raw.seek(0, os.SEEK_END)
            raw.seek(max(0, raw.tell() - tail))
            lines = raw.read().rstrip(b"\r\n").rsplit(b"\n", 1)
            return lines[-1] if lines and lines[-1] else None
    except (OSError, EOFError, zlib.error):
        return None


def _mode_for(target: Path) -> int:
    """The mode a plainly created file would get: the old file's, or 0666 less the umask
    (mkstemp's 0600 would surprise whoever reads the stream next)."""
    if target.exists():
        return target.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def end_record(path: Path) -> dict | None:
    """The end record a stream file ends with (its count, completeness and tally), from its last
    line only; None when it ends otherwise (cut short, or not a stream)."""
    try:
        end = orjson.loads(last_line(path) or b"null")
    except orjson.JSONDecodeError:
        return None
    return end if isinstance(end, dict) and end.get("type") == "end" else None


_NON_ASCII = re.compile("[^\x00-\x7f]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000  # beyond the BMP: a UTF-16 surrogate pair, as JSON writes it (RFC 8259 §7)
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def ascii_escaped(line: bytes) -> bytes:
    """A JSON line with every non-ASCII character written as its \\u escape: the same JSON value.
    (In JSON a non-ASCII character can only be inside a string, where the escape means it.)"""
    return _NON_ASCII.sub(_escape, line.decode("utf-8")).encode("ascii")


def dumps_canonical(value) -> bytes:
    """Key-sorted JSON: the form digests and change ids are computed over."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def input_digests(inputs: Iterable[Input]) -> list[dict]:
    """Name and sha256 of each input read, as headers record them for auditors."""
    return [{"name": source.label, "sha256": source.sha256} for source in inputs]
