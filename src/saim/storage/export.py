"""`saim export nnunet`: the campaign's result as an nnU-Net raw dataset.

imagesTr/{case}_0000.nii.gz are the imported image files, byte for byte; labelsTr/{case}.nii.gz are in the image's
geometry (shape and affine) with the dataset's label values: the ground truth of the initial set and every stored
annotation (with overlap > 1, the primary annotation, or one rater's copies with `rater`). dataset.json follows the
nnU-Net v2 format; provenance.csv says who annotated what, with which model version, how many clicks and edits, and
how long it took.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from saim.data.nifti import volume_from_bytes
from saim.errors import FailedPrecondition, InvalidInput, NotFound
from saim.storage.pool import (
    PoolStore,
    annotation_key,
    gzipped,
    image_key,
    label_key,
    provenance_key,
    rater_key,
)

ENDING = ".nii.gz"  # the bucket stores every image and label gzipped (saim.storage.pool.gzipped)

PROVENANCE_COLUMNS = (
    "case",
    "source",
    "annotator",
    "model_version",
    "model_versions_used",
    "clicks",
    "edits",
    "slices_edited",
    "slices_accepted_unedited",
    "seconds_server",
    "seconds_client",
)


@dataclass(frozen=True)
class ExportSummary:
    out_dir: Path
    initial: int
    annotated: int
    skipped: list[str]


def _row(case: str, source: str, prov: dict) -> dict:
    return {
        "case": case,
        "source": source,
        "annotator": prov.get("annotator", ""),
        "model_version": prov.get("model_version_opened", ""),
        "model_versions_used": " ".join(prov.get("model_versions_used", [])),
        "clicks": prov.get("num_clicks", ""),
        "edits": prov.get("num_edits", ""),
        "slices_edited": len(prov.get("slices_edited", [])) if "slices_edited" in prov else "",
        "slices_accepted_unedited": (
            len(prov.get("slices_accepted_unedited", [])) if "slices_accepted_unedited" in prov else ""
        ),
        "seconds_server": prov.get("seconds_spent_server", ""),
        "seconds_client": prov.get("seconds_spent_client") or "",
    }


def _annotations(pool: PoolStore, rater: str | None) -> dict[str, tuple[str, str]]:
    """{case: (label key, provenance key)} of the annotations to export."""
    if rater is None:
        return {case: (annotation_key(case), provenance_key(case)) for case in pool.annotated_cases()}
    found = {}
    for key in pool.store.list("raters/"):
        parts = key.split("/")
        if len(parts) == 3 and parts[2] == f"{rater}.json":
            found[parts[1]] = (rater_key(parts[1], rater, "nii.gz"), key)
    if not found:  # overlap 1 keeps no rater copies: the rater's primary annotations are theirs
        for case in pool.annotated_cases():
            if pool.store.get_json(provenance_key(case)).get("annotator") == rater:
                found[case] = (annotation_key(case), provenance_key(case))
    if not found:
        raise NotFound(f"no annotation by rater {rater!r}")
    return found


def export_nnunet(pool: PoolStore, out_dir: Path | str, rater: str | None = None) -> ExportSummary:
    """Write the nnU-Net raw dataset. The output directory must be new or empty (nothing is overwritten)."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise InvalidInput(f"{out}: exists and is not empty; export into a new directory")
    pool.refresh()
    annotations = _annotations(pool, rater)
    (out / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out / "labelsTr").mkdir(parents=True, exist_ok=True)
    rows, skipped = [], []

    def write(case: str, label_blob: bytes) -> None:
        image_blob = pool.store.get_bytes(image_key(case))
        image, affine = volume_from_bytes(image_blob, image_key(case))
        label, label_affine = volume_from_bytes(label_blob, case)
        if label.shape != image.shape or not (abs(label_affine - affine) < 1e-4).all():
            raise FailedPrecondition(f"{case}: the label's geometry is not its image's")
        (out / "imagesTr" / f"{case}_0000{ENDING}").write_bytes(gzipped(image_blob))
        (out / "labelsTr" / f"{case}{ENDING}").write_bytes(gzipped(label_blob))

    for case in pool.splits.initial:
        write(case, pool.store.get_bytes(label_key(case)))
        rows.append({"case": case, "source": "ground_truth"})
    for case, (lkey, pkey) in sorted(annotations.items()):
        if case in pool.splits.initial:
            continue
        prov = pool.store.get_json(pkey)
        try:
            write(case, pool.store.get_bytes(lkey))
        except (FailedPrecondition, InvalidInput) as exc:  # e.g. a model-grid annotation of an older release
            skipped.append(f"{case}: {exc}")
            continue
        rows.append(_row(case, "saim", prov))
    meta = {
        "name": pool.info.name,
        "channel_names": pool.info.channel_names,
        "labels": {"background": 0, **dict(zip(pool.info.classes, pool.info.label_values, strict=True))},
        "numTraining": len(rows),
        "file_ending": ENDING,
        "saim": {"exported_from": pool.store.bucket, "rater": rater, "preprocessing": pool.intensity.to_json()},
    }
    (out / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    with open(out / "provenance.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, PROVENANCE_COLUMNS, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return ExportSummary(out, len(pool.splits.initial), len(rows) - len(pool.splits.initial), skipped)
