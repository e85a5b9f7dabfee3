"""ZODB's and ZEO's own storage tests, run against the bundle.

ZEO ships the test classes it runs against itself (``ZEO.tests.testZEO``,
which combines the ``ZODB.tests`` storage mixins: basic storage, undo,
packing, iteration, conflict resolution, MVCC races, blobs, recovery).
Each class chosen in ``CLASSES`` runs through ZEO's own machinery (its
forker starts the server in a process of its own, on 127.0.0.1 port 0,
and stops it in the test's tearDown; ``_stop_new_servers`` stops by PID
what a failed setUp left; the forker's suicide timeout does the rest):

- *bundle*: the server's storage inside the bundle's ``<hardened>``
  section (protocol allowlist, frame limit, stored-records guard,
  tuning), every client a ``ClusterClientStorage``;
- *stock*: the class as ZEO runs it, the baseline, only with
  ``CONFORMANCE_VARIANTS=stock`` (not in ``make test``), at the same
  levels as the bundle's, so that both counts are of the same tests;
- *bundle-direct*: the bundle with the client's ``direct-calls on``
  (``CONFORMANCE_VARIANTS=direct``; ``stock,direct`` for both).

``conformance_class`` makes a variant by subclassing the ZEO class with
a mixin (``Bundle``, ``Stock``); nothing of ZEO's or ZODB's code is
copied.  The only seams used are ZEO's: ``getConfig`` (the server's
storage section, here wrapped), ``getZEOConfig`` (msgpack),
``_new_storage_client``, and testZEO's module-level ``ClientStorage``,
which ``GenericTestBase.setUp`` calls (rebound for the test's duration).
Every client of the bundle variant is made by one function,
``bundle_client``; ``conformance_suite(client_factory, prefix)`` runs the
same classes with another one (``direct_client``), named
``Bundle<prefix>...`` and counted apart.

Every test that passes on stock passes on the bundle, but for the ones
in ``DIVERGENCES``, each with its reason, marked as expected failures
(one that starts passing fails the run: the list stays true).  Classes
that exist only for tests (``ZEO.tests``) are allowed by a test policy
in the server's section (``allow-module``), as an operator allows an
application's.

``ServerZlibTests`` and ``CompressingServerZlibTests``: zc.zlibstorage
on both sides, the records guard reading through the server storage's
``untransform_record_data``.

The layer prints its counts and writes them to
var/test-figures/conformance-<variant>.json.  ZODB marks its long race
tests level 2 (``bin/test -m test_conformance -a 2``: 7 more, 3 min).
"""

import collections
import copy
import functools
import multiprocessing
import os
import shutil
import tempfile
import time
import unittest

import transaction
import ZEO.tests.testZEO as testZEO
import ZODB
import ZODB.FileStorage
from BTrees.Length import Length
from persistent.mapping import PersistentMapping

from Products.ZEOClient import tuning
from Products.ZEOClient.client import ClusterClientStorage
from Products.ZEOClient.server.records import RecordRefused

from .harness import record


def bundle_client(addr, storage="1", **options):
    """The client storage of the bundle, as the layer makes every client
    (the ZEO tests' own options, ClusterClientStorage's defaults)."""
    return ClusterClientStorage(addr, storage=storage, **options)


# What the test server allows on top of the bundle's default policy: the
# persistent classes ZEO's tests store (ZODB.tests' are in the default's
# ZODB prefix).
TEST_POLICY = ("allow-module ZEO.tests",)


def hardened(storage_conf, policy=TEST_POLICY):
    """*storage_conf* (one storage section, maybe after ``%import``
    lines) wrapped in the bundle's ``<hardened>`` section."""
    imports, body = [], []
    for line in storage_conf.strip().splitlines():
        (imports if line.strip().startswith("%import") else body).append(line)
    return "\n".join(
        ["%import Products.ZEOClient.server", *imports, "<hardened>", *policy,
         *body, "</hardened>", ""]
    )


# More variants, comma-separated: "stock" (the baseline) and "direct"
# (the bundle's client with direct-calls on); not in make test.
VARIANTS = "CONFORMANCE_VARIANTS"


