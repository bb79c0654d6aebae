"""Box prompts (issue 28, item 3): the encoding, what the predictor accepts, what training simulates and what the
evaluation reports."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from saim.data.slices import Series
from saim.errors import InvalidInput
from saim.model.clicks import Box, Click, box_around
from saim.model.config import ModelConfig
from saim.model.encoding import one_hot_foreground
from saim.model.predictor import InteractivePredictor
from saim.training.config import TrainConfig
from saim.training.evaluation import evaluate
from saim.training.simulation import jittered_boxes, simulate_interaction


class BoxNet(torch.nn.Module):
    """Answers each class exactly inside its box channel (background elsewhere): it shows what reaches the network."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.k = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        boxes = x[:, 1 + 3 * self.k : 1 + 4 * self.k]
        return torch.cat([torch.full_like(boxes[:, :1], 0.5), boxes], dim=1)


CONFIG = ModelConfig(classes=("a", "b"), image_size=16, refine_steps=0, box_prompts=True)


def test_the_tight_box_around_a_class_and_its_margin_stays_on_the_slice():
    labels = np.zeros((16, 16), np.uint8)
    labels[3:7, 10:16] = 2
    assert box_around(labels, 2) == Box(2, 3, 10, 6, 15)
    assert box_around(labels, 2, margin=2) == Box(2, 1, 8, 8, 15)
    assert box_around(labels, 1) is None


def test_a_box_reaches_the_network_as_its_class_channel():
    predictor = InteractivePredictor(CONFIG, network=BoxNet(2))
    images = np.zeros((2, 16, 16), np.float32)
    answer = predictor.predict(images, boxes=[[Box(1, 2, 3, 5, 8)], [Box(2, 0, 0, 15, 1)]])
    expected = np.zeros((2, 16, 16), np.uint8)
    expected[0, 2:6, 3:9] = 1
    expected[1, :, 0:2] = 2
    np.testing.assert_array_equal(answer, expected)
    assert not predictor.predict(images).any()  # no box: an empty box channel


