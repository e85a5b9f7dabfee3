"""Test layers: each builds one bundle in a temporary folder.

zope.testrunner runs the unit tests first, then these layers one after
the other, tearing each down (its processes stopped by PID, its folder
removed) before the next starts.  The layers have no base class (a base
would become a layer of its own); ``bundle_layer`` makes them alike.
"""

from .harness import Bundle
from .harness import wait_until


def bundle_layer(name, doc, prepare):
    """A layer class whose ``bundle`` is built, then *prepare(bundle)*-d."""

    def setUp(cls):
        cls.bundle = Bundle()
        try:
            prepare(cls.bundle)
        except BaseException:
            cls.bundle.cleanup()
            raise

    def tearDown(cls):
        cls.bundle.cleanup()

    return type(
        name,
        (),
        {
            "__doc__": doc,
            "__module__": __name__,
            "bundle": None,
            "setUp": classmethod(setUp),
            "tearDown": classmethod(tearDown),
        },
    )


class OwnBundlesLayer:
    """For tests that build bundles of their own (each needs a fresh
    database); only keeps them out of the unit tests."""

    @classmethod
    def setUp(cls):
        pass

    @classmethod
    def tearDown(cls):
        pass


def _tcp(bundle):
    # The server binds port 0; once it listens, the bundle is rebuilt
    # with its real port as the clients' address.
    bundle.build(**{"zeo:address": "127.0.0.1:0"})
    bundle.start_server()
    port = wait_until("the ZEO server's TCP port", bundle.server_port, 60)
    bundle.build(**{"zeo:client-address": f"127.0.0.1:{port}"})
    bundle.start()


BuiltBundleLayer = bundle_layer(
    "BuiltBundleLayer",
    "A built bundle, nothing running: tests start and stop it.",
    lambda bundle: bundle.build(),
)

UnixClusterLayer = bundle_layer(
    "UnixClusterLayer",
    "The default bundle (unix socket) running in the foreground.",
    lambda bundle: bundle.build().run_foreground(),
)

TCPClusterLayer = bundle_layer(
    "TCPClusterLayer", "The bundle switched to TCP, running as daemons.", _tcp
)

DaemonClusterLayer = bundle_layer(
    "DaemonClusterLayer",
    "The default bundle started with bin/cluster start (daemons), for "
    "tests that stop and start its server.",
    lambda bundle: bundle.build().start(),
)
