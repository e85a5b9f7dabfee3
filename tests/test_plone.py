"""A Plone 6.2 site on the bundle's Plone profile (plone.cfg).

The layer builds ``plone.cfg`` in a temporary folder, as a user would
(the first run downloads Plone's eggs into the checkout's ``eggs/``;
later runs find them there), starts the cluster with ``bin/cluster
start`` and creates a site through the REST call Plone 6.2's add-site
page makes (``POST /++api++/@sites``).  The tests then do what editors
do, through both instances, each change read back from the other one:
folders, documents, an Event with a time zone, an image whose scales
the other instance serves from the shared blobs, publishing, a user, a
control panel, two add-ons (plone.app.discussion with a comment,
plone.app.multilingual), and 8 concurrent writers.  The last test
checks what the operator sees afterwards: no record refused (with the
profile's default policy), no conflict left unresolved, no traceback in
the server's log, and ``bin/zeoguard scan`` of the site's Data.fs finds
nothing outside the policy.
"""

import base64
import json
import os
import struct
import threading
import time
import unittest
import urllib.error
import urllib.request
import zlib

from .harness import Bundle
from .harness import Response
from .harness import record
from .harness import wait_until

SITE = "Plone"
WRITERS = 8
ADDS_PER_WRITER = 10


def png(width=64, height=48):
    """A small real PNG (a colour gradient), so that scales are computed."""
    rows = b"".join(
        b"\x00" + bytes(v for x in range(width) for v in (x * 4 % 256, y * 5 % 256, 128))
        for y in range(height)
    )

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


class PloneLayer:
    """The Plone profile built and running (daemons), with one site."""

    bundle = None
    started = None

    @classmethod
    def setUp(cls):
        started = time.monotonic()
        cls.bundle = Bundle(profile="plone.cfg", download=True)
        try:
            cls.bundle.build()
            built = time.monotonic()
            cls.bundle.start()
            running = time.monotonic()
            site = rest(cls.bundle, "instance1", "POST", "/++api++/@sites", {
                "distribution": "classic",
                "site_id": SITE,
                "title": "Bundle site",
                "default_language": "en",
                "portal_timezone": "Europe/Vienna",
                "setup_content": False,
            }, timeout=600)
            if site.status != 200:
                raise AssertionError(f"creating the site: {site.status} {site.text[:2000]}")
            cls.timings = {
                "build_s": round(built - started, 1),
                "start_s": round(running - built, 1),
                "site_s": round(time.monotonic() - running, 1),
            }
        except BaseException:
            cls.bundle.cleanup()
            raise

    @classmethod
    def tearDown(cls):
        cls.bundle.cleanup()


def rest(bundle, instance, method, path, data=None, timeout=120, user=None, raw=False):
    """A plone.restapi call as the admin (or *user*: (name, password))."""
    url = bundle.url(instance) + path.lstrip("/")
    body = None if data is None else json.dumps(data).encode()
    request = urllib.request.Request(url, data=body, method=method)
    request.add_header("Accept", "*/*" if raw else "application/json")
    if body is not None:
        request.add_header("Content-Type", "application/json")
    name, password = user or ("admin", bundle.password)
    token = base64.b64encode(f"{name}:{password}".encode()).decode()
    request.add_header("Authorization", "Basic " + token)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Response(response.status, response.headers, response.read())
    except urllib.error.HTTPError as e:
        return Response(e.code, e.headers, e.read())


