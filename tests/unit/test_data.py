import json
import shutil

import numpy as np
import pytest

from saim.data import phantom
from saim.data.dataset import DatasetInfo, NnUNetDataset, write_dataset
from saim.data.intensity import ZSCORE_SCHEME, Intensity, fit_intensity
from saim.data.nifti import load_volume, save_volume, volume_from_bytes, volume_to_bytes
from saim.data.slices import pick_slices, series_from_volume
from saim.errors import DatasetError, InvalidInput


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


def test_images_without_labels_are_the_unlabelled_pool(tmp_path):
    root = _dataset(tmp_path)
    (root / "labelsTr" / "c2.nii.gz").unlink()
    (root / "imagesTs").mkdir()
    shutil.copy(root / "imagesTr" / "c1_0000.nii.gz", root / "imagesTs" / "t1_0000.nii.gz")
    ds = NnUNetDataset(root)
    assert ds.cases == ["c1"] and ds.unlabelled == ["c2", "t1"]
    assert ds.load_image("t1")[0].shape == (8, 8, 3)
    (root / "labelsTr" / "t1.nii.gz").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"labels without an image in imagesTr/: \['t1.nii.gz'\]"):
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
    affine = np.diag([1.0, 1.0, 4.0, 1.0])
    assert list(pick_slices(np.moveaxis(label, 2, 0), 10, None)) == [3, 4, 5, 6]
    assert list(pick_slices(None, 10, 3)) == [0, 4, 9]  # rounded linspace over the whole depth
    assert list(pick_slices(None, 10, None)) == list(range(10))  # every slice by default
    with pytest.raises(InvalidInput, match="at least 1"):
        pick_slices(None, 10, 0)  # never zero slices
    s = series_from_volume("x", image, affine, label, 16, Intensity(ZSCORE_SCHEME), max_slices=2, pick_by_label=True)
    assert s.images.shape == s.labels.shape == (2, 16, 16)
    assert list(s.slice_index) == [3, 6] and s.volume_shape == (40, 30, 10)
    assert set(np.unique(s.labels)) == {0, 2}
    content = s.images[:, :, 2:14]  # 40 x 30 mm on 16 px: 16 x 12, centred
    assert abs(float(content.mean())) < 0.2 and (s.images[:, :, :2] == s.images.min()).all()


def test_intensity_schemes_by_modality():
    rng = np.random.default_rng(1)
    image = rng.normal(0, 300, (20, 20, 4)).astype(np.float32)
    label = np.zeros(image.shape, np.uint8)
    label[5:15, 5:15] = 1
    image[label > 0] = rng.normal(60, 10, int(label.sum()))
    ct = fit_intensity({"0": "CT"}, [(image, label)])
    assert ct.scheme == "ct" and 20 < ct.lower < ct.mean < ct.upper < 100
    out = ct.apply(image)
    assert abs(float(out[label > 0].mean())) < 0.05 and out.max() <= (ct.upper - ct.mean) / ct.std + 1e-5
    assert Intensity.from_json(ct.to_json()) == ct
    mri = fit_intensity({"0": "T2"}, [(image, label)])
    z = mri.apply(image * 3 + 7)
    assert mri.scheme == "zscore" and abs(float(z.mean())) < 1e-4 and abs(float(z.std()) - 1) < 1e-3
    with pytest.raises(DatasetError, match="labelled foreground"):
        fit_intensity({"0": "CT"}, [(image, np.zeros_like(label))])


def test_a_label_off_its_images_geometry_is_refused_by_name(tmp_path):
    root = _dataset(tmp_path)
    label, _ = load_volume(root / "labelsTr" / "c1.nii.gz")
    noise = np.eye(4)
    noise[0, 3] = 1e-6  # float noise in a header: the same geometry
    save_volume(root / "labelsTr" / "c1.nii.gz", label, noise)
    assert NnUNetDataset(root).load_case("c1")[1].sum() == 4
    shifted = np.eye(4)
    shifted[0, 3] = 0.5  # half a millimetre: the label sits elsewhere in the patient
    save_volume(root / "labelsTr" / "c1.nii.gz", label, shifted)
    with pytest.raises(DatasetError, match=r"labelsTr/c1.nii.gz: label affine differs from its image's by 0.5"):
        NnUNetDataset(root).load_case("c1")


def test_a_scan_the_model_grid_cannot_take_is_refused_by_name(tmp_path):
    import nibabel as nib

    root = _dataset(tmp_path)
    singular = np.eye(4)
    singular[2, 2] = 0.0  # no extent along the third axis: nibabel will not write it, other tools do
    header = nib.Nifti1Header()
    header.set_data_shape((8, 8, 3))
    header.set_data_dtype(np.float32)
    header.set_sform(singular, code=1)
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 3), np.float32), None, header), root / "imagesTr" / "c2_0000.nii.gz")
    with pytest.raises(DatasetError, match=r"imagesTr/c2_0000.nii.gz: the scan's affine is singular"):
        NnUNetDataset(root).load_case("c2")


def test_label_values_above_255_are_stored_in_a_type_that_holds_them(tmp_path):
    info = DatasetInfo(name="T", classes=("liver", "tumour"), label_values=(2, 300))
    label = np.zeros((8, 8, 3), np.uint8)
    label[1:3, 1:3, 1], label[5:7, 5:7, 2] = 1, 2
    root = write_dataset(tmp_path / "ds", info, {"c1": (np.zeros((8, 8, 3), np.float32), label, np.eye(4))})
    stored, _ = load_volume(root / "labelsTr" / "c1.nii.gz")
    assert stored.dtype == np.uint16 and set(np.unique(stored)) == {0, 2, 300}
    assert (NnUNetDataset(root).load_case("c1")[1] == label).all()
    assert DatasetInfo(name="T", classes=("a",), label_values=(7,)).label_dtype is np.uint8


def test_a_label_value_no_label_file_holds_is_refused(tmp_path):
    root = _dataset(tmp_path)
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "organ": 70000}}))
    with pytest.raises(DatasetError, match=r"dataset.json: label 'organ' = 70000 does not fit a label file"):
        NnUNetDataset(root)
