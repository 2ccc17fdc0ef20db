"""From directory records to the accounts Zivver should have (DESIGN.md §3).

Pure functions: records in, account and conflict records out, no I/O. The rules:

- user mailboxes and mail-enabled users become personal accounts, shared mailboxes
  functional ones; room and equipment mailboxes only when asked for;
- aliases are the secondary SMTP addresses in claimed domains;
- delegates come from FullAccess that is neither inherited nor denied; group trustees are
  expanded through nested groups (cycles included); SELF, SIDs and anything that is not
  an active personal account are dropped;
- disabled users are inactive accounts; a functional account is never "inactive";
- sources merge by anchor, then by e-mail; disagreement is reported as a conflict, and a
  disagreement on kind, e-mail, enabled state or SSO key holds the account (diff leaves it
  alone) rather than guessing;
- scope: claimed domains, include/exclude by OU, by group membership and by address.
"""

from __future__ import annotations

import fnmatch
import re
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from typing import Iterable

import msgspec

from . import schema
from .dn import domain_of_dn, under

SELF_PRINCIPALS = frozenset({"nt authority\\self", "self"})
SID_PATTERN = re.compile(r"^s-1-\d+(-\d+)+$")
HELD_FIELDS = ("email", "kind", "active", "sso_key")  # a conflict on these holds the account
RESOLVED_FIELDS = ("name", "phone")  # a conflict on these is settled by source priority


class ScopeError(ValueError):
    """The scope names something the directory does not have."""


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


@dataclass(frozen=True)
class Scope:
    """Which directory objects become accounts, and how."""

    claimed_domains: frozenset[str]
    include_ous: tuple[str, ...] = ()
    exclude_ous: tuple[str, ...] = ()
    include_groups: tuple[str, ...] = ()
    exclude_groups: tuple[str, ...] = ()
    include_addresses: tuple[str, ...] = ()
    exclude_addresses: tuple[str, ...] = ()
    resource_mailboxes: bool = False
    groups_as_functional: bool = False
    source_priority: tuple[str, ...] = ()
    expand_shared_delegates: bool = False  # a shared mailbox's Full Access on another passes its delegates on

    def claims(self, address: str) -> bool:
        return domain_of(address) in self.claimed_domains


@dataclass
class Result:
    accounts: list[dict]
    conflicts: list[dict]
    incomplete_reasons: list[str]
    sources: list[str] = field(default_factory=list)  # the sources read, in order of appearance
    dropped: Counter = field(default_factory=Counter)  # why something did not make it, counted
    warnings: list[str] = field(default_factory=list)
    authorities: dict[str, dict | None] = field(default_factory=dict)  # by source; None: states nothing
    permission_sources: dict[str, set[str]] = field(default_factory=dict)  # account -> sources with Full Access on it
    group_accounts: set[str] = field(default_factory=set)  # functional accounts made of groups: members delegate


@dataclass(slots=True)
class Person:
    """What normalize keeps of a person record: small, since 100,000 of them stay in memory.
    The key and addresses are lower case; names are kept as given and compared without case."""

    source: str
    key: str  # the anchor
    mail: str | None
    addresses: tuple[str, ...]
    enabled: bool | None
    mailbox: str
    name: str | None  # the display name, or given name and surname
    phone: str | None
    sso_key: str | None
    dn: str | None
    upn: str | None
    sid: str | None
    sam: str | None

    @classmethod
    def of(cls, record) -> "Person":
        name = record.display_name or " ".join(p for p in (record.given_name, record.surname) if p) or None
        anchor, mail = record.anchor, record.mail
        key = anchor if anchor.islower() else anchor.lower()  # no copy when it is (most are)
        if mail:
            mail = mail if mail.islower() else mail.lower()
        addresses = tuple(mail if a == mail else a.lower() for a in record.addresses)
        sso_key = record.sso_key
        return cls(
            record.source, key, mail, addresses, record.enabled, record.mailbox, name, record.phone,
            key if sso_key == key else sso_key, record.dn, record.upn, record.sid, record.sam_account_name)


