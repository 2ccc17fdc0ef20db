"""What every extractor does with the records it reads: write them as a directory stream as
they come, and, when the source fails half-way, keep what was read but mark the stream
incomplete, so that diff suspends nobody and empties no functional account on its account."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Callable, Iterator

from ..core.console import log, progress
from ..core.errors import ExitStatus, ZivsyncError
from ..core.stream import StreamWriter, open_output


def write_directory(records: Iterator[dict], *, producer: str, header: dict, output,
                    failure: Callable[[Exception], ZivsyncError | None],
                    tally: Callable[[], Counter] = Counter) -> tuple[ExitStatus, Counter]:
    """Write ``records`` to ``output``; returns the exit status and the count by record type.

    ``failure`` turns an exception of the source into the error to report (None: not the
    source's, let it through). The first record is read before anything is written, so that a
    source failing at once (refused, unreachable) leaves no output at all. ``tally()``: the
    source's own account of what it read and left out, by reason; the end record carries it
    with the records written by type, and the log says it."""
    counts: Counter = Counter()
    try:
        first = next(records, None)
    except Exception as error:  # noqa: BLE001 (failure() decides what is the source's)
        raise failure(error) or error from None
    status = ExitStatus.OK
    with open_output(output) as (handle, name), progress("records read", unit=" records") as bar:
        writer = StreamWriter(handle, "directory", producer, header, name)
        try:
            for record in itertools.chain([first] if first is not None else [], records):
                writer.write(record)
                counts[record["type"]] += 1
                bar.update()
        except Exception as error:  # noqa: BLE001
            reported = failure(error)
            if reported is None:
                raise
            log.error("%s", reported)
            writer.close([f"the read stopped half-way: {reported}"], _tally(counts, tally()))
            status = reported.status
        else:
            writer.close(tally=_tally(counts, tally()))
    return status, counts


def _tally(counts: Counter, source: Counter) -> dict[str, int]:
    """The records written by type, then the source's own tally; logged as one line."""
    tally = {f"{kind} records": number for kind, number in counts.items()} | dict(source)
    if tally:
        log.info("tally: %s", ", ".join(f"{name} {number}" for name, number in sorted(tally.items()) if number))
    return tally
