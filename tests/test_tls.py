"""TLS with client certificates, for clients on other hosts."""

import os
import subprocess
import unittest

from . import certificates
from .harness import ZOPEPY
from .harness import own_bundle
from .harness import wait_until
from .layers import OwnBundlesLayer

PROBE = """
import os, ssl, ZEO
from ZEO.Exceptions import ClientDisconnected
kw = {}
if os.environ.get('CA'):
    context = ssl.create_default_context(cafile=os.environ['CA'])
    if os.environ.get('CERT'):
        context.load_cert_chain(os.environ['CERT'], os.environ['KEY'])
    kw = dict(ssl=context, ssl_server_hostname='127.0.0.1')
try:
    storage = ZEO.client(('127.0.0.1', int(os.environ['PORT'])), wait_timeout=5, **kw)
except ClientDisconnected:
    print('refused')
else:
    print('connected', storage.lastTransaction().hex())
    storage.close()
"""


class TLSTests(unittest.TestCase):

    layer = OwnBundlesLayer

    def probe(self, port, **env):
        result = subprocess.run(
            [ZOPEPY, "-c", PROBE],
            env=dict(os.environ, PORT=str(port), **env),
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout.split()[0]

    def test_only_clients_with_a_certificate_of_the_ca_connect(self):
        bundle = own_bundle(self)
        certs = certificates.make(os.path.join(bundle.directory, "certs"))
        extra = certificates.bundle_ssl(certs)
        bundle.build(extra=extra, **{"zeo:address": "127.0.0.1:0"})
        bundle.start_server()
        port = wait_until("the server's TCP port", bundle.server_port, 60)
        bundle.build(extra=extra, **{"zeo:client-address": f"127.0.0.1:{port}"})
        bundle.start()

        self.assertEqual(bundle.add_folder("instance1", "overtls", "TLS").status, 200)
        wait_until(
            "instance2 to read it",
            lambda: bundle.title("instance2", "overtls")[:2] == (200, "TLS"),
            30,
        )
        self.assertEqual(
            self.probe(port, CA=certs["ca.pem"], CERT=certs["client.pem"], KEY=certs["client.key"]),
            "connected",
        )
        self.assertEqual(self.probe(port), "refused")  # plain TCP
        self.assertEqual(self.probe(port, CA=certs["ca.pem"]), "refused")  # no certificate
        self.assertEqual(bundle.http("instance1", "GET", "/zeo-health", auth=False).status, 200)
