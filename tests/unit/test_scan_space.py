"""Real scans in, a real dataset out: unlabelled pools, fixed splits, `saim admin import`, annotations stored in the
scan's geometry through the annotator service, and the nnU-Net export."""

import csv
import gzip
import json

import nibabel as nib
import numpy as np
import pytest

from saim.data.dataset import DatasetInfo, NnUNetDataset, write_dataset
from saim.data.nifti import save_volume
from saim.data.splits import make_splits, read_splits
from saim.errors import DatasetError, InvalidInput
from saim.model.compute import TensorThread
from saim.model.config import ModelConfig
from saim.model.predictor import InteractivePredictor
from saim.registry.live import ServedModel
from saim.rpc.wire import decode_image, decode_mask, encode_mask
from saim.selection.loop import SelectionLoop
from saim.selection.scoring import LocalScoring
from saim.selection.strategies import EntropyStrategy
from saim.storage.export import export_nnunet
from saim.storage.pool import PoolStore, add_to_pool, annotation_key, image_key, import_dataset
from saim.v1 import annotator_pb2
from tests.unit.echo import echo_predictor, oblique_affine
from tests.unit.fakes import MemoryStore
from tests.unit.harness import annotator_stub

SHAPE = (60, 44, 5)
INFO = DatasetInfo("Oblique", ("organ", "vessel"), (3, 7), channel_names={"0": "CT"})


def _volume(seed):
    rng = np.random.default_rng(seed)
    image = rng.normal(-500, 100, SHAPE).astype(np.int16)
    label = np.zeros(SHAPE, np.uint8)
    label[15:40, 10:30, 1:4] = 1
    label[30:36, 30:40, :] = 2
    image[label == 1] = 60
    image[label == 2] = 200
    return image, label


@pytest.fixture
def dataset(tmp_path):
    """Six labelled oblique, anisotropic CT cases, two unlabelled ones in imagesTs/."""
    cases = {f"c{i}": (*_volume(i), oblique_affine()) for i in range(6)}
    root = write_dataset(tmp_path / "ds", INFO, cases)
    (root / "imagesTs").mkdir()
    for i in (6, 7):
        save_volume(root / "imagesTs" / f"u{i}_0000.nii.gz", _volume(i)[0], oblique_affine())
    return NnUNetDataset(root)


def test_unlabelled_cases_form_the_pool_and_ct_statistics_come_from_labels(dataset):
    assert dataset.cases == [f"c{i}" for i in range(6)] and dataset.unlabelled == ["u6", "u7"]
    splits = make_splits(dataset.cases, 0, unlabelled=dataset.unlabelled)
    assert {"u6", "u7"} <= set(splits.pool) and not {"u6", "u7"} & set(splits.labelled)
    store = MemoryStore()
    intensity = import_dataset(store, dataset, splits)
    assert intensity.scheme == "ct" and 55 <= intensity.lower and intensity.upper <= 200
    assert not store.exists("dataset/labelsTr/u6.nii.gz") and store.exists("dataset/imagesTr/u6_0000.nii.gz")
    pool = PoolStore(store, 32)
    assert pool.intensity == intensity and pool.load_series("u6").num_slices == SHAPE[2]  # every slice


def test_a_splits_file_fixes_the_split_and_is_validated(dataset, tmp_path):
    good = {"initial": ["c0", "c1"], "val": ["c2"], "test": ["c3"], "pool": ["c4", "c5", "u6", "u7"]}
    path = tmp_path / "splits.json"
    path.write_text(json.dumps(good))
    assert read_splits(path, dataset).initial == ("c0", "c1")
    for bad, message in [
        ({**good, "val": ["u6"], "pool": ["c2", "c4", "c5", "u7"]}, "val cases need labels"),
        ({**good, "pool": ["c4", "c5", "u6"]}, r"missing \['u7'\]"),
        ({**good, "test": ["c3", "c0"]}, "more than one split"),
        ({k: v for k, v in good.items() if k != "pool"}, "exactly the keys"),
    ]:
        path.write_text(json.dumps(bad))
        with pytest.raises(DatasetError, match=message):
            read_splits(path, dataset)


