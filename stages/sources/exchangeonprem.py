"""Exchange on-premise through its remote PowerShell endpoint: the transport behind
zivsync-extract-exchange.

Exchange's ``/PowerShell/`` endpoint (configuration ``Microsoft.Exchange``) runs in no-language
mode: no scripts, only cmdlets with parameters (reference/exchange.md §2.2). So every call here
is ``add_cmdlet(...).add_parameter(...)`` on one runspace pool kept open for the whole run,
independent calls in parallel pipelines of that pool. The cmdlets and what is made of their
answers are Exchange Online's (``stages.exchangeonline.Reader``): only the transport and the
way objects arrive (deserialised CLIXML, with its quirks, §2.4) differ.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass, field
from typing import Iterable, Iterator
from urllib.parse import urlsplit
from xml.etree import ElementTree

from ..core.errors import ServerUnreachable, ZivsyncError, causes_of, speaks_no_tls
from ..core.tls import system_trust, verification_failed
from ..core.http import ApiError
from .exchangeonline import Cmdlet, CmdletError

log = logging.getLogger("zivsync")

CONFIGURATION = "Microsoft.Exchange"
AUTHS = ("kerberos", "negotiate", "ntlm", "basic")


class OnPremFailure(ServerUnreachable):
    """Could not reach, trust or sign in to the Exchange server: exit 4."""


@dataclass(frozen=True)
class Endpoint:
    """Where Exchange's remote PowerShell is and how to sign in to it."""

    url: str  # http(s)://server[:port]/PowerShell/
    auth: str = "kerberos"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    verify_tls: bool = True
    allow_unencrypted: bool = False  # Basic over http: the password in clear text
    service: str = "HTTP"  # the Kerberos service of IIS's /PowerShell
    timeout: float = 60.0

    def parts(self) -> tuple[bool, str, int, str]:
        """(https, host, port, path); the ports are IIS's (443/80), not WinRM's 5985/5986."""
        parts = urlsplit(self.url if "://" in self.url else f"https://{self.url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ZivsyncError(f"--url {self.url!r}: give http(s)://SERVER/PowerShell/")
        https = parts.scheme == "https"
        path = parts.path.strip("/") or "PowerShell"
        return https, parts.hostname, parts.port or (443 if https else 80), path


class RemotePowerShell:
    """Cmdlets on one runspace pool; the same ``invoke``/``invoke_many`` as the admin API's
    client, so that one Reader serves both. Errors Exchange writes to the error stream for one
    object are collected in :attr:`errors` (cmdlet, object, message), not raised."""

    def __init__(self, endpoint: Endpoint, *, concurrency: int = 4):
        self.endpoint, self.concurrency = endpoint, max(1, concurrency)
        self.pool = None
        self.wsman = None
        self.calls = 0
        self.errors: list[tuple[str, str, str]] = []

    @property
    def round_trips(self) -> int:
        return self.wsman.round_trips if self.wsman else 0

    # connecting

    def open(self) -> "RemotePowerShell":
        from pypsrp.exceptions import AuthenticationError, WinRMTransportError, WSManFaultError
        from pypsrp.powershell import RunspacePool
        from requests.exceptions import ConnectionError, SSLError, Timeout

        https, host, port, path = self.endpoint.parts()
        where = f"{'https' if https else 'http'}://{host}:{port}/{path}"
        self.wsman = self._wsman(https, host, port, path)
        try:
            self.pool = RunspacePool(self.wsman, configuration_name=CONFIGURATION, max_runspaces=self.concurrency)
            self.pool.open()
        except AuthenticationError as error:
            raise OnPremFailure(f"{where}: the credentials were refused ({self.endpoint.auth} as "
                                f"{self.endpoint.username or 'the Kerberos ticket'}): {_line(error)}") from None
        except SSLError as error:
            if speaks_no_tls(error):
                raise OnPremFailure(f"{where}: the server at {host}:{port} does not speak TLS (it answered in plain "
                                    "text): is it an http:// port? Over http://, Kerberos and NTLM encrypt the "
                                    "messages themselves") from None
            failed = verification_failed(_certificate_reason(error), host, port, self.endpoint.ca_file)
            raise OnPremFailure(f"{where}: {failed}: give the CA that signed the server's certificate with "
                                "--ca-file") from None
        except (ConnectionError, Timeout) as error:
            raise OnPremFailure(f"{where}: the server is not reachable: {_line(error)}") from None
        except WSManFaultError as error:
            raise OnPremFailure(f"{where}: not Exchange's remote PowerShell endpoint (WSManFault {error.code}: "
                                f"{_line(error.reason)}); the URL is http(s)://SERVER/PowerShell/") from None
        except WinRMTransportError as error:
            hint = (" — not Exchange's remote PowerShell endpoint; the URL is http(s)://SERVER/PowerShell/"
                    if error.code == 404 else "")
            raise OnPremFailure(f"{where}: HTTP {error.code} from the server{hint}") from None
        except ImportError as error:  # pyspnego's Kerberos needs gssapi and krb5 (optional packages)
            raise OnPremFailure(f"{where}: {self.endpoint.auth} sign-in needs an optional package: "
                                f"{_line(error)} (pip install 'pyspnego[kerberos]'), or use --auth ntlm") from None
        except Exception as error:  # noqa: BLE001 (pyspnego and pypsrp raise many kinds; all mean: no session)
            answer = self._not_wsman(where)
            if answer:
                raise OnPremFailure(f"{where}: the server answers {answer}, not as Exchange's remote PowerShell "
                                    "(WSMan): the URL is http(s)://SERVER/PowerShell/") from None
            raise OnPremFailure(f"{where}: cannot open a session ({self.endpoint.auth}): "
                                f"{type(error).__name__}: {_line(error)}") from None
        log.info("connected to %s (%s)", where, self.endpoint.auth)
        return self

    def _not_wsman(self, where: str) -> str | None:
        """What the URL answers when it is not a WSMan endpoint (a web page: "HTTP 200, text/html"),
        asked after a session failed in a way pypsrp does not name (it reads a web page as a broken
        SOAP message, or finds no sign-in context). A POST without credentials, as pypsrp's first
        one: IIS's /PowerShell asks for credentials (401), WinRM answers SOAP (application/soap+xml)
        or encrypted parts (multipart/encrypted), [MS-WSMV] 2.2.9; anything else is not WSMan."""
        import requests

        endpoint = self.endpoint
        try:
            answer = requests.post(where, data=b"", timeout=endpoint.timeout, allow_redirects=False,
                                   verify=(endpoint.ca_file or True) if endpoint.verify_tls else False,
                                   headers={"Content-Type": "application/soap+xml;charset=UTF-8"})
        except requests.RequestException:
            return None
        kind = answer.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if answer.status_code == 401 or kind in ("application/soap+xml", "multipart/encrypted"):
            return None
        return f"HTTP {answer.status_code}{f', {kind}' if kind else ''}" + (
            f" (a web page: {_title(answer.text)})" if kind == "text/html" and _title(answer.text) else "")

    def _wsman(self, https: bool, host: str, port: int, path: str):
        from pypsrp.wsman import WSMan

        endpoint = self.endpoint
        if endpoint.auth not in AUTHS:
            raise ZivsyncError(f"--auth {endpoint.auth!r}: one of {', '.join(AUTHS)}")
        encryption = "auto"
        if endpoint.auth == "basic" and not https:
            if not endpoint.allow_unencrypted:
                raise ZivsyncError("Basic sign-in over http:// would send the password in clear text: use https://, "
                                   "Kerberos or NTLM, or --allow-unencrypted")
            log.warning("--allow-unencrypted: Basic over http://, the password and the directory travel unencrypted")
            encryption = "never"
        if not endpoint.verify_tls:
            log.warning("TLS certificates are NOT verified (--no-verify-tls): anyone in between can read the "
                        "password and the directory")
        cert_validation: bool | str = system_trust(endpoint.ca_file or True) if endpoint.verify_tls else False
        options = {"negotiate_service": endpoint.service} if endpoint.auth in ("kerberos", "negotiate") else {}
        wsman = WSMan(host, port=port, path=path, ssl=https, auth=endpoint.auth, username=endpoint.username,
                      password=endpoint.password, cert_validation=cert_validation, encryption=encryption,
                      connection_timeout=int(endpoint.timeout), read_timeout=int(endpoint.timeout), **options)
        _count_round_trips(wsman)
        return wsman

    def close(self) -> None:
        if self.pool is not None:
            try:
                self.pool.close()
            except Exception as error:  # noqa: BLE001 (closing must not hide the run's result)
                log.debug("closing the runspace pool: %s", error)
            self.pool = None

    # running cmdlets

    def _start(self, cmdlet: Cmdlet):
        """Send one pipeline; its answer is collected by :meth:`_finish`."""
        from pypsrp.powershell import PowerShell

        log.debug("%s", cmdlet)
        self.calls += 1
        shell = PowerShell(self.pool)
        shell.add_cmdlet(cmdlet.name)
        for name, value in cmdlet.parameters.items():
            shell.add_parameter(name, value)
        try:
            shell.begin_invoke()
        except Exception as error:  # noqa: BLE001 (pypsrp's own errors: the pipeline failed as a whole)
            raise CmdletError("invoke", str(cmdlet), None, _line(error)) from None
        return shell

    def _finish(self, cmdlet: Cmdlet, shell) -> tuple[list[dict], list[str]]:
        """(objects, error messages) of a pipeline :meth:`_start` sent."""
        from pypsrp.complex_objects import PSInvocationState
        try:
            output = shell.end_invoke()
        except Exception as error:  # noqa: BLE001
            raise CmdletError("invoke", str(cmdlet), None, _line(error)) from None
        errors = [_error_text(record) for record in shell.streams.error]
        if shell.state != PSInvocationState.COMPLETED:  # stopped or failed: what came may be a part
            raise CmdletError("invoke", str(cmdlet), None,
                              f"the pipeline ended {shell.state}" + (f": {'; '.join(errors)}" if errors else ""))
        try:
            return [as_dict(item) for item in output or ()], errors
        except ValueError as error:
            raise CmdletError("invoke", str(cmdlet), None, str(error)) from None

    def invoke(self, cmdlet: Cmdlet, select: Iterable[str] = ()) -> Iterator[dict]:
        """The cmdlet's objects; errors written for single objects are kept in :attr:`errors`."""
        objects, errors = self._finish(cmdlet, self._start(cmdlet))
        for message in errors:
            log.warning("%s: %s", cmdlet, message)
            self.errors.append((cmdlet.name, _object_of(message), message))
        yield from objects

    def invoke_many(self, cmdlets: list[Cmdlet], *, batch: bool = True, concurrency: int | None = None,
                    select: Iterable[str] = ()) -> list[list[dict] | ApiError]:
        """Each cmdlet's objects, or the error Exchange wrote when it gave none, in order.

        ``concurrency`` pipelines are sent before the first answer is collected, so the server
        runs them side by side. Sending and collecting stay in this one thread: pypsrp 0.9.1's
        runspace pool shares one serializer between its pipelines, and pipelines created from
        several threads at once corrupt each other's messages (seen against the test endpoint:
        the server could not read the object references of two interleaved CreatePipeline
        messages)."""
        width = min(self.concurrency, concurrency or self.concurrency)
        results: list[list[dict] | ApiError] = []
        for start in range(0, len(cmdlets), width):
            chunk = cmdlets[start:start + width]
            started = []
            for cmdlet in chunk:
                try:
                    started.append(self._start(cmdlet))
                except CmdletError as error:
                    started.append(error)
            for cmdlet, shell in zip(chunk, started):
                if isinstance(shell, CmdletError):
                    results.append(shell)
                    continue
                objects, errors = self._finish(cmdlet, shell)
                if errors and not objects:
                    results.append(CmdletError("invoke", str(cmdlet), None, "; ".join(errors)))
                    continue
                for message in errors:
                    self.errors.append((cmdlet.name, _object_of(message), message))
                results.append(objects)
        return results


def _count_round_trips(wsman) -> None:
    """Count the HTTP round trips pypsrp makes (a run reports them): its transport's sends."""
    wsman.round_trips = 0
    lock, send = threading.Lock(), wsman.transport.send

    def counted(*args, **kwargs):
        with lock:
            wsman.round_trips += 1
        return send(*args, **kwargs)

    wsman.transport.send = counted


# -- deserialised objects to plain values -------------------------------------------------------------


def plain(value):
    """A deserialised CLIXML value as JSON-able Python: GUIDs as text, enums by name, and
    multi-valued properties as lists, also when pypsrp hands the list over as the raw
    ``<LST>…</LST>`` text of a type it does not know (EmailAddresses, §2.4)."""
    from pypsrp.complex_objects import GenericComplexObject

    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (list, tuple, set)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, GenericComplexObject):
        for item in value.property_sets:
            if isinstance(item, str) and item.lstrip().startswith("<LST"):
                return [_list_item(element) for element in ElementTree.fromstring(item)]
            if isinstance(item, (list, tuple)):
                return [plain(v) for v in item]
        if value.to_string is not None:
            return value.to_string
        if value.adapted_properties or value.extended_properties:
            return as_dict(value)
        return str(value)
    return str(value)