# The one list of tests that pass on stock ZEO and not on the bundle, by
# design: test name (a method; Class.method for one class only) -> why.
# Marked as expected failures: one that starts passing fails the run.
RAW_BYTES = (
    "stores raw bytes (b'x', b'y') as object records; the records guard "
    "refuses what is not a pickle (records.py)"
)
DIVERGENCES = {
    # BasicStorage: the tids of commits that store b'x' and b'y'.
    "test_tid_ordering_w_commit": RAW_BYTES,
    # BasicStorage: the competing commit (GenericTests.
    # _do_store_in_separate_thread) stores b'x', so it never commits.
    "test_checkCurrentSerialInTransaction": RAW_BYTES,
}


class Tally:
    """Outcomes per variant, for the layer's figures."""

    def __init__(self):
        self.outcomes = collections.defaultdict(collections.Counter)
        self.seconds = collections.Counter()

    def note(self, variant, outcome, seconds):
        self.outcomes[variant][outcome] += 1
        self.seconds[variant] += seconds


_KINDS = ("failures", "errors", "skipped", "expectedFailures", "unexpectedSuccesses")


def _counts(result):
    return {kind: len(getattr(result, kind, ())) for kind in _KINDS}


class ConformanceLayer:
    """ZEO's storage test classes, stock and against the bundle; each
    test starts its own server process (ZEO's forker)."""

    tally = None

    @classmethod
    def setUp(cls):
        cls.tally = Tally()
        cls.here = os.getcwd()
        cls.tmp = tempfile.mkdtemp(prefix="conformance-")
        os.chdir(cls.tmp)

    @classmethod
    def tearDown(cls):
        os.chdir(cls.here)
        shutil.rmtree(cls.tmp, ignore_errors=True)
        for variant, outcomes in sorted(cls.tally.outcomes.items()):
            figures = {
                "tests": sum(outcomes.values()),
                "passed": outcomes["passed"],
                "expected divergences": outcomes["expected failure"],
                "failed": outcomes["failed"],
                "skipped": outcomes["skipped"],
                "seconds": round(cls.tally.seconds[variant], 1),
            }
            print(f"\n  conformance, {variant}: " + ", ".join(
                f"{value} {key}" for key, value in figures.items()))
            if variant.startswith("bundle"):
                figures["divergences"] = DIVERGENCES
            record(f"conformance-{variant}", figures)

    @classmethod
    def testSetUp(cls):
        pass

    @classmethod
    def testTearDown(cls):
        pass


def _stop_new_servers(before):
    """Stop, by PID, the server processes a test started and left (ZEO's
    forker stops them in tearDown, which a failed setUp skips)."""
    for process in multiprocessing.active_children():
        if process.pid not in before:
            process.terminate()
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join()


class Variant:
    """What both variants share: the server's message encoding, counting
    outcomes, servers stopped."""

    variant = None
    msgpack = False

    def getZEOConfig(self):
        config = super().getZEOConfig()
        if self.msgpack:
            config = copy.copy(config)  # FileStorageSSLTests share theirs
            config.msgpack = True
        return config

    def setUp(self):
        before = {p.pid for p in multiprocessing.active_children()}
        self.addCleanup(_stop_new_servers, before)
        super().setUp()

    def run(self, result=None):
        if result is None:
            return super().run(result)
        before, started = _counts(result), time.monotonic()
        super().run(result)
        after = _counts(result)
        if after["failures"] + after["errors"] + after["unexpectedSuccesses"] > (
            before["failures"] + before["errors"] + before["unexpectedSuccesses"]
        ):
            outcome = "failed"
        elif after["expectedFailures"] > before["expectedFailures"]:
            outcome = "expected failure"
        elif after["skipped"] > before["skipped"]:
            outcome = "skipped"
        else:
            outcome = "passed"
        ConformanceLayer.tally.note(self.variant, outcome, time.monotonic() - started)
        return result


class Stock(Variant):
    """ZEO's class as ZEO runs it."""

    variant = "stock"

    def setUp(self):
        # The bundle's clients tune ZEO in this process; its servers are
        # forked from it: give the baseline ZEO's own behaviour.
        tuning.uninstall()
        super().setUp()


