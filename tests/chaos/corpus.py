"""The bad-input corpus: each entry is one malformed or unauthorised request against the live services (or the
bootstrap CLI against the live bucket), with the status it must get and words its message must contain."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import nibabel as nib
import numpy as np

from saim.data import phantom
from saim.data.nifti import load_volume, save_volume


@dataclass
class BadInput:
    name: str
    call: Callable[[], object]
    codes: tuple  # acceptable grpc.StatusCode values (or the CLI exit code)
    says: tuple[str, ...]  # each must appear in the error message (case-insensitive)


@dataclass
class Outcome:
    name: str
    ok: bool
    got: str


def run_one(case: BadInput) -> Outcome:
    try:
        result = case.call()
    except grpc.RpcError as exc:
        code, details = exc.code(), exc.details() or ""
    else:
        if not (isinstance(result, tuple) and len(result) == 2):  # a gRPC call that succeeded: a miss
            return Outcome(case.name, False, "accepted")
        code, details = result  # CLI: (exit code, stderr)
    ok = code in case.codes and all(s.lower() in details.lower() for s in case.says)
    shown = code.name if isinstance(code, grpc.StatusCode) else f"exit {code}"
    return Outcome(case.name, ok, f"{shown}: {details.strip()[:160]}")


def bootstrap_cli(dataset: Path, env: dict[str, str]) -> tuple[int, str]:
    """`saim bootstrap --force --dataset DIR` in-process with the services' environment; (exit code, stderr)."""
    import os

    from saim.cli.main import main

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = main(["bootstrap", "--dataset", str(dataset), "--force", "--no-topics"])
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return rc, err.getvalue()


def bad_datasets(root: Path) -> dict[str, tuple[Path, str]]:
    """Small nnU-Net datasets, each broken in one way; name -> (directory, words the error must name)."""
    base = phantom.generate(root / "good", num_series=3, depth=3, size=24, seed=5)
    cases = sorted(p.name[: -len("_0000.nii.gz")] for p in (base / "imagesTr").glob("*_0000.nii.gz"))
    c = cases[0]
    out: dict[str, tuple[Path, str]] = {}

    def variant(name: str) -> Path:
        d = root / name
        shutil.copytree(base, d)
        return d

    d = variant("stray-label")
    shutil.copy(d / "labelsTr" / f"{c}.nii.gz", d / "labelsTr" / "ghost.nii.gz")
    out["dataset: label without an image"] = (d, "ghost.nii.gz")
    d = variant("too-few-labels")  # an image without a label is unlabelled (the pool): 2 labelled are too few
    (d / "labelsTr" / f"{c}.nii.gz").unlink()
    out["dataset: too few labelled cases for the splits"] = (d, "at least 3 labelled cases")
    d = variant("shape-mismatch")
    label, affine = load_volume(d / "labelsTr" / f"{c}.nii.gz")
    save_volume(d / "labelsTr" / f"{c}.nii.gz", label[:-2], affine)
    out["dataset: label shape differs from image"] = (d, f"{c}")
    d = variant("bad-json")
    (d / "dataset.json").write_text('{"labels": {"background": 0,')
    out["dataset: dataset.json is not JSON"] = (d, "dataset.json")
    d = variant("no-labels")
    meta = json.loads((d / "dataset.json").read_text())
    meta.pop("labels")
    (d / "dataset.json").write_text(json.dumps(meta))
    out["dataset: dataset.json without labels"] = (d, "labels")
    d = variant("truncated")
    blob = (d / "imagesTr" / f"{c}_0000.nii.gz").read_bytes()
    (d / "imagesTr" / f"{c}_0000.nii.gz").write_bytes(blob[: len(blob) // 2])
    out["dataset: truncated NIfTI"] = (d, f"{c}_0000.nii.gz")
    d = variant("four-d")
    image, affine = load_volume(d / "imagesTr" / f"{c}_0000.nii.gz")
    save_volume(d / "imagesTr" / f"{c}_0000.nii.gz", np.stack([image, image], axis=-1), affine)
    out["dataset: 4D image (wrong dimensionality)"] = (d, "3D")
    d = variant("nan")
    image, affine = load_volume(d / "imagesTr" / f"{c}_0000.nii.gz")
    image = image.astype(np.float32)
    image[0, 0, 0] = np.nan
    save_volume(d / "imagesTr" / f"{c}_0000.nii.gz", image, affine)
    out["dataset: NaN in image"] = (d, "NaN")
    d = variant("undeclared-label")
    label, affine = load_volume(d / "labelsTr" / f"{c}.nii.gz")
    label = label.astype(np.uint8)
    label[0, 0, 0] = 77
    save_volume(d / "labelsTr" / f"{c}.nii.gz", label, affine)
    out["dataset: undeclared label value"] = (d, "77")
    d = variant("over-size-cap")
    header = nib.Nifti1Header()
    header.set_data_dtype(np.uint8)
    header.set_data_shape((1024, 1024, 1024))  # 2^30 voxels claimed by the header; refused before any data is read
    header.set_sform(np.eye(4), code=1)
    with gzip.open(d / "imagesTr" / f"{c}_0000.nii.gz", "wb") as f:
        f.write(header.binaryblock + b"\x00" * 4 + b"\x00" * 4096)
    out["dataset: image over the size cap"] = (d, "exceeds the cap")
    return out
