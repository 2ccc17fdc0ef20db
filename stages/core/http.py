"""The one retry policy: how zivsync sends a request to any HTTP API (Zivver's SCIM API,
Exchange Online's admin API, Microsoft Graph).

- one session per API (connection reuse), a timeout on every request, TLS verified;
- an optional client-side token bucket that paces requests to the API's budget;
- ``Retry-After`` honoured on 429 (up to a limit of waits), with the bucket emptied, by every
  thread of the client: no request starts until the wait is over (a client that keeps sending
  into a wait gets throttled longer: Exchange Online does that);
- backoff on 5xx, timeouts and dropped connections, for requests that are safe to repeat;
  one that is not (a create) raises :class:`Uncertain` so that the caller can look first;
- errors that carry the API's own message (the subclass knows where it is); 401/403 are for
  the subclass to name, since only it knows what permission is missing;
- the counts a run reports: requests, 429s, retries.

Subclasses add the API's resources and the meaning of its errors.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import urlsplit

import requests

from .. import __version__
from .errors import causes_of, speaks_no_tls
from .tls import verification_failed

log = logging.getLogger("zivsync")


class ApiError(Exception):
    """The API answered with an error: ``status`` and the API's own ``message``."""

    def __init__(self, method: str, path: str, status: int | None, message: str):
        self.method, self.path, self.status, self.message = method, path, status, message
        where = f"{method} {path}"
        super().__init__(f"{where}: HTTP {status}: {message}" if status else f"{where}: {message}")


class AuthError(ApiError):
    """The credentials were refused (401/403): nothing else will work either."""


class Unreachable(ApiError):
    """The API could not be reached, even after retrying."""


class Uncertain(ApiError):
    """A request that is not safe to repeat failed in a way that leaves unknown whether the
    server applied it (a timeout, a dropped connection, a 5xx answer)."""


