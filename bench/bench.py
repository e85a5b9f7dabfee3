"""``make bench``: the bundle's ZEO against FileStorage, side by side.

Everything compared is measured in the same run, interleaved in rounds
(each round measures every target once, so drift on a noisy machine hits
all alike); medians and the 10-90 % spread of the per-round medians are
reported.  The ZEO servers are the bundle's own (built by the test
harness from this checkout's buildout.cfg into temporary folders:
hardened protocol and stored-records guard on), over a unix socket and
over TCP on 127.0.0.1.

Prints a table and writes var/bench/results.json.  ``--quick`` runs a
few rounds only (the test suite uses it to keep this from rotting; it
asserts the invariants, never the timings).
"""

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(HERE)
sys.path.insert(0, CHECKOUT)

import transaction  # noqa: E402
import ZEO  # noqa: E402
import ZEO.asyncio.client  # noqa: E402
import ZEO.asyncio.futures  # noqa: E402
import ZODB  # noqa: E402
from BTrees.Length import Length  # noqa: E402
from persistent.mapping import PersistentMapping  # noqa: E402
from ZODB.FileStorage import FileStorage  # noqa: E402
from ZODB.POSException import ConflictError  # noqa: E402
from ZODB.utils import maxtid  # noqa: E402

from Products.ZEOClient import retry  # noqa: E402
from Products.ZEOClient import tuning  # noqa: E402
from Products.ZEOClient.client import ClusterClientStorage  # noqa: E402
from Products.ZEOClient.prefetch import prefetch  # noqa: E402
from tests.harness import Bundle  # noqa: E402
from tests.harness import pids_under  # noqa: E402
from tests.harness import wait_until  # noqa: E402


def spread(values):
    values = sorted(values)
    if not values:
        return None
    k = len(values) - 1
    return {
        "median": statistics.median(values),
        "p10": values[int(k * 0.1)],
        "p90": values[int(k * 0.9)],
        "n": len(values),
    }


class Target:
    """A database to commit to and load from.

    *prepare* runs before each of its rounds (it sets the process-wide
    ZEO tuning this target is measured with); *sizes* limits the commit
    sizes it is measured at.
    """

    def __init__(self, name, storage, prepare=None, sizes=None):
        self.name = name
        self.storage = storage
        self.prepare = prepare or (lambda: None)
        self.sizes = sizes
        self.db = ZODB.DB(storage, cache_size=100000)
        self.conn = self.db.open()
        root = self.conn.root()
        root["bench"] = PersistentMapping(
            (i, PersistentMapping(v=0)) for i in range(100)
        )
        transaction.commit()
        self.objects = [root["bench"][i] for i in range(100)]

    def commit(self, count):
        """Seconds for one transaction changing *count* objects."""
        for obj in self.objects[:count]:
            obj["v"] += 1
        began = time.perf_counter()
        transaction.commit()
        return time.perf_counter() - began

    def close(self):
        self.conn.close()
        self.db.close()


def client(address, direct_calls=False):
    """The bundle's client storage (uvloop and tuning.py installed; with
    *direct_calls*, round trips made by the calling thread: direct.py)."""
    return ClusterClientStorage(
        address, startup_wait=30, wait_timeout=30, cache_size=64 * 1024 * 1024,
        direct_calls=direct_calls,
    )


def stock_client(address, loop):
    """ZEO's own ClientStorage on the given event loop ('asyncio' or
    'uvloop'); ``prepare`` decides the rest of the tuning per round."""
    saved = ZEO.asyncio.client.new_event_loop
    if loop == "asyncio":
        ZEO.asyncio.client.new_event_loop = asyncio.new_event_loop
    try:
        return ZEO.client(address, wait_timeout=30, cache_size=64 * 1024 * 1024)
    finally:
        ZEO.asyncio.client.new_event_loop = saved


def untuned():
    tuning.uninstall()


def buffers_only():
    tuning.install()
    ZEO.asyncio.futures.switch_thread = tuning._original_switch_thread


def untuned_server(bundle, name):
    """A server of *bundle* with ``tuning off`` (asyncio's loop, a
    temporary file per commit) and pickle, as ZEO ships; its socket."""
    return bundle.spawn_server(
        name, ("<hardened 1>", "<hardened 1>\n  tuning off"), ("msgpack true", "msgpack false")
    )


def commit_latency(targets, rounds, per_round, sizes):
    samples = {(t.name, n): [] for t in targets for n in t.sizes or sizes}
    for _ in range(rounds):
        for n in sizes:
            for target in targets:
                if (target.name, n) not in samples:
                    continue
                target.prepare()
                times = [target.commit(n) for _ in range(per_round)]
                samples[(target.name, n)].append(statistics.median(times))
    tuning.install()
    result = {}
    for n in sizes:
        fs = spread(samples[("filestorage", n)])
        for target in targets:
            if (target.name, n) not in samples:
                continue
            s = spread(samples[(target.name, n)])
            s["ms"] = s["median"] * 1000
            s["ratio_to_filestorage"] = s["median"] / fs["median"]
            result[f"{target.name} {n} objects"] = s
    return result


