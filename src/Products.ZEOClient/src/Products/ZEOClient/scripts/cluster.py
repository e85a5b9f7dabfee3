"""``bin/cluster``: run the bundle's processes as one cluster.

The generated control scripts do the real work: ``bin/zeoserver`` and
``bin/instanceN`` (zdaemon under the hood) and ``bin/zeoinit``.  This
module only sequences them, which none of them can do alone:

- ``start``: server first, wait until its socket accepts connections,
  initialise the database once (``bin/zeoinit``), then the instances,
  then the load balancer (HAProxy, ``balancer.py``; skipped with one line
  when it is not installed), and return once every instance answers HTTP.
- ``stop``: the balancer, the instances (all at once: each drains and
  finishes its requests, see ``graceful.py``), then the server; each
  script's ``stop`` waits for its process to exit.
- ``restart --rolling``: one instance at a time: stop it (it drains, so
  the balancer moves traffic away first), start it, wait until it is
  connected and verified and the balancer has it back in rotation, then
  the next one.  The server is not restarted (``bin/zeoserver
  restart``).  ``restart`` alone is ``stop`` then ``start``.
- ``status``: one line per process; exit status 1 when any is down.
- ``run``: everything in the foreground; Ctrl-C (or SIGTERM) stops all,
  as ``stop`` does.

On a client host (client.cfg: ``server=False``) the ZEO server runs
elsewhere: no step starts, stops or initialises it.  ``start`` and
``run`` wait for it to accept connections, for ``REMOTE_WAIT`` seconds
at most, and then start the instances either way: an instance whose
server is away starts from its persistent cache, as it would alone, and
connects when the server is back.  ``status`` reports whether the remote
server accepts connections, in the line where the local one's would be.

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

from .balancer import Balancer

START_TIMEOUT = 120.0
# On a client host: how long start and run wait for the remote server
# before they start the instances from their caches.
REMOTE_WAIT = 30.0
STOP_TIMEOUT = 30.0
# An instance's graceful stop: its drain plus its shutdown timeout, and
# some.
INSTANCE_STOP_TIMEOUT = 90.0


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
        # ZEO writes its handshake at once; closing before it arrives made
        # the server log "ERROR ... Disconnected BrokenPipeError" at every
        # start.  (Under TLS it waits for ours: the timeout ends the wait.)
        try:
            sock.recv(64)
        except OSError:
            pass
    return True


def http_status(url):
    """The HTTP status *url* answers with, or None when it does not."""
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ValueError):
        return None


def http_answers(url):
    """True when *url* answers HTTP at all (any status, 401 included)."""
    return http_status(url) is not None


SERVING = re.compile(r"Serving on http://([\d.]+):(\d+)")


def served_url(log_path, configured):
    """The URL an instance really serves on.

    The configured ``host:port`` normally; for port 0 (tests bind port 0),
    the port the instance logged last when it started.
    """
    host, _, port = configured.rpartition(":")
    if port != "0":
        return f"http://{host}:{port}/"
    found = serving_lines(log_path)
    if not found:
        return None
    return "http://{}:{}/".format(*found[-1])


def host_port(url):
    """"host:port" of an ``http://host:port/`` URL."""
    return url[len("http://"):].rstrip("/")


def serving_lines(log_path):
    """Every (host, port) the instance logged it serves on, in order."""
    try:
        with open(log_path) as f:
            return SERVING.findall(f.read())
    except FileNotFoundError:
        return []


