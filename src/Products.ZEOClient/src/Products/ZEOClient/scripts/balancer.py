"""The cluster's HAProxy: start, stop, and what it thinks of the instances.

HAProxy is Debian's package (``apt-get install haproxy``), configured by
buildout from ``etc/haproxy.cfg.in``.  That configuration leaves the
addresses to its environment (``"$ZEOCLUSTER_..."``), which ``Balancer``
fills in from what the instances really serve on, so that instances and
listeners configured on port 0 (as the tests do) work as fixed ports do.
HAProxy 2.6 cannot bind port 0 itself; for such a listener the socket is
bound here and handed over (``fd@N``).

After a rolling restart an instance on port 0 comes back on another port:
``set_address`` tells the running HAProxy through its admin socket (the
``stats socket`` of the configuration, owner-only).

Imports nothing from Zope or ZEO: it is run by ``bin/cluster``.
"""

import csv
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

BACKENDS = ("instances", "cached")
STOP_TIMEOUT = 30.0


def find_haproxy():
    """The haproxy program, or None when it is not installed."""
    return shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.access(p, os.X_OK)),
        None,
    )


def env_name(name):
    return "ZEOCLUSTER_" + name.upper().replace("-", "_")


def split_address(address):
    host, _, port = address.rpartition(":")
    return host, int(port)


class Balancer:
    """One HAProxy for the cluster's instances."""

    def __init__(self, config, address, stats, pidfile, admin_socket):
        self.config = config
        self.address = address
        self.stats = stats
        self.pidfile = pidfile
        self.admin_socket = admin_socket
        self.program = find_haproxy()
        self.urls = {}  # "balancer"/"stats" -> http://host:port/ once started

    @property
    def installed(self):
        return self.program is not None

    def not_installed_message(self):
        return (
            "haproxy is not installed (Debian: apt-get install haproxy): "
            "the instances run without the load balancer"
        )

    # -- starting ------------------------------------------------------

    def _listen(self, key, address, env, keep):
        host, port = split_address(address)
        if port:
            env[key] = address
            self.urls[key] = f"http://{host}:{port}/"
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, 0))
        sock.listen(128)
        sock.set_inheritable(True)
        keep.append(sock)
        env[key] = f"fd@{sock.fileno()}"
        self.urls[key] = "http://{}:{}/".format(*sock.getsockname()[:2])

    def command(self, instances, foreground=False):
        """(argv, env, sockets to pass) for HAProxy serving *instances*
        ({name: "host:port"})."""
        env = dict(os.environ)
        keep = []
        self._listen("ZEOCLUSTER_BIND", self.address, env, keep)
        self._listen("ZEOCLUSTER_STATS_BIND", self.stats, env, keep)
        for name, address in instances.items():
            env[env_name(name)] = address
        argv = [self.program, "-f", self.config]
        argv.append("-db" if foreground else "-D")
        return argv, env, keep

    def start(self, instances):
        """Start HAProxy as a daemon; returns once it answers."""
        argv, env, keep = self.command(instances)
        # Not pipes: the daemon keeps its standard streams.
        with tempfile.TemporaryFile("w+") as errors:
            try:
                result = subprocess.run(
                    argv,
                    env=env,
                    pass_fds=[s.fileno() for s in keep],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=errors,
                    check=False,
                    timeout=60,
                )
            finally:
                for sock in keep:
                    sock.close()
            if result.returncode != 0:
                errors.seek(0)
                raise RuntimeError("haproxy did not start:\n" + errors.read().strip())

    def spawn(self, instances):
        """HAProxy in the foreground, as a child process (``cluster run``)."""
        argv, env, keep = self.command(instances, foreground=True)
        try:
            return subprocess.Popen(
                argv, env=env, pass_fds=[s.fileno() for s in keep], start_new_session=True
            )
        finally:
            for sock in keep:
                sock.close()

    # -- running -------------------------------------------------------

    def pid(self):
        try:
            with open(self.pidfile) as f:
                pid = int(f.read().split()[0])
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError):
            return None
        return pid

    def admin(self, command):
        """Send one command to the admin socket; its answer as text."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5.0)
            sock.connect(self.admin_socket)
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", "replace")

    def states(self, backend="instances"):
        """{server name: status} ("UP", "DOWN", "MAINT", ...) of *backend*."""
        text = self.admin("show stat").lstrip("# ")
        rows = csv.DictReader(text.splitlines())
        return {
            row["svname"]: row["status"].split()[0]
            for row in rows
            if row.get("pxname") == backend and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def set_address(self, name, address):
        """Point every backend's server *name* at *address* ("host:port")."""
        host, port = split_address(address)
        for backend in BACKENDS:
            answer = self.admin(f"set server {backend}/{name} addr {host} port {port}")
            if "not found" in answer.lower() or "error" in answer.lower():
                raise RuntimeError(f"haproxy refused the address of {name}: {answer.strip()}")

    def stop(self, timeout=STOP_TIMEOUT):
        """Soft stop (SIGUSR1: connections in progress finish), bounded."""
        pid = self.pid()
        if pid is None:
            return True
        os.kill(pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGTERM)
        try:
            os.remove(self.pidfile)
        except FileNotFoundError:
            pass
        return True
