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
