"""The rules of diff (DESIGN.md §4), one test each, on the pure function."""

from __future__ import annotations

import pytest
from helpers import account

from stages.core.account_mapping import MappedAccount, Mapping
from stages.core.planning import DiffOptions, diff

CLAIMED = frozenset({"example.com", "example.nl"})
LOOSE = dict(max_suspend=10**6, max_suspend_percent=100.0, max_delegate_removals=10**6, max_delegate_removals_percent=100.0,
             max_alias_removals=10**6, max_alias_removals_percent=100.0)


def options(**kwargs) -> DiffOptions:
    return DiffOptions(claimed_domains=CLAIMED, **{**LOOSE, **kwargs})


def plan(desired, current, **kwargs):
    mapping = kwargs.pop("mapping", None)
    complete = kwargs.pop("desired_complete", True)
    held = kwargs.pop("held", ())
    return diff(desired, current, options(**kwargs), mapping=mapping, desired_complete=complete, held=held)


def ops(result) -> list[tuple[str, str]]:
    return [(c["op"], c["email"]) for c in result.changes]


def only_change(result) -> dict:
    (change,) = result.changes
    return change


def mapping(*entries: tuple[str, str, list[str]]) -> Mapping:
    m = Mapping()
    for zivver_id, email, anchors in entries:
        m.record(MappedAccount(zivver_id, email, "user", anchors))
    return m


def test_same_state_gives_empty_plan():
    state = [account("ann@example.com", zivver_id="z1"), account("team@example.com", kind="functional",
                                                                delegates=["ann@example.com"], zivver_id="z2")]
    assert plan(state, state).changes == []


def test_create_user_carries_every_field_and_the_sso_key():
    change = only_change(plan([account("ann@example.com", name="Ann", aliases=["a@example.com"],
                                       sso_key="guid-1", phone="+31612345678", anchors=["guid-1"])], []))
    assert change["op"] == "create_user" and change["zivver_id"] is None and change["before"] == {}
    assert change["after"] == {"email": "ann@example.com", "name": "Ann", "active": True, "aliases": ["a@example.com"],
                               "delegates": [], "phone": "+31612345678", "sso_key": "guid-1"}
    assert change["sso_key"] == "guid-1" and change["anchors"] == ["guid-1"]


def test_inactive_user_not_in_zivver_is_not_created():
    result = plan([account("ann@example.com", active=False)], [])
    assert result.changes == [] and result.skips[0]["reason"] == "inactive_not_in_zivver"


def test_update_user_lists_only_changed_fields_before_and_after():
    change = only_change(plan([account("ann@example.com", name="Ann Smith", aliases=["a@example.com"])],
                              [account("ann@example.com", name="Ann", zivver_id="z1")]))
    assert change["op"] == "update_user" and change["zivver_id"] == "z1" and change["match"] == "email"
    assert change["before"] == {"name": "Ann", "aliases": []}
    assert change["after"] == {"name": "Ann Smith", "aliases": ["a@example.com"]}


def test_suspend_user_disabled_in_directory():
    change = only_change(plan([account("ann@example.com", active=False)], [account("ann@example.com", zivver_id="z1")]))
    assert change["op"] == "suspend_user" and change["after"] == {"active": False}


def test_suspend_user_gone_from_directory():
    staying = account("bob@example.com", zivver_id="z2")
    change = only_change(plan([staying], [account("ann@example.com", zivver_id="z1"), staying]))
    assert (change["op"], change["before"], change["after"]) == ("suspend_user", {"active": True}, {"active": False})


def test_already_suspended_user_gone_from_directory_needs_nothing():
    assert plan([account("bob@example.com")], [account("ann@example.com", active=False, zivver_id="z1"),
                                                account("bob@example.com", zivver_id="z2")]).changes == []


def test_reactivate_user():
    change = only_change(plan([account("ann@example.com")], [account("ann@example.com", active=False, zivver_id="z1")]))
    assert change["op"] == "reactivate_user" and change["after"] == {"active": True}


