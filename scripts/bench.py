#!/usr/bin/env python3
"""Benchmark of the zivsync stages on a synthetic organisation (``make bench``).

What it measures, and why
-------------------------
The issue sets a budget: at 100,000 people, every stage must finish in at most 5 s and
peak at most 400 MB of resident memory on this 2-core machine. (Zivver's own Synctool
asks for 8 GB of memory at that size.) This script checks that budget:

1. It generates, with a fixed seed, a directory stream ``directory.jsonl`` as an LDAP
   extractor would write it: 100,000 people (user mailboxes, ~3 % disabled, UTF-8 names,
   1-3 SMTP addresses in two claimed domains and one unclaimed one), 5 % shared mailboxes,
   10 % groups (nested, a few cycles, a handful over 1,500 members) and 20 % FullAccess
   permissions (some inherited, some on ``NT AUTHORITY\\SELF`` or orphaned SIDs that
   normalize must drop). ``--people`` scales it all.
2. It runs the real ``zivsync-normalize`` on it to get the desired accounts stream, and
   derives from that a "current" accounts stream (what ``zivsync-snapshot`` would read
   from Zivver) that differs in 2 % of the accounts, so that ``zivsync-diff`` has work.
3. It times ``zivsync-validate``, ``zivsync-normalize`` and ``zivsync-diff``, each as a
   whole process: interpreter start-up, imports, schema compilation, reading and checking
   the input, the work itself and writing the output; that is what a user waits for.

For each stage it reports the wall time and the peak resident memory (ru_maxrss) of that
one process and, for scale, the time ``jq -c .`` takes to parse and re-print the same
input(s): the cost of merely reading the JSON with a common C tool. (jq 1.6, as Debian 12
ships it, is slow: it can take longer than a stage built on orjson, so it is a reference
point rather than a hard floor.)

Peak memory is measured through a tiny launcher process. On Linux, a process's ru_maxrss
includes the resident size of the process it was forked from, recorded at ``execve`` (even
for vfork/posix_spawn), so a child spawned straight from this script, which holds the
generated organisation in memory, would report this script's size. The launcher (a bare
``python -I -S``, about 5 MB) spawns the stage, reaps it with ``os.wait4`` and hands back
the stage's own exit status, wall time and ru_maxrss (KiB on Linux). Figures below ~5 MB
are therefore not meaningful; the stages are far above that.

Linux only: it relies on ``os.wait4`` and Linux's ru_maxrss semantics. It is a dev script.

Usage::

    python scripts/bench.py                        # 100,000 people, temporary work folder
    python scripts/bench.py --people 2000          # a quick run, a few seconds
    python scripts/bench.py --keep /tmp/bench100k --json bench.json
    python scripts/bench.py --keep /tmp/bench100k --skip-generate   # reuse directory.jsonl
    python scripts/bench.py --ldap-only --ldap-users 2000            # extract-ldap vs ldapsearch only

More sections follow the stages: push against a zivsync-sandbox (scripts/bench_push.py),
extract-exo against the fake Exchange Online with 20 ms a request, with and without $batch
(scripts/bench_exo.py), extract-exchange against the fake remote PowerShell with 10 ms a
request (scripts/bench_exchange.py), and extract-ldap against a Samba AD DC seeded with 10,000 users, next
to OpenLDAP's ldapsearch asking the same (scripts/bench_ldap.py; seeding takes a few minutes).

Exit status: 0 when every stage ran, whether or not it met the target (this is a report);
1 when a stage failed or could not run, or when the generated data does not match the
schemas (a bug of this script); 2 for usage errors.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
import unicodedata
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from itertools import chain
from pathlib import Path
from typing import Iterable, Iterator

import orjson

REPO = Path(__file__).resolve().parent.parent
SCHEMAS = REPO / "schemas"


def _invocation(stage: str) -> list[str]:
    """The installed console script, or the module run from this source tree."""
    script = shutil.which(f"zivsync-{stage}")
    return [script] if script else [sys.executable, "-m", "stages", stage]  # stage names have hyphens


#: How each timed stage is started. Children get this repository on PYTHONPATH.
STAGE = {stage: _invocation(stage) for stage in ("validate", "normalize", "diff")}

TARGET_WALL_S = 5.0
TARGET_PEAK_MB = 400.0

SEED = 42
PRODUCER = "zivsync-bench-generator 0.1.0"
CREATED = "2026-01-01T00:00:00Z"  # fixed, so that the same --people gives the same bytes
SOURCE = "ldap"
CLAIMED_DOMAINS = ("contoso.com", "contoso.nl")
UNCLAIMED_DOMAIN = "contoso-old.org"
UPN_DOMAIN = "contoso.com"
DOMAIN_SID = "S-1-5-21-1004336348-1177238915-682003330"
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_DNS, "bench.zivsync.invalid")  # anchors and group ids
ZIVVER_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_DNS, "zivver.bench.zivsync.invalid")  # zivver_id

# Proportions, per person.
SHARED_PER_PERSON = 0.05
GROUPS_PER_PERSON = 0.10
PERMISSIONS_PER_PERSON = 0.20
DISABLED_FRACTION = 0.03
PHONE_FRACTION = 0.5
NESTING_FRACTION = 0.10  # groups that also have other groups as members
CURRENT_PERTURBED_FRACTION = 0.02

FILES = {
    "directory": "directory.jsonl",
    "desired": "desired.jsonl",
    "current": "current.jsonl",
    "plan": "plan.jsonl",
}

# -- name pools --------------------------------------------------------------------------

GIVEN_NAMES = (
    "Anna", "Jan", "Sophie", "Daan", "Emma", "Lucas", "Julia", "Sem", "Lotte", "Bram",
    "Noah", "Eva", "Thomas", "Sanne", "Pieter", "Fleur", "Mohammed", "Fatima", "Yusuf", "Aylin",
    "Émile", "Zoë", "Renée", "Chloé", "Søren", "Bjørn", "Jürgen", "Jörg", "Günther", "Ines",
    "Mia", "Finn", "Saskia", "Willem", "Kees", "Annelies", "Noëlle", "François", "José", "Łukasz",
)
SURNAMES = (
    "de Vries", "Jansen", "de Jong", "Bakker", "Visser", "Smit", "Meijer", "de Boer", "Mulder",
    "van den Berg", "Dijkstra", "Janssen", "Hendriks", "Peters", "Vermeulen", "van Dijk",
    "Müller", "Groß", "Schröder", "Weiß", "Østergaard", "Sørensen", "Lefèvre", "Dubois", "Nuñez",
    "Öztürk", "Yılmaz", "El Amrani", "O'Brien", "Kowalczyk", "van der Meer", "Bos", "Brouwer",
)
CHINESE_GIVEN = (("伟", "Wei"), ("芳", "Fang"), ("娜", "Na"), ("敏", "Min"), ("静", "Jing"),
                 ("磊", "Lei"), ("洋", "Yang"), ("婷", "Ting"), ("杰", "Jie"), ("秀英", "Xiuying"))
CHINESE_SURNAMES = (("王", "Wang"), ("李", "Li"), ("张", "Zhang"), ("刘", "Liu"), ("陈", "Chen"),
                    ("杨", "Yang"), ("黄", "Huang"), ("赵", "Zhao"), ("吴", "Wu"), ("周", "Zhou"))
CHINESE_FRACTION = 0.08

CITIES = ("Amsterdam", "Rotterdam", "Utrecht", "Den Haag", "Eindhoven", "Groningen", "Zürich", "København")
PEOPLE_OUS = ("Staff", "Staff", "Staff", "Management", "Contractors")
TOPICS = ("Finance", "Klantenservice", "Secretariaat", "HR", "Facilitair", "Inkoop", "Juridische Zaken",
          "Communicatie", "Receptie", "Servicedesk", "Planning", "Crédit", "Büro", "Sécurité", "Zorg")

_FOLD = str.maketrans({"ß": "ss", "ø": "o", "Ø": "O", "æ": "ae", "Æ": "Ae", "œ": "oe",
                       "ł": "l", "Ł": "L", "ı": "i", "đ": "d"})


def ascii_fold(text: str) -> str:
    """'Groß Østergaard' → 'Gross Ostergaard': how address policies spell names."""
    return unicodedata.normalize("NFKD", text.translate(_FOLD)).encode("ascii", "ignore").decode()


def slug(text: str) -> str:
    """'Juridische Zaken' → 'juridische-zaken', for addresses."""
    return ascii_fold(text).lower().replace(" ", "-")


def new_uuid(kind: str, index: int) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{kind}:{index}"))


# -- the directory stream -----------------------------------------------------------------


@dataclass
class Sizes:
    people: int
    shared: int
    groups: int
    permissions: int

    @classmethod
    def for_people(cls, people: int) -> "Sizes":
        return cls(people, round(people * SHARED_PER_PERSON), max(1, round(people * GROUPS_PER_PERSON)),
                   round(people * PERMISSIONS_PER_PERSON))

    @property
    def records(self) -> int:
        return self.people + self.shared + self.groups + self.permissions


def pick_name(rng: random.Random) -> tuple[str, str, str, str, str]:
    """(given name, its ASCII form, surname, its ASCII form, display name)."""
    if rng.random() < CHINESE_FRACTION:
        (given, given_ascii), (surname, surname_ascii) = rng.choice(CHINESE_GIVEN), rng.choice(CHINESE_SURNAMES)
        return given, given_ascii, surname, surname_ascii, f"{surname}{given}"
    given, surname = rng.choice(GIVEN_NAMES), rng.choice(SURNAMES)
    return given, ascii_fold(given), surname, ascii_fold(surname).replace(" ", ""), f"{given} {surname}"


def secondary_addresses(rng: random.Random, local: str, primary_domain: str) -> list[str]:
    """0-2 more SMTP addresses: the other claimed domain and/or the unclaimed old one."""
    other = next(d for d in CLAIMED_DOMAINS if d != primary_domain)
    draw = rng.random()
    if draw < 0.50:
        return []
    if draw < 0.85:
        return [f"{local}@{other}" if rng.random() < 0.6 else f"{local}@{UNCLAIMED_DOMAIN}"]
    return [f"{local}@{other}", f"{local}@{UNCLAIMED_DOMAIN}"]


def phone_number(rng: random.Random) -> str:
    if rng.random() < 0.7:
        return f"+316{rng.randrange(10**8):08d}"  # Dutch mobile
    return f"+3120{rng.randrange(10**7):07d}"  # Amsterdam landline


def make_users(rng: random.Random, count: int) -> list[dict]:
    """User mailboxes. Local parts are unique case-insensitively, whatever the domain."""
    taken: Counter[str] = Counter()
    users = []
    for i in range(count):
        given, given_ascii, surname, surname_ascii, display = pick_name(rng)
        base = f"{given_ascii}.{surname_ascii}"
        taken[base.lower()] += 1
        n = taken[base.lower()]
        local = base if n == 1 else f"{base}{n}"
        cn = display if n == 1 else f"{display} ({n})"
        domain = rng.choice(CLAIMED_DOMAINS)
        mail = f"{local}@{domain}"
        anchor = new_uuid("person", i)
        users.append({
            "type": "person",
            "source": SOURCE,
            "anchor": anchor,
            "dn": f"CN={cn},OU={rng.choice(PEOPLE_OUS)},OU={rng.choice(CITIES)},DC=contoso,DC=com",
            "upn": f"{local.lower()}@{UPN_DOMAIN}",
            "sam_account_name": f"{(given_ascii[:1] + surname_ascii)[:12].lower()}{i}",
            "sid": f"{DOMAIN_SID}-{1000 + i}",
            "mail": mail,
            "addresses": [mail, *secondary_addresses(rng, local, domain)],
            "display_name": display,
            "given_name": given,
            "surname": surname,
            "enabled": rng.random() >= DISABLED_FRACTION,
            "mailbox": "user",
            "phone": phone_number(rng) if rng.random() < PHONE_FRACTION else None,
            "sso_key": anchor,
        })
    return users


def make_shared(rng: random.Random, count: int, first_rid: int) -> list[dict]:
    """Shared mailboxes: disabled user objects with a mailbox, no SSO key, no phone."""
    shared = []
    for k in range(count):
        topic, city = rng.choice(TOPICS), rng.choice(CITIES)
        name = f"{topic} {city} {k + 1}"
        local = f"{slug(topic)}.{slug(city)}.{k + 1}"
        mail = f"{local}@{rng.choice(CLAIMED_DOMAINS)}"
        extra = [f"{local}@{UNCLAIMED_DOMAIN}"] if rng.random() < 0.2 else []
        shared.append({
            "type": "person",
            "source": SOURCE,
            "anchor": new_uuid("shared", k),
            "dn": f"CN={name},OU=Shared Mailboxes,DC=contoso,DC=com",
            "upn": f"{local}@{UPN_DOMAIN}",
            "sam_account_name": f"SM-{k + 1:06d}",
            "sid": f"{DOMAIN_SID}-{first_rid + k}",
            "mail": mail,
            "addresses": [mail, *extra],
            "display_name": name,
            "given_name": None,
            "surname": None,
            "enabled": False,
            "mailbox": "shared",
            "phone": None,
            "sso_key": None,
        })
    return shared


def group_size(rng: random.Random, big: bool, people: int) -> int:
    return min(people, rng.randint(1500, 4000) if big else rng.randint(5, 50))


def make_groups(rng: random.Random, users: list[dict], count: int, first_rid: int) -> tuple[list[dict], list[str]]:
    """Security groups, half of them mail-enabled, with person and (10 %) group members.

    Membership is carried by the groups' ``members`` only (persons get no ``groups`` list:
    it would repeat the same ids and push the file past 80 MB). Returns the groups and the
    ids of the notable ones: the 1,500+ member groups, and one group on each membership
    cycle (A → B → A, A → B → C → A), which the first permissions are granted to.
    """
    ids = [new_uuid("group", j) for j in range(count)]
    big = set(rng.sample(range(count), min(count, max(1, round(count * 0.0005)))))
    groups = []
    for j in range(count):
        members_at = rng.sample(range(len(users)), group_size(rng, j in big, len(users)))
        members = [users[m]["anchor"] for m in members_at]
        if count > 1 and rng.random() < NESTING_FRACTION:
            members += [ids[x] for x in rng.sample(range(count), min(count, rng.randint(1, 3))) if x != j]
        topic, city = rng.choice(TOPICS), rng.choice(CITIES)
        name = f"SG {topic} {city} {j + 1}"
        mail_enabled = rng.random() < 0.5
        mail = f"sg-{slug(topic)}-{slug(city)}-{j + 1}@{rng.choice(CLAIMED_DOMAINS)}" if mail_enabled else None
        groups.append({
            "type": "group",
            "source": SOURCE,
            "id": ids[j],
            "name": name,
            "dn": f"CN={name},OU=Groups,OU={city},DC=contoso,DC=com",
            "sid": f"{DOMAIN_SID}-{first_rid + j}",
            "mail": mail,
            "addresses": [mail] if mail else [],
            "mail_enabled": mail_enabled,
            "security_enabled": True,
            "members": members,
        })
    notable = [ids[j] for j in sorted(big)]
    if count >= 3:
        for _ in range(max(1, count // 2000)):
            ring = rng.sample(range(count), rng.choice((2, 3)))
            for a, b in zip(ring, ring[1:] + ring[:1]):
                if ids[b] not in groups[a]["members"]:
                    groups[a]["members"].append(ids[b])
            notable.append(ids[ring[0]])
    return groups, notable


def mailbox_ref(rng: random.Random, mailbox: dict) -> str:
    return mailbox["anchor"] if rng.random() < 0.5 else mailbox["mail"]


def trustee_ref(rng: random.Random, users: list[dict], groups: list[dict], orphan_rid: int) -> str:
    """A person's anchor or e-mail, a group id, or something normalize must drop."""
    draw = rng.random()
    if draw < 0.45:
        return rng.choice(users)["anchor"]
    if draw < 0.75:
        return rng.choice(users)["mail"]
    if draw < 0.90:
        return rng.choice(groups)["id"]
    if draw < 0.95:
        return "NT AUTHORITY\\SELF"
    return f"{DOMAIN_SID}-{orphan_rid + rng.randrange(10**6)}"  # a deleted account's SID


