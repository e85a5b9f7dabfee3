"""The ZEO tab as a person sees it, in a real headless Chromium.

Playwright drives Debian's chromium (it cannot download its own browser
here).  Without /usr/bin/chromium the test is skipped on a developer's
machine and fails in CI, where .ci/run installs it.
"""

import os
import unittest

from .harness import CHECKOUT
from .harness import wait_until
from .layers import DaemonClusterLayer

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = os.path.join(CHECKOUT, "var", "screenshots", "zeo-control-panel.png")


class BrowserTests(unittest.TestCase):

    layer = DaemonClusterLayer

    def setUp(self):
        if not os.path.exists(CHROMIUM):
            if os.environ.get("CI"):
                self.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
            self.skipTest(f"{CHROMIUM} is not installed (apt-get install chromium)")
        from playwright.sync_api import sync_playwright

        self.playwright = sync_playwright().start()
        self.addCleanup(self.playwright.stop)
        self.browser = self.playwright.chromium.launch(
            executable_path=CHROMIUM, args=ARGS, timeout=60_000
        )
        self.addCleanup(self.browser.close)
        bundle = self.layer.bundle
        self.context = self.browser.new_context(
            http_credentials={"username": "admin", "password": bundle.password},
            viewport={"width": 1280, "height": 1000},
        )
        self.page = self.context.new_page()
        self.url = bundle.url("instance1") + "Control_Panel/ZEO/manage_main"

    def test_zeo_tab_shows_the_key_figures_and_reconnects(self):
        page = self.page
        page.goto(self.url)
        self.assertEqual(page.locator(".zeo-state").first.inner_text(), "connected")
        self.assertTrue(page.locator(".zeo-hit-ratio").first.is_visible())
        self.assertTrue(page.locator(".zeo-commits").first.is_visible())
        self.assertTrue(page.locator(".zeo-chart svg").first.is_visible())
        self.assertIn(
            self.layer.bundle.client_address(),
            page.locator(".zeo-connection").first.inner_text(),
        )
        self.assertEqual(page.locator("a.nav-link", has_text="ZEO").count(), 1)
        os.makedirs(os.path.dirname(SCREENSHOT), exist_ok=True)
        page.screenshot(path=SCREENSHOT, full_page=True)
        self.assertGreater(os.path.getsize(SCREENSHOT), 10_000)

        # "Reconnect now" asks first; accept the browser's confirmation.
        dialogs = []

        def accept(dialog):
            dialogs.append(dialog.message)
            dialog.accept()

        page.on("dialog", accept)
        page.get_by_role("button", name="Reconnect now").first.click()
        page.wait_for_load_state()
        self.assertIn("Drop the connection", dialogs[0])
        self.assertIn("dropped; reconnecting", page.content())

        def connected_again():
            page.goto(self.url)
            return page.locator(".zeo-state").first.inner_text() == "connected"

        wait_until("the screen to show connected again", connected_again, 30, 0.5)
