"""The fake Exchange on-premise PowerShell endpoint (tests/fake_exchange.py) against the REAL
pypsrp client: what zivsync-extract-exchange will see."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pypsrp = pytest.importorskip("pypsrp")
pytest.importorskip("psrpcore")

from fake_exchange import (
    DEFAULT_LIMIT_WARNING,
    GROUP_TYPES,
    MAILBOX_TYPES,
    MORE_RESULTS_WARNING,
    SCRIPTS_NOT_ALLOWED,
    FakeExchange,
    Organization,
)
from pypsrp.complex_objects import GenericComplexObject, PSInvocationState
from pypsrp.exceptions import AuthenticationError, WinRMTransportError, WSManFaultError
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

MAILBOX_TYPE = "Microsoft.Exchange.Data.Directory.Management.Mailbox"
PROXY_COLLECTION = "Microsoft.Exchange.Data.ProxyAddressCollection"
ACE_TYPE = "Microsoft.Exchange.Management.RecipientTasks.MailboxAcePresentationObject"
RECIPIENT_TYPE = "Microsoft.Exchange.Data.Directory.Management.ReducedRecipient"


@pytest.fixture(scope="module")
def org() -> Organization:
    return Organization.generate(mailboxes=500, shared=60, seed=1)


@pytest.fixture(scope="module")
def fake(org, tmp_path_factory):
    with FakeExchange(tmp_path_factory.mktemp("exchange"), org) as fake:
        yield fake


def connect(fake: FakeExchange, **overrides) -> WSMan:
    kwargs = {"port": fake.port, "path": "PowerShell", "ssl": True, "cert_validation": str(fake.ca_file),
              "auth": "basic", "username": fake.username, "password": fake.password, "encryption": "auto"}
    kwargs.update(overrides)
    return WSMan("localhost", **kwargs)


@pytest.fixture
def pool(fake):
    with RunspacePool(connect(fake), configuration_name="Microsoft.Exchange") as pool:
        yield pool


def run(pool, *commands) -> tuple[list, PowerShell]:
    """commands: (cmdlet, {param: value}) ...; returns (output, the PowerShell)."""
    ps = PowerShell(pool)
    for name, params in commands:
        ps.add_cmdlet(name)
        for key, value in params.items():
            ps.add_parameter(key, value)
    return ps.invoke(), ps


def lst(value) -> list[str]:
    """A multi-valued property as pypsrp 0.9.1 returns it (GenericComplexObject holding the raw
    '<LST>...</LST>' string in property_sets) -> list of strings."""
    assert isinstance(value, GenericComplexObject)
    raw = [p for p in value.property_sets if isinstance(p, str) and p.startswith("<LST")]
    assert len(raw) == 1, value.property_sets
    return [e.text or "" for e in ET.fromstring(raw[0])]


# --------------------------------------------------------------------------------------------
# Objects and their shapes
# --------------------------------------------------------------------------------------------

def test_get_mailbox_unlimited_returns_every_mailbox_with_exchange_shapes(fake, org, pool):
    fake.reset_log()
    out, ps = run(pool, ("Get-Mailbox", {"ResultSize": "Unlimited"}))
    assert not ps.had_errors and not ps.streams.error and not ps.streams.warning
    assert len(out) == len(org.mailboxes) > 500
    by_guid = {m["Guid"]: m for m in org.mailboxes}
    for obj in out:
        assert isinstance(obj, GenericComplexObject)
        assert obj.types[0] == MAILBOX_TYPE and obj.types[-1] == "System.Object"
        assert "Microsoft.Exchange.Data.Directory.Management.MailEnabledOrgPerson" in obj.types
        p = obj.adapted_properties
        assert isinstance(p["Guid"], uuid.UUID)
        mb = by_guid[str(p["Guid"])]
        assert str(obj) == mb["Name"]
        assert p["PrimarySmtpAddress"] == mb["PrimarySmtpAddress"]
        assert p["RecipientTypeDetails"] == mb["RecipientTypeDetails"] in MAILBOX_TYPES
        assert p["AccountDisabled"] is mb["AccountDisabled"]
        for key in ("SamAccountName", "UserPrincipalName", "Alias", "Name", "DisplayName",
                    "DistinguishedName", "Identity"):
            assert p[key] == mb[key], key
        assert p["ExternalDirectoryObjectId"] == ""
        # the quirk of exchange.md 2.4: a bare <LST> under a typed <Obj> comes back as a raw string
        addresses = p["EmailAddresses"]
        assert addresses.types[0] == PROXY_COLLECTION
        assert isinstance(addresses.property_sets[0], str) and addresses.property_sets[0].startswith("<LST>")
        assert lst(addresses) == mb["EmailAddresses"]
    kinds = {o.adapted_properties["RecipientTypeDetails"] for o in out}
    assert kinds == set(MAILBOX_TYPES)
    assert any(o.adapted_properties["AccountDisabled"] for o in out
               if o.adapted_properties["RecipientTypeDetails"] == "UserMailbox")
    assert any(a.startswith(("SIP:", "X500:")) for o in out for a in lst(o.adapted_properties["EmailAddresses"]))
    actions = fake.counts()
    assert actions["Command"] == 1 and actions["Receive"] > 5   # one pipeline; its output is paged
    assert fake.invocations[-1]["cmdlet"] == "Get-Mailbox"
    assert fake.invocations[-1]["parameters"] == {"ResultSize": "Unlimited"}


def test_mailbox_permission_rows(fake, org, pool):
    address = org.scenarios["direct_users"]
    out, ps = run(pool, ("Get-MailboxPermission", {"Identity": address}))
    assert not ps.streams.error and ps.state == PSInvocationState.COMPLETED
    mailbox = org.by_address(address)
    assert len(out) == len(org.permissions[mailbox["Guid"]])
    for row in out:
        assert row.types[0] == ACE_TYPE
        p = row.adapted_properties
        assert isinstance(p["AccessRights"], list) and all(isinstance(r, str) for r in p["AccessRights"])
        assert isinstance(p["IsInherited"], bool) and isinstance(p["Deny"], bool)
        assert isinstance(p["User"], str) and p["Identity"] == mailbox["Identity"]
        assert p["InheritanceType"] == "All"
    first = out[0].adapted_properties
    assert (first["User"], first["AccessRights"], first["IsInherited"], first["Deny"]) == \
        ("NT AUTHORITY\\SELF", ["FullAccess, ReadPermission"], False, False)  # ONE flags value, as Exchange
    users = {(r.adapted_properties["User"], r.adapted_properties["IsInherited"], r.adapted_properties["Deny"])
             for r in out}
    assert ("CONTOSO\\Domain Admins", True, True) in users
    assert ("CONTOSO\\Organization Management", True, False) in users
    explicit = [r.adapted_properties["User"] for r in out
                if not r.adapted_properties["IsInherited"] and r.adapted_properties["User"] != "NT AUTHORITY\\SELF"]
    assert len(explicit) == 3 and all(u.startswith("CONTOSO\\") for u in explicit)
    # by Guid, DN and DOMAIN\sam too
    for identity in (mailbox["Guid"], mailbox["DistinguishedName"], f"CONTOSO\\{mailbox['SamAccountName']}"):
        again, _ = run(pool, ("Get-MailboxPermission", {"Identity": identity}))
        assert len(again) == len(out)


def test_get_recipient_resolves_every_kind_of_name(org, pool):
    user = next(m for m in org.mailboxes if m["UserPrincipalName"] != m["PrimarySmtpAddress"]
                and any(a.startswith("smtp:") for a in m["EmailAddresses"])
                and len(org.resolve(m["DisplayName"])) == 1)
    secondary = next(a.split(":", 1)[1] for a in user["EmailAddresses"] if a.startswith("smtp:"))
    names = [f"CONTOSO\\{user['SamAccountName']}", user["SamAccountName"], user["UserPrincipalName"],
             user["PrimarySmtpAddress"], secondary, user["Alias"], user["Name"], user["DisplayName"],
             user["Guid"], user["Guid"].upper(), user["DistinguishedName"], user["Identity"]]
    for name in names:
        out, ps = run(pool, ("Get-Recipient", {"Identity": name}))
        assert not ps.streams.error, name
        assert len(out) == 1 and out[0].types[0] == RECIPIENT_TYPE, name
        assert out[0].adapted_properties["Guid"] == uuid.UUID(user["Guid"])
        assert out[0].adapted_properties["RecipientTypeDetails"] == "UserMailbox"
    out, _ = run(pool, ("Get-Recipient", {"Identity": "CONTOSO\\SG-Direct"}))
    assert out[0].adapted_properties["PrimarySmtpAddress"] == org.scenarios["group:SG-Direct"]
    assert out[0].adapted_properties["RecipientTypeDetails"] == "MailUniversalSecurityGroup"
    assert lst(out[0].adapted_properties["EmailAddresses"])[0] == f"SMTP:{org.scenarios['group:SG-Direct']}"


def test_unknown_and_ambiguous_identity_go_to_the_error_stream(org, pool):
    for cmdlet in ("Get-Recipient", "Get-Mailbox", "Get-MailboxPermission"):
        out, ps = run(pool, (cmdlet, {"Identity": "CONTOSO\\Domain Admins"}))
        assert out == [] and not ps.had_errors and ps.state == PSInvocationState.COMPLETED
        [error] = ps.streams.error
        assert str(error) == ("The operation couldn't be performed because object 'CONTOSO\\Domain Admins' "
                              "couldn't be found on 'dc1.contoso.local'.")
        assert error.reason == "ManagementObjectNotFoundException"
        assert error.message == f"NotSpecified: (:) [{cmdlet}], ManagementObjectNotFoundException"
        assert "[FailureCategory=Cmdlet-ManagementObjectNotFoundException]" in error.fq_error
    duplicate = next(m["DisplayName"] for m in org.mailboxes if len(org.resolve(m["DisplayName"])) > 1)
    out, ps = run(pool, ("Get-Recipient", {"Identity": duplicate}))
    assert out == [] and ps.streams.error[0].reason == "ManagementObjectAmbiguousException"
    # -ErrorAction Stop makes it terminating, SilentlyContinue drops it
    out, ps = run(pool, ("Get-Recipient", {"Identity": "nobody", "ErrorAction": "Stop"}))
    assert ps.had_errors and ps.state == PSInvocationState.FAILED
    out, ps = run(pool, ("Get-Recipient", {"Identity": "nobody", "ErrorAction": "SilentlyContinue"}))
    assert not ps.streams.error and ps.state == PSInvocationState.COMPLETED


def test_no_language_mode_and_bad_commands_fail_the_pipeline(pool):
    ps = PowerShell(pool)
    ps.add_script("Get-Mailbox -ResultSize Unlimited | Where-Object { $_.IsShared }")
    assert ps.invoke() == []
    assert ps.had_errors and ps.state == PSInvocationState.FAILED
    [error] = ps.streams.error
    assert str(error) == SCRIPTS_NOT_ALLOWED
    assert error.fq_error == "ScriptsNotAllowed" and error.reason == "ParseException"

    out, ps = run(pool, ("Get-Foo", {}))
    assert out == [] and ps.had_errors and ps.streams.error[0].reason == "CommandNotFoundException"
    assert str(ps.streams.error[0]).startswith("The term 'Get-Foo' is not recognized as the name of a cmdlet")
    out, ps = run(pool, ("Get-Mailbox", {"Bogus": 1}))
    assert out == [] and ps.had_errors and str(ps.streams.error[0]) == \
        "A parameter cannot be found that matches parameter name 'Bogus'."
    out, ps = run(pool, ("Get-MailboxPermission", {}))
    assert out == [] and ps.had_errors and "missing mandatory parameters: Identity" in str(ps.streams.error[0])
    _, ps = run(pool, ("Get-Mailbox", {"RecipientTypeDetails": "Nonsense"}))
    assert ps.had_errors and ps.streams.error[0].reason == "ParameterBindingException"


def test_result_size_default_limit_and_warnings(fake, org, pool):
    fake.result_size_limit = 25
    try:
        out, ps = run(pool, ("Get-Mailbox", {"RecipientTypeDetails": ["UserMailbox", "SharedMailbox"]}))
        assert len(out) == 25 and [w.message for w in ps.streams.warning] == \
            [DEFAULT_LIMIT_WARNING.replace("1000", "25")]
    finally:
        fake.result_size_limit = 1000
    out, ps = run(pool, ("Get-Mailbox", {"RecipientTypeDetails": "SharedMailbox", "ResultSize": 7}))
    assert len(out) == 7 and [w.message for w in ps.streams.warning] == [MORE_RESULTS_WARNING]
    assert {o.adapted_properties["RecipientTypeDetails"] for o in out} == {"SharedMailbox"}
    out, ps = run(pool, ("Get-Mailbox", {"RecipientTypeDetails": "SharedMailbox", "ResultSize": "Unlimited"}))
    assert len(out) == 60 and not ps.streams.warning
    assert DEFAULT_LIMIT_WARNING.startswith("By default, only the first 1000 items are returned.")


def test_groups_and_members(org, pool):
    out, ps = run(pool, ("Get-DistributionGroup", {"ResultSize": "Unlimited"}))
    assert len(out) == len(org.groups) and not ps.streams.error
    assert {o.adapted_properties["RecipientTypeDetails"] for o in out} == set(GROUP_TYPES)
    assert out[0].types[0] == "Microsoft.Exchange.Data.Directory.Management.DistributionGroup"
    out, _ = run(pool, ("Get-DistributionGroup", {"RecipientTypeDetails": "MailUniversalDistributionGroup",
                                                  "ResultSize": "Unlimited"}))
    assert out and {o.adapted_properties["RecipientTypeDetails"] for o in out} == {"MailUniversalDistributionGroup"}
    outer = org.by_address(org.scenarios["group:SG-Outer"])
    members, ps = run(pool, ("Get-DistributionGroupMember", {"Identity": outer["Guid"], "ResultSize": "Unlimited"}))
    assert [m.types[0] for m in members] == [RECIPIENT_TYPE] * 3
    assert [m.adapted_properties["RecipientTypeDetails"] for m in members] == \
        ["UserMailbox", "UserMailbox", "MailUniversalSecurityGroup"]
    assert str(members[2]) == "SG-Middle"
    [group], _ = run(pool, ("Get-Group", {"Identity": "SG-Outer"}))
    assert group.types[0] == "Microsoft.Exchange.Data.Directory.Management.WindowsGroup"
    assert lst(group.adapted_properties["Members"])[-1] == "contoso.local/Groups/SG-Middle"
    out, ps = run(pool, ("Get-DistributionGroupMember", {"Identity": org.mailboxes[0]["Guid"]}))
    assert out == [] and ps.streams.error[0].reason == "ManagementObjectNotFoundException"


def test_fail_injection_writes_an_error_for_one_object(fake, org, pool):
    victim = org.groups[3]
    rule = fake.fail(victim["PrimarySmtpAddress"], cmdlet="Get-DistributionGroup")
    try:
        out, ps = run(pool, ("Get-DistributionGroup", {"ResultSize": "Unlimited"}))
        assert len(out) == len(org.groups) - 1 and ps.state == PSInvocationState.COMPLETED
        [error] = ps.streams.error
        assert error.reason == "ADOperationException" and victim["Identity"] in str(error)
        assert victim["Name"] not in {str(o) for o in out}
        out, ps = run(pool, ("Get-Recipient", {"Identity": victim["Guid"]}))   # other cmdlets unaffected
        assert len(out) == 1 and not ps.streams.error
        fake.fail(org.mailboxes[5]["Alias"], "Mailbox is being moved.", "Get-MailboxPermission", times=1)
        out, ps = run(pool, ("Get-MailboxPermission", {"Identity": org.mailboxes[5]["Guid"]}))
        assert out == [] and str(ps.streams.error[0]) == "Mailbox is being moved."
        out, ps = run(pool, ("Get-MailboxPermission", {"Identity": org.mailboxes[5]["Guid"]}))
        assert out and not ps.streams.error
        assert rule.hits == 1
    finally:
        fake.clear_failures()


def test_pipeline_input_and_positional_identity(org, pool):
    address = org.scenarios["direct_group"]
    out, ps = run(pool, ("Get-Mailbox", {"Identity": address}), ("Get-MailboxPermission", {}))
    assert len(out) == len(org.permissions[org.by_address(address)["Guid"]]) and not ps.streams.error
    ps = PowerShell(pool)
    ps.add_cmdlet("Get-Recipient").add_argument(address)
    assert [o.adapted_properties["PrimarySmtpAddress"] for o in ps.invoke()] == [address]


def test_typed_values_and_deserialized_prefix(tmp_path):
    org = Organization.generate(mailboxes=30, shared=16, groups=4, seed=7)
    with FakeExchange(tmp_path, org, type_prefix="Deserialized.", typed_values=True) as fake, \
            RunspacePool(connect(fake), configuration_name="Microsoft.Exchange") as pool:
        out, _ = run(pool, ("Get-Mailbox", {"RecipientTypeDetails": "SharedMailbox", "ResultSize": "Unlimited"}))
        assert len(out) == 16
        assert out[0].types[0] == "Deserialized." + MAILBOX_TYPE and out[0].types[-1] == "Deserialized.System.Object"
        rtd = out[0].adapted_properties["RecipientTypeDetails"]
        assert isinstance(rtd, GenericComplexObject) and str(rtd) == "SharedMailbox" and rtd.property_sets == [4]
        assert lst(out[0].adapted_properties["EmailAddresses"])[0].startswith("SMTP:")
        rows, _ = run(pool, ("Get-MailboxPermission", {"Identity": out[0].adapted_properties["Guid"]}))
        rights = rows[0].adapted_properties["AccessRights"]
        # one flags value, its <ToString> the names and its number 131073 (MS-PSRP §2.2.5.2.7)
        assert isinstance(rights, list) and [str(r) for r in rights] == ["FullAccess, ReadPermission"]
        assert [r.property_sets for r in rights] == [[131073]]
        assert rights[0].types[0] == "Deserialized.Microsoft.Exchange.Management.RecipientTasks.MailboxRights"


# --------------------------------------------------------------------------------------------
# The oracle
# --------------------------------------------------------------------------------------------

def test_expected_delegates_scenarios(org):
    expected = org.expected_delegates()
    shared = [m for m in org.mailboxes if m["RecipientTypeDetails"] == "SharedMailbox"]
    assert set(expected) == {m["PrimarySmtpAddress"] for m in shared}
    sizes = {name: len(expected[org.scenarios[name]]) for name in (
        "direct_users", "direct_group", "nested_group", "cyclic_group", "deny_user", "deny_group",
        "orphaned_sid", "inherited_only", "read_permission", "disabled_user", "shared_trustee",
        "self_in_group", "empty_group", "overlap", "inherited_deny")}
    assert sizes == {"direct_users": 3, "direct_group": 3, "nested_group": 6, "cyclic_group": 4,
                     "deny_user": 2, "deny_group": 2, "orphaned_sid": 1, "inherited_only": 0,
                     "read_permission": 1, "disabled_user": 1, "shared_trustee": 1, "self_in_group": 1,
                     "empty_group": 0, "overlap": 6, "inherited_deny": 1}
    by_address = {m["PrimarySmtpAddress"]: m for m in org.mailboxes}
    for users in expected.values():
        assert users == sorted(users)
        assert all(by_address[u]["RecipientTypeDetails"] == "UserMailbox" and not by_address[u]["AccountDisabled"]
                   for u in users)
    assert sum(1 for users in expected.values() if users) > 30      # random grants on the rest
    assert Organization.generate(mailboxes=500, shared=60, seed=1).to_json() == org.to_json()


def test_save_and_load(org, tmp_path):
    org.save(tmp_path / "org.json")
    assert Organization.load(tmp_path / "org.json").to_json() == org.to_json()


def test_a_client_following_the_rules_through_the_fake_matches_the_oracle(org, pool):
    """The fake serves what the oracle assumes: compute Full Access for the scenario mailboxes
    with Get-MailboxPermission, Get-Recipient, Get-DistributionGroupMember and Get-Mailbox."""
    groups_cache: dict[str, set[str]] = {}

    def expand(recipient) -> set[str]:
        p = recipient.adapted_properties
        if p["RecipientTypeDetails"] not in GROUP_TYPES:
            return {str(p["Guid"])}
        out, seen, todo = set(), {str(p["Guid"])}, [str(p["Guid"])]
        while todo:
            guid = todo.pop()
            if guid not in groups_cache:
                members, _ = run(pool, ("Get-DistributionGroupMember", {"Identity": guid, "ResultSize": "Unlimited"}))
                groups_cache[guid] = members
            for m in groups_cache[guid]:
                mp = m.adapted_properties
                if mp["RecipientTypeDetails"] in GROUP_TYPES:
                    if str(mp["Guid"]) not in seen:
                        seen.add(str(mp["Guid"]))
                        todo.append(str(mp["Guid"]))
                else:
                    out.add(str(mp["Guid"]))
        return out

    expected = org.expected_delegates()
    for name in [k for k in org.scenarios if not k.startswith("group:")]:
        address = org.scenarios[name]
        rows, _ = run(pool, ("Get-MailboxPermission", {"Identity": address}))
        allow, deny = set(), set()
        for row in rows:
            p = row.adapted_properties
            names = [n.strip() for r in p["AccessRights"] for n in str(r).split(",")]  # one flags value
            if "FullAccess" not in names or p["IsInherited"]:
                continue
            found, _ = run(pool, ("Get-Recipient", {"Identity": p["User"]}))
            if len(found) == 1:
                (deny if p["Deny"] else allow).update(expand(found[0]))
        me = str(org.by_address(address)["Guid"])
        result = []
        for guid in allow - deny - {me}:
            [mb], _ = run(pool, ("Get-Mailbox", {"Identity": guid}))
            if mb.adapted_properties["RecipientTypeDetails"] == "UserMailbox" and not mb.adapted_properties["AccountDisabled"]:
                result.append(mb.adapted_properties["PrimarySmtpAddress"])
        assert sorted(result) == expected[address], name


# --------------------------------------------------------------------------------------------
# Transport: auth, endpoint, configuration, HTTP, latency, parallel pipelines, process
# --------------------------------------------------------------------------------------------

def test_wrong_password_raises_authentication_error(fake):
    with pytest.raises(AuthenticationError):
        RunspacePool(connect(fake, password="wrong"), configuration_name="Microsoft.Exchange").open()


def test_wrong_path_raises_transport_error_404(fake):
    with pytest.raises(WinRMTransportError) as info:
        RunspacePool(connect(fake, path="wsman"), configuration_name="Microsoft.Exchange").open()
    assert info.value.code == 404 and "Code: 404" in str(info.value)


def test_wrong_configuration_raises_wsman_fault(fake):
    with pytest.raises(WSManFaultError) as info:
        RunspacePool(connect(fake), configuration_name="Microsoft.PowerShell").open()
    assert info.value.code == 2150858811
    assert ("The WS-Management service cannot process the request. The resource URI "
            "(http://schemas.microsoft.com/powershell/Microsoft.PowerShell) was not found in the "
            "WS-Management catalog.") in info.value.reason


def test_plain_http_with_encryption_never(org, tmp_path):
    with FakeExchange(tmp_path, org, https=False, password="Secret-1") as fake:
        assert fake.url == f"http://localhost:{fake.port}/PowerShell" and fake.ca_file is None
        wsman = WSMan("localhost", port=fake.port, path="powershell/", ssl=False, auth="basic",
                      username="contoso\\SVC-ZIVSYNC", password="Secret-1", encryption="never")
        with RunspacePool(wsman, configuration_name="Microsoft.Exchange") as pool:
            out, _ = run(pool, ("Get-Recipient", {"Identity": org.scenarios["group:SG-Inner"]}))
        assert str(out[0]) == "SG-Inner"


def test_latency_is_added_to_every_round_trip(org, tmp_path):
    with FakeExchange(tmp_path, org, latency=0.05) as fake:
        started = time.monotonic()
        with RunspacePool(connect(fake), configuration_name="Microsoft.Exchange") as pool:
            run(pool, ("Get-Recipient", {"Identity": org.scenarios["group:SG-Outer"]}))
        elapsed = time.monotonic() - started
        assert fake.round_trips >= 4 and elapsed >= 0.05 * fake.round_trips
        assert set(fake.counts()) >= {"Create", "Command", "Receive", "Delete"}
        assert fake.counts("cmdlet") == {"Get-Recipient": 1}


def test_parallel_pipelines_in_one_pool(org, fake):
    """Several pipelines in flight in one pool, driven from ONE thread (begin_invoke, then
    end_invoke): pypsrp's RunspacePool shares one Serializer, so invoke() from several threads is
    not safe (see the report), but the server side runs the pipelines concurrently."""
    addresses = [org.scenarios[n] for n in ("direct_users", "direct_group", "nested_group", "deny_user")]
    with RunspacePool(connect(fake), configuration_name="Microsoft.Exchange", min_runspaces=1, max_runspaces=4) as pool:
        shells = []
        for address in addresses:
            ps = PowerShell(pool)
            ps.add_cmdlet("Get-MailboxPermission").add_parameter("Identity", address)
            ps.begin_invoke()
            shells.append(ps)
        big = PowerShell(pool)
        big.add_cmdlet("Get-Recipient").add_parameter("ResultSize", 200)
        big.begin_invoke()
        results = [ps.end_invoke() for ps in shells]
        everyone = big.end_invoke()
    for address, rows in zip(addresses, results):
        assert {r.adapted_properties["Identity"] for r in rows} == {org.by_address(address)["Identity"]}
    assert len(everyone) == 200 and len({str(o.adapted_properties["Guid"]) for o in everyone}) == 200


def test_one_pool_per_thread(org, fake):
    results, errors = {}, []

    def work(name: str):
        try:
            with RunspacePool(connect(fake), configuration_name="Microsoft.Exchange") as pool:
                for _ in range(3):
                    out, _ = run(pool, ("Get-MailboxPermission", {"Identity": org.scenarios[name]}))
                    results.setdefault(name, set()).add(len(out))
        except Exception as e:  # noqa: BLE001  (collected and asserted below)
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(n,)) for n in ("direct_users", "nested_group", "overlap")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == {n: {len(org.permissions[org.by_address(org.scenarios[n])["Guid"]])}
                       for n in ("direct_users", "nested_group", "overlap")}


def test_runs_as_a_process(tmp_path):
    info_file = tmp_path / "info.json"
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("fake_exchange.py")), "--generate", "40",
                             "--shared", "16", "--latency", "0.001", "--folder", str(tmp_path / "certs"),
                             "--info-file", str(info_file)],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY ")
        info = json.loads(info_file.read_text())
        assert info["port"] == int(line.split()[1]) and info["url"].endswith("/PowerShell")
        wsman = WSMan(info["host"], port=info["port"], path="PowerShell", ssl=True, cert_validation=info["ca_file"],
                      auth="basic", username=info["username"], password=info["password"])
        with RunspacePool(wsman, configuration_name="Microsoft.Exchange") as pool:
            out, _ = run(pool, ("Get-Mailbox", {"RecipientTypeDetails": "SharedMailbox", "ResultSize": "Unlimited"}))
        assert len(out) == 16
    finally:
        proc.terminate()
        proc.wait(timeout=10)
