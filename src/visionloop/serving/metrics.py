"""What `GET /metrics` says, in Prometheus text: requests, latency, errors, batches, model.

One registry per server (not prometheus_client's global one), so several apps in one
process (tests, benchmarks) never share counters.
"""

from __future__ import annotations

from visionloop.serving.source import LoadedModel

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "visionloop_requests", "HTTP requests answered", ["endpoint", "status"], registry=r
        )
        self.latency = Histogram(
            "visionloop_request_seconds",
            "Time from request to response",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "visionloop_errors", "Requests refused, by reason code", ["reason"], registry=r
        )
        self.images = Counter("visionloop_images_predicted", "Images predicted", registry=r)
        self.batch_images = Histogram(
            "visionloop_batch_images", "Images per forward pass", buckets=BATCH_BUCKETS, registry=r
        )
        self.model = Gauge(
            "visionloop_model_info",
            "The model being served (value 1)",
            ["name", "version", "runtime", "bundle_sha256"],
            registry=r,
        )
        self.swaps = Counter(
            "visionloop_model_swaps",
            "Alias moves acted on: swapped in, or refused (integrity or smoke check)",
            ["outcome"],
            registry=r,
        )
        self.registry_errors = Counter(
            "visionloop_registry_errors", "Registry polls that failed", registry=r
        )

    def serving(self, model: LoadedModel) -> None:
        self.model.clear()
        self.model.labels(
            model.ref.name, model.version, model.runtime.name, model.bundle_sha256[:12]
        ).set(1)

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