class FloodNet(torch.nn.Module):
    """Answers class 1 everywhere, class 2 as the runner-up: what a box must bound."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        return torch.tensor([0.0, 3.0, 2.0]).view(1, 3, 1, 1).expand(b, 3, h, w).clone()


def test_a_box_bounds_its_class_unless_a_positive_click_of_the_class_lies_outside_it():
    predictor = InteractivePredictor(CONFIG, network=FloodNet())
    images = np.zeros((1, 16, 16), np.float32)
    assert (predictor.predict(images) == 1).all()  # no box: class 1 everywhere
    probs = predictor.probabilities(images, boxes=[[Box(1, 2, 3, 5, 8)]])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)  # still probabilities
    answer = probs.argmax(axis=1)[0]
    assert (answer[2:6, 3:9] == 1).all()
    outside = np.ones((16, 16), bool)
    outside[2:6, 3:9] = False
    assert (answer[outside] == 2).all()  # class 1's share went to the others in proportion: class 2 next
    both = predictor.predict(images, boxes=[[Box(1, 2, 3, 5, 8), Box(2, 0, 0, 1, 1)]])[0]
    assert (both[2:6, 3:9] == 1).all() and (both[:2, :2] == 2).all()
    assert (both[outside & (np.arange(16)[:, None] > 1)] == 0).all()  # neither class outside its box: background
    inside_click = predictor.predict(images, [[Click(1, 3, 4, True)]], boxes=[[Box(1, 2, 3, 5, 8)]])[0]
    assert (inside_click[outside] == 2).all()  # a click in the box keeps the bound
    outside_click = predictor.predict(images, [[Click(1, 12, 12, True)]], boxes=[[Box(1, 2, 3, 5, 8)]])[0]
    assert (outside_click == 1).all()  # the person's click says the box was not the whole structure


def test_boxes_are_checked_and_a_model_without_box_prompts_refuses_them():
    predictor = InteractivePredictor(CONFIG, network=BoxNet(2))
    images = np.zeros((1, 16, 16), np.float32)
    with pytest.raises(InvalidInput, match="box class 3 is not a foreground class"):
        predictor.predict(images, boxes=[[Box(3, 0, 0, 2, 2)]])
    with pytest.raises(InvalidInput, match=r"box \(5, 0\)-\(2, 2\) is not a box within the 16x16 slice"):
        predictor.predict(images, boxes=[[Box(1, 5, 0, 2, 2)]])
    old = InteractivePredictor(replace(CONFIG, box_prompts=False))
    with pytest.raises(InvalidInput, match="trained without box prompts"):
        old.predict(images, boxes=[[Box(1, 0, 0, 2, 2)]])
    assert ModelConfig.from_dict({"classes": ["a"]}).box_prompts is False  # a model saved before boxes existed


def test_training_boxes_surround_each_present_class_within_the_jitter():
    gen = torch.Generator().manual_seed(0)
    gt = torch.zeros(200, 2, 32, 32, dtype=torch.bool)
    gt[:, 0, 8:18, 4:24] = True  # 10 rows, 20 columns: up to 1 and 2 px of jitter
    y0, x0, y1, x1, present = jittered_boxes(gt, gen)
    assert present[:, 0].all() and not present[:, 1].any()
    for v, true, reach in ((y0, 8, 1), (y1, 17, 1), (x0, 4, 2), (x1, 23, 2)):
        assert (v[:, 0] - true).abs().max() <= reach
        assert (v[:, 0] != true).any()  # the sides do move


def test_with_p_box_one_every_interactive_sample_gets_boxes_and_half_of_them_no_clicks():
    mc = replace(CONFIG, image_size=32)
    b, s, k = 64, 32, 2
    gen = torch.Generator().manual_seed(0)
    labels = torch.zeros(b, s, s, dtype=torch.long)
    labels[:, 8:20, 8:20] = 1
    images = torch.randn(b, 1, s, s, generator=gen)
    net = torch.nn.Conv2d(mc.in_channels, k + 1, 1)
    tc = TrainConfig(p_no_clicks=0.0, p_propagation=0.0, p_box=1.0, click_rounds=0)
    x = simulate_interaction(net, images, labels, mc, tc, gen)
    assert x.shape == (b, 1 + 4 * k, s, s)
    boxes = x[:, 1 + 3 * k :]
    gt = one_hot_foreground(labels, k)
    assert (boxes[:, 0] >= gt[:, 0]).flatten(1).float().mean(1).min() > 0.8  # the box covers most of its class
    assert not boxes[:, 1].any()  # no box for an absent class
    clicks = x[:, 1 : 1 + 2 * k].flatten(1).abs().sum(1) > 0
    assert 16 <= int((~clicks).sum()) <= 48  # about half answer the box alone
    plain = simulate_interaction(net, images, labels, mc, replace(tc, p_box=0.0), gen)
    assert not plain[:, 1 + 3 * k :].any()


def test_the_evaluation_reports_one_box_and_box_plus_clicks_for_a_box_model_only():
    """A network that answers each box exactly scores 1 on rectangular structures; the figure falls with a network
    that ignores boxes, and a model without box prompts reports none."""
    gt = np.zeros((2, 16, 16), np.uint8)
    gt[:, 2:6, 2:9] = 1
    gt[1, 10:14, 10:15] = 2
    series = [Series("s", np.zeros((2, 16, 16), np.float32), gt, np.arange(2), None)]
    boxed = evaluate(InteractivePredictor(CONFIG, network=BoxNet(2)), series, 1, False)
    assert boxed["box_miou"] == pytest.approx(1.0) and boxed["box_click_miou"] == pytest.approx(1.0)
    ignoring = InteractivePredictor(CONFIG, network=torch.nn.Conv2d(CONFIG.in_channels, 3, 1))
    torch.nn.init.zeros_(ignoring.network.weight)  # background everywhere, whatever the inputs: the bound adds no class
    with torch.no_grad():
        ignoring.network.bias.copy_(torch.tensor([1.0, 0.0, 0.0]))
    assert evaluate(ignoring, series, 1, False)["box_miou"] < 0.5
    assert "box_miou" not in evaluate(InteractivePredictor(replace(CONFIG, box_prompts=False)), series, 1, False)
