"""``ZEO_CLIENT``: a client of a shared database writes nothing at startup.

Zope 2's release notes: "Normally Zope updates the database during startup
to reflect product changes.  This behavior is now suppressed when the
ZEO_CLIENT environment variable is set.  It doesn't make sense for many
clients to update the database for the same products."  Zope 6 forgot
this; on start it commits the root, the initial user, virtual hosting, the
root view and more, and clients that start together conflict.

With ``ZEO_CLIENT`` set (the bundle sets it to the instance's name):

1. ``wait_for_initialised`` holds the storage back until the database has
   been initialised by the one designated step (``bin/zeoinit``): bounded,
   logged, and ending in a one-line message.  So neither ``ZODB.DB()``
   (which commits a root on an empty database) nor Zope's
   ``ZApplicationWrapper`` (which commits the application object) ever
   writes from a client.
2. ``suppress_startup_writes`` replaces ``OFS.Application.initialize`` (the
   one function Zope's startup calls to bring the application up to date)
   with one whose commits are aborted and recorded.  What it skipped is
   logged once, at INFO.

Both are installed by the bundle's storage section (``storage.py``), which
runs after zope.conf's ``<environment>`` has set ``ZEO_CLIENT`` and before
Zope opens the database.
"""

import logging
import os
import time

import transaction
from OFS import Application as application_module
from ZODB.POSException import POSKeyError
from ZODB.serialize import referencesf
from ZODB.utils import z64

from .exceptions import DatabaseNotInitialised

logger = logging.getLogger(__name__)

ENVIRONMENT = "ZEO_CLIENT"


def zeo_client():
    """The value of ZEO_CLIENT, or None when it is unset or empty."""
    return os.environ.get(ENVIRONMENT) or None


def is_initialised(storage):
    """True once the root exists and holds the Zope application."""
    try:
        data, _ = storage.load(z64)
    except POSKeyError:
        return False
    return bool(referencesf(data))


def wait_for_initialised(storage, timeout, interval=1.0, name=None):
    """Return once *storage* holds an initialised database.

    Waits up to *timeout* seconds, logging once, then raises
    DatabaseNotInitialised with what to do.
    """
    name = name or zeo_client()
    if is_initialised(storage):
        return
    logger.info(
        "%s=%s: the database is not initialised yet; waiting up to %ds "
        "for bin/zeoinit",
        ENVIRONMENT,
        name,
        timeout,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
        if is_initialised(storage):
            logger.info("%s=%s: the database is initialised", ENVIRONMENT, name)
            return
    message = (
        f"{ENVIRONMENT}={name}: the database is still not initialised after "
        f"{timeout:.0f}s and a ZEO client does not initialise it; run "
        "bin/zeoinit (make start does) and start this instance again"
    )
    logger.error(message)
    raise DatabaseNotInitialised(message)


class ReadOnlyAppInitializer(application_module.AppInitializer):
    """Zope's startup steps, with every commit turned into an abort."""

    def __init__(self, app):
        super().__init__(app)
        self.skipped = []

    def commit(self, note):
        self.skipped.append(note)
        transaction.abort()

    def install_inituser(self):
        # Zope would create a user from an inituser file, and migrate old
        # user folders, each in a commit of its own.
        app = self.getApp()
        users = getattr(app, "acl_users", None)
        if users is not None and hasattr(users, "_createInitialUser"):
            self.skipped.append("initial user from inituser (if any)")

    def install_standards(self):
        # Only removes attributes that Zope 2 left behind, in a commit.
        self.skipped.append("removal of unused application attributes")


def initialize_without_writes(app):
    """Stands in for ``OFS.Application.initialize`` under ZEO_CLIENT."""
    initializer = ReadOnlyAppInitializer(app)
    try:
        initializer.initialize()
    finally:
        transaction.abort()
    logger.info(
        "%s=%s: startup wrote nothing to the database; skipped: %s",
        ENVIRONMENT,
        zeo_client(),
        "; ".join(initializer.skipped),
    )


def suppress_startup_writes():
    """Make Zope's application startup read-only (idempotent)."""
    if application_module.initialize is not initialize_without_writes:
        application_module.initialize = initialize_without_writes
