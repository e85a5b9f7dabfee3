"""Asynchronous pack, started from the control panel.

ZEO's ``pack(wait=False)`` returns at once but reports nothing, not even a
failure; the ``info`` message the server pushes afterwards also follows
every commit.  So the honest way to know when and how a pack ended is a
thread of ours that calls ``pack(wait=True)`` and records the outcome.
One pack at a time per database: a second one is refused.
"""

import logging
import threading
import time

from ZODB.serialize import referencesf

from .status import iso

logger = logging.getLogger(__name__)

DAY = 86400
MAX_DAYS = 36500


def size(storage):
    """The database's size on the server (ClusterClientStorage knows it)."""
    server_size = getattr(storage, "server_size", None)
    return server_size() if server_size is not None else storage.getSize()


class PackRefused(Exception):
    """A pack cannot start now; the message says why."""


def parse_days(value):
    """Days of history to keep, from a form value; ValueError if bad."""
    try:
        days = float(str(value).strip())
    except ValueError:
        raise ValueError(f"days must be a number, not {value!r}") from None
    if not 0 <= days <= MAX_DAYS:
        raise ValueError(f"days must be between 0 and {MAX_DAYS}, not {value!r}")
    return days


class PackJob:
    """The latest pack of one database, as the status screen shows it."""

    def __init__(self, name):
        self.name = name
        self.state = "idle"
        self.days = self.started = self.finished = None
        self.size_before = self.size_after = None
        self.error = None
        self._lock = threading.Lock()
        self._thread = None

    def start(self, storage, days):
        with self._lock:
            if self.state == "running":
                raise PackRefused(
                    f"a pack of {self.name} has been running since "
                    f"{iso(self.started)}; wait for it to finish"
                )
            if not storage.is_connected():
                raise PackRefused(
                    f"the ZEO server of {self.name} is unreachable; "
                    "try again when it is back"
                )
            self.state = "running"
            self.days = days
            self.started, self.finished = time.time(), None
            self.size_before, self.size_after = size(storage), None
            self.error = None
            self._thread = threading.Thread(
                target=self._run,
                args=(storage, days),
                name=f"ZEOClient pack {self.name}",
                daemon=True,
            )
            self._thread.start()

    def _run(self, storage, days):
        logger.info("packing %s, keeping %s days", self.name, days)
        try:
            storage.pack(time.time() - days * DAY, referencesf, wait=True)
        except Exception as exc:
            logger.exception("packing %s failed", self.name)
            with self._lock:
                self.state, self.error = "failed", f"{type(exc).__name__}: {exc}"
                self.finished = time.time()
            return
        with self._lock:
            self.state = "done"
            self.finished = time.time()
            self.size_after = size(storage)
        logger.info(
            "packed %s in %.1fs: %s -> %s bytes",
            self.name,
            self.finished - self.started,
            self.size_before,
            self.size_after,
        )

    def as_dict(self):
        with self._lock:
            result = {
                "state": self.state,
                "days": self.days,
                "started": iso(self.started),
                "finished": iso(self.finished),
                "duration": (
                    round(self.finished - self.started, 3) if self.finished else None
                ),
                "size_before": self.size_before,
                "size_after": self.size_after,
                "error": self.error,
            }
        return result


_jobs = {}
_jobs_lock = threading.Lock()


def job(name):
    with _jobs_lock:
        return _jobs.setdefault(name, PackJob(name))