def test_create_and_update_functional():
    ann = account("ann@example.com")  # a delegate is a desired personal account with its Zivver account
    result = plan([ann, account("team@example.com", kind="functional", delegates=["ann@example.com"]),
                   account("desk@example.com", kind="functional", delegates=["ann@example.com"])],
                  [dict(ann, zivver_id="z1"), account("desk@example.com", kind="functional", zivver_id="z9")])
    assert ops(result) == [("create_functional", "team@example.com"), ("update_functional", "desk@example.com")]
    assert result.changes[1]["after"] == {"delegates": ["ann@example.com"]}


def test_functional_gone_from_directory_is_emptied_not_deleted():
    staying = account("bob@example.com", zivver_id="z2")
    change = only_change(plan([staying], [account("team@example.com", kind="functional", delegates=["ann@example.com"],
                                                  zivver_id="z1"), staying]))
    assert change["op"] == "empty_functional"
    assert (change["before"], change["after"]) == ({"delegates": ["ann@example.com"]}, {"delegates": []})


def test_functional_active_flag_is_never_compared():
    desired = [account("team@example.com", kind="functional", active=True)]
    current = [account("team@example.com", kind="functional", active=False, zivver_id="z1")]
    assert plan(desired, current).changes == []


def test_rename_matched_by_anchor_in_the_mapping():
    result = plan([account("ann.smith@example.com", aliases=["ann@example.com"], anchors=["guid-1"])],
                  [account("ann@example.com", zivver_id="z1")], mapping=mapping(("z1", "ann@example.com", ["guid-1"])))
    change = only_change(result)
    assert (change["op"], change["match"], change["zivver_id"]) == ("rename_user", "anchor", "z1")
    assert change["before"]["email"] == "ann@example.com" and change["after"]["email"] == "ann.smith@example.com"
    assert change["after"]["aliases"] == ["ann@example.com"]


def test_rename_matched_by_alias_without_a_mapping():
    change = only_change(plan([account("ann.smith@example.com", aliases=["ann@example.com"])],
                              [account("ann@example.com", zivver_id="z1")]))
    assert (change["op"], change["match"]) == ("rename_user", "alias")


def test_rename_to_an_address_that_was_an_alias_in_zivver():
    change = only_change(plan([account("ann.smith@example.com", name="Ann", aliases=["ann@example.com"])],
                              [account("ann@example.com", name="Ann", aliases=["ann.smith@example.com"], zivver_id="z1")]))
    assert change["op"] == "rename_user"
    assert change["after"] == {"email": "ann.smith@example.com", "aliases": ["ann@example.com"]}


def test_anchor_match_wins_over_address_match():
    result = plan([account("ann@example.com", anchors=["guid-2"])],
                  [account("ann@example.com", zivver_id="z1"), account("old@example.com", zivver_id="z2")],
                  mapping=mapping(("z2", "old@example.com", ["guid-2"])))
    # z2 is the person's account, but z1 holds the address and cannot give up its primary one:
    # z2 keeps its address and gets the rest (its name), z1 is suspended
    assert [(c["op"], c["zivver_id"], c["after"]) for c in result.changes] == [
        ("update_user", "z2", {"name": "ann"}), ("suspend_user", "z1", {"active": False})]
    (skip,) = result.skips
    assert (skip["reason"], skip["op"], skip["zivver_id"]) == ("address_taken", "rename_user", "z2")


def test_reused_address_is_not_handed_to_a_newcomer():
    # z1 belonged to guid-old (a leaver); a newcomer guid-new got the same address
    result = plan([account("jan@example.com", anchors=["guid-new"])], [account("jan@example.com", zivver_id="z1")],
                  mapping=mapping(("z1", "jan@example.com", ["guid-old"])))
    assert ops(result) == [("suspend_user", "jan@example.com")]
    assert result.skips[0]["reason"] == "ambiguous_match" and "reused" in result.skips[0]["detail"]


def test_type_conflict_is_skipped_both_ways():
    result = plan([account("team@example.com", kind="functional"), account("ann@example.com")],
                  [account("team@example.com", zivver_id="z1"), account("ann@example.com", kind="functional",
                                                                        delegates=["x@example.com"], zivver_id="z2")])
    assert result.changes == []
    assert [s["reason"] for s in result.skips] == ["type_conflict", "type_conflict"]


