"""Direct round trips: the thread that waits for a reply reads it itself.

ZEO's client sends every synchronous call through its I/O thread: the
application thread hands the call to the loop (a wake-up), the I/O thread
writes it, the server answers, the I/O thread reads the reply (a
wake-up) and hands it back (a wake-up).  Here the calls a request waits
for (a cache-miss ``loadBefore``, ``vote``, ``tpc_finish``, and the other
short calls in ``DIRECT_METHODS``) are written and their replies read by
the calling thread: a round trip wakes two threads (the server and the
caller), not four.  Asynchronous calls (``tpc_begin``, ``storea``) are
written by the calling thread too, without waking the loop.

How it stays ZEO:

- **One lock, the loop's.**  The I/O thread runs on asyncio's selector
  loop whose epoll wait releases ``loop_lock`` and takes it back before
  the events are looked up; so the I/O thread holds the lock whenever it
  runs anything.  A calling thread that holds it knows the I/O thread is
  asleep in epoll (or waiting for the lock), and may use ZEO's protocol
  object as the I/O thread would: the request is ZEO's own
  ``Protocol.call_sync`` / ``load_before`` / ``ClientIO.tpc_finish_co``,
  written through the connection's transport, so it is queued behind
  anything not yet written, in order.
- **The reply.**  Under the lock the caller pauses the transport's
  reading (the I/O thread no longer watches the socket), writes the
  request and lets the lock go; then it waits in ``poll`` on a duplicate
  of the socket, and feeds what arrives, under the lock, to the
  protocol's own ``data_received``.  ZEO's framing and dispatch then do
  what they do in the I/O thread: invalidations, ``info`` and replies to
  other threads' calls that arrive before the reply are handled in wire
  order, exactly as there; a partial message stays in ZEO's framer for
  whoever reads next.  Then the caller resumes the transport's reading.
- **One reader at a time.**  A second thread whose call comes while a
  direct call is in flight takes ZEO's path (its request is written by the
  I/O thread; its reply is read by whichever thread reads then):
  concurrent requests stay pipelined.  Long calls (pack, undo log,
  iterators, blobs: anything not in ``DIRECT_METHODS``), calls before the
  connection is verified, calls from the I/O thread, and everything under
  TLS (asyncio's SSL transport reads the socket through its own buffers)
  take ZEO's path.  ZEO's I/O thread keeps connecting, verification,
  heartbeats, the watchdog and invalidations while no call is in flight.
- **Order across paths.**  An asynchronous call that took ZEO's path sits
  in the loop's queue until the I/O thread runs; until it has, every call
  of this storage takes ZEO's path too (``_queued``), so that a vote can
  never overtake its stores.
- **Lost connections.**  If the I/O thread closes the connection (the
  watchdog's read-timeout, a server that went away), ZEO fails the
  call's future; its callback shuts the duplicate socket down, which
  wakes the caller: ClientDisconnected, not a hang.  If the caller sees
  the end of the stream first, it asks the I/O thread to abort the
  transport (ZEO then reconnects as after any lost connection).

What it costs: the I/O thread runs on asyncio's loop, not uvloop (the
calling thread cannot pause a uvloop transport); ZEO's path is a little
slower with it.  ``direct-calls off`` (the default of the storage section)
gives ZEO's client exactly as ``client.py`` sets it up.

ZEO's internals used here are checked by ``check_zeo_internals`` when a
client storage is made with direct calls on.
"""

import asyncio
import logging
import os
import select
import selectors
import socket
import threading

from ZEO.asyncio import client as zeo_client
from ZEO.asyncio import futures as zeo_futures
from ZEO.Exceptions import ClientDisconnected

logger = logging.getLogger(__name__)

#: Synchronous calls that the server answers at once: direct.  Anything
#: else (pack, undo, iterators, blobs) takes ZEO's path.
DIRECT_METHODS = frozenset((
    "vote", "tpc_abort", "new_oids", "lastTransaction", "ping", "get_info",
    "getTid", "loadSerial", "history", "server_status",
))

#: How long a caller waits in ``poll`` before it looks again whether the
#: connection is still there (the done-callback normally wakes it first).
POLL_SLICE_MS = 500
#: How long a caller waits for the loop lock before taking ZEO's path.
LOCK_WAIT = 1.0
RECV_SIZE = 1 << 18

#: Returned by a direct attempt that did not start: take ZEO's path.
ZEO_PATH = object()


