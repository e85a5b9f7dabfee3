"""The ZEO tuning: what it replaces, and that ZEO's buffers still work."""

import os
import tempfile
import unittest

import ZEO.asyncio.futures
import ZEO.StorageServer
import ZEO.TransactionBuffer

from .. import tuning


class TuningTests(unittest.TestCase):

    def setUp(self):
        self.was_installed = tuning.installed()
        tuning.install()
        self.addCleanup(self.restore)

    def restore(self):
        if self.was_installed:
            tuning.install()
        else:
            tuning.uninstall()

    def test_install_replaces_and_uninstall_restores(self):
        self.assertIs(ZEO.asyncio.futures.switch_thread, tuning.switch_thread)
        self.assertIsInstance(ZEO.TransactionBuffer.tempfile, tuning.SpoolingTempfile)
        self.assertIsInstance(ZEO.StorageServer.tempfile, tuning.SpoolingTempfile)
        tuning.uninstall()
        self.assertFalse(tuning.installed())
        self.assertIs(ZEO.TransactionBuffer.tempfile, tempfile)
        self.assertIs(ZEO.StorageServer.tempfile, tempfile)
        self.assertIsNot(ZEO.asyncio.futures.switch_thread, tuning.switch_thread)

    def test_small_transaction_buffer_stays_in_memory(self):
        tbuf = ZEO.TransactionBuffer.TransactionBuffer(1)
        self.addCleanup(tbuf.close)
        tbuf.store(b"\0" * 8, b"data")
        tbuf.store(b"\0" * 7 + b"\1", None)
        self.assertFalse(tbuf.file._rolled)
        self.assertEqual(
            list(tbuf), [(b"\0" * 8, b"data", False), (b"\0" * 7 + b"\1", None, False)]
        )

    def test_large_transaction_spills_to_a_file_and_reads_back(self):
        tuning.install(spool_size=1000)
        tbuf = ZEO.TransactionBuffer.TransactionBuffer(1)
        self.addCleanup(tbuf.close)
        records = [(i.to_bytes(8, "big"), os.urandom(300)) for i in range(10)]
        for oid, data in records:
            tbuf.store(oid, data)
        self.assertTrue(tbuf.file._rolled)
        self.assertEqual([(o, d) for o, d, _ in tbuf], records)

    def test_server_commit_log_round_trips(self):
        tuning.install(spool_size=1000)
        log = ZEO.StorageServer.CommitLog()
        self.addCleanup(log.close)
        log.store(b"\0" * 8, b"\0" * 8, b"x" * 2000)
        log.undo(b"\1" * 8)
        self.assertEqual(
            list(log),
            [("_store", (b"\0" * 8, b"\0" * 8, b"x" * 2000)), ("_undo", (b"\1" * 8,))],
        )
        self.assertGreater(log.size(), 2000)

    def test_server_blob_temp_files_are_real_files(self):
        fd, name = ZEO.StorageServer.tempfile.mkstemp(suffix=".tmp")
        os.close(fd)
        self.addCleanup(os.remove, name)
        self.assertTrue(os.path.isfile(name))

    def test_switch_thread_returns(self):
        self.assertIsNone(tuning.switch_thread())

    def test_moved_zeo_internals_fail_loudly(self):
        saved = ZEO.TransactionBuffer.tempfile
        del ZEO.TransactionBuffer.tempfile
        try:
            with self.assertRaises(RuntimeError) as caught:
                tuning.install()
        finally:
            ZEO.TransactionBuffer.tempfile = saved
        self.assertIn("ZEO.TransactionBuffer.tempfile", str(caught.exception))

    def test_event_loop_is_uvloop_in_the_bundle(self):
        self.assertEqual(tuning.event_loop(), "uvloop")


class ServerSectionTests(unittest.TestCase):
    """zeo.conf's <hardened> section installs the tuning unless told not to."""

    def open(self, keys):
        import ZODB.config

        storage = ZODB.config.storageFromString(
            "%import Products.ZEOClient.server\n"
            f"<hardened>\n{keys}\n<mappingstorage/>\n</hardened>\n"
        )
        self.addCleanup(storage.close)

    def setUp(self):
        was = tuning.installed()
        self.addCleanup(tuning.install if was else tuning.uninstall)
        tuning.uninstall()

    def test_on_by_default(self):
        self.open("")
        self.assertTrue(tuning.installed())

    def test_the_server_runs_on_asyncio_whatever_is_installed(self):
        import asyncio

        import ZEO.asyncio.server

        self.open("tuning off")
        self.assertIs(ZEO.asyncio.server.new_event_loop, asyncio.new_event_loop)

    def test_tuning_off_keeps_zeo_as_shipped(self):
        self.open("tuning off")
        self.assertFalse(tuning.installed())
        self.assertIs(ZEO.StorageServer.tempfile, tempfile)
