"""Prometheus metrics, one registry per app (so several apps in one process, e.g. tests, do not collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("radiolens_http_requests_total", "HTTP requests by route template and status",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("radiolens_http_request_duration_seconds", "HTTP request latency",
                                 ["method", "route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.predictions = Counter("radiolens_predictions_total", "Predictions by class and decision",
                                   ["class_name", "decision"], registry=self.registry)
        self.reviews = Counter("radiolens_review_flags_total", "Predictions flagged for human review",
                               registry=self.registry)
        self.feedback = Counter("radiolens_feedback_total", "Reader feedback", ["agree"], registry=self.registry)
        self.inference_seconds = Histogram("radiolens_inference_seconds", "De-identify + inference + heatmap time",
                                           ["heatmap"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.in_flight = Gauge("radiolens_predictions_in_flight", "Predictions being computed",
                               registry=self.registry)
