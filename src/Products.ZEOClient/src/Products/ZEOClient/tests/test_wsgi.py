import unittest

from ZEO.Exceptions import ClientDisconnected
from ZEO.Exceptions import ServerException
from ZODB.POSException import ConflictError

from Products.ZEOClient import wsgi


class FakeRequest:
    retry_count = 1
    retry_max_count = 3

    def supports_retry(self):
        return self.retry_count < self.retry_max_count


class FakeEvent:
    def __init__(self, exc):
        self.request = FakeRequest()
        self.exc_info = (type(exc), exc, None)


class NoRetryTests(unittest.TestCase):

    def test_client_disconnected_is_not_retried(self):
        event = FakeEvent(ClientDisconnected("gone"))
        wsgi.no_retry_while_disconnected(event)
        self.assertFalse(event.request.supports_retry())

    def test_conflicts_are_still_retried(self):
        event = FakeEvent(ConflictError())
        wsgi.no_retry_while_disconnected(event)
        self.assertTrue(event.request.supports_retry())


class Collector:
    def __call__(self, status, headers, exc_info=None):
        self.status = status
        self.headers = dict(headers)


def failing_app(exc):
    def app(environ, start_response):
        raise exc

    return app


class MiddlewareTests(unittest.TestCase):

    def call(self, app, accept="*/*"):
        start = Collector()
        body = b"".join(
            wsgi.ZEOClientMiddleware(app, retry_after=7)(
                {"HTTP_ACCEPT": accept, "REQUEST_METHOD": "POST", "PATH_INFO": "/x"},
                start,
            )
        )
        return start, body.decode()

    def test_disconnected_is_a_plain_503_that_saved_nothing(self):
        start, body = self.call(failing_app(ClientDisconnected()))
        self.assertEqual(start.status, "503 Service Unavailable")
        self.assertEqual(start.headers["Retry-After"], "7")
        self.assertEqual(start.headers["X-ZEO-Status"], "disconnected")
        self.assertTrue(start.headers["Content-Type"].startswith("text/plain"))
        self.assertEqual(int(start.headers["Content-Length"]), len(body.encode()))
        self.assertIn("Nothing was saved", body)
        self.assertNotIn("Traceback", body)

    def test_browsers_get_html(self):
        start, body = self.call(
            failing_app(ClientDisconnected()), accept="text/html,*/*;q=0.8"
        )
        self.assertTrue(start.headers["Content-Type"].startswith("text/html"))
        self.assertIn("<h1>The database server is unreachable.</h1>", body)

    def test_after_the_vote_the_outcome_is_unknown(self):
        exc = ClientDisconnected()
        exc.zeoclient_after_vote = True
        start, body = self.call(failing_app(exc))
        self.assertEqual(start.status, "503 Service Unavailable")
        self.assertIn("may or may not have been saved", body)
        self.assertNotIn("Nothing was saved", body)

    def test_conflicts_after_the_last_retry_are_a_503_to_try_again(self):
        start, body = self.call(failing_app(ConflictError(oid=b"\0" * 8)))
        self.assertEqual(start.status, "503 Service Unavailable")
        self.assertEqual(start.headers["Retry-After"], "1")
        self.assertNotIn("X-ZEO-Status", start.headers)
        self.assertIn("collided with other changes", body)
        self.assertIn("Nothing was saved", body)
        self.assertNotIn("Traceback", body)

    def test_other_errors_pass_through(self):
        with self.assertRaises(KeyError):
            self.call(failing_app(KeyError("x")))

    def test_normal_responses_are_untouched_while_connected(self):
        def app(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]

        start, body = self.call(app)
        self.assertEqual((start.status, body), ("200 OK", "ok"))
        self.assertNotIn("X-ZEO-Status", start.headers)


def tpc_vote(exc):
    raise exc


def tpc_finish(exc):
    raise exc


def load(exc):
    raise exc


def app_failing_in(step, exc):
    """An app whose commit fails in *step*, named like ZEO's client's."""

    def app(environ, start_response):
        step(exc)

    return app


def disk_full():
    return ServerException("builtins.OSError", (28, "No space left on device"))


