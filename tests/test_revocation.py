"""Revocation checks against CRLs (stages/core/revocation.py), over real HTTP on loopback: a
test PKI (root, RSA intermediate, server certificates) whose CRL distribution points and
caIssuers URLs name a loopback HTTP server, which counts the requests it serves so that the
cache shows; and real TLS handshakes for :func:`probe`."""

from __future__ import annotations

import datetime
import logging
import socket
import ssl
from collections import Counter
from urllib.parse import urlsplit

import pytest
import testcerts
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from loopback import Handler, Loopback

from stages.core.errors import ExitStatus, ServerUnreachable
from stages.core.revocation import (RevocationPolicy, RevocationUnknown, RevokedCertificate, cache_path, check_chain,
                                    describe, peer_chain, probe, raise_if_bad)

DER = serialization.Encoding.DER
NOW = datetime.datetime.now(datetime.timezone.utc)


class FileHandler(Handler):
    do_GET = Handler.serve


class FileServer(Loopback):
    """Serves ``files`` (path → bytes) over HTTP, or HTTPS with ``context``; counts the requests
    per path. A request for an absolute URL (as a client sends to a proxy) is served too, and
    kept in ``proxied``."""

    handler = FileHandler
    thread_name = "crl server"
    _requested_port = 0

    def __init__(self, context: ssl.SSLContext | None = None):
        self._context = context
        self.files: dict[str, bytes] = {}
        self.requests: Counter = Counter()
        self.proxied: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self, handler):
        path = urlsplit(handler.path).path
        self.requests[path] += 1
        if handler.path.startswith("http://"):
            self.proxied.append(handler.path)
        body = self.files.get(path)
        handler.send_response(200 if body is not None else 404)
        handler.send_header("Content-Length", str(len(body or b"")))
        handler.end_headers()
        handler.wfile.write(body or b"")


@pytest.fixture(autouse=True)
def no_proxy_for_loopback(monkeypatch):
    """A proxy in the environment of whoever runs the tests must not take the loopback requests."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.delenv("NO_PROXY", raising=False)


@pytest.fixture(scope="module")
def server():
    with FileServer() as running:
        yield running


@pytest.fixture(scope="module")
def pki(server):
    return testcerts.revocation_chain(server.url, ("good", "revoked"))


def publish(server, pki, *, leaves_revoked=(), middle_revoked=(), reason=None):
    """What a CA publishes: both CRLs and both issuers' certificates; the request counts start at 0."""
    root_key, root = pki["root"]
    middle_key, middle = pki["intermediate"]
    server.files.clear()
    server.requests.clear()
    server.files.update({
        "/root.crl": testcerts.crl(root_key, root, middle_revoked, reason=reason),
        "/intermediate.crl": testcerts.crl(middle_key, middle, leaves_revoked, reason=reason),
        "/root.crt": root.public_bytes(DER), "/intermediate.crt": middle.public_bytes(DER)})


@pytest.fixture
def published(server, pki):
    publish(server, pki, leaves_revoked=(pki["revoked"][1].serial_number,), reason=x509.ReasonFlags.key_compromise)
    return server


@pytest.fixture
def policy(tmp_path):
    return RevocationPolicy(cache_dir=tmp_path / "crls")


def der(pki, *labels):
    return [pki[label][1].public_bytes(DER) for label in labels]


