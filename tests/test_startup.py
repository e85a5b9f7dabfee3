"""ZEO_CLIENT and the loop-started hook, with real servers and instances."""

import os
import unittest

from .harness import own_bundle
from .layers import OwnBundlesLayer

EMPTY = "0" * 16
SERVING = "serving loop started"
NO_WRITES = "startup wrote nothing to the database"


class StartupTests(unittest.TestCase):
    """Each test builds a bundle of its own: they need fresh databases."""

    layer = OwnBundlesLayer

    def bundle(self, instances=2, **settings):
        bundle = own_bundle(self, instances=instances)
        return bundle.build(**settings)

    def assertServingAfterListening(self, bundle, name):
        log = bundle.log(name)
        self.assertLess(log.index("Serving on http://"), log.index(SERVING), name)
        self.assertEqual(log.count(SERVING), 1, name)

    def test_four_clients_starting_at_once_write_nothing(self):
        bundle = self.bundle(instances=4)
        bundle.start_server()
        result = bundle.run_script("zeoinit")
        self.assertEqual(result.returncode, 0, result.stderr)
        before = bundle.last_transaction()
        for name in bundle.instances:
            # A fresh inituser file, as every recipe reinstall leaves one.
            with open(os.path.join(bundle.directory, "parts", name, "inituser"), "w") as f:
                f.write("intruder:secret\n")
        for name in bundle.instances:
            bundle.start_instance(name)
        for name in bundle.instances:
            bundle.wait_for_log(name, SERVING)

        self.assertEqual(bundle.last_transaction(), before)
        for name in bundle.instances:
            log = bundle.log(name)
            self.assertIn(f"ZEO_CLIENT={name}: {NO_WRITES}", log)
            self.assertIn("initial user from inituser", log)
            self.assertNotIn("ConflictError", log)
            self.assertServingAfterListening(bundle, name)
            self.assertEqual(
                bundle.http(name, "GET", "/manage_main", auth=("intruder", "secret")).status,
                401,
            )
            self.assertEqual(bundle.http(name, "GET", "/manage_main").status, 200)

    def test_fresh_database_waits_for_zeoinit_which_initialises_once(self):
        bundle = self.bundle()
        bundle.start_server()
        bundle.start_instance("instance1")
        bundle.wait_for_log("instance1", "the database is not initialised yet")
        self.assertEqual(bundle.last_transaction(), EMPTY)  # the client wrote nothing

        result = bundle.run_script("zeoinit")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("created user admin", result.stdout)
        bundle.wait_for_log("instance1", SERVING)
        bundle.start_instance("instance2")
        bundle.wait_for_log("instance2", SERVING)
        again = bundle.run_script("zeoinit")
        self.assertIn("nothing written", again.stdout)

        notes = bundle.transaction_notes()
        self.assertEqual(notes.count("zeoinit: created the admin account"), 1, notes)
        self.assertEqual(notes.count("Added virtual_hosting"), 1, notes)
        self.assertNotIn("Created initial user", notes)
        for name in bundle.instances:
            self.assertEqual(bundle.http(name, "GET", "/manage_main").status, 200)

    def test_client_gives_up_with_one_line_when_nobody_initialises(self):
        bundle = self.bundle(**{"settings:init-wait": "2s"})
        bundle.start_server()
        process = bundle.console("instance1")
        output, _ = process.communicate(timeout=120)
        self.assertNotEqual(process.returncode, 0)
        message = (
            "ZEO_CLIENT=instance1: the database is still not initialised after 2s"
        )
        self.assertIn(message, output.decode())
        self.assertIn(message, bundle.log("instance1"))
        self.assertEqual(bundle.last_transaction(), EMPTY)

    def test_without_zeo_client_zope_initialises_as_stock(self):
        bundle = self.bundle(**{"instance1:environment-vars": ""})
        bundle.start_server()
        bundle.console("instance1")
        bundle.wait_for_log("instance1", SERVING)
        self.assertNotIn(NO_WRITES, bundle.log("instance1"))
        self.assertIn("ZEO_CLIENT=unset", bundle.log("instance1"))
        notes = bundle.transaction_notes()
        self.assertIn("Added virtual_hosting", notes)
        self.assertServingAfterListening(bundle, "instance1")