def test_admin_import_adds_series_that_the_selector_then_scores(dataset, tmp_path, tiny_model_config):
    store = MemoryStore()
    import_dataset(store, dataset, make_splits(dataset.cases, 0))
    pool = PoolStore(store, 32)
    model = ServedModel(
        "v0000", InteractivePredictor(ModelConfig(classes=INFO.classes, image_size=32, encoder="resnet18")), {}
    )
    loop = SelectionLoop(pool, EntropyStrategy(), batch_size=1, max_iterations=3)
    loop.on_model(model, 0)
    before = set(loop.scores.scores)
    new = tmp_path / "new"
    new.mkdir()
    save_volume(new / "late.nii.gz", _volume(9)[0], oblique_affine())
    assert add_to_pool(store, {"late": new / "late.nii.gz"}) == ["late"]
    with pytest.raises(InvalidInput, match="already in the dataset"):
        add_to_pool(store, {"late": new / "late.nii.gz"})
    (new / "broken.nii.gz").write_bytes(b"not nifti")
    with pytest.raises(DatasetError, match="broken.nii.gz"):
        add_to_pool(store, {"broken": new / "broken.nii.gz"})
    pool.refresh()  # what the selector's reconcile does
    loop.on_model(model, 0)
    assert set(loop.scores.scores) == before | {"late"}
    assert set(store.get_json("scores/v0000.json")["scores"]) == before | {"late"}


def test_contract_click_at_a_voxel_is_stored_at_that_voxel_and_exported_in_the_scan_geometry(dataset, tmp_path):
    """Through the real annotator servicer: geometry, GetSlice, AddClick at (i, j, k), EditSlice, Submit, export;
    every forward on the tensor thread, as in the service (saim.model.compute)."""
    store = MemoryStore()
    import_dataset(store, dataset, make_splits(dataset.cases, 0, unlabelled=dataset.unlabelled))
    echo = echo_predictor(ModelConfig(classes=INFO.classes, image_size=32, click_radius=1))
    compute = TensorThread(1, name="tensor")
    with annotator_stub(store, echo, 32, publish=False, compute=compute) as (stub, _):
        opened = stub.OpenSession(annotator_pb2.OpenSessionRequest(case_id="u6", annotator_id="ann"))
        g = opened.geometry
        assert list(g.shape) == list(SHAPE) and g.slice_axis == 2 and (g.rows, g.cols) == SHAPE[:2]
        np.testing.assert_allclose(np.array(g.affine).reshape(4, 4), oblique_affine())
        assert opened.HasField("geometry") and opened.classes == list(INFO.classes)
        got = stub.GetSlice(annotator_pb2.GetSliceRequest(session_id=opened.session_id, slice=3, include_image=True))
        np.testing.assert_array_equal(decode_image(got), _volume(6)[0][:, :, 3])  # the source voxels, unchanged
        voxel = (41, 7, 3)
        reply = stub.AddClick(
            annotator_pb2.AddClickRequest(
                session_id=opened.session_id, class_index=2, positive=True, voxel=annotator_pb2.Voxel(i=41, j=7, k=3)
            )
        )
        assert decode_mask(reply.mask, SHAPE[:2])[41, 7] == 2 and reply.mask.slice == 3
        stroke = np.zeros(SHAPE[:2], np.uint8)
        stroke[5:8, 30:33] = 1
        edited = stub.EditSlice(
            annotator_pb2.EditSliceRequest(
                session_id=opened.session_id, slice=1, class_index=1, painted=encode_mask(1, stroke)
            )
        )
        assert (decode_mask(edited.mask)[5:8, 30:33] == 1).all() and edited.edits_on_slice == 1
        stub.Submit(annotator_pb2.SubmitRequest(session_id=opened.session_id, seconds_spent=3.0))
    compute.close()
    assert echo.network.threads == {"tensor"}  # one OpenMP team in the process: no request thread ran a forward
    img = nib.Nifti1Image.from_bytes(gzip.decompress(store.get_bytes(annotation_key("u6"))))
    stored = np.asanyarray(img.dataobj)
    assert stored.shape == SHAPE and np.allclose(img.affine, oblique_affine())
    assert stored[voxel] == 7  # the dataset's label value of class 2, at the clicked voxel
    assert (stored[5:8, 30:33, 1] == 3).all()
    prov = store.get_json("annotations/u6.json")
    assert prov["slices_edited"] == [1, 3] and prov["slices_accepted_unedited"] == [0, 2, 4]
    out = tmp_path / "export"
    summary = export_nnunet(PoolStore(store, 32), out)
    assert summary.annotated == 1 and not summary.skipped
    label = nib.load(out / "labelsTr" / "u6.nii.gz")
    image = nib.load(out / "imagesTr" / "u6_0000.nii.gz")
    assert label.shape == image.shape == SHAPE and np.allclose(label.affine, image.affine)
    assert (out / "imagesTr" / "u6_0000.nii.gz").read_bytes() == store.get_bytes("dataset/imagesTr/u6_0000.nii.gz")
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "organ": 3, "vessel": 7} and meta["numTraining"] == summary.initial + 1
    rows = list(csv.DictReader(open(out / "provenance.csv")))
    assert rows[-1]["case"] == "u6" and rows[-1]["clicks"] == "1" and rows[-1]["edits"] == "1"
    with pytest.raises(InvalidInput, match="not empty"):
        export_nnunet(PoolStore(store, 32), out)


