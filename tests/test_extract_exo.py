"""zivsync-extract-exo against a loopback fake of Entra ID and the Exchange Online admin API
(tests/fake_microsoft.py), through the real msal and requests; every run is the installed
executable as a process."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from fake_microsoft import FakeMicrosoft, Tenant
from helpers import run, sync_into_sandbox, write_stream

from stages.cli import ExitStatus

DOMAIN = "contoso.example"


def exo(fake: FakeMicrosoft, *args, secret: bool = True, env: dict | None = None, expect=ExitStatus.OK):
    environment = {"ZIVSYNC_EXO_CLIENT_SECRET": fake.client_secret} if secret else {}
    done = run("zivsync-extract-exo", "--tenant", fake.tenant.tenant_id, "--client-id", fake.client_id,
               "--authority-host", fake.url, "--exchange-url", fake.exchange_url, "--ca-file", fake.ca_file,
               *args, env={**environment, **(env or {})}, timeout=300)
    assert done.returncode == expect, done.stderr
    assert fake.client_secret not in done.stderr and fake.client_secret.encode() not in done.stdout
    return done


def kinds(records) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for record in records:
        found.setdefault(record["type"], []).append(record)
    return found


def comparable(records) -> list[dict]:
    return sorted((r for r in records if r["type"] not in ("header", "end")),
                  key=lambda r: (r["type"], r.get("anchor") or r.get("id") or "", r.get("mailbox", ""),
                                 r.get("trustee", ""), r.get("deny", False)))


def expected_delegates(tenant: Tenant) -> dict[str, list[str]]:
    """Our own oracle, by zivsync's rules: Full Access not inherited, trustees resolved by any
    name, groups expanded through every level (cycles end), a Deny taking away what a group
    gave, only active user mailboxes as delegates, never the mailbox itself."""
    index = tenant.index()
    active = {m["Guid"] for m in tenant.mailboxes
              if m["RecipientTypeDetails"] == "UserMailbox" and not m.get("AccountDisabled")}

    def people(user: str) -> set[str]:
        found = tenant.find(user, index)
        if len(found) != 1:
            return set()
        trustee = found[0]
        if trustee["RecipientTypeDetails"].endswith("Group"):
            return {u["Guid"] for u in tenant.transitive_users(trustee, index)}
        return {trustee["Guid"]}

    result = {}
    for mailbox in tenant.mailboxes:
        if mailbox["RecipientTypeDetails"] != "SharedMailbox":
            continue
        allowed, denied = set(), set()
        for row in tenant.permissions.get(mailbox["Guid"], ()):
            if "FullAccess" in row["AccessRights"] and not row["IsInherited"]:
                (denied if row["Deny"] else allowed).update(people(row["User"]))
        by_guid = {m["Guid"]: m for m in tenant.mailboxes}
        result[mailbox["PrimarySmtpAddress"].lower()] = sorted(
            by_guid[g]["PrimarySmtpAddress"].lower() for g in (allowed - denied) & active)
    return result


def delegates_after_normalize(stream: Path, tmp_path: Path) -> dict[str, list[str]]:
    done = run("zivsync-normalize", "-i", stream, "--claimed-domain", DOMAIN)
    assert done.returncode == 0, done.stderr
    return {r["email"]: r["delegates"] for r in done.records if r["type"] == "account" and r["kind"] == "functional"}


@pytest.fixture(scope="module")
def big_tenant():
    return Tenant.generate(mailboxes=1500, shared=300, seed=7)


@pytest.fixture(scope="module")
def big(big_tenant, tmp_path_factory):
    """The 1,500-mailbox tenant served 100 per page, read once with default options."""
    with FakeMicrosoft(tmp_path_factory.mktemp("fake"), big_tenant, page_size=100) as fake:
        done = exo(fake, "-v")
        yield fake, done


@pytest.fixture()
def small_tenant():
    return Tenant.generate(mailboxes=40, shared=12, groups=4, seed=3)


@pytest.fixture()
def small(small_tenant, tmp_path):
    with FakeMicrosoft(tmp_path / "fake", small_tenant) as fake:
        yield fake


# -- reading ----------------------------------------------------------------------------------------


def test_every_mailbox_of_every_page(big, big_tenant):
    fake, done = big
    found = kinds(done.records)
    assert {p["anchor"] for p in found["person"]} == {m["ExternalDirectoryObjectId"].lower()
                                                      for m in big_tenant.mailboxes}
    assert len(found["person"]) == len(big_tenant.mailboxes) == 1806
    pages = math.ceil(len(big_tenant.mailboxes) / 100)
    assert fake.counts("cmdlet")["Get-Mailbox"] == pages  # one request per page, to the last
    assert done.records[-1]["type"] == "end" and "complete" not in done.records[-1]
    # -v shows each cmdlet as PowerShell would, and where it went
    assert "Get-Mailbox -RecipientTypeDetails EquipmentMailbox,RoomMailbox,SharedMailbox,UserMailbox " \
           "-ResultSize Unlimited" in done.stderr and "/adminapi/beta/" in done.stderr


def test_mailbox_records(big, big_tenant):
    _, done = big
    people = {p["anchor"]: p for p in kinds(done.records)["person"]}
    for mailbox in big_tenant.mailboxes[:50] + big_tenant.mailboxes[-10:]:
        person = people[mailbox["ExternalDirectoryObjectId"].lower()]
        assert person["mail"] == mailbox["PrimarySmtpAddress"].lower()
        assert person["sso_key"] == mailbox["ExternalDirectoryObjectId"]
        assert person["enabled"] is (not mailbox["AccountDisabled"])
        smtp = [a.split(":", 1)[1].lower() for a in mailbox["EmailAddresses"] if a.lower().startswith("smtp:")]
        assert sorted(person["addresses"]) == sorted(set(smtp)) and person["addresses"][0] == person["mail"]
        assert person["mailbox"] == {"UserMailbox": "user", "SharedMailbox": "shared", "RoomMailbox": "room",
                                     "EquipmentMailbox": "equipment"}[mailbox["RecipientTypeDetails"]]


def test_full_access_through_nested_groups_and_a_cycle(big, big_tenant, tmp_path):
    _, done = big
    stream = tmp_path / "exo.jsonl"
    stream.write_bytes(done.stdout)
    delegates = delegates_after_normalize(stream, tmp_path)
    expected = expected_delegates(big_tenant)
    assert delegates == expected  # all 300 shared mailboxes
    scenarios = big_tenant.scenarios
    nested, cyclic = scenarios["nested_group"], scenarios["cyclic_group"]
    assert len(delegates[nested]) >= 5 and len(delegates[cyclic]) >= 3  # outer+middle+inner; A+B
    assert len(delegates[scenarios["denied"]]) == 1 and delegates[scenarios["inherited_only"]] == []


def test_without_batching_the_same_records_in_more_requests(big, big_tenant, tmp_path):
    fake, done = big
    fake.reset_log()
    single = exo(fake, "--no-batch")
    assert comparable(single.records) == comparable(done.records)
    unbatched = fake.counts()
    assert unbatched["batch"] == 0 and unbatched["invoke"] > 300  # one request per mailbox permission


def test_throttling_and_an_expiring_token_lose_nothing(big_tenant, big, tmp_path):
    _, baseline = big
    with FakeMicrosoft(tmp_path / "fake", big_tenant, page_size=100, throttle_every=4, retry_after=0.05,
                       reject_tokens_older_than=1.0, latency=0.01) as fake:
        done = exo(fake)
        counts = fake.counts("status")
        tokens = fake.counts()["token"]
    assert comparable(done.records) == comparable(baseline.records)
    assert counts[429] > 10 and tokens >= 2  # it was throttled, and it got a new token when refused
    assert "throttled" in done.stderr


@pytest.mark.parametrize("permission_shape, rights_shape", [
    ("nested", "names"), ("flat", "flags"), ("flat", "text"), ("flat", "number"), ("nested", "number")])
def test_every_permission_answer_shape_gives_the_same_delegates(small_tenant, tmp_path, permission_shape,
                                                                 rights_shape):
    """Issue 12: the REST route's per-trustee PermissionList, and AccessRights as one flags value,
    as text or as a number, read as the flat rows of names are; before, the nested shape gave
    zero permissions in a stream that said it was complete."""
    with FakeMicrosoft(tmp_path / "flat", small_tenant) as fake:
        baseline = exo(fake)
    with FakeMicrosoft(tmp_path / "shaped", small_tenant, permission_shape=permission_shape,
                       rights_shape=rights_shape) as fake:
        shaped = exo(fake)
    found = kinds(shaped.records)
    assert "error" not in found and "complete" not in shaped.records[-1]
    assert len(found["permission"]) == len(kinds(baseline.records)["permission"]) > 0
    streams = {}
    for name, done in (("baseline", baseline), ("shaped", shaped)):
        streams[name] = tmp_path / f"{name}.jsonl"
        streams[name].write_bytes(done.stdout)
    assert delegates_after_normalize(streams["shaped"], tmp_path) == delegates_after_normalize(
        streams["baseline"], tmp_path) == expected_delegates(small_tenant)


def test_an_answer_not_understood_is_an_error_record_not_silence(small_tenant, tmp_path):
    """A Get-MailboxPermission entry whose AccessRights has a shape zivsync does not know makes an
    error record naming the mailbox (the stream is incomplete: diff withholds removals)."""
    shared = next(m for m in small_tenant.mailboxes if m["RecipientTypeDetails"] == "SharedMailbox"
                  and any(r["User"] != "NT AUTHORITY\\SELF" for r in small_tenant.permissions.get(m["Guid"], [])))
    row = next(r for r in small_tenant.permissions[shared["Guid"]] if r["User"] != "NT AUTHORITY\\SELF")
    row["AccessRights"] = {"Value": "FullAccess"}  # an object where a list of rights belongs
    with FakeMicrosoft(tmp_path / "fake", small_tenant) as fake:
        done = exo(fake, expect=ExitStatus.OK)
    errors = kinds(done.records)["error"]
    assert any(e["operation"] == "Get-MailboxPermission" and "not understood" in e["message"]
               and e["object"] == shared["PrimarySmtpAddress"] for e in errors)
    assert done.records[-1]["tally"]["left out: shape not understood"] == 1
    stream = tmp_path / "exo.jsonl"
    stream.write_bytes(done.stdout)
    normalized = run("zivsync-normalize", "-i", stream, "--claimed-domain", DOMAIN)
    assert normalized.returncode == 0 and normalized.records[-1]["complete"] is False  # so diff removes nothing


def test_a_429_pauses_every_worker_not_just_the_throttled_one(small_tenant, tmp_path):
    """Issue 12: at --concurrency 4 without batching, one Get-MailboxPermission answered 429 with
    Retry-After: 2 holds every worker for 2 s. Counted at the fake: no request arrives inside the
    wait but those already in flight when the 429 went out (before: the other three kept sending)."""
    with FakeMicrosoft(tmp_path / "fake", small_tenant, latency=0.15) as fake:
        fake.fail("Get-MailboxPermission", 429, times=1, retry_after=2)
        done = exo(fake, "--no-batch", "--concurrency", "4")
        rows = sorted(fake.requests, key=lambda r: r["time"])
    throttled = next(r for r in rows if r["status"] == 429)
    sent = throttled["time"] + 0.15  # the fake's latency: the 429 left then
    inside = [r for r in rows if sent + 0.3 < r["time"] < sent + 2 - 0.1]
    assert inside == [] and "complete" not in done.records[-1]
    assert sum(r["time"] > sent + 2 - 0.1 for r in rows) > 0  # the read went on after the wait


# -- signing in -------------------------------------------------------------------------------------


def test_sign_in_with_a_certificate_pem_or_pfx(small):
    pem = exo(small, "--certificate-key", small.app_key_pem, "--certificate", small.app_cert_pem, secret=False)
    assert len(kinds(pem.records)["person"]) == len(small.tenant.mailboxes)
    thumb = exo(small, "--certificate-key", small.app_key_pem, "--thumbprint", small.thumbprint, secret=False)
    assert len(kinds(thumb.records)["person"]) == len(small.tenant.mailboxes)
    pfx = exo(small, "--pfx", small.app_pfx, secret=False,
              env={"ZIVSYNC_EXO_CERTIFICATE_PASSPHRASE": small.pfx_passphrase})
    assert len(kinds(pfx.records)["person"]) == len(small.tenant.mailboxes)
    assert small.pfx_passphrase not in pfx.stderr
    assert pfx.records[0]["source"]["sign_in"] == "pfx"


def test_sign_in_by_device_code(small):
    done = exo(small, "--device-code", secret=False)
    assert "enter the code" in done.stderr.lower() or "code" in done.stderr.lower()
    assert len(kinds(done.records)["person"]) == len(small.tenant.mailboxes)


def test_wrong_secret(small):
    done = exo(small, secret=False, env={"ZIVSYNC_EXO_CLIENT_SECRET": "not-the-secret"}, expect=ExitStatus.UNREACHABLE)
    assert "AADSTS7000215" in done.stderr and done.stdout == b"" and "not-the-secret" not in done.stderr


def test_missing_role_names_the_permission(small):
    small.tenant.app_roles = []
    done = exo(small, expect=ExitStatus.UNREACHABLE)
    assert "Exchange.ManageAsApp" in done.stderr and "403" in done.stderr and done.stdout == b""


def test_unreachable_service(small):
    done = run("zivsync-extract-exo", "--tenant", small.tenant.tenant_id, "--client-id", small.client_id,
               "--authority-host", "https://localhost:1", "--exchange-url", "https://localhost:1",
               "--ca-file", small.ca_file, env={"ZIVSYNC_EXO_CLIENT_SECRET": "x"})
    assert done.returncode == ExitStatus.UNREACHABLE, done.stderr
    assert "localhost:1" in done.stderr and done.stdout == b""


# -- Exchange's own errors --------------------------------------------------------------------------


def test_a_cmdlet_failing_for_one_mailbox_is_named_and_makes_the_stream_incomplete(small, tmp_path):
    target = small.tenant.scenarios["direct_users"]
    small.fail("Get-MailboxPermission", 404, identity=small.tenant.by_address(target)["Guid"],
               message="The operation couldn't be performed because object 'x' couldn't be found.",
               exception="Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException")
    done = exo(small)
    errors = kinds(done.records)["error"]
    assert len(errors) == 1 and errors[0]["operation"] == "Get-MailboxPermission"
    assert "couldn't be found" in errors[0]["message"] and "Get-MailboxPermission" in done.stderr
    stream = tmp_path / "exo.jsonl"
    stream.write_bytes(done.stdout)
    normalized = run("zivsync-normalize", "-i", stream, "--claimed-domain", DOMAIN)
    assert normalized.records[-1]["complete"] is False  # so diff empties and suspends nobody


def test_a_failing_listing_ends_the_run_with_exchanges_message(small):
    small.fail("Get-Mailbox", 400, message="A parameter cannot be found that matches parameter name 'X'.",
               exception="System.Management.Automation.ParameterBindingException")
    done = exo(small, expect=ExitStatus.UNREACHABLE)
    assert "Get-Mailbox" in done.stderr and "A parameter cannot be found" in done.stderr and done.stdout == b""


def test_transient_5xx_are_retried(small):
    small.fail("Get-DistributionGroupMember", 503, times=3)
    done = exo(small)
    assert "error" not in kinds(done.records)


# -- scope ------------------------------------------------------------------------------------------


def test_member_of_a_nested_group_address_filter_and_claimed_domain(small):
    tenant = small.tenant
    outer = tenant.by_address(tenant.scenarios["group:SG-Outer"])
    members = {u["PrimarySmtpAddress"].lower() for u in tenant.transitive_users(outer, tenant.index())}
    done = exo(small, "--member-of", outer["Name"])
    assert {p["mail"] for p in kinds(done.records)["person"]} == members
    one = sorted(members)[0]
    filtered = exo(small, "--address-filter", one.upper())
    assert [p["mail"] for p in kinds(filtered.records)["person"]] == [one]
    assert "person" not in kinds(exo(small, "--claimed-domain", "elsewhere.example").records)


# -- with the rest of the pipeline ------------------------------------------------------------------


def test_extract_normalize_diff_push(small, tmp_path):
    stream = tmp_path / "exo.jsonl"
    stream.write_bytes(exo(small).stdout)
    accounts = sync_into_sandbox([stream], (DOMAIN,), tmp_path)
    tenant = small.tenant
    active_users = {m["PrimarySmtpAddress"].lower() for m in tenant.mailboxes
                    if m["RecipientTypeDetails"] == "UserMailbox" and not m["AccountDisabled"]}
    shared = {m["PrimarySmtpAddress"].lower() for m in tenant.mailboxes if m["RecipientTypeDetails"] == "SharedMailbox"}
    assert {e for e, a in accounts.items() if a["kind"] == "user"} == active_users
    assert {e for e, a in accounts.items() if a["kind"] == "functional"} == shared
    expected = expected_delegates(tenant)
    assert {e: accounts[e]["delegates"] for e in shared} == expected


def test_ldap_users_and_exchange_online_shared_mailboxes_merge(small, tmp_path):
    """AD knows the people (objectGUID anchors); Exchange Online the shared mailboxes and who may
    act for them. normalize merges the two by address, keeps both anchors, and the delegates
    come from Exchange Online."""
    tenant = small.tenant
    users = [m for m in tenant.mailboxes if m["RecipientTypeDetails"] == "UserMailbox"]
    ldap = [{"type": "person", "source": "ldap", "anchor": f"ad000000-0000-4000-a000-{i:012d}",
             "mail": m["PrimarySmtpAddress"].lower(), "addresses": [m["PrimarySmtpAddress"].lower()],
             "display_name": m["DisplayName"], "enabled": not m["AccountDisabled"], "mailbox": "user",
             "dn": f"CN={m['DisplayName']},OU=Staff,DC=contoso,DC=example"} for i, m in enumerate(users)]
    ldap_stream = write_stream(tmp_path / "ldap.jsonl", "directory", ldap)
    exo_stream = tmp_path / "exo.jsonl"
    exo_stream.write_bytes(exo(small, "--mailbox-kind", "shared", "--mailbox-kind", "user").stdout)
    done = run("zivsync-normalize", "-i", ldap_stream, "-i", exo_stream, "--claimed-domain", DOMAIN)
    assert done.returncode == 0, done.stderr
    accounts = {r["email"]: r for r in done.records if r["type"] == "account"}
    assert not [r for r in done.records if r["type"] == "conflict"]
    first = users[0]
    merged = accounts[first["PrimarySmtpAddress"].lower()]
    assert sorted(merged["sources"]) == ["exo", "ldap"] and len(merged["anchors"]) == 2
    assert first["ExternalDirectoryObjectId"].lower() in merged["anchors"]
    expected = expected_delegates(tenant)
    assert {e: a["delegates"] for e, a in accounts.items() if a["kind"] == "functional"} == expected


def test_secrets_never_in_a_process_list_flag():
    help_text = run("zivsync-extract-exo", "--help").stdout.decode()
    assert "--client-secret " not in help_text and "--client-secret-file" in help_text
    assert "ZIVSYNC_EXO_CLIENT_SECRET" in help_text


def test_tenant_by_domain_and_full_access_on_user_mailboxes(small):
    tenant = small.tenant
    done = run("zivsync-extract-exo", "--tenant", tenant.domain, "--client-id", small.client_id,
               "--authority-host", small.url, "--exchange-url", small.exchange_url, "--ca-file", small.ca_file,
               "--user-mailbox-permissions", env={"ZIVSYNC_EXO_CLIENT_SECRET": small.client_secret})
    assert done.returncode == 0, done.stderr
    users = {m["ExternalDirectoryObjectId"].lower() for m in tenant.mailboxes if m["RecipientTypeDetails"] == "UserMailbox"}
    on_users = [p for p in kinds(done.records)["permission"] if p["mailbox"] in users]
    assert on_users  # every mailbox has at least its SELF entry
    assert small.counts("cmdlet")["Get-MailboxPermission"] == len(tenant.mailboxes) - 6  # no rooms/equipment


def test_a_trustee_exchange_cannot_look_up_is_an_error_not_a_missing_delegate(small):
    small.fail("Get-Recipient", 503)  # every time: retried, then given up
    done = exo(small)
    errors = kinds(done.records).get("error", [])
    assert errors and {e["operation"] for e in errors} == {"Get-Recipient"}
    # whereas a trustee that no longer exists (404) is simply nobody: no error for it
    assert not any("departed.user" in e["object"] for e in errors if "couldn't be found" in e["message"])
