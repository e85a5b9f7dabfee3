"""``make soak``: mixed load on a real cluster while its server restarts.

Builds the bundle from this checkout into a temporary folder (the test
harness, as ``make bench`` does), starts it, and for ``--seconds``
(default 300) runs writers and readers over HTTP through both instances:

- each writer adds folders, one at a time, to a BTreeFolder2 of its own
  (so that writers do not conflict and a container stays cheap to write),
  alternating between the instances, and keeps what was acknowledged (the
  add's 302) and what was refused (503: "nothing was saved" or "outcome
  unknown");
- each reader reads the title of a folder acknowledged at least two
  seconds earlier (the other instance may not have its invalidation yet)
  through either instance, and checks it.

The ZEO server is restarted (``bin/zeoserver restart``) ``--restarts``
times (2: at a third and at two thirds of the run), evenly spread; a
server still running ``--restart-timeout`` (60) seconds after its
SIGTERM is killed by PID and that is a failure.  Afterwards every
acknowledged write must be on the server, read by a ZEO client of its
own; a write refused with
"nothing was saved" must not be; one with an unknown outcome may be.

Memory: the resident set size (VmRSS, /proc) of the server and of each
instance, with their threads and open files, once the load has run for a
warm-up period (``--warmup``, 10 s: connection and object caches fill
first) and at the end.  The bound, checked: an instance's RSS grows by at
most ``--rss-growth`` MiB (150) over the run, its threads by at most 2 and
its open files by at most 8; the server (a new process after the
restarts) ends at most ``--rss-growth`` MiB above where it started.  ZODB
connection caches legitimately grow with the database, up to their object
limit, so the bound is generous; a leak per restart or per request (a
thread, a connection, a cache that is never dropped) exceeds it.

Prints a table and writes var/soak/results.json.  Exit status 1 if any
acknowledged write is missing or wrong, a read returned wrong data, or a
bound is exceeded.  Not part of ``make test``.
"""

import argparse
import bisect
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(HERE)
sys.path.insert(0, CHECKOUT)

from tests.harness import Bundle  # noqa: E402
from tests.harness import wait_until  # noqa: E402

INSTANCES = ("instance1", "instance2")
MIB = 1024 * 1024


def proc_figures(pid):
    """{"rss_mib", "threads", "files"} of process *pid*, from /proc."""
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return {
        "pid": pid,
        "rss_mib": round(int(fields["VmRSS"].split()[0]) * 1024 / MIB, 1),
        "threads": int(fields["Threads"]),
        "files": len(os.listdir(f"/proc/{pid}/fd")),
    }


def pids(bundle):
    found = {"server": int(bundle.read("var", "zeoserver.pid").strip())}
    for name in INSTANCES:
        out = bundle.run_script(name, "status").stdout
        found[name] = int(out.rsplit("pid=", 1)[1].split()[0])
    return found


def memory(bundle):
    return {name: proc_figures(pid) for name, pid in pids(bundle).items()}


def percentile(values, fraction):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * fraction))]


