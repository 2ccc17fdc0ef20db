"""zivsync-sandbox: the real process on a free loopback port, spoken to over HTTP.

Each rule is checked with the status code and message Zivver answers (reference/zivver.md
§3 and §6.4). A few pure parts (the token bucket) are checked directly."""

from __future__ import annotations

import http.client
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest
import requests
from helpers import account, executable, read_jsonl, run, write_stream

from stages.zivver.sandbox_server import TokenBucket

KEY = "Z1.1.2.c2FuZGJveC10ZXN0LWtleQ"
CLAIMED = ("--claimed-domain", "example.com", "--claimed-domain", "example.nl")
USER_EXT = "urn:ietf:params:scim:schemas:zivver:0.1:User"
GROUP_EXT = "urn:ietf:params:scim:schemas:zivver:0.1:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
SCIM_JSON = "application/scim+json"
OUTSIDE = {"code": 400, "message": "Account is outside the organization"}
REMOVE_MEMBERS = orjson.dumps({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                               "Operations": [{"op": "remove", "path": "members"}]})


class Sandbox:
    """A running zivsync-sandbox process and a client for it."""

    def __init__(self, process: subprocess.Popen, url: str, stderr: Path, started_in: float):
        self.process, self.url, self.stderr_path, self.started_in = process, url, stderr, started_in
        self.root = url.removesuffix("/api/scim/v2")
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {KEY}"

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        return self.http.request(method, self.url + path, timeout=10, **kwargs)

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: dict, **kwargs) -> requests.Response:
        return self.request("POST", path, json=body, **kwargs)

    def put(self, path: str, body: dict, **kwargs) -> requests.Response:
        return self.request("PUT", path, json=body, **kwargs)

    def patch(self, path: str, data: bytes = REMOVE_MEMBERS, content_type: str = SCIM_JSON, **headers):
        return self.request("PATCH", path, data=data, headers={"Content-Type": content_type, **headers})

    def create_user(self, email: str, **ext) -> dict:
        body = {"userName": email, "name": {"formatted": email.split("@")[0].title()}, "active": True}
        if ext:
            body[USER_EXT] = ext
        response = self.post("/Users", body)
        assert response.status_code == 201, response.text
        return response.json()

    def create_group(self, email: str, members: list[str] = (), **ext) -> dict:
        body = {"externalId": email, "displayName": email.split("@")[0].title(),
                "members": [{"value": m} for m in members]}
        if ext:
            body[GROUP_EXT] = ext
        response = self.post("/Groups", body)
        assert response.status_code == 201, response.text
        return response.json()

    def control(self, method: str, path: str) -> requests.Response:
        return self.http.request(method, f"{self.root}/_sandbox/{path}", timeout=10)

    def state(self) -> dict:
        return self.control("GET", "state").json()

    def stats(self) -> dict:
        return self.control("GET", "stats").json()

    def stop(self, signum: int = signal.SIGTERM) -> tuple[int, str, str]:
        """Stop it by its pid; its exit code, the rest of its stdout, its stderr."""
        self.http.close()
        if self.process.poll() is None:
            os.kill(self.process.pid, signum)
        code = self.process.wait(timeout=10)
        rest = self.process.stdout.read().decode()
        self.process.stdout.close()
        return code, rest, self.stderr_path.read_text()


@pytest.fixture
def start(tmp_path):
    """start(*options) runs a sandbox on a free port; every one is stopped afterwards, pass or fail."""
    running: list[subprocess.Popen] = []

    def start(*options, key: str | None = KEY, claimed=CLAIMED, env: dict | None = None) -> Sandbox:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("ZIVSYNC_")}
        if key is not None:
            environment["ZIVSYNC_ZIVVER_API_KEY"] = key
        environment.update(env or {})
        stderr = tmp_path / f"sandbox-{len(running)}.err"
        began = time.monotonic()
        with open(stderr, "wb") as err:
            process = subprocess.Popen(executable("zivsync-sandbox") + ["--port", "0", *claimed, *map(str, options)],
                                       stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, env=environment)
        running.append(process)
        line = _first_line(process, timeout=10)
        assert line, f"no URL printed: {stderr.read_text()}"
        return Sandbox(process, line, stderr, time.monotonic() - began)

    yield start
    for process in running:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        if process.stdout and not process.stdout.closed:
            process.stdout.close()


def _first_line(process: subprocess.Popen, timeout: float) -> str:
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: lines.put(process.stdout.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout).decode().strip()
    except queue.Empty:
        return ""


@pytest.fixture
def sandbox(start) -> Sandbox:
    return start()


# -- the process ----------------------------------------------------------------------


def test_prints_its_url_first_starts_fast_and_listens_on_loopback_only(start):
    started = start()
    host, port = started.url.removeprefix("http://").split("/")[0].split(":")
    assert started.url == f"http://127.0.0.1:{port}/api/scim/v2" and host == "127.0.0.1"
    assert started.started_in < 1.0, f"took {started.started_in:.2f} s to start"
    assert started.get("/Users").status_code == 200
    if sys.platform.startswith("linux"):  # all of 127/8 is loopback there: a 0.0.0.0 listener would answer
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.2", int(port)), timeout=2).close()
    code, rest, stderr = started.stop()
    assert code == 0 and rest == "" and "Traceback" not in stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_it_quietly_with_exit_0(start, signum):
    started = start()
    started.create_user("ann@example.com")
    code, _, stderr = started.stop(signum)
    assert code == 0
    assert [line for line in stderr.splitlines() if "serving" not in line] == []


