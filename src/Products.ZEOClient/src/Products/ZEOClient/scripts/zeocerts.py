"""``bin/zeocerts``: a private CA and the TLS certificates of a cluster.

::

    bin/zeocerts ca                              the bundle's CA, once
    bin/zeocerts server HOSTNAME [--ip ADDR]...  the ZEO server's certificate
    bin/zeocerts client NAME                     one per client host

Everything is written to ``var/certs/`` (mode 0700, keys 0600) with the
``openssl`` command line: no Python dependency (the bundle has no
``cryptography``).  Each command prints the local.cfg lines for the host
that uses what it made: the server's ``[zeo] address`` and
``server-ssl``, a client host's ``client-address`` and ``client-ssl``.
The paths in them are written ``${zeo:var}/certs/...``, so they are
right on any host whose bundle keeps the files in its own var/certs/.

Why a CA of the bundle's own: the server's ``authenticate`` names it, so
the server accepts exactly the clients whose certificate it signed (not
any certificate a public CA ever issued), and each client's
``authenticate`` names it too, so a client talks only to a server it
signed.  Its key (``ca.key``) stays on the host where ``bin/zeocerts
ca`` ran; a client host gets ``ca.pem``, its certificate and its key.

The certificates are what ZEO's contexts accept under
``VERIFY_X509_STRICT``: the CA with ``CA:TRUE`` and ``keyCertSign``; the
others ``CA:FALSE``, an extended key usage (serverAuth, clientAuth) and
key identifiers; the server's with a subjectAltName for its host name
and addresses, which the clients' host name check matches.  Keys are EC
P-256 (quick to make and to use).  The CA is valid for 10 years, the
others for ``--days`` (825).  Making a server or client certificate
again replaces it (that is how one is renewed); the files are written
beside the old ones and renamed over them, so a failure keeps the old.
The CA is never replaced: every certificate in use depends on it.
"""

import argparse
import ipaddress
import logging
import os
import re
import subprocess
import sys
import tempfile

from .. import certificates

logger = logging.getLogger(__name__)

CA_DAYS = 3650
DAYS = 825
DEFAULT_PORT = 8100
# A host name (RFC 1123 labels); also what a client's NAME may be: it
# becomes a file name and the certificate's subject.
HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)

EXTENSIONS = """\
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = {san}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""

SERVER_CONFIG = """\
[zeo]
# All interfaces, or the one address the client hosts reach.
address = 0.0.0.0:{port}
server-ssl =
    <ssl>
      certificate {certs}/server.pem
      key {certs}/server.key
      authenticate {certs}/ca.pem
    </ssl>
"""

CLIENT_CONFIG = """\
[zeo]
client-address = {server}:{port}
client-ssl =
    <ssl>
      certificate {certs}/client-{name}.pem
      key {certs}/client-{name}.key
      authenticate {certs}/ca.pem
      server-hostname {server}
    </ssl>
"""


class CertsError(Exception):
    """Nothing was made; the message says why and what to do."""


def check_hostname(value, what):
    if not HOSTNAME.match(value):
        raise CertsError(
            f"{value!r} is not a valid {what}: letters, digits and hyphens, "
            f"in dot-separated labels of at most 63 characters"
        )
    return value


def check_ip(value):
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise CertsError(f"{value!r} is not an IP address") from None


class Authority:
    """The bundle's CA in *directory* and the certificates it issues."""

    def __init__(self, directory):
        self.directory = directory
        self.ca_pem = self.path("ca.pem")
        self.ca_key = self.path("ca.key")

    def path(self, name):
        return os.path.join(self.directory, name)

    def exists(self):
        return os.path.exists(self.ca_pem) or os.path.exists(self.ca_key)

    # -- making ----------------------------------------------------------

    def make_ca(self, days=CA_DAYS):
        if self.exists():
            raise CertsError(
                f"a CA already exists in {self.directory}, and every "
                f"certificate in use depends on it: it is kept.  To start "
                f"over, remove ca.pem and ca.key there yourself, then make "
                f"the server's and every client's certificate again"
            )
        with self._workspace() as work:
            key = self._new_key(work, "ca.key")
            self._openssl(
                "req", "-x509", "-new", "-key", key, "-subj", "/CN=ZEO cluster CA",
                "-days", str(days), "-config", self._extensions(work),
                "-extensions", "ca", "-out", os.path.join(work, "ca.pem"),
            )
            self._install(work, "ca.key", "ca.pem")
        return self.ca_pem

    def make_server(self, hostname, ips=(), days=DAYS):
        """server.pem/key for *hostname* (a name or an address) and *ips*."""
        names, addresses = [], [check_ip(ip) for ip in ips]
        try:
            addresses.insert(0, str(ipaddress.ip_address(hostname)))
        except ValueError:
            names.append(check_hostname(hostname, "host name"))
        san = ", ".join(
            [f"DNS:{n}" for n in names] + [f"IP:{a}" for a in dict.fromkeys(addresses)]
        )
        return self._issue("server", "server", hostname, days, san=san)

    def make_client(self, name, days=DAYS):
        check_hostname(name, "client name")
        return self._issue(f"client-{name}", "client", name, days)

    def _issue(self, stem, kind, common_name, days, san=""):
        if not (os.path.exists(self.ca_pem) and os.path.exists(self.ca_key)):
            raise CertsError(
                f"no CA in {self.directory}: make it first with "
                f"bin/zeocerts ca (on the host that is to keep its key)"
            )
        with self._workspace() as work:
            key = self._new_key(work, f"{stem}.key")
            csr = os.path.join(work, f"{stem}.csr")
            extensions = self._extensions(work, san=san or "DNS:unused")
            self._openssl(
                "req", "-new", "-key", key, "-subj", f"/CN={common_name}",
                "-config", extensions, "-out", csr,
            )
            self._openssl(
                "x509", "-req", "-in", csr, "-CA", self.ca_pem, "-CAkey", self.ca_key,
                "-CAserial", self.path("ca.srl"), "-CAcreateserial",
                "-days", str(days), "-extfile", extensions, "-extensions", kind,
                "-out", os.path.join(work, f"{stem}.pem"),
            )
            self._install(work, f"{stem}.key", f"{stem}.pem")
        return self.path(f"{stem}.pem"), self.path(f"{stem}.key")

    def server_name(self):
        """The host name the server's certificate was made for, or None."""
        if not os.path.exists(self.path("server.pem")):
            return None
        output = self._openssl(
            "x509", "-noout", "-subject", "-nameopt", "RFC2253",
            "-in", self.path("server.pem"),
        )
        found = re.search(r"CN=([^,\s]+)", output)
        return found.group(1) if found else None

    # -- helpers ---------------------------------------------------------

    def _workspace(self):
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        os.chmod(self.directory, 0o700)
        return tempfile.TemporaryDirectory(prefix=".new-", dir=self.directory)

    def _extensions(self, work, san="DNS:unused"):
        path = os.path.join(work, "extensions.cnf")
        with open(path, "w") as f:
            f.write(EXTENSIONS.format(san=san))
        return path

    def _new_key(self, work, name):
        path = os.path.join(work, name)
        self._openssl(
            "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-out", path,
        )
        os.chmod(path, 0o600)
        return path

    def _install(self, work, *names):
        for name in names:
            os.chmod(os.path.join(work, name), 0o600 if name.endswith(".key") else 0o644)
            os.replace(os.path.join(work, name), self.path(name))

    def _openssl(self, *args):
        try:
            command = certificates.openssl_command()
        except certificates.CertificateError as exc:
            raise CertsError(str(exc)) from None
        result = subprocess.run(
            [command, *args], capture_output=True, text=True, timeout=120, check=False
        )
        if result.returncode != 0:
            detail = (result.stderr.strip().splitlines() or ["no message"])[-1]
            raise CertsError(f"openssl {args[0]} failed: {detail}")
        return result.stdout


