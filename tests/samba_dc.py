"""A throwaway Samba Active Directory domain controller for the tests, the demo and the benchmark.

The recipe is ``shared/reference/testinfra.md`` section 1: provision a domain into a temporary
folder (nothing in /etc is touched), serve LDAP only, on a loopback address of its own (Samba's
ports are fixed at 389/636), with a certificate we make so that TLS is verified the way an
administrator's would be, and stop it by its pid. Samba ships no Exchange schema, so
:func:`schema_ldifs` adds the attributes zivsync reads the way Exchange's setup does.

Samba's packages come from ``scripts/install-test-deps.sh`` (run by ``make test``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import uuid
from pathlib import Path
from typing import Iterable

REALM = "CORP.EXAMPLE.TEST"
DOMAIN = "CORP"
BASE_DN = "DC=corp,DC=example,DC=test"
ADMIN_PASSWORD = "Passw0rd!Test"
ADMIN_DN = f"CN=Administrator,CN=Users,{BASE_DN}"
ADMIN_UPN = "Administrator@corp.example.test"
ADMIN_NT = "CORP\\Administrator"
SCHEMA_DN = f"CN=Schema,CN=Configuration,{BASE_DN}"


def samba_installed() -> bool:
    return bool(shutil.which("samba") and shutil.which("samba-tool")
                and Path("/usr/share/samba/setup").is_dir())


def free_loopback_address() -> str:
    """A loopback address with nothing on Samba's fixed ports, so a second run or a leftover
    DC does not get in the way."""
    for last in range(2, 60):
        address = f"127.0.0.{last}"
        if not any(_listening(address, port) for port in (389, 636)):
            return address
    raise RuntimeError("no free loopback address for the Samba DC")


def _listening(address: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex((address, port)) == 0


def make_certificates(folder: Path, address: str) -> dict[str, Path]:
    """A test CA, a server certificate for ``address``, localhost and the DC's name signed by
    it, and a second, unrelated CA (to prove verification fails against the wrong one)."""
    import testcerts
    files = testcerts.ca_and_server(folder, "zivsync test CA", names=("dc1.corp.example.test", "localhost"),
                                    addresses=(address,))
    return {"ca": files["ca_file"], "cert": files["server_cert"], "key": files["server_key"],
            "other_ca": testcerts.other_ca(folder / "other-ca.pem")}


class SambaDC:
    """One provisioned, running domain controller. Use as a context manager: it is stopped by
    its pid on the way out, also when the block fails."""

    def __init__(self, folder: Path, address: str | None = None, seed: Iterable[str] = ()):
        """``seed``: LDIF change files loaded after the schema extension, before the server
        starts (the fastest way in)."""
        self.folder = Path(folder)
        self.seed = list(seed)
        self.address = address or free_loopback_address()
        self.process: subprocess.Popen | None = None
        self.tls: dict[str, Path] = {}

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://{self.address}:636"

    @property
    def ldap_url(self) -> str:
        return f"ldap://{self.address}:389"

    def __enter__(self) -> "SambaDC":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        if self.folder.exists():
            shutil.rmtree(self.folder)
        (self.folder / "run").mkdir(parents=True)
        self.tls = make_certificates(self.folder / "tls", self.address)
        self._provision()
        for number, ldif in enumerate([*schema_ldifs(), LDAP_SERVICE_PRINCIPAL, *self.seed]):
            self.load_ldif(ldif, f"load-{number}")
        self._launch()

    @contextlib.contextmanager
    def presenting(self, certificate_pem: bytes, key_pem: bytes):
        """The DC serving another certificate (and chain) for a while: Samba reads its TLS files
        at start, so it is restarted with them, and again with its own afterwards."""
        own = {name: self.tls[name].read_bytes() for name in ("cert", "key")}
        self.stop()
        self.tls["cert"].write_bytes(certificate_pem)
        self.tls["key"].write_bytes(key_pem)
        try:
            self._launch()
            yield self
        finally:
            self.stop()
            for name, data in own.items():
                self.tls[name].write_bytes(data)
            self._launch()

    def _launch(self) -> None:
        log = open(self.folder / "samba.out", "ab")
        self.process = subprocess.Popen(
            ["samba", "-i", "-M", "single", "-s", str(self.folder / "etc" / "smb.conf")],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        (self.folder / "samba.pid").write_text(str(self.process.pid))
        deadline = time.monotonic() + 60
        while not (_listening(self.address, 636) and _listening(self.address, 389)):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("samba did not come up:\n" + (self.folder / "samba.out").read_text(errors="replace"))
            time.sleep(0.05)

    def _provision(self) -> None:
        options = {
            "interfaces": f"{self.address}/8", "bind interfaces only": "yes", "server services": "ldap kdc",
            "dsdb:schema update allowed": "true", "pid directory": str(self.folder / "run"),
            "log file": str(self.folder / "log.%m"),
            "tls keyfile": str(self.tls["key"]), "tls certfile": str(self.tls["cert"]),
            "tls cafile": str(self.tls["ca"]),
        }
        command = ["samba-tool", "domain", "provision", "--use-rfc2307", "--server-role=dc",
                   "--dns-backend=NONE", f"--realm={REALM}", f"--domain={DOMAIN}", "--host-name=dc1",
                   f"--host-ip={self.address}", f"--adminpass={ADMIN_PASSWORD}", f"--targetdir={self.folder}",
                   *(f"--option={key}={value}" for key, value in options.items())]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError("samba-tool domain provision failed:\n" + done.stdout + done.stderr)
        # provision does not keep this one: allow simple binds on plain ldap:// so that the
        # tests can show zivsync refusing them unless told otherwise
        conf = self.folder / "etc" / "smb.conf"
        conf.write_text(conf.read_text().replace("[global]\n", "[global]\n\tldap server require strong auth = no\n", 1))

    def krb5_environment(self) -> dict[str, str]:
        """Environment variables for Kerberos clients of this DC: a krb5.conf naming its KDC
        (no DNS involved) and a ticket cache of its own."""
        conf = self.folder / "krb5.conf"
        conf.write_text(f"""[libdefaults]
    default_realm = {REALM}
    dns_lookup_kdc = false
    dns_lookup_realm = false
    dns_canonicalize_hostname = false
    rdns = false
