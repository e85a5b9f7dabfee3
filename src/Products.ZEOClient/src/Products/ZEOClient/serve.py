"""The bundle's WSGI server: waitress, plus "the loop has started".

A PasteDeploy server factory (``use = egg:Products.ZEOClient#main`` in
wsgi.ini, see the bundle's ``etc/wsgi.ini.in``).  It serves with waitress
exactly as the stock configuration does, and before running waitress'
loop it pulls a trigger (waitress' own mechanism for running code in the
loop's thread) whose thunk calls ``ThreadedAsync.loop_started``: the
callbacks therefore run inside the loop once it polls, with the listening
sockets already accepting connections.
"""

import logging

import waitress
from waitress.server import MultiSocketServer
from waitress.trigger import trigger

from . import ThreadedAsync

logger = logging.getLogger(__name__)


def create_server(app, **kw):
    """A waitress server that announces the start of its loop."""
    server = waitress.create_server(app, **kw)
    if isinstance(server, MultiSocketServer):
        # Several listening sockets share one map; add a trigger to it.
        announce = trigger(server.map)
    else:
        announce = server.trigger
    announce.pull_trigger(ThreadedAsync.loop_started)
    return server


def serve(app, **kw):
    server = create_server(app, **kw)
    server.print_listen("Serving on http://{}:{}")
    server.run()


def server_factory(global_conf, **kw):
    """PasteDeploy ``paste.server_factory`` entry point."""

    def run(app):
        return serve(app, **kw)

    return run