class Bundle(Variant):
    """The server's storage inside ``<hardened>``, the clients
    ``client_factory``'s."""

    variant = "bundle"
    client_factory = staticmethod(bundle_client)
    policy = TEST_POLICY

    def setUp(self):
        # GenericTestBase.setUp (and open(), FileStorageRecoveryTests)
        # make their clients with testZEO's global ClientStorage.
        original = testZEO.ClientStorage
        testZEO.ClientStorage = self.client_factory
        self.addCleanup(setattr, testZEO, "ClientStorage", original)
        super().setUp()

    def getConfig(self, *args):
        return hardened(super().getConfig(*args), self.policy)

    def _new_storage_client(self):
        # ZEO's hook for a second client of the same server.
        client = self._wrap_client(self.client_factory(
            self._storage._addr, wait=1, **self._client_options()))
        client.registerDB(testZEO.DummyDB())
        return client


def diverging(method, reason):
    """*method* as an expected failure, for *reason* (a new function:
    ``unittest.expectedFailure`` marks the one it is given, which the
    stock class shares)."""

    @functools.wraps(method)
    def test(self):
        return method(self)

    test.divergence = reason
    return unittest.expectedFailure(test)


def conformance_class(base, mixin, prefix="", **attributes):
    """*base* (a ZEO test class) run as *mixin* says, with *attributes*
    (``msgpack``, ``client_factory``...) and, for the bundle, the
    divergences marked."""
    namespace = {"__module__": __name__, "layer": ConformanceLayer, **attributes}
    if issubclass(mixin, Bundle):
        for name, reason in DIVERGENCES.items():
            cls_name, _, method = name.rpartition(".")
            if cls_name in ("", base.__name__) and hasattr(base, method):
                namespace[method] = diverging(getattr(base, method), reason)
    if prefix:
        namespace["variant"] = f"{mixin.variant}-{prefix.lower()}"
    encoding = "Msgpack" if attributes.get("msgpack") else ""
    name = f"{mixin.variant.title()}{prefix}{encoding}{base.__name__}"
    return type(name, (mixin, base), namespace)


# ZEO's storage test classes (ZEO.tests.testZEO) run here, with the
# message encoding of their server.  All of them run in about 4 minutes
# on this 2-core box (bundle variant; ~0.3 s a test, most of it starting
# a server process).  Left out: DemoStorageTests (ZEO's own suite drops
# it too; a DemoStorage over FileStorage adds nothing the guard sees),
# FileStorageLoadDelayedTests (level 10 in ZEO: very long) and
# ZRPCConnectionTests (ZEO's client loop internals, with a ClientStorage
# subclass of its own).  FileStorageTests runs on msgpack, the bundle's
# default ([zeo] msgpack); the others on pickle, ZEO's test default,
# where every message goes through the hardened allowlist;
# FileStorageSSLTests are the same tests on pickle, over TLS.
CLASSES = (
    (testZEO.FileStorageTests, {"msgpack": True}),
    (testZEO.FileStorageSSLTests, {}),
    (testZEO.FileStorageHexTests, {}),
    (testZEO.FileStorageClientHexTests, {}),
    (testZEO.FileStorageRecoveryTests, {}),
    (testZEO.MappingStorageTests, {}),
    (testZEO.BlobAdaptedFileStorageTests, {}),
    (testZEO.BlobWritableCacheTests, {}),
    (testZEO.ClientConflictResolutionTests, {}),
)


def load(cls):
    """ZODB 6's tests are named test*, older ones check*: both, as
    testZEO's own test_suite() loads them."""
    suite = unittest.TestSuite()
    for prefix in ("check", "test"):
        loader = unittest.TestLoader()
        loader.testMethodPrefix = prefix
        suite.addTest(loader.loadTestsFromTestCase(cls))
    return suite


def conformance_suite(client_factory=bundle_client, prefix="", stock=False):
    """Every class of CLASSES against the bundle with clients from
    *client_factory* (named with *prefix*), and with *stock* as stock
    ZEO runs it."""
    suite = unittest.TestSuite()
    for base, attributes in CLASSES:
        variants = [(Bundle, prefix, {"client_factory": staticmethod(client_factory)})]
        if stock:
            variants.append((Stock, "", {}))
        for mixin, name, extra in variants:
            cls = conformance_class(base, mixin, name, **attributes, **extra)
            globals()[cls.__name__] = cls  # importable by its test id
            suite.addTest(load(cls))
    return suite


