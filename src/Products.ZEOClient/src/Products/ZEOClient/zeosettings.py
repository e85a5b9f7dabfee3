"""A zc.buildout extension: what ``[zeo]`` implies for the other sections.

Called by the ``instances`` extension (``instances.py``) before it adds
the instance sections, which use these values; that is once every
configuration file and the command line are read and before any part
is initialised:

- ``[zeo] client-certificate``: the path in the ``certificate`` line of
  ``[zeo] client-ssl`` (empty without TLS), unless the configuration sets
  one.  The instances' storage section passes it to the storage, so that
  the ZEO tab can show when the certificate expires: ZEO's own ``<ssl>``
  section turns its text into an SSL context that keeps no trace of the
  files it was loaded from.  ``client-ssl`` stays the one place that
  names the certificate.
- a client host (``[settings] server = off``, the bundle's client.cfg)
  has no server of its own, so ``[zeo] client-address`` must be a
  ``host:port``: left empty (client.cfg's default) or a socket path, the
  build stops with one line saying what to set.

Only zc.buildout runs this module; it imports nothing from Zope.
"""

import logging

import zc.buildout

from .certificates import ssl_section

logger = logging.getLogger(__name__)


def extension(buildout):
    """Check and complete ``[zeo]`` (see the module's documentation)."""
    zeo = buildout["zeo"]
    settings = buildout["settings"]
    if settings.get("server", "on").strip() == "off":
        check_remote_address(zeo.get("client-address", ""))
    if zeo.get("client-certificate") is None:
        try:
            section = ssl_section(zeo.get("client-ssl", ""))
        except ValueError as exc:
            raise zc.buildout.UserError(
                f"[zeo] client-ssl must be ZEO's <ssl> section "
                f"(README.txt, TLS): {exc}"
            ) from None
        zeo["client-certificate"] = section.get("certificate", "")
        if zeo["client-certificate"]:
            logger.info("client certificate: %s", zeo["client-certificate"])


def check_remote_address(address):
    """A client host's ``[zeo] client-address``: host:port, or UserError."""
    text = address.strip()
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or text.startswith("/"):
        raise zc.buildout.UserError(
            f"this is a client host ([settings] server = off, client.cfg): set "
            f"[zeo] client-address to the ZEO server's host:port, e.g. "
            f"zeo.example.org:8100 (now {address.strip()!r}); see README.txt, "
            f"Clients on other hosts"
        )
