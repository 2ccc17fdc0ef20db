"""The report mail (stages/operator/mail.py) against a real SMTP server: aiosmtpd on a loopback port,
with a certificate from a test CA, STARTTLS required and a login that needs TLS."""

from __future__ import annotations

import contextlib
import email
import email.policy
import logging
import socket
import ssl

import pytest
import testcerts
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from stages import cli
from stages.cli import ExitStatus, ServerUnreachable, ZivsyncError
from stages.operator import mail

USER = "svc-zivsync"
PASSWORD = "Sm7p-secret-never-printed-4b2e"
TEXT = "Zivsync run: 3 accounts created, 1 alias removed.\nGroet uit Zoetermeer: é, ß, €, 😀\n"
HTML = "<!doctype html><html><body><h1>Zivsync report</h1><p>Crème brûlée: 3 created</p></body></html>"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("smtp-certs")
    files = testcerts.ca_and_server(folder, "zivsync SMTP test CA")
    files["other_ca"] = testcerts.other_ca(folder / "other-ca.pem")
    files["wrong_name"] = testcerts.ca_and_server(folder, "zivsync SMTP CA for another name",
                                                  names=("mail.corp.example",), addresses=(), prefix="wrong-")
    return files


def server_context(files) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files["server_cert"], files["server_key"])
    return context


class Collect:
    """The aiosmtpd handler: keeps every envelope it is given."""

    def __init__(self):
        self.envelopes = []

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 OK"

    def messages(self):
        return [email.message_from_bytes(e.content, policy=email.policy.default) for e in self.envelopes]


def authenticate(server, session, envelope, mechanism, auth_data):
    # handled=False: aiosmtpd then answers a failure with 535 itself
    return AuthResult(success=isinstance(auth_data, LoginPassword) and auth_data.login == USER.encode()
                      and auth_data.password == PASSWORD.encode(), handled=False)


def free_port() -> int:
    # aiosmtpd's Controller checks that it is up by connecting to its port, so it cannot take port 0
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def smtp_server(**parameters):
    handler = Collect()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), **parameters)
    controller.start()
    try:
        yield controller, handler
    finally:
        controller.stop()


@pytest.fixture
def starttls_server(certs):
    """The usual submission server: STARTTLS required, a login only after it."""
    with smtp_server(tls_context=server_context(certs), require_starttls=True, authenticator=authenticate,
                     auth_require_tls=True) as server:
        yield server


@pytest.fixture
def logs(caplog, monkeypatch):
    """Everything zivsync logs, --verbose included (propagated: another test may have run
    setup_logging, which stops propagation to the root logger that caplog listens on)."""
    monkeypatch.setattr(cli.log, "propagate", True)
    caplog.set_level(logging.DEBUG, logger="zivsync")
    return caplog


def settings(port: int, **changes) -> mail.MailSettings:
    values = dict(to=("Beheer <beheer@corp.example>", "it@corp.example"), sender="Zivsync <zivsync@corp.example>",
                  host="127.0.0.1", port=port, username=USER, password=PASSWORD, timeout=10.0)
    values.update(changes)
    return mail.MailSettings(**values)


def unix(text: str) -> str:
    return text.replace("\r\n", "\n")  # a mail's lines end in CRLF on the wire


def send(setup: mail.MailSettings, html: str | None = HTML) -> None:
    mail.send(setup, mail.build_message(setup, "Zivsync: 3 changes — nightly run", TEXT, html))


# -- delivery ------------------------------------------------------------------------------


def test_text_and_html_are_delivered_over_starttls_with_a_login(starttls_server, certs, logs):
    controller, handler = starttls_server
    send(settings(controller.port, ca_file=str(certs["ca_file"])))

    [envelope] = handler.envelopes
    assert envelope.mail_from == "zivsync@corp.example"
    assert envelope.rcpt_tos == ["beheer@corp.example", "it@corp.example"]
    [message] = handler.messages()
    assert message["Subject"] == "Zivsync: 3 changes — nightly run"
    assert message["From"] == "Zivsync <zivsync@corp.example>"
    assert message["To"] == "Beheer <beheer@corp.example>, it@corp.example"
    assert message["Date"] and message["Message-ID"].endswith("@corp.example>")
    assert message["Auto-Submitted"] == "auto-generated"
    assert message.get_content_type() == "multipart/alternative"
    assert unix(message.get_body(("plain",)).get_content()) == TEXT
    assert unix(message.get_body(("html",)).get_content()).strip() == HTML
    assert not list(message.iter_attachments())
    assert envelope.content.isascii()  # quoted-printable: nothing for a relay to mangle

    debug = [r.getMessage() for r in logs.records if r.levelno == logging.DEBUG]
    assert any(f"SMTP 127.0.0.1:{controller.port} STARTTLS" in line and f"AUTH as {USER}" in line
               and "MAIL FROM <zivsync@corp.example>" in line for line in debug)
    assert PASSWORD not in logs.text


