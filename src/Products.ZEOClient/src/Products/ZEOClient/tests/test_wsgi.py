import unittest

from ZEO.Exceptions import ClientDisconnected
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


class FilterFactoryTests(unittest.TestCase):

    def test_retry_after_is_read(self):
        self.assertEqual(wsgi.filter_app_factory(None, {}, retry_after="30").retry_after, 30)

    def test_bad_retry_after_is_a_clear_error(self):
        for bad in ("soon", "-1", "1.5"):
            with self.assertRaises(ValueError) as raised:
                wsgi.filter_app_factory(None, {}, retry_after=bad)
            self.assertIn("retry_after must be a whole number", str(raised.exception))
