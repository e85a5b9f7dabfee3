import os
import threading
import unittest

import transaction
import ZODB
from OFS import Application as application_module
from OFS.Application import Application
from ZODB.MappingStorage import MappingStorage

from Products.ZEOClient import startup


def initialise(db):
    with db.transaction() as conn:
        conn.root()["Application"] = Application()


class IsInitialisedTests(unittest.TestCase):

    def test_empty_storage_is_not(self):
        self.assertFalse(startup.is_initialised(MappingStorage()))

    def test_root_without_application_is_not(self):
        storage = MappingStorage()
        ZODB.DB(storage)  # commits an empty root, as ZODB.DB() does
        self.assertFalse(startup.is_initialised(storage))

    def test_root_holding_the_application_is(self):
        storage = MappingStorage()
        initialise(ZODB.DB(storage))
        self.assertTrue(startup.is_initialised(storage))


class WaitForInitialisedTests(unittest.TestCase):

    def test_gives_up_with_a_one_line_message(self):
        storage = MappingStorage()
        with self.assertLogs("Products.ZEOClient.startup", "INFO") as logs:
            with self.assertRaises(startup.DatabaseNotInitialised) as raised:
                startup.wait_for_initialised(storage, 0.3, interval=0.05, name="c1")
        message = str(raised.exception)
        self.assertIn("ZEO_CLIENT=c1", message)
        self.assertIn("bin/zeoinit", message)
        self.assertNotIn("\n", message)
        self.assertEqual(len(logs.output), 2)  # one "waiting", one "gave up"
        # Nothing was written while waiting.
        self.assertFalse(startup.is_initialised(storage))

    def test_returns_when_another_process_initialises(self):
        storage = MappingStorage()
        db = ZODB.DB(storage)
        timer = threading.Timer(0.2, initialise, [db])
        timer.start()
        self.addCleanup(timer.join)
        startup.wait_for_initialised(storage, 30, interval=0.05, name="c1")
        self.assertTrue(startup.is_initialised(storage))


class SuppressStartupWritesTests(unittest.TestCase):

    def setUp(self):
        self.original = application_module.initialize
        self.addCleanup(setattr, application_module, "initialize", self.original)
        os.environ["ZEO_CLIENT"] = "unit"
        self.addCleanup(os.environ.pop, "ZEO_CLIENT", None)
        self.storage = MappingStorage()
        self.db = ZODB.DB(self.storage)
        self.addCleanup(self.db.close)
        initialise(self.db)

    def test_zope_startup_steps_commit_nothing(self):
        startup.suppress_startup_writes()
        startup.suppress_startup_writes()  # idempotent
        self.assertIs(application_module.initialize, startup.initialize_without_writes)
        before = self.storage.lastTransaction()
        conn = self.db.open()
        self.addCleanup(conn.close)
        app = conn.root()["Application"]
        with self.assertLogs("Products.ZEOClient.startup", "INFO") as logs:
            application_module.initialize(app)
        self.assertEqual(self.storage.lastTransaction(), before)
        self.assertNotIn("virtual_hosting", conn.root()["Application"].objectIds())
        log = "\n".join(logs.output)
        self.assertIn("ZEO_CLIENT=unit: startup wrote nothing", log)
        self.assertIn("Added virtual_hosting", log)
        transaction.abort()

    def test_stock_initialize_writes_without_the_guard(self):
        # The baseline the guard changes: Zope's own initialise commits.
        before = self.storage.lastTransaction()
        conn = self.db.open()
        self.addCleanup(conn.close)
        self.original(conn.root()["Application"])
        self.assertNotEqual(self.storage.lastTransaction(), before)
