"""The bundle's command-line programs, one module each.

Buildout generates ``bin/cluster``, ``bin/zeoinit``, ``bin/zeopack`` and
``bin/zeostatus`` from the ``main`` functions here (buildout.cfg), as ZODB
and ZEO keep theirs in ``ZODB.scripts`` and ``ZEO.scripts``.  ``cluster``,
``zeopack`` and ``zeostatus`` import nothing from Zope; ``zeoinit`` is the
one designated step that writes to a fresh database.
"""
