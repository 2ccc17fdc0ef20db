"""Issue 13: manage only what a source speaks for, and say why for every change. Streams as the
extractors write them (their headers' authority), the real executables, the sandbox."""

from __future__ import annotations

import shutil

import orjson
import pytest

from helpers import EXAMPLES, FABRIKAM_ZIVVER, Sandbox, read_jsonl, run, sync_into_sandbox, write_stream
from stages.core.directory import Scope, normalize
from stages.sources.activedirectory import Scope as LdapScope
from stages.sources.exchangeonline import Scope as ExchangeScope

CLAIMED = ("fabrikam.example", "fabrikam.nl")
DOMAINS = [arg for domain in CLAIMED for arg in ("--claimed-domain", domain)]


def test_the_extractors_state_what_they_speak_for_from_what_they_were_asked():
    ldap = LdapScope(base_dn="DC=corp,DC=example", include_ous=("OU=Staff,DC=corp,DC=example",))
    assert ldap.authority() == {
        "source": "ldap", "people": True, "mailbox_kinds": ["user", "shared", "room", "equipment"], "groups": True,
        "full_access": [], "phone": True, "sso_key": True,
        "scope": {"base_dn": "DC=corp,DC=example", "include_ous": ["OU=Staff,DC=corp,DC=example"]}}
    assert LdapScope(base_dn="DC=x", phone_attributes=()).authority()["phone"] is False
    users_only = ExchangeScope(mailbox_kinds=("UserMailbox",), claimed_domains=("corp.example",), source="exo")
    assert users_only.authority() == {"source": "exo", "people": True, "mailbox_kinds": ["user"], "groups": True,
                                      "full_access": [], "phone": False, "sso_key": True,
                                      "scope": {"claimed_domains": ["corp.example"]}}
    both = ExchangeScope(user_mailbox_permissions=True).authority()
    assert both["full_access"] == ["shared", "user"] and both["mailbox_kinds"] == ["user", "shared", "room", "equipment"]


def test_the_sample_ldap_stream_states_its_authority_and_validates():
    header = read_jsonl(EXAMPLES / "directory-ldap.jsonl")[0]
    assert header["authority"]["full_access"] == [] and header["authority"]["source"] == "ldap"
    done = run("zivsync-validate", EXAMPLES / "directory-ldap.jsonl", EXAMPLES / "directory-exchange.jsonl")
    assert done.returncode == 0, done.stderr


def test_ldap_alone_leaves_delegates_as_zivver_has_them_and_converges(tmp_path):
    """LDAP-only: personal accounts created, updated, suspended; functional accounts and delegates
    left as they are. Before: five functional accounts emptied and a delegate taken away."""
    current = read_jsonl(EXAMPLES / "current.jsonl")
    delegates_before = {r["email"]: r["delegates"] for r in current if r["type"] == "account"}
    after = sync_into_sandbox([EXAMPLES / "directory-ldap.jsonl"], CLAIMED, tmp_path, seed=EXAMPLES / "current.jsonl",
                              diff_args=("--max-suspend-percent", "100"), zivver_claims=FABRIKAM_ZIVVER)
    plan = read_jsonl(tmp_path / "plan.jsonl")
    ops = [(r["op"], r["email"]) for r in plan if r["type"] == "change"]
    # the only functional account emptied is the one gone from the directory (as in a full run)
    emptied = [r for r in plan if r["type"] == "change" and r["op"] == "empty_functional"]
    assert [(r["email"], r["why"]["code"]) for r in emptied] == [("marketing@fabrikam.example", "gone")]
    assert not any(r["after"].get("delegates") or "delegates" in r["before"] for r in plan
                   if r["type"] == "change" and r["op"] not in ("empty_functional",))
    assert {"create_user", "suspend_user"} <= {op for op, _ in ops}  # people are still managed
    assert plan[0]["unmanaged"]["delegates"] > 0
    assert {e: a["delegates"] for e, a in after.items() if e in delegates_before} == {
        e: ([] if e == "marketing@fabrikam.example" else d) for e, d in delegates_before.items() if e in after}
    # the second night plans nothing
    again = run("zivsync-diff", "-i", tmp_path / "desired.jsonl", "--current", tmp_path / "after.jsonl",
                "--state", tmp_path / "state", *DOMAINS, "--max-suspend-percent", "100")
    assert again.returncode == 0 and [r for r in again.records if r["type"] == "change"] == []


