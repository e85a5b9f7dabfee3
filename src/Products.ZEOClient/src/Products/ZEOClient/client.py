"""The bundle's ZEO client storage: ZEO's ClientStorage, made outage-proof.

Stock ZEO 6 behaviour this changes (each point is a test in the bundle):

- A client does not start while the server is down (``wait``).  Here the
  storage opens at once, waits ``startup_wait`` seconds for the server and
  otherwise starts from its persistent cache.
- A request that needs the server while it is away waits 30 s, three
  times over.  Here ZEO's own ``wait_timeout`` is short (fail fast) and
  ``wsgi.py`` keeps Zope from retrying.
- Cache hits are answered while the cache is still being verified after a
  (re)connection, so a request can see data older than the server's.
  Here ``loadBefore`` holds readers (bounded by ``verify_wait``) while a
  connection to the server exists but is not verified yet.  While no
  connection exists at all, the cache is served as it is and responses
  are marked (``X-ZEO-Status: disconnected``).
- A cache newer than the server (a server restored from a backup) makes
  ZEO's verification raise AssertionError and retry forever.  Here it is
  detected first, the cache is dropped with a clear message, and the
  normal verification proceeds on an empty cache.
- After a server crash ZEO clients keep using oids fetched from the dead
  server, which the restarted one hands out again: here they are dropped
  on every (re)connection.
- ZEO writes its persistent cache through a buffered file and flushes it
  only when the last transaction id changes (a commit or an invalidation)
  and at close: after a SIGKILL, or a read-only session ended without
  closing, what the last loads brought is lost.  Here the buffer is
  flushed every ``cache_flush_interval`` seconds (from ZEO's own loop;
  nothing is written when nothing is pending), and a graceful stop
  closes the cache (``graceful.py``).
- Once connected, ZEO's synchronous calls have no timeout and its
  heartbeat only writes: a link that silently stops delivering (a
  firewall that lost its state, a migrated VM, a dead switch) holds every
  caller until TCP gives up, about 15 minutes.  Here a watchdog in ZEO's
  own loop notes when the server last sent anything; after
  ``read_timeout / 3`` of silence it asks the server something cheap
  (``lastTransaction``), and after ``read_timeout`` it aborts the
  connection: the callers get ClientDisconnected (a 503), ``/zeo-health``
  says disconnected, and ZEO reconnects as after any lost connection.
- While disconnected ZEO logs two lines a second, and ZODB a traceback
  for every load that cannot reach the server.  Here those lines are
  filtered out and each change of state is logged once.

What makes commits faster (uvloop, in-memory transaction buffers, the
thread hand-off) is in ``tuning.py``, installed by this storage; with
``direct_calls`` the calling thread makes its own round trips to the
server (``direct.py``).

What is changed lives here and only here: a subclass of ClientStorage
(its documented notify hooks), a subclass of ZEO's client thread that
wraps the verification coroutine of its ``ClientIO`` before the first
connection can start, and a logging filter.  ``check_zeo_internals`` fails
loudly at startup if the ZEO internals relied on have moved.
"""

import logging
import threading
import time

from ZEO.asyncio import client as zeo_client
from ZEO.ClientStorage import ClientStorage
from ZEO.Exceptions import ClientDisconnected

from . import direct
from . import tcpinfo
from . import tuning
from .server.records import RecordRefused

logger = logging.getLogger(__name__)

# Verification outcomes, as recorded for the status screen.
UP_TO_DATE = "up to date"
QUICK = "quick verification"
DROPPED_TOO_OLD = "dropped because too old"
DROPPED_NEWER = "dropped because newer than the server"
EMPTY = "empty cache"


def raise_refused_records():
    """Let the server's RecordRefused reach callers as itself.

    ZEO hands a server error it has no factory for to the client as
    ``ServerException(class name, args)``, which nobody can catch by its
    meaning; registered here, the client raises ``RecordRefused`` (a
    StorageTransactionError: not transient, nothing retries it).
    """
    name = f"{RecordRefused.__module__}.{RecordRefused.__name__}"
    zeo_client.exc_classes[name] = RecordRefused
    zeo_client.exc_factories[name] = zeo_client.create_Exception


