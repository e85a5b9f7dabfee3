"""What the control panel, status.json and /metrics show: plain data.

``database_status`` turns one ZODB database whose storage is a ZEO
client into a dict of JSON-ready values; everything else (the ZMI
screen, JSON, Prometheus) renders that dict.  Nothing here imports Zope.

Where the numbers come from:
- connection, verification, events, hits and misses: recorded by
  ``client.ClusterClientStorage`` (ZEO's cache counts neither hits nor
  misses);
- cache size in use: the sizes of the records the cache's index points
  to (the file itself is preallocated to its maximum);
- server statistics: ``ClientStorage.server_status()``, asked only while
  connected, with a short timeout;
- TLS certificates: the client's from its file, the server's from the
  connection in use (``certificates.py``), each with its expiry date.
"""

import datetime
import logging
import struct
import threading
import time
from collections import deque

from ZODB.utils import p64
from ZODB.utils import u64
from ZODB.TimeStamp import TimeStamp

from . import certificates

logger = logging.getLogger(__name__)

SERVER_TIMEOUT = 2.0


def iso(seconds):
    """ISO-8601 UTC for a POSIX time, or None."""
    if seconds is None:
        return None
    return (
        datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z")
    )


def tid_info(tid):
    """{"id": 16 hex digits, "time": ISO-8601} for a transaction id."""
    if not tid or tid == p64(0):
        return None
    return {"id": tid.hex(), "time": iso(TimeStamp(tid).timeTime())}


def address_text(address):
    if isinstance(address, (list, tuple)) and len(address) == 1:
        address = address[0]
    if isinstance(address, str):
        return address
    if isinstance(address, (list, tuple)) and len(address) == 2:
        return f"{address[0]}:{address[1]}"
    return str(address)


def cache_bytes_in_use(cache):
    """Bytes of the records in ZEO's client cache (current and not)."""
    total = 0
    with cache._lock:
        if cache.f is None:
            return 0
        offsets = list(cache.current.values())
        for tree in cache.noncurrent.values():
            offsets.extend(tree.values())
        f = cache.f
        here = f.tell()
        try:
            for ofs in offsets:
                f.seek(ofs)
                if f.read(1) == b"a":
                    total += struct.unpack(">I", f.read(4))[0]
        finally:
            f.seek(here)
    return total


def cache_status(storage):
    cache = storage._cache
    adds, added_bytes, evicts, evicted_bytes, accesses = cache.getStats()
    hits, misses = storage.hits, storage.misses
    loads = hits + misses
    return {
        "persistent": bool(cache.path),
        "path": cache.path,
        "size": cache_bytes_in_use(cache),
        "max_size": cache.maxsize,
        "objects": len(cache),
        "hits": hits,
        "misses": misses,
        "hit_ratio": (hits / loads) if loads else None,
        "evictions": evicts,
    }


def server_status(storage):
    """The server's statistics, or None when it cannot be asked now."""
    if not storage.is_connected():
        return None
    try:
        stats = storage.server_status(timeout=SERVER_TIMEOUT)
    except Exception as exc:
        logger.debug("server_status failed: %r", exc)
        return None
    return dict(stats)


def certificate_status(storage):
    """{"client": ..., "server": ...} expiry of the TLS certificates in
    use (None for one that is not known: no TLS, or disconnected); None
    when the storage uses no TLS at all."""
    client = getattr(storage, "client_certificate", None)
    server = None
    peer = getattr(storage, "server_certificate", None)
    if peer is not None and storage.is_connected():
        not_after = certificates.peer_not_after(peer())
        server = certificates.expiry(not_after) if not_after else None
    if client is None and server is None:
        return None
    return {
        "client": (
            certificates.in_use_expiry(
                client, getattr(storage, "client_certificate_not_after", None)
            )
            if client
            else None
        ),
        "server": server,
    }


def database_status(name, db, pack=None, history=None):
    """The status of database *name* as JSON-ready data."""
    storage = db.storage
    connected = storage.is_connected()
    server = server_status(storage)
    verification = getattr(storage, "verification", None)
    last_server = None
    if server and server.get("last-transaction"):
        last_server = tid_info(bytes.fromhex(server["last-transaction"]))
    return {
        "connected": connected,
        "address": address_text(storage._addr),
        "read_only": storage.isReadOnly(),
        "since": iso(getattr(storage, "state_since", None)),
        "disconnects": getattr(storage, "disconnects", 0),
        "reconnects": getattr(storage, "reconnects", 0),
        "verification": (
            {
                "outcome": verification[0],
                "objects": verification[1],
                "time": iso(verification[2]),
            }
            if verification
            else None
        ),
        "last_transaction": tid_info(storage.lastTransaction()),
        "server_last_transaction": last_server,
        "size": (
            storage.server_size() if hasattr(storage, "server_size") else storage.getSize()
        ),
        "cache": cache_status(storage),
        "certificates": certificate_status(storage),
        "refusals": {
            "count": getattr(storage, "refused", 0),
            "last": [
                {"time": iso(when), "record": text}
                for when, text in reversed(getattr(storage, "refusals", []))
            ],
        },
        "server": server,
        "pack": pack.as_dict() if pack is not None else {"state": "idle"},
        "events": [
            {"time": iso(when), "event": text}
            for when, text in reversed(getattr(storage, "events", []))
        ],
        "history": list(history) if history is not None else [],
    }


def zeo_databases(databases):
    """{name: db} of the databases whose storage is a ZEO client."""
    return {
        name: db
        for name, db in sorted(databases.items())
        if hasattr(db.storage, "server_status") and hasattr(db.storage, "_cache")
    }


class History:
    """Samples of each database's load and commit counters over time.

    ``sample()`` is called every ``interval`` seconds by a daemon thread
    that starts once the serving loop runs (ThreadedAsync); the last
    ``size`` samples per database feed the chart.
    """

    def __init__(self, databases, interval=10.0, size=60):
        self.databases = databases  # callable returning {name: db}
        self.interval = interval
        self.samples = {}
        self.size = size
        self._stop = threading.Event()
        self._thread = None

    def sample(self, now=None):
        now = time.time() if now is None else now
        for name, db in self.databases().items():
            storage = db.storage
            row = {
                "time": iso(now),
                "hits": storage.hits,
                "misses": storage.misses,
                "last_transaction": u64(storage.lastTransaction()),
            }
            self.samples.setdefault(name, deque(maxlen=self.size)).append(row)

    def get(self, name):
        return self.samples.get(name, ())

    def start(self):
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="ZEOClient status history", daemon=True
            )
            self._thread.start()

    def _run(self):
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except Exception:
                logger.exception("sampling the ZEO status failed")

    def stop(self):
        self._stop.set()
