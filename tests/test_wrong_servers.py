"""Issue 14: a server that is not what the URL promises gives exit 4 and a message saying so, never a
traceback or exit 2 ("some changes failed"). Loopback servers of the wrong protocol."""

from __future__ import annotations

import socketserver
import threading

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
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Page(BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"<html><body>Welcome to the portal</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        done = run("zivsync-snapshot", "--zivver-url", f"http://127.0.0.1:{server.server_address[1]}/api/scim/v2",
                   env={"ZIVSYNC_ZIVVER_API_KEY": "k"})
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == ExitStatus.UNREACHABLE, done.stderr
    assert "does not answer as Zivver's SCIM API (text/html, not JSON)" in done.stderr
    assert "Traceback" not in done.stderr
