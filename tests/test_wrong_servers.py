"""Issue 14: a server that is not what the URL promises gives exit 4 and a message saying so, never a
traceback or exit 2 ("some changes failed"). Loopback servers of the wrong protocol."""

from __future__ import annotations

import contextlib
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from fake_microsoft import FakeMicrosoft, Tenant
import testcerts
from helpers import EXAMPLES, Sandbox, run
from stages.cli import ExitStatus


class _Web(socketserver.BaseRequestHandler):
    """A web server answering whatever it gets as nginx does: 400 Bad Request, an HTML page."""

    def handle(self):
        self.request.recv(4096)
        self.request.sendall(b"HTTP/1.1 400 Bad Request\r\nServer: nginx\r\nContent-Type: text/html\r\n"
                             b"Content-Length: 11\r\nConnection: close\r\n\r\nBad Request")


def test_an_ldap_url_at_a_web_server_says_it_does_not_speak_ldap():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Web)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        done = run("zivsync-extract-ldap", "--url", f"ldap://127.0.0.1:{port}", "--allow-plain-ldap",
                   "--bind-dn", "cn=reader", "--base-dn", "DC=corp,DC=example", "--timeout", "5",
                   env={"ZIVSYNC_LDAP_PASSWORD": "not-used-here"})
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == ExitStatus.UNREACHABLE, done.stderr
    assert f"the server at 127.0.0.1:{port} does not speak LDAP" in done.stderr
    assert "Traceback" not in done.stderr and "KeyError" not in done.stderr.replace("message: KeyError", "")


def test_a_mistyped_zivver_url_is_exit_4_not_some_changes_failed(tmp_path):
    with Sandbox("--seed", EXAMPLES / "current.jsonl") as sandbox:
        wrong = sandbox.url.replace("/api/scim/v2", "/api/scim/v3")
        snapshot = run("zivsync-snapshot", "-o", tmp_path / "current.jsonl",
                       env={**sandbox.env, "ZIVSYNC_ZIVVER_URL": wrong})
    assert snapshot.returncode == ExitStatus.UNREACHABLE, snapshot.stderr
    assert "does not answer as Zivver's SCIM API" in snapshot.stderr and "/api/scim/v2" in snapshot.stderr
    assert not (tmp_path / "current.jsonl").exists()


def test_a_secret_file_others_can_read_is_warned_about_without_its_content(tmp_path):
    key = tmp_path / "zivver.key"
    key.write_text("Z1.1.2.shared-with-everyone", encoding="utf-8")
    key.chmod(0o644)
    done = run("zivsync-snapshot", "--zivver-url", "http://127.0.0.1:9/api/scim/v2", "--zivver-api-key-file", key,
               "--timeout", "2")
    assert done.returncode == ExitStatus.UNREACHABLE
    assert f"the Zivver API key file {key} can be read by other users (mode -rw-r--r--): chmod 600" in done.stderr
    assert "shared-with-everyone" not in done.stderr
    key.chmod(0o600)
    private = run("zivsync-snapshot", "--zivver-url", "http://127.0.0.1:9/api/scim/v2", "--zivver-api-key-file", key,
                  "--timeout", "2")
    assert "can be read by other users" not in private.stderr


def test_connection_errors_say_the_cause_in_words(tmp_path):
    refused = run("zivsync-snapshot", "--zivver-url", "http://127.0.0.1:9/api/scim/v2", "--timeout", "2",
                  env={"ZIVSYNC_ZIVVER_API_KEY": "k"})
    assert refused.returncode == ExitStatus.UNREACHABLE
    assert "connection refused (nothing listens at that address and port)" in refused.stderr, refused.stderr
    assert "NewConnectionError" not in refused.stderr
    unknown = run("zivsync-snapshot", "--zivver-url", "https://zivver.invalid/api/scim/v2", "--timeout", "2",
                  env={"ZIVSYNC_ZIVVER_API_KEY": "k"})
    assert unknown.returncode == ExitStatus.UNREACHABLE and "name not found" in unknown.stderr, unknown.stderr
    assert "(1 attempt)" in unknown.stderr  # a name that does not resolve is not retried five times


def test_a_zivver_url_at_a_web_page_is_exit_4_not_a_traceback():
    with _portal() as port:
        done = run("zivsync-snapshot", "--zivver-url", f"http://127.0.0.1:{port}/api/scim/v2",
                   env={"ZIVSYNC_ZIVVER_API_KEY": "k"})
    assert done.returncode == ExitStatus.UNREACHABLE, done.stderr
    assert "does not answer as Zivver's SCIM API (text/html, not JSON)" in done.stderr
    assert "Traceback" not in done.stderr


