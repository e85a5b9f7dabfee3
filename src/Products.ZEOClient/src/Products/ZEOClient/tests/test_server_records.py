import binascii
import copyreg
import datetime
import fractions
import os
import unittest

import transaction
import ZODB
from BTrees.OOBTree import OOBTree
from OFS.Folder import Folder
from persistent.mapping import PersistentMapping
from ZODB.MappingStorage import MappingStorage
from zope.interface import Interface
from zope.interface import alsoProvides

from Products.ZEOClient.server import records


class IMarker(Interface):
    pass


class Call:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def stored_records(*objects):
    """The records ZODB writes for *objects* (real ZODB pickles)."""
    storage = MappingStorage()
    seen = []
    store = storage.store

    def spy(oid, serial, data, version, txn):
        seen.append(data)
        return store(oid, serial, data, version, txn)

    storage.store = spy
    db = ZODB.DB(storage)
    with db.transaction() as conn:
        for n, obj in enumerate(objects):
            conn.root()[n] = obj
    db.close()
    return seen


class ScanTests(unittest.TestCase):

    policy = records.Policy()

    def test_zope_content_passes(self):
        folder = Folder("f")
        folder.title = "T"
        alsoProvides(folder, IMarker)
        tree = OOBTree()
        tree["a"] = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
        mapping = PersistentMapping(s={1, 2}, f=frozenset([3]), b=b"x", d=datetime.date.today())
        for data in stored_records(folder, tree, mapping):
            records.scan(data, self.policy)

    def test_catalog_metadata_with_missing_values_passes(self):
        # ZCatalog's metadata records hold Missing.MV for the columns an
        # object lacks (and for every record when a column is added to a
        # populated catalog); it pickles as the global Missing.V.  (The
        # record is written out: the test eggs have no Missing.)
        record = (
            b"\x80\x03cpersistent.mapping\nPersistentMapping\nq\x00."
            b"\x80\x03}q\x01X\x03\x00\x00\x00rowq\x02cMissing\nV\nq\x03s."
        )
        records.scan(record, self.policy)
        with self.assertRaises(records.RecordRefused):
            records.scan(record.replace(b"cMissing\nV", b"cMissing\nX"), self.policy)

    def refused(self, obj, words):
        with self.assertRaises(records.RecordRefused) as raised:
            for data in stored_records(PersistentMapping(x=obj)):
                records.scan(data, self.policy)
        self.assertIn(words, str(raised.exception))

    def test_os_system_is_refused(self):
        self.refused(Call(os.system, "true"), "references posix.system")

    def test_exec_is_refused(self):
        self.refused(Call(exec, "pass"), "references builtins.exec")

    def test_allowed_module_function_may_not_be_called(self):
        # A gadget: a function from an allowed package, called by REDUCE.
        from OFS.Application import initialize

        self.refused(Call(initialize, None), "calls OFS.Application.initialize")

    def test_allowed_class_may_be_referenced(self):
        # A class from an allowed package, only referenced: fine.
        for data in stored_records(PersistentMapping(cls=Folder)):
            records.scan(data, self.policy)

    def test_operator_can_allow_a_package(self):
        policy = records.Policy(modules=records.DEFAULT_MODULES + ("unittest",))
        for data in stored_records(PersistentMapping(cls=unittest.TestCase)):
            records.scan(data, policy)
        with self.assertRaises(records.RecordRefused):
            for data in stored_records(PersistentMapping(cls=unittest.TestCase)):
                records.scan(data, self.policy)

    def test_unreadable_pickles_are_refused_by_the_guard(self):
        storage = MappingStorage()
        records.guard(storage, self.policy)
        with self.assertRaises(records.RecordRefused) as raised:
            storage.store(b"\0" * 8, b"\0" * 8, b"not a pickle", "", None)
        self.assertIn("not a readable pickle", str(raised.exception))
        self.assertIn("nothing of this transaction was written", str(raised.exception))