@pytest.fixture
def warnings_logged():
    """What the "zivsync" logger warns, whether or not the command base stopped it propagating."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("zivsync")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


# ---- Good and revoked ----

def test_a_good_chain_passes_each_certificate_checked_against_its_issuers_crl(published, pki, policy):
    result = check_chain(der(pki, "good", "intermediate", "root"), der(pki, "root"), policy)
    assert [c.status for c in result.certificates] == ["good", "good", "not checked"]
    assert result.ok and result.problems == []
    raise_if_bad(result, policy)
    lines = describe(result)
    assert lines[0].startswith("CN=good.zivsync.test (serial ") and f"{published.url}/intermediate.crl" in lines[0]
    assert f"{published.url}/root.crl" in lines[1] and "trust anchor" in lines[2]
    assert published.requests == {"/intermediate.crl": 1, "/root.crl": 1}  # the issuers came with the chain


def test_a_revoked_server_certificate_is_refused_naming_it_the_crl_and_the_dates(published, pki, policy):
    result = check_chain(der(pki, "revoked", "intermediate"), der(pki, "root"), policy)
    assert [c.status for c in result.certificates] == ["revoked", "good"]
    with pytest.raises(RevokedCertificate) as refused:
        raise_if_bad(result, RevocationPolicy(cache_dir=None, soft_fail=True))  # soft-fail is for unknown only
    message, serial = str(refused.value), pki["revoked"][1].serial_number
    assert refused.value.status == ExitStatus.UNREACHABLE and isinstance(refused.value, ServerUnreachable)
    assert "CN=revoked.zivsync.test" in message and format(serial, "X") in message
    assert f"{published.url}/intermediate.crl" in message and "key_compromise" in message
    this_update = x509.load_der_x509_crl(published.files["/intermediate.crl"]).last_update_utc
    assert f"of {this_update:%Y-%m-%d %H:%M} UTC" in message and "revoked on " in message


def test_a_revoked_intermediate_is_refused_when_the_chain_is_given(published, server, pki, policy):
    publish(server, pki, middle_revoked=(pki["intermediate"][1].serial_number,))
    result = check_chain(der(pki, "good", "intermediate"), der(pki, "root"), policy)
    assert [c.status for c in result.certificates] == ["good", "revoked"]
    with pytest.raises(RevokedCertificate, match=r"CN=Revocation Test Issuing CA .*root\.crl"):
        raise_if_bad(result, policy)


def test_a_certificate_without_a_distribution_point_is_noted_not_failed(published, pki, policy):
    middle_key, middle = pki["intermediate"]
    _, bare = testcerts.issue(middle_key, middle, "bare.zivsync.test", names=("localhost",))
    result = check_chain([bare.public_bytes(DER)], der(pki, "root"), policy)
    assert result.certificates[0].status == "not checked" and result.ok
    assert "no CRL distribution point: not checked" in describe(result)[0]
    raise_if_bad(result, policy)


# ---- A CRL that cannot be had ----

def test_an_unreachable_crl_fails_closed_and_passes_with_soft_fail_loudly(tmp_path, warnings_logged):
    with FileServer() as doomed:
        chain = testcerts.revocation_chain(doomed.url, ("good",), rsa_intermediate=False)
    certificates = [chain[label][1].public_bytes(DER) for label in ("good", "intermediate")]
    result = check_chain(certificates, [chain["root"][1].public_bytes(DER)], RevocationPolicy(tmp_path))
    assert [c.status for c in result.certificates] == ["unknown", "unknown"]
    assert "cannot fetch the CRL" in result.problems[0] and "refused" in result.problems[0].lower()
    with pytest.raises(RevocationUnknown, match="CN=good.zivsync.test") as refused:
        raise_if_bad(result, RevocationPolicy(tmp_path))
    assert refused.value.status == ExitStatus.UNREACHABLE and "soft-fail" in str(refused.value)
    raise_if_bad(result, RevocationPolicy(tmp_path, soft_fail=True))
    assert len(warnings_logged) == 1 and "REVOCATION NOT CHECKED" in warnings_logged[0].getMessage()
    assert "CN=good.zivsync.test" in warnings_logged[0].getMessage()


def test_every_url_of_a_distribution_point_is_tried_and_ldap_skipped_with_a_note(published, pki, policy):
    middle_key, middle = pki["intermediate"]
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{unused.getsockname()[1]}/intermediate.crl"
    _, leaf = testcerts.issue(middle_key, middle, "many.zivsync.test", crl_urls=(
        "ldap:///CN=Issuing,CN=CDP,CN=Public Key Services?certificateRevocationList", dead,
        f"{published.url}/intermediate.crl"))
    status = check_chain([leaf.public_bytes(DER)], der(pki, "intermediate"), policy).certificates[0]
    assert status.status == "good" and status.crl_url == f"{published.url}/intermediate.crl"
    assert any(note.startswith("ldap:///") and "skipped" in note for note in status.notes)
    assert any(dead in note for note in status.notes)


def test_only_an_ldap_distribution_point_is_unknown(published, pki, policy):
    middle_key, middle = pki["intermediate"]
    _, leaf = testcerts.issue(middle_key, middle, "ldap.zivsync.test", crl_urls=("ldap:///CN=CDP?crl",))
    result = check_chain([leaf.public_bytes(DER)], der(pki, "intermediate"), policy)
    assert result.certificates[0].status == "unknown" and "only http://" in result.problems[0]


def test_the_crl_is_fetched_through_the_proxy_the_environment_names(published, pki, policy, monkeypatch):
    middle_key, middle = pki["intermediate"]
    _, leaf = testcerts.issue(middle_key, middle, "proxied.zivsync.test",
                              crl_urls=("http://crl.zivsync.invalid/intermediate.crl",))
    monkeypatch.setenv("http_proxy", published.url)
    status = check_chain([leaf.public_bytes(DER)], der(pki, "intermediate"), policy).certificates[0]
    assert status.status == "good" and published.proxied == ["http://crl.zivsync.invalid/intermediate.crl"]


# ---- CRLs that must not be believed ----

def other_key_crl(pki):
    _, middle = pki["intermediate"]
    return testcerts.crl(ec.generate_private_key(ec.SECP256R1()), middle)


def expired_crl(pki):
    key, middle = pki["intermediate"]
    return testcerts.crl(key, middle, this_update=NOW - datetime.timedelta(days=2),
                         next_update=NOW - datetime.timedelta(days=1))


def future_crl(pki):
    key, middle = pki["intermediate"]
    return testcerts.crl(key, middle, this_update=NOW + datetime.timedelta(hours=1))


def other_issuer_crl(pki):
    key, middle = pki["intermediate"]
    return testcerts.crl(key, middle, issuer_name=testcerts.name("Someone Else"))


def ca_only_crl(pki):
    key, middle = pki["intermediate"]
    scope = x509.IssuingDistributionPoint(full_name=None, relative_name=None, only_contains_user_certs=False,
                                          only_contains_ca_certs=True, only_some_reasons=None, indirect_crl=False,
                                          only_contains_attribute_certs=False)
    return testcerts.crl(key, middle, extensions=((scope, True),))


def delta_crl(pki):
    key, middle = pki["intermediate"]
    return testcerts.crl(key, middle, extensions=((x509.DeltaCRLIndicator(1), True),))


def not_a_crl(pki):
    return b"<html>Gateway Timeout</html>"


UNBELIEVABLE = [
    (other_key_crl, "signature that does not verify with the key of CN=Revocation Test Issuing CA"),
    (expired_crl, "has expired"),
    (future_crl, "dated in the future"),
    (other_issuer_crl, "is issued by CN=Someone Else"),
    (ca_only_crl, "covers only CA certificates"),
    (delta_crl, "critical extension"),
    (not_a_crl, "is not a CRL"),
]


@pytest.mark.parametrize("make, why", UNBELIEVABLE, ids=[make.__name__ for make, _ in UNBELIEVABLE])
def test_a_crl_that_cannot_be_believed_leaves_the_status_unknown_and_is_refused(published, pki, policy, make, why):
    published.files["/intermediate.crl"] = make(pki)
    result = check_chain(der(pki, "revoked", "intermediate"), der(pki, "root"), policy)
    assert result.certificates[0].status == "unknown" and why in result.problems[0]
    with pytest.raises(RevocationUnknown, match="CN=revoked.zivsync.test"):
        raise_if_bad(result, policy)
    assert not cache_path(f"{published.url}/intermediate.crl", policy).exists()  # nothing unverified is kept


# ---- The cache ----

def test_a_fresh_crl_comes_from_the_cache_and_an_expired_one_is_fetched_again(published, pki, policy):
    url = f"{published.url}/intermediate.crl"
    chain = der(pki, "good", "intermediate")
    assert check_chain(chain, der(pki, "root"), policy).ok
    assert published.requests["/intermediate.crl"] == 1 and cache_path(url, policy).exists()
    assert check_chain(chain, der(pki, "root"), policy).ok
    assert published.requests["/intermediate.crl"] == 1  # before its nextUpdate: from the disk
    cache_path(url, policy).write_bytes(expired_crl(pki))
    assert check_chain(chain, der(pki, "root"), policy).ok
    assert published.requests["/intermediate.crl"] == 2
    assert cache_path(url, policy).read_bytes() == published.files["/intermediate.crl"]  # the fresh one, kept


def test_the_cache_is_verified_each_time_and_a_corrupt_file_fetched_again(published, pki, policy):
    url = f"{published.url}/intermediate.crl"
    chain = der(pki, "revoked", "intermediate")
    policy.cache_dir.mkdir()
    cache_path(url, policy).write_bytes(other_key_crl(pki))  # in date, but not the CA's: not believed
    assert check_chain(chain, der(pki, "root"), policy).certificates[0].status == "revoked"
    assert published.requests["/intermediate.crl"] == 1
    cache_path(url, policy).write_bytes(b"\x30\x03garbage")
    assert check_chain(chain, der(pki, "root"), policy).certificates[0].status == "revoked"
    assert published.requests["/intermediate.crl"] == 2
    assert [p.name for p in policy.cache_dir.iterdir() if not p.name.endswith(".crl")] == []  # no temporaries


def test_without_a_cache_folder_every_check_fetches(published, pki):
    policy = RevocationPolicy(cache_dir=None)
    for _ in range(2):
        assert check_chain(der(pki, "good", "intermediate"), der(pki, "root"), policy).ok
    assert published.requests["/intermediate.crl"] == 2


# ---- Finding the issuer ----

def test_an_issuer_neither_presented_nor_trusted_is_fetched_from_its_ca_issuers_url(published, pki, policy):
    result = check_chain(der(pki, "revoked"), der(pki, "root"), policy)
    assert result.certificates[0].status == "revoked" and published.requests["/intermediate.crt"] == 1


def test_an_issuer_found_nowhere_leaves_the_status_unknown(published, pki, tmp_path):
    result = check_chain(der(pki, "good"), der(pki, "root"), RevocationPolicy(tmp_path, fetch_issuers=False))
    assert result.certificates[0].status == "unknown" and "issuer's certificate was not found" in result.problems[0]
    published.files["/intermediate.crt"] = pki["root"][1].public_bytes(DER)  # the wrong one
    result = check_chain(der(pki, "good"), der(pki, "root"), RevocationPolicy(tmp_path))
    assert "did not issue it" in result.problems[0]


# ---- Over TLS ----

def tls_server(tmp_path, pki, label) -> FileServer:
    """A loopback TLS server presenting ``label``'s certificate and the intermediate."""
    chain_file, key_file = tmp_path / f"{label}-chain.pem", tmp_path / f"{label}.key"
    chain_file.write_bytes(testcerts.pem(pki[label][1], pki["intermediate"][1]))
    key_file.write_bytes(testcerts.private_pem(pki[label][0]))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(chain_file, key_file)
    return FileServer(context)


