"""The batched click rule on the model's device (saim.training.device_clicks) against the scipy rule it replaces
there (saim.model.clicks.largest_error, what the virtual user clicks at test time): the same clicks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from saim.training.device_clicks import connected_components, largest_error_clicks, squared_distance
from saim.training.simulation import virtual_user_clicks


def blobs(rng: np.random.Generator, b: int, size: int, k: int) -> torch.Tensor:
    """Label maps with smooth random structures of every class (later classes paint over earlier ones)."""
    out = np.zeros((b, size, size), np.int64)
    for i in range(b):
        for c in range(1, k + 1):
            field = ndimage.gaussian_filter(rng.random((size, size)), size / 16)
            out[i][field > np.quantile(field, 0.88)] = c
    return torch.from_numpy(out)


@pytest.mark.parametrize("seed", range(6))
def test_same_clicks_as_the_scipy_rule_on_random_masks(seed):
    rng = np.random.default_rng(seed)
    b, k = 4, 3
    for size in (17, 40, 64):
        gt = blobs(rng, b, size, k)
        pred = blobs(rng, b, size, k) if seed % 2 else torch.from_numpy(rng.integers(0, k + 1, (b, size, size)))
        allow = torch.from_numpy(rng.random((b, k)) < 0.8)
        expected = virtual_user_clicks(gt, pred, allow, batched=False)
        got = virtual_user_clicks(gt, pred, allow, batched=True)
        for name, e, g in zip(("y", "x", "valid", "positive"), expected, got, strict=True):
            assert torch.equal(e, g), (size, name, e.tolist(), g.tolist())
        assert expected[2].any()


def test_ties_break_as_the_scipy_rule_does():
    gt = torch.zeros(1, 12, 12, dtype=torch.long)
    pred = torch.zeros_like(gt)
    gt[0, 1:4, 1:4] = 1  # a missed 3x3 square ...
    pred[0, 7:10, 7:10] = 1  # ... and a false one of the same size: the missed one wins
    gt[0, 8:11, 1:4] = 2  # two missed squares of class 2 of one size: the first in raster order wins
    gt[0, 1:4, 7:10] = 2
    y, x, valid, positive = largest_error_clicks(gt, pred, torch.ones(1, 2, dtype=torch.bool))
    assert valid.tolist() == [[True, True]] and positive.tolist() == [[True, True]]
    assert (y.tolist(), x.tolist()) == ([[2, 2]], [[2, 8]])
    expected = virtual_user_clicks(gt, pred, torch.ones(1, 2, dtype=torch.bool), batched=False)
    assert [t.tolist() for t in expected] == [y.tolist(), x.tolist(), valid.tolist(), positive.tolist()]


def test_no_error_or_not_allowed_gives_no_click():
    gt = torch.zeros(2, 8, 8, dtype=torch.long)
    gt[:, 2:5, 2:5] = 1
    pred = gt.clone()
    pred[1, 0, 0] = 2  # sample 1: a false pixel of class 2, not allowed
    allow = torch.tensor([[True, True], [True, False]])
    _, _, valid, positive = largest_error_clicks(gt, pred, allow)
    assert not valid.any() and not positive.any()


def test_components_and_distances_match_scipy():
    rng = np.random.default_rng(7)
    values = blobs(rng, 3, 48, 2)
    roots = connected_components(values)
    for n in range(3):
        for c in (1, 2):
            regions, count = ndimage.label(values[n].numpy() == c)
            for r in range(1, count + 1):
                members = roots[n][torch.from_numpy(regions == r)]
                assert members.unique().numel() == 1  # one root per scipy component, and a different one per component
            assert roots[n][values[n] == c].unique().numel() == count
    region = torch.where(values > 0, values, 0)
    d2 = squared_distance(region)
    for n in range(3):
        for c in (1, 2):
            mask = (values[n] == c).numpy()
            expected = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1] ** 2
            assert np.allclose(d2[n].numpy()[mask], expected[mask])
