"""The Zivver client's own parts: pacing, the SCIM mapping, the connection options."""

from __future__ import annotations

import pytest

from stages.cli import ZivsyncError
from stages.zivver import scim
from stages.zivver.client import ZIVVER_GROUP, ZIVVER_USER, Client, TokenBucket, connect


class FakeTime:
    def __init__(self):
        self.now, self.slept = 0.0, []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_bucket_lets_a_burst_through_then_paces_to_the_budget():
    time = FakeTime()
    bucket = TokenBucket(50, 10.0, clock=time.clock, sleep=time.sleep)
    for _ in range(50):
        bucket.take()
    assert time.slept == []
    for _ in range(100):
        bucket.take()
    assert time.now == pytest.approx(20.0)  # 100 more at 5 per second


def test_bucket_emptied_by_a_429_starts_from_nothing():
    time = FakeTime()
    bucket = TokenBucket(50, 10.0, clock=time.clock, sleep=time.sleep)
    bucket.empty()
    bucket.take()
    assert time.slept == [pytest.approx(0.2)]


def test_client_repr_and_errors_never_show_the_key():
    client = Client("https://zivver.invalid/api/scim/v2", "Z1.secret-key")
    assert "secret" not in repr(client)


USER = {
    "id": "u1", "userName": "Ann@Example.com", "name": {"formatted": "Ann"}, "active": True,
    "phoneNumbers": [{"value": "+31612345678"}],
    ZIVVER_USER: {"aliases": ["A@example.com"], "delegates": ["bob@example.com", "not an address"],
                  "ExternalAccountId": "ext-1"},
}


def test_user_resource_becomes_an_account_and_back():
    account, bad = scim.user_account(USER)
    assert (account["email"], account["aliases"], account["delegates"], account["phone"]) == (
        "ann@example.com", ["a@example.com"], ["bob@example.com"], "+31612345678")
    assert bad == ["not an address"]
    body = scim.user_body(account, "sso-1")
    assert body[ZIVVER_USER] == {"aliases": ["a@example.com"], "delegates": ["bob@example.com"],
                                 "SsoAccountKey": "sso-1", "ExternalAccountId": "ext-1"}
    assert body["userName"] == "ann@example.com" and body["phoneNumbers"] == [{"value": "+31612345678"}]


def test_group_members_become_delegates_by_address():
    group = {"id": "g1", "externalId": "team@example.com", "displayName": "Team",
             "members": [{"value": "u1"}, {"value": "gone"}], ZIVVER_GROUP: {"aliases": []}}
    account, unknown = scim.group_account(group, {"u1": "ann@example.com"})
    assert account["delegates"] == ["ann@example.com"] and unknown == ["gone"] and account["active"] is True
    assert scim.group_body(account, ["u1"])["members"] == [{"value": "u1"}]


def options(**overrides) -> dict:
    return {"zivver_url": "https://app.zivver.com/api/scim/v2", "zivver_api_key_file": None, "ca_file": None,
            "insecure": False, "rate_limit": 50, "rate_window": 10.0, "timeout": 30.0, **overrides}


def test_plain_http_only_to_this_machine(monkeypatch):
    monkeypatch.setenv("ZIVSYNC_ZIVVER_API_KEY", "k")
    with pytest.raises(ZivsyncError, match="must use https"):
        connect(options(zivver_url="http://app.zivver.com/api/scim/v2"))
    assert connect(options(zivver_url="http://127.0.0.1:8080/api/scim/v2")).base.endswith("/scim/v2")


def test_key_from_environment_or_file(monkeypatch, tmp_path):
    monkeypatch.delenv("ZIVSYNC_ZIVVER_API_KEY", raising=False)
    with pytest.raises(ZivsyncError, match="no Zivver API key"):
        connect(options())
    key = tmp_path / "key"
    key.write_text("\ufeffZ1.from-file\n", encoding="utf-8")
    client = connect(options(zivver_api_key_file=str(key)))
    assert client.session.headers["Authorization"] == "Bearer Z1.from-file"


def test_push_holds_whole_only_the_accounts_its_plan_touches(tmp_path):
    """Issue 18: what push reads of Zivver, against a real sandbox: the accounts a change names
    (by Zivver id or by address) whole, every other one as address, id and kind, which still
    resolves a functional account's delegates and finds an address taken."""
    from helpers import API_KEY, Sandbox, account, write_stream

    from stages.zivver.applying import Zivver, touched_by

    seed = write_stream(tmp_path / "seed.jsonl", "accounts", [
        account("ann@example.com", name="Ann", aliases=["a@example.com"]), account("bob@example.com", name="Bob"),
        account("desk@example.com", kind="functional", name="Desk", delegates=["ann@example.com"])])
    with Sandbox("--seed", seed, "--rate-limit", "1000") as sandbox:
        client = Client(sandbox.url, API_KEY, rate=1000, window=1.0)
        whole = Zivver.listed(client)
        desk = whole.by_email("desk@example.com")
        changes = [{"zivver_id": desk["zivver_id"], "email": "desk@example.com", "before": {}, "after": {}},
                   {"zivver_id": None, "email": "new@example.com", "before": {}, "after": {"email": "BOB@example.com"}}]
        lean = Zivver.listed(client, keep=touched_by(changes))
    assert lean.by_email("desk@example.com") == desk and desk["delegates"] == ["ann@example.com"]
    assert lean.by_email("bob@example.com") == whole.by_email("bob@example.com")  # named by a change's address
    ann = lean.by_email("ann@example.com")
    assert ann == {"zivver_id": whole.by_email("ann@example.com")["zivver_id"], "email": "ann@example.com",
                   "kind": "user"}
    assert lean.user_ids(["ann@example.com", "desk@example.com"]) == ([ann["zivver_id"]], ["desk@example.com"])