def test_zivver_account_outside_claimed_domains_is_left_alone():
    result = plan([], [account("ann@elsewhere.org", zivver_id="z1")])
    assert result.changes == [] and result.skips[0]["reason"] == "outside_claimed_domains"


def test_desired_account_outside_claimed_domains_is_skipped():
    result = plan([account("ann@elsewhere.org")], [])
    assert result.changes == [] and result.skips[0]["reason"] == "outside_claimed_domains"


def test_target_exclude_protects_accounts():
    result = plan([account("admin@example.com", name="Changed")],
                  [account("admin@example.com", zivver_id="z1"), account("admin-2@example.com", zivver_id="z2")],
                  exclude=("admin*@example.com",))
    assert result.changes == [] and {s["reason"] for s in result.skips} == {"excluded"}


def test_held_account_is_not_suspended():
    result = plan([], [account("ann@example.com", zivver_id="z1")], held={"ann@example.com"})
    assert result.changes == [] and result.skips[0]["reason"] == "source_conflict"


def test_phone_unknown_in_directory_is_not_cleared():
    current = [account("ann@example.com", phone="+31612345678", zivver_id="z1")]
    assert plan([account("ann@example.com", phone=None)], current).changes == []
    change = only_change(plan([account("ann@example.com", phone="+31687654321")], current))
    assert change["after"] == {"phone": "+31687654321"}


def test_sso_key_changes_only_when_asked_and_only_against_what_was_pushed():
    desired = [account("ann@example.com", sso_key="new-key", anchors=["g"])]
    current = [account("ann@example.com", zivver_id="z1")]
    pushed = Mapping()
    pushed.record(MappedAccount("z1", "ann@example.com", "user", ["g"], sso_key="old-key"))
    assert plan(desired, current, mapping=pushed).changes == []
    change = only_change(plan(desired, current, mapping=pushed, update_sso_keys=True))
    assert (change["before"], change["after"]) == ({"sso_key": "old-key"}, {"sso_key": "new-key"})


def test_deletion_only_behind_its_option_and_threshold():
    current = [account("ann@example.com", zivver_id="z1")]
    assert ops(plan([account("bob@example.com")], current + [account("bob@example.com", zivver_id="z2")],
                    delete_missing=True, max_delete=1)) == [("delete_user", "ann@example.com")]
    refused = plan([account("bob@example.com")], current + [account("bob@example.com", zivver_id="z2")],
                   delete_missing=True, max_delete=0)
    assert not refused.safety.passed and "--max-delete" in refused.safety.reasons[0]


def many(n: int, **kwargs) -> list[dict]:
    return [account(f"user{i:03}@example.com", zivver_id=f"z{i}", **kwargs) for i in range(n)]


def test_safety_refuses_more_suspensions_than_the_count_limit():
    current = many(200)
    result = diff(current[:140], current, DiffOptions(claimed_domains=CLAIMED, max_suspend=50, max_suspend_percent=100))
    assert not result.safety.passed and result.safety.destructive == 60
    assert "--max-suspend" in result.safety.reasons[0]


def test_safety_refuses_more_than_the_share_limit():
    current = many(100)
    result = diff(current[:89], current, DiffOptions(claimed_domains=CLAIMED))
    assert not result.safety.passed and "11 of 100" in result.safety.reasons[0]
    assert diff(current[:90], current, DiffOptions(claimed_domains=CLAIMED)).safety.passed


def test_incomplete_desired_stream_never_suspends_or_empties():
    current = many(3) + [account("team@example.com", kind="functional", delegates=["user000@example.com"], zivver_id="f")]
    desired = [account("user000@example.com", name="New name"), account("new@example.com")]
    result = plan(desired, current, desired_complete=False)
    assert {c["op"] for c in result.changes} == {"create_user", "update_user"}
    assert sorted(s["op"] for s in result.skips if s["reason"] == "desired_incomplete") == [
        "empty_functional", "suspend_user", "suspend_user"]
    assert not result.safety.passed and result.safety.withheld == 3


def test_empty_desired_stream_suspends_nobody():
    result = plan([], many(3), desired_complete=True)
    assert result.changes == [] and not result.safety.passed and "empty" in result.safety.reasons[0]