def test_refuses_to_start_without_an_api_key():
    done = run("zivsync-sandbox", *CLAIMED, timeout=10)
    assert done.returncode == 1 and "ZIVSYNC_ZIVVER_API_KEY" in done.stderr and done.stdout == b""


def test_needs_a_claimed_domain():
    done = run("zivsync-sandbox", env={"ZIVSYNC_ZIVVER_API_KEY": KEY}, timeout=10)
    assert done.returncode != 0 and "--claimed-domain" in done.stderr


def test_help_has_an_example_and_the_options():
    helped = run("zivsync-sandbox", "--help")
    text = helped.stdout.decode()
    assert helped.returncode == 0 and "Example" in text
    for name in ("--port", "--claimed-domain", "--seed", "--state", "--rate-limit", "--rate-window", "--fail-rate",
                 "--drop-rate", "--drop-after-write-rate", "--latency", "--fault-seed", "ZIVSYNC_RATE_LIMIT"):
        assert name in text


def test_claimed_domains_from_the_environment_and_a_config_file(start, tmp_path):
    from_env = start(claimed=(), env={"ZIVSYNC_CLAIMED_DOMAINS": "example.org"})
    assert from_env.post("/Users", {"userName": "ann@example.org"}).status_code == 201
    assert from_env.post("/Users", {"userName": "ann@example.com"}).json() == OUTSIDE
    config = tmp_path / "zivsync.toml"
    config.write_text('claimed_domains = ["example.net"]\n')
    from_file = start("--config", config, claimed=())
    assert from_file.post("/Users", {"userName": "bob@example.net"}).status_code == 201


def test_unauthorized_requests_get_401_and_the_key_is_never_shown(start):
    started = start("--verbose")
    expected = {"code": 401, "message": "Credentials are required to access this resource."}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"},
                    {"Authorization": f"Bearer {KEY}x"}):
        for url in (started.url + "/Users", started.root + "/_sandbox/stats", started.root + "/_sandbox/state"):
            response = requests.get(url, headers=headers, timeout=10)
            assert response.status_code == 401 and response.json() == expected, (url, headers)
    assert started.get("/Users").status_code == 200  # the right key works
    code, rest, stderr = started.stop()
    assert "GET /api/scim/v2/Users" in stderr  # --verbose logs the request lines...
    assert KEY not in rest and KEY not in stderr and KEY[:12] not in stderr  # ...never the key


# -- users ----------------------------------------------------------------------------


def test_create_user_returns_zivvers_shape_and_ignores_delegates_and_inactive(sandbox):
    response = sandbox.post("/Users", {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "ann@example.com",
        "name": {"formatted": "Ann Example"}, "active": False,
        USER_EXT: {"aliases": ["ann.alias@example.nl"], "delegates": ["bob@example.com"], "SsoAccountKey": "sso-ann",
                   "ExternalAccountId": "ext-ann"}})
    assert response.status_code == 201
    user = response.json()
    uid = user["id"]
    assert len(uid) == 36 and uid.count("-") == 4
    assert user["userName"] == "ann@example.com" and user["name"] == {"formatted": "Ann Example"}
    assert user["active"] is True  # "Zivver always makes the user active when created"
    assert user["phoneNumbers"] == []
    assert user["meta"]["location"] == f"/scim/v2/Users/{uid}" and user["meta"]["resourceType"] == "User"
    assert len(user["meta"]["created"]) == 10  # a date, no time
    assert user["schemas"] == ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE, USER_EXT]
    assert user[ENTERPRISE] == {"division": "/"}
    assert user[USER_EXT] == {"aliases": ["ann.alias@example.nl"], "delegates": [], "ExternalAccountId": "ext-ann"}
    assert sandbox.get(f"/Users/{uid}").json() == user
    assert sandbox.get("/Users").json() == {"totalResults": 1, "Resources": [user]}
    stored = sandbox.state()["users"][0]
    assert stored["SsoAccountKey"] == "sso-ann"


def test_create_user_refusals(sandbox):
    ann = sandbox.create_user("ann@example.com", aliases=["ann@example.nl"])
    desk = sandbox.create_group("desk@example.com", aliases=["helpdesk@example.com"])
    duplicate = sandbox.post("/Users", {"userName": "ANN@example.com"})
    assert duplicate.status_code == 409 and duplicate.content == b""
    assert sandbox.post("/Users", {"userName": "ann@example.nl"}).status_code == 409  # an alias of a user
    for address in ("desk@example.com", "helpdesk@example.com", "eve@elsewhere.org", "eve@sub.example.com", "eve"):
        response = sandbox.post("/Users", {"userName": address})
        assert (response.status_code, response.json()) == (400, OUTSIDE), address
    not_owned = sandbox.post("/Users", {"userName": "bob@example.com", USER_EXT: {"aliases": ["bob@elsewhere.org"]}})
    assert (not_owned.status_code, not_owned.json()) == (400, {"code": 400, "message": "Error creating alias: Domain Not Owned"})
    for alias, holder in (("ann@example.com", ann["id"]), ("ann@example.nl", ann["id"]),
                          ("desk@example.com", desk["id"]), ("HELPDESK@example.com", desk["id"])):
        taken = sandbox.post("/Users", {"userName": "bob@example.com", USER_EXT: {"aliases": [alias]}})
        assert taken.status_code == 400
        assert taken.json()["message"] == f"Error creating alias: Alias is already taken for {holder}"
    bad = sandbox.request("POST", "/Users", data=b"{not json", headers={"Content-Type": "application/json"})
    assert bad.status_code == 400 and bad.json() == {"code": 400, "message": "Unable to process JSON"}
    assert sandbox.post("/Users", {"name": {"formatted": "No Address"}}).status_code == 400
    assert sandbox.request("POST", "/Users", data=b"{}", headers={"Content-Type": "text/plain"}).status_code == 415
    assert [u["userName"] for u in sandbox.get("/Users").json()["Resources"]] == ["ann@example.com"]
    assert sandbox.stats()["writes"] == 2  # refusals change nothing