class HandWrittenPickleTests(unittest.TestCase):
    """Pickles no pickler writes from objects: what an attacker sends."""

    policy = records.Policy()

    def refused(self, data, words):
        storage = MappingStorage()
        records.guard(storage, self.policy)
        with self.assertLogs("Products.ZEOClient.server.records", "ERROR"):
            with self.assertRaises(records.RecordRefused) as raised:
                storage.store(b"\0" * 8, b"\0" * 8, data, "", None)
        self.assertIn(words, str(raised.exception))
        self.assertEqual(storage.lastTransaction(), b"\0" * 8)  # nothing written

    def test_a_called_global_outside_the_lists(self):
        self.refused(b"cbuiltins\nlen\n(S'x'\ntR.", "references builtins.len")

    def test_calling_what_an_allowed_call_returned(self):
        # copyreg._reconstructor may be called; what it returns may not.
        self.refused(
            b"ccopyreg\n_reconstructor\n(cbuiltins\nobject\ncbuiltins\nobject\nNtR(tR.",
            "calls an object the guard cannot identify",
        )

    def test_calling_a_string(self):
        self.refused(b"S'os.system'\n(S'true'\ntR.", "not a readable pickle")

    def test_a_global_inside_a_persistent_reference(self):
        self.refused(b"(K\x01cposix\nsystem\ntQ.", "references posix.system")

    def test_stack_global_from_computed_names(self):
        # STACK_GLOBAL whose names are not strings.
        self.refused(b"\x80\x04K\x01K\x02\x93.", "not a readable pickle")

    def test_state_cannot_change_a_stand_in_class(self):
        # BUILD with a __class__ in its slot state: the stand-in ignores
        # the state, so what it becomes cannot then be called.
        self.refused(
            b"\x80\x02ccopyreg\n_reconstructor\n(cbuiltins\nobject\ncbuiltins\nobject\nNtR"
            b"N}X\t\x00\x00\x00__class__cbuiltins\nset\ns\x86b(tR.",
            "calls an object the guard cannot identify",
        )

    def test_instance_creation_without_a_call_passes(self):
        # NEWOBJ of an allowed class: only its __new__, nothing called.
        records.scan(b"\x80\x02cOFS.Folder\nFolder\n)\x81.", self.policy)


class Shared:
    """A record whose unpickling calls *func(*args)* and then sets
    *state* on what it returned (REDUCE, BUILD)."""

    def __init__(self, func, args, state):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return self.func, self.args, self.state


class NoWritesThroughCallsTests(unittest.TestCase):
    """An allowed callable that returns a process-wide object must not
    let a record write into it (the real-data issue's GAR attack)."""

    # The Plone profile's kind of policy: GAR and pytz's _p may be called.
    policy = records.Policy(
        modules=records.DEFAULT_MODULES + ("pytz",),
        callables=records.DEFAULT_CALLABLES + (records.GAR, "pytz._p"),
    )

    def scan(self, obj, policy=None):
        for data in stored_records(PersistentMapping(x=obj)):
            records.scan(data, policy or self.policy)

    def refused(self, obj, words):
        with self.assertRaises(records.RecordRefused) as raised:
            self.scan(obj)
        self.assertIn(words, str(raised.exception))

    def test_state_built_onto_what_gar_returned_is_refused(self):
        from zope.component.globalregistry import GAR
        from zope.component.globalregistry import base

        self.refused(Shared(GAR, (base, "adapters"), {"__name__": "pwned"}),
                     f"it changes what {records.GAR} returned")
        self.assertNotEqual(base.adapters.__name__, "pwned")

    def test_gar_only_on_the_global_registry_s_adapters_and_utilities(self):
        from zope.component.globalregistry import GAR
        from zope.component.globalregistry import base

        # What ZODB's component pickling writes: passes.
        self.scan(Shared(GAR, (base, "utilities"), None))
        self.refused(Shared(GAR, (base, "__class__"), None),
                     "other than on the global registry's adapters or utilities")
        self.refused(Shared(GAR, (Folder("f"), "adapters"), None),
                     "other than on the global registry's adapters or utilities")

    def test_the_same_through_pytz_s_cached_time_zones(self):
        import pytz

        self.refused(Shared(pytz._p, ("UTC",), {"zone": "pwned"}),
                     "it changes what pytz._p returned")

    def test_items_added_to_what_a_call_returned_are_refused(self):
        data = (
            b"\x80\x02cpytz\n_p\nX\x03\x00\x00\x00UTCq\x00\x85R"
            b"X\x01\x00\x00\x00kX\x01\x00\x00\x00vs."
        )
        with self.assertRaises(records.RecordRefused) as raised:
            records.scan(data, self.policy)
        self.assertIn("it changes what pytz._p returned", str(raised.exception))

    def test_fresh_callables_may_have_their_state_set(self):
        # copyreg._reconstructor then BUILD: how most instances are pickled.
        self.scan(Shared(copyreg._reconstructor, (Folder, object, None), {"title": "x"}))
        odd = records.Policy(callables=records.DEFAULT_CALLABLES + ("fractions.Fraction",))
        with self.assertRaises(records.RecordRefused):
            self.scan(Shared(fractions.Fraction, (1, 3), {"x": 1}), odd)
        fresh = records.Policy(fresh=records.DEFAULT_FRESH + ("fractions.Fraction",))
        self.scan(Shared(fractions.Fraction, (1, 3), {"x": 1}), fresh)

    def test_provides_declarations_are_not_fresh(self):
        self.assertNotIn("zope.interface.declarations.Provides", records.DEFAULT_FRESH)
        folder = Folder("f")
        alsoProvides(folder, IMarker)  # pickled as a call of Provides, no state
        self.scan(folder)


