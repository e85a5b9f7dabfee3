"""Graceful stop of an instance: drain, finish what is in flight, close.

Stock Zope 6 installs no signal handler in its WSGI entry point, so
SIGTERM (``bin/instanceN stop``, systemd, a deploy) ends the process on
the spot: requests in flight get "connection reset", the database is not
closed and the persistent ZEO client cache is neither flushed nor closed.

Here the bundle's waitress server (``serve.py``) runs its loop through
``GracefulLoop``.  On the first SIGTERM or SIGINT:

1. ``stopping()`` is true at once, so ``/zeo-health`` answers 503
   ``stopping`` and a load balancer takes the instance out of rotation at
   its next check.  The instance goes on serving, new connections
   included, for ``drain`` seconds: long enough for the balancer's checks
   to notice, so that nothing it routes meanwhile is refused.
2. Then it closes its listening sockets.  A connection that carries a
   request (being received, waiting for a worker, running, or its answer
   being sent) goes on until it is done, for at most ``shutdown_timeout``
   seconds; connections idle for a second are closed.  What is left at
   the deadline is cut and counted.
3. The loop ends, waitress' workers stop, Zope's databases are closed (for
   a ZEO client: its cache file flushed and closed), one INFO line says
   how many requests finished and how many were cut, and the process
   exits with status 0.

A second signal skips the waits: what is in flight is cut at once, and
the databases are still closed.

The signal handler only records the signal and wakes the loop (a
self-pipe registered with ``signal.set_wakeup_fd``); everything else runs
in the loop's own thread, between two of its polls.
"""

import logging
import os
import signal
import threading
import time

from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer
from waitress.server import MultiSocketServer

logger = logging.getLogger(__name__)

_stopping = threading.Event()

# A connection with nothing to do for this long is idle (not one whose
# request bytes are still on their way).
IDLE = 1.0
POLL = 0.25  # seconds between two looks at the clock while stopping


def stopping():
    """True once the instance has been told to stop (``/zeo-health``)."""
    return _stopping.is_set()


def _reset():
    """For tests: forget a stop."""
    _stopping.clear()


class _Wakeup(wasyncore.file_dispatcher):
    """The read end of the self-pipe: only drains what the signal wrote."""

    def readable(self):
        return True

    def writable(self):
        return False

    def handle_read(self):
        try:
            self.recv(512)
        except OSError:
            pass


def busy(channel, now):
    """True when *channel* carries a request that is not done yet."""
    if channel.requests or channel.request is not None or channel.total_outbufs_len:
        return True
    # Just accepted, its request not here yet: give it a moment.
    return now - channel.last_activity < IDLE


class GracefulLoop:
    """Run waitress' loop for *server* until a signal has stopped it."""

    def __init__(self, server, drain=3.0, shutdown_timeout=30.0,
                 signals=(signal.SIGTERM, signal.SIGINT), close_databases=None):
        self.server = server
        # Several listening sockets share a map of their own.
        self.map = server.map if isinstance(server, MultiSocketServer) else server._map
        self.drain = drain
        self.shutdown_timeout = shutdown_timeout
        self.signals = signals
        self.close_databases = close_databases or close_zope_databases
        self.received = 0  # signals seen
        self.finished = 0
        self.cut = 0

    # -- signals -------------------------------------------------------

    def _handler(self, signum, frame):
        self.received += 1

    def install(self):
        """Install the handlers and the wake-up pipe (main thread only)."""
        read, write = os.pipe()
        os.set_blocking(write, False)
        self._wakeup = _Wakeup(read, map=self.map)
        os.close(read)  # file_dispatcher keeps a dup
        self._write_fd = write
        self._old_wakeup = signal.set_wakeup_fd(write)
        for signum in self.signals:
            signal.signal(signum, self._handler)

    def uninstall(self):
        for signum in self.signals:
            signal.signal(signum, signal.SIG_DFL)
        signal.set_wakeup_fd(self._old_wakeup)
        self._wakeup.close()
        os.close(self._write_fd)

    # -- the loop ------------------------------------------------------

    def poll(self, timeout):
        adj = self.server.adj
        wasyncore.loop(
            timeout=timeout, map=self.map, use_poll=adj.asyncore_use_poll, count=1
        )

    def listeners(self):
        return [d for d in self.map.values() if isinstance(d, BaseWSGIServer)]

    def channels(self):
        return [d for d in self.map.values() if isinstance(d, HTTPChannel)]

    def run(self):
        self.install()
        try:
            timeout = self.server.adj.asyncore_loop_timeout
            while not self.received:
                self.poll(timeout)
            self.stop()
        finally:
            self.uninstall()
        return 0

    def stop(self):
        _stopping.set()
        started = time.monotonic()
        logger.info(
            "stopping: /zeo-health says so; serving %.0fs more while the "
            "load balancer moves traffic away, then finishing what is in flight",
            self.drain,
        )
        self._serve_until(started + self.drain, lambda: False)
        for listener in self.listeners():
            # Not listener.close(): that also closes the trigger which the
            # workers use to hand their answers to this loop.
            wasyncore.dispatcher.close(listener)
        in_flight = {c for c in self.channels() if busy(c, time.monotonic())}
        deadline = time.monotonic() + self.shutdown_timeout

        def done():
            now = time.monotonic()
            for channel in self.channels():
                if not busy(channel, now):
                    channel.will_close = True  # idle keep-alive: close it
            return not any(busy(c, now) for c in self.channels())

        self._serve_until(deadline, done)
        left = [c for c in self.channels() if busy(c, time.monotonic())]
        self.cut = sum(max(1, len(c.requests)) for c in left)
        self.finished = len(in_flight - set(left))
        if left:
            logger.warning(
                "stopping: %d request(s) still in flight after %s; cutting them",
                self.cut,
                "a second signal" if self.received > 1 else
                f"the {self.shutdown_timeout:.0f}s shutdown timeout",
            )
        wasyncore.close_all(self.map)
        dispatcher = self.server.task_dispatcher
        dispatcher.shutdown(
            timeout=0 if self.received > 1 else max(1.0, deadline - time.monotonic())
        )
        self.close_databases()
        logger.info(
            "stopped cleanly in %.1fs: %d request(s) finished, %d cut",
            time.monotonic() - started,
            self.finished,
            self.cut,
        )

    def _serve_until(self, deadline, done):
        """Serve until *deadline*, *done()* or a second signal."""
        while not done() and self.received < 2:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self.poll(min(POLL, remaining))


def close_zope_databases():
    """Close Zope's databases (main and mounted), each once."""
    import Zope2

    db = getattr(Zope2, "DB", None)
    if db is None:
        return
    databases = getattr(db, "databases", None) or {"main": db}
    for database in {id(d): d for d in databases.values()}.values():
        try:
            database.close()
        except Exception:
            logger.exception("closing database %r failed", database.database_name)
