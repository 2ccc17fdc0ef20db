"""Zivver's SCIM resources ↔ zivsync account records. Pure functions, no I/O.

Users are personal accounts, Groups functional ones (reference/zivver.md §3.4–3.6). The
Zivver extension of a User is replaced whole by a PUT, so :func:`user_body` always writes
all of it: aliases, delegates, the SSO key when known and any ExternalAccountId seen.
"""

from __future__ import annotations

import re
from typing import Iterable

from .client import GROUP_SCHEMA, USER_SCHEMA, ZIVVER_GROUP, ZIVVER_USER

E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")  # as schemas/common.json's email
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


def _addresses(values) -> tuple[list[str], list[str]]:
    """(the valid addresses, lower case and sorted; the others). Zivver checks no delegate."""
    if values is not None and not isinstance(values, list):  # a string would be read letter by letter
        raise NotUnderstood(f"a list of addresses is {values!r}")
    values = [v for v in values or [] if isinstance(v, str)]
    return sorted({v.lower() for v in values if ADDRESS.match(v)}), [v for v in values if not ADDRESS.match(v)]


class NotUnderstood(ValueError):
    """A SCIM resource in a shape zivsync does not know: it is named, never guessed at."""


def _required_text(resource: dict, field: str, what: str) -> str:
    value = resource.get(field)
    if not isinstance(value, str) or not value.strip():
        raise NotUnderstood(f"{what} {_name(resource)}: {field} is {value!r}, not an address")
    return value


def _name(resource: dict) -> str:
    return f"id {resource.get('id')!r}"


def _check_shape(resource, what: str) -> dict:
    """The fields every resource must have, of the types zivsync reads; others are ignored."""
    if not isinstance(resource, dict):
        raise NotUnderstood(f"a {what} that is no object: {resource!r}")
    if not isinstance(resource.get("id"), str) or not resource["id"]:
        raise NotUnderstood(f"a {what} without an id: {str(resource)[:200]}")
    for field, kind in ((ZIVVER_USER, dict), (ZIVVER_GROUP, dict), ("name", dict), ("phoneNumbers", list),
                        ("members", list), ("displayName", str)):
        if resource.get(field) is not None and not isinstance(resource[field], kind):
            raise NotUnderstood(f"{what} {_name(resource)}: {field} is {resource[field]!r}")
    return resource


def user_account(resource: dict) -> tuple[dict, list[str]]:
    """An account record from a SCIM User, and the addresses in it that are not addresses.
    Raises :class:`NotUnderstood` for a userName or active that is missing, null or of another
    type: ``active: null`` is no ``false`` (reference/zivver.md §5: every recorded user has both)."""
    _check_shape(resource, "personal account")
    user_name = _required_text(resource, "userName", "personal account")
    if not isinstance(resource.get("active"), bool):
        raise NotUnderstood(f"personal account {user_name} ({_name(resource)}): active is "
                            f"{resource.get('active')!r}, neither true nor false")
    extension = resource.get(ZIVVER_USER) or {}
    try:
        aliases, bad_aliases = _addresses(extension.get("aliases"))
        delegates, bad_delegates = _addresses(extension.get("delegates"))
    except NotUnderstood as problem:
        raise NotUnderstood(f"personal account {user_name} ({_name(resource)}): {problem}") from None
    phones = [p.get("value") for p in resource.get("phoneNumbers") or [] if isinstance(p, dict)]
    phone = next((p for p in phones if isinstance(p, str) and E164.match(p)), None)
    return {
        "type": "account", "kind": "user",
        "email": user_name.lower(),
        "name": (resource.get("name") or {}).get("formatted") or "",
        "active": resource["active"],
        "aliases": aliases,
        "delegates": delegates,
        "sso_key": None,  # write-only: Zivver never returns it
        "phone": phone,
        "anchors": [],
        "zivver_id": resource["id"],
        "external_account_id": extension.get("ExternalAccountId"),
        "sources": ["zivver"],
    }, bad_aliases + bad_delegates


Read = tuple[dict | None, list[str], str | None]  # (the account, warnings about it, why it was not understood)


def read_user(resource: dict) -> Read:
    """One SCIM User read as an account, never raising: what a listing keeps of each resource."""
    try:
        account, bad = user_account(resource)
    except NotUnderstood as problem:
        return None, [], str(problem)
    return account, [f"personal account {account['email']}: {b!r} is no e-mail address, left out" for b in bad], None