def test_list_filter_and_paging(sandbox):
    ids = [sandbox.create_user(f"user{n}@example.com")["id"] for n in range(5)]
    everything = sandbox.get("/Users").json()
    assert everything["totalResults"] == 5 and [u["id"] for u in everything["Resources"]] == ids
    assert "startIndex" not in everything  # the real server answers everything, without paging keys
    page = sandbox.get("/Users", params={"startIndex": 2, "count": 2}).json()
    assert page["totalResults"] == 5 and [u["id"] for u in page["Resources"]] == ids[1:3]
    assert (page["startIndex"], page["itemsPerPage"]) == (2, 2)
    last = sandbox.get("/Users", params={"startIndex": 5, "count": 10}).json()
    assert [u["id"] for u in last["Resources"]] == ids[4:] and last["itemsPerPage"] == 1
    beyond = sandbox.get("/Users", params={"startIndex": 6, "count": 10}).json()
    assert beyond["Resources"] == [] and beyond["totalResults"] == 5
    assert sandbox.get("/Users", params={"count": 1}).json()["Resources"][0]["id"] == ids[0]
    found = sandbox.get("/Users", params={"filter": 'userName eq "USER3@Example.com"'}).json()
    assert found["totalResults"] == 1 and found["Resources"][0]["id"] == ids[3]
    assert sandbox.get("/Users", params={"filter": 'userName eq "nobody@example.com"'}).json() == \
        {"totalResults": 0, "Resources": []}
    assert sandbox.get("/Users", params={"filter": 'displayName co "x"'}).status_code == 400
    desk = sandbox.create_group("desk@example.com", [ids[0]])
    groups = sandbox.get("/Groups", params={"filter": 'externalId eq "Desk@example.com"'}).json()
    assert groups["totalResults"] == 1 and groups["Resources"][0]["id"] == desk["id"]
    assert sandbox.get("/Users").json()["totalResults"] == 5  # groups are not users


def test_unknown_ids_are_400_not_404(sandbox):
    ann = sandbox.create_user("ann@example.com")
    desk = sandbox.create_group("desk@example.com")
    unknown = "00000000-0000-4000-8000-000000000000"
    for method, path in (("GET", f"/Users/{unknown}"), ("GET", f"/Groups/{unknown}"), ("DELETE", f"/Users/{unknown}"),
                         ("GET", f"/Users/{desk['id']}"), ("GET", f"/Groups/{ann['id']}")):
        response = sandbox.request(method, path)
        rid = path.rsplit("/", 1)[1]
        assert (response.status_code, response.json()) == \
            (400, {"code": 400, "message": f"Unknown account with uuid: {rid}"}), path
    response = sandbox.put(f"/Users/{unknown}", {"active": False})
    assert response.status_code == 400 and response.json()["message"] == f"Unknown account with uuid: {unknown}"
    response = sandbox.patch(f"/Groups/{unknown}")
    assert response.status_code == 400 and response.json()["message"] == f"Unknown account with uuid: {unknown}"


def test_put_keeps_omitted_top_level_fields_and_replaces_the_extension_whole(sandbox):
    uid = sandbox.create_user("ann@example.com", aliases=["ann@example.nl"], SsoAccountKey="sso-1",
                              ExternalAccountId="ext-1")["id"]
    full = {USER_EXT: {"aliases": ["ann@example.nl"], "delegates": ["bob@example.com", "x@unclaimed.org"],
                       "SsoAccountKey": "sso-2", "ExternalAccountId": "ext-1"}}
    response = sandbox.put(f"/Users/{uid}", full)
    assert response.status_code == 200
    assert response.json()[USER_EXT] == {"aliases": ["ann@example.nl"], "delegates": ["bob@example.com", "x@unclaimed.org"],
                                         "ExternalAccountId": "ext-1"}  # delegates are not checked
    partial = sandbox.put(f"/Users/{uid}", {"active": False}).json()  # no extension: it is kept
    assert partial["active"] is False and partial["name"] == {"formatted": "Ann"}
    assert partial[USER_EXT] == response.json()[USER_EXT]
    assert sandbox.state()["users"][0]["SsoAccountKey"] == "sso-2"
    # ENG-12451: sending the extension with aliases only erases delegates, SSO key and ExternalAccountId
    erased = sandbox.put(f"/Users/{uid}", {USER_EXT: {"aliases": ["ann@example.nl"]}}).json()
    assert erased[USER_EXT] == {"aliases": ["ann@example.nl"], "delegates": []}
    assert "SsoAccountKey" not in sandbox.state()["users"][0]
    assert sandbox.put(f"/Users/{uid}", {USER_EXT: {}}).json()[USER_EXT] == {"aliases": [], "delegates": []}
    renamed = sandbox.put(f"/Users/{uid}", {"userName": "ann.new@example.com", "name": {"formatted": "Ann New"},
                                             "active": "True", "phoneNumbers": [{"value": "+31612345678"}]}).json()
    assert (renamed["userName"], renamed["name"]["formatted"], renamed["active"]) == ("ann.new@example.com", "Ann New", True)
    assert renamed["phoneNumbers"] == [{"value": "+31612345678"}]
    assert sandbox.get(f"/Users/{uid}").json() == renamed