def make_permissions(rng: random.Random, users: list[dict], shared: list[dict], groups: list[dict],
                     notable: list[str], count: int, orphan_rid: int) -> list[dict]:
    """FullAccess entries, 85 % on shared mailboxes; the first ones grant to the notable groups
    (big ones, cyclic ones) on shared mailboxes, so that normalize must expand them."""
    permissions = []
    for p in range(count):
        on_shared = shared and (rng.random() < 0.85 or p < len(notable))
        mailbox = rng.choice(shared) if on_shared else rng.choice(users)
        trustee = notable[p] if p < len(notable) else trustee_ref(rng, users, groups, orphan_rid)
        permissions.append({
            "type": "permission",
            "source": SOURCE,
            "mailbox": mailbox_ref(rng, mailbox),
            "trustee": trustee,
            "rights": ["FullAccess"],
            "inherited": rng.random() < 0.05,
            "deny": False,
        })
    return permissions


def header(kind: str, **extra) -> dict:
    return {"type": "header", "stream": kind, "version": 1, "producer": PRODUCER, "created": CREATED, **extra}


def write_stream(path: Path, head: dict, records: Iterable[dict]) -> int:
    """One segment: header, records, end with the count. Returns the count."""
    count = 0
    with open(path, "wb", buffering=1 << 20) as out:
        out.write(orjson.dumps(head, option=orjson.OPT_APPEND_NEWLINE))
        for record in records:
            out.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
            count += 1
        out.write(orjson.dumps({"type": "end", "count": count}, option=orjson.OPT_APPEND_NEWLINE))
    return count


