"""Faults: nothing acknowledged is ever lost (real processes, real kills)."""

import json
import os
import signal
import threading
import time
import unittest

from .harness import CHECKOUT
from .harness import own_bundle
from .harness import pids_under
from .harness import wait_until
from .layers import OwnBundlesLayer

WRITERS = 4


def server_pid(bundle):
    try:
        return int(bundle.read("var", "zeoserver.pid").strip())
    except (FileNotFoundError, ValueError):
        return None


def counts(pid):
    """(threads, open files) of a process, from /proc."""
    return len(os.listdir(f"/proc/{pid}/task")), len(os.listdir(f"/proc/{pid}/fd"))


def instance_pid(bundle, name):
    out = bundle.run_script(name, "status").stdout
    return int(out.rsplit("pid=", 1)[1].split()[0])


def record(name, figures):
    """Keep a scenario's figures in var/faults/ for the operator."""
    folder = os.path.join(CHECKOUT, "var", "faults")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{name}.json"), "w") as f:
        json.dump(figures, f, indent=2)


class FaultTests(unittest.TestCase):

    layer = OwnBundlesLayer

    def started(self):
        bundle = own_bundle(self)
        bundle.build().start()
        return bundle

    def test_server_killed_under_load_loses_no_acknowledged_write(self):
        bundle = self.started()
        for w in range(WRITERS):
            self.assertEqual(bundle.add_folder("instance1", f"writer{w}", "").status, 200)
        wait_until(
            "instance2 to see the writers' folders",
            lambda: bundle.title("instance2", f"writer{WRITERS - 1}")[0] == 200,
            30,
        )
        outcomes = []  # (path, title, status, text, seconds)
        stop = threading.Event()

        def write(w):
            n = 0
            while not stop.is_set() and n < 400:
                instance = ("instance1", "instance2")[n % 2]
                folder, title = f"o{n}", f"writer {w} object {n}"
                began = time.monotonic()
                try:
                    response = bundle.http(
                        instance,
                        "POST",
                        f"/writer{w}/manage_addProduct/OFSP/manage_addFolder",
                        data={"id": folder, "title": title},
                        timeout=60,
                        follow_redirects=False,
                    )
                    outcome = (response.status, response.text)
                except OSError as exc:
                    outcome = (None, repr(exc))
                outcomes.append(
                    (f"writer{w}/{folder}", title, *outcome, time.monotonic() - began)
                )
                n += 1

        threads = [threading.Thread(target=write, args=(w,)) for w in range(WRITERS)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(2)  # load before the kill
            victim = server_pid(bundle)
            os.kill(victim, signal.SIGKILL)
            # zdaemon restarts the server by itself.
            wait_until(
                "a new server process",
                lambda: server_pid(bundle) not in (None, victim)
                and "listening on" in bundle.log("zeoserver").rsplit("spawned process", 1)[-1],
                60,
            )
            time.sleep(4)  # load after the restart
        finally:
            stop.set()
            for thread in threads:
                thread.join(120)

        for name in bundle.instances:
            wait_until(
                f"{name} to be connected",
                lambda: bundle.http(name, "GET", "/zeo-health", auth=False).status == 200,
                60,
            )
        # What the server holds, through a client of its own.
        on_server = json.loads(bundle.python(
            "import json, ZODB\n"
            "storage = ZEO.client(os.environ['ZEO_ADDRESS'], wait_timeout=30)\n"
            "db = ZODB.DB(storage)\n"
            "with db.transaction() as conn:\n"
            "    app = conn.root()['Application']\n"
            f"    found = {{f'writer{{w}}/{{i}}': app[f'writer{{w}}'][i].title\n"
            f"             for w in range({WRITERS}) for i in app[f'writer{{w}}'].objectIds()}}\n"
            "print(json.dumps(found))\n"
            "db.close()\n"
        ))
        statuses = {}
        for path, title, status, text, seconds in outcomes:
            statuses[status] = statuses.get(status, 0) + 1
            self.assertLess(seconds, 60, (path, status))
            # 302: the add's own answer, a redirect to the folder listing.
            self.assertIn(status, (302, 503), (path, status, text[:300]))
            if status == 302:
                self.assertEqual(on_server.get(path), title, path)
            elif "Nothing was saved" in text:
                self.assertNotIn(path, on_server, (path, text))
            else:  # the outcome is unknown: whole or absent
                self.assertIn(on_server.get(path), (title, None), path)
        # And what the instances show is what the server holds.
        for path, title in on_server.items():
            for name in bundle.instances:
                shown = bundle.http(name, "GET", f"/{path}/title_or_id")
                self.assertEqual((shown.status, shown.text), (200, title), (name, path))
        self.assertGreater(statuses.get(302, 0), 20, statuses)
        self.assertGreater(statuses.get(503, 0), 0, statuses)
        record("server-kill", {
            "writes": len(outcomes),
            "by_status": {str(k): v for k, v in statuses.items()},
            "acknowledged_found": statuses.get(302, 0),
            "unknown_outcome": sum(
                1 for o in outcomes if o[2] == 503 and "Nothing was saved" not in o[3]
            ),
            "slowest_s": round(max(o[4] for o in outcomes), 2),
        })

        # ZODB's own checkers on the data file, with the cluster stopped.
        self.assertEqual(bundle.stop().returncode, 0)
        datafs = os.path.join(bundle.var, "filestorage", "Data.fs")
        out = bundle.python(
            "import sys\n"
            "from ZODB.scripts import fstest, fsrefs\n"
            f"fstest.check({datafs!r})\n"
            "from ZODB.FileStorage import FileStorage\n"
            "import io, contextlib\n"
            "buffer = io.StringIO()\n"
            "with contextlib.redirect_stdout(buffer):\n"
            f"    sys.argv = ['fsrefs', {datafs!r}]\n"
            "    fsrefs.main()\n"
            "print('fsrefs:', buffer.getvalue().strip() or 'clean')\n"
        )
        self.assertIn("fsrefs: clean", out)

    def test_restart_storm_leaks_nothing(self):
        bundle = self.started()
        pids = {name: instance_pid(bundle, name) for name in bundle.instances}
        self.assertEqual(bundle.add_folder("instance1", "storm", "0").status, 200)
        before = {name: counts(pid) for name, pid in pids.items()}
        for n in range(1, 21):
            self.assertEqual(bundle.run_script("zeoserver", "restart").returncode, 0)
            for name in bundle.instances:
                wait_until(
                    f"{name} to reconnect ({n})",
                    lambda: bundle.http(name, "GET", "/zeo-health", auth=False).status == 200,
                    60,
                )
            changed = bundle.http(
                "instance2", "POST", "/storm/manage_changeProperties", data={"title": str(n)}
            )
            self.assertEqual(changed.status, 200, changed.text[:300])
        wait_until(
            "instance1 to read the last title",
            lambda: bundle.title("instance1", "storm")[:2] == (200, "20"),
            30,
        )
        after = {name: counts(pid) for name, pid in pids.items()}
        for name in bundle.instances:
            self.assertEqual(instance_pid(bundle, name), pids[name])
            threads_before, files_before = before[name]
            threads_after, files_after = after[name]
            self.assertLessEqual(threads_after, threads_before + 2, (name, before, after))
            self.assertLessEqual(files_after, files_before + 4, (name, before, after))
        self.assertTrue(pids_under(bundle.directory))
        record("restart-storm", {"restarts": 20, "before": before, "after": after})
