"""The one Zivver SCIM client: every request zivsync sends to Zivver goes through here.

It sends by the one retry policy of :mod:`stages.http` (reference/zivver.md §3 and §6): a
token bucket pacing requests to Zivver's budget (about 50 per 10 s), so that a large push runs
at the API's speed without being thrown back; ``Retry-After`` honoured on 429 (or the window
Zivver's body names); backoff on 5xx, timeouts and dropped connections for requests that are
safe to repeat (GET, PUT, PATCH, DELETE); a POST that may or may not have happened raises
:class:`Uncertain` so that the caller can look before it retries. Here:

- errors that carry Zivver's own message; 401/403 as :class:`AuthError`;
- the API key never leaves the ``Authorization`` header: not in logs, errors or ``repr``.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from typing import Any, Callable
from urllib.parse import urlsplit

import orjson
import requests

from ..core.console import progress
from ..core.errors import ExitStatus, ZivsyncError
from ..core.http import ApiError, AuthError, HttpClient, TokenBucket, Uncertain, Unreachable  # noqa: F401 (re-exported)
from ..core.secrets import read_secret

log = logging.getLogger("zivsync")

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
ZIVVER_USER = "urn:ietf:params:scim:schemas:zivver:0.1:User"
ZIVVER_GROUP = "urn:ietf:params:scim:schemas:zivver:0.1:Group"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
SCIM_JSON = "application/scim+json"
PAGE_SIZE = 500


# Zivver's errors are the HTTP layer's, under the names push and snapshot know them by.
ZivverError = ApiError


class Client(HttpClient):
    """Zivver's SCIM API at ``base_url`` (…/api/scim/v2)."""

    def __init__(self, base_url: str, api_key: str, *, rate: int = 50, window: float = 10.0,
                 timeout: float = 30.0, retries: int = 5, verify: bool | str = True,
                 sleep: Callable[[float], None] = time.sleep):
        super().__init__(base_url, rate=rate, window=window, timeout=timeout, retries=retries, verify=verify,
                         sleep=sleep)
        self.session.headers["Authorization"] = f"Bearer {api_key}"

    def __repr__(self) -> str:  # no key in here
        return f"Client({self.base!r})"

    # -- requests ------------------------------------------------------------------------
    def request(self, method: str, path: str, *, body: Any = None, params: dict | None = None,
                content_type: str = "application/json", accept: str | None = "application/json") -> Any:
        """Send one request by the retry policy of stages.http and raise Zivver's errors;
        returns the parsed JSON body (None when empty)."""
        headers = {"Content-Type": content_type} if body is not None else {}
        if accept is None:
            headers["Accept"] = None  # requests drops a header set to None
        elif accept != "application/json":
            headers["Accept"] = accept
        data = orjson.dumps(body) if body is not None else None
        log.debug("%s %s%s", method, self.base + path, f" {params}" if params else "")
        response = self.send(method, path, data=data, params=params, headers=headers)
        status = response.status_code
        if status in (401, 403):
            raise AuthError(method, path, status, _auth_message(status, self.error_message(response)))
        if status >= 400:
            raise ZivverError(method, path, status, self.error_message(response))
        return orjson.loads(response.content) if response.content.strip() else None

    def error_message(self, response: requests.Response) -> str:
        return _message(response)

    def retry_after(self, response: requests.Response) -> float:
        if any(response.headers.get(h) for h in ("Retry-After", "RateLimit-Reset")):
            return super().retry_after(response)
        try:  # Zivver's own body says how long its window is
            return float(orjson.loads(response.content)["emptiedBucketDetails"]["windowSeconds"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return self.window

    # -- resources -----------------------------------------------------------------------
    def list(self, resource: str) -> list[dict]:
        """Every User or Group. Pages defensively (reference §3.7): asks for pages, stops when
        it has totalResults or a page comes back empty, copes with a server that ignores paging."""
        found: dict[str, dict] = {}
        start = 1
        with progress(f"{resource} read", unit=f" {resource.lower()}") as bar:
            while True:
                page = self.request("GET", f"/{resource}", params={"startIndex": start, "count": PAGE_SIZE}) or {}
                items = page.get("Resources") or []
                before = len(found)
                for item in items:
                    found[item["id"]] = item
                total = page.get("totalResults", len(found))
                bar.total = total
                bar.update(len(found) - before)
                if not items or len(found) >= total or len(found) == before:  # a server ignoring startIndex
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
    key = read_secret(options.get("zivver_api_key_file"), "ZIVSYNC_ZIVVER_API_KEY", "Zivver API key",
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
