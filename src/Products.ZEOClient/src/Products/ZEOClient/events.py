"""Process-lifetime subscribers of the product (registered in ZCML)."""

import logging

from . import ThreadedAsync
from . import startup

logger = logging.getLogger(__name__)


def serving():
    logger.info(
        "serving loop started (ZEO_CLIENT=%s)", startup.zeo_client() or "unset"
    )
    from . import controlpanel

    controlpanel.history.start()


def announce_when_serving(event):
    """``IProcessStarting``: once the WSGI loop really runs (ThreadedAsync),
    log it and start collecting the status history for the chart."""
    ThreadedAsync.register_loop_callback(serving)


def install_control_panel(event):
    """``IDatabaseOpenedWithRoot``: add the ZEO tab to the Control Panel."""
    from . import controlpanel

    controlpanel.install()
