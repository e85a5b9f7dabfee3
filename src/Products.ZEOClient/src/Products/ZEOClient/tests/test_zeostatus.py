"""bin/zeostatus against a stand-in for ZEO's ruok answer, with and
without TLS (certificates from bin/zeocerts in a temporary folder)."""

import contextlib
import io
import json
import os
import shutil
import socket
import ssl
import struct
import tempfile
import threading
import unittest

from Products.ZEOClient.scripts import zeocerts
from Products.ZEOClient.scripts import zeostatus

STATS = {"1": {"connections": 2, "commits": 5, "aborts": 0, "conflicts": 0,
               "conflicts_resolved": 0, "active_txns": 0, "waiting": 0,
               "last-transaction": "03e8000000000000"}}


def send_frame(sock, data):
    sock.sendall(struct.pack(">I", len(data)) + data)


class RuokServer:
    """Answers ruok as ZEO does, once per connection, on 127.0.0.1 port 0."""

    def __init__(self, test, context=None):
        self.context = context
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)  # to notice ``close``
        self.port = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()
        test.addCleanup(self.close)

    def serve(self):
        while not self.stopping.is_set():
            try:
                sock, _ = self.listener.accept()
            except socket.timeout:
                continue
            sock.settimeout(2)
            try:
                if self.context is not None:
                    sock = self.context.wrap_socket(sock, server_side=True)
                with sock:
                    send_frame(sock, b"M5")
                    zeostatus.frame(sock)  # "ruok"
                    send_frame(sock, json.dumps(STATS).encode())
            except (OSError, ssl.SSLError):
                pass

    def close(self):
        self.stopping.set()
        self.thread.join(10)
        self.listener.close()


class ZeostatusTests(unittest.TestCase):

    def setUp(self):
        self.folder = tempfile.mkdtemp(prefix="zeostatus-test-")
        self.addCleanup(shutil.rmtree, self.folder, ignore_errors=True)

    def main(self, *argv, address, ssl_text=None):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = zeostatus.main(list(argv), address=address, ssl=ssl_text)
        return code, out.getvalue()

    def tls(self):
        authority = zeocerts.Authority(self.folder)
        authority.make_ca()
        authority.make_server("localhost", ["127.0.0.1"], days=20)
        pem, key = authority.make_client("web1")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=authority.ca_pem)
        context.load_cert_chain(authority.path("server.pem"), authority.path("server.key"))
        context.verify_mode = ssl.CERT_REQUIRED
        text = (f"<ssl>\n certificate {pem}\n key {key}\n"
                f" authenticate {authority.ca_pem}\n server-hostname localhost\n</ssl>")
        return context, text, pem

    def test_plain(self):
        server = RuokServer(self)
        code, out = self.main(address=f"127.0.0.1:{server.port}")
        self.assertEqual(code, 0)
        self.assertIn("up", out.splitlines()[0])
        self.assertIn("2 clients, 5 commits", out)
        self.assertNotIn("certificate", out)

    def test_tls_reports_both_certificates(self):
        context, text, pem = self.tls()
        server = RuokServer(self, context)
        code, out = self.main(address=f"127.0.0.1:{server.port}", ssl_text=text)
        self.assertEqual(code, 0, out)
        self.assertIn("2 clients, 5 commits", out)
        self.assertRegex(out, r"server certificate: WARNING expires \S+ \((19|20) days left\)")
        self.assertRegex(out, rf"client certificate {pem}: expires \S+ \(8\d\d days left\)")

    def test_tls_json(self):
        context, text, pem = self.tls()
        server = RuokServer(self, context)
        code, out = self.main("--json", address=f"127.0.0.1:{server.port}", ssl_text=text)
        report = json.loads(out)
        self.assertTrue(report["up"])
        certs = report["certificates"]
        self.assertTrue(certs["server"]["warning"])
        self.assertFalse(certs["client"]["warning"])
        self.assertEqual(certs["client"]["path"], pem)

    def test_down_still_reports_the_client_certificate(self):
        _, text, pem = self.tls()
        probe = socket.create_server(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        code, out = self.main("--json", address=f"127.0.0.1:{port}", ssl_text=text)
        self.assertEqual(code, 1)
        report = json.loads(out)
        self.assertFalse(report["up"])
        self.assertEqual(report["certificates"]["client"]["path"], pem)
        self.assertIsNone(report["certificates"]["server"])

    def test_a_client_the_server_refuses_is_down(self):
        context, text, pem = self.tls()
        server = RuokServer(self, context)
        plain = self.main("--timeout", "1", address=f"127.0.0.1:{server.port}")
        self.assertEqual(plain[0], 1)
        self.assertIn("DOWN", plain[1])

    def test_unusable_client_ssl(self):
        code, out = self.main(address="127.0.0.1:1", ssl_text="<ssl>\n certificate "
                              + os.path.join(self.folder, "missing.pem") + "\n</ssl>")
        self.assertEqual(code, 1)
        self.assertIn("cannot use [zeo] client-ssl", out)
