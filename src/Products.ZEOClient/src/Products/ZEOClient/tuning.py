"""What the bundle changes in ZEO to commit faster, in one place.

A 1-object commit through stock ZEO 6.2 costs about 4-5 times a
FileStorage commit in the same process, and nearly all of the difference
is spent around two synchronous round trips (vote, finish): CPU, and
waiting for sleeping threads to wake up.  This module changes three
things (the fourth change, msgpack, is configuration: ``[zeo] msgpack``);
``make bench`` measures each step against ZEO as shipped, side by side
in one run ("What the bundle's defaults buy"):

1. **uvloop.**  ZEO runs its client I/O thread and its server on uvloop
   when uvloop can be imported (``ZEO.asyncio.compat``); the product
   depends on it.  ``event_loop()`` names the loop in use.  For the
   server, ``exit_between_callbacks`` comes with it: runzeo stops on
   SIGTERM by raising SystemExit from its signal handler, wherever the
   main thread happens to be; inside a connection's read callback uvloop
   logs that as "Fatal error on transport" and goes on serving, so
   ``zeoserver stop``/``restart`` hung under load (4 times in 8 in the
   soak; MagicStack/uvloop#612).  With ``tuning off`` the server runs on
   asyncio's loop (``server_on_asyncio``), as ZEO does without uvloop.

2. **Transaction buffers in memory.**  For every transaction ZEO writes
   the records to a new anonymous temporary file twice: the client's
   ``TransactionBuffer`` and the server's ``CommitLog``.  Creating and
   removing those files is a good part of the system time of a small
   commit.  Here both are ``SpooledTemporaryFile``: in memory up to
   ``SPOOL_SIZE``, then rolled over into a temporary file exactly like
   before, so a large transaction does not hold large memory.

3. **Thread hand-off.**  When a reply arrives, the client's I/O thread
   calls ZEO's ``switch_thread`` (``time.sleep(1e-6)``) to hand the GIL
   to the application thread that waits for it.  Linux rounds that sleep
   up to the timer slack (50 us or more), and the application's next
   call, a moment later, waits until the I/O thread wakes up again:
   twice per commit.  ``os.sched_yield`` hands the GIL over without a
   timer.

``install()`` is called by the client storage (``client.py``) and by the
server's ``<hardened>`` section, which also calls
``exit_between_callbacks()`` (always) and ``server_on_asyncio()`` (with
``tuning off``); it imports nothing from Zope.  It fails
loudly if the ZEO attributes it replaces have moved, and ``uninstall()``
puts ZEO's own back (the benchmark compares both in one process).
"""

import asyncio
import logging
import os
import sys
import tempfile

import ZEO.asyncio.futures
import ZEO.asyncio.server
import ZEO.runzeo
import ZEO.StorageServer
import ZEO.TransactionBuffer

logger = logging.getLogger(__name__)

#: Bytes of one transaction kept in memory before spilling to a file.
SPOOL_SIZE = 1 << 20

_BUFFER_MODULES = (ZEO.TransactionBuffer, ZEO.StorageServer)
_original_switch_thread = ZEO.asyncio.futures.switch_thread
_original_server_loop = getattr(ZEO.asyncio.server, "new_event_loop", None)


class SpoolingTempfile:
    """Stands in for the ``tempfile`` module inside ZEO's buffer modules.

    ``TemporaryFile`` gives a spooled file; everything else (the server's
    ``mkstemp`` for blobs) is the real module's.
    """

    def __init__(self, max_size):
        self.max_size = max_size

    def TemporaryFile(self, *args, **kw):
        return tempfile.SpooledTemporaryFile(self.max_size, *args, **kw)

    def __getattr__(self, name):
        return getattr(tempfile, name)


def switch_thread():
    """Give the GIL to a thread that waits for it, without a timer."""
    os.sched_yield()