@dataclass(slots=True)
class Group:
    source: str
    key: str  # the id
    name: str
    mail: str | None
    addresses: tuple[str, ...]
    mail_enabled: bool
    members: tuple[str, ...]  # ids of persons and groups
    dn: str | None
    sid: str | None
    sam: str | None  # sAMAccountName: how on-premise permissions name a group (CORP\Helpdesk)

    @classmethod
    def of(cls, record) -> "Group":
        return cls(
            record.source, record.id.lower(), record.name, (record.mail or "").lower() or None,
            tuple(a.lower() for a in record.addresses or ()), bool(record.mail_enabled),
            tuple(m if m.islower() else m.lower() for m in record.members), record.dn, record.sid,
            record.sam_account_name)

    @classmethod
    def merged(cls, views: list["Group"]) -> "Group":
        """One group as every source that has it knows it: LDAP knows its DN and sAMAccountName
        (what parents' member lists and on-premise permissions name it by), Exchange its
        members by id. Members of all; each other field from the first source, by name, that
        has it: the same group whatever order the streams came in."""
        if len(views) == 1:
            return views[0]
        views = sorted(views, key=lambda g: g.source)

        def first(name: str):
            return next((value for g in views if (value := getattr(g, name))), None)

        addresses = tuple(dict.fromkeys(a for g in views for a in g.addresses))
        return cls(views[0].source, views[0].key, first("name") or views[0].name, first("mail"), addresses,
                   any(g.mail_enabled for g in views), tuple(sorted({m for g in views for m in g.members})),
                   first("dn"), first("sid"), first("sam"))


@dataclass(slots=True)
class Candidate:
    """One source's view of one would-be account."""

    source: str
    key: str  # the directory object's anchor or id
    email: str
    kind: str
    name: str
    enabled: bool | None
    addresses: tuple[str, ...]
    phone: str | None
    sso_key: str | None
    dn: str | None = None

    def origin(self) -> str:
        """Where this view of the account comes from, for the reasons diff gives."""
        state = {True: "enabled", False: "disabled", None: ""}[self.enabled] if self.kind == "user" else ""
        return f"{self.source} {self.dn or 'anchor ' + self.key}" + (f" ({state})" if state else "")


