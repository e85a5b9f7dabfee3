"""Invalidations reach every client in commit order (server/protocol.py's
``async_threadsafe``): a real ``<hardened>`` server in a child process,
several writer processes with ZEO's own client on it."""

import json
import os
import subprocess
import sys
import unittest

import ZEO
import ZODB
from persistent.mapping import PersistentMapping

from .test_direct import start_server

HARDENED_CONF = """\
%import Products.ZEOClient.server
<zeo>
  address {socket}
  msgpack {msgpack}
  transaction-timeout 30
</zeo>
<hardened 1>
  <filestorage>
    path {folder}/Data.fs
  </filestorage>
</hardened>
"""

# One writer: increments its own counter for a few seconds through ZEO's
# ClientStorage and counts what ZEO's client logs when an invalidation
# arrives older than a transaction it already knows (its own commit).
WRITER = """\
import json, logging, sys, time
import transaction, ZEO, ZODB

class Count(logging.Handler):
    late = 0
    def emit(self, record):
        text = record.getMessage() + str(record.exc_info and record.exc_info[1])
        if "must be greater than previous one" in text:
            Count.late += 1

logging.getLogger().addHandler(Count())
address, key, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
db = ZODB.DB(ZEO.client(address, wait_timeout=30))
commits, deadline = 0, time.monotonic() + seconds
while time.monotonic() < deadline:
    with db.transaction() as conn:
        conn.root()[key]["v"] += 1
    commits += 1
with db.transaction() as conn:
    value = conn.root()[key]["v"]
db.close()
print(json.dumps({"commits": commits, "value": value, "late": Count.late}))
"""

WRITERS = 6
SECONDS = 4.0


class InvalidationOrderTests(unittest.TestCase):

    def test_no_client_gets_an_invalidation_after_a_newer_commit(self):
        address, _ = start_server(self, template=HARDENED_CONF)
        db = ZODB.DB(ZEO.client(address, wait_timeout=30))
        with db.transaction() as conn:
            for i in range(WRITERS):
                conn.root()[f"w{i}"] = PersistentMapping(v=0)
        db.close()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        writers = [
            subprocess.Popen(
                [sys.executable, "-c", WRITER, address, f"w{i}", str(SECONDS)],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            for i in range(WRITERS)
        ]
        for writer in writers:
            self.addCleanup(writer.kill)
        results = []
        for writer in writers:
            out, err = writer.communicate(timeout=SECONDS + 120)
            self.assertEqual(writer.returncode, 0, err[-2000:])
            results.append(json.loads(out.strip().splitlines()[-1]))
        for row in results:
            self.assertGreater(row["commits"], 0, results)
            self.assertEqual(row["value"], row["commits"], results)
        # ZEO 6.2's own server: dozens per run of this test.
        self.assertEqual(sum(row["late"] for row in results), 0, results)
