"""The [zeo] part of the buildout extension, on plain dicts for sections.

Built for real by tests/test_clienthost.py (a client host from
client.cfg, with TLS).
"""

import unittest

import zc.buildout

from Products.ZEOClient import zeosettings

SSL = """
<ssl>
  certificate /srv/var/certs/client-web1.pem
  key /srv/var/certs/client-web1.key
  authenticate /srv/var/certs/ca.pem
</ssl>"""


def run(zeo=(), settings=()):
    buildout = {"zeo": dict(zeo), "settings": dict(settings)}
    zeosettings.extension(buildout)
    return buildout["zeo"]


class ClientCertificateTests(unittest.TestCase):

    def test_named_by_client_ssl(self):
        zeo = run({"client-ssl": SSL})
        self.assertEqual(zeo["client-certificate"], "/srv/var/certs/client-web1.pem")

    def test_empty_without_tls(self):
        self.assertEqual(run({"client-ssl": ""})["client-certificate"], "")
        self.assertEqual(run()["client-certificate"], "")

    def test_one_given_is_kept(self):
        zeo = run({"client-ssl": SSL, "client-certificate": "/elsewhere.pem"})
        self.assertEqual(zeo["client-certificate"], "/elsewhere.pem")

    def test_client_ssl_that_is_no_section_stops_the_build(self):
        with self.assertRaises(zc.buildout.UserError) as caught:
            run({"client-ssl": "certificate /c.pem"})
        self.assertIn("[zeo] client-ssl must be ZEO's <ssl> section", str(caught.exception))


class ClientHostTests(unittest.TestCase):

    def test_a_server_host_may_use_a_socket(self):
        run({"client-address": "/srv/var/zeo.sock"})

    def test_a_client_host_needs_host_and_port(self):
        for address in ("", "/srv/var/zeo.sock", "zeo.example.org", ":8100"):
            with self.assertRaises(zc.buildout.UserError) as caught:
                run({"client-address": address}, {"server": "off"})
            self.assertIn(
                "set [zeo] client-address to the ZEO server's host:port",
                str(caught.exception),
            )

    def test_a_client_host_with_an_address(self):
        zeo = run({"client-address": "zeo.example.org:8100", "client-ssl": SSL},
                  {"server": "off"})
        self.assertEqual(zeo["client-certificate"], "/srv/var/certs/client-web1.pem")
