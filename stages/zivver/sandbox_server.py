"""The server behind zivsync-sandbox (``stages/sandbox.py``): a local Zivver, speaking Zivver's SCIM API with its quirks, on loopback.

What it is for: an administrator rehearses a sync against a local copy of the organisation
(``--seed`` an accounts stream, ``--state`` to keep the result between runs) before pointing
zivsync-push at the real thing; our tests and ``make demo`` run every Zivver-facing stage
against it. It is only useful if it is *faithful*: it enforces every rule of Zivver's own
backend model (reference/zivver.md §6.4) and, where the reference says the real server
behaves otherwise, what the real server does (§3, §6.1, §6.10):

- ``GET /Users/{id}`` of an unknown id is 400 ``Unknown account with uuid: …``, not 404;
- a duplicate user create is 409 with an empty body, a duplicate group create 400
  ``Account is outside the organization``; addresses outside the claimed domains are refused;
- a create (POST) ignores the user's ``delegates`` and makes the user active whatever it was
  sent: a client must follow it with a PUT where those matter;
- a PUT that sends the Zivver extension object replaces it whole: whatever it leaves out
  (aliases, delegates, ``SsoAccountKey``, ``ExternalAccountId``) is erased (ENG-12451);
  top-level fields left out are kept;
- ``SsoAccountKey`` is stored but never returned by the API (``/_sandbox/state`` shows it, at
  the top level of each user);
- ``PUT /Groups/{id}`` with ``members: []`` answers 200 and changes nothing; emptying takes
  a ``PATCH`` ``remove members``, sent as ``application/scim+json`` (else 415/406);
- a personal account never becomes a functional one or back;
- a rate limit (a token bucket, 50 requests per 10 s) answering 429 with Zivver's body.

And it can misbehave on purpose (``--fail-rate``, ``--drop-rate``, ``--drop-after-write-rate``,
``--latency``, reproducible with ``--fault-seed``) so that push's retries can be tested,
including the nasty case of a write that was applied but whose answer never arrived.

Layout: :class:`State` holds the accounts and every SCIM rule (pure: no HTTP, no threads);
:class:`TokenBucket`, :class:`Faults` and :class:`Stats` are the server's behaviour around it;
:class:`Sandbox` ties them together with the lock and the state file; :class:`Handler` only
parses, routes and serialises; :func:`serve` runs it for the command.

Control surface for tests and rehearsals (same Bearer key, neither rate limited nor faulted):
``GET /_sandbox/stats`` (``requests``, ``by_method``, ``throttled``, ``faults`` count every
request under /api; ``writes`` counts the write requests that changed the state),
``POST /_sandbox/stats/reset``, ``GET /_sandbox/state`` (the whole state, SSO keys included:
the same document ``--state`` writes).
"""

from __future__ import annotations

import hmac
import math
import os
import random
import re
import signal
import socket
import socketserver
import ssl
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import parse_qs, urlsplit

import orjson

from .. import __version__
from ..core import files
from ..core.console import log
from ..core.errors import ZivsyncError
from ..core.stream import Input, StreamReader

API_KEY_VARIABLE = "ZIVSYNC_ZIVVER_API_KEY"
API_PREFIX = "/api/scim/v2"
CONTROL_PREFIX = "/_sandbox/"
STATE_VERSION = 1

USER, GROUP = "User", "Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
ZIVVER_EXTENSION = {USER: "urn:ietf:params:scim:schemas:zivver:0.1:User",
                    GROUP: "urn:ietf:params:scim:schemas:zivver:0.1:Group"}
SCHEMAS = {
    USER: ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE, ZIVVER_EXTENSION[USER]],
    GROUP: ["urn:ietf:params:scim:schemas:core:2.0:Group", ZIVVER_EXTENSION[GROUP], ENTERPRISE],
}
PRIMARY = {USER: "userName", GROUP: "externalId"}  # the account's address
ROOT_DIVISION = "/"

SCIM_JSON = "application/scim+json"
JSON = "application/json"
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# Zivver's messages, exactly (reference/zivver.md §3.8 and §6.4).
OUTSIDE = "Account is outside the organization"
DOMAIN_NOT_OWNED = "Error creating alias: Domain Not Owned"
ALIAS_TAKEN = "Error creating alias: Alias is already taken for {}"
UNKNOWN_ACCOUNT = "Unknown account with uuid: {}"
UNKNOWN_IN_SET = "Unknown in set"
MEMBER_NOT_FOUND = "Error creating member: Member Not Found"
UNSUPPORTED_OPERATION = "Unsupported operation"
# The backend is Dropwizard/Jersey (§6.7): its stock messages for the generic errors.
BAD_JSON = "Unable to process JSON"
NO_CREDENTIALS = "Credentials are required to access this resource."
SERVER_ERROR = "There was an error processing your request. It has been logged (ID {:016x})."
HTTP_MESSAGES = {404: "HTTP 404 Not Found", 405: "HTTP 405 Method Not Allowed", 406: "HTTP 406 Not Acceptable",
                 413: "HTTP 413 Request Entity Too Large", 415: "HTTP 415 Unsupported Media Type"}
