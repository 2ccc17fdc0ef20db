"""Issue 12: never a complete-looking wrong read. Answers of Zivver in the shapes a real server
may give (a listing short of its own totalResults, odd values) read by the real executables
over loopback HTTP; throttling that pauses every worker of a client; and the parsers of the
answers, each shape understood or refused by name."""

from __future__ import annotations

import re
import threading
import time

import orjson
import pytest
from helpers import API_KEY, account, run, write_stream
from loopback import Handler, Loopback

from stages.cli import ExitStatus
from stages.core.http import HttpClient
from stages.sources.exchangeonline import NotUnderstood, permission_entries, rights_of
from stages.zivver import scim
from stages.zivver.client import ZIVVER_USER

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"


def user(number: int, **fields) -> dict:
    """A User as the recorded 644-user listing holds them (reference/zivver.md §5: every user
    had active, id, meta, name, phoneNumbers, schemas, userName and the Zivver extension)."""
    return {"schemas": [USER_SCHEMA, ZIVVER_USER], "id": f"u{number:04d}", "userName": f"user{number}@example.com",
            "name": {"formatted": f"User {number}"}, "active": True, "phoneNumbers": [],
            "meta": {"resourceType": "User"}, ZIVVER_USER: {"aliases": [], "delegates": []}, **fields}


