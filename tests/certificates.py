"""Throwaway TLS certificates for a test: a CA, a server certificate for
127.0.0.1/localhost and a client certificate, made with openssl."""

import os
import subprocess

EXTENSIONS = """\
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def openssl(folder, *args):
    subprocess.run(
        ["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=60
    )


def make(folder):
    """Write ca.pem, server.pem/key, client.pem/key; return their paths."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "ext.cnf"), "w") as f:
        f.write(EXTENSIONS)
    openssl(folder, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=test CA", "-keyout", "ca.key", "-out", "ca.pem",
            "-extensions", "ca", "-config", "ext.cnf")
    for name in ("server", "client"):
        openssl(folder, "req", "-newkey", "rsa:2048", "-nodes",
                "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-config", "ext.cnf")
        openssl(folder, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem",
                "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
                "-out", f"{name}.pem", "-extfile", "ext.cnf", "-extensions", name)
    return {
        name: os.path.join(folder, name)
        for name in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")
    }


def bundle_ssl(certs):
    """The [zeo] server-ssl and client-ssl of a bundle using *certs*
    (the server accepts only clients the CA signed), as override text."""
    return (
        "\n[zeo]\n"
        "server-ssl =\n"
        "    <ssl>\n"
        f"      certificate {certs['server.pem']}\n"
        f"      key {certs['server.key']}\n"
        f"      authenticate {certs['ca.pem']}\n"
        "    </ssl>\n"
        "client-ssl =\n"
        "    <ssl>\n"
        f"      certificate {certs['client.pem']}\n"
        f"      key {certs['client.key']}\n"
        f"      authenticate {certs['ca.pem']}\n"
        "      server-hostname 127.0.0.1\n"
        "    </ssl>\n"
    )
