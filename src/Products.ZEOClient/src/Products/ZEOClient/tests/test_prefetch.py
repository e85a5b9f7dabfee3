import os
import shutil
import tempfile
import unittest

import transaction
import ZEO
import ZODB
from persistent.mapping import PersistentMapping

from Products.ZEOClient.prefetch import prefetch
from Products.ZEOClient.scripts.cluster import wait_until


class PrefetchTests(unittest.TestCase):
    """Against a real ZEO server in this process (ZEO.server)."""

    def setUp(self):
        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder, True)
        address, stop = ZEO.server(path=os.path.join(folder, "Data.fs"), threaded=False)
        self.addCleanup(stop)
        self.storage = ZEO.client(address, wait_timeout=30)
        self.db = ZODB.DB(self.storage)
        self.addCleanup(self.db.close)
        self.conn = self.db.open()
        self.addCleanup(self.conn.close)
        self.conn.root()["page"] = PersistentMapping(
            (i, PersistentMapping(title=f"item {i}")) for i in range(20))
        transaction.commit()

    def test_ghosts_are_loaded_together_into_the_cache(self):
        self.storage._cache.clear()
        self.conn.cacheMinimize()
        items = list(self.conn.root()["page"].values())
        self.assertEqual(prefetch(items), 20)
        cache = self.storage._cache
        wait_until("the prefetched states in the client cache",
                   lambda: all(cache.load(item._p_oid) for item in items), 30)
        self.assertEqual([item["title"] for item in items],
                         [f"item {i}" for i in range(20)])
        self.assertEqual(prefetch(items), 0)  # loaded: nothing to ask

    def test_objects_without_a_zeo_storage_are_left_alone(self):
        db = ZODB.DB(None)  # MappingStorage
        self.addCleanup(db.close)
        with db.transaction() as conn:
            conn.root()["x"] = PersistentMapping()
        conn = db.open()
        self.addCleanup(conn.close)
        conn.cacheMinimize()
        self.assertEqual(prefetch([conn.root()["x"], "not persistent", None]), 0)
