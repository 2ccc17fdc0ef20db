"""What a zivsync executable's exit code means, and the errors that carry one.

Every layer raises these; the command base (``stages/cli.py``) turns them into a message and
the exit code. The README documents the table.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from enum import IntEnum


class ExitStatus(IntEnum):
    """What a zivsync executable's exit code means. The README documents this table."""

    OK = 0  #: done; for --check: nothing to change
    ERROR = 1  #: usage, configuration or input error; nothing was written to Zivver
    PARTIAL = 2  #: some changes failed (see the results stream)
    REFUSED = 3  #: a safety check refused to go on (see the report on stderr)
    UNREACHABLE = 4  #: could not reach or authenticate to a server
    PENDING = 5  #: --check: changes are pending


class ZivsyncError(Exception):
    """An error the user can act on: printed without a traceback, exits with ``status``."""

    def __init__(self, message: str, status: ExitStatus = ExitStatus.ERROR):
        super().__init__(message)
        self.status = status


class ServerUnreachable(ZivsyncError):
    """Could not reach, trust or sign in to a server: exit 4. Each source names its own kind."""

    def __init__(self, message: str):
        super().__init__(message, ExitStatus.UNREACHABLE)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM stopped the command: it exits 128 + the signal's number (130,
    143), and ``done`` says what it had done by then (a push: how many changes were applied)."""

    def __init__(self, signum: int = signal.SIGINT, done: str = ""):
        super().__init__(done)
        self.signum, self.done = signum, done

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def what(self) -> str:
        if self.signum == signal.SIGINT:
            return "interrupted (Ctrl-C)"
        if self.signum == getattr(signal, "SIGBREAK", None):  # Windows
            return "stopped by Ctrl-Break"
        return f"stopped by signal {self.signum}"


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """While a stopped command writes down what it had done (the results' end record, the account
    mapping), a second Ctrl-C or SIGTERM (a run passing on the one it got, systemd stopping the
    whole group) must not cut that short: they are ignored until it is written."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = [getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGBREAK") if hasattr(signal, name)]
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in held}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def causes_of(error: BaseException):
    """The error and everything it wraps (requests wraps urllib3's, which wraps the socket's)."""
    seen: set[int] = set()
    pending: list = [error]
    while pending:
        current = pending.pop(0)
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending += [current.__cause__, current.__context__, getattr(current, "reason", None), *current.args]


# What OpenSSL says when the other end answers a TLS handshake in plain text: it reads the first
# bytes of "HTTP/1.1 400" or of an LDAP message as a TLS record header with an impossible version
# (WRONG_VERSION_NUMBER; RECORD_LAYER_FAILURE in OpenSSL 3.2+, PACKET_LENGTH_TOO_LONG for some
# bytes). Matched as text: ldap3 keeps only the text of the ssl error it wraps.
_PLAIN_TEXT_AT_TLS = ("wrong_version_number", "wrong version number", "record_layer_failure",
                      "record layer failure", "packet_length_too_long", "packet length too long")


def speaks_no_tls(error: BaseException) -> bool:
    """Whether a TLS connection failed because the server answered in plain text."""
    text = " ".join(str(cause) for cause in causes_of(error)).lower()
    return any(mark in text for mark in _PLAIN_TEXT_AT_TLS)