def check_zeo_internals():
    """Fail at startup, not at the first outage, if ZEO has changed."""
    missing = [
        name
        for name, owner in (
            ("verify", zeo_client.ClientIO),
            ("protocol", zeo_client.ClientIO),
            ("operational", zeo_client.ClientIO),
            ("verify_result", zeo_client.ClientIO),
            ("setup_delegation", zeo_client.ClientThread),
            ("register", zeo_client.ClientIO),
            ("exc_classes", zeo_client),
            ("exc_factories", zeo_client),
            ("create_Exception", zeo_client),
        )
        if not hasattr(owner, name)
    ]
    if missing:
        raise RuntimeError(
            "Products.ZEOClient does not support this ZEO version: "
            "ZEO.asyncio.client lacks " + ", ".join(missing)
        )


class RetryNoiseFilter(logging.Filter):
    """Drop ZEO's per-retry connection lines (two a second when down)."""

    NOISE = ("retry connecting", "Connection to ")

    def filter(self, record):
        return not (
            record.levelno <= logging.INFO
            and isinstance(record.msg, str)
            and record.msg.startswith(self.NOISE)
        )


class DisconnectedLoadFilter(logging.Filter):
    """Drop ZODB's traceback for a load that failed while disconnected.

    ZODB logs every failed load at ERROR with a traceback; while the
    server is away that is the expected, already answered (503, logged
    in one line by ``wsgi.py``) case.
    """

    def filter(self, record):
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, ClientDisconnected)


_filters = (
    ("ZEO.asyncio.client", RetryNoiseFilter()),
    ("ZODB.Connection", DisconnectedLoadFilter()),
)


def quiet_retry_logging():
    for name, noise in _filters:
        log = logging.getLogger(name)
        if noise not in log.filters:
            log.addFilter(noise)


class _ClientThread(zeo_client.ClientThread):
    """ZEO's client thread, with the verification guarded.

    ``setup_delegation`` runs in the I/O thread and creates the ClientIO;
    connections only start once it returns to the loop, so wrapping here
    cannot race with a first verification.
    """

    def setup_delegation(self, loop):
        super().setup_delegation(loop)
        io = self.client
        storage = io.client
        verify = io.verify

        async def verify_guarded(server_tid):
            if server_tid is None:
                server_tid = await io.protocol.server_call("lastTransaction")
            cache = io.cache
            cache_tid = cache.getLastTid() if cache else None
            if cache_tid and cache_tid > server_tid:
                logger.error(
                    "%s: the client cache (last transaction %s) is newer than "
                    "the server's (%s): the server's data was restored or "
                    "replaced; dropping the cache",
                    storage.__name__,
                    cache_tid.hex(),
                    server_tid.hex(),
                )
                cache.clear()
                storage.invalidateCache()
                storage._verification_dropped_newer = True
            storage._verifying_started()
            return await verify(server_tid)

        io.verify = verify_guarded
        register = io.register

        def register_watched(protocol, server_tid):
            # Before anything else can arrive on this connection.
            storage._watch(protocol)
            return register(protocol, server_tid)

        io.register = register_watched


class _DirectClientThread(direct.DirectCalls, _ClientThread):
    """The client thread with direct round trips (``direct.py``)."""


