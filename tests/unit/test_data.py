import json

import numpy as np
import pytest

from saim.data import phantom
from saim.data.dataset import DatasetInfo, NnUNetDataset, write_dataset
from saim.data.nifti import load_volume, save_volume, volume_from_bytes, volume_to_bytes
from saim.data.slices import normalize_intensity, pick_slices, series_from_volume
from saim.errors import DatasetError


def test_nifti_round_trip_file_and_bytes(tmp_path):
    data = np.random.default_rng(0).random((7, 5, 3)).astype(np.float32)
    affine = np.diag([1.5, 2.0, 3.0, 1.0])
    save_volume(tmp_path / "v.nii.gz", data, affine)
    back, back_affine = load_volume(tmp_path / "v.nii.gz")
    np.testing.assert_array_equal(back, data)
    np.testing.assert_allclose(back_affine, affine)
    again, _ = volume_from_bytes(volume_to_bytes(data, affine))
    np.testing.assert_array_equal(again, data)


def test_truncated_nifti_is_a_clear_error(tmp_path):
    blob = volume_to_bytes(np.zeros((32, 32, 8), np.float32))
    with pytest.raises(DatasetError, match="case.nii.gz"):
        volume_from_bytes(blob[: len(blob) // 2], "case.nii.gz")


def test_volume_over_the_size_cap_is_too_large(tmp_path):
    from saim.errors import TooLarge

    save_volume(tmp_path / "big.nii.gz", np.zeros((8, 8, 8), np.float32))
    with pytest.raises(TooLarge, match="big.nii.gz: 512 voxels exceeds the cap of 100"):
        load_volume(tmp_path / "big.nii.gz", max_voxels=100)


def test_wrong_dimensionality_is_rejected(tmp_path):
    save_volume(tmp_path / "flat.nii.gz", np.zeros((4, 4), np.float32))
    with pytest.raises(DatasetError, match="flat.nii.gz.*3D"):
        load_volume(tmp_path / "flat.nii.gz")


def test_phantom_is_deterministic_and_varies_per_series():
    a_img, a_lab = phantom.make_series(0, 3, 48, 6)
    b_img, b_lab = phantom.make_series(0, 3, 48, 6)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    c_img, c_lab = phantom.make_series(0, 4, 48, 6)
    assert not np.array_equal(a_lab, c_lab)
    assert set(np.unique(a_lab)) <= {0, 1, 2, 3, 4} and (a_lab == 1).sum() > 0


def test_phantom_dataset_validates(tmp_path):
    root = phantom.generate(tmp_path / "ds", num_series=3, depth=4, size=32, seed=1)
    ds = NnUNetDataset(root)
    assert ds.cases == ["phantom_0000", "phantom_0001", "phantom_0002"]
    assert ds.info.classes == phantom.CLASSES
    image, label, _ = ds.load_case("phantom_0001")
    assert image.shape == label.shape == (32, 32, 4) and label.max() <= 4


def _dataset(tmp_path, labels=None):
    info = DatasetInfo(name="T", classes=("organ",), label_values=(1,))
    img = np.zeros((8, 8, 3), np.float32)
    lab = np.zeros((8, 8, 3), np.uint8)
    lab[2:4, 2:4, 1] = 1
    return write_dataset(tmp_path / "ds", info, {"c1": (img, lab, np.eye(4)), "c2": (img, lab, np.eye(4))})


def test_missing_label_names_the_file(tmp_path):
    root = _dataset(tmp_path)
    (root / "labelsTr" / "c2.nii.gz").unlink()
    with pytest.raises(DatasetError, match=r"labelsTr/c2.nii.gz: label file missing"):
        NnUNetDataset(root)


def test_shape_mismatch_names_the_file(tmp_path):
    root = _dataset(tmp_path)
    save_volume(root / "labelsTr" / "c1.nii.gz", np.zeros((8, 8, 4), np.uint8))
    with pytest.raises(DatasetError, match=r"labelsTr/c1.nii.gz: label shape"):
        NnUNetDataset(root).load_case("c1")


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "invalid JSON"),
        (json.dumps({"labels": {"organ": 1}}), "background"),
        (json.dumps({"labels": {"background": 0}}), "no foreground"),
        (json.dumps({"labels": {"background": 0, "organ": [1, 2]}}), "positive integer"),
        (json.dumps({"labels": {"background": 0, "organ": 1}, "file_ending": ".mha"}), "file_ending"),
    ],
)
def test_bad_dataset_json_names_the_file(tmp_path, content, message):
    root = _dataset(tmp_path)
    (root / "dataset.json").write_text(content)
    with pytest.raises(DatasetError, match=rf"dataset.json: .*{message}"):
        NnUNetDataset(root)


def test_undeclared_label_value_and_nan_image_are_rejected(tmp_path):
    root = _dataset(tmp_path)
    bad = np.zeros((8, 8, 3), np.uint8)
    bad[0, 0, 0] = 7
    save_volume(root / "labelsTr" / "c1.nii.gz", bad)
    with pytest.raises(DatasetError, match=r"c1.nii.gz: label values \[7\]"):
        NnUNetDataset(root).load_case("c1")
    nan = np.zeros((8, 8, 3), np.float32)
    nan[1, 1, 1] = np.nan
    save_volume(root / "imagesTr" / "c2_0000.nii.gz", nan)
    with pytest.raises(DatasetError, match=r"c2_0000.nii.gz: contains NaN"):
        NnUNetDataset(root).load_case("c2")


def test_slicing_normalises_resizes_and_follows_the_foreground():
    image = np.random.default_rng(0).normal(100, 20, (40, 30, 10)).astype(np.float32)
    label = np.zeros((40, 30, 10), np.uint8)
    label[10:20, 10:20, 3:7] = 2
    assert list(pick_slices(label, 10, None)) == [3, 4, 5, 6]
    assert list(pick_slices(None, 10, 3)) == [0, 4, 9]  # rounded linspace over the whole depth
    s = series_from_volume("x", image, label, 16, max_slices=2, pick_by_label=True)
    assert s.images.shape == s.labels.shape == (2, 16, 16)
    assert list(s.slice_index) == [3, 6] and s.volume_shape == (40, 30, 10)
    assert 0 <= s.images.min() and s.images.max() <= 1 and set(np.unique(s.labels)) == {0, 2}
    flat = normalize_intensity(np.ones((4, 4, 4)))
    assert (flat == 0).all()
