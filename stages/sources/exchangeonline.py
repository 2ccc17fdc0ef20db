"""Exchange Online as directory records: the logic behind zivsync-extract-exo.

No PowerShell: tokens come from msal (app-only with a certificate or a secret, or an
administrator's device-code sign-in), and the cmdlets run through the Exchange Online admin
API's ``InvokeCommand`` (reference/exchange.md §1), every page followed to the last, per-mailbox
calls packed ten to a ``$batch``. Requests go by the one retry policy of :mod:`stages.http`.

Full Access lives only here (Microsoft Graph does not have it), so this is where delegates of
shared mailboxes come from: ``Get-MailboxPermission`` on each shared mailbox, trustees
resolved to mailboxes and groups, and groups given with their members (zivsync-normalize
expands nested groups, cycles included).
"""

from __future__ import annotations

import fnmatch
import logging
import re
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator
from urllib.parse import urlsplit

import orjson
import requests

from ..core.errors import ServerUnreachable, ZivsyncError
from ..core.http import MAX_WAIT, ApiError, AuthError, HttpClient, in_words

log = logging.getLogger("zivsync")

MAILBOX_KINDS = {"UserMailbox": "user", "SharedMailbox": "shared", "RoomMailbox": "room",
                 "EquipmentMailbox": "equipment"}
KIND_NAMES = {kind: name for name, kind in MAILBOX_KINDS.items()}  # user -> UserMailbox
MAILBOX_PROPERTIES = ("Guid", "ExternalDirectoryObjectId", "PrimarySmtpAddress", "EmailAddresses", "DisplayName",
                      "UserPrincipalName", "Alias", "Name", "Identity", "RecipientTypeDetails", "AccountDisabled",
                      "SamAccountName", "DistinguishedName")
GROUP_PROPERTIES = ("Guid", "ExternalDirectoryObjectId", "PrimarySmtpAddress", "EmailAddresses", "DisplayName",
                    "Name", "Alias", "Identity", "RecipientTypeDetails", "SamAccountName", "DistinguishedName")
SECURITY_GROUP = "MailUniversalSecurityGroup"
# What Exchange's own module sends as routing hint for app-only calls (exchange.md §1.2)
SYSTEM_MAILBOX = "SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}"
BATCH_LIMIT = 10  # requests per $batch that the admin API takes


@dataclass(frozen=True)
class Cloud:
    """Where a Microsoft cloud's endpoints are (sovereign clouds differ)."""

    authority_host: str = "https://login.microsoftonline.com"
    exchange_url: str = "https://outlook.office365.com"
    graph_url: str = "https://graph.microsoft.com"


CLOUDS = {
    "global": Cloud(),
    "usgov-gcchigh": Cloud("https://login.microsoftonline.us", "https://outlook.office365.us",
                           "https://graph.microsoft.us"),
    "usgov-dod": Cloud("https://login.microsoftonline.us", "https://outlook-dod.office365.us",
                       "https://dod-graph.microsoft.us"),
    "china": Cloud("https://login.chinacloudapi.cn", "https://outlook.office365.cn",
                   "https://microsoftgraph.chinacloudapi.cn"),
}


class ExoFailure(ServerUnreachable):
    """Could not sign in to or reach Exchange Online: exit 4."""


# -- signing in -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Login:
    """Who signs in, and how: exactly one of a secret, a certificate (PEM key with its
    certificate or thumbprint, or a PFX file) or an administrator's device-code sign-in."""

    tenant: str
    client_id: str
    secret: str | None = field(default=None, repr=False)
    key_file: Path | None = None  # PEM private key (the certificate may be in the same file)
    certificate_file: Path | None = None  # PEM certificate: its thumbprint, and sent along (x5c)
    thumbprint: str | None = None
    pfx_file: Path | None = None
    passphrase: str | None = field(default=None, repr=False)
    device_code: bool = False

    def method(self) -> str:
        chosen = [name for name, given in (("secret", self.secret), ("certificate", self.key_file),
                                           ("pfx", self.pfx_file), ("device code", self.device_code)) if given]
        if len(chosen) != 1:
            raise ZivsyncError("sign in one way: a client secret (ZIVSYNC_EXO_CLIENT_SECRET or --client-secret-file), "
                               "a certificate (--certificate-key with --certificate or --thumbprint), a PFX file "
                               "(--pfx) or --device-code" + (f"; given: {', '.join(chosen)}" if chosen else ""))
        return chosen[0]

    def credential(self) -> str | dict:
        """What msal takes as client_credential."""
        method = self.method()
        if method == "secret":
            return self.secret
        if method == "pfx":
            credential = {"private_key_pfx_path": str(self.pfx_file), "public_certificate": True}
            if self.passphrase:
                credential["passphrase"] = self.passphrase
            return credential
        key = _read(self.key_file, "certificate key")
        certificate = _read(self.certificate_file, "certificate") if self.certificate_file else None
        if certificate is None and "BEGIN CERTIFICATE" in key:
            certificate = key
        thumbprint = self.thumbprint or (_thumbprint(certificate) if certificate else None)
        if not thumbprint:
            raise ZivsyncError("a certificate key needs its certificate (--certificate) or --thumbprint")
        credential = {"private_key": key, "thumbprint": thumbprint.replace(":", "").lower()}
        if certificate:
            credential["public_certificate"] = certificate
        if self.passphrase:
            credential["passphrase"] = self.passphrase
        return credential


