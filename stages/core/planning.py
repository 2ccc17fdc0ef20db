"""From desired and current accounts to a plan of changes (DESIGN.md §4).

Pure: accounts and the local mapping in, change and skip records and a safety verdict out.

Matching goes by the local mapping (anchor → Zivver id) first, then by address, then by
alias (either side's primary address among the other side's aliases). A matched pair whose
kinds differ is skipped: Zivver cannot turn a personal account into a functional one. An
address that the mapping says belongs to another anchor is not handed to a newcomer
(a reused address must be resolved by hand), so nobody inherits a leaver's mail.
"""

from __future__ import annotations

import fnmatch
import hashlib
import heapq
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterable

from .account_mapping import Mapping
from .dn import domain_of_dn, under
from .stream import dumps_canonical

# The order push applies them in (DESIGN.md §5): members of functional accounts are user
# ids, so users are created first; everything that takes access away comes last.
OP_ORDER = (
    "create_user", "create_functional", "update_functional", "update_user", "reactivate_user",
    "rename_user", "rename_functional", "suspend_user", "empty_functional", "delete_user", "delete_functional",
)
DESTRUCTIVE = frozenset({"suspend_user", "empty_functional", "delete_user", "delete_functional"})
DELETIONS = frozenset({"delete_user", "delete_functional"})
# A handful of accounts losing a delegate or an alias is never refused by share alone: with
# eight shared mailboxes, one leaver who had three of them is 37 %.
REMOVALS_NEVER_REFUSED_BY_SHARE = 5


@dataclass(slots=True)
class Account:
    """An account record as diff needs it: 200,000 of them fit in far less memory than dicts."""

    kind: str
    email: str
    name: str
    active: bool
    aliases: tuple[str, ...]
    delegates: tuple[str, ...]
    phone: str | None
    sso_key: str | None
    anchors: tuple[str, ...]
    zivver_id: str | None
    sources: tuple[str, ...] = ()
    unmanaged: tuple[str, ...] = ()  # fields no source of the account speaks for: left as Zivver has them
    why: object = None  # where it comes from (normalize's why: origin, delegates), as read
    dn: str | None = None

    @classmethod
    def of(cls, record) -> "Account":
        """From an account record: a dict, or a Struct as the stream reader yields them typed."""
        if isinstance(record, Account):
            return record
        if isinstance(record, dict):
            return cls(record["kind"], record["email"], record["name"], record["active"], tuple(record["aliases"]),
                       tuple(record["delegates"]), record.get("phone"), record.get("sso_key"),
                       tuple(record.get("anchors") or ()), record.get("zivver_id"), tuple(record.get("sources") or ()),
                       tuple(record.get("unmanaged") or ()), record.get("why"), record.get("dn"))
        return cls(record.kind, record.email, record.name, record.active, tuple(record.aliases),
                   tuple(record.delegates), record.phone, record.sso_key, tuple(record.anchors or ()),
                   record.zivver_id, tuple(record.sources or ()), tuple(record.unmanaged or ()),
                   record.why, record.dn)  # why kept as read (a Struct): only the accounts that change need it

    def reasons(self) -> tuple[list[str], dict[str, str]]:
        """(where the account comes from, how each delegate holds Full Access), from its why."""
        why = self.why
        if why is None:
            return [], {}
        if hasattr(why, "record"):  # normalize's own, not yet rendered
            why = why.record()
        if isinstance(why, dict):
            return list(why.get("origin") or ()), dict(why.get("delegates") or {})
        return list(why.origin or ()), dict(why.delegates or {})


@dataclass(frozen=True)
class DiffOptions:
    claimed_domains: frozenset[str]
    exclude: tuple[str, ...] = ()  # the target filter: Zivver accounts never touched
    max_suspend: int = 50
    max_suspend_percent: float = 10.0
    delete_missing: bool = False
    max_delete: int = 0
    update_sso_keys: bool = False
    # Quiet losses: accounts that lose a delegate, or an alias, in an update (README, "What
    # zivsync does with answers it does not understand", says why these defaults)
    max_delegate_removals: int = 50
    max_delegate_removals_percent: float = 20.0
    max_alias_removals: int = 50
    max_alias_removals_percent: float = 20.0

    def claims(self, email: str) -> bool:
        return email.rpartition("@")[2] in self.claimed_domains

    def excludes(self, email: str) -> bool:
        return any(fnmatch.fnmatchcase(email, pattern.lower()) for pattern in self.exclude)


@dataclass(frozen=True)
class Reading:
    """What the desired stream says of how it was read (its header): the sources read, what each
    speaks for (None: it states nothing, so everything), and when."""

    sources: tuple[str, ...] = ()
    authorities: dict | None = None  # by source
    created: str | None = None

    def reads(self, kind: str) -> bool:
        """Whether a source read speaks for accounts of this kind at all (their absence means gone)."""
        if not self.authorities or any(a is None for a in self.authorities.values()):
            return True
        wanted = "user" if kind == "user" else "shared"
        return any(a.get("people", True) and wanted in a.get("mailbox_kinds", ()) for a in self.authorities.values())


