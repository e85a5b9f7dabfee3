"""Prometheus text exposition of the status (``/Control_Panel/ZEO/metrics``).

Rendered with prometheus_client from the dicts of ``status.py``:
counters end in ``_total``, gauges do not, every metric is labelled by
``database``.
"""

from prometheus_client import CollectorRegistry
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.core import GaugeMetricFamily

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# (metric, kind, help, how to read it from one database's status)
METRICS = (
    ("zeo_connected", "gauge", "1 when connected to the ZEO server",
     lambda s: int(s["connected"])),
    ("zeo_reconnects", "counter", "Reconnections since start",
     lambda s: s["reconnects"]),
    ("zeo_disconnects", "counter", "Lost connections since start",
     lambda s: s["disconnects"]),
    ("zeo_database_bytes", "gauge", "Size of the database on the server",
     lambda s: s["size"]),
    ("zeo_cache_hits", "counter", "Client cache hits since start",
     lambda s: s["cache"]["hits"]),
    ("zeo_cache_misses", "counter", "Client cache misses since start",
     lambda s: s["cache"]["misses"]),
    ("zeo_cache_evictions", "counter", "Client cache evictions since start",
     lambda s: s["cache"]["evictions"]),
    ("zeo_cache_bytes", "gauge", "Bytes of records in the client cache",
     lambda s: s["cache"]["size"]),
    ("zeo_cache_max_bytes", "gauge", "Configured size of the client cache",
     lambda s: s["cache"]["max_size"]),
    ("zeo_cache_objects", "gauge", "Object records in the client cache",
     lambda s: s["cache"]["objects"]),
    ("zeo_records_refused", "counter",
     "Commits from here whose records the server's guard refused",
     lambda s: s["refusals"]["count"]),
    ("zeo_pack_running", "gauge", "1 while a pack started here runs",
     lambda s: int(s["pack"]["state"] == "running")),
)

SERVER_METRICS = (
    ("zeo_server_connections", "gauge", "Clients connected to the server",
     "connections"),
    ("zeo_server_active_transactions", "gauge", "Transactions in progress",
     "active_txns"),
    ("zeo_server_waiting", "gauge", "Transactions waiting for the lock",
     "waiting"),
    ("zeo_server_loads", "counter", "Loads served", "loads"),
    ("zeo_server_stores", "counter", "Objects stored", "stores"),
    ("zeo_server_commits", "counter", "Transactions committed", "commits"),
    ("zeo_server_aborts", "counter", "Transactions aborted", "aborts"),
    ("zeo_server_conflicts", "counter", "Conflicts", "conflicts"),
    ("zeo_server_conflicts_resolved", "counter", "Conflicts resolved",
     "conflicts_resolved"),
)


def family(name, kind, documentation):
    cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
    return cls(name, documentation, labels=["database"])


class StatusCollector:

    def __init__(self, statuses):
        self.statuses = statuses

    def collect(self):
        for name, kind, documentation, read in METRICS:
            metric = family(name, kind, documentation)
            for database, status in self.statuses.items():
                metric.add_metric([database], read(status))
            yield metric
        for name, kind, documentation, key in SERVER_METRICS:
            metric = family(name, kind, documentation)
            for database, status in self.statuses.items():
                value = (status["server"] or {}).get(key)
                if isinstance(value, (int, float)):
                    metric.add_metric([database], value)
            yield metric
        yield certificate_metric(self.statuses)


CERTIFICATE_METRIC = (
    "zeo_certificate_days_left", "gauge",
    "Whole days until the TLS certificate in use expires (side: client, server)",
)


def certificate_metric(statuses):
    """Days left of the client's and the server's certificates, where known."""
    metric = GaugeMetricFamily(*CERTIFICATE_METRIC[::2], labels=["database", "side"])
    for database, status in statuses.items():
        for side, expiry in (status.get("certificates") or {}).items():
            days = (expiry or {}).get("days_left")
            if isinstance(days, (int, float)):
                metric.add_metric([database, side], days)
    return metric


def render(statuses):
    """The exposition text (bytes) for ``{database: status}``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(statuses))
    return generate_latest(registry)