def test_bad_slices_on_the_wire_are_invalid_input():
    msg = encode_mask(0, np.ones((4, 4), np.uint8))
    msg.data = b"garbage"
    with pytest.raises(InvalidInput, match="not valid zlib"):
        decode_mask(msg)
    msg = encode_mask(0, np.ones((4, 4), np.uint8))
    msg.rows = 5
    with pytest.raises(InvalidInput, match="bytes where 20 were expected"):
        decode_mask(msg)
    big = encode_mask(0, np.zeros((2048, 2048), np.uint8))  # a zlib bomb claiming to be 4 x 4 is not inflated
    big.rows, big.cols = 4, 4
    with pytest.raises(InvalidInput, match="were expected"):
        decode_mask(big)


def test_a_pool_series_that_fails_to_decode_is_reported_and_left_out(dataset, tiny_model_config):
    store = MemoryStore()
    import_dataset(store, dataset, make_splits(dataset.cases, 0, unlabelled=dataset.unlabelled))
    pool = PoolStore(store, 32)
    store.put_bytes(image_key("u6"), b"\x1f\x8b not a NIfTI any more")  # damaged in the bucket after import
    reported: list[tuple[str, str]] = []
    strategy = EntropyStrategy()
    scoring = LocalScoring(pool, strategy, workers=2, report=lambda case, exc: reported.append((case, str(exc))))
    loop = SelectionLoop(pool, strategy, batch_size=1, max_iterations=3, scoring=scoring)
    model = ServedModel(
        "v0000", InteractivePredictor(ModelConfig(classes=INFO.classes, image_size=32, encoder="resnet18")), {}
    )
    loop.on_model(model, 0)
    assert [case for case, _ in reported] == ["u6"] and "u6" in loop.scores.failed
    assert "u6" not in loop.scores.scores and "u7" in loop.scores.scores
    assert loop.batch is not None and "u6" not in loop.batch.cases  # the loop goes on without it
    assert store.get_json("scores/v0000.json")["failed"].keys() == {"u6"}
    loop.on_model(model, 0)  # a replay or a reconcile: the broken series is not decoded again
    assert len(reported) == 1