@dataclass
class Safety:
    passed: bool = True
    reasons: list[str] = field(default_factory=list)
    destructive: int = 0  # suspensions, emptied functional accounts and deletions planned
    deletions: int = 0
    managed: int = 0  # Zivver accounts in scope
    withheld: int = 0  # destructive changes held back because the desired stream was incomplete
    delegate_removals: int = 0  # accounts an update takes one or more delegates from
    with_delegates: int = 0  # managed accounts that have delegates in Zivver now
    alias_removals: int = 0  # accounts an update takes one or more aliases from
    with_aliases: int = 0  # managed accounts that have aliases in Zivver now

    def refuse(self, reason: str) -> None:
        self.passed = False
        self.reasons.append(reason)


@dataclass
class Plan:
    changes: list[dict]
    skips: list[dict]
    safety: Safety
    links: list[dict] = field(default_factory=list)  # matched accounts the local mapping should learn
    unmanaged: dict[str, int] = field(default_factory=dict)  # field -> accounts left as Zivver has it

    def summary(self) -> dict:
        ops = Counter(change["op"] for change in self.changes)
        reasons = Counter(skip["reason"] for skip in self.skips)
        return {
            "changes": {op: ops[op] for op in OP_ORDER if ops[op]},
            "skips": dict(sorted(reasons.items())),
            "links": len(self.links),
        }

    @property
    def records(self) -> list[dict]:
        return self.changes + self.links + self.skips


def diff(desired: Iterable[dict | Account], current: Iterable[dict | Account], options: DiffOptions, *,
         mapping: Mapping | None = None, desired_complete: bool = True,
         held: Iterable[str] = (), reading: Reading | None = None) -> Plan:
    """The plan that takes Zivver from ``current`` to ``desired``, in the order to apply it.

    ``held`` are addresses normalize held back because its sources disagreed: they are left
    alone. With ``desired_complete`` false nothing is suspended, emptied or deleted.
    """
    planner = _Planner([Account.of(a) for a in desired], [Account.of(a) for a in current], options,
                       mapping or Mapping(), set(held), reading or Reading())
    return planner.run(desired_complete)


class PlanError(ValueError):
    """The inputs cannot be planned from (for example two desired accounts want one address)."""


