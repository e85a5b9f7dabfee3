import logging
import unittest

from ZEO.Exceptions import ClientDisconnected

from Products.ZEOClient import client
from . import assert_fails_loudly_without


def record(msg, level=logging.INFO, exc=None):
    exc_info = (type(exc), exc, None) if exc else None
    return logging.LogRecord("x", level, __file__, 1, msg, (), exc_info)


class FilterTests(unittest.TestCase):

    def test_per_retry_lines_are_dropped(self):
        noise = client.RetryNoiseFilter()
        self.assertFalse(noise.filter(record("retry connecting %r")))
        self.assertFalse(noise.filter(record("Connection to %r failed, %s")))
        self.assertTrue(noise.filter(record("Connected %s")))
        self.assertTrue(noise.filter(record("Connection to %r failed", logging.ERROR)))

    def test_disconnected_load_tracebacks_are_dropped(self):
        noise = client.DisconnectedLoadFilter()
        self.assertFalse(noise.filter(record("Couldn't load", logging.ERROR, ClientDisconnected())))
        self.assertTrue(noise.filter(record("Couldn't load", logging.ERROR, KeyError())))
        self.assertTrue(noise.filter(record("plain")))

    def test_filters_are_installed_once(self):
        client.quiet_retry_logging()
        client.quiet_retry_logging()
        zeo = logging.getLogger("ZEO.asyncio.client")
        self.assertEqual(
            sum(isinstance(f, client.RetryNoiseFilter) for f in zeo.filters), 1
        )


class InternalsTests(unittest.TestCase):

    def test_the_pinned_zeo_has_what_the_client_relies_on(self):
        client.check_zeo_internals()  # raises if not

    def test_a_missing_internal_fails_loudly(self):
        from ZEO.asyncio import client as zeo_client

        assert_fails_loudly_without(
            self, zeo_client.ClientIO, "verify", client.check_zeo_internals, "lacks verify"
        )


class WatchdogTests(unittest.TestCase):
    """The link watchdog against a real ZEO server (in this process,
    port 0, stopped at cleanup)."""

    def setUp(self):
        import ZEO

        addr, stop = ZEO.server(storage_conf="<mappingstorage/>\n", threaded=True)
        self.addCleanup(stop)
        self.storage = client.ClusterClientStorage(addr, read_timeout=4.0)
        self.addCleanup(self.storage.close)
        self.assertTrue(self.storage.is_connected())

    def in_loop(self, function):
        """*function()*'s outcome, run in the client's I/O thread."""
        import concurrent.futures

        outcome = concurrent.futures.Future()

        def run():
            try:
                outcome.set_result(function())
            except BaseException as exc:
                outcome.set_exception(exc)

        self.storage._server.loop.call_soon_threadsafe(run)
        return outcome.result(10)

    def test_a_connection_closing_under_the_watchdog_does_not_end_it(self):
        # Seen in ZODB's race tests: the protocol closed, ZEO not yet
        # rid of it (a later callback), and the watchdog due to ping:
        # server_call raised ClientDisconnected out of the timer callback,
        # which was never scheduled again.
        storage = self.storage
        scheduled = []
        later = storage._watchdog_later
        storage._watchdog_later = lambda: (scheduled.append(True), later())

        def race():
            storage._io().protocol.close()
            storage._last_received -= storage._read_timeout / 2  # a ping is due
            storage._watchdog()
            return scheduled

        self.assertEqual(self.in_loop(race), [True])