def generate_directory(path: Path, sizes: Sizes) -> int:
    """Write the synthetic organisation as one directory segment; returns the record count."""
    rng = random.Random(SEED)
    users = make_users(rng, sizes.people)
    rid = 1000 + sizes.people
    shared = make_shared(rng, sizes.shared, rid)
    rid += sizes.shared
    groups, notable = make_groups(rng, users, sizes.groups, rid)
    rid += sizes.groups
    permissions = make_permissions(rng, users, shared, groups, notable, sizes.permissions, rid + 100_000)
    head = header("directory", generator={"seed": SEED, **asdict(sizes)})
    return write_stream(path, head, chain(users, shared, groups, permissions))


# -- the current accounts stream -------------------------------------------------------------

PERTURBATIONS = ("name", "drop_alias", "add_alias", "flip_active", "drop_delegate", "remove", "extra")


def read_records(path: Path, record_type: str) -> Iterator[dict]:
    with open(path, "rb") as handle:
        for line in handle:
            if line.strip():
                record = orjson.loads(line)
                if record.get("type") == record_type:
                    yield record


def zivver_id(email: str) -> str:
    return str(uuid.uuid5(ZIVVER_NAMESPACE, email))


def extra_account(number: int, neighbour: dict) -> dict:
    """An account Zivver has and the directory no longer wants: a leaver (to suspend), or an
    old team box with ``neighbour`` as its delegate (to empty)."""
    if number % 2:
        email, kind, name = f"former.team{number}@{CLAIMED_DOMAINS[1]}", "functional", f"Former team {number}"
        delegates = [neighbour["email"]] if neighbour["kind"] == "user" else []
    else:
        email, kind, name = f"former.employee{number}@{CLAIMED_DOMAINS[0]}", "user", f"Former Employee {number}"
        delegates = []
    return {"type": "account", "kind": kind, "email": email, "name": name, "active": True,
            "aliases": [], "delegates": delegates, "sso_key": None, "phone": None, "anchors": [],
            "zivver_id": zivver_id(email), "sources": ["zivver"]}


