"""The ZEO tab of the Zope Control Panel (``/Control_Panel/ZEO``).

Zope's Control Panel is a non-persistent ``ApplicationManager`` whose
screens are class attributes; ``install()`` adds this one the same way
(and its tab), once, when the database is open.  Manager-only like the
rest of the Control Panel.  Actions are POST-only and carry a token
against cross-site request forgery: an HMAC of the user's id with a
secret made when the process starts.
"""

import hashlib
import hmac
import json
import logging
import secrets
import time

from AccessControl import ClassSecurityInfo
from AccessControl import getSecurityManager
from AccessControl.class_init import InitializeClass
from AccessControl.Permissions import view_management_screens
from Acquisition import Implicit
from App.ApplicationManager import ApplicationManager
from App.Management import Tabs
from OFS.Traversable import Traversable
from Products.PageTemplates.PageTemplateFile import PageTemplateFile

from . import metrics
from . import pack
from .status import History
from .status import database_status
from .status import iso
from .status import zeo_databases

logger = logging.getLogger(__name__)

_secret = secrets.token_bytes(32)


def all_databases():
    import Zope2

    db = getattr(Zope2, "DB", None)
    if db is None:
        return {}
    return dict(getattr(db, "databases", None) or {"main": db})


def databases():
    return zeo_databases(all_databases())


history = History(databases)


class BadInput(ValueError):
    """A form value the screen cannot act on; answered with 400."""


class ZEOControlPanel(Tabs, Traversable, Implicit):
    """ZEO connection, cache and server status."""

    id = "ZEO"
    name = title = "ZEO"
    meta_type = "ZEO Status"
    zmi_icon = "fas fa-network-wired"

    security = ClassSecurityInfo()
    security.declareObjectProtected(view_management_screens)

    manage_options = tuple(
        dict(option, action="../" + option["action"])
        for option in ApplicationManager.manage_options
    ) + ({"label": "ZEO", "action": "manage_main"},)

    security.declareProtected(view_management_screens, "manage_main")
    manage_main = PageTemplateFile("www/zeo.zpt", globals())

    # -- data for the screen and the machines -----------------------------

    @security.protected(view_management_screens)
    def getStatus(self):
        """{"generated_at": ..., "databases": {name: status}}."""
        return {
            "generated_at": iso(time.time()),
            "databases": {
                name: database_status(
                    name, db, pack=pack.job(name), history=history.get(name)
                )
                for name, db in databases().items()
            },
        }

    @security.protected(view_management_screens)
    def status_json(self, REQUEST=None):
        """The status as JSON."""
        body = json.dumps(self.getStatus(), indent=2, sort_keys=True)
        if REQUEST is not None:
            REQUEST.RESPONSE.setHeader("Content-Type", "application/json")
            REQUEST.RESPONSE.setHeader("Cache-Control", "no-store")
        return body

    @security.protected(view_management_screens)
    def metrics(self, REQUEST=None):
        """The status in Prometheus' text format."""
        statuses = self.getStatus()["databases"]
        if REQUEST is not None:
            REQUEST.RESPONSE.setHeader("Content-Type", metrics.CONTENT_TYPE)
            REQUEST.RESPONSE.setHeader("Cache-Control", "no-store")
        return metrics.render(statuses).decode("utf-8")

    @security.protected(view_management_screens)
    def chart(self, name):
        """Inline SVG: hit ratio and loads per interval, recent minutes.

        Its size is fixed: nothing from the URL goes into the SVG.
        """
        return render_chart(history.get(name))

    # -- actions -----------------------------------------------------------

    @security.protected(view_management_screens)
    def csrf_token(self):
        user = getSecurityManager().getUser().getId() or ""
        return hmac.new(_secret, user.encode(), hashlib.sha256).hexdigest()

    def _check_post(self, REQUEST):
        if REQUEST.get("REQUEST_METHOD", "GET") != "POST":
            raise BadInput("this action needs a POST from the ZEO screen's form")
        token = REQUEST.form.get("_authenticator", "")
        if not hmac.compare_digest(str(token), self.csrf_token()):
            raise BadInput(
                "the form's security token is missing or stale; reload the "
                "ZEO screen and try again"
            )

    def _database(self, REQUEST):
        name = REQUEST.form.get("database", "main")
        found = databases().get(name)
        if found is None:
            raise BadInput(f"no ZEO database named {name!r}")
        return name, found

    def _answer(self, REQUEST, message, status=200):
        if status != 200:
            REQUEST.RESPONSE.setStatus(status)
            REQUEST.RESPONSE.setHeader("Content-Type", "text/plain; charset=utf-8")
            return f"{message}\nNothing was changed.\n"
        url = self.absolute_url() + "/manage_main"
        REQUEST.RESPONSE.redirect(f"{url}?manage_tabs_message={message}")
        return message

    @security.protected(view_management_screens)
    def manage_pack(self, REQUEST):
        """Start an asynchronous pack; returns at once."""
        try:
            self._check_post(REQUEST)
            name, db = self._database(REQUEST)
            try:
                days = pack.parse_days(REQUEST.form.get("days", ""))
            except ValueError as exc:
                raise BadInput(str(exc)) from None
            try:
                pack.job(name).start(db.storage, days)
            except pack.PackRefused as exc:
                return self._answer(REQUEST, f"Pack refused: {exc}.", 409)
        except BadInput as exc:
            return self._answer(REQUEST, f"Bad request: {exc}.", 400)
        return self._answer(REQUEST, f"Pack of {name} started (keeping {days:g} days).")

    @security.protected(view_management_screens)
    def manage_reconnect(self, REQUEST):
        """Drop the connection to the server; ZEO reconnects by itself."""
        try:
            self._check_post(REQUEST)
            name, db = self._database(REQUEST)
        except BadInput as exc:
            return self._answer(REQUEST, f"Bad request: {exc}.", 400)
        db.storage.drop_connection()
        logger.info("%s: connection dropped from the control panel", name)
        return self._answer(REQUEST, f"Connection of {name} dropped; reconnecting.")


