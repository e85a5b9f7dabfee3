"""Build and run real clusters of the bundle in temporary folders.

A test bundle is the checkout's own ``buildout.cfg``, built by the
checkout's ``bin/buildout`` into a temporary folder with a small override
file: its own ``var/`` (so a fresh socket path), HTTP on port 0 (each
instance binds a free port and logs it; we read it back), and the
checkout's eggs and develop eggs (so no download happens: ``allow-hosts``
restricts buildout to this machine; the bundle's extension is loaded
from the develop eggs).  How many instances is ``settings:instances=N``
on the command line, as an operator would say it.  The processes are
started with the bundle's generated scripts, exactly as an operator
would.  ``Bundle(profile="client.cfg")`` builds a client host instead
(the instances and the balancer, for a server in another bundle).

Every process is stopped by PID in a cleanup registered when it starts;
``bin/cluster run`` is given a suicide timeout so that nothing outlives a
test run that was itself killed.
"""

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

# One wait_until and one way to stop a child for the bundle and its
# tests: bounded, never a bare sleep.
from Products.ZEOClient.scripts.cluster import stop_process  # noqa: F401
from Products.ZEOClient.scripts.cluster import wait_until  # noqa: F401

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILDOUT = os.path.join(CHECKOUT, "bin", "buildout")
ZOPEPY = os.path.join(CHECKOUT, "bin", "zopepy")
# zopepy's eggs and the peers make bench measures (RelStorage, zodbshootout).
BENCHPY = os.path.join(CHECKOUT, "bin", "benchpy")
SUICIDE_TIMEOUT = 900  # seconds; no test cluster lives longer

# Each profile's parts but zopepy and test (the tests use the checkout's);
# the extension puts instance1 ... instanceN where "instances" stands.
PARTS = {
    "buildout.cfg": (
        "var-dirs zeo-conf zeoserver instances zeoinit-conf zeoinit "
        "inituser-cleanup cluster zeostatus zeocerts zeoguard zeopack backup service-files"
    ),
    "client.cfg": (
        "var-dirs instances inituser-cleanup cluster zeostatus service-files"
    ),
}
# The Plone profile builds what buildout.cfg does.
PARTS["plone.cfg"] = PARTS["buildout.cfg"]

OVERRIDES = """\
[buildout]
extends = {checkout}/{profile}
eggs-directory = {checkout}/eggs
develop =
develop-eggs-directory = {checkout}/develop-eggs
newest = false
allow-hosts = {allow_hosts}
parts = {parts}

[ports]
{ports}
balancer = 127.0.0.1:0
balancer-stats = 127.0.0.1:0

[settings]
etc-directory = {checkout}/etc
# Tests that want HAProxy turn it on (tests/test_balancer.py); the others
# need neither it nor a long drain when they stop an instance.
balancer = off
drain = 0.2
"""


def record(name, figures, folder="test-figures"):
    """Keep a test's figures (what a closing note reports) in
    var/FOLDER/NAME.json of the checkout."""
    folder = os.path.join(CHECKOUT, "var", folder)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{name}.json"), "w") as f:
        json.dump(figures, f, indent=2)


def pids_under(folder):
    """PIDs of live processes whose command line names *folder*.

    Read from /proc; used to prove that nothing of a test cluster is left,
    and to stop leftovers by PID, never by name.
    """
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if folder in cmdline and state != "Z":
            found.append(int(entry))
    return found


def kill_pids(pids, timeout=10):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def listening_ports(pid):
    """TCP ports on which process *pid* listens, from /proc."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return []
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            listening = fields[3] == "0A"
            if listening and fields[9] in inodes:
                ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


class NoRedirects(urllib.request.HTTPRedirectHandler):
    """Report a redirect as the answer instead of following it: the
    answer to a POST is the POST's, not that of the page it leads to."""

    def redirect_request(self, *args, **kw):
        return None


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body)


def own_bundle(test, instances=2, profile="buildout.cfg"):
    """A Bundle for *test* alone, cleaned up (processes stopped by PID,
    folder removed) when the test ends; not built yet."""
    bundle = Bundle(instances=instances, profile=profile)
    test.addCleanup(bundle.cleanup)
    return bundle