def choose_perturbations(rng: random.Random, desired: list[dict]) -> dict[int, str]:
    """Which accounts (by position) to perturb, and how: 2 %, the kinds taking turns."""
    everyone = list(range(len(desired)))
    eligible = {
        "drop_alias": [i for i in everyone if desired[i]["aliases"]],
        "flip_active": [i for i in everyone if desired[i]["kind"] == "user"],
        "drop_delegate": [i for i in everyone if desired[i]["delegates"]],
    }
    pools = {how: rng.sample(eligible.get(how, everyone), len(eligible.get(how, everyone)))
             for how in PERTURBATIONS}  # each a shuffled list of candidates, popped from the end
    chosen: dict[int, str] = {}
    for n in range(round(len(desired) * CURRENT_PERTURBED_FRACTION)):
        how = PERTURBATIONS[n % len(PERTURBATIONS)]
        pool = pools[how]
        while pool and pool[-1] in chosen:
            pool.pop()
        if pool:
            chosen[pool.pop()] = how
    return chosen


def perturb(rng: random.Random, account: dict, how: str) -> None:
    """Change one account in place the way ``how`` says (see choose_perturbations)."""
    if how == "name":
        account["name"] = f"{account['name']} (oud)"
    elif how == "drop_alias":
        account["aliases"] = sorted(set(account["aliases"]) - {rng.choice(account["aliases"])})
    elif how == "add_alias":
        local, _, domain = account["email"].partition("@")
        account["aliases"] = sorted({*account["aliases"], f"{local}.old@{domain}"})
    elif how == "flip_active":
        account["active"] = not account["active"]
    elif how == "drop_delegate":
        account["delegates"] = sorted(set(account["delegates"]) - {rng.choice(account["delegates"])})


