"""Reading a config file as Windows editors save it.

Notepad saves UTF-8 (with a BOM before Windows 10 1903, without since), "Unicode" (UTF-16 LE
with a BOM) or ANSI (cp1252); PowerShell 5.1's ``Out-File`` and ``>`` write UTF-16 LE with a
BOM. TOML is UTF-8 (toml.io/en/v1.0.0: "A TOML file must be a valid UTF-8 encoded Unicode
document"): UTF-8 with or without BOM and UTF-16 with BOM are read; anything else is refused
with what to do, never a traceback.
"""

from __future__ import annotations

import codecs
import tomllib
from pathlib import Path

from .errors import ZivsyncError


def read_toml(path: Path) -> dict:
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ZivsyncError(f"cannot read {path}: {error.strerror}") from None
    text = _decoded(path, raw)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        hint = ""
        # tomllib on "D:\zivsync": "Unescaped '\' in a string"; on "C:\Users": "Invalid hex value" (\U)
        if any(words in str(error) for words in ("Unescaped '\\'", "Invalid hex value")):
            hint = (" (a Windows path in double quotes treats \\ as an escape: write it in single quotes, "
                    "runs_dir = 'D:\\zivsync\\runs', or with forward slashes)")
        raise ZivsyncError(f"{path} is not valid TOML: {error}{hint}") from None


def _decoded(path: Path, raw: bytes) -> str:
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError as error:
            raise ZivsyncError(f"{path}: starts as UTF-16 but is not valid UTF-16 ({error.reason}): save it "
                               "again as UTF-8") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[:error.start].count(b"\n") + 1
        raise ZivsyncError(f"{path}:{line}: is not UTF-8 (byte 0x{raw[error.start]:02x}; an ANSI or OEM code page?): "
                           "save the file as UTF-8 (Notepad: File, Save as, Encoding: UTF-8)") from None
