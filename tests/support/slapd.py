"""A real OpenLDAP server for tests: Debian's `slapd` (`ldap-utils` for the clients) from a `slapd.conf`
written at start, an mdb database filled with `slapadd`, on free ports of 127.0.0.1, everything under one
temporary directory. The machine's own slapd (port 389, /etc/ldap/slapd.d) is never used.

The directory (`BASE`):
- `ou=people`: alice (the only uid starting with "al"), bob, carol, dave, and `o(k),*` (a uid, and so a
  DN, holding `(`, `)`, `*` and `,`); every password is `<uid>-pw` (`PASSWORDS`).
- `ou=groups`: `cn=scientists` (groupOfNames, member alice), `cn=admins` (groupOfNames, member carol),
  `cn=staff` (posixGroup, memberUid bob).
- `cn=reader,<BASE>`: a read-only search account (`READER`, `READER_PASSWORD`).

Anonymous clients may bind (authenticate) but not search: a DN lookup needs the search account. As some
directories do, a bind with a DN and an empty password succeeds (an unauthenticated bind, RFC 4513 5.1.2),
so a client that sent one would take it for a good password. With
`tls=True` the server also speaks StartTLS on its ldap:// port and LDAPS on a second port, with a
certificate for 127.0.0.1 signed by a test CA (`tests.support.certs`).
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import ldap3

from fleethub.shared.net import free_port
from tests.support.certs import Certs, make_certs

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
SCHEMA_DIR = Path("/etc/ldap/schema")
INSTALL = "apt-get install slapd ldap-utils (the .ci/run script does)"
BASE = "dc=example,dc=org"
PEOPLE = f"ou=people,{BASE}"
GROUPS = f"ou=groups,{BASE}"
READER = f"cn=reader,{BASE}"
READER_PASSWORD = "reader-pw"
ODD_USER = "o(k),*"
PASSWORDS = {uid: f"{uid}-pw" for uid in ("alice", "bob", "carol", "dave", ODD_USER)}
MAILS = {uid: f"{uid}@example.org" for uid in ("alice", "bob", "carol", "dave")}

CONF = """\
include {schema}/core.schema
include {schema}/cosine.schema
include {schema}/inetorgperson.schema
include {schema}/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {run}/slapd.pid
argsfile {run}/slapd.args
allow bind_anon_dn
{tls}
database mdb
maxsize 33554432
suffix "{base}"
rootdn "cn=admin,{base}"
directory {run}/db
access to attrs=userPassword by self write by anonymous auth by * none
access to * by users read by anonymous auth
"""

TLS_CONF = """\
TLSCACertificateFile {ca}
TLSCertificateFile {cert}
TLSCertificateKeyFile {key}
"""


def missing() -> list[str]:
    """What of OpenLDAP is not installed here."""
    out = [path for path in (SLAPD, SLAPADD) if not os.access(path, os.X_OK)]
    out += [] if (SCHEMA_DIR / "nis.schema").exists() else [str(SCHEMA_DIR / "nis.schema")]
    return out + ([] if shutil.which("ldapsearch") else ["ldapsearch"])


def ssha(password: str) -> str:
    """`password` as slapd's salted SHA-1 `{SSHA}` userPassword value."""
    salt = os.urandom(8)
    return "{SSHA}" + base64.b64encode(hashlib.sha1(password.encode() + salt).digest() + salt).decode()


def _dn_value(value: str) -> str:
    # an RDN value as LDIF writes it in a DN (RFC 4514 escapes; none of ours starts with a space or '#')
    return "".join("\\" + c if c in ',+"\\<>;=' else c for c in value)


def _person(uid: str, number: int) -> str:
    mail = f"mail: {MAILS[uid]}\n" if uid in MAILS else ""
    return (f"dn: uid={_dn_value(uid)},{PEOPLE}\nobjectClass: inetOrgPerson\nobjectClass: posixAccount\n"
            f"uid: {uid}\ncn: {uid.capitalize()} Example\nsn: Example\n{mail}uidNumber: {number}\n"
            f"gidNumber: {number}\nhomeDirectory: /home/user{number}\nuserPassword: {ssha(PASSWORDS[uid])}\n")


