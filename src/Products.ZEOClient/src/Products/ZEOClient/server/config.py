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
  (``clean_up_failed_votes``).
"""

import logging

from ZODB.config import BaseConfig
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
        return storage


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
