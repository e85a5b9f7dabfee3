"""The buildout extension, with a stand-in for zc.buildout's Buildout.

The real thing is exercised end to end by tests/test_instances.py of the
bundle (a bundle of three instances built and run).
"""

import re
import unittest

import zc.buildout

from Products.ZEOClient import instances

PARTS = "var-dirs zeo-conf zeoserver instances zeoinit-conf cluster"


class FakeSection(dict):
    """A section: options, with ``${section:option}`` substituted on get."""

    def __init__(self, buildout, data):
        super().__init__(data)
        self.buildout = buildout

    def get(self, option, default=None):
        value = super().get(option)
        if value is None:
            return default
        return re.sub(
            r"\$\{([^:}]*):([^}]+)\}",
            lambda m: self.buildout[m.group(1)][m.group(2)],
            value,
        )

    def __getitem__(self, option):
        value = self.get(option)
        if value is None:
            raise KeyError(option)
        return value


class FakeBuildout:
    """What the extension uses of zc.buildout's Buildout: sections by name
    (initialised on first use, ``<`` applied then, and noted in
    ``initialised``), ``keys()`` without initialising, ``buildout[name] =
    options`` to add one, and ``_raw``, the options as configured."""

    def __init__(self, **sections):
        self._raw = {"buildout": {"parts": PARTS}, "settings": {}, "ports": {}}
        for part in PARTS.split():
            if part != instances.PLACEHOLDER:
                self._raw[part] = {"recipe": "plone.recipe.command"}
        for name, options in sections.items():
            self._raw.setdefault(name, {}).update(options)
        self.sections = {}
        self.initialised = []

    def keys(self):
        return list(self._raw)

    def __getitem__(self, name):
        if name not in self.sections:
            options = self._raw[name]
            if "<" in options:
                options = {**self._raw[options["<"]], **options}
            self.sections[name] = FakeSection(self, options)
            self.initialised.append(name)
        return self.sections[name]

    def __setitem__(self, name, options):
        if name in self._raw:
            raise KeyError("Section already exists", name)
        self._raw[name] = dict(options)
        self[name]


def run(**sections):
    """The extension run on the bundle's sections, with *sections*' options."""
    config = {
        "zeo": {},
        "ports": {"host": "127.0.0.1"},
        "instance-base": {"recipe": "plone.recipe.zope2instance"},
    }
    for name, options in sections.items():
        config.setdefault(name, {}).update(options)
    buildout = FakeBuildout(**config)
    instances.extension(buildout)
    return buildout


class DefaultTests(unittest.TestCase):

    def setUp(self):
        self.buildout = run()

    def test_two_instances_where_parts_says_instances(self):
        self.assertEqual(
            self.buildout["buildout"]["parts"].split(),
            "var-dirs zeo-conf zeoserver instance1 instance2 zeoinit-conf cluster".split(),
        )

    def test_ports_are_base_plus_n(self):
        self.assertEqual(self.buildout["ports"]["instance1"], "8081")
        self.assertEqual(self.buildout["ports"]["instance2"], "8082")

    def test_sections_are_made_from_instance_base(self):
        self.assertEqual(
            self.buildout._raw["instance2"],
            {"<": "instance-base", "http-address": "${ports:host}:${ports:instance2}"},
        )
        self.assertEqual(self.buildout["instance2"]["recipe"], "plone.recipe.zope2instance")

    def test_settings_for_the_other_sections(self):
        settings = self.buildout["settings"]
        self.assertEqual(settings["instance-names"], "instance1 instance2")
        self.assertEqual(
            settings["instance-addresses"],
            "instance1=127.0.0.1:8081 instance2=127.0.0.1:8082",
        )

    def test_parts_before_the_instances_are_initialised_before_them(self):
        # zc.buildout installs parts in the order it initialised them.
        parts = [
            name
            for name in self.buildout.initialised
            if name not in ("buildout", "settings", "ports", "zeo")
        ]
        self.assertEqual(
            parts, ["var-dirs", "zeo-conf", "zeoserver", "instance1", "instance2"]
        )


class SettingTests(unittest.TestCase):

    def test_four_instances(self):
        buildout = run(settings={"instances": " 4 "})
        self.assertEqual(
            buildout["buildout"]["parts"].split()[2:8],
            "zeoserver instance1 instance2 instance3 instance4 zeoinit-conf".split(),
        )
        self.assertEqual(
            buildout["settings"]["instance-names"], "instance1 instance2 instance3 instance4"
        )
        self.assertEqual(buildout["ports"]["instance4"], "8084")

    def test_one_instance(self):
        buildout = run(settings={"instances": "1"})
        self.assertEqual(buildout["settings"]["instance-names"], "instance1")
        self.assertNotIn("instance2", buildout.keys())

    def test_port_base(self):
        buildout = run(ports={"host": "127.0.0.1", "base": "9000"})
        self.assertEqual(
            buildout["settings"]["instance-addresses"],
            "instance1=127.0.0.1:9001 instance2=127.0.0.1:9002",
        )

    def test_a_configured_port_wins(self):
        buildout = run(ports={"host": "127.0.0.1", "instance2": "0"})
        self.assertEqual(
            buildout["settings"]["instance-addresses"],
            "instance1=127.0.0.1:8081 instance2=127.0.0.1:0",
        )

    def test_options_configured_for_an_instance_are_added(self):
        # As ``bin/buildout instance1:zeo-address=...`` says it.
        buildout = run(instance1={"zeo-address": "/tmp/proxy.sock"})
        section = buildout["instance1"]
        self.assertEqual(section["zeo-address"], "/tmp/proxy.sock")
        self.assertEqual(section["recipe"], "plone.recipe.zope2instance")
        self.assertEqual(section["http-address"], "127.0.0.1:8081")

    def test_configured_options_win(self):
        buildout = run(instance2={"http-address": "10.0.0.2:8080"})
        self.assertEqual(
            buildout["settings"]["instance-addresses"],
            "instance1=127.0.0.1:8081 instance2=10.0.0.2:8080",
        )

    def test_parts_without_the_word_get_no_instance(self):
        buildout = run(buildout={"parts": "zeoserver zeopack"})
        self.assertEqual(buildout["buildout"]["parts"], "zeoserver zeopack")
        self.assertEqual(buildout["settings"]["instance-names"], "instance1 instance2")
        self.assertIn("instance2", buildout.keys())


class BadValueTests(unittest.TestCase):

    def assertRefused(self, message, **sections):
        with self.assertRaises(zc.buildout.UserError) as caught:
            run(**sections)
        self.assertEqual(str(caught.exception), message)

    def test_instances_not_a_number(self):
        for value in ("two", "0", "-1", "2.5", ""):
            self.assertRefused(
                "[settings] instances must be a whole number of 1 or more "
                f"(how many Zope instances to build), not {value!r}",
                settings={"instances": value},
            )

    def test_port_base_not_a_port(self):
        for value in ("http", "65534"):
            self.assertRefused(
                "[ports] base must be a port number (instance N listens on "
                f"base + N, at most 65535), not {value!r}",
                ports={"base": value},
            )

    def test_empty_http_address(self):
        self.assertRefused(
            "[instance2] has no http-address: give it one, e.g. "
            "http-address = ${ports:host}:${ports:instance2}, or remove "
            "the section to get the default one",
            instance2={"http-address": ""},
        )


if __name__ == "__main__":
    unittest.main()
