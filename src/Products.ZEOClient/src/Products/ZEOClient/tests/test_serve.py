import socket
import threading
import unittest

from Products.ZEOClient import ThreadedAsync
from Products.ZEOClient import serve


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


class CreateServerTests(unittest.TestCase):

    def setUp(self):
        ThreadedAsync._reset()
        self.addCleanup(ThreadedAsync._reset)

    def start(self, **kw):
        server = serve.create_server(hello, _start=True, **kw)
        thread = threading.Thread(target=server.run, daemon=True)
        self.addCleanup(thread.join, 10)
        self.addCleanup(server.close)
        self.addCleanup(server.task_dispatcher.shutdown)
        return server, thread

    def test_callback_runs_in_the_loop_with_the_socket_accepting(self):
        seen = {}
        started = threading.Event()

        def callback():
            seen["thread"] = threading.current_thread().name
            seen["listening"] = True
            started.set()

        ThreadedAsync.register_loop_callback(callback)
        server, thread = self.start(listen="127.0.0.1:0")
        self.assertFalse(started.is_set())  # not before the loop runs
        thread.start()
        self.assertTrue(started.wait(10))
        self.assertEqual(seen["thread"], thread.name)
        port = server.socket.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
            self.assertIn(b"hello", conn.recv(1024) + conn.recv(1024))

    def test_several_listening_sockets(self):
        started = threading.Event()
        ThreadedAsync.register_loop_callback(started.set)
        server, thread = self.start(listen="127.0.0.1:0 127.0.0.1:0")
        thread.start()
        self.assertTrue(started.wait(10))
        self.assertTrue(ThreadedAsync.loop_running())

    def test_server_factory_is_a_paste_entry_point(self):
        from importlib.metadata import entry_points

        (entry,) = entry_points(group="paste.server_factory", name="main")
        self.assertIs(entry.load(), serve.server_factory)


class HealthInTheLoopTests(unittest.TestCase):

    def setUp(self):
        ThreadedAsync._reset()
        self.addCleanup(ThreadedAsync._reset)

    def test_zeo_health_is_answered_while_every_worker_is_busy(self):
        release = threading.Event()
        self.addCleanup(release.set)
        busy = threading.Semaphore(0)

        def app(environ, start_response):
            if environ["PATH_INFO"] == "/zeo-health":
                start_response("200 OK", [("Content-Type", "text/plain")])
                return [b"ok " + threading.current_thread().name.encode()]
            busy.release()
            release.wait(30)
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"slow"]

        server = serve.create_server(app, listen="127.0.0.1:0", threads=2, _start=True)
        loop = threading.Thread(target=server.run, daemon=True, name="the-loop")
        self.addCleanup(loop.join, 10)
        self.addCleanup(server.close)
        self.addCleanup(server.task_dispatcher.shutdown)
        loop.start()
        port = server.socket.getsockname()[1]
        slow = []
        for _ in range(3):  # more than the workers
            conn = socket.create_connection(("127.0.0.1", port), timeout=10)
            self.addCleanup(conn.close)
            conn.sendall(b"GET /slow HTTP/1.0\r\n\r\n")
            slow.append(conn)
        for _ in range(2):
            self.assertTrue(busy.acquire(timeout=10))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"GET /zeo-health HTTP/1.0\r\n\r\n")
            answer = b""
            while chunk := conn.recv(1024):
                answer += chunk
        self.assertIn(b"200 OK", answer)
        self.assertIn(b"ok the-loop", answer)
