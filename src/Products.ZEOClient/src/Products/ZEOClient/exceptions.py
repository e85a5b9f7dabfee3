"""Exceptions of the product.

``ClientDisconnected`` (ZEO's, a ``TransientError``) stays what ZEO raises:
ZEO and ZODB catch it by that name.  What the bundle changes is who retries
it: not Zope's publisher (see ``wsgi.py``), because a retry inside a
request only holds a worker thread while the server is away.  That is a
deliberate exception to "errors that a retry can cure are transient":
the retry that cures it is the user's, after the ``Retry-After`` delay.
"""

from ZEO.Exceptions import ClientDisconnected


class DatabaseNotInitialised(SystemExit):
    """The instance cannot start: the database was never initialised.

    A SystemExit, so that the instance stops with one line, not a
    traceback.
    """


class CacheCannotServeStartup(SystemExit):
    """The server is unreachable and the client cache lacks the root."""


def outcome_unknown(exc):
    """True when *exc* ended a commit after the server's vote.

    The server may have made the transaction durable before the link
    broke, so the user must not be told that nothing was saved.
    """
    return isinstance(exc, ClientDisconnected) and getattr(
        exc, "zeoclient_after_vote", False
    )
