"""A throw-away PostgreSQL server for the benchmarks (RelStorage rows).

Debian's postgresql, found under /usr/lib/postgresql/*/bin; nothing is
installed or configured system-wide.  ``initdb`` makes a cluster in a
temporary folder, the server listens on a unix socket in that folder
only (``listen_addresses`` empty: no TCP port at all), and stopping it
removes the folder.  PostgreSQL refuses to run as root: under root the
cluster belongs to Debian's ``postgres`` user.

The server runs under ``timeout`` (coreutils): a suicide timeout, so a
killed benchmark leaves no server behind for long.  It is stopped by
PID (a fast shutdown, SIGINT, relayed by ``timeout``).
"""

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile

from .harness import wait_until

SUICIDE_TIMEOUT = 3600  # seconds: longer than any benchmark


class Unavailable(Exception):
    """PostgreSQL cannot be started here (the reason is the message)."""


def bin_directory():
    """The newest installed PostgreSQL's bin folder, or None."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/postgres"),
        key=lambda path: int(path.split("/")[4]) if path.split("/")[4].isdigit() else 0,
    )
    return os.path.dirname(found[-1]) if found else None


class TemporaryPostgres:
    """``with TemporaryPostgres() as pg: pg.create_database("x")``."""

    def __init__(self):
        self.bin = bin_directory()
        if self.bin is None:
            raise Unavailable(
                "PostgreSQL is not installed (Debian's postgresql package): "
                "RelStorage rows skipped"
            )
        self.folder = None
        self.process = None
        self._log = None
        self._user = {}
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam("postgres")
            except KeyError:
                raise Unavailable("running as root and there is no postgres user: "
                                  "RelStorage rows skipped") from None
            self._user = {"user": entry.pw_uid, "group": entry.pw_gid}

    def _run(self, *args):
        result = subprocess.run(
            args, capture_output=True, text=True, timeout=120, **self._user)
        if result.returncode:
            raise Unavailable(f"{os.path.basename(args[0])} failed: "
                              f"{(result.stderr or result.stdout).strip()[-500:]}")
        return result.stdout

    def start(self):
        self.folder = tempfile.mkdtemp(prefix="bench-pg-")
        if self._user:
            os.chown(self.folder, self._user["user"], self._user["group"])
        data = os.path.join(self.folder, "data")
        try:
            self._run(os.path.join(self.bin, "initdb"), "-D", data, "-U", "postgres",
                      "-A", "trust", "-E", "UTF8", "--no-sync")
            self._log = open(os.path.join(self.folder, "postgres.log"), "wb")
            self.process = subprocess.Popen(
                ["timeout", "--signal=INT", str(SUICIDE_TIMEOUT),
                 os.path.join(self.bin, "postgres"), "-D", data, "-k", self.folder,
                 "-c", "listen_addresses=", "-c", "logging_collector=off"],
                stdout=subprocess.DEVNULL,
                stderr=self._log,
                start_new_session=True,
                **self._user,
            )
            wait_until(
                "PostgreSQL to accept connections",
                lambda: self.process.poll() is not None or self._ready(),
                60,
            )
            if self.process.poll() is not None:
                raise Unavailable("postgres exited: " + self.log()[-500:])
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self):
        return subprocess.run(
            [os.path.join(self.bin, "pg_isready"), "-q", "-h", self.folder],
            timeout=30,
        ).returncode == 0

    def log(self):
        try:
            with open(os.path.join(self.folder, "postgres.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def psql(self, sql, database="postgres"):
        return self._run(os.path.join(self.bin, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
                         "-h", self.folder, "-U", "postgres", "-d", database, "-c", sql)

    def create_database(self, name, **settings):
        """A new database; *settings* are per-database defaults
        (``synchronous_commit="off"``)."""
        self.psql(f"CREATE DATABASE {name}")
        for key, value in settings.items():
            self.psql(f"ALTER DATABASE {name} SET {key} = {value}")
        return self.dsn(name)

    def dsn(self, name):
        return f"host={self.folder} dbname={name} user=postgres"

    def stop(self):
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGINT)
                try:
                    self.process.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(self.process.pid, signal.SIGKILL)
                    self.process.wait(30)
            self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