def cold(target):
    """A load the client cache cannot answer: one round trip to the server
    (the record is dropped from the cache first, outside the timing)."""
    storage = target.storage
    oid = target.objects[0]._p_oid

    def load():
        storage._cache.invalidate(oid, None)
        began = time.perf_counter()
        storage.load(oid)
        return time.perf_counter() - began

    return load


def relstorage(dsn, **options):
    """RelStorage on PostgreSQL (psycopg2), history-preserving, as its
    documentation sets it up; *options* are RelStorage's (``cache_local_mb
    =0``: no local cache, every load a query)."""
    from relstorage.adapters.postgresql import PostgreSQLAdapter
    from relstorage.options import Options
    from relstorage.storage import RelStorage

    options = Options(keep_history=True, **options)
    return RelStorage(PostgreSQLAdapter(dsn=dsn, options=options), options=options)


def cold_reads(targets, readers, rounds, count):
    """Seconds to load *count* objects one after the other, none of them
    cached: ZEO's client cache is emptied of them first (outside the
    timing); RelStorage's reader has no local cache (``readers`` maps a
    target's name to the storage that reads, default its own)."""
    samples = {t.name: [] for t in targets}
    for _ in range(rounds):
        for target in targets:
            storage = readers.get(target.name, target.storage)
            oids = [obj._p_oid for obj in target.objects[:count]]
            cache = getattr(storage, "_cache", None)
            if hasattr(cache, "invalidate") and hasattr(storage, "_server"):
                for oid in oids:
                    cache.invalidate(oid, None)
            began = time.perf_counter()
            for oid in oids:
                storage.load(oid)
            samples[target.name].append(time.perf_counter() - began)
    base = statistics.median(samples["filestorage"])
    result = {}
    for name, values in samples.items():
        s = spread(values)
        s["us"] = s["median"] * 1e6
        s["ratio_to_filestorage"] = s["median"] / base
        result[f"{name} {count} objects"] = s
    return result


def start_postgres():
    """A temporary PostgreSQL (tests/postgres.py), or None after one line
    saying why not."""
    from tests.postgres import TemporaryPostgres
    from tests.postgres import Unavailable

    try:
        return TemporaryPostgres().start()
    except Unavailable as exc:
        print(f"bench: {exc}")
        return None


def timed(function):
    def load():
        began = time.perf_counter()
        function()
        return time.perf_counter() - began

    return load


def load_latency(fs_target, zeo_target, rounds, per_round, direct_target=None,
                 rs_target=None, rs_reader=None):
    oid = zeo_target.objects[0]._p_oid
    fs_oid = fs_target.objects[0]._p_oid
    zeo_target.storage.load(oid)  # now in the client cache
    kinds = {
        "filestorage load": timed(lambda: fs_target.storage.load(fs_oid)),
        "zeo cache hit": timed(lambda: zeo_target.storage.load(oid)),
        # What ClientStorage does after its own cache lookup failed,
        # answered by the cache in the I/O thread: the thread hand-off.
        "zeo I/O thread hand-off": timed(
            lambda: zeo_target.storage._server.load_before(oid, maxtid)),
        # A real miss: one round trip to the server.
        "zeo cold load": cold(zeo_target),
    }
    if direct_target is not None:
        kinds["zeo cold load, direct"] = cold(direct_target)
    if rs_reader is not None:
        rs_oid = rs_target.objects[0]._p_oid
        kinds["relstorage cold load"] = timed(lambda: rs_reader.load(rs_oid))
    samples = {k: [] for k in kinds}
    for _ in range(rounds):
        for name, load in kinds.items():
            total = 0.0
            for _ in range(per_round):
                total += load()
            samples[name].append(total / per_round)
    base = statistics.median(samples["filestorage load"])
    result = {}
    for name, values in samples.items():
        s = spread(values)
        s["us"] = s["median"] * 1e6
        s["ratio_to_filestorage"] = s["median"] / base
        result[name] = s
    return result


def context_switches(pids):
    """Voluntary context switches (a thread went to sleep: each is one
    wake-up later) of every thread of *pids*."""
    total = 0
    for pid in pids:
        base = f"/proc/{pid}/task"
        try:
            tasks = os.listdir(base)
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"{base}/{task}/status") as f:
                    for line in f:
                        if line.startswith("voluntary_ctxt_switches"):
                            total += int(line.split()[1])
            except OSError:
                continue
    return total


