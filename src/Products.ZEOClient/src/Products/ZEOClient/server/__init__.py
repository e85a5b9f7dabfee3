"""Server-side hardening of the bundle's ZEO server.  Imports nothing from
Zope: the server process loads it through ``%import`` in zeo.conf.

See README.rst beside this file for the threat and what is covered.
"""
