"""Reading a secret (a password, an API key) the one way zivsync allows: from a file or an
environment variable, never from a flag, which process lists and shell histories show."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .console import log
from .errors import ZivsyncError


def _warn_if_others_can_read(path: Path, what: str) -> None:
    """A secret file others may read is a secret shared: say so (POSIX modes; on Windows the
    file's ACL decides, which the README says how to check)."""
    if os.name != "posix":
        return
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("the %s file %s can be read by other users (mode %s): chmod 600 %s", what, path,
                    stat.filemode(mode), path)


def read_secret(path: str | None, variable: str, what: str, file_option: str) -> str:
    """A secret from the file named by ``file_option``, else from the environment variable:
    never from a flag, which process lists and shell histories show to everyone."""
    if path:
        try:
            raw = Path(path).read_bytes()
        except OSError as error:
            raise ZivsyncError(f"cannot read the {what} file {path}: {error.strerror}") from None
        _warn_if_others_can_read(Path(path), what)
        # PowerShell 5.1's `>` and Out-File write UTF-16 with a BOM
        encoding = "utf-16" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"
        try:
            secret = raw.decode(encoding).strip()
        except UnicodeDecodeError:
            raise ZivsyncError(f"the {what} file {path} is neither UTF-8 nor UTF-16 text") from None
    else:
        secret = os.environ.get(variable, "").strip()
    if not secret:
        raise ZivsyncError(f"no {what}: set {variable} or name a file with {file_option}")
    return secret
