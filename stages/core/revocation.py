"""Certificate revocation checks against CRLs: is the server's certificate, or one of the CAs
that issued it, revoked?

TLS verification (ssl) proves that a certificate chains to a trusted CA and is in date; it says
nothing about revocation, which OpenSSL checks only when handed the CRLs. This module fetches
them as Zivver's Synctool does: over plain HTTP, from the URLs the certificate names in its CRL
distribution points (RFC 5280 4.2.1.13). A CRL is signed by the CA, so it needs no TLS;
fetching it over https would need a revocation check of its own.

What is checked, for the server's certificate and each intermediate CA the caller knows of
(RFC 5280 6.3.3, for complete CRLs): the CRL names the certificate's issuer, is signed by the
issuer's key (which may sign CRLs), is in date (thisUpdate not in the future, nextUpdate not
past), covers this kind of certificate and carries no critical extension this module does not
understand; then whether the certificate's serial number is on it. CRLs are kept on disk until
their nextUpdate and verified again each time one is read back.

Not done: delta CRLs (a complete CRL is always enough), indirect CRLs and distribution points
split by reason (reported as unknown), ldap:// distribution points (skipped, with a note), OCSP.

Pure library: the commands decide when to check (``--check-revocation``) and whether an
unknown status is fatal (``--revocation-soft-fail``), through :class:`RevocationPolicy`.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import http.client
import logging
import os
import socket
import ssl
import tempfile
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtensionOID

from .errors import ServerUnreachable, ZivsyncError
from .files import replace
from .tls import verification_failed

log = logging.getLogger("zivsync")

MAX_DOWNLOAD = 64 * 1024 * 1024  # bytes: the CRLs of large public CAs run to tens of megabytes
# Extensions of a CRL this module processes (RFC 5280 5.2): any other critical one makes the CRL unusable.
_UNDERSTOOD_CRL_EXTENSIONS = {ExtensionOID.ISSUING_DISTRIBUTION_POINT, ExtensionOID.CRL_NUMBER,
                              ExtensionOID.AUTHORITY_KEY_IDENTIFIER}
# What a fetcher raises when a URL cannot be read; anything else is a bug and is not hidden.
FETCH_ERRORS = (OSError, ValueError, http.client.HTTPException)


class RevokedCertificate(ServerUnreachable):
    """The server's certificate, or a CA certificate in its chain, is revoked: exit 4."""


class RevocationUnknown(ServerUnreachable):
    """A certificate's revocation status could not be established (no CRL could be fetched or
    verified): exit 4, unless soft-fail only warns."""


def http_get(url: str, timeout: float = 10.0) -> bytes:
    """GET ``url`` with urllib: redirects followed, and the proxy from the environment
    (http_proxy, no_proxy; on Windows and macOS also the system's settings), as urllib does by
    default; the opener is built for each request, so the environment is read when it is made
    (urlopen's would keep what it read first). Raises OSError (urllib.error.URLError, HTTPError,
    timeouts) when it cannot."""
    request = urllib.request.Request(url, headers={"User-Agent": "zivsync revocation check"})
    with urllib.request.build_opener().open(request, timeout=timeout) as response:
        data = response.read(MAX_DOWNLOAD + 1)
    if len(data) > MAX_DOWNLOAD:
        raise ValueError(f"larger than {MAX_DOWNLOAD // (1024 * 1024)} MB")
    return data


@dataclass
class RevocationPolicy:
    """How revocation is checked. ``cache_dir``: where CRLs are kept until their nextUpdate
    (None: fetched every time); ``soft_fail``: an unknown status only warns; ``fetch``: reads
    a URL's bytes, raising one of :data:`FETCH_ERRORS` (default :func:`http_get` with
    ``timeout``); ``fetch_issuers``: an issuer found nowhere else is fetched from the
    certificate's caIssuers URL; ``clock_skew``: how far in the future a CRL's thisUpdate may
    lie (the CA's clock and ours differ)."""

    cache_dir: Path | None
    soft_fail: bool = False
    timeout: float = 10.0
    fetch: Callable[[str], bytes] | None = None
    fetch_issuers: bool = True
    clock_skew: datetime.timedelta = datetime.timedelta(minutes=5)
    now: Callable[[], datetime.datetime] = field(default=lambda: datetime.datetime.now(datetime.timezone.utc))

    def __post_init__(self):
        if self.fetch is None:
            self.fetch = lambda url: http_get(url, self.timeout)
        if self.cache_dir is not None:
            self.cache_dir = Path(self.cache_dir)


