"""The CVPR 2025 interactive 3D challenge's measures (saim.training.evaluation.evaluate_cvpr) and the surface Dice
they use, on hand-made volumes."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from saim.data.slices import Series
from saim.model.config import ModelConfig
from saim.model.predictor import InteractivePredictor
from saim.training.evaluation import evaluate_cvpr, largest_error_3d
from saim.training.metrics import auc, surface_dice
from tests.unit.echo import echo_predictor


def _cube(shape=(6, 16, 16), lo=(1, 4, 4), hi=(5, 12, 12)) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    return m


def test_surface_dice_counts_surface_voxels_within_the_tolerance():
    cube = _cube()
    assert surface_dice(cube, cube, 0) == 1.0
    shifted = np.roll(cube, 1, axis=2)
    assert surface_dice(cube, shifted, 1.0) == 1.0  # every surface voxel within 1 voxel of the other surface
    assert 0 < surface_dice(cube, shifted, 0.0) < 1  # the faces across the shift are not on each other
    far = np.roll(cube, 6, axis=2)
    assert surface_dice(cube, far, 1.0) < surface_dice(cube, shifted, 0.0)  # farther apart scores lower
    assert surface_dice(cube, np.zeros_like(cube), 2.0) == 0.0
    assert surface_dice(np.zeros_like(cube), np.zeros_like(cube), 2.0) == 1.0


def test_auc_is_trapezoids_of_width_one():
    assert auc([0.5, 1.0, 1.0, 1.0, 1.0]) == pytest.approx(3.75)
    assert auc([1.0] * 5) == 4.0


def test_the_click_goes_to_the_middle_of_the_largest_3d_error_component():
    gt = _cube(shape=(12, 16, 16), lo=(1, 4, 4), hi=(11, 12, 12)).astype(np.uint8)  # 10 slices of 8 x 8
    pred = np.zeros_like(gt)
    pred[0, 0:2, 0:2] = 1  # a small extra region: smaller than the missed cube
    z, click = largest_error_3d(gt, pred, 1)
    assert click.positive and click.cls == 1
    assert 4 <= z <= 7 and click.y in (7, 8) and click.x in (7, 8)  # 4 voxels from every face of the block
    z, click = largest_error_3d(np.zeros_like(gt), gt, 1)
    assert not click.positive  # only extra voxels: a negative click
    assert largest_error_3d(gt, gt, 1) is None


class _Ignore(torch.nn.Module):
    """A network that answers background everywhere, whatever the clicks."""

    def forward(self, x):
        out = torch.zeros(x.shape[0], 2, *x.shape[2:])
        out[:, 0] = 5.0
        return out


def test_the_protocol_rewards_a_model_that_follows_clicks_and_not_one_that_ignores_them(monkeypatch):
    """Two cubes of one class in different slices: five rounds of one click each, placed on the largest remaining
    3D error. A model that paints each click's disk gains Dice and NSD round by round; one that ignores clicks
    (with the clicked voxel itself not forced either) stays at 0."""
    config = ModelConfig(classes=("a",), image_size=16, click_radius=3.0)
    gt = (_cube() | _cube(lo=(4, 1, 1), hi=(6, 3, 3))).astype(np.uint8)
    series = [Series("case", gt.astype(np.float32), gt, np.arange(len(gt)), None)]
    follow = evaluate_cvpr(echo_predictor(config), series)
    assert 0 < follow["cvpr_dice"] <= 1 and 0 < follow["cvpr_nsd"] <= 1
    assert 0 < follow["cvpr_dice_auc"] < 4 and 0 < follow["cvpr_nsd_auc"] < 4
    monkeypatch.setattr("saim.model.predictor.honour_clicks", lambda probs, clicks: probs)
    ignore = InteractivePredictor(replace(config, refine_steps=0), network=_Ignore())
    assert evaluate_cvpr(ignore, series) == {
        "cvpr_dice_auc": 0.0,
        "cvpr_nsd_auc": 0.0,
        "cvpr_dice": 0.0,
        "cvpr_nsd": 0.0,
    }
    empty = [Series("empty", gt.astype(np.float32), np.zeros_like(gt), np.arange(len(gt)), None)]
    assert evaluate_cvpr(echo_predictor(config), empty)["cvpr_dice"] is None  # no foreground: not scored
