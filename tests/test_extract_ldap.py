"""zivsync-extract-ldap against a real Samba AD domain controller (tests/samba_dc.py), seeded
with the edge cases of tests/ad_seed.py; every run is the installed executable as a process."""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from pathlib import Path

import ad_seed
import pytest
from ad_seed import ALUMNI, BULK, CLAIMED, CONSISTENCY_GUID, EXCLUDED, GROUPS, SHARED, STAFF
from conftest import need
from helpers import account, run, sync_into_sandbox, write_stream
from samba_dc import ADMIN_DN, ADMIN_NT, ADMIN_PASSWORD, ADMIN_UPN, BASE_DN

from stages.cli import ExitStatus

PASSWORD_VARIABLE = {"ZIVSYNC_LDAP_PASSWORD": ADMIN_PASSWORD}
NAMED_PEOPLE = 15  # ad_seed.people()


def extract(dc, *args, env=PASSWORD_VARIABLE, url=None, ca=None, expect=ExitStatus.OK):
    done = run("zivsync-extract-ldap", "--url", url or dc.ldaps_url, "--base-dn", BASE_DN,
               "--bind-dn", ADMIN_NT, "--ca-file", ca or dc.tls["ca"], *args, env=env)
    assert done.returncode == expect, done.stderr
    assert ADMIN_PASSWORD not in done.stderr and ADMIN_PASSWORD.encode() not in done.stdout
    return done


def by_dn(records: list[dict]) -> dict[str, dict]:
    return {r["dn"]: r for r in records if r["type"] in ("person", "group")}


def dn(cn: str, ou: str) -> str:
    return f"CN={cn},{ou}"


@pytest.fixture(scope="module")
def everything(samba_dc):
    """One full read of the seeded domain (default options, phone region NL)."""
    done = extract(samba_dc, "--default-region", "NL", "--extra-attribute", "extensionAttribute1")
    return done.records


# -- what is read ---------------------------------------------------------------------------------


def test_stream_is_complete_and_valid(everything, samba_dc, tmp_path):
    assert everything[0]["type"] == "header" and everything[0]["stream"] == "directory"
    assert everything[0]["source"]["url"] == samba_dc.ldaps_url
    end = everything[-1]
    assert {k: v for k, v in end.items() if k != "tally"} == {"type": "end", "count": len(everything) - 2}
    assert sum(n for what, n in end["tally"].items() if what.endswith(" records")) == end["count"]
    path = tmp_path / "ldap.jsonl"
    path.write_bytes(b"".join(__import__("orjson").dumps(r) + b"\n" for r in everything))
    assert run("zivsync-validate", path).returncode == 0


def test_a_user_mailbox_with_utf8_names_addresses_and_phone(everything):
    jurgen = by_dn(everything)[dn("Jürgen Weiß", STAFF)]
    assert uuid.UUID(jurgen["anchor"]) and jurgen["sso_key"] == jurgen["anchor"]
    assert jurgen["display_name"] == "Jürgen Weiß" and jurgen["given_name"] == "Jürgen" and jurgen["surname"] == "Weiß"
    assert jurgen["mail"] == "juergen.weiss@corp.example.test"
    # primary first, secondaries in and out of the claimed domains, no X500
    assert jurgen["addresses"] == ["juergen.weiss@corp.example.test", "j.weiss@corp.example.test", "jw@other.example"]
    assert jurgen["phone"] == "+31201234567"  # "020 123 4567" in region NL
    assert jurgen["enabled"] is True and jurgen["mailbox"] == "user"
    assert jurgen["upn"] == "j.weiss@corp.example.test" and jurgen["sam_account_name"] == "j.weiss"
    assert re.fullmatch(r"S-1-5-21-\d+-\d+-\d+-\d+", jurgen["sid"])
    assert set(jurgen["groups"]) == {dn("GG-Level1", GROUPS), dn("DL-Sales", GROUPS)}
    assert jurgen["extra"] == {"extensionAttribute1": "EMP-0042"}


