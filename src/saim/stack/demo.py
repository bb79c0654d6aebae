"""`saim demo`: the embedded stack plus N concurrent virtual annotators for K iterations on synthetic phantoms.

Prints one line per model version (iteration, annotated fraction, test mIoU, median click latency) and writes a
report in the `saim emulate` schema plus "model_versions", "events" and "annotators"."""

from __future__ import annotations

import logging
import statistics
import threading
import time
from pathlib import Path

import numpy as np

from saim.data import phantom
from saim.data.dataset import NnUNetDataset
from saim.errors import SaimError
from saim.events import TOPICS
from saim.registry.versions import VersionStatus
from saim.rpc.channel import channel
from saim.stack.local import EMBEDDED_IMAGE_SIZE, LocalStack, embedded_model_settings
from saim.stack.virtual import VirtualAnnotator
from saim.v1 import selector_pb2, selector_pb2_grpc, trainer_pb2, trainer_pb2_grpc

log = logging.getLogger(__name__)


def count_events(bootstrap: str) -> dict[str, int]:
    """Read every saim topic from the beginning with an independent consumer (no group, no commits)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        counts = {}
        for topic in TOPICS:
            partitions = [TopicPartition(topic.name, p) for p in (consumer.partitions_for_topic(topic.name) or [])]
            if not partitions:
                counts[topic.name] = 0
                continue
            ends = consumer.end_offsets(partitions)
            starts = consumer.beginning_offsets(partitions)
            counts[topic.name] = int(sum(ends[p] - starts[p] for p in partitions))
        return counts
    finally:
        consumer.close()


def version_rows(models: list, total_series: int, clicks: int, selection: str) -> list[dict]:
    rows = []
    for mv in sorted(models, key=lambda mv: mv.version):
        metrics = dict(mv.metrics)
        trained_on = mv.training_series
        rows.append(
            {
                "iteration": mv.iteration,
                "model_version": mv.version,
                "status": mv.status,
                "current": mv.current,
                "annotated_series": trained_on,
                "annotated_fraction": trained_on / total_series,
                "miou": metrics.get("test_miou"),
                "miou_classical": None,
                "per_class_iou": {k[len("test_iou_") :]: v for k, v in metrics.items() if k.startswith("test_iou_")},
                "interactive_miou": metrics.get("test_interactive_miou"),
                "clicks_per_class": clicks,
                "noc85": None,
                "selection": selection,
                "selected": [],
                "train_seconds": metrics.get("train_seconds"),
                "val_miou": metrics.get("val_miou"),
            }
        )
    return rows


def drive(
    annotator_target: str,
    selector_target: str,
    trainer_target: str,
    ground_truth: dict[str, np.ndarray],
    annotators: int = 3,
    clicks: int = 3,
    timeout_s: float = 900,
    echo=print,
    admin_token: str | None = None,
    annotator_tokens: dict[str, str] | None = None,
    tls_ca: bytes | None = None,
) -> dict:
    """Run N virtual annotators against a running stack until the selector reports the loop complete and the model
    closing the last batch is published. Annotator "virtual-i" calls with annotator_tokens["virtual-i"] when given,
    else with the admin token. Returns the report without its "config"."""
    started = time.perf_counter()
    stop = threading.Event()
    names = [f"virtual-{i}" for i in range(annotators)]
    tokens = annotator_tokens or {}
    workers = [
        VirtualAnnotator(
            n, annotator_target, selector_target, ground_truth, clicks, stop, tokens.get(n, admin_token), tls_ca
        )
        for n in names
    ]
    for w in workers:
        w.start()
    trainer = trainer_pb2_grpc.TrainerServiceStub(channel(trainer_target, admin_token, tls_ca))
    selector = selector_pb2_grpc.SelectorServiceStub(channel(selector_target, admin_token, tls_ca))
    printed: set[str] = set()
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            models = trainer.ListModels(trainer_pb2.ListModelsRequest(), timeout=30).models
            status = selector.GetStatus(selector_pb2.GetStatusRequest(), timeout=30)
            in_batch = len(set(status.batch) - set(status.batch_done))
            total = status.initial + status.annotated + status.pool_size + in_batch
            latencies = [x for w in workers for x in w.stats.click_latency_ms]
            for mv in sorted(models, key=lambda mv: mv.version):
                if mv.version not in printed and mv.status != VersionStatus.UNDECIDED:  # wait for the gate
                    printed.add(mv.version)
                    med = f"{statistics.median(latencies):.1f} ms" if latencies else "-"
                    echo(
                        f"model {mv.version}  iteration {mv.iteration}  annotated {mv.training_series}/{total} "
                        f"({mv.training_series / total:.0%})  test mIoU {mv.metrics['test_miou']:.3f}  "
                        f"val mIoU {mv.metrics['val_miou']:.3f}  {mv.status}  "
                        f"median click latency so far {med}"
                    )
            if status.complete and max((mv.iteration for mv in models), default=-1) >= status.iteration:
                break
            if time.monotonic() > deadline:
                raise SaimError(f"the loop did not finish within {timeout_s:.0f} s (iteration {status.iteration})")
            errors = [e for w in workers for e in w.stats.errors]
            if len(errors) > 20:
                raise SaimError("virtual annotators keep failing: " + "; ".join(errors[:5]))
            time.sleep(1.0)
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=30)
    latencies = [x for w in workers for x in w.stats.click_latency_ms]
    strategy = selector.GetScores(selector_pb2.GetScoresRequest(), timeout=30).strategy  # what the selector ran
    rows = version_rows(models, total, clicks, strategy)
    return {
        "iterations": rows,
        # the served version: the last promoted one (the gate may have kept later ones out)
        "final": {"miou": next((r["miou"] for r in rows if r["current"]), rows[-1]["miou"]), "miou_classical": None},
        "model_versions": [mv.version for mv in sorted(models, key=lambda mv: mv.version)],
        "annotators": annotators,
        "click_latency_ms": {
            "count": len(latencies),
            "median": float(np.median(latencies)) if latencies else None,
            "p95": float(np.percentile(latencies, 95)) if latencies else None,
        },
        "cases_per_annotator": {w.annotator_id: len(w.stats.cases) for w in workers},
        # seconds each annotator waited for a case that then came (SAIM_NEXT_BATCH: after_model vs immediate)
        "annotator_idle_s": {w.annotator_id: round(w.stats.idle_s, 1) for w in workers},
        "annotator_errors": [e for w in workers for e in w.stats.errors],
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def run_demo(
    workdir: Path,
    annotators: int = 3,
    iterations: int = 2,
    series: int = 24,
    seed: int = 0,
    clicks: int = 3,
    timeout_s: float = 900,
    settings: dict[str, str] | None = None,
    echo=print,
    export_dir: Path | None = None,
    image_size: int = EMBEDDED_IMAGE_SIZE,
) -> dict:
    started = time.perf_counter()
    dataset_dir = phantom.generate(workdir / "dataset", num_series=series, seed=seed)
    ds = NnUNetDataset(dataset_dir)
    ground_truth = {case: ds.load_case(case)[1] for case in ds.cases}  # the virtual users' private ground truth
    svc_settings = {
        "SAIM_MAX_ITERATIONS": str(iterations),
        "SAIM_SEED": str(seed),
        **embedded_model_settings(image_size),
        **(settings or {}),
    }
    stack = LocalStack(workdir / "stack", settings=svc_settings, threads={"trainer": 2, "selector": 1, "annotator": 1})
    with stack:
        stack.start_broker()
        stack.start_s3()
        stack.import_dataset(dataset_dir, seed)
        stack.start_services()
        echo("stack up: " + ", ".join(f"{k}={v}" for k, v in stack.addresses().items()))
        echo("waiting for the pre-trained model (iteration 0) ...")
        stack.wait_serving(timeout_s=timeout_s)
        stack.start_gateway()
        admin = stack.write_secret("admin-token", stack.admin_token)
        echo(f"watch the loop in a browser: {stack.url}/dashboard (admin token in {admin}); annotate: {stack.url}/")
        report = drive(
            stack.target("annotator"),
            stack.target("selector"),
            stack.target("trainer"),
            ground_truth,
            annotators,
            clicks,
            timeout_s,
            echo,
            admin_token=stack.admin_token,
            annotator_tokens={f"virtual-{i}": stack.issue_token(f"virtual-{i}") for i in range(annotators)},
            tls_ca=stack.tls_ca,
        )
        report["events"] = count_events(stack.kafka_bootstrap)
        if export_dir is not None:
            from saim.storage.export import export_nnunet
            from saim.storage.pool import PoolStore

            summary = export_nnunet(PoolStore(stack.store(), image_size, cache_mb=0), export_dir)
            report["export"] = {"dir": str(export_dir), "initial": summary.initial, "annotated": summary.annotated}
            echo(f"exported an nnU-Net dataset to {export_dir}: {summary.initial + summary.annotated} labelled cases")
    report["config"] = {
        "data": "synthetic",
        "iterations": iterations,
        "series": series,
        "seed": seed,
        "clicks": clicks,
        "annotators": annotators,
        "services": svc_settings,
        "dataset_cases": len(ds.cases),
    }
    report["classes"] = list(ds.info.classes)
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    return report