class Directory:
    """The directory records of all inputs, indexed for resolving references."""

    def __init__(self, records: Iterable, authorities: dict[str, dict | None] | None = None):
        """``records``: directory records as the stream reader yields them typed (msgspec
        Structs), or as dicts, which are checked and converted here."""
        self.persons: dict[str, list[Person]] = {}  # by anchor; one per source that has it
        self.groups: dict[str, Group] = {}  # by id
        self.permissions: list = []  # permission records
        self.errors: list = []  # error records
        self.sources_with_groups: set[str] = set()
        self.authorities = authorities or {}  # what each source states; consulted after the records are read
        self.unresolved: dict[str, set[str]] = defaultdict(set)  # group -> member references naming nothing
        views: dict[str, list[Group]] = defaultdict(list)  # a group by id, as each source gives it
        self.sources: list[str] = []  # in order of first appearance
        self._member_of: dict[str, list[str]] = defaultdict(list)  # persons' memberOf, turned around
        self._by_address: dict[str, str] = {}
        self._by_other: dict[str, dict[str, str]] = {}
        self._members: dict[str, frozenset[str]] = {}
        for record in records:
            self._add(record, views)
        for key, seen in views.items():
            group = self.groups[key] = Group.merged(seen)
            self._index_addresses(group.key, group.mail, group.addresses)

    def _add(self, record: dict, views: dict[str, list[Group]]) -> None:
        if isinstance(record, dict):
            record = msgspec.convert(record, schema.checker("directory", record["type"]).struct)
        kind, source = schema.type_of(record), record.source
        if source not in self.sources:
            self.sources.append(source)
        if kind == "person":
            person = Person.of(record)
            self.persons.setdefault(person.key, []).append(person)
            for group in record.groups or ():
                self._member_of[group.lower()].append(person.key)
            self._index_addresses(person.key, person.mail, person.addresses)
        elif kind == "group":
            group = Group.of(record)
            views[group.key].append(group)
            self.sources_with_groups.add(source)
        elif kind == "permission":
            self.permissions.append(record)
        elif kind == "error":
            self.errors.append(record)

    def _index_addresses(self, key: str, mail: str | None, addresses: tuple[str, ...]) -> None:
        setdefault = self._by_address.setdefault
        if mail:
            setdefault(mail, key)
        for address in addresses:
            setdefault(address, key)

    def resolve(self, reference: str) -> str | None:
        """The key of the person or group a permission names, by anchor/id, e-mail address,
        UPN, SID, DOMAIN\\sam, DN or group name; None when nothing (or SELF) answers to it."""
        ref = reference.strip().lower()
        if ref in SELF_PRINCIPALS:
            return None
        if ref in self.persons or ref in self.groups:
            return ref
        if ref in self._by_address:
            return self._by_address[ref]
        if SID_PATTERN.match(ref):
            return self._index("sid").get(ref)
        if "=" in ref and "," in ref and (key := self._index("dn").get(ref)):
            return key  # a DN; one with an escaped comma (CN=Smith\, John,...) is no DOMAIN\user
        if "\\" in ref:
            # DOMAIN\user within that NetBIOS domain: two forests' jdoe each reach their own
            qualified = self._index("qualified")
            if ref in qualified:
                return qualified[ref]
            if qualified:  # objects name their domains: one not read (or no such user in it) is nobody
                return None
            return self._index("sam").get(ref.rpartition("\\")[2])  # no DN anywhere: the name alone
        return self._index("dn").get(ref) or self._index("upn").get(ref) or self._index("name").get(ref)

    def _index(self, name: str) -> dict[str, str]:
        """Keys by one kind of other name, built the first time a reference needs it: most
        references are anchors or addresses, and 100,000 lower-cased names cost memory."""
        if name not in self._by_other:
            index: dict[str, str | None] = {}

            def put(value: str | None, key: str) -> None:
                # a name two objects share (jdoe in two forests, a group and a user both
                # called Sales) names neither: better no delegate than the wrong one
                if value:
                    value = value.lower()
                    index[value] = key if index.get(value, key) == key else None

            if name == "qualified":  # NETBIOS\sam: the domain from the source's authority, else the DN
                for key, persons in self.persons.items():
                    for person in persons:
                        put(self._qualified(person.source, person.dn, person.sam), key)
                for key, group in self.groups.items():
                    put(self._qualified(group.source, group.dn, group.sam), key)
                self._by_other[name] = index
                return index
            for key, persons in self.persons.items():
                for person in persons:
                    put(getattr(person, name) if name != "name" else None, key)  # display names are not unique
            for key, group in self.groups.items():
                put(getattr(group, name, None), key)
            self._by_other[name] = index
        return self._by_other[name]

    def _qualified(self, source: str, dn: str | None, sam: str | None) -> str | None:
        """``NETBIOS\\sam`` of an object: its source's stated NetBIOS domain (authority scope
        ``netbios``), else the first DC of its DN (CORP for DC=corp,DC=example), the usual case."""
        if not sam:
            return None
        netbios = ((self.authorities.get(source) or {}).get("scope") or {}).get("netbios")
        if not netbios and dn:
            netbios = next(iter(domain_of_dn(dn)), None)
        return f"{netbios}\\{sam}" if netbios else None

    def members(self, group_key: str) -> frozenset[str]:
        """Every person in a group, through nested groups, each group visited once (cycles end)."""
        if group_key not in self._members:
            self._members[group_key] = frozenset(self.member_paths(group_key))
        return self._members[group_key]

    def member_paths(self, group_key: str) -> dict[str, tuple[str, ...]]:
        """Every person in a group, through nested groups (cycles end), each with the chain of
        group names that makes them one (the group itself first): the reason a delegate is one."""
        paths: dict[str, tuple[str, ...]] = {}
        start = self.groups[group_key].name if group_key in self.groups else group_key
        seen, pending = {group_key}, deque([(group_key, (start,))])  # breadth first: the shortest path
        while pending:
            current, path = pending.popleft()
            group = self.groups.get(current)
            for members in (group.members if group else (), self._member_of.get(current, ()),
                            self._member_of.get(group.dn.lower(), ()) if group and group.dn else ()):
                for member in members:
                    if member not in self.persons and member not in self.groups:
                        resolved = self.resolve(member)  # a DN, as extract-ldap writes them
                        if resolved is None:  # counted and reported (normalize's tally), never silent
                            self.unresolved[current].add(member)
                            continue
                        member = resolved
                    if member in self.persons:
                        paths.setdefault(member, path)
                    elif member in self.groups and member not in seen:
                        seen.add(member)
                        pending.append((member, (*path, self.groups[member].name)))
        return paths

    def people_of(self, reference: str) -> frozenset[str] | None:
        """The persons a trustee stands for: itself, or a group's transitive members."""
        key = self.resolve(reference)
        if key is None:
            return None
        return frozenset((key,)) if key in self.persons else self.members(key)


