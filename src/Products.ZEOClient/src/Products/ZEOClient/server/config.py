"""``<hardened>``: the zeo.conf section that installs the hardening.

It wraps the server's storage section; opening it, before the server
accepts any connection:

- installs ``protocol.install`` with this section's keys;
- makes runzeo stop between two event-loop callbacks on a signal, and
  installs the bundle's ZEO tuning (``../tuning.py``: uvloop, in-memory
  commit logs) unless ``tuning off`` (asyncio's loop, ZEO's own logs);
- puts the stored-records guard (``records.py``) on the storage's
  ``store``, ``restore`` and ``storeBlob``;
- for a FileStorage, cleans up after a write that failed at the vote
  (``clean_up_failed_votes``);
- counts the conflicts the server resolves and those it sends back
  (``count_conflicts``): ZEO's ``server_status`` has a
  ``conflicts_resolved`` field that nothing fills since ZEO 5 (the
  storage resolves inside ``store``); here it is filled, and a line a
  minute at most sums them up in the server's log, by class.
"""

import collections
import logging
import time

import ZEO.StorageServer
from ZODB.config import BaseConfig
from ZODB.utils import get_pickle_metadata
from ZODB.FileStorage import FileStorage

from .. import tuning
from . import protocol
from . import records

logger = logging.getLogger(__name__)


class Hardened(BaseConfig):

    def open(self):
        protocol.install(
            encodings=self.config.encodings or None,
            max_frame_size=self.config.max_frame_size,
            idle_timeout=self.config.idle_timeout,
        )
        tuning.exit_between_callbacks()
        if self.config.tuning:
            tuning.install()
        else:
            tuning.server_on_asyncio()
        storage = self.config.base.open()
        if self.config.guard_records:
            policy = records.Policy(
                modules=records.DEFAULT_MODULES + tuple(self.config.allow_module),
                globals_=records.DEFAULT_GLOBALS + tuple(self.config.allow_global),
                callables=records.DEFAULT_CALLABLES + tuple(self.config.allow_callable),
                fresh=records.DEFAULT_FRESH + tuple(self.config.allow_fresh_callable),
            )
            records.guard(storage, policy, audit=self.config.audit_records)
        if isinstance(storage, FileStorage):
            clean_up_failed_votes(storage)
        count_conflicts(storage)
        return storage


#: Seconds between two summaries of conflict resolution in the log.
CONFLICT_REPORT_INTERVAL = 60


def count_conflicts(storage, clock=time.monotonic):
    """Count what ``storage.tryToResolveConflict`` resolves and refuses.

    ``storage.conflicts_resolved`` and ``storage.conflicts_unresolved``
    (totals) feed ZEO's ``server_status`` (``report_conflicts``).  The
    log gets at most one INFO line per CONFLICT_REPORT_INTERVAL, written
    when a conflict happens, with the classes of those sent back to
    the clients as ConflictError (a hot object without conflict
    resolution: what an application can change, not the server).
    """
    resolve = getattr(storage, "tryToResolveConflict", None)
    if resolve is None:
        return
    storage.conflicts_resolved = storage.conflicts_unresolved = 0
    pending = {"since": clock(), "resolved": 0, "unresolved": collections.Counter()}

    def report():
        now = clock()
        if now - pending["since"] < CONFLICT_REPORT_INTERVAL:
            return
        unresolved = pending["unresolved"]
        logger.info(
            "conflicts in the last %.0f s: %d resolved on the server, %d sent "
            "back to the clients%s", now - pending["since"], pending["resolved"],
            sum(unresolved.values()),
            "".join(f"; {count} on {name}" for name, count in unresolved.most_common(5)),
        )
        pending.update(since=now, resolved=0, unresolved=collections.Counter())

    def tryToResolveConflict(oid, committedSerial, oldSerial, newpickle, committedData=b""):
        try:
            resolved = resolve(oid, committedSerial, oldSerial, newpickle, committedData)
        except Exception:
            storage.conflicts_unresolved += 1
            pending["unresolved"][record_class(storage, newpickle)] += 1
            report()
            raise
        storage.conflicts_resolved += 1
        pending["resolved"] += 1
        report()
        return resolved

    storage.tryToResolveConflict = tryToResolveConflict
    report_conflicts()


def record_class(storage, data):
    """The class a record names (its first pickle), read as the guard
    reads it (through the storage's ``untransform_record_data``)."""
    untransform = getattr(storage, "untransform_record_data", None)
    try:
        if untransform is not None:
            data = untransform(data)
        module, name = get_pickle_metadata(data)
    except Exception:
        return "an unreadable record"
    return f"{module}.{name}"


def report_conflicts():
    """Make ZEO's ``server_status`` say how many conflicts the storage
    resolved (ZEO's own ``conflicts`` counts those sent back)."""
    server = ZEO.StorageServer.StorageServer
    if getattr(server.server_status, "reports_conflicts", False):
        return
    status = server.server_status

    def server_status(self, storage_id):
        result = status(self, storage_id)
        result["conflicts_resolved"] = getattr(
            self.storages[storage_id], "conflicts_resolved", 0)
        return result

    server_status.reports_conflicts = True
    server.server_status = server_status


def clean_up_failed_votes(storage):
    """Make FileStorage's clean-up after a failed write work.

    When writing a transaction fails in ``tpc_vote`` (disk full, file
    size limit, I/O error), ZODB 6.4 truncates Data.fs back and empties
    its readers' buffers, but ``truncate()`` first flushes the buffered
    write, which fails again: the file keeps the partial write, the
    write stays pending (written out once space returns) and the readers
    keep buffers of bytes that later commits overwrite, so loads of new
    records can return stale data.  Here the pending write is dropped
    with its file object, the file is cut back through a fresh one and
    the readers' buffers are emptied.
    """
    vote = storage.tpc_vote

    def tpc_vote(transaction):
        try:
            return vote(transaction)
        except OSError:
            with storage._lock:
                try:
                    storage._file.close()  # its flush fails; the fd is closed
                except OSError:
                    pass
                storage._file = open(storage._file_name, "r+b")
                storage._file.truncate(storage._pos)
                storage._files.flush()
            logger.error(
                "could not write a transaction to %s; cut it back to %d bytes",
                storage._file_name, storage._pos,
            )
            raise

    storage.tpc_vote = tpc_vote


def encoding(value):
    value = value.lower()
    if value not in protocol.ENCODINGS:
        raise ValueError(
            f"encodings takes pickle and/or msgpack, not {value!r}"
        )
    return value
