"""The fake Microsoft endpoints (tests/fake_microsoft.py), exercised with the real clients: msal for
Entra ID and requests for the Exchange Online admin API and Graph, as zivsync-extract-exo uses them."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import jwt  # PyJWT, comes with msal
import msal
import pytest
import requests
from fake_microsoft import FakeMicrosoft, Tenant

HERE = Path(__file__).resolve().parent


def http(fake: FakeMicrosoft) -> requests.Session:
    """A session that trusts the fake's CA. trust_env=False: REQUESTS_CA_BUNDLE would override verify."""
    s = requests.Session()
    s.verify = str(fake.ca_file)
    s.trust_env = False
    return s


def confidential(fake: FakeMicrosoft, credential=None) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        fake.client_id, authority=fake.authority, client_credential=credential or fake.client_secret,
        instance_discovery=False, http_client=http(fake))


def token(fake: FakeMicrosoft, scope: str | None = None, app=None) -> str:
    result = (app or confidential(fake)).acquire_token_for_client(scopes=[scope or fake.exchange_scope])
    assert "access_token" in result, result
    return result["access_token"]


class Admin:
    """Just enough of an InvokeCommand client for the tests."""

    def __init__(self, fake: FakeMicrosoft, bearer: str | None = None):
        self.fake, self.session = fake, http(fake)
        self.bearer = bearer or token(fake)

    def headers(self, prefer: str | None = None) -> dict:
        h = {"Authorization": f"Bearer {self.bearer}", "Accept": "application/json",
             "X-AnchorMailbox": f"APP:SystemMailbox{{bb558c35-97f1-4cb9-8ff7-d53741dc928c}}@{self.fake.tenant.tenant_id}"}
        if prefer:
            h["Prefer"] = prefer
        return h

    def post(self, cmdlet: str, params: dict | None = None, *, url: str | None = None, select: str | None = None,
             prefer: str | None = None) -> requests.Response:
        url = url or self.fake.invoke_url + (f"?$select={select}" if select else "")
        body = {"CmdletInput": {"CmdletName": cmdlet, "Parameters": params or {}}}
        return self.session.post(url, json=body, headers=self.headers(prefer))

    def all(self, cmdlet: str, params: dict | None = None, url: str | None = None, **kw) -> tuple[list[dict], int]:
        """Every item, following @odata.nextLink with the same body; and the number of pages."""
        items, pages = [], 0
        while True:
            r = self.post(cmdlet, params, url=url, **kw)
            assert r.status_code == 200, r.text
            pages += 1
            data = r.json()
            items.extend(data["value"])
            url = data.get("@odata.nextLink")
            if not url:
                return items, pages

    def value(self, cmdlet: str, params: dict | None = None, **kw) -> list[dict]:
        r = self.post(cmdlet, params, **kw)
        assert r.status_code == 200, r.text
        return r.json()["value"]


def error_message(response: requests.Response) -> str:
    """The message the way exchange.md 1.3 says a client should read it."""
    error = response.json()["error"]
    return ((error.get("details") or [{}])[0].get("message")
            or error.get("innererror", {}).get("internalexception", {}).get("message")
            or error["message"])


@pytest.fixture(scope="module")
def tenant() -> Tenant:
    return Tenant.generate(mailboxes=1500, shared=300, seed=1)


@pytest.fixture(scope="module")
def fake(tmp_path_factory, tenant):
    with FakeMicrosoft(tmp_path_factory.mktemp("fake-ms"), tenant) as f:
        yield f


@pytest.fixture(scope="module")
def admin(fake) -> Admin:
    return Admin(fake)


# ---------------------------------------------------------------------------------------------
# Entra ID through msal
# ---------------------------------------------------------------------------------------------

def test_client_secret_token_and_cache(fake):
    before = fake.counts()
    app = confidential(fake)  # msal reads the discovery document here
    first = app.acquire_token_for_client(scopes=[fake.exchange_scope])
    assert first["token_type"] == "Bearer" and first["expires_in"] == 3599
    claims = jwt.decode(first["access_token"], options={"verify_signature": False})
    assert claims["aud"] == fake.exchange_url
    assert claims["tid"] == fake.tenant.tenant_id and claims["appid"] == fake.client_id
    assert claims["roles"] == ["Exchange.ManageAsApp"]
    assert claims["exp"] - claims["iat"] == 3599
    second = app.acquire_token_for_client(scopes=[fake.exchange_scope])
    assert second["access_token"] == first["access_token"] and second["token_source"] == "cache"
    graph = app.acquire_token_for_client(scopes=[fake.graph_scope])
    assert jwt.decode(graph["access_token"], options={"verify_signature": False})["aud"] == fake.graph_url
    after = fake.counts()
    assert after["token"] - before["token"] == 2
    assert after["discovery"] - before["discovery"] == 1


