"""The real-data path: the TotalSegmentator sdist's example CT/MR scans as an nnU-Net dataset, run unchanged through
`saim emulate` (tiny training budget: this checks the pipeline on real data, not the accuracy)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from saim.cli.main import main
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


def test_real_scans_go_through_import_session_submit_and_export_at_native_resolution(totalseg, tmp_path):
    """Import the CT/MR slabs, open a pool case through the real annotator servicer, fetch and click at a voxel of a
    labelled organ, submit, and export: the label is in the scan's own grid, and nnU-Net's checker accepts it."""
    import nibabel as nib
    import numpy as np

    from saim.data.splits import make_splits
    from saim.model.config import ModelConfig
    from saim.model.predictor import InteractivePredictor
    from saim.rpc.wire import decode_image, decode_mask
    from saim.storage.export import export_nnunet
    from saim.storage.pool import PoolStore, import_dataset
    from saim.v1 import annotator_pb2
    from tests.integration.test_export import assert_labels_in_image_geometry, nnunet_verify
    from tests.unit.fakes import MemoryStore
    from tests.unit.harness import annotator_stub

    ds = NnUNetDataset(totalseg)
    store = MemoryStore()
    splits = make_splits(ds.cases, 0)
    import_dataset(store, ds, splits)
    config = ModelConfig(classes=ds.info.classes, image_size=32, encoder="resnet18")
    case = splits.pool[0]
    image, label, affine = ds.load_case(case)
    with annotator_stub(store, InteractivePredictor(config), 32) as (stub, _):
        opened = stub.OpenSession(annotator_pb2.OpenSessionRequest(case_id=case, annotator_id="radiologist"))
        g = opened.geometry
        assert tuple(g.shape) == image.shape and np.allclose(np.array(g.affine).reshape(4, 4), affine)
        i, j, k = (int(v) for v in np.argwhere(label > 0)[0])
        index = (i, j, k)[g.slice_axis]
        request = annotator_pb2.GetSliceRequest(session_id=opened.session_id, slice=index, include_image=True)
        got = stub.GetSlice(request)
        np.testing.assert_allclose(decode_image(got), np.take(image, index, axis=g.slice_axis), rtol=1e-6)
        reply = stub.AddClick(
            annotator_pb2.AddClickRequest(
                session_id=opened.session_id,
                class_index=int(label[i, j, k]),
                positive=True,
                voxel=annotator_pb2.Voxel(i=i, j=j, k=k),
            )
        )
        assert decode_mask(reply.mask, (g.rows, g.cols)).shape == (g.rows, g.cols)  # native in-plane resolution
        stub.Submit(annotator_pb2.SubmitRequest(session_id=opened.session_id))
    out = tmp_path / "Dataset502_TotalSegExamples"
    summary = export_nnunet(PoolStore(store, 32), out)
    assert summary.annotated == 1 and summary.initial == len(splits.initial)
    assert assert_labels_in_image_geometry(out) == summary.initial + 1
    assert nib.load(out / "labelsTr" / f"{case}.nii.gz").shape == image.shape
    verified = nnunet_verify(out)
    assert verified.returncode == 0, verified.stdout[-3000:] + verified.stderr[-3000:]
    assert "verify_dataset_integrity: OK" in verified.stdout