def test_mailbox_kinds_disabled_users_and_people_without_mail(everything):
    people = by_dn(everything)
    kind = {cn: people[dn(cn, ou)]["mailbox"] for cn, ou in [
        ("Info", SHARED), ("Finance", SHARED), ("Room Amstel", SHARED), ("Beamer 1", SHARED),
        ("Rita Remote", STAFF), ("Mark Mailuser", STAFF), ("Nora Nomail", STAFF), ("王小明", STAFF)]}
    assert kind == {"Info": "shared", "Finance": "shared", "Room Amstel": "room", "Beamer 1": "equipment",
                    "Rita Remote": "user", "Mark Mailuser": "none", "Nora Nomail": "none", "王小明": "user"}
    assert people[dn("Dirk Disabled", STAFF)]["enabled"] is False
    assert people[dn("Info", SHARED)]["enabled"] is False  # shared mailboxes are disabled users
    nora = people[dn("Nora Nomail", STAFF)]
    assert nora["mail"] is None and nora["addresses"] == []
    assert people[dn("Chloé Dubois", STAFF)]["phone"] == "+33612345678"  # mobile first; telephoneNumber is junk


def test_consistency_guid_is_the_anchor_when_set(everything):
    conny = by_dn(everything)[dn("Conny Consistent", STAFF)]
    assert conny["anchor"] == str(CONSISTENCY_GUID)
    assert conny["sso_key"] != conny["anchor"]  # the SSO key stays objectGUID by default


def test_groups_security_distribution_members_and_the_big_one(everything):
    records = by_dn(everything)
    sales = records[dn("DL-Sales", GROUPS)]
    assert sales["security_enabled"] is False and sales["mail_enabled"] is True
    assert sales["addresses"] == ["sales@corp.example.test", "verkoop@corp.example.nl", "sales@other.example"]
    assert set(sales["members"]) == {dn("Jürgen Weiß", STAFF), dn("GG-Level3", GROUPS)}
    assert records[dn("GG-Level1", GROUPS)]["security_enabled"] is True
    assert set(records[dn("GG-CycleB", GROUPS)]["members"]) == {dn("Rita Remote", STAFF), dn("GG-CycleA", GROUPS)}
    bulk = records[dn("GG-Bulk", GROUPS)]
    assert len(bulk["members"]) == 1600 and len(set(bulk["members"])) == 1600
    assert all(m.endswith("," + BULK) for m in bulk["members"])


def test_every_user_is_read_once_in_pages(samba_dc):
    done = extract(samba_dc, "--page-size", "100", "-v")
    people = [r for r in done.records if r["type"] == "person"]
    assert len(people) == len({p["anchor"] for p in people}) >= 2500 + NAMED_PEOPLE
    assert sum(1 for p in people if p["dn"].endswith(BULK)) == 2500
    pages = re.findall(r"page (\d+): (\d+) entries", done.stderr)
    assert len(pages) >= 26 and all(int(size) <= 100 for _, size in pages)  # it really paged
    # --verbose shows the search as an ldapsearch command line, without the password
    assert "ldapsearch -H " + samba_dc.ldaps_url in done.stderr and " -W " in done.stderr
    assert "-E pr=100/noprompt '(&(objectCategory=person)(objectClass=user))'" in done.stderr


# -- scope ----------------------------------------------------------------------------------------


def people_names(records) -> set[str]:
    """The seeded people read, bulk users aside (and the domain's own accounts, in CN=Users)."""
    return {r["display_name"] for r in records
            if r["type"] == "person" and r["dn"].endswith(ad_seed.ROOT) and not r["dn"].endswith(BULK)}