# "status.json" is not a Python name: published under it all the same.
setattr(ZEOControlPanel, "status.json", ZEOControlPanel.status_json)
ZEOControlPanel.security.declareProtected(view_management_screens, "status.json")
InitializeClass(ZEOControlPanel)


def render_chart(samples, width=480, height=90):
    """An inline SVG of hit ratio (line) and loads per interval (bars)."""
    samples = list(samples)
    if len(samples) < 2:
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
            f'height="{height}" role="img" aria-label="no data yet">'
            f'<text x="8" y="{height // 2}" font-size="12">Collecting data '
            "(one sample every 10 s)...</text></svg>"
        )
    loads, ratios = [], []
    for before, after in zip(samples, samples[1:]):
        hits = after["hits"] - before["hits"]
        misses = after["misses"] - before["misses"]
        loads.append(max(0, hits + misses))
        ratios.append(hits / (hits + misses) if hits + misses > 0 else None)
    step = width / len(loads)
    peak = max(loads) or 1
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" role="img" aria-label="loads and hit ratio">',
        f'<rect width="{width}" height="{height}" fill="#f8f9fa"/>',
    ]
    for i, value in enumerate(loads):
        bar = (height - 14) * value / peak
        parts.append(
            f'<rect x="{i * step + 1:.1f}" y="{height - bar:.1f}" '
            f'width="{max(step - 2, 1):.1f}" height="{bar:.1f}" fill="#9ec5fe"/>'
        )
    points = [
        f"{i * step + step / 2:.1f},{(height - 4) - (height - 18) * r:.1f}"
        for i, r in enumerate(ratios)
        if r is not None
    ]
    if points:
        parts.append(
            f'<polyline fill="none" stroke="#198754" stroke-width="2" '
            f'points="{" ".join(points)}"/>'
        )
    parts.append(
        f'<text x="4" y="12" font-size="11">loads per 10 s (bars, max {peak}); '
        "hit ratio (line)</text></svg>"
    )
    return "".join(parts)


def install():
    """Add the ZEO screen and tab to Zope's Control Panel (idempotent)."""
    if getattr(ApplicationManager, "ZEO", None) is None:
        ApplicationManager.ZEO = ZEOControlPanel()
        ApplicationManager.manage_options = ApplicationManager.manage_options + (
            {"label": "ZEO", "action": "ZEO/manage_main"},
        )
