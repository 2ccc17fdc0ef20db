"""Applying a plan to Zivver, one change at a time (DESIGN.md §5).

The :class:`Pusher` takes one listing of Zivver at the start and keeps it up to date with
what it applies. Before each write it checks that the account still looks as the plan's
``before`` says; if it already looks as ``after`` says (an earlier, interrupted run did it),
the change counts as applied without a request; otherwise it is a ``conflict`` and left
alone. Every change gets exactly one result record. Zivver's quirks are handled here:
a create is a POST followed by a PUT when the POST ignores something (delegates), every PUT
carries the whole account, emptying a functional account is a PATCH, an unknown id is 400.
"""

from __future__ import annotations

import logging
from typing import Callable

from ..core.account_mapping import MappedAccount, Mapping
from . import scim
from .client import AuthError, Client, ListingNotUnderstood, Uncertain, Unreachable, ZivverError

log = logging.getLogger("zivsync")

SET_FIELDS = ("aliases", "delegates")


class Abort(Exception):
    """Nothing more can be done this run (the key was refused, Zivver unreachable)."""

    def __init__(self, error: ZivverError):
        super().__init__(str(error))
        self.error = error


class Zivver:
    """What Zivver holds, as account records by Zivver id, kept current as changes apply."""

    def __init__(self, accounts: list[dict]):
        self.accounts: dict[str, dict] = {}
        self._ids: dict[str, str] = {}  # Zivver id by address
        for account in accounts:
            self.set(account)

    @classmethod
    def listed(cls, client: Client, keep: Callable[[dict], bool] | None = None) -> "Zivver":
        """What Zivver holds now. ``keep``: the accounts to hold whole (those a plan touches);
        every other one is held as its address, id and kind, which is all that delegates and a
        taken address need: push holds what its plan touches, not all of a 100,000-account Zivver,
        and no page of the listing longer than it takes to read it."""
        def compact(read: scim.Read) -> scim.Read:
            account, notes, problem = read
            if account is None or keep is None or keep(account):
                return read
            return {"zivver_id": account["zivver_id"], "email": account["email"], "kind": account["kind"]}, notes, None

        users = client.list("Users", convert=lambda resource: compact(scim.read_user(resource)))
        emails = {account["zivver_id"]: account["email"] for account, _, _ in users if account}
        groups = client.list("Groups", convert=lambda resource: compact(scim.read_group(resource, emails)))
        accounts, warnings, problems = scim.gather(users + groups)
        for warning in warnings:
            log.warning("%s", warning)
        if problems:  # what it holds decides what is stale: a guess would apply the wrong change
            raise ListingNotUnderstood("GET", "/Users", None, "Zivver's answer could not be read: "
                                       + "; ".join(problems[:5])
                                       + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""))
        return cls(accounts)

    def set(self, account: dict) -> None:
        old = self.accounts.get(account["zivver_id"])
        if old is not None:
            self._ids.pop(old["email"], None)
        self.accounts[account["zivver_id"]] = account
        self._ids[account["email"]] = account["zivver_id"]

    def remove(self, zivver_id: str) -> None:
        self._ids.pop(self.accounts.pop(zivver_id)["email"], None)

    def by_email(self, email: str) -> dict | None:
        zivver_id = self._ids.get(email)
        return self.accounts[zivver_id] if zivver_id else None

    def user_ids(self, emails: list[str]) -> tuple[list[str], list[str]]:
        """(Zivver ids of these personal accounts, the addresses that have none)."""
        ids, missing = [], []
        for email in emails:
            account = self.by_email(email)
            if account and account["kind"] == "user":
                ids.append(account["zivver_id"])
            else:
                missing.append(email)
        return ids, missing


def touched_by(changes: list[dict]) -> Callable[[dict], bool]:
    """Whether a plan's changes touch an account: by its Zivver id, or by an address a change
    names as an account's own (a create finds the account an earlier run made by its address)."""
    ids = {change["zivver_id"] for change in changes if change.get("zivver_id")}
    emails = {address.lower() for change in changes
              for address in (change["email"], change["before"].get("email"), change["after"].get("email")) if address}
    return lambda account: account["zivver_id"] in ids or account["email"].lower() in emails