def test_excluded_and_included_ous(samba_dc):
    excluded = extract(samba_dc, "--exclude-ou", EXCLUDED, "--exclude-ou", BULK).records
    assert "Eve Excluded" not in people_names(excluded)
    assert not any(r["dn"].endswith(BULK) for r in excluded if r["type"] == "person")
    included = extract(samba_dc, "--include-ou", SHARED, "--include-ou", STAFF).records
    assert people_names(included) == {p["displayName"] for p in ad_seed.people()} - {"Eve Excluded"}
    assert any(r["type"] == "group" for r in included)  # groups come from the whole base DN


def test_nested_group_membership_three_deep_and_a_cycle(samba_dc):
    level1 = extract(samba_dc, "--include-group", dn("GG-Level1", GROUPS)).records
    assert people_names(level1) == {"Jürgen Weiß", "Chloé Dubois", "王小明", "Dirk Disabled"}
    without = extract(samba_dc, "--include-group", dn("GG-Level1", GROUPS),
                      "--exclude-group", dn("GG-Level2", GROUPS)).records
    assert people_names(without) == {"Jürgen Weiß"}
    cycle = extract(samba_dc, "--include-group", dn("GG-CycleA", GROUPS)).records
    assert people_names(cycle) == {"Mark Mailuser", "Rita Remote"}


def test_extra_filter_with_values_escaped(samba_dc):
    disabled = extract(samba_dc, "--filter", "(userAccountControl:1.2.840.113556.1.4.803:=2)",
                       "--exclude-ou", SHARED).records
    assert people_names(disabled) == {"Dirk Disabled"}
    # a group DN with characters that mean something in a filter is escaped, not interpreted
    odd_group = "CN=Odd (group*) one\\, really," + GROUPS
    connection = samba_dc.connect()
    try:
        connection.add(odd_group, ["top", "group"], {"sAMAccountName": "odd-group",
                                                     "member": [dn("Mo Mover", STAFF)]})
        odd = extract(samba_dc, "--include-group", odd_group).records
        assert people_names(odd) == {"Mo Mover"}
    finally:
        connection.delete(odd_group)
        connection.unbind()
    missing = extract(samba_dc, "--include-group", "CN=GG-Levle1," + GROUPS, expect=ExitStatus.ERROR)
    assert "no such group: CN=GG-Levle1" in missing.stderr and missing.stdout == b""


def test_sso_key_from_another_attribute(samba_dc):
    done = extract(samba_dc, "--sso-key-attribute", "extensionAttribute1", "--exclude-ou", BULK)
    keys = {r["display_name"]: r["sso_key"] for r in done.records if r["type"] == "person"}
    assert keys["Jürgen Weiß"] == "EMP-0042" and keys["Chloé Dubois"] is None
    done = extract(samba_dc, "--sso-key-attribute", "userPrincipalName", "--exclude-ou", BULK)
    assert {r["sso_key"] for r in done.records if r.get("display_name") == "Chloé Dubois"} == {
        "c.dubois@corp.example.test"}


def test_a_user_moved_between_ous_keeps_its_anchor(samba_dc):
    before = by_dn(extract(samba_dc, "--include-ou", STAFF).records)[dn("Mo Mover", STAFF)]
    connection = samba_dc.connect()
    try:
        connection.modify_dn(dn("Mo Mover", STAFF), "CN=Mo Mover", new_superior=ALUMNI)
        after = by_dn(extract(samba_dc).records)[dn("Mo Mover", ALUMNI)]
        assert after["anchor"] == before["anchor"] and after["mail"] == before["mail"]
        assert dn("Mo Mover", STAFF) not in by_dn(extract(samba_dc, "--include-ou", STAFF).records)
    finally:
        connection.modify_dn(dn("Mo Mover", ALUMNI), "CN=Mo Mover", new_superior=STAFF)
        connection.unbind()


