"""``bin/zeostatus``: the ZEO server's health without a Zope client.

Uses ZEO's own ``ruok`` handshake: connect, read the server's greeting,
answer ``ruok`` instead of a protocol version, and the server replies
with its per-storage statistics as JSON and closes.  Nothing is
unpickled, nothing imported from Zope.  Exit status 0 when the server
answered, 1 when it did not (for monitoring: nagios-style).

With TLS (``[zeo] client-ssl``, passed in as ZEO's ``<ssl>`` section
text) it connects as the instances do, with their certificate, and
also reports when the server's certificate (as presented in the
handshake) and the client's (from its file) expire: one line each, a
WARNING in it under 30 days, and ``certificates`` in ``--json``.  The
client's certificate is reported even when the server does not answer.
"""

import argparse
import json
import logging
import socket
import ssl as ssl_module
import struct

from .. import certificates
from .cluster import parse_address

logger = logging.getLogger(__name__)


def frame(sock, size_limit=16 * 1024 * 1024):
    header = _exactly(sock, 4)
    (size,) = struct.unpack(">I", header)
    if size > size_limit:
        raise OSError(f"answer of {size} bytes is too large")
    return _exactly(sock, size)


def _exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise OSError("the server closed the connection")
        data += chunk
    return data


def ruok(address, timeout=5.0, tls=None):
    """The server's statistics, {storage: {...}}; OSError if it is down."""
    return ask(address, timeout, tls)[0]


def ask(address, timeout=5.0, tls=None):
    """(statistics, the server's certificate as getpeercert() decodes it).

    *tls*: (SSL context, server hostname or None) for a TLS server; the
    certificate is None without it.  The hostname defaults to the
    address's host, as ZEO's client does.
    """
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as raw:
        raw.settimeout(timeout)
        raw.connect(address)
        sock, peercert = raw, None
        if tls is not None:
            context, hostname = tls
            if hostname is None and not isinstance(address, str):
                hostname = address[0]
            sock = context.wrap_socket(raw, server_hostname=hostname)
            peercert = sock.getpeercert()
        with sock:
            frame(sock)  # the server's greeting: its protocol version
            sock.sendall(struct.pack(">I", 4) + b"ruok")
            return json.loads(frame(sock).decode("ascii")), peercert


def tls_settings(text):
    """(context, hostname, client certificate path) from ``<ssl>`` text,
    or None without TLS; ValueError/OSError/SSLError if it is unusable."""
    section = certificates.ssl_section(text)
    if not section:
        return None
    context, hostname = certificates.client_context(section)
    return context, hostname, section.get("certificate")


def certificate_report(client_path, peercert):
    """{"client": ..., "server": ...} for ``--json``; None without TLS."""
    not_after = certificates.peer_not_after(peercert)
    return {
        "client": certificates.file_expiry(client_path) if client_path else None,
        "server": certificates.expiry(not_after) if not_after else None,
    }


def main(argv=None, address=None, ssl=None):
    parser = argparse.ArgumentParser(prog="zeostatus", description=__doc__.split("\n")[0])
    parser.add_argument("--address", default=address, help="socket path or host:port")
    parser.add_argument("--json", action="store_true", help="print JSON for machines")
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    if not args.address:
        parser.error("--address is required")
    try:
        tls = tls_settings(ssl)
    except (ValueError, OSError, ssl_module.SSLError) as exc:
        print(f"zeostatus: cannot use [zeo] client-ssl: {exc}")
        return 1
    client_path = tls[2] if tls else None
    try:
        stats, peercert = ask(parse_address(args.address), args.timeout, tls and tls[:2])
    except Exception as exc:
        logger.debug("ruok failed", exc_info=True)
        certs = certificate_report(client_path, None) if tls else None
        if args.json:
            print(json.dumps({"up": False, "address": args.address, "error": str(exc),
                              "certificates": certs}))
        else:
            print(f"ZEO server at {args.address}: DOWN ({exc})")
            print_certificates(certs)
        return 1
    certs = certificate_report(client_path, peercert) if tls else None
    if args.json:
        print(json.dumps({"up": True, "address": args.address, "storages": stats,
                          "certificates": certs}, indent=2))
        return 0
    print(f"ZEO server at {args.address}: up")
    print_certificates(certs)
    for name, s in sorted(stats.items()):
        print(
            f"  storage {name}: {s.get('connections')} clients, "
            f"{s.get('commits')} commits, {s.get('aborts')} aborts, "
            f"{s.get('conflicts')} conflicts ({s.get('conflicts_resolved')} resolved), "
            f"{s.get('active_txns')} active, {s.get('waiting')} waiting, "
            f"last transaction {s.get('last-transaction')}"
        )
    return 0


def print_certificates(certs):
    if not certs:
        return
    for kind in ("server", "client"):
        if certs[kind]:
            print("  " + certificates.describe(f"{kind} certificate", certs[kind]))
