import contextlib
import http.server
import io
import os
import shutil
import socket
import tempfile
import threading
import unittest
from unittest import mock

from Products.ZEOClient.scripts import cluster


class AddressTests(unittest.TestCase):

    def test_path_is_a_unix_socket(self):
        self.assertEqual(cluster.parse_address("/srv/var/zeo.sock"), "/srv/var/zeo.sock")

    def test_host_port_is_tcp(self):
        self.assertEqual(cluster.parse_address("127.0.0.1:8100"), ("127.0.0.1", 8100))

    def test_nonsense_is_refused(self):
        for bad in ("zeo.sock", "127.0.0.1:", "host:port"):
            with self.assertRaises(cluster.ClusterError):
                cluster.parse_address(bad)


class ServerAnswersTests(unittest.TestCase):

    def test_listening_unix_socket_answers(self):
        folder = tempfile.mkdtemp()
        path = os.path.join(folder, "s.sock")
        server = socket.socket(socket.AF_UNIX)
        self.addCleanup(server.close)
        server.bind(path)
        server.listen(1)
        self.assertTrue(cluster.server_answers(path))
        server.close()
        os.unlink(path)
        os.rmdir(folder)
        self.assertFalse(cluster.server_answers(path))

    def test_closed_tcp_port_does_not_answer(self):
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        self.assertFalse(cluster.server_answers(("127.0.0.1", port)))


class ServedURLTests(unittest.TestCase):

    def setUp(self):
        fd, self.log = tempfile.mkstemp()
        os.close(fd)
        self.addCleanup(os.unlink, self.log)

    def test_configured_port_is_used_as_is(self):
        self.assertEqual(
            cluster.served_url(self.log, "127.0.0.1:8081"), "http://127.0.0.1:8081/"
        )

    def test_port_zero_is_read_from_the_latest_start(self):
        self.assertIsNone(cluster.served_url(self.log, "127.0.0.1:0"))
        with open(self.log, "w") as f:
            f.write("INFO [waitress] Serving on http://127.0.0.1:40001\n")
            f.write("INFO [waitress] Serving on http://127.0.0.1:40002\n")
        self.assertEqual(
            cluster.served_url(self.log, "127.0.0.1:0"), "http://127.0.0.1:40002/"
        )


class WaitUntilTests(unittest.TestCase):

    def test_returns_first_true_value(self):
        values = iter([0, None, "ready"])
        self.assertEqual(cluster.wait_until("x", lambda: next(values), 5, 0.01), "ready")

    def test_times_out_with_a_message_naming_what(self):
        with self.assertRaises(cluster.ClusterError) as raised:
            cluster.wait_until("the moon", lambda: False, 0.05, 0.01)
        self.assertIn("the moon", str(raised.exception))


class MainTests(unittest.TestCase):

    def run_main(self, *argv):
        return cluster.main(list(argv), "/nonexistent/bin", "/nonexistent/var", "/x.sock", [])

    def test_timeout_only_with_run(self):
        with self.assertRaises(SystemExit):
            self.run_main("start", "--timeout", "5")

    def test_status_of_a_missing_bundle_is_down(self):
        self.assertEqual(self.run_main("status"), 1)


class ClientHostTests(unittest.TestCase):
    """bin/cluster on a client host (server=False), with stand-ins for the
    generated scripts that note how they were called, an HTTP server
    for the instance and a listening socket for the remote ZEO server."""

    def setUp(self):
        self.folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.folder, ignore_errors=True)
        self.bin = os.path.join(self.folder, "bin")
        os.mkdir(self.bin)
        self.calls = os.path.join(self.folder, "calls")
        for name in ("zeoserver", "zeoinit", "instance1"):
            path = os.path.join(self.bin, name)
            with open(path, "w") as f:
                f.write(f'#!/bin/sh\necho "{name} $*" >> {self.calls}\n'
                        'echo "program running; pid=1"\n')
            os.chmod(path, 0o700)
        web = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
        threading.Thread(target=web.serve_forever, daemon=True).start()
        self.addCleanup(web.server_close)
        self.addCleanup(web.shutdown)
        self.instance = f"127.0.0.1:{web.server_address[1]}"

    def remote_server(self):
        listener = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(listener.close)
        return f"127.0.0.1:{listener.getsockname()[1]}"

    def closed_port(self):
        probe = socket.create_server(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        return f"127.0.0.1:{port}"

    def cluster(self, address):
        return cluster.Cluster(
            self.bin, self.folder, address, [("instance1", self.instance)], server=False
        )

    def called(self):
        try:
            with open(self.calls) as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def quietly(self, function, *args):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            result = function(*args)
        return result, out.getvalue()

    def test_start_and_stop_leave_the_server_alone(self):
        c = self.cluster(self.remote_server())
        _, out = self.quietly(c.start)
        self.quietly(c.stop)
        self.assertEqual(self.called(), ["instance1 start", "instance1 stop"])
        self.assertIn("on the ZEO server's host", out)

    def test_start_goes_on_without_the_remote_server(self):
        address = self.closed_port()
        c = self.cluster(address)
        with mock.patch.object(cluster, "REMOTE_WAIT", 0.2):
            _, out = self.quietly(c.start)
        self.assertIn(f"The ZEO server at {address} does not answer after 0s", out)
        self.assertEqual(self.called(), ["instance1 start"])

    def test_status_reports_the_remote_server(self):
        address = self.remote_server()
        code, out = self.quietly(self.cluster(address).status)
        self.assertEqual(code, 0, out)
        self.assertIn(f"zeoserver    up   remote, at {address}: accepts connections", out)
        self.assertEqual(self.called(), ["instance1 status"])
        address = self.closed_port()
        code, out = self.quietly(self.cluster(address).status)
        self.assertEqual(code, 1)
        self.assertIn(f"zeoserver    DOWN remote, at {address}: does not answer", out)

    def test_main_takes_server_false(self):
        with contextlib.redirect_stdout(io.StringIO()):
            code = cluster.main(["status"], self.bin, self.folder, self.remote_server(),
                                [("instance1", self.instance)], server=False)
        self.assertEqual(code, 0)
        self.assertNotIn("zeoserver status", self.called())