# -- connecting -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bind", [ADMIN_DN, ADMIN_UPN, ADMIN_NT], ids=["dn", "upn", "domain-user"])
def test_simple_bind_as_dn_upn_or_domain_user(samba_dc, bind, tmp_path):
    secret = tmp_path / "password"
    secret.write_text(ADMIN_PASSWORD + "\n")
    done = run("zivsync-extract-ldap", "--url", samba_dc.ldaps_url, "--base-dn", BASE_DN, "--bind-dn", bind,
               "--password-file", secret, "--ca-file", samba_dc.tls["ca"], "--include-ou", SHARED)
    assert done.returncode == 0, done.stderr
    assert people_names(done.records) == {"Info", "Finance", "Room Amstel", "Beamer 1"}


def test_starttls_verifies_and_plain_ldap_needs_its_option(samba_dc):
    starttls = extract(samba_dc, "--include-ou", SHARED, "-v", url=samba_dc.ldap_url)
    assert len(people_names(starttls.records)) == 4 and "ldapsearch -H " + samba_dc.ldap_url + " -ZZ" in starttls.stderr
    plain = extract(samba_dc, "--include-ou", SHARED, "--allow-plain-ldap", url=samba_dc.ldap_url)
    assert len(people_names(plain.records)) == 4 and "unencrypted" in plain.stderr


def test_the_next_domain_controller_is_tried_when_one_is_down(samba_dc):
    down = "ldaps://127.0.0.1:1"
    done = run("zivsync-extract-ldap", "--url", down, "--url", samba_dc.ldaps_url, "--base-dn", BASE_DN,
               "--bind-dn", ADMIN_NT, "--ca-file", samba_dc.tls["ca"], "--include-ou", SHARED,
               env=PASSWORD_VARIABLE)
    assert done.returncode == 0, done.stderr
    assert f"{down} is not reachable" in done.stderr and "trying the next one" in done.stderr
    assert done.records[0]["source"]["url"] == samba_dc.ldaps_url


def test_unreachable(samba_dc):
    done = extract(samba_dc, url="ldaps://127.0.0.1:1", expect=ExitStatus.UNREACHABLE)
    assert "no domain controller reachable: ldaps://127.0.0.1:1" in done.stderr and done.stdout == b""


def test_tls_verification_failure(samba_dc):
    done = extract(samba_dc, ca=samba_dc.tls["other_ca"], expect=ExitStatus.UNREACHABLE)
    assert "TLS certificate verification failed" in done.stderr and "--ca-file" in done.stderr
    assert "the server presented CN=dc1.corp.example.test, issued by CN=zivsync test CA" in done.stderr
    assert f"checked against the CA file {samba_dc.tls['other_ca']}" in done.stderr
    assert done.stdout == b""
    starttls = extract(samba_dc, ca=samba_dc.tls["other_ca"], url=samba_dc.ldap_url, expect=ExitStatus.UNREACHABLE)
    assert "TLS certificate verification failed" in starttls.stderr


def test_wrong_password(samba_dc):
    done = extract(samba_dc, env={"ZIVSYNC_LDAP_PASSWORD": "not-the-password-42"}, expect=ExitStatus.UNREACHABLE)
    assert f"invalid credentials for {ADMIN_NT}" in done.stderr and done.stdout == b""
    assert "not-the-password-42" not in done.stderr


def test_base_dn_not_found(samba_dc):
    done = run("zivsync-extract-ldap", "--url", samba_dc.ldaps_url, "--base-dn", "OU=Nowhere," + BASE_DN,
               "--bind-dn", ADMIN_NT, "--ca-file", samba_dc.tls["ca"], env=PASSWORD_VARIABLE)
    assert done.returncode == ExitStatus.UNREACHABLE
    assert "base DN not found: OU=Nowhere," + BASE_DN in done.stderr and done.stdout == b""


def test_no_password_is_a_usage_error_and_never_a_flag(samba_dc):
    done = extract(samba_dc, env={}, expect=ExitStatus.ERROR)
    assert "ZIVSYNC_LDAP_PASSWORD" in done.stderr
    assert "--password " not in run("zivsync-extract-ldap", "--help").stdout.decode()


# -- LDIF exports give the same records -----------------------------------------------------------