class Cluster:
    """The processes of one bundle, driven through its generated scripts."""

    def __init__(self, bin_directory, var_directory, server_address, instances,
                 balancer=None, server=True):
        self.bin = bin_directory
        self.var = var_directory
        self.address = parse_address(server_address)
        self.address_text = server_address
        self.local_server = server  # False on a client host
        self.instances = list(instances)  # [(name, "host:port"), ...]
        self.password_file = os.path.join(var_directory, "admin-password")
        self.balancer = Balancer(**balancer) if balancer else None

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

    def log(self, name):
        return os.path.join(self.var, "log", name + ".log")

    def url(self, name, configured):
        return served_url(self.log(name), configured)

    def served_addresses(self):
        """{name: "host:port"} the instances really serve on."""
        return {
            name: host_port(self.url(name, configured))
            for name, configured in self.instances
        }

    def wait_for_server(self, timeout=START_TIMEOUT):
        wait_until(
            f"the ZEO server at {self.address}",
            lambda: server_answers(self.address),
            timeout,
        )

    def wait_for_remote_server(self, timeout=None):
        """Wait (bounded) for the server of a client host; never fails."""
        timeout = REMOTE_WAIT if timeout is None else timeout
        try:
            self.wait_for_server(timeout)
        except ClusterError:
            print(
                f"The ZEO server at {self.address_text} does not answer after "
                f"{timeout:.0f}s; starting the instances anyway: they serve "
                "what their caches hold and connect when it is back.",
                flush=True,
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
        if self.local_server:
            if self.call(self.script("zeoserver"), "start") != 0:
                raise ClusterError("bin/zeoserver start failed")
            self.wait_for_server()
            self.initialise()
        else:
            self.wait_for_remote_server()
        for name, _ in self.instances:
            if self.call(self.script(name), "start") != 0:
                raise ClusterError(f"bin/{name} start failed")
        self.wait_for_instances()
        for name, configured in self.instances:
            print(f"{name}: {self.url(name, configured)}")
        self.start_balancer()
        self.print_login()

    def start_balancer(self):
        if self.balancer is None:
            return
        if not self.balancer.installed:
            print(self.balancer.not_installed_message())
            return
        if self.balancer.pid() is None:
            try:
                self.balancer.start(self.served_addresses())
            except RuntimeError as e:
                raise ClusterError(str(e)) from None
        self.wait_for_balancer()

    def wait_for_balancer(self, timeout=START_TIMEOUT):
        url = self.balancer.urls["ZEOCLUSTER_BIND"]
        wait_until(
            "the balancer to have every instance in rotation",
            lambda: set(self.balancer.states().values()) == {"UP"},
            timeout,
        )
        print(f"balancer: {url} (statistics: {self.balancer.urls['ZEOCLUSTER_STATS_BIND']})")

    def print_login(self):
        if self.local_server:
            print(f"Log in as admin; the password is in {self.password_file}")
        else:
            print("Log in as admin; the password is in var/admin-password on "
                  "the ZEO server's host")

    def stop(self):
        failed = []
        if self.balancer is not None and self.balancer.installed:
            self.balancer.stop()
        # All instances at once: each one drains for a few seconds.
        stopping = [
            (name, subprocess.Popen([self.script(name), "stop"], env=child_environment(),
                                    stdout=subprocess.DEVNULL))
            for name, _ in self.instances
        ]
        for name, process in stopping:
            try:
                code = process.wait(INSTANCE_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                code = 1
            if code != 0:
                failed.append(name)
        if self.local_server and self.call(self.script("zeoserver"), "stop") != 0:
            failed.append("zeoserver")
        if failed:
            raise ClusterError("could not stop: " + ", ".join(failed))

    def restart(self, rolling=False):
        if not rolling:
            self.stop()
            return self.start()
        balanced = (
            self.balancer is not None and self.balancer.installed
            and self.balancer.pid() is not None
        )
        for name, configured in self.instances:
            before = len(serving_lines(self.log(name)))
            started = time.monotonic()
            if self.call(self.script(name), "stop", quiet=True) != 0:
                raise ClusterError(f"bin/{name} stop failed")
            stopped = time.monotonic()
            if self.call(self.script(name), "start", quiet=True) != 0:
                raise ClusterError(f"bin/{name} start failed")
            wait_until(
                f"{name} to serve again",
                lambda: len(serving_lines(self.log(name))) > before,
                START_TIMEOUT,
            )
            url = self.url(name, configured)
            wait_until(
                f"{name} to be connected and verified (/zeo-health)",
                lambda: http_status(url + "zeo-health") == 200,
                START_TIMEOUT,
            )
            if balanced:
                self.balancer.set_address(name, host_port(url))
                wait_until(
                    f"the balancer to have {name} back in rotation",
                    lambda: self.balancer.states().get(name) == "UP",
                    START_TIMEOUT,
                )
            print(
                f"{name}: restarted (stopped in {stopped - started:.1f}s, back in "
                f"{time.monotonic() - stopped:.1f}s) at {url}",
                flush=True,
            )

    def status(self):
        down = 0
        if self.balancer is not None:
            if not self.balancer.installed:
                print(f"{'balancer':12} --   {self.balancer.not_installed_message()}")
            elif self.balancer.pid() is None:
                down += 1
                print(f"{'balancer':12} DOWN no haproxy process ({self.balancer.pidfile})")
            else:
                states = self.balancer.states()
                listed = ", ".join(f"{n} {s}" for n, s in sorted(states.items()))
                print(f"{'balancer':12} up   pid {self.balancer.pid()}; {listed}")
        if not self.local_server:
            answers = server_answers(self.address)
            down += not answers
            print(
                f"{'zeoserver':12} {'up  ' if answers else 'DOWN'} remote, at "
                f"{self.address_text}: "
                + ("accepts connections" if answers else "does not answer")
            )
        local = ["zeoserver"] if self.local_server else []
        for name in local + [n for n, _ in self.instances]:
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
        as tests: the cluster stops itself even if nobody stops it.  The
        children run in sessions of their own, so that Ctrl-C reaches
        only this process, which stops them in order; a second Ctrl-C
        tells the instances to stop at once.
        """
        server, instances, balancer = None, [], None
        deadline = None if timeout is None else time.monotonic() + timeout

        def stop_children(*_):
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, stop_children)
        # zdaemon applies the runner's umask only to daemons; in the
        # foreground the server's socket and files would be world-readable.
        os.umask(0o077)
        env = child_environment()

        def spawn(*args):
            return subprocess.Popen(args, env=env, start_new_session=True)

        try:
            if self.local_server:
                server = spawn(self.script("zeoserver"), "fg")
                self.wait_for_server()
                self.initialise()
            else:
                self.wait_for_remote_server()
            for name, _ in self.instances:
                # "console" is "fg" without debug mode; it execs the server,
                # so the PID held here is the instance's own.
                instances.append(spawn(self.script(name), "console"))
            self.wait_for_instances()
            if self.balancer is not None and self.balancer.installed:
                balancer = self.balancer.spawn(self.served_addresses())
                self.wait_for_balancer()
            elif self.balancer is not None:
                print(self.balancer.not_installed_message())
            self.print_login()
            print("Cluster running; press Ctrl-C to stop it.", flush=True)
            children = [*([server] if server else []), *instances] + (
                [balancer] if balancer else []
            )
            while all(child.poll() is None for child in children):
                if deadline is not None and time.monotonic() > deadline:
                    print(f"Stopping the cluster after its {timeout:.0f}s timeout.")
                    return 0
                time.sleep(0.5)
            print("A process of the cluster exited; stopping the others.")
            return 1
        except KeyboardInterrupt:
            print("Stopping the cluster.", flush=True)
            return 0
        finally:
            # The balancer, the instances (at once: each drains), the server
            # last, each by its own PID.
            if balancer is not None:
                stop_process(balancer)
            stop_instances(instances)
            if server is not None:
                stop_process(server)


def stop_instances(processes, timeout=INSTANCE_STOP_TIMEOUT):
    """SIGTERM to every instance, then wait for all; a Ctrl-C meanwhile
    is passed on as their second signal (stop at once)."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + timeout
    while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
        try:
            time.sleep(0.1)
        except KeyboardInterrupt:
            print("Stopping the instances at once.", flush=True)
            for process in processes:
                if process.poll() is None:
                    process.terminate()
    for process in processes:
        stop_process(process, timeout=1)


def main(argv, bin_directory, var_directory, server_address, instances, balancer=None,
         server=True):
    """``bin/cluster``; *server* False on a client host (no local ZEO server)."""
    parser = argparse.ArgumentParser(prog="cluster", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["start", "stop", "restart", "status", "run"])
    parser.add_argument(
        "--rolling",
        action="store_true",
        help="with restart: one instance at a time, the others serving",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="with run: stop the cluster after this many seconds",
    )
    args = parser.parse_args(argv)
    if args.timeout is not None and (args.command != "run" or args.timeout <= 0):
        parser.error("--timeout takes a positive number of seconds, with run only")
    if args.rolling and args.command != "restart":
        parser.error("--rolling goes with restart only")
    cluster = Cluster(
        bin_directory, var_directory, server_address, instances, balancer, server=server
    )
    try:
        if args.command == "run":
            return cluster.run(timeout=args.timeout)
        if args.command == "restart":
            return cluster.restart(rolling=args.rolling) or 0
        return getattr(cluster, args.command)() or 0
    except ClusterError as e:
        print(f"cluster {args.command}: {e}", file=sys.stderr)
        return 1