class Load:
    """The writers' and readers' shared record; lists appended under a lock."""

    def __init__(self, bundle, deadline):
        self.bundle = bundle
        self.deadline = deadline
        self.lock = threading.Lock()
        self.acknowledged = {}  # path: title
        self.acknowledged_at = []  # monotonic times, in order
        self.acknowledged_paths = []  # the paths, in the same order
        self.nothing_saved = set()
        self.unknown = set()  # 503 "may or may not", 500, no answer
        self.errors = {}  # kind: count
        self.writes = []  # seconds of acknowledged writes
        self.reads = []  # seconds of good reads
        self.wrong = []  # (path, expected, got)
        self.from_cache = 0  # good reads served while the server was away

    def error(self, kind):
        with self.lock:
            self.errors[kind] = self.errors.get(kind, 0) + 1

    def request(self, instance, method, path, data=None):
        """(status, text, headers) or (None, kind, None) for no answer."""
        try:
            response = self.bundle.http(
                instance, method, path, data=data, timeout=60, follow_redirects=False
            )
        except TimeoutError:
            return None, "no answer within 60 s", None
        except OSError as exc:
            return None, f"connection error ({type(exc).__name__})", None
        return response.status, response.text, response.headers

    def writer(self, w):
        n = 0
        while time.monotonic() < self.deadline and n < 1_000_000:
            instance = INSTANCES[n % 2]
            path, title = f"soak/w{w}/o{n}", f"writer {w} object {n}"
            began = time.monotonic()
            status, text, _ = self.request(
                instance,
                "POST",
                f"/soak/w{w}/manage_addProduct/OFSP/manage_addFolder",
                data={"id": f"o{n}", "title": title},
            )
            seconds = time.monotonic() - began
            nothing_saved = status == 503 and "Nothing was saved" in text
            with self.lock:
                if status == 302:
                    self.acknowledged[path] = title
                    self.acknowledged_at.append(time.monotonic())
                    self.acknowledged_paths.append(path)
                    self.writes.append(seconds)
                elif nothing_saved:
                    self.nothing_saved.add(path)
                else:
                    self.unknown.add(path)
            if status != 302:
                if status is None:
                    self.error(f"write: {text}")
                elif nothing_saved:
                    self.error(f"write {status} nothing saved")
                elif status == 503:
                    self.error(f"write {status} outcome unknown")
                else:
                    self.error(f"write {status} {text[:50].strip()}")
                time.sleep(0.2)  # the server is away: do not spin
            n += 1

    def reader(self, r):
        rng = random.Random(r)
        n = 0
        while time.monotonic() < self.deadline and n < 10_000_000:
            n += 1
            with self.lock:
                old_enough = bisect.bisect_right(self.acknowledged_at, time.monotonic() - 2.0)
                path = self.acknowledged_paths[rng.randrange(old_enough)] if old_enough else None
                title = self.acknowledged.get(path)
            if path is None:
                time.sleep(0.1)  # nothing old enough to read yet
                continue
            began = time.monotonic()
            status, text, headers = self.request(
                INSTANCES[rng.randint(0, 1)], "GET", f"/{path}/title_or_id"
            )
            if status == 200 and text == title:
                with self.lock:
                    self.reads.append(time.monotonic() - began)
                    if headers.get("X-ZEO-Status") == "disconnected":
                        self.from_cache += 1
            elif status == 200:
                with self.lock:
                    self.wrong.append((path, title, text[:100]))
                self.error("read WRONG DATA")
            elif status is None:
                self.error(f"read: {text}")
                time.sleep(0.2)
            elif status == 503:
                self.error("read 503 (server away, object not in the instance's cache)")
                time.sleep(0.2)
            else:
                self.error(f"read {status}")


def on_server(bundle):
    """{path: title} of everything under /soak, read by a ZEO client of its own."""
    return json.loads(bundle.python(
        "import json, ZODB\n"
        "db = ZODB.DB(ZEO.client(os.environ['ZEO_ADDRESS'], wait_timeout=30))\n"
        "with db.transaction() as conn:\n"
        "    soak = conn.root()['Application']['soak']\n"
        "    found = {f'soak/{w}/{i}': o.title\n"
        "             for w in soak.objectIds() for i, o in soak[w].objectItems()}\n"
        "print(json.dumps(found))\n"
        "db.close()\n"
    ))


def healthy(bundle):
    try:
        return all(
            bundle.http(name, "GET", "/zeo-health", auth=False, timeout=5).status == 200
            for name in INSTANCES
        )
    except OSError:
        return False


def server_pid(bundle):
    try:
        return int(bundle.read("var", "zeoserver.pid").strip())
    except (FileNotFoundError, ValueError):
        return None


