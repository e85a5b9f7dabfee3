"""Run a transaction again when a retry can cure its failure, politely.

``transaction``'s own ``TransactionManager.run`` retries a TransientError
(a ConflictError, a ZEO ClientDisconnected) at once, a fixed number of
times.  Under contention that is the worst policy: the writers that lost
come straight back and collide again, while the one that won, which has
the new state in its cache already, wins again.  ``run`` here

- waits between attempts, exponentially longer (``first_delay`` doubling
  up to ``max_delay``), for a random part of that time ("full jitter"),
  so that the losers spread out instead of colliding in step;
- gives up after ``attempts`` or at ``deadline`` (seconds from now or a
  ``time.monotonic()`` value), whichever comes first, re-raising the
  last error: a caller is never kept waiting without bound;
- retries only TransientErrors; anything else is aborted and re-raised
  at once.

Zope's publisher retries a request that met a ConflictError (three
times by default, ``max-conflict-retries``), but waits ``uniform(0,
2**n)`` *seconds* before retry n: up to 1, 2 and then 4 s.  On a hot
object the requests that lost wait seconds while the one that won goes
on winning; ``make bench`` measured 8 HTTP writers on one counter at one
commit per second or less for most of them.  ``install_request_backoff``
(a subscriber of IProcessStarting, in configure.zcml) gives Zope's
``HTTPRequest.delay_retry`` the same millisecond backoff as ``run``,
scaled to the length of the attempt that failed (long Plone requests
collide on one counter otherwise; see ``backoff``).

Backoff spreads the losers; it cannot stop a writer that commits in a
tight loop from winning again and again.  For a value that many writers
change (a counter), use an object that resolves its own conflicts
(``BTrees.Length``): ``make bench`` shows both.
"""

import logging
import random
import time

import transaction
from transaction.interfaces import TransientError

logger = logging.getLogger(__name__)


#: Where the WSGI middleware (wsgi.py) notes when a request's current
#: attempt started, in the environ dict all its retries share.
ATTEMPT_STARTED = "Products.ZEOClient.attempt_started"

#: A retry waits at most this many times as long as the attempt that failed.
LONG_ATTEMPT_FACTOR = 16


def backoff(attempt, first_delay=0.002, max_delay=0.2, jitter=random.random, took=0.0):
    """Seconds to wait before retry *attempt* (0 for the first retry).

    *took*: how long the attempt that failed ran.  A writer that holds a
    hot object for a long transaction (a Plone add: versioning asks
    CMFUid's counter for a history id) collides again and again within
    a 0.2 s window, so its window starts at its own length and doubles
    up to LONG_ATTEMPT_FACTOR times it; a short attempt waits as before.
    """
    window = max(first_delay, took) * 2**attempt
    return min(window, max(max_delay, LONG_ATTEMPT_FACTOR * took)) * jitter()


def delay_retry(request):
    """Stands in for ZPublisher's ``HTTPRequest.delay_retry``."""
    environ = getattr(request, "_orig_env", None)
    environ = environ if isinstance(environ, dict) else {}
    started = environ.get(ATTEMPT_STARTED)
    took = time.monotonic() - started if started is not None else 0.0
    time.sleep(backoff(request.retry_count, took=took))
    environ[ATTEMPT_STARTED] = time.monotonic()


def install_request_backoff(event=None):
    from ZPublisher.HTTPRequest import HTTPRequest

    if not callable(getattr(HTTPRequest, "delay_retry", None)):
        raise RuntimeError(
            "Products.ZEOClient.retry: ZPublisher's HTTPRequest.delay_retry has moved"
        )
    HTTPRequest.delay_retry = delay_retry


def run(
    func,
    tm=None,
    attempts=10,
    first_delay=0.002,
    max_delay=0.2,
    deadline=60.0,
    sleep=time.sleep,
    clock=time.monotonic,
    jitter=random.random,
):
    """Call *func* in a transaction of *tm* and commit; return its result.

    *deadline* below 1e6 is a number of seconds from now, otherwise a
    ``clock()`` value.
    """
    tm = tm if tm is not None else transaction.manager
    if deadline < 1e6:
        deadline = clock() + deadline
    for attempt in range(1, attempts + 1):
        tm.begin()
        try:
            result = func()
            tm.commit()
            return result
        except TransientError as exc:
            tm.abort()
            pause = backoff(attempt - 1, first_delay, max_delay, jitter)
            if attempt == attempts or clock() + pause > deadline:
                logger.info("giving up after %d attempts: %s", attempt, exc)
                raise
            sleep(pause)
        except BaseException:
            tm.abort()
            raise
    raise ValueError(f"attempts must be at least 1, not {attempts}")
