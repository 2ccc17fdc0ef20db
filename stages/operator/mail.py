"""The e-mail that ``zivsync run`` sends administrators after a run (SMTP, standard library only).

TLS is on and verified unless the configuration explicitly says ``none``; the password comes
from ``ZIVSYNC_SMTP_PASSWORD`` or a file, never from a flag, and never shows up in a log line,
an error or ``repr()``. Every failure becomes :class:`ServerUnreachable` (exit 4) naming
the server and what went wrong.
"""

from __future__ import annotations

import email.errors
import email.policy
import email.utils
import smtplib
import socket
import ssl
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage

from ..core.console import log
from ..core.errors import ServerUnreachable, ZivsyncError
from ..core.secrets import read_secret

SECURITIES = ("starttls", "tls", "none")
WHENS = ("always", "changes", "problems")


@dataclass(frozen=True)
class MailSettings:
    to: tuple[str, ...]
    sender: str
    host: str
    port: int = 587
    security: str = "starttls"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    timeout: float = 30.0
    when: str = "always"

    def __post_init__(self) -> None:
        if self.security not in SECURITIES:
            raise ValueError(f"security must be one of {', '.join(SECURITIES)}, not {self.security!r}")
        if self.when not in WHENS:
            raise ValueError(f"when must be one of {', '.join(WHENS)}, not {self.when!r}")
        if self.username and self.security == "none":
            raise ValueError("a login without TLS would send the password unencrypted")


# -- configuration -----------------------------------------------------------------------


def settings_from_options(mail_to, mail_from, smtp_host, smtp_port, smtp_security, smtp_user,
                          smtp_password_file, smtp_ca_file, mail_when) -> MailSettings | None:
    """The mail settings from the options, or None when no --mail-to asks for a mail."""
    if not mail_to:
        return None
    recipients = tuple(str(a) for value in mail_to for a in _addresses(value, "--mail-to"))
    if not smtp_host:
        raise ZivsyncError("--mail-to needs --smtp-host: the SMTP server that sends the mail")
    if not mail_from:
        raise ZivsyncError("--mail-to needs --mail-from: the sender of the mail")
    sender = _addresses(mail_from, "--mail-from")
    if len(sender) != 1:
        raise ZivsyncError(f"--mail-from: {mail_from!r} is more than one address")
    security = smtp_security or "starttls"
    if smtp_user and security == "none":
        raise ZivsyncError("--smtp-user with --smtp-security none would send the SMTP password unencrypted: "
                               "use starttls or tls")
    password = None
    if smtp_user:
        password = read_secret(smtp_password_file, "ZIVSYNC_SMTP_PASSWORD", "SMTP password",
                                   "--smtp-password-file")
    elif smtp_password_file:
        raise ZivsyncError("--smtp-password-file needs --smtp-user: the user the password belongs to")
    port = smtp_port or (465 if security == "tls" else 587)
    return MailSettings(to=recipients, sender=str(sender[0]), host=smtp_host, port=port, security=security,
                        username=smtp_user or None, password=password, ca_file=smtp_ca_file or None,
                        when=mail_when or "always")


def _addresses(value: str, option: str) -> list[Address]:
    """The addresses in ``value`` ('a@x', 'Name <a@x>', or several separated by commas),
    parsed the way the To: header will be, so that what passes here also goes out."""
    try:
        header = email.policy.default.header_factory("to", value)
        addresses = list(header.addresses)
        valid = addresses and not header.defects and all(a.username and a.domain for a in addresses)
    except (IndexError, ValueError, email.errors.MessageError):  # the parser's ways of giving up
        valid = False
    if not valid:
        raise ZivsyncError(f"{option}: {value!r} is not an e-mail address")
    return addresses


def should_send(settings: MailSettings, *, changed: bool, problem: bool) -> bool:
    """Whether this run's mail goes out. Anyone who wants mail about changes also wants it
    about problems, so ``changes`` includes them."""
    if settings.when == "problems":
        return problem
    if settings.when == "changes":
        return changed or problem
    return True


# -- the message -------------------------------------------------------------------------


def build_message(settings: MailSettings, subject: str, text: str, html: str | None = None) -> EmailMessage:
    """The summary as text/plain, with the HTML report as the alternative body when given.

    The HTML goes in as the body, not as an attachment: the admin sees the report without a
    click, clients that cannot show HTML show the text, and forwarding the mail carries it
    along. A ``.html`` attachment would double the size and is what mail filters (Defender,
    many gateways) quarantine as a phishing vector, so the report might never arrive.
    """
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = settings.sender
    message["To"] = ", ".join(settings.to)
    message["Date"] = email.utils.formatdate(localtime=True)
    # the sender's domain: the default would look up this host's FQDN, which can hang on DNS
    domain = _addresses(settings.sender, "sender")[0].domain
    message["Message-ID"] = email.utils.make_msgid("zivsync", domain=domain)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no out-of-office replies to a robot
    # quoted-printable: 7-bit clean with short lines, so no relay on the way mangles it
    message.set_content(text, cte="quoted-printable")
    if html is not None:
        message.add_alternative(html, subtype="html", cte="quoted-printable")
    return message


# -- sending -----------------------------------------------------------------------------


