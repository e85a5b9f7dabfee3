"""direct.py against a real ZEO server (runzeo in a child process, on a
fresh unix socket, stopped by PID; it exits by itself if this process
dies)."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import transaction
import ZODB
import ZODB.config
from persistent.mapping import PersistentMapping
from ZEO.Exceptions import ClientDisconnected
from ZODB.utils import maxtid

from Products.ZEOClient import direct
from Products.ZEOClient.client import ClusterClientStorage
from . import assert_fails_loudly_without

# The server exits when its parent (this test process) is gone.
SERVER = """\
import os, sys, threading, time
parent = os.getppid()
def orphaned():
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)
threading.Thread(target=orphaned, daemon=True).start()
from ZEO.runzeo import main
main(['-C', sys.argv[1]])
"""

ZEO_CONF = """\
<zeo>
  address {socket}
  msgpack {msgpack}
</zeo>
<filestorage>
  path {folder}/Data.fs
</filestorage>
<eventlog>
  <logfile>
    path {folder}/zeo.log
  </logfile>
</eventlog>
"""


def wait_until(label, predicate, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {label}")
        time.sleep(0.01)


def start_server(test, msgpack=True, template=ZEO_CONF):
    """A ZEO server on a fresh unix socket; returns (socket path, process).

    *template* is its zeo.conf, with ``{socket}``, ``{folder}`` and
    ``{msgpack}`` filled in."""
    folder = tempfile.mkdtemp(prefix="test-direct-")
    test.addCleanup(shutil.rmtree, folder, True)
    path = os.path.join(folder, "zeo.sock")
    conf = os.path.join(folder, "zeo.conf")
    with open(conf, "w") as f:
        f.write(template.format(socket=path, folder=folder, msgpack=str(msgpack).lower()))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, conf], env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )

    def stop():
        if process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)
            os.kill(process.pid, signal.SIGKILL)
        process.wait(30)

    test.addCleanup(stop)
    wait_until("the server's socket", lambda: os.path.exists(path))
    return path, process


def client(test, address, **kw):
    kw.setdefault("startup_wait", 30)
    kw.setdefault("direct_calls", True)
    storage = ObservedStorage(address, **kw)
    test.addCleanup(storage.close)
    return storage


class ObservedStorage(ClusterClientStorage):
    """Records the invalidations it gets, in order, with the thread."""

    def __init__(self, *args, **kw):
        self.seen = []
        super().__init__(*args, **kw)

    def invalidateTransaction(self, tid, oids):
        self.seen.append((tid, threading.get_ident()))
        return super().invalidateTransaction(tid, oids)


def open_db(test, storage):
    db = ZODB.DB(storage)
    test.addCleanup(db.close)
    return db


class DirectTests(unittest.TestCase):

    msgpack = True

    def setUp(self):
        self.address, self.server = start_server(self, self.msgpack)

    def test_loads_votes_and_finishes_are_direct(self):
        storage = client(self, self.address)
        self.assertTrue(storage.direct_calls)
        db = open_db(self, storage)
        tm = transaction.TransactionManager()
        conn = db.open(tm)
        conn.root()["x"] = PersistentMapping(v=1)
        tm.commit()
        io = storage._server
        before = io.direct_round_trips, io.direct_writes
        conn.root()["x"]["v"] = 2
        tm.commit()
        # vote and tpc_finish read by this thread; tpc_begin, storea written
        self.assertEqual(io.direct_round_trips - before[0], 2)
        self.assertGreaterEqual(io.direct_writes - before[1], 2)
        oid = conn.root()["x"]._p_oid
        storage._cache.invalidate(oid, None)
        before = io.direct_round_trips
        data, serial = storage.load(oid)
        self.assertEqual(io.direct_round_trips - before, 1)
        self.assertEqual(serial, storage.lastTransaction())
        # ZEO's protocol put the reply in the cache, as in its I/O thread
        self.assertEqual(storage._cache.load(oid), (data, serial))
        self.assertEqual(io.zeo_path_calls, 0)

    def test_off_is_zeos_path(self):
        storage = client(self, self.address, direct_calls=False)
        self.assertFalse(storage.direct_calls)
        db = open_db(self, storage)
        with db.transaction() as conn:
            conn.root()["x"] = 1
        self.assertFalse(hasattr(storage._server, "direct_round_trips"))

    def test_long_calls_take_zeos_path(self):
        storage = client(self, self.address)
        db = open_db(self, storage)
        with db.transaction() as conn:
            conn.root()["x"] = 1
        io = storage._server
        before = io.direct_round_trips
        self.assertEqual(len(storage.undoLog(0, 10)), 2)
        self.assertEqual(len(list(storage.iterator())), 2)
        storage.pack(time.time(), None)
        self.assertEqual(io.direct_round_trips, before)

    def test_invalidations_in_between_keep_mvcc(self):
        """Another client commits all the time, changing K counters
        together; readers here load them (cache misses: each commit
        invalidates them) and commit too, in several threads, directly.
        Every snapshot is consistent (all counters equal: no load newer
        than the snapshot), never goes back, no invalidation is lost or
        reordered, and some arrived while a direct call was reading."""
        K, COMMITS, READERS = 5, 150, 3
        writer_storage = client(self, self.address, direct_calls=False)
        writer_db = open_db(self, writer_storage)
        with writer_db.transaction() as conn:
            for k in range(K):
                conn.root()[k] = PersistentMapping(v=0)
            for n in range(READERS):
                conn.root()[f"reader{n}"] = PersistentMapping(v=0)
        storage = client(self, self.address)
        db = open_db(self, storage)
        committed = []
        errors = []
        done = threading.Event()

        def write():
            tm = transaction.TransactionManager()
            conn = writer_db.open(tm)
            try:
                for i in range(1, COMMITS + 1):
                    for k in range(K):
                        conn.root()[k]["v"] = i
                    tm.commit()
                    committed.append(conn.root()[0]._p_serial)  # its tid
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)
            finally:
                conn.close()
                done.set()

        def read(n):
            tm = transaction.TransactionManager()
            conn = db.open(tm)
            last = 0
            own = f"reader{n}"
            try:
                while not done.is_set():
                    tm.begin()
                    values = [conn.root()[k]["v"] for k in range(K)]
                    if len(set(values)) != 1:
                        errors.append(f"inconsistent snapshot {values}")
                    if values[0] < last:
                        errors.append(f"went back from {last} to {values[0]}")
                    last = values[0]
                    conn.root()[own]["v"] = last  # a direct vote and finish
                    tm.commit()
                    conn.cacheMinimize()
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(repr(exc))
            finally:
                conn.close()

        threads = [threading.Thread(target=read, args=(n,)) for n in range(READERS)]
        threads.append(threading.Thread(target=write))
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
            self.assertFalse(t.is_alive())
        self.assertEqual(errors, [])
        last = committed[-1]
        wait_until("the last commit seen", lambda: storage.lastTransaction() >= last)
        with db.transaction() as conn:
            self.assertEqual([conn.root()[k]["v"] for k in range(K)], [COMMITS] * K)
        tids = [tid for tid, _ in storage.seen]
        self.assertEqual(tids, sorted(tids))
        self.assertEqual(len(tids), len(set(tids)))
        lost = set(committed) - set(tids)
        self.assertFalse(lost, "invalidations lost")
        io_thread = storage._server.thread.ident
        in_callers = sum(1 for _, thread in storage.seen if thread != io_thread)
        self.assertGreater(in_callers, 0, "no invalidation arrived during a direct call")
        # Direct calls were in flight (how many depends on how often a
        # second thread held the connection: on a loaded machine more
        # calls take ZEO's path, which is right).
        self.assertGreater(storage._server.direct_round_trips, 0)

    def test_concurrent_threads(self):
        storage = client(self, self.address)
        db = open_db(self, storage)
        with db.transaction() as conn:
            for n in range(8):
                conn.root()[n] = PersistentMapping(v=0)
        errors = []

        def work(n):
            tm = transaction.TransactionManager()
            conn = db.open(tm)
            try:
                for i in range(40):
                    conn.root()[n]["v"] += 1
                    tm.commit()
                    oid = conn.root()[n]._p_oid
                    storage._cache.invalidate(oid, None)
                    data, serial = storage.load(oid)
                    if serial != conn.root()[n]._p_serial:
                        errors.append((n, i))
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(repr(exc))
            finally:
                conn.close()

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(errors, [])
        with db.transaction() as conn:
            self.assertEqual([conn.root()[n]["v"] for n in range(8)], [40] * 8)

    def uncached_object(self, **options):
        """A client storage and the oid of an object it must load from the
        server (stored, then dropped from its cache)."""
        storage = client(self, self.address, **options)
        db = open_db(self, storage)
        with db.transaction() as conn:
            conn.root()["x"] = PersistentMapping(v=1)
        with db.transaction() as conn:
            oid = conn.root()["x"]._p_oid
        storage._cache.invalidate(oid, None)
        return storage, oid

    def test_server_killed_during_a_direct_call(self):
        storage, oid = self.uncached_object(read_timeout=0)
        os.kill(self.server.pid, signal.SIGSTOP)
        outcome = []

        def load():
            try:
                outcome.append(storage.load(oid))
            except Exception as exc:
                outcome.append(exc)

        thread = threading.Thread(target=load)
        thread.start()
        wait_until("a direct call in flight", lambda: storage._server._reader.locked())
        os.kill(self.server.pid, signal.SIGKILL)
        thread.join(10)
        self.assertFalse(thread.is_alive(), "the direct call hangs")
        self.assertIsInstance(outcome[0], ClientDisconnected)
        wait_until("disconnected", lambda: not storage.is_connected())

    def test_silent_server_read_timeout(self):
        # The watchdog (client.py) runs while a direct call waits.
        storage, oid = self.uncached_object(read_timeout=1.0)
        os.kill(self.server.pid, signal.SIGSTOP)
        self.addCleanup(os.kill, self.server.pid, signal.SIGCONT)
        began = time.monotonic()
        with self.assertRaises(ClientDisconnected):
            storage.load(oid)
        self.assertLess(time.monotonic() - began, 5)
        self.assertEqual(storage.silent_links, 1)
        os.kill(self.server.pid, signal.SIGCONT)
        wait_until("reconnected", storage.is_connected)
        storage._cache.invalidate(oid, None)
        self.assertEqual(storage.load(oid)[1], storage.lastTransaction())

    def test_storage_section_key(self):
        storage = ZODB.config.storageFromString(f"""\
            %import Products.ZEOClient
            <zeoclusterclient>
              direct-calls on
              startup-wait 30s
              <zeoclient>
                server {self.address}
              </zeoclient>
            </zeoclusterclient>
        """)
        self.addCleanup(storage.close)
        self.assertTrue(storage.direct_calls)


class DirectPickleTests(DirectTests):
    """The same over ZEO's pickle encoding."""

    msgpack = False


class TLSTests(unittest.TestCase):

    def test_tls_keeps_zeos_path(self):
        import ssl

        from ZEO.Exceptions import ClientDisconnected  # noqa: F401

        context = ssl.create_default_context()
        folder = tempfile.mkdtemp(prefix="test-direct-")
        self.addCleanup(shutil.rmtree, folder, True)
        storage = ClusterClientStorage(
            os.path.join(folder, "none.sock"), startup_wait=0, direct_calls=True,
            ssl=context,
        )
        self.addCleanup(storage.close)
        self.assertFalse(storage.direct_calls)


class InternalsTests(unittest.TestCase):

    def test_the_pinned_zeo_has_what_direct_relies_on(self):
        direct.check_zeo_internals()

    def test_a_missing_internal_fails_loudly(self):
        from ZEO.asyncio import client as zeo_client

        assert_fails_loudly_without(
            self, zeo_client.ClientIO, "tpc_finish_co", direct.check_zeo_internals,
            "ClientIO.tpc_finish_co",
        )
