"""bin/zeocerts in temporary folders, with the real openssl command."""

import contextlib
import io
import os
import shutil
import socket
import ssl
import stat
import subprocess
import tempfile
import threading
import unittest
from unittest import mock

from Products.ZEOClient import certificates
from Products.ZEOClient.scripts import zeocerts


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def openssl_text(*args):
    return subprocess.run(
        ["openssl", *args], capture_output=True, text=True, check=True
    ).stdout


def handshake(server_context, client_context, hostname):
    """A TLS handshake over a socket pair: {} or {side: its error}."""
    left, right = socket.socketpair()
    errors = {}

    def serve():
        try:
            with server_context.wrap_socket(left, server_side=True) as sock:
                sock.recv(1)
        except (ssl.SSLError, OSError) as exc:
            errors["server"] = exc

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_context.wrap_socket(right, server_hostname=hostname) as sock:
            sock.sendall(b"x")
            sock.recv(1)  # the server's answer: its close, or an alert
    except (ssl.SSLError, OSError) as exc:
        errors["client"] = exc
    thread.join(30)
    return errors


class ZeocertsTestCase(unittest.TestCase):

    def setUp(self):
        self.var = tempfile.mkdtemp(prefix="zeocerts-test-")
        self.addCleanup(shutil.rmtree, self.var, ignore_errors=True)
        self.directory = os.path.join(self.var, "certs")
        self.authority = zeocerts.Authority(self.directory)

    def main(self, *argv, address="127.0.0.1:8100"):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = zeocerts.main(
                list(argv), directory=self.directory, server_address=address
            )
        return code, out.getvalue(), err.getvalue()

    def server_context(self, ca=None):
        context = ssl.create_default_context(
            ssl.Purpose.CLIENT_AUTH, cafile=ca or self.authority.ca_pem
        )
        context.load_cert_chain(
            self.authority.path("server.pem"), self.authority.path("server.key")
        )
        context.verify_mode = ssl.CERT_REQUIRED
        context.verify_flags |= ssl.VERIFY_X509_STRICT  # as ZEO's server
        return context

    def client_context(self, name, ca=None, directory=None):
        directory = directory or self.directory
        context, _ = certificates.client_context({
            "certificate": os.path.join(directory, f"client-{name}.pem"),
            "key": os.path.join(directory, f"client-{name}.key"),
            "authenticate": ca or self.authority.ca_pem,
        })
        return context


class CATests(ZeocertsTestCase):

    def test_owner_only_folder_and_keys(self):
        code, out, err = self.main("ca")
        self.assertEqual(code, 0, err)
        self.assertEqual(mode(self.directory), 0o700)
        self.assertEqual(mode(self.authority.ca_key), 0o600)
        self.assertIn("Made the CA", out)
        self.assertIn("CA:TRUE", openssl_text("x509", "-noout", "-text", "-in",
                                              self.authority.ca_pem))

    def test_an_existing_ca_is_kept(self):
        self.main("ca")
        with open(self.authority.ca_pem) as f:
            before = f.read()
        code, out, err = self.main("ca")
        self.assertEqual(code, 1)
        self.assertIn("a CA already exists", err)
        self.assertIn("it is kept", err)
        with open(self.authority.ca_pem) as f:
            self.assertEqual(f.read(), before)