def test_sso_key_is_stored_but_never_returned(sandbox):
    uid = sandbox.create_user("ann@example.com", SsoAccountKey="secret-sso")["id"]
    put = sandbox.put(f"/Users/{uid}", {USER_EXT: {"aliases": [], "delegates": [], "SsoAccountKey": "secret-sso-2"}})
    for response in (put, sandbox.get(f"/Users/{uid}"), sandbox.get("/Users"),
                     sandbox.get("/Users", params={"filter": 'userName eq "ann@example.com"'})):
        assert b"secret-sso" not in response.content and b"SsoAccountKey" not in response.content
    assert sandbox.state()["users"][0]["SsoAccountKey"] == "secret-sso-2"


def test_put_user_checks_addresses_and_aliases(sandbox):
    ann = sandbox.create_user("ann@example.com", aliases=["ann@example.nl"])
    bob = sandbox.create_user("bob@example.com", aliases=["bobby@example.com"])
    desk = sandbox.create_group("desk@example.com")
    uid = ann["id"]
    for address, status in (("bob@example.com", 409), ("bobby@example.com", 409), ("desk@example.com", 400),
                            ("ann@elsewhere.org", 400)):
        response = sandbox.put(f"/Users/{uid}", {"userName": address})
        assert response.status_code == status, address
        assert response.content == b"" if status == 409 else response.json() == OUTSIDE
    not_owned = sandbox.put(f"/Users/{uid}", {USER_EXT: {"aliases": ["ann@example.nl", "ann@elsewhere.org"]}})
    assert not_owned.json() == {"code": 400, "message": "Error creating alias: Domain Not Owned"}
    taken = sandbox.put(f"/Users/{uid}", {USER_EXT: {"aliases": ["bobby@example.com"]}})
    assert taken.json() == {"code": 400, "message": f"Error creating alias: Alias is already taken for {bob['id']}"}
    taken = sandbox.put(f"/Users/{uid}", {USER_EXT: {"aliases": ["desk@example.com"]}})
    assert taken.json()["message"] == f"Error creating alias: Alias is already taken for {desk['id']}"
    assert sandbox.get(f"/Users/{uid}").json() == ann  # nothing changed
    # a rename to its own alias, dropping the alias and keeping the old address as one (reference §6.3)
    renamed = sandbox.put(f"/Users/{uid}", {"userName": "ann@example.nl",
                                             USER_EXT: {"aliases": ["ann@example.com"], "delegates": []}})
    assert renamed.status_code == 200, renamed.text
    assert sandbox.get("/Users", params={"filter": 'userName eq "ann@example.nl"'}).json()["totalResults"] == 1
    assert sandbox.post("/Users", {"userName": "ann@example.com"}).status_code == 409  # still hers, as an alias


def test_delete_user_and_its_memberships(sandbox):
    ann = sandbox.create_user("ann@example.com")
    bob = sandbox.create_user("bob@example.com")
    desk = sandbox.create_group("desk@example.com", [ann["id"], bob["id"]])
    deleted = sandbox.request("DELETE", f"/Users/{ann['id']}")
    assert deleted.status_code == 204 and deleted.content == b""
    assert sandbox.get(f"/Users/{ann['id']}").status_code == 400
    assert sandbox.get(f"/Groups/{desk['id']}").json()["members"] == [{"value": bob["id"]}]
    assert sandbox.create_user("ann@example.com")["id"] != ann["id"]  # the address is free again


# -- groups (functional accounts) ---------------------------------------------------