def send(settings: MailSettings, message: EmailMessage | None) -> None:
    """Deliver ``message`` to ``settings.to`` through the SMTP server; exit 4 when that fails.
    Without a message, only connect, secure, sign in and say goodbye (zivsync check)."""
    where = f"{settings.host}:{settings.port}"
    context = _tls_context(settings) if settings.security != "none" else None
    sender = _addresses(settings.sender, "sender")[0].addr_spec
    recipients = [a.addr_spec for value in settings.to for a in _addresses(value, "recipient")]
    if settings.security == "none":
        log.warning("SMTP %s without TLS (--smtp-security none): the report travels unencrypted", where)
    log.debug("SMTP %s %s%s%s, MAIL FROM <%s>, RCPT TO %s", where,
                  {"starttls": "STARTTLS", "tls": "TLS", "none": "without TLS"}[settings.security],
                  f" (CA file {settings.ca_file})" if settings.ca_file and context else "",
                  f", AUTH as {settings.username}" if settings.username else "",
                  sender, " ".join(f"<{r}>" for r in recipients))

    def failed(what: str) -> ServerUnreachable:
        if settings.password:  # a server might echo what it was sent; it must not reach a log
            what = what.replace(settings.password, "***")
        return ServerUnreachable(f"cannot mail the report through SMTP server {where}: {what}")

    smtp = None
    try:
        if settings.security == "tls":
            smtp = smtplib.SMTP_SSL(settings.host, settings.port, timeout=settings.timeout, context=context)
        else:
            smtp = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
        smtp.ehlo()
        if settings.security == "starttls":
            if not smtp.has_extn("starttls"):
                raise failed("the server does not offer STARTTLS (use --smtp-security tls for port 465)")
            smtp.starttls(context=context)
            smtp.ehlo()
        if settings.username:
            if not smtp.has_extn("auth"):
                raise failed(f"the server does not offer a login (AUTH) to sign in as {settings.username}")
            try:
                smtp.login(settings.username, settings.password or "")
            except UnicodeEncodeError:  # its message would quote the character of the password
                raise ZivsyncError("the SMTP user name and password must be ASCII: "
                                       "Python's smtplib cannot send others") from None
        if message is None:
            smtp.quit()
            log.info("SMTP %s: connected%s%s", where, "" if settings.security == "none" else ", TLS verified",
                         f", signed in as {settings.username}" if settings.username else "")
            return
        refused = smtp.send_message(message, from_addr=sender, to_addrs=recipients)
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            pass  # the server has accepted the mail: a failed goodbye changes nothing
    except smtplib.SMTPAuthenticationError as error:
        raise failed(f"the login as {settings.username} was refused: {_reply(error)}") from None
    except smtplib.SMTPRecipientsRefused as error:
        raise failed(f"the recipients were refused: {_refusals(error.recipients)}") from None
    except smtplib.SMTPSenderRefused as error:
        raise failed(f"the sender <{sender}> was refused: {_reply(error)}") from None
    except smtplib.SMTPResponseException as error:
        raise failed(f"the server answered {_reply(error)}") from None
    except smtplib.SMTPServerDisconnected as error:  # smtplib reports a read timeout as one too
        raise failed(f"no answer within {settings.timeout:g} s" if "timed out" in str(error)
                     else "the server closed the connection") from None
    except smtplib.SMTPException as error:
        raise failed(str(error)) from None
    except ssl.SSLCertVerificationError as error:
        hint = ("connect by a name the certificate is for" if "mismatch" in error.verify_message
                else "name the CA that issued the server's certificate with --smtp-ca-file")
        raise failed(f"TLS certificate verification failed: {error.verify_message.rstrip('.')} ({hint})") from None
    except ssl.SSLError as error:
        raise failed(f"TLS failed: {error.reason or error}") from None
    except TimeoutError:
        raise failed(f"no answer within {settings.timeout:g} s") from None
    except ConnectionRefusedError:
        raise failed("connection refused (is the host and port right?)") from None
    except socket.gaierror as error:
        raise failed(f"cannot resolve the host name: {error.strerror}") from None
    except OSError as error:
        raise failed(error.strerror or str(error)) from None
    finally:
        # not `with smtp`: its QUIT on a broken connection (a failed TLS handshake) would raise
        # anew and hide the real error
        if smtp is not None:
            smtp.close()
    if refused:  # some recipients took it: the mail went out, but the admin should know who missed it
        log.warning("SMTP %s refused some recipients: %s", where, _refusals(refused))
    log.info("mailed the report to %s via %s", ", ".join(r for r in recipients if r not in refused), where)


def _tls_context(settings: MailSettings) -> ssl.SSLContext:
    """Verification always on, host name checked: against the CA file, else the system's CAs."""
    try:
        return ssl.create_default_context(cafile=settings.ca_file)
    except (OSError, ssl.SSLError) as error:
        raise ZivsyncError(f"cannot read the SMTP CA file {settings.ca_file}: "
                               f"{getattr(error, 'strerror', None) or error}") from None


def _reply(error: smtplib.SMTPResponseException) -> str:
    text = error.smtp_error.decode("utf-8", "replace") if isinstance(error.smtp_error, bytes) else str(error.smtp_error)
    return f"{error.smtp_code} {text}"


def _refusals(refused: dict) -> str:
    return ", ".join(f"{address} ({code} {text.decode('utf-8', 'replace') if isinstance(text, bytes) else text})"
                     for address, (code, text) in refused.items())
