"""Test layers: each builds one bundle in a temporary folder.

zope.testrunner runs the unit tests first, then these layers one after
the other, tearing each down (its processes stopped by PID, its folder
removed) before the next starts.
"""

from .harness import Bundle
from .harness import wait_until


class OwnBundlesLayer:
    """For tests that build bundles of their own (each needs a fresh
    database); only keeps them out of the unit tests."""

    @classmethod
    def setUp(cls):
        pass

    @classmethod
    def tearDown(cls):
        pass


class BuiltBundleLayer:
    """A built bundle, nothing running: tests start and stop it."""

    bundle = None

    @classmethod
    def setUp(cls):
        cls.bundle = Bundle()
        try:
            cls.bundle.build()
        except BaseException:
            cls.bundle.cleanup()
            raise

    @classmethod
    def tearDown(cls):
        cls.bundle.cleanup()


class UnixClusterLayer:
    """The default bundle (unix socket) running in the foreground."""

    bundle = None

    @classmethod
    def setUp(cls):
        cls.bundle = Bundle()
        try:
            cls.bundle.build()
            cls.bundle.run_foreground()
        except BaseException:
            cls.bundle.cleanup()
            raise

    @classmethod
    def tearDown(cls):
        cls.bundle.cleanup()


class TCPClusterLayer:
    """The bundle switched to TCP, running as daemons.

    The server binds port 0; once it has logged its real port the bundle
    is rebuilt with that port as the clients' address.
    """

    bundle = None

    @classmethod
    def setUp(cls):
        bundle = cls.bundle = Bundle()
        try:
            bundle.build(**{"zeo:address": "127.0.0.1:0"})
            result = bundle.run_script("zeoserver", "start")
            assert result.returncode == 0, result.stdout + result.stderr
            port = wait_until("the ZEO server's TCP port", bundle.server_port, 60)
            bundle.build(**{"zeo:client-address": f"127.0.0.1:{port}"})
            bundle.start()
        except BaseException:
            bundle.cleanup()
            raise

    @classmethod
    def tearDown(cls):
        cls.bundle.cleanup()


class DaemonClusterLayer:
    """The default bundle started with bin/cluster start (daemons), for
    tests that stop and start its server."""

    bundle = None

    @classmethod
    def setUp(cls):
        cls.bundle = Bundle()
        try:
            cls.bundle.build()
            cls.bundle.start()
        except BaseException:
            cls.bundle.cleanup()
            raise

    @classmethod
    def tearDown(cls):
        cls.bundle.cleanup()