RATE_LIMIT_REFERENCE = "https://tools.ietf.org/html/draft-polli-ratelimit-headers-02"
MAX_BODY = 16 * 1024 * 1024


class ScimError(Exception):
    """A refusal, as Zivver answers it: ``{"code": status, "message": message}``, or an
    empty body when ``message`` is None (the duplicate user's 409)."""

    def __init__(self, status: int, message: str | None = None):
        super().__init__(f"{status} {message or ''}".strip())
        self.status = status
        self.message = message


class StateError(Exception):
    """A seed or state file that cannot be loaded as it is."""


def _today() -> str:
    return time.strftime("%Y-%m-%d", time.gmtime())


def _domain(address: str) -> str:
    return address.rpartition("@")[2].strip().lower()


# -- reading request bodies: Jackson's leniency, Jackson's refusals ------------------------


def _object(value: Any) -> dict:
    if not isinstance(value, dict):
        raise ScimError(400, BAD_JSON)
    return value


def _text(value: Any, *, required: bool = False) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise ScimError(400, BAD_JSON)
    return value.strip()


def _texts(value: Any) -> list[str]:
    """A list of strings; absent or null is the empty list."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ScimError(400, BAD_JSON)
    return [v.strip() for v in value]


def _addresses(value: Any) -> list[str]:
    """A list of addresses, without repeats (compared case-insensitively), in the order given."""
    seen: set[str] = set()
    kept = []
    for address in _texts(value):
        if address.lower() not in seen:
            seen.add(address.lower())
            kept.append(address)
    return kept


def _boolean(value: Any) -> bool:
    # Jackson coerces "true"/"True"/"false"/"False"; HelloID sends active as the string "False".
    if isinstance(value, bool):
        return value
    if value in ("true", "True"):
        return True
    if value in ("false", "False"):
        return False
    raise ScimError(400, BAD_JSON)


def _phones(value: Any) -> list[dict]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(p, dict) and isinstance(p.get("value"), str) for p in value):
        raise ScimError(400, BAD_JSON)
    return [{"value": p["value"]} for p in value]


def _member_ids(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(m, dict) and isinstance(m.get("value"), str) for m in value):
        raise ScimError(400, BAD_JSON)
    return list(dict.fromkeys(m["value"].strip() for m in value))


def _division(body: dict, current: str = ROOT_DIVISION) -> str:
    """The enterprise extension's division. The sandbox has only Zivver's root division, "/"."""
    if ENTERPRISE not in body:
        return current
    division = _object(body[ENTERPRISE]).get("division")
    if division is None:
        return current
    if division != ROOT_DIVISION:
        raise ScimError(400, f"Invalid division: {division}")
    return division


def _extension(ext_in: dict, kind: str) -> dict:
    """A new Zivver extension object from what a request sent: the keys it left out are gone.
    (A user's SsoAccountKey, write-only, is kept apart: see :func:`user_resource`.)"""
    ext: dict[str, Any] = {"aliases": _addresses(ext_in.get("aliases"))}
    if kind == USER:
        ext["delegates"] = _texts(ext_in.get("delegates"))
    if (external := _text(ext_in.get("ExternalAccountId"))) is not None:
        ext["ExternalAccountId"] = external
    return ext


# -- resources ------------------------------------------------------------------------


def user_resource(rid: str, created: str, user_name: str, name: str, active: bool, phones: list[dict],
                  nick_name: str | None, division: str, ext: dict, sso_key: str | None) -> dict:
    """A user as Zivver returns it (reference/zivver.md §3.4), plus the SsoAccountKey it was
    sent in the Zivver extension, kept at the top level because no response ever shows it."""
    resource: dict[str, Any] = {"id": rid, "userName": user_name, "name": {"formatted": name}, "active": active,
                                "phoneNumbers": phones}
    if nick_name is not None:
        resource["nickName"] = nick_name
    resource.update({
        "meta": {"created": created, "location": f"/scim/v2/Users/{rid}", "resourceType": USER},
        "schemas": SCHEMAS[USER],
        ENTERPRISE: {"division": division},
        ZIVVER_EXTENSION[USER]: ext,
    })
    if sso_key is not None:
        resource["SsoAccountKey"] = sso_key
    return resource


def group_resource(rid: str, created: str, external_id: str, display_name: str, members: list[str],
                   division: str, ext: dict) -> dict:
    """A functional account as Zivver stores it (reference/zivver.md §3.5)."""
    return {
        "id": rid, "externalId": external_id, "displayName": display_name,
        "members": [{"value": member} for member in members],
        "meta": {"created": created, "location": f"/scim/v2/Groups/{rid}", "resourceType": GROUP},
        "schemas": SCHEMAS[GROUP],
        ENTERPRISE: {"division": division},
        ZIVVER_EXTENSION[GROUP]: ext,
    }


def kind_of(resource: dict) -> str:
    return resource["meta"]["resourceType"]


def render(resource: dict) -> dict:
    """A resource as the API returns it: everything but the write-only SsoAccountKey."""
    return {key: value for key, value in resource.items() if key != "SsoAccountKey"}


class State:
    """Zivver's accounts and the rules of its SCIM backend: no HTTP, no threads, no files.

    Resources are kept in their SCIM shape, by id, in creation order. Every address (a
    user's userName, a group's externalId, anyone's alias) belongs to one account at most.
    A write checks everything before it changes anything, and never changes a stored
    resource in place (it stores a new one), so a rendered resource can be serialised after
    the lock is let go. Methods raise :class:`ScimError` with Zivver's status and message.
    """

    def __init__(self, claimed_domains: Iterable[str], today: Callable[[], str] = _today):
        self.claimed = frozenset(d.strip().lower() for d in claimed_domains)
        self.today = today
        self.resources: dict[str, dict] = {}
        self.owners: dict[str, str] = {}  # lower-case address → id of the account it belongs to
        self._ids_by_kind: dict[str, list[str]] = {}  # ids in the order made; dropped when one is made or deleted

    # -- reading ----------------------------------------------------------------------
    def list(self, kind: str, address: str | None = None, first: int = 1,
             count: int | None = None) -> tuple[int, list[dict]]:
        """(how many there are, the page from the ``first``-th (1-based), ``count`` at most or
        all): every user or group, or the one whose address is ``address`` (case-insensitive).
        A page costs what is on it: paging through a 100,000-account organisation renders each
        account once (a listing that rendered everything for every page grew with the square)."""
        if address is not None:
            holder = self.resources.get(self.owners.get(address.lower(), ""))
            ids = [holder["id"]] if holder is not None and kind_of(holder) == kind and \
                holder[PRIMARY[kind]].lower() == address.lower() else []
        else:
            ids = self._ids(kind)
        chosen = ids[first - 1:] if count is None else ids[first - 1:first - 1 + max(count, 0)]
        return len(ids), [render(self.resources[rid]) for rid in chosen]

    def _ids(self, kind: str) -> list[str]:
        ids = self._ids_by_kind.get(kind)
        if ids is None:  # once after each create or delete, not once a page
            ids = self._ids_by_kind[kind] = [rid for rid, r in self.resources.items() if kind_of(r) == kind]
        return ids

    def get(self, kind: str, rid: str) -> dict:
        resource = self.resources.get(rid)
        if resource is None or kind_of(resource) != kind:
            raise ScimError(400, UNKNOWN_ACCOUNT.format(rid))
        return render(resource)

    # -- users --------------------------------------------------------------------------
    def create_user(self, body: dict) -> dict:
        user_name = _text(body.get("userName"), required=True)
        rid = str(uuid.uuid4())
        self._check_address(USER, rid, user_name)
        ext_in = _object(body.get(ZIVVER_EXTENSION[USER], {}))
        ext = _extension(ext_in, USER)
        ext["delegates"] = []  # POST ignores them (§6.1 item 2): a PUT must follow
        self._check_aliases(rid, user_name, ext["aliases"], set())
        resource = user_resource(
            rid, self.today(), user_name, self._formatted(body, ""), True,  # POST always makes the user active
            _phones(body.get("phoneNumbers")), _text(body.get("nickName")), _division(body), ext,
            _text(ext_in.get("SsoAccountKey")))
        self._store(resource)
        return render(resource)

    def replace_user(self, rid: str, body: dict) -> dict:
        old = self._writable(USER, rid)
        user_name = old["userName"]
        if "userName" in body:
            user_name = _text(body["userName"], required=True)
            if user_name.lower() != old["userName"].lower():
                self._check_address(USER, rid, user_name)
        ext, sso_key = old[ZIVVER_EXTENSION[USER]], old.get("SsoAccountKey")
        if ZIVVER_EXTENSION[USER] in body:  # replaces the stored object whole, SSO key too: ENG-12451
            ext_in = _object(body[ZIVVER_EXTENSION[USER]])
            ext, sso_key = _extension(ext_in, USER), _text(ext_in.get("SsoAccountKey"))
        self._check_aliases(rid, user_name, ext["aliases"], self._aliases_of(old))
        resource = user_resource(
            rid, old["meta"]["created"], user_name, self._formatted(body, old["name"]["formatted"]),
            _boolean(body["active"]) if "active" in body else old["active"],
            _phones(body["phoneNumbers"]) if "phoneNumbers" in body else old["phoneNumbers"],
            _text(body["nickName"]) if "nickName" in body else old.get("nickName"),
            _division(body, old[ENTERPRISE]["division"]), ext, sso_key)
        self._store(resource)
        return render(resource)

    # -- groups (functional accounts) --------------------------------------------------
    def create_group(self, body: dict) -> dict:
        external_id = _text(body.get("externalId"), required=True)
        rid = str(uuid.uuid4())
        self._check_address(GROUP, rid, external_id)
        members = _member_ids(body.get("members"))
        if any(member not in self.resources for member in members):
            raise ScimError(400, UNKNOWN_IN_SET)
        ext = _extension(_object(body.get(ZIVVER_EXTENSION[GROUP], {})), GROUP)
        self._check_aliases(rid, external_id, ext["aliases"], set())
        display_name = _text(body.get("displayName"))
        resource = group_resource(rid, self.today(), external_id, external_id if display_name is None else display_name,
                                  members, _division(body), ext)
        self._store(resource)
        return render(resource)

    def replace_group(self, rid: str, body: dict) -> dict:
        old = self._writable(GROUP, rid)
        external_id = old["externalId"]
        if "externalId" in body:
            external_id = _text(body["externalId"], required=True)
            if external_id.lower() != old["externalId"].lower():
                self._check_address(GROUP, rid, external_id)
        members = [m["value"] for m in old["members"]]
        if "members" in body:
            wanted = _member_ids(body["members"])
            if any(member not in self.resources for member in wanted):
                raise ScimError(400, MEMBER_NOT_FOUND)
            if wanted:  # an empty list is ignored: the backend bug Zivver keeps for old Synctools
                members = wanted
        ext = old[ZIVVER_EXTENSION[GROUP]]
        if ZIVVER_EXTENSION[GROUP] in body:
            ext = _extension(_object(body[ZIVVER_EXTENSION[GROUP]]), GROUP)
        self._check_aliases(rid, external_id, ext["aliases"], self._aliases_of(old))
        display_name = _text(body["displayName"]) if "displayName" in body else None
        resource = group_resource(rid, old["meta"]["created"], external_id,
                                  old["displayName"] if display_name is None else display_name, members,
                                  _division(body, old[ENTERPRISE]["division"]), ext)
        self._store(resource)
        return render(resource)

    def patch_group(self, rid: str, body: Any) -> dict:
        """The one PATCH Zivver supports: ``{"Operations":[{"op":"remove","path":"members"}]}``."""
        old = self._writable(GROUP, rid)
        operations = body.get("Operations") if isinstance(body, dict) else None
        if not isinstance(operations, list) or not operations or \
                any(operation != {"op": "remove", "path": "members"} for operation in operations):
            raise ScimError(400, UNSUPPORTED_OPERATION)
        resource = {**old, "members": []}
        self._store(resource)
        return render(resource)

    # -- both ---------------------------------------------------------------------------
    def delete(self, kind: str, rid: str) -> None:
        self._writable(kind, rid)
        self._unindex(self.resources.pop(rid))
        self._ids_by_kind.clear()
        for other in list(self.resources.values()):  # a deleted account is nobody's member any more
            if kind_of(other) == GROUP and any(m["value"] == rid for m in other["members"]):
                self.resources[other["id"]] = {**other, "members": [m for m in other["members"] if m["value"] != rid]}

    # -- the rules ----------------------------------------------------------------------
    def claims(self, address: str) -> bool:
        """The domain rule of §6.4: the part after @, lower case, exactly (no subdomains)."""
        return "@" in address and _domain(address) in self.claimed

    def _writable(self, kind: str, rid: str) -> dict:
        resource = self.resources.get(rid)
        if resource is None:
            raise ScimError(400, UNKNOWN_ACCOUNT.format(rid))
        if kind_of(resource) != kind:  # a user can never become a group or back
            raise ScimError(400, OUTSIDE)
        return resource

    def _check_address(self, kind: str, rid: str, address: str) -> None:
        """An account's own address: unique (409 for a user taken by a user, else 400), claimed."""
        holder = self.owners.get(address.lower())
        if holder is not None and holder != rid:
            if kind == USER and kind_of(self.resources[holder]) == USER:
                raise ScimError(409)
            raise ScimError(400, OUTSIDE)
        if not self.claims(address):
            raise ScimError(400, OUTSIDE)

    def _check_aliases(self, rid: str, primary: str, aliases: list[str], before: set[str]) -> None:
        """Aliases the account did not have yet must be in a claimed domain and nobody else's."""
        for alias in aliases:
            low = alias.lower()
            if low == primary.lower():
                raise ScimError(400, ALIAS_TAKEN.format(rid))
            if low in before:
                continue
            if not self.claims(alias):
                raise ScimError(400, DOMAIN_NOT_OWNED)
            holder = self.owners.get(low)
            if holder is not None and holder != rid:  # its own old address is free in a rename
                raise ScimError(400, ALIAS_TAKEN.format(holder))

    @staticmethod
    def _formatted(body: dict, current: str) -> str:
        if "name" not in body:
            return current
        formatted = _text(_object(body["name"]).get("formatted"))
        return current if formatted is None else formatted

    @staticmethod
    def _aliases_of(resource: dict) -> set[str]:
        return {a.lower() for a in resource[ZIVVER_EXTENSION[kind_of(resource)]]["aliases"]}

    @staticmethod
    def _addresses_of(resource: dict) -> list[str]:
        primary = resource[PRIMARY[kind_of(resource)]].lower()
        return [primary, *sorted(State._aliases_of(resource) - {primary})]

    def _store(self, resource: dict) -> None:
        old = self.resources.get(resource["id"])
        if old is not None:
            self._unindex(old)
        else:
            self._ids_by_kind.clear()
        self.resources[resource["id"]] = resource
        for address in self._addresses_of(resource):
            self.owners[address] = resource["id"]

    def _unindex(self, resource: dict) -> None:
        for address in self._addresses_of(resource):
            if self.owners.get(address) == resource["id"]:
                del self.owners[address]

    # -- loading and saving -----------------------------------------------------------
    def document(self) -> dict:
        """The whole state, SSO keys included: what --state writes and /_sandbox/state shows."""
        return {
            "version": STATE_VERSION,
            "claimed_domains": sorted(self.claimed),
            "users": [r for r in self.resources.values() if kind_of(r) == USER],
            "groups": [r for r in self.resources.values() if kind_of(r) == GROUP],
        }

    def load(self, document: Any) -> None:
        """Take the accounts of a :meth:`document` (the claimed domains come from the options)."""
        if not isinstance(document, dict) or document.get("version") != STATE_VERSION:
            raise StateError(f"not a version {STATE_VERSION} sandbox state document")
        for kind, key in ((USER, "users"), (GROUP, "groups")):
            for resource in document.get(key, []):
                try:
                    valid = kind_of(resource) == kind and isinstance(resource["id"], str) and \
                        isinstance(resource[PRIMARY[kind]], str) and isinstance(resource[ZIVVER_EXTENSION[kind]], dict)
                except (KeyError, TypeError):
                    valid = False
                if not valid:
                    raise StateError(f"{key}: not a stored {kind}: {str(resource)[:200]}")
                self._add_unique(resource, resource[PRIMARY[kind]])

    def seed(self, accounts: Iterable[dict]) -> list[str]:
        """Accounts from an accounts stream: each user a User, each functional account a Group
        whose members are its delegates' user ids. Returns warnings (delegates not found)."""
        accounts = [a for a in accounts if a.get("type") == "account"]
        warnings = []
        created = self.today()
        for account in (a for a in accounts if a["kind"] == "user"):
            ext: dict[str, Any] = {"aliases": list(account["aliases"]), "delegates": list(account["delegates"])}
            if account.get("external_account_id"):
                ext["ExternalAccountId"] = account["external_account_id"]
            phones = [{"value": account["phone"]}] if account.get("phone") else []
            self._add_unique(user_resource(
                account.get("zivver_id") or str(uuid.uuid4()), created, account["email"], account["name"],
                account["active"], phones, None, ROOT_DIVISION, ext, account.get("sso_key") or None), account["email"])
        for account in (a for a in accounts if a["kind"] != "user"):
            members = []
            for delegate in account["delegates"]:
                holder = self.owners.get(delegate.lower())
                if holder is not None and kind_of(self.resources[holder]) == USER:
                    members.append(holder)
                else:
                    warnings.append(f"{account['email']}: delegate {delegate} is not a personal account: left out")
            ext = {"aliases": list(account["aliases"])}
            if account.get("external_account_id"):
                ext["ExternalAccountId"] = account["external_account_id"]
            self._add_unique(group_resource(
                account.get("zivver_id") or str(uuid.uuid4()), created, account["email"], account["name"],
                list(dict.fromkeys(members)), ROOT_DIVISION, ext), account["email"])
        return warnings

    def _add_unique(self, resource: dict, label: str) -> None:
        if resource["id"] in self.resources:
            raise StateError(f"{label}: id {resource['id']} is already another account's")
        for address in self._addresses_of(resource):
            if address in self.owners:
                other = self.resources[self.owners[address]]
                raise StateError(f"{label}: address {address} already belongs to {other[PRIMARY[kind_of(other)]]}")
        self._store(resource)


# -- the server's behaviour around the state ------------------------------------------


class TokenBucket:
    """Zivver's rate limit: ``capacity`` requests, refilled at capacity/window per second,
    starting full. A capacity of 0 turns it off."""

    def __init__(self, capacity: int, window: float, clock: Callable[[], float] = time.monotonic):
        self.capacity, self.window, self.clock = capacity, window, clock
        self.rate = capacity / window
        self.tokens = float(capacity)
        self.stamp = clock()
        self.lock = threading.Lock()

    def take(self) -> float:
        """Take a token: 0.0 when one was there, else the seconds until there is one."""
        if not self.capacity:
            return 0.0
        with self.lock:
            now = self.clock()
            self.tokens = min(float(self.capacity), self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1:
                self.tokens -= 1
                return 0.0
            return (1 - self.tokens) / self.rate


@dataclass(frozen=True)
class Draw:
    drop: bool = False  # close the connection without an answer, having done nothing
    fail: bool = False  # answer 500, having done nothing
    drop_after_write: bool = False  # a write: apply it, then close without an answer


class Faults:
    """Which requests misbehave: three draws per request from one seeded generator, so that
    a given ``seed`` gives the same faults for the same sequence of requests."""

    def __init__(self, fail_rate: float, drop_rate: float, drop_after_write_rate: float, seed: int | None):
        self.fail_rate, self.drop_rate, self.drop_after_write_rate = fail_rate, drop_rate, drop_after_write_rate
        self.random = random.Random(seed)
        self.lock = threading.Lock()

    def draw(self) -> Draw:
        with self.lock:
            drop, fail, after = self.random.random(), self.random.random(), self.random.random()
        return Draw(drop < self.drop_rate, fail < self.fail_rate, after < self.drop_after_write_rate)


@dataclass
class Stats:
    requests: int = 0
    by_method: dict[str, int] = field(default_factory=dict)
    writes: int = 0
    throttled: int = 0
    faults: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, count in counts.items():
                setattr(self, name, getattr(self, name) + count)

    def request(self, method: str) -> None:
        with self.lock:
            self.requests += 1
            self.by_method[method] = self.by_method.get(method, 0) + 1

    def snapshot(self) -> dict:
        with self.lock:
            return {"requests": self.requests, "by_method": dict(self.by_method), "writes": self.writes,
                    "throttled": self.throttled, "faults": self.faults}

    def reset(self) -> None:
        with self.lock:
            self.requests = self.writes = self.throttled = self.faults = 0
            self.by_method = {}


class Sandbox:
    """One running sandbox: the state behind its lock, the state file, the key, the limits."""

    def __init__(self, state: State, api_key: str, bucket: TokenBucket, faults: Faults, latency: float = 0.0,
                 state_file: Path | None = None):
        self.state, self.bucket, self.faults = state, bucket, faults
        self.latency = latency  # seconds
        self.state_file = state_file
        self.stats = Stats()
        self.lock = threading.Lock()
        self._key = api_key.encode()

    def authorized(self, header: str | None) -> bool:
        scheme, _, token = (header or "").strip().partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self._key)

    def throttle(self) -> "Reply | None":
        """None when the rate limit lets the request through, else Zivver's 429."""
        wait = self.bucket.take()
        if not wait:
            return None
        self.stats.add(throttled=1)
        return Reply(429, {"code": 429, "message": "Too Many Requests",
                           "emptiedBucketDetails": {"limiterId": "cab", "budget": self.bucket.capacity,
                                                    "windowSeconds": _number(self.bucket.window)},
                           "reference": RATE_LIMIT_REFERENCE},
                     {"Retry-After": str(max(1, math.ceil(wait)))})

    def read(self, operation: Callable, *args) -> Any:
        with self.lock:
            return operation(*args)

    def write(self, operation: Callable, *args) -> Any:
        """Apply a write; a refused one (ScimError) changed nothing and is not saved."""
        with self.lock:
            result = operation(*args)
            self.stats.add(writes=1)
            self.save()
            return result

    def save(self) -> None:
        """Rewrite the state file, if there is one (called with the lock held)."""
        if self.state_file is not None:
            save_state(self.state, self.state_file)


def save_state(state: State, target: Path) -> None:
    """Write the state document atomically: a temporary file, then a rename."""
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:  # mkstemp's 0600: the file holds SSO keys
            handle.write(orjson.dumps(state.document(), option=orjson.OPT_INDENT_2))
        files.replace(temporary, target)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


# -- HTTP ---------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    body: Any = None  # JSON-able; None: no body
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = JSON


DROP = None  # a reply that is no reply: the connection is closed


def error(status: int, message: str | None = None, **headers: str) -> Reply:
    message = message if message is not None else HTTP_MESSAGES.get(status, f"HTTP {status}")
    return Reply(status, {"code": status, "message": message}, headers)


def server_error() -> Reply:
    return error(500, SERVER_ERROR.format(random.getrandbits(64)))


def _media_type(header: str | None) -> str:
    return (header or "").split(";")[0].strip().lower()


def _accepts(header: str | None, produced: Iterable[str]) -> bool:
    """Jersey's content negotiation: no Accept, a wildcard, or one of the types produced."""
    if not header or not header.strip():
        return True
    wanted = {_media_type(part) for part in header.split(",")}
    return bool(wanted & {"*/*", "application/*", *produced})


ROUTE = re.compile(r"/(Users|Groups)(?:/([^/]+))?")
FILTER = re.compile(r'\s*(\w+)\s+eq\s+"((?:[^"\\]|\\.)*)"\s*', re.IGNORECASE)


class Handler(BaseHTTPRequestHandler):
    """Parses a request, routes it to the :class:`Sandbox`, serialises the reply."""

    protocol_version = "HTTP/1.1"  # keep-alive: every reply has a Content-Length
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms wait for an ACK
    server: "Server"
    timeout = 300  # an idle keep-alive connection is closed after this

    def version_string(self) -> str:
        return f"zivsync-sandbox/{__version__}"

    def do_GET(self) -> None:
        self._respond()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    # -- the pipeline -----------------------------------------------------------------
    def _respond(self) -> None:
        started = time.monotonic()
        sandbox = self.server.sandbox
        self.status: int | str = "-"
        try:
            body = self._read_body()
        except ValueError:
            self.close_connection = True
            self._send(error(400, "Bad request body"))
            return
        url = urlsplit(self.path)
        try:
            if url.path.startswith("/api/") or url.path == "/api":
                reply = self._api(sandbox, url.path, url.query, body)
            elif url.path.startswith(CONTROL_PREFIX):
                reply = self._control(sandbox, url.path) if sandbox.authorized(self.headers.get("Authorization")) \
                    else self._unauthorized()
            else:
                reply = error(404)
        except Exception as failure:  # a bug of ours, or a state file that cannot be written: say so, go on
            log.error("%s %s failed: %s: %s", self.command, url.path, type(failure).__name__, failure)
            reply = server_error()
        if reply is DROP:
            self._drop()
        else:
            self._send(reply)
        log.debug("%s %s %s %.1f ms", self.command, self.path, "dropped" if reply is DROP else self.status,
                      (time.monotonic() - started) * 1000)

    def _api(self, sandbox: Sandbox, path: str, query: str, body: bytes) -> Reply | None:
        """An API request: counted, delayed, throttled, authenticated, maybe faulted, then served."""
        sandbox.stats.request(self.command)
        if sandbox.latency:
            time.sleep(sandbox.latency)
        throttled = sandbox.throttle()
        if throttled is not None:
            return throttled
        if not sandbox.authorized(self.headers.get("Authorization")):
            return self._unauthorized()
        draw = sandbox.faults.draw()
        if draw.drop or draw.fail:
            sandbox.stats.add(faults=1)
            return DROP if draw.drop else server_error()
        scim_path = path.removeprefix(API_PREFIX) if path.startswith(API_PREFIX + "/") else None
        reply = self._scim(sandbox, scim_path, query, body)
        if self.command in WRITES and draw.drop_after_write:
            sandbox.stats.add(faults=1)
            return DROP
        return reply

    def _scim(self, sandbox: Sandbox, path: str | None, query: str, body: bytes) -> Reply:
        route = ROUTE.fullmatch(path) if path is not None else None
        if route is None:
            return error(404)
        kind = USER if route[1] == "Users" else GROUP
        rid, method, state = route[2], self.command, sandbox.state
        allowed = {"GET", "POST"} if rid is None else {"GET", "PUT", "DELETE"} | ({"PATCH"} if kind == GROUP else set())
        if method not in allowed:
            return error(405, Allow=", ".join(sorted(allowed)))
        produced = (SCIM_JSON,) if method == "PATCH" else (JSON, SCIM_JSON)
        if method == "PATCH" and _media_type(self.headers.get("Content-Type")) != SCIM_JSON:
            return error(415)
        if method in ("POST", "PUT") and _media_type(self.headers.get("Content-Type")) not in (JSON, SCIM_JSON):
            return error(415)
        if not _accepts(self.headers.get("Accept"), produced):
            return error(406)
        content_type = SCIM_JSON if method == "PATCH" or SCIM_JSON in (self.headers.get("Accept") or "") else JSON
        try:
            if method == "GET" and rid is None:
                reply = Reply(200, self._list(sandbox, kind, query))
            elif method == "GET":
                reply = Reply(200, sandbox.read(state.get, kind, rid))
            elif method == "DELETE":
                sandbox.write(state.delete, kind, rid)
                reply = Reply(204)
            else:
                document = _json(body)
                if method == "POST":
                    operation = state.create_user if kind == USER else state.create_group
                    reply = Reply(201, sandbox.write(operation, _object(document)))
                elif method == "PUT":
                    operation = state.replace_user if kind == USER else state.replace_group
                    reply = Reply(200, sandbox.write(operation, rid, _object(document)))
                else:
                    reply = Reply(200, sandbox.write(state.patch_group, rid, document))
        except ScimError as refused:
            return Reply(refused.status, None) if refused.message is None else error(refused.status, refused.message)
        reply.content_type = content_type
        return reply

    def _list(self, sandbox: Sandbox, kind: str, query: str) -> dict:
        params = {name: values[-1] for name, values in parse_qs(query, keep_blank_values=True).items()}
        address = None
        if params.get("filter"):
            matched = FILTER.fullmatch(params["filter"])
            if matched is None or matched[1].lower() != PRIMARY[kind].lower():
                raise ScimError(400, f"Unsupported filter: {params['filter']}")
            address = re.sub(r"\\(.)", r"\1", matched[2])
        start, count = _integer(params.get("startIndex")), _integer(params.get("count"))
        first = max(start or 1, 1)
        total, page = sandbox.read(sandbox.state.list, kind, address, first, count)
        listing: dict[str, Any] = {"totalResults": total, "Resources": page}
        if start is None and count is None:  # as the real server answers: everything, no paging keys
            return listing
        listing.update({"startIndex": first, "itemsPerPage": len(page)})
        return listing

    def _control(self, sandbox: Sandbox, path: str) -> Reply:
        if path == "/_sandbox/stats":
            return Reply(200, sandbox.stats.snapshot()) if self.command == "GET" else error(405)
        if path == "/_sandbox/stats/reset":
            if self.command != "POST":
                return error(405)
            sandbox.stats.reset()
            return Reply(200, sandbox.stats.snapshot())
        if path == "/_sandbox/state":
            return Reply(200, sandbox.read(sandbox.state.document)) if self.command == "GET" else error(405)
        return error(404)

    @staticmethod
    def _unauthorized() -> Reply:
        return error(401, NO_CREDENTIALS, **{"WWW-Authenticate": "Bearer"})

    # -- the wire -----------------------------------------------------------------------
    def _read_body(self) -> bytes:
        """The whole request body, read before answering so that the next request on the
        connection starts where it should."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline(1024).split(b";")[0].strip(), 16)  # ValueError if garbled
                if size == 0:
                    while self.rfile.readline(1024).strip():  # trailers
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)
                if sum(map(len, chunks)) > MAX_BODY:
                    raise ValueError("too large")
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0 or length > MAX_BODY:
            raise ValueError("bad length")
        return self.rfile.read(length) if length else b""

    def _send(self, reply: Reply) -> None:
        data = b"" if reply.body is None else orjson.dumps(reply.body)
        self.send_response(reply.status)
        if reply.body is not None:
            self.send_header("Content-Type", reply.content_type)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.status != 204:
            self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if data:
            self.wfile.write(data)

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self.status = int(code) if isinstance(code, int) else code

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("%s", format % args)


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ScimError(400, BAD_JSON) from None


def _integer(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ScimError(400, f"Invalid query parameter: {value}") from None


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, sandbox: Sandbox, tls: "ssl.SSLContext | None" = None):
        self.sandbox, self.tls = sandbox, tls
        super().__init__(("127.0.0.1", port), Handler)

    def get_request(self):
        """With TLS, each connection's handshake happens in its own thread, at its first read
        (do_handshake_on_connect=False): a client that never finishes it holds up nobody else."""
        connection, address = super().get_request()
        if self.tls is not None:
            connection = self.tls.wrap_socket(connection, server_side=True, do_handshake_on_connect=False)
        return connection, address

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # HTTPServer's would look up the host name: slow
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address) -> None:
        log.debug("connection from %s:%s ended: %s", *client_address[:2], sys.exc_info()[1])


# -- serving (zivsync-sandbox, stages/sandbox.py, is the command) ------------------------


def serve(port: int, claimed_domains: Iterable[str], seed: str | None, state_file: Path | None, api_key: str,
          bucket: TokenBucket, faults: Faults, latency: float, announce: Callable[[str], None],
          tls: tuple[str, str] | None = None) -> None:
    """Serve until SIGTERM or Ctrl+C; ``announce`` gets the base URL once the server listens.
    ``tls``: (certificate, key) PEM files to serve https, as Zivver does, instead of http."""
    state = initial_state(claimed_domains, seed, state_file)
    sandbox = Sandbox(state, api_key, bucket, faults, latency, state_file)
    try:
        server = Server(port, sandbox, _tls_context(*tls) if tls else None)
    except OSError as failure:
        raise ZivsyncError(f"cannot listen on 127.0.0.1:{port}: {failure.strerror or failure}") from None
    url = f"{'https' if tls else 'http'}://127.0.0.1:{server.server_port}{API_PREFIX}"
    announce(url)
    users = sum(1 for r in state.resources.values() if kind_of(r) == USER)
    log.info("serving %d personal and %d functional accounts at %s (domains: %s)", users,
             len(state.resources) - users, url, ", ".join(sorted(state.claimed)))

    def stop(signum, frame) -> None:  # shutdown() waits for serve_forever(), which runs here
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
    sandbox.lock.acquire()  # never leave with a state file half written; requests in flight end with us


def _tls_context(certificate: str, key: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(certificate, key)
    except (OSError, ssl.SSLError) as failure:
        raise ZivsyncError(f"cannot use the certificate {certificate} with the key {key}: {failure}") from None
    return context


def _claimed_only(reader: StreamReader, state: State) -> Iterator[dict]:
    """A seed's accounts, each checked as Zivver checks an account it makes: its address and its
    aliases in a claimed domain (400 "Account is outside the organization", "Domain Not Owned"):
    a sandbox must not hold what no Zivver organisation could. The error names file, line, field."""
    claimed = ", ".join(sorted(state.claimed)) or "none"
    for record in reader:
        if record.get("type") == "account":
            for field, address in [("email", record["email"]), *(("aliases", a) for a in record["aliases"])]:
                if not state.claims(address):
                    raise ZivsyncError(
                        f"{reader.file}:{reader.line}: {field}: {address} is outside the sandbox's claimed domains "
                        f"({claimed}): Zivver holds no account or alias there. Claim its domain with "
                        "--claimed-domain (a domain Zivver knows but zivsync leaves alone is claimed here too)")
        yield record


def initial_state(claimed_domains: Iterable[str], seed: str | None, state_file: Path | None) -> State:
    state = State(claimed_domains)
    try:
        if state_file is not None and state_file.exists():
            try:
                document = orjson.loads(state_file.read_bytes())
            except OSError as failure:
                raise StateError(f"cannot be read: {failure.strerror}") from None
            except orjson.JSONDecodeError as failure:
                raise StateError(f"is not valid JSON ({failure})") from None
            state.load(document)
            if seed:
                log.info("%s exists: --seed %s is not read", state_file, seed)
            return state
        if seed:
            reader = StreamReader([Input.open(seed)], ["accounts"])
            for warning in state.seed(_claimed_only(reader, state)):
                log.warning("seed: %s", warning)
            for reason in reader.incomplete_reasons:
                log.warning("seed: incomplete stream: %s", reason)
    except StateError as failure:
        source = state_file if state_file is not None and state_file.exists() else seed
        raise ZivsyncError(f"{source}: {failure}") from None
    if state_file is not None:
        try:
            save_state(state, state_file)
        except OSError as failure:
            raise ZivsyncError(f"cannot write {state_file}: {failure.strerror or failure}") from None
    return state