[realms]
    {REALM} = {{
        kdc = {self.address}
    }}
[domain_realm]
    .{REALM.lower()} = {REALM}
""")
        return {"KRB5_CONFIG": str(conf), "KRB5CCNAME": f"FILE:{self.folder / 'krb5cc'}"}

    def kinit(self) -> dict[str, str]:
        """Get the administrator a ticket (kinit, from krb5-user); the environment using it."""
        environment = self.krb5_environment()
        done = subprocess.run(["kinit", f"Administrator@{REALM}"], input=ADMIN_PASSWORD + "\n", text=True,
                              capture_output=True, env={**os.environ, **environment})
        if done.returncode:
            raise RuntimeError("kinit failed: " + done.stdout + done.stderr)
        return environment

    def load_ldif(self, text: str, name: str = "load") -> None:
        """Apply an LDIF change file to the database directly (works with the server running
        or not; the server sees the change at once)."""
        path = self.folder / f"{name}.ldif"
        path.write_text(text, encoding="utf-8")
        done = subprocess.run(["ldbmodify", "-H", str(self.folder / "private" / "sam.ldb"),
                               "--configfile", str(self.folder / "etc" / "smb.conf"), str(path)],
                              capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"ldbmodify {path} failed:\n" + done.stdout[-2000:] + done.stderr[-2000:])

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def connect(self):
        """An administrator's ldap3 connection over verified LDAPS, for seeding."""
        import ldap3
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(self.tls["ca"]))
        server = ldap3.Server(self.address, port=636, use_ssl=True, tls=tls, get_info=ldap3.NONE)
        return ldap3.Connection(server, user=ADMIN_NT, password=ADMIN_PASSWORD, auto_bind=True,
                                raise_exceptions=True, check_names=False, auto_range=False)