def differs(account: dict, fields: dict) -> list[str]:
    """The fields whose value in the account is not the given one (lists compared as sets)."""
    names = []
    for name, value in fields.items():
        if name == "sso_key":
            continue  # Zivver never shows it: nothing to compare
        have = account.get(name)
        if name in SET_FIELDS:
            same = set(have or ()) == set(value or ())
        else:
            same = have == value
        if not same:
            names.append(name)
    return names


class Pusher:
    def __init__(self, client: Client, zivver: Zivver, mapping: Mapping, on_mapping_change: Callable[[], None]):
        self.client, self.zivver, self.mapping = client, zivver, mapping
        self.on_mapping_change = on_mapping_change

    def apply(self, change: dict) -> dict:
        """Apply one change; its result record."""
        before_requests = self.client.stats.requests
        self.client.last_status = None
        try:
            status, message, zivver_id = self._apply(change)
            # the status of the request that applied it (none: nothing had to be sent)
            http = self.client.last_status if self.client.stats.requests > before_requests else None
        except (AuthError, Unreachable) as error:
            raise Abort(error) from None
        except ZivverError as error:
            status, message, zivver_id, http = "failed", error.message, change["zivver_id"], error.status
        if status == "applied":
            self._remember(change, zivver_id)
        return {
            "type": "result", "change_id": change["id"], "op": change["op"], "kind": change["kind"],
            "email": change["email"], "zivver_id": zivver_id, "status": status, "http_status": http,
            "message": message, "requests": self.client.stats.requests - before_requests,
        }

    def _apply(self, change: dict) -> tuple[str, str, str | None]:
        op = change["op"]
        if op.startswith("create_"):
            return self._create(change)
        account = self.zivver.accounts.get(change["zivver_id"])
        if account is None:
            if op.startswith("delete_"):
                return "applied", "already gone from Zivver", change["zivver_id"]
            return "conflict", "the account is no longer in Zivver", change["zivver_id"]
        if account["kind"] != change["kind"]:
            return "conflict", f"the account is now a {account['kind']} account in Zivver", account["zivver_id"]
        if op.startswith("delete_"):
            self.client.delete("Users" if change["kind"] == "user" else "Groups", account["zivver_id"])
            self.zivver.remove(account["zivver_id"])
            return "applied", "deleted", account["zivver_id"]
        if not differs(account, change["after"]) and "sso_key" not in change["after"]:
            return "applied", "already so in Zivver (an earlier run applied it)", account["zivver_id"]
        changed = differs(account, change["before"])
        if changed:
            now = "; ".join(f"{name} is now {account.get(name)!r}" for name in changed)
            return "conflict", f"changed in Zivver since the plan was made: {now}", account["zivver_id"]
        target = {**account, **{k: v for k, v in change["after"].items() if k != "sso_key"}}
        if change["kind"] == "user":
            self._put_user(account["zivver_id"], target, change)
        else:
            self._put_group(account["zivver_id"], target, account)
        return "applied", "updated", account["zivver_id"]

    # -- personal accounts -----------------------------------------------------------------
    def _sso_key(self, change: dict, zivver_id: str | None) -> str | None:
        """The SSO key to send: the plan's, else the one pushed before (a PUT without it erases it)."""
        if change.get("sso_key"):
            return change["sso_key"]
        known = self.mapping.accounts.get(zivver_id) if zivver_id else None
        return known.sso_key if known else None

    def _put_user(self, zivver_id: str, target: dict, change: dict) -> None:
        self.client.replace("Users", zivver_id, scim.user_body(target, self._sso_key(change, zivver_id)))
        self.zivver.set({**target, "zivver_id": zivver_id})

    def _create(self, change: dict) -> tuple[str, str, str | None]:
        after = change["after"]
        target = {"type": "account", "kind": change["kind"], "active": True, "phone": None,
                  "external_account_id": None, "sources": ["zivver"], "anchors": [],
                  **{k: v for k, v in after.items() if k != "sso_key"}}
        existing = self.zivver.by_email(after["email"])
        if existing is not None:
            return self._adopt(existing, target, change)
        resource = "Users" if change["kind"] == "user" else "Groups"
        if change["kind"] == "user":
            # POST ignores delegates (and an inactive state): a PUT follows when they matter
            body = scim.user_body({**target, "delegates": []}, change.get("sso_key"))
        else:
            members, missing = self.zivver.user_ids(target["delegates"])
            body = scim.group_body(target, members)
        created = self._post(resource, body, after["email"])
        zivver_id = created["id"]
        message = "created"
        if change["kind"] == "user":
            self.zivver.set({**target, "delegates": [], "zivver_id": zivver_id})
            if target["delegates"] or not target["active"]:
                self._put_user(zivver_id, target, change)
        else:
            delegates = [d for d in target["delegates"] if d not in missing]
            self.zivver.set({**target, "delegates": delegates, "zivver_id": zivver_id})
            if missing:
                message += f"; not delegates, as they have no personal account in Zivver: {', '.join(missing)}"
        return "applied", message, zivver_id

    def _post(self, resource: str, body: dict, email: str) -> dict:
        """POST, and when it is unknown whether Zivver created the account (a timeout, a dropped
        connection, a 5xx), look before trying again: never create an account twice."""
        attribute = "userName" if resource == "Users" else "externalId"
        for attempt in range(1, 4):
            try:
                return self.client.create(resource, body)
            except Uncertain as error:
                log.warning("%s: did Zivver create %s? Looking it up (attempt %d)", error, email, attempt)
                found = self.client.find(resource, attribute, email)
                if found is not None:
                    return found
                last = error
            except ZivverError as error:
                if error.status == 409:  # it exists after all: take it
                    found = self.client.find(resource, attribute, email)
                    if found is not None:
                        return found
                raise
        raise last

    def _adopt(self, existing: dict, target: dict, change: dict) -> tuple[str, str, str | None]:
        """The account to create exists already (an interrupted run made it, or someone did)."""
        zivver_id = existing["zivver_id"]
        if existing["kind"] != change["kind"]:
            return "conflict", f"{existing['email']} exists in Zivver as a {existing['kind']} account", zivver_id
        target = {**existing, **{k: v for k, v in change["after"].items() if k != "sso_key"}}
        if not differs(existing, target) and not change.get("sso_key"):
            return "applied", "already in Zivver as planned (an earlier run created it)", zivver_id
        if change["kind"] == "user":
            self._put_user(zivver_id, target, change)
        else:
            self._put_group(zivver_id, target, existing)
        return "applied", "already in Zivver (an earlier run created it): brought in line", zivver_id

    # -- functional accounts ---------------------------------------------------------------
    def _put_group(self, zivver_id: str, target: dict, current: dict) -> None:
        members, missing = self.zivver.user_ids(target["delegates"])
        if missing:
            raise ZivverError("PUT", f"/Groups/{zivver_id}", None,
                              f"delegates without a personal account in Zivver: {', '.join(missing)}")
        rest_changed = differs(current, {k: target[k] for k in ("email", "name", "aliases")})
        if members and (rest_changed or differs(current, {"delegates": target["delegates"]})):
            self.client.replace("Groups", zivver_id, scim.group_body(target, members))
        elif rest_changed:  # members: [] in a PUT is ignored, so this PUT leaves them as they are
            self.client.replace("Groups", zivver_id, scim.group_body(target, []))
        if not members and current["delegates"]:
            self.client.remove_members(zivver_id)
        self.zivver.set({**target, "zivver_id": zivver_id})

    # -- the local account mapping ---------------------------------------------------------
    def _remember(self, change: dict, zivver_id: str | None) -> None:
        if zivver_id is None:
            return
        if change["op"].startswith("delete_"):
            self.mapping.forget(zivver_id)
        else:
            known = self.mapping.accounts.get(zivver_id)
            account = self.zivver.accounts.get(zivver_id, {})
            anchors = sorted(set(change.get("anchors") or []) | set(known.anchors if known else []))
            sources = sorted(change.get("sources") or (known.sources if known else []))
            self.mapping.record(MappedAccount(
                zivver_id, account.get("email", change["email"]), change["kind"], anchors,
                self._sso_key(change, zivver_id) if change["kind"] == "user" else None, sources,
                change.get("dn") or (known.dn if known else None)))
        self.on_mapping_change()
