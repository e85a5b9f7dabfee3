"""``bin/cluster``: run the bundle's processes as one cluster.

The generated control scripts do the real work: ``bin/zeoserver`` and
``bin/instanceN`` (zdaemon under the hood) and ``bin/zeoinit``.  This
module only sequences them, which none of them can do alone:

- ``start``: server first, wait until its socket accepts connections,
  initialise the database once (``bin/zeoinit``), then the instances, and
  return once every instance answers HTTP.
- ``stop``: instances first, then the server; each script's ``stop`` waits
  for its process to exit.
- ``status``: one line per process; exit status 1 when any is down.
- ``run``: everything in the foreground; Ctrl-C (or SIGTERM) stops all.

Imports nothing from Zope or ZEO: it is run by ``make`` and by the tests.
"""

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

START_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0


def child_environment():
    """The environment for the scripts, without ``PYTHON``.

    plone.recipe.zope2instance's control script runs Zope with ``$PYTHON``
    when it is set, instead of the interpreter buildout chose (which has
    the eggs); a ``PYTHON=python3`` left in a shell would break the
    instances.
    """
    env = dict(os.environ)
    env.pop("PYTHON", None)
    return env


def stop_process(process, timeout=STOP_TIMEOUT):
    """Terminate a child process by its PID; kill it if it lingers."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class ClusterError(Exception):
    """A step of the cluster's sequence failed; the message says which."""


def wait_until(what, predicate, timeout, interval=0.1):
    """Call *predicate* until it returns a true value or *timeout* passes."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def parse_address(address):
    """A ZEO address as written in buildout: a path or ``host:port``."""
    if address.startswith("/"):
        return address
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"not a socket path or host:port: {address!r}")
    return host, int(port)


def server_answers(address):
    """True when something accepts connections at the ZEO *address*."""
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(address)
        except OSError:
            return False
    return True


def http_answers(url):
    """True when *url* answers HTTP at all (any status, 401 included)."""
    try:
        with urllib.request.urlopen(url, timeout=2.0):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False


SERVING = re.compile(r"Serving on http://([\d.]+):(\d+)")


def served_url(log_path, configured):
    """The URL an instance really serves on.

    The configured ``host:port`` normally; for port 0 (tests bind port 0),
    the port the instance logged last when it started.
    """
    host, _, port = configured.rpartition(":")
    if port != "0":
        return f"http://{host}:{port}/"
    try:
        with open(log_path) as f:
            found = SERVING.findall(f.read())
    except FileNotFoundError:
        return None
    if not found:
        return None
    return "http://{}:{}/".format(*found[-1])


class Cluster:
    """The processes of one bundle, driven through its generated scripts."""

    def __init__(self, bin_directory, var_directory, server_address, instances):
        self.bin = bin_directory
        self.var = var_directory
        self.address = parse_address(server_address)
        self.instances = list(instances)  # [(name, "host:port"), ...]
        self.password_file = os.path.join(var_directory, "admin-password")

    def script(self, name):
        path = os.path.join(self.bin, name)
        if not os.access(path, os.X_OK):
            raise ClusterError(f"{path} is missing; build the bundle (make build)")
        return path

    def call(self, *args, quiet=False):
        out = subprocess.DEVNULL if quiet else None
        return subprocess.run(
            args, stdout=out, env=child_environment(), check=False
        ).returncode

    def url(self, name, configured):
        log = os.path.join(self.var, "log", name + ".log")
        return served_url(log, configured)

    def wait_for_server(self, timeout=START_TIMEOUT):
        wait_until(
            f"the ZEO server at {self.address}",
            lambda: server_answers(self.address),
            timeout,
        )

    def initialise(self):
        if self.call(self.script("zeoinit")) != 0:
            raise ClusterError("bin/zeoinit failed; see its message above")

    def wait_for_instances(self, timeout=START_TIMEOUT):
        for name, configured in self.instances:
            wait_until(
                f"{name} to answer HTTP",
                lambda: (url := self.url(name, configured)) and http_answers(url),
                timeout,
            )

    def start(self):
        if self.call(self.script("zeoserver"), "start") != 0:
            raise ClusterError("bin/zeoserver start failed")
        self.wait_for_server()
        self.initialise()
        for name, _ in self.instances:
            if self.call(self.script(name), "start") != 0:
                raise ClusterError(f"bin/{name} start failed")
        self.wait_for_instances()
        for name, configured in self.instances:
            print(f"{name}: {self.url(name, configured)}")
        self.print_login()

    def print_login(self):
        print(f"Log in as admin; the password is in {self.password_file}")

    def stop(self):
        failed = []
        for name in [n for n, _ in self.instances] + ["zeoserver"]:
            if self.call(self.script(name), "stop") != 0:
                failed.append(name)
        if failed:
            raise ClusterError("could not stop: " + ", ".join(failed))

    def status(self):
        down = 0
        for name in ["zeoserver"] + [n for n, _ in self.instances]:
            try:
                script = self.script(name)
            except ClusterError as e:
                down += 1
                print(f"{name:12} DOWN {e}")
                continue
            result = subprocess.run(
                [script, "status"],
                env=child_environment(),
                capture_output=True,
                text=True,
                check=False,
            )
            line = (result.stdout.strip().splitlines() or ["no answer"])[-1]
            running = line.startswith("program running")
            down += not running
            print(f"{name:12} {'up  ' if running else 'DOWN'} {line}")
        return 1 if down else 0

    def run(self, timeout=None):
        """Everything in the foreground until Ctrl-C, SIGTERM or *timeout*.

        The timeout (seconds) is a suicide timer for unattended runs such
        as tests: the cluster stops itself even if nobody stops it.
        """
        children = []
        deadline = None if timeout is None else time.monotonic() + timeout

        def stop_children(*_):
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, stop_children)
        # zdaemon applies the runner's umask only to daemons; in the
        # foreground the server's socket and files would be world-readable.
        os.umask(0o077)
        try:
            env = child_environment()
            children.append(
                subprocess.Popen([self.script("zeoserver"), "fg"], env=env)
            )
            self.wait_for_server()
            self.initialise()
            for name, _ in self.instances:
                # "console" is "fg" without debug mode; it execs the server,
                # so the PID held here is the instance's own.
                children.append(
                    subprocess.Popen([self.script(name), "console"], env=env)
                )
            self.wait_for_instances()
            self.print_login()
            print("Cluster running; press Ctrl-C to stop it.")
            while all(child.poll() is None for child in children):
                if deadline is not None and time.monotonic() > deadline:
                    print(f"Stopping the cluster after its {timeout:.0f}s timeout.")
                    return 0
                time.sleep(0.5)
            print("A process of the cluster exited; stopping the others.")
            return 1
        except KeyboardInterrupt:
            print("Stopping the cluster.")
            return 0
        finally:
            # Instances first, the server last, each by its own PID.
            for child in reversed(children):
                stop_process(child)


def main(argv, bin_directory, var_directory, server_address, instances):
    parser = argparse.ArgumentParser(prog="cluster", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["start", "stop", "status", "run"])
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="with run: stop the cluster after this many seconds",
    )
    args = parser.parse_args(argv)
    if args.timeout is not None and (args.command != "run" or args.timeout <= 0):
        parser.error("--timeout takes a positive number of seconds, with run only")
    cluster = Cluster(bin_directory, var_directory, server_address, instances)
    try:
        if args.command == "run":
            return cluster.run(timeout=args.timeout)
        return getattr(cluster, args.command)() or 0
    except ClusterError as e:
        print(f"cluster {args.command}: {e}", file=sys.stderr)
        return 1
