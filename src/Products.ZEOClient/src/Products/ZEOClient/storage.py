"""The bundle's storage section: a ZEO client that knows it is one.

``<zeoclusterclient>`` wraps the ``<zeoclient>`` section that
plone.recipe.zope2instance writes (through its ``storage-wrapper``
option), so every key of ZODB's own section keeps working::

    %import Products.ZEOClient
    <zeoclusterclient>
      init-wait 60
      <zeoclient>
        server /srv/var/zeo.sock
        ...
      </zeoclient>
    </zeoclusterclient>

Opening it opens the inner ZEO client storage, then, when ``ZEO_CLIENT``
is set (see ``startup.py``): names the persistent cache after ZEO_CLIENT
if the section names none (as Zope 2 did), waits for the database to be
initialised by ``bin/zeoinit``, and turns Zope's startup writes off.
"""

import logging

from ZODB.config import BaseConfig

from . import startup

logger = logging.getLogger(__name__)


class ZEOClusterClient(BaseConfig):
    """Datatype of ``<zeoclusterclient>``."""

    def open(self):
        name = startup.zeo_client()
        inner = self.config.base
        if name and getattr(inner.config, "client", "") is None:
            inner.config.client = name
        storage = inner.open()
        if name:
            try:
                startup.wait_for_initialised(storage, self.config.init_wait, name=name)
            except BaseException:
                storage.close()
                raise
            startup.suppress_startup_writes()
        return storage
