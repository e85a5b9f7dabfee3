"""``bin/zeoguard scan``: what of an existing database the guard refuses.

The bundle's server refuses to store records that reference globals
outside its allow lists (``server/records.py``).  A site moved onto the
bundle has records that were never checked; this reads every current
record of its Data.fs (read-only, no lock: the server may be running)
with the guard's own reader, and prints what is outside the policy:
each global, how it is used (referenced, called, written into through a
call), how many records do so and one example object, then the lines to
paste into zeo.conf's ``<hardened>`` section.  Exit status 1 when
anything is outside the policy, 0 when nothing is.

The policy is the bundle's: the defaults plus the ``allow-*`` lines of
the server's zeo.conf.  Imports nothing from Zope.
"""

import argparse
import os
import re
import sys

ALLOW_LINE = re.compile(
    r"^\s*(allow-module|allow-global|allow-callable|allow-fresh-callable)\s+(\S+)\s*$"
)

HOW = {
    "global": "referenced",
    "call": "called",
    "write": "written into after a call",
    "unreadable": "not a readable pickle",
}


INCLUDE_LINE = re.compile(r"^\s*%include\s+(\S+)\s*$")


def configured(zeo_conf, found=None):
    """{key: [values]} of the allow lines in *zeo_conf* and the files it
    ``%include``s (the generated records-policy.conf); absent: none."""
    found = {} if found is None else found
    try:
        with open(zeo_conf) as f:
            for line in f:
                match = ALLOW_LINE.match(line)
                if match:
                    found.setdefault(match.group(1), []).append(match.group(2))
                    continue
                match = INCLUDE_LINE.match(line)
                if match:
                    path = os.path.join(os.path.dirname(zeo_conf), match.group(1))
                    configured(path, found)
    except FileNotFoundError:
        pass
    return found


def policy_from(zeo_conf):
    from ..server import records

    extra = configured(zeo_conf)
    return records.Findings(
        modules=records.DEFAULT_MODULES + tuple(extra.get("allow-module", ())),
        globals_=records.DEFAULT_GLOBALS + tuple(extra.get("allow-global", ())),
        callables=records.DEFAULT_CALLABLES + tuple(extra.get("allow-callable", ())),
        fresh=records.DEFAULT_FRESH + tuple(extra.get("allow-fresh-callable", ())),
    )


def scan_storage(storage, policy):
    """Read every current record of *storage*; returns how many."""
    from ZODB.utils import oid_repr

    from ..server import records

    count = 0
    next_oid = None
    while True:
        try:
            oid, tid, data, next_oid = storage.record_iternext(next_oid)
        except ValueError:  # no object at all
            return count
        count += 1
        policy.oid = oid_repr(oid)
        try:
            records.scan(data, policy)
        except Exception as exc:  # what the guard would refuse as unreadable
            policy.refuse("unreadable", type(exc).__name__, str(exc))
        if next_oid is None:
            return count


def allow_block(found):
    """The zeo.conf lines that would let *found* through."""
    lines = []
    for (kind, name), _ in sorted(found.items(), key=lambda item: item[0][1]):
        if kind == "global":
            lines.append(f"  allow-global {name}")
        elif kind == "call":
            lines.append(f"  allow-callable {name}")
        elif kind == "write":
            lines.append(f"  allow-fresh-callable {name}"
                         "   # only if it returns a new object each time")
    return list(dict.fromkeys(lines))


def report(found, records_read, out):
    if not found:
        print(f"{records_read} records read: nothing outside the policy.", file=out)
        return 0
    print(f"{records_read} records read; outside the policy:", file=out)
    print(f"  {'records':>8}  {'how':28} {'global':50} example", file=out)
    for (kind, name), (count, oid) in sorted(found.items(), key=lambda i: -i[1][0]):
        print(f"  {count:8}  {HOW[kind]:28} {name:50} {oid}", file=out)
    block = allow_block(found)
    if block:
        print("\nTo allow them (only what you trust: each is code the server and "
              "every client may run), in zeo.conf's <hardened> section:", file=out)
        print("\n".join(block), file=out)
    if any(kind == "unreadable" for kind, _ in found):
        print("\nUnreadable records cannot be allowed: they are not ZODB records "
              "(or are compressed or encrypted by the client).", file=out)
    return 1


def main(argv=None, datafs=None, zeo_conf=None):
    parser = argparse.ArgumentParser(
        prog="zeoguard", description=__doc__.split("\n")[0].strip("`: "))
    parser.add_argument("command", choices=["scan"])
    parser.add_argument("datafs", nargs="?", default=datafs,
                        help=f"the Data.fs to read (default: {datafs})")
    parser.add_argument("--zeo-conf", default=zeo_conf,
                        help=f"whose allow lines to use (default: {zeo_conf})")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not args.datafs or not os.path.exists(args.datafs):
        print(f"zeoguard: no database at {args.datafs}", file=sys.stderr)
        return 2
    from ZODB.FileStorage import FileStorage

    policy = policy_from(args.zeo_conf)
    storage = FileStorage(args.datafs, read_only=True)
    try:
        records_read = scan_storage(storage, policy)
    finally:
        storage.close()
    return report(policy.found, records_read, sys.stdout)
