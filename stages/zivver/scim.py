"""Zivver's SCIM resources ↔ zivsync account records. Pure functions, no I/O.

Users are personal accounts, Groups functional ones (reference/zivver.md §3.4–3.6). The
Zivver extension of a User is replaced whole by a PUT, so :func:`user_body` always writes
all of it: aliases, delegates, the SSO key when known and any ExternalAccountId seen.
"""

from __future__ import annotations

import re

from .client import GROUP_SCHEMA, USER_SCHEMA, ZIVVER_GROUP, ZIVVER_USER

E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")  # as schemas/common.json's email
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


def _addresses(values) -> tuple[list[str], list[str]]:
    """(the valid addresses, lower case and sorted; the others). Zivver checks no delegate."""
    values = [v for v in values or [] if isinstance(v, str)]
    return sorted({v.lower() for v in values if ADDRESS.match(v)}), [v for v in values if not ADDRESS.match(v)]


def user_account(resource: dict) -> tuple[dict, list[str]]:
    """An account record from a SCIM User, and the addresses in it that are not addresses."""
    extension = resource.get(ZIVVER_USER) or {}
    aliases, bad_aliases = _addresses(extension.get("aliases"))
    delegates, bad_delegates = _addresses(extension.get("delegates"))
    phones = [p.get("value") for p in resource.get("phoneNumbers") or [] if isinstance(p, dict)]
    phone = next((p for p in phones if isinstance(p, str) and E164.match(p)), None)
    return {
        "type": "account", "kind": "user",
        "email": resource["userName"].lower(),
        "name": (resource.get("name") or {}).get("formatted") or "",
        "active": bool(resource.get("active", True)),
        "aliases": aliases,
        "delegates": delegates,
        "sso_key": None,  # write-only: Zivver never returns it
        "phone": phone,
        "anchors": [],
        "zivver_id": resource["id"],
        "external_account_id": extension.get("ExternalAccountId"),
        "sources": ["zivver"],
    }, bad_aliases + bad_delegates


def group_account(resource: dict, emails: dict[str, str]) -> tuple[dict, list[str]]:
    """An account record from a SCIM Group, its member ids turned into addresses by ``emails``
    (user id → address); also the member ids that are no known user."""
    extension = resource.get(ZIVVER_GROUP) or {}
    members = [m.get("value") for m in resource.get("members") or [] if isinstance(m, dict)]
    unknown = [m for m in members if m not in emails]
    return {
        "type": "account", "kind": "functional",
        "email": resource["externalId"].lower(),
        "name": resource.get("displayName") or "",
        "active": True,  # Zivver cannot disable a functional account; no delegates is as close as it gets
        "aliases": sorted({a.lower() for a in extension.get("aliases") or []}),
        "delegates": sorted({emails[m] for m in members if m in emails}),
        "sso_key": None,
        "phone": None,
        "anchors": [],
        "zivver_id": resource["id"],
        "external_account_id": extension.get("ExternalAccountId"),
        "sources": ["zivver"],
    }, unknown


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


def snapshot_accounts(users: list[dict], groups: list[dict]) -> tuple[list[dict], list[str]]:
    """All accounts, sorted by address, and warnings (members that are no known user)."""
    accounts, warnings = [], []
    for user in users:
        account, bad = user_account(user)
        accounts.append(account)
        warnings.extend(f"personal account {account['email']}: {b!r} is no e-mail address, left out" for b in bad)
    emails = {a["zivver_id"]: a["email"] for a in accounts}
    for group in groups:
        account, unknown = group_account(group, emails)
        accounts.append(account)
        warnings.extend(f"functional account {account['email']}: member {m} is no personal account" for m in unknown)
    accounts.sort(key=lambda a: (a["email"], a["kind"]))
    return accounts, warnings
