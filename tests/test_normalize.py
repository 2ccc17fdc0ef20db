"""The rules of normalize (DESIGN.md §3), one test each, on the pure function."""

from __future__ import annotations

import pytest
from helpers import group, permission, person

from stages.core.directory import Scope, ScopeError, normalize

CLAIMED = frozenset({"example.com", "example.nl"})


def scope(**kwargs) -> Scope:
    return Scope(claimed_domains=CLAIMED, **kwargs)


def accounts(records, **kwargs) -> dict[str, dict]:
    return {a["email"]: a for a in normalize(records, scope(**kwargs)).accounts}


def test_user_mailbox_and_mail_enabled_user_become_personal_accounts():
    result = accounts([
        person("a", "ann@example.com"),
        person("b", "bob@example.com", mailbox="none"),
        person("c", None, mailbox="none"),
    ])
    assert sorted(result) == ["ann@example.com", "bob@example.com"]
    assert {a["kind"] for a in result.values()} == {"user"}


def test_shared_mailbox_becomes_functional_and_is_active_though_disabled_in_ad():
    result = accounts([person("s", "sales@example.com", mailbox="shared", enabled=False)])
    assert result["sales@example.com"]["kind"] == "functional"
    assert result["sales@example.com"]["active"] is True


def test_room_and_equipment_mailboxes_only_when_asked():
    records = [person("r", "room@example.com", mailbox="room"), person("e", "beamer@example.com", mailbox="equipment")]
    assert accounts(records) == {}
    included = accounts(records, resource_mailboxes=True)
    assert {a["kind"] for a in included.values()} == {"functional"} and len(included) == 2


def test_aliases_are_secondary_addresses_in_claimed_domains_lower_cased():
    result = accounts([person("a", "Ann@Example.com",
                              addresses=["Ann@Example.com", "A.Smith@example.NL", "ann@elsewhere.org"])])
    ann = result["ann@example.com"]
    assert ann["aliases"] == ["a.smith@example.nl"]


def test_primary_address_outside_claimed_domains_gives_no_account():
    assert accounts([person("a", "ann@elsewhere.org")]) == {}


def test_subdomain_of_a_claimed_domain_is_not_claimed():
    assert accounts([person("a", "ann@mail.example.com")]) == {}


def test_disabled_user_is_inactive():
    assert accounts([person("a", "ann@example.com", enabled=False)])["ann@example.com"]["active"] is False


def test_name_falls_back_to_given_and_surname_then_local_part():
    result = accounts([
        person("a", "ann@example.com", display_name="Ann Smith"),
        person("b", "bob@example.com", given_name="Bob", surname="Østergård"),
        person("c", "carl@example.com"),
    ])
    assert [result[e]["name"] for e in sorted(result)] == ["Ann Smith", "Bob Østergård", "carl"]


def shared_with(*records):
    return [person("s", "sales@example.com", mailbox="shared", enabled=False), *records]


def test_fullaccess_gives_delegates():
    result = accounts(shared_with(person("a", "ann@example.com"), permission("sales@example.com", "ann@example.com")))
    assert result["sales@example.com"]["delegates"] == ["ann@example.com"]


@pytest.mark.parametrize("entry", [
    permission("sales@example.com", "ann@example.com", inherited=True),
    permission("sales@example.com", "ann@example.com", rights=["ReadPermission"]),
    permission("sales@example.com", "NT AUTHORITY\\SELF"),
    permission("sales@example.com", "S-1-5-21-1004336348-1177238915-682003330-512"),
    permission("sales@example.com", "nobody@example.com"),
], ids=["inherited", "not-fullaccess", "self", "orphaned-sid", "unknown"])
def test_permissions_that_give_no_delegate(entry):
    result = accounts(shared_with(person("a", "ann@example.com"), entry))
    assert result["sales@example.com"]["delegates"] == []