def check_zeo_internals():
    """Raise if what ``install`` replaces is not where it was."""
    missing = [
        f"{module.__name__}.tempfile"
        for module in _BUFFER_MODULES
        if not hasattr(module, "tempfile")
    ]
    if not callable(getattr(ZEO.asyncio.futures, "switch_thread", None)):
        missing.append("ZEO.asyncio.futures.switch_thread")
    if not callable(_original_server_loop):
        missing.append("ZEO.asyncio.server.new_event_loop")
    if missing:
        raise RuntimeError(
            "Products.ZEOClient.tuning: ZEO has changed, missing "
            + ", ".join(missing)
        )


def install(spool_size=SPOOL_SIZE):
    check_zeo_internals()
    for module in _BUFFER_MODULES:
        module.tempfile = SpoolingTempfile(spool_size)
    ZEO.asyncio.futures.switch_thread = switch_thread
    ZEO.asyncio.server.new_event_loop = _original_server_loop


def uninstall():
    for module in _BUFFER_MODULES:
        module.tempfile = tempfile
    ZEO.asyncio.futures.switch_thread = _original_switch_thread
    ZEO.asyncio.server.new_event_loop = _original_server_loop


def installed():
    return ZEO.asyncio.futures.switch_thread is switch_thread


def server_on_asyncio():
    """Make ZEO's server create asyncio's event loop, not uvloop's
    (``install``/``uninstall`` give ZEO's own choice back)."""
    check_zeo_internals()
    ZEO.asyncio.server.new_event_loop = asyncio.new_event_loop


#: runzeo's signal handlers that stop the server: (log line, exit status).
SIGNAL_EXITS = {
    "handle_sigterm": ("terminated by SIGTERM", 0),
    "handle_sigint": ("terminated by SIGINT", 0),
    "handle_sighup": ("restarted by SIGHUP", 1),
}


def _exit_handler(message, status):
    def handler(server):
        ZEO.runzeo.log(message)
        acceptor = getattr(server.server, "acceptor", None)
        loop = getattr(acceptor, "event_loop", None)
        if loop is None or not loop.is_running():
            sys.exit(status)  # not serving yet (or any more): at once
        # The loop's next callback; runzeo then closes the storage and
        # removes its socket and pid file, as after its own SystemExit.
        loop.call_soon_threadsafe(sys.exit, status)

    handler.__name__ = handler.__qualname__ = "exit_between_callbacks"
    return handler


def runzeo_classes():
    """runzeo's ZEOServer class, and its twin when the server runs as
    ``python -m ZEO.runzeo`` (the bundle's bin/zeoserver does): that
    runs the module as ``__main__``, a second copy of the class."""
    classes = [ZEO.runzeo.ZEOServer]
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if getattr(spec, "name", None) == "ZEO.runzeo" and hasattr(main, "ZEOServer"):
        classes.append(main.ZEOServer)
    return classes


def exit_between_callbacks():
    """Make runzeo stop between two event-loop callbacks on a signal.

    runzeo's handlers for SIGTERM, SIGINT (exit 0) and SIGHUP (exit 1,
    zdaemon starts it again) raise SystemExit where the main thread is
    when the signal arrives: in the middle of a FileStorage write, of
    a reply, inside uvloop's read callback, which swallows it (see the
    module docstring), or inside ZODB's conflict resolution, whose
    bare ``except`` swallows it too (seen in a restart under load).
    These handlers log the same line and raise SystemExit from a
    callback of its own, which both loops let through.
    """
    for cls in runzeo_classes():
        missing = [name for name in SIGNAL_EXITS if not callable(getattr(cls, name, None))]
        if missing or not callable(getattr(ZEO.runzeo, "log", None)):
            raise RuntimeError(
                "Products.ZEOClient.tuning: ZEO has changed, missing "
                + ", ".join(f"ZEO.runzeo.ZEOServer.{name}" for name in missing or ["log"])
            )
        for name, (message, status) in SIGNAL_EXITS.items():
            setattr(cls, name, _exit_handler(message, status))


def event_loop():
    """The event loop ZEO uses in this process: 'uvloop' or 'asyncio'."""
    from ZEO.asyncio import compat

    return compat.new_event_loop.__module__.split(".")[0]
