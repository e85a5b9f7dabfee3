"""Survive the server: real server, real instances, real outages."""

import os
import shutil
import time
import unittest
import uuid

from .harness import own_bundle
from .harness import wait_until
from .layers import OwnBundlesLayer
from .proxy import UnixProxy

LOST = "lost the connection to the ZEO server"
VERIFIED = "client cache verified:"
# Generous bounds for a noisy 2-core box; the real figures are far lower
# (see the closing note of the issue and README.txt).
FAST = 10.0


def name():
    return "f" + uuid.uuid4().hex[:10]


class OutageTests(unittest.TestCase):

    layer = OwnBundlesLayer

    def bundle(self, **settings):
        bundle = own_bundle(self)
        bundle.build(**settings)
        return bundle

    def started(self, **settings):
        bundle = self.bundle(**settings)
        bundle.start()
        return bundle

    def stop_server(self, bundle):
        result = bundle.run_script("zeoserver", "stop")
        self.assertEqual(result.returncode, 0, result.stdout)
        for instance in bundle.instances:
            bundle.wait_for_log(instance, LOST, 30)

    def test_outage_reads_cache_writes_fail_fast_then_reconnect(self):
        bundle = self.started()
        seen = name()
        self.assertEqual(bundle.add_folder("instance1", seen, "seen").status, 200)
        self.assertEqual(bundle.title("instance1", seen)[:2], (200, "seen"))
        unseen = name()  # added through instance2: not current in instance1
        self.assertEqual(bundle.add_folder("instance2", unseen, "unseen").status, 200)
        wait_until(
            "instance2 to serve the folder",
            lambda: bundle.title("instance2", unseen)[0] == 200,
            30,
        )
        # Adding it changed the root folder: load that again on instance1,
        # but not the new folder itself.
        self.assertEqual(bundle.title("instance1", seen)[:2], (200, "seen"))

        self.stop_server(bundle)
        outage_started = bundle.log("instance1").count(LOST)

        # Cached pages: served, and marked.
        self.assertEqual(bundle.title("instance1", seen), (200, "seen", "disconnected"))

        # A write: a quick, clear 503 that saved nothing.
        failed = name()
        began = time.monotonic()
        response = bundle.add_folder("instance1", failed, "never")
        elapsed = time.monotonic() - began
        self.assertEqual(response.status, 503, response.text)
        self.assertLess(elapsed, FAST)
        self.assertEqual(response.headers["Retry-After"], "10")
        self.assertEqual(response.headers["X-ZEO-Status"], "disconnected")
        self.assertTrue(response.headers["Content-Type"].startswith("text/plain"))
        self.assertIn("database server is unreachable", response.text)
        self.assertIn("Nothing was saved", response.text)
        self.assertNotIn("Traceback", response.text)

        browser = bundle.http(
            "instance1",
            "POST",
            "/manage_addProduct/OFSP/manage_addFolder",
            data={"id": failed, "title": "never"},
            headers={"Accept": "text/html,application/xhtml+xml"},
        )
        self.assertEqual(browser.status, 503)
        self.assertTrue(browser.headers["Content-Type"].startswith("text/html"))
        self.assertIn("<h1>The database server is unreachable.</h1>", browser.text)

        # A read of an object that is not current in the cache: 503 too.
        began = time.monotonic()
        status, body, header = bundle.title("instance1", unseen)
        self.assertEqual(status, 503, body)
        self.assertLess(time.monotonic() - began, FAST)
        self.assertEqual(header, "disconnected")

        # Back: reconnect by itself, writes work, nothing of the 503s exists.
        time.sleep(3)  # let ZEO retry a few times: it must not log each one
        result = bundle.run_script("zeoserver", "start")
        self.assertEqual(result.returncode, 0, result.stdout)
        back = time.monotonic()
        wait_until(
            "instance1 to reconnect",
            lambda: bundle.log("instance1").count("reconnected to the ZEO server") == 1,
            30,
        )
        reconnect_seconds = time.monotonic() - back
        self.assertLess(reconnect_seconds, 30)
        later = name()
        self.assertEqual(bundle.add_folder("instance1", later, "later").status, 200)
        bundle.wait_for_log("instance2", "reconnected to the ZEO server", 30)
        wait_until(
            "instance2 to read what instance1 wrote",
            lambda: bundle.title("instance2", later)[:2] == (200, "later"),
            30,
        )
        self.assertEqual(bundle.title("instance2", failed)[0], 404)
        self.assertEqual(bundle.title("instance1", unseen), (200, "unseen", None))

        log = bundle.log("instance1")
        self.assertEqual(log.count(LOST), outage_started)
        self.assertEqual(log.count(LOST), 1)
        self.assertNotIn("retry connecting", log)
        self.assertNotIn("Traceback", log)

    def test_start_from_warm_cache_while_server_is_down(self):
        bundle = self.started()
        folder = name()
        self.assertEqual(bundle.add_folder("instance1", folder, "cached").status, 200)
        self.assertEqual(bundle.title("instance1", folder)[:2], (200, "cached"))
        self.assertEqual(bundle.http("instance1", "GET", "/manage_main").status, 200)
        for script in ("instance1", "zeoserver"):
            self.assertEqual(bundle.run_script(script, "stop").returncode, 0)

        serving = bundle.log("instance1").count("serving loop started")
        began = time.monotonic()
        bundle.start_instance("instance1")
        wait_until(
            "instance1 to serve without its server",
            lambda: bundle.log("instance1").count("serving loop started") > serving,
            60,
        )
        start_seconds = time.monotonic() - began
        self.assertLess(start_seconds, 60)
        self.assertIn("starting from the client cache", bundle.log("instance1"))
        self.assertEqual(bundle.title("instance1", folder), (200, "cached", "disconnected"))
        self.assertEqual(bundle.add_folder("instance1", name(), "x").status, 503)

        self.assertEqual(bundle.run_script("zeoserver", "start").returncode, 0)
        bundle.wait_for_log("instance1", "connected to the ZEO server", 30)
        wait_until(
            "instance1 to drop the disconnected mark",
            lambda: bundle.title("instance1", folder) == (200, "cached", None),
            30,
        )

    def test_cold_cache_and_no_server_is_one_clear_line(self):
        bundle = self.bundle()
        bundle.start_server()
        self.assertEqual(bundle.run_script("zeoinit").returncode, 0)
        self.assertEqual(bundle.run_script("zeoserver", "stop").returncode, 0)
        process = bundle.console("instance2")  # never started: empty cache
        output, _ = process.communicate(timeout=120)
        self.assertNotEqual(process.returncode, 0)
        self.assertIn(
            "does not answer and the client cache does not hold the database's root",
            output.decode(),
        )

    def test_partition_then_heal_never_serves_old_data_unmarked(self):
        bundle = own_bundle(self)
        proxy_path = os.path.join(bundle.directory, "proxy.sock")
        bundle.build(**{"instance1:zeo-address": proxy_path})
        proxy = UnixProxy(proxy_path, os.path.join(bundle.var, "zeo.sock"))
        self.addCleanup(proxy.close)
        bundle.start()
        folder = name()
        self.assertEqual(bundle.add_folder("instance2", folder, "old").status, 200)
        wait_until(
            "instance1 to read the folder",
            lambda: bundle.title("instance1", folder)[:2] == (200, "old"),
            30,
        )

        proxy.cut()
        bundle.wait_for_log("instance1", LOST, 30)
        changed = bundle.http(
            "instance2", "POST", f"/{folder}/manage_changeProperties", data={"title": "new"}
        )
        self.assertEqual(changed.status, 200, changed.text[:300])
        self.assertEqual(bundle.title("instance2", folder)[:2], (200, "new"))
        # Partitioned: the old page, but marked as possibly stale.
        self.assertEqual(bundle.title("instance1", folder), (200, "old", "disconnected"))

        proxy.heal()
        answers = []

        def fresh():
            answer = bundle.title("instance1", folder)
            answers.append(answer)
            return answer == (200, "new", None)

        wait_until("instance1 to serve the new title", fresh, 30, interval=0.05)
        for answer in answers:
            if answer[1] == "old":
                self.assertEqual(answer[2], "disconnected", answers)
        self.assertIn(f"{VERIFIED} quick verification", bundle.log("instance1"))

    def test_cache_older_than_the_invalidation_queue_is_dropped(self):
        bundle = self.started(
            **{"zeo:invalidation-queue-size": "2", "zeo:invalidation-age": "0"}
        )
        folder = name()
        self.assertEqual(bundle.add_folder("instance1", folder, "v0").status, 200)
        self.assertEqual(bundle.title("instance1", folder)[:2], (200, "v0"))
        self.assertEqual(bundle.run_script("instance1", "stop").returncode, 0)
        for n in range(1, 6):
            response = bundle.http(
                "instance2", "POST", f"/{folder}/manage_changeProperties",
                data={"title": f"v{n}"},
            )
            self.assertEqual(response.status, 200)
        bundle.start_instance("instance1")
        bundle.wait_for_log("instance1", f"{VERIFIED} dropped because too old", 60)
        wait_until(
            "instance1 to serve",
            lambda: bundle.serving("instance1"),
            60,
        )
        self.assertEqual(bundle.title("instance1", folder), (200, "v5", None))

    def test_cache_newer_than_the_server_is_dropped_not_looped(self):
        bundle = self.started()
        before = name()
        self.assertEqual(bundle.add_folder("instance1", before, "kept").status, 200)
        self.assertEqual(bundle.title("instance1", before)[:2], (200, "kept"))
        self.assertEqual(bundle.stop().returncode, 0)
        data = os.path.join(bundle.var, "filestorage", "Data.fs")
        shutil.copy(data, data + ".backup")

        bundle.start()
        after = name()
        self.assertEqual(bundle.add_folder("instance1", after, "lost").status, 200)
        self.assertEqual(bundle.title("instance1", after)[:2], (200, "lost"))
        self.assertEqual(bundle.stop().returncode, 0)
        # The server's data is restored from the backup: older than the cache.
        shutil.copy(data + ".backup", data)
        for suffix in (".index", ".tmp", ".lock"):
            if os.path.exists(data + suffix):
                os.unlink(data + suffix)

        bundle.start()
        bundle.wait_for_log(
            "instance1", f"{VERIFIED} dropped because newer than the server", 60
        )
        self.assertIn("is newer than the server's", bundle.log("instance1"))
        self.assertNotIn("AssertionError", bundle.log("instance1"))
        self.assertEqual(bundle.title("instance1", before)[:2], (200, "kept"))
        self.assertEqual(bundle.title("instance1", after)[0], 404)


