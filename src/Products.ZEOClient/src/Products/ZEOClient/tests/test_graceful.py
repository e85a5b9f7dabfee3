"""graceful.GracefulLoop with a real waitress server on 127.0.0.1.

The loop runs in the test's main thread (signal handlers only run there);
a helper thread plays the clients and sends the signals to this process.
"""

import http.client
import os
import signal
import socket
import threading
import time
import unittest

from Products.ZEOClient import graceful
from Products.ZEOClient import serve
from Products.ZEOClient import ThreadedAsync
from Products.ZEOClient.scripts.cluster import wait_until


class App:
    """/slow waits until released (bounded); anything else answers at once."""

    def __init__(self):
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, environ, start_response):
        if environ["PATH_INFO"] == "/slow":
            self.entered.set()
            self.release.wait(20)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"done " + environ["PATH_INFO"].encode()]


class GracefulLoopTests(unittest.TestCase):

    def setUp(self):
        ThreadedAsync._reset()
        graceful._reset()
        self.addCleanup(ThreadedAsync._reset)
        self.addCleanup(graceful._reset)
        self.app = App()
        self.addCleanup(self.app.release.set)
        self.server = serve.create_server(self.app, listen="127.0.0.1:0", _start=True)
        self.port = self.server.socket.getsockname()[1]
        self.closed = []
        self.results = {}

    def loop(self, **kw):
        return graceful.GracefulLoop(
            self.server, close_databases=lambda: self.closed.append(True), **kw
        )

    def get(self, path, key=None, timeout=20):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            result = (response.status, response.read())
        except OSError as e:
            result = e
        finally:
            conn.close()
        self.results[key or path] = result
        return result

    def in_thread(self, script):
        """Run *script* beside the loop; its failure fails the test."""
        errors = []

        def run():
            try:
                # Not before the loop's handlers are in: SIGTERM's default
                # would end the test run.
                wait_until("the loop to run", ThreadedAsync.loop_running, 10)
                script()
            except BaseException as e:  # reported below
                errors.append(e)
                os.kill(os.getpid(), signal.SIGTERM)  # do not leave the loop running
                os.kill(os.getpid(), signal.SIGTERM)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.addCleanup(lambda: errors and self.fail(f"client thread: {errors[0]!r}"))
        return thread

    def stop_me(self):
        os.kill(os.getpid(), signal.SIGTERM)

    def test_a_request_in_flight_finishes_and_is_counted(self):
        def client():
            slow = threading.Thread(target=self.get, args=("/slow",))
            slow.start()
            wait_until("the slow request to run", self.app.entered.is_set, 10)
            self.stop_me()
            wait_until("stopping", graceful.stopping, 10)
            # Still serving during the drain, new connections too.
            self.get("/during-drain")
            self.app.release.set()
            slow.join(20)

        thread = self.in_thread(client)
        loop = self.loop(drain=1.0, shutdown_timeout=20)
        self.assertEqual(loop.run(), 0)
        thread.join(20)
        self.assertEqual(self.results["/slow"], (200, b"done /slow"))
        self.assertEqual(self.results["/during-drain"], (200, b"done /during-drain"))
        self.assertEqual(loop.cut, 0)
        self.assertEqual(self.closed, [True])

    def test_after_the_drain_new_connections_are_refused(self):
        def client():
            slow = threading.Thread(target=self.get, args=("/slow",))
            slow.start()
            wait_until("the slow request to run", self.app.entered.is_set, 10)
            self.stop_me()

            def refused():
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=2).close()
                except ConnectionRefusedError:
                    return True
                return False

            wait_until("the listening socket to close", refused, 10)
            self.app.release.set()
            slow.join(20)

        thread = self.in_thread(client)
        loop = self.loop(drain=0.2, shutdown_timeout=20)
        loop.run()
        thread.join(20)
        self.assertEqual(self.results["/slow"], (200, b"done /slow"))
        self.assertEqual((loop.finished, loop.cut), (1, 0))

    def slow_in_background(self):
        slow = threading.Thread(target=self.get, args=("/slow",), daemon=True)
        slow.start()
        self.addCleanup(slow.join, 20)
        self.addCleanup(self.app.release.set)
        wait_until("the slow request to run", self.app.entered.is_set, 10)

    def test_the_shutdown_timeout_cuts_what_is_left(self):
        def client():
            self.slow_in_background()
            self.stop_me()

        thread = self.in_thread(client)
        loop = self.loop(drain=0, shutdown_timeout=0.5)
        started = time.monotonic()
        loop.run()
        thread.join(20)
        self.assertLess(time.monotonic() - started, 15)
        self.assertEqual((loop.finished, loop.cut), (0, 1))
        self.assertEqual(self.closed, [True])

    def test_a_second_signal_stops_at_once(self):
        def client():
            self.slow_in_background()
            self.stop_me()
            wait_until("stopping", graceful.stopping, 10)
            self.stop_me()

        thread = self.in_thread(client)
        loop = self.loop(drain=60, shutdown_timeout=60)
        started = time.monotonic()
        loop.run()
        thread.join(20)
        self.assertLess(time.monotonic() - started, 15)
        self.assertEqual(loop.cut, 1)
        self.assertEqual(self.closed, [True])

    def test_handlers_are_removed_afterwards(self):
        self.in_thread(self.stop_me)
        self.loop(drain=0, shutdown_timeout=1).run()
        self.assertIs(signal.getsignal(signal.SIGTERM), signal.SIG_DFL)


class ServerFactoryTests(unittest.TestCase):

    def test_drain_and_timeout_are_checked(self):
        for name in ("drain", "shutdown_timeout"):
            for bad in ("-1", "soon", "nan"):
                with self.assertRaises(ValueError) as raised:
                    serve.server_factory({}, **{name: bad})
                self.assertIn(f"[server:main] {name} must be a number", str(raised.exception))
        self.assertTrue(callable(serve.server_factory({}, drain="0", shutdown_timeout="2.5")))