class ZivverAnswers(Loopback):
    """A loopback SCIM server answering /Users and /Groups from lists, in a shape a test picks:
    ``ignore_start_index`` serves the first page again whatever startIndex asks (a server
    ignoring paging; the real one answers one unpaged page, §3.7), ``total`` overrides
    totalResults."""

    class _Handler(Handler):
        do_GET = Handler.serve

    handler = _Handler
    _requested_port = 0
    _context = None

    def __init__(self, users: list[dict], groups: list[dict], *, page: int = 500, ignore_start_index=False,
                 total: int | None = None):
        self.users, self.groups, self.page = users, groups, page
        self.ignore_start_index, self.total = ignore_start_index, total
        self.requests = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/scim/v2"

    def _serve(self, h) -> None:
        from urllib.parse import parse_qs, urlsplit

        self.requests += 1
        parts = urlsplit(h.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        resources = self.users if parts.path.endswith("/Users") else self.groups
        start = 1 if self.ignore_start_index else int(query.get("startIndex", 1))
        count = min(int(query.get("count", self.page)), self.page)
        body = {"totalResults": self.total if self.total is not None else len(resources),
                "Resources": resources[start - 1:start - 1 + count]}
        payload = orjson.dumps(body)
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        h.wfile.write(payload)


def snapshot(server: ZivverAnswers, tmp_path, expect: int):
    out = tmp_path / "current.jsonl"
    done = run("zivsync-snapshot", "--zivver-url", server.url, "-o", out, env={"ZIVSYNC_ZIVVER_API_KEY": API_KEY})
    assert done.returncode == expect, done.stderr
    return done, [orjson.loads(line) for line in out.read_bytes().splitlines()] if out.exists() else []


def test_a_listing_short_of_its_total_is_read_again_then_marked_incomplete(tmp_path):
    """644 users served 500 a page by a server that ignores startIndex: 500 of 644, read twice,
    and the stream says so; diff refuses to plan from it. (Before: complete, 144 people gone.)"""
    with ZivverAnswers([user(n) for n in range(644)], [], ignore_start_index=True) as server:
        done, records = snapshot(server, tmp_path, ExitStatus.UNREACHABLE)
    assert sum(r["type"] == "account" for r in records) == 500
    end = records[-1]
    assert end["complete"] is False and "Zivver says it has 644 but the listing gave 500" in end["incomplete_reasons"][0]
    assert "reading it again" in done.stderr and "644" in done.stderr
    desired = write_stream(tmp_path / "desired.jsonl", "accounts", [account("user1@example.com")])
    plan = run("zivsync-diff", "--current", tmp_path / "current.jsonl", "-i", desired, "--claimed-domain",
               "example.com")
    assert plan.returncode == ExitStatus.ERROR and "current accounts stream is incomplete" in plan.stderr


def test_a_full_listing_in_pages_is_complete(tmp_path):
    with ZivverAnswers([user(n) for n in range(1203)], [], page=500) as server:
        done, records = snapshot(server, tmp_path, ExitStatus.OK)
    assert sum(r["type"] == "account" for r in records) == 1203 and "complete" not in records[-1]
    assert records[-1]["tally"]["personal accounts read"] == 1203


@pytest.mark.parametrize("field, value, words", [
    ("userName", None, "userName is None"), ("active", None, "active is None, neither true nor false"),
    ("active", "yes", "active is 'yes'"), ("userName", 42, "userName is 42")])
def test_odd_values_are_named_never_guessed(tmp_path, field, value, words):
    """userName: null used to end in a traceback; active: null was read as inactive."""
    users = [user(1), user(2, **{field: value}), user(3)]
    with ZivverAnswers(users, []) as server:
        done, records = snapshot(server, tmp_path, ExitStatus.UNREACHABLE)
    assert "Traceback" not in done.stderr and words in done.stderr and "u0002" in done.stderr
    assert [r["email"] for r in records if r["type"] == "account"] == ["user1@example.com", "user3@example.com"]
    assert records[-1]["complete"] is False


def test_a_group_without_its_address_and_a_listing_without_a_total(tmp_path):
    group = {"id": "g1", "externalId": None, "displayName": "Team", "members": []}
    with ZivverAnswers([user(1)], [group]) as server:
        done, _ = snapshot(server, tmp_path, ExitStatus.UNREACHABLE)
    assert "functional account id 'g1': externalId is None" in done.stderr
    with ZivverAnswers([user(1)], [], total=-1) as server:
        done, records = snapshot(server, tmp_path / "2", ExitStatus.UNREACHABLE)
    assert "totalResults is -1, not a count" in done.stderr and records == []


# -- one pause for all workers ------------------------------------------------------------------


class Throttling(Loopback):
    """Answers 429 with Retry-After to the ``at``-th request, 200 to every other; records when
    each request arrived (and when the 429 went out)."""

    class _Handler(Handler):
        do_GET = Handler.serve

    handler = _Handler
    _requested_port = 0
    _context = None

    def __init__(self, at: int, retry_after: float):
        self.at, self.retry_after = at, retry_after
        self.arrivals: list[float] = []
        self.throttled_at: float | None = None
        self.lock = threading.Lock()

    def _serve(self, h) -> None:
        with self.lock:
            self.arrivals.append(time.monotonic())
            number = len(self.arrivals)
        time.sleep(0.01)
        if number == self.at:
            self.throttled_at = time.monotonic()
            h.send_response(429)
            h.send_header("Retry-After", f"{self.retry_after:g}")
        else:
            h.send_response(200)
        h.send_header("Content-Length", "2")
        h.end_headers()
        h.wfile.write(b"{}")


@pytest.mark.parametrize("workers", [4])
def test_a_429_pauses_every_worker_of_the_client(workers):
    """Exchange extends throttling for clients that keep sending into a wait: after a 429 with
    Retry-After, no request of that client may start until the wait is over, whichever thread
    sends it (requests already in flight excepted). Before: only the throttled thread waited."""
    with Throttling(at=10, retry_after=1.5) as server:
        client = HttpClient(f"http://127.0.0.1:{server.port}")

        def work():
            for _ in range(60):
                client.send("GET", "/x")

        threads = [threading.Thread(target=work) for _ in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert server.throttled_at is not None and client.stats.throttled == 1
    # a request in flight when the 429 went out may still arrive just after it
    inside = [t for t in server.arrivals if server.throttled_at + 0.15 < t < server.throttled_at + 1.5]
    assert inside == []
    assert len(server.arrivals) == workers * 60 + 1


# -- the parsers, by shape ----------------------------------------------------------------------


class FlagsEnum(int):
    """An enum object as psrpcore hands it over: an int whose text is the flags' names."""

    def __new__(cls, value: int, text: str):
        obj = super().__new__(cls, value)
        obj.text = text
        return obj

    def __str__(self) -> str:
        return self.text


@pytest.mark.parametrize("value", [
    ["FullAccess", "ReadPermission"], ["FullAccess, ReadPermission"], "FullAccess, ReadPermission",
    [131073], 131073, ["131073"], [FlagsEnum(131073, "FullAccess, ReadPermission")], ("ReadPermission", "fullaccess")])
def test_full_access_with_read_permission_in_every_shape(value):
    assert sorted(rights_of(value)) == ["FullAccess", "ReadPermission"]


@pytest.mark.parametrize("value", [None, [], True, {"Value": "FullAccess"}, [None], "", " , ", ["FullAccess,"],
                                   ["Value"], 0, [-1], 1.0])
def test_rights_not_understood_are_refused(value):
    with pytest.raises(NotUnderstood):
        rights_of(value)


def test_bits_without_a_name_are_kept_as_hex():
    assert rights_of(0x20001 | 0x100) == ["FullAccess", "ReadPermission", "0x100"]


def test_the_nested_permission_shape_becomes_flat_entries():
    entry = {"PermissionId": "x", "User": "a@x.example", "IsOwner": False, "PermissionList": [
        {"AccessRights": ["FullAccess"], "Deny": False, "IsInherited": False, "InheritanceType": "All"},
        {"AccessRights": ["ReadPermission"], "Deny": True, "IsInherited": True, "InheritanceType": "None"}]}
    flat = permission_entries(entry)
    assert [(e["User"], e["AccessRights"], e["Deny"]) for e in flat] == [
        ("a@x.example", ["FullAccess"], False), ("a@x.example", ["ReadPermission"], True)]
    for odd in ({"User": "a", "PermissionList": []}, {"User": "a", "PermissionList": "FullAccess"},
                {"User": "a"}, "FullAccess", {"User": "a", "PermissionList": [None]}):
        with pytest.raises(NotUnderstood):
            permission_entries(odd)


def test_scim_resources_with_odd_values_are_named():
    for odd, words in (({"userName": None}, "userName is None"), ({"active": None}, "active is None"),
                       ({ZIVVER_USER: []}, "is []"), ({"id": None}, "without an id")):
        with pytest.raises(scim.NotUnderstood, match=re.escape(words)):
            scim.user_account({**user(7), **odd})
    accounts, _, problems = scim.snapshot_accounts([user(1), {**user(2), "active": None}], [])
    assert [a["email"] for a in accounts] == ["user1@example.com"] and "u0002" in problems[0]


def test_odd_group_aliases_and_members_are_left_out_not_a_traceback():
    group = {"id": "g1", "externalId": "team@x.example", "displayName": "Team", "members": [
        {"value": {"odd": 1}}, {"value": "u1"}, "u2"], "urn:ietf:params:scim:schemas:zivver:0.1:Group": {
        "aliases": [None, "Desk@x.example", 7]}}
    account, unknown = scim.group_account(group, {"u1": "ann@x.example"})
    assert account["aliases"] == ["desk@x.example"] and account["delegates"] == ["ann@x.example"]


def test_a_number_in_another_script_is_no_mailbox_right():
    with pytest.raises(NotUnderstood):
        rights_of(["²"])


def test_a_string_where_a_list_of_addresses_belongs_is_named():
    with pytest.raises(scim.NotUnderstood, match="u0009.*a list of addresses is 'b@x.example'"):
        scim.user_account(user(9, **{ZIVVER_USER: {"aliases": [], "delegates": "b@x.example"}}))
