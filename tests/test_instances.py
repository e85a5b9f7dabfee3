"""N instances from one setting: a bundle with ``settings:instances=3``."""

import functools
import os
import unittest
import uuid

from Products.ZEOClient.scripts.balancer import find_haproxy

from .harness import own_bundle
from .harness import wait_until
from .layers import OwnBundlesLayer


class ThreeInstancesTests(unittest.TestCase):
    """One bundle of three instances, built and run by bin/cluster."""

    layer = OwnBundlesLayer

    def test_three_instances_serve_one_database(self):
        balanced = find_haproxy() is not None  # .ci/run installs it
        bundle = own_bundle(self, instances=3).build(
            **{"settings:balancer": "on" if balanced else "off"}
        )
        self.assertEqual(bundle.instances, ["instance1", "instance2", "instance3"])
        for name in bundle.instances:
            self.assertTrue(os.path.exists(bundle.script(name)), name)
            self.assertFalse(
                os.path.exists(os.path.join(bundle.directory, "parts", name, "inituser"))
            )
            unit = bundle.read("etc", "generated", f"zeocluster-{name}.service")
            self.assertIn(f"ExecStart={bundle.script(name)} start", unit)
        self.assertFalse(os.path.exists(bundle.script("instance4")))

        self.addCleanup(bundle.stop)
        started = bundle.start()  # returns once every instance answers HTTP
        for name in bundle.instances:
            self.assertIn(f"{name}: http://127.0.0.1:", started.stdout)
        status = bundle.run_script("cluster", "status")
        self.assertEqual(status.stdout.count(" up "), 4 + balanced, status.stdout)
        urls = {bundle.url(name) for name in bundle.instances}
        self.assertEqual(len(urls), 3, urls)  # three ports, bound by three processes
        for name in bundle.instances:
            self.assertEqual(bundle.http(name, "GET", "/", auth=False).status, 200, name)

        folder = "f" + uuid.uuid4().hex[:12]
        title = "Made on instance1 " + folder
        added = bundle.add_folder("instance1", folder, title)
        self.assertEqual(added.status, 200, added.text[:500])

        def read_on(name):
            status, text, _ = bundle.title(name, folder)
            return status == 200 and text

        for name in ("instance3", "instance2"):
            read = functools.partial(read_on, name)
            self.assertEqual(wait_until(f"the folder on {name}", read, 30), title)
        if not balanced:
            print("haproxy is not installed: the balancer part of this test is skipped")
            return
        # The balancer has all three in rotation and serves through them.
        self.assertIn("instance1 UP, instance2 UP, instance3 UP", status.stdout)
        for _ in range(6):
            answer = bundle.http("balancer", "GET", f"/{folder}/title_or_id")
            self.assertEqual((answer.status, answer.text), (200, title))
