"""tools/gpu_bench.sh: the model's work at deployment sizes on one device, against the bare model in the same run.

Per size (default 256 and 512), with saim's own device and precision (saim.model.device: bf16 autocast + channels_last
on CUDA, fp32 on the CPU) for the bare model too:
- scoring: the bare smp Unet (batched forward + softmax + entropy on the device) against the selector's rescoring
  path (saim.selection.scoring.score_pool: series read from an object store by saim.storage.pool.PoolStore ahead of
  the model, scored by EntropyStrategy): decoding every NIfTI (serially, then with the decoding threads), cold from
  the preprocessed slice store (saim.storage.preprocessed, written first as the import does), and warm (series
  cached); the projected time to rescore 120k slices (AMOS size);
- a click: gRPC AddClick round trip to a real annotator servicer on loopback, p50/p95, against the bare forward of
  one slice (refinement off: the randomly initialised network ignores every click), and a predictor call with a
  correcting click with test-time refinement (at most ModelConfig's default steps) against the same call without;
- training: bare forward+backward steps (cross-entropy) against saim's step (augmentation, simulated click rounds,
  focal + Dice loss), in slices per second, with the profile of saim's step (tools/step_profile.py).

The object store is in memory (the S3 API's latency is not measured here). The pool is one phantom series stored
under many case names: every case is downloaded and decoded on its own, without paying for generating each one.
Prints a table and writes JSON (--out). `--tiny` is a seconds-long CPU run of the same code, for the tests.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import ct_store, refine_bench, session_bench, timed  # noqa: E402
from step_profile import print_profile, step_profile  # noqa: E402

from saim.data import phantom  # noqa: E402
from saim.data.nifti import volume_to_bytes  # noqa: E402
from saim.data.splits import Splits  # noqa: E402
from saim.model.config import ModelConfig  # noqa: E402
from saim.model.device import autocast, is_cuda, memory_format, precision, resolve_device  # noqa: E402
from saim.model.predictor import InteractivePredictor, pixel_entropy  # noqa: E402
from saim.registry.live import ServedModel  # noqa: E402
from saim.selection.scoring import score_pool  # noqa: E402
from saim.selection.strategies import EntropyStrategy  # noqa: E402
from saim.settings import ServiceSettings  # noqa: E402
from saim.storage.pool import DATASET_JSON, SPLITS_JSON, PoolStore, image_key  # noqa: E402
from tests.unit.fakes import MemoryStore  # noqa: E402
from tests.unit.harness import annotator_stub  # noqa: E402

AMOS_SLICES = 120_000  # ≈ 1,200 series × ≈ 100 slices


def sync(device: str) -> None:
    if is_cuda(device):
        torch.cuda.synchronize()


def store_with_pool(size: int, cases: int, depth: int) -> tuple[MemoryStore, list[str]]:
    """An object store holding `cases` copies of one phantom series (size x size x depth) as the pool."""
    image, _ = phantom.make_series(0, 0, size, depth)
    data = volume_to_bytes(image.astype(np.float32), np.diag([0.7, 0.7, 3.0, 1.0]))
    store = MemoryStore()
    pool = [f"pool_{i:04d}" for i in range(cases)]
    for case in pool:
        store.put_bytes(image_key(case), data)
    store.put_json(
        DATASET_JSON,
        {"name": "bench", "labels": {"background": 0, **{c: i + 1 for i, c in enumerate(phantom.CLASSES)}}},
    )
    store.put_json(SPLITS_JSON, Splits((), (), (), tuple(pool)).to_json())
    return store, pool


def bare_scoring(net, mc: ModelConfig, slices: int, batch: int, device: str) -> float:
    """Slices per second of the bare network: batched forward, softmax and entropy on the device."""
    s = mc.image_size
    x = torch.randn(batch, mc.in_channels, s, s, device=device).contiguous(memory_format=memory_format(device))

    def run() -> None:
        with torch.inference_mode(), autocast(device):
            for _ in range(-(-slices // batch)):
                pixel_entropy(torch.softmax(net(x).float(), dim=1)).mean(dim=(1, 2)).cpu()
        sync(device)

    run()  # warm-up (cuDNN autotuning, allocator)
    started = time.perf_counter()
    run()
    return -(-slices // batch) * batch / (time.perf_counter() - started)


def saim_scoring(predictor, store, pool: list[str], size: int, workers: int) -> dict:
    """Slices per second of the selector's rescoring path (saim.selection.scoring.score_pool). Before the
    preprocessed slice store: decoding every NIfTI, serially and with `workers` decoding threads. Then the pool's
    preprocessed slices are written (as the import does; timed), and the rescoring reads them: cold (nothing
    cached in the process: every rescoring after the first) and warm (all series cached)."""
    model, strategy = ServedModel("bench", predictor, {}), EntropyStrategy()
    decoding = PoolStore(store, size, None, cache_mb=0, preprocessed=False)
    serial = score_pool(decoding, strategy, model, pool, workers=0)  # in the model's thread
    nifti = score_pool(decoding, strategy, model, pool, workers)
    started = time.perf_counter()
    written = PoolStore(store, size, None, cache_mb=0).preprocess(pool)
    preprocess_s = time.perf_counter() - started
    cold = score_pool(PoolStore(store, size, None, cache_mb=0), strategy, model, pool, workers)
    cached = PoolStore(store, size, None, cache_mb=64 * 1024)  # room for the whole test pool, for the warm pass
    score_pool(cached, strategy, model, pool, workers)
    warm = score_pool(cached, strategy, model, pool, workers)
    return {
        "serial": serial.slices / serial.seconds,
        "nifti": nifti.slices / nifti.seconds,
        "cold": cold.slices / cold.seconds,
        "warm": warm.slices / warm.seconds,
        "slices": cold.slices,
        "preprocess_ms_per_slice": 1000 * preprocess_s / max(cold.slices, 1) if written else float("nan"),
    }


def click_latency(predictor, size: int, clicks: int, ct_shape: tuple[int, int, int]) -> dict:
    """The scan-space session of tools/bench.py (a synthetic CT, clicks at voxels, masks back at 512 x 512) against
    a real annotator servicer over loopback gRPC, in this process."""
    store, case = ct_store(ct_shape)
    with annotator_stub(store, predictor, size) as (stub, _):
        return session_bench(stub, case, clicks, fetches=3)


def bare_click(net, mc: ModelConfig, repeat: int, device: str) -> float:
    s = mc.image_size
    x = torch.randn(1, mc.in_channels, s, s, device=device).contiguous(memory_format=memory_format(device))

    def run() -> None:
        with torch.inference_mode(), autocast(device):
            torch.softmax(net(x).float(), dim=1).argmax(1).cpu()

    return timed(run, repeat)


def device_name(device: str) -> str:
    if is_cuda(device):
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def run_size(size: int, args, device: str) -> dict:
    mc = ModelConfig(classes=phantom.CLASSES, image_size=size, encoder=args.encoder, refine_steps=0)
    predictor = InteractivePredictor(mc, device=device)
    net = predictor.network
    store, pool = store_with_pool(size, args.cases, args.depth)
    bare = bare_scoring(net, mc, args.cases * args.depth, args.batch, device)
    scoring = saim_scoring(predictor, store, pool, size, args.decode_workers)
    cold, warm = scoring["cold"], scoring["warm"]
    click = click_latency(predictor, size, args.clicks, tuple(args.ct_shape))
    bare_one = bare_click(net, mc, args.clicks, device)
    plain_click, refined_click = refine_bench(mc, net, ModelConfig().refine_steps, 0.0, args.refine_repeat, device)
    train = step_profile(net, mc, args.train_batch, args.train_steps, device, warmup=2)
    print_profile(train, size)
    bare_train, saim_train = args.train_batch / train["bare_s"], args.train_batch / train["saim_s"]
    return {
        "size": size,
        "pool_slices": scoring["slices"],
        "decode_workers": args.decode_workers,
        "bare_scoring_slices_per_s": bare,
        "scoring_cold_serial_slices_per_s": scoring["serial"],
        "scoring_cold_nifti_slices_per_s": scoring["nifti"],
        "prefetch_speedup": scoring["nifti"] / scoring["serial"],
        "preprocess_ms_per_slice": scoring["preprocess_ms_per_slice"],
        "scoring_cold_slices_per_s": cold,
        "scoring_warm_slices_per_s": warm,
        "scoring_cold_ratio_vs_bare": cold / bare,
        "scoring_warm_ratio_vs_bare": warm / bare,
        "rescore_120k_cold_s": AMOS_SLICES / cold,
        "rescore_120k_warm_s": AMOS_SLICES / warm,
        "rescore_120k_bare_s": AMOS_SLICES / bare,
        "bare_forward_1_slice_ms": bare_one,
        "click_grpc_p50_ms": click["click_p50_ms"],
        "click_grpc_p95_ms": click["click_p95_ms"],
        "click_added_p50_ms": click["click_p50_ms"] - bare_one,
        "click_reply_bytes": click["click_reply_bytes"],
        "largest_message_bytes": click["largest_message"]["bytes"],
        "submit_s": click["submit_s"],
        "predictor_click_ms": plain_click,
        "predictor_click_refined_ms": refined_click,
        "bare_train_slices_per_s": bare_train,
        "saim_train_slices_per_s": saim_train,
        "train_ratio_vs_bare": saim_train / bare_train,
        "train_step_parts_s": train["parts_s"],
        "click_simulation_share": (
            train["parts_s"].get("virtual user clicks", 0.0) + train["parts_s"].get("random error clicks", 0.0)
        )
        / train["saim_s"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--encoder", default="resnet34")
    ap.add_argument("--cases", type=int, default=24, help="pool series")
    ap.add_argument("--depth", type=int, default=64, help="slices per pool series")
    ap.add_argument("--ct-shape", type=int, nargs=3, default=[512, 512, 200], help="the CT series the click test opens")
    ap.add_argument("--batch", type=int, default=32, help="scoring batch (the predictor's default)")
    ap.add_argument(
        "--decode-workers",
        type=int,
        default=ServiceSettings.model_fields["decode_workers"].default,
        help="threads decoding series ahead of the model (default: SAIM_DECODE_WORKERS's default)",
    )
    ap.add_argument("--clicks", type=int, default=100)
    ap.add_argument("--refine-repeat", type=int, default=10, help="timed predictor calls with and without refinement")
    ap.add_argument("--train-batch", type=int, default=16)
    ap.add_argument("--train-steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--tiny", action="store_true", help="seconds on a CPU: the tests' mode")
    ap.add_argument("--out", type=Path, default=Path("out/gpu-bench.json"))
    args = ap.parse_args()
    if args.tiny:
        args.sizes, args.encoder, args.cases, args.depth, args.ct_shape = [32], "resnet18", 3, 4, [48, 40, 4]
        args.batch, args.clicks, args.train_batch, args.train_steps, args.refine_repeat = 4, 4, 2, 2, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if is_cuda(device):
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    report = {
        "device": device,
        "device_name": device_name(device),
        "precision": precision(device),
        "torch": torch.__version__,
        "encoder": args.encoder,
        "sizes": [run_size(size, args, device) for size in args.sizes],
    }
    if is_cuda(device):
        report["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"saim gpu bench: {report['device_name']} ({device}, {report['precision']}), torch {report['torch']}")
    print(f"{'size':>5s} {'measure':44s} {'saim':>10s} {'bare':>10s} {'ratio':>6s}")
    for r in report["sizes"]:
        bare_scoring, workers = r["bare_scoring_slices_per_s"], r["decode_workers"]
        rows = [
            ("scoring, NIfTI decoded, serially, slices/s", r["scoring_cold_serial_slices_per_s"], bare_scoring),
            (
                f"scoring, NIfTI, {workers} decoding threads, slices/s",
                r["scoring_cold_nifti_slices_per_s"],
                bare_scoring,
            ),
            ("scoring, cold, preprocessed store, slices/s", r["scoring_cold_slices_per_s"], bare_scoring),
            ("scoring, warm (series cached), slices/s", r["scoring_warm_slices_per_s"], bare_scoring),
            ("click: gRPC AddClick p50 / bare forward, ms", r["click_grpc_p50_ms"], r["bare_forward_1_slice_ms"]),
            ("click: gRPC AddClick p95, ms", r["click_grpc_p95_ms"], r["bare_forward_1_slice_ms"]),
            ("click: refined / plain predictor call, ms", r["predictor_click_refined_ms"], r["predictor_click_ms"]),
            ("training, slices/s", r["saim_train_slices_per_s"], r["bare_train_slices_per_s"]),
        ]
        for name, saim, bare in rows:
            print(f"{r['size']:>5d} {name:44s} {saim:10.1f} {bare:10.1f} {saim / bare:6.2f}")
        print(
            f"{r['size']:>5d} {'rescore 120k slices (cold / warm / bare), s':44s} "
            f"{r['rescore_120k_cold_s']:.0f} / {r['rescore_120k_warm_s']:.0f} / {r['rescore_120k_bare_s']:.0f}"
        )
    print(f"report: {args.out}")


if __name__ == "__main__":
    main()