class GuardTests(unittest.TestCase):

    def test_refused_transaction_writes_nothing(self):
        storage = MappingStorage()
        records.guard(storage, records.Policy())
        db = ZODB.DB(storage)
        self.addCleanup(db.close)
        before = storage.lastTransaction()
        conn = db.open()
        conn.root()["bad"] = PersistentMapping(x=Call(os.system, "true"))
        with self.assertLogs("Products.ZEOClient.server.records", "ERROR"):
            with self.assertRaises(records.RecordRefused):
                transaction.commit()
        transaction.abort()
        conn.close()
        self.assertEqual(storage.lastTransaction(), before)


def evil_record():
    """A real ZODB record whose state calls os.system."""
    (data,) = [r for r in stored_records(PersistentMapping(x=Call(os.system, "true")))
               if b"system" in r]
    return data


def good_record():
    return stored_records(PersistentMapping(a=1))[-1]


class TransformTests(unittest.TestCase):
    """The guard reads a record as the served storage's readers do:
    through its ``untransform_record_data`` (ZODB's IStorageWrapper)."""

    def guarded(self, wrapper):
        storage = wrapper(MappingStorage())
        records.guard(storage, records.Policy())
        return storage

    def store(self, storage, data):
        """Commit *data* as object 0 (its first revision)."""
        txn = ZODB.Connection.TransactionMetaData()
        storage.tpc_begin(txn)
        try:
            storage.store(b"\0" * 8, b"\0" * 8, data, "", txn)
            storage.tpc_vote(txn)
        except BaseException:
            storage.tpc_abort(txn)
            raise
        storage.tpc_finish(txn)

    def refused(self, storage, data, words):
        with self.assertLogs("Products.ZEOClient.server.records", "ERROR"):
            with self.assertRaises(records.RecordRefused) as raised:
                self.store(storage, data)
        self.assertIn(words, str(raised.exception))

    def server_side_wrappers(self):
        # The server side of a transform the client makes: records are
        # stored as they come, transformed.
        from zc.zlibstorage import ServerZlibStorage
        from zc.zlibstorage import compress
        from ZODB.tests.hexstorage import ServerHexStorage

        def hexlify(data):
            return b".h" + binascii.hexlify(data)

        return ((ServerZlibStorage, compress), (ServerHexStorage, hexlify))

    def test_records_transformed_by_the_client_are_read_through_the_transform(self):
        for wrapper, transform in self.server_side_wrappers():
            with self.subTest(wrapper.__name__):
                storage = self.guarded(wrapper)
                self.store(storage, transform(good_record()))
                self.refused(storage, transform(evil_record()), "references posix.system")

    def test_untransformed_records_are_read_as_they_are(self):
        for wrapper, _ in self.server_side_wrappers():
            with self.subTest(wrapper.__name__):
                storage = self.guarded(wrapper)
                self.refused(storage, evil_record(), "references posix.system")

    def test_a_record_compressed_by_the_client_for_a_compressing_server(self):
        # <zlibstorage> compresses on store, but keeps a record that is
        # compressed already as it is, and its readers decompress it.
        from zc.zlibstorage import ZlibStorage
        from zc.zlibstorage import compress

        storage = self.guarded(ZlibStorage)
        self.store(storage, good_record())
        self.refused(storage, compress(evil_record()), "references posix.system")
        # What the guard prevents: unguarded, that is what readers get.
        unguarded = ZlibStorage(MappingStorage())
        self.store(unguarded, compress(evil_record()))
        self.assertEqual(unguarded.load(b"\0" * 8)[0], evil_record())

    def test_bytes_that_are_no_pickle_either_way_are_refused(self):
        from ZODB.tests.hexstorage import HexStorage
        from ZODB.tests.hexstorage import ServerHexStorage

        for wrapper in (HexStorage, ServerHexStorage):
            with self.subTest(wrapper.__name__):
                # hexstorage reads b"x" as the empty record b"".
                self.refused(self.guarded(wrapper), b"x", "not a readable pickle")