def test_changes_come_in_push_order_and_have_stable_ids():
    desired = [account("new@example.com"), account("team@example.com", kind="functional", delegates=["new@example.com"]),
               account("ann@example.com", name="Ann 2")]
    current = [account("ann@example.com", zivver_id="z1"), account("gone@example.com", zivver_id="z2")]
    first, second = plan(desired, current), plan(list(reversed(desired)), list(reversed(current)))
    assert ops(first) == [("create_user", "new@example.com"), ("create_functional", "team@example.com"),
                          ("update_user", "ann@example.com"), ("suspend_user", "gone@example.com")]
    assert first.records == second.records
    assert len({c["id"] for c in first.changes}) == 4


@pytest.mark.parametrize("field", ["aliases", "delegates"])
def test_list_order_alone_is_no_change(field):
    people = [account("a@example.com"), account("b@example.com")] if field == "delegates" else []
    desired = [account("ann@example.com", **{field: ["b@example.com", "a@example.com"]}), *people]
    current = [dict(account("ann@example.com", zivver_id="z1"), **{field: ["b@example.com", "a@example.com"]}),
               *(dict(p, zivver_id=f"z{n + 2}") for n, p in enumerate(people))]
    assert plan(desired, current).changes == []


# -- addresses moving between accounts (Zivver refuses an address another account holds) ------


def test_alias_of_a_leaver_is_released_before_a_newcomer_takes_it():
    result = plan([account("eva@example.com", aliases=["info@example.com"]), account("x@example.com")],
                  [account("bob@example.com", aliases=["info@example.com"], zivver_id="z1"),
                   account("x@example.com", zivver_id="z2")])
    assert ops(result) == [("update_user", "bob@example.com"), ("create_user", "eva@example.com"),
                           ("suspend_user", "bob@example.com")]
    assert result.changes[0]["after"] == {"aliases": []}


def test_alias_held_by_an_account_left_alone_is_withheld_with_a_reason():
    result = plan([account("ann@example.com", kind="functional"), account("cem@example.com")],
                  [account("ann@example.com", aliases=["cem@example.com"], zivver_id="z1")])
    assert result.changes == []
    assert sorted(s["reason"] for s in result.skips) == ["address_taken", "type_conflict"]
    assert "ann@example.com" in next(s["detail"] for s in result.skips if s["reason"] == "address_taken")


def test_alias_given_up_by_an_update_is_taken_after_it():
    result = plan([account("dee@example.com"), account("ann@example.com")],
                  [account("dee@example.com", aliases=["ann@example.com"], zivver_id="z1")])
    assert ops(result) == [("update_user", "dee@example.com"), ("create_user", "ann@example.com")]


def test_primary_address_of_a_leaver_is_never_an_alias_of_someone_else():
    result = plan([account("ann@example.com", aliases=["old@example.com"]), account("x@example.com")],
                  [account("ann@example.com", zivver_id="z1"), account("old@example.com", zivver_id="z2"),
                   account("x@example.com", zivver_id="z3")])
    assert ops(result) == [("suspend_user", "old@example.com")]
    assert [s["reason"] for s in result.skips] == ["address_taken"]


def test_several_accounts_matched_by_alias_are_all_left_alone():
    result = plan([account("ann@example.com", aliases=["ann.old@example.com"]), account("x@example.com")],
                  [account("bob@example.com", aliases=["ann@example.com"], zivver_id="z1"),
                   account("ann.old@example.com", zivver_id="z2"), account("x@example.com", zivver_id="z3")])
    assert result.changes == []
    assert sorted((s["reason"], s["email"]) for s in result.skips) == [
        ("ambiguous_match", "ann.old@example.com"), ("ambiguous_match", "ann@example.com"),
        ("ambiguous_match", "bob@example.com")]


def test_suspension_is_a_change_of_its_own():
    result = plan([account("ann@example.com", name="Ann 2", active=False)], [account("ann@example.com", zivver_id="z1")])
    assert [(c["op"], c["after"]) for c in result.changes] == [
        ("update_user", {"name": "Ann 2"}), ("suspend_user", {"active": False})]


