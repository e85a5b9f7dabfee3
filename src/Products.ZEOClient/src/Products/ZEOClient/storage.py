"""The bundle's storage section: a ZEO client that knows it is one.

``<zeoclusterclient>`` wraps the ``<zeoclient>`` section that
plone.recipe.zope2instance writes (through its ``storage-wrapper``
option), so the keys of ZODB's own section keep their meaning::

    %import Products.ZEOClient
    <zeoclusterclient>
      wait-timeout 1.5s
      <zeoclient>
        server /srv/var/zeo.sock
        ...
      </zeoclient>
    </zeoclusterclient>

Neither stock section offers everything an instance of the cluster needs
(ZODB's ``<zeoclient>`` has no ``wait-timeout``; ZEO's ``<clientstorage>``
has no persistent-cache name), so the opener builds the storage itself: a
``client.ClusterClientStorage`` from the inner section's values plus the
keys of this one (see component.xml).  ZODB's keys that ZEO 6 ignores
(``wait``, ``min/max-disconnect-poll``, ``drop-cache-rather-verify``,
credentials) are ignored here too: this storage never blocks its start on
the server.

Then, when ``ZEO_CLIENT`` is set (see ``startup.py``): the persistent
cache is named after ZEO_CLIENT if the section names none (as Zope 2 did),
the instance waits for the database to be initialised by ``bin/zeoinit``,
and Zope's startup writes are turned off.
"""

import logging

from ZEO.Exceptions import ClientDisconnected
from ZODB.config import BaseConfig

from . import certificates
from . import startup
from .client import ClusterClientStorage
from .exceptions import CacheCannotServeStartup

logger = logging.getLogger(__name__)


class ZEOClusterClient(BaseConfig):
    """Datatype of ``<zeoclusterclient>``."""

    def open(self):
        name = startup.zeo_client()
        storage = self.open_storage(client=name)
        try:
            initialised = startup.is_initialised(storage)
            if name:
                if not initialised:
                    startup.wait_for_initialised(
                        storage, self.config.init_wait, name=name
                    )
                startup.suppress_startup_writes()
        except ClientDisconnected:
            storage.close()
            message = (
                f"{storage.__name__}: the ZEO server at {storage._addr} does not "
                "answer and the client cache does not hold the database's "
                "root, so Zope cannot start from it; start the server"
            )
            logger.error(message)
            raise CacheCannotServeStartup(message)
        except BaseException:
            storage.close()
            raise
        return storage

    def open_storage(self, client=None):
        zeo = self.config.base.config
        options = {}
        for key in ("blob_cache_size", "blob_cache_size_check", "client_label"):
            if getattr(zeo, key, None) is not None:
                options[key] = getattr(zeo, key)
        if self.config.ssl:
            options["ssl"], options["ssl_server_hostname"] = self.config.ssl
        storage = ClusterClientStorage(
            [server.address for server in zeo.server],
            startup_wait=self.config.startup_wait,
            verify_wait=self.config.verify_wait,
            cache_flush_interval=self.config.cache_flush_interval,
            read_timeout=self.config.read_timeout,
            direct_calls=self.config.direct_calls,
            wait_timeout=self.config.wait_timeout,
            blob_dir=zeo.blob_dir,
            shared_blob_dir=zeo.shared_blob_dir,
            storage=zeo.storage,
            cache_size=zeo.cache_size,
            name=zeo.name,
            client=zeo.client or client,
            var=zeo.var,
            read_only=zeo.read_only,
            read_only_fallback=zeo.read_only_fallback,
            **options,
        )
        if self.config.client_certificate:
            storage.client_certificate = self.config.client_certificate
            try:  # what this process uses from now on, even if renewed
                storage.client_certificate_not_after = certificates.file_not_after(
                    self.config.client_certificate
                )
            except certificates.CertificateError as exc:
                logger.warning("%s: %s", storage.__name__, exc)
        return storage
