"""``bin/zeoinit``: the one designated step that initialises the database.

Every instance of the bundle runs with ``ZEO_CLIENT`` set and must not write
at startup, so something else has to create Zope's standard objects and the
``admin`` account on a fresh database.  This is it.  It runs before the
instances start (``make start`` and ``make run`` call it) and is idempotent:
on an initialised database with an ``admin`` account it writes nothing.

It needs its own way into the database: an instance's configuration carries
``ZEO_CLIENT`` in its ``<environment>`` section and points at a persistent
client cache that the running instance keeps locked.  So the bundle renders
a separate zope.conf for it (``etc/zeoinit.conf.in``) with a temporary
client cache.

The admin password is generated once, at random, into a file of mode 0600
(``var/admin-password``); it never appears in buildout's files.
"""

import argparse
import logging
import os
import secrets
import sys

logger = logging.getLogger(__name__)

ADMIN = "admin"


def read_or_create_password(path):
    """Return the password stored at *path*, creating it first if needed.

    The file is created with mode 0600 in one step (no window in which it
    is readable by others) and never overwritten.
    """
    try:
        with open(path) as f:
            password = f.read().strip()
    except FileNotFoundError:
        password = None
    if password:
        return password, False
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    password = secrets.token_urlsafe(18)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    os.chmod(path, 0o600)
    return password, True


class MissingEggs(Exception):
    """The database holds objects of classes this process cannot import."""


def broken_class(obj):
    """The dotted name of *obj*'s class if ZODB could not import it."""
    from ZODB.broken import Broken

    if isinstance(obj, Broken):
        cls = type(obj)
        return f"{cls.__module__}.{cls.__name__}"
    return None


def ensure_admin(app, password):
    """Create the ``admin`` Manager in the root user folder if missing.

    Returns True when it added the account.  An existing account is left
    alone: an operator may have changed its password through the ZMI.
    Raises MissingEggs when the root user folder is of a class this
    process cannot import (a Plone site's PluggableAuthService, say).
    """
    users = app.acl_users
    missing = broken_class(users)
    if missing:
        raise MissingEggs(
            f"zeoinit: the database's root user folder is a {missing}, which "
            "this process cannot import: add the egg that provides it to "
            "[settings] eggs in buildout.cfg (the instances' eggs) and run "
            "make build"
        )
    if users.getUserById(ADMIN) is not None:
        return False
    users._doAddUser(ADMIN, password, ["Manager"], [])
    return True


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="zeoinit",
        description="Initialise the cluster's database (idempotent).",
    )
    parser.add_argument("--zope-conf", required=True, help="zope.conf to use")
    parser.add_argument(
        "--password-file",
        required=True,
        help="file holding the admin password; created (mode 0600) if missing",
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not os.path.exists(args.zope_conf):
        sys.exit(f"zeoinit: no configuration at {args.zope_conf}; run make build")
    # This process is the designated writer: it must not inherit the
    # instances' read-at-startup discipline.
    os.environ.pop("ZEO_CLIENT", None)
    password, created = read_or_create_password(args.password_file)

    import transaction
    from ZEO.Exceptions import ClientDisconnected
    from Zope2.Startup.run import configure_wsgi

    configure_wsgi(args.zope_conf)
    import Zope2

    try:
        # Opening the application runs Zope's own initialisation: root,
        # Control_Panel, acl_users, virtual hosting and the other
        # standard objects, committed in Zope's own transactions.
        Zope2.startup_wsgi()
        app = Zope2.app()
    except ClientDisconnected:
        sys.exit(
            "zeoinit: the ZEO server does not answer; start it first "
            "(bin/zeoserver start)"
        )
    try:
        try:
            added = ensure_admin(app, password)
        except MissingEggs as e:
            sys.exit(str(e))
        if added:
            transaction.get().note("zeoinit: created the admin account")
            transaction.commit()
    finally:
        transaction.abort()
        app._p_jar.close()
    if added:
        print(f"zeoinit: created user {ADMIN}; password in {args.password_file}")
    else:
        print("zeoinit: database already initialised, nothing written")
    return 0
