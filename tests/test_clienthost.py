"""A client host: a bundle built from client.cfg for the ZEO server of
another bundle, over TLS with the certificates bin/zeocerts makes.

The two bundles stand for two hosts: each has its own folder, var/ and
ports, and they share nothing but the server's TCP port on 127.0.0.1.
What bin/zeocerts prints is used as each side's configuration, and the
client's files are copied into its own var/certs, as README.txt says.
"""

import json
import os
import shutil
import subprocess
import unittest

from . import certificates
from . import test_tls
from .harness import ZOPEPY
from .harness import own_bundle
from .harness import wait_until
from .layers import OwnBundlesLayer


def printed_config(output):
    """The [zeo] lines bin/zeocerts printed, without the section header."""
    block = output[output.index("[zeo]\n") + len("[zeo]\n"):]
    return "".join(
        line for line in block.splitlines(keepends=True)
        if line.startswith((" ", "address", "client-address", "server-ssl", "client-ssl"))
    )


def probe(port, **env):
    """test_tls's plain ZEO client: "connected" or "refused"."""
    result = subprocess.run(
        [ZOPEPY, "-c", test_tls.PROBE],
        env=dict(os.environ, PORT=str(port), **env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise AssertionError(result.stderr)
    return result.stdout.split()[0]


class ClientHostTests(unittest.TestCase):

    layer = OwnBundlesLayer

    def zeocerts(self, bundle, *args):
        result = bundle.run_script("zeocerts", *args, timeout=60)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        return result.stdout

    def certificates(self, bundle, auth):
        panel = bundle.http("instance1", "GET", "/Control_Panel/ZEO/status.json", auth=auth)
        self.assertEqual(panel.status, 200, panel.text[:300])
        return json.loads(panel.text)["databases"]["main"]["certificates"]

    def test_a_client_host_serves_the_server_s_data_over_tls(self):
        server = own_bundle(self, instances=1)
        server.build(**{"zeo:address": "127.0.0.1:0"})
        self.zeocerts(server, "ca")
        server_lines = printed_config(
            self.zeocerts(server, "server", "localhost", "--ip", "127.0.0.1")
        )
        own_client_lines = printed_config(self.zeocerts(server, "client", "server-host"))
        web1_lines = printed_config(self.zeocerts(server, "client", "web1"))
        self.assertIn("authenticate ${zeo:var}/certs/ca.pem", server_lines)

        # The server's host: its server and its own instance, both on TLS
        # (the printed client-address and address are overridden: port 0).
        extra = "\n[zeo]\n" + server_lines + "".join(
            line for line in own_client_lines.splitlines(keepends=True)
            if not line.startswith("client-address")
        )
        server.build(extra=extra, **{"zeo:address": "127.0.0.1:0"})
        server.start_server()
        port = wait_until("the server's TCP port", server.server_port, 60)
        address = f"127.0.0.1:{port}"
        server.build(extra=extra, **{"zeo:client-address": address})
        server.start()
        password = server.password

        # The client host: what bin/zeocerts said to copy, and its lines.
        client = own_bundle(self, instances=1, profile="client.cfg")
        certs = os.path.join(client.var, "certs")
        os.makedirs(certs, mode=0o700)
        for name in ("ca.pem", "client-web1.pem", "client-web1.key"):
            shutil.copy2(os.path.join(server.var, "certs", name), certs)
        client.build(extra="\n[zeo]\n" + web1_lines, **{"zeo:client-address": address})
        for absent in ("zeoserver", "zeoinit", "zeopack", "backup", "zeocerts"):
            self.assertFalse(os.path.exists(client.script(absent)), absent)
        start = client.start()
        self.assertIn("on the ZEO server's host", start.stdout)
        client.wait_connected(" to the other host's server")

        # Written on one host, read on the other, both ways.
        auth = ("admin", password)
        self.assertEqual(server.add_folder("instance1", "fromserver", "Server").status, 200)
        wait_until(
            "the client host to read the server host's folder",
            lambda: client.http("instance1", "GET", "/fromserver/title_or_id", auth=auth).text
            == "Server",
            30,
        )
        added = client.http("instance1", "POST", "/manage_addProduct/OFSP/manage_addFolder",
                            data={"id": "fromclient", "title": "Client"}, auth=auth)
        self.assertEqual(added.status, 200)
        wait_until(
            "the server host to read the client host's folder",
            lambda: server.title("instance1", "fromclient")[:2] == (200, "Client"),
            30,
        )

        # What the client host shows: the remote server, the certificates.
        status = client.run_script("cluster", "status")
        self.assertEqual(status.returncode, 0, status.stdout)
        self.assertIn(f"up   remote, at {address}: accepts connections", status.stdout)
        self.assertNotIn("zeoserver    up   program", status.stdout)
        zeostatus = client.run_script("zeostatus", "--json")
        report = json.loads(zeostatus.stdout)
        self.assertTrue(report["up"], zeostatus.stdout)
        self.assertEqual(report["certificates"]["client"]["path"],
                         os.path.join(certs, "client-web1.pem"))
        self.assertIn(report["certificates"]["server"]["days_left"], (824, 825))
        shown = self.certificates(client, auth)
        self.assertEqual(shown["client"]["path"], os.path.join(certs, "client-web1.pem"))
        self.assertIn(shown["client"]["days_left"], (824, 825))
        self.assertFalse(shown["client"]["warning"])
        self.assertIn(shown["server"]["days_left"], (824, 825))
        screen = client.http("instance1", "GET", "/Control_Panel/ZEO/manage_main", auth=auth)
        self.assertEqual(screen.status, 200)
        self.assertIn("Client certificate", screen.text)
        self.assertIn("days left", screen.text)
        self.assertNotIn("zeo-certificate-warning", screen.text)

        # Renewed on the server's host and copied over: shown as waiting
        # for a restart, then in use, and close to expiry: a warning.
        self.zeocerts(server, "client", "web1", "--days", "10")
        for name in ("client-web1.pem", "client-web1.key"):
            shutil.copy2(os.path.join(server.var, "certs", name), certs)
        shown = self.certificates(client, auth)["client"]
        self.assertIn(shown["days_left"], (824, 825))
        self.assertIn(shown["renewed"]["days_left"], (9, 10))
        restart = client.run_script("cluster", "restart", "--rolling")
        self.assertEqual(restart.returncode, 0, restart.stdout + restart.stderr)
        shown = self.certificates(client, auth)["client"]
        self.assertIn(shown["days_left"], (9, 10))
        self.assertTrue(shown["warning"])
        self.assertNotIn("renewed", shown)
        screen = client.http("instance1", "GET", "/Control_Panel/ZEO/manage_main", auth=auth)
        self.assertIn("zeo-certificate-warning", screen.text)
        self.assertIn("TLS certificate", screen.text)
        zeostatus = client.run_script("zeostatus")
        self.assertRegex(zeostatus.stdout, r"client certificate \S+: WARNING expires")

        # Only clients the bundle's CA signed are let in.
        ca = os.path.join(certs, "ca.pem")
        mine = dict(CA=ca, CERT=os.path.join(certs, "client-web1.pem"),
                    KEY=os.path.join(certs, "client-web1.key"))
        self.assertEqual(probe(port, **mine), "connected")
        other = certificates.make(os.path.join(client.directory, "other-ca"))
        self.assertEqual(
            probe(port, CA=ca, CERT=other["client.pem"], KEY=other["client.key"]),
            "refused",
        )
        self.assertEqual(probe(port, CA=ca), "refused")  # no certificate
        self.assertEqual(client.http("instance1", "GET", "/zeo-health", auth=False).status, 200)
