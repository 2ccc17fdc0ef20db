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
from ..core.http import (  # noqa: F401 (re-exported)
    ApiError,
    AuthError,
    HttpClient,
    TokenBucket,
    Uncertain,
    Unreachable,
)
from ..core.secrets import read_secret
from ..core.tls import check_revocation, system_trust

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


class ShortListing(ApiError):
    """A listing that holds fewer resources than Zivver's own totalResults, even read twice:
    ``resources`` is what was read. Whoever trusts it must not take it for all of Zivver."""

    def __init__(self, resource: str, resources: list[dict], total: int):
        self.resources, self.total = resources, total
        super().__init__("GET", f"/{resource}", None,
                         f"Zivver says it has {total} but the listing gave {len(resources)}, read twice "
                         "(a page lost, or a server ignoring startIndex)")


class NotScim(ApiError):
    """The URL answers, but not as Zivver's SCIM API does (a mistyped path: HTTP 404)."""


class ListingNotUnderstood(ApiError):
    """A listing page in a shape zivsync does not know (no totalResults, Resources no list…)."""


def _list_page(resource: str, page) -> tuple[list[dict], int]:
    """The resources and totalResults of one ListResponse page, checked: a page that is no
    object, a totalResults that is no count, or Resources that are no list of objects with an id
    raise :class:`ListingNotUnderstood` (never read as an empty organisation)."""
    where = f"/{resource}"
    if not isinstance(page, dict):
        raise ListingNotUnderstood("GET", where, None, f"the answer is no SCIM ListResponse: {str(page)[:200]}")
    total = page.get("totalResults")
    if not isinstance(total, int) or isinstance(total, bool) or total < 0:
        raise ListingNotUnderstood("GET", where, None, f"totalResults is {total!r}, not a count")
    items = page.get("Resources", [] if total == 0 else None)
    if not isinstance(items, list):
        raise ListingNotUnderstood("GET", where, None, f"Resources is {items!r}, not a list")
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
            raise ListingNotUnderstood("GET", where, None, f"a resource without an id: {str(item)[:200]}")
    return items, total


class Client(HttpClient):
    """Zivver's SCIM API at ``base_url`` (…/api/scim/v2)."""

    def __init__(self, base_url: str, api_key: str, *, rate: int = 50, window: float = 10.0,
                 timeout: float = 30.0, retries: int = 5, verify: bool | str = True,
                 sleep: Callable[[float], None] = time.sleep):
        super().__init__(base_url, rate=rate, window=window, timeout=timeout, retries=retries, verify=verify,
                         sleep=sleep)
        self.session.headers["Authorization"] = f"Bearer {api_key}"
        self.last_status: int | None = None  # of the last answer: a result records what applied it

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
        status = self.last_status = response.status_code
        if status in (401, 403):
            raise AuthError(method, path, status, _auth_message(status, self.error_message(response)))
        if status == 404:  # Zivver answers 400 for an unknown id: a 404 is a URL that is no SCIM API
            raise NotScim(method, path, status, f"{self.base} does not answer as Zivver's SCIM API (HTTP 404 for "
                                                 f"{path}): is the URL right? It ends in /api/scim/v2")
        if status >= 400:
            raise ZivverError(method, path, status, self.error_message(response))
        if not response.content.strip():
            return None
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:  # a web page where the API should be (a portal, a login page)
            kind = response.headers.get("Content-Type", "").split(";")[0].strip() or "no content type"
            raise NotScim(method, path, status, f"{self.base} does not answer as Zivver's SCIM API ({kind}, not "
                                                 "JSON): is the URL right? It ends in /api/scim/v2") from None

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
    def list(self, resource: str, convert: Callable[[dict], Any] | None = None) -> list:
        """Every User or Group. Pages defensively (reference §3.7): asks for pages, stops when
        it has totalResults or a page adds nothing, copes with a server that ignores paging.
        The read is checked against the ``totalResults`` Zivver states (RFC 7644 §3.4.2: a
        page MAY hold fewer than asked, the total is the whole): fewer, after one more read,
        raises :class:`ShortListing` carrying what was read. ``convert``: what to keep of each
        resource, as its page arrives (a reader that needs a little of each need not hold all)."""
        found, total = self._list_once(resource, convert)
        if len(found) < total:
            log.warning("Zivver's listing of /%s gave %d of the %d it says it has: reading it again", resource,
                        len(found), total)
            found, total = self._list_once(resource, convert)
        if len(found) < total:
            raise ShortListing(resource, list(found.values()), total)
        return list(found.values())

    def _list_once(self, resource: str, convert: Callable[[dict], Any] | None) -> tuple[dict[str, Any], int]:
        found: dict[str, Any] = {}
        start, total = 1, 0
        with progress(f"{resource} read", unit=f" {resource.lower()}") as bar:
            while True:
                page = self.request("GET", f"/{resource}", params={"startIndex": start, "count": PAGE_SIZE})
                items, total = _list_page(resource, page)
                before = len(found)
                for item in items:  # seen on an earlier page too: the listing moved under us, kept once
                    found[item["id"]] = convert(item) if convert else item
                bar.total = total
                bar.update(len(found) - before)
                if not items or len(found) >= total or len(found) == before:  # a server ignoring startIndex
                    return found, total
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
                      "timeout", "check_revocation", "revocation_soft_fail", "crl_cache")


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
    if parts.scheme == "https" and verify is not False:
        check_revocation("Zivver", parts.hostname, parts.port or 443, options.get("ca_file"), options)
    elif options.get("check_revocation"):
        log.warning("--check-revocation: %s is not verified https: there is no certificate to check", url)
    return Client(url, key, rate=options["rate_limit"], window=options["rate_window"], timeout=options["timeout"],
                  verify=system_trust(verify))


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exit_status_for(error: ZivverError) -> ExitStatus:
    unread = (AuthError, Unreachable, ShortListing, ListingNotUnderstood, NotScim)
    return ExitStatus.UNREACHABLE if isinstance(error, unread) else ExitStatus.PARTIAL