class ClusterClientStorage(ClientStorage):
    """ClientStorage for an instance of the cluster; see the module doc."""

    # The file of the TLS certificate this client presents and its
    # notAfter when it was loaded, for the status screen (its expiry);
    # set by the storage section.
    client_certificate = client_certificate_not_after = None

    def __init__(self, addr, startup_wait=3.0, verify_wait=10.0,
                 cache_flush_interval=2.0, read_timeout=4.0, direct_calls=False,
                 **kw):
        check_zeo_internals()
        raise_refused_records()
        quiet_retry_logging()
        tuning.install()
        self._verify_wait = verify_wait
        self._verified = threading.Event()
        self._verification_dropped_newer = False
        self._verify_invalidated = 0
        self._connected_once = False
        self.verification = None  # (outcome, objects, time) for status
        self.events = []  # [(time, text)], most recent last, bounded
        # ZEO's cache counts adds and evictions only; hits and misses are
        # counted here (ints: a lost increment under a thread race is an
        # acceptable error for a statistic, a lock on every load is not).
        self.hits = self.misses = 0
        self.disconnects = self.reconnects = 0
        self.state_since = time.time()
        self.silent_links = 0
        self.refusals = []  # [(time, text)] of records the server refused, bounded
        self.refused = 0
        self._watched = None  # the protocol the watchdog follows
        self._last_received = time.monotonic()
        self._ping = None
        self._sending = tcpinfo.Progress()
        kw["wait"] = False
        factory = _ClientThread
        if direct_calls and kw.get("ssl") is not None:
            logger.info(
                "direct calls are off for this client: it uses TLS (ZEO's path)"
            )
        elif direct_calls:
            factory = _DirectClientThread
        super().__init__(addr, _client_factory=factory, **kw)
        self._cache_flush_interval = cache_flush_interval
        if cache_flush_interval:
            self._server.loop.call_soon_threadsafe(self._flush_cache_later)
        self._read_timeout = read_timeout
        if read_timeout:
            self._server.loop.call_soon_threadsafe(self._watchdog_later)
        try:
            self._wait(timeout=startup_wait)
        except ClientDisconnected:
            logger.warning(
                "%s: the ZEO server at %s does not answer; starting from the "
                "client cache (writes fail with 503 until it is back)",
                self.__name__,
                self._addr,
            )
            self._event("server unreachable at start")

    # -- state ---------------------------------------------------------

    def _event(self, text):
        self.events.append((time.time(), text))
        del self.events[:-50]

    def _io(self):
        return self._server.client

    @property
    def direct_calls(self):
        """True when round trips are made by the calling thread (direct.py)."""
        return getattr(self._server, "direct_calls", False)

    def verifying(self):
        """True while a connection exists but its cache is not verified."""
        io = self._io()
        return io.protocol is not None and not io.operational

    def _verifying_started(self):
        # I/O thread, before ZEO's verification runs.
        self._verified.clear()
        self._verify_invalidated = 0

    # -- ZEO's notification hooks (I/O thread) -------------------------

    def invalidateTransaction(self, tid, oids):
        if not self._verified.is_set():
            self._verify_invalidated += len(oids)
        return super().invalidateTransaction(tid, oids)

    def notify_connected(self, conn, info):
        # Oids fetched before the connection broke may never have been
        # used; a server that crashed recovers its oid counter from what
        # was committed and hands them out again, to another client.  Two
        # objects with one oid follow.  Fetch fresh ones.
        del self._oids[:]
        super().notify_connected(conn, info)
        result = getattr(conn, "verify_result", None)
        if self._verification_dropped_newer:
            outcome = DROPPED_NEWER
            self._verification_dropped_newer = False
        else:
            outcome = {
                "Cache up to date": UP_TO_DATE,
                "quick verification": QUICK,
                "cache too old, clearing": DROPPED_TOO_OLD,
                "Non-empty cache w/o tid": DROPPED_TOO_OLD,
            }.get(result, EMPTY)
        objects = self._verify_invalidated if outcome == QUICK else 0
        self.verification = (outcome, objects, time.time())
        what = "reconnected" if self._connected_once else "connected"
        self.reconnects += self._connected_once
        self._connected_once = True
        self.state_since = time.time()
        detail = f"{outcome} ({objects} objects invalidated)" if outcome == QUICK else outcome
        logger.info(
            "%s: %s to the ZEO server at %s; client cache verified: %s",
            self.__name__,
            what,
            self._server_addr,
            detail,
        )
        self._event(f"{what}; cache {detail}")
        self._verified.set()

    def notify_disconnected(self):
        self._verified.clear()
        self.disconnects += 1
        self.state_since = time.time()
        super().notify_disconnected()
        logger.warning(
            "%s: lost the connection to the ZEO server at %s; serving from "
            "the client cache, writes fail with 503 until it is back",
            self.__name__,
            self._server_addr,
        )
        self._event("disconnected")

    # -- the persistent cache (I/O thread) ----------------------------

    def _flush_cache_later(self):
        self._server.loop.call_later(self._cache_flush_interval, self._flush_cache)

    def _flush_cache(self):
        cache = self._cache
        with cache._lock:
            f = cache.f
            if f is None:  # closed
                return
            f.flush()
        self._flush_cache_later()

    # -- the link's watchdog (I/O thread) -----------------------------

    def _watch(self, protocol):
        """Note the time of every message *protocol* receives."""
        sm_protocol = getattr(protocol, "sm_protocol", None)
        receive = getattr(sm_protocol, "receive", None)
        if receive is None:
            logger.error("cannot watch the connection: ZEO's protocol has changed")
            return

        def received(message):
            self._last_received = time.monotonic()
            return receive(message)

        sm_protocol.set_receive(received)
        self._watched = protocol
        self._last_received = time.monotonic()
        self._ping = None

    def _watchdog_later(self):
        self._server.loop.call_later(min(0.5, self._read_timeout / 8), self._watchdog)

    def _watchdog(self):
        if self._server.loop.is_closed():
            return
        try:
            self._watch_link()
        finally:
            # Whatever happened to this connection, the next one is
            # watched too: an exception here must not end the watchdog.
            self._watchdog_later()

    def _watch_link(self):
        protocol = self._io().protocol
        if protocol is not None and protocol is self._watched:
            if self._sending(self._transport(protocol)):
                # A large store on a slow link: the server answers only
                # once it has it all, but it acknowledges what arrives
                # (tcpinfo.py); a dead link acknowledges nothing.
                self._last_received = time.monotonic()
            silent = time.monotonic() - self._last_received
            if silent >= self._read_timeout:
                self.silent_links += 1
                logger.warning(
                    "%s: nothing from the ZEO server at %s for %.1fs (read-timeout): "
                    "closing the connection",
                    self.__name__,
                    self._server_addr,
                    silent,
                )
                self._event(f"link silent for {silent:.1f}s: closed")
                self._watched = None
                self._abort(protocol)
            elif silent >= self._read_timeout / 3 and (self._ping is None or self._ping.done()):
                try:
                    self._ping = protocol.server_call("lastTransaction")
                except ClientDisconnected:
                    # Closed, and ZEO has not let go of it yet (it does in
                    # a later callback, then reconnects): nothing to ask.
                    self._ping = None
                    return
                # Its outcome does not matter, only that something arrives.
                self._ping.add_done_callback(lambda f: f.cancelled() or f.exception())

    @staticmethod
    def _transport(protocol):
        # ZEO's protocol hands its transport to a sized-message protocol
        # (ZEO.asyncio.base).
        return getattr(getattr(protocol, "sm_protocol", None), "transport", None)

    def _abort(self, protocol):
        # Aborting the transport makes ZEO reconnect.
        transport = self._transport(protocol)
        if transport is not None:
            transport.abort()
        else:
            logger.error("cannot drop the connection: ZEO's protocol has changed")

    # -- reads ---------------------------------------------------------

    def loadBefore(self, oid, tid):
        if not self._verified.is_set() and self.verifying():
            # The server is back and the cache is being verified: a hit
            # now could be stale.  Wait (bounded) for the verification.
            if not self._verified.wait(self._verify_wait):
                raise ClientDisconnected(
                    "the client cache is still being verified"
                )
        # ClientStorage.loadBefore, counting hits and misses.
        result = self._cache.loadBefore(oid, tid)
        if result:
            self.hits += 1
            return result
        self.misses += 1
        return self._server.load_before(oid, tid)

    def server_size(self):
        """The database size as the server knows it now.

        ``getSize()`` is what the server last pushed to this client, which
        it does not do after other clients' commits.
        """
        if self.is_connected():
            try:
                return self._call("get_info")["size"]
            except (ClientDisconnected, KeyError):
                pass
        return self.getSize()

    def server_certificate(self):
        """The certificate the server presented on the TLS connection now
        in use, as ``getpeercert()`` decodes it; None without one.

        Read from the transport, whose handshake is over once the
        connection is in use (its extra information no longer changes).
        """
        transport = self._transport(self._io().protocol)
        if transport is None:
            return None
        return transport.get_extra_info("peercert") or None

    # -- actions -------------------------------------------------------

    def drop_connection(self):
        """Abort the transport; ZEO's own reconnection then runs.

        ZEO has no "reconnect" call, and closing its protocol object does
        not reconnect; a transport that goes away does.
        """
        io = self._io()

        def abort():
            if io.protocol is not None:
                self._abort(io.protocol)

        self._server.loop.call_soon_threadsafe(abort)

    # -- the commit ----------------------------------------------------

    def tpc_vote(self, txn):
        try:
            return super().tpc_vote(txn)
        except RecordRefused as exc:
            self.refused += 1
            self.refusals.append((time.time(), str(exc)))
            del self.refusals[:-10]
            logger.error("%s: %s", self.__name__, exc)
            raise

    def tpc_abort(self, txn, timeout=None):
        # ZEO waits up to wait-timeout here while disconnected, in the hope
        # of reconnecting so that the transaction can be retried.  Nothing
        # retries here (wsgi.py: no retry for ClientDisconnected), and a
        # server that lost the connection aborted the transaction itself:
        # the wait only holds the next commit of this client (ZEO runs one
        # at a time), each one wait-timeout longer than the last.
        if timeout is None and not self.is_connected():
            timeout = 0
        return super().tpc_abort(txn, timeout=timeout)

    def tpc_finish(self, txn, *args, **kw):
        try:
            return super().tpc_finish(txn, *args, **kw)
        except ClientDisconnected as exc:
            # After the vote: the server may have made it durable.
            exc.zeoclient_after_vote = True
            raise