def person(source: str, anchor: str, mail: str) -> dict:
    return {"type": "person", "source": source, "anchor": anchor, "dn": f"CN={anchor},OU=Staff,DC={source},DC=example",
            "upn": mail, "sam_account_name": anchor, "sid": None, "mail": mail, "addresses": [mail],
            "display_name": anchor.title(), "given_name": None, "surname": None, "enabled": True, "mailbox": "user",
            "phone": None, "groups": [], "sso_key": anchor}


def forest(tmp_path, name: str, people: list[str], include_ous: tuple[str, ...] = ()):
    authority = LdapScope(base_dn=f"DC={name},DC=example", source=name, include_ous=include_ous).authority()
    return write_stream(tmp_path / f"{name}.jsonl", "directory",
                        [person(name, f"{name}-{p}", f"{p}@fabrikam.example") for p in people], authority=authority)


def test_a_source_left_out_for_a_night_suspends_nobody_of_it(tmp_path):
    """Two forests as two sources; the second is not read one night: its people are left alone
    (source_not_read), not suspended; the first's leaver is still suspended."""
    west = forest(tmp_path, "west", ["ann", "bob", "cem"])
    east = forest(tmp_path, "east", ["dee", "eve"])
    with Sandbox("--rate-limit", "1000", claimed=CLAIMED) as sandbox:
        def night(folder, *streams):
            folder.mkdir()
            inputs = [a for s in streams for a in ("-i", s)]
            steps = [("zivsync-normalize", [*inputs, *DOMAINS, "-o", folder / "desired.jsonl"]),
                     ("zivsync-snapshot", ["-o", folder / "current.jsonl"]),
                     ("zivsync-diff", ["-i", folder / "desired.jsonl", "--current", folder / "current.jsonl",
                                       "--state", tmp_path / "state", *DOMAINS, "--max-suspend-percent", "100",
                                       "-o", folder / "plan.jsonl"]),
                     ("zivsync-push", ["-i", folder / "plan.jsonl", "--apply", "--state", tmp_path / "state",
                                       "--rate-limit", "1000", "-o", folder / "results.jsonl"])]
            for name, args in steps:
                done = run(name, *args, env=sandbox.env)
                assert done.returncode == 0, done.stderr
            return read_jsonl(folder / "plan.jsonl")

        night(tmp_path / "1", west, east)
        mapping = orjson.loads((tmp_path / "state" / "mapping.json").read_bytes())
        assert {tuple(e["sources"]) for e in mapping["accounts"]} == {("west",), ("east",)}
        assert {e["dn"] for e in mapping["accounts"]} >= {"CN=west-ann,OU=Staff,DC=west,DC=example"}
        west_without_cem = forest(tmp_path, "west", ["ann", "bob"])
        plan = night(tmp_path / "2", west_without_cem)
        # the east forest's extractor is narrowed to an OU its people are not in: not read, not gone
        sales = dict(person("east", "east-fay", "fay@fabrikam.example"), dn="CN=fay,OU=Sales,DC=east,DC=example")
        east_narrowed = write_stream(tmp_path / "east.jsonl", "directory", [sales], authority=LdapScope(
            base_dn="DC=east,DC=example", source="east", include_ous=("OU=Sales,DC=east,DC=example",)).authority())
        narrowed = night(tmp_path / "3", west_without_cem, east_narrowed)
        # and a source whose stream holds nothing tonight counts as not read: its people stay too
        empty_east = forest(tmp_path, "east", [])
        emptied = night(tmp_path / "4", west_without_cem, empty_east)
    assert {(r["email"], r["reason"]) for r in emptied if r["type"] == "skip"} >= {
        ("dee@fabrikam.example", "source_not_read"), ("eve@fabrikam.example", "source_not_read")}
    assert not [r for r in emptied if r["type"] == "change" and r["op"] == "suspend_user"]
    assert [(r["op"], r["email"]) for r in narrowed if r["type"] == "change"] == [("create_user", "fay@fabrikam.example")]
    assert {r["email"]: r["reason"] for r in narrowed if r["type"] == "skip"} == {
        "dee@fabrikam.example": "outside_source_scope", "eve@fabrikam.example": "outside_source_scope"}
    changes = {(r["op"], r["email"]) for r in plan if r["type"] == "change"}
    assert changes == {("suspend_user", "cem@fabrikam.example")}
    skips = {r["email"]: r for r in plan if r["type"] == "skip"}
    assert {e for e, s in skips.items() if s["reason"] == "source_not_read"} == {"dee@fabrikam.example",
                                                                                  "eve@fabrikam.example"}
    assert "east" in skips["dee@fabrikam.example"]["detail"]
    cem = next(r for r in plan if r["type"] == "change")
    assert cem["why"]["code"] == "gone" and "in no source read (west" in cem["why"]["facts"][0]


