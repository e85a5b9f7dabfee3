"""retry.run: backoff with jitter, bounded, only for TransientErrors."""

import unittest

import transaction
from ZODB.POSException import ConflictError

from .. import retry


class Clock:

    def __init__(self):
        self.now = 1000.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


class DataManager:
    """Joins the transaction; fails its vote *conflicts* times."""

    def __init__(self, conflicts=0, error=ConflictError):
        self.conflicts = conflicts
        self.error = error
        self.committed = self.aborted = 0

    def abort(self, txn):
        self.aborted += 1

    def tpc_begin(self, txn):
        pass

    def commit(self, txn):
        pass

    def tpc_vote(self, txn):
        if self.conflicts:
            self.conflicts -= 1
            raise self.error()

    def tpc_finish(self, txn):
        self.committed += 1

    def tpc_abort(self, txn):
        self.aborted += 1

    def sortKey(self):
        return "dm"


class RunTests(unittest.TestCase):

    def setUp(self):
        self.tm = transaction.TransactionManager()
        self.clock = Clock()

    def run_with(self, dm, **kw):
        calls = []

        def work():
            calls.append(1)
            self.tm.get().join(dm)
            return "done"

        kw.setdefault("jitter", lambda: 0.5)
        result = retry.run(work, self.tm, sleep=self.clock.sleep, clock=self.clock, **kw)
        return result, len(calls)

    def test_commits_and_returns_the_result(self):
        dm = DataManager()
        self.assertEqual(self.run_with(dm), ("done", 1))
        self.assertEqual(dm.committed, 1)
        self.assertEqual(self.clock.sleeps, [])

    def test_conflicts_are_retried_with_growing_jittered_pauses(self):
        dm = DataManager(conflicts=4)
        self.assertEqual(self.run_with(dm, first_delay=0.01, max_delay=0.03), ("done", 5))
        self.assertEqual(dm.committed, 1)
        # half (the jitter) of 0.01, 0.02, then capped at 0.03
        self.assertEqual(self.clock.sleeps, [0.005, 0.01, 0.015, 0.015])

    def test_gives_up_after_attempts_with_the_last_error(self):
        dm = DataManager(conflicts=10)
        with self.assertRaises(ConflictError):
            self.run_with(dm, attempts=3)
        self.assertEqual(dm.committed, 0)
        self.assertEqual(len(self.clock.sleeps), 2)
        self.assertEqual(self.tm.get().status, "Active")  # aborted, a fresh one

    def test_gives_up_at_the_deadline(self):
        dm = DataManager(conflicts=1000)
        with self.assertRaises(ConflictError):
            self.run_with(dm, attempts=1000, first_delay=1.0, max_delay=1.0,
                          jitter=lambda: 1.0, deadline=3.5)
        self.assertLessEqual(self.clock.now, 1000.0 + 3.5)
        self.assertEqual(len(self.clock.sleeps), 3)

    def test_other_errors_are_not_retried(self):
        dm = DataManager(conflicts=1, error=ValueError)
        with self.assertRaises(ValueError):
            self.run_with(dm)
        self.assertEqual(self.clock.sleeps, [])
        self.assertEqual(dm.committed, 0)

    def test_errors_in_func_abort_the_transaction(self):
        dm = DataManager()

        def work():
            self.tm.get().join(dm)
            raise KeyError("x")

        with self.assertRaises(KeyError):
            retry.run(work, self.tm, sleep=self.clock.sleep, clock=self.clock)
        self.assertEqual(dm.aborted, 1)
        self.assertEqual(dm.committed, 0)


class RequestBackoffTests(unittest.TestCase):

    def test_backoff_grows_and_is_capped(self):
        self.assertEqual(retry.backoff(0, jitter=lambda: 1.0), 0.002)
        self.assertEqual(retry.backoff(3, jitter=lambda: 1.0), 0.016)
        self.assertEqual(retry.backoff(30, jitter=lambda: 1.0), 0.2)
        self.assertEqual(retry.backoff(3, jitter=lambda: 0.5), 0.008)

    def test_a_long_attempt_waits_in_proportion(self):
        # A 0.15 s Plone add: its window starts at its own length and
        # doubles up to 16 times it, not 0.2 s.
        one = lambda: 1.0  # noqa: E731
        self.assertAlmostEqual(retry.backoff(0, jitter=one, took=0.15), 0.15)
        self.assertAlmostEqual(retry.backoff(2, jitter=one, took=0.15), 0.6)
        self.assertAlmostEqual(retry.backoff(9, jitter=one, took=0.15), 2.4)
        # A short one waits as before.
        self.assertEqual(retry.backoff(3, jitter=one, took=0.001), 0.016)

    def test_zope_requests_wait_in_proportion_to_the_failed_attempt(self):
        import time

        class Request:
            retry_count = 0

            def __init__(self):
                self._orig_env = {retry.ATTEMPT_STARTED: time.monotonic() - 0.1}

        request = Request()
        slept = []
        saved = time.sleep
        time.sleep = slept.append
        try:
            retry.delay_retry(request)
        finally:
            time.sleep = saved
        self.assertLessEqual(slept[0], 0.2)
        # The next attempt is timed from now.
        self.assertLess(time.monotonic() - request._orig_env[retry.ATTEMPT_STARTED], 0.05)

    def test_zope_requests_wait_milliseconds_not_seconds(self):
        from ZPublisher.HTTPRequest import HTTPRequest

        original = HTTPRequest.__dict__["delay_retry"]
        self.addCleanup(setattr, HTTPRequest, "delay_retry", original)
        retry.install_request_backoff()
        self.assertIs(HTTPRequest.delay_retry, retry.delay_retry)

        class Request:
            retry_count = 2  # stock Zope: up to 4 s

        slept = []
        import time
        saved = time.sleep
        time.sleep = slept.append
        try:
            HTTPRequest.delay_retry(Request())
        finally:
            time.sleep = saved
        self.assertEqual(len(slept), 1)
        self.assertLessEqual(slept[0], 0.008)
