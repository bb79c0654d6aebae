"""The real-data path: the TotalSegmentator sdist's example CT/MR scans as an nnU-Net dataset, run unchanged through
`saim emulate` (tiny training budget: this checks the pipeline on real data, not the accuracy)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from saim.cli import main
from saim.data.dataset import NnUNetDataset

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def totalseg(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ts") / "ds"
    assert main(["data", "totalseg", str(out), "--cache-dir", str(ROOT / ".cache")]) == 0
    return out


def test_totalseg_dataset_is_valid_nnunet_layout(totalseg):
    ds = NnUNetDataset(totalseg)
    assert ds.info.classes == ("liver", "spleen", "kidney_right", "kidney_left")
    assert {c.split("_")[1] for c in ds.cases} == {"ct", "mr"} and len(ds.cases) >= 8
    image, label, _ = ds.load_case(ds.cases[0])
    assert image.shape == label.shape and label.max() <= 4 and image.std() > 0


def test_emulate_runs_unchanged_on_real_data(totalseg, tmp_path):
    report_path = tmp_path / "r.json"
    args = [
        "emulate",
        "--data",
        str(totalseg),
        "--iterations",
        "1",
        "--epochs",
        "1",
        "--finetune-epochs",
        "1",
        "--steps-per-epoch",
        "2",
        "--train-batch-size",
        "4",
        "--encoder",
        "resnet18",
        "--image-size",
        "32",
        "--max-slices",
        "3",
        "--no-noc",
        "--quiet",
        "--threads",
        "1",
        "--report",
        str(report_path),
    ]
    assert main(args) == 0
    report = json.loads(report_path.read_text())
    assert [r["iteration"] for r in report["iterations"]] == [0, 1]
    assert report["classes"] == ["liver", "spleen", "kidney_right", "kidney_left"]
    assert all(0.0 <= r["miou"] <= 1.0 for r in report["iterations"])
    assert report["iterations"][1]["selected"] and report["iterations"][1]["annotation_miou"] is not None