def test_text_only_message(starttls_server, certs):
    controller, handler = starttls_server
    send(settings(controller.port, ca_file=str(certs["ca_file"])), html=None)
    [message] = handler.messages()
    assert message.get_content_type() == "text/plain"
    assert unix(message.get_content()) == TEXT


def test_implicit_tls(certs):
    # auth_require_tls=False: aiosmtpd counts only STARTTLS as TLS, not a TLS listener
    with smtp_server(ssl_context=server_context(certs), authenticator=authenticate,
                     auth_require_tls=False) as (controller, handler):
        send(settings(controller.port, security="tls", ca_file=str(certs["ca_file"])))
    assert [e.rcpt_tos for e in handler.envelopes] == [["beheer@corp.example", "it@corp.example"]]


# -- failures --------------------------------------------------------------------------------


@pytest.mark.parametrize("ca", [None, "other_ca"])
def test_an_untrusted_certificate_is_refused(starttls_server, certs, ca):
    controller, handler = starttls_server
    with pytest.raises(ServerUnreachable, match="certificate verification failed") as raised:
        send(settings(controller.port, ca_file=str(certs[ca]) if ca else None))
    assert raised.value.status == ExitStatus.UNREACHABLE
    assert f"127.0.0.1:{controller.port}" in str(raised.value)
    assert not handler.envelopes


def test_the_host_name_is_checked(certs):
    wrong = certs["wrong_name"]  # a certificate for mail.corp.example, signed by a CA we trust
    with smtp_server(tls_context=server_context(wrong), require_starttls=True) as (controller, handler):
        with pytest.raises(ServerUnreachable, match="certificate verification failed: IP address mismatch"):
            send(settings(controller.port, username=None, password=None, ca_file=str(wrong["ca_file"])))
    assert not handler.envelopes


def test_a_wrong_password_is_refused_without_showing_it(starttls_server, certs, logs):
    controller, handler = starttls_server
    with pytest.raises(ServerUnreachable, match=f"login as {USER} was refused: 535") as raised:
        send(settings(controller.port, password="wrong-" + PASSWORD, ca_file=str(certs["ca_file"])))
    assert PASSWORD not in str(raised.value) and PASSWORD not in logs.text
    assert not handler.envelopes


def test_a_server_without_starttls_is_refused_unless_security_is_none(logs):
    with smtp_server() as (controller, handler):
        with pytest.raises(ServerUnreachable, match="does not offer STARTTLS"):
            send(settings(controller.port, username=None, password=None))
        assert not handler.envelopes
        assert not [r for r in logs.records if r.levelno == logging.WARNING]

        send(settings(controller.port, username=None, password=None, security="none"))
    assert len(handler.envelopes) == 1
    warnings = [r.getMessage() for r in logs.records if r.levelno == logging.WARNING]
    assert warnings == [(f"SMTP 127.0.0.1:{controller.port} without TLS (--smtp-security none): "
                         "the report travels unencrypted")]


def test_no_password_over_a_plain_connection():
    with pytest.raises(ValueError, match="password unencrypted"):
        settings(25, security="none")
    with pytest.raises(ZivsyncError, match="would send the SMTP password unencrypted"):
        mail.settings_from_options(("a@corp.example",), "z@corp.example", "mail.corp.example", None, "none",
                                   USER, None, None, None)


def test_a_check_connects_and_signs_in_without_sending(starttls_server, certs, logs):
    controller, handler = starttls_server
    mail.send(settings(controller.port, ca_file=str(certs["ca_file"])), None)
    assert not handler.envelopes
    assert f"SMTP 127.0.0.1:{controller.port}: connected, TLS verified, signed in as {USER}" in logs.text
    with pytest.raises(ServerUnreachable, match="535"):
        mail.send(settings(controller.port, ca_file=str(certs["ca_file"]), password="wrong"), None)


def test_a_server_that_does_not_answer():
    with socket.socket() as silent:  # listens, so the connection is made, but never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        with pytest.raises(ServerUnreachable, match="no answer within 0.5 s"):
            send(settings(silent.getsockname()[1], timeout=0.5))


def test_refused_recipients(certs):
    class Refuse(Collect):
        async def handle_RCPT(self, server, session, envelope, address, options):
            return "550 5.1.1 no such mailbox"

    handler = Refuse()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        with pytest.raises(ServerUnreachable, match=r"recipients were refused: beheer@corp.example \(550"):
            send(settings(controller.port, username=None, password=None, security="none"))
    finally:
        controller.stop()