class _Planner:
    def __init__(self, desired: list[Account], current: list[Account], options: DiffOptions, mapping: Mapping,
                 held: set[str], reading: Reading):
        self.reading = reading
        self.unmanaged: Counter = Counter()  # accounts by field left as Zivver has it: no source speaks for it
        self.desired = sorted(desired, key=lambda a: a.email)
        self.current = sorted(current, key=lambda a: a.email)
        self.options, self.mapping, self.held = options, mapping, held
        self.changes: list[dict] = []
        self.skips: list[dict] = []
        self.left_alone: set[int] = set()  # current accounts (by id) nothing may change
        self.claimant: dict[int, dict] = {}  # change (by id) -> the current account it changes, if any
        # who a delegate is: a desired personal account's address -> the Zivver account it is
        # (a Zivver id, or "new:" the address of one this plan creates), None when it has none
        self.delegate_of: dict[str, str | None] = {}
        self.current_of: dict[str, str] = {}  # a current personal account's address -> who it is
        self.source_of: dict[int, Account] = {}  # change (by id) -> the account it was planned for

    # -- matching ----------------------------------------------------------------------
    def match(self) -> tuple[list[tuple[Account, Account, str]], list[Account], list[Account]]:
        """(pairs of desired, current and how they matched; unmatched desired; unmatched current)."""
        by_id = {c.zivver_id: c for c in self.current if c.zivver_id}
        by_email = {c.email: c for c in self.current}
        by_alias: dict[str, list[Account]] = defaultdict(list)
        for account in self.current:
            for alias in account.aliases:
                by_alias[alias].append(account)
        anchor_index = self.mapping.anchor_index()
        owners = {zid: set(entry.anchors) for zid, entry in self.mapping.accounts.items()}
        taken: set[int] = set()
        pairs: dict[str, tuple[Account, Account, str]] = {}
        decided: set[str] = set()  # desired addresses already paired or skipped

        def pair(d: Account, c: Account, how: str) -> None:
            pairs[d.email] = (d, c, how)
            taken.add(id(c))
            decided.add(d.email)

        def belongs_elsewhere(d: Account, c: Account) -> bool:
            """The mapping ties c to other anchors than d's: its address was reused."""
            theirs = owners.get(c.zivver_id, set())
            return bool(theirs and d.anchors and not theirs & set(d.anchors))

        for d in self.desired:
            zivver_id = next((anchor_index[a] for a in d.anchors if a in anchor_index), None)
            c = by_id.get(zivver_id) if zivver_id else None
            if c is not None and id(c) not in taken:
                pair(d, c, "anchor")
        for d in self.desired:
            c = by_email.get(d.email)
            if d.email in decided or c is None:
                continue
            if id(c) in taken or belongs_elsewhere(d, c):
                self.skip(d, "ambiguous_match", "create_" + d.kind, c.zivver_id,
                          f"Zivver account {c.email} ({c.zivver_id}) belongs to another directory "
                          f"object per the account mapping: an address reused? Resolve by hand.")
                decided.add(d.email)
            else:
                pair(d, c, "email")
        for d in self.desired:
            if d.email in decided:
                continue
            found = {id(c): c for c in by_alias.get(d.email, [])}
            found.update((id(by_email[a]), by_email[a]) for a in d.aliases if a in by_email)
            candidates = [c for key, c in found.items() if key not in taken]
            if len(candidates) == 1 and not belongs_elsewhere(d, candidates[0]):
                pair(d, candidates[0], "alias")
            elif candidates:
                names = ", ".join(sorted(c.email for c in candidates))
                self.skip(d, "ambiguous_match", "create_" + d.kind, None,
                          f"matches several Zivver accounts by alias: {names}")
                self.left_alone.update(id(c) for c in candidates)  # one of them is this person's
                decided.add(d.email)
        unmatched_desired = [d for d in self.desired if d.email not in decided]
        unmatched_current = [c for c in self.current if id(c) not in taken]
        return list(pairs.values()), unmatched_desired, unmatched_current

    # -- records -----------------------------------------------------------------------
    def skip(self, account: Account, reason: str, op: str | None, zivver_id: str | None, detail: str) -> None:
        self.skips.append({
            "type": "skip", "email": account.email, "kind": account.kind, "zivver_id": zivver_id,
            "op": op, "reason": reason, "detail": detail,
        })

    def change(self, op: str, account: Account, email: str, before: dict, after: dict, anchors: list[str],
               match: str | None, sso_key: str | None, current: Account | None) -> None:
        gone = account is current
        record = {
            "type": "change", "id": "", "op": op, "kind": account.kind, "email": email,
            "zivver_id": current.zivver_id if current else None, "anchors": anchors, "match": match,
            "before": before, "after": after, "sso_key": sso_key,
            "sources": sorted(self._owners(current) if gone else account.sources),
            "why": self._why(op, account, before, after, gone),
        }
        if not gone and account.dn:
            record["dn"] = account.dn
        self.changes.append(record)
        self.source_of[id(record)] = account
        if current is not None:
            self.claimant[id(record)] = current

    def _outside_source_scope(self, entry) -> str | None:
        """The source that would have read this account but whose scope (base DN, included and
        excluded OUs, as its authority states tonight) no longer covers where it was last seen."""
        if entry is None or not entry.dn or not entry.sources or not self.reading.authorities:
            return None
        for source in entry.sources:
            scope = ((self.reading.authorities.get(source) or {}).get("scope")) or {}
            # a source judges only DNs of its own domain: an Exchange Online DN (DC=EURPR…,DC=outlook)
            # says nothing about an AD source's base DN, and must not keep a leaver from suspension
            if not scope.get("base_dn") or domain_of_dn(entry.dn) != domain_of_dn(scope["base_dn"]):
                continue
            if not under(entry.dn, scope["base_dn"]) \
                    or (scope.get("include_ous") and not any(under(entry.dn, ou) for ou in scope["include_ous"])) \
                    or any(under(entry.dn, ou) for ou in scope.get("exclude_ous") or ()):
                return source
        return None

    def _owners(self, current: Account) -> set[str]:
        entry = self.mapping.accounts.get(current.zivver_id)
        return set(entry.sources) if entry is not None and entry.sources else set()

    def _why(self, op: str, account: Account, before: dict, after: dict, gone: bool) -> dict:
        """The reason for a change, machine-readable (``code``), and the source facts behind it."""
        origin = account.reasons()[0] if not gone else []
        if gone:
            read = ", ".join(self.reading.sources) or "the desired stream"
            facts = [f"in no source read ({read}{' on ' + self.reading.created if self.reading.created else ''})"]
            entry = self.mapping.accounts.get(account.zivver_id)
            facts.append(f"matched by anchor {', '.join(entry.anchors)} in the account mapping" if entry and entry.anchors
                         else f"the Zivver account {account.email} matches no directory object")
            code = "gone"
        elif op.startswith("create_"):
            code, facts = "new", [f"in {o}" for o in origin]
        elif op == "suspend_user":
            code, facts = "disabled", origin
        elif op == "reactivate_user":
            code, facts = "enabled", origin
        elif op == "empty_functional":
            code, facts = "no_delegates", ["nobody holds Full Access any more: " + "; ".join(origin)]
        elif op.startswith("rename_"):
            code, facts = "renamed", [f"primary address {before.get('email')} → {after.get('email')} in {o}"
                                      for o in origin]
        else:
            code, facts = "changed", [f"in {o}" for o in origin]
        if not gone:
            facts += self._list_facts(account, before, after)
        return {"code": code, "facts": facts}

    def _refresh_delegate_facts(self, change: dict) -> None:
        """A change's delegate facts again, after settling changed its delegates."""
        facts = [f for f in change["why"]["facts"] if not f.startswith("delegate ")]
        account = self.source_of.get(id(change))
        if account is not None and "delegates" in change["after"]:
            facts += [f for f in self._list_facts(account, change["before"], change["after"]) if f.startswith("delegate ")]
        change["why"]["facts"] = facts

    @staticmethod
    def _list_facts(account: Account, before: dict, after: dict) -> list[str]:
        """Why each delegate or alias is added or taken away."""
        facts = []
        how = account.reasons()[1]
        sources = ", ".join(account.sources) or "the directory"
        if "delegates" in after:
            old, new = set(before.get("delegates") or ()), set(after["delegates"])
            facts += [f"delegate +{d}: {how.get(d, 'holds Full Access')}" for d in sorted(new - old)]
            facts += [f"delegate -{d}: holds Full Access no more (read from {sources})" for d in sorted(old - new)]
        if "aliases" in after:
            old, new = set(before.get("aliases") or ()), set(after["aliases"])
            facts += [f"alias +{a}: an SMTP address in {sources}" for a in sorted(new - old)]
            facts += [f"alias -{a}: no longer an SMTP address in {sources}" for a in sorted(old - new)]
        return facts

    def out_of_scope(self, email: str) -> str | None:
        if not self.options.claims(email):
            return "outside_claimed_domains"
        if self.options.excludes(email):
            return "excluded"
        return None

    # -- the plan ----------------------------------------------------------------------
    def run(self, desired_complete: bool) -> Plan:
        _refuse_shared_addresses(self.desired)
        in_scope, self.outside = [], []
        for d in self.desired:
            reason = self.out_of_scope(d.email)
            if reason:
                self.skip(d, reason, None, None, "the desired account is outside the configured scope")
                self.outside.append(d)
            else:
                in_scope.append(d)
        self.desired = in_scope
        pairs, new, gone = self.match()
        self.know_delegates(pairs, new)
        for d, c, how in pairs:
            self.update(d, c, how)
        for d in new:
            self.create(d)
        for c in gone:
            self.remove(c)
        withheld = self.withhold_uncertain(desired_complete)
        self.settle_addresses(gone if desired_complete else [])  # from a partial read, nobody gives up an alias
        self.settle_delegates()
        safety = withheld or self.check_limits()
        links = self.links(pairs)
        self.changes = in_dependency_order(self.changes)
        for record in self.changes:
            record["id"] = hashlib.sha256(dumps_canonical(record)).hexdigest()[:16]
        self.skips.sort(key=lambda r: (r["email"], r["reason"], r["op"] or ""))
        return Plan(self.changes, self.skips, safety, links, dict(sorted(self.unmanaged.items())))

    def links(self, pairs: list[tuple[Account, Account, str]]) -> list[dict]:
        """Matched accounts with nothing to change whose anchors the mapping does not know yet."""
        changed = {id(self.claimant[id(c)]) for c in self.changes if id(c) in self.claimant}
        links = []
        for d, c, _ in pairs:
            if id(c) in changed or id(c) in self.left_alone or not c.zivver_id or not d.anchors:
                continue
            known = self.mapping.accounts.get(c.zivver_id)
            if known is None or not set(d.anchors) <= set(known.anchors) or \
                    (d.sources and set(d.sources) != set(known.sources)) or (d.dn and d.dn != known.dn):
                link = {"type": "link", "zivver_id": c.zivver_id, "email": c.email, "kind": c.kind,
                        "anchors": sorted(set(d.anchors) | set(known.anchors if known else ())),
                        "sources": sorted(d.sources)}
                if d.dn:
                    link["dn"] = d.dn
                links.append(link)
        return sorted(links, key=lambda link: link["email"])

    def update(self, d: Account, c: Account, how: str) -> None:
        kind = d.kind
        if c.kind != kind:
            self.left_alone.add(id(c))
            self.skip(d, "type_conflict", None, c.zivver_id,
                      f"a {kind} account in the directory, a {c.kind} account in Zivver ({c.email}); "
                      "Zivver cannot change an account's type: fix it by hand")
            return
        before, after = self.differences(d, c)
        if not after:
            return
        blocked = self.out_of_scope(c.email)
        if blocked:
            self.left_alone.add(id(c))
            self.skip(d, blocked, f"update_{kind}", c.zivver_id, f"the Zivver account {c.email} is outside the scope")
            return
        # Taking access away is a change of its own, so that the safety checks can hold it back
        # without holding back the rest: suspending a user, emptying a functional account.
        if after.get("active") is False:
            self.change("suspend_user", d, d.email, {"active": True}, {"active": False}, list(d.anchors), how,
                        d.sso_key, c)
            del before["active"], after["active"]
        elif kind == "functional" and after.get("delegates") == [] and before["delegates"]:
            self.change("empty_functional", d, d.email, {"delegates": before.pop("delegates")},
                        {"delegates": after.pop("delegates")}, list(d.anchors), how, None, c)
        if not after:
            return
        if after.get("active") is True:
            op = "reactivate_user"
        elif "email" in after:
            op = f"rename_{kind}"
        else:
            op = f"update_{kind}"
        self.change(op, d, d.email, before, after, list(d.anchors), how, d.sso_key, c)

    # -- delegates: accounts, not addresses ------------------------------------------------
    def know_delegates(self, pairs: list[tuple[Account, Account, str]], new: list[Account]) -> None:
        """Who each desired personal account is in Zivver, by the same identity rules as the
        accounts themselves (the mapping's anchors first, then address, then alias): the Zivver
        account it matched, or the one this plan creates. One it did not match (an address
        reused while the leaver's account still holds it, a type conflict) has none, and is
        nobody's delegate: its address would reach another person's account."""
        for c in self.current:
            if c.kind == "user":
                self.current_of[c.email] = c.zivver_id or c.email
        by_email = {c.email: c for c in self.current}
        for d in self.outside:  # an account diff leaves alone may still be a delegate, as it is
            c = by_email.get(d.email)
            if d.kind == "user" and c is not None and c.kind == "user" and c.active:
                self.delegate_of[d.email] = c.zivver_id or c.email
        for d, c, _ in pairs:
            if d.kind == "user":
                self.delegate_of[d.email] = (c.zivver_id or c.email) if c.kind == "user" and d.active else None
        for d in new:
            if d.kind == "user":
                self.delegate_of[d.email] = f"new:{d.email}" if d.active else None

    def grantable(self, d: Account) -> list[str]:
        """The delegates of a desired functional account that are someone's Zivver account."""
        withheld = [a for a in d.delegates if self.delegate_of.get(a) is None]
        if withheld:
            self.skip(d, "delegate_withheld", f"update_{d.kind}", None,
                      f"not made delegates: {', '.join(sorted(withheld))}: no Zivver account of theirs (an address "
                      "that belongs to another directory object's account, an account left alone, or none yet)")
        return sorted(a for a in d.delegates if self.delegate_of.get(a) is not None)

    def who(self, addresses: Iterable[str]) -> set[str]:
        return {self.delegate_of.get(a) or a for a in addresses}

    def settle_delegates(self) -> None:
        """After the addresses are settled: a delegate a change grants must, when push reaches
        that change, be the address of the account it stands for, and that account active (a
        rename withheld, a reactivation withheld: then it is not granted, and said so)."""
        email_after = {who: address for address, who in self.current_of.items()}
        active_after = {c.zivver_id or c.email: c.active for c in self.current if c.kind == "user"}
        for change in self.changes:
            own = self.claimant.get(id(change))
            if change["op"] == "create_user":
                email_after[f"new:{change['email']}"] = change["email"]
                active_after[f"new:{change['email']}"] = True
            elif own is not None and own.kind == "user":
                who = own.zivver_id or own.email
                email_after[who] = change["after"].get("email", email_after.get(who))
                active_after[who] = change["after"].get("active", active_after.get(who))
        dropped = set()
        for change in self.changes:
            after, before = change["after"], change["before"]
            if "delegates" not in after:
                continue
            kept: dict[str, str] = {}  # the address push will find the account at -> who it is
            lost = []
            for address in after["delegates"]:
                who = self.delegate_of.get(address)
                final = email_after.get(who)
                if final is not None and active_after.get(who):
                    kept[final] = who  # its own address after the plan: the new one, or the old if held
                else:
                    lost.append(address)
            if not lost and sorted(kept) == after["delegates"]:
                continue
            if lost:
                account = Account(change["kind"], change["email"], "", True, (), (), None, None, (), change["zivver_id"])
                self.skip(account, "delegate_withheld", change["op"], change["zivver_id"],
                          f"not made delegates: {', '.join(lost)}: no active account of theirs after this plan "
                          "(see their own changes)")
            after["delegates"] = sorted(kept)
            if not change["op"].startswith("create_"):
                current = {self.current_of.get(a, a) for a in before.get("delegates", ())}
                unchanged = set(kept.values()) == current if change["kind"] == "functional" \
                    else after["delegates"] == before.get("delegates")
                if unchanged or not after["delegates"]:  # emptying is a change of its own, not a side effect
                    del before["delegates"], after["delegates"]
                    if not after:
                        dropped.add(id(change))
            self._refresh_delegate_facts(change)
        self.changes = [c for c in self.changes if id(c) not in dropped]

    def differences(self, d: Account, c: Account) -> tuple[dict, dict]:
        before, after = {}, {}

        def differ(name: str, old, new) -> None:
            if old != new:
                before[name], after[name] = old, new

        differ("email", c.email, d.email)
        differ("name", c.name, d.name)
        if d.kind == "user":
            differ("active", c.active, d.active)
        differ("aliases", sorted(c.aliases), sorted(d.aliases))
        for name in d.unmanaged:
            self.unmanaged[name] += 1
        if "delegates" not in d.unmanaged:
            granted = self.grantable(d)
            if d.kind == "functional":  # Zivver keeps a functional account's delegates as accounts (member ids)
                if self.who(granted) != {self.current_of.get(a, a) for a in c.delegates}:
                    before["delegates"], after["delegates"] = sorted(c.delegates), granted
            else:  # and a personal account's as addresses
                differ("delegates", sorted(c.delegates), granted)
        if d.kind == "user" and d.phone is not None and "phone" not in d.unmanaged:  # one the directory lacks stays
            differ("phone", c.phone, d.phone)
        if self.options.update_sso_keys and d.sso_key and "sso_key" not in d.unmanaged:
            mapped = self.mapping.accounts.get(c.zivver_id)
            differ("sso_key", mapped.sso_key if mapped else None, d.sso_key)
        return before, after

    def create(self, d: Account) -> None:
        kind = d.kind
        if kind == "user" and not d.active:
            self.skip(d, "inactive_not_in_zivver", None, None,
                      "disabled in the directory and not in Zivver: no account is created for it")
            return
        after = {"email": d.email, "name": d.name}
        if kind == "user":
            after["active"] = True
        after.update(aliases=list(d.aliases), delegates=self.grantable(d))
        if kind == "user" and d.phone:
            after["phone"] = d.phone
        if kind == "user" and d.sso_key:
            after["sso_key"] = d.sso_key
        self.change(f"create_{kind}", d, d.email, {}, after, list(d.anchors), None, d.sso_key, None)

    def remove(self, c: Account) -> None:
        """A Zivver account nothing in the directory wants any more."""
        kind = c.kind
        if self.options.delete_missing:
            op, before, after = f"delete_{kind}", {"email": c.email, "aliases": sorted(c.aliases)}, {}
        elif kind == "user" and c.active:
            op, before, after = "suspend_user", {"active": True}, {"active": False}
        elif kind == "functional" and c.delegates:
            op, before, after = "empty_functional", {"delegates": sorted(c.delegates)}, {"delegates": []}
        else:
            return  # already suspended or empty
        if id(c) in self.left_alone:
            self.skip(c, "ambiguous_match", op, c.zivver_id,
                      "may be the account of a directory object that matched several Zivver accounts")
            return
        entry = self.mapping.accounts.get(c.zivver_id)
        owners = set(entry.sources) if entry is not None and entry.sources else set()
        if owners and self.reading.sources and not owners & set(self.reading.sources):
            self.left_alone.add(id(c))
            self.skip(c, "source_not_read", op, c.zivver_id,
                      f"the account mapping ties it to {', '.join(sorted(owners))}, which this run did not read: "
                      "its absence says nothing, so it is left as it is")
            return
        narrowed = self._outside_source_scope(entry)
        if narrowed:
            self.left_alone.add(id(c))
            self.skip(c, "outside_source_scope", op, c.zivver_id,
                      f"last seen at {entry.dn}, which {narrowed} no longer reads (its scope changed): its absence "
                      "says nothing, so it is left as it is")
            return
        if not self.reading.reads(kind):
            self.left_alone.add(id(c))
            self.skip(c, "not_spoken_for", op, c.zivver_id,
                      f"no source read in this run reads {'user' if kind == 'user' else 'shared'} mailboxes: "
                      "its absence says nothing, so it is left as it is")
            return
        reason = "source_conflict" if c.email in self.held else self.out_of_scope(c.email)
        if reason:
            self.left_alone.add(id(c))
            detail = ("the sources disagree about this account (see the conflict records of normalize)"
                      if reason == "source_conflict" else "the Zivver account is outside the configured scope")
            self.skip(c, reason, op, c.zivver_id, detail)
            return
        anchors = self.mapping.accounts[c.zivver_id].anchors if c.zivver_id in self.mapping.accounts else []
        self.change(op, c, c.email, before, after, list(anchors), None, None, c)

    # -- addresses moving between accounts ------------------------------------------------
    def settle_addresses(self, gone: list[Account]) -> None:
        """Zivver refuses an address (e-mail or alias) that another account holds. When the plan
        gives an address to an account while another still holds it: a leaving account gives up
        that alias first (an update planned before the claim); an account left alone keeps it,
        and the claim is withheld with a skip record saying why. Withholding one claim can
        mean an address is not freed for another, so this repeats until nothing changes."""
        holders: dict[str, list[Account]] = defaultdict(list)
        for c in self.current:
            for address in (c.email, *c.aliases):
                holders[address].append(c)
        leaving = {id(c) for c in gone} - self.left_alone
        while True:
            freed: dict[int, set[str]] = defaultdict(set)  # what the planned changes take off an account
            for change in self.changes:
                if id(change) in self.claimant:
                    freed[id(self.claimant[id(change)])] |= _released(change)
            releases: dict[int, set[str]] = defaultdict(set)
            dropped: set[int] = set()
            withheld = False
            for change in self.changes:
                own = self.claimant.get(id(change))
                kept = set((own.email, *own.aliases)) if own else set()
                for address in sorted(_addresses(change["after"]) - kept):
                    for holder in holders.get(address, ()):
                        if id(change) in dropped or holder is own or address in freed[id(holder)]:
                            continue
                        if id(holder) in leaving and address != holder.email:
                            releases[id(holder)].add(address)
                        else:
                            withheld = True
                            if self._withhold(change, address, holder):
                                dropped.add(id(change))
            self.changes = [c for c in self.changes if id(c) not in dropped]
            if not withheld:
                break
        by_id = {id(c): c for c in self.current}
        for holder_id, addresses in sorted(releases.items(), key=lambda item: by_id[item[0]].email):
            holder = by_id[holder_id]
            self.change(f"update_{holder.kind}", holder, holder.email, {"aliases": sorted(holder.aliases)},
                        {"aliases": sorted(set(holder.aliases) - addresses)}, [], None, None, holder)

    def _withhold(self, change: dict, address: str, holder: Account) -> bool:
        """Take the address out of the change, with a skip record; True when nothing is left of it."""
        account = Account(change["kind"], change["email"], "", True, (), (), None, None, (), change["zivver_id"])
        detail = (f"{address} is held by the Zivver account {holder.email}, which this plan leaves as it is; "
                  "free the address in Zivver (or fix that account) and the next run assigns it")
        after, before = change["after"], change["before"]
        if after.get("email") == address:
            self.skip(account, "address_taken", change["op"], change["zivver_id"], detail)
            if not change["op"].startswith("rename_"):
                return True
            # the account keeps its address, and gets the rest of the change
            old = before.pop("email")
            del after["email"]
            change["op"], change["email"] = f"update_{change['kind']}", old
            change["why"]["code"] = "changed"  # the rename is withheld: what is left is an update
            change["why"]["facts"] = [f for f in change["why"]["facts"] if not f.startswith("primary address ")]
            if old in after.get("aliases", ()):
                after["aliases"] = [a for a in after["aliases"] if a != old]
                if before.get("aliases") == after["aliases"]:
                    del before["aliases"], after["aliases"]
            return not after
        after["aliases"] = [a for a in after["aliases"] if a != address]
        self.skip(account, "address_taken", change["op"], change["zivver_id"], f"alias {detail}")
        if before.get("aliases") == after["aliases"]:
            del before["aliases"], after["aliases"]
            return not after
        return False

    # -- safety ------------------------------------------------------------------------
    def _safety(self) -> Safety:
        managed = [c for c in self.current if not self.out_of_scope(c.email)]
        return Safety(managed=len(managed), with_delegates=sum(1 for c in managed if c.delegates),
                      with_aliases=sum(1 for c in managed if c.aliases))

    def withhold_uncertain(self, desired_complete: bool) -> Safety | None:
        """From an incomplete or empty desired stream, what is missing may be missing from the
        read, not from the directory: withhold every suspension, emptying and deletion, and every
        change that takes a delegate or an alias away (a refused plan says how many)."""
        if desired_complete and self.desired:
            return None
        withheld = [c for c in self.changes if c["op"] in DESTRUCTIVE or _removes(c, "delegates")
                    or _removes(c, "aliases")]
        if not withheld:
            return None
        why = "incomplete" if not desired_complete else "empty"
        held = {id(c) for c in withheld}
        self.changes = [c for c in self.changes if id(c) not in held]
        for record in withheld:
            self.skips.append({
                "type": "skip", "email": record["email"], "kind": record["kind"],
                "zivver_id": record["zivver_id"], "op": record["op"], "reason": "desired_incomplete",
                "detail": f"the desired stream is {why}: nothing is suspended, emptied or deleted from it, "
                          "and no delegate or alias taken away",
            })
        safety = self._safety()
        safety.withheld = len(withheld)
        safety.refuse(f"the desired stream is {why}: {len(withheld)} suspensions, emptied functional "
                      "accounts, deletions or removals of delegates or aliases withheld")
        return safety

    def check_limits(self) -> Safety:
        options = self.options
        safety = self._safety()
        destructive = [c for c in self.changes if c["op"] in DESTRUCTIVE]
        safety.destructive = len(destructive)
        safety.deletions = sum(1 for c in destructive if c["op"] in DELETIONS)
        if safety.destructive > options.max_suspend:
            safety.refuse(f"{safety.destructive} accounts would be suspended, emptied or deleted: "
                          f"more than the limit of {options.max_suspend} (--max-suspend)")
        if safety.managed and safety.destructive * 100 > options.max_suspend_percent * safety.managed:
            share = 100 * safety.destructive / safety.managed
            safety.refuse(f"{safety.destructive} of {safety.managed} managed accounts ({share:.1f} %) would be "
                          f"suspended, emptied or deleted: more than the limit of {options.max_suspend_percent:g} % "
                          "(--max-suspend-percent)")
        if safety.deletions > options.max_delete:
            safety.refuse(f"{safety.deletions} accounts would be deleted: more than the limit of "
                          f"{options.max_delete} (--max-delete)")
        updates = [c for c in self.changes if c["op"] not in DESTRUCTIVE and not c["op"].startswith("create_")]
        safety.delegate_removals = sum(1 for c in updates if _removes(c, "delegates"))
        safety.alias_removals = sum(1 for c in updates if _removes(c, "aliases"))
        for what, count, having, limit, percent in (
                ("delegate", safety.delegate_removals, safety.with_delegates, options.max_delegate_removals,
                 options.max_delegate_removals_percent),
                ("alias", safety.alias_removals, safety.with_aliases, options.max_alias_removals,
                 options.max_alias_removals_percent)):
            option = f"--max-{what}-removals"
            if count > limit:
                safety.refuse(f"{count} accounts would lose a {what}: more than the limit of {limit} ({option})")
            elif count > REMOVALS_NEVER_REFUSED_BY_SHARE and count * 100 > percent * having:
                safety.refuse(f"{count} of the {having} managed accounts with a {what} ({100 * count / having:.1f} %) "
                              f"would lose one: more than the limit of {percent:g} % ({option}-percent)")
        return safety


