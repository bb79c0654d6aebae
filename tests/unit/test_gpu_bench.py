"""tools/gpu_bench.sh in its tiny CPU mode: the prepared GPU command runs and reports every figure it promises."""

import json
import math
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_bench_runs_in_tiny_cpu_mode(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [
            "bash",
            str(ROOT / "tools" / "gpu_bench.sh"),
            "--tiny",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(out.read_text())
    assert (report["device"], report["precision"]) == ("cpu", "fp32")
    (size,) = report["sizes"]
    assert size["size"] == 32 and size["pool_slices"] == 3 * 4
    for key in (
        "bare_scoring_slices_per_s",
        "scoring_cold_slices_per_s",
        "scoring_cold_nifti_slices_per_s",
        "preprocess_ms_per_slice",
        "scoring_warm_slices_per_s",
        "rescore_120k_cold_s",
        "bare_forward_1_slice_ms",
        "click_grpc_p50_ms",
        "click_grpc_p95_ms",
        "predictor_click_ms",
        "predictor_click_refined_ms",
        "bare_train_slices_per_s",
        "saim_train_slices_per_s",
    ):
        assert math.isfinite(size[key]) and size[key] > 0, key
    assert math.isclose(
        size["scoring_cold_ratio_vs_bare"], size["scoring_cold_slices_per_s"] / size["bare_scoring_slices_per_s"]
    )
    assert size["decode_workers"] >= 1 and size["scoring_cold_serial_slices_per_s"] > 0
    assert math.isclose(size["rescore_120k_cold_s"], 120_000 / size["scoring_cold_slices_per_s"])
    assert size["click_grpc_p95_ms"] >= size["click_grpc_p50_ms"]
    assert 0 < size["click_reply_bytes"] <= size["largest_message_bytes"]  # a compressed source-resolution mask
    parts = size["train_step_parts_s"]
    assert {"augmentation", "virtual user clicks", "optimizer step", "forward, loss, backward"} <= set(parts)
    assert 0 <= size["click_simulation_share"] < 1
    assert "rescore 120k slices" in run.stdout and "part of saim step" in run.stdout
    assert "click: refined / plain predictor call" in run.stdout