def test_fullaccess_among_other_rights_counts_case_insensitively():
    result = accounts(shared_with(person("a", "ann@example.com"),
                                  permission("sales@example.com", "ann@example.com", rights=["ReadPermission", "fullaccess"])))
    assert result["sales@example.com"]["delegates"] == ["ann@example.com"]


def test_deny_removes_a_delegate_granted_through_a_group():
    result = accounts(shared_with(
        person("a", "ann@example.com"), person("b", "bob@example.com"), group("g", ["a", "b"]),
        permission("sales@example.com", "g"), permission("sales@example.com", "bob@example.com", deny=True)))
    assert result["sales@example.com"]["delegates"] == ["ann@example.com"]


def test_group_trustee_is_expanded_through_nested_groups():
    result = accounts(shared_with(
        person("a", "ann@example.com"), person("b", "bob@example.com"), person("c", "carl@example.com"),
        group("top", ["mid", "a"], mail="team@example.com"), group("mid", ["low"]), group("low", ["b", "c"]),
        permission("sales@example.com", "team@example.com")))
    assert result["sales@example.com"]["delegates"] == ["ann@example.com", "bob@example.com", "carl@example.com"]


def test_group_cycle_is_expanded_once_and_ends():
    result = accounts(shared_with(
        person("a", "ann@example.com"), person("b", "bob@example.com"),
        group("x", ["y", "a"]), group("y", ["x", "b"]), permission("sales@example.com", "x")))
    assert result["sales@example.com"]["delegates"] == ["ann@example.com", "bob@example.com"]


def test_member_of_on_the_person_counts_as_membership():
    result = accounts(shared_with(person("a", "ann@example.com", groups=["g"]), group("g", []),
                                  permission("sales@example.com", "g")))
    assert result["sales@example.com"]["delegates"] == ["ann@example.com"]


def test_members_and_member_of_given_as_dns_as_extract_ldap_writes_them():
    ann_dn, bob_dn = "CN=Smith\\, Ann,OU=Staff,DC=corp", "CN=Bob,OU=Staff,DC=corp"
    low_dn, top_dn = "CN=Low,OU=Groups,DC=corp", "CN=Top,OU=Groups,DC=corp"
    result = accounts(shared_with(
        person("a", "ann@example.com", dn=ann_dn), person("b", "bob@example.com", dn=bob_dn, groups=[low_dn]),
        person("c", "carl@example.com", dn="CN=Carl,OU=Gone,DC=corp"),
        group("top", [ann_dn.upper(), low_dn], dn=top_dn), group("low", ["CN=Nobody,OU=Staff,DC=corp"], dn=low_dn),
        permission("sales@example.com", top_dn)))
    # the escaped comma does not make Ann's DN a DOMAIN\\user; Bob is in Low by his memberOf
    assert result["sales@example.com"]["delegates"] == ["ann@example.com", "bob@example.com"]


def test_trustee_resolved_by_upn_sid_and_domain_sam():
    result = accounts(shared_with(
        person("a", "ann@example.com", upn="ann.upn@corp.example.com"),
        person("b", "bob@example.com", sid="S-1-5-21-1-2-3-1105"),
        person("c", "carl@example.com", sam_account_name="carl"),
        permission("sales@example.com", "ann.upn@corp.example.com"),
        permission("sales@example.com", "S-1-5-21-1-2-3-1105"),
        permission("sales@example.com", "CORP\\carl")))
    assert result["sales@example.com"]["delegates"] == ["ann@example.com", "bob@example.com", "carl@example.com"]


def test_delegates_are_only_active_personal_accounts_in_scope():
    result = accounts(shared_with(
        person("a", "ann@example.com", enabled=False),
        person("o", "other@elsewhere.org"),
        person("t", "team@example.com", mailbox="shared"),
        person("b", "bob@example.com"),
        group("g", ["a", "o", "t", "b"]), permission("sales@example.com", "g")))
    assert result["sales@example.com"]["delegates"] == ["bob@example.com"]


