"""``bin/zeostatus``: the ZEO server's health without a Zope client.

Uses ZEO's own ``ruok`` handshake: connect, read the server's greeting,
answer ``ruok`` instead of a protocol version, and the server replies
with its per-storage statistics as JSON and closes.  Nothing is
unpickled, nothing imported from Zope.  Exit status 0 when the server
answered, 1 when it did not (for monitoring: nagios-style).
"""

import argparse
import json
import socket
import struct
import sys

from .cluster import parse_address


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


def ruok(address, timeout=5.0):
    """The server's statistics, {storage: {...}}; OSError if it is down."""
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(address)
        frame(sock)  # the server's greeting: its protocol version
        sock.sendall(struct.pack(">I", 4) + b"ruok")
        return json.loads(frame(sock).decode("ascii"))


def main(argv=None, address=None):
    parser = argparse.ArgumentParser(prog="zeostatus", description=__doc__.split("\n")[0])
    parser.add_argument("--address", default=address, help="socket path or host:port")
    parser.add_argument("--json", action="store_true", help="print JSON for machines")
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    if not args.address:
        parser.error("--address is required")
    try:
        stats = ruok(parse_address(args.address), args.timeout)
    except Exception as exc:
        if args.json:
            print(json.dumps({"up": False, "address": args.address, "error": str(exc)}))
        else:
            print(f"ZEO server at {args.address}: DOWN ({exc})")
        return 1
    if args.json:
        print(json.dumps({"up": True, "address": args.address, "storages": stats}, indent=2))
        return 0
    print(f"ZEO server at {args.address}: up")
    for name, s in sorted(stats.items()):
        print(
            f"  storage {name}: {s.get('connections')} clients, "
            f"{s.get('commits')} commits, {s.get('aborts')} aborts, "
            f"{s.get('conflicts')} conflicts ({s.get('conflicts_resolved')} resolved), "
            f"{s.get('active_txns')} active, {s.get('waiting')} waiting, "
            f"last transaction {s.get('last-transaction')}"
        )
    return 0
