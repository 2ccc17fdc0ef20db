"""Issue 15: --check-revocation on each kind of connection, through the real executables: the
sandbox behind TLS (Zivver), the Exchange Online fake (Entra ID and the admin API), the
on-premise fake (WSMan over https), and LDAPS (ldap3 to a loopback TLS server, and the real Samba
DC). A test CA publishes its CRLs over loopback HTTP (test_revocation.FileServer)."""

from __future__ import annotations

import ssl

import pytest
import testcerts
from fake_exchange import FakeExchange, Organization
from fake_microsoft import FakeMicrosoft, Tenant
from helpers import Sandbox, account, run, write_stream
from test_revocation import FileServer, publish, tls_server

from stages.core.errors import ExitStatus


@pytest.fixture(autouse=True)
def no_proxy_for_loopback(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture(scope="module")
def crls():
    with FileServer() as server:
        yield server


@pytest.fixture(scope="module")
def pki(crls):
    return testcerts.revocation_chain(crls.url, ("good", "revoked"))


@pytest.fixture
def published(crls, pki):
    publish(crls, pki, leaves_revoked=(pki["revoked"][1].serial_number,))
    return crls


@pytest.fixture
def root(tmp_path, pki):
    path = tmp_path / "root.pem"
    path.write_bytes(testcerts.pem(pki["root"][1]))
    return path


def presented(tmp_path, pki, label: str) -> tuple:
    """(chain file, key file, server context) presenting ``label``'s certificate and the intermediate."""
    chain, key = tmp_path / f"{label}-chain.pem", tmp_path / f"{label}.key"
    chain.write_bytes(testcerts.pem(pki[label][1], pki["intermediate"][1]))
    key.write_bytes(testcerts.private_pem(pki[label][0]))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain, key)
    return chain, key, context


def checks(tmp_path, *extra: str) -> list[str]:
    return ["--check-revocation", "--crl-cache", str(tmp_path / "crls"), *extra]


def assert_refused_as_revoked(done, pki) -> None:
    serial = f"{pki['revoked'][1].serial_number:x}"
    assert done.returncode == ExitStatus.UNREACHABLE, done.stderr
    assert "revoked" in done.stderr and serial in done.stderr.lower().replace(":", ""), done.stderr
    assert "/intermediate.crl" in done.stderr and "Traceback" not in done.stderr


# -- Zivver: the sandbox behind TLS ------------------------------------------------------------------


def snapshot(tmp_path, pki, label, root, *extra):
    chain, key, _ = presented(tmp_path, pki, label)
    seed = write_stream(tmp_path / "seed.jsonl", "accounts", [account("ann@example.com")])
    with Sandbox("--tls-cert", chain, "--tls-key", key, "--seed", seed) as sandbox:
        return run("zivsync-snapshot", "--ca-file", root, *checks(tmp_path, *extra), "-o", tmp_path / "current.jsonl",
                   env=sandbox.env)


def test_zivver_good_passes_revoked_is_refused(published, pki, root, tmp_path):
    good = snapshot(tmp_path, pki, "good", root)
    assert good.returncode == 0, good.stderr
    assert "revocation: Zivver (127.0.0.1:" in good.stderr and ": good" in good.stderr
    assert_refused_as_revoked(snapshot(tmp_path, pki, "revoked", root), pki)
    assert not (tmp_path / "current.jsonl").exists() or good.returncode == 0


def test_zivver_with_its_crl_gone_fails_closed_and_soft_fail_only_warns(published, pki, root, tmp_path):
    published.files.pop("/intermediate.crl")
    closed = snapshot(tmp_path, pki, "good", root)
    assert closed.returncode == ExitStatus.UNREACHABLE and "--revocation-soft-fail" in closed.stderr, closed.stderr
    soft = snapshot(tmp_path, pki, "good", root, "--revocation-soft-fail")
    assert soft.returncode == 0, soft.stderr
    assert "warning" in soft.stderr and "revocation" in soft.stderr.lower()


# -- Entra ID and Exchange Online: the Microsoft fake ----------------------------------------------


def test_exchange_online_good_passes_revoked_is_refused(published, pki, root, tmp_path):
    results = {}
    for label in ("good", "revoked"):
        fake = FakeMicrosoft(tmp_path / label, Tenant.generate(mailboxes=3, shared=1, groups=1, seed=1))
        fake._context = presented(tmp_path, pki, label)[2]  # the fake as a server with this certificate
        with fake:
            results[label] = run("zivsync-extract-exo", "--tenant", fake.tenant.tenant_id, "--client-id",
                                 fake.client_id, "--authority-host", fake.url, "--exchange-url", fake.exchange_url,
                                 "--ca-file", root, *checks(tmp_path), "-o", tmp_path / f"{label}.jsonl",
                                 env={"ZIVSYNC_EXO_CLIENT_SECRET": fake.client_secret})
    assert results["good"].returncode == 0, results["good"].stderr
    assert "revocation: Entra ID" in results["good"].stderr and "revocation: Exchange Online" in results["good"].stderr
    assert_refused_as_revoked(results["revoked"], pki)
    assert not (tmp_path / "revoked.jsonl").exists()


# -- Exchange on-premise: the WSMan fake over https ------------------------------------------------


