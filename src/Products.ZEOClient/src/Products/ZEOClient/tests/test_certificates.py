import os
import shutil
import ssl
import tempfile
import time
import unittest
from unittest import mock

from Products.ZEOClient import certificates
from Products.ZEOClient.scripts.zeocerts import Authority


def temp_dir(test):
    folder = tempfile.mkdtemp(prefix="zeocerts-test-")
    test.addCleanup(shutil.rmtree, folder, ignore_errors=True)
    return folder


class FileDateTests(unittest.TestCase):

    def setUp(self):
        self.folder = temp_dir(self)
        authority = Authority(self.folder)
        authority.make_ca()
        self.pem, _ = authority.make_client("web1", days=10)

    def test_reads_the_not_after_date_of_a_file(self):
        left = certificates.file_not_after(self.pem) - time.time()
        self.assertGreater(left, 9 * 86400)
        self.assertLess(left, 11 * 86400)

    def test_a_file_is_read_once_per_version(self):
        certificates.file_not_after(self.pem)
        with mock.patch.object(certificates.subprocess, "run") as run:
            certificates.file_not_after(self.pem)
        run.assert_not_called()

    def test_file_expiry_warns_under_30_days(self):
        info = certificates.file_expiry(self.pem)
        self.assertEqual(info["path"], self.pem)
        self.assertIn(info["days_left"], (9, 10))
        self.assertTrue(info["warning"])
        self.assertFalse(info["expired"])
        self.assertRegex(info["not_after"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")

    def test_a_missing_file_is_an_error_that_warns(self):
        info = certificates.file_expiry(os.path.join(self.folder, "nope.pem"))
        self.assertTrue(info["warning"])
        self.assertIn("cannot read", info["error"])

    def test_a_file_that_is_no_certificate_is_an_error(self):
        path = os.path.join(temp_dir(self), "junk.pem")
        with open(path, "w") as f:
            f.write("not a certificate\n")
        with self.assertRaises(certificates.CertificateError) as caught:
            certificates.file_not_after(path)
        self.assertIn("is not a PEM certificate", str(caught.exception))

    def test_without_openssl_says_so(self):
        with mock.patch.object(certificates.shutil, "which", return_value=None):
            with self.assertRaises(certificates.CertificateError) as caught:
                certificates.openssl_command()
        self.assertIn("openssl command is not installed", str(caught.exception))


class ExpiryTests(unittest.TestCase):

    def test_days_left_and_no_warning_far_ahead(self):
        info = certificates.expiry(100 * 86400 + 5, now=0)
        self.assertEqual(info["days_left"], 100)
        self.assertFalse(info["warning"])
        self.assertEqual(info["not_after"], "1970-04-11T00:00:05Z")

    def test_expired(self):
        info = certificates.expiry(10, now=86400)
        self.assertTrue(info["expired"])
        self.assertTrue(info["warning"])
        self.assertEqual(info["days_left"], -1)

    def test_peer_certificate_date(self):
        seconds = certificates.peer_not_after({"notAfter": "Jan  5 09:34:43 2027 GMT"})
        self.assertEqual(seconds, ssl.cert_time_to_seconds("Jan  5 09:34:43 2027 GMT"))
        self.assertIsNone(certificates.peer_not_after({}))
        self.assertIsNone(certificates.peer_not_after(None))

    def test_describe(self):
        info = {"path": "/c.pem", **certificates.expiry(40 * 86400, now=0)}
        self.assertEqual(
            certificates.describe("client certificate", info),
            "client certificate /c.pem: expires 1970-02-10T00:00:00Z (40 days left)",
        )
        info = certificates.expiry(3 * 86400, now=0)
        self.assertIn(": WARNING expires", certificates.describe("server certificate", info))
        info = certificates.expiry(0, now=1)
        self.assertIn("EXPIRED on 1970-01-01", certificates.describe("x", info))


class SSLSectionTests(unittest.TestCase):

    def test_keys_of_the_section(self):
        text = (
            "\n<ssl>\n  certificate /c.pem\n  key /c.key\n  # a comment\n"
            "  authenticate /ca.pem\n  server-hostname zeo.example.org\n</ssl>\n"
        )
        self.assertEqual(
            certificates.ssl_section(text),
            {
                "certificate": "/c.pem",
                "key": "/c.key",
                "authenticate": "/ca.pem",
                "server-hostname": "zeo.example.org",
            },
        )

    def test_no_text_no_keys(self):
        self.assertEqual(certificates.ssl_section(""), {})
        self.assertEqual(certificates.ssl_section("  \n "), {})
        self.assertEqual(certificates.ssl_section(None), {})

    def test_text_without_a_section_is_refused(self):
        with self.assertRaises(ValueError):
            certificates.ssl_section("certificate /c.pem")


class InUseTests(unittest.TestCase):

    def setUp(self):
        self.authority = Authority(temp_dir(self))
        self.authority.make_ca()
        self.pem, _ = self.authority.make_client("web1", days=100)
        self.loaded = certificates.file_not_after(self.pem)

    def test_the_file_as_loaded(self):
        info = certificates.in_use_expiry(self.pem, self.loaded)
        self.assertEqual(info, certificates.file_expiry(self.pem))
        self.assertNotIn("renewed", info)

    def test_a_file_renewed_since_is_not_in_use_yet(self):
        self.authority.make_client("web1", days=10)
        info = certificates.in_use_expiry(self.pem, self.loaded)
        self.assertIn(info["days_left"], (99, 100))
        self.assertFalse(info["warning"])
        self.assertIn(info["renewed"]["days_left"], (9, 10))
