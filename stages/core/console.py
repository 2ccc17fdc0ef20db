"""The one logger every layer writes to, and progress bars for a person watching.

The command base (``stages/cli.py``) decides where log lines go and whether progress is shown
(:func:`show_progress`); the code below it only writes.
"""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("zivsync")

_progress_shown = False


def show_progress(shown: bool) -> None:
    """Set by the command base: bars only on a terminal, with text logs, not --quiet."""
    global _progress_shown
    _progress_shown = shown


def progress_shown() -> bool:
    return _progress_shown


def progress(label: str, total: int | None = None, unit: str = ""):
    """A progress bar on stderr when a person is watching, else a silent one:
    ``with progress("people read") as bar: bar.update()``."""
    import tqdm  # imported only by the stages that show progress

    return tqdm.tqdm(desc=label, total=total, unit=unit or " it", file=sys.stderr, disable=not _progress_shown,
                     leave=False, dynamic_ncols=True, mininterval=0.25)
