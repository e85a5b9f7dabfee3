import os
import tempfile
import unittest

from ZEO.cache import ClientCache
from ZODB.utils import p64

from Products.ZEOClient import status
from Products.ZEOClient.controlpanel import render_chart


class FormatTests(unittest.TestCase):

    def test_iso_is_utc_with_z(self):
        self.assertEqual(status.iso(0), "1970-01-01T00:00:00Z")
        self.assertIsNone(status.iso(None))

    def test_tid_is_16_hex_digits_and_a_time(self):
        info = status.tid_info(b"\x03\xe8\x00\x00\x00\x00\x00\x00")
        self.assertEqual(info["id"], "03e8000000000000")
        self.assertTrue(info["time"].endswith("Z"))
        self.assertIsNone(status.tid_info(p64(0)))

    def test_addresses(self):
        self.assertEqual(status.address_text("/v/zeo.sock"), "/v/zeo.sock")
        self.assertEqual(status.address_text(["/v/zeo.sock"]), "/v/zeo.sock")
        self.assertEqual(status.address_text(("127.0.0.1", 8100)), "127.0.0.1:8100")
        self.assertEqual(status.address_text([("127.0.0.1", 8100)]), "127.0.0.1:8100")


class CacheBytesTests(unittest.TestCase):

    def test_counts_records_not_the_preallocated_file(self):
        folder = tempfile.mkdtemp()
        path = os.path.join(folder, "c.zec")
        cache = ClientCache(path, size=1 << 20)
        self.addCleanup(cache.close)
        empty = status.cache_bytes_in_use(cache)
        self.assertEqual(empty, 0)
        cache.store(p64(1), p64(5), None, b"x" * 1000)
        cache.store(p64(2), p64(5), None, b"y" * 3000)
        used = status.cache_bytes_in_use(cache)
        self.assertGreater(used, 4000)
        self.assertLess(used, 5000)
        self.assertGreater(os.path.getsize(path), 1 << 19)


class ChartTests(unittest.TestCase):

    def sample(self, hits, misses):
        return {"time": "t", "hits": hits, "misses": misses, "last_transaction": 0}

    def test_waits_for_two_samples(self):
        svg = render_chart([self.sample(0, 0)])
        self.assertTrue(svg.startswith("<svg"))
        self.assertIn("Collecting data", svg)

    def test_bars_and_ratio_line(self):
        svg = render_chart([self.sample(0, 0), self.sample(9, 1), self.sample(9, 1)])
        self.assertIn("<polyline", svg)
        self.assertEqual(svg.count('fill="#9ec5fe"'), 2)
        self.assertIn("max 10", svg)
        self.assertNotIn("http", svg.replace("http://www.w3.org/2000/svg", ""))


class CertificateStatusTests(unittest.TestCase):

    class Storage:
        client_certificate = None
        connected = True
        peer = {"notAfter": "Jan  5 09:34:43 2100 GMT"}

        def is_connected(self):
            return self.connected

        def server_certificate(self):
            return self.peer

    def test_none_without_tls(self):
        storage = self.Storage()
        storage.peer = None
        self.assertIsNone(status.certificate_status(storage))

    def test_the_server_s_while_connected(self):
        storage = self.Storage()
        certs = status.certificate_status(storage)
        self.assertIsNone(certs["client"])
        self.assertEqual(certs["server"]["not_after"], "2100-01-05T09:34:43Z")
        self.assertFalse(certs["server"]["warning"])
        storage.connected = False
        storage.client_certificate = "/nonexistent/client.pem"
        certs = status.certificate_status(storage)
        self.assertIsNone(certs["server"])
        self.assertTrue(certs["client"]["warning"])
        self.assertIn("cannot read /nonexistent/client.pem", certs["client"]["error"])
