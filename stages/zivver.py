"""The one Zivver SCIM client: every request zivsync sends to Zivver goes through here.

It owns what makes talking to Zivver safe and quick (reference/zivver.md §3 and §6):

- one HTTP session (connection reuse), a timeout on every request, TLS verified;
- a client-side token bucket that paces requests to Zivver's budget (about 50 per 10 s),
  so that a large push runs at the API's speed without being thrown back;
- ``Retry-After`` honoured on 429; backoff on 5xx, timeouts and dropped connections, for
  requests that are safe to repeat (GET, PUT, PATCH, DELETE); a POST that may or may not
  have happened raises :class:`Uncertain` so that the caller can look before it retries;
- errors that carry Zivver's own message; 401/403 as :class:`AuthError`;
- the API key never leaves the ``Authorization`` header: not in logs, errors or ``repr``.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

import click
import orjson
import requests

from . import __version__, cli
from .cli import ExitStatus, ZivsyncError, option

log = logging.getLogger("zivsync")

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
ZIVVER_USER = "urn:ietf:params:scim:schemas:zivver:0.1:User"
ZIVVER_GROUP = "urn:ietf:params:scim:schemas:zivver:0.1:Group"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
SCIM_JSON = "application/scim+json"
PAGE_SIZE = 500


class ZivverError(Exception):
    """Zivver answered with an error: ``status`` and Zivver's own ``message``."""

    def __init__(self, method: str, path: str, status: int | None, message: str):
        self.method, self.path, self.status, self.message = method, path, status, message
        where = f"{method} {path}"
        super().__init__(f"{where}: HTTP {status}: {message}" if status else f"{where}: {message}")


class AuthError(ZivverError):
    """The API key was refused (401/403): nothing else will work either."""


class Unreachable(ZivverError):
    """Zivver could not be reached, even after retrying."""


class Uncertain(ZivverError):
    """A request that is not safe to repeat failed in a way that leaves unknown whether Zivver
    applied it (a timeout, a dropped connection, a 5xx answer)."""


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

    @property
    def writes(self) -> int:
        return sum(n for method, n in self.by_method.items() if method != "GET")


