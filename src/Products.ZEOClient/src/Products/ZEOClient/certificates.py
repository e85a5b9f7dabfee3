"""TLS certificates: when they expire, and ZEO's ``<ssl>`` section text.

A certificate that lapses stops every client at its next reconnection,
which for a cluster that runs for months is when nobody looks.  So the
bundle shows each certificate it uses (the ZEO tab, status.json,
``bin/zeostatus``) with its ``notAfter`` date and the days left, and
flags it when fewer than ``WARN_DAYS`` remain.

The dates come from two places, both read through public interfaces:

- a certificate *file* (a client's own certificate, the ``certificate``
  key of its ``<ssl>`` section): ``openssl x509 -enddate``, the command
  line ``bin/zeocerts`` needs anyway.  Python's ssl module decodes a
  certificate file only through a private function, and the
  ``cryptography`` package is not part of the bundle.  A file is read
  once per version (path and modification time), so a status page does
  not start a process each time it renders.
- the certificate a TLS *peer* presented (the server's, on a client's
  connection): ``getpeercert()``, decoded and verified by the handshake.

``ssl_section`` reads the keys of ZEO's ``<ssl>`` section text that the
programs outside Zope need: ``bin/zeostatus`` connects with them, and the
buildout extension (``zeosettings.py``) hands the certificate's path to
the instances, because ZEO's section turns the text into an SSL context
that keeps no trace of its files.  ZEO's ZConfig schema is still what
validates the section, in every process that uses it.

Nothing here imports Zope or ZEO: the scripts and the buildout extension
use it too.
"""

import logging
import math
import os
import re
import shutil
import ssl
import subprocess
import time

logger = logging.getLogger(__name__)

WARN_DAYS = 30
DAY = 86400.0

_file_dates = {}  # {(path, mtime_ns): notAfter as POSIX seconds}
_logged = set()  # errors logged once, not at every status page


class CertificateError(Exception):
    """A certificate cannot be read; the message says why and what to do."""


def openssl_command():
    """The path of the openssl program, or CertificateError."""
    path = shutil.which("openssl")
    if path is None:
        raise CertificateError(
            "the openssl command is not installed (Debian: apt-get install openssl)"
        )
    return path


def file_not_after(path):
    """The POSIX time at which the certificate in *path* expires."""
    try:
        version = (path, os.stat(path).st_mtime_ns)
    except OSError as exc:
        raise CertificateError(f"cannot read {path}: {exc.strerror}") from None
    if version not in _file_dates:
        result = subprocess.run(
            [openssl_command(), "x509", "-enddate", "-noout", "-in", path],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        found = re.search(r"^notAfter=(.+)$", result.stdout, re.M)
        if result.returncode != 0 or not found:
            detail = (result.stderr.strip().splitlines() or ["no notAfter date"])[-1]
            raise CertificateError(f"{path} is not a PEM certificate ({detail})")
        _file_dates[version] = ssl.cert_time_to_seconds(found.group(1).strip())
    return _file_dates[version]


def peer_not_after(peercert):
    """The expiry time of a certificate as ``getpeercert()`` gives it."""
    if not peercert or "notAfter" not in peercert:
        return None
    return ssl.cert_time_to_seconds(peercert["notAfter"])


def iso(seconds):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def expiry(not_after, now=None, warn_days=WARN_DAYS):
    """JSON-ready: the date, whole days left, and whether to warn."""
    now = time.time() if now is None else now
    days_left = math.floor((not_after - now) / DAY)
    return {
        "not_after": iso(not_after),
        "days_left": days_left,
        "expired": not_after <= now,
        "warning": days_left < warn_days,
    }


def file_expiry(path, now=None):
    """``expiry`` of the certificate file *path*, with ``path``; never
    raises: a certificate that cannot be read is reported as ``error``,
    which warns as well (the client will not connect with it)."""
    try:
        return {"path": path, **expiry(file_not_after(path), now)}
    except CertificateError as exc:
        if str(exc) not in _logged:
            _logged.add(str(exc))
            logger.warning("certificate expiry unknown: %s", exc)
        return {"path": path, "error": str(exc), "warning": True}


def in_use_expiry(path, loaded, now=None):
    """``file_expiry`` of the certificate a running process loaded from
    *path* when it started, whose notAfter was then *loaded* (None: not
    known).  A process keeps the certificate it loaded: when the file has
    been renewed since, the result describes the one in use and carries
    the file's as ``renewed`` (a restart puts it to use)."""
    on_disk = file_expiry(path, now)
    if loaded is None or on_disk.get("not_after") == iso(loaded):
        return on_disk
    return {"path": path, **expiry(loaded, now), "renewed": on_disk}


def describe(name, info):
    """One line of text for an ``expiry``/``file_expiry`` dict."""
    if info.get("error"):
        return f"{name}: WARNING {info['error']}"
    where = f" {info['path']}" if info.get("path") else ""
    if info["expired"]:
        state = f"EXPIRED on {info['not_after']}"
    else:
        state = f"expires {info['not_after']} ({info['days_left']} days left)"
    warning = "WARNING " if info["warning"] else ""
    return f"{name}{where}: {warning}{state}"


def ssl_section(text):
    """{key: value} of the ``<ssl>`` section in *text*; {} for no text.

    Keys as ZEO spells them (``certificate``, ``key``, ``authenticate``,
    ``server-hostname``, ``check-hostname``, ...); ValueError when there
    is text but no ``<ssl>`` section in it.
    """
    if not text or not text.strip():
        return {}
    found = re.search(r"<ssl>(.*?)</ssl>", text, re.S | re.I)
    if found is None:
        raise ValueError(f"not an <ssl> section: {text.strip()[:60]!r}")
    keys = {}
    for line in found.group(1).splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            keys[key.lower()] = value.strip()
    return keys


def client_context(section):
    """An SSL context for a client, from ``ssl_section``'s keys, as ZEO's
    ``ZEO.zconfig.ssl_config`` makes it; returns (context, server_hostname)."""
    authenticate = section.get("authenticate")
    cafile = capath = None
    if authenticate and os.path.isdir(authenticate):
        capath = authenticate
    elif authenticate and authenticate != "DYNAMIC":
        cafile = authenticate
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=cafile, capath=capath
    )
    if section.get("certificate"):
        context.load_cert_chain(section["certificate"], section.get("key") or None)
    context.verify_mode = ssl.CERT_REQUIRED
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    context.check_hostname = section.get("check-hostname", "true").lower() in (
        "true", "yes", "on", "1"
    )
    return context, section.get("server-hostname") or None