def current_accounts(desired: list[dict], rng: random.Random, done: Counter) -> Iterator[dict]:
    """The desired accounts with a zivver_id each, 2 % of them perturbed, removed or joined by an extra."""
    chosen = choose_perturbations(rng, desired)
    for i, account in enumerate(desired):
        account["zivver_id"] = zivver_id(account["email"])
        account.pop("why", None)  # what normalize says of the directory: a snapshot of Zivver has none of it
        account.pop("unmanaged", None)
        how = chosen.get(i)
        if how:
            done[how] += 1
        if how == "remove":
            continue
        if how not in (None, "extra"):
            perturb(rng, account, how)
        yield account
        if how == "extra":
            yield extra_account(done[how], account)


def build_current(desired_path: Path, current_path: Path) -> tuple[int, int, Counter]:
    """Write current.jsonl from desired.jsonl; returns (desired count, current count, perturbations)."""
    desired = list(read_records(desired_path, "account"))
    done: Counter[str] = Counter()
    head = header("accounts", derived_from=desired_path.name, perturbed_fraction=CURRENT_PERTURBED_FRACTION)
    count = write_stream(current_path, head, current_accounts(desired, random.Random(SEED), done))
    return len(desired), count, done


# -- checking what we generate --------------------------------------------------------------


def schema_validator(kind: str):
    """A jsonschema validator for one stream kind, with every schema file in a registry."""
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    documents = [orjson.loads(path.read_bytes()) for path in sorted(SCHEMAS.glob("*.json"))]
    registry = Registry().with_resources((doc["$id"], Resource.from_contents(doc)) for doc in documents)
    return Draft202012Validator(next(d for d in documents if d["$id"].endswith(f"/{kind}.json")), registry=registry)


def sample_lines(total: int, sample: int) -> set[int]:
    """Line numbers to schema-check: the first half of the sample, the other half spread
    evenly over the rest (so every record type is seen), and the last line."""
    first = sample // 2
    rest = range(first + 1, total + 1)
    step = max(1, len(rest) // max(1, sample - first))
    return {*range(1, first + 1), *rest[::step][: sample - first], total}


def check_file(path: Path, kind: str, sample: int) -> list[str]:
    """Schema-check a sample of lines; check the header, and the end count in full."""
    validator, problems = schema_validator(kind), []
    with open(path, "rb") as handle:
        total = sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
    checked = sample_lines(total, sample)
    records, head, last = 0, None, None
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            record = last = orjson.loads(line)
            if number == 1:
                head = record
            elif record.get("type") != "end":
                records += 1
            if number in checked:
                problems += [f"{path.name}:{number}: {'/'.join(map(str, e.absolute_path)) or '(record)'}: "
                             f"{e.message}" for e in validator.iter_errors(record)]
    if not head or head.get("type") != "header" or head.get("stream") != kind:
        problems.append(f"{path.name}:1: not a {kind} header")
    if not last or last.get("type") != "end" or last.get("count") != records:
        problems.append(f"{path.name}: the end record does not count the {records} records")
    return problems


def count_records(path: Path) -> int:
    """Records in a stream, header and end records excluded."""
    count = 0
    with open(path, "rb") as handle:
        for line in handle:
            if line.strip() and orjson.loads(line).get("type") not in ("header", "end"):
                count += 1
    return count


# -- measuring a process ------------------------------------------------------------------

# Runs as `python -I -S -c LAUNCHER FD COMMAND...`: spawns COMMAND, reaps it with wait4 and
# writes "exit-code wall-seconds maxrss-KiB" (or "127 - -" if it cannot start it) to FD.
# See the module docstring for why.
LAUNCHER = r"""
import os, sys, time
fd, argv = int(sys.argv[1]), sys.argv[2:]
os.set_inheritable(fd, False)
start = time.perf_counter()
try:
    pid = os.posix_spawnp(argv[0], argv, os.environ)
except OSError as error:
    os.write(2, ("cannot start %s: %s\n" % (argv[0], error)).encode())
    os.write(fd, b"127 - -\n")
    sys.exit(0)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - start
os.write(fd, ("%d %.6f %d\n" % (os.waitstatus_to_exitcode(status), wall, usage.ru_maxrss)).encode())
"""


@dataclass
class Measure:
    exit_code: int
    wall_s: float | None  # None: the command did not start
    peak_mb: float | None


def child_environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(REPO), env.get("PYTHONPATH"))))
    return env


