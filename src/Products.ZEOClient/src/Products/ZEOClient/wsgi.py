"""What a user sees while the database server is away.

Two pieces, both needed:

- ``no_retry_while_disconnected`` (a ``IPubBeforeAbort`` subscriber):
  Zope's publisher retries every ``TransientError`` three times, with
  sleeps; ZEO's ``ClientDisconnected`` is one.  A retry cannot bring the
  server back within a request, it only holds a worker thread, so for
  this one exception the request is told it may not retry.  The
  exception then leaves the publisher.
- ``ZEOClientMiddleware`` (a WSGI filter, ``[filter:zeoclient]`` in the
  bundle's wsgi.ini): turns that exception, and one raised while Zope
  loads its root (outside its exception views), into a short 503 page
  with ``Retry-After``: HTML for browsers, plain text otherwise.  It says
  "nothing was saved" only where that is true: a commit broken after the
  server's vote may have been saved.  And it marks every response that
  was served while the storage was disconnected with
  ``X-ZEO-Status: disconnected`` (cached pages may then be older than the
  server's data, if other clients still reach it).  It also answers
  ``/zeo-health`` for load balancers.

A record the server's guard refused (``server/records.py``: a class or a
call outside its allowlist) is not transient: no retry can cure it, so
it is no 503.  It is a 500 whose page says what was refused, that
nothing was saved and what the administrator can do (HTML for browsers,
JSON for REST calls, text otherwise).

A request that still met a ConflictError after Zope's last retry (a hot
object; see retry.py) is a 503 "try again" with ``Retry-After: 1``
instead of waitress' "Internal Server Error": nothing was saved.

The same filter answers a commit that the server could not write (its
disk full, a file size limit, an I/O error: an ``OSError`` on the server,
which reaches the client as ZEO's ``ServerException``) with a 503 that
says so, instead of waitress' bare "Internal Server Error": Zope has no
exception view for it, because it is raised by the commit, after the
published object returned.  A failure at the server's vote saved nothing
(the server aborted the transaction); one in its ``tpc_finish`` may have
saved the change, and the page says that instead.
"""

import builtins
import html
import logging
import time

from ZEO.Exceptions import ClientDisconnected
from ZEO.Exceptions import ServerException
from ZODB.POSException import ConflictError

from . import graceful
from . import retry
from .exceptions import outcome_unknown
from .server.records import RecordRefused

logger = logging.getLogger(__name__)

STATUS_HEADER = "X-ZEO-Status"

NOTHING_SAVED = (
    "The database server is unreachable.",
    "Nothing was saved. Please try again in a few seconds.",
)
UNKNOWN = (
    "The connection to the database server broke while your change was "
    "being saved.",
    "The change may or may not have been saved: check before you repeat it.",
)
BUSY = (
    "Your change collided with other changes to the same data each time "
    "it was tried.",
    "Nothing was saved. Please try again.",
)
WRITE_FAILED = (
    "The database server could not write your change to its disk ({reason}).",
    "Nothing was saved. Please try again later; if this goes on, tell the "
    "site's administrator.",
)
WRITE_FAILED_UNKNOWN = (
    "The database server failed while finishing your change ({reason}).",
    UNKNOWN[1],
)


def no_retry_while_disconnected(event):
    """``IPubBeforeAbort``: never retry a request for ClientDisconnected."""
    exc = event.exc_info[1]
    if isinstance(exc, ClientDisconnected):
        request = event.request
        request.retry_max_count = request.retry_count


def _storages():
    """The storages of Zope's databases (main and mounted)."""
    import Zope2

    db = getattr(Zope2, "DB", None)
    if db is None:
        return []
    databases = getattr(db, "databases", None) or {"main": db}
    return [d.storage for d in databases.values()]


def disconnected():
    """True when any ZEO storage of this process is not connected."""
    for storage in _storages():
        is_connected = getattr(storage, "is_connected", None)
        if is_connected is not None and not is_connected():
            return True
    return False


def wants_html(environ):
    return "text/html" in environ.get("HTTP_ACCEPT", "")


def server_os_error(exc):
    """The reason ("No space left on device") when *exc* is an OSError
    raised by the ZEO server, else None.

    ZEO hands server exceptions it has no factory for to the client as
    ``ServerException(class name, args)``.
    """
    if not isinstance(exc, ServerException) or len(exc.args) != 2:
        return None
    name, args = exc.args
    module, _, class_name = str(name).rpartition(".")
    error_class = getattr(builtins, class_name, None) if module == "builtins" else None
    if not (isinstance(error_class, type) and issubclass(error_class, OSError)):
        return None
    try:
        error = error_class(*(args if isinstance(args, (tuple, list)) else (args,)))
    except Exception:
        return class_name
    return error.strerror or str(error) or class_name