def restart_server(bundle, timeout):
    """``bin/zeoserver restart``, bounded: a server that has not stopped
    within *timeout* seconds is killed by PID (zdaemon then starts the new
    one) and that is reported.  Returns the figures of the restart."""
    old = server_pid(bundle)
    began = time.monotonic()
    figures = {"exit_status": None, "problem": None}
    try:
        figures["exit_status"] = bundle.run_script("zeoserver", "restart", timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        figures["problem"] = (
            f"the server (pid {old}) had not stopped {timeout:.0f} s after SIGTERM; "
            "killed it (SIGKILL)"
        )
        try:
            os.kill(old, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_until("a new server process", lambda: server_pid(bundle) not in (None, old), 60)
    wait_until("both instances to reconnect", lambda: healthy(bundle), 120)
    figures["instances_back_after_s"] = round(time.monotonic() - began, 1)
    return figures


def soak(bundle, args):
    result = {"seconds": args.seconds, "writers": args.writers, "readers": args.readers}
    response = bundle.add_folder("instance1", "soak", "soak")
    assert response.status == 200, response.status
    for w in range(args.writers):
        response = bundle.http(
            "instance1", "POST", "/soak/manage_addProduct/BTreeFolder2/manage_addBTreeFolder",
            data={"id": f"w{w}", "title": ""},
        )
        assert response.status == 200, (response.status, response.text[:300])
    wait_until(
        "instance2 to see the writers' folders",
        lambda: bundle.title("instance2", f"soak/w{args.writers - 1}")[0] == 200,
        30,
    )
    began = time.monotonic()
    load = Load(bundle, began + args.seconds)
    threads = [threading.Thread(target=load.writer, args=(w,)) for w in range(args.writers)]
    threads += [threading.Thread(target=load.reader, args=(r,)) for r in range(args.readers)]
    for thread in threads:
        thread.start()
    restarts = []
    try:
        time.sleep(min(args.warmup, args.seconds / 4))
        result["memory_start"] = memory(bundle)
        result["memory_start_at_s"] = round(time.monotonic() - began, 1)
        for k in range(1, args.restarts + 1):
            at = began + args.seconds * k / (args.restarts + 1)
            time.sleep(max(0.0, at - time.monotonic()))
            at_s = round(time.monotonic() - began, 1)
            restarts.append({"at_s": at_s, **restart_server(bundle, args.restart_timeout)})
        time.sleep(max(0.0, began + args.seconds - time.monotonic()))
    finally:
        load.deadline = 0
        for thread in threads:
            thread.join(180)
    elapsed = time.monotonic() - began
    result["elapsed_s"] = round(elapsed, 1)
    result["restarts"] = restarts
    result["memory_end"] = memory(bundle)

    wait_until("both instances to be connected", lambda: healthy(bundle), 120)
    found = on_server(bundle)
    missing = sorted(p for p in load.acknowledged if p not in found)
    altered = sorted(p for p, t in load.acknowledged.items() if p in found and found[p] != t)
    resurrected = sorted(p for p in load.nothing_saved if p in found)
    unknown_saved = sum(1 for p in load.unknown if p in found)
    # And the instances show them: a sample, through both.
    sample = random.Random(0).sample(sorted(load.acknowledged), min(200, len(load.acknowledged)))
    shown_wrong = []
    for path in sample:
        for name in INSTANCES:
            status, title, _ = bundle.title(name, path)
            if (status, title) != (200, load.acknowledged[path]):
                shown_wrong.append((name, path, status, title[:80]))
    result.update({
        "writes_acknowledged": len(load.acknowledged),
        "writes_per_s": round(len(load.acknowledged) / elapsed, 1),
        "write_p50_ms": round(percentile(load.writes, 0.5) * 1000, 1) if load.writes else None,
        "write_p99_ms": round(percentile(load.writes, 0.99) * 1000, 1) if load.writes else None,
        "reads_ok": len(load.reads),
        "reads_from_cache_while_server_away": load.from_cache,
        "reads_per_s": round(len(load.reads) / elapsed, 1),
        "read_p50_ms": round(percentile(load.reads, 0.5) * 1000, 1) if load.reads else None,
        "read_p99_ms": round(percentile(load.reads, 0.99) * 1000, 1) if load.reads else None,
        "errors_by_kind": dict(sorted(load.errors.items())),
        "refused_nothing_saved": len(load.nothing_saved),
        "refused_outcome_unknown": len(load.unknown),
        "outcome_unknown_found_saved": unknown_saved,
        "found_on_server": len(found),
        "acknowledged_missing": missing[:20],
        "acknowledged_missing_count": len(missing),
        "acknowledged_altered": altered[:20],
        "nothing_saved_but_found": resurrected[:20],
        "wrong_reads": load.wrong[:20],
        "instances_sample_checked": len(sample),
        "instances_sample_wrong": shown_wrong[:20],
    })
    return result


def check(result, args):
    """The verdict: a list of what failed, empty when all is well."""
    failures = []
    if result["acknowledged_missing_count"]:
        failures.append(f"{result['acknowledged_missing_count']} acknowledged writes missing")
    for key in ("acknowledged_altered", "nothing_saved_but_found", "wrong_reads",
                "instances_sample_wrong"):
        if result[key]:
            failures.append(f"{key.replace('_', ' ')}: {result[key][:3]}")
    for n, restart in enumerate(result["restarts"], 1):
        if restart["problem"] or restart["exit_status"]:
            failures.append(
                f"restart {n} at {restart['at_s']:.0f} s: "
                + (restart["problem"] or f"exit status {restart['exit_status']}")
            )
    if len(result["restarts"]) != args.restarts:
        failures.append(
            f"{len(result['restarts'])} server restarts instead of {args.restarts}"
        )
    if not result["writes_acknowledged"] or not result["reads_ok"]:
        failures.append("no load went through")
    start, end = result["memory_start"], result["memory_end"]
    bounds = {}
    for name in start:
        growth = end[name]["rss_mib"] - start[name]["rss_mib"]
        bounds[name] = {"rss_growth_mib": round(growth, 1), "bound_mib": args.rss_growth}
        if growth > args.rss_growth:
            failures.append(f"{name}: RSS grew {growth:.1f} MiB (bound {args.rss_growth})")
        if name != "server":  # the server is a new process after a restart
            for key, bound in (("threads", 2), ("files", 8)):
                more = end[name][key] - start[name][key]
                if more > bound:
                    failures.append(f"{name}: {more} more {key} (bound {bound})")
    result["memory_bounds"] = bounds
    return failures


def report(r, failures):
    print(f"\nSoak: {r['elapsed_s']:.0f} s, {r['writers']} writers and {r['readers']} readers "
          "over HTTP through both instances")
    for n, x in enumerate(r["restarts"], 1):
        print(f"  server restart {n} at {x['at_s']:.0f} s: instances back after "
              f"{x['instances_back_after_s']:.1f} s" + (f"; {x['problem']}" if x["problem"] else ""))
    print(f"\n  {'':28} {'count':>8} {'per s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    print(f"  {'writes acknowledged':28} {r['writes_acknowledged']:8d} {r['writes_per_s']:8.1f}"
          f" {r['write_p50_ms'] or 0:8.1f} {r['write_p99_ms'] or 0:8.1f}")
    print(f"  {'reads correct':28} {r['reads_ok']:8d} {r['reads_per_s']:8.1f}"
          f" {r['read_p50_ms'] or 0:8.1f} {r['read_p99_ms'] or 0:8.1f}")
    print(f"  ({r['reads_from_cache_while_server_away']} of the correct reads were served from "
          "an instance's cache while the server was away, marked X-ZEO-Status)")
    print("\n  Errors by kind")
    for kind, count in r["errors_by_kind"].items():
        print(f"    {kind[:60]:60} {count:6d}")
    if not r["errors_by_kind"]:
        print("    none")
    print(f"\n  Acknowledged {r['writes_acknowledged']}, found on the server "
          f"{r['found_on_server'] - r['outcome_unknown_found_saved']} of them + "
          f"{r['outcome_unknown_found_saved']} of {r['refused_outcome_unknown']} with an "
          f"unknown outcome; missing {r['acknowledged_missing_count']}; refused with "
          f"'nothing saved' {r['refused_nothing_saved']}, found "
          f"{len(r['nothing_saved_but_found'])}; instances checked on "
          f"{r['instances_sample_checked']} of them, wrong {len(r['instances_sample_wrong'])}")
    print(f"\n  {'Memory':10} {'RSS MiB start':>14} {'end':>8} {'growth':>8} {'bound':>7}"
          f" {'threads':>9} {'files':>9}")
    for name, start in r["memory_start"].items():
        end = r["memory_end"][name]
        print(f"  {name:10} {start['rss_mib']:14.1f} {end['rss_mib']:8.1f}"
              f" {end['rss_mib'] - start['rss_mib']:+8.1f} {r['memory_bounds'][name]['bound_mib']:+7d}"
              f" {start['threads']:4d}->{end['threads']:<4d} {start['files']:4d}->{end['files']:<4d}")
    print(f"  (start: after {r['memory_start_at_s']:.0f} s of load; the server is a new "
          "process after each restart)")
    print("\n  Verdict: " + ("OK" if not failures else "FAILED\n    " + "\n    ".join(failures)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="length of the run")
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--readers", type=int, default=4)
    parser.add_argument("--warmup", type=float, default=10.0,
                        help="seconds of load before the first memory figures")
    parser.add_argument("--rss-growth", type=int, default=150,
                        help="MiB an instance's (or the server's) RSS may grow")
    parser.add_argument("--restart-timeout", type=float, default=60.0,
                        help="seconds `bin/zeoserver restart` may take")
    parser.add_argument("--restarts", type=int, default=2,
                        help="server restarts, spread evenly over the run")
    parser.add_argument("--direct-calls", choices=("on", "off"), default=None,
                        help="[zeo] direct-calls for the soak's bundle (default: buildout.cfg's)")
    parser.add_argument("--output", default=os.path.join(CHECKOUT, "var", "soak", "results.json"))
    args = parser.parse_args(argv)
    if args.seconds < 15:
        parser.error("--seconds must be at least 15 (two restarts and a warm-up)")
    if not 0 <= args.restarts <= args.seconds / 5:
        parser.error("--restarts must be between 0 and one per 5 seconds of --seconds")

    settings = {} if args.direct_calls is None else {"zeo:direct-calls": args.direct_calls}
    bundle = Bundle().build(**settings)
    try:
        bundle.start()
        result = soak(bundle, args)
        result["started"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        failures = check(result, args)
        result["failures"] = failures
    finally:
        bundle.cleanup()
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)
    report(result, failures)
    print(f"\nwritten to {args.output}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
