"""DICOM in: a series' geometry from its headers is the geometry of the NIfTI written from the same data; import and
bootstrap take DICOM and store NIfTI; series that would break later are refused by name."""

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from saim.cli.admin import _images_to_add
from saim.data.dataset import NnUNetDataset, write_dataset
from saim.data.dicom import case_names, find_series, read_folder, read_series
from saim.data.nifti import load_volume, save_volume, volume_from_bytes
from saim.data.splits import make_splits
from saim.errors import DatasetError, InvalidInput
from saim.storage.pool import add_to_pool, image_key, import_dataset
from tests.unit.dicom_series import write_series
from tests.unit.echo import oblique_affine
from tests.unit.test_scan_space import INFO, _volume

SHAPE = (60, 44, 5)


def _ct_affine() -> np.ndarray:
    """How a CT converted from DICOM usually looks: LPS axes, so x and y flipped in RAS, slices feet to head."""
    affine = np.diag([-0.78125, -0.8, 2.5, 1.0])  # rows and columns spaced differently
    affine[:3, 3] = (199.6, 211.4, -312.25)
    return affine


def _canonical(volume: np.ndarray, affine: np.ndarray, tmp_path, name: str):
    """The NIfTI written from (volume, affine), read back by nibabel and turned to its closest RAS axes."""
    save_volume(tmp_path / f"{name}.nii.gz", volume, affine)
    img = nib.as_closest_canonical(nib.load(tmp_path / f"{name}.nii.gz"))
    return np.asarray(img.dataobj), img.affine


@pytest.mark.parametrize(
    ("affine", "as_written"),
    [(_ct_affine(), True), (oblique_affine(spacing=(0.6, 0.9, 3.0)), False)],
    ids=["lps-ct", "oblique-flipped"],
)
def test_a_series_geometry_from_its_headers_is_the_niftis_written_from_the_same_data(affine, as_written, tmp_path):
    image = _volume(0)[0]
    write_series(tmp_path / "dicom", image, affine)
    volume, got = read_folder(tmp_path / "dicom")
    assert volume.dtype == np.int16  # whole numbers in range stay int16 (RescaleIntercept applied)
    # the same voxels at the same places: compared as the NIfTI files another tool would read
    want_data, want_affine = _canonical(image, affine, tmp_path, "want")
    got_data, got_affine = _canonical(volume, got, tmp_path, "got")
    np.testing.assert_array_equal(got_data, want_data)
    np.testing.assert_allclose(got_affine, want_affine, atol=1e-9)
    if as_written:  # slices stacked along their normal, as this scan's k runs: the very array and affine
        np.testing.assert_array_equal(volume, image)
        np.testing.assert_allclose(got, affine, atol=1e-9)


def test_a_real_ct_slice_keeps_its_position_spacing_and_values():
    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    series = [s for s in find_series(path.rsplit("/", 1)[0]) if s.uid == ds.SeriesInstanceUID]
    volume, affine = read_series(series[0])
    expected = ds.pixel_array.T.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(volume[:, :, 0], expected)
    lps_origin = np.array([float(v) for v in ds.ImagePositionPatient])
    np.testing.assert_allclose(affine[:3, 3], lps_origin * [-1, -1, 1])
    np.testing.assert_allclose(np.abs(np.diag(affine)[:3]), [*map(float, ds.PixelSpacing), float(ds.SliceThickness)])


def test_import_takes_a_folder_of_dicom_series_and_stores_nifti(tmp_path):
    root = write_dataset(tmp_path / "ds", INFO, {f"c{i}": (*_volume(i), oblique_affine()) for i in range(4)})
    store = _bucket(root)
    scans = tmp_path / "scans"
    write_series(scans / "patient1" / "ct", _volume(7)[0], _ct_affine(), number=3)
    write_series(scans / "patient2", _volume(8)[0], _ct_affine(), number=2)
    write_series(scans / "patient2", _volume(9)[0], oblique_affine(), number=5)
    (scans / "README.txt").write_text("not DICOM: left out")
    found = _images_to_add(scans)
    assert sorted(found) == ["patient1_ct", "patient2_s2", "patient2_s5"]
    assert add_to_pool(store, found) == ["patient1_ct", "patient2_s2", "patient2_s5"]
    stored, affine = volume_from_bytes(store.get_bytes(image_key("patient2_s2")))  # NIfTI in the bucket
    np.testing.assert_array_equal(stored, _volume(8)[0])
    np.testing.assert_allclose(affine, _ct_affine(), atol=1e-9)
    assert set(store.get_json("dataset/splits.json")["pool"]) >= {"patient1_ct", "patient2_s2", "patient2_s5"}


def test_bootstrap_takes_dicom_image_folders_with_nifti_labels(tmp_path):
    root = write_dataset(tmp_path / "ds", INFO, {f"c{i}": (*_volume(i), _ct_affine()) for i in range(4)})
    for case in ("c0", "c3"):  # two cases' images as DICOM series: imagesTr/{case}_0000/
        (root / "imagesTr" / f"{case}_0000.nii.gz").unlink()
        write_series(root / "imagesTr" / f"{case}_0000", _volume(int(case[1]))[0], _ct_affine())
    ds = NnUNetDataset(root)
    assert ds.cases == ["c0", "c1", "c2", "c3"]
    image, label, _ = ds.load_case("c3")  # the label's affine checked against the DICOM geometry
    np.testing.assert_array_equal(image, _volume(3)[0])
    store = _bucket(root)
    np.testing.assert_array_equal(volume_from_bytes(store.get_bytes(image_key("c0")))[0], _volume(0)[0])
    write_series(root / "imagesTr" / "c1_0000", _volume(1)[0], _ct_affine())
    with pytest.raises(DatasetError, match="both a NIfTI image and a DICOM folder"):
        NnUNetDataset(root)


def test_series_that_would_break_later_are_refused_by_name(tmp_path):
    image = _volume(0)[0]
    write_series(tmp_path / "gap", image, _ct_affine(), skip=(2,))
    with pytest.raises(InvalidInput, match=r"gap.*not evenly spaced.*missing slices"):
        read_folder(tmp_path / "gap")
    uid = pydicom.uid.generate_uid()
    write_series(tmp_path / "echoes", image, _ct_affine(), series_uid=uid)
    write_series(tmp_path / "echoes", image + 1, _ct_affine(), series_uid=uid)
    with pytest.raises(InvalidInput, match="several images at one position"):
        read_folder(tmp_path / "echoes")
    tilted = _ct_affine()
    tilted[1, 2] = 0.8  # each slice shifted along y: a gantry tilt
    write_series(tmp_path / "tilt", image, tilted)
    with pytest.raises(InvalidInput, match="gantry tilt"):
        read_folder(tmp_path / "tilt")
    write_series(tmp_path / "two", image, _ct_affine(), number=1)
    write_series(tmp_path / "two", image, _ct_affine(), number=2)
    with pytest.raises(InvalidInput, match="2 DICOM image series, expected one"):
        read_folder(tmp_path / "two")
    with pytest.raises(DatasetError, match="not evenly spaced"):  # as the dataset loader reports it
        load_volume(tmp_path / "gap")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no scans here")
    with pytest.raises(InvalidInput, match="no DICOM series"):
        _images_to_add(empty)
    assert case_names(find_series(tmp_path / "two")).keys() == {"two_s1", "two_s2"}


def _bucket(root):
    from tests.unit.fakes import MemoryStore

    store = MemoryStore()
    ds = NnUNetDataset(root)
    import_dataset(store, ds, make_splits(ds.cases, 0, unlabelled=ds.unlabelled))
    return store