def test_create_group_shape_and_refusals(sandbox):
    ann = sandbox.create_user("ann@example.com")
    response = sandbox.post("/Groups", {"externalId": "desk@example.com", "displayName": "Service Desk",
                                        "members": [{"value": ann["id"]}], GROUP_EXT: {"aliases": ["help@example.nl"]}})
    assert response.status_code == 201
    desk = response.json()
    gid = desk["id"]
    assert desk["externalId"] == "desk@example.com" and desk["displayName"] == "Service Desk"
    assert desk["members"] == [{"value": ann["id"]}]
    assert desk["meta"]["location"] == f"/scim/v2/Groups/{gid}" and desk["meta"]["resourceType"] == "Group"
    assert desk["schemas"] == ["urn:ietf:params:scim:schemas:core:2.0:Group", GROUP_EXT, ENTERPRISE]
    assert desk[ENTERPRISE] == {"division": "/"} and desk[GROUP_EXT] == {"aliases": ["help@example.nl"]}
    assert sandbox.get(f"/Groups/{gid}").json() == desk
    for address in ("DESK@example.com", "help@example.nl", "ann@example.com", "desk@elsewhere.org"):
        refused = sandbox.post("/Groups", {"externalId": address, "displayName": "X"})
        assert (refused.status_code, refused.json()) == (400, OUTSIDE), address
    unknown = sandbox.post("/Groups", {"externalId": "team@example.com", "members": [{"value": "not-a-uuid"}]})
    assert unknown.json() == {"code": 400, "message": "Unknown in set"}
    not_owned = sandbox.post("/Groups", {"externalId": "team@example.com", GROUP_EXT: {"aliases": ["t@elsewhere.org"]}})
    assert not_owned.json() == {"code": 400, "message": "Error creating alias: Domain Not Owned"}
    taken = sandbox.post("/Groups", {"externalId": "team@example.com", GROUP_EXT: {"aliases": ["ann@example.com"]}})
    assert taken.json() == {"code": 400, "message": f"Error creating alias: Alias is already taken for {ann['id']}"}
    team = sandbox.create_group("team@example.com", [gid])  # a member may be a group, as in Zivver's model
    assert team["members"] == [{"value": gid}]


def test_put_group_ignores_empty_members_and_patch_empties_them(sandbox):
    ann, bob = sandbox.create_user("ann@example.com"), sandbox.create_user("bob@example.com")
    gid = sandbox.create_group("desk@example.com", [ann["id"]], aliases=["help@example.com"])["id"]
    replaced = sandbox.put(f"/Groups/{gid}", {"members": [{"value": bob["id"]}], "displayName": "Desk 2"})
    assert replaced.status_code == 200 and replaced.json()["members"] == [{"value": bob["id"]}]
    assert replaced.json()["displayName"] == "Desk 2" and replaced.json()[GROUP_EXT] == {"aliases": ["help@example.com"]}
    ignored = sandbox.put(f"/Groups/{gid}", {"members": []})  # the backend bug Zivver keeps
    assert ignored.status_code == 200 and ignored.json()["members"] == [{"value": bob["id"]}]
    missing = sandbox.put(f"/Groups/{gid}", {"members": [{"value": bob["id"]}, {"value": "nobody"}]})
    assert missing.json() == {"code": 400, "message": "Error creating member: Member Not Found"}
    aliased = sandbox.put(f"/Groups/{gid}", {GROUP_EXT: {"aliases": ["desk@example.nl"]}}).json()
    assert aliased[GROUP_EXT] == {"aliases": ["desk@example.nl"]} and aliased["members"] == [{"value": bob["id"]}]
    assert sandbox.put(f"/Groups/{gid}", {GROUP_EXT: {"aliases": ["x@elsewhere.org"]}}).json()["message"] == \
        "Error creating alias: Domain Not Owned"
    assert sandbox.put(f"/Groups/{gid}", {GROUP_EXT: {"aliases": ["ann@example.com"]}}).json()["message"] == \
        f"Error creating alias: Alias is already taken for {ann['id']}"
    assert sandbox.put(f"/Groups/{gid}", {"externalId": "ann@example.com"}).json() == OUTSIDE

    json_patch = sandbox.patch(f"/Groups/{gid}", content_type="application/json")
    assert (json_patch.status_code, json_patch.json()) == (415, {"code": 415, "message": "HTTP 415 Unsupported Media Type"})
    wrong_accept = sandbox.patch(f"/Groups/{gid}", Accept="application/json")
    assert wrong_accept.status_code == 406 and wrong_accept.json()["code"] == 406
    for operations in ([{"op": "replace", "path": "members", "value": []}], [{"op": "remove", "path": "aliases"}], []):
        unsupported = sandbox.patch(f"/Groups/{gid}", orjson.dumps({"Operations": operations}))
        assert unsupported.json() == {"code": 400, "message": "Unsupported operation"}, operations
    assert sandbox.patch(f"/Groups/{gid}", b"[1, 2]").json() == {"code": 400, "message": "Unsupported operation"}
    assert sandbox.get(f"/Groups/{gid}").json()["members"] == [{"value": bob["id"]}]
    emptied = sandbox.patch(f"/Groups/{gid}", Accept=SCIM_JSON)
    assert emptied.status_code == 200 and emptied.json()["members"] == []
    assert emptied.headers["Content-Type"] == SCIM_JSON
    assert sandbox.patch(f"/Groups/{gid}").status_code == 200  # no Accept header (requests sends */*) works too
    deleted = sandbox.request("DELETE", f"/Groups/{gid}")
    assert deleted.status_code == 204 and sandbox.get(f"/Groups/{gid}").status_code == 400


def test_a_user_never_becomes_a_group_or_back(sandbox):
    ann = sandbox.create_user("ann@example.com")
    desk = sandbox.create_group("desk@example.com")
    attempts = [
        sandbox.post("/Groups", {"externalId": "ann@example.com", "displayName": "Ann"}),
        sandbox.post("/Users", {"userName": "desk@example.com"}),
        sandbox.put(f"/Groups/{ann['id']}", {"displayName": "Ann"}),
        sandbox.put(f"/Users/{desk['id']}", {"active": True}),
        sandbox.patch(f"/Groups/{ann['id']}"),
        sandbox.request("DELETE", f"/Users/{desk['id']}"),
        sandbox.request("DELETE", f"/Groups/{ann['id']}"),
        sandbox.put(f"/Users/{ann['id']}", {"userName": "desk@example.com"}),
    ]
    assert [(a.status_code, a.json()) for a in attempts] == [(400, OUTSIDE)] * len(attempts)
    assert sandbox.get(f"/Users/{ann['id']}").json() == ann and sandbox.get(f"/Groups/{desk['id']}").json() == desk