def port_of(address):
    host, _, port = (address or "").rpartition(":")
    return int(port) if host and port.isdigit() and int(port) else DEFAULT_PORT


def expires(path):
    return certificates.expiry(certificates.file_not_after(path))["not_after"][:10]


def main(argv=None, directory=None, server_address=None):
    parser = argparse.ArgumentParser(prog="zeocerts", description=__doc__.split("\n")[0])
    parser.add_argument("--directory", default=directory, help="where the files go")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("ca", help="the bundle's private CA (once)")
    server = commands.add_parser("server", help="the ZEO server's certificate")
    server.add_argument("hostname", help="the name (or address) clients connect to")
    server.add_argument("--ip", action="append", default=[],
                        help="an address of the server to put in the certificate too")
    client = commands.add_parser("client", help="the certificate of one client host")
    client.add_argument("name", help="the client host's name")
    for sub in (server, client):
        sub.add_argument("--days", type=int, default=DAYS,
                         help=f"validity in days (default {DAYS})")
    args = parser.parse_args(argv)
    if not args.directory:
        parser.error("--directory is required")
    if getattr(args, "days", 1) < 1:
        parser.error("--days takes a positive number of days")
    # The bundle's own folder is named as buildout knows it, so that the
    # lines are right on the other hosts too; another one as it is.
    certs = "${zeo:var}/certs" if args.directory == directory else os.path.abspath(
        args.directory
    )
    authority = Authority(os.path.abspath(args.directory))
    port = port_of(server_address)
    try:
        if args.command == "ca":
            path = authority.make_ca()
            print(f"Made the CA: {path} (expires {expires(path)}) and its key ca.key;")
            print("keep ca.key on this host.  Next: bin/zeocerts server HOSTNAME.")
        elif args.command == "server":
            pem, key = authority.make_server(args.hostname, args.ip, args.days)
            names = ", ".join([args.hostname, *args.ip])
            print(f"Made {pem} and {os.path.basename(key)} for {names}"
                  f" (expires {expires(pem)}).\n")
            print("On the server's host, in local.cfg (extends = buildout.cfg):\n")
            print(SERVER_CONFIG.format(port=port, certs=certs))
            print("The server then accepts only clients with a certificate of this CA,")
            print("its own host's instances included: bin/zeocerts client NAME for each.")
        else:
            pem, key = authority.make_client(args.name, args.days)
            server_name = authority.server_name() or "ZEO-SERVER-HOST"
            print(f"Made {pem} and {os.path.basename(key)} for {args.name}"
                  f" (expires {expires(pem)}).\n")
            print(f"Copy ca.pem, {os.path.basename(pem)} and {os.path.basename(key)} into")
            print(f"the var/certs/ of {args.name}'s bundle (mode 0700, the key 0600),")
            print("and in its local.cfg (extends = client.cfg on a client host):\n")
            print(CLIENT_CONFIG.format(name=args.name, server=server_name, port=port, certs=certs))
    except (CertsError, certificates.CertificateError) as exc:
        print(f"zeocerts {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0
