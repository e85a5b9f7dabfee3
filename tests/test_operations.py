"""Operations: server health without Zope, log reopening, service files,
caches kept across a short absence."""

import json
import os
import unittest

from .harness import own_bundle
from .harness import wait_until
from .layers import DaemonClusterLayer
from .layers import OwnBundlesLayer


class OperationsTests(unittest.TestCase):

    layer = DaemonClusterLayer

    @property
    def bundle(self):
        return self.layer.bundle

    def test_zeostatus_up(self):
        result = self.bundle.run_script("zeostatus")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn(": up", result.stdout)
        self.assertIn("storage 1: 2 clients", result.stdout)
        data = json.loads(self.bundle.run_script("zeostatus", "--json").stdout)
        self.assertIs(data["up"], True)
        self.assertEqual(data["storages"]["1"]["connections"], 2)
        self.assertRegex(data["storages"]["1"]["last-transaction"], "^[0-9a-f]{16}$")

    def test_zeostatus_down(self):
        missing = os.path.join(self.bundle.directory, "nothing.sock")
        result = self.bundle.run_script("zeostatus", "--address", missing)
        self.assertEqual(result.returncode, 1)
        self.assertIn("DOWN", result.stdout)
        result = self.bundle.run_script("zeostatus", "--json", "--address", missing)
        self.assertEqual(result.returncode, 1)
        self.assertIs(json.loads(result.stdout)["up"], False)

    def test_logs_are_reopened_after_rotation(self):
        log_dir = os.path.join(self.bundle.var, "log")
        self.assertTrue(self.bundle.url("instance1"))  # learnt before rotation
        for name in ("zeoserver", "instance1-access"):
            os.rename(os.path.join(log_dir, f"{name}.log"), os.path.join(log_dir, f"{name}.log.1"))
        result = self.bundle.run_script("zeoserver", "logreopen")
        self.assertEqual(result.returncode, 0, result.stdout)
        self.bundle.wait_for_log("zeoserver", "Log files reopened", 30)
        # The instance reopens a moved log by itself at its next line:
        # every request writes one to the access log.
        self.assertEqual(self.bundle.add_folder("instance1", "afterrotate", "x").status, 200)
        new = os.path.join(log_dir, "instance1-access.log")
        wait_until("a new instance1-access.log", lambda: os.path.exists(new), 30)
        with open(new) as f:
            self.assertIn("manage_addFolder", f.read())

    def test_service_files_are_generated_not_installed(self):
        folder = os.path.join(self.bundle.directory, "etc", "generated")
        for name in ("zeoserver", "instance1", "instance2"):
            unit = self.bundle.read("etc", "generated", f"zeocluster-{name}.service")
            self.assertIn(f"ExecStart={self.bundle.script(name)} start", unit)
            self.assertIn("UMask=0077", unit)
        rotate = self.bundle.read("etc", "generated", "logrotate.conf")
        self.assertIn(os.path.join(self.bundle.var, "log") + "/*.log", rotate)
        self.assertIn("zeoserver logreopen", rotate)
        self.assertTrue(os.path.isdir(folder))

    def test_zeopack_packs(self):
        result = self.bundle.run_script("zeopack", "--days", "0")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("zeopack: packed, keeping 0 days", result.stdout)

    def test_zeopack_refuses_without_room_and_touches_nothing(self):
        datafs = os.path.join(self.bundle.var, "filestorage", "Data.fs")
        before = os.stat(datafs)
        result = self.bundle.run_script("zeopack", "--margin-mb", str(10**9))
        self.assertEqual(result.returncode, 1)
        self.assertIn("zeopack: not packing: only", result.stderr)
        self.assertIn("free some space first", result.stderr)
        self.assertNotIn("Traceback", result.stderr)
        after = os.stat(datafs)
        self.assertEqual((after.st_size, after.st_mtime_ns), (before.st_size, before.st_mtime_ns))
        self.assertFalse(os.path.exists(datafs + ".pack"))

    def test_control_sockets_are_owner_only(self):
        for path in (
            os.path.join(self.bundle.var, "zeoserver.zdsock"),
            os.path.join(self.bundle.var, "instance1", "zopectlsock"),
            os.path.join(self.bundle.var, "instance2", "zopectlsock"),
        ):
            self.assertEqual(os.stat(path).st_mode & 0o077, 0, path)


