"""What the kernel knows of a TCP connection: how much of what was sent
has arrived.

The link watchdogs (``client.py`` for the instances, ``server/protocol.py``
for the server) close a connection on which nothing has arrived for a
while.  A large transfer on a slow link must not look like that: while a
client sends a 20 MB blob at 2 MB/s, the server says nothing until it has
it all.  What shows that such a link is alive is that the peer keeps
acknowledging what is sent, which only the kernel sees
(``tcpi_bytes_acked`` in Linux's ``TCP_INFO``, since 4.1).  A dead link
acknowledges nothing.

``Progress`` compares that count between two looks; a few small messages
(the watchdog's own questions) do not count as progress, so that a peer
whose kernel still acknowledges but whose program answers nothing (a
frozen server, a proxy that holds everything) is still found silent.
Elsewhere (no ``TCP_INFO``, unix sockets) there is no progress to see
and only what arrives counts.
"""

import logging
import socket
import struct

logger = logging.getLogger(__name__)

BYTES_ACKED_OFFSET = 120  # struct tcp_info: __u64 tcpi_bytes_acked
TCP_INFO_SIZE = 256
# Less than this acknowledged between two looks is not a transfer going on.
MIN_PROGRESS = 16 * 1024


def bytes_acked(transport):
    """Bytes the peer has acknowledged on *transport*'s socket, or None."""
    try:
        sock = transport.get_extra_info("socket")
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_SIZE)
    except Exception:  # no transport, no socket, not TCP, not Linux
        return None
    if len(info) < BYTES_ACKED_OFFSET + 8:
        return None
    return struct.unpack_from("=Q", info, BYTES_ACKED_OFFSET)[0]


class Progress:
    """Whether a transfer to the peer went on since the last look."""

    def __init__(self):
        self.acked = None

    def __call__(self, transport):
        acked = bytes_acked(transport)
        before, self.acked = self.acked, acked
        return None not in (acked, before) and acked - before >= MIN_PROGRESS
