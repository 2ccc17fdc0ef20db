"""What a TLS server presents, read for an error message: which certificate failed verification.

A verification error from ssl says why ("unable to get local issuer certificate") but not whose
certificate it was; an administrator needs the subject and the issuer to see whether the wrong
server answered or the CA file is not the one that signed it.
"""

from __future__ import annotations

import os
import socket
import ssl
import sys
from pathlib import Path

from .console import log


def presented_certificate(host: str, port: int, timeout: float = 5.0) -> str | None:
    """The subject and issuer of the certificate the server at ``host:port`` presents, read
    without verifying it ("CN=dc01.corp.example, issued by CN=Corp Issuing CA"); None when it
    cannot be read (the server is gone, or speaks TLS only after StartTLS). Nothing is sent."""
    from cryptography import x509  # msal's dependency: always installed

    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # only to read it, never to trust it
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
        certificate = x509.load_der_x509_certificate(der)
        return f"{certificate.subject.rfc4514_string()}, issued by {certificate.issuer.rfc4514_string()}"
    except (OSError, ValueError, TypeError):
        return None


def verification_failed(reason: str, host: str, port: int | None, ca: str | None) -> str:
    """"TLS certificate verification failed (<why>); the server presented <subject, issuer>;
    checked against <the CA file | the system CA store>". ``port`` None: the certificate is
    not read again (it came after StartTLS)."""
    presented = presented_certificate(host, port) if port else None
    return (f"TLS certificate verification failed ({reason.rstrip('.')})"
            + (f"; the server presented {presented}" if presented else "")
            + f"; checked against {f'the CA file {ca}' if ca else 'the system CA store'}")


_SYSTEM_TRUST = False


def system_trust(verify: bool | str) -> bool | str:
    """``verify`` as given; when it is True (no CA file named, verification on), HTTPS in this
    process is verified against the operating system's trust store (truststore: Windows'
    certificate store through CryptoAPI, macOS's keychain, OpenSSL's system locations on Linux)
    instead of certifi's bundle alone, so that an internal CA or a TLS-inspecting proxy that
    Windows trusts is trusted here too, as LDAPS and SMTP (ssl's default context) already were.
    A CA file given with --ca-file is the only trust for that connection. Each stage is its own
    process and talks to one kind of server, so the choice is the process's."""
    global _SYSTEM_TRUST
    if verify is True and not _SYSTEM_TRUST:
        import truststore  # an application may inject it (truststore.readthedocs.io: "not libraries")

        truststore.inject_into_ssl()
        _SYSTEM_TRUST = True
    return verify


# -- revocation (--check-revocation) ------------------------------------------------------------


def default_crl_cache() -> Path:
    """The user's own cache: a CRL there is re-verified on every use, but an older one planted by
    someone else could hide a later revocation until its nextUpdate, so never a shared folder."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "zivsync" / "crl"


def _policy(options: dict):
    from .revocation import RevocationPolicy

    return RevocationPolicy(cache_dir=Path(options.get("crl_cache") or default_crl_cache()),
                            soft_fail=bool(options.get("revocation_soft_fail")),
                            timeout=float(options.get("timeout") or 10.0))


def check_revocation(what: str, host: str, port: int, ca_file: str | None, options: dict) -> None:
    """With --check-revocation: the certificate the server at host:port presents (and the
    intermediates, where Python gives the verified chain) checked against its CA's CRLs before
    anything is sent; refused (exit 4) when revoked, or when a CRL cannot be had and
    --revocation-soft-fail is not given. Each certificate's status is logged ("revocation:"),
    which zivsync check shows."""
    if not options.get("check_revocation"):
        return
    from .revocation import RevocationUnknown, probe, raise_if_bad

    policy = _policy(options)
    try:
        result = probe(host, port, ca_file, policy, timeout=policy.timeout)
    except RevocationUnknown as error:  # its own connection failed: unknown, as an unreachable CRL is
        if not policy.soft_fail:
            raise
        log.warning("REVOCATION NOT CHECKED (--revocation-soft-fail): %s: %s", what, error)
        return
    _report(what, f"{host}:{port}", result)
    raise_if_bad(result, policy)


def check_revocation_of(what: str, tls_socket, ca_file: str | None, options: dict) -> None:
    """The same for a connection already made (LDAP after StartTLS): its own peer's chain."""
    if not options.get("check_revocation"):
        return
    from .revocation import check_chain, peer_chain, raise_if_bad, trusted_issuers

    policy = _policy(options)
    result = check_chain(peer_chain(tls_socket), trusted_issuers(ca_file), policy)
    try:
        where = "{}:{}".format(*tls_socket.getpeername()[:2])
    except (OSError, TypeError):
        where = "its connection"
    _report(what, where, result)
    raise_if_bad(result, policy)


def _report(what: str, where: str, result) -> None:
    from .revocation import describe

    for line in describe(result):
        log.info("revocation: %s (%s): %s", what, where, line)