def normalize(records: Iterable, scope: Scope, authorities=None) -> Result:
    """The desired accounts for these directory records. ``authorities``: what each source
    speaks for, by source name (its stream header's ``authority``; a function that gives them
    once the records are read, when they come from the same reader): a field no source of an
    account speaks for is listed in the account's ``unmanaged``, and diff leaves it alone."""
    directory = Directory(records)
    directory.authorities = dict(authorities() if callable(authorities) else authorities or {})
    result = Result([], [], [f"{e.source}: could not read {e.object}: {e.message}" for e in directory.errors],
                    directory.sources)
    candidates = _candidates(directory, scope, result.dropped)
    order = dict.fromkeys(scope.source_priority + tuple(directory.sources))
    priority = {source: rank for rank, source in enumerate(order)}
    accounts_by_key: dict[str, dict] = {}
    for cluster in _clusters(candidates):
        account, conflicts = _merge(cluster, scope, priority)
        result.conflicts.extend(conflicts)
        if account is not None:
            result.accounts.append(account)
            for candidate in cluster:
                accounts_by_key[candidate.key] = account
    _add_delegates(directory, accounts_by_key, result, scope.expand_shared_delegates)
    _settle_aliases(result)
    result.authorities = directory.authorities
    _mark_unmanaged(result)
    result.accounts.sort(key=lambda a: a["email"])
    result.conflicts.sort(key=lambda c: (c["email"], c["field"]))
    return result


def _candidates(directory: Directory, scope: Scope, dropped: Counter) -> list[Candidate]:
    groups = _group_filters(directory, scope)
    filtering = bool(scope.include_ous or scope.exclude_ous or scope.include_groups or scope.exclude_groups
                     or scope.include_addresses or scope.exclude_addresses)
    candidates = []
    for persons in directory.persons.values():
        for person in persons:
            candidate = _person_candidate(person, scope, dropped)
            if candidate is None:
                continue
            reason = filtering and _out_of_scope(person, candidate.email, scope, groups, directory)
            if reason:
                dropped[reason] += 1
                continue
            candidates.append(candidate)
    if scope.groups_as_functional:
        for key, group in directory.groups.items():
            if group.mail_enabled and group.mail:
                if not scope.claims(group.mail):
                    dropped["group outside the claimed domains"] += 1
                    continue
                candidates.append(Candidate(
                    group.source, key, group.mail, "functional", group.name or group.mail.partition("@")[0],
                    None, group.addresses, None, None))
    return candidates


def _person_candidate(person: Person, scope: Scope, dropped: Counter) -> Candidate | None:
    mailbox = person.mailbox
    if mailbox in ("room", "equipment") and not scope.resource_mailboxes:
        dropped[f"{mailbox} mailbox (not synced unless resource mailboxes are included)"] += 1
        return None
    email = person.mail
    if not email:
        dropped["no primary e-mail address"] += 1
        return None
    if email[email.rfind("@") + 1:] not in scope.claimed_domains:
        dropped["primary address outside the claimed domains"] += 1
        return None
    kind = "user" if mailbox in ("user", "none") else "functional"
    return Candidate(person.source, person.key, email, kind, person.name or email.partition("@")[0],
                     person.enabled, person.addresses, person.phone, person.sso_key, person.dn)


def _group_filters(directory: Directory, scope: Scope) -> tuple[set[str] | None, set[str]]:
    """(people inside the include groups, or None when not filtering; people in exclude groups)."""

    def people(names: tuple[str, ...]) -> set[str]:
        found: set[str] = set()
        for name in names:
            key = directory.resolve(name)
            if key is None or key not in directory.groups:
                raise ScopeError(f"group filter: no group in the directory answers to {name!r}")
            found |= directory.members(key)
        return found

    included = people(scope.include_groups) if scope.include_groups else None
    return included, people(scope.exclude_groups)


