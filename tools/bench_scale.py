"""make bench-scale: an AMOS-size pool (1,200 series) through the real selector on this machine, against the bare model.

1. The pool: 1,200 phantom series at the demo's size (96 x 96 x 12, every slice, model 64 px), plus 30 labelled ones
   for the initial, validation and test splits, generated lazily (saim.data.phantom.iter_series) into an nnU-Net
   folder and imported into the embedded stack's S3 (moto) one case at a time, each series' preprocessed slices too
   (saim.storage.preprocessed).
2. The selector process (local scoring, its own torch thread budget, no series cache: every scoring is cold and reads
   the pool from the preprocessed slice store) scores the pool under v0000 at start and opens
   batch 1; then v0001 is published with its ModelPublished event and the selector rescores the whole pool while this
   process calls NextCase (an annotator renewing its lease: the state write to S3 included) every 100 ms over gRPC.
   Reported: the selector's own scoring rate (GetStatus), NextCase p50/p95/p99 during that rescoring, and the
   selector's peak RSS (VmHWM).
3. The bare model: batched forward + softmax + entropy of the same network at the same size and thread count, in
   this process after the selector stopped (the CPU is not shared).
4. Sharded scoring (saim.selection.scoring.ShardedScoring, the selector's component, in this process): a full rescoring
   by 1 scorer worker, then by 2 (each `--scorer-threads` torch threads), through the tansu broker's consumer group.

Writes out/bench-scale.json. Never run by the tests; no thresholds (the issue's targets are printed beside).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import grpc
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from gpu_bench import bare_scoring  # noqa: E402

from saim.data import phantom  # noqa: E402
from saim.data.dataset import NnUNetDataset, write_dataset  # noqa: E402
from saim.data.splits import Splits  # noqa: E402
from saim.events import MODEL_PUBLISHED, SCORING_PARTS, EventPublisher, new_meta  # noqa: E402
from saim.model.config import ModelConfig  # noqa: E402
from saim.model.predictor import InteractivePredictor  # noqa: E402
from saim.registry.live import ServedModel  # noqa: E402
from saim.registry.versions import ModelRegistry  # noqa: E402
from saim.selection.scoring import ShardedScoring  # noqa: E402
from saim.selection.strategies import EntropyStrategy  # noqa: E402
from saim.stack.local import LocalStack  # noqa: E402
from saim.storage.pool import PoolStore, import_dataset  # noqa: E402
from saim.v1 import events_pb2, selector_pb2, selector_pb2_grpc  # noqa: E402
from tests.waiting import poll  # noqa: E402

LABELLED = 10  # series each in the initial, validation and test splits, beside the pool

TARGETS = {
    "selector_peak_rss_gib": ("<=", 3.0),
    "scoring_ratio_vs_bare": (">=", 0.8),
    "nextcase_p99_ms_during_rescoring": ("<=", 100.0),
    "shard_speedup_2": (">=", 1.5),
}


def peak_rss_gib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError("no VmHWM")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_of(stack: LocalStack) -> dict[str, float]:
    return {name: cpu_seconds(proc.popen.pid) for name, proc in stack.procs.items() if proc.popen.poll() is None}


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def stop_procs(stack: LocalStack, names: list[str]) -> None:
    procs = [stack.procs.pop(name) for name in names]
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.reap(time.monotonic() + 20)


def publish_model(store, config: ModelConfig, iteration: int, seed: int) -> str:
    torch.manual_seed(seed)
    return ModelRegistry(store).publish(InteractivePredictor(config), iteration=iteration).version


def selector_run(stack: LocalStack, config: ModelConfig, args) -> dict:
    store = stack.store()
    v0 = publish_model(store, config, 0, 0)
    started = time.perf_counter()
    stack.start_service("selector")
    proc = stack.procs["selector"]
    stack.wait_serving(["selector"], timeout_s=args.timeout)  # SERVING once the first scoring is done
    first_s = time.perf_counter() - started
    stub = selector_pb2_grpc.SelectorServiceStub(stack.channel("selector"))
    status = stub.GetStatus(selector_pb2.GetStatusRequest(), timeout=30)
    first_rate = status.scoring_slices_per_s
    print(f"  first scoring ({v0}, at start): {first_rate:.0f} slices/s, serving after {first_s:.0f} s", flush=True)

    v1 = publish_model(store, config, 1, 1)
    publisher = EventPublisher(stack.kafka_bootstrap, "bench")
    publisher.publish(
        MODEL_PUBLISHED, events_pb2.ModelPublished(meta=new_meta("bench"), version=v1, iteration=1, promoted=True)
    )
    publisher.close()
    latencies, errors = [], []
    stop = threading.Event()

    def annotator() -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                stub.NextCase(selector_pb2.NextCaseRequest(annotator_id="bench-annotator"), timeout=30)
                latencies.append((time.perf_counter() - t0) * 1000)
            except grpc.RpcError as exc:
                errors.append(exc.code().name)
            stop.wait(args.nextcase_interval)

    caller = threading.Thread(target=annotator, daemon=True)
    cpu_before, wall_before = cpu_of(stack), time.perf_counter()
    caller.start()
    status = poll(
        lambda: (s := stub.GetStatus(selector_pb2.GetStatusRequest(), timeout=30)).scores_version == v1 and s,
        args.timeout,
        "the rescoring under v0001",
        interval=0.5,
    )
    stop.set()
    caller.join()
    window = time.perf_counter() - wall_before
    cpu = {name: round(seconds - cpu_before[name], 1) for name, seconds in cpu_of(stack).items() if name in cpu_before}
    rss = peak_rss_gib(proc.popen.pid)
    stop_procs(stack, ["selector"])
    print(
        f"  rescoring ({v1}): {status.scoring_slices_per_s:.0f} slices/s; NextCase p99 "
        f"{percentile(latencies, 0.99):.1f} ms over {len(latencies)} calls; selector peak RSS {rss:.2f} GiB",
        flush=True,
    )
    return {
        "first_scoring_slices_per_s": first_rate,
        "scoring_slices_per_s": status.scoring_slices_per_s,
        "selector_peak_rss_gib": rss,
        "nextcase_calls_during_rescoring": len(latencies),
        "nextcase_errors_during_rescoring": errors,
        "nextcase_p50_ms_during_rescoring": statistics.median(latencies),
        "nextcase_p95_ms_during_rescoring": percentile(latencies, 0.95),
        "nextcase_p99_ms_during_rescoring": percentile(latencies, 0.99),
        "nextcase_max_ms_during_rescoring": max(latencies),
        "rescoring_window_s": window,
        "cpu_s_during_rescoring": cpu,  # per process of the stack: where the two cores went
    }


def sharded_run(stack: LocalStack, config: ModelConfig, cases: list[str], workers: int, seed: int) -> dict:
    store = stack.store()
    version = publish_model(store, config, 2, seed)
    for i in range(workers):
        stack.start_scorer(i)
    names = stack.scorers()
    stack.wait_serving(names, timeout_s=120)

    def status(name):
        stub = selector_pb2_grpc.ScorerServiceStub(stack.channel(name))
        return stub.GetStatus(selector_pb2.GetScorerStatusRequest(), timeout=10)

    def shared() -> bool:
        held = [set(status(n).partitions) for n in names]
        return all(held) and set().union(*held) == set(range(SCORING_PARTS))

    poll(shared, 120, f"{workers} scorers to share the partitions")
    publisher = EventPublisher(stack.kafka_bootstrap, "bench")
    try:
        started = time.perf_counter()
        table = ShardedScoring(store, publisher, EntropyStrategy(), SCORING_PARTS).score(
            ServedModel(version, None, {}), cases
        )
        seconds = time.perf_counter() - started
    finally:
        publisher.close()
    stop_procs(stack, names)  # a stopped worker leaves the consumer group: the next run's workers share it alone
    assert len(table.scores) == len(cases)
    print(f"  sharded, {workers} worker(s): {table.slices / seconds:.0f} slices/s ({seconds:.0f} s)", flush=True)
    return {"seconds": seconds, "slices_per_s": table.slices / seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--series", type=int, default=1200)
    ap.add_argument("--depth", type=int, default=12, help="slices per series (the demo's phantoms)")
    ap.add_argument("--volume-size", type=int, default=96, help="in-plane voxels (the demo's phantoms)")
    ap.add_argument("--image-size", type=int, default=64, help="model size (the demo's)")
    ap.add_argument("--encoder", default="resnet34")
    ap.add_argument("--threads", type=int, default=2, help="the selector's torch threads (and the bare model's)")
    ap.add_argument("--decode-workers", type=int, default=1, help="the selector's decoding threads")
    ap.add_argument("--nextcase-interval", type=float, default=0.1, help="seconds between NextCase calls")
    ap.add_argument("--scorer-threads", type=int, default=1, help="torch threads of each scorer worker")
    ap.add_argument("--shard-series", type=int, default=None, help="series of the sharded runs (default: the pool)")
    ap.add_argument(
        "--series-cache-mb", type=int, default=0, help="the selector's series cache (0: every rescoring is cold)"
    )
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--workdir", type=Path, default=ROOT / "out" / "bench-scale")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "bench-scale.json")
    args = ap.parse_args()
    started = time.perf_counter()
    config = ModelConfig(classes=phantom.CLASSES, image_size=args.image_size, encoder=args.encoder)
    dataset = args.workdir / "dataset"
    if (
        not (dataset / "dataset.json").exists()
        or json.loads((dataset / "dataset.json").read_text())["numTraining"] != args.series + 3 * LABELLED
    ):
        t0 = time.perf_counter()
        series = phantom.iter_series(args.series + 3 * LABELLED, args.depth, args.volume_size, seed=0)
        write_dataset(dataset, phantom.phantom_info(), series)
        print(f"generated {args.series + 3 * LABELLED} series lazily in {time.perf_counter() - t0:.0f} s", flush=True)
    settings = {
        "SAIM_MODEL__IMAGE_SIZE": str(args.image_size),
        "SAIM_MODEL__ENCODER": args.encoder,
        "SAIM_DECODE_WORKERS": str(args.decode_workers),
        "SAIM_BATCH_SIZE": "3",
        "SAIM_MAX_ITERATIONS": "10",
        "SAIM_RECONCILE_S": "3600",  # the rescoring under test is the event's, not a reconciliation's
        # cold: no series kept in the selector, every scoring reads the pool from the preprocessed slice store
        "SAIM_SERIES_CACHE_MB": str(args.series_cache_mb),
    }
    threads = {"selector": args.threads, **{f"scorer-{i}": args.scorer_threads for i in range(2)}}
    stack = LocalStack(args.workdir / "stack", settings=settings, threads=threads)
    report: dict = {"pool_series": args.series, "image_size": args.image_size, "encoder": args.encoder}
    with stack:
        stack.start_broker()
        stack.start_s3()
        t0 = time.perf_counter()
        ds = NnUNetDataset(dataset)  # 10 initial, 10 validation, 10 test series; the rest is the pool
        labelled = [tuple(ds.cases[i : i + LABELLED]) for i in range(0, 3 * LABELLED, LABELLED)]
        import_dataset(stack.store(), ds, Splits(*labelled, tuple(ds.cases[3 * LABELLED :])), args.image_size)
        report["import_s"] = time.perf_counter() - t0
        pool = PoolStore(stack.store(), args.image_size, cache_mb=0)
        cases = list(pool.splits.pool)
        report["pool_series_scored"] = len(cases)
        report["slices"] = len(cases) * args.depth
        print(f"imported {len(ds.cases)} series in {report['import_s']:.0f} s; {len(cases)} in the pool", flush=True)
        report.update(selector_run(stack, config, args))
        torch.set_num_threads(args.threads)
        net = InteractivePredictor(config).network
        report["bare_slices_per_s"] = bare_scoring(net, config, min(report["slices"], 4096), 32, "cpu")
        report["scoring_ratio_vs_bare"] = report["scoring_slices_per_s"] / report["bare_slices_per_s"]
        print(f"  bare model: {report['bare_slices_per_s']:.0f} slices/s ({args.threads} threads)", flush=True)
        shard_cases = cases[: args.shard_series] if args.shard_series else cases
        one = sharded_run(stack, config, shard_cases, 1, 2)
        two = sharded_run(stack, config, shard_cases, 2, 3)
        report.update(
            shard_series=len(shard_cases),
            scorer_threads=args.scorer_threads,
            shard_1_slices_per_s=one["slices_per_s"],
            shard_2_slices_per_s=two["slices_per_s"],
            shard_speedup_2=two["slices_per_s"] / one["slices_per_s"],
        )
    report.update(
        selector_series_cache_mb=args.series_cache_mb,
        selector_threads=args.threads,
        decode_workers=args.decode_workers,
        cpu_count=os.cpu_count(),
        torch=torch.__version__,
        wall_s=time.perf_counter() - started,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nsaim bench-scale: {len(cases)} pool series, {report['slices']} slices at {args.image_size} px, CPU")
    for key in ("pool_series", "slices", "scoring_slices_per_s", "bare_slices_per_s", *TARGETS):
        target = TARGETS.get(key)
        note = f"   (target {target[0]} {target[1]})" if target else ""
        value = report[key]
        print(f"  {key:36s} {value:10.3f}{note}" if isinstance(value, float) else f"  {key:36s} {value:10d}{note}")
    print(f"report: {args.out} ({report['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