def raised_in(exc, function_name):
    """True when a frame of *exc*'s traceback runs *function_name*."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == function_name:
            return True
        tb = tb.tb_next
    return False


def write_failure(exc):
    """(title, advice) when *exc* is the server's OSError in a commit.

    The ZEO client sends its stores ahead and the server writes them at
    the vote: a failure there saved nothing.  ``tpc_finish`` is after the
    vote: the server may have made the change durable.  None for anything
    else (a failed load, say, is not a failed write).
    """
    reason = server_os_error(exc)
    if reason is None:
        return None
    if raised_in(exc, "tpc_finish"):
        title, advice = WRITE_FAILED_UNKNOWN
    elif raised_in(exc, "tpc_vote"):
        title, advice = WRITE_FAILED
    else:
        return None
    return title.format(reason=reason), advice


def page(head, title, advice, environ, json_type=None):
    """(headers, body) of a short page saying *title* and *advice*: HTML
    for browsers, JSON (with *json_type*) for REST calls that ask for it,
    text otherwise."""
    if json_type and wants_json(environ):
        import json

        body = json.dumps({"type": json_type, "message": title,
                           "saved": False, "advice": advice}) + "\n"
        content_type = "application/json"
    elif wants_html(environ):
        body = (
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(head)}</title></head><body>"
            f"<h1>{html.escape(title)}</h1><p>{html.escape(advice)}</p>"
            "</body></html>\n"
        )
        content_type = "text/html; charset=utf-8"
    else:
        body = f"{title}\n{advice}\n"
        content_type = "text/plain; charset=utf-8"
    data = body.encode("utf-8")
    return [
        ("Content-Type", content_type),
        ("Content-Length", str(len(data))),
        ("Cache-Control", "no-store"),
    ], data


def wants_json(environ):
    accept = environ.get("HTTP_ACCEPT", "")
    return "application/json" in accept and "text/html" not in accept


def unavailable_page(exc, environ, retry_after):
    """(status, headers, body) of the 503 answer for *exc*."""
    texts = BUSY if isinstance(exc, ConflictError) else write_failure(exc)
    if texts is not None:
        title, advice = texts
    elif outcome_unknown(exc):
        title, advice = UNKNOWN
    else:
        title, advice = NOTHING_SAVED
    headers, data = page("Service unavailable", title, advice, environ)
    headers.insert(2, ("Retry-After", str(retry_after)))
    if texts is None:
        headers.append((STATUS_HEADER, "disconnected"))
    return "503 Service Unavailable", headers, data


REFUSED = (
    "The database server refused to store your change: {reason}.",
    "Nothing was saved. The server stores only the kinds of objects its "
    "policy allows; the site's administrator can allow this one in "
    "zeo.conf's <hardened> section (allow-module, allow-global, "
    "allow-callable; README.txt, \"Security of the ZEO server\") if it "
    "is legitimate.",
)


def refused_page(exc, environ):
    """(status, headers, body) of the answer for a refused record."""
    reason = str(exc).removeprefix("the server refused ").split("; nothing of")[0]
    title, advice = REFUSED[0].format(reason=reason), REFUSED[1]
    headers, data = page("Change refused", title, advice, environ, json_type="RecordRefused")
    return "500 Internal Server Error", headers, data


HEALTH_PATH = "/zeo-health"


def health(environ, start_response):
    """``/zeo-health``: for load balancers, no authentication, no details.

    Answered here, before Zope: it needs neither the database nor a
    worker's transaction.  200 ``ok`` when every ZEO storage is connected
    and its cache verified; 503 ``stopping`` once the instance has been
    told to stop (``graceful.py``: it still serves for a few seconds, so
    that the balancer moves traffic away first); 503 ``disconnected``
    otherwise (it still serves what its cache holds: the bundle's
    HAProxy sends it traffic when no instance is ``ok``).
    """
    if graceful.stopping():
        ok, body = False, b"stopping\n"
    else:
        ok = not disconnected() and not any(
            getattr(storage, "verifying", lambda: False)() for storage in _storages()
        )
        body = b"ok\n" if ok else b"disconnected\n"
    start_response(
        "200 OK" if ok else "503 Service Unavailable",
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
        ],
    )
    return [body]


class ZEOClientMiddleware:

    def __init__(self, app, retry_after=10):
        self.app = app
        self.retry_after = retry_after

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") == HEALTH_PATH:
            return health(environ, start_response)
        def start(status, headers, exc_info=None):
            if disconnected():
                headers = list(headers) + [(STATUS_HEADER, "disconnected")]
            return start_response(status, headers, exc_info)

        environ[retry.ATTEMPT_STARTED] = time.monotonic()
        try:
            return self.app(environ, start)
        except ClientDisconnected as exc:
            logger.info(
                "503 for %s %s: %r",
                environ.get("REQUEST_METHOD"),
                environ.get("PATH_INFO"),
                exc,
            )
            status, headers, body = unavailable_page(exc, environ, self.retry_after)
            start_response(status, headers)
            return [body]
        except ConflictError as exc:
            # Zope has tried max-conflict-retries times (retry.py): busy,
            # not broken.  Nothing was saved; trying again soon may work.
            logger.info(
                "503 for %s %s after conflict retries: %s",
                environ.get("REQUEST_METHOD"),
                environ.get("PATH_INFO"),
                exc,
            )
            status, headers, body = unavailable_page(exc, environ, 1)
            start_response(status, headers)
            return [body]
        except RecordRefused as exc:
            logger.error(
                "500 for %s %s: %s",
                environ.get("REQUEST_METHOD"),
                environ.get("PATH_INFO"),
                exc,
            )
            status, headers, body = refused_page(exc, environ)
            start_response(status, headers)
            return [body]
        except ServerException as exc:
            texts = write_failure(exc)
            if texts is None:
                raise
            # The server's log has the traceback; one line here.
            logger.error(
                "503 for %s %s: %s %s",
                environ.get("REQUEST_METHOD"),
                environ.get("PATH_INFO"),
                *texts,
            )
            status, headers, body = unavailable_page(exc, environ, self.retry_after)
            start_response(status, headers)
            return [body]


def filter_app_factory(app, global_conf, retry_after="10"):
    """PasteDeploy ``paste.filter_app_factory`` entry point."""
    try:
        seconds = int(retry_after)
        if seconds < 0:
            raise ValueError
    except ValueError:
        raise ValueError(
            f"[filter:zeoclient] retry_after must be a whole number of "
            f"seconds >= 0, not {retry_after!r}"
        ) from None
    return ZEOClientMiddleware(app, retry_after=seconds)