def test_a_source_that_reads_only_user_mailboxes_makes_no_functional_account_look_gone(tmp_path):
    authority = ExchangeScope(mailbox_kinds=("UserMailbox",), source="exo").authority()
    stream = write_stream(tmp_path / "exo.jsonl", "directory", [person("exo", "a1", "ann@fabrikam.example")],
                          authority=authority)
    current = write_stream(tmp_path / "current.jsonl", "accounts", [
        {"type": "account", "kind": "user", "email": "ann@fabrikam.example", "name": "A1", "active": True,
         "aliases": [], "delegates": [], "zivver_id": "z1"},
        {"type": "account", "kind": "functional", "email": "team@fabrikam.example", "name": "Team", "active": True,
         "aliases": [], "delegates": ["ann@fabrikam.example"], "zivver_id": "z2"}])
    desired = run("zivsync-normalize", "-i", stream, *DOMAINS)
    assert desired.returncode == 0, desired.stderr
    (tmp_path / "desired.jsonl").write_bytes(desired.stdout)
    plan = run("zivsync-diff", "-i", tmp_path / "desired.jsonl", "--current", current, *DOMAINS)
    assert plan.returncode == 0, plan.stderr
    assert [r for r in plan.records if r["type"] == "change"] == []
    (skip,) = [r for r in plan.records if r["type"] == "skip"]
    assert (skip["email"], skip["reason"], skip["op"]) == ("team@fabrikam.example", "not_spoken_for",
                                                           "empty_functional")


def test_a_field_no_source_speaks_for_is_listed_and_a_stream_that_states_nothing_is_read_as_before():
    records = [person("ldap", "a1", "ann@fabrikam.example")]
    scope = Scope(claimed_domains=frozenset(CLAIMED))
    stated = normalize(records, scope, {"ldap": {"source": "ldap", "people": True, "mailbox_kinds": ["user"],
                                                 "full_access": [], "phone": False, "sso_key": True}})
    assert stated.accounts[0]["unmanaged"] == ["delegates", "phone"]
    assert "unmanaged" not in normalize(records, scope).accounts[0]


