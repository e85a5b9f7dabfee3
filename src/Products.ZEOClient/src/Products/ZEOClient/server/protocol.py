"""Hardened ZEO server protocol; see README.rst beside this file.

It subclasses ZEO's ``ServerProtocol`` and takes its place in
``ZEO.asyncio.server`` (where ``new_connection`` looks it up), so every
connection the server accepts after ``install()`` gets it.  The methods
and attributes of ZEO relied on are checked by ``check_hook_points``:
if ZEO has moved them, the server refuses to start, loudly.

One change is not hardening but ordering (``async_threadsafe``): ZEO
6.2 sends a commit's invalidations to the other clients through
``call_soon_threadsafe``, a callback for later, while it answers the
committing client and the next votes and finishes at once.  Under load
the next committer's whole vote and finish can be answered before that
callback runs (seen on uvloop in nearly every second of 8 writers, on
asyncio's loop too, more rarely), so a client learns of its own newer
transaction before an older one's invalidations: ZEO's client logs
"new last tid ... must be greater than previous one", and until the
late invalidation arrives a new transaction there reads, at a snapshot
that includes the older commit, the objects that commit changed from
the cache as they were before it (ZEO issue #193).  Here the
invalidations are written at once when the server's own loop thread
sends them, in the order of the commits.
"""

import io
import logging
import struct
import threading
import time

import ZEO.asyncio.marshal
import ZEO.asyncio.server

from .. import tcpinfo

logger = logging.getLogger(__name__)

# Exactly what legitimate clients put in pickled protocol messages.
ALLOWED_GLOBALS = frozenset(
    {
        ("ZopeUndo.Prefix", "Prefix"),
        ("copy_reg", "_reconstructor"),
        ("copyreg", "_reconstructor"),
        ("__builtin__", "object"),
        ("builtins", "object"),
        ("__builtin__", "set"),
        ("builtins", "set"),
        ("__builtin__", "frozenset"),
        ("builtins", "frozenset"),
        # A transaction's extension goes to tpc_begin as the client has
        # it (ClientStorage sends ``txn.extension``, not ZODB's pickle of
        # it): a mapping whose pickling reduces to a dict call, as in
        # ZODB's own IteratorStorage tests, arrives as ``dict(pairs)``.
        # Like set(), it only builds a container of what the message
        # already holds.
        ("__builtin__", "dict"),
        ("builtins", "dict"),
    }
)

ENCODINGS = {"pickle": b"Z", "msgpack": b"M"}
DEFAULT_MAX_FRAME = 64 * 1024 * 1024
# Longer than two of ZEO's client heartbeats (60 s each).
DEFAULT_IDLE_TIMEOUT = 150


class RefusedMessage(Exception):
    """A protocol message the hardened server does not accept."""


def check_hook_points():
    """Raise RuntimeError (at server start) if ZEO has changed."""
    server_protocol = getattr(ZEO.asyncio.server, "ServerProtocol", None)
    missing = [
        name
        for name in ("finish_connection", "message_received", "connection_made",
                     "async_threadsafe", "call_async")
        if not hasattr(server_protocol, name)
    ]
    if server_protocol is None or not hasattr(ZEO.asyncio.server, "new_connection"):
        missing.append("ZEO.asyncio.server.ServerProtocol/new_connection")
    if not hasattr(ZEO.asyncio.marshal, "server_decoder"):
        missing.append("ZEO.asyncio.marshal.server_decoder")
    if missing:
        raise RuntimeError(
            "Products.ZEOClient.server cannot harden this ZEO version; "
            "missing: " + ", ".join(missing)
        )


# Python 2 names that pickles of protocol < 3 still carry.
PYTHON3_MODULE = {"__builtin__": "builtins", "copy_reg": "copyreg"}


def restricted_find_global(module, name):
    if (module, name) not in ALLOWED_GLOBALS:
        raise RefusedMessage(f"global {module}.{name} is not allowed")
    module = PYTHON3_MODULE.get(module, module)
    module_object = __import__(module, fromlist=[name])
    return getattr(module_object, name)


def restricted_loads(data):
    unpickler = ZEO.asyncio.marshal.Unpickler(io.BytesIO(data))
    unpickler.find_global = restricted_find_global
    try:
        unpickler.find_class = restricted_find_global
    except AttributeError:
        pass
    return unpickler.load()


class FrameGuard:
    """Follows the sized-message framing (4-byte big-endian length, then
    the body) of the bytes received, to refuse an oversized frame as soon
    as its header arrives."""

    def __init__(self, limit):
        self.limit = limit
        self.header = b""
        self.remaining = 0

    def feed(self, data):
        """Return None, or the size of the first frame over the limit."""
        i, n = 0, len(data)
        while i < n:
            if self.remaining:
                take = min(self.remaining, n - i)
                self.remaining -= take
                i += take
                continue
            take = min(4 - len(self.header), n - i)
            self.header += data[i:i + take]
            i += take
            if len(self.header) == 4:
                (size,) = struct.unpack(">I", self.header)
                self.header = b""
                if size > self.limit:
                    return size
                self.remaining = size
        return None