class ServerZlibTests(Variant, unittest.TestCase):
    """Records compressed by the clients, as zc.zlibstorage documents it
    for ZEO: ``ZlibStorage`` around each client storage, the server's
    storage ``<serverzlibstorage>`` (stores and serves records as they
    are, decompresses them for its own reading: conflict resolution,
    pack), here inside ``<hardened>``, whose records guard reads them
    through that same decompression."""

    layer = ConformanceLayer
    variant = "zlib"
    server_storage = "serverzlibstorage"

    def setUp(self):
        super().setUp()
        self.directory = tempfile.mkdtemp(prefix="zlib-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.datafs = os.path.join(self.directory, "Data.fs")
        conf = hardened(f"""\
            %import zc.zlibstorage
            <{self.server_storage}>
              <filestorage>
                path {self.datafs}
              </filestorage>
            </{self.server_storage}>
            """)
        # keep: the test reads Data.fs once the server has stopped.
        self.addr, stop = testZEO.forker.start_zeo_server(conf, keep=True)
        self.stop_server = functools.cache(stop)  # once: a test may stop it first
        self.addCleanup(self.stop_server)

    def database(self):
        """A ZODB.DB on a compressing bundle client of the server."""
        from zc.zlibstorage import ZlibStorage

        db = ZODB.DB(ZlibStorage(bundle_client(self.addr)))
        self.addCleanup(db.close)
        return db

    def stored_records(self):
        """Every data record in Data.fs as the server wrote it."""
        self.stop_server()
        storage = ZODB.FileStorage.FileStorage(self.datafs, read_only=True)
        try:
            return [record.data for txn in storage.iterator() for record in txn]
        finally:
            storage.close()

    def test_compressed_records_are_stored_and_served(self):
        text = "compressible " * 200
        with self.database().transaction() as conn:
            conn.root.doc = PersistentMapping(text=text)
        # Another client, with a cache of its own, reads it back.
        with self.database().transaction() as conn:
            self.assertEqual(conn.root.doc["text"], text)
        self.assertTrue(
            any(data.startswith(b".z") and b"compressible" not in data
                for data in self.stored_records()))

    def test_conflicts_are_resolved_on_the_server(self):
        # BTrees.Length resolves its conflicts on the server, which
        # reads both records through the decompression.
        with self.database().transaction() as conn:
            conn.root.count = Length()
        one, two = self.database(), self.database()
        tm1, tm2 = transaction.TransactionManager(), transaction.TransactionManager()
        c1, c2 = one.open(tm1), two.open(tm2)
        c1.root.count.change(1)
        c2.root.count.change(2)
        tm1.commit()
        tm2.commit()  # a conflict, resolved by the server
        c1.close()
        c2.close()
        with self.database().transaction() as conn:
            self.assertEqual(conn.root.count(), 3)

    def test_pack_follows_references_through_the_decompression(self):
        db = self.database()
        with db.transaction() as conn:
            conn.root.kept = PersistentMapping(child=PersistentMapping(n=1))
            conn.root.dropped = PersistentMapping(n=2)
        with db.transaction() as conn:
            del conn.root.dropped
        db.pack(time.time() + 1)
        with self.database().transaction() as conn:
            self.assertEqual(conn.root.kept["child"]["n"], 1)

    def test_a_compressed_record_outside_the_policy_is_refused(self):
        db = self.database()
        conn = db.open()
        self.addCleanup(conn.close)
        self.addCleanup(transaction.abort)
        conn.root.bad = PersistentMapping(x=Call(os.system, "true"))
        with self.assertRaises(RecordRefused) as raised:
            transaction.commit()
        self.assertIn("references posix.system", str(raised.exception))


class CompressingServerZlibTests(ServerZlibTests):
    """The same clients, the server's storage ``<zlibstorage>``: it
    compresses what arrives uncompressed, keeps what the client
    compressed as it is, and decompresses what it serves."""

    server_storage = "zlibstorage"


class Call:
    """Pickles as a call of *func*: what an attacker stores."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def direct_client(addr, storage="1", **options):
    """The bundle's client with ``direct-calls on`` (direct.py)."""
    return bundle_client(addr, storage, direct_calls=True, **options)


def test_suite():
    variants = os.environ.get(VARIANTS, "").replace(" ", "").split(",")
    suite = conformance_suite(stock="stock" in variants)
    if "direct" in variants:
        suite.addTest(conformance_suite(direct_client, "Direct"))
    suite.addTest(load(ServerZlibTests))
    suite.addTest(load(CompressingServerZlibTests))
    return suite
