"""Prometheus metrics of the upload endpoint (one registry per server, served at ``GET /metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


class UploadStats:
    """Counters, gauges and the duration histogram of one endpoint."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "t0dqm_upload_requests",
            "Upload requests by outcome (saved, refused, timeout, disconnected, error)",
            ["outcome"],
            registry=r,
        )
        self.saved_bytes = Counter(
            "t0dqm_upload_saved_bytes", "Bytes of files saved into the dropbox", registry=r
        )
        self.received_bytes = Counter(
            "t0dqm_upload_received_bytes", "File bytes received, saved or not", registry=r
        )
        self.refusals = Counter(
            "t0dqm_upload_refusals",
            "Refused uploads by Dqm-Status-Code and HTTP status",
            ["dqm_code", "http"],
            registry=r,
        )
        self.in_flight = Gauge("t0dqm_uploads_in_flight", "Uploads being received now", registry=r)
        self.connections = Gauge(
            "t0dqm_upload_connections", "Open connections to the upload endpoint", registry=r
        )
        self.duration = Histogram(
            "t0dqm_upload_duration_seconds",
            "Time from request headers to answer, by outcome",
            ["outcome"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        for outcome in ("saved", "refused", "timeout", "disconnected", "error"):
            self.requests.labels(outcome)
