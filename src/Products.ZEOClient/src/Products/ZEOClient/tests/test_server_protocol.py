import pickle
import struct
import unittest

import ZEO.asyncio.marshal

from Products.ZEOClient.server import protocol
from . import assert_fails_loudly_without


class Call:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


class AllowlistTests(unittest.TestCase):

    def test_stock_filter_admits_exec_ours_does_not(self):
        self.assertIs(ZEO.asyncio.marshal.server_find_global("builtins", "exec"), exec)
        with self.assertRaises(protocol.RefusedMessage) as raised:
            protocol.restricted_find_global("builtins", "exec")
        self.assertIn("builtins.exec", str(raised.exception))

    def test_plain_messages_decode(self):
        message = (7, 0, "loadBefore", (b"\0" * 8, b"\xff" * 8))
        self.assertEqual(protocol.restricted_loads(pickle.dumps(message, 3)), message)

    def test_sets_decode(self):
        message = (1, 0, "x", ({1, 2}, frozenset([3])))
        self.assertEqual(protocol.restricted_loads(pickle.dumps(message, 2)), message)

    def test_a_transaction_extension_that_reduces_to_dict_decodes(self):
        # What ZEO's client sends for tpc_begin when the extension is a
        # mapping that pickles as dict(pairs) (ZODB's IteratorStorage
        # testTransactionExtensionFromIterator), encoded by ZEO itself.
        class Extension(dict):
            def __reduce__(self):
                return dict, (tuple(self.items()),)

        encode = ZEO.asyncio.marshal.encoder(b"Z")
        payload = encode(0, True, "tpc_begin",
                         (1, b"user", b"note", Extension(foo=1), None, " "))
        decoded = protocol.restricted_loads(payload)
        self.assertEqual(decoded[3][3], {"foo": 1})
        self.assertIs(type(decoded[3][3]), dict)

    def test_a_plain_extension_names_no_global(self):
        encode = ZEO.asyncio.marshal.encoder(b"Z")
        extension = {"user_name": "admin", "paths": ["/a"], "n": 1}
        payload = encode(0, True, "tpc_begin", (1, b"", b"", extension, None, " "))
        self.assertEqual(protocol.restricted_loads(payload)[3][3], extension)

    def test_other_mappings_in_an_extension_stay_refused(self):
        # As on stock ZEO, whose filter admits no collections global.
        import collections

        encode = ZEO.asyncio.marshal.encoder(b"Z")
        payload = encode(0, True, "tpc_begin",
                         (1, b"", b"", collections.OrderedDict(a=1), None, " "))
        with self.assertRaises(protocol.RefusedMessage) as raised:
            protocol.restricted_loads(payload)
        self.assertIn("collections.OrderedDict", str(raised.exception))

    def test_a_call_is_refused_before_it_runs(self):
        called = []
        payload = pickle.dumps((1, 0, "x", (Call(print, "boom"),)), 3)
        with self.assertRaises(protocol.RefusedMessage):
            protocol.restricted_loads(payload)
        self.assertEqual(called, [])


class FrameGuardTests(unittest.TestCase):

    def frames(self, *sizes):
        return b"".join(struct.pack(">I", n) + b"x" * n for n in sizes)

    def test_frames_within_the_limit_pass_in_any_chunking(self):
        data = self.frames(10, 0, 100, 3)
        for step in (1, 3, 7, len(data)):
            guard = protocol.FrameGuard(100)
            results = [guard.feed(data[i:i + step]) for i in range(0, len(data), step)]
            self.assertEqual(set(results), {None}, step)

    def test_oversized_frame_is_caught_at_its_header(self):
        guard = protocol.FrameGuard(100)
        self.assertIsNone(guard.feed(self.frames(5)))
        self.assertEqual(guard.feed(struct.pack(">I", 101)), 101)


class HookPointTests(unittest.TestCase):

    def test_pinned_zeo_has_the_hook_points(self):
        protocol.check_hook_points()

    def test_missing_hook_point_fails_loudly(self):
        import ZEO.asyncio.server

        assert_fails_loudly_without(
            self, ZEO.asyncio.server, "new_connection", protocol.check_hook_points,
            "cannot harden",
        )