def test_matched_functional_losing_every_delegate_is_emptied_and_counted_by_safety():
    current = [account(f"team{i}@example.com", kind="functional", delegates=["ann@example.com"], zivver_id=f"z{i}")
               for i in range(4)]
    desired = [account(f"team{i}@example.com", kind="functional") for i in range(4)]
    result = diff(desired, current, DiffOptions(claimed_domains=CLAIMED))
    assert {c["op"] for c in result.changes} == {"empty_functional"}
    assert not result.safety.passed and result.safety.destructive == 4


def test_two_desired_accounts_claiming_one_address_is_an_error():
    from stages.core.planning import PlanError
    with pytest.raises(PlanError, match="both claim x@example.com"):
        plan([account("a@example.com", aliases=["x@example.com"]), account("b@example.com", aliases=["x@example.com"])], [])


# -- quiet losses: removals of delegates and aliases (issue 12) ------------------------------------


def shared_mailboxes(count: int, losing: int, *, field: str = "delegates"):
    """``count`` functional accounts with two delegates (or aliases) each; ``losing`` of them
    lose one in the desired state. People: the delegates themselves."""
    people = [account("ann@example.com"), account("bob@example.com")]
    current, desired = list(people), list(people)
    for n in range(count):
        email = f"shared{n}@example.com"
        two = ["ann@example.com", "bob@example.com"] if field == "delegates" else [f"s{n}a@example.nl", f"s{n}b@example.nl"]
        current.append(account(email, kind="functional", zivver_id=f"z{n}", **{field: two}))
        desired.append(account(email, kind="functional", **{field: two[:1] if n < losing else two}))
    return desired, current


@pytest.mark.parametrize("field, option", [("delegates", "delegate"), ("aliases", "alias")])
def test_a_quiet_loss_of_delegates_or_aliases_is_refused(field, option):
    desired, current = shared_mailboxes(30, 10, field=field)  # a third lose one
    result = plan(desired, current, **{f"max_{option}_removals": 50, f"max_{option}_removals_percent": 20.0})
    assert not result.safety.passed and len(result.changes) == 10
    assert result.safety.reasons == [f"10 of the 30 managed accounts with a {option} (33.3 %) would lose one: more "
                                     f"than the limit of 20 % (--max-{option}-removals-percent)"]
    by_count = plan(desired, current, **{f"max_{option}_removals": 9, f"max_{option}_removals_percent": 100.0})
    assert by_count.safety.reasons == [f"10 accounts would lose a {option}: more than the limit of 9 "
                                       f"(--max-{option}-removals)"]
    assert plan(desired, current, **{f"max_{option}_removals": 10, f"max_{option}_removals_percent": 34.0}
                ).safety.passed


def test_a_handful_of_removals_is_never_refused_by_share_alone():
    desired, current = shared_mailboxes(8, 5)  # 62 %, but five accounts: one leaver's mailboxes
    assert plan(desired, current, max_delegate_removals_percent=20.0).safety.passed
    desired, current = shared_mailboxes(8, 6)
    assert not plan(desired, current, max_delegate_removals_percent=20.0).safety.passed


def test_an_incomplete_read_takes_no_delegate_and_no_alias_away():
    desired, current = shared_mailboxes(4, 2)
    desired.append(account("new@example.com"))
    desired[2] = account("shared0@example.com", kind="functional", delegates=["ann@example.com"], name="Renamed")
    result = plan(desired, current, desired_complete=False)
    assert ops(result) == [("create_user", "new@example.com")]  # the rest would take a delegate away
    assert {s["email"] for s in result.skips if s["reason"] == "desired_incomplete"} == {
        "shared0@example.com", "shared1@example.com"}
    assert not result.safety.passed and result.safety.withheld == 2


# -- delegates are accounts, not addresses (issue 16, bugs B and C) --------------------------------


def test_a_reused_address_never_makes_the_leavers_account_a_delegate():
    """A leaver's suspended account keeps its address; a new hire with the same address is
    withheld (ambiguous_match), and so is the new hire's Full Access: granting the address
    would reach the leaver's account."""
    leaver = dict(account("sam@example.com", active=False, zivver_id="z1"))
    known = mapping(("z1", "sam@example.com", ["ldap:leaver"]))
    newcomer = account("sam@example.com", anchors=["ldap:newcomer"])
    shared = account("team@example.com", kind="functional", delegates=["sam@example.com"])
    result = plan([newcomer, shared], [leaver, account("team@example.com", kind="functional", zivver_id="z2")],
                  mapping=known)
    assert not any("sam@example.com" in c["after"].get("delegates", ()) for c in result.changes)
    reasons = {(s["email"], s["reason"]) for s in result.skips}
    assert ("sam@example.com", "ambiguous_match") in reasons and ("team@example.com", "delegate_withheld") in reasons


