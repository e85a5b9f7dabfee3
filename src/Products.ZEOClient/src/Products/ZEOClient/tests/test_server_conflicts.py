"""The server counts the conflicts it resolves and those it sends back."""

import logging
import shutil
import tempfile
import unittest

import transaction
import ZODB
from BTrees.Length import Length
from persistent.mapping import PersistentMapping
from ZODB.FileStorage import FileStorage
from ZODB.POSException import ConflictError

from Products.ZEOClient.server import config


class Clock:
    now = 1000.0

    def __call__(self):
        return self.now


class ConflictCountTests(unittest.TestCase):

    def setUp(self):
        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder, True)
        self.storage = FileStorage(f"{folder}/Data.fs")
        self.clock = Clock()
        config.count_conflicts(self.storage, clock=self.clock)
        self.db = ZODB.DB(self.storage)
        self.addCleanup(self.db.close)
        with self.db.transaction() as conn:
            conn.root()["length"] = Length()
            conn.root()["mapping"] = PersistentMapping()

    def collide(self, change):
        """Two transactions change the same object; the second commits last."""
        tm1, tm2 = transaction.TransactionManager(), transaction.TransactionManager()
        one, two = self.db.open(tm1), self.db.open(tm2)
        try:
            change(one.root())
            change(two.root())
            tm1.commit()
            try:
                tm2.commit()
            except ConflictError:
                tm2.abort()
                return False
            return True
        finally:
            one.close()
            two.close()

    def test_counts_and_one_summary_line(self):
        def grow(root):
            root["length"].change(1)

        def put(root):
            root["mapping"]["x"] = id(root)

        with self.assertLogs(config.logger, logging.INFO) as logged:
            self.assertTrue(self.collide(grow))      # Length resolves its conflicts
            self.assertFalse(self.collide(put))      # a mapping does not
            config.logger.info("nothing else yet")   # no summary before the interval
            self.clock.now += config.CONFLICT_REPORT_INTERVAL
            self.assertTrue(self.collide(grow))
        self.assertEqual(self.storage.conflicts_resolved, 2)
        self.assertEqual(self.storage.conflicts_unresolved, 1)
        self.assertEqual(logged.output[0], f"INFO:{config.logger.name}:nothing else yet")
        self.assertEqual(len(logged.output), 2, logged.output)
        self.assertIn("2 resolved on the server, 1 sent back to the clients; "
                      "1 on persistent.mapping.PersistentMapping", logged.output[1])
        with self.db.transaction() as conn:
            self.assertEqual(conn.root()["length"](), 4)  # nothing lost

    def test_zeo_s_server_status_reports_them(self):
        import ZEO.StorageServer

        self.assertTrue(ZEO.StorageServer.StorageServer.server_status.reports_conflicts)
