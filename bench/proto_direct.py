"""Prototype (issue #17): how much do direct round trips buy?

A quick hack, not the product's code: the calling thread writes the
request through the connection's transport and reads the reply from the
socket itself, feeding what it reads to ZEO's own protocol object, while
ZEO's I/O thread (an asyncio selector loop whose epoll wait releases a
lock) does not read that socket.  No TLS, no fallbacks, no second thread.

    bin/zopepy bench/proto_direct.py [rounds]
"""

import asyncio
import os
import select
import selectors
import socket
import statistics
import sys
import tempfile
import threading
import time

import transaction
import ZODB
from persistent.mapping import PersistentMapping
from ZEO._forker import start_zeo_server, stop_runner  # noqa: F401
from ZEO.asyncio import client as zeo_client
from ZEO.asyncio.futures import AsyncTask
from ZODB.FileStorage import FileStorage
from ZODB.utils import maxtid

from Products.ZEOClient import client as product_client


class LockedEpoll:
    def __init__(self, epoll, lock):
        self._epoll, self._lock = epoll, lock

    def poll(self, *args):
        self._lock.release()
        try:
            return self._epoll.poll(*args)
        finally:
            self._lock.acquire()

    def __getattr__(self, name):
        return getattr(self._epoll, name)


class ProtoThread(product_client._ClientThread):
    def __init__(self, *args, **kw):
        self.loop_lock = threading.Lock()
        selector = selectors.EpollSelector()
        selector._selector = LockedEpoll(selector._selector, self.loop_lock)
        self.loop = asyncio.SelectorEventLoop(selector)
        super().__init__(*args, **kw)

    def run_io_thread(self):
        self.loop_lock.acquire()
        try:
            super().run_io_thread()
        finally:
            self.loop_lock.release()


def direct(server, make_coro):
    io = server.client
    lock = server.loop_lock
    with lock:
        protocol = io.protocol
        transport = protocol.sm_protocol.transport
        transport.pause_reading()
        corked = getattr(server, "corked", None)
        if corked:
            protocol.write_message_iter(corked)
            del corked[:]
        task = AsyncTask(make_coro(io), server.loop)
    fd = os.dup(transport.get_extra_info("socket").fileno())
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while not task.done():
            poller.poll(1000)
            data = os.read(fd, 1 << 18)
            with lock:
                protocol.data_received(data)
    finally:
        os.close(fd)
        with lock:
            transport.resume_reading()
    return task.result()


CORK = os.environ.get('CORK') == '1'


def make_direct(storage):
    server = storage._server

    def call(method, *args, **kw):
        return direct(server, lambda io: io.call_sync_co(method, args, 30))

    def async_(method, *args):
        with server.loop_lock:
            if CORK:
                server.corked.append(server.client.protocol.encode(0, True, method, args))
            else:
                server.client.protocol.call_async(method, args)

    server.corked = []

    def load_before(oid, tid):
        return direct(server, lambda io: io.load_before_co(oid, tid, 30))

    def tpc_finish(tid, updates, f):
        return direct(server, lambda io: io.tpc_finish_co(tid, updates, f))

    storage._call = call
    storage._async = async_
    server.load_before = load_before
    server.tpc_finish = tpc_finish


def open_client(address, proto):
    kw = {}
    if proto:
        kw["_client_factory"] = ProtoThread
    storage = product_client.ClusterClientStorage.__new__(product_client.ClusterClientStorage)
    # ClusterClientStorage passes its own _client_factory: swap the class.
    saved = product_client._ClientThread
    if proto:
        product_client._ClientThread = ProtoThread
    try:
        storage.__init__(address, startup_wait=30, wait_timeout=30,
                         cache_size=64 << 20, read_timeout=0)
    finally:
        product_client._ClientThread = saved
    if proto:
        make_direct(storage)
    return storage


