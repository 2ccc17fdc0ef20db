"""Certificates for the loopback servers the tests start (Samba, the Microsoft and Exchange
fakes): a test CA and a server certificate it signed, so that clients verify TLS as they
would in production, against a CA file they are given."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PEM = serialization.Encoding.PEM


def name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def validity() -> tuple[datetime.datetime, datetime.datetime]:
    now = datetime.datetime.now(datetime.timezone.utc)
    return now - datetime.timedelta(days=1), now + datetime.timedelta(days=30)


def authority(label: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA (EC P-256)."""
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = validity()
    cert = (x509.CertificateBuilder().subject_name(name(label)).issuer_name(name(label))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def ca_and_server(folder: Path, label: str, *, names: tuple[str, ...] = ("localhost",),
                  addresses: tuple[str, ...] = ("127.0.0.1",), prefix: str = "") -> dict[str, Path]:
    """A CA named ``label`` and a server certificate for ``names`` and ``addresses`` signed by
    it, written to ``folder``: ``ca_file``, ``server_cert``, ``server_key`` (private: mode 600,
    as Samba insists)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = authority(label)
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = validity()
    alternatives = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    cert = (x509.CertificateBuilder().subject_name(name(names[0])).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    files = {"ca_file": folder / f"{prefix}ca.pem", "server_cert": folder / f"{prefix}server.pem",
             "server_key": folder / f"{prefix}server.key"}
    files["ca_file"].write_bytes(ca_cert.public_bytes(PEM))
    files["server_cert"].write_bytes(cert.public_bytes(PEM))
    files["server_key"].write_bytes(key.private_bytes(PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
    files["server_key"].chmod(0o600)
    return files


def other_ca(path: Path) -> Path:
    """An unrelated CA, to show that verification against the wrong one fails."""
    path.write_bytes(authority("some other CA")[1].public_bytes(PEM))
    return path


# ---- A chain with revocation information: CRL distribution points and caIssuers on loopback ----

def issue(issuer_key, issuer_cert: x509.Certificate | None, subject: str, *, ca: bool = False,
          key=None, crl_urls: tuple[str, ...] = (), issuer_url: str | None = None,
          names: tuple[str, ...] = (), addresses: tuple[str, ...] = (), serial: int | None = None):
    """A certificate for ``subject`` signed by ``issuer_key`` (self-signed when ``issuer_cert``
    is None), with a CRL distribution point naming ``crl_urls`` (RFC 5280 4.2.1.13; none: no
    extension) and an authorityInfoAccess caIssuers ``issuer_url`` (4.2.2.1). ``key``: the
    subject's key (default a new EC P-256 one; a self-signed one's is ``issuer_key``). Returns
    (key, certificate)."""
    key = issuer_key if issuer_cert is None else key or ec.generate_private_key(ec.SECP256R1())
    issuer_name = issuer_cert.subject if issuer_cert is not None else name(subject)
    start, end = validity()
    builder = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(issuer_name)
               .public_key(key.public_key()).serial_number(serial or x509.random_serial_number())
               .not_valid_before(start).not_valid_after(end)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                              critical=False))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True)
    else:
        alternatives = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
        if alternatives:
            builder = builder.add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    if crl_urls:
        point = x509.DistributionPoint(full_name=[x509.UniformResourceIdentifier(u) for u in crl_urls],
                                       relative_name=None, reasons=None, crl_issuer=None)
        builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
    if issuer_url:
        access = x509.AccessDescription(x509.AuthorityInformationAccessOID.CA_ISSUERS,
                                        x509.UniformResourceIdentifier(issuer_url))
        builder = builder.add_extension(x509.AuthorityInformationAccess([access]), critical=False)
    return key, builder.sign(issuer_key, hashes.SHA256())


def revocation_chain(base_url: str, leaves: tuple[str, ...] = ("good", "revoked"), *,
                     rsa_intermediate: bool = True) -> dict[str, tuple]:
    """A root CA, an intermediate it signed and a server certificate per label in ``leaves``
    (each for localhost and 127.0.0.1), as (key, certificate) under "root", "intermediate" and
    each label. The intermediate's CRL is ``{base_url}/root.crl`` and its issuer
    ``{base_url}/root.crt``; the leaves' ``{base_url}/intermediate.crl`` and
    ``{base_url}/intermediate.crt``. The intermediate's key is RSA by default, so that its CRLs
    are signed with RSA PKCS#1 v1.5 and the root's with ECDSA."""
    root_key, root = issue(ec.generate_private_key(ec.SECP256R1()), None, "Revocation Test Root CA", ca=True)
    middle_key = rsa.generate_private_key(public_exponent=65537, key_size=2048) if rsa_intermediate else None
    chain = {"root": (root_key, root),
             "intermediate": issue(root_key, root, "Revocation Test Issuing CA", ca=True, key=middle_key,
                                   crl_urls=(f"{base_url}/root.crl",), issuer_url=f"{base_url}/root.crt")}
    middle_key, middle = chain["intermediate"]
    for label in leaves:
        chain[label] = issue(middle_key, middle, f"{label}.zivsync.test", names=("localhost",),
                             addresses=("127.0.0.1",), crl_urls=(f"{base_url}/intermediate.crl",),
                             issuer_url=f"{base_url}/intermediate.crt")
    return chain


def crl(issuer_key, issuer_cert: x509.Certificate, revoked: tuple = (), *,
        this_update: datetime.datetime | None = None, next_update: datetime.datetime | None = None,
        reason: x509.ReasonFlags | None = None, issuer_name: x509.Name | None = None,
        extensions: tuple[tuple[x509.ExtensionType, bool], ...] = ()) -> bytes:
    """A CRL (DER) signed by ``issuer_key`` in the name of ``issuer_cert`` (or ``issuer_name``),
    listing the serial numbers in ``revoked`` (revoked an hour ago, with ``reason`` when given).
    Issued a minute ago and valid for a day unless ``this_update``/``next_update`` say otherwise;
    ``extensions``: (extension, critical) pairs added to the CRL itself."""
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateRevocationListBuilder().issuer_name(issuer_name or issuer_cert.subject)
               .last_update(this_update or now - datetime.timedelta(minutes=1))
               .next_update(next_update or now + datetime.timedelta(days=1))
               .add_extension(x509.CRLNumber(1), critical=False))
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    for serial in revoked:
        entry = (x509.RevokedCertificateBuilder().serial_number(serial)
                 .revocation_date(now - datetime.timedelta(hours=1)))
        if reason is not None:
            entry = entry.add_extension(x509.CRLReason(reason), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    return builder.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def pem(*certificates: x509.Certificate) -> bytes:
    """Certificates as one PEM bundle (a CA file, or a server's certificate chain)."""
    return b"".join(c.public_bytes(PEM) for c in certificates)


def private_pem(key) -> bytes:
    return key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
