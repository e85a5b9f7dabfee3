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
"""

import html
import logging

from ZEO.Exceptions import ClientDisconnected

from .exceptions import outcome_unknown

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


def unavailable_page(exc, environ, retry_after):
    """(status, headers, body) of the 503 answer for *exc*."""
    title, advice = UNKNOWN if outcome_unknown(exc) else NOTHING_SAVED
    if wants_html(environ):
        body = (
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            "<title>Service unavailable</title></head><body>"
            f"<h1>{html.escape(title)}</h1><p>{html.escape(advice)}</p>"
            "</body></html>\n"
        )
        content_type = "text/html; charset=utf-8"
    else:
        body = f"{title}\n{advice}\n"
        content_type = "text/plain; charset=utf-8"
    data = body.encode("utf-8")
    headers = [
        ("Content-Type", content_type),
        ("Content-Length", str(len(data))),
        ("Retry-After", str(retry_after)),
        ("Cache-Control", "no-store"),
        (STATUS_HEADER, "disconnected"),
    ]
    return "503 Service Unavailable", headers, data


HEALTH_PATH = "/zeo-health"


def health(environ, start_response):
    """``/zeo-health``: for load balancers, no authentication, no details.

    Answered here, before Zope: it needs neither the database nor a
    worker's transaction.  200 ``ok`` when every ZEO storage is connected
    and its cache verified, 503 ``disconnected`` otherwise.
    """
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