def measure(command: list[str], cwd: Path, stdout_path: Path | None, stderr_path: Path | None,
            env: dict[str, str] | None = None) -> Measure:
    """Run ``command`` to its end; its own exit code, wall time and peak RSS. ``env``: added to
    the environment."""
    read_end, write_end = os.pipe()
    with open(stdout_path or os.devnull, "wb") as out, open(stderr_path or os.devnull, "wb") as err:
        launcher = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", LAUNCHER, str(write_end), *command],
            stdin=subprocess.DEVNULL, stdout=out, stderr=err, pass_fds=(write_end,), cwd=cwd,
            env={**child_environment(), **(env or {})})
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            answer = pipe.read().split()
        _, status, _ = os.wait4(launcher.pid, 0)
        launcher.returncode = os.waitstatus_to_exitcode(status)
    if len(answer) != 3 or answer[1] == b"-":  # the launcher died, or could not start the command
        return Measure(int(answer[0]) if answer else launcher.returncode or 1, None, None)
    code, wall, maxrss_kib = answer
    return Measure(int(code), float(wall), int(maxrss_kib) / 1024)


# -- the stages -----------------------------------------------------------------------------


@dataclass
class StageResult:
    stage: str
    command: list[str]
    inputs: list[str]
    records_in: int | None = None
    status: str = "SKIPPED"  # OK | OVER | FAILED | SKIPPED
    exit_code: int | None = None
    wall_s: float | None = None
    peak_mb: float | None = None
    jq_floor_s: float | None = None
    jq_peak_mb: float | None = None
    target: dict = field(default_factory=lambda: {"wall_s": TARGET_WALL_S, "peak_mb": TARGET_PEAK_MB})
    note: str = ""


def stage_commands(work: Path) -> dict[str, tuple[list[str], list[Path]]]:
    """Each timed stage: its command line and its input files."""
    directory, desired, current, plan = (work / FILES[k] for k in ("directory", "desired", "current", "plan"))
    claimed = [arg for domain in CLAIMED_DOMAINS for arg in ("--claimed-domain", domain)]
    return {
        "validate": ([*STAGE["validate"], str(directory)], [directory]),
        "normalize": ([*STAGE["normalize"], *claimed, "-i", str(directory), "-o", str(desired)], [directory]),
        "diff": ([*STAGE["diff"], *claimed, "-i", str(desired), "--current", str(current), "-o", str(plan),
                  "--max-suspend", "100000", "--max-suspend-percent", "100", "--max-delegate-removals", "100000",
                  "--max-alias-removals", "100000"], [desired, current]),
    }


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").rstrip("\n").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def run_stage(name: str, work: Path) -> StageResult:
    command, inputs = stage_commands(work)[name]
    result = StageResult(name, command, [p.name for p in inputs])
    missing = [p.name for p in inputs if not p.exists()]
    if missing:
        result.note = f"input missing: {', '.join(missing)}"
        print(f"  {name}: SKIPPED ({result.note})", file=sys.stderr)
        return result
    result.records_in = sum(count_records(p) for p in inputs)
    stdout_path, stderr_path = work / f"{name}.stdout", work / f"{name}.stderr"
    print(f"  {name}: {' '.join(command)}", file=sys.stderr)
    run = measure(command, work, stdout_path, stderr_path)
    result.exit_code, result.wall_s, result.peak_mb = run.exit_code, run.wall_s, run.peak_mb
    if run.exit_code != 0:
        result.status = "FAILED"
        print(f"  {name}: FAILED with exit code {run.exit_code}; its stderr ends with:", file=sys.stderr)
        report = tail(stderr_path) or tail(stdout_path) or "(nothing)"
        print("    " + report.replace("\n", "\n    "), file=sys.stderr)
    elif run.wall_s > TARGET_WALL_S or run.peak_mb > TARGET_PEAK_MB:
        result.status = "OVER"
    else:
        result.status = "OK"
    return result


def jq_floor(inputs: list[Path], work: Path, cache: dict) -> Measure | None:
    """``jq -c . FILES >/dev/null``: parsing and printing the same JSON in C, as a floor."""
    key = tuple(inputs)
    if key not in cache:
        jq = shutil.which("jq")
        cache[key] = measure([jq, "-c", ".", *map(str, inputs)], work, None, None) if jq else None
    return cache[key]


def plan_summary(path: Path) -> str:
    if not path.exists():
        return ""
    ops = Counter(r.get("op") for r in read_records(path, "change"))
    skips = sum(1 for _ in read_records(path, "skip"))
    by_op = ", ".join(f"{op} {n:,}" for op, n in sorted(ops.items(), key=lambda kv: str(kv[0])))
    return f"plan.jsonl: {sum(ops.values()):,} changes ({by_op or 'none'}), {skips:,} skips"


# -- the report --------------------------------------------------------------------------