def check_zeo_internals():
    """Fail at startup if what the direct path relies on has moved."""
    missing = [
        f"{owner.__name__}.{name}"
        for owner, name in (
            (zeo_client.ClientRunner, "loop"),
            (zeo_client.ClientThread, "run_io_thread"),
            (zeo_client.ClientIO, "tpc_finish_co"),
            (zeo_client.ClientIO, "operational"),
            (zeo_client.Protocol, "call_sync"),
            (zeo_client.Protocol, "load_before"),
            (zeo_client.Protocol, "call_async"),
            (zeo_client.Protocol, "closed"),
            (zeo_futures, "AsyncTask"),
        )
        if not hasattr(owner, name)
    ]
    selector = selectors.EpollSelector()
    try:
        if not callable(getattr(getattr(selector, "_selector", None), "poll", None)):
            missing.append("selectors.EpollSelector._selector.poll")
    finally:
        selector.close()
    if missing:
        raise RuntimeError(
            "Products.ZEOClient.direct does not support this ZEO/Python: missing "
            + ", ".join(missing)
        )


class _LockedEpoll:
    """An epoll object whose wait lets *lock* go (selectors' ``_selector``)."""

    def __init__(self, epoll, lock):
        self._epoll = epoll
        self._lock = lock

    def poll(self, *args):
        self._lock.release()
        try:
            return self._epoll.poll(*args)
        finally:
            self._lock.acquire()

    def __getattr__(self, name):
        return getattr(self._epoll, name)


def new_event_loop(lock):
    """asyncio's selector loop, holding *lock* except while it waits."""
    selector = selectors.EpollSelector()
    selector._selector = _LockedEpoll(selector._selector, lock)
    loop = asyncio.SelectorEventLoop(selector)
    for name in ("_ready", "_scheduled"):
        if not hasattr(loop, name):
            loop.close()
            raise RuntimeError(
                f"Products.ZEOClient.direct: asyncio's loop has no {name}"
            )
    return loop


def _retrieve(future):
    # A future failed after its caller gave up on it: nobody else will
    # look at its exception.
    if not future.cancelled():
        future.exception()


def _noop():
    pass