def environment_settings():
    """Buildout settings every test bundle gets, from the environment:
    ``BUNDLE_SETTINGS="zeo:direct-calls=on"`` runs a layer with a setting
    changed (space-separated ``section:option=value``; a test's own
    settings win)."""
    found = {}
    for item in os.environ.get("BUNDLE_SETTINGS", "").split():
        key, sep, value = item.partition("=")
        if not sep or ":" not in key:
            raise ValueError(f"BUNDLE_SETTINGS: {item!r} is not section:option=value")
        found[key] = value
    return found


class Bundle:
    """One built bundle in a temporary folder.

    *profile*: the checkout's configuration it extends, ``buildout.cfg``
    (server and instances) or ``client.cfg`` (a client host: no server;
    give it ``zeo:client-address``).
    """

    def __init__(self, instances=2, profile="buildout.cfg", download=False, **settings):
        if profile not in PARTS:
            raise ValueError(f"no such profile: {profile!r} (one of {', '.join(PARTS)})")
        self.profile = profile
        # May buildout download what the checkout's eggs/ lacks (from
        # PyPI, into the checkout's eggs/, kept for the next run)?
        self.download = download
        self.instances = [f"instance{n}" for n in range(1, instances + 1)]
        self.directory = tempfile.mkdtemp(prefix="zeobundle-")
        self.var = os.path.join(self.directory, "var")
        self.settings = dict(environment_settings(), **settings)
        self._children = []
        self._cleanups = []
        self._runner = None
        self._urls = {}
        self.balancer_url = None

    # -- building ------------------------------------------------------

    def build(self, extra="", **settings):
        """Run buildout for this folder; *settings* like ``zeo:address``,
        *extra* more configuration text for the override file."""
        self.settings.update(settings)
        config = os.path.join(self.directory, "buildout.cfg")
        with open(config, "w") as f:
            f.write(
                OVERRIDES.format(
                    checkout=CHECKOUT,
                    profile=self.profile,
                    parts=PARTS[self.profile],
                    allow_hosts="*" if self.download else "localhost",
                    ports="\n".join(f"{name} = 0" for name in self.instances),
                )
            )
            f.write(extra)
        args = [BUILDOUT, "-c", config, "-q", f"settings:instances={len(self.instances)}"]
        args += [f"{key}={value}" for key, value in sorted(self.settings.items())]
        result = subprocess.run(
            args, cwd=self.directory, capture_output=True, text=True,
            timeout=1800 if self.download else 300,
        )
        if result.returncode != 0:
            raise AssertionError(
                f"buildout failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return self

    def script(self, name):
        return os.path.join(self.directory, "bin", name)

    def run_script(self, name, *args, timeout=180):
        return subprocess.run(
            [self.script(name), *args],
            cwd=self.directory,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    # -- processes -----------------------------------------------------

    def start(self):
        """``bin/cluster start``: daemons, stopped by ``stop`` or cleanup."""
        result = self.run_script("cluster", "start")
        if result.returncode != 0:
            raise AssertionError(
                f"cluster start failed:\n{result.stdout}\n{result.stderr}"
            )
        found = re.search(r"^balancer: (http://\S+/)", result.stdout, re.M)
        if found:
            self.balancer_url = found.group(1)
        return result

    def on_cleanup(self, function, *args):
        """Call *function(*args)* at cleanup, before the processes stop."""
        self._cleanups.append((function, args))

    def stop(self):
        return self.run_script("cluster", "stop")

    def start_server(self):
        """``bin/zeoserver start`` and wait until it accepts connections."""
        result = self.run_script("zeoserver", "start")
        if result.returncode != 0:
            raise AssertionError(result.stdout + result.stderr)
        wait_until(
            "the ZEO server to log that it listens",
            lambda: "listening on" in self.log("zeoserver"),
            60,
        )

    def start_instance(self, name):
        """``bin/NAME start`` (zdaemon); returns at once."""
        result = self.run_script(name, "start")
        if result.returncode != 0:
            raise AssertionError(result.stdout + result.stderr)

    def console(self, name):
        """``bin/NAME console`` as a child process, stopped by PID."""
        process = subprocess.Popen(
            [self.script(name), "console"],
            cwd=self.directory,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if k != "PYTHON"},
            start_new_session=True,
        )
        self._children.append(process)
        return process

    def spawn(self, args):
        """Any other child process of this bundle, stopped by PID at cleanup."""
        process = subprocess.Popen(
            args, cwd=self.directory, stdout=subprocess.DEVNULL, start_new_session=True
        )
        self._children.append(process)
        return process

    def spawn_server(self, name, *changes):
        """Another ZEO server of this bundle: runzeo on a copy of its
        zeo.conf with *changes* ((old, new) text replacements) made, on
        its own socket, Data.fs and pid file; stopped by PID at cleanup.
        It logs to the bundle's zeoserver.log.  Returns the socket path."""
        with open(os.path.join(self.directory, "parts", "etc", "zeo.conf")) as f:
            conf = f.read()
        socket_path = os.path.join(self.var, f"{name}.sock")
        changes = (
            (f"address {os.path.join(self.var, 'zeo.sock')}", f"address {socket_path}"),
            ("$VAR/zeoserver.pid", f"$VAR/{name}.pid"),
            ("$VAR/filestorage/Data.fs", f"$VAR/filestorage/{name}.fs"),
            *changes,
        )
        for old, new in changes:
            if old not in conf:
                raise AssertionError(f"{old!r} is not in zeo.conf")
            conf = conf.replace(old, new)
        path = os.path.join(self.directory, f"{name}.conf")
        with open(path, "w") as f:
            f.write(conf)
        self.spawn([ZOPEPY, "-c", f"from ZEO.runzeo import main; main(['-C', {path!r}])"])
        wait_until(f"the {name} server's socket", lambda: os.path.exists(socket_path), 60)
        return socket_path

    def log(self, name):
        try:
            return self.read("var", "log", f"{name}.log")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, name, text, timeout=120):
        return wait_until(
            f"{text!r} in {name}.log", lambda: text in self.log(name), timeout
        )

    def run_foreground(self):
        """``bin/cluster run`` with a suicide timeout, stopped by PID."""
        log = open(os.path.join(self.directory, "run.log"), "wb")
        self._runner = subprocess.Popen(
            [self.script("cluster"), "run", "--timeout", str(SUICIDE_TIMEOUT)],
            cwd=self.directory,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        wait_until(
            "the foreground cluster to serve every instance",
            lambda: self._runner.poll() is not None or self.all_serving(),
            180,
        )
        if self._runner.poll() is not None:
            raise AssertionError("cluster run exited:\n" + self.read("run.log"))

    def stop_foreground(self, timeout=60):
        if self._runner is None:
            return None
        if self._runner.poll() is None:
            self._runner.send_signal(signal.SIGTERM)
            try:
                self._runner.wait(timeout)
            except subprocess.TimeoutExpired:
                self._runner.kill()
                self._runner.wait()
        code, self._runner = self._runner.returncode, None
        return code

    def cleanup(self):
        """Stop whatever still runs (by PID) and remove the folder."""
        for function, args in reversed(self._cleanups):
            function(*args)
        self.stop_foreground()
        for child in self._children:
            stop_process(child)
            if child.stdout:
                child.stdout.close()
        if os.path.exists(self.script("cluster")) and pids_under(self.directory):
            self.stop()
        kill_pids(pids_under(self.directory))
        shutil.rmtree(self.directory, ignore_errors=True)

    # -- what the cluster shows ----------------------------------------

    def wait_connected(self, why="", timeout=60):
        """Wait until every instance answers /zeo-health with 200."""
        for name in self.instances:
            wait_until(f"{name} to be connected{why}",
                       lambda: self.health(name) == "ok", timeout)

    def health(self, instance):
        """What *instance* answers on /zeo-health ("ok", "disconnected",
        "stopping"), or None while it does not listen (a restart, say)."""
        try:
            return self.http(instance, "GET", "/zeo-health", auth=False,
                             timeout=5).text.strip()
        except OSError:
            return None

    def add_folder(self, instance, folder, title):
        return self.http(
            instance,
            "POST",
            "/manage_addProduct/OFSP/manage_addFolder",
            data={"id": folder, "title": title},
        )

    def title(self, instance, folder):
        """(status, title or body, X-ZEO-Status header) of *folder*."""
        response = self.http(instance, "GET", f"/{folder}/title_or_id")
        return response.status, response.text, response.headers.get("X-ZEO-Status")

    def read(self, *path):
        with open(os.path.join(self.directory, *path)) as f:
            return f.read()

    @property
    def password(self):
        return self.read("var", "admin-password").strip()

    def url(self, instance):
        """The URL *instance* serves on (it bound port 0 and logged it).

        The last one logged; after a log rotation, the last one seen.
        """
        found = re.findall(r"Serving on (http://[\d.]+:\d+)", self.log(instance))
        if found:
            self._urls[instance] = found[-1] + "/"
        return self._urls.get(instance)

    def serving(self, instance):
        url = self.url(instance)
        if url is None:
            return False
        try:
            self.http(instance, "GET", "/", auth=False, timeout=2)
        except OSError:
            return False
        return True

    def all_serving(self):
        return all(self.serving(name) for name in self.instances)

    def server_port(self):
        """The TCP port the ZEO server really listens on (it bound port 0).

        ZEO logs the configured address, port 0, so the port is read from
        the kernel: the listening sockets among the server process's files.
        """
        try:
            pid = int(self.read("var", "zeoserver.pid").strip())
        except (FileNotFoundError, ValueError):
            return None
        ports = listening_ports(pid)
        return ports[0] if ports else None

    def http(self, instance, method, path, data=None, auth=True, timeout=30, headers=(),
             follow_redirects=True):
        """A request to *instance* ("balancer": through HAProxy); returns
        a Response for any status."""
        body = None
        if data is not None:
            body = urllib.parse.urlencode(data).encode()
        base = self.balancer_url if instance == "balancer" else self.url(instance)
        request = urllib.request.Request(base + path.lstrip("/"), data=body, method=method)
        for name, value in dict(headers).items():
            request.add_header(name, value)
        if auth:
            user, password = auth if isinstance(auth, tuple) else ("admin", self.password)
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            request.add_header("Authorization", "Basic " + token)
        opener = urllib.request.build_opener(
            *(() if follow_redirects else (NoRedirects,))
        )
        try:
            with opener.open(request, timeout=timeout) as response:
                return Response(response.status, response.headers, response.read())
        except urllib.error.HTTPError as e:
            return Response(e.code, e.headers, e.read())

    def transaction_notes(self):
        """The descriptions of all transactions on the server, in order."""
        return self._client_script(
            "for t in storage.iterator():\n"
            "    print(t.description.decode('utf-8', 'replace').replace('\\n', ' '))\n"
        ).splitlines()

    def make_garbage(self, megabytes):
        """Commit about *megabytes* of objects, then unlink them all, so
        that a pack has that much to remove."""
        return self._client_script(
            "import ZODB, transaction\n"
            "from persistent.mapping import PersistentMapping\n"
            "db = ZODB.DB(storage)\n"
            f"for i in range({megabytes}):\n"
            "    with db.transaction() as conn:\n"
            "        junk = conn.root().setdefault('junk', PersistentMapping())\n"
            "        for j in range(100):\n"
            "            junk[(i, j)] = PersistentMapping(data=os.urandom(10000))\n"
            "with db.transaction() as conn:\n"
            "    del conn.root()['junk']\n"
            "print(storage.getSize())\n"
        )

    def server_status(self, **env):
        """ZEO's ``server_status()`` of the server, as a dict."""
        return json.loads(self._client_script(
            "import json\nprint(json.dumps(storage.server_status(), default=str))\n", **env))

    def last_transaction(self, **env):
        """The server's last transaction id, as 16 hex digits."""
        return self._client_script("print(storage.lastTransaction().hex())\n", **env).strip()

    def _client_script(self, body, **env):
        """Run *body* with ``storage``, a ZEO client of its own (no cache
        file), so that it sees the server's view, not an instance's."""
        return self.python(
            "address = os.environ['ZEO_ADDRESS']\n"
            "if not address.startswith('/'):\n"
            "    host, port = address.rsplit(':', 1); address = (host, int(port))\n"
            "storage = ZEO.client(address, wait_timeout=30)\n"
            + body
            + "storage.close()\n",
            **env,
        )

    def python(self, code, **env):
        """Run *code* with the bundle's eggs; ``os`` and ``ZEO`` imported,
        ZEO_ADDRESS and BLOBS in the environment.  Returns its output."""
        result = subprocess.run(
            [ZOPEPY, "-c", "import os, ZEO\n" + code],
            env={
                **os.environ,
                "ZEO_ADDRESS": self.client_address(),
                "BLOBS": os.path.join(self.var, "blobstorage"),
                **env,
            },
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise AssertionError(result.stderr)
        return result.stdout

    def client_address(self):
        return self.settings.get(
            "zeo:client-address",
            self.settings.get("zeo:address", os.path.join(self.var, "zeo.sock")),
        )


HOLDER_NOTE = "the lock holder's transaction"

# A plain ZEO client that takes the server's commit lock and keeps it: it
# changes the title of folder FOLDER, votes (from then on the server holds
# the commit lock for it), says VOTED and waits for a line on stdin before
# it finishes.  Then it says FINISHED or FAILED and why.
LOCK_HOLDER = f"""
import os, sys, ZEO, ZODB, transaction
address = os.environ["ZEO_ADDRESS"]
if not address.startswith("/"):
    host, port = address.rsplit(":", 1); address = (host, int(port))
kw = {{}}
if os.environ.get("ZEO_CA"):  # TLS with a client certificate
    import ssl
    context = ssl.create_default_context(cafile=os.environ["ZEO_CA"])
    context.load_cert_chain(os.environ["ZEO_CERT"], os.environ["ZEO_KEY"])
    kw = dict(ssl=context, ssl_server_hostname="127.0.0.1")
db = ZODB.DB(ZEO.client(address, wait_timeout=30, **kw))
tm = transaction.TransactionManager()
conn = db.open(tm)
conn.root()["Application"][os.environ["FOLDER"]].title = "changed by the lock holder"
txn = tm.get()
txn.note({HOLDER_NOTE!r})
conn.tpc_begin(txn)
conn.commit(txn)
conn.tpc_vote(txn)
print("VOTED", flush=True)
sys.stdin.readline()
try:
    conn.tpc_finish(txn)
    print("FINISHED", flush=True)
except Exception as exc:
    print("FAILED", type(exc).__name__, exc, flush=True)
"""


class LockHolder:
    """LOCK_HOLDER in a child process with the bundle's eggs.

    Stopped by PID in a cleanup registered here (continued first, in case
    a test stopped it); its output is read by a thread, so that waiting
    for a line is bounded in time.
    """

    def __init__(self, test, bundle, folder, address=None, env=()):
        self.process = subprocess.Popen(
            [ZOPEPY, "-c", LOCK_HOLDER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=dict(os.environ, ZEO_ADDRESS=address or bundle.client_address(),
                     FOLDER=folder, **dict(env)),
            start_new_session=True,
        )
        test.addCleanup(self.stop)
        self.lines = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def said(self, word):
        """The first line it printed that starts with *word*, or None."""
        exited = self.process.poll() is not None
        if exited:
            self.reader.join(10)  # its last lines
        found = next((line for line in self.lines if line.startswith(word)), None)
        if found is None and exited:
            raise AssertionError(
                f"the lock holder exited without saying {word}:\n" + "\n".join(self.lines)
            )
        return found

    def wait_for(self, word, timeout=60):
        return wait_until(f"the lock holder to say {word}", lambda: self.said(word), timeout)

    def signal(self, signum):
        os.kill(self.process.pid, signum)

    def finish(self):
        """Let it go on from its vote to tpc_finish."""
        self.process.stdin.write("\n")
        self.process.stdin.flush()

    def stop(self):
        try:
            self.signal(signal.SIGCONT)
        except ProcessLookupError:
            pass
        stop_process(self.process)
        self.reader.join(10)
        self.process.stdin.close()
        self.process.stdout.close()