def directory_ldif() -> str:
    """The entries the test directory starts with."""
    parts = [
        f"dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n",
        f"dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n",
        f"dn: {GROUPS}\nobjectClass: organizationalUnit\nou: groups\n",
        f"dn: {READER}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: reader\n"
        f"userPassword: {ssha(READER_PASSWORD)}\n",
    ]
    parts += [_person(uid, 20001 + i) for i, uid in enumerate(PASSWORDS)]
    parts += [
        f"dn: cn=scientists,{GROUPS}\nobjectClass: groupOfNames\ncn: scientists\nmember: uid=alice,{PEOPLE}\n",
        f"dn: cn=admins,{GROUPS}\nobjectClass: groupOfNames\ncn: admins\nmember: uid=carol,{PEOPLE}\n",
        f"dn: cn=staff,{GROUPS}\nobjectClass: posixGroup\ncn: staff\ngidNumber: 30001\nmemberUid: bob\n",
    ]
    return "\n".join(parts)


@dataclass
class Slapd:
    """A running slapd: its address, ports, and (with TLS) the test CA its certificate is signed by."""

    run: Path
    port: int
    ldaps_port: int | None
    certs: Certs | None
    proc: subprocess.Popen[bytes]

    def dn(self, uid: str) -> str:
        """The DN of the person `uid`."""
        return f"uid={_dn_value(uid)},{PEOPLE}"

    def log(self) -> str:
        """The tail of slapd's output (for a failure's message)."""
        path = self.run / "slapd.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def _answers(port: int) -> bool:
    server = ldap3.Server("127.0.0.1", port=port, get_info=ldap3.NONE, connect_timeout=1)
    conn = ldap3.Connection(server, user=READER, password=READER_PASSWORD, receive_timeout=1)
    try:
        return bool(conn.bind())
    except ldap3.core.exceptions.LDAPException:
        return False
    finally:
        conn.unbind()


@contextmanager
def running_slapd(*, tls: bool = False) -> Iterator[Slapd]:
    """Start slapd (in the foreground, our child) on free ports; stop it and remove its files at the end."""
    absent = missing()
    if absent:
        raise RuntimeError(f"OpenLDAP is not installed ({', '.join(absent)} missing): {INSTALL}")
    run = Path(tempfile.mkdtemp(prefix="fh-slapd-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        (run / "db").mkdir()
        certs = make_certs(run / "tls") if tls else None
        tls_conf = TLS_CONF.format(ca=certs.ca_file, cert=certs.cert_file, key=certs.key_file) if certs else ""
        conf = run / "slapd.conf"
        conf.write_text(CONF.format(schema=SCHEMA_DIR, run=run, tls=tls_conf, base=BASE))
        (run / "data.ldif").write_text(directory_ldif())
        subprocess.run([SLAPADD, "-q", "-f", str(conf), "-l", str(run / "data.ldif")], check=True,
                       capture_output=True, timeout=30)
        port = free_port()
        ldaps_port = free_port() if tls else None
        urls = f"ldap://127.0.0.1:{port}/" + (f" ldaps://127.0.0.1:{ldaps_port}/" if ldaps_port else "")
        with open(run / "slapd.log", "wb") as out:
            # -d 0: stay in the foreground (so we stop and reap it), logging nothing but fatal errors
            proc = subprocess.Popen([SLAPD, "-d", "0", "-f", str(conf), "-h", urls], stdout=out,
                                    stderr=subprocess.STDOUT)
        slapd = Slapd(run, port, ldaps_port, certs, proc)
        deadline = time.monotonic() + 20
        while not _answers(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"slapd did not start (exit {proc.poll()}):\n{slapd.log()}")
            time.sleep(0.05)
        yield slapd
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(run, ignore_errors=True)