def test_personal_account_gets_delegates_but_never_itself():
    result = accounts([person("a", "ann@example.com"), person("b", "bob@example.com"),
                       group("g", ["a", "b"]), permission("ann@example.com", "g")])
    assert result["ann@example.com"]["delegates"] == ["bob@example.com"]


def test_sources_merge_by_anchor_and_union_their_addresses():
    result = normalize([
        person("AAA", "ann@example.com", source="ldap", addresses=["ann@example.com", "a@example.com"]),
        person("aaa", "ann@example.com", source="exchange", enabled=None, addresses=["ann@example.com", "ann2@example.nl"]),
    ], scope())
    (ann,) = result.accounts
    assert ann["aliases"] == ["a@example.com", "ann2@example.nl"]
    assert ann["sources"] == ["exchange", "ldap"] and ann["anchors"] == ["aaa"]
    assert result.conflicts == []


def test_sources_merge_by_address_when_anchors_differ():
    result = normalize([person("guid-1", "ann@example.com", source="ldap"),
                        person("entra-1", "ann@example.com", source="exo")], scope())
    (ann,) = result.accounts
    assert ann["anchors"] == ["entra-1", "guid-1"]


def test_conflicting_kind_holds_the_account_and_reports_it():
    result = normalize([person("a", "ann@example.com", source="ldap"),
                        person("a", "ann@example.com", source="exchange", mailbox="shared")], scope())
    assert result.accounts == []
    (conflict,) = result.conflicts
    assert conflict["field"] == "kind" and conflict["held"] is True
    assert {v["source"]: v["value"] for v in conflict["values"]} == {"ldap": "user", "exchange": "functional"}


def test_conflicting_enabled_state_holds_the_account():
    result = normalize([person("a", "ann@example.com", source="ldap", enabled=True),
                        person("b", "ann@example.com", source="exo", enabled=False)], scope())
    assert result.accounts == [] and [c["field"] for c in result.conflicts] == ["active"]


def test_conflicting_display_name_follows_source_priority_and_is_reported():
    records = [person("a", "ann@example.com", source="ldap", display_name="Ann Smith"),
               person("a", "ann@example.com", source="exo", display_name="Ann S.")]
    default = normalize(records, scope())
    assert default.accounts[0]["name"] == "Ann Smith"  # ldap came first
    assert default.conflicts[0]["held"] is False and "ldap" in default.conflicts[0]["resolution"]
    preferred = normalize(records, scope(source_priority=("exo",)))
    assert preferred.accounts[0]["name"] == "Ann S."


def test_include_and_exclude_ou():
    records = [person("a", "ann@example.com", dn="CN=Ann,OU=Staff,DC=example,DC=com"),
               person("b", "bob@example.com", dn="CN=Bob,OU=Disabled,OU=Staff,DC=example,DC=com"),
               person("c", "carl@example.com", dn="CN=Carl,OU=Vendors,DC=example,DC=com")]
    result = accounts(records, include_ous=("ou=staff,dc=example,dc=com",), exclude_ous=("OU=Disabled,OU=Staff,DC=example,DC=com",))
    assert sorted(result) == ["ann@example.com"]


def test_ous_are_compared_as_dns_not_as_text():
    records = [person("a", "ann@example.com", dn="CN=Ann,OU=Staff,DC=corp,DC=example"),
               person("b", "bob@example.com", dn="CN=Bob,OU=Other,DC=corp,DC=example")]
    assert set(accounts(records, include_ous=("ou=staff, DC=corp, dc=example",))) == {"ann@example.com"}
    assert set(accounts(records, exclude_ous=("OU=Staff , DC=Corp,DC=Example",))) == {"bob@example.com"}


