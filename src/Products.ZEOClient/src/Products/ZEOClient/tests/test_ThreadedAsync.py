import threading
import unittest

from Products.ZEOClient import ThreadedAsync


class ThreadedAsyncTests(unittest.TestCase):

    def setUp(self):
        ThreadedAsync._reset()
        self.addCleanup(ThreadedAsync._reset)
        self.calls = []

    def record(self, *args, **kw):
        self.calls.append((args, kw, threading.current_thread().name))

    def test_registered_before_start_runs_at_start(self):
        ThreadedAsync.register_loop_callback(self.record, 1, two=2)
        self.assertFalse(ThreadedAsync.loop_running())
        self.assertEqual(self.calls, [])
        ThreadedAsync.loop_started()
        self.assertTrue(ThreadedAsync.loop_running())
        self.assertEqual([c[:2] for c in self.calls], [((1,), {"two": 2})])

    def test_called_exactly_once_even_if_started_twice(self):
        ThreadedAsync.register_loop_callback(self.record)
        ThreadedAsync.loop_started()
        ThreadedAsync.loop_started()
        self.assertEqual(len(self.calls), 1)

    def test_registered_after_start_runs_at_once(self):
        ThreadedAsync.loop_started()
        ThreadedAsync.register_loop_callback(self.record, "late")
        self.assertEqual([c[0] for c in self.calls], [("late",)])

    def test_order_of_registration_is_kept(self):
        for n in range(5):
            ThreadedAsync.register_loop_callback(self.record, n)
        ThreadedAsync.loop_started()
        self.assertEqual([c[0][0] for c in self.calls], [0, 1, 2, 3, 4])

    def test_failing_callback_is_logged_and_others_run(self):
        def broken():
            raise RuntimeError("boom")

        ThreadedAsync.register_loop_callback(broken)
        ThreadedAsync.register_loop_callback(self.record, "after")
        with self.assertLogs("Products.ZEOClient.ThreadedAsync", "ERROR") as logs:
            ThreadedAsync.loop_started()
        self.assertIn("boom", "\n".join(logs.output))
        self.assertEqual([c[0] for c in self.calls], [("after",)])

    def test_removed_callback_is_not_called(self):
        ThreadedAsync.register_loop_callback(self.record, "gone")
        self.assertTrue(ThreadedAsync.remove_loop_callback(self.record))
        self.assertFalse(ThreadedAsync.remove_loop_callback(self.record))
        ThreadedAsync.loop_started()
        self.assertEqual(self.calls, [])

    def test_callbacks_run_in_the_starting_thread(self):
        ThreadedAsync.register_loop_callback(self.record)
        loop = threading.Thread(target=ThreadedAsync.loop_started, name="loop")
        loop.start()
        loop.join(10)
        self.assertEqual(self.calls[0][2], "loop")

    def test_concurrent_registration_never_loses_or_doubles_a_call(self):
        counts = [0] * 200
        lock = threading.Lock()

        def bump(i):
            with lock:
                counts[i] += 1

        def register(start):
            for i in range(start, 200, 4):
                ThreadedAsync.register_loop_callback(bump, i)

        threads = [threading.Thread(target=register, args=(k,)) for k in range(4)]
        for t in threads[:2]:
            t.start()
        starter = threading.Thread(target=ThreadedAsync.loop_started)
        starter.start()
        for t in threads[2:]:
            t.start()
        for t in threads + [starter]:
            t.join(10)
        self.assertEqual(counts, [1] * 200)
