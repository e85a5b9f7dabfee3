"""The bundle's command-line programs, one module each.

Buildout generates ``bin/cluster``, ``bin/zeoinit``, ``bin/zeopack``,
``bin/zeostatus`` and ``bin/zeocerts`` from the ``main`` functions here
(buildout.cfg), as ZODB and ZEO keep theirs in ``ZODB.scripts`` and
``ZEO.scripts``.  All but ``zeoinit`` import nothing from Zope;
``zeoinit`` is the one designated step that writes to a fresh database.
"""
