"""Nothing a client sends can make the bundle's server run code.

Raw protocol messages over the server's real unix socket; each attack
would create a marker file if the server ran it.  The bundle's server
speaks msgpack (no message is unpickled) and refuses a pickle
handshake; the pickle attacks go to a server of the same bundle set to
speak pickle (``msgpack false``), which reads them through the
allowlist.
"""

import os
import pickle
import socket
import struct
import subprocess
import unittest

from .harness import ZOPEPY
from .harness import stop_process
from .harness import wait_until
from .layers import DaemonClusterLayer


class Call:
    """Pickles as a call of *func*: what an attacker sends."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def frame(payload):
    return struct.pack(">I", len(payload)) + payload


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def read_frame(sock):
    header = recv_exact(sock, 4)
    if header is None:
        return None
    return recv_exact(sock, struct.unpack(">I", header)[0])


def unix_connection(test, path):
    """A socket connected to *path*, closed when *test* ends."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    test.addCleanup(sock.close)
    sock.settimeout(10)
    sock.connect(path)
    return sock


def closed_by_server(sock):
    """True once the server has closed the connection (bounded)."""
    sock.settimeout(10)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except ConnectionResetError:
        # Closed with what the client sent still unread: the kernel
        # resets the connection.  Closed all the same.
        return True
    except socket.timeout:
        return False


def pickle_server(bundle):
    """The socket of a server of *bundle* that speaks pickle (started
    once per bundle; stopped by the bundle's cleanup)."""
    path = os.path.join(bundle.var, "pickle.sock")
    if not os.path.exists(path):
        bundle.spawn_server("pickle", ("msgpack true", "msgpack false"))
    return path