# ---- The result ----

@dataclass
class CertificateStatus:
    """One certificate's revocation status: "good", "revoked", "unknown" (no usable CRL; see
    ``notes``) or "not checked" (no distribution point, or a trust anchor)."""

    subject: str
    serial: int
    status: str
    notes: list[str] = field(default_factory=list)
    crl_url: str | None = None
    crl_this_update: datetime.datetime | None = None
    revoked_on: datetime.datetime | None = None
    reason: str | None = None

    @property
    def serial_hex(self) -> str:
        text = format(self.serial, "X")
        return text.zfill(len(text) + len(text) % 2)

    @property
    def named(self) -> str:
        return f"{self.subject} (serial {self.serial_hex})"

    def line(self) -> str:
        """"CN=x (serial 0A1B): good (CRL http://… of 2025-01-01 10:00 UTC)", for a person."""
        text = f"{self.named}: {self.status}"
        if self.status == "revoked":
            text += f" on {_when(self.revoked_on)}" + (f" ({self.reason})" if self.reason else "")
        if self.crl_url:
            text += f" (CRL {self.crl_url} of {_when(self.crl_this_update)})"
        return text + "".join(f"; {note}" for note in self.notes)


@dataclass
class RevocationResult:
    """Every checked certificate, leaf first."""

    certificates: list[CertificateStatus] = field(default_factory=list)

    @property
    def revoked(self) -> list[CertificateStatus]:
        return [c for c in self.certificates if c.status == "revoked"]

    @property
    def unknown(self) -> list[CertificateStatus]:
        return [c for c in self.certificates if c.status == "unknown"]

    @property
    def problems(self) -> list[str]:
        """What stands in the way: each revoked certificate, then each one of unknown status."""
        return [revoked_message(c) for c in self.revoked] + [unknown_message(c) for c in self.unknown]

    @property
    def ok(self) -> bool:
        return not self.problems