class CacheKeptAcrossStopsTests(unittest.TestCase):
    """What an instance loaded is in its persistent cache when it starts
    again with the server down: everything after a clean stop, and after
    SIGKILL all but the last flush interval's worth (2 s)."""

    layer = OwnBundlesLayer

    def test_loads_survive_a_clean_stop_and_a_kill(self):
        bundle = own_bundle(self)
        bundle.build()
        bundle.start()
        folders = [name() for _ in range(20)]
        for folder in folders:
            self.assertEqual(bundle.add_folder("instance1", folder, "t " + folder).status, 200)
        # Only reads on both instances: no commit that would flush ZEO's
        # cache file by itself.
        for instance in ("instance1", "instance2"):
            self.assertEqual(bundle.run_script(instance, "restart").returncode, 0)
        bundle.wait_connected(" after the restart")
        for instance in ("instance1", "instance2"):
            for folder in folders:
                self.assertEqual(bundle.title(instance, folder)[:2], (200, "t " + folder))
        cache = os.path.join(bundle.var, "cache", "instance1-1.zec")

        def flushed():
            with open(cache, "rb") as f:
                data = f.read()
            return all(("t " + folder).encode() in data for folder in folders)

        wait_until("instance1's loads to reach its cache file", flushed, 30)
        out = bundle.run_script("instance1", "status").stdout
        pid = int(out.rsplit("pid=", 1)[1].split()[0])
        self.assertEqual(bundle.run_script("instance2", "stop").returncode, 0)
        self.assertEqual(bundle.run_script("zeoserver", "stop").returncode, 0)
        os.kill(pid, 9)  # zdaemon starts it again, with the server down
        bundle.start_instance("instance2")
        for instance in ("instance1", "instance2"):
            wait_until(f"{instance} to serve from its cache", lambda: bundle.serving(
                instance) and bundle.title(instance, folders[0])[0] == 200, 120)
            for folder in folders:
                self.assertEqual(bundle.title(instance, folder),
                                 (200, "t " + folder, "disconnected"), instance)