def _list_item(element) -> str:
    """One item of a raw ``<LST>``: a string, or an object (an enum value) by its ToString."""
    text = element.text if element.tag == "S" else element.findtext("ToString")
    if text is None:
        raise ValueError(f"cannot read a list item <{element.tag}> of {ElementTree.tostring(element)[:120]!r}")
    return text


def as_dict(item) -> dict:
    """A deserialised object's properties (adapted over extended) as plain values."""
    adapted = getattr(item, "adapted_properties", None)
    if adapted is None:
        return {"Value": plain(item)}
    properties = {**(getattr(item, "extended_properties", None) or {}), **adapted}
    # On-premise the object's own Guid (AD's objectGUID) is its id: an Entra id written back by a
    # hybrid sync would make the anchor differ from extract-ldap's for the same person
    properties.pop("ExternalDirectoryObjectId", None)
    return {str(name): plain(value) for name, value in properties.items()}


def _error_text(record) -> str:
    """An ErrorRecord as its message (what Exchange would print), on one line."""
    exception = getattr(record, "exception", None)
    candidates = [getattr(record, "details_message", None), getattr(record, "to_string", None),
                  (getattr(exception, "adapted_properties", None) or {}).get("Message"),
                  getattr(exception, "to_string", None), getattr(record, "message", None),
                  getattr(record, "reason", None)]
    text = next((c for c in candidates if isinstance(c, str) and c.strip()), None)
    return _line(text if text is not None else record)


def _object_of(message: str) -> str:
    """The object an Exchange error names ('... object 'x' couldn't be found ...'), else ''."""
    start = message.find("'")
    end = message.find("'", start + 1)
    return message[start + 1:end] if 0 <= start < end else ""


def _certificate_reason(error: BaseException) -> str:
    """ssl's reason ("unable to get local issuer certificate"), not requests' wrapping of it."""
    import ssl

    for cause in causes_of(error):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return cause.verify_message or str(cause.reason)
    return _line(error)


def _title(page: str) -> str:
    """A web page's title, or the start of its text, to say which page answered."""
    import re

    found = re.search(r"<title[^>]*>(.*?)</title>", page, re.I | re.S) or re.search(r"<body[^>]*>(.*?)<", page,
                                                                                     re.I | re.S)
    return _line(found.group(1))[:80] if found and found.group(1).strip() else ""


def _line(text) -> str:
    return " ".join(str(text).split())[:500]
