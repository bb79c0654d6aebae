"""nnU-Net raw layout: dataset.json, imagesTr/{case}_0000{ending}, labelsTr/{case}{ending}. An image may also be a
folder imagesTr/{case}_0000/ holding one DICOM series (saim.data.dicom); the labels are NIfTI in its geometry.

A dataset is validated when opened; errors name the offending file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from saim.data.geometry import ScanGeometry
from saim.data.nifti import check_finite, load_volume, save_volume
from saim.errors import DatasetError, InvalidInput

MAX_LABEL_VALUE = int(np.iinfo(np.uint16).max)
AFFINE_TOLERANCE = 1e-4  # a label's affine may differ from its image's by float noise only (mm)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    classes: tuple[str, ...]  # foreground classes in label-value order (value i+1)
    label_values: tuple[int, ...]  # label value of each foreground class in the files
    file_ending: str = ".nii.gz"
    channel_names: dict[str, str] = field(default_factory=lambda: {"0": "MRI"})

    @property
    def label_dtype(self) -> type[np.unsignedinteger]:
        """The type a label file is stored in: uint8 while every declared value fits, else uint16."""
        return np.uint8 if max(self.label_values, default=0) <= np.iinfo(np.uint8).max else np.uint16

    def to_json(self) -> dict:
        labels = {"background": 0}
        labels.update({name: value for name, value in zip(self.classes, self.label_values, strict=True)})
        return {
            "name": self.name,
            "channel_names": self.channel_names,
            "labels": labels,
            "file_ending": self.file_ending,
        }


def _parse_dataset_json(path: Path) -> DatasetInfo:
    if not path.is_file():
        raise DatasetError(f"{path}: dataset.json not found")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: invalid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise DatasetError(f"{path}: expected a JSON object")
    labels = meta.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise DatasetError(f"{path}: 'labels' must be a non-empty object of name -> integer")
    if labels.get("background") != 0:
        raise DatasetError(f"{path}: 'labels' must map 'background' to 0")
    fg = [(n, v) for n, v in labels.items() if n != "background"]
    if not fg:
        raise DatasetError(f"{path}: no foreground class in 'labels'")
    for name, value in fg:
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise DatasetError(f"{path}: label '{name}' must be a positive integer (region labels are not supported)")
        if value > MAX_LABEL_VALUE:
            raise DatasetError(
                f"{path}: label '{name}' = {value} does not fit a label file (at most {MAX_LABEL_VALUE})"
            )
    if len({v for _, v in fg}) != len(fg):
        raise DatasetError(f"{path}: duplicate label values")
    fg.sort(key=lambda nv: nv[1])
    ending = meta.get("file_ending", ".nii.gz")
    if ending not in (".nii.gz", ".nii"):
        raise DatasetError(f"{path}: file_ending {ending!r} is not supported (use .nii.gz or .nii)")
    channels = meta.get("channel_names", {"0": "image"})
    if not isinstance(channels, dict) or len(channels) != 1:
        raise DatasetError(f"{path}: exactly one input channel is supported, got channel_names={channels!r}")
    return DatasetInfo(
        name=str(meta.get("name", path.parent.name)),
        classes=tuple(n for n, _ in fg),
        label_values=tuple(v for _, v in fg),
        file_ending=ending,
        channel_names={str(k): str(v) for k, v in channels.items()},
    )


class NnUNetDataset:
    """A validated nnU-Net raw dataset directory. Labelled cases are imagesTr entries with a label in labelsTr;
    imagesTr entries without a label and every imagesTs entry are unlabelled (a pool to annotate)."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: dataset directory not found")
        self.info = _parse_dataset_json(self.root / "dataset.json")
        self._images: dict[str, Path] = {}
        self._cases, self._unlabelled = self._discover()

    def _scan(self, folder: str) -> dict[str, Path]:
        suffix = "_0000" + self.info.file_ending
        directory = self.root / folder
        if not directory.is_dir():
            return {}
        found = {p.name[: -len(suffix)]: p for p in sorted(directory.iterdir()) if p.name.endswith(suffix)}
        for p in sorted(directory.iterdir()):  # a folder {case}_0000/ holds the case's image as one DICOM series
            if p.is_dir() and p.name.endswith("_0000"):
                if p.name[:-5] in found:
                    raise DatasetError(f"{p}: case {p.name[:-5]!r} has both a NIfTI image and a DICOM folder")
                found[p.name[:-5]] = p
        return found

    def _discover(self) -> tuple[list[str], list[str]]:
        train, test = self._scan("imagesTr"), self._scan("imagesTs")
        if not train and not test:
            raise DatasetError(
                f"{self.root}: no images named {{case}}_0000{self.info.file_ending} in imagesTr/ or imagesTs/"
            )
        both = sorted(set(train) & set(test))
        if both:
            raise DatasetError(f"{self.root}: cases {both} are in both imagesTr/ and imagesTs/")
        labels = self.root / "labelsTr"
        if labels.is_dir():
            strays = sorted(
                p.name
                for p in labels.iterdir()
                if p.name.endswith(self.info.file_ending) and p.name[: -len(self.info.file_ending)] not in train
            )
            if strays:
                raise DatasetError(f"{labels}: labels without an image in imagesTr/: {strays}")
        self._images = {**train, **test}
        labelled = sorted(c for c in train if self.label_path(c).is_file())
        return labelled, sorted((set(train) - set(labelled)) | set(test))

    @property
    def cases(self) -> list[str]:
        """The labelled cases."""
        return list(self._cases)

    @property
    def unlabelled(self) -> list[str]:
        return list(self._unlabelled)

    def image_path(self, case: str) -> Path:
        if case not in self._images:
            raise DatasetError(f"{self.root}: no image for case {case!r}")
        return self._images[case]

    def label_path(self, case: str) -> Path:
        return self.root / "labelsTr" / f"{case}{self.info.file_ending}"

    def load_image(self, case: str) -> tuple[np.ndarray, np.ndarray]:
        """(image float32, affine), validated: finite values, and a geometry the model grid can take."""
        path = self.image_path(case)
        image, affine = load_volume(path)
        check_finite(image, str(path))
        check_geometry(image.shape, affine, str(path))
        return image.astype(np.float32), affine

    def load_case(self, case: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Returns (image float32, label uint8 with values 0..K, affine); validates shapes and values."""
        image, affine = self.load_image(case)
        label_raw, label_affine = load_volume(self.label_path(case))
        if label_raw.shape != image.shape:
            raise DatasetError(
                f"{self.label_path(case)}: label shape {label_raw.shape} does not match image shape {image.shape}"
            )
        if not np.allclose(label_affine, affine, rtol=0, atol=AFFINE_TOLERANCE):
            worst = float(np.abs(label_affine - affine).max())
            raise DatasetError(
                f"{self.label_path(case)}: label affine differs from its image's by {worst:.3g} "
                f"(more than {AFFINE_TOLERANCE}): the label is not in the image's geometry"
            )
        return image, remap_labels(label_raw, self.info, str(self.label_path(case))), affine


def remap_labels(label: np.ndarray, info: DatasetInfo, name: str) -> np.ndarray:
    """Map the file's label values onto 0..K (K = number of foreground classes)."""
    if np.issubdtype(label.dtype, np.floating):
        if not np.isfinite(label).all() or not np.all(label == np.round(label)):
            raise DatasetError(f"{name}: label map must hold integer values")
    label = label.astype(np.int64)
    lut_size = max(info.label_values) + 1
    present = np.unique(label)
    unknown = [int(v) for v in present if v < 0 or v >= lut_size or (v != 0 and v not in info.label_values)]
    if unknown:
        raise DatasetError(f"{name}: label values {unknown} are not declared in dataset.json")
    lut = np.zeros(lut_size, dtype=np.uint8)
    for i, value in enumerate(info.label_values):
        lut[value] = i + 1
    return lut[label]


def to_file_values(label: np.ndarray, info: DatasetInfo) -> np.ndarray:
    """0..K -> the label values declared in dataset.json (the inverse of remap_labels)."""
    return np.array((0, *info.label_values), dtype=info.label_dtype)[np.asarray(label).astype(np.int64)]


def check_geometry(shape: tuple[int, ...], affine: np.ndarray, name: str) -> None:
    """A DatasetError naming the file when the model grid cannot take the scan (not 3D, a singular affine)."""
    try:
        ScanGeometry.of(shape, affine)
    except InvalidInput as exc:
        raise DatasetError(f"{name}: {exc}") from exc


def write_dataset(
    root: Path | str,
    info: DatasetInfo,
    cases: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    | Iterable[tuple[str, tuple[np.ndarray, np.ndarray, np.ndarray]]],
) -> Path:
    """Write {case: (image, label with values 0..K, affine)} in the nnU-Net raw layout. `cases` may be an iterable
    of (case, (image, label, affine)) pairs: each is written and dropped before the next is made (a pool of any
    size in the memory of one series)."""
    root = Path(root)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    count = 0
    for case, (image, label, affine) in cases.items() if isinstance(cases, Mapping) else cases:
        save_volume(root / "imagesTr" / f"{case}_0000{info.file_ending}", image.astype(np.float32), affine)
        save_volume(root / "labelsTr" / f"{case}{info.file_ending}", to_file_values(label, info), affine)
        count += 1
    meta = info.to_json()
    meta["numTraining"] = count
    (root / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    return root
