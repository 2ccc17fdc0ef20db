"""Replacing a file that someone else may be reading, as Windows allows it.

On Windows, renaming onto a file that another process holds open without FILE_SHARE_DELETE (an
editor, ``Get-Content -Wait``, a backup agent or a virus scanner reading it) fails with
ERROR_ACCESS_DENIED or ERROR_SHARING_VIOLATION, which Python raises as PermissionError; such
holds are usually brief (MoveFileEx, learn.microsoft.com/windows/win32/api/winbase/nf-winbase-
movefileexw; Python's os.replace calls it with MOVEFILE_REPLACE_EXISTING). POSIX renames over
open files, so there a PermissionError is a real permission problem and is not retried.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from .errors import ZivsyncError

ATTEMPTS = 10
FIRST_WAIT = 0.05  # seconds, doubled each time: about 25 s in all at most, most holds end far sooner


def replace(source: str | Path, target: str | Path, *, sleep=time.sleep) -> None:
    """``os.replace``, retried briefly on Windows while another program holds the target open;
    then a ZivsyncError that names the file and what to look for."""
    wait = FIRST_WAIT
    for attempt in range(1, ATTEMPTS + 1):
        try:
            os.replace(source, target)
            return
        except PermissionError as error:
            if sys.platform != "win32":
                raise
            if attempt == ATTEMPTS:
                raise ZivsyncError(
                    f"cannot replace {target}: another program keeps it open ({error.strerror}; tried {ATTEMPTS} "
                    "times): close the editor or viewer that shows it, or exclude the folder from the virus "
                    "scanner's or the backup's live scanning") from None
            sleep(wait)
            wait *= 2