# What samba_spnupdate registers on a real DC (it does not run with only the ldap and kdc
# services): the service principal Kerberos clients of LDAP ask a ticket for.
LDAP_SERVICE_PRINCIPAL = f"""dn: CN=DC1,OU=Domain Controllers,{BASE_DN}
changetype: modify
add: servicePrincipalName
servicePrincipalName: ldap/dc1.{REALM.lower()}
servicePrincipalName: ldap/dc1.{REALM.lower()}/{REALM.lower()}
servicePrincipalName: ldap/DC1
-
"""
KERBEROS_HOST = f"dc1.{REALM.lower()}"


# The Exchange attributes Samba lacks (testinfra.md: "Exchange attributes in Samba's schema").
_REAL_OIDS = {"msExchRecipientTypeDetails": "1.2.840.113556.1.4.7000.102.50855",
              "msExchRecipientDisplayType": "1.2.840.113556.1.4.7000.102.50730",
              "msExchRemoteRecipientType": "1.2.840.113556.1.4.7000.102.51611"}
_EXCHANGE_ATTRIBUTES = [
    ("msExchRecipientTypeDetails", "ms-Exch-Recipient-Type-Details", "2.5.5.16", 65),
    ("msExchRecipientDisplayType", "ms-Exch-Recipient-Display-Type", "2.5.5.9", 2),
    ("msExchRemoteRecipientType", "ms-Exch-Remote-Recipient-Type", "2.5.5.16", 65),
    ("msExchHideFromAddressLists", "ms-Exch-Hide-From-Address-Lists", "2.5.5.8", 1),
    ("msExchMailboxGuid", "ms-Exch-Mailbox-Guid", "2.5.5.10", 4),
    ("mailNickname", "ms-Exch-Mail-Nickname", "2.5.5.12", 64),
    ("targetAddress", "ms-Exch-Target-Address", "2.5.5.12", 64),
] + [(f"extensionAttribute{i}", f"ms-Exch-Extension-Attribute-{i}", "2.5.5.12", 64) for i in range(1, 16)]


def _oid(name: str) -> str:
    if name in _REAL_OIDS:
        return _REAL_OIDS[name]
    # Microsoft's GUID-derived private arc; Samba rejects 2.25.<uuid> OIDs
    g = str(uuid.uuid5(uuid.NAMESPACE_URL, "zivsync-test-schema/" + name))
    chunks = [(0, 4), (4, 8), (9, 13), (14, 18), (19, 23), (24, 30), (30, 36)]
    return "1.2.840.113556.1.8000.2554." + ".".join(str(int(g[a:b], 16)) for a, b in chunks)


def schema_ldifs() -> list[str]:
    """The Exchange attributes zivsync reads, and an auxiliary class carrying them to users,
    groups and contacts, as three LDIF change files for :meth:`SambaDC.load_ldif` (each a
    separate process, so each sees the schema the one before it made). Loaded offline right
    after provisioning: 1.6 s, against 5 s for the same over LDAP."""
    attributes = "\n".join(
        f"dn: CN={cn},{SCHEMA_DN}\nchangetype: add\nobjectClass: top\nobjectClass: attributeSchema\n"
        f"lDAPDisplayName: {name}\nattributeID: {_oid(name)}\nattributeSyntax: {syntax}\n"
        f"oMSyntax: {om_syntax}\nisSingleValued: TRUE\nsearchFlags: 1\nadminDisplayName: {cn}\n"
        for name, cn, syntax, om_syntax in _EXCHANGE_ATTRIBUTES)
    klass = (f"dn: CN=ms-Exch-Test-Recipient,{SCHEMA_DN}\nchangetype: add\nobjectClass: top\n"
             f"objectClass: classSchema\nlDAPDisplayName: msExchTestRecipient\n"
             f"governsID: {_oid('msExchTestRecipient')}\nobjectClassCategory: 3\nsubClassOf: top\n"
             + "".join(f"mayContain: {a[0]}\n" for a in _EXCHANGE_ATTRIBUTES)
             + "adminDisplayName: ms-Exch-Test-Recipient\n")
    auxiliary = "\n".join(f"dn: CN={cls},{SCHEMA_DN}\nchangetype: modify\nadd: auxiliaryClass\n"
                          f"auxiliaryClass: msExchTestRecipient\n-\n" for cls in ("User", "Group", "Contact"))
    return [attributes, klass, auxiliary]
