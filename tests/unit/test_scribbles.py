"""Scribbles (issue 28, item 3): the virtual user's scribble along an error region, as the model takes it (clicks
along the path), in training and in the evaluation."""

from dataclasses import replace

import numpy as np
import torch

from saim.data.slices import Series
from saim.model.clicks import scribble_clicks, scribble_points
from saim.model.config import ModelConfig
from saim.model.predictor import InteractivePredictor
from saim.training.config import TrainConfig
from saim.training.evaluation import evaluate
from saim.training.simulation import simulate_interaction, virtual_user_scribbles
from tests.unit.echo import echo_predictor


def test_the_scribble_runs_along_the_regions_long_axis_through_its_middle():
    region = np.zeros((32, 32), bool)
    region[10:14, 3:29] = True  # a band 4 rows high, 26 columns long
    points = scribble_points(region)
    assert all(region[y, x] for y, x in points)
    xs = [x for _, x in points]
    assert xs == sorted(xs) or xs == sorted(xs, reverse=True)  # in order along the path
    assert min(xs) == 3 and max(xs) == 28  # from one end to the other
    assert {y for y, _ in points} <= {11, 12}  # along the middle rows
    assert scribble_points(np.zeros((8, 8), bool)) == []


def test_a_scribble_is_clicks_a_radius_apart_with_both_ends():
    points = [(5, x) for x in range(0, 11)]
    clicks = scribble_clicks(points, 2, False, 3.0)
    assert [c.x for c in clicks] == [0, 3, 6, 9, 10]
    assert all(c.cls == 2 and not c.positive and c.y == 5 for c in clicks)


def test_training_scribbles_follow_the_errors_sign_and_class():
    labels = torch.zeros(2, 32, 32, dtype=torch.long)
    labels[:, 8:12, 4:28] = 1  # class 1, missed in sample 0
    pred = labels.clone()
    pred[0] = 0
    pred[1, 20:24, 4:28] = 2  # class 2 painted where there is none in sample 1
    allow = torch.ones(2, 2, dtype=torch.bool)
    drawn = virtual_user_scribbles(labels, pred, allow, 3.0)
    assert len(drawn[0]) >= 6 and all(c.cls == 1 and c.positive and 8 <= c.y < 12 for c in drawn[0])
    assert len(drawn[1]) >= 6 and all(c.cls == 2 and not c.positive and 20 <= c.y < 24 for c in drawn[1])


def test_with_p_scribble_one_the_click_channels_hold_strokes():
    mc = ModelConfig(classes=("a",), image_size=32, click_radius=2.0)
    gen = torch.Generator().manual_seed(0)
    labels = torch.zeros(8, 32, 32, dtype=torch.long)
    labels[:, 8:14, 2:30] = 1
    images = torch.randn(8, 1, 32, 32, generator=gen)
    net = torch.nn.Conv2d(mc.in_channels, 2, 1)  # answers background everywhere: the whole bar is missed
    with torch.no_grad():
        net.weight.zero_()
        net.bias.copy_(torch.tensor([1.0, -1.0]))
    tc = TrainConfig(p_no_clicks=0.0, p_propagation=0.0, p_scribble=1.0, click_rounds=0)
    x = simulate_interaction(net, images, labels, mc, tc, gen)
    clicked = x[:, 1:3].amax(1) > 0  # positive or negative, the one class
    widths = [int(clicked[i].any(0).sum()) for i in range(8) if clicked[i].any()]
    assert widths and max(widths) > 10  # a stroke, not a disk of 5 px
    single = simulate_interaction(net, images, labels, mc, replace(tc, p_scribble=0.0), gen)[:, 1:3].amax(1) > 0
    assert max(int(single[i].any(0).sum()) for i in range(8)) <= 5


def test_the_evaluation_reports_one_scribble_per_class_and_it_can_fall(monkeypatch):
    """A model that follows its clicks gains from the scribble; one that ignores them (with the clicked pixels not
    forced either) does not."""
    gt = np.zeros((2, 32, 32), np.uint8)
    gt[:, 6:12, 4:28] = 1
    series = [Series("s", np.zeros((2, 32, 32), np.float32), gt, np.arange(2), None)]
    config = ModelConfig(classes=("a",), image_size=32, click_radius=3.0)
    follows = evaluate(echo_predictor(config), series, 1, False)
    assert follows["scribble_miou"] > follows["miou"] + 0.3
    monkeypatch.setattr("saim.model.predictor.honour_clicks", lambda probs, clicks: probs)
    ignores = InteractivePredictor(replace(config, refine_steps=0), network=torch.nn.Conv2d(config.in_channels, 2, 1))
    torch.nn.init.zeros_(ignores.network.weight)
    torch.nn.init.zeros_(ignores.network.bias)
    with torch.no_grad():
        ignores.network.bias[0] = 1.0  # background everywhere, whatever the clicks
    result = evaluate(ignores, series, 1, False)
    assert result["scribble_miou"] == result["miou"] == 0.0
