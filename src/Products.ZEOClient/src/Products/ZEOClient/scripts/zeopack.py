"""``bin/zeopack``: pack the cluster's database, if the disk can take it.

FileStorage packs by copying the live records into ``Data.fs.pack``
beside ``Data.fs``; in the worst case that needs as much free space as
Data.fs itself.  This refuses to start, with a clear message, when the
file system holding Data.fs has less free space than that plus a margin,
instead of filling the disk under a running server.  Then it asks the
server to pack through an ordinary ZEO client and waits for the result.

Cron, weekly on Sunday at 03:00 (days to keep from ``[settings]
pack-days``)::

    0 3 * * 0  /path/to/bundle/bin/zeopack
"""

import argparse
import os
import sys
import time

from .cluster import parse_address

MB = 1024 * 1024


def free_bytes(path):
    stat = os.statvfs(os.path.dirname(os.path.abspath(path)))
    return stat.f_bavail * stat.f_frsize


def check_space(datafs, margin):
    """None when a pack may start, else the reason it may not."""
    try:
        size = os.path.getsize(datafs)
    except OSError as exc:
        return f"cannot read {datafs}: {exc.strerror}"
    needed = size + margin
    free = free_bytes(datafs)
    if free < needed:
        return (
            f"only {free // MB} MB free beside {datafs}, and a pack may need "
            f"{needed // MB} MB (the size of Data.fs, {size // MB} MB, plus a "
            f"{margin // MB} MB margin); free some space first"
        )
    return None


def main(argv=None, address=None, datafs=None, days=7.0):
    parser = argparse.ArgumentParser(prog="zeopack", description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=float, default=days,
                        help=f"days of history to keep (default {days:g})")
    parser.add_argument("--address", default=address)
    parser.add_argument("--datafs", default=datafs)
    parser.add_argument("--margin-mb", type=int, default=64,
                        help="free space to keep beyond Data.fs's size (MB)")
    args = parser.parse_args(argv)
    if args.days < 0:
        parser.error("--days must be 0 or more")
    reason = check_space(args.datafs, args.margin_mb * MB)
    if reason:
        print(f"zeopack: not packing: {reason}", file=sys.stderr)
        return 1
    import ZEO
    from ZEO.Exceptions import ClientDisconnected

    try:
        storage = ZEO.client(parse_address(args.address), wait_timeout=30)
    except ClientDisconnected:
        print(f"zeopack: the ZEO server at {args.address} does not answer", file=sys.stderr)
        return 1
    try:
        began = time.monotonic()
        storage.pack(time.time() - args.days * 86400, wait=True)
    finally:
        storage.close()
    print(
        f"zeopack: packed, keeping {args.days:g} days, in "
        f"{time.monotonic() - began:.1f}s; Data.fs is now "
        f"{os.path.getsize(args.datafs) // 1024} KB"
    )
    return 0
