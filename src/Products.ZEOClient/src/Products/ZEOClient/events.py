"""Process-lifetime subscribers of the product (registered in ZCML)."""

import logging

from . import ThreadedAsync
from . import startup

logger = logging.getLogger(__name__)


def log_serving():
    logger.info(
        "serving loop started (ZEO_CLIENT=%s)", startup.zeo_client() or "unset"
    )


def announce_when_serving(event):
    """Log once the WSGI loop really runs, through the ThreadedAsync hook."""
    ThreadedAsync.register_loop_callback(log_serving)
