"""The bundle's WSGI server: waitress, plus "the loop has started".

A PasteDeploy server factory (``use = egg:Products.ZEOClient#main`` in
wsgi.ini, see the bundle's ``etc/wsgi.ini.in``).  It serves with waitress
exactly as the stock configuration does, and before running waitress'
loop it pulls a trigger (waitress' own mechanism for running code in the
loop's thread) whose thunk calls ``ThreadedAsync.loop_started``: the
callbacks therefore run inside the loop once it polls, with the listening
sockets already accepting connections.

``/zeo-health`` is answered in the loop's own thread, not by one of the
worker threads: when every worker waits for the database server (a link
that died silently, before the storage notices), a load balancer's check
still gets its answer at once instead of queueing behind them.

It runs that loop through ``graceful.GracefulLoop``: SIGTERM and SIGINT
drain the instance, finish the requests in flight and close the database
instead of ending the process on the spot.  Its two settings are options
of ``[server:main]`` (``drain``, ``shutdown_timeout``, in seconds), the
rest go to waitress.
"""

import logging

import waitress
from waitress.server import MultiSocketServer
from waitress.trigger import trigger

from . import ThreadedAsync
from .graceful import GracefulLoop
from .wsgi import HEALTH_PATH

logger = logging.getLogger(__name__)


def health_in_the_loop(dispatcher):
    """Make *dispatcher* serve ``/zeo-health`` requests in the calling
    (the loop's) thread; everything else goes to its workers."""
    add_task = dispatcher.add_task

    def add(channel):
        requests = getattr(channel, "requests", ())
        if len(requests) == 1 and requests[0].path == HEALTH_PATH and not requests[0].error:
            # The filter answers it from memory (wsgi.health): no database.
            # Not right here: the channel holds its requests lock while it
            # adds a task; the trigger runs it in the loop's next turn.
            channel.server.trigger.pull_trigger(channel.service)
        else:
            add_task(channel)

    dispatcher.add_task = add


def create_server(app, **kw):
    """A waitress server that announces the start of its loop."""
    server = waitress.create_server(app, **kw)
    health_in_the_loop(server.task_dispatcher)
    if isinstance(server, MultiSocketServer):
        # Several listening sockets share one map; add a trigger to it.
        announce = trigger(server.map)
    else:
        announce = server.trigger
    announce.pull_trigger(ThreadedAsync.loop_started)
    return server


def serve(app, drain=3.0, shutdown_timeout=30.0, **kw):
    server = create_server(app, **kw)
    server.print_listen("Serving on http://{}:{}")
    return GracefulLoop(server, drain=drain, shutdown_timeout=shutdown_timeout).run()


def seconds(name, value):
    """*value* of option *name* as seconds >= 0, or a clear error."""
    try:
        number = float(value)
        if not number >= 0:
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(
            f"[server:main] {name} must be a number of seconds >= 0, not {value!r}"
        ) from None
    return number


def server_factory(global_conf, drain="3", shutdown_timeout="30", **kw):
    """PasteDeploy ``paste.server_factory`` entry point."""
    drain = seconds("drain", drain)
    shutdown_timeout = seconds("shutdown_timeout", shutdown_timeout)

    def run(app):
        return serve(app, drain=drain, shutdown_timeout=shutdown_timeout, **kw)

    return run