def _read(path: Path | None, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ZivsyncError(f"cannot read the {what} file {path}: {error.strerror}") from None


def _thumbprint(pem: str) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    return x509.load_pem_x509_certificate(pem.encode()).fingerprint(hashes.SHA1()).hex()


class _VerifyingSession(requests.Session):
    """A session whose CA setting wins over REQUESTS_CA_BUNDLE (msal sends through it)."""

    def request(self, *args, **kwargs):
        kwargs.setdefault("verify", self.verify)
        return super().request(*args, **kwargs)


class Tokens:
    """One msal application for the run; access tokens from its cache, renewed when they
    expire (msal does that a few minutes early) or when an API says one is no longer good."""

    def __init__(self, login: Login, cloud: Cloud, *, verify: bool | str = True, timeout: float = 30.0,
                 prompt: Callable[[str], None] | None = None):
        import msal
        self.login, self.cloud = login, cloud
        self.prompt = prompt or (lambda text: log.warning("%s", text))
        session = _VerifyingSession()
        session.verify = self.verify = verify
        authority = f"{cloud.authority_host.rstrip('/')}/{login.tenant}"
        host = urlsplit(cloud.authority_host).hostname or ""
        options = dict(authority=authority, http_client=session, timeout=timeout,
                       instance_discovery=None if host in msal.authority.WELL_KNOWN_AUTHORITY_HOSTS else False)
        self.lock = threading.Lock()
        self.requests = 0
        try:
            if login.method() == "device code":
                self.app = msal.PublicClientApplication(login.client_id, **options)
            else:
                self.app = msal.ConfidentialClientApplication(login.client_id, client_credential=login.credential(),
                                                              **options)
        except requests.RequestException as error:  # first: requests' errors are OSErrors too
            raise ExoFailure(f"cannot reach {authority}: {in_words(error, verify, authority)}") from None
        except (ValueError, TypeError, OSError) as error:  # a bad key, PFX or (missing) passphrase
            raise ExoFailure(f"cannot set up the sign-in to {authority}: {_first_line(error)}") from None

    def token(self, resource: str, renew: bool = False) -> str:
        scopes = [f"{resource.rstrip('/')}/.default"]
        with self.lock:
            try:
                result = self._acquire(scopes, renew)
            except requests.RequestException as error:
                raise ExoFailure(f"cannot reach the sign-in service {self.cloud.authority_host}: "
                                 f"{in_words(error, self.verify, self.cloud.authority_host)}") from None
            except ValueError as error:
                raise ExoFailure(f"sign-in failed: {_first_line(error)}") from None
        if "access_token" not in result:
            raise ExoFailure(f"sign-in to tenant {self.login.tenant} as application {self.login.client_id} failed: "
                             f"{result.get('error')}: {_first_line(result.get('error_description', ''))}")
        return result["access_token"]

    def _acquire(self, scopes: list[str], renew: bool) -> dict:
        if self.login.device_code:
            accounts = self.app.get_accounts()
            if accounts:
                result = self.app.acquire_token_silent(scopes, account=accounts[0], force_refresh=renew)
                if result:
                    return result
            flow = self.app.initiate_device_flow(scopes=scopes)
            if "user_code" not in flow:
                return flow
            self.prompt(flow["message"])  # "To sign in, use a web browser to open ... and enter the code ..."
            self.requests += 1
            return self.app.acquire_token_by_device_flow(flow)
        if renew:  # the API turned the cached token down: drop it so that msal asks for a new one
            self.app.remove_tokens_for_client()
        result = self.app.acquire_token_for_client(scopes=scopes)
        if result.get("token_source") == "identity_provider":
            self.requests += 1
        return result


# -- the admin API ----------------------------------------------------------------------------


class Cmdlet:
    """A cmdlet with its parameters, as InvokeCommand takes it and as PowerShell would show it."""

    def __init__(self, name: str, **parameters):
        self.name, self.parameters = name, parameters

    def body(self) -> dict:
        return {"CmdletInput": {"CmdletName": self.name, "Parameters": self.parameters}}

    def __str__(self) -> str:
        def value(v):
            if isinstance(v, bool):
                return "$" + str(v).lower()
            if isinstance(v, (list, tuple)):
                return ",".join(value(i) for i in v)
            text = str(v)
            return text if text.replace("-", "").replace(".", "").isalnum() else "'" + text.replace("'", "''") + "'"
        return " ".join([self.name, *(f"-{k} {value(v)}" for k, v in self.parameters.items())])


RENEWALS = 3  # new tokens for one request, at most


def _expired(response: requests.Response) -> bool:
    """Whether a 401 says the token's lifetime ran out (Exchange Online: "Lifetime validation
    failed, the token is expired." with the code ExpiredToken), rather than that it is refused."""
    text = response.text[:2000]
    return "ExpiredToken" in text or "token is expired" in text


class CmdletError(ApiError):
    """Exchange refused or failed one cmdlet; the message is Exchange's own."""


class ExchangeApi(HttpClient):
    """The Exchange Online admin API (``/adminapi/beta/{tenant}``) for one tenant."""

    def __init__(self, cloud: Cloud, tenant: str, tokens: Tokens, *, page_size: int = 1000, **options):
        super().__init__(f"{cloud.exchange_url.rstrip('/')}/adminapi/beta/{tenant}", **options)
        self.resource, self.tokens, self.page_size = cloud.exchange_url, tokens, page_size
        self.tenant = tenant
        self.session.headers.update({
            "X-AnchorMailbox": f"UPN:{SYSTEM_MAILBOX}@{tenant}", "X-ResponseFormat": "json",
            "Prefer": f"odata.maxpagesize={page_size}", "Content-Type": "application/json",
            "connection-id": str(uuid.uuid4())})
        self.calls = 0  # cmdlet calls, batched or not
        self.errors: list[tuple[str, str, str]] = []  # (cmdlet, object, message) written for one object
        self._lock = threading.Lock()

    def before_send(self, method: str, url: str, kwargs: dict) -> None:
        headers = kwargs.setdefault("headers", {})
        headers["Authorization"] = f"Bearer {self.tokens.token(self.resource)}"
        headers["client-request-id"] = str(uuid.uuid4())

    def error_message(self, response: requests.Response) -> str:
        return odata_error(response.content, response.reason)

    def _post(self, url: str, body: dict, what: str) -> dict:
        """POST (safe to repeat: these are all Get- cmdlets), with a new token when the API says
        the one sent is no longer good: once for any 401, up to three times when it says the
        token expired (a renewed token can age out again while the request waits out a 429)."""
        data = orjson.dumps(body)
        for attempt in range(1, RENEWALS + 2):
            response = self.send("POST", url, idempotent=True, data=data)
            if response.status_code != 401 or attempt > RENEWALS or (attempt > 1 and not _expired(response)):
                break
            log.debug("the API refused the access token (401): getting a new one")
            self.tokens.token(self.resource, renew=True)
        status = response.status_code
        if status in (401, 403):
            raise AuthError("POST", url, status, permission_message(status, self.error_message(response)))
        if status >= 400:
            raise CmdletError("POST", what, status, self.error_message(response))
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:  # a proxy's or gateway's page instead of the API's answer: wrong server
            kind = response.headers.get("Content-Type", "").split(";")[0].strip() or "no content type"
            start = " ".join(response.content[:200].decode("utf-8", "replace").split())
            raise ExoFailure(f"{self.base} does not answer as Exchange Online's admin API ({kind}, not JSON, "
                             f"HTTP {status} to {what}): a proxy's or a portal's page? It begins: {start}") from None

    def invoke(self, cmdlet: Cmdlet, select: Iterable[str] = ()) -> Iterator[dict]:
        """Every object the cmdlet returns, page after page (the next page is the same body
        POSTed to ``@odata.nextLink``), OData annotations left out."""
        url = "/InvokeCommand" + (f"?$select={','.join(select)}" if select else "")
        log.debug("%s  (POST %s/InvokeCommand)", cmdlet, self.base)
        self._count()
        seen = set()
        while url:
            seen.add(url)
            page = self._post(url, cmdlet.body(), str(cmdlet))
            self._note_errors(cmdlet, page)
            yield from (_clean(item) for item in page.get("value") or ())
            url = _next_link(page, seen, cmdlet)

    def invoke_many(self, cmdlets: list[Cmdlet], *, batch: bool = True, concurrency: int = 4,
                    select: Iterable[str] = ()) -> list[list[dict] | ApiError]:
        """Each cmdlet's objects (or the error it ended in), in order: ten to a ``$batch``
        request, ``concurrency`` requests at a time."""
        select = tuple(select)
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            if not batch:
                return list(pool.map(lambda cmdlet: self._invoke_listed(cmdlet, select), cmdlets))
            chunks = [cmdlets[i:i + BATCH_LIMIT] for i in range(0, len(cmdlets), BATCH_LIMIT)]
            results = list(pool.map(lambda chunk: self._batch(chunk, select), chunks))
        return [result for chunk in results for result in chunk]

    def _invoke_listed(self, cmdlet: Cmdlet, select: tuple) -> list[dict] | ApiError:
        try:
            return list(self.invoke(cmdlet, select))
        except CmdletError as error:
            return error

    def _batch(self, cmdlets: list[Cmdlet], select: tuple) -> list[list[dict] | ApiError]:
        """One ``$batch``; items the API throttled or failed for a passing reason are asked again."""
        url = f"{self.base}/InvokeCommand" + (f"?$select={','.join(select)}" if select else "")
        results: dict[int, list[dict] | ApiError] = {}
        pending, rounds = list(range(len(cmdlets))), 0
        while pending:
            rounds += 1
            body = {"requests": [{"id": str(i), "method": "POST", "url": url, "body": cmdlets[i].body(),
                                  "headers": {"Content-Type": "application/json"}} for i in pending]}
            for i in pending:
                log.debug("%s  (in a $batch)", cmdlets[i])
            self._count(len(pending))
            answer = self._post("/$batch", body, f"$batch of {len(pending)}")
            again, wait = [], 0.0
            for item in answer.get("responses") or ():
                i, status, content = int(item["id"]), int(item.get("status", 500)), item.get("body") or {}
                if status == 429 or status >= 500:
                    if rounds <= self.retries:
                        again.append(i)
                        headers = {k.lower(): v for k, v in (item.get("headers") or {}).items()}
                        wait = max(wait, _seconds(headers.get("retry-after"), 1.0 if status == 429 else 0.5))
                        self.stats.count("throttled" if status == 429 else "retries")
                        continue
                if status in (401, 403):
                    raise AuthError("POST", str(cmdlets[i]), status,
                                    permission_message(status, odata_error(orjson.dumps(content), "")))
                if status >= 400:
                    results[i] = CmdletError("POST", str(cmdlets[i]), status, odata_error(orjson.dumps(content), ""))
                    continue
                self._note_errors(cmdlets[i], content)
                objects = [_clean(o) for o in content.get("value") or ()]
                if content.get("@odata.nextLink"):  # a long answer: the rest page by page
                    objects += self._rest(content["@odata.nextLink"], cmdlets[i])
                results[i] = objects
            missing = [i for i in pending if i not in results and i not in again]
            for i in missing:
                results[i] = CmdletError("POST", str(cmdlets[i]), None, "no answer in the $batch response")
            pending = again
            if pending:
                self.sleep(wait)
        return [results[i] for i in range(len(cmdlets))]

    def _rest(self, url: str, cmdlet: Cmdlet) -> list[dict]:
        objects, seen = [], set()
        while url:
            seen.add(url)
            page = self._post(url, cmdlet.body(), str(cmdlet))
            self._note_errors(cmdlet, page)
            objects += [_clean(o) for o in page.get("value") or ()]
            url = _next_link(page, seen, cmdlet)
        return objects

    def _count(self, calls: int = 1) -> None:
        with self._lock:
            self.calls += calls

    def _note_errors(self, cmdlet: Cmdlet, answer: dict) -> None:
        """Errors a cmdlet wrote for single objects while answering 200 (``@adminapi.errors``):
        kept, like the on-premise error stream, to become error records."""
        for error in answer.get("@adminapi.errors") or ():
            message = error.get("message") or error.get("Message") if isinstance(error, dict) else str(error)
            self.errors.append((cmdlet.name, "", " ".join(str(message).split())[:500]))
        for warning in answer.get("@adminapi.warnings") or ():
            log.warning("%s: %s", cmdlet, warning)


def _clean(item: dict) -> dict:
    """An object without its OData annotations (keys with '@')."""
    return {k: v for k, v in item.items() if "@" not in k}


def _seconds(value, default: float) -> float:
    try:
        return min(float(value), MAX_WAIT)
    except (TypeError, ValueError):
        return default


def _next_link(page: dict, seen: set, cmdlet: Cmdlet) -> str | None:
    link = page.get("@odata.nextLink")
    if link and link in seen:  # the same page again: following it would never end
        raise CmdletError("POST", str(cmdlet), None, "the service sent the same next page again")
    return link


def odata_error(content: bytes, fallback: str) -> str:
    """Exchange's own message from an OData error body: ``error.details[0].message`` (its
    ``Ex…|Type|text`` form cut to the text), else the inner exception's, else ``error.message``."""
    try:
        error = orjson.loads(content).get("error") or {}
    except (orjson.JSONDecodeError, AttributeError):
        return (content.decode("utf-8", "replace").strip() or fallback)[:500]
    details = error.get("details") or [{}]
    inner = (error.get("innererror") or {})
    inner = inner.get("internalException") or inner.get("internalexception") or {}
    message = details[0].get("message") or inner.get("message") or error.get("message") or fallback
    parts = str(message).split("|")
    text = parts[-1] if len(parts) >= 3 else str(message)
    kind = parts[1].rsplit(".", 1)[-1] if len(parts) >= 3 else error.get("code")
    return f"{text.strip()} ({kind})" if kind else text.strip()


def permission_message(status: int, message: str) -> str:
    return (f"{message}: the application may not read Exchange Online. It needs the Office 365 Exchange Online "
            "application permission Exchange.ManageAsApp (admin consent granted) and an Exchange role: the "
            "Global Reader or Exchange Administrator role in Entra ID, or an Exchange role group given to its "
            "service principal")


def _first_line(error) -> str:
    return " ".join(str(error).split())[:400]


# -- reading the tenant -----------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """What to read from the tenant, and how to describe it."""

    mailbox_kinds: tuple[str, ...] = ("UserMailbox", "SharedMailbox", "RoomMailbox", "EquipmentMailbox")
    user_mailbox_permissions: bool = False  # Full Access on user mailboxes too (one call each)
    claimed_domains: tuple[str, ...] = ()  # only mailboxes whose primary address is in one
    address_filters: tuple[str, ...] = ()  # only mailboxes with an address matching one ('*@sales.contoso.com')
    member_of: tuple[str, ...] = ()  # only mailboxes that are (nested) members of one of these groups
    source: str = "exo"

    @classmethod
    def of(cls, kinds: Iterable[str], user_mailbox_permissions: bool, claimed_domains: Iterable[str],
           address_filters: Iterable[str], member_of: Iterable[str], source: str) -> "Scope":
        """From the command line's words (kinds as user, shared, room, equipment)."""
        return cls(mailbox_kinds=tuple(KIND_NAMES[k] for k in kinds), user_mailbox_permissions=user_mailbox_permissions,
                   claimed_domains=tuple(d.lower() for d in claimed_domains), address_filters=tuple(address_filters),
                   member_of=tuple(member_of), source=source)

    def authority(self) -> dict:
        """What a stream read with this scope speaks for (the header's ``authority``): the
        mailbox kinds it was asked for, the groups, Full Access on shared mailboxes (and on user
        mailboxes when asked), SSO keys (the object id); no phone numbers; and the scope."""
        scope = {key: list(getattr(self, key)) for key in ("claimed_domains", "address_filters", "member_of")
                 if getattr(self, key)}
        kinds = [MAILBOX_KINDS[k] for k in self.mailbox_kinds]
        full_access = [k for k in ("shared", "user") if k in kinds and (k == "shared" or self.user_mailbox_permissions)]
        return {"source": self.source, "people": True, "mailbox_kinds": kinds, "groups": True,
                "full_access": full_access, "phone": False, "sso_key": True, "scope": scope}

    def describe(self) -> dict:
        """For the stream's header: what was read."""
        described = {"name": self.source, "mailbox_kinds": list(self.mailbox_kinds)}
        for key in ("claimed_domains", "address_filters", "member_of"):
            if getattr(self, key):
                described[key] = list(getattr(self, key))
        return described


def addresses_of(item: dict) -> tuple[str | None, list[str]]:
    """(primary, every SMTP address, primary first), lower-cased; SIP:, X500: and the like left
    out, and so are addresses that are not addresses ('smtp:jan@contoso'), counted in
    :data:`MALFORMED`: one odd proxy address must not stop the night's read."""
    primary = _valid((item.get("PrimarySmtpAddress") or "").strip().lower())
    addresses = [primary] if primary else []
    for entry in item.get("EmailAddresses") or ():
        kind, _, address = str(entry).partition(":")
        if kind.lower() != "smtp":
            continue
        address = _valid(address.strip().lower())
        if address and address not in addresses:
            if kind == "SMTP" and not primary:
                addresses.insert(0, address)
                primary = address
            else:
                addresses.append(address)
    return primary, addresses


MALFORMED: Counter = Counter()
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")  # the schemas' test for an address


def _valid(address: str) -> str | None:
    if not address:
        return None
    if EMAIL.match(address) and len(address) <= 320:
        return address
    MALFORMED["malformed e-mail address left out"] += 1
    return None


def object_id(item: dict) -> str:
    """An Exchange object's id: its Entra ID object id (what Graph and SSO know), else its Guid."""
    return str(item.get("ExternalDirectoryObjectId") or item.get("Guid") or "").lower()


def person_record(mailbox: dict, source: str) -> dict:
    primary, addresses = addresses_of(mailbox)
    anchor = object_id(mailbox)
    disabled = None if mailbox.get("AccountDisabled") is None else _flag(mailbox["AccountDisabled"])
    record = {
        "type": "person", "source": source, "anchor": anchor, "upn": mailbox.get("UserPrincipalName") or None,
        "mail": primary, "addresses": addresses, "display_name": mailbox.get("DisplayName") or None,
        "enabled": None if disabled is None else not disabled,
        "mailbox": MAILBOX_KINDS.get(mailbox.get("RecipientTypeDetails"), "none"),
        # the Entra object id in the cloud; on-premise the Guid, which is AD's objectGUID there
        "sso_key": mailbox.get("ExternalDirectoryObjectId") or anchor,
    }
    for field_name, key in (("dn", "DistinguishedName"), ("sam_account_name", "SamAccountName")):
        if mailbox.get(key):
            record[field_name] = mailbox[key]
    return record


def group_record(group: dict, members: list[dict], source: str) -> dict:
    primary, addresses = addresses_of(group)
    return {
        "type": "group", "source": source, "id": object_id(group),
        "name": group.get("DisplayName") or group.get("Name") or primary or object_id(group),
        "mail": primary, "addresses": addresses, "mail_enabled": primary is not None,
        "security_enabled": group.get("RecipientTypeDetails") == SECURITY_GROUP,
        "members": [object_id(m) for m in members if object_id(m)],
    }


class Names:
    """Finds the mailbox or group a permission's ``User`` (or a filter) names, by any of the
    names Exchange uses. Ids, addresses, UPNs, sAMAccountNames and DNs name one object; an
    alias, name or display name that two objects share names neither (the caller then asks
    Exchange, which says which, or that it is ambiguous) instead of whichever came first."""

    STRONG = ("UserPrincipalName", "Identity", "Guid", "ExternalDirectoryObjectId", "SamAccountName",
              "DistinguishedName")
    WEAK = ("Alias", "Name", "DisplayName")

    def __init__(self):
        self.strong: dict[str, dict] = {}
        self.weak: dict[str, dict | None] = {}  # None: more than one object has this name

    def add(self, item: dict) -> None:
        _, addresses = addresses_of(item)
        for name in (*addresses, *(item.get(key) for key in self.STRONG)):
            if name:
                self.strong.setdefault(str(name).strip().lower(), item)
        for name in (item.get(key) for key in self.WEAK):
            if name:
                key = str(name).strip().lower()
                known = self.weak.get(key, item)
                self.weak[key] = item if known is item or object_id(known or {}) == object_id(item) else None

    def remember(self, name: str, item: dict) -> None:
        """What Exchange said ``name`` stands for."""
        self.strong[name.strip().lower()] = item

    def find(self, name: str) -> dict | None:
        """By any name; ``DOMAIN\\sam`` (how on-premise permissions name people) by its sam."""
        key = name.strip().lower()
        found = self.strong.get(key) or self.weak.get(key)
        if found is None and "\\" in key:
            found = self.strong.get(key.rpartition("\\")[2])
        return found


def is_principal_without_mailbox(user: str) -> bool:
    """NT AUTHORITY\\SELF, orphaned SIDs and the like: nobody to resolve."""
    text = user.strip().upper()
    return text.startswith("NT AUTHORITY\\") or text.startswith("S-1-")


class Reader:
    """Reads one tenant into directory records (see the module docstring)."""

    def __init__(self, api: ExchangeApi, scope: Scope, *, batch: bool = True, concurrency: int = 4):
        self.api, self.scope, self.batch, self.concurrency = api, scope, batch, concurrency
        self.names = Names()
        self.errors: list[dict] = []
        self.tally: Counter = Counter()  # what was read and where it went (the stream's end says it too)

    def records(self) -> Iterator[dict]:
        everyone = list(self.api.invoke(Cmdlet("Get-Mailbox", RecipientTypeDetails=list(self.scope.mailbox_kinds),
                                               ResultSize="Unlimited"), MAILBOX_PROPERTIES))
        groups = list(self.api.invoke(Cmdlet("Get-DistributionGroup", ResultSize="Unlimited"), GROUP_PROPERTIES))
        for item in (*everyone, *groups):  # out-of-scope mailboxes too: they are trustees by name
            self.names.add(item)
        mailboxes = self.in_scope(everyone)
        members = self.members(groups)
        if self.scope.member_of:
            mailboxes = self._members_only(mailboxes, groups, members)
        log.info("%d mailboxes, %d groups", len(mailboxes), len(groups))
        yield from (person_record(m, self.scope.source) for m in mailboxes)
        yield from (group_record(g, members.get(object_id(g), []), self.scope.source) for g in groups)
        yield from self.permissions(mailboxes)
        for cmdlet, what, message in getattr(self.api, "errors", ()):  # written for one object, run went on
            self._error(what or "?", cmdlet, message)
        yield from self.errors
        for note, number in MALFORMED.items():
            log.warning("%d× %s", number, note)

    def in_scope(self, mailboxes: list[dict]) -> list[dict]:
        """The mailboxes the claimed domains and address filters leave in."""
        patterns = [p.lower() for p in self.scope.address_filters]
        found = []
        for item in mailboxes:
            primary, addresses = addresses_of(item)
            if not object_id(item):
                self._error(item.get("Identity") or primary or "?", "Get-Mailbox", "the mailbox has no id")
                continue
            if self.scope.claimed_domains and (primary or "").rpartition("@")[2] not in self.scope.claimed_domains:
                continue
            if patterns and not any(fnmatch.fnmatchcase(a, p) for a in addresses for p in patterns):
                continue
            found.append(item)
        return found

    def members(self, groups: list[dict]) -> dict[str, list[dict]]:
        """Each group's direct members, by the group's id."""
        cmdlets = [Cmdlet("Get-DistributionGroupMember", Identity=str(g.get("Guid") or object_id(g)),
                          ResultSize="Unlimited") for g in groups]
        answers = self.api.invoke_many(cmdlets, batch=self.batch, concurrency=self.concurrency)
        members: dict[str, list[dict]] = {}
        for group, answer in zip(groups, answers):
            if isinstance(answer, ApiError):
                self._error(group.get("PrimarySmtpAddress") or object_id(group), "Get-DistributionGroupMember",
                            answer.message)
                continue
            members[object_id(group)] = answer
        return members

    def _members_only(self, mailboxes: list[dict], groups: list[dict], members: dict[str, list[dict]]) -> list[dict]:
        """The mailboxes among the nested members of the --member-of groups (cycles end)."""
        wanted: set[str] = set()
        for name in self.scope.member_of:
            start = self.names.find(name)
            if start is None or object_id(start) not in members and start not in groups:
                raise ZivsyncError(f"--member-of {name!r}: no such group in Exchange Online")
            pending, seen = [object_id(start)], {object_id(start)}
            while pending:
                for member in members.get(pending.pop(), ()):
                    member_id = object_id(member)
                    wanted.add(member_id)
                    if member_id in members and member_id not in seen:
                        seen.add(member_id)
                        pending.append(member_id)
        return [m for m in mailboxes if object_id(m) in wanted]

    def permissions(self, mailboxes: list[dict]) -> Iterator[dict]:
        """Full Access entries on shared mailboxes (and user mailboxes when asked), trustees
        named by id where Exchange knows them. Every answer is read in each shape Exchange uses
        (:func:`permission_entries`, :func:`rights_of`); an entry in any other shape is an error
        record naming the mailbox and what was not understood, never silently nothing."""
        kinds = {"SharedMailbox"} | ({"UserMailbox"} if self.scope.user_mailbox_permissions else set())
        targets = [m for m in mailboxes if m.get("RecipientTypeDetails") in kinds]
        cmdlets = [Cmdlet("Get-MailboxPermission", Identity=str(m.get("Guid") or object_id(m))) for m in targets]
        answers = self.api.invoke_many(cmdlets, batch=self.batch, concurrency=self.concurrency)
        unresolved: dict[str, dict | None] = {}
        rows = []
        for mailbox, answer in zip(targets, answers):
            where = mailbox.get("PrimarySmtpAddress") or object_id(mailbox)
            if isinstance(answer, ApiError):
                self._error(where, "Get-MailboxPermission", answer.message)
                continue
            for row in answer:
                self.tally["permission entries read"] += 1
                try:
                    entries = permission_entries(row)
                except NotUnderstood as problem:
                    self._not_understood(where, problem)
                    continue
                for entry in entries:
                    try:
                        rights = rights_of(entry.get("AccessRights"))
                    except NotUnderstood as problem:
                        self._not_understood(where, NotUnderstood(f"the entry for {entry.get('User')!r}: {problem}"))
                        continue
                    if "FullAccess" not in rights:
                        self.tally["left out: not Full Access"] += 1
                        continue
                    user = entry.get("User")
                    if not isinstance(user, str) or not user.strip():
                        self._not_understood(where, NotUnderstood(f"a Full Access entry names no User ({user!r})"))
                        continue
                    # missing is not "no": a grant read as direct and not denied would add a delegate
                    if any(entry.get(key) is None or _flag(entry.get(key)) is None for key in ("Deny", "IsInherited")):
                        self._error(where, "Get-MailboxPermission",
                                    f"cannot read Deny={entry.get('Deny')!r} / IsInherited={entry.get('IsInherited')!r} "
                                    f"of the entry for {user!r}")
                        self.tally["left out: shape not understood"] += 1
                        continue
                    user = user.strip()
                    if not is_principal_without_mailbox(user) and self.names.find(user) is None:
                        unresolved[user.lower()] = None
                    rows.append((mailbox, user, rights, entry))
        yield from self._resolve(unresolved)
        for mailbox, user, rights, row in rows:
            found = self.names.find(user)
            self.tally["Full Access entries used"] += 1
            yield {"type": "permission", "source": self.scope.source, "mailbox": object_id(mailbox),
                   "trustee": object_id(found) if found else user, "rights": rights,
                   "inherited": _flag(row.get("IsInherited")), "deny": _flag(row.get("Deny"))}
        if self.tally["permission entries read"] and not rows:
            log.warning("Get-MailboxPermission answered %d entries on %d mailboxes but none was a Full Access grant "
                        "zivsync could use: %s", self.tally["permission entries read"], len(targets),
                        ", ".join(f"{k}: {n}" for k, n in sorted(self.tally.items()) if k.startswith("left out")))

    def _not_understood(self, where: str, problem: NotUnderstood) -> None:
        self.tally["left out: shape not understood"] += 1
        self._error(where, "Get-MailboxPermission", f"answer not understood: {problem}")

    def _resolve(self, unresolved: dict[str, dict | None]) -> Iterator[dict]:
        """Trustees the listings don't name (a group that is no distribution group, a user
        without a mailbox): Get-Recipient, batched. A group found so is given as a group record
        with its members (whose own groups normalize expands)."""
        if not unresolved:
            return
        names = list(unresolved)
        answers = self.api.invoke_many([Cmdlet("Get-Recipient", Identity=name) for name in names],
                                       batch=self.batch, concurrency=self.concurrency)
        groups = []
        for name, answer in zip(names, answers):
            if isinstance(answer, ApiError) and not _not_found(answer.message):
                # not "no such object" (that trustee is simply gone): we don't know who it is
                self._error(name, "Get-Recipient", answer.message)
                continue
            if isinstance(answer, ApiError) or not answer:
                log.debug("trustee %r: not found", name)
                continue
            recipient = answer[0]
            self.names.add(recipient)
            self.names.remember(name, recipient)
            if "group" in str(recipient.get("RecipientTypeDetails", "")).lower():
                groups.append(recipient)
        members = self.members(groups)
        yield from (group_record(g, members.get(object_id(g), []), self.scope.source) for g in groups)

    def _error(self, what: str, cmdlet: str, message: str) -> None:
        log.warning("%s failed for %s: %s", cmdlet, what, message)
        self.errors.append({"type": "error", "source": self.scope.source, "object": str(what),
                            "operation": cmdlet, "message": message})


class NotUnderstood(ValueError):
    """An answer in a shape the reader does not know: becomes an error record, never nothing."""


# Exchange's MailboxRights, a [Flags] enum. Values: Exchange's own MailboxRights.cs (decompiled
# Exchange 2013, Microsoft.Exchange.Management.Recipient/MailboxRights.cs), the same in the Adaxes
# SDK (ADM_EXCHANGE_MAILBOX_RIGHTS_ENUM) and in Get-MailboxPermissionsDetailed.ps1; Microsoft
# Learn's "MailboxRights Enumeration" names them and says FlagsAttribute. The high four are the
# ACE's own standard rights (DELETE, READ_CONTROL, WRITE_DAC, WRITE_OWNER).
MAILBOX_RIGHTS = {"FullAccess": 0x1, "SendAs": 0x2, "ExternalAccount": 0x4, "DeleteItem": 0x10000,
                  "ReadPermission": 0x20000, "ChangePermission": 0x40000, "ChangeOwner": 0x80000}
_RIGHT_NAMES = {name.lower(): name for name in MAILBOX_RIGHTS}


def rights_of(value) -> list[str]:
    """The rights an ``AccessRights`` value grants, by name, from every shape it comes in.

    Get-MailboxPermission writes one object per ACE whose ``AccessRights`` is a ``MailboxRights[]``
    of *one* flags value (Exchange's MailboxAcePresentationObject.cs), so Full Access with Read
    Permission reads, by shape:

    - a list of names, one per flag: ``["FullAccess", "ReadPermission"]`` (the admin API's REST
      route, captured in public code; our fake of it);
    - a list holding the flags value's text: ``["FullAccess, ReadPermission"]`` (remote PowerShell,
      through pypsrp: an enum it does not know reads as its ``<ToString>``, MS-PSRP §2.2.5.2.7),
      or that text bare;
    - enum objects: an ``int`` whose ``str`` is the names (psrpcore), or the number itself,
      ``[131073]`` or ``"131073"`` (a numeric rendering; bits without a name kept as hex).

    Anything else (None, an empty list, a bool, a dict, a blank or unknown name) raises
    :class:`NotUnderstood`.
    """
    if isinstance(value, (list, tuple)):
        if not value:
            raise NotUnderstood("AccessRights is an empty list")
        names: list[str] = []
        for element in value:
            names += [n for n in _right_names(element) if n not in names]
        return names
    return _right_names(value)


def _right_names(value) -> list[str]:
    if value is None or isinstance(value, bool):
        raise NotUnderstood(f"AccessRights {value!r}")
    if isinstance(value, int):
        text = str(value).strip()  # an enum object (psrpcore's PSInt): its text is the names
        return _names_of_mask(int(value)) if _number(text.lstrip("-")) else _names_of_text(text)
    if isinstance(value, str):
        text = value.strip()
        return _names_of_mask(int(text)) if _number(text) else _names_of_text(text)
    raise NotUnderstood(f"AccessRights element {value!r} ({type(value).__name__})")


def _number(text: str) -> bool:
    return text.isascii() and text.isdigit()  # not '²', which isdigit() calls a digit


def _names_of_text(text: str) -> list[str]:
    parts = [part.strip() for part in text.split(",")]
    if not parts or any(not part for part in parts):
        raise NotUnderstood(f"AccessRights {text!r}")
    unknown = [part for part in parts if part.lower() not in _RIGHT_NAMES]
    if unknown:  # no MailboxRights name: a shape misread, or a right Exchange added (refused, loudly)
        raise NotUnderstood(f"AccessRights {text!r}: {', '.join(unknown)} is no MailboxRights name")
    return [_RIGHT_NAMES[part.lower()] for part in parts]


def _names_of_mask(mask: int) -> list[str]:
    if mask <= 0:
        raise NotUnderstood(f"AccessRights {mask!r}")
    names = [name for name, bit in MAILBOX_RIGHTS.items() if mask & bit]
    unnamed = mask & ~sum(MAILBOX_RIGHTS.values())
    return names + ([hex(unnamed)] if unnamed else [])


def permission_entries(row) -> list[dict]:
    """One Get-MailboxPermission answer as flat entries (``User``, ``AccessRights``, ``Deny``,
    ``IsInherited``), from both shapes Exchange uses: one object per ACE (remote PowerShell and
    InvokeCommand), or one per trustee with a ``PermissionList`` of its ACEs (the admin API's REST
    route ``Mailbox('…')/MailboxPermission``, as captured in public clients of it). Properties
    not used are ignored; a shape not understood raises :class:`NotUnderstood`."""
    if not isinstance(row, dict):
        raise NotUnderstood(f"an entry that is no object: {row!r}")
    if "PermissionList" not in row:
        if "AccessRights" not in row:
            raise NotUnderstood(f"an entry without AccessRights or PermissionList (User {row.get('User')!r})")
        return [row]
    items = row["PermissionList"]
    if not isinstance(items, list) or not items or not all(isinstance(item, dict) for item in items):
        raise NotUnderstood(f"the PermissionList of {row.get('User')!r} is {items!r}")
    shared = {key: value for key, value in row.items() if key != "PermissionList"}
    return [{**shared, **item} for item in items]


def _flag(value) -> bool | None:
    """A boolean as Exchange sends it (a bool, or its text when it arrives as a typed object
    pypsrp does not know, such as a SwitchParameter); None when it is neither."""
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    text = str(value.get("IsPresent", "") if isinstance(value, dict) else value).strip().lower()
    return {"true": True, "false": False}.get(text)


def _not_found(message: str) -> bool:
    text = message.lower()
    return "couldn't be found" in text or "managementobjectnotfound" in text or "could not be found" in text
