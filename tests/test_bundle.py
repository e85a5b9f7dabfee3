"""The bundle end to end: real ZEO server, real Zope instances."""

import os
import stat
import unittest
import uuid

from .harness import pids_under
from .harness import wait_until
from .layers import BuiltBundleLayer
from .layers import TCPClusterLayer
from .layers import UnixClusterLayer

INSTANCES = ("instance1", "instance2")


class ClusterChecks:
    """What every running bundle must do, whatever its transport."""

    layer = None

    @property
    def bundle(self):
        return self.layer.bundle

    def test_manage_main_needs_the_admin_password(self):
        for instance in INSTANCES:
            with_auth = self.bundle.http(instance, "GET", "/manage_main")
            self.assertEqual(with_auth.status, 200, instance)
            self.assertIn("Control_Panel", with_auth.text)
            anonymous = self.bundle.http(instance, "GET", "/manage_main", auth=False)
            self.assertEqual(anonymous.status, 401, instance)

    def test_folder_added_on_instance1_is_read_on_instance2(self):
        folder = "f" + uuid.uuid4().hex[:12]
        title = "Made on instance1 " + folder
        added = self.bundle.http(
            "instance1",
            "POST",
            "/manage_addProduct/OFSP/manage_addFolder",
            data={"id": folder, "title": title},
        )
        self.assertEqual(added.status, 200, added.text[:500])

        def read_on_instance2():
            response = self.bundle.http("instance2", "GET", f"/{folder}/title_or_id")
            return response.status == 200 and response.text

        self.assertEqual(wait_until("the folder on instance2", read_on_instance2, 30), title)


class UnixSocketTests(ClusterChecks, unittest.TestCase):

    layer = UnixClusterLayer

    def test_server_listens_on_an_owner_only_socket(self):
        path = os.path.join(self.bundle.var, "zeo.sock")
        mode = os.stat(path).st_mode
        self.assertTrue(stat.S_ISSOCK(mode))
        self.assertEqual(mode & 0o077, 0, oct(mode))
        log = self.bundle.read("var", "log", "instance1.log")
        self.assertIn(f"Connected to storage: {path}", log)

    def test_admin_password_file_is_owner_only(self):
        mode = os.stat(os.path.join(self.bundle.var, "admin-password")).st_mode
        self.assertEqual(stat.S_IMODE(mode), 0o600)
        self.assertGreaterEqual(len(self.bundle.password), 16)

    def test_password_is_not_in_buildout_files(self):
        password = self.bundle.password
        for name in (".installed.cfg", "buildout.cfg"):
            self.assertNotIn(password, self.bundle.read(name))
        for instance in INSTANCES:
            conf = self.bundle.read("parts", instance, "etc", "zope.conf")
            self.assertNotIn(password, conf)
            self.assertFalse(
                os.path.exists(os.path.join(self.bundle.directory, "parts", instance, "inituser"))
            )

    def test_zeoinit_again_writes_nothing(self):
        before = self.bundle.last_transaction()
        result = self.bundle.run_script("zeoinit")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("nothing written", result.stdout)
        self.assertEqual(self.bundle.last_transaction(), before)


class TCPTests(ClusterChecks, unittest.TestCase):

    layer = TCPClusterLayer

    def test_clients_connect_over_tcp(self):
        address = self.bundle.settings["zeo:client-address"]
        host, port = address.split(":")
        self.assertEqual(host, "127.0.0.1")
        for instance in INSTANCES:
            log = self.bundle.read("var", "log", f"{instance}.log")
            self.assertIn(f"Protocol(('127.0.0.1', {port})", log)
        self.assertFalse(os.path.exists(os.path.join(self.bundle.var, "zeo.sock")))


class StartStopTests(unittest.TestCase):
    """bin/cluster start/stop/status, which make start/stop/status call."""

    layer = BuiltBundleLayer

    def test_start_status_stop_leaves_no_process(self):
        bundle = self.layer.bundle
        self.addCleanup(bundle.stop)
        started = bundle.start()
        for instance in INSTANCES:
            self.assertIn(f"{instance}: http://127.0.0.1:", started.stdout)
        self.assertIn("admin-password", started.stdout)
        status = bundle.run_script("cluster", "status")
        self.assertEqual(status.returncode, 0, status.stdout)
        self.assertEqual(status.stdout.count(" up "), 3, status.stdout)
        self.assertTrue(pids_under(bundle.directory))

        stopped = bundle.stop()
        self.assertEqual(stopped.returncode, 0, stopped.stdout + stopped.stderr)
        wait_until("no process of the bundle", lambda: not pids_under(bundle.directory), 30)
        status = bundle.run_script("cluster", "status")
        self.assertEqual(status.returncode, 1)
        self.assertEqual(status.stdout.count("DOWN"), 3, status.stdout)


class EnvironmentSettingsTests(unittest.TestCase):
    """BUNDLE_SETTINGS: a layer run with a setting changed for every
    bundle it builds (``BUNDLE_SETTINGS=zeo:direct-calls=on``)."""

    def test_settings_from_the_environment_and_the_test_wins(self):
        from unittest import mock

        from .harness import Bundle

        with mock.patch.dict(os.environ, {"BUNDLE_SETTINGS": "zeo:direct-calls=on ports:base=9000"}):
            bundle = Bundle(**{"ports:base": "7000"})
        self.addCleanup(bundle.cleanup)
        self.assertEqual(bundle.settings, {"zeo:direct-calls": "on", "ports:base": "7000"})

    def test_a_malformed_item_says_which(self):
        from unittest import mock

        from .harness import environment_settings

        with mock.patch.dict(os.environ, {"BUNDLE_SETTINGS": "zeo:direct-calls=on direct-calls"}):
            with self.assertRaises(ValueError) as raised:
                environment_settings()
        self.assertIn("'direct-calls' is not section:option=value", str(raised.exception))
