"""The ZEO tab of the Control Panel against a real server and instance."""

import base64
import json
import unittest

from wsgiproxy import HostProxy
from zope.testbrowser.browser import Browser

from .harness import LockHolder
from .harness import wait_until
from .layers import DaemonClusterLayer

PANEL = "/Control_Panel/ZEO"


class ControlPanelTests(unittest.TestCase):

    layer = DaemonClusterLayer

    @property
    def bundle(self):
        return self.layer.bundle

    def status(self, instance="instance1"):
        response = self.bundle.http(instance, "GET", f"{PANEL}/status.json")
        self.assertEqual(response.status, 200, response.text[:300])
        self.assertEqual(response.headers["Content-Type"], "application/json")
        return json.loads(response.text)

    def main(self):
        return self.status()["databases"]["main"]

    def browser(self):
        url = self.bundle.url("instance1").rstrip("/")
        browser = Browser(url, wsgi_app=HostProxy(url))
        token = base64.b64encode(f"admin:{self.bundle.password}".encode()).decode()
        browser.addHeader("Authorization", f"Basic {token}")
        return browser

    def wait_pack_finished(self, timeout=120):
        return wait_until(
            "the pack to finish",
            lambda: self.main()["pack"]["state"] in ("done", "failed") and self.main(),
            timeout,
        )

    # -- who may see what ---------------------------------------------------

    def test_everything_needs_a_manager(self):
        for path in ("manage_main", "status.json", "metrics"):
            response = self.bundle.http("instance1", "GET", f"{PANEL}/{path}", auth=False)
            self.assertEqual(response.status, 401, path)
        response = self.bundle.http(
            "instance1", "POST", f"{PANEL}/manage_pack", data={"days": "1"}, auth=False
        )
        self.assertEqual(response.status, 401)
        self.assertEqual(self.main()["pack"]["state"], "idle")

    def test_health_is_public_and_says_nothing_else(self):
        response = self.bundle.http("instance1", "GET", "/zeo-health", auth=False)
        self.assertEqual((response.status, response.text), (200, "ok\n"))

    # -- machine-readable ----------------------------------------------------

    def test_status_json(self):
        before = self.status()
        self.assertTrue(before["generated_at"].endswith("Z"))
        main = before["databases"]["main"]
        self.assertIs(main["connected"], True)
        self.assertEqual(main["address"], self.bundle.client_address())
        self.assertRegex(main["last_transaction"]["id"], "^[0-9a-f]{16}$")
        self.assertEqual(main["server"]["connections"], 2)
        cache = main["cache"]
        self.assertIs(cache["persistent"], True)
        self.assertTrue(cache["path"].endswith("instance1-1.zec"))
        self.assertGreater(cache["size"], 0)
        self.assertLess(cache["size"], cache["max_size"])
        # A folder instance1 has never loaded: its first read misses.
        self.assertEqual(self.bundle.add_folder("instance2", "fresh", "x").status, 200)
        wait_until(
            "instance1 to read it",
            lambda: self.bundle.title("instance1", "fresh")[0] == 200,
            30,
        )
        after = self.main()["cache"]
        self.assertGreater(after["hits"] + after["misses"], cache["hits"] + cache["misses"])
        self.assertIn(main["pack"]["state"], ("idle", "done"))

    def test_metrics(self):
        response = self.bundle.http("instance1", "GET", f"{PANEL}/metrics")
        self.assertEqual(response.status, 200)
        self.assertTrue(response.headers["Content-Type"].startswith("text/plain"))
        text = response.text
        for line in (
            'zeo_connected{database="main"} 1.0',
            'zeo_cache_hits_total{database="main"}',
            'zeo_cache_misses_total{database="main"}',
            'zeo_cache_bytes{database="main"}',
            'zeo_server_commits_total{database="main"}',
            'zeo_reconnects_total{database="main"}',
        ):
            self.assertIn(line, text)

    # -- the screen and its buttons ------------------------------------------

    def test_screen_shows_the_figures(self):
        browser = self.browser()
        browser.open(browser.url + PANEL + "/manage_main")
        contents = browser.contents
        for text in (
            "connected",
            self.bundle.client_address(),
            "Hits / misses",
            "Hit ratio",
            "Connected clients",
            "Recent events",
            "<svg",
        ):
            self.assertIn(text, contents)
        self.assertIn("ZEO", browser.getLink("ZEO").text)

    def test_reconnect_now_button(self):
        before = self.main()["reconnects"]
        browser = self.browser()
        browser.open(browser.url + PANEL + "/manage_main")
        browser.getControl("Reconnect now").click()
        self.assertIn("dropped; reconnecting", browser.contents)
        wait_until(
            "the reconnection",
            lambda: self.main()["reconnects"] == before + 1 and self.main()["connected"],
            30,
        )
        self.assertEqual(self.bundle.http("instance1", "GET", "/manage_main").status, 200)

    def test_pack_button_returns_before_a_long_pack_ends(self):
        # A client holds the commit lock, which FileStorage's pack needs
        # for its last phase: the pack cannot end before the holder lets
        # go, however fast this machine is.
        self.bundle.make_garbage(40)
        self.assertEqual(self.bundle.add_folder("instance1", "packhold", "").status, 200)
        holder = LockHolder(self, self.bundle, "packhold")
        holder.wait_for("VOTED")
        token = self.token()
        browser = self.browser()
        browser.open(browser.url + PANEL + "/manage_main")
        browser.getControl(name="days").value = "0"
        browser.getControl("Pack").click()
        self.assertIn("Pack of main started", browser.contents)
        self.assertEqual(self.main()["pack"]["state"], "running")
        again = self.bundle.http(
            "instance1",
            "POST",
            f"{PANEL}/manage_pack",
            data={"days": "0", "_authenticator": token},
        )
        self.assertEqual(again.status, 409, again.text[:300])
        holder.finish()
        holder.wait_for("FINISHED")
        main = self.wait_pack_finished()
        pack = main["pack"]
        self.assertEqual(pack["state"], "done", pack)
        self.assertLess(pack["size_after"], pack["size_before"] - 20_000_000)
        self.assertIn("running since", again.text)
        browser.open(browser.url)
        self.assertIn("Last pack: finished", browser.contents)

    def token(self):
        browser = self.browser()
        browser.open(browser.url + PANEL + "/manage_main")
        return browser.getControl(name="_authenticator", index=0).value

    def test_bad_pack_input_is_a_clear_400_and_changes_nothing(self):
        before = self.main()["pack"]
        token = self.token()
        cases = (
            ({"days": "abc", "_authenticator": token}, "days must be a number"),
            ({"days": "-1", "_authenticator": token}, "between 0 and"),
            ({"days": "1e12", "_authenticator": token}, "between 0 and"),
            ({"days": "1"}, "security token"),
            ({"days": "1", "_authenticator": "forged"}, "security token"),
            ({"days": "1", "_authenticator": token, "database": "nope"}, "no ZEO database"),
        )
        for data, words in cases:
            response = self.bundle.http("instance1", "POST", f"{PANEL}/manage_pack", data=data)
            self.assertEqual(response.status, 400, (data, response.text))
            self.assertIn(words, response.text)
            self.assertIn("Nothing was changed", response.text)
            self.assertNotIn("Traceback", response.text)
        response = self.bundle.http("instance1", "GET", f"{PANEL}/manage_pack?days=1")
        self.assertEqual(response.status, 400)
        self.assertIn("needs a POST", response.text)
        self.assertEqual(self.main()["pack"], before)

    def test_zz_screen_renders_while_the_server_is_down(self):
        # Named to run last in this layer: it stops the server.
        self.addCleanup(self.restart_server)
        self.assertEqual(self.bundle.run_script("zeoserver", "stop").returncode, 0)
        self.bundle.wait_for_log("instance1", "lost the connection", 30)
        response = self.bundle.http("instance1", "GET", f"{PANEL}/manage_main")
        self.assertEqual(response.status, 200)
        self.assertIn("The ZEO server is unreachable", response.text)
        self.assertIn("disconnected", response.text)
        main = self.main()
        self.assertIs(main["connected"], False)
        self.assertIsNone(main["server"])
        health = self.bundle.http("instance1", "GET", "/zeo-health", auth=False)
        self.assertEqual((health.status, health.text), (503, "disconnected\n"))

    def restart_server(self):
        self.bundle.run_script("zeoserver", "start")
        wait_until("reconnection", lambda: self.main()["connected"], 30)