def _removes(change: dict, field: str) -> bool:
    """Whether ``change`` takes a value of the list ``field`` away from its account."""
    after = change["after"].get(field)
    return after is not None and bool(set(change["before"].get(field) or ()) - set(after))


def _addresses(fields: dict) -> set[str]:
    return ({fields["email"]} if "email" in fields else set()) | set(fields.get("aliases", ()))


def _released(change: dict) -> set[str]:
    """The addresses a change takes off its account."""
    return _addresses(change["before"]) - _addresses(change["after"])


def _refuse_shared_addresses(desired: list[Account]) -> None:
    """normalize never gives one address to two accounts; a hand-made stream might."""
    seen: dict[str, str] = {}
    for account in desired:
        for address in (account.email, *account.aliases):
            other = seen.setdefault(address, account.email)
            if other != account.email:
                raise PlanError(f"the desired accounts {other} and {account.email} both claim {address}")


def in_dependency_order(changes: list[dict]) -> list[dict]:
    """The changes in the order push applies them: DESIGN.md §5's order by op, except that a
    change that frees an address comes before the change that takes it, and a user is created,
    renamed to its new address or reactivated before the changes that make it a delegate (push
    finds a delegate's account by its address, and Zivver takes only active delegates)."""
    rank = {id(c): (OP_ORDER.index(c["op"]), c["email"], n) for n, c in enumerate(changes)}
    freed_by: dict[str, list[dict]] = defaultdict(list)
    created: dict[str, dict] = {}
    for change in changes:
        for address in _released(change):
            freed_by[address].append(change)
        if change["op"] in ("create_user", "rename_user", "reactivate_user"):
            created[change["email"]] = change
    waits_for: dict[int, set[int]] = {id(c): set() for c in changes}
    for change in changes:
        needs = [f for a in _addresses(change["after"]) - _addresses(change["before"]) for f in freed_by.get(a, ())]
        needs += [created[d] for d in change["after"].get("delegates", ()) if d in created]
        waits_for[id(change)].update(id(n) for n in needs if n is not change)
    # Kahn's algorithm, taking the first change by op order among those whose wait is over
    by_id = {id(c): c for c in changes}
    waiting = {key: len(needs) for key, needs in waits_for.items()}
    unblocks: dict[int, list[int]] = defaultdict(list)
    for key, needs in waits_for.items():
        for need in needs:
            unblocks[need].append(key)
    ready = [(rank[key], key) for key, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    ordered = []
    while ready:
        _, key = heapq.heappop(ready)
        ordered.append(by_id[key])
        for other in unblocks[key]:
            waiting[other] -= 1
            if waiting[other] == 0:
                heapq.heappush(ready, (rank[other], other))
    if len(ordered) < len(changes):  # a cycle (two accounts swapping addresses): keep the op order
        placed = {id(c) for c in ordered}
        ordered += sorted((c for c in changes if id(c) not in placed), key=lambda c: rank[id(c)])
    return ordered


def apply(current: Iterable[dict], plan: Plan) -> list[dict]:
    """What Zivver would hold after the plan, applied in order: the meaning of a plan, which the
    property tests check plans against."""
    accounts = {c.get("zivver_id") or c["email"]: dict(c) for c in current}
    for change in plan.changes:
        key = change["zivver_id"] or change["email"]
        if change["op"].startswith("delete_"):
            accounts.pop(key, None)
            continue
        if change["op"].startswith("create_"):
            accounts[key] = {"type": "account", "kind": change["kind"], "active": True, "phone": None,
                             "zivver_id": None, "sso_key": None}
        account = accounts[key]
        account.update({k: v for k, v in change["after"].items() if k != "sso_key"})
    return sorted(accounts.values(), key=lambda a: a["email"])