class ServerWriteErrorTests(unittest.TestCase):

    call = MiddlewareTests.call

    def test_disk_error_at_the_vote_is_a_503_that_saved_nothing(self):
        start, body = self.call(app_failing_in(tpc_vote, disk_full()))
        self.assertEqual(start.status, "503 Service Unavailable")
        self.assertEqual(start.headers["Retry-After"], "7")
        self.assertIn(
            "could not write your change to its disk (No space left on device)", body
        )
        self.assertIn("Nothing was saved", body)
        self.assertNotIn("Traceback", body)
        # The connection is fine: this is not an outage.
        self.assertNotIn("X-ZEO-Status", start.headers)

    def test_disk_error_at_finish_has_an_unknown_outcome(self):
        start, body = self.call(app_failing_in(tpc_finish, disk_full()))
        self.assertEqual(start.status, "503 Service Unavailable")
        self.assertIn("failed while finishing your change", body)
        self.assertIn("may or may not have been saved", body)
        self.assertNotIn("Nothing was saved", body)

    def test_browsers_get_html(self):
        start, body = self.call(
            app_failing_in(tpc_vote, disk_full()), accept="text/html"
        )
        self.assertTrue(start.headers["Content-Type"].startswith("text/html"))
        self.assertIn("(No space left on device).</h1>", body)

    def test_the_reason_is_the_servers_error_text(self):
        for args, reason in (
            (("builtins.OSError", (27, "File too large")), "File too large"),
            (("builtins.PermissionError", (13, "Permission denied")), "Permission denied"),
            (("builtins.OSError", "odd"), "odd"),
            (("builtins.OSError", ()), "OSError"),
        ):
            self.assertEqual(wsgi.server_os_error(ServerException(*args)), reason, args)

    def test_other_server_errors_pass_through(self):
        refused = ServerException(
            "Products.ZEOClient.server.records.RecordRefused", ("no",)
        )
        for step, exc in (
            (tpc_vote, refused),
            (tpc_vote, ServerException("builtins.ValueError", ("closed file",))),
            (tpc_vote, ServerException("os.system", ())),
            (load, disk_full()),  # a read that failed is not a failed write
        ):
            with self.assertRaises(ServerException):
                self.call(app_failing_in(step, exc))


class RefusedRecordTests(unittest.TestCase):

    call = MiddlewareTests.call

    def refused(self):
        from Products.ZEOClient.server.records import RecordRefused

        return RecordRefused(
            "the server refused the record of object 0x2a: it references "
            "my.app.Gadget, which is not allowed; nothing of this transaction "
            "was written"
        )

    def test_a_refused_record_says_what_and_that_nothing_was_saved(self):
        start, body = self.call(failing_app(self.refused()))
        self.assertEqual(start.status, "500 Internal Server Error")  # no retry cures it
        self.assertNotIn("Retry-After", start.headers)
        self.assertEqual(start.headers["Content-Type"], "text/plain; charset=utf-8")
        self.assertIn("refused to store your change", body)
        self.assertIn("my.app.Gadget", body)
        self.assertIn("Nothing was saved", body)
        self.assertIn("allow-module", body)
        self.assertNotIn("Traceback", body)

    def test_browsers_get_html_and_rest_calls_json(self):
        start, body = self.call(failing_app(self.refused()), accept="text/html,*/*")
        self.assertIn("<h1>The database server refused to store your change", body)
        start, body = self.call(failing_app(self.refused()), accept="application/json")
        self.assertEqual(start.headers["Content-Type"], "application/json")
        import json

        answer = json.loads(body)
        self.assertEqual((answer["type"], answer["saved"]), ("RecordRefused", False))
        self.assertIn("my.app.Gadget", answer["message"])


class FilterFactoryTests(unittest.TestCase):

    def test_retry_after_is_read(self):
        self.assertEqual(wsgi.filter_app_factory(None, {}, retry_after="30").retry_after, 30)

    def test_bad_retry_after_is_a_clear_error(self):
        for bad in ("soon", "-1", "1.5"):
            with self.assertRaises(ValueError) as raised:
                wsgi.filter_app_factory(None, {}, retry_after=bad)
            self.assertIn("retry_after must be a whole number", str(raised.exception))
