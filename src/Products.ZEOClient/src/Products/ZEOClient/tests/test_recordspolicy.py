import io
import unittest
from contextlib import redirect_stdout

from Products.ZEOClient.scripts import recordspolicy


class RecordsPolicyTests(unittest.TestCase):

    def test_code_runners_are_never_allowed(self):
        for module in ("os", "posix", "subprocess", "builtins", "importlib",
                       "importlib.util", "pickle", "_pickle", "ctypes", "sys",
                       "shutil", "marshal", "runpy", "zodbpickle", "dill",
                       "setuptools", "pkg_resources", "pip", "zc.buildout",
                       "zc.recipe.egg", "collections", "json", "_ctypes", "not-a.name"):
            self.assertTrue(recordspolicy.never(module), module)

    def test_installed_packages_are_allowed_not_the_standard_library(self):
        modules = recordspolicy.installed_modules()
        for expected in ("OFS", "BTrees", "persistent", "Products.ZEOClient",
                         "zope.interface", "DateTime", "z3c.pt"):
            self.assertIn(expected, modules)
        for refused in ("os", "subprocess", "pickle", "zc", "zope", "z3c",
                        "zc.buildout", "setuptools", "pip"):
            self.assertNotIn(refused, modules)
        self.assertFalse([m for m in modules if recordspolicy.never(m)])

    def test_the_output_is_zconfig_lines(self):
        out = io.StringIO()
        with redirect_stdout(out):
            self.assertEqual(recordspolicy.main([]), 0)
        lines = [line for line in out.getvalue().splitlines() if not line.startswith("#")]
        self.assertTrue(lines)
        self.assertTrue(all(line.startswith("allow-module ") for line in lines))


class ProfileFileTests(unittest.TestCase):
    """A profile's exact entries (etc/plone/records.conf)."""

    def write(self, text):
        import tempfile, os
        fd, path = tempfile.mkstemp(suffix=".conf")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        self.addCleanup(os.remove, path)
        return path

    def generate(self, *paths):
        out, err = io.StringIO(), io.StringIO()
        from contextlib import redirect_stderr
        with redirect_stdout(out), redirect_stderr(err):
            code = recordspolicy.main(list(paths))
        return code, out.getvalue(), err.getvalue()

    def test_entries_are_copied_with_their_comments(self):
        path = self.write("# pytz's shared zones\nallow-callable pytz._p\n"
                          "allow-fresh-callable collections.Counter\n")
        code, out, err = self.generate(path)
        self.assertEqual(code, 0, err)
        self.assertIn("# pytz's shared zones\nallow-callable pytz._p\n", out)
        self.assertIn("allow-fresh-callable collections.Counter", out)

    def test_what_runs_code_is_refused_with_file_and_line(self):
        for line in ("allow-callable os.system", "allow-callable builtins.eval",
                     "allow-global subprocess.Popen", "allow-callable importlib.import_module",
                     "allow-module my.app", "allow-callable two names", "junk"):
            path = self.write(f"# ok\n{line}\n")
            code, out, err = self.generate(path)
            self.assertEqual(code, 1, line)
            self.assertEqual(out, "", line)  # nothing half-written
            self.assertIn(f"{path}, line 2", err)

    def test_the_plone_profile_s_file_is_accepted(self):
        import os
        import Products.ZEOClient
        checkout = os.path.dirname(Products.ZEOClient.__file__)
        for _ in range(5):
            checkout = os.path.dirname(checkout)
        path = os.path.join(checkout, "etc", "plone", "records.conf")
        if not os.path.exists(path):
            self.skipTest("not run from a checkout of the bundle")
        code, out, err = self.generate(path)
        self.assertEqual(code, 0, err)
        self.assertIn("allow-callable zope.component.globalregistry.GAR", out)