@pytest.mark.parametrize("label", ["good", "revoked"])
def test_probe_checks_what_a_tls_server_presents(published, pki, policy, tmp_path, label):
    ca_file = tmp_path / "root.pem"
    ca_file.write_bytes(testcerts.pem(pki["root"][1]))
    with tls_server(tmp_path, pki, label) as tls:
        result = probe("127.0.0.1", tls.port, ca_file, policy, server_hostname="localhost", timeout=5)
    leaf = result.certificates[0]
    assert leaf.subject == f"CN={label}.zivsync.test" and leaf.status == label
    if len(result.certificates) == 1:  # Python before 3.13: the server's certificate alone, its issuer fetched
        assert published.requests["/intermediate.crt"] == 1
    else:
        assert [c.status for c in result.certificates[1:]] == ["good", "not checked"]
    if label == "revoked":
        with pytest.raises(RevokedCertificate, match="CN=revoked.zivsync.test"):
            raise_if_bad(result, policy)


def test_probe_of_a_server_the_ca_file_does_not_trust_is_unreachable(published, pki, policy, tmp_path):
    with tls_server(tmp_path, pki, "good") as tls, pytest.raises(ServerUnreachable, match="verification failed"):
        probe("127.0.0.1", tls.port, testcerts.other_ca(tmp_path / "other.pem"), policy, timeout=5)


class Chained:
    """A socket as peer_chain sees one, on a Python with get_verified_chain."""

    def __init__(self, chain, leaf=b"leaf"):
        self.chain, self.leaf = chain, leaf

    def get_verified_chain(self):
        return self.chain

    def getpeercert(self, binary_form=False):
        return self.leaf


class SslCertificate:
    """What SSLObject.get_verified_chain returned before 3.13.0 (_ssl.Certificate)."""

    def __init__(self, certificate: x509.Certificate):
        self.certificate = certificate

    def public_bytes(self, encoding=None):
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()


def test_peer_chain_takes_the_verified_chain_where_python_gives_it(pki):
    chain = der(pki, "good", "intermediate", "root")
    assert peer_chain(Chained(chain)) == chain
    assert peer_chain(Chained([SslCertificate(pki["good"][1])])) == der(pki, "good")
    assert peer_chain(Chained([])) == [b"leaf"]  # not verified by OpenSSL (truststore): the server's own
