"""zivsync check: every configured connection tested, read-only, with what it found or lacks:
against the Samba DC, the fake Exchange Online and a sandbox."""

from __future__ import annotations

import json

import pytest
from fake_microsoft import FakeMicrosoft, Tenant
from helpers import API_KEY, EXAMPLES, FABRIKAM_ZIVVER, Sandbox, read_jsonl, run
from samba_dc import ADMIN_NT, ADMIN_PASSWORD, BASE_DN

from stages.cli import ExitStatus

CLAIMED = ("fabrikam.example", "fabrikam.nl")


def check(config, *args, env=None):
    return run("zivsync", "check", "--config", config, *args, env=env, timeout=300)


@pytest.fixture
def sandbox():
    with Sandbox("--seed", EXAMPLES / "current.jsonl", "--rate-limit", "1000", claimed=FABRIKAM_ZIVVER) as server:
        yield server


def zivver_accounts(sandbox, tmp_path) -> list[dict]:
    done = run("zivsync-snapshot", "-o", tmp_path / "snapshot.jsonl", env=sandbox.env)
    assert done.returncode == 0
    return [r for r in read_jsonl(tmp_path / "snapshot.jsonl") if r["type"] == "account"]


def ldap_table(samba_dc, ca) -> str:
    return f"""[extract-ldap]
urls = ["{samba_dc.ldaps_url}"]
base_dn = "{BASE_DN}"
bind_dn = {json.dumps(ADMIN_NT)}
ca_file = "{ca}"
"""


def test_every_connection_works_and_the_counts_are_shown(samba_dc, sandbox, tmp_path):
    config = tmp_path / "zivsync.toml"
    config.write_text(ldap_table(samba_dc, samba_dc.tls["ca"]), encoding="utf-8")
    before = zivver_accounts(sandbox, tmp_path)
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    done = check(config, env=sandbox.env | {"ZIVSYNC_LDAP_PASSWORD": ADMIN_PASSWORD, "TMPDIR": str(temporary)})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert lines[0] == f"zivsync check: {config}"
    ldap = next(line for line in lines if line.strip().startswith("ldap"))
    zivver = next(line for line in lines if line.strip().startswith("zivver"))
    assert " ok " in ldap and "people (" in ldap and " shared" in ldap and "groups" in ldap
    users = sum(1 for a in before if a["kind"] == "user")
    functional = sum(1 for a in before if a["kind"] == "functional")
    assert " ok " in zivver and f"{users} personal and {functional} functional accounts" in zivver
    assert zivver_accounts(sandbox, tmp_path) == before  # read-only
    assert ADMIN_PASSWORD not in done.stderr and API_KEY not in done.stderr
    assert not list(temporary.iterdir())  # nothing left behind


def test_a_tls_problem_and_a_refused_key_are_named(samba_dc, sandbox, tmp_path):
    config = tmp_path / "zivsync.toml"
    config.write_text(ldap_table(samba_dc, samba_dc.tls["other_ca"]), encoding="utf-8")
    done = check(config, env={"ZIVSYNC_LDAP_PASSWORD": ADMIN_PASSWORD, "ZIVSYNC_ZIVVER_URL": sandbox.url,
                              "ZIVSYNC_ZIVVER_API_KEY": "not-the-key"})
    assert done.returncode == ExitStatus.UNREACHABLE, done.stderr
    out = done.stdout.decode()
    ldap, problem = [line for line in out.splitlines() if line.strip().startswith("ldap")][0], out
    assert "FAILED (exit 4)" in ldap and "TLS certificate verification failed" in problem
    zivver = [line for line in out.splitlines() if line.strip().startswith("zivver")][0]
    assert "FAILED (exit 4)" in zivver  # every connection is checked, not only up to the first failure
    assert "401" in out or "refused" in out.lower()
    assert "not-the-key" not in out and "not-the-key" not in done.stderr


def test_a_missing_exchange_role_is_named(sandbox, tmp_path):
    tenant = Tenant.generate(mailboxes=30, shared=6, groups=3, seed=5)
    with FakeMicrosoft(tmp_path / "fake", tenant) as fake:
        config = tmp_path / "zivsync.toml"
        config.write_text(f"""[extract-exo]
tenant = "{tenant.tenant_id}"
client_id = "{fake.client_id}"
authority_host = "{fake.url}"
exchange_url = "{fake.exchange_url}"
ca_file = "{fake.ca_file}"
""", encoding="utf-8")
        environment = sandbox.env | {"ZIVSYNC_EXO_CLIENT_SECRET": fake.client_secret}
        good = check(config, env=environment)
        assert good.returncode == 0, good.stderr
        exo = [line for line in good.stdout.decode().splitlines() if line.strip().startswith("exo")][0]
        assert f"{len(tenant.mailboxes)} people" in exo and "Full Access permissions" in exo
        fake.tenant.app_roles = []
        refused = check(config, env=environment)
    assert refused.returncode == ExitStatus.UNREACHABLE
    assert "Exchange.ManageAsApp" in refused.stdout.decode()
    assert fake.client_secret not in refused.stdout.decode() + refused.stderr


def test_zivver_alone_and_the_mail_server(sandbox, tmp_path):
    import testcerts
    from test_mail import PASSWORD, USER, authenticate, server_context, smtp_server

    certs = testcerts.ca_and_server(tmp_path / "certs", "zivsync check mail CA")
    config = tmp_path / "zivsync.toml"
    config.write_text(f"""[check]
mail_to = ["beheer@fabrikam.example"]
mail_from = "zivsync@fabrikam.example"
smtp_host = "127.0.0.1"
smtp_user = "{USER}"
smtp_ca_file = "{certs['ca_file']}"
""", encoding="utf-8")
    with smtp_server(tls_context=server_context(certs), require_starttls=True, authenticator=authenticate,
                     auth_require_tls=True) as (controller, handler):
        good = check(config, "--smtp-port", str(controller.port), env=sandbox.env | {"ZIVSYNC_SMTP_PASSWORD": PASSWORD})
        wrong = check(config, "--smtp-port", str(controller.port), env=sandbox.env | {"ZIVSYNC_SMTP_PASSWORD": "nope"})
    assert good.returncode == 0, good.stdout + good.stderr.encode()
    lines = good.stdout.decode().splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["zivver", "mail"]  # no source configured: Zivver alone
    assert f"127.0.0.1:{controller.port}, starttls, signed in as {USER}" in lines[2]
    assert not handler.envelopes  # a check sends nothing
    assert wrong.returncode == ExitStatus.UNREACHABLE and "535" in wrong.stdout.decode()
    assert PASSWORD not in good.stdout.decode() + good.stderr


def test_a_failure_is_never_only_an_exit_code():
    from stages.check import reasons

    crashed = b"Traceback (most recent call last):\n  File 'x', line 1\nKeyError: (1, 20)\n"
    assert reasons(crashed, 1)[-1] == "KeyError: (1, 20)"
    assert reasons(b"", 4) == ["it ended with exit code 4 and said nothing"]
    said = b"zivsync-extract-ldap: error: ldap://dc:389: invalid credentials\n"
    assert reasons(said, 4) == ["zivsync-extract-ldap: error: ldap://dc:389: invalid credentials"]
    assert reasons(b"zivsync-snapshot: 3 personal accounts read\n", 0) == []