class DirectCalls:
    """Mixin for ZEO's ``ClientThread`` (``client.py`` composes it)."""

    direct_calls = True

    def __init__(self, *args, **kw):
        check_zeo_internals()
        self.loop_lock = threading.Lock()
        self._reader = threading.Lock()  # one direct reader at a time
        self._owner = None  # the application thread holding loop_lock
        self._queued_lock = threading.Lock()
        self._queued = 0  # async calls on ZEO's path not yet written
        # Figures for the status screen and the tests.
        self.direct_round_trips = 0
        self.direct_writes = 0
        self.zeo_path_calls = 0
        self._direct_loop = self.loop = new_event_loop(self.loop_lock)
        super().__init__(*args, **kw)
        if self.loop is not self._direct_loop:
            raise RuntimeError(
                "Products.ZEOClient.direct: ZEO's client thread did not use "
                "the loop it was given"
            )

    def run_io_thread(self):
        self.loop_lock.acquire()
        try:
            super().run_io_thread()
        finally:
            self.loop_lock.release()

    # -- the lock -------------------------------------------------------

    def _lock(self):
        """Take the loop lock for this application thread; False if that
        is not possible now (take ZEO's path)."""
        me = threading.get_ident()
        if me == self.thread.ident:
            return False
        if self._owner == me:
            return False
        if not self.loop_lock.acquire(timeout=LOCK_WAIT):
            return False
        self._owner = me
        self._ready_before = (len(self.loop._ready), len(self.loop._scheduled))
        return True

    def _unlock(self):
        loop = self.loop
        if (len(loop._ready), len(loop._scheduled)) != self._ready_before:
            # Something run here (a handler ZEO runs in its I/O thread)
            # gave the loop work: it may be asleep, wake it.
            loop.call_soon_threadsafe(_noop)
        self._owner = None
        self.loop_lock.release()

    def _connection(self, reading):
        """Under the loop lock: (protocol, transport) that a direct call
        may use now, or None."""
        io = self.client
        if not io.operational or self._queued:
            return None
        protocol = io.protocol
        if protocol is None or protocol.closed:
            return None
        transport = getattr(protocol.sm_protocol, "transport", None)
        if transport is None or transport.is_closing():
            return None
        if transport.get_extra_info("sslcontext") is not None:
            return None
        if reading and not transport.is_reading():
            return None
        return protocol, transport

    # -- direct calls ---------------------------------------------------

    def _round_trip(self, start):
        """Call *start(protocol)* (it writes a request and returns ZEO's
        future for the outcome) and read the reply in this thread.

        Returns ZEO_PATH, before anything is written, when the call must
        take ZEO's path instead.
        """
        if self._owner == threading.get_ident():
            raise RuntimeError(
                "a synchronous ZEO call from a handler of a server message "
                "(it would wait for itself)"
            )
        if not self._reader.acquire(blocking=False):
            self.zeo_path_calls += 1
            return ZEO_PATH
        try:
            if not self._lock():
                self.zeo_path_calls += 1
                return ZEO_PATH
            try:
                found = self._connection(reading=True)
                if found is None:
                    self.zeo_path_calls += 1
                    return ZEO_PATH
                protocol, transport = found
                sock = socket.socket(
                    fileno=os.dup(transport.get_extra_info("socket").fileno())
                )
                transport.pause_reading()
                try:
                    future = start(protocol)
                except BaseException:
                    transport.resume_reading()
                    sock.close()
                    raise
            finally:
                self._unlock()
            try:
                self._read_reply(protocol, transport, sock, future)
            finally:
                if self._lock_blocking():
                    try:
                        transport.resume_reading()
                    finally:
                        self._unlock()
                sock.close()
            self.direct_round_trips += 1
            return future.result()
        finally:
            self._reader.release()

    def _lock_blocking(self):
        # After a direct call the transport must read again: wait for the
        # lock as long as the loop runs.
        while not self._lock():
            if not self.thread.is_alive():
                return False
        return True

    def _read_reply(self, protocol, transport, sock, future):
        me = threading.get_ident()

        def wake(future):
            if threading.get_ident() != me:
                # ZEO failed the call (the connection closed): wake the
                # caller from its poll.
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        future.add_done_callback(wake)
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        while not future.done():
            if not poller.poll(POLL_SLICE_MS):
                if protocol.closed:
                    break
                continue
            try:
                data = sock.recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                break
            if not self._lock_blocking():
                break
            try:
                if protocol.closed:
                    break
                protocol.data_received(data)
            finally:
                self._unlock()
        if not future.done():
            # The stream ended (or the connection was closed) before the
            # reply: let ZEO's I/O thread drop the connection as it does
            # any lost one; ZEO fails the future then.
            future.add_done_callback(_retrieve)
            self.loop.call_soon_threadsafe(transport.abort)
            raise ClientDisconnected(
                "the connection to the ZEO server ended during a call"
            )

    def _write(self, start):
        """Write an asynchronous call in this thread; False: not now."""
        if not self._lock():
            return False
        try:
            found = self._connection(reading=False)
            if found is None:
                return False
            start(found[0])
            self.direct_writes += 1
            return True
        finally:
            self._unlock()

    def _queue(self):
        """An asynchronous call went to ZEO's loop: hold direct calls back
        until the loop has written it (its callbacks run in order)."""
        with self._queued_lock:
            self._queued += 1
        self.loop.call_soon_threadsafe(self._dequeue)

    def _dequeue(self):
        with self._queued_lock:
            self._queued -= 1

    # -- ZEO's ClientRunner API -----------------------------------------

    def call(self, method, *args, **kw):
        if method in DIRECT_METHODS and kw.get("wait", True):
            result = self._round_trip(lambda p: p.call_sync(method, args))
            if result is not ZEO_PATH:
                return result
        return super().call(method, *args, **kw)

    def load_before(self, oid, tid):
        # ClientStorage looked in the cache already; ZEO's protocol stores
        # the reply in the cache (and merges identical requests).
        result = self._round_trip(lambda p: p.load_before(oid, tid))
        if result is ZEO_PATH:
            return super().load_before(oid, tid)
        return result

    def tpc_finish(self, tid, updates, f, **kw):
        if not kw:
            io = self.client
            result = self._round_trip(
                lambda p: zeo_futures.AsyncTask(
                    io.tpc_finish_co(tid, updates, f), self.loop
                )
            )
            if result is not ZEO_PATH:
                return result
        return super().tpc_finish(tid, updates, f, **kw)

    def async_(self, method, *args):
        if self._write(lambda p: p.call_async(method, args)):
            return
        super().async_(method, *args)
        self._queue()

    def async_iter(self, it):
        # Blobs: ZEO's path (the loop writes them as the socket drains).
        super().async_iter(it)
        self._queue()