def _when(moment: datetime.datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "an unknown date"


def revoked_message(status: CertificateStatus) -> str:
    return (f"certificate revoked: {status.named} is on the CRL {status.crl_url} of {_when(status.crl_this_update)}, "
            f"revoked on {_when(status.revoked_on)}" + (f" ({status.reason})" if status.reason else ""))


def unknown_message(status: CertificateStatus) -> str:
    return f"revocation status unknown for {status.named}: " + "; ".join(status.notes or ["no CRL could be used"])


def describe(result: RevocationResult) -> list[str]:
    """One line per certificate, leaf first, for ``zivsync check``."""
    return [status.line() for status in result.certificates]


def raise_if_bad(result: RevocationResult, policy: RevocationPolicy) -> None:
    """Refuse a revoked certificate (:class:`RevokedCertificate`, always); refuse an unknown
    status (:class:`RevocationUnknown`: fail closed), or with soft-fail only warn, loudly."""
    if result.revoked:
        raise RevokedCertificate("; ".join(revoked_message(c) for c in result.revoked))
    if not result.unknown:
        return
    message = "; ".join(unknown_message(c) for c in result.unknown)
    if not policy.soft_fail:
        raise RevocationUnknown(f"{message} (revocation checks fail closed; --revocation-soft-fail only warns)")
    log.warning("REVOCATION NOT CHECKED, CONTINUING ANYWAY (revocation soft-fail is on): %s", message)


# ---- Checking a chain ----

def check_chain(chain_der: list[bytes], trusted_issuers_der: Iterable[bytes],
                policy: RevocationPolicy) -> RevocationResult:
    """The revocation status of each certificate of ``chain_der`` (the server's first, then the
    intermediates it presented, when known), each issuer found as :func:`find_issuer` says.
    A self-signed certificate (the root the chain ends in) is a trust anchor: trusted as
    configured, not checked (RFC 5280 6.1)."""
    chain = [x509.load_der_x509_certificate(der) for der in chain_der]
    trusted = [x509.load_der_x509_certificate(der) for der in trusted_issuers_der]
    result = RevocationResult()
    for position, certificate in enumerate(chain):
        if _self_signed(certificate):
            result.certificates.append(_status(certificate, "not checked", "trust anchor (self-signed)"))
            continue
        issuer, notes = find_issuer(certificate, chain[position + 1:] + trusted, policy)
        status = check_certificate(certificate, issuer, policy)
        status.notes[:0] = notes
        result.certificates.append(status)
    return result


def check_certificate(certificate: x509.Certificate, issuer: x509.Certificate | None,
                      policy: RevocationPolicy) -> CertificateStatus:
    """One certificate against the CRLs of its distribution points (RFC 5280 4.2.1.13): the
    first distribution point that yields a verified CRL decides; its URLs are tried in turn."""
    points, notes = _distribution_points(certificate)
    if points is None:
        return _status(certificate, "not checked", "no CRL distribution point: not checked")
    if issuer is None:
        return _status(certificate, "unknown", *notes, "its issuer's certificate was not found, so its CRL "
                       "cannot be verified")
    for names, urls in points:
        for url in urls:
            crl, problem = get_crl(url, certificate, issuer, names, policy)
            if crl is not None:
                status = _looked_up(certificate, crl, url)
                status.notes += notes
                return status
            notes.append(problem)
    return _status(certificate, "unknown", *(notes or ["no usable CRL distribution point"]))


def _status(certificate: x509.Certificate, status: str, *notes: str) -> CertificateStatus:
    return CertificateStatus(certificate.subject.rfc4514_string(), certificate.serial_number, status, list(notes))


def _looked_up(certificate: x509.Certificate, crl: x509.CertificateRevocationList, url: str) -> CertificateStatus:
    """The certificate's serial number on a verified CRL (RFC 5280 6.3.3 (i))."""
    entry = crl.get_revoked_certificate_by_serial_number(certificate.serial_number)
    status = _status(certificate, "good" if entry is None else "revoked")
    status.crl_url, status.crl_this_update = url, _utc(crl, "last_update")
    if entry is not None:
        status.revoked_on = _utc(entry, "revocation_date")
        try:
            status.reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason.name
        except x509.ExtensionNotFound:
            pass
    return status


def _distribution_points(certificate: x509.Certificate) -> tuple[list[tuple[list[str], list[str]]] | None, list[str]]:
    """The certificate's complete-scope distribution points as (their URI names, the http ones
    among them), and notes on what was skipped; None without the extension (RFC 5280 4.2.1.13).
    A point limited to some reasons or naming another CRL issuer (an indirect CRL) cannot
    decide alone and is skipped; so are URLs other than http:// (ldap://: another protocol,
    https://: would need a revocation check of its own)."""
    try:
        extension = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return None, []
    points, notes = [], []
    for point in extension:
        if point.reasons or point.crl_issuer:
            notes.append("a distribution point for some reasons only or an indirect CRL: skipped (not supported)")
            continue
        names = [n.value for n in point.full_name or [] if isinstance(n, x509.UniformResourceIdentifier)]
        urls = [n for n in names if n.lower().startswith("http://")]
        notes += [f"{n}: only http:// distribution points are fetched, skipped" for n in names if n not in urls]
        if urls:
            points.append((names, urls))
    return points, notes


def _self_signed(certificate: x509.Certificate) -> bool:
    return certificate.subject == certificate.issuer and _issued_by(certificate, certificate)


def _issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether ``issuer`` names and signed ``certificate`` (RSA, ECDSA, Ed25519)."""
    try:
        certificate.verify_directly_issued_by(issuer)
        return True
    except (ValueError, TypeError, InvalidSignature):
        return False


# ---- Finding the issuer ----

def find_issuer(certificate: x509.Certificate, candidates: list[x509.Certificate],
                policy: RevocationPolicy) -> tuple[x509.Certificate | None, list[str]]:
    """The certificate that issued ``certificate``, needed for its key (the CRL's signature):
    the first candidate (the next in the chain, then the trusted CAs) whose subject and key
    identifier match and whose key verifies the signature; else, with ``policy.fetch_issuers``,
    one fetched from the certificate's caIssuers URL (RFC 5280 4.2.2.1), which the signature
    check makes as good as any. Returns (issuer or None, notes)."""
    for candidate in candidates:
        if _key_ids_match(certificate, candidate) and _issued_by(certificate, candidate):
            return candidate, []
    if not policy.fetch_issuers:
        return None, []
    notes = []
    for url in _ca_issuer_urls(certificate):
        try:
            fetched = _parse_certificates(policy.fetch(url))
        except FETCH_ERRORS as error:
            notes.append(f"cannot fetch its issuer from {url}: {_reason(error)}")
            continue
        for candidate in fetched:
            if _issued_by(certificate, candidate):
                return candidate, []
        notes.append(f"the certificate at {url} did not issue it")
    return None, notes


def _key_ids_match(certificate: x509.Certificate, candidate: x509.Certificate) -> bool:
    """A quick filter before the signature: the authority key identifier, where both carry one
    (RFC 5280 4.2.1.1, 4.2.1.2), must be the candidate's subject key identifier."""
    try:
        wanted = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
        held = candidate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return True
    return wanted is None or wanted == held


def _ca_issuer_urls(certificate: x509.Certificate) -> list[str]:
    try:
        access = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return []
    return [d.access_location.value for d in access
            if d.access_method == AuthorityInformationAccessOID.CA_ISSUERS
            and isinstance(d.access_location, x509.UniformResourceIdentifier)
            and d.access_location.value.lower().startswith("http://")]


def _parse_certificates(data: bytes) -> list[x509.Certificate]:
    """What a caIssuers URL serves: one DER certificate or a "certs-only" CMS (PKCS#7) bundle
    (RFC 5280 4.2.2.1); PEM seen in the wild too."""
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificates(data)
    try:
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        return pkcs7.load_der_pkcs7_certificates(data)


# ---- Getting and verifying a CRL ----

def get_crl(url: str, certificate: x509.Certificate, issuer: x509.Certificate, point_names: list[str],
            policy: RevocationPolicy) -> tuple[x509.CertificateRevocationList | None, str]:
    """The CRL at ``url``, verified for ``certificate``: from the cache while it verifies and is
    before its nextUpdate, else fetched, verified and cached. Returns (CRL, "") or (None, why)."""
    cached = _read_cache(url, policy)
    if cached is not None:
        problem = verify_crl(cached, certificate, issuer, point_names, policy)
        if problem is None:
            return cached, ""
        log.debug("cached CRL from %s not used (%s): fetching it again", url, problem)
    try:
        data = policy.fetch(url)
    except FETCH_ERRORS as error:
        return None, f"cannot fetch the CRL {url}: {_reason(error)}"
    try:
        crl = _parse_crl(data)
    except ValueError as error:
        return None, f"the CRL {url} is not a CRL ({error})"
    problem = verify_crl(crl, certificate, issuer, point_names, policy)
    if problem is not None:
        return None, f"the CRL {url} {problem}"
    _write_cache(url, crl, policy)
    return crl, ""


def verify_crl(crl: x509.CertificateRevocationList, certificate: x509.Certificate, issuer: x509.Certificate,
               point_names: list[str], policy: RevocationPolicy) -> str | None:
    """Whether the CRL may decide ``certificate``'s status (RFC 5280 6.3.3): None if so, else
    what is wrong with it, as "is …"/"has …" to follow the CRL's URL."""
    for check in (_issuer_problem, _signature_problem, _scope_problem):
        problem = check(crl, certificate, issuer, point_names)
        if problem:
            return problem
    return _date_problem(crl, policy)


def _issuer_problem(crl, certificate, issuer, point_names) -> str | None:
    """6.3.3 (b)(1), (f): issued by the certificate's issuer, whose key may sign CRLs (4.2.1.3)."""
    if crl.issuer != certificate.issuer:
        return f"is issued by {crl.issuer.rfc4514_string()}, not by {certificate.issuer.rfc4514_string()}"
    try:
        usage = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None
    return None if usage.crl_sign else "is signed by a CA whose key usage does not allow signing CRLs"


def _signature_problem(crl, certificate, issuer, point_names) -> str | None:
    """6.3.3 (g): signed with the issuer's key (RSA PKCS#1 v1.5, RSA-PSS, ECDSA, EdDSA)."""
    try:
        valid = crl.is_signature_valid(issuer.public_key())
    except (TypeError, ValueError, InvalidSignature):  # a key kind that cannot sign, an unknown algorithm
        valid = False
    return None if valid else f"has a signature that does not verify with the key of {issuer.subject.rfc4514_string()}"


def _scope_problem(crl, certificate, issuer, point_names) -> str | None:
    """5.2, 5.2.4, 6.3.3 (b)(2): a complete CRL whose issuing distribution point covers this
    certificate, with no critical extension left unprocessed."""
    for extension in crl.extensions:
        if extension.critical and extension.oid not in _UNDERSTOOD_CRL_EXTENSIONS:
            return f"has a critical extension zivsync does not process ({extension.oid.dotted_string})"
    try:
        point = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint).value
    except x509.ExtensionNotFound:
        return None
    is_ca = _is_ca(certificate)
    if point.indirect_crl or point.only_some_reasons or point.only_contains_attribute_certs:
        return "is an indirect or partial CRL (not supported)"
    if point.only_contains_user_certs and is_ca or point.only_contains_ca_certs and not is_ca:
        return f"covers only {'CA' if point.only_contains_ca_certs else 'end-entity'} certificates"
    names = [n.value for n in point.full_name or [] if isinstance(n, x509.UniformResourceIdentifier)]
    if names and not set(names) & set(point_names):
        return f"is for another distribution point ({', '.join(names)})"
    return None


def _date_problem(crl, policy: RevocationPolicy) -> str | None:
    """6.3.3 (a)(2) and 5.1.2.4/5.1.2.5: issued (thisUpdate) by now, give or take the clock
    skew, and its nextUpdate still ahead; a CRL without nextUpdate is not kept."""
    now = policy.now()
    this_update, next_update = _utc(crl, "last_update"), _utc(crl, "next_update")
    if this_update > now + policy.clock_skew:
        return f"is dated in the future (thisUpdate {_when(this_update)})"
    if next_update is not None and next_update <= now:
        return f"has expired (nextUpdate {_when(next_update)}; thisUpdate {_when(this_update)})"
    return None


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _parse_crl(data: bytes) -> x509.CertificateRevocationList:
    """DER, as RFC 5280 4.2.1.13 asks for http CRLs; PEM as some servers have it."""
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_crl(data)
    return x509.load_der_x509_crl(data)


def _utc(obj, name: str) -> datetime.datetime | None:
    """``obj.<name>_utc`` (cryptography 42+), else the naive UTC ``obj.<name>`` made aware."""
    if hasattr(obj, f"{name}_utc"):
        return getattr(obj, f"{name}_utc")
    naive = getattr(obj, name)
    return naive.replace(tzinfo=datetime.timezone.utc) if naive else None


def _reason(error: BaseException) -> str:
    return str(getattr(error, "reason", None) or error) or type(error).__name__


# ---- The disk cache ----

def cache_path(url: str, policy: RevocationPolicy) -> Path | None:
    """Where the CRL from ``url`` is kept: named by the URL's SHA-256, DER inside."""
    if policy.cache_dir is None:
        return None
    return policy.cache_dir / f"{hashlib.sha256(url.encode()).hexdigest()}.crl"


def _read_cache(url: str, policy: RevocationPolicy) -> x509.CertificateRevocationList | None:
    """The cached CRL, or None when there is none or it cannot be read (a corrupt file is
    fetched again). The caller verifies it: the cache is never trusted as it stands."""
    path = cache_path(url, policy)
    if path is None or not path.exists():
        return None
    try:
        return x509.load_der_x509_crl(path.read_bytes())
    except (OSError, ValueError) as error:
        log.debug("cached CRL %s for %s unreadable (%s): fetching it again", path, url, error)
        return None


def _write_cache(url: str, crl: x509.CertificateRevocationList, policy: RevocationPolicy) -> None:
    """Keep a verified CRL, written whole or not at all (a temporary file replaced onto the
    name), so that a reader never sees half a file. A CRL without nextUpdate is not kept; a
    cache that cannot be written only costs fetches, so it warns and goes on."""
    path = cache_path(url, policy)
    if path is None or _utc(crl, "next_update") is None:
        return
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".crl-", delete=False) as handle:
            temporary = handle.name
            handle.write(crl.public_bytes(serialization.Encoding.DER))
        replace(temporary, path)
    except (OSError, ZivsyncError) as error:
        log.warning("cannot keep the CRL from %s in %s: %s", url, path.parent, error)
        if temporary:
            with contextlib.suppress(OSError):
                os.unlink(temporary)