def fmt(value: float | int | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(results: list[StageResult], jq_found: bool) -> None:
    target = f"≤ {TARGET_WALL_S:g} s, ≤ {TARGET_PEAK_MB:g} MB"
    rows = [("stage", "records in", "wall s", "peak MB", "jq floor s", "target", "result")]
    for r in results:
        jq = fmt(r.jq_floor_s, ".2f") if jq_found else "jq not found"
        rows.append((r.stage, fmt(r.records_in, ","), fmt(r.wall_s, ".2f"), fmt(r.peak_mb, ".1f"),
                     jq, target, r.status))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    left = {0, 5, 6}
    for n, row in enumerate(rows):
        cells = [c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        print(" | ".join(cells).rstrip())
        if n == 0:
            print("-+-".join("-" * w for w in widths))


# -- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time zivsync-validate, -normalize and -diff on a synthetic organisation.",
        epilog="Example: python scripts/bench.py --people 2000   (a quick run)")
    parser.add_argument("--people", type=int, default=100_000,
                        help="user mailboxes to generate (default 100000); shared mailboxes, groups and "
                             "permissions are 5 %%, 10 %% and 20 %% of it")
    parser.add_argument("--keep", metavar="DIR", type=Path,
                        help="work in DIR and keep the streams (default: a temporary folder, removed)")
    parser.add_argument("--json", metavar="FILE", type=Path, help="also write the figures as JSON to FILE")
    parser.add_argument("--skip-generate", action="store_true",
                        help="reuse DIR/directory.jsonl from an earlier --keep DIR run "
                             "(desired, current and plan are always made again)")
    parser.add_argument("--push-only", action="store_true", help="run only the push section (against the sandbox)")
    parser.add_argument("--no-push", action="store_true", help="leave out the push section")
    parser.add_argument("--io-only", action="store_true",
                        help="run the offline stages and the nightly job against the sandbox only")
    parser.add_argument("--no-io", action="store_true",
                        help="leave out the nightly job against the sandbox (the I/O section)")
    parser.add_argument("--ldap-only", action="store_true",
                        help="run only the LDAP section (extract-ldap against a Samba AD DC, next to ldapsearch)")
    parser.add_argument("--no-ldap", action="store_true", help="leave out the LDAP section")
    parser.add_argument("--exo-only", action="store_true",
                        help="run only the Exchange Online section (extract-exo against the fake, 20 ms a request)")
    parser.add_argument("--no-exo", action="store_true", help="leave out the Exchange Online section")
    parser.add_argument("--exchange-only", action="store_true",
                        help="run only the Exchange on-premise section (extract-exchange against the fake, 10 ms)")
    parser.add_argument("--no-exchange", action="store_true", help="leave out the Exchange on-premise section")
    parser.add_argument("--ldap-users", type=int, default=10_000, metavar="N",
                        help="users seeded into the Samba DC for the LDAP section (default 10,000)")
    parser.add_argument("--check-sample", metavar="N", type=int, default=1000,
                        help="schema-check N lines of each generated file with jsonschema, half of them "
                             "the first ones, half spread over the file (default 1000; 0: off)")
    args = parser.parse_args(argv)
    if args.people < 1:
        parser.error("--people must be at least 1")
    if args.skip_generate and not args.keep:
        parser.error("--skip-generate needs --keep DIR")
    if args.skip_generate and not (args.keep / FILES["directory"]).is_file():
        parser.error(f"--skip-generate: {args.keep / FILES['directory']} does not exist")
    return args


def megabytes(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.1f} MB"


def check_generated(path: Path, kind: str, sample: int) -> bool:
    """Check a file this script wrote (see check_file); False if it is wrong."""
    if sample <= 0:
        return True
    started = time.perf_counter()
    problems = check_file(path, kind, sample)
    if problems:
        print(f"WARNING: {path.name} does not match the schemas ({len(problems)} problems); first ones:",
              file=sys.stderr)
        for problem in problems[:10]:
            print(f"  {problem}", file=sys.stderr)
    print(f"checked {path.name}: header, end count, and {sample:,} lines against the schemas "
          f"({'INVALID' if problems else 'valid'}, {time.perf_counter() - started:.1f} s)", file=sys.stderr)
    return not problems


def prepare_inputs(args: argparse.Namespace, work: Path, sizes: Sizes) -> bool:
    """directory.jsonl (unless reused). Returns False if it fails its schema check."""
    directory = work / FILES["directory"]
    if args.skip_generate:
        print(f"reusing {directory} ({megabytes(directory)})", file=sys.stderr)
    else:
        started = time.perf_counter()
        count = generate_directory(directory, sizes)
        print(f"generated {directory.name}: {count:,} records, {megabytes(directory)} "
              f"in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return check_generated(directory, "directory", args.check_sample)


def prepare_current(args: argparse.Namespace, work: Path) -> bool:
    """current.jsonl from desired.jsonl. Returns False if it fails its schema check."""
    desired, current = work / FILES["desired"], work / FILES["current"]
    if not desired.exists():
        print(f"no {desired.name} (normalize failed): cannot make {current.name}", file=sys.stderr)
        return True
    started = time.perf_counter()
    wanted, count, done = build_current(desired, current)
    changes = ", ".join(f"{how} {n:,}" for how, n in sorted(done.items()))
    print(f"made {current.name}: {count:,} accounts from {wanted:,} desired, "
          f"{sum(done.values()):,} perturbed ({changes or 'none'}) in {time.perf_counter() - started:.1f} s",
          file=sys.stderr)
    return check_generated(current, "accounts", args.check_sample)


def reused_sizes(path: Path, people: int) -> Sizes:
    """The sizes a reused directory.jsonl was generated with, as its header says."""
    with open(path, "rb") as handle:
        generated = orjson.loads(handle.readline()).get("generator") or {}
    try:
        sizes = Sizes(**{key: generated[key] for key in ("people", "shared", "groups", "permissions")})
    except (KeyError, TypeError):
        return Sizes.for_people(people)
    if sizes.people != people:
        print(f"note: --people {people:,} ignored: {path.name} was generated for {sizes.people:,}", file=sys.stderr)
    return sizes


def run_bench(args: argparse.Namespace, work: Path) -> tuple[dict, bool]:
    if args.skip_generate:
        sizes = reused_sizes(work / FILES["directory"], args.people)
    else:
        sizes = Sizes.for_people(args.people)
    print(f"zivsync bench: {sizes.people:,} people, {sizes.shared:,} shared mailboxes, {sizes.groups:,} groups, "
          f"{sizes.permissions:,} permissions; seed {SEED}; work folder {work}", file=sys.stderr)
    for stale in ("desired", "current", "plan"):
        (work / FILES[stale]).unlink(missing_ok=True)  # never time or derive from an earlier run's output
    valid = prepare_inputs(args, work, sizes)

    print("running the stages:", file=sys.stderr)
    results = {"normalize": run_stage("normalize", work)}  # first: it makes desired.jsonl
    valid = prepare_current(args, work) and valid
    results["validate"] = run_stage("validate", work)
    results["diff"] = run_stage("diff", work)
    ordered = [results[name] for name in ("validate", "normalize", "diff")]

    jq_found, cache = shutil.which("jq") is not None, {}
    for result in ordered:
        inputs = [work / name for name in result.inputs]
        if result.status != "SKIPPED" and (floor := jq_floor(inputs, work, cache)):
            result.jq_floor_s, result.jq_peak_mb = floor.wall_s, floor.peak_mb

    print()
    print(f"zivsync bench, {sizes.people:,} people ({sizes.records:,} directory records), "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}")
    print_table(ordered, jq_found)
    if not jq_found:
        print("jq not found: no floor measured")
    if summary := plan_summary(work / FILES["plan"]):
        print(summary)
    files = {name: (work / file).stat().st_size for name, file in FILES.items() if (work / file).exists()}
    print("files: " + ", ".join(f"{FILES[n]} {size / 1e6:.1f} MB" for n, size in files.items()))
    over = [r.stage for r in ordered if r.status == "OVER"]
    broken = [r.stage for r in ordered if r.status in ("FAILED", "SKIPPED")]
    if over:
        print(f"OVER TARGET: {', '.join(over)}")
    if broken:
        print(f"DID NOT RUN TO COMPLETION: {', '.join(broken)} (see above)")
    if not valid:
        print("GENERATED DATA FAILS ITS SCHEMA CHECK: a bug in scripts/bench.py (see above)")

    figures = {
        "sizes": asdict(sizes), "seed": SEED, "work": str(work), "files_bytes": files,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "stages": [asdict(r) for r in ordered],
    }
    return figures, valid and not broken


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_exchange import print_exchange, run_exchange_bench
    from bench_exo import print_exo, run_exo_bench
    from bench_ldap import print_ldap, run_ldap_bench
    from bench_io import print_io, run_io_bench
    from bench_push import print_push, run_push_bench

    args = parse_args(argv)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        work = args.keep.resolve()
    else:
        work = Path(tempfile.mkdtemp(prefix="zivsync-bench-"))
    try:
        only = args.push_only or args.ldap_only or args.exo_only or args.exchange_only
        figures, ok = ({}, True) if only else run_bench(args, work)
        if not only and not args.no_io:  # on the offline section's directory and desired streams
            figures["io"], io_ok = run_io_bench(work / "io", work / FILES["directory"], work / FILES["desired"])
            print_io(figures["io"], io_ok)
            ok = ok and io_ok
        only = only or args.io_only
        if not args.no_push and (not only or args.push_only):
            figures["push"], push_ok = run_push_bench(work / "push")
            print_push(figures["push"], push_ok)
        if not args.no_exo and (not only or args.exo_only):
            figures["exo"], exo_ok = run_exo_bench(work / "exo")
            print_exo(figures["exo"], exo_ok)
            ok = ok and exo_ok
        if not args.no_exchange and (not only or args.exchange_only):
            figures["exchange"], exchange_ok = run_exchange_bench(work / "exchange")
            print_exchange(figures["exchange"], exchange_ok)
            ok = ok and exchange_ok
        if not args.no_ldap and (not only or args.ldap_only):
            figures["ldap"], ldap_ran = run_ldap_bench(work / "ldap", args.ldap_users)
            print_ldap(figures["ldap"], ldap_ran)
            ok = ok and (ldap_ran or "skipped" in figures["ldap"])
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