@pytest.fixture(scope="module")
def sample_plan(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sample")
    for name in ("directory-ldap.jsonl", "directory-exchange.jsonl"):  # as a run folder holds them
        shutil.copy(EXAMPLES / name, folder / name)
    sync_into_sandbox([EXAMPLES / "directory-ldap.jsonl", EXAMPLES / "directory-exchange.jsonl"], CLAIMED, folder,
                      seed=EXAMPLES / "current.jsonl", zivver_claims=FABRIKAM_ZIVVER)
    return folder


def test_every_change_says_why_with_the_source_facts(sample_plan):
    plan = read_jsonl(sample_plan / "plan.jsonl")
    changes = [r for r in plan if r["type"] == "change"]
    assert changes and all(c["why"]["facts"] for c in changes)
    why = {(c["op"], c["email"]): c["why"] for c in changes}
    assert why[("suspend_user", "p.vandijk@fabrikam.example")] == {
        "code": "disabled", "facts": ["ldap CN=Pieter van Dijk,OU=Staff,OU=Amsterdam,DC=fabrikam,DC=example (disabled)"]}
    assert why[("suspend_user", "t.berg@fabrikam.example")]["code"] == "gone"
    created = why[("create_user", "n.kowalski@fabrikam.example")]
    assert created["code"] == "new" and created["facts"][0].startswith("in ldap CN=")
    support = why[("update_functional", "support@fabrikam.nl")]["facts"]
    assert any(f.startswith("delegate +") and " via " in f for f in support), support  # the group path
    report = run("zivsync-report", sample_plan / "plan.jsonl")
    assert "because: ldap CN=Pieter van Dijk" in report.stdout.decode()


def test_report_why_tells_the_story_of_one_account(sample_plan):
    done = run("zivsync-report", sample_plan, "--why", "P.vanDijk@fabrikam.example")
    assert done.returncode == 0, done.stderr
    story = done.stdout.decode()
    assert "the story of p.vandijk@fabrikam.example" in story
    assert "directory-ldap.jsonl: 1 records" in story and '"enabled":false' in story
    assert "desired.jsonl: 1 records" in story and "current.jsonl: 1 records" in story
    assert "suspend_user" in story and "because (disabled): ldap CN=Pieter van Dijk" in story
    assert "result: applied" in story


def test_the_html_report_shows_the_reason_under_each_change(sample_plan, tmp_path):
    done = run("zivsync-report", sample_plan / "plan.jsonl", "--html", tmp_path / "report.html")
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert '<div class="why muted">ldap CN=Pieter van Dijk,OU=Staff,OU=Amsterdam,DC=fabrikam,DC=example (disabled)' \
        in page


# -- shared mailboxes granted Full Access on shared mailboxes, and DOMAIN\user in two forests --------


def mailbox(n: int) -> dict:
    return dict(person("exchange", f"m{n}", f"box{n}@fabrikam.example"), mailbox="shared", enabled=None)


def grant(mailbox_anchor: str, trustee: str) -> dict:
    return {"type": "permission", "source": "exchange", "mailbox": mailbox_anchor, "trustee": trustee,
            "rights": ["FullAccess"], "inherited": False, "deny": False}


def delegates_of(records: list[dict], expand: bool) -> dict[str, list[str]]:
    scope = Scope(claimed_domains=frozenset(CLAIMED), expand_shared_delegates=expand)
    return {a["email"]: a["delegates"] for a in normalize(records, scope).accounts if a["kind"] == "functional"}


def test_shared_mailboxes_pass_their_delegates_on_only_when_asked_and_cycles_end():
    people = [person("exchange", f"p{n}", f"p{n}@fabrikam.example") for n in range(3)]
    # box0 ← box1 ← box2 ← box1 (a cycle); p0 on box0, p1 on box1, p2 on box2
    records = [*people, mailbox(0), mailbox(1), mailbox(2), grant("m0", "p0"), grant("m1", "p1"), grant("m2", "p2"),
               grant("m0", "m1"), grant("m1", "m2"), grant("m2", "m1")]
    plain = delegates_of(records, expand=False)
    assert plain == {"box0@fabrikam.example": ["p0@fabrikam.example"], "box1@fabrikam.example": ["p1@fabrikam.example"],
                     "box2@fabrikam.example": ["p2@fabrikam.example"]}
    expanded = delegates_of(records, expand=True)
    every = ["p0@fabrikam.example", "p1@fabrikam.example", "p2@fabrikam.example"]
    assert expanded == {"box0@fabrikam.example": every, "box1@fabrikam.example": every[1:],
                        "box2@fabrikam.example": every[1:]}


def test_ten_thousand_mailboxes_each_granting_three_others_expand_as_a_plain_search_says():
    import random

    rng = random.Random(7)
    size = 10_000
    people = [person("exchange", f"p{n}", f"p{n}@fabrikam.example") for n in range(size)]
    edges = {n: rng.sample(range(size), 3) for n in range(size)}  # box n grants Full Access on 3 others
    records = [*people, *(mailbox(n) for n in range(size)), *(grant(f"m{n}", f"p{n}") for n in range(0, size, 50)),
               *(grant(f"m{target}", f"m{n}") for n, targets in edges.items() for target in targets)]
    expanded = delegates_of(records, expand=True)
    receives: dict[int, list[int]] = {n: [] for n in range(size)}  # box -> boxes that hold Full Access on it
    for n, targets in edges.items():
        for target in targets:
            receives[target].append(n)
    for box in rng.sample(range(size), 25):  # a plain search from a few boxes: who can act for them
        seen, pending = {box}, [box]
        while pending:
            for other in receives[pending.pop()]:
                if other not in seen:
                    seen.add(other)
                    pending.append(other)
        want = sorted(f"p{n}@fabrikam.example" for n in seen if n % 50 == 0)
        assert expanded[f"box{box}@fabrikam.example"] == want


def test_domain_user_names_the_person_of_that_forest():
    west = dict(person("west", "w1", "jdoe@fabrikam.example"), sam_account_name="jdoe")
    east = dict(person("east", "e1", "john.doe@fabrikam.nl"), sam_account_name="jdoe")
    records = [west, east, mailbox(1), grant("m1", "EAST\\jdoe")]
    assert delegates_of(records, expand=False) == {"box1@fabrikam.example": ["john.doe@fabrikam.nl"]}
    records[-1] = grant("m1", "OTHER\\jdoe")  # a domain neither forest is: the name is shared, so nobody
    assert delegates_of(records, expand=False) == {"box1@fabrikam.example": []}


def test_a_domain_not_read_names_nobody_not_the_local_namesake():
    local = dict(person("west", "w1", "jdoe@fabrikam.example"), sam_account_name="jdoe")
    assert delegates_of([local, mailbox(1), grant("m1", "OTHER\\jdoe")], expand=False) == {
        "box1@fabrikam.example": []}
    assert delegates_of([local, mailbox(1), grant("m1", "WEST\\jdoe")], expand=False) == {
        "box1@fabrikam.example": ["jdoe@fabrikam.example"]}
