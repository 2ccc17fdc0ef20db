"""Nights in a row: an organisation that changes a little every day, zivsync run against it
night after night, and an independent model of what Zivver should hold (issue 16).

- :class:`Organisation` is the directory: people (user and shared mailboxes), groups (security
  groups that are not mail-enabled, holding mail-enabled ones), Full Access grants direct and
  through groups, deny entries. It writes the two streams the nightly job reads, as
  ``zivsync-extract-ldap`` and ``zivsync-extract-exchange`` write them (examples/ holds both):
  LDAP with DNs, sAMAccountNames and memberOf; Exchange with the mailboxes, the mail-enabled
  groups with their members by id, and Get-MailboxPermission's entries, a trustee named by id
  when Exchange finds it as a recipient and by its raw ``CORP\\name`` when it does not (a
  security group that is not mail-enabled).
- :func:`churn` changes it the way a night does: hires, leavers, deletions, re-hires, renames,
  alias changes, Full Access granted and taken, group membership, moves out of scope and back.
  Some nights are scripted: an address freed and reused, a type conversion, a mass leave that
  must be refused, quiet nights.
- :class:`Model` is what Zivver should hold, written from the README's rules, never from
  zivsync's planning code: who has an account, active or not, at which address, with which
  aliases and delegates.
- :class:`Nights` runs every stage as its own process against one ``zivsync-sandbox`` and
  checks each night against the model.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from helpers import API_KEY, Sandbox, read_jsonl, run
from loopback import FIRST_NAMES, LAST_NAMES

DOMAIN, SECOND_DOMAIN, LEGACY = "corp.example", "corp.nl", "corp-legacy.org"  # the last one is not claimed
CLAIMED = (DOMAIN, SECOND_DOMAIN)
BASE = "DC=corp,DC=example"
STAFF, EXCLUDED, SHARED, GROUPS = (f"OU={ou},{BASE}" for ou in ("Staff", "Excluded", "Shared", "Groups"))
NETBIOS = "CORP"
CREATED = "2026-01-01T00:00:00Z"


@dataclass
class Person:
    anchor: str
    sam: str
    name: str
    mail: str
    aliases: list[str]
    enabled: bool = True
    kind: str = "user"  # user or shared (a mailbox type)
    ou: str = STAFF
    present: bool = True  # in the directory at all
    returns: bool = True  # may be re-hired (not when its address went to someone else)

    @property
    def dn(self) -> str:
        return f"CN={self.name},{self.ou}"


@dataclass
class Group:
    id: str
    sam: str
    name: str
    mail: str | None  # None: a security group that is not mail-enabled (no recipient in Exchange)
    members: list[str] = field(default_factory=list)  # anchors and group ids

    @property
    def dn(self) -> str:
        return f"CN={self.name},{GROUPS}"


@dataclass
class Grant:
    mailbox: str  # a shared mailbox's anchor
    trustee: str  # an anchor or a group id
    deny: bool = False


class Organisation:
    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.people: dict[str, Person] = {}
        self.groups: dict[str, Group] = {}
        self.grants: list[Grant] = []
        self.used: set[str] = set()  # every address ever handed out
        self.serial = 0
        self.events: Counter = Counter()

    # -- making things ------------------------------------------------------------------------
    def _id(self) -> str:
        self.serial += 1
        return str(uuid.UUID(int=self.rng.getrandbits(128) | 1 << 76 | self.serial))

    def fresh_address(self, local: str, domain: str = DOMAIN) -> str:
        candidate, n = f"{local}@{domain}", 1
        while candidate in self.used:
            n += 1
            candidate = f"{local}{n}@{domain}"
        self.used.add(candidate)
        return candidate

    def hire(self, kind: str = "user", mail: str | None = None) -> Person:
        given, surname = self.rng.choice(FIRST_NAMES), self.rng.choice(LAST_NAMES)
        local = f"{given}.{surname}".lower().replace(" ", "")
        name = f"{given} {surname}"
        if kind == "shared":
            local, name = f"team-{self.rng.choice(['sales', 'desk', 'info', 'hr', 'it', 'legal'])}", None
        mail = mail or self.fresh_address(local)
        name = name or f"Team {mail.partition('@')[0]}"
        aliases = [self.fresh_address(mail.partition("@")[0], SECOND_DOMAIN)]
        person = Person(self._id(), mail.partition("@")[0], f"{name} {self.serial}", mail, aliases,
                        enabled=kind == "user", kind=kind, ou=SHARED if kind == "shared" else STAFF)
        self.people[person.anchor] = person
        return person

    def group(self, name: str, mail_enabled: bool, members: list[str]) -> Group:
        mail = self.fresh_address(name.lower()) if mail_enabled else None
        group = Group(self._id(), name, name, mail, list(members))
        self.groups[group.id] = group
        return group

    @classmethod
    def generate(cls, seed: int, people: int, shared: int) -> "Organisation":
        org = cls(seed)
        users = [org.hire() for _ in range(people)]
        mailboxes = [org.hire("shared") for _ in range(shared)]
        pick = org.rng.sample
        # SG-Finance (mail-enabled) inside Finance-All (a security group, not mail-enabled)
        inner = org.group("SG-Finance", True, [u.anchor for u in pick(users, 5)])
        outer = org.group("Finance-All", False, [inner.id] + [u.anchor for u in pick(users, 2)])
        team = org.group("SG-Desk", True, [u.anchor for u in pick(users, 4)])
        ops = org.group("Ops-Security", False, [u.anchor for u in pick(users, 3)])
        org.grants += [Grant(mailboxes[0].anchor, outer.id), Grant(mailboxes[1].anchor, team.id),
                       Grant(mailboxes[2].anchor, ops.id), Grant(mailboxes[1].anchor, team.members[0], deny=True)]
        for mailbox in mailboxes:
            org.grants += [Grant(mailbox.anchor, u.anchor) for u in pick(users, 2)]
        return org

    # -- what the extractors write ------------------------------------------------------------
    def streams(self, folder: Path) -> list[Path]:
        """The LDAP stream, then the Exchange stream: the order zivsync run reads them in."""
        ldap, exchange = folder / "directory-ldap.jsonl", folder / "directory-exchange.jsonl"
        ldap.write_bytes(_segment("zivsync-extract-ldap", {"url": "ldaps://dc1.corp.example"}, self.ldap_records()))
        exchange.write_bytes(_segment("zivsync-extract-exchange", {"url": "https://ex1.corp.example/PowerShell"},
                                      self.exchange_records()))
        return [ldap, exchange]

    def present(self) -> list[Person]:
        return sorted((p for p in self.people.values() if p.present), key=lambda p: p.anchor)

    def _addresses(self, person: Person) -> list[str]:
        return [person.mail, *person.aliases, f"{person.sam}@{LEGACY}"]

    def _person(self, person: Person, source: str) -> dict:
        member_of = [g.dn for g in self.groups.values() if person.anchor in g.members]
        return {"type": "person", "source": source, "anchor": person.anchor, "dn": person.dn,
                "upn": f"{person.sam}@{DOMAIN}", "sam_account_name": person.sam, "sid": None, "mail": person.mail,
                "addresses": self._addresses(person), "display_name": person.name, "given_name": None,
                "surname": None,
                # AD knows whether the account is enabled (a shared mailbox's is disabled); Exchange does not
                "enabled": (person.enabled if person.kind == "user" else False) if source == "ldap" else None,
                "mailbox": person.kind, "phone": None, "groups": sorted(member_of) if source == "ldap" else [],
                "sso_key": person.anchor}

    def ldap_records(self) -> list[dict]:
        records = [self._person(p, "ldap") for p in self.present()]
        for group in sorted(self.groups.values(), key=lambda g: g.id):
            members = [self.people[m].dn for m in group.members if m in self.people and self.people[m].present] + \
                [self.groups[m].dn for m in group.members if m in self.groups]
            records.append({"type": "group", "source": "ldap", "id": group.id, "name": group.name, "dn": group.dn,
                            "sid": None, "sam_account_name": group.sam, "mail": group.mail,
                            "addresses": [group.mail] if group.mail else [], "mail_enabled": group.mail is not None,
                            "security_enabled": True, "members": members})
        return records

    def exchange_records(self) -> list[dict]:
        records = [self._person(p, "exchange") for p in self.present()]
        recipients = {g.id for g in self.groups.values() if g.mail}  # only mail-enabled groups are recipients
        for group in sorted(self.groups.values(), key=lambda g: g.id):
            if group.mail is None:
                continue
            members = [m for m in group.members if m in recipients or (m in self.people and self.people[m].present)]
            records.append({"type": "group", "source": "exchange", "id": group.id, "name": group.name,
                            "mail": group.mail, "addresses": [group.mail], "mail_enabled": True,
                            "security_enabled": True, "members": members})
        for mailbox in self.present():
            if mailbox.kind != "shared":
                continue
            records.append(_permission(mailbox.anchor, "NT AUTHORITY\\SELF", ["FullAccess", "ReadPermission"]))
            records.append(_permission(mailbox.anchor, f"{NETBIOS}\\Domain Admins", ["FullAccess"], inherited=True))
            for grant in self.grants:
                if grant.mailbox != mailbox.anchor:
                    continue
                if grant.trustee in self.groups:
                    group = self.groups[grant.trustee]
                    trustee = group.id if group.mail else f"{NETBIOS}\\{group.sam}"  # Get-Recipient: not found
                elif self.people.get(grant.trustee) and self.people[grant.trustee].present:
                    trustee = grant.trustee
                else:
                    continue  # a deleted object's entry: Exchange shows its SID; zivsync drops those
                records.append(_permission(mailbox.anchor, trustee, ["FullAccess"], deny=grant.deny))
        return records


def _permission(mailbox: str, trustee: str, rights: list[str], *, inherited=False, deny=False) -> dict:
    return {"type": "permission", "source": "exchange", "mailbox": mailbox, "trustee": trustee, "rights": rights,
            "inherited": inherited, "deny": deny}


def _segment(producer: str, source: dict, records: list[dict]) -> bytes:
    header = {"type": "header", "stream": "directory", "version": 1, "producer": f"{producer} 0.1.0",
              "created": CREATED, "source": source}
    lines = [header, *records, {"type": "end", "count": len(records)}]
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


# -- a night's changes --------------------------------------------------------------------------


def churn(org: Organisation, night: int, script: dict[int, str]) -> str:
    """Change the organisation as night ``night`` does; returns what kind of night it is."""
    kind = script.get(night, "ordinary")
    rng = org.rng
    users = [p for p in org.present() if p.kind == "user"]
    shared = [p for p in org.present() if p.kind == "shared"]
    if kind == "quiet":
        return kind
    if kind == "reuse-leave":  # a leaver deleted from the directory; tomorrow a new hire gets the address
        leaver = rng.choice([u for u in users if u.enabled and u.ou == STAFF])
        leaver.present, leaver.returns = False, False
        script["reused"] = leaver.mail
        org.events["deletion (address to be reused)"] += 1
        return kind
    if kind == "reuse-hire":
        newcomer = org.hire(mail=script["reused"])
        org.grants.append(Grant(shared[0].anchor, newcomer.anchor))
        org.events["hire with a reused address"] += 1
        return kind
    if kind == "convert":  # a user mailbox converted to a shared one: Zivver cannot follow
        person = rng.choice([u for u in users if u.enabled and u.ou == STAFF])
        person.kind, person.enabled = "shared", False
        org.events["type conversion"] += 1
        return kind
    if kind == "mass-leave":  # a mistake: 40 % disabled at once; must be refused, and undone the next night
        victims = [u for u in users if u.enabled][: max(1, len(users) * 2 // 5)]
        for person in victims:
            person.enabled = False
        script["victims"] = [p.anchor for p in victims]
        org.events["mass leave (refused)"] += 1
        return kind
    if kind == "rename-delegate":  # a delegate's address changes the night another delegate is added
        mailbox = shared[0]
        direct = [g.trustee for g in org.grants if g.mailbox == mailbox.anchor and g.trustee in org.people
                  and org.people[g.trustee].present and org.people[g.trustee].enabled
                  and org.people[g.trustee].kind == "user" and org.people[g.trustee].ou == STAFF and not g.deny]
        person = org.people[direct[0]] if direct else org.rng.choice([u for u in users if u.enabled])
        if not direct:
            org.grants.append(Grant(mailbox.anchor, person.anchor))
        person.aliases, person.mail = person.aliases + [person.mail], org.fresh_address(f"{person.sam}.renamed")
        newcomer = org.rng.choice([u for u in users if u.enabled and u.ou == STAFF and u is not person])
        org.grants.append(Grant(mailbox.anchor, newcomer.anchor))
        org.events["delegate renamed with another delegate added"] += 1
        return kind
    if kind == "mass-return":
        for anchor in script.pop("victims"):
            org.people[anchor].enabled = True
        org.events["mass leave undone"] += 1
        return kind
    for _ in range(rng.randint(2, 5)):
        _one_change(org, rng, users, shared)
    return kind


def _one_change(org: Organisation, rng: random.Random, users: list[Person], shared: list[Person]) -> None:
    event = rng.choice(["hire", "leave", "delete", "rehire", "rename", "alias", "grant", "ungrant", "join",
                        "part", "scope", "unscope"])
    active = [u for u in users if u.enabled and u.ou == STAFF and u.present]
    gone = [p for p in org.people.values() if p.kind == "user" and p.returns and (not p.present or not p.enabled)]
    groups = sorted(org.groups.values(), key=lambda g: g.id)
    if event == "hire":
        person = org.hire()
        rng.choice(groups).members.append(person.anchor)
    elif event == "leave" and active:
        rng.choice(active).enabled = False
    elif event == "delete" and active:
        rng.choice(active).present = False
    elif event == "rehire" and gone:
        person = rng.choice(gone)
        person.present = person.enabled = True
    elif event == "rename" and active:
        person = rng.choice(active)
        old = person.mail
        person.mail = org.fresh_address(f"{person.sam}.new")
        person.aliases = person.aliases + ([old] if rng.random() < 0.5 else [])  # the old address kept, or not
    elif event == "alias" and active:
        person = rng.choice(active)
        if person.aliases and rng.random() < 0.5:
            person.aliases = person.aliases[1:]
        else:
            person.aliases = person.aliases + [org.fresh_address(f"{person.sam}.x", SECOND_DOMAIN)]
    elif event == "grant" and active and shared:
        trustee = rng.choice(active).anchor if rng.random() < 0.6 else rng.choice(groups).id
        org.grants.append(Grant(rng.choice(shared).anchor, trustee))
    elif event == "ungrant" and org.grants:
        org.grants.remove(rng.choice([g for g in org.grants if not g.deny] or org.grants))
    elif event == "join" and active:
        group = rng.choice(groups)
        if (person := rng.choice(active)).anchor not in group.members:
            group.members.append(person.anchor)
    elif event == "part":
        group = rng.choice(groups)
        people = [m for m in group.members if m in org.people]
        if people:
            group.members.remove(rng.choice(people))
    elif event == "scope" and active:
        rng.choice(active).ou = EXCLUDED
    elif event == "unscope":
        moved = [p for p in org.people.values() if p.ou == EXCLUDED and p.present]
        if moved:
            rng.choice(moved).ou = STAFF
    else:
        return
    org.events[event] += 1


# -- what Zivver should hold, from the README's rules -------------------------------------------


@dataclass
class Expected:
    kind: str
    email: str
    name: str
    active: bool
    aliases: list[str]
    delegates: set[str] = field(default_factory=set)  # anchors


class Model:
    """What Zivver should hold, by the rules the README states:

    - a user mailbox in scope is a personal account, active when enabled; a disabled one never
      gets an account; a shared mailbox is a functional account;
    - the account follows its directory object (by anchor) through renames; its aliases are the
      other addresses in the claimed domains;
    - a person gone from the directory, or moved out of scope, is suspended, never deleted, and
      comes back (reactivated) with the same account;
    - an address that a leaver's account still holds is not handed to a newcomer: the newcomer
      gets no account, and is nobody's delegate;
    - Zivver cannot change an account's type: a converted mailbox's account is left as it was;
    - delegates: Full Access not inherited, directly or through groups at any depth (mail-enabled
      or not), minus denied, only people with an active personal account of their own;
    - a plan that the safety limits refuse changes nothing.
    """

    def __init__(self):
        self.accounts: dict[str, Expected] = {}  # by anchor

    def night(self, org: Organisation) -> None:
        in_scope = {p.anchor: p for p in org.present() if p.ou != EXCLUDED}
        for anchor, person in in_scope.items():
            account = self.accounts.get(anchor)
            kind = "user" if person.kind == "user" else "functional"
            if account is not None and account.kind != kind:
                continue  # a type conversion: left alone
            aliases = sorted(a for a in person.aliases if a.rpartition("@")[2] in CLAIMED)
            if account is not None:
                account.email, account.name, account.aliases = person.mail, person.name, aliases
                account.active = person.enabled if kind == "user" else True
            elif kind == "functional" or person.enabled:
                held = {a for other in self.accounts.values() for a in (other.email, *other.aliases)}
                if person.mail in held:
                    continue  # a reused address: withheld
                self.accounts[anchor] = Expected(kind, person.mail, person.name, True, aliases)
        for anchor, account in self.accounts.items():
            if anchor not in in_scope:
                if account.kind == "user":
                    account.active = False
                else:
                    account.delegates = set()
        for anchor, account in self.accounts.items():
            person = in_scope.get(anchor)
            if account.kind == "functional" and person is not None and person.kind == "shared":
                account.delegates = {p for p in self._full_access(org, anchor)
                                     if p in in_scope and in_scope[p].kind == "user" and in_scope[p].enabled
                                     and p in self.accounts and self.accounts[p].kind == "user"}

    @staticmethod
    def _full_access(org: Organisation, mailbox: str) -> set[str]:
        def people(trustee: str, seen: set[str]) -> set[str]:
            if trustee in org.people:
                return {trustee} if org.people[trustee].present else set()
            if trustee in seen or trustee not in org.groups:
                return set()
            seen.add(trustee)
            return set().union(*(people(m, seen) for m in org.groups[trustee].members))

        allowed, denied = set(), set()
        for grant in org.grants:
            if grant.mailbox == mailbox:
                (denied if grant.deny else allowed).update(people(grant.trustee, set()))
        return allowed - denied - {mailbox}

    def expected(self) -> dict[str, dict]:
        """By address, as a snapshot shows accounts."""
        by_anchor = {a: e.email for a, e in self.accounts.items()}
        return {e.email: {"kind": e.kind, "name": e.name, "active": e.active, "aliases": sorted(e.aliases),
                          "delegates": sorted(by_anchor[d] for d in e.delegates)} for e in self.accounts.values()}


# -- the nights ---------------------------------------------------------------------------------


def script_for(nights: int) -> dict[int, str]:
    """Which nights are special; the others are ordinary."""
    script = {2: "quiet", 3: "rename-delegate", 5: "reuse-leave", 6: "reuse-hire", 9: "convert", 12: "mass-leave",
              13: "mass-return", 15: "rename-delegate", 17: "quiet"}
    script.update({n: "quiet" for n in range(20, nights + 1, 10)})
    return {n: kind for n, kind in script.items() if n <= nights}


@dataclass
class Figures:
    nights: int = 0
    writes: int = 0
    requests: int = 0
    changes: Counter = field(default_factory=Counter)
    refused: int = 0
    quiet: int = 0


class Nights:
    """Runs the nights: every stage as its own process against one sandbox, checked each night."""

    def __init__(self, org: Organisation, folder: Path):
        self.org, self.folder, self.model = org, folder, Model()
        self.state = folder / "state"
        self.figures = Figures()
        self.domains = [arg for domain in CLAIMED for arg in ("--claimed-domain", domain)]

    def run(self, nights: int, script: dict[int, str] | None = None) -> Figures:
        script = script_for(nights) if script is None else script
        with Sandbox("--rate-limit", "0", claimed=CLAIMED) as sandbox:
            self.sandbox = sandbox
            for night in range(1, nights + 1):
                kind = churn(self.org, night, script) if night > 1 else "first"
                self.night(night, kind)
        return self.figures

    def stage(self, name: str, *args, expect=(0,)) -> "object":
        done = run(name, *args, env=self.sandbox.env, timeout=300)
        assert done.returncode in expect, f"{name}: exit {done.returncode}: {done.stderr}"
        assert API_KEY not in done.stderr
        return done

    def night(self, night: int, kind: str) -> None:
        folder = self.folder / f"night-{night:03d}"
        folder.mkdir()
        streams = self.org.streams(folder)
        inputs = [a for s in streams for a in ("-i", s)]
        self.stage("zivsync-normalize", *inputs, *self.domains, "--exclude-ou", EXCLUDED, "-o", folder / "desired.jsonl")
        self.stage("zivsync-snapshot", "-o", folder / "current.jsonl")
        planned = self.stage("zivsync-diff", "-i", folder / "desired.jsonl", "--current", folder / "current.jsonl",
                             "--state", self.state, *self.domains, "-o", folder / "plan.jsonl", expect=(0, 3))
        refused = planned.returncode == 3
        assert refused == (kind == "mass-leave"), f"night {night} ({kind}): {planned.stderr}"
        self.sandbox.control("POST", "/_sandbox/stats/reset")
        self.stage("zivsync-push", "-i", folder / "plan.jsonl", "--apply", "--state", self.state, "--rate-limit",
                   "1000", "-o", folder / "results.jsonl", expect=(3,) if refused else (0,))
        stats = self.sandbox.control("GET", "/_sandbox/stats")
        changes = [r for r in read_jsonl(folder / "plan.jsonl") if r["type"] == "change"]
        if refused:
            assert stats["requests"] == 0, f"night {night}: the refused plan sent {stats['requests']} requests"
            self.figures.refused += 1
        else:
            results = [r for r in read_jsonl(folder / "results.jsonl") if r["type"] == "result"]
            failed = [r for r in results if r["status"] != "applied"]
            assert not failed, f"night {night} ({kind}): {failed}"
            self.model.night(self.org)
        if kind == "quiet":
            assert changes == [] and stats["writes"] == 0, f"night {night}: a quiet night wrote {stats['writes']}"
            self.figures.quiet += 1
        self.figures.writes += stats["writes"]
        self.figures.requests += stats["requests"]
        self.figures.changes.update(c["op"] for c in changes if not refused)
        self.figures.nights += 1
        # converged: a second diff plans nothing, and Zivver holds what the model says
        self.stage("zivsync-snapshot", "-o", folder / "after.jsonl")
        again = self.stage("zivsync-diff", "-i", folder / "desired.jsonl", "--current", folder / "after.jsonl",
                           "--state", self.state, *self.domains, "-o", folder / "again.jsonl", expect=(0, 3))
        leftover = [r for r in read_jsonl(folder / "again.jsonl") if r["type"] == "change"]
        assert refused or (leftover == [] and again.returncode == 0), f"night {night} ({kind}) did not converge: {leftover}"
        held = {r["email"]: {"kind": r["kind"], "name": r["name"], "active": r["active"],
                             "aliases": r["aliases"], "delegates": r["delegates"]}
                for r in read_jsonl(folder / "after.jsonl") if r["type"] == "account"}
        expected = self.model.expected()
        differences = {e: (held.get(e), expected.get(e)) for e in sorted(set(held) | set(expected))
                       if held.get(e) != expected.get(e)}
        assert not differences, f"night {night} ({kind}): Zivver differs from the model: {differences}"