def test_routing_methods_and_content_types(sandbox):
    uid = sandbox.create_user("ann@example.com")["id"]
    assert sandbox.get("/Nothing").json() == {"code": 404, "message": "HTTP 404 Not Found"}
    assert requests.get(sandbox.root + "/elsewhere", timeout=10).status_code == 404
    assert sandbox.get("/Users/").status_code == 404
    assert sandbox.request("PATCH", f"/Users/{uid}", data=b"{}", headers={"Content-Type": SCIM_JSON}).status_code == 405
    assert sandbox.request("DELETE", "/Users").status_code == 405
    assert sandbox.get("/Users", headers={"Accept": "text/html"}).status_code == 406
    scim = sandbox.get(f"/Users/{uid}", headers={"Accept": SCIM_JSON})
    assert scim.status_code == 200 and scim.headers["Content-Type"] == SCIM_JSON
    assert sandbox.get(f"/Users/{uid}").headers["Content-Type"] == "application/json"
    put = sandbox.request("PUT", f"/Users/{uid}", data=b'{"active": false}',
                          headers={"Content-Type": f"{SCIM_JSON}; charset=utf-8"})
    assert put.status_code == 200 and put.json()["active"] is False


def test_many_requests_on_one_keep_alive_connection(sandbox):
    host, port = sandbox.root.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    connection.request("GET", "/api/scim/v2/Users", headers=headers)
    assert connection.getresponse().read()
    first = connection.sock
    for n in range(40):
        body = orjson.dumps({"userName": f"u{n}@example.com"}) if n % 2 else None
        connection.request("POST" if body else "GET", "/api/scim/v2/Users", body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        assert response.status == (201 if body else 200)
        assert connection.sock is first  # never closed, never reopened
    connection.request("DELETE", "/api/scim/v2/Users/unknown", headers=headers)
    assert connection.getresponse().read() and connection.sock is first
    connection.close()


# -- seeding and persistence ----------------------------------------------------------


def test_seed_from_an_accounts_stream(start, tmp_path):
    seed = write_stream(tmp_path / "current.jsonl", "accounts", [
        account("ann@example.com", name="Ann", aliases=["ann@example.nl"], delegates=["bob@example.com"],
                sso_key="sso-ann", zivver_id="11111111-1111-4111-8111-111111111111", phone="+31612345678"),
        account("bob@example.com", name="Bob", active=False, external_account_id="ext-bob"),
        account("desk@example.com", kind="functional", name="Desk", aliases=["help@example.com"],
                delegates=["ann@example.com", "bob@example.com", "ghost@example.com"]),
    ])
    started = start("--seed", seed)
    users = {u["userName"]: u for u in started.get("/Users").json()["Resources"]}
    ann, bob = users["ann@example.com"], users["bob@example.com"]
    assert ann["id"] == "11111111-1111-4111-8111-111111111111" and ann["active"] is True
    assert ann[USER_EXT] == {"aliases": ["ann@example.nl"], "delegates": ["bob@example.com"]}
    assert ann["phoneNumbers"] == [{"value": "+31612345678"}] and ann["name"] == {"formatted": "Ann"}
    assert bob["active"] is False and bob[USER_EXT]["ExternalAccountId"] == "ext-bob"
    (desk,) = started.get("/Groups").json()["Resources"]
    assert desk["externalId"] == "desk@example.com" and desk["displayName"] == "Desk"
    assert desk["members"] == [{"value": ann["id"]}, {"value": bob["id"]}]
    assert desk[GROUP_EXT] == {"aliases": ["help@example.com"]}
    assert started.state()["users"][0]["SsoAccountKey"] == "sso-ann"
    assert started.post("/Users", {"userName": "help@example.com"}).json() == OUTSIDE
    code, _, stderr = started.stop()
    assert code == 0 and "ghost@example.com" in stderr


def test_a_seed_with_one_address_twice_is_refused(tmp_path):
    seed = write_stream(tmp_path / "seed.jsonl", "accounts", [
        account("ann@example.com", aliases=["shared@example.com"]),
        account("bob@example.com", aliases=["shared@example.com"])])
    done = run("zivsync-sandbox", *CLAIMED, "--seed", seed, env={"ZIVSYNC_ZIVVER_API_KEY": KEY}, timeout=10)
    assert done.returncode == 1 and "shared@example.com" in done.stderr


def test_a_seed_account_outside_the_claimed_domains_is_refused_as_zivver_would(tmp_path):
    """Issue 14: Zivver makes no account or alias outside the organisation's claimed domains (400
    "Account is outside the organization", "Domain Not Owned"): nor does a seed. The error names
    file, line and field; nothing is served."""
    seed = write_stream(tmp_path / "seed.jsonl", "accounts", [
        account("ann@example.com"), account("tim@legacy.example"), account("bob@example.com")])
    done = run("zivsync-sandbox", *CLAIMED, "--seed", seed, env={"ZIVSYNC_ZIVVER_API_KEY": KEY}, timeout=10)
    assert done.returncode == 1 and done.stdout == b""
    assert (f"{seed}:3: email: tim@legacy.example is outside the sandbox's claimed domains (example.com, example.nl)"
            in done.stderr), done.stderr
    alias = write_stream(tmp_path / "alias.jsonl", "accounts", [account("ann@example.com", aliases=["a@legacy.example"])])
    done = run("zivsync-sandbox", *CLAIMED, "--seed", alias, env={"ZIVSYNC_ZIVVER_API_KEY": KEY}, timeout=10)
    assert done.returncode == 1 and f"{alias}:2: aliases: a@legacy.example is outside" in done.stderr


def test_state_persists_across_a_restart(start, tmp_path):
    state_file = tmp_path / "sandbox.json"
    seed = write_stream(tmp_path / "seed.jsonl", "accounts", [account("ann@example.com", name="Ann")])
    first = start("--seed", seed, "--state", state_file)
    assert state_file.exists()  # written at start, from the seed
    ann = first.get("/Users").json()["Resources"][0]
    bob = first.create_user("bob@example.com", SsoAccountKey="sso-bob")
    first.put(f"/Users/{ann['id']}", {"active": False})
    desk = first.create_group("desk@example.com", [bob["id"]])
    saved = orjson.loads(state_file.read_bytes())
    assert [u["userName"] for u in saved["users"]] == ["ann@example.com", "bob@example.com"]
    assert saved["users"][1]["SsoAccountKey"] == "sso-bob"
    if os.name == "posix":
        assert state_file.stat().st_mode & 0o077 == 0  # it holds SSO keys
    assert first.stop()[0] == 0
    assert list(tmp_path.glob(".sandbox.json.*")) == []  # no temporary files left behind

    second = start("--seed", seed, "--state", state_file)  # the state file wins over the seed
    assert second.get(f"/Users/{ann['id']}").json()["active"] is False
    assert second.get(f"/Groups/{desk['id']}").json()["members"] == [{"value": bob["id"]}]
    assert second.state()["users"][1]["SsoAccountKey"] == "sso-bob"
    assert second.post("/Users", {"userName": "bob@example.com"}).status_code == 409


def test_a_broken_state_file_is_refused(tmp_path):
    state_file = tmp_path / "sandbox.json"
    state_file.write_text("{not json")
    done = run("zivsync-sandbox", *CLAIMED, "--state", state_file, env={"ZIVSYNC_ZIVVER_API_KEY": KEY}, timeout=10)
    assert done.returncode == 1 and "sandbox.json" in done.stderr and "Traceback" not in done.stderr


# -- rate limit -----------------------------------------------------------------------


def test_rate_limit_answers_429_with_zivvers_body_and_retry_after(start):
    started = start("--rate-limit", "5", "--rate-window", "5")  # 5 at once, then one a second
    began = time.monotonic()
    responses = [started.get("/Users") for _ in range(10)]
    assert time.monotonic() - began < 1.0
    throttled = [r for r in responses if r.status_code == 429]
    assert len(throttled) >= 5 and all(r.status_code == 200 for r in responses[:5])
    for response in throttled:
        assert response.json() == {
            "code": 429, "message": "Too Many Requests",
            "emptiedBucketDetails": {"limiterId": "cab", "budget": 5, "windowSeconds": 5},
            "reference": "https://tools.ietf.org/html/draft-polli-ratelimit-headers-02"}
        assert 1 <= int(response.headers["Retry-After"]) <= 5
    assert all(started.stats()["requests"] for _ in range(20))  # the control surface is not limited
    time.sleep(int(throttled[-1].headers["Retry-After"]))
    assert started.get("/Users").status_code == 200
    stats = started.stats()
    assert stats["throttled"] == len(throttled) and stats["requests"] == 11 and stats["by_method"] == {"GET": 11}
    assert started.control("POST", "stats/reset").json() == \
        {"requests": 0, "by_method": {}, "writes": 0, "throttled": 0, "faults": 0}


def test_token_bucket():
    now = [0.0]
    bucket = TokenBucket(50, 10, clock=lambda: now[0])
    assert [bucket.take() for _ in range(50)] == [0.0] * 50
    assert bucket.take() == pytest.approx(0.2)  # 5 tokens a second
    now[0] += 0.2
    assert bucket.take() == 0.0 and bucket.take() > 0
    now[0] += 100
    assert sum(bucket.take() == 0.0 for _ in range(60)) == 50  # never more than the capacity
    assert TokenBucket(0, 10).take() == 0.0  # 0: no limit


# -- faults -------------------------------------------------------------------------------


def test_fail_rate_answers_500_and_changes_nothing(start):
    started = start("--fail-rate", "1", "--fault-seed", "7")
    response = started.post("/Users", {"userName": "ann@example.com"})
    assert response.status_code == 500 and response.json()["code"] == 500
    assert started.get("/Users").status_code == 500
    assert started.state()["users"] == []
    assert started.stats()["faults"] == 2 and started.stats()["writes"] == 0


def test_drop_rate_closes_the_connection_and_changes_nothing(start):
    started = start("--drop-rate", "1", "--fault-seed", "7")
    with pytest.raises(requests.ConnectionError):
        started.post("/Users", {"userName": "ann@example.com"})
    with pytest.raises(requests.ConnectionError):
        started.get("/Users")
    assert started.state()["users"] == [] and started.stats()["faults"] == 2


def test_drop_after_write_applies_the_write_then_closes_the_connection(start):
    started = start("--drop-after-write-rate", "1", "--fault-seed", "7")
    with pytest.raises(requests.ConnectionError):
        started.post("/Users", {"userName": "ann@example.com", "name": {"formatted": "Ann"}})
    listed = started.get("/Users")  # reads are not dropped
    assert listed.status_code == 200 and [u["userName"] for u in listed.json()["Resources"]] == ["ann@example.com"]
    uid = listed.json()["Resources"][0]["id"]
    with pytest.raises(requests.ConnectionError):
        started.put(f"/Users/{uid}", {"active": False})
    assert started.get(f"/Users/{uid}").json()["active"] is False
    stats = started.stats()
    assert stats["writes"] == 2 and stats["faults"] == 2


def test_faults_are_reproducible_with_a_seed(start):
    def statuses(sandbox: Sandbox) -> list[int]:
        return [sandbox.get("/Users").status_code for _ in range(12)]

    first = statuses(start("--fail-rate", "0.5", "--fault-seed", "42"))
    assert set(first) == {200, 500}
    assert statuses(start("--fail-rate", "0.5", "--fault-seed", "42")) == first


def test_latency_delays_api_requests_only(start):
    started = start("--latency", "300")
    began = time.monotonic()
    assert started.get("/Users").status_code == 200
    assert time.monotonic() - began >= 0.3
    began = time.monotonic()
    started.stats()
    assert time.monotonic() - began < 0.3


def test_state_rules_are_plain_python():
    from stages.zivver.sandbox_server import ScimError, State

    state = State(["example.com"], today=lambda: "2026-01-01")
    ann = state.create_user({"userName": "ann@example.com", USER_EXT: {"aliases": ["a@example.com"]}})
    assert ann["meta"]["created"] == "2026-01-01" and state.owners == {"ann@example.com": ann["id"], "a@example.com": ann["id"]}
    with pytest.raises(ScimError) as refused:
        state.create_group({"externalId": "a@example.com"})
    assert (refused.value.status, refused.value.message) == (400, "Account is outside the organization")
    state.replace_user(ann["id"], {"userName": "a@example.com", USER_EXT: {"aliases": []}})
    assert state.owners == {"a@example.com": ann["id"]}  # the old address is free once given up
    state.delete("User", ann["id"])
    assert state.resources == {} and state.owners == {}


def test_a_listing_page_costs_what_is_on_it(monkeypatch):
    """Issue 18: paging through N accounts renders each once (the listing used to render all N
    for every page: 50 s for a 100,000-account snapshot); pages stay right across a create and a
    delete, and a filter finds its account without a scan."""
    from stages.zivver import sandbox_server
    from stages.zivver.sandbox_server import USER, State

    state = State(["example.com"], today=lambda: "2026-01-01")
    made = [state.create_user({"userName": f"u{n:04d}@example.com"})["id"] for n in range(1000)]
    state.create_group({"externalId": "desk@example.com"})
    rendered = []
    monkeypatch.setattr(sandbox_server, "render", lambda r: rendered.append(r["id"]) or r)
    pages = [state.list(USER, None, first, 100) for first in range(1, 1001, 100)]
    assert {total for total, _ in pages} == {1000} and len(rendered) == 1000
    assert [r["id"] for _, page in pages for r in page] == made
    state.delete(USER, made[0])
    state.create_user({"userName": "late@example.com"})
    total, page = state.list(USER, None, 991, 100)
    assert total == 1000 and [r["userName"] for r in page][-2:] == ["u0999@example.com", "late@example.com"]
    rendered.clear()
    assert state.list(USER, "U0500@Example.com") == (1, [state.resources[made[500]]]) and len(rendered) == 1
    assert state.list(USER, "desk@example.com") == (0, [])  # a group's address is no user's


def test_the_sandbox_serves_https_as_zivver_does(tmp_path):
    """--tls-cert/--tls-key: the sandbox behind TLS (for revocation and trust-store tests, and
    rehearsals that go through a TLS-inspecting proxy); the client verifies it with --ca-file."""
    import testcerts
    from helpers import Sandbox

    files = testcerts.ca_and_server(tmp_path / "tls", "zivsync sandbox test CA")
    with Sandbox("--tls-cert", files["server_cert"], "--tls-key", files["server_key"],
                 "--seed", write_stream(tmp_path / "seed.jsonl", "accounts", [account("ann@example.com")])) as sandbox:
        assert sandbox.url.startswith("https://127.0.0.1:")
        trusted = run("zivsync-snapshot", "--ca-file", files["ca_file"], "-o", tmp_path / "current.jsonl",
                      env=sandbox.env)
        untrusted = run("zivsync-snapshot", "-o", tmp_path / "refused.jsonl", env=sandbox.env)
    assert trusted.returncode == 0, trusted.stderr
    assert [r["email"] for r in read_jsonl(tmp_path / "current.jsonl") if r["type"] == "account"] == ["ann@example.com"]
    assert untrusted.returncode == 4 and "TLS certificate verification failed" in untrusted.stderr
    assert "issued by CN=zivsync sandbox test CA" in untrusted.stderr
