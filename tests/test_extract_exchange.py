"""zivsync-extract-exchange against a loopback fake of Exchange's remote PowerShell endpoint
(tests/fake_exchange.py: real WSMan and PSRP, psrpcore's server runspace pool), through the
real pypsrp; every run is the installed executable as a process."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_exchange import FakeExchange, Organization
from helpers import account, run, sync_into_sandbox, write_stream

from stages.cli import ExitStatus

DOMAIN = "contoso.example"


def extract(fake: FakeExchange, *args, password: str | None = None, url: str | None = None,
            expect=ExitStatus.OK):
    secret = password or fake.password
    done = run("zivsync-extract-exchange", "--url", url or fake.url, "--auth", "basic", "--username", fake.username,
               *(("--ca-file", fake.ca_file) if fake.ca_file else ()), *args,
               env={"ZIVSYNC_EXCHANGE_PASSWORD": secret}, timeout=300)
    assert done.returncode == expect, done.stderr
    assert secret not in done.stderr and secret.encode() not in done.stdout
    return done


def kinds(records) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for record in records:
        found.setdefault(record["type"], []).append(record)
    return found


def normalized(stdout: bytes, tmp_path: Path, name: str = "exchange.jsonl") -> list[dict]:
    stream = tmp_path / name
    stream.write_bytes(stdout)
    done = run("zivsync-normalize", "-i", stream, "--claimed-domain", DOMAIN)
    assert done.returncode == 0, done.stderr
    return done.records


@pytest.fixture(scope="module")
def organization():
    return Organization.generate(mailboxes=500, shared=60, seed=5)


@pytest.fixture(scope="module")
def served(organization, tmp_path_factory):
    with FakeExchange(tmp_path_factory.mktemp("exchange"), organization) as fake:
        done = extract(fake, "-v")
        yield fake, done


def test_every_mailbox_and_the_full_access_of_every_shared_one(served, organization, tmp_path):
    fake, done = served
    found = kinds(done.records)
    assert {p["anchor"] for p in found["person"]} == {m["Guid"].lower() for m in organization.mailboxes}
    end = done.records[-1]
    assert "error" not in found and end["type"] == "end" and end["count"] == len(done.records) - 2
    assert "complete" not in end and end["tally"]["permission records"] == len(found["permission"])
    accounts = {r["email"]: r for r in normalized(done.stdout, tmp_path) if r["type"] == "account"}
    expected = organization.expected_delegates()
    assert {e: accounts[e]["delegates"] for e in expected} == expected  # all 60: direct, nested, cycle, deny...
    scenarios = organization.scenarios
    assert len(expected[scenarios["nested_group"]]) >= 3 and len(expected[scenarios["cyclic_group"]]) >= 2
    # Full Access with Read Permission arrives as ONE flags value, "FullAccess, ReadPermission" (issue 12)
    assert len(expected[scenarios["read_permission"]]) == 1
    assert any("ReadPermission" in p["rights"] and "FullAccess" in p["rights"] for p in found["permission"])
    # cmdlets only, never a script (no-language mode), and each one logged with its parameters
    assert not any(i["script"] for i in fake.invocations)
    assert "Get-Mailbox -RecipientTypeDetails EquipmentMailbox,RoomMailbox,SharedMailbox,UserMailbox " \
           "-ResultSize Unlimited" in done.stderr
    assert "round trips" in done.stderr


def test_mailbox_records_from_deserialised_objects(served, organization):
    _, done = served
    people = {p["anchor"]: p for p in kinds(done.records)["person"]}
    for mailbox in organization.mailboxes[:40]:
        person = people[mailbox["Guid"].lower()]
        smtp = {a.split(":", 1)[1].lower() for a in mailbox["EmailAddresses"] if a.lower().startswith("smtp:")}
        assert set(person["addresses"]) == smtp and person["mail"] == mailbox["PrimarySmtpAddress"].lower()
        assert person["enabled"] is (not mailbox["AccountDisabled"])
        assert person["sam_account_name"] == mailbox["SamAccountName"] and person["dn"] == mailbox["DistinguishedName"]
        assert person["sso_key"] == person["anchor"]


def test_an_object_that_errors_is_reported_and_the_run_goes_on(organization, tmp_path):
    broken = organization.scenarios["direct_users"]
    with FakeExchange(tmp_path / "fake", organization) as fake:
        fake.fail(broken, "The object has been corrupted, and it's in an inconsistent state.",
                  cmdlet="Get-MailboxPermission")
        done = extract(fake)
    errors = kinds(done.records)["error"]
    assert len(errors) == 1 and errors[0]["operation"] == "Get-MailboxPermission"
    assert "corrupted" in errors[0]["message"] and "corrupted" in done.stderr
    assert len(kinds(done.records)["person"]) == len(organization.mailboxes)  # everything else was read
    records = normalized(done.stdout, tmp_path)
    assert records[-1]["complete"] is False
    # diff then plans no suspension: a Zivver account nobody has any more stays as it is
    desired = tmp_path / "desired.jsonl"
    desired.write_bytes(b"".join(__import__("orjson").dumps(r) + b"\n" for r in records))
    current = write_stream(tmp_path / "current.jsonl", "accounts", [
        account("left.company@contoso.example", zivver_id="z-left")])
    plan = run("zivsync-diff", "-i", desired, "--current", current, "--claimed-domain", DOMAIN,
               "--state", tmp_path / "state")
    changes = [r for r in plan.records if r["type"] == "change"]
    assert not any(c["op"] in ("suspend_user", "empty_functional") for c in changes)
    assert any(r["type"] == "skip" and r["email"] == "left.company@contoso.example"
               and r["reason"] == "desired_incomplete" for r in plan.records)


def test_a_listing_error_for_one_mailbox_does_not_stop_the_read(organization, tmp_path):
    victim = next(m for m in organization.mailboxes if m["RecipientTypeDetails"] == "UserMailbox")
    with FakeExchange(tmp_path / "fake", organization) as fake:
        fake.fail(victim["Guid"], "Cannot read this mailbox's attributes.", cmdlet="Get-Mailbox")
        done = extract(fake)
    found = kinds(done.records)
    assert len(found["person"]) == len(organization.mailboxes) - 1
    assert [e["operation"] for e in found["error"]] == ["Get-Mailbox"]


def test_wrong_password(served):
    fake, _ = served
    done = extract(fake, password="not-the-password", expect=ExitStatus.UNREACHABLE)
    assert "credentials were refused" in done.stderr and done.stdout == b""


def test_wrong_path(served):
    fake, _ = served
    done = extract(fake, url=fake.url.rsplit("/", 1)[0] + "/wsman", expect=ExitStatus.UNREACHABLE)
    assert "not Exchange's remote PowerShell endpoint" in done.stderr and done.stdout == b""


def test_unreachable_host(served):
    fake, _ = served
    done = extract(fake, url="https://localhost:1/PowerShell/", expect=ExitStatus.UNREACHABLE)
    assert "not reachable" in done.stderr and done.stdout == b""


def test_basic_over_plain_http_only_when_allowed(tmp_path):
    organization = Organization.generate(mailboxes=20, shared=15, groups=2, seed=2)
    with FakeExchange(tmp_path / "fake", organization, https=False) as fake:
        refused = extract(fake, expect=ExitStatus.ERROR)
        assert "--allow-unencrypted" in refused.stderr
        allowed = extract(fake, "--allow-unencrypted")
    assert len(kinds(allowed.records)["person"]) == len(organization.mailboxes)
    assert "unencrypted" in allowed.stderr


def test_extract_normalize_diff_push(tmp_path):
    organization = Organization.generate(mailboxes=40, shared=15, groups=4, seed=9)
    with FakeExchange(tmp_path / "fake", organization) as fake:
        stream = tmp_path / "exchange.jsonl"
        stream.write_bytes(extract(fake).stdout)
    accounts = sync_into_sandbox([stream], (DOMAIN,), tmp_path)
    active = {m["PrimarySmtpAddress"] for m in organization.mailboxes
              if m["RecipientTypeDetails"] == "UserMailbox" and not m["AccountDisabled"]}
    assert {e for e, a in accounts.items() if a["kind"] == "user"} == active
    expected = organization.expected_delegates()
    assert {e: accounts[e]["delegates"] for e in expected} == expected


def test_ldap_and_exchange_on_premise_merge_by_anchor(tmp_path):
    """AD and Exchange on-premise name the same objects by the same objectGUID: one account
    per person, both sources, one anchor, the delegates from Exchange."""
    organization = Organization.generate(mailboxes=30, shared=15, groups=3, seed=4)
    ldap = [{"type": "person", "source": "ldap", "anchor": m["Guid"].lower(), "dn": m["DistinguishedName"],
             "sam_account_name": m["SamAccountName"], "mail": m["PrimarySmtpAddress"].lower(),
             "addresses": [m["PrimarySmtpAddress"].lower()], "display_name": m["DisplayName"],
             "enabled": not m["AccountDisabled"],
             "mailbox": {"UserMailbox": "user", "SharedMailbox": "shared"}.get(m["RecipientTypeDetails"], "none")}
            for m in organization.mailboxes if m["RecipientTypeDetails"] in ("UserMailbox", "SharedMailbox")]
    ldap_stream = write_stream(tmp_path / "ldap.jsonl", "directory", ldap)
    with FakeExchange(tmp_path / "fake", organization) as fake:
        exchange_stream = tmp_path / "exchange.jsonl"
        exchange_stream.write_bytes(extract(fake).stdout)
    done = run("zivsync-normalize", "-i", ldap_stream, "-i", exchange_stream, "--claimed-domain", DOMAIN)
    assert done.returncode == 0, done.stderr
    assert not [r for r in done.records if r["type"] == "conflict"]
    accounts = {r["email"]: r for r in done.records if r["type"] == "account"}
    some = organization.mailboxes[0]
    merged = accounts[some["PrimarySmtpAddress"].lower()]
    assert sorted(merged["sources"]) == ["exchange", "ldap"] and merged["anchors"] == [some["Guid"].lower()]
    expected = organization.expected_delegates()
    assert {e: accounts[e]["delegates"] for e in expected} == expected


def test_tls_verified_against_the_system_store_by_default(served):
    fake, _ = served
    done = run("zivsync-extract-exchange", "--url", fake.url, "--auth", "basic", "--username", fake.username,
               env={"ZIVSYNC_EXCHANGE_PASSWORD": fake.password})
    assert done.returncode == ExitStatus.UNREACHABLE  # the test CA is nobody's system CA
    assert "TLS certificate verification failed" in done.stderr and "--ca-file" in done.stderr
    assert "issued by CN=zivsync fake Exchange test CA; checked against the system CA store" in done.stderr
    assert "HTTPSConnectionPool" not in done.stderr  # ssl's reason, not requests' wrapping of it