def test_exchange_on_premise_good_passes_revoked_is_refused(published, pki, root, tmp_path):
    results = {}
    for label in ("good", "revoked"):
        fake = FakeExchange(tmp_path / label, Organization.generate(mailboxes=4, shared=1, rooms=0, equipment=0, groups=1, seed=2))
        fake._context = presented(tmp_path, pki, label)[2]
        with fake:
            results[label] = run("zivsync-extract-exchange", "--url", fake.url, "--auth", "basic", "--username",
                                 fake.username, "--ca-file", root, *checks(tmp_path), "-o", tmp_path / f"{label}.jsonl",
                                 env={"ZIVSYNC_EXCHANGE_PASSWORD": fake.password})
    assert results["good"].returncode == 0, results["good"].stderr
    assert "revocation: Exchange (" in results["good"].stderr
    assert_refused_as_revoked(results["revoked"], pki)


# -- LDAPS: ldap3's own connection, checked before the password is sent ----------------------------


@pytest.mark.parametrize("label", ["good", "revoked"])
def test_ldaps_is_checked_on_its_own_connection_before_the_bind(published, pki, root, tmp_path, label):
    """A loopback TLS server that is no LDAP server: the revocation check runs on ldap3's socket
    once TLS is up and before anything LDAP is sent, so a revoked certificate is refused there,
    and a good one gets as far as the bind (which then finds no LDAP)."""
    with tls_server(tmp_path, pki, label) as server:
        done = run("zivsync-extract-ldap", "--url", f"ldaps://localhost:{server.port}", "--base-dn", "DC=corp,DC=example",
                   "--bind-dn", "cn=reader", "--ca-file", root, "--timeout", "5", *checks(tmp_path),
                   env={"ZIVSYNC_LDAP_PASSWORD": "not-sent-to-a-revoked-server"})
    if label == "revoked":
        assert_refused_as_revoked(done, pki)
    else:
        assert "revocation: the domain controller (127.0.0.1:" in done.stderr
        assert ": good" in done.stderr and "revoked" not in done.stderr, done.stderr
        assert done.returncode == ExitStatus.UNREACHABLE  # no LDAP behind it: past the check, the bind fails


@pytest.mark.parametrize("over", ["ldaps", "starttls"])
def test_the_samba_dc_with_revocation_checks_on(samba_dc, tmp_path, over):
    """The real DC's certificate names no CRL distribution point: noted, not refused, over LDAPS
    and after StartTLS alike."""
    from samba_dc import ADMIN_NT, ADMIN_PASSWORD, BASE_DN

    url = samba_dc.ldaps_url if over == "ldaps" else samba_dc.ldap_url
    done = run("zivsync-extract-ldap", "--url", url, "--base-dn", BASE_DN, "--bind-dn", ADMIN_NT,
               "--ca-file", samba_dc.tls["ca"], *checks(tmp_path), "-o", tmp_path / "ad.jsonl",
               env={"ZIVSYNC_LDAP_PASSWORD": ADMIN_PASSWORD})
    assert done.returncode == 0, done.stderr
    assert "revocation: the domain controller" in done.stderr and "distribution point" in done.stderr


def test_zivsync_check_reports_the_revocation_status_of_each_connection(published, pki, root, tmp_path):
    chain, key, _ = presented(tmp_path, pki, "good")
    config = tmp_path / "zivsync.toml"
    config.write_text(f"claimed_domains = ['example.com']\nca_file = '{root}'\ncheck_revocation = true\n"
                      f"crl_cache = '{tmp_path / 'crls'}'\n", encoding="utf-8")
    with Sandbox("--tls-cert", chain, "--tls-key", key) as sandbox:
        done = run("zivsync", "check", "--config", config, env=sandbox.env)
    out = done.stdout.decode()
    assert done.returncode == 0, out + done.stderr
    assert "zivver" in out and "revocation: Zivver (127.0.0.1:" in out and "CN=good.zivsync.test" in out
    assert ": good (CRL http://127.0.0.1:" in out and "/intermediate.crl" in out


def test_the_samba_dc_presenting_a_revoked_certificate_is_refused(samba_dc, crls, pki, root, tmp_path):
    """The real DC, restarted with a certificate for its address that its CA has revoked: the
    extraction is refused over LDAPS before the password is sent."""
    from samba_dc import ADMIN_NT, ADMIN_PASSWORD, BASE_DN

    middle_key, middle = pki["intermediate"]
    key, dc_certificate = testcerts.issue(middle_key, middle, "dc1.corp.example.test",
                                          names=("dc1.corp.example.test", "localhost"), addresses=(samba_dc.address,),
                                          crl_urls=(f"{crls.url}/intermediate.crl",),
                                          issuer_url=f"{crls.url}/intermediate.crt")
    publish(crls, pki, leaves_revoked=(dc_certificate.serial_number,))
    with samba_dc.presenting(testcerts.pem(dc_certificate, middle), testcerts.private_pem(key)):
        done = run("zivsync-extract-ldap", "--url", samba_dc.ldaps_url, "--base-dn", BASE_DN, "--bind-dn", ADMIN_NT,
                   "--ca-file", root, *checks(tmp_path), "-o", tmp_path / "ad.jsonl",
                   env={"ZIVSYNC_LDAP_PASSWORD": ADMIN_PASSWORD})
    assert done.returncode == ExitStatus.UNREACHABLE, done.stderr
    assert "revoked" in done.stderr and f"{dc_certificate.serial_number:x}" in done.stderr.lower()
    assert not (tmp_path / "ad.jsonl").exists()