class ShortAbsenceTests(unittest.TestCase):

    layer = OwnBundlesLayer

    def test_client_away_while_others_commit_keeps_its_cache(self):
        bundle = own_bundle(self)
        bundle.build().start()
        self.assertEqual(bundle.add_folder("instance1", "kept", "v0").status, 200)
        self.assertEqual(bundle.title("instance1", "kept")[:2], (200, "v0"))
        self.assertEqual(bundle.run_script("instance1", "stop").returncode, 0)
        for n in range(1, 121):  # more than 100 transactions
            response = bundle.http(
                "instance2", "POST", "/kept/manage_changeProperties", data={"title": f"v{n}"}
            )
            self.assertEqual(response.status, 200)
        bundle.start_instance("instance1")
        bundle.wait_for_log("instance1", "client cache verified: quick verification", 60)
        self.assertNotIn("dropped", bundle.log("instance1"))
        wait_until("instance1 to serve", lambda: bundle.serving("instance1"), 60)
        self.assertEqual(bundle.title("instance1", "kept"), (200, "v120", None))


class BackupTests(unittest.TestCase):

    layer = OwnBundlesLayer

    def blob_script(self, bundle, body):
        """Run *body* with ``db``, on a ZEO client sharing the blobs."""
        return bundle.python(
            "import ZODB, transaction\n"
            "from ZODB.blob import Blob\n"
            "storage = ZEO.client(os.environ['ZEO_ADDRESS'], wait_timeout=30,\n"
            "                     blob_dir=os.environ['BLOBS'], shared_blob_dir=True)\n"
            "db = ZODB.DB(storage)\n" + body + "db.close()\n"
        )

    def test_restore_drill(self):
        bundle = own_bundle(self)
        bundle.build().start()
        self.assertEqual(bundle.add_folder("instance1", "kept", "as backed up").status, 200)
        self.assertEqual(bundle.add_folder("instance1", "gone", "deleted later").status, 200)
        self.blob_script(bundle, (
            "with db.transaction() as conn:\n"
            "    conn.root()['blob'] = Blob(b'backed-up blob')\n"))
        backup = bundle.run_script("backup", "--no-prompt")
        self.assertEqual(backup.returncode, 0, backup.stdout + backup.stderr)

        # Change and delete after the backup.
        changed = bundle.http("instance1", "POST", "/kept/manage_changeProperties",
                              data={"title": "changed later"})
        self.assertEqual(changed.status, 200)
        deleted = bundle.http("instance1", "POST", "/manage_delObjects", data={"ids": "gone"})
        self.assertIn(deleted.status, (200, 302))
        self.blob_script(bundle, (
            "with db.transaction() as conn:\n"
            "    with conn.root()['blob'].open('w') as f:\n"
            "        f.write(b'changed blob')\n"))
        self.assertEqual(bundle.title("instance2", "gone")[0], 404)

        self.assertEqual(bundle.stop().returncode, 0)
        restore = bundle.run_script("restore", "--no-prompt")
        self.assertEqual(restore.returncode, 0, restore.stdout + restore.stderr)
        bundle.start()

        self.assertEqual(bundle.title("instance1", "kept")[:2], (200, "as backed up"))
        self.assertEqual(bundle.title("instance2", "gone")[:2], (200, "deleted later"))
        out = self.blob_script(bundle, (
            "with db.transaction() as conn:\n"
            "    with conn.root()['blob'].open('r') as f:\n"
            "        print(f.read().decode())\n"))
        self.assertEqual(out.strip(), "backed-up blob")