class Target:
    def __init__(self, name, storage):
        self.name, self.storage = name, storage
        self.db = ZODB.DB(storage)
        self.conn = self.db.open()
        root = self.conn.root()
        root[name] = PersistentMapping(v=0)
        transaction.commit()
        self.obj = root[name]

    def commit(self):
        self.obj["v"] += 1
        began = time.perf_counter()
        transaction.commit()
        return time.perf_counter() - began

    def load(self):
        oid = self.obj._p_oid
        if isinstance(self.storage, FileStorage):
            began = time.perf_counter()
            self.storage.load(oid)
        else:
            self.storage._cache.invalidate(oid, None)  # a real miss
            began = time.perf_counter()
            self.storage._server.load_before(oid, maxtid)
        return time.perf_counter() - began


def ctxsw(pid=None):
    total = 0
    base = f"/proc/{pid or os.getpid()}/task"
    for task in os.listdir(base):
        with open(f"{base}/{task}/status") as f:
            for line in f:
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
    return total


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    folder = tempfile.mkdtemp(prefix="proto-direct-")
    sock = os.path.join(folder, "zeo.sock")
    addr, stop = start_zeo_server(
        path=os.path.join(folder, "zeo.fs"), port=sock, zeo_conf={"msgpack": True},
    )
    from ZEO._forker import runner  # noqa: F401
    targets = [
        Target("filestorage", FileStorage(os.path.join(folder, "fs.fs"))),
        Target("zeo", open_client(sock, False)),
        Target("direct", open_client(sock, True)),
    ]
    commits = {t.name: [] for t in targets}
    loads = {t.name: [] for t in targets}
    switches = {}
    for _ in range(rounds):
        for t in targets:
            commits[t.name].append(statistics.median(t.commit() for _ in range(20)))
            loads[t.name].append(statistics.median(t.load() for _ in range(200)))
    for t in targets[1:]:
        before = ctxsw()
        for _ in range(200):
            t.commit()
        mid = ctxsw()
        for _ in range(200):
            t.load()
        after = ctxsw()
        switches[t.name] = ((mid - before) / 200, (after - mid) / 200)
    fs_c = statistics.median(commits["filestorage"])
    fs_l = statistics.median(loads["filestorage"])
    for t in targets:
        c = statistics.median(commits[t.name])
        lo = statistics.median(loads[t.name])
        extra = ""
        if t.name in switches:
            extra = "  client ctx switches: %.1f/commit %.1f/load" % switches[t.name]
        print(f"{t.name:12} commit {c * 1000:6.3f} ms x{c / fs_c:4.2f}   "
              f"load {lo * 1e6:7.1f} us x{lo / fs_l:4.2f}{extra}")
    for t in targets:
        t.conn.close()
        t.db.close()
    stop()


if __name__ == "__main__":
    main()


def cpu_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def breakdown(n=3000):
    """Where a direct cache miss spends its time: the calling thread's
    CPU, the whole client's CPU, the server's CPU."""
    import multiprocessing
    folder = tempfile.mkdtemp(prefix="proto-direct-")
    sock = os.path.join(folder, "zeo.sock")
    addr, stop = start_zeo_server(
        path=os.path.join(folder, "zeo.fs"), port=sock, zeo_conf={"msgpack": True},
    )
    server_pid = [c.pid for c in multiprocessing.active_children()]
    for proto in (False, True):
        t = Target("direct" if proto else "zeo", open_client(sock, proto))
        for what in ("load", "commit"):
            run = getattr(t, what)
            for _ in range(50):
                run()
            s0 = sum(cpu_of(p) for p in server_pid)
            c0 = time.process_time()
            w0 = time.perf_counter()
            th = 0.0
            for _ in range(n if what == "load" else n // 5):
                a = time.thread_time()
                run()
                th += time.thread_time() - a
            k = n if what == "load" else n // 5
            wall = (time.perf_counter() - w0) / k
            proc = (time.process_time() - c0) / k
            srv = (sum(cpu_of(p) for p in server_pid) - s0) / k
            print(f"{t.name:7} {what:6} wall {wall*1e6:7.1f} us  calling thread {th/k*1e6:7.1f} us"
                  f"  client process {proc*1e6:7.1f} us  server {srv*1e6:7.1f} us")
        t.conn.close()
        t.db.close()
    stop()