def test_wrong_secret_unknown_client_and_bad_scope(fake):
    result = confidential(fake, "not-the-secret").acquire_token_for_client(scopes=[fake.exchange_scope])
    assert result["error"] == "invalid_client" and "AADSTS7000215" in result["error_description"]
    other = msal.ConfidentialClientApplication("00000000-1111-2222-3333-444444444444", authority=fake.authority,
                                               client_credential=fake.client_secret, instance_discovery=False,
                                               http_client=http(fake))
    result = other.acquire_token_for_client(scopes=[fake.exchange_scope])
    assert result["error"] == "unauthorized_client" and "AADSTS700016" in result["error_description"]
    result = confidential(fake).acquire_token_for_client(scopes=["https://elsewhere.example/.default"])
    assert result["error"] == "invalid_resource" and "AADSTS500011" in result["error_description"]


def test_real_outlook_scope_and_domain_authority(fake):
    app = msal.ConfidentialClientApplication(fake.client_id, authority=f"{fake.url}/{fake.tenant.domain}",
                                             client_credential=fake.client_secret, instance_discovery=False,
                                             http_client=http(fake))
    at = token(fake, "https://outlook.office365.com/.default", app)
    assert jwt.decode(at, options={"verify_signature": False})["aud"] == "https://outlook.office365.com"
    assert Admin(fake, at).post("Get-Mailbox", {"Identity": "sales-001"}).status_code == 200


def test_certificate_pem_and_pfx(fake):
    pem = {"private_key": fake.app_key_pem.read_text(), "thumbprint": fake.thumbprint}
    assert token(fake, app=confidential(fake, pem))
    with_x5c = dict(pem, public_certificate=fake.app_cert_pem.read_text())
    assert token(fake, app=confidential(fake, with_x5c))
    pfx = {"private_key_pfx_path": str(fake.app_pfx), "passphrase": fake.pfx_passphrase}
    assert token(fake, app=confidential(fake, pfx))
    assertions = [r for r in fake.requests if r["kind"] == "token" and r["status"] == 200]
    assert len(assertions) >= 3