def test_a_delegate_renamed_needs_no_change_of_the_functional_account():
    known = mapping(("z1", "old@example.com", ["ldap:p"]))
    current = [account("old@example.com", zivver_id="z1"),
               account("team@example.com", kind="functional", delegates=["old@example.com"], zivver_id="z2")]
    desired = [account("new@example.com", anchors=["ldap:p"]),
               account("team@example.com", kind="functional", delegates=["new@example.com"])]
    assert ops(plan(desired, current, mapping=known)) == [("rename_user", "new@example.com")]


def test_a_delegate_is_renamed_created_or_reactivated_before_it_is_granted():
    known = mapping(("z1", "old@example.com", ["ldap:p"]), ("z3", "back@example.com", ["ldap:b"]))
    current = [account("old@example.com", zivver_id="z1"), account("back@example.com", active=False, zivver_id="z3"),
               account("team@example.com", kind="functional", delegates=["old@example.com"], zivver_id="z2")]
    desired = [account("new@example.com", anchors=["ldap:p"]), account("back@example.com", anchors=["ldap:b"]),
               account("hire@example.com", anchors=["ldap:h"]),
               account("team@example.com", kind="functional",
                       delegates=["back@example.com", "hire@example.com", "new@example.com"])]
    result = plan(desired, current, mapping=known)
    order = ops(result)
    functional = order.index(("update_functional", "team@example.com"))
    for before in (("rename_user", "new@example.com"), ("reactivate_user", "back@example.com"),
                   ("create_user", "hire@example.com")):
        assert order.index(before) < functional


def test_a_cloud_dn_never_keeps_a_leaver_of_an_ad_source_from_suspension():
    """The account mapping may hold an Exchange Online DN; an AD source's scope does not judge it."""
    from stages.core.planning import Reading

    known = Mapping()
    known.record(MappedAccount("z1", "jdoe@example.com", "user", ["ldap:j"], sources=["exo", "ldap"],
                               dn="CN=jdoe,OU=contoso.onmicrosoft.com,DC=EURPR05A001,DC=prod,DC=outlook,DC=com"))
    reading = Reading(("exo", "ldap"), {"ldap": {"source": "ldap", "people": True, "mailbox_kinds": ["user"],
                                                 "full_access": [], "scope": {"base_dn": "DC=corp,DC=example"}},
                                        "exo": None})
    result = diff([account("ann@example.com")], [account("jdoe@example.com", zivver_id="z1")], options(),
                  mapping=known, reading=reading)
    assert ops(result) == [("create_user", "ann@example.com"), ("suspend_user", "jdoe@example.com")]


def test_a_delegate_whose_rename_is_withheld_keeps_its_access_at_its_old_address():
    known = mapping(("z1", "xold@example.com", ["ldap:x"]))
    current = [account("xold@example.com", zivver_id="z1"), account("z@example.com", zivver_id="z2"),
               account("w@example.com", zivver_id="z3"),
               account("holder@example.com", aliases=["xnew@example.com"], zivver_id="z4"),
               account("f@example.com", kind="functional", delegates=["xold@example.com", "z@example.com"],
                       zivver_id="z5")]
    desired = [account("xnew@example.com", anchors=["ldap:x"]), account("z@example.com"), account("w@example.com"),
               account("f@example.com", kind="functional",
                       delegates=["w@example.com", "xnew@example.com", "z@example.com"])]
    result = plan(desired, current, mapping=known, exclude=("holder@*",))
    update = next(c for c in result.changes if c["email"] == "f@example.com")
    assert update["after"]["delegates"] == ["w@example.com", "xold@example.com", "z@example.com"]
    assert not any(f.startswith("delegate -") for f in update["why"]["facts"])