def _out_of_scope(person: Person, email: str, scope: Scope, groups, directory: Directory) -> str | None:
    """Why an object is outside the include/exclude filters, or None.

    A filter applies to the records whose source carries what it looks at: OU filters to
    records with a DN, group filters to sources that list groups."""
    dn = person.dn
    if dn:
        if scope.include_ous and not any(under(dn, ou) for ou in scope.include_ous):
            return "outside the included OUs"
        if any(under(dn, ou) for ou in scope.exclude_ous):
            return "in an excluded OU"
    included, excluded = groups
    if included is not None and person.source in directory.sources_with_groups and person.key not in included:
        return "not a member of an included group"
    if person.key in excluded:
        return "member of an excluded group"
    if scope.include_addresses and not any(fnmatch.fnmatchcase(email, p.lower()) for p in scope.include_addresses):
        return "address not matched by the include patterns"
    if any(fnmatch.fnmatchcase(email, p.lower()) for p in scope.exclude_addresses):
        return "address matched by an exclude pattern"
    return None


def _clusters(candidates: list[Candidate]) -> list[list[Candidate]]:
    """Candidates that are the same account: sharing an anchor, or a primary address."""
    parent = list(range(len(candidates)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    by_key: dict[str, int] = {}
    by_email: dict[str, int] = {}
    for index, candidate in enumerate(candidates):
        for seen, value in ((by_key, candidate.key), (by_email, candidate.email)):
            first = seen.setdefault(value, index)
            if first != index:
                parent[find(index)] = find(first)
    clusters: dict[int, list[Candidate]] = defaultdict(list)
    for index, candidate in enumerate(candidates):
        clusters[find(index)].append(candidate)
    return list(clusters.values())


def _merge(cluster: list[Candidate], scope: Scope, priority: dict[str, int]) -> tuple[dict | None, list[dict]]:
    """One account from the sources' views of it, and the conflicts between them."""
    if len(cluster) == 1:  # one source knows it, as for nearly every account: nothing to reconcile
        return _account(cluster, scope, cluster[0].sso_key, cluster[0].phone), []
    cluster.sort(key=lambda c: (priority.get(c.source, len(priority)), c.source, c.key))
    values = {
        "email": [(c, c.email) for c in cluster],
        "kind": [(c, c.kind) for c in cluster],
        "active": [(c, c.enabled) for c in cluster if c.enabled is not None and c.kind == "user"],
        "sso_key": [(c, c.sso_key) for c in cluster if c.sso_key],
        "name": [(c, c.name) for c in cluster],
        "phone": [(c, c.phone) for c in cluster if c.phone],
    }
    conflicts, held = [], False
    for name, seen in values.items():
        if len({value for _, value in seen}) <= 1:
            continue
        hold = name in HELD_FIELDS
        held = held or hold
        for email in sorted({c.email for c in cluster}):
            conflicts.append({
                "type": "conflict", "email": email, "field": name,
                "values": [{"source": c.source, "anchor": c.key, "value": v} for c, v in seen],
                "held": hold,
                "resolution": "account left as it is in Zivver until the sources agree" if hold
                else f"took the value of source '{seen[0][0].source}' (highest priority)",
            })
    if held:
        return None, conflicts
    sso_key = values["sso_key"][0][1] if values["sso_key"] else None
    phone = values["phone"][0][1] if values["phone"] else None
    return _account(cluster, scope, sso_key, phone), conflicts


def _account(cluster: list[Candidate], scope: Scope, sso_key: str | None, phone: str | None) -> dict:
    first = cluster[0]
    claimed = scope.claimed_domains
    aliases = {a for c in cluster for a in c.addresses if a != first.email and a[a.rfind("@") + 1:] in claimed}
    single = len(cluster) == 1
    return {
        "type": "account",
        "kind": first.kind,
        "email": first.email,
        "name": first.name,
        "active": first.kind == "functional" or False not in [c.enabled for c in cluster],
        "aliases": sorted(aliases),
        "delegates": [],
        "sso_key": sso_key,
        "phone": phone,
        "anchors": [first.key] if single else sorted({c.key for c in cluster}),
        "sources": [first.source] if single else sorted({c.source for c in cluster}),
        "dn": min(((c.source, c.dn) for c in cluster if c.dn), default=(None, None))[1],  # whatever the order
        "why": Why(cluster),
    }


class Why:
    """An account's ``why``, rendered only when the account is written: at 100,000 accounts the
    lines would otherwise all sit in memory at once. Holds the candidates it comes from (which
    normalize keeps anyway) and how each delegate holds Full Access (strings shared between
    accounts granted by the same trustee)."""

    __slots__ = ("cluster", "delegates")

    def __init__(self, cluster: list[Candidate]):
        self.cluster, self.delegates = cluster, None

    def __eq__(self, other) -> bool:
        return isinstance(other, Why) and self.record() == other.record()

    def __repr__(self) -> str:
        return f"Why({self.record()!r})"

    def record(self) -> dict:
        made: dict = {"origin": [c.origin() for c in self.cluster]}
        if self.delegates:
            made["delegates"] = self.delegates
        return made


def rendered(account: dict) -> dict:
    """An account as a record to write: its ``why`` rendered."""
    why = account.get("why")
    return {**account, "why": why.record()} if isinstance(why, Why) else account


def _add_delegates(directory: Directory, accounts_by_key: dict[str, dict], result: Result,
                   expand: bool = False) -> None:
    """Delegates from FullAccess entries: allowed minus denied, only active personal accounts.
    Each delegate's account record says how it holds Full Access (``why.delegates``). With
    ``expand``, a shared mailbox granted Full Access on another passes its delegates on."""
    allowed: dict[str, dict[str, str]] = defaultdict(dict)  # mailbox account's address -> delegate -> how
    denied: dict[str, set[str]] = defaultdict(set)
    by_email = {a["email"]: a for a in result.accounts}
    cache: dict[str, tuple[dict[str, str], int]] = {}

    shared_grants: dict[str, dict[str, str]] = defaultdict(dict)  # mailbox -> shared mailbox granted on it -> how

    def able(trustee: str, name: str) -> tuple[dict[str, str], int, dict[str, str]]:
        """(the active personal accounts this trustee stands for, each with how; how many others;
        the functional accounts among them, each with how)."""
        if trustee in directory.persons:
            paths = {trustee: ()}
        else:
            paths = directory.member_paths(trustee)
        grant = f"Full Access for {name}"
        found: dict[str, str] = {}
        functional: dict[str, str] = {}
        others = set()
        for person, path in paths.items():
            account = accounts_by_key.get(person)
            if account is None:
                continue
            how = grant + (" via " + " → ".join(path) if path else "")
            if account["kind"] == "user" and account["active"]:
                found.setdefault(account["email"], how)
            else:
                others.add(id(account))
                if account["kind"] == "functional":
                    functional.setdefault(account["email"], how)
        return found, len(others), functional

    for permission in directory.permissions:
        if not any(right.lower() == "fullaccess" for right in permission.rights):
            result.dropped["permission without FullAccess"] += 1
            continue
        if permission.inherited:
            result.dropped["inherited permission"] += 1
            continue
        mailbox = directory.resolve(permission.mailbox)
        owner = accounts_by_key.get(mailbox) if mailbox else None
        if owner is None:
            result.dropped["permission on a mailbox that is not an account"] += 1
            continue
        result.permission_sources.setdefault(owner["email"], set()).add(permission.source)
        trustee = directory.resolve(permission.trustee)
        if trustee is None:
            name = permission.trustee.strip().lower()
            result.dropped["trustee SELF" if name in SELF_PRINCIPALS else "trustee is an unresolved SID"
                           if SID_PATTERN.match(name) else "trustee not found"] += 1
            continue
        named = (trustee, permission.trustee)  # the reason names the trustee as this entry does
        if named not in cache:
            cache[named] = able(trustee, permission.trustee)
        emails, unable, functional = cache[named]
        if permission.deny:
            denied[owner["email"]].update(emails)
        else:
            reasons = allowed[owner["email"]]
            for email, how in emails.items():  # several grants give it: the first by name, whatever the order
                reasons[email] = min(reasons.get(email, how), how)
            if expand:
                grants = shared_grants[owner["email"]]
                for email, how in functional.items():
                    grants[email] = min(grants.get(email, how), how)
        if unable:
            result.dropped["delegate is not an active personal account"] += unable - (len(functional) if expand else 0)
    for key, owner in accounts_by_key.items():
        if key in directory.groups:  # a mail-enabled group as a functional account: its members act for it
            result.group_accounts.add(owner["email"])
            for email, how in able(key, owner["email"])[0].items():
                allowed[owner["email"]].setdefault(email, how.replace("Full Access for", "member of", 1))
    unresolved = sum(len(members) for members in directory.unresolved.values())
    if unresolved:
        result.dropped["group member in no source read (not read, or outside the scope)"] += unresolved
        for group, members in sorted(directory.unresolved.items())[:5]:
            name = directory.groups[group].name if group in directory.groups else group
            shown = ", ".join(sorted(members)[:3]) + (f" and {len(members) - 3} more" if len(members) > 3 else "")
            result.warnings.append(f"group {name}: {len(members)} members resolve to no object read: {shown}")
    if shared_grants:
        _expand_shared(allowed, denied, shared_grants)
    for email, reasons in allowed.items():
        account = by_email[email]
        delegates = sorted(set(reasons) - denied.get(email, set()) - {email})
        account["delegates"] = delegates
        if delegates:
            account["why"].delegates = {d: reasons[d] for d in delegates}


def _expand_shared(allowed: dict[str, dict[str, str]], denied: dict[str, set[str]],
                   grants: dict[str, dict[str, str]]) -> None:
    """--expand-shared-delegates: a shared mailbox B with Full Access on A makes B's delegates A's
    too, through any chain (A ← B ← C …), cycles included. Linear in the grants: the mailboxes
    are grouped into strongly connected components (Tarjan's, iteratively), and each component's
    delegates are its own plus those of the components it reaches, computed once each, in the
    order Tarjan's algorithm completes them (every component after those it reaches)."""
    own = {m: frozenset(set(allowed.get(m, {})) - denied.get(m, set())) for m in set(allowed) | set(grants)}
    nodes = sorted(set(grants) | {b for targets in grants.values() for b in targets} | set(own))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    reached: dict[str, frozenset[str]] = {}  # mailbox -> every delegate it passes on (its component's)
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(grants.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = counter
                    counter += 1
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(grants.get(successor, ())))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:  # a component is complete: everything it reaches is done
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    members = set(component)
                    delegates = set().union(*(own.get(m, frozenset()) for m in component))
                    for member in component:
                        for target in grants.get(member, ()):
                            if target not in members:
                                delegates |= reached[target]
                    shared = frozenset(delegates)
                    for member in component:
                        reached[member] = shared
    for mailbox, targets in grants.items():
        reasons = allowed.setdefault(mailbox, {})
        for target, how in targets.items():
            for delegate in reached.get(target, ()):
                why = f"via the shared mailbox {target} ({how})"
                reasons[delegate] = min(reasons.get(delegate, why), why)


UNMANAGED_FIELDS = ("delegates", "phone", "sso_key")


def speaks_for(authority: dict | None, field: str, kind: str) -> bool:
    """Whether a source with this ``authority`` speaks for ``field`` of an account of ``kind``
    (a source that states nothing speaks for everything, as streams did before)."""
    if authority is None:
        return True
    if field == "delegates":
        return ("shared" if kind == "functional" else "user") in authority.get("full_access", ())
    return bool(authority.get(field, True))


def _mark_unmanaged(result: Result) -> None:
    """Each account's fields that none of its sources speaks for: diff leaves them as Zivver
    has them (delegates with LDAP alone, a phone number no source reads, ...)."""
    stated = result.authorities
    if not stated:
        return
    for account in result.accounts:
        sources = [stated.get(source) for source in account["sources"]]
        # a source whose Full Access entries name this mailbox read them, whether or not it listed it
        readers = sources + [stated.get(s) for s in result.permission_sources.get(account["email"], ())]
        unmanaged = [f for f in UNMANAGED_FIELDS
                     if not any(speaks_for(a, f, account["kind"]) for a in (readers if f == "delegates" else sources))]
        if account["email"] in result.group_accounts and any(a is None or a.get("groups") for a in sources):
            unmanaged = [f for f in unmanaged if f != "delegates"]  # a group's members: its source reads groups
        if unmanaged:
            account["unmanaged"] = unmanaged
            if "delegates" in unmanaged:
                account["delegates"] = []


def _settle_aliases(result: Result) -> None:
    """Zivver refuses an alias that is another account's address or another account's alias:
    drop those, and say so, rather than let push fail on them."""
    primaries = {a["email"] for a in result.accounts}
    owners: dict[str, list[dict]] = defaultdict(list)
    for account in result.accounts:
        for alias in account["aliases"]:
            owners[alias].append(account)
    for alias, accounts in sorted(owners.items()):
        if alias in primaries or len(accounts) > 1:
            for account in accounts:
                account["aliases"].remove(alias)
            other = "an account's own address" if alias in primaries else "an alias of several accounts"
            result.warnings.append(
                f"alias {alias} dropped from {', '.join(a['email'] for a in accounts)}: it is {other}")
