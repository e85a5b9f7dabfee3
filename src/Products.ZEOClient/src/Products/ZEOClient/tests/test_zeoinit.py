import os
import stat
import tempfile
import unittest

from Products.ZEOClient.scripts import zeoinit


class FakeUserFolder:
    def __init__(self, users=()):
        self.users = dict.fromkeys(users, "old")

    def getUserById(self, name):
        return self.users.get(name)

    def _doAddUser(self, name, password, roles, domains):
        self.users[name] = (password, tuple(roles))


class FakeApp:
    def __init__(self, users=()):
        self.acl_users = FakeUserFolder(users)


class PasswordFileTests(unittest.TestCase):

    def setUp(self):
        self.folder = tempfile.mkdtemp()
        self.addCleanup(lambda: __import__("shutil").rmtree(self.folder))
        self.path = os.path.join(self.folder, "sub", "admin-password")

    def test_created_once_with_mode_0600(self):
        password, created = zeoinit.read_or_create_password(self.path)
        self.assertTrue(created)
        self.assertGreaterEqual(len(password), 16)
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        again, created = zeoinit.read_or_create_password(self.path)
        self.assertFalse(created)
        self.assertEqual(again, password)

    def test_existing_password_is_kept(self):
        os.makedirs(os.path.dirname(self.path))
        with open(self.path, "w") as f:
            f.write("chosen-by-operator\n")
        self.assertEqual(
            zeoinit.read_or_create_password(self.path), ("chosen-by-operator", False)
        )

    def test_empty_file_gets_a_password(self):
        os.makedirs(os.path.dirname(self.path))
        open(self.path, "w").close()
        password, created = zeoinit.read_or_create_password(self.path)
        self.assertTrue(created)
        self.assertTrue(password)

    def test_passwords_differ_between_bundles(self):
        other = os.path.join(self.folder, "other")
        self.assertNotEqual(
            zeoinit.read_or_create_password(self.path)[0],
            zeoinit.read_or_create_password(other)[0],
        )


class EnsureAdminTests(unittest.TestCase):

    def test_adds_manager_when_missing(self):
        app = FakeApp()
        self.assertTrue(zeoinit.ensure_admin(app, "secret"))
        self.assertEqual(app.acl_users.users["admin"], ("secret", ("Manager",)))

    def test_leaves_existing_admin_alone(self):
        app = FakeApp(users=["admin"])
        self.assertFalse(zeoinit.ensure_admin(app, "secret"))
        self.assertEqual(app.acl_users.users["admin"], "old")


class MainTests(unittest.TestCase):

    def test_missing_configuration_is_a_one_line_error(self):
        with self.assertRaises(SystemExit) as raised:
            zeoinit.main(["--zope-conf", "/nonexistent/zope.conf", "--password-file", "/x"])
        self.assertIn("no configuration at /nonexistent/zope.conf", str(raised.exception))


class MissingEggsTests(unittest.TestCase):

    def test_a_broken_user_folder_names_what_is_missing(self):
        from ZODB.broken import find_global

        Broken = find_global("Products.PluggableAuthService.PluggableAuthService",
                             "PluggableAuthService")

        class App:
            acl_users = Broken()

        with self.assertRaises(zeoinit.MissingEggs) as raised:
            zeoinit.ensure_admin(App(), "secret")
        message = str(raised.exception)
        self.assertIn("Products.PluggableAuthService.PluggableAuthService.PluggableAuthService",
                      message)
        self.assertIn("[settings] eggs", message)
