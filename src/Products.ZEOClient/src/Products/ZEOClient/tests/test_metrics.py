import unittest

from Products.ZEOClient import metrics


def status(connected=True, server=True):
    return {
        "connected": connected,
        "reconnects": 2,
        "disconnects": 3,
        "size": 5000,
        "cache": {"hits": 10, "misses": 4, "evictions": 0, "size": 100,
                  "max_size": 1000, "objects": 7},
        "pack": {"state": "idle"},
        "refusals": {"count": 1, "last": []},
        "server": {"connections": 2, "commits": 5, "loads": 9, "stores": 3,
                   "aborts": 0, "conflicts": 1, "conflicts_resolved": 1,
                   "active_txns": 0, "waiting": 0} if server else None,
    }


class RenderTests(unittest.TestCase):

    def test_names_labels_and_kinds(self):
        text = metrics.render({"main": status()}).decode()
        self.assertIn('zeo_connected{database="main"} 1.0', text)
        self.assertIn('zeo_cache_hits_total{database="main"} 10.0', text)
        self.assertIn('zeo_cache_misses_total{database="main"} 4.0', text)
        self.assertIn('zeo_reconnects_total{database="main"} 2.0', text)
        self.assertIn('zeo_records_refused_total{database="main"} 1.0', text)
        self.assertIn('zeo_server_commits_total{database="main"} 5.0', text)
        self.assertIn('zeo_cache_bytes{database="main"} 100.0', text)
        self.assertIn("# TYPE zeo_cache_hits_total counter", text)
        self.assertIn("# TYPE zeo_cache_bytes gauge", text)
        for line in text.splitlines():
            if line.startswith("zeo_"):
                self.assertIn('{database="main"}', line)

    def test_no_server_figures_while_disconnected(self):
        text = metrics.render({"main": status(False, server=False)}).decode()
        self.assertIn('zeo_connected{database="main"} 0.0', text)
        self.assertNotIn("zeo_server_commits_total{", text)


class CertificateMetricTests(unittest.TestCase):

    def test_days_left_per_side_where_known(self):
        with_tls = dict(status(), certificates={
            "client": {"days_left": 12, "warning": True},
            "server": None,  # disconnected: not known
        })
        text = metrics.render({"main": with_tls, "other": status()}).decode()
        self.assertIn('zeo_certificate_days_left{database="main",side="client"} 12.0', text)
        self.assertNotIn('side="server"', text)
        self.assertNotIn('database="other",side', text)