def test_certificate_wrong_key_or_thumbprint(fake, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    result = confidential(fake, {"private_key": other, "thumbprint": fake.thumbprint}).acquire_token_for_client(
        scopes=[fake.exchange_scope])
    assert result["error"] == "invalid_client" and "AADSTS700027" in result["error_description"]
    result = confidential(fake, {"private_key": fake.app_key_pem.read_text(), "thumbprint": "ab" * 20}
                          ).acquire_token_for_client(scopes=[fake.exchange_scope])
    assert result["error"] == "invalid_client" and "AADSTS700027" in result["error_description"]


def test_device_code_flow_refresh_and_delegated_use(fake):
    app = msal.PublicClientApplication(fake.client_id, authority=fake.authority, instance_discovery=False,
                                       http_client=http(fake))
    flow = app.initiate_device_flow(scopes=[fake.exchange_scope])
    assert flow["user_code"] and flow["user_code"] in flow["message"]
    assert flow["verification_uri"] in flow["message"] and flow["interval"] == 1
    result = app.acquire_token_by_device_flow(flow)  # one authorization_pending, then the token
    assert "access_token" in result, result
    assert result["id_token_claims"]["preferred_username"] == fake.tenant.admin_upn
    polls = [r for r in fake.requests if r.get("grant_type") == "urn:ietf:params:oauth:grant-type:device_code"]
    assert [r["status"] for r in polls[-2:]] == [400, 200]
    claims = jwt.decode(result["access_token"], options={"verify_signature": False})
    assert "Exchange.Manage" in claims["scp"].split() and "roles" not in claims
    accounts = app.get_accounts()
    assert [a["username"] for a in accounts] == [fake.tenant.admin_upn]
    cached = app.acquire_token_silent([fake.exchange_scope], account=accounts[0])
    assert cached["access_token"] == result["access_token"]
    refreshed = app.acquire_token_silent([fake.exchange_scope], account=accounts[0], force_refresh=True)
    assert refreshed["access_token"] != result["access_token"]
    assert Admin(fake, refreshed["access_token"]).post("Get-Mailbox", {"Identity": "sales-001"}).status_code == 200
    # The code is used up.
    assert app.acquire_token_by_device_flow(flow)["error"] == "invalid_grant"


# ---------------------------------------------------------------------------------------------
# InvokeCommand
# ---------------------------------------------------------------------------------------------

def test_get_mailbox_paging(admin, fake):
    items, pages = admin.all("Get-Mailbox", {"RecipientTypeDetails": "UserMailbox", "ResultSize": "Unlimited"},
                             prefer="odata.maxpagesize=100")
    assert pages == 15 and len(items) == 1500
    assert len({i["Guid"] for i in items}) == 1500
    assert {i["RecipientTypeDetails"] for i in items} == {"UserMailbox"}
    pages_logged = [r for r in fake.requests if r["kind"] == "invoke"][-15:]
    assert [r["page"] for r in pages_logged] == list(range(15))
    item = items[0]
    assert item["EmailAddresses@odata.type"] == "#Collection(String)"
    assert item["EmailAddresses"][0] == f"SMTP:{item['PrimarySmtpAddress']}"
    assert any(a.startswith("smtp:") and a.endswith(".onmicrosoft.com") for a in item["EmailAddresses"])
    for key in ("Guid", "ExternalDirectoryObjectId", "DisplayName", "UserPrincipalName", "Alias", "Identity",
                "AccountDisabled", "ExchangeGuid"):
        assert key in item
    both, _ = admin.all("Get-Mailbox", {"RecipientTypeDetails": ["UserMailbox", "SharedMailbox"],
                                        "ResultSize": "Unlimited"})
    assert len(both) == 1800


def test_next_link_needs_the_same_body(admin):
    first = admin.post("Get-Mailbox", {"ResultSize": "Unlimited"}, prefer="odata.maxpagesize=10").json()
    link = first["@odata.nextLink"]
    assert "$skiptoken=" in link and link.startswith(admin.fake.url)
    r = admin.post("Get-Mailbox", {"ResultSize": 50}, url=link)
    assert r.status_code == 400


def test_default_result_size_is_1000_with_a_warning(admin):
    r = admin.post("Get-Mailbox", {})
    data = r.json()
    assert len(data["value"]) == 1000 and "@odata.nextLink" not in data
    assert "increase the value for the ResultSize parameter" in data["@adminapi.warnings"][0]
    assert len(admin.value("Get-Mailbox", {"ResultSize": 7})) == 7


def test_select(admin):
    items = admin.value("Get-Mailbox", {"RecipientTypeDetails": "SharedMailbox", "ResultSize": 5},
                        select="PrimarySmtpAddress,EmailAddresses,Guid")
    assert len(items) == 5
    for item in items:
        assert set(item) == {"PrimarySmtpAddress", "EmailAddresses@odata.type", "EmailAddresses", "Guid"}
    first = admin.post("Get-Mailbox", {"ResultSize": "Unlimited"}, select="Guid",
                       prefer="odata.maxpagesize=500").json()
    assert "$select=Guid" in first["@odata.nextLink"]
    second = admin.post("Get-Mailbox", {"ResultSize": "Unlimited"}, url=first["@odata.nextLink"]).json()
    assert set(second["value"][0]) == {"Guid"}


def test_filter(admin, tenant):
    legacy = admin.value("Get-Mailbox", {"Filter": "EmailAddresses -like '*@contoso-old.example'",
                                         "ResultSize": "Unlimited"})
    expected = [m for m in tenant.mailboxes if any(a.lower().endswith("@contoso-old.example")
                                                   for a in m["EmailAddresses"])]
    assert 100 < len(legacy) == len(expected)
    target = expected[0]
    alias = next(a for a in target["EmailAddresses"] if a.endswith("@contoso-old.example"))
    hit = admin.value("Get-Mailbox", {"Filter": f"EmailAddresses -eq '{alias}'"})
    assert [m["Guid"] for m in hit] == [target["Guid"]]
    hit = admin.value("Get-Mailbox", {"Filter": f"EmailAddresses -eq '{alias.split(':', 1)[1].upper()}'"})
    assert [m["Guid"] for m in hit] == [target["Guid"]]
    sales = admin.value("Get-Mailbox", {"Filter": "PrimarySmtpAddress -like 'sales-*'", "ResultSize": "Unlimited"})
    assert len(sales) == 25 and all(m["Alias"].startswith("sales-") for m in sales)
    both = admin.value("Get-Mailbox", {"Filter": "(RecipientTypeDetails -eq 'RoomMailbox') -or "
                                                 "(RecipientTypeDetails -eq 'EquipmentMailbox')"})
    assert len(both) == 6
    bad = admin.post("Get-Mailbox", {"Filter": "CustomAttribute7 -gt 3"})
    assert bad.status_code == 400 and "ParameterBindingException" in error_message(bad)


def test_get_mailbox_permission(admin, tenant):
    shared = tenant.by_address(tenant.scenarios["direct_group"])
    for identity in (shared["Guid"], shared["ExternalDirectoryObjectId"], shared["PrimarySmtpAddress"],
                     shared["Alias"]):
        rows = admin.value("Get-MailboxPermission", {"Identity": identity})
        assert rows[0]["User"] == "NT AUTHORITY\\SELF"
        assert "SG-Direct" in [r["User"] for r in rows]
    row = next(r for r in rows if r["User"] == "SG-Direct")
    assert row == {"Identity": shared["Identity"], "User": "SG-Direct",
                   "AccessRights@odata.type": "#Collection(String)", "AccessRights": ["FullAccess"],
                   "IsInherited": False, "Deny": False, "InheritanceType": "All", "IsValid": True,
                   "ObjectState": "Unchanged"}
    denied = admin.value("Get-MailboxPermission", {"Identity": tenant.scenarios["denied"]})
    assert any(r["Deny"] and not r["IsInherited"] and "@" in r["User"] for r in denied)
    assert any(r["Deny"] and r["IsInherited"] for r in denied)
    orphan = admin.value("Get-MailboxPermission", {"Identity": tenant.scenarios["orphaned_sid"]})
    assert any(r["User"].startswith("S-1-5-21-") for r in orphan)
    missing = admin.post("Get-MailboxPermission", {"Identity": "nobody@contoso.example"})
    assert missing.status_code == 404
    assert error_message(missing).startswith(
        "Ex6F9304|Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException|The operation "
        "couldn't be performed because object 'nobody@contoso.example' couldn't be found on '")
    assert missing.json()["error"]["innererror"]["internalexception"]["message"].startswith("The operation")
    group = admin.post("Get-MailboxPermission", {"Identity": "SG-Direct"})
    assert group.status_code == 404
    assert admin.post("Get-MailboxPermission", {}).status_code == 400


def test_get_recipient(admin, tenant):
    direct = tenant.by_address(tenant.scenarios["group:SG-Direct"])
    for identity in ("SG-Direct", direct["DisplayName"], direct["Guid"], direct["ExternalDirectoryObjectId"],
                     direct["PrimarySmtpAddress"]):
        [row] = admin.value("Get-Recipient", {"Identity": identity})
        assert row["RecipientTypeDetails"] == "MailUniversalSecurityGroup"
        assert row["Guid"] == direct["Guid"] and row["PrimarySmtpAddress"] == direct["PrimarySmtpAddress"]
        assert {"ExternalDirectoryObjectId", "Name", "DisplayName"} <= set(row)
    user = tenant.mailboxes[0]
    [row] = admin.value("Get-Recipient", {"Identity": user["UserPrincipalName"]})
    assert row["RecipientTypeDetails"] == "UserMailbox" and row["Guid"] == user["Guid"]
    gone = admin.post("Get-Recipient", {"Identity": "departed.user@contoso.example"})
    assert gone.status_code == 404 and "ManagementObjectNotFoundException" in error_message(gone)


def test_distribution_groups_and_members(admin, tenant):
    groups, _ = admin.all("Get-DistributionGroup", {"ResultSize": "Unlimited"})
    assert len(groups) == len(tenant.groups) and all("Members" not in g for g in groups)
    security = admin.value("Get-DistributionGroup", {"ResultSize": "Unlimited",
                                                     "RecipientTypeDetails": ["MailUniversalSecurityGroup"]})
    assert 0 < len(security) < len(groups)
    members = admin.value("Get-DistributionGroupMember", {"Identity": "SG-Outer", "ResultSize": "Unlimited"})
    kinds = sorted(m["RecipientTypeDetails"] for m in members)
    assert kinds == ["MailUniversalSecurityGroup", "UserMailbox", "UserMailbox"]  # direct members only
    nested = next(m for m in members if m["RecipientTypeDetails"] != "UserMailbox")
    assert nested["Name"] == "SG-Middle"
    for key in ("Guid", "ExternalDirectoryObjectId", "PrimarySmtpAddress", "Name", "DisplayName"):
        assert key in nested
    cycle = admin.value("Get-DistributionGroupMember", {"Identity": tenant.by_address(
        tenant.scenarios["group:SG-CycleA"])["Guid"]})
    assert "SG-CycleB" in [m["Name"] for m in cycle]
    assert admin.post("Get-DistributionGroupMember", {"Identity": "sales-001"}).status_code == 404


def test_bad_requests(admin, fake):
    r = admin.post("Get-Nonsense", {})
    assert r.status_code == 400 and "CommandNotFoundException" in error_message(r)
    r = admin.post("Get-Mailbox", {"Bogus": 1})
    assert r.status_code == 400 and "parameter name 'Bogus'" in error_message(r)
    r = admin.post("Get-Mailbox", {"RecipientTypeDetails": "Nonsense"})
    assert r.status_code == 400
    r = admin.post("Get-Mailbox", {"ResultSize": "lots"})
    assert r.status_code == 400
    r = admin.session.get(fake.invoke_url, headers=admin.headers())
    assert r.status_code == 405
    r = admin.session.post(f"{fake.url}/adminapi/beta/{fake.tenant.tenant_id}/Nope", json={}, headers=admin.headers())
    assert r.status_code == 404 and "error" in r.json()
    r = admin.session.get(f"{fake.url}/nothing/here")
    assert r.status_code == 404 and r.json()["error"]["code"]
    # parameter names are case-insensitive, annotations ignored, the tenant may be the domain
    url = f"{fake.url}/adminapi/beta/{fake.tenant.domain}/InvokeCommand"
    items = admin.value("get-mailbox", {"identity": "sales-001", "Identity@odata.type": "String"}, url=url)
    assert [m["Alias"] for m in items] == ["sales-001"]
    assert all(r["status"] != 500 for r in fake.requests)


def test_concurrent_clients(admin, fake, tenant):
    from concurrent.futures import ThreadPoolExecutor
    shared = [m for m in tenant.mailboxes if m["RecipientTypeDetails"] == "SharedMailbox"][:40]
    local = threading.local()

    def rows(mailbox):
        if not hasattr(local, "admin"):
            local.admin = Admin(fake, admin.bearer)
        return mailbox["Guid"], local.admin.value("Get-MailboxPermission", {"Identity": mailbox["Guid"]})

    with ThreadPoolExecutor(8) as pool:
        results = dict(pool.map(rows, shared))
    for mailbox in shared:
        assert [r["User"] for r in results[mailbox["Guid"]]] == [
            r["User"] for r in tenant.permissions[mailbox["Guid"]]]


# ---------------------------------------------------------------------------------------------
# $batch
# ---------------------------------------------------------------------------------------------

def test_batch(admin, fake, tenant):
    shared = [m for m in tenant.mailboxes if m["RecipientTypeDetails"] == "SharedMailbox"][:9]
    tid = tenant.tenant_id
    requests_ = [{"id": str(i), "method": "POST",
                  "url": (f"{fake.url}/adminapi/beta/{tid}/InvokeCommand" if i % 3 == 0 else
                          f"/adminapi/beta/{tid}/InvokeCommand" if i % 3 == 1 else "InvokeCommand"),
                  "headers": {"X-AnchorMailbox": f"UPN:{m['PrimarySmtpAddress']}"},
                  "body": {"CmdletInput": {"CmdletName": "Get-MailboxPermission",
                                           "Parameters": {"Identity": m["Guid"]}}}}
                 for i, m in enumerate(shared)]
    requests_.append({"id": "missing", "method": "POST", "url": "InvokeCommand",
                      "body": {"CmdletInput": {"CmdletName": "Get-MailboxPermission",
                                               "Parameters": {"Identity": "nobody"}}}})
    before = fake.counts()
    r = admin.session.post(fake.batch_url, json={"requests": requests_},
                           headers=admin.headers("odata.maxpagesize=1000;odata.continue-on-error"))
    assert r.status_code == 200, r.text
    responses = {x["id"]: x for x in r.json()["responses"]}
    assert len(responses) == 10
    for i, m in enumerate(shared):
        item = responses[str(i)]
        assert item["status"] == 200
        assert item["body"]["value"][0]["Identity"] == m["Identity"]
    assert responses["missing"]["status"] == 404
    assert "ManagementObjectNotFoundException" in responses["missing"]["body"]["error"]["details"][0]["message"]
    after = fake.counts()
    assert after["batch"] - before["batch"] == 1 and after["batch_item"] - before["batch_item"] == 10
    assert fake.requests[-11]["batch_size"] == 10 and fake.requests[-11]["kind"] == "batch"
    assert {x["cmdlet"] for x in fake.requests[-10:]} == {"Get-MailboxPermission"}
    too_many = admin.session.post(fake.batch_url, json={"requests": requests_ + [dict(requests_[0], id="x")]},
                                  headers=admin.headers())
    assert too_many.status_code == 400


def test_batch_item_pages(admin, fake):
    body = {"CmdletInput": {"CmdletName": "Get-Mailbox", "Parameters": {"ResultSize": "Unlimited"}}}
    r = admin.session.post(fake.batch_url, headers=admin.headers(), json={"requests": [
        {"id": "1", "method": "POST", "url": "InvokeCommand", "body": body,
         "headers": {"Prefer": "odata.maxpagesize=600"}}]})
    item = r.json()["responses"][0]
    assert item["status"] == 200 and len(item["body"]["value"]) == 600
    rest, _ = admin.all("Get-Mailbox", {"ResultSize": "Unlimited"}, url=item["body"]["@odata.nextLink"])
    assert len(rest) == 1806 - 600


# ---------------------------------------------------------------------------------------------
# Faults
# ---------------------------------------------------------------------------------------------

def test_throttling_every_nth(tmp_path):
    tenant = Tenant.generate(mailboxes=20, shared=12, groups=4)
    with FakeMicrosoft(tmp_path, tenant, throttle_every=3, retry_after=0.25) as fake:
        admin = Admin(fake)
        statuses = [admin.post("Get-Mailbox", {"ResultSize": "Unlimited"}) for _ in range(6)]
        assert [r.status_code for r in statuses] == [200, 200, 429, 200, 200, 429]
        throttled = statuses[2]
        assert throttled.headers["Retry-After"] == "0.25"
        assert throttled.json()["error"]["code"] == "TooManyRequests"
        assert [r["status"] for r in fake.requests if r["kind"] == "invoke"] == [200, 200, 429, 200, 200, 429]
        assert "items" not in [r for r in fake.requests if r["kind"] == "invoke"][2]  # not processed
        graph = http(fake).get(f"{fake.graph_url}/v1.0/groups/{tenant.groups[0]['ExternalDirectoryObjectId']}",
                               headers={"Authorization": f"Bearer {token(fake, fake.graph_scope)}"})
        assert graph.status_code == 200  # the 7th API request; the token endpoint does not count
        assert admin.post("Get-Mailbox", {}).status_code == 200
        assert admin.post("Get-Mailbox", {}).status_code == 429


def test_injected_failures_and_latency(tmp_path):
    tenant = Tenant.generate(mailboxes=20, shared=12, groups=4)
    with FakeMicrosoft(tmp_path, tenant, errors={"Get-Recipient": (500, "boom", 1)}, latency=0.05) as fake:
        admin = Admin(fake)
        fake.fail("Get-MailboxPermission", status=503, times=2, retry_after=0.5)
        fake.fail("Get-Mailbox", status=500, identity="sales-001", message="Mailbox database offline")
        codes = [admin.post("Get-MailboxPermission", {"Identity": "sales-001"}) for _ in range(3)]
        assert [r.status_code for r in codes] == [503, 503, 200]
        assert codes[0].headers["Retry-After"] == "0.5"
        assert admin.post("Get-Recipient", {"Identity": "sales-001"}).status_code == 500
        assert admin.post("Get-Recipient", {"Identity": "sales-001"}).status_code == 200
        failing = admin.post("Get-Mailbox", {"Identity": "sales-001"})
        assert failing.status_code == 500 and "Mailbox database offline" in error_message(failing)
        assert admin.post("Get-Mailbox", {"Identity": "support-002"}).status_code == 200
        started = time.time()
        admin.post("Get-Mailbox", {"Identity": "support-002"})
        assert time.time() - started >= 0.05
        fake.clear_failures()
        assert admin.post("Get-Mailbox", {"Identity": "sales-001"}).status_code == 200


def test_missing_role_is_403(tmp_path):
    tenant = Tenant.generate(mailboxes=20, shared=12, groups=4)
    tenant.app_roles = []
    tenant.graph_roles = []
    with FakeMicrosoft(tmp_path, tenant) as fake:
        r = Admin(fake).post("Get-Mailbox", {})
        assert r.status_code == 403
        assert "isn't supported in this scenario" in error_message(r)
        g = http(fake).get(f"{fake.graph_url}/v1.0/groups/{tenant.groups[0]['ExternalDirectoryObjectId']}",
                           headers={"Authorization": f"Bearer {token(fake, fake.graph_scope)}"})
        assert g.status_code == 403 and g.json()["error"]["code"] == "Authorization_RequestDenied"


def test_bad_tokens_are_401(admin, fake):
    s = http(fake)
    body = {"CmdletInput": {"CmdletName": "Get-Mailbox", "Parameters": {}}}
    r = s.post(fake.invoke_url, json=body)
    assert r.status_code == 401 and r.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert "Bearer" in r.headers["WWW-Authenticate"]
    r = s.post(fake.invoke_url, json=body, headers={"Authorization": "Bearer not.a.jwt"})
    assert r.status_code == 401
    forged = jwt.encode({"aud": fake.exchange_url, "tid": fake.tenant.tenant_id, "roles": ["Exchange.ManageAsApp"],
                         "iat": int(time.time()), "exp": int(time.time()) + 60}, "a-guessed-key-that-is-long-enough-for-hs256", algorithm="HS256")
    r = s.post(fake.invoke_url, json=body, headers={"Authorization": f"Bearer {forged}"})
    assert r.status_code == 401
    graph_token = token(fake, fake.graph_scope)
    r = s.post(fake.invoke_url, json=body, headers={"Authorization": f"Bearer {graph_token}"})
    assert r.status_code == 401 and "audience" in r.json()["error"]["message"]


def test_tokens_rejected_when_older_than(tmp_path):
    tenant = Tenant.generate(mailboxes=20, shared=12, groups=4)
    # 1.5 s leaves a loaded CI machine time for the first request while the token is young.
    with FakeMicrosoft(tmp_path, tenant, reject_tokens_older_than=1.5) as fake:
        app = confidential(fake)
        admin = Admin(fake, token(fake, app=app))
        assert admin.post("Get-Mailbox", {}).status_code == 200
        time.sleep(1.6)
        r = admin.post("Get-Mailbox", {})
        assert r.status_code == 401 and r.json()["error"]["code"] == "ExpiredToken"
        # msal still thinks its token is good (expires_in 3599): the client has to drop it.
        assert token(fake, app=app) == admin.bearer
        app.remove_tokens_for_client()
        admin.bearer = token(fake, app=app)
        assert admin.post("Get-Mailbox", {}).status_code == 200
        fake.expire_tokens()
        assert admin.post("Get-Mailbox", {}).status_code == 401


def test_short_token_lifetime(tmp_path):
    tenant = Tenant.generate(mailboxes=20, shared=12, groups=4)
    # 3 s, not 1: exp is a whole second, so a 1 s token may be good for only a few ms, and a
    # loaded CI machine then sees it expire before the first request.
    with FakeMicrosoft(tmp_path, tenant, token_lifetime=3) as fake:
        app = confidential(fake)
        first = app.acquire_token_for_client(scopes=[fake.exchange_scope])
        assert first["expires_in"] == 3
        admin = Admin(fake, first["access_token"])
        assert admin.post("Get-Mailbox", {}).status_code == 200
        exp = jwt.decode(first["access_token"], options={"verify_signature": False})["exp"]
        time.sleep(max(0.0, exp - time.time()) + 0.05)
        r = admin.post("Get-Mailbox", {})
        assert r.status_code == 401 and r.json()["error"]["code"] == "ExpiredToken"
        second = app.acquire_token_for_client(scopes=[fake.exchange_scope])
        assert second["token_source"] == "identity_provider"  # msal refreshes near expiry by itself
        assert Admin(fake, second["access_token"]).post("Get-Mailbox", {}).status_code == 200


# ---------------------------------------------------------------------------------------------
# Graph
# ---------------------------------------------------------------------------------------------

def graph_all(fake: FakeMicrosoft, url: str, bearer: str) -> tuple[list[dict], int]:
    s, items, pages = http(fake), [], 0
    while url:
        r = s.get(url, headers={"Authorization": f"Bearer {bearer}"})
        assert r.status_code == 200, r.text
        pages += 1
        items.extend(r.json()["value"])
        url = r.json().get("@odata.nextLink")
    return items, pages


def test_graph_transitive_members(fake, tenant):
    bearer = token(fake, fake.graph_scope)
    outer = tenant.by_address(tenant.scenarios["group:SG-Outer"])
    url = (f"{fake.graph_url}/v1.0/groups/{outer['ExternalDirectoryObjectId']}/transitiveMembers/"
           "microsoft.graph.user?$select=id,mail,userPrincipalName&$top=2")
    users, pages = graph_all(fake, url, bearer)
    assert pages == 3 and len(users) == 6
    assert all(set(u) == {"id", "mail", "userPrincipalName"} for u in users)
    assert {u["mail"] for u in users} == {u["PrimarySmtpAddress"] for u in tenant.transitive_users(outer)}
    inner = tenant.by_address(tenant.scenarios["group:SG-Inner"])
    assert {m["PrimarySmtpAddress"] for m in tenant.member_objects(inner)} < {u["mail"] for u in users}

    cycle_a = tenant.by_address(tenant.scenarios["group:SG-CycleA"])
    cycle_b = tenant.by_address(tenant.scenarios["group:SG-CycleB"])
    users, _ = graph_all(fake, f"{fake.graph_url}/v1.0/groups/{cycle_a['ExternalDirectoryObjectId']}"
                               "/transitiveMembers/microsoft.graph.user?$select=id,mail", bearer)
    expected = {m["PrimarySmtpAddress"] for g in (cycle_a, cycle_b) for m in tenant.member_objects(g)
                if m["RecipientTypeDetails"] == "UserMailbox"}
    assert len(users) == 4 and {u["mail"] for u in users} == expected
    everything, _ = graph_all(fake, f"{fake.graph_url}/v1.0/groups/{cycle_a['ExternalDirectoryObjectId']}"
                                    "/transitiveMembers", bearer)
    assert sorted(x["@odata.type"] for x in everything).count("#microsoft.graph.group") == 1  # B only, once
    direct, _ = graph_all(fake, f"{fake.graph_url}/v1.0/groups/{outer['ExternalDirectoryObjectId']}/members",
                          bearer)
    assert len(direct) == 3


def test_graph_errors(fake):
    bearer = token(fake, fake.graph_scope)
    s = http(fake)
    auth = {"Authorization": f"Bearer {bearer}"}
    r = s.get(f"{fake.graph_url}/v1.0/groups/{'0' * 8}-0000-0000-0000-{'0' * 12}/transitiveMembers", headers=auth)
    assert r.status_code == 404 and r.json()["error"]["code"] == "Request_ResourceNotFound"
    r = s.get(f"{fake.graph_url}/v1.0/groups/not-a-guid/members", headers=auth)
    assert r.status_code == 400
    r = s.get(f"{fake.graph_url}/v1.0/groups/{fake.tenant.groups[0]['ExternalDirectoryObjectId']}/members?$top=5000",
              headers=auth)
    assert r.status_code == 400
    r = s.get(f"{fake.graph_url}/v1.0/groups/{fake.tenant.groups[0]['ExternalDirectoryObjectId']}/members",
              headers={"Authorization": f"Bearer {token(fake)}"})  # an Exchange token
    assert r.status_code == 401 and r.json()["error"]["code"] == "InvalidAuthenticationToken"


# ---------------------------------------------------------------------------------------------
# The fixture data, a hand-made tenant, the process mode
# ---------------------------------------------------------------------------------------------

def test_generated_tenant(tenant):
    kinds = {}
    for m in tenant.mailboxes:
        kinds[m["RecipientTypeDetails"]] = kinds.get(m["RecipientTypeDetails"], 0) + 1
    assert kinds == {"UserMailbox": 1500, "SharedMailbox": 300, "RoomMailbox": 4, "EquipmentMailbox": 2}
    assert len({m["PrimarySmtpAddress"].lower() for m in tenant.mailboxes}) == 1806
    small = Tenant.generate(mailboxes=60, shared=20, seed=7)
    assert Tenant.generate(mailboxes=60, shared=20, seed=7).to_json() == small.to_json()
    assert Tenant.generate(mailboxes=60, shared=20, seed=8).to_json() != small.to_json()
    oracle = tenant.expected_full_access()
    s = tenant.scenarios
    users_of = lambda name: {u["PrimarySmtpAddress"] for u in tenant.transitive_users(
        tenant.by_address(s[f"group:{name}"]))}
    assert oracle[s["direct_group"]] == users_of("SG-Direct") and len(oracle[s["direct_group"]]) == 3
    assert oracle[s["nested_group"]] == users_of("SG-Outer") and len(oracle[s["nested_group"]]) == 6
    assert users_of("SG-Inner") < oracle[s["nested_group"]]
    assert oracle[s["cyclic_group"]] == users_of("SG-CycleA") == users_of("SG-CycleB")
    assert len(oracle[s["cyclic_group"]]) == 4
    assert len(oracle[s["denied"]]) == 1 and len(oracle[s["orphaned_sid"]]) == 1
    assert s["inherited_only"] not in oracle and s["empty_group"] not in oracle
    assert len(oracle[s["read_permission"]]) == 1 and len(oracle[s["unresolvable_user"]]) == 1
    assert oracle[s["group_by_display_name"]] == oracle[s["direct_group"]]
    assert oracle[s["overlap"]] == oracle[s["nested_group"]]
    assert len(oracle[s["direct_users"]]) == 3
    assert len(oracle) > 100


def test_hand_made_tenant(tmp_path):
    t = Tenant(domain="fabrikam.example")
    alice = t.add_mailbox("alice", display_name="Alice A", addresses=["smtp:a@fabrikam.example"])
    bob = t.add_mailbox("bob")
    shared = t.add_mailbox("team", "SharedMailbox")
    group = t.add_group("Team Members", [alice], display_name="Team members")
    inner = t.add_group("Inner", [bob])
    t.add_members(group, inner)
    t.grant(shared, group)
    assert t.expected_full_access() == {"team@fabrikam.example": {"alice@fabrikam.example", "bob@fabrikam.example"}}
    t.save(tmp_path / "t.json")
    assert Tenant.load(tmp_path / "t.json").to_json() == t.to_json()
    with FakeMicrosoft(tmp_path / "certs", t, page_size=1) as fake:
        admin = Admin(fake)
        [row] = admin.value("Get-Mailbox", {"Identity": "a@fabrikam.example"})
        assert row["Guid"] == alice["Guid"] and row["AccountDisabled"] is False
        items, pages = admin.all("Get-Mailbox", {"ResultSize": "Unlimited"})
        assert pages == 3 and [i["Alias"] for i in items] == ["alice", "bob", "team"]
        perms, _ = admin.all("Get-MailboxPermission", {"Identity": "team"})
        assert [p["User"] for p in perms if not p["IsInherited"]] == ["NT AUTHORITY\\SELF", "Team Members"]


def test_process_mode(tmp_path):
    tenant = Tenant.generate(mailboxes=10, shared=12, groups=2)
    tenant.save(tmp_path / "tenant.json")
    info_file = tmp_path / "info.json"
    proc = subprocess.Popen([sys.executable, str(HERE / "fake_microsoft.py"), "--tenant-file",
                             str(tmp_path / "tenant.json"), "--folder", str(tmp_path / "certs"),
                             "--info-file", str(info_file), "--page-size", "5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY "), (line, proc.stderr.read() if proc.poll() is not None else "")
        info = json.loads(info_file.read_text())
        assert info["port"] == int(line.split()[1])
        s = requests.Session()
        s.verify, s.trust_env = info["ca_file"], False
        app = msal.ConfidentialClientApplication(info["client_id"], authority=info["authority"],
                                                 client_credential=info["client_secret"],
                                                 instance_discovery=False, http_client=s)
        at = app.acquire_token_for_client(scopes=[info["exchange_scope"]])["access_token"]
        r = s.post(f"{info['exchange_url']}/adminapi/beta/{info['tenant_id']}/InvokeCommand",
                   json={"CmdletInput": {"CmdletName": "Get-Mailbox", "Parameters": {"ResultSize": "Unlimited"}}},
                   headers={"Authorization": f"Bearer {at}"})
        assert r.status_code == 200 and len(r.json()["value"]) == 5 and "@odata.nextLink" in r.json()
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        proc.stdout.close()
        proc.stderr.close()