def export_ldif(dc, path: Path, tmp_path: Path) -> Path:
    """What an administrator exports with OpenLDAP's ldapsearch (folded at 76 columns, binary
    values in base64), for the attributes extract-ldap reads."""
    need(bool(shutil.which("ldapsearch")), "ldapsearch (ldap-utils)", "scripts/install-test-deps.sh installs it")
    from stages.sources.activedirectory import GROUP_ATTRIBUTES, PERSON_ATTRIBUTES
    secret = tmp_path / "ldapsearch-password"
    secret.write_text(ADMIN_PASSWORD)
    secret.chmod(0o600)
    attributes = sorted({*PERSON_ATTRIBUTES, *GROUP_ATTRIBUTES, "mobile", "telephoneNumber", "extensionAttribute1"})
    with path.open("wb") as out:
        subprocess.run(["ldapsearch", "-LLL", "-H", dc.ldaps_url, "-x", "-D", ADMIN_NT, "-y", str(secret),
                        "-b", BASE_DN, "-E", "pr=1000/noprompt", "(|(objectClass=user)(objectClass=group))",
                        *attributes], stdout=out, check=True, env={"LDAPTLS_CACERT": str(dc.tls["ca"])})
    return path


@pytest.fixture(scope="module")
def ldif_export(samba_dc, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ldif")
    return export_ldif(samba_dc, folder / "export.ldif", folder)


def comparable(records: list[dict]) -> list[dict]:
    return sorted((r for r in records if r["type"] not in ("header", "end")),
                  key=lambda r: (r["type"], r.get("anchor") or r.get("id")))


SCOPES = {
    "everything": ("--default-region", "NL", "--extra-attribute", "extensionAttribute1"),
    "scoped": ("--include-ou", STAFF, "--include-ou", BULK, "--exclude-ou", EXCLUDED,
               "--include-group", dn("GG-Level1", GROUPS), "--include-group", dn("GG-Bulk", GROUPS),
               "--exclude-group", dn("GG-Level3", GROUPS)),
    "filtered": ("--filter", "(|(userAccountControl:1.2.840.113556.1.4.803:=2)(displayName=Jürgen*))",
                 "--group-filter", "(mail=*)", "--sso-key-attribute", "userPrincipalName"),
}


@pytest.mark.parametrize("scope", SCOPES, ids=list(SCOPES))
def test_ldif_export_gives_the_same_records_as_the_live_read(samba_dc, ldif_export, scope):
    live = extract(samba_dc, *SCOPES[scope]).records
    offline = run("zivsync-extract-ldap", "--ldif", ldif_export, "--base-dn", BASE_DN, *SCOPES[scope])
    assert offline.returncode == 0, offline.stderr
    assert comparable(offline.records) == comparable(live)
    assert len(comparable(live)) > (10 if scope != "filtered" else 2)
    assert offline.records[0]["source"]["ldif"] == str(ldif_export)


def test_ldif_in_utf16_as_ldifde_writes_it(samba_dc, ldif_export, tmp_path):
    utf16 = tmp_path / "export-utf16.ldf"
    text = ldif_export.read_text(encoding="utf-8").replace("\n", "\r\n")
    utf16.write_bytes(b"\xff\xfe" + text.encode("utf-16-le"))
    plain = run("zivsync-extract-ldap", "--ldif", ldif_export, "--base-dn", BASE_DN)
    wide = run("zivsync-extract-ldap", "--ldif", utf16, "--base-dn", BASE_DN)
    assert wide.returncode == 0, wide.stderr
    assert comparable(wide.records) == comparable(plain.records)


def test_broken_ldif_names_file_and_line(tmp_path):
    broken = tmp_path / "broken.ldif"
    broken.write_text(f"dn: CN=A,{BASE_DN}\nobjectClass: user\nobjectGUID:: not base64!\n")
    done = run("zivsync-extract-ldap", "--ldif", broken, "--base-dn", BASE_DN)
    assert done.returncode == ExitStatus.ERROR
    assert f"{broken}, line 3" in done.stderr


# -- end to end -----------------------------------------------------------------------------------


def test_extract_normalize_diff_push_gives_zivver_the_directory(samba_dc, tmp_path):
    # Zivver already knows Dirk (disabled in AD since) and somebody who left (gone from AD); with
    # only these two managed so far, the percentage limit must allow suspending both
    seed = write_stream(tmp_path / "zivver-before.jsonl", "accounts", [
        account("dirk.disabled@corp.example.test", name="Dirk Disabled", zivver_id="z-dirk"),
        account("left.company@corp.example.test", name="Left Company", zivver_id="z-left")])
    extract(samba_dc, "--exclude-ou", BULK, "--exclude-ou", EXCLUDED, "--default-region", "NL",
            "-o", tmp_path / "ldap.jsonl")
    accounts = sync_into_sandbox([tmp_path / "ldap.jsonl"], CLAIMED, tmp_path, seed=seed,
                                 normalize_args=("--groups-as-functional",),
                                 diff_args=("--max-suspend-percent", "100"))
    assert set(accounts) == {
        "juergen.weiss@corp.example.test", "chloe.dubois@corp.example.test", "xiaoming.wang@corp.example.test",
        "mark.mailuser@corp.example.test", "rita.remote@corp.example.test",
        "dirk.disabled@corp.example.test", "left.company@corp.example.test",
        "conny.consistent@corp.example.test", "mo.mover@corp.example.test", "piet.jansen@corp.example.test",
        "info@corp.example.test",
        "finance@corp.example.test", "sales@corp.example.test", "support@corp.example.test"}
    jurgen = accounts["juergen.weiss@corp.example.test"]
    assert jurgen["name"] == "Jürgen Weiß" and jurgen["aliases"] == ["j.weiss@corp.example.test"]
    assert jurgen["active"] is True and jurgen["kind"] == "user"
    assert accounts["chloe.dubois@corp.example.test"]["aliases"] == ["c.dubois@corp.example.nl"]
    # the user disabled in AD and the leaver are suspended; nobody else is; the excluded OU,
    # rooms, equipment and people without mail stay out
    assert {email for email, a in accounts.items() if not a["active"]} == {
        "dirk.disabled@corp.example.test", "left.company@corp.example.test"}
    assert accounts["info@corp.example.test"]["kind"] == "functional"
    assert accounts["info@corp.example.test"]["aliases"] == ["info@corp.example.nl"]
    # a distribution group as a functional account: its nested members (active ones) are the delegates
    assert accounts["sales@corp.example.test"]["delegates"] == ["juergen.weiss@corp.example.test",
                                                                "xiaoming.wang@corp.example.test"]
    assert accounts["sales@corp.example.test"]["aliases"] == ["verkoop@corp.example.nl"]
    # members by DN, one with an escaped comma in it (CN=Jansen\, Piet,...)
    assert accounts["support@corp.example.test"]["delegates"] == [
        "chloe.dubois@corp.example.test", "mark.mailuser@corp.example.test", "piet.jansen@corp.example.test"]


# -- a read cut off half-way, the config file, Kerberos --------------------------------------------


class CuttingProxy:
    """A TCP relay to the DC that drops both connections after ``limit`` bytes from the server:
    a DC or a network that dies in the middle of a paged read."""

    def __init__(self, target: tuple[str, int], limit: int):
        import socket
        import threading
        self.target, self.limit = target, limit
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        import socket
        import threading
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            sent = [0]

            def pump(source, sink, counted):
                try:
                    while data := source.recv(65536):
                        sink.sendall(data)
                        if counted:
                            sent[0] += len(data)
                            if sent[0] > self.limit:
                                break
                except OSError:
                    pass
                for end in (source, sink):
                    try:
                        end.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    end.close()

            threading.Thread(target=pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=pump, args=(server, client, True), daemon=True).start()

    def close(self):
        self.listener.close()


def test_a_read_cut_off_half_way_ends_the_stream_incomplete(samba_dc, tmp_path):
    proxy = CuttingProxy((samba_dc.address, 636), limit=600_000)
    try:
        # the certificate names localhost too, so TLS is verified through the relay
        done = extract(samba_dc, url=f"ldaps://localhost:{proxy.port}", expect=ExitStatus.UNREACHABLE)
    finally:
        proxy.close()
    records = done.records
    people = [r for r in records if r["type"] == "person"]
    assert 0 < len(people) < 2500  # some pages came, not all
    end = records[-1]
    assert end["type"] == "end" and end["complete"] is False and end["count"] == len(records) - 2
    assert "the read stopped half-way" in end["incomplete_reasons"][0]
    # and downstream it counts as incomplete: diff will not suspend anybody from it
    path = tmp_path / "cut.jsonl"
    path.write_bytes(done.stdout)
    normalized = run("zivsync-normalize", "-i", path, "--claimed-domain", CLAIMED[0])
    assert normalized.returncode == 0 and normalized.records[-1]["complete"] is False


def test_everything_from_a_config_file_and_the_environment(samba_dc, tmp_path):
    config = tmp_path / "zivsync.toml"
    config.write_text(f'''
[extract-ldap]
urls = ["{samba_dc.ldaps_url}"]
base_dn = "{BASE_DN}"
bind_dn = 'CORP\\Administrator'
ca_file = "{samba_dc.tls['ca']}"
include_ous = ["{SHARED}"]
''', encoding="utf-8")
    done = run("zivsync-extract-ldap", "--config", config, env=PASSWORD_VARIABLE)
    assert done.returncode == 0, done.stderr
    assert people_names(done.records) == {"Info", "Finance", "Room Amstel", "Beamer 1"}
    by_environment = run("zivsync-extract-ldap", env={
        **PASSWORD_VARIABLE, "ZIVSYNC_LDAP_URL": samba_dc.ldaps_url, "ZIVSYNC_LDAP_BASE_DN": SHARED,
        "ZIVSYNC_LDAP_BIND_DN": ADMIN_UPN, "ZIVSYNC_LDAP_CA_FILE": str(samba_dc.tls["ca"])})
    assert by_environment.returncode == 0, by_environment.stderr
    assert people_names(by_environment.records) == {"Info", "Finance", "Room Amstel", "Beamer 1"}


def test_kerberos_bind_with_a_ticket(samba_dc):
    import importlib.util
    need(importlib.util.find_spec("gssapi") is not None and bool(shutil.which("kinit")),
         "gssapi and kinit (optional Kerberos support)", "make test installs krb5-user, libkrb5-dev and .[kerberos]")
    from samba_dc import KERBEROS_HOST
    environment = samba_dc.kinit()
    for url in (samba_dc.ldap_url, samba_dc.ldaps_url):  # StartTLS, LDAPS
        done = run("zivsync-extract-ldap", "--kerberos", "--kerberos-host", KERBEROS_HOST, "--url", url,
                   "--base-dn", BASE_DN, "--ca-file", samba_dc.tls["ca"], "--include-ou", SHARED, "-v",
                   env=environment)
        assert done.returncode == 0, done.stderr
        assert people_names(done.records) == {"Info", "Finance", "Room Amstel", "Beamer 1"}
        assert " -Y GSSAPI " in done.stderr  # the ldapsearch line asks the same way
    no_ticket = {**environment, "KRB5CCNAME": f"FILE:{samba_dc.folder / 'no-such-cache'}"}
    done = run("zivsync-extract-ldap", "--kerberos", "--kerberos-host", KERBEROS_HOST, "--url", samba_dc.ldap_url,
               "--base-dn", BASE_DN, "--ca-file", samba_dc.tls["ca"], env=no_ticket)
    assert done.returncode == ExitStatus.UNREACHABLE
    assert "Kerberos authentication failed" in done.stderr and "kinit" in done.stderr