class Client:
    """Zivver's SCIM API at ``base_url`` (…/api/scim/v2)."""

    def __init__(self, base_url: str, api_key: str, *, rate: int = 50, window: float = 10.0,
                 timeout: float = 30.0, retries: int = 5, verify: bool | str = True,
                 sleep: Callable[[float], None] = time.sleep):
        self.base = base_url.rstrip("/")
        self.timeout, self.retries, self.sleep = timeout, retries, sleep
        self.bucket = TokenBucket(rate, window, sleep=sleep)
        self.window = window
        self.stats = Stats()
        self.session = requests.Session()
        self.session.verify = verify
        self.session.headers.update({
            "Authorization": f"Bearer {api_key}",
            "Accept": "application/json",
            "User-Agent": f"zivsync/{__version__}",
        })
        self._random = random.Random(0)

    def __repr__(self) -> str:  # no key in here
        return f"Client({self.base!r})"

    def close(self) -> None:
        self.session.close()

    # -- requests ------------------------------------------------------------------------
    def request(self, method: str, path: str, *, body: Any = None, params: dict | None = None,
                content_type: str = "application/json", accept: str | None = "application/json") -> Any:
        """Send one request, pacing, retrying and raising as the module docstring says;
        returns the parsed JSON body (None when empty)."""
        url = self.base + path
        safe = method != "POST"
        headers = {"Content-Type": content_type} if body is not None else {}
        if accept is None:
            headers["Accept"] = None  # requests drops a header set to None
        elif accept != "application/json":
            headers["Accept"] = accept
        data = orjson.dumps(body) if body is not None else None
        failures = throttles = 0
        while True:
            self.bucket.take()
            self.stats.requests += 1
            self.stats.by_method[method] += 1
            log.debug("%s %s%s", method, url, f" {params}" if params else "")
            try:
                response = self.session.request(method, url, data=data, params=params, headers=headers,
                                                timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as error:
                reason = "timed out" if isinstance(error, requests.Timeout) else "connection failed or dropped"
                if not safe:
                    raise Uncertain(method, path, None, reason) from None
                failures += 1
                if failures > self.retries:
                    raise Unreachable(method, path, None, f"{reason} ({failures} attempts): {_short(error)}") from None
                self._back_off(failures)
                continue
            status = response.status_code
            if status == 429:
                throttles += 1
                self.stats.throttled += 1
                if throttles > 20:
                    raise ZivverError(method, path, status, "still throttled after 20 waits")
                self.bucket.empty()
                self.sleep(self._retry_after(response) + self._random.uniform(0, 0.25))
                continue
            if status >= 500:
                if not safe:
                    raise Uncertain(method, path, status, _message(response))
                failures += 1
                if failures > self.retries:
                    raise ZivverError(method, path, status, _message(response))
                self._back_off(failures)
                continue
            if status in (401, 403):
                raise AuthError(method, path, status, _auth_message(status, _message(response)))
            if status >= 400:
                raise ZivverError(method, path, status, _message(response))
            return orjson.loads(response.content) if response.content.strip() else None

    def _back_off(self, failures: int) -> None:
        self.stats.retries += 1
        self.sleep(min(30.0, 0.5 * 2 ** (failures - 1)) * self._random.uniform(0.5, 1.0))

    def _retry_after(self, response: requests.Response) -> float:
        for header in ("Retry-After", "RateLimit-Reset"):
            value = response.headers.get(header, "")
            if value.replace(".", "", 1).isdigit():
                return float(value)
        try:
            return float(orjson.loads(response.content)["emptiedBucketDetails"]["windowSeconds"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return self.window

    # -- resources -----------------------------------------------------------------------
    def list(self, resource: str) -> list[dict]:
        """Every User or Group. Pages defensively (reference §3.7): asks for pages, stops when
        it has totalResults or a page comes back empty, copes with a server that ignores paging."""
        found: dict[str, dict] = {}
        start = 1
        while True:
            page = self.request("GET", f"/{resource}", params={"startIndex": start, "count": PAGE_SIZE}) or {}
            items = page.get("Resources") or []
            for item in items:
                found[item["id"]] = item
            total = page.get("totalResults", len(found))
            if not items or len(found) >= total:
                return list(found.values())
            start += len(items)

    def find(self, resource: str, attribute: str, value: str) -> dict | None:
        page = self.request("GET", f"/{resource}", params={"filter": f'{attribute} eq "{value}"'}) or {}
        matches = [r for r in page.get("Resources") or [] if str(r.get(attribute, "")).lower() == value.lower()]
        return matches[0] if matches else None

    def get(self, resource: str, zivver_id: str) -> dict:
        item = self.request("GET", f"/{resource}/{zivver_id}")
        return item["Resources"][0] if isinstance(item, dict) and "Resources" in item else item  # §6.1 item 5

    def create(self, resource: str, body: dict) -> dict:
        return self.request("POST", f"/{resource}", body=body)

    def replace(self, resource: str, zivver_id: str, body: dict) -> dict | None:
        return self.request("PUT", f"/{resource}/{zivver_id}", body=body)

    def remove_members(self, zivver_id: str) -> None:
        """Empty a functional account: a PUT with ``members: []`` does nothing (reference §3.5)."""
        self.request("PATCH", f"/Groups/{zivver_id}", content_type=SCIM_JSON, accept=None,
                     body={"schemas": [PATCH_OP], "Operations": [{"op": "remove", "path": "members"}]})

    def delete(self, resource: str, zivver_id: str) -> None:
        self.request("DELETE", f"/{resource}/{zivver_id}")


def _message(response: requests.Response) -> str:
    """Zivver's own words: {"code":…,"message":…} or plain text."""
    text = response.text.strip()
    try:
        body = orjson.loads(text)
        if isinstance(body, dict):
            return str(body.get("message") or body.get("detail") or body.get("error") or text)[:500]
    except orjson.JSONDecodeError:
        pass
    return text[:500] or response.reason or "no message"


def _auth_message(status: int, message: str) -> str:
    return (f"{message}: the API key was refused. Is it complete, without spaces, and was the "
            "administrator who generated it deleted? (Zivver: Organization Settings → API keys)")


def _short(error: Exception) -> str:
    text = str(error)
    return text if len(text) < 200 else text[:200] + "…"


# -- the connection options every Zivver-facing stage has --------------------------------


def connection_options(func: Callable) -> Callable:
    decorators = [
        option("--zivver-url", metavar="URL",
               help="Zivver's SCIM API, e.g. https://app.zivver.com/api/scim/v2 (or a zivsync-sandbox)."),
        option("--zivver-api-key-file", type=click.Path(dir_okay=False), metavar="FILE",
               help="Read the API key from this file. Default: the environment variable ZIVSYNC_ZIVVER_API_KEY "
                    "(never a flag: flags show up in process lists)."),
        option("--ca-file", type=click.Path(dir_okay=False, exists=True), metavar="FILE",
               help="Verify Zivver's TLS certificate against these CAs instead of the system's."),
        option("--insecure", is_flag=True, help="Do not verify TLS certificates (logged loudly; for tests only)."),
        option("--rate-limit", type=click.IntRange(min=1), default=50, show_default=True,
               help="Requests per --rate-window that Zivver allows: push paces itself to it."),
        option("--rate-window", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
               help="Seconds of Zivver's rate-limit window."),
        option("--timeout", type=click.FloatRange(min=1), default=30.0, show_default=True,
               help="Seconds to wait for each answer."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


CONNECTION_OPTIONS = ("zivver_url", "zivver_api_key_file", "ca_file", "insecure", "rate_limit", "rate_window",
                      "timeout")


def connect(options: dict) -> Client:
    """A client from the connection options, the key from the environment or a file."""
    url = options["zivver_url"]
    if not url:
        raise ZivsyncError("no Zivver URL: give --zivver-url or set ZIVSYNC_ZIVVER_URL")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ZivsyncError(f"--zivver-url {url!r} is not an http(s) URL")
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise ZivsyncError("--zivver-url must use https (plain http is only for a zivsync-sandbox on this machine)")
    key = cli.read_secret(options.get("zivver_api_key_file"), "ZIVSYNC_ZIVVER_API_KEY", "Zivver API key",
                          "--zivver-api-key-file")
    verify: bool | str = options.get("ca_file") or True
    if options.get("insecure"):
        log.warning("TLS certificates are NOT verified (--insecure): anyone in between can read the API key")
        verify = False
    return Client(url, key, rate=options["rate_limit"], window=options["rate_window"], timeout=options["timeout"],
                  verify=verify)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exit_status_for(error: ZivverError) -> ExitStatus:
    return ExitStatus.UNREACHABLE if isinstance(error, (AuthError, Unreachable)) else ExitStatus.PARTIAL
