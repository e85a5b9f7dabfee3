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
            self.assertEqual(recordspolicy.main(), 0)
        lines = [line for line in out.getvalue().splitlines() if not line.startswith("#")]
        self.assertTrue(lines)
        self.assertTrue(all(line.startswith("allow-module ") for line in lines))
