import threading
import unittest

from Products.ZEOClient import pack


class FakeStorage:
    def __init__(self, connected=True, fail=None):
        self.connected = connected
        self.fail = fail
        self.size = 1000
        self.release = threading.Event()
        self.calls = []

    def is_connected(self):
        return self.connected

    def getSize(self):
        return self.size

    def pack(self, t, referencesf, wait):
        self.calls.append((t, wait))
        self.release.wait(10)
        if self.fail:
            raise self.fail
        self.size = 400


class ParseDaysTests(unittest.TestCase):

    def test_good_values(self):
        self.assertEqual(pack.parse_days("7"), 7)
        self.assertEqual(pack.parse_days(" 0.5 "), 0.5)
        self.assertEqual(pack.parse_days("0"), 0)

    def test_bad_values_say_what_is_wrong(self):
        for bad, words in (
            ("abc", "must be a number"),
            ("", "must be a number"),
            ("-1", "between 0 and"),
            ("1e9", "between 0 and"),
            ("nan", "between 0 and"),
        ):
            with self.assertRaises(ValueError) as raised:
                pack.parse_days(bad)
            self.assertIn(words, str(raised.exception))


class PackJobTests(unittest.TestCase):

    def test_runs_in_the_background_and_records_the_result(self):
        storage = FakeStorage()
        job = pack.PackJob("main")
        job.start(storage, 7)
        self.assertEqual(job.as_dict()["state"], "running")
        with self.assertRaises(pack.PackRefused) as raised:
            job.start(storage, 7)
        self.assertIn("running since", str(raised.exception))
        storage.release.set()
        job._thread.join(10)
        result = job.as_dict()
        self.assertEqual(result["state"], "done")
        self.assertEqual((result["size_before"], result["size_after"]), (1000, 400))
        self.assertEqual(storage.calls[0][1], True)  # wait=True, in our thread
        self.assertEqual(len(storage.calls), 1)

    def test_failure_is_recorded(self):
        storage = FakeStorage(fail=OSError("disk full"))
        storage.release.set()
        job = pack.PackJob("main")
        with self.assertLogs("Products.ZEOClient.pack", "ERROR"):
            job.start(storage, 1)
            job._thread.join(10)
        self.assertEqual(job.as_dict()["state"], "failed")
        self.assertIn("disk full", job.as_dict()["error"])

    def test_refused_while_disconnected(self):
        job = pack.PackJob("main")
        with self.assertRaises(pack.PackRefused) as raised:
            job.start(FakeStorage(connected=False), 1)
        self.assertIn("unreachable", str(raised.exception))
        self.assertEqual(job.as_dict()["state"], "idle")
