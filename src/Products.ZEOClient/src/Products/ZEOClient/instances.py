"""A zc.buildout extension: the bundle's Zope instances from one setting.

``[settings] instances = N`` (default 2) gives the buildout N parts
``instance1`` ... ``instanceN``.  zc.buildout calls ``extension(buildout)``
once it has read every configuration file and the command line, and
before it initialises or installs any part; the extension then:

- gives each ``instanceN`` a port, ``[ports] instanceN``, of ``[ports]
  base`` (default 8080) plus N, unless one is configured (the tests
  configure 0);
- adds a section ``[instanceN]`` made from ``[instance-base]`` with
  ``http-address = ${ports:host}:${ports:instanceN}``, as if it were
  written ``<= instance-base`` in buildout.cfg; a section of that name
  that the configuration defines itself is left as it is;
- replaces the word ``instances`` in ``[buildout] parts`` by the N part
  names (a ``parts`` without that word gets none: whoever wrote it chose);
- provides ``[settings] instance-names`` ("instance1 instance2 ...") and
  ``[settings] instance-addresses`` ("instance1=host:port ...") for the
  other sections, so that no instance list is written out by hand, and
  ``[settings] balancer-servers``, HAProxy's ``server`` line for each
  (``etc/haproxy.cfg.in``; ``bin/cluster`` gives it the addresses in
  ``$ZEOCLUSTER_INSTANCEN``, see ``scripts/balancer.py``).

Sections are added with ``buildout[name] = options``, the buildout's own
way for extensions and recipes to add sections; buildout initialises a
section as it is added (its recipe is loaded then) and installs parts in
the order they were initialised.  So that the instances are still
installed where ``parts`` names them (after ``var-dirs``, which makes the
owner-only folders they write into), the parts named before them are
initialised first.

The product is a develop egg of the bundle, and zc.buildout loads
extensions before it makes develop eggs: on a fresh checkout
bootstrap.py makes the develop eggs first, in a buildout run without
extensions.

First of all it runs ``zeosettings.extension`` (what ``[zeo]`` implies
for the other sections): the instance sections it adds are initialised
at once, with the values they use from ``[zeo]``.

Only zc.buildout runs this module; it imports nothing from Zope.
"""

import logging

import zc.buildout

from . import zeosettings
from .scripts.balancer import env_name

logger = logging.getLogger(__name__)

DEFAULT_INSTANCES = "2"
DEFAULT_PORT_BASE = "8080"
# The word in [buildout] parts that stands for instance1 ... instanceN.
PLACEHOLDER = "instances"
MACRO = "instance-base"


def extension(buildout):
    """The ``zc.buildout.extension`` entry point."""
    zeosettings.extension(buildout)
    settings = buildout["settings"]
    count = instance_count(settings.get("instances", DEFAULT_INSTANCES))
    names = [f"instance{n}" for n in range(1, count + 1)]
    ports = buildout["ports"]
    base = port_base(ports.get("base", DEFAULT_PORT_BASE), count)
    for number, name in enumerate(names, 1):
        if ports.get(name) is None:
            ports[name] = str(base + number)

    parts = buildout["buildout"]["parts"].split()
    if PLACEHOLDER in parts:
        position = parts.index(PLACEHOLDER)
        parts[position : position + 1] = names
        buildout["buildout"]["parts"] = "\n".join(parts)
        for part in parts[:position]:
            buildout[part]  # initialised, hence installed, before the instances

    defined = set(buildout.keys())
    for name in names:
        overrides = {}
        raw = getattr(buildout, "_raw", {}).get(name) if name in defined else None
        if raw is not None and "<" not in raw and "recipe" not in raw:
            # Options for an instance, not a section of its own (a local.cfg's
            # [instance1] with zeo-address only, or instance1:key=value on the
            # command line): they change the default section.
            overrides = dict(raw)
            del buildout._raw[name]
            defined.discard(name)
        if name in defined:
            buildout[name]
        else:
            buildout[name] = {
                "<": MACRO,
                "http-address": f"${{ports:host}}:${{ports:{name}}}",
                **overrides,
            }
    settings["instance-names"] = " ".join(names)
    settings["instance-addresses"] = " ".join(
        f"{name}={http_address(buildout, name)}" for name in names
    )
    settings["balancer-servers"] = "\n".join(
        f'server {name} "${env_name(name)}" check' for name in names
    )
    logger.info("%d instances: %s", count, settings["instance-addresses"])


def instance_count(value):
    """``[settings] instances`` as a number, or a UserError saying why not."""
    text = value.strip()
    if not text.isdigit() or int(text) < 1:
        raise zc.buildout.UserError(
            f"[settings] instances must be a whole number of 1 or more "
            f"(how many Zope instances to build), not {value!r}"
        )
    return int(text)


def port_base(value, count):
    """``[ports] base`` as a number; instance N listens on base + N."""
    text = value.strip()
    if not text.isdigit() or int(text) + count > 65535:
        raise zc.buildout.UserError(
            f"[ports] base must be a port number (instance N listens on "
            f"base + N, at most 65535), not {value!r}"
        )
    return int(text)


def http_address(buildout, name):
    address = buildout[name].get("http-address")
    if not address:
        raise zc.buildout.UserError(
            f"[{name}] has no http-address: give it one, e.g. "
            f"http-address = ${{ports:host}}:${{ports:{name}}}, or remove "
            f"the section to get the default one"
        )
    return address