class PloneSiteTests(unittest.TestCase):
    """Editors' work on a Plone site, through both instances."""

    layer = PloneLayer

    @property
    def bundle(self):
        return self.layer.bundle

    def call(self, instance, method, path, data=None, expect=(200, 201, 204), **kw):
        answer = rest(self.bundle, instance, method, f"/{SITE}/{path.lstrip('/')}", data, **kw)
        self.assertIn(answer.status, expect, f"{method} {path} on {instance}: {answer.text[:3000]}")
        return answer

    def read(self, instance, path, check=None):
        """What *instance* serves for *path* (JSON), once *check(data)* is true.

        The other instance learns of a commit through ZEO's invalidation,
        which the server sends after the commit: a request that starts
        before it arrives still sees the state before.  So a read of what
        the other instance wrote waits (bounded) until it shows.
        """
        if check is None:
            return self.call(instance, "GET", path).json()
        seen = []

        def shows():
            seen[:] = [self.call(instance, "GET", path).json()]
            return check(seen[0])

        wait_until(f"{instance} to show the change of {path}", shows, 30)
        return seen[0]

    def test_1_content_through_both_instances(self):
        self.call("instance1", "POST", "", {"@type": "Folder", "id": "news", "title": "News"})
        self.read("instance2", "news", lambda d: d["title"] == "News")
        self.call("instance2", "POST", "news", {
            "@type": "Document", "id": "hello", "title": "Hello",
            "text": {"data": "<p>Written through instance2</p>",
                     "content-type": "text/html", "encoding": "utf-8"},
        })
        self.read("instance1", "news/hello", lambda d: "Written through instance2" in d["text"]["data"])
        # An Event in another time zone than the site's.
        self.call("instance1", "POST", "news", {
            "@type": "Event", "id": "meeting", "title": "Meeting",
            "start": "2027-03-01T09:00:00-05:00", "end": "2027-03-01T10:30:00-05:00",
        })
        event = self.read("instance2", "news/meeting", lambda d: d["title"] == "Meeting")
        self.assertTrue(event["start"].startswith("2027-03-01T14:00:00"), event["start"])
        # An image: its blob is written through instance1, its scales are
        # computed and served by instance2 from the shared blob folder.
        picture = png()
        self.call("instance1", "POST", "news", {
            "@type": "Image", "id": "picture", "title": "Picture",
            "image": {"data": base64.b64encode(picture).decode(), "encoding": "base64",
                      "filename": "picture.png", "content-type": "image/png"},
        })
        image = self.read("instance2", "news/picture", lambda d: d["image"] is not None)
        self.assertEqual(image["image"]["size"], len(picture))
        self.assertEqual(image["image"]["width"], 64)
        original = rest(self.bundle, "instance2", "GET", f"/{SITE}/news/picture/@@images/image",
                        raw=True)
        self.assertEqual(original.status, 200)
        self.assertEqual(original.body, picture)
        thumb = rest(self.bundle, "instance2", "GET",
                     f"/{SITE}/news/picture/@@images/image/thumb", raw=True)
        self.assertEqual(thumb.status, 200, thumb.text[:500])
        self.assertTrue(thumb.body.startswith(b"\x89PNG"), thumb.body[:20])
        # Publishing, seen by an anonymous visitor of the other instance.
        self.call("instance2", "POST", "news/hello/@workflow/publish")
        self.call("instance2", "POST", "news/@workflow/publish")
        self.read("instance1", "news/hello", lambda d: d["review_state"] == "published")
        page = self.bundle.http("instance1", "GET", f"/{SITE}/news/hello", auth=False)
        self.assertEqual(page.status, 200)
        self.assertIn("Written through instance2", page.text)
        # The catalog of the other instance finds all four.
        found = self.read("instance2", "@search?path.query=/Plone/news&sort_on=id",
                          lambda d: d["items_total"] == 4)
        self.assertEqual([item["@id"].rsplit("/", 1)[1] for item in found["items"]],
                         ["hello", "meeting", "news", "picture"])

    def test_2_a_user_and_a_control_panel(self):
        self.call("instance1", "POST", "@users", {
            "username": "jane", "email": "jane@example.org", "password": "a long secret 42",
            "fullname": "Jane Editor", "roles": ["Editor"],
        })
        jane = self.read("instance2", "@users/jane", lambda d: d.get("fullname"))
        self.assertEqual(jane["fullname"], "Jane Editor")
        self.assertIn("Editor", jane["roles"])
        # She logs in on the other instance (her password hash is on the
        # server) and may edit: the edit form, not the login page.
        edit = self.bundle.http("instance2", "GET", f"/{SITE}/news/hello/edit",
                                auth=("jane", "a long secret 42"), follow_redirects=False)
        self.assertEqual(edit.status, 200, edit.text[:500])
        self.assertIn("Hello", edit.text)
        refused = self.bundle.http("instance2", "GET", f"/{SITE}/news/hello/edit",
                                   auth=("jane", "wrong"), follow_redirects=False)
        self.assertNotEqual(refused.status, 200)
        self.call("instance2", "PATCH", "@controlpanels/site",
                  {"site_title": "Saved on instance2"})
        self.read("instance1", "@controlpanels/site",
                  lambda d: d["data"]["site_title"] == "Saved on instance2")

    def test_3_add_ons(self):
        self.call("instance1", "POST", "@addons/plone.app.discussion/install")
        self.call("instance2", "POST", "@addons/plone.app.multilingual/install")
        def installed(data):
            found = {item["id"]: item["is_installed"] for item in data["items"]}
            return found["plone.app.discussion"] and found["plone.app.multilingual"]

        self.read("instance1", "@addons", installed)
        self.call("instance2", "PATCH", "@controlpanels/discussion",
                  {"globally_enabled": True, "anonymous_comments": False})
        self.call("instance1", "POST", "", {
            "@type": "Document", "id": "talk", "title": "Talk", "allow_discussion": True})
        self.call("instance1", "POST", "talk/@comments", {"text": "A comment, via instance1"})
        comments = self.read("instance2", "talk/@comments", lambda d: d["items_total"] == 1)
        self.assertEqual([c["text"]["data"] for c in comments["items"]],
                         ["A comment, via instance1"])

    def test_4_concurrent_writers(self):
        """8 writers add documents to one folder through both instances at
        once: conflicts (the folder, the catalog, the UID generator) are
        resolved on the server or retried by Zope; none is left."""
        self.call("instance1", "POST", "", {"@type": "Folder", "id": "busy", "title": "Busy"})
        failures = []
        statuses = []
        lock = threading.Lock()

        def writer(number):
            instance = self.bundle.instances[number % 2]
            for i in range(ADDS_PER_WRITER):
                answer = rest(self.bundle, instance, "POST", f"/{SITE}/busy", {
                    "@type": "Document", "id": f"w{number}-{i}", "title": f"{number}/{i}"},
                    timeout=300)
                with lock:
                    statuses.append(answer.status)
                    if answer.status != 201:
                        failures.append((instance, answer.status, answer.text[:300]))

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(600)
        elapsed = time.monotonic() - started
        self.assertFalse([t for t in threads if t.is_alive()], "a writer hangs")
        self.assertEqual(failures, [])
        self.assertEqual(len(statuses), WRITERS * ADDS_PER_WRITER)
        for instance in self.bundle.instances:
            self.read(instance, "@search?path.query=/Plone/busy&portal_type=Document&b_size=1",
                      lambda d: d["items_total"] == WRITERS * ADDS_PER_WRITER)
        status = self.bundle.server_status()
        record("plone-writers", {
            "writers": WRITERS, "adds": len(statuses), "failed": len(failures),
            "seconds": round(elapsed, 1),
            "conflicts_resolved_on_server": status["conflicts_resolved"],
            "conflicts_sent_back": status["conflicts"],
            "conflict_retries_logged": sum(self.bundle.log(name).count("ConflictError")
                                           for name in self.bundle.instances),
        })

    def test_9_what_the_operator_sees(self):
        server_log = self.bundle.log("zeoserver")
        self.assertNotIn("refused the record", server_log)
        self.assertNotIn("would refuse", server_log)
        self.assertNotIn("Traceback", server_log)
        for name in self.bundle.instances:
            status = self.bundle.http(name, "GET", "/Control_Panel/ZEO/status.json")
            self.assertEqual(status.status, 200)
            refusals = status.json()["databases"]["main"]["refusals"]
            self.assertEqual(refusals["count"], 0, f"{name}: {refusals}")
        scan = self.bundle.run_script("zeoguard", "scan", timeout=600)
        self.assertEqual(scan.returncode, 0, scan.stdout + scan.stderr)
        self.assertIn("nothing outside the policy", scan.stdout)
        # What the profile's exact entries (etc/plone/records.conf) are
        # for: the same scan with the generated allow-module lines only.
        generated = os.path.join(self.bundle.directory, "modules-only.conf")
        with open(generated, "w") as f:
            f.write("".join(line for line in self.bundle.read(
                "parts", "etc", "records-policy.conf").splitlines(True)
                if line.startswith("allow-module ")))
        bare = self.bundle.run_script("zeoguard", "scan", "--zeo-conf", generated, timeout=600)
        self.assertEqual(bare.returncode, 1, bare.stdout)
        for entry in ("re._compile", "zope.i18nmessageid.message.Message",
                      "zope.component.globalregistry.GAR", "pytz._p"):
            self.assertIn(entry, bare.stdout)
        record("plone-site", {
            **self.layer.timings,
            "scan": scan.stdout.strip().splitlines()[-1],
            "scan_without_profile_entries": bare.stdout.strip().splitlines(),
            "datafs_bytes": os.path.getsize(
                os.path.join(self.bundle.var, "filestorage", "Data.fs")),
        })
