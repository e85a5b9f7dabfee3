import io
import os
import shutil
import tempfile
import unittest

import ZODB
from persistent.mapping import PersistentMapping
from ZODB.FileStorage import FileStorage

from Products.ZEOClient.scripts import zeoguard


class Call:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


class ScanTests(unittest.TestCase):
    """An existing Data.fs, written without the guard, read back."""

    def setUp(self):
        self.folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.folder, True)
        self.datafs = os.path.join(self.folder, "Data.fs")
        self.zeo_conf = os.path.join(self.folder, "zeo.conf")

    def write(self, **objects):
        db = ZODB.DB(FileStorage(self.datafs))
        with db.transaction() as conn:
            for key, value in objects.items():
                conn.root()[key] = PersistentMapping(v=value)
        db.close()
        os.remove(self.datafs + ".lock")

    def run_scan(self):
        out = io.StringIO()
        stdout, zeoguard.sys.stdout = zeoguard.sys.stdout, out
        try:
            code = zeoguard.main(["scan"], datafs=self.datafs, zeo_conf=self.zeo_conf)
        finally:
            zeoguard.sys.stdout = stdout
        return code, out.getvalue()

    def test_a_clean_database_says_so(self):
        self.write(a=1, b={"x": [1, 2]})
        code, out = self.run_scan()
        self.assertEqual(code, 0, out)
        self.assertIn("records read: nothing outside the policy", out)

    def test_globals_outside_the_policy_are_listed_with_the_lines_to_allow_them(self):
        import fractions

        self.write(evil=Call(os.system, "true"), frac=fractions.Fraction(1, 3),
                   frac2=fractions.Fraction(2, 3), fine=1)
        code, out = self.run_scan()
        self.assertEqual(code, 1, out)
        self.assertIn("posix.system", out)
        self.assertIn("fractions.Fraction", out)
        self.assertIn("allow-global fractions.Fraction", out)
        self.assertIn("allow-callable posix.system", out)
        # counts: the two Fraction records
        line = next(line for line in out.splitlines()
                    if "fractions.Fraction" in line and "referenced" in line)
        self.assertEqual(line.split()[0], "2")
        # Nothing ran, nothing changed: the scan opened Data.fs read-only.
        self.assertFalse(os.path.exists(self.datafs + ".lock"))

    def test_the_server_s_allow_lines_are_the_policy(self):
        import fractions

        self.write(frac=fractions.Fraction(1, 3))
        with open(self.zeo_conf, "w") as f:
            f.write("<hardened 1>\n  allow-global fractions.Fraction\n"
                    "  allow-callable fractions.Fraction\n</hardened>\n")
        code, out = self.run_scan()
        self.assertEqual(code, 0, out)

    def test_lines_in_an_included_file_are_the_policy_too(self):
        # zeo.conf includes the generated records-policy.conf.
        import fractions

        self.write(frac=fractions.Fraction(1, 3))
        included = os.path.join(self.folder, "etc", "records-policy.conf")
        os.mkdir(os.path.dirname(included))
        with open(included, "w") as f:
            f.write("allow-global fractions.Fraction\n"
                    "allow-callable fractions.Fraction\n")
        with open(self.zeo_conf, "w") as f:
            f.write(f"<hardened 1>\n  %include {included}\n</hardened>\n")
        code, out = self.run_scan()
        self.assertEqual(code, 0, out)

    def test_a_missing_database_is_one_line(self):
        code = zeoguard.main(["scan", os.path.join(self.folder, "nope.fs")])
        self.assertEqual(code, 2)