class HardenedServerProtocol(ZEO.asyncio.server.ServerProtocol):

    #: Encoding prefixes accepted in a handshake; None: only the one the
    #: server offers (ZEO's clients always answer with that one).
    encodings = None
    max_frame_size = DEFAULT_MAX_FRAME
    #: Seconds a connection may deliver nothing before it is closed (its
    #: transaction aborted, the commit lock freed); 0: never.  ZEO's own
    #: clients send a heartbeat every 60 s, the bundle's ask something
    #: every read-timeout / 3 when idle.
    idle_timeout = DEFAULT_IDLE_TIMEOUT

    def refuse(self, why):
        logger.error("refused connection from %s: %s; closing it", self.addr, why)
        self.close()

    def close(self):
        # ZEO 6.2 only tells the client's ZEOStorage that it is gone when
        # the peer closes: a close of the server's own (transaction
        # timeout, refused message) sets ``closed`` and drops
        # ``zeo_storage``, so ``connection_lost`` skips
        # ``notify_disconnected`` and a transaction holding the commit
        # lock keeps it for ever: every later commit waits until the
        # server restarts.  Abort it and free the lock here.
        zeo_storage = self.zeo_storage
        super().close()
        if zeo_storage is not None and zeo_storage.connected:
            zeo_storage.notify_disconnected()

    def connection_made(self, transport):
        super().connection_made(transport)
        self._loop_thread = threading.get_ident()
        receive = self.data_received
        guard = FrameGuard(self.max_frame_size)

        self.last_received = time.monotonic()
        self._sending = tcpinfo.Progress()
        if self.idle_timeout:
            self._idle_check_later()

        def data_received(data):
            if self.closed:
                return
            self.last_received = time.monotonic()
            too_big = guard.feed(data)
            if too_big is not None:
                return self.refuse(
                    f"a message frame of {too_big} bytes is larger than "
                    f"max-frame-size ({self.max_frame_size})"
                )
            receive(data)

        self.data_received = data_received

    def async_threadsafe(self, method, *args):
        # ZEO's StorageServer.invalidate and broadcast_info send through
        # here to every other client (the module docstring says why it
        # must not wait for a later callback when the loop thread calls).
        if threading.get_ident() == getattr(self, "_loop_thread", None):
            if not self.closed:
                self.call_async(method, args)
        else:
            super().async_threadsafe(method, *args)

    def _idle_check_later(self):
        self.loop.call_later(min(5.0, self.idle_timeout / 4), self._idle_check)

    def _idle_check(self):
        if self.closed:
            return
        transport = getattr(getattr(self, "sm_protocol", None), "transport", None)
        if self._sending(transport):
            # A long answer to a slow client is arriving there: it is alive.
            self.last_received = time.monotonic()
        silent = time.monotonic() - self.last_received
        if silent >= self.idle_timeout:
            # A client host that vanished (powered off, cut off by a
            # firewall): nothing will ever arrive, and TCP may take a
            # quarter of an hour to say so.
            return self.refuse(f"nothing received for {silent:.0f}s (idle-timeout)")
        self._idle_check_later()

    def finish_connection(self, protocol_version):
        accepted = self.encodings or {self.announce_protocol[:1]}
        if protocol_version != b"ruok" and protocol_version[:1] not in accepted:
            return self.refuse(f"handshake {protocol_version[:16]!r} not accepted")
        super().finish_connection(protocol_version)
        if self.closed or protocol_version == b"ruok":
            return
        decode = self.decode
        if protocol_version[:1] == b"Z":
            decode = restricted_loads

        def checked_decode(message):
            try:
                decoded = decode(message)
                name = decoded[2]
                if decoded[0] != -1 and name not in self.methods:
                    raise RefusedMessage(f"method {name!r} is not offered")
            except RefusedMessage as exc:
                self.refuse(str(exc))
                raise
            except Exception as exc:
                self.refuse(f"undecodable message ({type(exc).__name__})")
                raise
            return decoded

        self.decode = checked_decode


def install(encodings=None, max_frame_size=DEFAULT_MAX_FRAME,
            idle_timeout=DEFAULT_IDLE_TIMEOUT):
    """Make the server use HardenedServerProtocol for new connections."""
    check_hook_points()
    HardenedServerProtocol.idle_timeout = idle_timeout
    HardenedServerProtocol.encodings = (
        frozenset(ENCODINGS[e] for e in encodings) if encodings else None
    )
    HardenedServerProtocol.max_frame_size = max_frame_size
    ZEO.asyncio.server.ServerProtocol = HardenedServerProtocol
    logger.info(
        "hardened ZEO protocol: encodings %s, max frame %d bytes, "
        "idle timeout %ss, %d allowed globals",
        ", ".join(encodings) if encodings else "the one offered",
        max_frame_size,
        idle_timeout,
        len(ALLOWED_GLOBALS),
    )
