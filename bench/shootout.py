"""``make shootout``: zodbshootout 0.8.0 on FileStorage, ZEO as shipped,
the bundle's ZEO (direct calls off and on) and RelStorage on PostgreSQL.

zodbshootout is the benchmark the ZODB world compares storages with, so
its figures can be read against published ones.  Every database is
started here, side by side, in temporary folders:

- ``fs``: FileStorage in the benchmark's own process;
- ``zeo_stock``: ZEO 6.2's runzeo with its own configuration (asyncio's
  loop, pickle) and ZEO's own ClientStorage;
- ``zeo_bundle`` and ``zeo_direct``: the bundle's server (built by the
  test harness from this checkout's buildout.cfg: hardened protocol,
  records guard with ``allow-module zodbshootout`` for the benchmark's
  own classes) and the bundle's client storage, ``direct-calls`` off
  and on;
- ``relstorage``: RelStorage 4.3 (history-preserving) on a PostgreSQL
  started in a temporary folder on a unix socket (tests/postgres.py);
  left out, with one line saying so, when PostgreSQL is not installed.

zodbshootout runs its benchmarks through pyperf in worker processes;
they find the bundle's eggs through PYTHONPATH (zodbshootout passes the
``PYTHON*`` variables on).  Benchmarks: add, update, cold, warm and hot,
at 1 and 100 objects per transaction, with 1 and 2 processes.  Prints a
table (microseconds, the median of pyperf's values, and the ratio to
FileStorage) and writes var/shootout/results.json; pyperf's own files
are kept beside it.  ``--smoke`` runs one small benchmark on each
database (the test suite uses it to keep this from rotting).
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(HERE)
sys.path.insert(0, CHECKOUT)

from tests.harness import Bundle  # noqa: E402
from tests.harness import ZOPEPY  # noqa: E402
from tests.harness import wait_until  # noqa: E402

BENCHMARKS = ("add", "update", "cold", "warm", "hot")
MATRIX = ((1, 1), (100, 1), (1, 2), (100, 2))  # (objects, processes)

STOCK_SERVER = """\
<zeo>
  address {socket}
</zeo>
<filestorage>
  path {folder}/stock.fs
</filestorage>
<eventlog>
  <logfile>
    path {folder}/stock.log
  </logfile>