class ServerTests(ZeocertsTestCase):

    def test_needs_the_ca(self):
        code, out, err = self.main("server", "zeo.example.org")
        self.assertEqual(code, 1)
        self.assertIn("no CA in", err)
        self.assertIn("bin/zeocerts ca", err)
        self.assertFalse(os.path.exists(self.authority.path("server.pem")))

    def test_names_and_addresses_in_subject_alt_name(self):
        self.main("ca")
        code, out, err = self.main("server", "zeo.example.org", "--ip", "10.0.0.5",
                                   "--ip", "::1")
        self.assertEqual(code, 0, err)
        text = openssl_text("x509", "-noout", "-text", "-in",
                            self.authority.path("server.pem"))
        self.assertIn("DNS:zeo.example.org", text)
        self.assertIn("IP Address:10.0.0.5", text)
        self.assertIn("IP Address:0:0:0:0:0:0:0:1", text)
        self.assertIn("TLS Web Server Authentication", text)
        self.assertEqual(mode(self.authority.path("server.key")), 0o600)

    def test_an_address_as_host_name(self):
        self.main("ca")
        self.main("server", "127.0.0.1")
        text = openssl_text("x509", "-noout", "-text", "-in",
                            self.authority.path("server.pem"))
        self.assertIn("IP Address:127.0.0.1", text)
        self.assertNotIn("DNS:", text)

    def test_prints_the_server_settings(self):
        self.main("ca")
        code, out, err = self.main("server", "zeo.example.org", address="/v/zeo.sock")
        self.assertIn("address = 0.0.0.0:8100\n", out)
        self.assertIn("server-ssl =\n    <ssl>\n", out)
        self.assertIn("      certificate ${zeo:var}/certs/server.pem\n", out)
        self.assertIn("      key ${zeo:var}/certs/server.key\n", out)
        self.assertIn("      authenticate ${zeo:var}/certs/ca.pem\n", out)

    def test_bad_names_are_refused(self):
        self.main("ca")
        for argv in (("server", "zeo..example.org"), ("server", "--", "-x"),
                     ("server", "zeo_1"), ("server", "ok.example.org", "--ip", "10.0.0")):
            code, out, err = self.main(*argv)
            self.assertEqual(code, 1, argv)
            self.assertIn("is not a", err)
        self.assertFalse(os.path.exists(self.authority.path("server.pem")))

    def test_days_must_be_positive(self):
        with self.assertRaises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
            self.main("server", "zeo.example.org", "--days", "0")


class ClientTests(ZeocertsTestCase):

    def setUp(self):
        super().setUp()
        self.main("ca")
        self.main("server", "localhost", "--ip", "127.0.0.1")

    def test_the_ca_s_clients_connect(self):
        code, out, err = self.main("client", "web1")
        self.assertEqual(code, 0, err)
        self.assertEqual(mode(self.authority.path("client-web1.key")), 0o600)
        for hostname in ("localhost", "127.0.0.1"):
            self.assertEqual(
                handshake(self.server_context(), self.client_context("web1"), hostname), {}
            )

    def test_a_client_of_another_ca_is_refused(self):
        other = zeocerts.Authority(os.path.join(self.var, "other"))
        other.make_ca()
        other.make_client("intruder")
        context = self.client_context("intruder", directory=other.directory)
        errors = handshake(self.server_context(), context, "localhost")
        self.assertIsInstance(errors.get("server"), ssl.SSLCertVerificationError)

    def test_the_server_name_is_checked(self):
        self.main("client", "web1")
        errors = handshake(self.server_context(), self.client_context("web1"), "zeo.other.org")
        self.assertIsInstance(errors.get("client"), ssl.SSLCertVerificationError)

    def test_prints_the_client_settings(self):
        code, out, err = self.main("client", "web1")
        self.assertIn("client-address = localhost:8100\n", out)
        self.assertIn("      certificate ${zeo:var}/certs/client-web1.pem\n", out)
        self.assertIn("      key ${zeo:var}/certs/client-web1.key\n", out)
        self.assertIn("      authenticate ${zeo:var}/certs/ca.pem\n", out)
        self.assertIn("      server-hostname localhost\n", out)
        self.assertIn("Copy ca.pem, client-web1.pem and client-web1.key", out)

    def test_another_folder_is_named_as_it_is(self):
        elsewhere = os.path.join(self.var, "elsewhere")
        zeocerts.main(["--directory", elsewhere, "ca"], directory=self.directory)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            zeocerts.main(["--directory", elsewhere, "client", "web1"],
                          directory=self.directory)
        self.assertIn(f"certificate {elsewhere}/client-web1.pem\n", out.getvalue())

    def test_making_one_again_renews_it(self):
        self.main("client", "web1")
        path = self.authority.path("client-web1.pem")
        before = openssl_text("x509", "-noout", "-serial", "-in", path)
        self.main("client", "web1", "--days", "30")
        self.assertNotEqual(openssl_text("x509", "-noout", "-serial", "-in", path), before)
        self.assertIn(certificates.file_expiry(path)["days_left"], (29, 30))

    def test_bad_client_names_are_refused(self):
        for name in ("../web1", "web 1", "", "a" * 64):
            code, out, err = self.main("client", name)
            self.assertEqual(code, 1, name)
            self.assertIn("is not a valid client name", err)

    def test_without_openssl_says_so(self):
        environ = dict(os.environ, PATH=self.var)  # no openssl there
        with mock.patch.dict(os.environ, environ, clear=True):
            code, out, err = self.main("client", "web2")
        self.assertEqual(code, 1)
        self.assertIn("the openssl command is not installed", err)