class TokenBucket:
    """Paces requests: ``capacity`` at once, refilled ``capacity`` per ``window`` seconds."""

    def __init__(self, capacity: int, window: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.capacity, self.rate = capacity, capacity / window
        self.clock, self.sleep = clock, sleep
        self.tokens, self.stamp = float(capacity), clock()
        self.lock = threading.Lock()

    def take(self) -> None:
        with self.lock:
            while True:
                now = self.clock()
                self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.tokens >= 1 - 1e-9:  # rounding must not make it wait for nothing, forever
                    self.tokens = max(0.0, self.tokens - 1)
                    return
                self.sleep(max((1 - self.tokens) / self.rate, 0.001))

    def empty(self) -> None:
        """The server says we are over budget: start again from nothing."""
        with self.lock:
            self.tokens, self.stamp = 0.0, self.clock()


@dataclass
class Stats:
    requests: int = 0
    throttled: int = 0  # 429 answers
    retries: int = 0  # repeats after 5xx, timeouts, dropped connections
    by_method: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def writes(self) -> int:
        return sum(n for method, n in self.by_method.items() if method != "GET")

    def count(self, what: str, method: str | None = None) -> None:
        with self.lock:
            setattr(self, what, getattr(self, what) + 1)
            if method:
                self.by_method[method] += 1


MAX_WAIT = 300.0  # seconds: a Retry-After longer than this is not waited out in full

SAFE_METHODS = frozenset({"GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"})


class HttpClient:
    """Requests to one API at ``base_url``, sent by the policy in the module docstring."""

    def __init__(self, base_url: str, *, rate: int | None = None, window: float = 10.0, timeout: float = 30.0,
                 retries: int = 5, verify: bool | str = True, sleep: Callable[[float], None] = time.sleep,
                 max_throttle_waits: int = 20):
        self.base = base_url.rstrip("/")
        self.timeout, self.retries, self.sleep = timeout, retries, sleep
        self.max_throttle_waits = max_throttle_waits
        self.window = window
        self.bucket = TokenBucket(rate, window, sleep=sleep) if rate else None
        self.stats = Stats()
        self.session = requests.Session()
        self.session.verify = verify
        self.session.headers.update({"Accept": "application/json", "User-Agent": f"zivsync/{__version__}"})
        self._random = random.Random(0)
        self._pause_lock = threading.Lock()
        self._paused_until = 0.0  # time.monotonic() before which no request of this client starts

    def close(self) -> None:
        self.session.close()

    def send(self, method: str, url: str, *, idempotent: bool | None = None, **kwargs) -> requests.Response:
        """Send one request until it gets an answer that is not a 429 or a 5xx (retrying what is
        safe to retry) and return that answer, whatever its status; raise :class:`Unreachable`,
        :class:`Uncertain` or :class:`ApiError` when retrying can't help any more.

        ``url`` is absolute or a path below ``base_url``; ``idempotent`` defaults by method."""
        absolute = url if "://" in url else self.base + url
        path = url if "://" not in url else url.removeprefix(self.base) or url
        safe = method in SAFE_METHODS if idempotent is None else idempotent
        failures = throttles = 0
        while True:
            self._wait_out_pause()
            if self.bucket:
                self.bucket.take()
            self.stats.count("requests", method)
            self.before_send(method, absolute, kwargs)
            try:
                # verify given per request: else REQUESTS_CA_BUNDLE would override a --ca-file
                response = self.session.request(method, absolute, timeout=self.timeout, verify=self.session.verify,
                                                **kwargs)
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.ContentDecodingError) as error:  # also: dropped in the middle of the body
                reason = "timed out" if isinstance(error, requests.Timeout) else "connection failed or dropped"
                if not safe:
                    raise Uncertain(method, path, None, reason) from None
                failures += 1
                if failures > self.retries or _hopeless(error):
                    raise Unreachable(method, path, None, f"{in_words(error, self.session.verify, absolute)} "
                                                          f"({failures} attempt{'s' if failures > 1 else ''})") from None
                self._back_off(failures)
                continue
            status = response.status_code
            if status == 429:
                throttles += 1
                self.stats.count("throttled")
                if throttles > self.max_throttle_waits:
                    raise ApiError(method, path, status, f"still throttled after {self.max_throttle_waits} waits")
                if self.bucket:
                    self.bucket.empty()
                wait = self.retry_after(response) + self._random.uniform(0, 0.25)
                log.debug("throttled (429): every request waits %.1f s as the server asks", wait)
                self._pause(wait)
                continue
            if status >= 500:
                if not safe:
                    raise Uncertain(method, path, status, self.error_message(response))
                failures += 1
                if failures > self.retries:
                    raise ApiError(method, path, status, self.error_message(response))
                self._back_off(failures)
                continue
            return response

    def _pause(self, seconds: float) -> None:
        """Hold every request of this client (all threads) for ``seconds``."""
        with self._pause_lock:
            self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    def _wait_out_pause(self) -> None:
        """Wait while a 429 holds this client; again if another one extended the wait meanwhile.
        (Each wait is one sleep(): a test's sleep that returns at once ends the loop too.)"""
        waited_for = 0.0
        while True:
            with self._pause_lock:
                until = self._paused_until
            remaining = until - time.monotonic()
            if remaining <= 0 or until <= waited_for:
                return
            waited_for = until
            self.sleep(remaining)

    def before_send(self, method: str, url: str, kwargs: dict) -> None:
        """A hook for subclasses: e.g. put a fresh access token in the headers."""

    def error_message(self, response: requests.Response) -> str:
        """The API's own words for an error answer (subclasses know its error shape)."""
        return response.text.strip()[:500] or response.reason or "no message"

    def retry_after(self, response: requests.Response) -> float:
        """How long a 429 asks us to wait (seconds, fractions allowed), else one window."""
        for header in ("Retry-After", "RateLimit-Reset"):
            value = response.headers.get(header, "").strip()
            if value.replace(".", "", 1).isdigit():
                return min(float(value), MAX_WAIT)
        return self.window

    def _back_off(self, failures: int) -> None:
        self.stats.count("retries")
        self.sleep(min(30.0, 0.5 * 2 ** (failures - 1)) * self._random.uniform(0.5, 1.0))


def _hopeless(error: BaseException) -> bool:
    """A failure that retrying cannot mend: a certificate that does not verify, a name not found."""
    import socket
    import ssl

    return speaks_no_tls(error) or any(
        isinstance(e, ssl.SSLCertVerificationError)  # a resolver's hiccup (EAI_AGAIN) is retried
        or isinstance(e, socket.gaierror) and e.errno == socket.EAI_NONAME for e in causes_of(error))


def in_words(error: BaseException, verify: bool | str = True, url: str = "") -> str:
    """A connection failure said in words, its cause first: connection refused, name not found,
    timed out, TLS verification failed (why, the certificate the server presented, the CA file)."""
    import socket
    import ssl

    for cause in causes_of(error):
        if isinstance(cause, ssl.SSLCertVerificationError):
            parts = urlsplit(url)
            return verification_failed(cause.verify_message or str(cause.reason), parts.hostname or "",
                                       parts.port or 443, verify if isinstance(verify, str) else None)
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused (nothing listens at that address and port)"
        if isinstance(cause, socket.gaierror):
            return f"name not found ({cause.strerror or cause})"
        if isinstance(cause, (TimeoutError, socket.timeout)) or isinstance(cause, requests.Timeout):
            return "timed out"
        if isinstance(cause, ssl.SSLError):
            if speaks_no_tls(cause):
                return NO_TLS
            return f"TLS failed: {cause.reason or cause}"
    return f"connection failed or dropped: {_short(error)}"


NO_TLS = ("the server does not speak TLS at that port (it answered in plain text: is the URL's scheme or port "
          "wrong, http:// given as https://?)")



def _short(error: Exception) -> str:
    text = str(error)
    return text if len(text) < 200 else text[:200] + "…"
