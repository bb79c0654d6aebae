"""Prometheus metrics of the saim services (one registry per process; the service label tells them apart)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)

REQUESTS = Counter("saim_grpc_requests_total", "gRPC requests by method and status code", ["service", "method", "code"])
CLICK_LATENCY = Histogram(
    "saim_click_latency_seconds", "Server-side latency of AddClick/Undo (model answer)", buckets=LATENCY_BUCKETS
)
DRAFT_SAVE = Histogram(
    "saim_draft_save_seconds",
    "Writing a slice's draft to object storage (part of each click's latency)",
    buckets=LATENCY_BUCKETS,
)
DRAFT_CONFLICTS = Counter(
    "saim_draft_conflicts_total", "Draft writes another replica came first to (the operation was applied again)"
)
SESSIONS_REBUILT = Counter("saim_sessions_rebuilt_total", "Sessions a replica rebuilt from storage (opened elsewhere)")
PROPAGATED_SLICES = Counter(
    "saim_propagated_slices_total", "Slices written by carrying a neighbouring slice's mask (Propagate)"
)
INTERPOLATED_SLICES = Counter(
    "saim_interpolated_slices_total", "Slices written by interpolating between two annotated slices (Interpolate)"
)
DRAFT_FAILURES = Counter("saim_draft_save_failures_total", "Draft writes that failed (the next operation retries)")
OPEN_LATENCY = Histogram("saim_open_session_seconds", "OpenSession latency (automatic prediction of a series)")
MODEL_VERSION = Gauge("saim_model_version", "Numeric part of the model version this process serves", ["service"])
MODEL_RELOADS = Counter("saim_model_reloads_total", "Hot reloads of the current model version", ["service"])
POOL = Gauge("saim_pool_series", "Series by state", ["state"])  # unannotated / batch / annotated / initial
BATCH_ITERATION = Gauge("saim_batch_iteration", "Current SAIM iteration (batch number)")
ANNOTATOR_LEASED = Gauge("saim_annotator_leased_cases", "Cases currently leased per annotator", ["annotator"])
ANNOTATOR_DONE = Counter("saim_annotator_cases_total", "Cases submitted per annotator", ["annotator"])
TRAINING_SECONDS = Histogram(
    "saim_training_duration_seconds", "Duration of a training run", buckets=(10, 30, 60, 120, 300, 600, 1200, 3600)
)
TRAINING_LOSS = Gauge("saim_training_loss", "Final loss of the last training run")
SERIES_FAILED = Counter(
    "saim_series_failed_total", "Series left out of scoring because they failed to decode", ["service"]
)
TRAINING_RUNS = Counter("saim_training_runs_total", "Training runs by outcome", ["outcome"])
SCORING_RATE = Gauge("saim_scoring_slices_per_second", "Throughput of the last pool rescoring")
SCORED_SERIES = Counter("saim_scored_series_total", "Series scored for selection")
EVENT_LAG = Histogram(
    "saim_event_lag_seconds",
    "Delay between an event's creation and its handling",
    ["topic"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
EVENTS_HANDLED = Counter("saim_events_handled_total", "Events handled by topic", ["topic"])
SELECTOR_LEADING = Gauge("saim_selector_leading", "1 while this selector replica holds the leader lease, else 0")
FORWARDED_FAILED = Counter(
    "saim_selector_forward_failures_total", "Calls a standby selector forwarded that the leader did not answer"
)


def serve_metrics(port: int | None, host: str = "0.0.0.0") -> int | None:
    """Start the /metrics endpoint; port 0 picks a free one. Returns the bound port (None when disabled)."""
    if port is None:
        return None
    server, _ = start_http_server(port, addr=host)
    return server.server_port
