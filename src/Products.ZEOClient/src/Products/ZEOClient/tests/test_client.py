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