</eventlog>
"""

# ZEO as shipped: asyncio's loop, whatever else is importable.
STOCK_RUNNER = (
    "import asyncio, ZEO.asyncio.server as server\n"
    "server.new_event_loop = asyncio.new_event_loop\n"
    "from ZEO.runzeo import main\n"
    "main(['-C', {conf!r}])\n"
)


def config(folder, stock_socket, bundle_socket, dsn):
    sections = [
        "%import Products.ZEOClient",
        f"<zodb fs>\n  <filestorage>\n    path {folder}/fs.fs\n  </filestorage>\n</zodb>",
        f"<zodb zeo_stock>\n  <zeoclient>\n    server {stock_socket}\n"
        f"    cache-size 64MB\n  </zeoclient>\n</zodb>",
    ]
    for name, direct in (("zeo_bundle", "off"), ("zeo_direct", "on")):
        sections.append(
            f"<zodb {name}>\n  <zeoclusterclient>\n    direct-calls {direct}\n"
            f"    startup-wait 30s\n    <zeoclient>\n      server {bundle_socket}\n"
            f"      cache-size 64MB\n    </zeoclient>\n  </zeoclusterclient>\n</zodb>"
        )
    if dsn:
        sections.insert(0, "%import relstorage")
        sections.append(
            f"<zodb relstorage>\n  <relstorage>\n    keep-history true\n"
            f"    <postgresql>\n      dsn {dsn}\n    </postgresql>\n"
            f"  </relstorage>\n</zodb>"
        )
    return "\n".join(sections) + "\n"


def run_shootout(conf, objects, processes, benchmarks, output, smoke):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    args = [
        sys.executable, "-m", "zodbshootout", "--quiet",
        "--include-mapping", "no",
        "--object-counts", str(objects), "--concurrency", str(processes),
        "-o", output,
    ]
    # Fixed loops: pyperf's calibration would double the run time.
    args += ["-p", "1", "-n", "1", "-w", "0", "-l", "1"] if smoke else [
        "-p", "1", "-n", "5", "-w", "1", "-l", "10"]
    # pyperf's workers are in the benchmark's own session: stopped with
    # it, by its process group, whatever happens here.
    process = subprocess.Popen(args + [conf, *benchmarks], env=env,
                               cwd=os.path.dirname(conf), start_new_session=True)
    try:
        if process.wait(timeout=3600):
            raise SystemExit(f"zodbshootout failed (exit status {process.returncode})")
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


def read_results(path):
    """{(database, benchmark label): median seconds} from pyperf's file."""
    import pyperf

    found = {}
    for benchmark in pyperf.BenchmarkSuite.load(path).get_benchmarks():
        name = benchmark.get_name()  # "{c=1 processes, o=1} fs: read 1 cold objects"
        head, _, label = name.partition("} ")
        database, _, what = label.partition(": ")
        found[(database, f"{head.strip('{')}: {what}")] = benchmark.median()
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="one small benchmark per database")
    parser.add_argument("--output", default=os.path.join(CHECKOUT, "var", "shootout",
                                                         "results.json"))
    args = parser.parse_args(argv)
    from tests.postgres import TemporaryPostgres
    from tests.postgres import Unavailable

    out_folder = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(out_folder, exist_ok=True)
    folder = tempfile.mkdtemp(prefix="shootout-")
    bundle = Bundle().build()
    pg = None
    try:
        bundle_socket = bundle.spawn_server(
            "shootout", ("<hardened 1>", "<hardened 1>\n  allow-module zodbshootout"))
        stock_socket = os.path.join(folder, "stock.sock")
        stock_conf = os.path.join(folder, "stock.conf")
        with open(stock_conf, "w") as f:
            f.write(STOCK_SERVER.format(socket=stock_socket, folder=folder))
        bundle.spawn([ZOPEPY, "-c", STOCK_RUNNER.format(conf=stock_conf)])
        wait_until("the stock server's socket", lambda: os.path.exists(stock_socket), 60)
        dsn = None
        try:
            pg = TemporaryPostgres().start()
            dsn = pg.create_database("shootout")
        except Unavailable as exc:
            print(f"shootout: {exc}")
        conf = os.path.join(folder, "shootout.conf")
        with open(conf, "w") as f:
            f.write(config(folder, stock_socket, bundle_socket, dsn))
        matrix = ((1, 1),) if args.smoke else MATRIX
        benchmarks = ("add", "cold") if args.smoke else BENCHMARKS
        results = {}
        for objects, processes in matrix:
            output = os.path.join(out_folder, f"pyperf-o{objects}-c{processes}.json")
            if os.path.exists(output):
                os.remove(output)
            run_shootout(conf, objects, processes, benchmarks, output, args.smoke)
            results.update(read_results(output))
    finally:
        if pg is not None:
            pg.stop()
        bundle.cleanup()
        shutil.rmtree(folder, ignore_errors=True)
    databases = ["fs", "zeo_stock", "zeo_bundle", "zeo_direct"] + (["relstorage"] if dsn else [])
    table = {}
    for (database, label), seconds in results.items():
        table.setdefault(label, {})[database] = seconds
    rows = {}
    for label in sorted(table, key=sort_key):
        row = table[label]
        fs = row.get("fs")
        rows[label] = {
            db: {"us": row[db] * 1e6, "ratio_to_fs": row[db] / fs if fs else None}
            for db in databases if db in row
        }
    with open(args.output, "w") as f:
        json.dump({"databases": databases, "rows": rows, "smoke": args.smoke}, f, indent=2)
    report(databases, rows)
    print(f"\nwritten to {args.output}")
    return 0


def sort_key(label):
    head, _, what = label.partition(": ")
    return (head, what)


def report(databases, rows):
    print("\nzodbshootout 0.8.0, us (median), x FileStorage")
    print(f"  {'':44}" + "".join(f"{db:>20}" for db in databases))
    for label, row in rows.items():
        cells = []
        for db in databases:
            cell = row.get(db)
            cells.append(f"{cell['us']:10.0f} (x{cell['ratio_to_fs']:5.2f})" if cell else " " * 20)
        print(f"  {label[:44]:44}" + "".join(f"{c:>20}" for c in cells))


if __name__ == "__main__":
    sys.exit(main())