def read_group(resource: dict, emails: dict[str, str]) -> Read:
    """One SCIM Group read as an account (``emails``: user id → address), never raising."""
    try:
        account, unknown = group_account(resource, emails)
    except NotUnderstood as problem:
        return None, [], str(problem)
    return account, [f"functional account {account['email']}: member {m} is no personal account" for m in unknown], None


def group_account(resource: dict, emails: dict[str, str]) -> tuple[dict, list[str]]:
    """An account record from a SCIM Group, its member ids turned into addresses by ``emails``
    (user id → address); also the member ids that are no known user. Raises
    :class:`NotUnderstood` for an externalId (the address) missing, null or of another type."""
    _check_shape(resource, "functional account")
    external_id = _required_text(resource, "externalId", "functional account")
    extension = resource.get(ZIVVER_GROUP) or {}
    members = [m.get("value") for m in resource.get("members") or []
               if isinstance(m, dict) and isinstance(m.get("value"), str)]
    unknown = [m for m in members if m not in emails]
    return {
        "type": "account", "kind": "functional",
        "email": external_id.lower(),
        "name": resource.get("displayName") or "",
        "active": True,  # Zivver cannot disable a functional account; no delegates is as close as it gets
        "aliases": _group_aliases(resource, extension),
        "delegates": sorted({emails[m] for m in members if m in emails}),
        "sso_key": None,
        "phone": None,
        "anchors": [],
        "zivver_id": resource["id"],
        "external_account_id": extension.get("ExternalAccountId"),
        "sources": ["zivver"],
    }, unknown


def _group_aliases(resource: dict, extension: dict) -> list[str]:
    try:
        return _addresses(extension.get("aliases"))[0]
    except NotUnderstood as problem:
        raise NotUnderstood(f"functional account {_name(resource)}: {problem}") from None


def user_body(account: dict, sso_key: str | None) -> dict:
    """The full User for a POST or PUT: every field, the Zivver extension complete."""
    extension: dict = {"aliases": list(account["aliases"]), "delegates": list(account["delegates"])}
    if sso_key:
        extension["SsoAccountKey"] = sso_key
    if account.get("external_account_id"):
        extension["ExternalAccountId"] = account["external_account_id"]
    body = {
        "schemas": [USER_SCHEMA, ZIVVER_USER],
        "userName": account["email"],
        "name": {"formatted": account["name"]},
        "active": account["active"],
        ZIVVER_USER: extension,
    }
    if account.get("phone"):
        body["phoneNumbers"] = [{"value": account["phone"]}]
    return body


def group_body(account: dict, member_ids: list[str]) -> dict:
    """The full Group for a POST or PUT. A PUT with no members changes nothing (the backend
    ignores ``members: []``): emptying takes a PATCH."""
    extension: dict = {"aliases": list(account["aliases"])}
    if account.get("external_account_id"):
        extension["ExternalAccountId"] = account["external_account_id"]
    return {
        "schemas": [GROUP_SCHEMA, ZIVVER_GROUP],
        "externalId": account["email"],
        "displayName": account["name"],
        "members": [{"value": member} for member in member_ids],
        ZIVVER_GROUP: extension,
    }


def snapshot_accounts(users: list[dict], groups: list[dict]) -> tuple[list[dict], list[str], list[str]]:
    """All accounts, sorted by address; warnings (members that are no known user); and the
    resources not understood, each named (a snapshot with any is incomplete)."""
    read_users = [read_user(user) for user in users]
    emails = {account["zivver_id"]: account["email"] for account, _, _ in read_users if account}
    return gather(read_users + [read_group(group, emails) for group in groups])


def gather(reads: Iterable[Read]) -> tuple[list[dict], list[str], list[str]]:
    """The accounts of resources read one by one (:func:`read_user`, :func:`read_group`), sorted
    by address; their warnings; and the resources not understood."""
    accounts, warnings, problems = [], [], []
    for account, notes, problem in reads:
        if problem:
            problems.append(problem)
        else:
            accounts.append(account)
            warnings.extend(notes)
    accounts.sort(key=lambda a: (a["email"], a["kind"]))
    return accounts, warnings, problems