def test_a_closed_port():
    port = free_port()  # nothing listens on it any more
    with pytest.raises(ServerUnreachable, match=f"127.0.0.1:{port}: connection refused"):
        send(settings(port))


# -- settings ----------------------------------------------------------------------------------

OPTIONS = dict(mail_to=("admin@corp.example",), mail_from="zivsync@corp.example", smtp_host="mail.corp.example",
               smtp_port=None, smtp_security="starttls", smtp_user=None, smtp_password_file=None,
               smtp_ca_file=None, mail_when="always")


def options(**changes):
    return mail.settings_from_options(**{**OPTIONS, **changes})


def test_settings_from_options(tmp_path, monkeypatch):
    monkeypatch.delenv("ZIVSYNC_SMTP_PASSWORD", raising=False)
    assert options(mail_to=()) is None
    assert options() == mail.MailSettings(to=("admin@corp.example",), sender="zivsync@corp.example",
                                          host="mail.corp.example", port=587)
    assert options(smtp_security="tls").port == 465
    assert options(smtp_security="tls", smtp_port=2465).port == 2465
    several = options(mail_to=("a@corp.example, Beheer <b@corp.example>", "c@corp.example"))
    assert several.to == ("a@corp.example", "Beheer <b@corp.example>", "c@corp.example")

    # the password: from the environment or a file (UTF-16 as PowerShell writes it), only with a user
    monkeypatch.setenv("ZIVSYNC_SMTP_PASSWORD", PASSWORD)
    assert options().password is None
    assert options(smtp_user=USER).password == PASSWORD
    secret = tmp_path / "smtp-password"
    secret.write_text("from-a-file\r\n", encoding="utf-16")
    assert options(smtp_user=USER, smtp_password_file=str(secret)).password == "from-a-file"
    monkeypatch.delenv("ZIVSYNC_SMTP_PASSWORD")
    with pytest.raises(ZivsyncError, match="no SMTP password: set ZIVSYNC_SMTP_PASSWORD"):
        options(smtp_user=USER)


@pytest.mark.parametrize("changes, message", [
    ({"smtp_host": None}, "--mail-to needs --smtp-host"),
    ({"mail_from": None}, "--mail-to needs --mail-from"),
    ({"mail_to": ("admin",)}, "--mail-to: 'admin' is not an e-mail address"),
    ({"mail_to": ("admin@",)}, "is not an e-mail address"),
    ({"mail_to": ("a@b@c",)}, "is not an e-mail address"),
    ({"mail_to": ("first last@corp.example",)}, "is not an e-mail address"),
    ({"mail_from": "zivsync"}, "--mail-from: 'zivsync' is not an e-mail address"),
    ({"mail_from": "a@corp.example, b@corp.example"}, "more than one address"),
    ({"smtp_password_file": "pw.txt"}, "--smtp-password-file needs --smtp-user"),
])
def test_settings_are_checked(changes, message):
    with pytest.raises(ZivsyncError, match=message) as raised:
        options(**changes)
    assert raised.value.status == ExitStatus.ERROR


@pytest.mark.parametrize("when, changed, problem, sent", [
    ("always", False, False, True),
    ("changes", False, False, False), ("changes", True, False, True), ("changes", False, True, True),
    ("problems", True, False, False), ("problems", False, True, True), ("problems", False, False, False),
])
def test_should_send(when, changed, problem, sent):
    assert mail.should_send(settings(25, when=when), changed=changed, problem=problem) is sent


def test_the_password_is_not_in_the_repr():
    assert PASSWORD not in repr(settings(25))
    assert USER in repr(settings(25))


def test_the_options_read_the_environment(monkeypatch):
    import click
    from click.testing import CliRunner

    @click.command()
    @cli.mail_options
    def command(**values):
        click.echo(repr(mail.settings_from_options(**values)))

    names = [p.name for p in command.params]
    assert names == ["mail_to", "mail_from", "smtp_host", "smtp_port", "smtp_security", "smtp_user",
                     "smtp_password_file", "smtp_ca_file", "mail_when"]
    environment = {"ZIVSYNC_MAIL_TO": "a@corp.example b@corp.example", "ZIVSYNC_MAIL_FROM": "z@corp.example",
                   "ZIVSYNC_SMTP_HOST": "mail.corp.example", "ZIVSYNC_MAIL_WHEN": "problems",
                   "ZIVSYNC_SMTP_USER": USER, "ZIVSYNC_SMTP_PASSWORD": PASSWORD}
    done = CliRunner().invoke(command, ["--smtp-security", "tls"], env=environment)
    assert done.exit_code == 0, done.output
    assert "to=('a@corp.example', 'b@corp.example')" in done.output
    assert "port=465, security='tls'" in done.output and "when='problems'" in done.output
    assert PASSWORD not in done.output