def cpu_seconds(pids):
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def round_trip_costs(targets, server_pids, n):
    """Per 1-object commit and per cold load, for each target: client CPU
    (this process), server CPU, and wake-ups (voluntary context switches)
    of the client's and the server's threads."""
    me = [os.getpid()]
    result = {}
    for target in targets:
        for what, run, count in (
            ("commit", lambda: target.commit(1), n // 4),
            ("cold load", cold(target), n),
        ):
            for _ in range(20):
                run()
            c0, s0 = time.process_time(), cpu_seconds(server_pids)
            w0, ws0 = context_switches(me), context_switches(server_pids)
            began = time.perf_counter()
            for _ in range(count):
                run()
            wall = time.perf_counter() - began
            result[f"{target.name} {what}"] = {
                "us": wall / count * 1e6,
                "client_cpu_us": (time.process_time() - c0) / count * 1e6,
                "server_cpu_us": (cpu_seconds(server_pids) - s0) / count * 1e6,
                "client_wakeups": (context_switches(me) - w0) / count,
                "server_wakeups": (context_switches(server_pids) - ws0) / count,
            }
    return result


def guard_cost(target, repeat):
    from Products.ZEOClient.server import records

    policy = records.Policy()
    datas = [target.storage.load(obj._p_oid)[0] for obj in target.objects[:20]]
    datas.append(target.storage.load(target.conn.root()["bench"]._p_oid)[0])
    began = time.perf_counter()
    for _ in range(repeat):
        for data in datas:
            records.scan(data, policy)
    per_record = (time.perf_counter() - began) / (repeat * len(datas))
    return {"us_per_record": per_record * 1e6, "records": len(datas),
            "bytes": [len(d) for d in datas[:1] + datas[-1:]]}


def host_wakeups(n):
    """What waking a sleeping thread costs on this machine, which a ZEO
    commit does about 8 times and a FileStorage commit never: the median
    round trip of one byte between two processes over a unix socket
    pair, and of a threading.Event hand-off between two threads (each
    round trip is two wake-ups)."""
    a, b = socket.socketpair()
    child = os.fork()
    if child == 0:  # pragma: no cover - the echoing child
        a.close()
        for _ in range(n):
            b.recv(1)
            b.send(b"x")
        os._exit(0)
    b.close()
    times = []
    try:
        for _ in range(n):
            began = time.perf_counter()
            a.send(b"x")
            a.recv(1)
            times.append(time.perf_counter() - began)
    finally:
        a.close()
        os.waitpid(child, 0)
    processes = statistics.median(times)

    ping, pong = threading.Event(), threading.Event()

    def echo():
        for _ in range(n):
            ping.wait(10)
            ping.clear()
            pong.set()

    thread = threading.Thread(target=echo)
    thread.start()
    times = []
    for _ in range(n):
        began = time.perf_counter()
        ping.set()
        pong.wait(10)
        pong.clear()
        times.append(time.perf_counter() - began)
    thread.join(30)
    return {"process_round_trip_us": processes * 1e6,
            "thread_round_trip_us": statistics.median(times) * 1e6}


PAGE_ITEMS = 20


def slow_links(address, rounds, latencies=(0.0, 0.02, 0.1)):
    """A 1-object commit and a cold "page view" over links with added
    latency (tests/netproxy.py on 127.0.0.1, each way).

    The page view is what a folder listing does at the ZODB level: the
    folder, then each of its PAGE_ITEMS items, from a cold client cache;
    its round trips are the server loads it waits for one after the
    other.  With ``Products.ZEOClient.prefetch`` (ZEO's prefetch) the
    items' loads go out together once the folder is loaded: one round
    trip for all of them.
    """
    from tests.netproxy import NetProxy

    rows = []
    for latency in latencies:
        link = NetProxy(address, latency=latency)
        storage = client(("127.0.0.1", link.port))
        db = ZODB.DB(storage)
        try:
            conn = db.open()
            root = conn.root()
            root["page"] = PersistentMapping(
                (i, PersistentMapping(title=f"item {i}")) for i in range(PAGE_ITEMS)
            )
            transaction.commit()
            commits, views, prefetched, trips = [], [], [], []
            for _ in range(rounds):
                root["page"][0]["title"] = str(random.random())
                began = time.perf_counter()
                transaction.commit()
                commits.append(time.perf_counter() - began)
                for use_prefetch, times in ((False, views), (True, prefetched)):
                    storage._cache.clear()
                    conn.cacheMinimize()
                    misses = storage.misses
                    began = time.perf_counter()
                    page = conn.root()["page"]
                    items = list(page.values())  # ghosts: no load yet
                    if use_prefetch:
                        prefetch(items)
                    titles = [item["title"] for item in items]
                    times.append(time.perf_counter() - began)
                    assert len(titles) == PAGE_ITEMS
                    if not use_prefetch:
                        trips.append(storage.misses - misses)
            rows.append({
                "latency_ms": latency * 1000,
                "commit_ms": statistics.median(commits) * 1000,
                "page_view_ms": statistics.median(views) * 1000,
                "page_view_prefetch_ms": statistics.median(prefetched) * 1000,
                "page_view_round_trips": statistics.median(trips),
            })
        finally:
            db.close()
            link.close()
    return rows


def cache_flush_cost(address, records=100):
    """What the instances' periodic cache flush (client.py, every 2 s)
    costs: one flush after *records* fresh records, and an idle one."""
    storage = client(address)
    db = ZODB.DB(storage)
    try:
        conn = db.open()
        conn.root()["flush"] = PersistentMapping(
            (i, PersistentMapping(v=i)) for i in range(records))
        transaction.commit()
        cache = storage._cache
        cache.clear()
        conn.cacheMinimize()
        [item["v"] for item in conn.root()["flush"].values()]
        began = time.perf_counter()
        with cache._lock:
            cache.f.flush()
        busy = time.perf_counter() - began
        began = time.perf_counter()
        with cache._lock:
            cache.f.flush()
        idle = time.perf_counter() - began
        return {"records": records, "flush_us": busy * 1e6, "idle_flush_us": idle * 1e6}
    finally:
        db.close()


def writer(address, key, seconds, shared, results, think=0.0, direct_calls=False):
    """One writer process: increment its own box or the shared counter for
    *seconds*, through ``retry.run`` (backoff with jitter), pausing a
    random 0..2*think seconds between transactions."""
    storage = client(address, direct_calls=direct_calls)
    db = ZODB.DB(storage)
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    tries = []

    def increment():
        tries.append(1)
        box = conn.root()["shared" if shared else key]
        if isinstance(box, Length):
            box.change(1)
        else:
            box["v"] += 1

    commits = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            retry.run(increment, tm, attempts=100, deadline=deadline + 5)
            commits += 1
        except ConflictError:
            pass
        if think:
            time.sleep(random.uniform(0, 2 * think))
    conn.close()
    db.close()
    results.put((key, commits, len(tries) - commits))


def writers(address, k, seconds, shared=None, think=0.0, direct_calls=False):
    """K writer processes on distinct objects (*shared* None) or on one
    counter: a PersistentMapping (*shared* "mapping": every concurrent
    update conflicts) or a BTrees.Length ("length": the server resolves
    the conflicts)."""
    storage = client(address)
    db = ZODB.DB(storage)
    with db.transaction() as conn:
        root = conn.root()
        for i in range(k):
            root[f"w{i}"] = PersistentMapping(v=0)
        root["shared"] = Length() if shared == "length" else PersistentMapping(v=0)
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=writer,
            args=(address, f"w{i}", seconds, shared, results, think, direct_calls)
        )
        for i in range(k)
    ]
    began = time.monotonic()
    for p in procs:
        p.start()
    rows = [results.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join(30)
    elapsed = time.monotonic() - began
    total = sum(r[1] for r in rows)
    storage.sync() if hasattr(storage, "sync") else None
    with db.transaction() as conn:
        if shared == "length":
            value = conn.root()["shared"]()
        elif shared:
            value = conn.root()["shared"]["v"]
        else:
            value = sum(conn.root()[f"w{i}"]["v"] for i in range(k))
    db.close()
    return {
        "writers": k,
        "counter": shared or "distinct",
        "direct_calls": direct_calls,
        "think_ms": think * 1000,
        "tx_per_s": total / seconds,
        "commits": total,
        "conflicts": sum(r[2] for r in rows),
        "commits_per_writer": sorted(r[1] for r in rows),
        "min_commits_per_writer_per_s": min(r[1] for r in rows) / seconds,
        "lost_updates": total - value,
        "elapsed_s": elapsed,
    }


async def http_load(urls, seconds, concurrency, auth):
    latencies = []
    errors = 0
    deadline = time.monotonic() + seconds

    async def worker(url):
        nonlocal errors
        host, port = url.split("//")[1].split("/")[0].split(":")
        reader, writer_ = await asyncio.open_connection(host, int(port))
        request = (
            f"GET /bench_page HTTP/1.1\r\nHost: {host}\r\nAuthorization: Basic {auth}\r\n\r\n"
        ).encode()
        while time.monotonic() < deadline:
            began = time.perf_counter()
            writer_.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(
                [h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")][0]
                .split(b":")[1]
            )
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - began)
            if not head.startswith(b"HTTP/1.1 200"):
                errors += 1
        writer_.close()

    await asyncio.gather(*(worker(urls[i % len(urls)]) for i in range(concurrency)))
    latencies.sort()
    return {
        "requests_per_s": len(latencies) / seconds,
        "requests": len(latencies),
        "errors": errors,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
    }


def http_client(urls, seconds, concurrency, auth, results):
    results.put(asyncio.run(http_load(urls, seconds, concurrency, auth)))


def http_bench(bundle, seconds, concurrency, labels=("one instance", "both instances")):
    import base64

    bundle.start()
    response = bundle.http(
        "instance1", "POST", "/manage_addProduct/PageTemplates/manage_addPageTemplate",
        data={"id": "bench_page", "title": "bench", "text": "<p tal:content='template/title'>x</p>"},
    )
    assert response.status in (200, 302), response.status
    wait_until(
        "the page on instance2",
        lambda: bundle.http("instance2", "GET", "/bench_page").status == 200,
        30,
    )
    auth = base64.b64encode(f"admin:{bundle.password}".encode()).decode()
    ctx = multiprocessing.get_context("spawn")
    result = {}
    for label, names in (("one instance", ["instance1"]), ("both instances", ["instance1", "instance2"])):
        if label not in labels:
            continue
        queue = ctx.Queue()
        urls = [bundle.url(n) for n in names]
        proc = ctx.Process(target=http_client, args=(urls, seconds, concurrency, auth, queue))
        proc.start()
        result[label] = queue.get(timeout=seconds + 60)
        proc.join(30)
    return result


COUNTER_SCRIPT = """\
n = context.getProperty('count') + 1
context.manage_changeProperties(count=n)
return n
"""


async def http_increments(urls, seconds, auth):
    """One writer per URL: POST /counter/increment in a loop (keep-alive);
    returns [(commits, {other status: count})] per writer."""
    deadline = time.monotonic() + seconds

    async def worker(url):
        host, port = url.split("//")[1].split("/")[0].split(":")
        request = (
            f"POST /counter/increment HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Basic {auth}\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        commits, other = 0, {}
        writer_ = None
        while time.monotonic() < deadline:
            if writer_ is None:
                reader, writer_ = await asyncio.open_connection(host, int(port))
            writer_.write(request)
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                other["closed"] = other.get("closed", 0) + 1
                writer_.close()
                writer_ = None
                continue
            headers = [h.lower() for h in head.split(b"\r\n")]
            length = int(
                [h for h in headers if h.startswith(b"content-length")][0].split(b":")[1]
            )
            await reader.readexactly(length)
            status = int(head.split()[1])
            if status == 200:
                commits += 1
            else:
                other[status] = other.get(status, 0) + 1
            if b"connection: close" in headers:
                writer_.close()
                writer_ = None
        if writer_ is not None:
            writer_.close()
        return commits, other

    return await asyncio.gather(*(worker(u) for u in urls))


def http_increments_client(urls, seconds, auth, results):
    results.put(asyncio.run(http_increments(urls, seconds, auth)))


def http_shared_counter(bundle, k, seconds):
    """K HTTP writers (half on each instance) incrementing one folder
    property through a Python Script; Zope's own retry (with its
    backoff) handles the conflicts."""
    import base64

    for path, data in (
        ("/manage_addProduct/OFSP/manage_addFolder", {"id": "counter"}),
        ("/counter/manage_addProperty", {"id": "count", "type": "int", "value": "0"}),
        ("/counter/manage_addProduct/PythonScripts/manage_addPythonScript",
         {"id": "increment", "file": COUNTER_SCRIPT}),
    ):
        response = bundle.http("instance1", "POST", path, data=data, follow_redirects=False)
        assert response.status in (200, 302), (path, response.status, response.text[:300])
    wait_until(
        "the counter on instance2",
        lambda: bundle.http("instance2", "GET", "/counter/increment/manage_main").status == 200,
        30,
    )
    auth = base64.b64encode(f"admin:{bundle.password}".encode()).decode()
    urls = [bundle.url(("instance1", "instance2")[i % 2]) for i in range(k)]
    queue = multiprocessing.get_context("spawn").Queue()
    proc = multiprocessing.get_context("spawn").Process(
        target=http_increments_client, args=(urls, seconds, auth, queue)
    )
    proc.start()
    rows = queue.get(timeout=seconds + 120)
    proc.join(30)
    value = int(bundle.http("instance1", "GET", "/counter/getProperty?id=count").text)
    total = sum(c for c, _ in rows)
    other = {}
    for _, o in rows:
        for status, n in o.items():
            other[str(status)] = other.get(str(status), 0) + n
    return {
        "writers": k,
        "counter": "http",
        "tx_per_s": total / seconds,
        "commits": total,
        "other_statuses": other,
        "commits_per_writer": sorted(c for c, _ in rows),
        "min_commits_per_writer_per_s": min(c for c, _ in rows) / seconds,
        "lost_updates": total - value,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few rounds only")
    parser.add_argument("--output", default=os.path.join(CHECKOUT, "var", "bench", "results.json"))
    args = parser.parse_args(argv)
    quick = args.quick
    rounds, per_round = (3, 5) if quick else (15, 20)
    writer_seconds = 1.0 if quick else 5.0
    http_seconds = 2.0 if quick else 10.0
    ks = (1, 2) if quick else (1, 2, 4, 8)

    unix = Bundle().build()
    tcp = Bundle()
    pickled = Bundle().build(**{"zeo:msgpack": "false"})
    stock = Bundle().build()
    bundles = [unix, tcp, pickled, stock]
    results = {"quick": quick, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    folder = tempfile.mkdtemp(prefix="bench-fs-")
    targets = []
    readers = {}
    pg = start_postgres()
    try:
        unix.start_server()
        pickled.start_server()
        tcp.build(**{"zeo:address": "127.0.0.1:0"})
        tcp.start_server()
        port = wait_until("the TCP server's port", tcp.server_port, 60)
        unix_address = os.path.join(unix.var, "zeo.sock")
        tcp_address = ("127.0.0.1", port)

        fs = Target("filestorage", FileStorage(os.path.join(folder, "Data.fs")))
        zeo_unix = Target("zeo unix", client(unix_address))
        zeo_tcp = Target("zeo tcp", client(tcp_address))
        zeo_direct = Target("zeo unix direct", client(unix_address, direct_calls=True),
                            sizes=(1, 10, 100))
        pickled_address = os.path.join(pickled.var, "zeo.sock")
        zeo_pickle = Target("zeo unix pickle", client(pickled_address))
        # What the bundle's defaults buy, step by step (STEPS): ZEO as
        # shipped (asyncio, pickle, a temporary file per transaction on
        # both ends, ZEO's hand-off), then uvloop in the client, then
        # uvloop in the server and in-memory buffers, then the hand-off
        # ("zeo unix pickle"), then msgpack ("zeo unix", the bundle).
        untuned_address = untuned_server(stock, "untuned")
        steps = [
            Target("zeo unix untuned", stock_client(untuned_address, "asyncio"), untuned, (1,)),
            Target("zeo unix +uvloop client", stock_client(untuned_address, "uvloop"),
                   untuned, (1,)),
            Target("zeo unix +uvloop +buffers", stock_client(pickled_address, "uvloop"),
                   buffers_only, (1,)),
        ]
        peers = []
        if pg is not None:
            # RelStorage as its documentation sets it up (fsync on), and
            # with PostgreSQL's synchronous_commit off: FileStorage's and
            # ZEO's fsync at commit is the only one then.
            rs = Target("relstorage", relstorage(pg.create_database("bench")))
            rs_async = Target(
                "relstorage sync-commit-off",
                relstorage(pg.create_database("bench_async", synchronous_commit="off")),
                sizes=(1,))
            peers = [rs, rs_async]
            readers["relstorage"] = relstorage(pg.dsn("bench"), cache_local_mb=0)
        targets = [fs, zeo_unix, zeo_direct, zeo_tcp, zeo_pickle, *steps, *peers]
        results["commit"] = commit_latency(targets, rounds, per_round, (1, 10, 100))
        results["load"] = load_latency(
            fs, zeo_unix, rounds, per_round * 50, zeo_direct,
            peers[0] if peers else None, readers.get("relstorage"))
        readers_for = [fs, zeo_unix, zeo_direct, *peers[:1]]
        results["cold_reads"] = {
            **cold_reads(readers_for, readers, rounds * 4, 1),
            **cold_reads(readers_for, readers, rounds, 100),
        }
        results["peers"] = "relstorage" if peers else "PostgreSQL not installed"
        results["round_trips"] = round_trip_costs(
            [zeo_unix, zeo_direct], pids_under(unix.directory), 400 if quick else 4000)
        results["guard"] = guard_cost(zeo_unix, 20 if quick else 200)
        results["host"] = host_wakeups(300 if quick else 3000)
        results["slow_links"] = slow_links(
            tcp_address, 2 if quick else 10, (0.0, 0.02) if quick else (0.0, 0.02, 0.1))
        results["cache_flush"] = cache_flush_cost(unix_address)
        for target in targets:
            target.close()
        targets = []
        for reader in readers.values():
            reader.close()
        readers = {}
        results["writers_distinct"] = [
            writers(unix_address, k, writer_seconds) for k in ks
        ]
        # Fairness on one counter, 8 writers: a tight loop (the worst
        # case), a writer pausing like a request would (5 ms on average),
        # and a counter that resolves its own conflicts.
        results["writers_shared_counter"] = [
            writers(unix_address, k, writer_seconds, "mapping") for k in ks if k < 8
        ] + [
            writers(unix_address, 8, writer_seconds, "mapping"),
            writers(unix_address, 8, writer_seconds, "mapping", think=0.005),
            writers(unix_address, 8, writer_seconds, "length"),
        ]
        # Direct calls on and off with many writers, and under HTTP load
        # with 4 threads in each of 2 instances (two more bundles,
        # measured one after the other).
        results["writers_direct"] = [
            writers(unix_address, k, writer_seconds, direct_calls=direct)
            for k in ks[-2:] for direct in (False, True)
        ]
        results["http_direct"] = {}
        for direct in ("off", "on"):
            threaded = Bundle().build(**{"zeo:direct-calls": direct, "instance-base:threads": "4"})
            bundles.append(threaded)
            threaded.start_server()
            threaded.run_script("zeoinit")
            row = http_bench(threaded, http_seconds, 16, ("both instances",))
            results["http_direct"][direct] = row["both instances"]
            threaded.cleanup()
        unix.run_script("zeoinit")
        results["http"] = http_bench(unix, http_seconds, 8)
        results["writers_shared_counter"].append(
            http_shared_counter(unix, 8, writer_seconds)
        )
    finally:
        for target in targets:
            target.close()
        for reader in readers.values():
            reader.close()
        if pg is not None:
            pg.stop()
        for bundle in bundles:
            bundle.cleanup()
        shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(results, f, indent=2)
    report(results)
    print(f"\nwritten to {args.output}")
    return 0


#: The rows of the step-by-step table: (target, what it adds).
STEPS = (
    ("zeo unix untuned", "ZEO as shipped (asyncio, pickle)"),
    ("zeo unix +uvloop client", "+ uvloop in the client"),
    ("zeo unix +uvloop +buffers", "+ uvloop in the server, in-memory buffers"),
    ("zeo unix pickle", "+ hand-off without a timer"),
    ("zeo unix", "+ msgpack = the bundle"),
)


def report_peers(r):
    print("\nPeers: RelStorage 4 on PostgreSQL (psycopg2, unix socket, same machine)")
    if r.get("peers") != "relstorage":
        print(f"  skipped: {r.get('peers')}")
        return
    for n in (1, 10, 100):
        for name in ("filestorage", "zeo unix", "zeo unix direct", "relstorage",
                     "relstorage sync-commit-off"):
            s = r["commit"].get(f"{name} {n} objects")
            if s:
                print(f"  {n:3}-object commit, {name:28} {s['ms']:7.3f} ms"
                      f"  x{s['ratio_to_filestorage']:.2f} FileStorage")
    for n in (1, 100):
        rows = {name: r["cold_reads"][f"{name} {n} objects"]
                for name in ("filestorage", "zeo unix", "zeo unix direct", "relstorage")}
        for name, s in rows.items():
            print(f"  cold read of {n:3} objects, {name:19} {s['us']:9.1f} us"
                  f"  x{s['ratio_to_filestorage']:.2f} FileStorage")
        ratio = rows["zeo unix direct"]["median"] / rows["relstorage"]["median"]
        print(f"  target cold read <= RelStorage at {n}: "
              f"{'met' if ratio <= 1.0 else 'not met'} (direct x{ratio:.2f} RelStorage)")


def report(r):
    print("\nCommit latency (ms, median [p10-p90] of per-round medians)")
    for name, s in r["commit"].items():
        print(f"  {name:28} {s['ms']:8.3f}  [{s['p10']*1000:.3f}-{s['p90']*1000:.3f}]"
              f"  x{s['ratio_to_filestorage']:.2f} FileStorage")
    print("\nLoad latency (us)")
    for name, s in r["load"].items():
        print(f"  {name:28} {s['us']:8.1f}  x{s['ratio_to_filestorage']:.2f} FileStorage")
    print("\nWhat the bundle's defaults buy, 1-object commit over the unix socket")
    for name, label in STEPS:
        s = r["commit"][f"{name} 1 objects"]
        print(f"  {label:42} {s['ms']:8.3f} ms  x{s['ratio_to_filestorage']:.2f} FileStorage")
    ratio = r["commit"]["zeo unix 1 objects"]["ratio_to_filestorage"]
    print(f"  target x3.0: {'met' if ratio <= 3.0 else 'not met'} (x{ratio:.2f})")
    h = r["host"]
    print(f"  this machine wakes a thread in about {h['process_round_trip_us'] / 2:.0f} us "
          f"(another process), {h['thread_round_trip_us'] / 2:.0f} us (a thread of the same "
          f"process);\n  a ZEO commit has about 8 such wake-ups on its path, a FileStorage "
          f"commit none")
    print("\nDirect calls (issue #17: [zeo] direct-calls), over the unix socket, side by side")
    for label, off, on in (
        ("1-object commit, ms", "zeo unix 1 objects", "zeo unix direct 1 objects"),
        ("10-object commit, ms", "zeo unix 10 objects", "zeo unix direct 10 objects"),
    ):
        a, b = r["commit"][off], r["commit"][on]
        print(f"  {label:26} off {a['ms']:7.3f} (x{a['ratio_to_filestorage']:.2f})"
              f"   on {b['ms']:7.3f} (x{b['ratio_to_filestorage']:.2f} FileStorage)")
    a, b = r["load"]["zeo cold load"], r["load"]["zeo cold load, direct"]
    print(f"  {'cold load, us':26} off {a['us']:7.1f} (x{a['ratio_to_filestorage']:.2f})"
          f"   on {b['us']:7.1f} (x{b['ratio_to_filestorage']:.2f} FileStorage)")
    for what in ("commit", "cold load"):
        for name in ("zeo unix", "zeo unix direct"):
            c = r["round_trips"][f"{name} {what}"]
            print(f"  {name + ' ' + what:26} client CPU {c['client_cpu_us']:6.0f} us, server CPU "
                  f"{c['server_cpu_us']:5.0f} us, wake-ups: client {c['client_wakeups']:.1f}, "
                  f"server {c['server_wakeups']:.1f}")
    ratio = r["commit"]["zeo unix direct 1 objects"]["ratio_to_filestorage"]
    print(f"  target x3.0 with direct calls: {'met' if ratio <= 3.0 else 'not met'} (x{ratio:.2f})")
    report_peers(r)
    g = r["guard"]
    one = r["commit"]["zeo unix 1 objects"]["ms"] * 1000
    print(f"\nStored-records guard: {g['us_per_record']:.1f} us per record "
          f"({g['us_per_record'] / one * 100:.1f} % of a 1-object ZEO commit)")
    for label in ("writers_distinct", "writers_shared_counter"):
        print(f"\n{label.replace('_', ' ').capitalize()}")
        for row in r[label]:
            how = row.get("counter", "distinct")
            if row.get("think_ms"):
                how += f", pause {row['think_ms']:.0f} ms"
            retries = (f"not 200 {row['other_statuses']}" if "other_statuses" in row
                       else f"conflicts {row['conflicts']}")
            fair = "" if row["min_commits_per_writer_per_s"] >= 1 else "  UNFAIR (<1/s)"
            print(f"  K={row['writers']} {how}: {row['tx_per_s']:7.1f} tx/s, {retries}, "
                  f"per writer {row['commits_per_writer']}, lost updates {row['lost_updates']}{fair}")
    print(f"\nOver a slow link (TCP through a proxy adding latency each way; a page "
          f"view = a folder and its {PAGE_ITEMS} items, cold cache)")
    for row in r["slow_links"]:
        print(f"  +{row['latency_ms']:5.0f} ms: commit {row['commit_ms']:7.1f} ms, page view "
              f"{row['page_view_ms']:7.1f} ms ({row['page_view_round_trips']:.0f} round trips), "
              f"with prefetch {row['page_view_prefetch_ms']:7.1f} ms")
    f = r["cache_flush"]
    print(f"\nPersistent cache flush (every 2 s): {f['flush_us']:.0f} us after "
          f"{f['records']} new records, {f['idle_flush_us']:.1f} us with nothing new")
    print("\nHTTP GET of a page template, 8 connections")
    for label, row in r["http"].items():
        print(f"  {label:15} {row['requests_per_s']:7.1f} req/s  p50 {row['p50_ms']:.1f} ms"
              f"  p99 {row['p99_ms']:.1f} ms  errors {row['errors']}")
    print("\nDirect calls under load (issue #17 target: not lower with them on)")
    for direct in ("off", "on"):
        row = r["http_direct"][direct]
        print(f"  HTTP, 2 instances x 4 threads, 16 connections, direct {direct:3}: "
              f"{row['requests_per_s']:7.1f} req/s  p50 {row['p50_ms']:.1f} ms  "
              f"p99 {row['p99_ms']:.1f} ms  errors {row['errors']}")
    for row in r["writers_direct"]:
        print(f"  K={row['writers']} writer processes, distinct objects, direct "
              f"{'on ' if row['direct_calls'] else 'off'}: {row['tx_per_s']:7.1f} tx/s, "
              f"lost updates {row['lost_updates']}")


if __name__ == "__main__":
    sys.exit(main())
