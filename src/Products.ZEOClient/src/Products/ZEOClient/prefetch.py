"""Load many objects in one round trip: ZEO's prefetch for ghosts.

A page that lists a folder loads the folder, then each item, one server
round trip after the other: on a client host 20 ms away, a 20-item
listing with a cold cache waits 22 round trips, about 0.9 s (``make
bench``, "Over a slow link").  ZEO can send the loads together
(``ClientStorage.prefetch``): then the items cost one round trip.

``prefetch(objects)`` does that for the ghosts among *objects* (a
folder's ``objectValues()``, a catalog's ``getObject`` results), before
the code that reads them::

    from Products.ZEOClient.prefetch import prefetch
    items = folder.objectValues()
    prefetch(items)
    titles = [item.title for item in items]

It asks for the state as of the connection's view (the loads the
objects make next are then answered by these same requests), does
nothing for objects already loaded or stored elsewhere than ZEO, and
never raises for a disconnected storage: the loads that follow fail or
wait as they would have.
"""

import logging

from persistent.interfaces import GHOST
from ZODB.utils import p64
from ZODB.utils import u64

logger = logging.getLogger(__name__)


def prefetch(objects):
    """Ask the ZEO server for the state of every ghost in *objects* at
    once; returns how many were asked for."""
    by_jar = {}
    for obj in objects:
        jar = getattr(obj, "_p_jar", None)
        if jar is not None and getattr(obj, "_p_state", None) == GHOST:
            by_jar.setdefault(id(jar), (jar, []))[1].append(obj._p_oid)
    asked = 0
    for jar, oids in by_jar.values():
        storage = jar.db().storage
        if not hasattr(storage, "prefetch"):
            continue
        # What the connection loads before (ZODB's MVCC adapter: the
        # transaction after the last one it has seen).
        before = getattr(jar._storage, "_start", None)
        if before is None:
            before = p64(u64(storage.lastTransaction()) + 1)
        try:
            storage.prefetch(oids, before)
        except Exception as e:  # the loads that follow will say why
            logger.debug("prefetch of %d objects failed: %r", len(oids), e)
            continue
        asked += len(oids)
    return asked