class HardeningTests(unittest.TestCase):
    """Attacks in pickle, against a server that speaks pickle."""

    layer = DaemonClusterLayer

    @property
    def bundle(self):
        return self.layer.bundle

    def setUp(self):
        self.marker = os.path.join(self.bundle.directory, "PWNED")
        if os.path.exists(self.marker):
            os.unlink(self.marker)
        self.socket_path = self.server_socket()

    def server_socket(self):
        return pickle_server(self.bundle)

    def connect(self, handshake=None, prefix=b"Z"):
        sock = unix_connection(self, self.socket_path)
        announced = read_frame(sock)
        self.assertTrue(announced.startswith(prefix), announced)
        sock.sendall(frame(handshake or announced))
        return sock

    def attack(self, payload, words):
        sock = self.connect()
        sock.sendall(frame(payload))
        self.assertTrue(closed_by_server(sock), "the server kept the connection")
        self.assertFalse(os.path.exists(self.marker), "the server ran the attack")
        wait_until(
            f"the refusal ({words}) in the server log",
            lambda: words in self.bundle.log("zeoserver"),
            10,
        )
        self.assertServerStillServes()

    def assertServerStillServes(self):
        self.assertRegex(
            self.bundle.last_transaction(ZEO_ADDRESS=self.socket_path), "^[0-9a-f]{16}$"
        )

    def message(self, method, *args):
        return pickle.dumps((1, 0, method, args), 3)

    def test_exec(self):
        code = f"open({self.marker!r}, 'w').write('exec')"
        self.attack(self.message("lastTransaction", Call(exec, code)), "builtins.exec")

    def test_eval(self):
        code = f"open({self.marker!r}, 'w')"
        self.attack(self.message("lastTransaction", Call(eval, code)), "builtins.eval")

    def test_getattr_chain(self):
        # getattr(__import__("os"), "system")("touch MARKER"): a pickle
        # the pickler cannot write from objects, so written by hand.
        evil = (
            b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(Vos\ntRVsystem\ntR"
            b"(Vtouch " + self.marker.encode() + b"\ntR"
        )
        payload = b"(I1\nI0\nVlastTransaction\n(" + evil + b"tt."
        self.attack(payload, "builtins.getattr")

    def test_import(self):
        self.attack(
            self.message("lastTransaction", Call(__import__, "os")),
            "builtins.__import__",
        )

    def test_os_system(self):
        self.attack(
            self.message("lastTransaction", Call(os.system, f"touch {self.marker}")),
            "posix.system",
        )

    def test_subprocess(self):
        self.attack(
            self.message("lastTransaction", Call(subprocess.call, ["touch", self.marker])),
            "subprocess.call",
        )

    def test_method_the_server_does_not_offer(self):
        self.attack(self.message("notify_disconnected"), "method 'notify_disconnected'")

    def test_malformed_message(self):
        self.attack(b"\x80\x03garbage that is no pickle", "undecodable message")

    def test_oversized_frame_is_refused_before_its_body(self):
        sock = self.connect()
        sock.sendall(struct.pack(">I", 0x7FFFFFFF) + b"x" * 1000)
        self.assertTrue(closed_by_server(sock))
        wait_until(
            "the refusal in the server log",
            lambda: "larger than max-frame-size" in self.bundle.log("zeoserver"),
            10,
        )
        self.assertServerStillServes()

    def test_wrong_handshake(self):
        sock = unix_connection(self, self.socket_path)
        read_frame(sock)
        sock.sendall(frame(b"Q5"))
        self.assertTrue(closed_by_server(sock))
        self.assertServerStillServes()

    def run_client(self, script):
        return self.bundle.python(script, MARKER=self.marker, ZEO_ADDRESS=self.socket_path)

    CLIENT = """
import os, transaction, ZEO, ZODB
from BTrees.OOBTree import OOBTree
from persistent.mapping import PersistentMapping
class Call:
    def __init__(self, func, *args):
        self.func, self.args = func, args
    def __reduce__(self):
        return self.func, self.args
storage = ZEO.client(os.environ['ZEO_ADDRESS'], wait_timeout=30)
db = ZODB.DB(storage)
"""

    def test_record_that_runs_code_is_refused_at_vote(self):
        before = self.bundle.last_transaction(ZEO_ADDRESS=self.socket_path)
        out = self.run_client(self.CLIENT + """
conn = db.open()
conn.root()['evil'] = PersistentMapping(x=Call(os.system, 'touch ' + os.environ['MARKER']))
try:
    transaction.commit()
except Exception as exc:
    print(type(exc).__name__, exc)
transaction.abort()
""")
        self.assertIn("RecordRefused", out)
        self.assertIn("references posix.system", out)
        self.assertIn("nothing of this transaction was written", out)
        self.assertEqual(self.bundle.last_transaction(ZEO_ADDRESS=self.socket_path), before)
        self.assertFalse(os.path.exists(self.marker))
        self.assertServerStillServes()

    def test_conflict_on_a_malicious_record_never_unpickles_it(self):
        # Without the guard the server would resolve this conflict by
        # unpickling the new bucket state, running os.system.
        out = self.run_client(self.CLIENT + """
with db.transaction() as conn:
    conn.root()['tree'] = OOBTree()
tm1, tm2 = transaction.TransactionManager(), transaction.TransactionManager()
c1, c2 = db.open(transaction_manager=tm1), db.open(transaction_manager=tm2)
c1.root()['tree']['a'] = 1
c2.root()['tree']['b'] = Call(os.system, 'touch ' + os.environ['MARKER'])
tm1.commit()
try:
    tm2.commit()
except Exception as exc:
    print(type(exc).__name__, exc)
tm2.abort()
with db.transaction() as conn:
    print(sorted(conn.root()['tree'].keys()))
""")
        self.assertIn("RecordRefused", out)
        self.assertIn("['a']", out)
        self.assertFalse(os.path.exists(self.marker))
        self.assertServerStillServes()

    def test_legitimate_client_still_works(self):
        script = """
import os, time, transaction, ZEO, ZODB
from BTrees.Length import Length
from ZODB.blob import Blob
storage = ZEO.client(os.environ['ZEO_ADDRESS'], wait_timeout=30,
                     blob_dir=os.environ['BLOBS'], shared_blob_dir=True)
db = ZODB.DB(storage)
from persistent.mapping import PersistentMapping
with db.transaction() as conn:
    conn.root()['box'] = PersistentMapping()
with db.transaction() as conn:
    conn.root()['length'] = Length(0)
    conn.root()['blob'] = Blob(b'blob data')
with db.transaction() as conn:
    with conn.root()['blob'].open('r') as f:
        assert f.read() == b'blob data'
# Conflict resolution: two connections change one Length.
tm1, tm2 = transaction.TransactionManager(), transaction.TransactionManager()
c1, c2 = db.open(transaction_manager=tm1), db.open(transaction_manager=tm2)
c1.root()['length'].change(1)
c2.root()['length'].change(2)
tm1.commit()
tm2.commit()
c1.close(); c2.close()
with db.transaction() as conn:
    assert conn.root()['length'].value == 3, conn.root()['length'].value
# Undo, found with a filter.
with db.transaction('hardening: undo me') as conn:
    conn.root()['box']['x'] = 1
info = storage.undoInfo(0, 20, {'description': b'hardening: undo me'})
assert info and info[0]['description'] == b'hardening: undo me', info
db.undo(info[0]['id'])
transaction.commit()
with db.transaction() as conn:
    assert 'x' not in conn.root()['box']
db.pack(time.time())
print('ok')
"""
        self.assertEqual(self.run_client(script).strip(), "ok")


class MsgpackServerTests(HardeningTests):
    """The bundle's own server: msgpack only.  The record guard and a
    legitimate client's work (the tests inherited) go through it too."""

    def server_socket(self):
        return os.path.join(self.bundle.var, "zeo.sock")

    def connect(self, handshake=None, prefix=b"M"):
        return super().connect(handshake, prefix)

    def message(self, method, *args):
        import msgpack

        return msgpack.packb((1, 0, method, args), use_bin_type=True)

    def test_a_pickle_handshake_is_refused(self):
        # A pickle client, or an attacker who wants the unpickler.
        announced = read_frame(unix_connection(self, self.socket_path))
        sock = self.connect(handshake=b"Z" + announced[1:])
        try:  # the server may have closed it already
            code = f"open({self.marker!r}, 'w')"
            sock.sendall(frame(pickle.dumps((1, 0, "lastTransaction", (Call(exec, code),)), 3)))
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.assertTrue(closed_by_server(sock), "the server kept the connection")
        self.assertFalse(os.path.exists(self.marker), "the server ran the attack")
        wait_until(
            "the refusal in the server log",
            lambda: f"handshake {b'Z' + announced[1:]!r} not accepted" in self.bundle.log("zeoserver"),
            10,
        )
        self.assertServerStillServes()

    def test_malformed_message(self):
        self.attack(b"\xc1 is no msgpack", "undecodable message")

    def test_the_bundle_s_client_raises_record_refused(self):
        out = self.run_client("""
import os, transaction, ZODB
from persistent.mapping import PersistentMapping
from Products.ZEOClient.client import ClusterClientStorage
from Products.ZEOClient.server.records import RecordRefused
class Call:
    def __init__(self, func, *args):
        self.func, self.args = func, args
    def __reduce__(self):
        return self.func, self.args
storage = ClusterClientStorage(os.environ['ZEO_ADDRESS'], wait_timeout=30)
db = ZODB.DB(storage)
conn = db.open()
conn.root()['evil'] = PersistentMapping(x=Call(os.system, 'touch ' + os.environ['MARKER']))
try:
    transaction.commit()
except RecordRefused as exc:
    print('caught RecordRefused:', exc)
transaction.abort()
print('counted', storage.refused, storage.refusals[-1][1][:40])
db.close()
""")
        self.assertIn("caught RecordRefused: the server refused the record", out)
        self.assertIn("counted 1 the server refused the record", out)
        self.assertFalse(os.path.exists(self.marker))

    def test_instances_write_after_a_refused_record(self):
        self.test_record_that_runs_code_is_refused_at_vote()
        self.assertEqual(self.bundle.add_folder("instance1", "afterevil", "ok").status, 200)

    # Calls cannot be written in msgpack: nothing in it names a global.
    test_exec = test_eval = test_getattr_chain = test_import = None
    test_os_system = test_subprocess = None


class StockServerTests(unittest.TestCase):
    """The same attack against ZEO's stock server runs code: proof that
    the payloads above are real, and the baseline the bundle changes."""

    layer = DaemonClusterLayer

    def test_stock_server_runs_the_exec_message(self):
        import tempfile

        folder = tempfile.mkdtemp(prefix="stockzeo-")
        self.addCleanup(__import__("shutil").rmtree, folder, True)
        path = os.path.join(folder, "zeo.sock")
        marker = os.path.join(folder, "PWNED")
        conf = os.path.join(folder, "zeo.conf")
        with open(conf, "w") as f:
            f.write(
                f"<zeo>\n  address {path}\n</zeo>\n"
                f"<filestorage 1>\n  path {folder}/Data.fs\n</filestorage>\n"
            )
        server = subprocess.Popen(
            [ZOPEPY, "-c", f"from ZEO.runzeo import main; main(['-C', {conf!r}])"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        self.addCleanup(stop_process, server)
        wait_until("the stock server's socket", lambda: os.path.exists(path), 60)
        sock = unix_connection(self, path)
        sock.sendall(frame(read_frame(sock)))
        code = f"open({marker!r}, 'w').write('exec')"
        sock.sendall(frame(pickle.dumps((1, 0, "lastTransaction", (Call(exec, code),)), 3)))
        wait_until("the stock server to run the attack", lambda: os.path.exists(marker), 30)
