"""What the bundle changes in ZEO to commit faster, in one place.

A 1-object commit through stock ZEO 6.2 costs about 4-5 times a
FileStorage commit in the same process, and nearly all of the difference
is CPU spent around two synchronous round trips (vote, finish).  The
bundle changes three things; ``make bench`` measures each against ZEO as
shipped, side by side in one run (the "stock" rows):

1. **uvloop in the instances.**  ZEO runs its client I/O thread (and its
   server) on uvloop when uvloop can be imported (``ZEO.asyncio.compat``);
   the product depends on it.  ``event_loop()`` names the loop in use.
   The *server* stays on asyncio's loop (``server_on_asyncio``, called
   by the ``<hardened>`` section): runzeo stops on SIGTERM by raising
   SystemExit from its signal handler, and when that lands inside a
   connection's read callback uvloop logs it as "Fatal error on
   transport" and goes on serving, so ``zeoserver stop``/``restart``
   hung under load (4 times in 8 in the soak; MagicStack/uvloop#612).

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
server's ``<hardened>`` section; it imports nothing from Zope.  It fails
loudly if the ZEO attributes it replaces have moved, and ``uninstall()``
puts ZEO's own back (the benchmark compares both in one process).
"""

import asyncio
import logging
import os
import tempfile

import ZEO.asyncio.futures
import ZEO.asyncio.server
import ZEO.StorageServer
import ZEO.TransactionBuffer

logger = logging.getLogger(__name__)

#: Bytes of one transaction kept in memory before spilling to a file.
SPOOL_SIZE = 1 << 20

_BUFFER_MODULES = (ZEO.TransactionBuffer, ZEO.StorageServer)
_original_switch_thread = ZEO.asyncio.futures.switch_thread


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


def uninstall():
    for module in _BUFFER_MODULES:
        module.tempfile = tempfile
    ZEO.asyncio.futures.switch_thread = _original_switch_thread


def installed():
    return ZEO.asyncio.futures.switch_thread is switch_thread


def server_on_asyncio():
    """Make ZEO's server create asyncio's event loop, not uvloop's."""
    if not hasattr(ZEO.asyncio.server, "new_event_loop"):
        raise RuntimeError(
            "Products.ZEOClient.tuning: ZEO has changed, missing "
            "ZEO.asyncio.server.new_event_loop"
        )
    ZEO.asyncio.server.new_event_loop = asyncio.new_event_loop


def event_loop():
    """The event loop ZEO uses in this process: 'uvloop' or 'asyncio'."""
    from ZEO.asyncio import compat

    return compat.new_event_loop.__module__.split(".")[0]
