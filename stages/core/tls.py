"""What a TLS server presents, read for an error message: which certificate failed verification.

A verification error from ssl says why ("unable to get local issuer certificate") but not whose
certificate it was; an administrator needs the subject and the issuer to see whether the wrong
server answered or the CA file is not the one that signed it.
"""

from __future__ import annotations

import socket
import ssl


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
