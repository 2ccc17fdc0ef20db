"""Certificates for the loopback servers the tests start (Samba, the Microsoft and Exchange
fakes): a test CA and a server certificate it signed, so that clients verify TLS as they
would in production, against a CA file they are given."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
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
