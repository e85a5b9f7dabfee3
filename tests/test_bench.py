"""``make bench --quick`` and ``make shootout --smoke`` once, so that the
benchmarks cannot rot.

Asserts that it completes and its invariants (no lost update, no HTTP
error, every figure present), never its timings.
"""

import json
import os
import shutil
import subprocess
import tempfile
import unittest

from .harness import BENCHPY
from .harness import CHECKOUT
from .layers import OwnBundlesLayer
from .postgres import bin_directory


class BenchTests(unittest.TestCase):

    layer = OwnBundlesLayer

    def test_quick_bench_runs_and_keeps_its_invariants(self):
        folder = tempfile.mkdtemp(prefix="bench-")
        self.addCleanup(shutil.rmtree, folder, ignore_errors=True)
        output = os.path.join(folder, "results.json")
        result = subprocess.run(
            [BENCHPY, os.path.join(CHECKOUT, "bench", "bench.py"), "--quick",
             "--output", output],
            capture_output=True, text=True, timeout=600,
        )
        self.assertEqual(result.returncode, 0, result.stdout[-2000:] + result.stderr[-2000:])
        with open(output) as f:
            results = json.load(f)
        for size in (1, 10, 100):
            for target in ("filestorage", "zeo unix", "zeo tcp"):
                self.assertGreater(results["commit"][f"{target} {size} objects"]["ms"], 0)
        for step in ("zeo unix untuned", "zeo unix +uvloop client",
                     "zeo unix +uvloop +buffers", "zeo unix pickle"):
            self.assertGreater(results["commit"][f"{step} 1 objects"]["ms"], 0)
        loads = {"filestorage load", "zeo cache hit", "zeo I/O thread hand-off",
                 "zeo cold load", "zeo cold load, direct"}
        readers = ["filestorage", "zeo unix", "zeo unix direct"]
        if bin_directory() is None:
            self.assertIn("PostgreSQL is not installed", result.stdout)
            self.assertEqual(results["peers"], "PostgreSQL not installed")
        else:
            # RelStorage on the bench's own temporary PostgreSQL.
            self.assertEqual(results["peers"], "relstorage", result.stdout[-2000:])
            loads.add("relstorage cold load")
            readers.append("relstorage")
            for name in ("relstorage 1 objects", "relstorage 100 objects",
                         "relstorage sync-commit-off 1 objects"):
                self.assertGreater(results["commit"][name]["ms"], 0)
            self.assertIn("target cold read <= RelStorage at 100", result.stdout)
        self.assertEqual(set(results["load"]), loads)
        for name in readers:
            for n in (1, 100):
                self.assertGreater(results["cold_reads"][f"{name} {n} objects"]["us"], 0)
        for size in (1, 10, 100):
            self.assertGreater(results["commit"][f"zeo unix direct {size} objects"]["ms"], 0)
        for name in ("zeo unix", "zeo unix direct"):
            for what in ("commit", "cold load"):
                row = results["round_trips"][f"{name} {what}"]
                self.assertGreater(row["client_cpu_us"], 0, row)
        self.assertIn("Direct calls", result.stdout)
        self.assertGreater(results["guard"]["us_per_record"], 0)
        self.assertGreater(results["host"]["process_round_trip_us"], 0)
        self.assertGreater(results["host"]["thread_round_trip_us"], 0)
        for row in results["writers_distinct"] + results["writers_shared_counter"]:
            self.assertEqual(row["lost_updates"], 0, row)
            self.assertGreater(row["commits"], 0, row)
        counters = {row["counter"] for row in results["writers_shared_counter"]}
        self.assertEqual(counters, {"mapping", "length", "http"})
        for row in results["writers_shared_counter"]:
            if row["counter"] == "length":  # resolved on the server
                self.assertEqual(row["conflicts"], 0, row)
            if row["counter"] == "http":
                # Conflicts past Zope's retries are 503s that saved nothing
                # (lost_updates would be negative otherwise), never 500s.
                self.assertLessEqual(set(row["other_statuses"]), {"503"}, row)
        for row in [*results["http"].values(), *results["http_direct"].values()]:
            self.assertEqual(row["errors"], 0, row)
            self.assertGreater(row["requests"], 0, row)
        self.assertEqual(set(results["http_direct"]), {"off", "on"})
        self.assertEqual([row["direct_calls"] for row in results["writers_direct"]],
                         [False, True, False, True])
        for row in results["writers_direct"]:
            self.assertEqual(row["lost_updates"], 0, row)
            self.assertGreater(row["commits"], 0, row)
        for row in results["slow_links"]:
            self.assertGreaterEqual(row["page_view_round_trips"], 20, row)
            self.assertGreater(row["commit_ms"], 0, row)
        self.assertGreater(results["cache_flush"]["flush_us"], 0)
        self.assertIn("Over a slow link", result.stdout)
        self.assertIn("Commit latency", result.stdout)


class PostgresTests(unittest.TestCase):

    def test_no_postgresql_is_one_line_not_a_traceback(self):
        from unittest import mock

        from . import postgres

        with mock.patch.object(postgres.glob, "glob", return_value=[]):
            with self.assertRaises(postgres.Unavailable) as raised:
                postgres.TemporaryPostgres()
        self.assertEqual(
            str(raised.exception),
            "PostgreSQL is not installed (Debian's postgresql package): "
            "RelStorage rows skipped",
        )

    def test_a_temporary_server_takes_its_folder_with_it(self):
        from . import postgres

        if postgres.bin_directory() is None:
            self.skipTest("PostgreSQL is not installed")
        with postgres.TemporaryPostgres() as pg:
            folder = pg.folder
            pg.create_database("probe", synchronous_commit="off")
            self.assertIn("off", pg.psql("SHOW synchronous_commit", database="probe"))
            self.assertTrue(os.path.exists(os.path.join(folder, ".s.PGSQL.5432")))
        self.assertFalse(os.path.exists(folder))


class ShootoutTests(unittest.TestCase):

    layer = OwnBundlesLayer

    def test_smoke_shootout_measures_every_database(self):
        folder = tempfile.mkdtemp(prefix="shootout-")
        self.addCleanup(shutil.rmtree, folder, ignore_errors=True)
        output = os.path.join(folder, "results.json")
        result = subprocess.run(
            [BENCHPY, os.path.join(CHECKOUT, "bench", "shootout.py"), "--smoke",
             "--output", output],
            capture_output=True, text=True, timeout=900,
        )
        self.assertEqual(result.returncode, 0, result.stdout[-2000:] + result.stderr[-2000:])
        with open(output) as f:
            results = json.load(f)
        expected = ["fs", "zeo_stock", "zeo_bundle", "zeo_direct"]
        if bin_directory() is not None:
            expected.append("relstorage")
        else:
            self.assertIn("PostgreSQL is not installed", result.stdout)
        self.assertEqual(results["databases"], expected)
        labels = set(results["rows"])
        self.assertIn("c=1 processes, o=1: add 1 objects", labels)
        self.assertIn("c=1 processes, o=1: read 1 cold objects", labels)
        for label, row in results["rows"].items():
            self.assertEqual(sorted(row), sorted(expected), label)
            for cell in row.values():
                self.assertGreater(cell["us"], 0, label)
        self.assertIn("zodbshootout 0.8.0", result.stdout)
