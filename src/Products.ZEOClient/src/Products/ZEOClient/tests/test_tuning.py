"""The ZEO tuning: what it replaces, and that ZEO's buffers still work."""

import os
import tempfile
import unittest

import ZEO.asyncio.futures
import ZEO.StorageServer
import ZEO.TransactionBuffer

from .. import tuning
from . import assert_fails_loudly_without


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
        assert_fails_loudly_without(
            self, ZEO.TransactionBuffer, "tempfile", tuning.install,
            "ZEO.TransactionBuffer.tempfile",
        )

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

    def test_the_server_runs_on_uvloop(self):
        import ZEO.asyncio.server

        self.open("tuning off")
        self.open("")
        loop = ZEO.asyncio.server.new_event_loop()
        self.addCleanup(loop.close)
        self.assertEqual(type(loop).__module__.split(".")[0], "uvloop")

    def test_tuning_off_runs_the_server_on_asyncio(self):
        import asyncio

        import ZEO.asyncio.server

        self.open("tuning off")
        self.assertIs(ZEO.asyncio.server.new_event_loop, asyncio.new_event_loop)

    def test_the_signal_handlers_are_installed_either_way(self):
        import ZEO.runzeo

        for keys in ("", "tuning off"):
            for name in tuning.SIGNAL_EXITS:
                setattr(ZEO.runzeo.ZEOServer, name, lambda self: None)
            self.open(keys)
            for name in tuning.SIGNAL_EXITS:
                handler = getattr(ZEO.runzeo.ZEOServer, name)
                self.assertEqual(handler.__name__, "exit_between_callbacks", (keys, name))

    def test_tuning_off_keeps_zeo_as_shipped(self):
        self.open("tuning off")
        self.assertFalse(tuning.installed())
        self.assertIs(ZEO.StorageServer.tempfile, tempfile)


class ExitBetweenCallbacksTests(unittest.TestCase):
    """runzeo's signal handlers, as ``exit_between_callbacks`` makes them."""

    def setUp(self):
        import ZEO.runzeo

        saved = {name: ZEO.runzeo.ZEOServer.__dict__[name] for name in tuning.SIGNAL_EXITS}
        self.addCleanup(lambda: [setattr(ZEO.runzeo.ZEOServer, k, v) for k, v in saved.items()])
        tuning.exit_between_callbacks()

    def runzeo(self, loop):
        """A stand-in for runzeo's ZEOServer whose server runs on *loop*."""
        import types

        import ZEO.runzeo

        server = ZEO.runzeo.ZEOServer.__new__(ZEO.runzeo.ZEOServer)
        server.server = types.SimpleNamespace(acceptor=types.SimpleNamespace(event_loop=loop))
        return server

    def signal_in_a_callback(self, loop, handler, status):
        server = self.runzeo(loop)
        done = []

        def callback():
            getattr(server, handler)()  # the signal arrives here
            done.append("the callback ran to its end")

        loop.call_soon(callback)
        loop.call_later(30, loop.stop)  # bound
        with self.assertRaises(SystemExit) as caught:
            loop.run_forever()
        self.assertEqual(caught.exception.code, status)
        self.assertEqual(done, ["the callback ran to its end"])

    def test_uvloop_stops_after_the_callback(self):
        import uvloop

        loop = uvloop.new_event_loop()
        self.addCleanup(loop.close)
        self.signal_in_a_callback(loop, "handle_sigterm", 0)

    def test_asyncio_stops_after_the_callback(self):
        import asyncio

        loop = asyncio.new_event_loop()
        self.addCleanup(loop.close)
        self.signal_in_a_callback(loop, "handle_sighup", 1)

    def test_before_the_server_serves_it_exits_at_once(self):
        import asyncio

        loop = asyncio.new_event_loop()
        self.addCleanup(loop.close)
        with self.assertRaises(SystemExit) as caught:
            self.runzeo(loop).handle_sigint()
        self.assertEqual(caught.exception.code, 0)
        server = self.runzeo(None)
        server.server = None  # runzeo before create_server
        with self.assertRaises(SystemExit):
            server.handle_sigterm()

    def test_the_server_run_as_main_gets_them_too(self):
        # bin/zeoserver runs ``python -m ZEO.runzeo``: the class that
        # handles the signals is __main__'s copy of ZEOServer.
        import sys
        import types

        import ZEO.runzeo

        main = types.ModuleType("__main__")
        main.__spec__ = types.SimpleNamespace(name="ZEO.runzeo")
        main.ZEOServer = type("ZEOServer", (), {
            name: lambda self: None for name in tuning.SIGNAL_EXITS
        })
        saved = sys.modules["__main__"]
        sys.modules["__main__"] = main
        try:
            self.assertEqual(tuning.runzeo_classes(), [ZEO.runzeo.ZEOServer, main.ZEOServer])
            tuning.exit_between_callbacks()
        finally:
            sys.modules["__main__"] = saved
        self.assertEqual(main.ZEOServer.handle_sigterm.__name__, "exit_between_callbacks")
        self.assertEqual(tuning.runzeo_classes(), [ZEO.runzeo.ZEOServer])

    def test_moved_runzeo_handler_fails_loudly(self):
        import ZEO.runzeo

        assert_fails_loudly_without(
            self, ZEO.runzeo.ZEOServer, "handle_sigterm", tuning.exit_between_callbacks,
            "ZEO.runzeo.ZEOServer.handle_sigterm",
        )