def test_include_and_exclude_group_membership_nested():
    records = [person("a", "ann@example.com"), person("b", "bob@example.com"), person("c", "carl@example.com"),
               group("zivver-users", ["nested"]), group("nested", ["a", "b"]), group("no-zivver", ["b"])]
    result = accounts(records, include_groups=("zivver-users",), exclude_groups=("no-zivver",))
    assert sorted(result) == ["ann@example.com"]


def test_group_filter_naming_an_unknown_group_is_an_error():
    with pytest.raises(ScopeError, match="typo-group"):
        normalize([person("a", "ann@example.com"), group("g", ["a"])], scope(include_groups=("typo-group",)))


def test_address_filters():
    records = [person("a", "ann@example.com"), person("b", "svc-backup@example.com"), person("c", "carl@example.nl")]
    result = accounts(records, include_addresses=("*@example.com",), exclude_addresses=("svc-*",))
    assert sorted(result) == ["ann@example.com"]


def test_groups_as_functional_accounts():
    records = [person("a", "ann@example.com"), person("b", "bob@example.com", enabled=False),
               group("g", ["a", "b"], mail="helpdesk@example.com")]
    result = accounts(records, groups_as_functional=True)
    assert result["helpdesk@example.com"]["kind"] == "functional"
    assert result["helpdesk@example.com"]["delegates"] == ["ann@example.com"]


def test_alias_that_is_another_accounts_address_is_dropped_with_a_warning():
    result = normalize([person("a", "ann@example.com", addresses=["ann@example.com", "bob@example.com"]),
                        person("b", "bob@example.com")], scope())
    assert {a["email"]: a["aliases"] for a in result.accounts} == {"ann@example.com": [], "bob@example.com": []}
    assert any("bob@example.com" in w for w in result.warnings)


def test_error_records_make_the_result_incomplete():
    result = normalize([person("a", "ann@example.com"),
                        {"type": "error", "source": "exchange", "object": "shared7", "message": "boom"}], scope())
    assert result.incomplete_reasons == ["exchange: could not read shared7: boom"]


def test_output_is_sorted_and_deterministic_whatever_the_input_order():
    records = [person(str(n), f"user{n}@example.com") for n in range(20)] + [
        person("s", "sales@example.com", mailbox="shared"), group("g", [str(n) for n in range(20)]),
        permission("sales@example.com", "g")]
    forward = normalize(records, scope())
    backward = normalize(list(reversed(records)), scope())
    assert forward.accounts == backward.accounts
    assert [a["email"] for a in forward.accounts] == sorted(a["email"] for a in forward.accounts)


def test_a_group_trustee_named_domain_backslash_sam_is_expanded():
    """On-premise Full Access is often given to a security group that is no recipient
    (CORP\\Helpdesk): Exchange names it by its sAMAccountName, AD gives its members."""
    records = shared_with(
        person("a", "ann@example.com"), person("b", "bob@example.com"),
        group("g-helpdesk", ["a", "b"], name="Helpdesk", sam_account_name="Helpdesk"),
        permission("sales@example.com", "CORP\\Helpdesk"))
    assert accounts(records)["sales@example.com"]["delegates"] == ["ann@example.com", "bob@example.com"]


def test_a_domain_user_name_two_people_share_names_neither():
    """Two forests both have a jdoe: CORP\\jdoe must not give the other one access."""
    records = shared_with(
        person("a", "jdoe@corp.example.com", sam_account_name="jdoe", source="ldap"),
        person("b", "jdoe@other.example.com", sam_account_name="jdoe", source="ldap2"),
        person("c", "carl@example.com", sam_account_name="carl"),
        permission("sales@example.com", "CORP\\jdoe"), permission("sales@example.com", "CORP\\carl"))
    result = normalize(records, Scope(claimed_domains=frozenset({"example.com", "corp.example.com",
                                                                 "other.example.com"})))
    assert {a["email"]: a for a in result.accounts}["sales@example.com"]["delegates"] == ["carl@example.com"]
