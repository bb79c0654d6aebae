"""Test-time refinement of answers that ignore clicks (saim.model.refine)."""

import time
from dataclasses import replace

import numpy as np
import torch

from saim.model.config import ModelConfig
from saim.model.encoding import Click, rasterize_clicks
from saim.model.predictor import InteractivePredictor
from saim.model.refine import _click_loss

RADIUS = 2


def _predictors(config, steps):
    """An untrained network and the same one refined. The cases below were set up on the clicks-only input (seed 0's
    weights, these images); refinement works on the features whatever the input channels, and on an untrained
    network whether a click is ignored depends on the draw, so the input stays the one they were set up on."""
    torch.manual_seed(0)
    plain = InteractivePredictor(replace(config, click_radius=RADIUS, refine_steps=0, box_prompts=False))
    refined = InteractivePredictor(replace(plain.config, refine_steps=steps), network=plain.network)
    return plain, refined


def _disk(y, x, size):
    yy, xx = np.ogrid[:size, :size]
    return (yy - y) ** 2 + (xx - x) ** 2 <= RADIUS**2


def test_an_ignored_click_is_followed_and_only_what_it_asks_changes(tiny_model_config):
    plain, refined = _predictors(tiny_model_config, steps=20)
    image = np.random.default_rng(0).random((1, 32, 32)).astype(np.float32)
    before = {k: v.clone() for k, v in plain.network.state_dict().items()}
    auto = plain.predict(image)[0]
    ys, xs = np.nonzero(auto != 1)
    click = Click(1, int(ys[len(ys) // 2]), int(xs[len(xs) // 2]), True)
    # honour_clicks sets the clicked pixel itself; around it the network's own answer decides
    ignored = plain.predict(image, [[click]])[0]
    followed = refined.predict(image, [[click]])[0]
    disk = _disk(click.y, click.x, 32)
    assert (followed[disk] == 1).sum() > (ignored[disk] == 1).sum()
    changed = followed != ignored
    assert changed.any() and (followed[changed] == 1).all()  # a positive click of class 1 only adds class 1
    assert all(torch.equal(before[k], v) for k, v in plain.network.state_dict().items())  # weights untouched


def test_a_negative_click_only_removes_its_class(tiny_model_config, monkeypatch):
    plain, refined = _predictors(tiny_model_config, steps=20)
    image = np.random.default_rng(1).random((1, 32, 32)).astype(np.float32)
    auto = plain.predict(image)[0]
    cls = int(np.bincount(auto.ravel(), minlength=3)[1:].argmax()) + 1
    with monkeypatch.context() as m:  # the network's own answers, without the clicked pixel set afterwards
        m.setattr("saim.model.predictor.honour_clicks", lambda probs, clicks: probs)
        click = next(
            c
            for y, x in zip(*np.nonzero(auto == cls), strict=True)
            if plain.predict(image, [[c := Click(cls, int(y), int(x), False)]])[0, y, x] == cls
        )
    ignored = plain.predict(image, [[click]])[0]
    followed = refined.predict(image, [[click]])[0]
    changed = followed != ignored
    assert changed.any() and (ignored[changed] == cls).all() and (followed[changed] != cls).all()


def test_followed_clicks_leave_the_answer_as_the_network_gave_it(tiny_model_config, monkeypatch):
    plain, refined = _predictors(tiny_model_config, steps=20)
    image = np.random.default_rng(2).random((2, 32, 32)).astype(np.float32)
    auto = plain.predict(image)
    clicks = []
    with monkeypatch.context() as m:  # one click each on a pixel the network's own answer gives class 1 with it
        m.setattr("saim.model.predictor.honour_clicks", lambda probs, clicks: probs)
        for i, labels in enumerate(auto):
            clicks.append(
                next(
                    [c]
                    for y, x in zip(*np.nonzero(labels == 1), strict=True)
                    if plain.predict(image[i : i + 1], [[c := Click(1, int(y), int(x), True)]])[0, y, x] == 1
                )
            )
    np.testing.assert_array_equal(refined.probabilities(image, clicks), plain.probabilities(image, clicks))


def test_the_loss_covers_the_clicked_pixel_or_the_disk_the_radius_asks_for():
    click = Click(1, 10, 12, True)
    logits = torch.zeros(1, 3, 32, 32)
    logits[:, 0] = 1.0  # background everywhere: the click's class disagrees on every pixel
    support = {}
    for radius in (0.0, float(RADIUS)):
        pos, neg = (m > 0.5 for m in rasterize_clicks([[click]], 2, 32, radius, "disk"))
        x = logits.clone().requires_grad_(True)
        _click_loss(x, pos, neg, torch.tensor([True])).backward()
        support[radius] = x.grad.abs().sum(1)[0] > 0
    assert np.argwhere(support[0.0].numpy()).tolist() == [[click.y, click.x]]
    np.testing.assert_array_equal(support[float(RADIUS)].numpy(), _disk(click.y, click.x, 32))


def test_models_saved_before_refinement_load_with_it_off(tiny_model_config):
    old = tiny_model_config.to_dict()
    del old["refine_steps"], old["refine_radius"]
    config = ModelConfig.from_dict(old)
    assert (config.refine_steps, config.refine_radius) == (0, 0.0)
    assert ModelConfig.from_dict(tiny_model_config.to_dict()).refine_steps == ModelConfig().refine_steps == 20


def test_a_clicks_refinement_stops_at_the_replicas_time_cap(tiny_model_config):
    """One person's refined click never holds the tensor thread (and so the next person's click) past the cap."""
    from saim.model.config import ServingConfig

    plain, _ = _predictors(tiny_model_config, steps=0)
    calls = []

    class SlowHead(torch.nn.Module):  # the decoder's output head, slowed down: one refinement step takes 50 ms
        def __init__(self, head):
            super().__init__()
            self.head = head

        def forward(self, x):
            calls.append(None)
            time.sleep(0.05)
            return self.head(x) * 0.0  # a network that never follows a click: every step is needed

    plain.network.segmentation_head = SlowHead(plain.network.segmentation_head)
    served = plain.serving(ServingConfig(refine_steps=200, click_time_cap_s=0.3))
    image = np.random.default_rng(3).random((1, 32, 32)).astype(np.float32)
    served.predict(image, [[Click(1, 16, 16, True)]])
    assert served.config.refine_steps == 200 and len(calls) < 20  # stopped by the cap (0.3 s), not by the steps


def test_the_replicas_serving_settings_win_over_the_versions_recommendation(tiny_model_config):
    from saim.model.config import ServingConfig
    from saim.registry.live import LiveModel
    from saim.registry.versions import ModelRegistry
    from tests.unit.fakes import MemoryStore

    registry = ModelRegistry(MemoryStore())
    recommended = replace(tiny_model_config, refine_steps=0, refine_radius=0.0)  # what the trainer's run stored
    registry.publish(InteractivePredictor(recommended), iteration=0)
    as_stored = LiveModel(registry, serving=ServingConfig())
    as_stored.load_current()
    assert as_stored.current.predictor.config.refine_steps == 0  # nothing set on the replica: the recommendation
    assert as_stored.current.predictor.config.refine_reach == tiny_model_config.refine_reach
    serving = ServingConfig(refine_steps=12, refine_radius=3.0, refine_reach="anywhere", click_time_cap_s=0.5)
    own = LiveModel(registry, serving=serving)
    own.load_current()
    served = own.current.predictor
    assert (served.config.refine_steps, served.config.refine_radius, served.refine_time_cap_s) == (12, 3.0, 0.5)
    assert served.config.refine_reach == "anywhere" and served.config.reach is None
    assert registry.metadata("v0000").raw["model_config"]["refine_steps"] == 0  # the version is not rewritten


def test_the_reach_keeps_the_refined_answer_near_the_clicks_only(tiny_model_config):
    """Anywhere, the refinement changes pixels far from the click; with a reach of 1.5 click radii every changed
    pixel lies within 3 px of the click, and there the answer is the one refined anywhere."""
    plain, refined = _predictors(tiny_model_config, steps=20)
    image = np.random.default_rng(0).random((1, 32, 32)).astype(np.float32)
    auto = plain.predict(image)[0]
    ys, xs = np.nonzero(auto != 1)
    click = Click(1, int(ys[len(ys) // 2]), int(xs[len(xs) // 2]), True)
    ignored = plain.predict(image, [[click]])[0]
    refined.config = replace(refined.config, refine_reach="anywhere")
    anywhere = refined.predict(image, [[click]])[0]
    refined.config = replace(refined.config, refine_reach=1.5)
    assert refined.config.reach == 3.0
    near = refined.predict(image, [[click]])[0]
    yy, xx = np.ogrid[:32, :32]
    within = (yy - click.y) ** 2 + (xx - click.x) ** 2 <= 3.0**2
    assert (anywhere != ignored)[~within].any()  # this network's refinement reaches beyond 3 px
    assert not (near != ignored)[~within].any()
    np.testing.assert_array_equal(near[within], anywhere[within])
    assert ModelConfig.from_dict({"classes": ["a"]}).reach is None  # a model saved before the reach: anywhere
