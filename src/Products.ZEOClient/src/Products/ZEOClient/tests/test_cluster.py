import os
import socket
import tempfile
import unittest

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