# ---- TLS connections ----

def peer_chain(ssl_socket: ssl.SSLSocket) -> list[bytes]:
    """The server's certificates (DER), its own first: the verified chain, root included, where
    Python gives it (3.13+: ``get_verified_chain()``, a list of DER bytes; an ``SSLObject``
    returned certificate objects until 3.13.0, python/cpython#118658: converted through PEM),
    else only the server's certificate: its intermediates then go unchecked. The verified
    chain is empty when OpenSSL did not verify (truststore has the operating system do it)."""
    if hasattr(ssl_socket, "get_verified_chain"):
        chain = ssl_socket.get_verified_chain() or []
        chain = [c if isinstance(c, bytes) else ssl.PEM_cert_to_DER_cert(c.public_bytes()) for c in chain]
        if chain:
            return chain
    return [ssl_socket.getpeercert(binary_form=True)]


def probe(host: str, port: int, ca_file: str | Path | None, policy: RevocationPolicy,
          server_hostname: str | None = None, timeout: float = 10.0) -> RevocationResult:
    """Connect to ``host:port`` with TLS, verified against ``ca_file`` (else the default
    trust), and check the revocation of what the server presents. The issuers it may need are
    the CA file's certificates and those the context loaded. For a connection that starts TLS
    later (LDAP StartTLS), call :func:`check_chain` with :func:`peer_chain` of its socket.
    Raises ServerUnreachable when the connection or its verification fails."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=server_hostname or host) as tls:
            chain = peer_chain(tls)
    except ssl.SSLCertVerificationError as error:
        raise ServerUnreachable(verification_failed(error.verify_message or str(error), host, port,
                                                    str(ca_file) if ca_file else None)) from error
    except OSError as error:  # the check's own connection goes direct, not through an https proxy
        raise RevocationUnknown(f"cannot connect to {host}:{port} to check its certificate's revocation: "
                                f"{error.strerror or error} (the check connects directly, not through a proxy; "
                                "--revocation-soft-fail lets the run go on)") from error
    trusted = _ca_file_certificates(ca_file) + context.get_ca_certs(binary_form=True)
    return check_chain(chain, trusted, policy)


def _ca_file_certificates(ca_file: str | Path | None) -> list[bytes]:
    """Every certificate in a PEM CA file, DER."""
    if not ca_file:
        return []
    certificates = x509.load_pem_x509_certificates(Path(ca_file).read_bytes())
    return [c.public_bytes(serialization.Encoding.DER) for c in certificates]


def trusted_issuers(ca_file: str | Path | None) -> list[bytes]:
    """The issuers a chain may end at: the CA file's certificates, or those of the default trust
    that ssl lists (a CA file's; a system folder's are loaded on demand and not listed, which is
    why a certificate's caIssuers URL is the fallback)."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    return _ca_file_certificates(ca_file) + context.get_ca_certs(binary_form=True)