class _Portal(BaseHTTPRequestHandler):
    """An intranet web page: whatever is asked, 200 and HTML."""

    def _page(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b"<html><head><title>Intranet portal</title></head><body>Welcome</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _page

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def _portal():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Portal)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_a_tls_url_at_a_plain_text_port_says_the_server_does_not_speak_tls():
    """https:// and ldaps:// at a port that answers in plain text (an http:// port, LDAP's 389):
    OpenSSL's "wrong version number" said in words, exit 4, and not retried."""
    with _portal() as port:
        zivver = run("zivsync-snapshot", "--zivver-url", f"https://127.0.0.1:{port}/api/scim/v2", "--timeout", "3",
                     env={"ZIVSYNC_ZIVVER_API_KEY": "k"})
        ldap = run("zivsync-extract-ldap", "--url", f"ldaps://127.0.0.1:{port}", "--bind-dn", "cn=reader",
                   "--base-dn", "DC=corp,DC=example", "--timeout", "3", env={"ZIVSYNC_LDAP_PASSWORD": "p"})
        onprem = run("zivsync-extract-exchange", "--url", f"https://127.0.0.1:{port}/PowerShell/", "--auth", "basic",
                     "--username", "svc@corp.example", "--timeout", "5", env={"ZIVSYNC_EXCHANGE_PASSWORD": "p"})
    for done in (zivver, ldap, onprem):
        assert done.returncode == ExitStatus.UNREACHABLE, done.stderr
        assert "does not speak TLS" in done.stderr and "it answered in plain text" in done.stderr, done.stderr
        assert "certificate verification" not in done.stderr and "Traceback" not in done.stderr
    assert "(1 attempt)" in zivver.stderr  # a port that speaks another protocol will not learn TLS on a retry
    assert "ldaps:// needs the DC's LDAPS port (636)" in ldap.stderr
    assert "is it an http:// port?" in onprem.stderr


def test_a_wsman_url_at_a_web_page_says_it_is_not_exchanges_remote_powershell():
    """pypsrp reads a web page as a broken SOAP message (Basic) or finds no sign-in context (NTLM:
    KeyError '127.0.0.1'): the user is told what the URL answers instead."""
    with _portal() as port:
        answers = [run("zivsync-extract-exchange", "--url", f"http://127.0.0.1:{port}/PowerShell/", *auth,
                       "--timeout", "5", env={"ZIVSYNC_EXCHANGE_PASSWORD": "p"})
                   for auth in (("--auth", "ntlm", "--username", "CORP\\svc"),
                                ("--auth", "basic", "--allow-unencrypted", "--username", "svc@corp.example"))]
    for done in answers:
        assert done.returncode == ExitStatus.UNREACHABLE, done.stderr
        assert (f"http://127.0.0.1:{port}/PowerShell: the server answers HTTP 200, text/html (a web page: Intranet "
                "portal), not as Exchange's remote PowerShell (WSMan)") in done.stderr, done.stderr
        assert "KeyError" not in done.stderr and "related id" not in done.stderr


def test_an_exchange_online_api_answering_a_web_page_is_exit_4(tmp_path):
    """A proxy's or portal's page where the admin API should answer: exit 4, saying so."""
    with FakeMicrosoft(tmp_path / "fake", Tenant.generate(mailboxes=3, shared=1, groups=1, seed=1)) as fake:
        fake.fail("Get-Mailbox", 200, page=b"<html><head><title>Access denied by policy</title></head></html>")
        done = run("zivsync-extract-exo", "--tenant", fake.tenant.tenant_id, "--client-id", fake.client_id,
                   "--authority-host", fake.url, "--exchange-url", fake.exchange_url, "--ca-file", fake.ca_file,
                   env={"ZIVSYNC_EXO_CLIENT_SECRET": fake.client_secret})
    assert done.returncode == ExitStatus.UNREACHABLE, done.stderr
    assert "does not answer as Exchange Online's admin API (text/html, not JSON, HTTP 200 to Get-Mailbox" in done.stderr
    assert "Access denied by policy" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == b""


def test_a_certificate_that_does_not_verify_is_named_with_the_ca_file_used(tmp_path):
    """Issue 14: TLS verification failed, with the certificate's subject and issuer and the CA file
    it was checked against (here Exchange Online's fake, checked against another CA)."""
    other = tmp_path / "other-ca.pem"
    testcerts.other_ca(other)
    with FakeMicrosoft(tmp_path / "fake", Tenant.generate(mailboxes=3, shared=1, groups=1, seed=1)) as fake:
        done = run("zivsync-extract-exo", "--tenant", fake.tenant.tenant_id, "--client-id", fake.client_id,
                   "--authority-host", fake.url, "--exchange-url", fake.exchange_url, "--ca-file", other,
                   env={"ZIVSYNC_EXO_CLIENT_SECRET": fake.client_secret})
    assert done.returncode == ExitStatus.UNREACHABLE, done.stderr
    assert "TLS certificate verification failed (" in done.stderr, done.stderr
    assert "issued by CN=zivsync fake Microsoft test CA" in done.stderr and f"the CA file {other}" in done.stderr
