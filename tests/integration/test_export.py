"""A real dataset out: `saim demo --iterations 1 --export DIR` writes an nnU-Net raw dataset that nnU-Net's own
checker (verify_dataset_integrity, nnunetv2 from PyPI in .venv-nnunet, see the Makefile) accepts unchanged, with
every label in its image's geometry; and `saim admin import` adds series to a running stack that then get scored."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from saim.data.nifti import save_volume
from saim.data.phantom import make_series
from tests.integration.conftest import FAST
from tests.waiting import poll

ROOT = Path(__file__).resolve().parents[2]
NNUNET_PYTHON = ROOT / os.environ.get("NNUNET_VENV", ".venv-nnunet") / "bin" / "python"

VERIFY = """
import sys
from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
if __name__ == "__main__":  # it spawns worker processes
    verify_dataset_integrity(sys.argv[1], num_processes=2)
    print("verify_dataset_integrity: OK")
"""


def nnunet_verify(folder: Path) -> subprocess.CompletedProcess:
    if not NNUNET_PYTHON.exists():
        pytest.fail(f"{NNUNET_PYTHON} missing: `make nnunet-tools` installs nnU-Net's checker (make test does)")
    script = folder.parent / "verify_nnunet.py"
    script.write_text(VERIFY)
    env = {
        **os.environ,
        "nnUNet_raw": str(folder.parent),
        "nnUNet_preprocessed": str(folder.parent / "pp"),
        "nnUNet_results": str(folder.parent / "res"),
    }
    return subprocess.run(
        [str(NNUNET_PYTHON), str(script), str(folder)], capture_output=True, text=True, timeout=600, env=env
    )


def assert_labels_in_image_geometry(folder: Path) -> int:
    labels = sorted((folder / "labelsTr").glob("*.nii.gz"))
    for label_path in labels:
        case = label_path.name[: -len(".nii.gz")]
        image = nib.load(folder / "imagesTr" / f"{case}_0000.nii.gz")
        label = nib.load(label_path)
        assert label.shape == image.shape, case
        np.testing.assert_allclose(label.affine, image.affine, atol=1e-5, err_msg=case)
    return len(labels)


def test_demo_export_passes_nnunets_own_dataset_check(tmp_path):
    out = tmp_path / "Dataset501_SaimDemo"
    env = {**os.environ, **FAST, "SAIM_MAX_ITERATIONS": "1"}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "saim.cli",
            "demo",
            "--iterations",
            "1",
            "--series",
            "10",
            "--annotators",
            "2",
            "--workdir",
            str(tmp_path / "work"),
            "--export",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "nnU-Net dataset:" in run.stdout
    meta = json.loads((out / "dataset.json").read_text())
    rows = list(csv.DictReader(open(out / "provenance.csv")))
    assert meta["numTraining"] == len(rows) == assert_labels_in_image_geometry(out)
    annotated = [r for r in rows if r["source"] == "saim"]
    assert len(annotated) == 2 and all(r["annotator"].startswith("virtual-") and r["model_version"] for r in annotated)
    verified = nnunet_verify(out)
    assert verified.returncode == 0, verified.stdout[-3000:] + verified.stderr[-3000:]
    assert "verify_dataset_integrity: OK" in verified.stdout


def test_admin_import_adds_series_to_a_running_stack_that_get_scored(completed_run, tmp_path):
    stack = completed_run.stack
    image, _ = make_series(7, 99, 48, 4)
    folder = tmp_path / "new"
    save_volume(folder / "late_0001.nii.gz", image, np.diag([1.5, 1.5, 5.0, 1.0]))
    env = {**os.environ, **stack.env()}

    def admin_import():
        argv = [sys.executable, "-m", "saim.cli", "admin", "import", str(folder)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)

    run = admin_import()
    assert run.returncode == 0, run.stderr
    assert "added 1 series to the pool: late_0001" in run.stdout
    store = stack.store()
    assert "late_0001" in store.get_json("dataset/splits.json")["pool"]
    current = store.get_json("models/CURRENT")["version"]
    poll(
        lambda: "late_0001" in store.get_json(f"scores/{current}.json")["scores"],
        timeout_s=90,
        what="the selector scored the imported series at its next reconcile",
    )
    again = admin_import()
    assert again.returncode == 2 and "already in the dataset" in again.stderr
