"""Tell interested code when the serving loop has started.

The name and the API come from Zope 2.0's ``ThreadedAsync`` module, which
let asynchronous objects (ZEO clients first of all) wait for the main loop.
Zope 6 has nothing like it: ``IProcessStarting`` fires before the WSGI
server exists, and waitress runs its own loop.  The bundle's WSGI server
(``Products.ZEOClient.serve``) calls ``loop_started()`` from inside that
loop, once it really runs and accepts connections.

- A callback registered before the loop starts is called once, from the
  loop's thread, when it starts.
- A callback registered later is called at once, in the caller's thread.
- An exception in a callback is logged; the other callbacks still run and
  the server keeps serving.

Callbacks run in the serving loop: keep them short, or start a thread.
"""

import logging
import threading

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_callbacks = []  # [(callback, args, kw)], until the loop starts
_running = False


def register_loop_callback(callback, *args, **kw):
    """Call ``callback(*args, **kw)`` once the serving loop runs."""
    with _lock:
        if not _running:
            _callbacks.append((callback, args, kw))
            return
    _call(callback, args, kw)


def remove_loop_callback(callback):
    """Forget every pending registration of *callback*.

    Returns True if one was pending; after the loop has started there is
    nothing left to remove.
    """
    with _lock:
        before = len(_callbacks)
        _callbacks[:] = [entry for entry in _callbacks if entry[0] != callback]
        return len(_callbacks) != before


def loop_running():
    """True once the serving loop has started."""
    return _running


def loop_started():
    """The serving loop has started: run the pending callbacks once.

    Called by the server from inside its loop; further calls do nothing.
    """
    global _running
    with _lock:
        if _running:
            return
        _running = True
        pending = list(_callbacks)
        del _callbacks[:]
    logger.debug("serving loop started; %d callback(s)", len(pending))
    for callback, args, kw in pending:
        _call(callback, args, kw)


def _call(callback, args, kw):
    try:
        callback(*args, **kw)
    except Exception:
        logger.exception("loop callback %r failed", callback)


def _reset():
    """Back to "loop not started" with no callbacks (for tests only)."""
    global _running
    with _lock:
        _running = False
        del _callbacks[:]
