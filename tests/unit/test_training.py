import numpy as np
import pytest
import torch
import torch.nn.functional as F

from saim.model.config import ModelConfig
from saim.model.encoding import Click, encode, one_hot_foreground, paint_clicks, rasterize_clicks
from saim.training.augment import augment
from saim.training.config import TrainConfig
from saim.training.losses import class_weights, correction_weights, dice_loss, focal_loss
from saim.training.recipe import train_predictor
from saim.training.simulation import sample_error_clicks, simulate_interaction


def test_class_weights_median_frequency_balanced():
    labels = np.array([0] * 80 + [1] * 15 + [2] * 5)
    w = class_weights(labels, 3)
    # frequencies 0.8, 0.15, 0.05; median 0.15 -> raw 0.1875, 1, 3 -> normalised to mean 1
    raw = np.array([0.15 / 0.8, 1.0, 3.0])
    np.testing.assert_allclose(w, raw / raw.mean())
    assert w[2] > w[1] > w[0]


def test_class_weights_absent_class_gets_zero():
    w = class_weights(np.array([0, 0, 0, 1]), 3)
    assert w[2] == 0 and w[:2].mean() == pytest.approx(1.0)


def test_class_weight_power_damps_the_balancing():
    labels = np.array([0] * 80 + [1] * 15 + [2] * 5)
    raw = np.array([0.15 / 0.8, 1.0, 3.0]) ** 0.5
    np.testing.assert_allclose(class_weights(labels, 3, power=0.5), raw / raw.mean())
    assert class_weights(labels, 3, power=0.0) == pytest.approx(np.ones(3))


def test_dice_loss_is_zero_for_a_confident_correct_answer_and_one_for_a_disjoint_one():
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    target[:, 2:5, 2:5] = 1
    target[:, 5:7, 5:8] = 2
    right = F.one_hot(target, 3).permute(0, 3, 1, 2).float() * 50
    wrong = F.one_hot((target + 1) % 3, 3).permute(0, 3, 1, 2).float() * 50
    assert dice_loss(right, target).item() == pytest.approx(0.0, abs=1e-4)
    assert dice_loss(wrong, target).item() > 0.95


def test_focal_loss_with_gamma_zero_is_weighted_cross_entropy():
    torch.manual_seed(0)
    logits, target = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    w = torch.tensor([0.5, 1.0, 2.0])
    expected = (F.cross_entropy(logits, target, reduction="none") * w[target]).mean()
    assert focal_loss(logits, target, w, gamma=0.0).item() == pytest.approx(expected.item(), rel=1e-5)
    assert focal_loss(logits, target, w, gamma=2.0) < expected  # focusing down-weights easy pixels


def test_input_encoding_shapes_and_channel_order():
    k, s = 3, 16
    images = torch.rand(2, 1, s, s)
    pos, neg, prev = torch.zeros(2, k, s, s), torch.zeros(2, k, s, s), torch.zeros(2, k, s, s)
    pos[0, 1, 5, 5] = 1
    x = encode(images, pos, neg, prev)
    assert x.shape == (2, 1 + 3 * k, s, s)
    assert x[0, 1 + 1, 5, 5] == 1 and x[0, 1:].sum() == 1
    assert torch.equal(x[:, :1], images)  # the image channel as preprocessed (saim.data.intensity)
    boxes = torch.zeros(2, k, s, s)
    boxes[1, 2, 2:4, 2:4] = 1
    with_boxes = encode(images, pos, neg, prev, boxes)
    assert with_boxes.shape == (2, 1 + 4 * k, s, s) and torch.equal(with_boxes[:, : 1 + 3 * k], x)  # boxes come last
    assert with_boxes[1, 1 + 3 * k + 2, 2:4, 2:4].sum() == 4
    assert ModelConfig(classes=("a", "b", "c"), box_prompts=False).in_channels == 10
    assert ModelConfig(classes=("a", "b", "c")).in_channels == 13  # box prompts by default


def test_click_rasterisation_disk_and_gaussian():
    pos, neg = rasterize_clicks([[Click(cls=2, y=8, x=8, positive=False)], []], 2, 17, 3.0, "disk")
    assert pos.shape == neg.shape == (2, 2, 17, 17)
    assert neg[0, 1].sum() == 29  # lattice points with d^2 <= 9
    assert pos.sum() == 0 and neg[0, 0].sum() == 0 and neg[1].sum() == 0
    pos, _ = rasterize_clicks([[Click(cls=1, y=8, x=8, positive=True)]], 2, 17, 3.0, "gaussian")
    assert pos[0, 0, 8, 8] == pytest.approx(1.0) and 0 < pos[0, 0, 8, 12] < 1


@pytest.mark.parametrize("kind", ["disk", "gaussian"])
def test_windowed_rasterisation_equals_the_batched_painting_of_training(kind):
    """Inference stamps each click into its window; training paints batched clicks over the grid: same maps."""
    rng = np.random.default_rng(0)
    clicks = [
        [
            Click(int(rng.integers(1, 4)), int(rng.integers(0, 40)), int(rng.integers(0, 40)), bool(rng.integers(2)))
            for _ in range(6)
        ]
        for _ in range(2)
    ]
    pos, neg = rasterize_clicks(clicks, 3, 40, 2.5, kind)
    ref = [torch.zeros(2, 3, 40, 40), torch.zeros(2, 3, 40, 40)]
    for i, image_clicks in enumerate(clicks):
        for c in image_clicks:
            valid = torch.zeros(2, 3, dtype=torch.bool)
            valid[i, c.cls - 1] = True
            y, x = torch.full((2, 3), c.y), torch.full((2, 3), c.x)
            j = 0 if c.positive else 1
            ref[j] = paint_clicks(ref[j], y, x, valid, 2.5, kind)
    torch.testing.assert_close(pos, ref[0])
    torch.testing.assert_close(neg, ref[1])


def test_one_hot_foreground_drops_background():
    labels = torch.tensor([[[0, 1], [2, 2]]])
    oh = one_hot_foreground(labels, 2)
    assert oh.shape == (1, 2, 2, 2) and oh[0, 1].sum() == 2 and oh[0, 0, 0, 1] == 1


def _bright_square(n: int, size: int, rows: slice, cols: slice, cls: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n images with a bright square labelled `cls` on a dark background."""
    images = torch.zeros(n, 1, size, size)
    labels = torch.zeros(n, size, size, dtype=torch.long)
    images[:, :, rows, cols] = 1.0
    labels[:, rows, cols] = cls
    return images, labels


def test_augment_keeps_image_and_label_aligned():
    gen = torch.Generator().manual_seed(0)
    images, labels = _bright_square(16, 16, slice(2, 6), slice(3, 7), 1)
    aug_i, aug_l = augment(images, labels, gen, hflip=True)
    assert aug_i.shape == images.shape and aug_l.shape == labels.shape
    assert aug_i.min() >= 0 and aug_i.max() <= 1
    bright = aug_i[:, 0] > 0.5
    # flips move image and label together: the bright square still sits on the labelled pixels
    assert ((bright & (aug_l == 1)).sum(dim=(1, 2)) >= 12).all()


def test_spatial_augment_moves_image_and_label_together():
    gen = torch.Generator().manual_seed(0)
    images, labels = _bright_square(32, 32, slice(6, 18), slice(8, 20), 2)
    aug_i, aug_l = augment(images, labels, gen, hflip=True, spatial=True)
    assert set(aug_l.unique().tolist()) <= {0, 2}
    bright = aug_i[:, 0] > 0.5
    agree = (bright == (aug_l == 2)).float().mean(dim=(1, 2))
    assert (agree > 0.97).all()  # only border pixels may differ (bilinear image, nearest label)
    flips = [labels, labels.flip(-1), labels.flip(-2), labels.flip(-1).flip(-2)]
    transformed = torch.stack([(aug_l != f).flatten(1).any(1) for f in flips]).all(0)
    assert transformed.sum() >= 8  # about half the samples get an affine: no flip of the input explains them


def test_a_neighbours_label_is_augmented_with_its_slice():
    gen = torch.Generator().manual_seed(0)
    images, labels = _bright_square(32, 32, slice(6, 18), slice(8, 20), 2)
    aug_i, aug_l = augment(images, torch.stack([labels, labels], 1), gen, hflip=True, spatial=True)
    assert aug_l.shape == (labels.shape[0], 2, *labels.shape[1:])
    assert torch.equal(aug_l[:, 0], aug_l[:, 1])  # the same flips and affine for both maps


def test_propagation_samples_start_from_the_neighbours_ground_truth(tiny_model_config):
    """With p_propagation 1, every interactive sample's previous mask is its neighbour's label; half of them get no
    click (what Propagate asks of the model), the rest the click rounds that correct it."""
    mc, b, s = tiny_model_config, 64, tiny_model_config.image_size
    gen = torch.Generator().manual_seed(0)
    labels = torch.zeros(b, s, s, dtype=torch.long)
    labels[:, 8:20, 8:20] = 1
    neighbours = torch.zeros_like(labels)
    neighbours[:, 10:22, 6:18] = 1  # the structure moved a little from one slice to the next
    neighbours[:, 0:4, 0:4] = 2
    images = torch.randn(b, 1, s, s, generator=gen)
    tc = TrainConfig(p_no_clicks=0.0, p_propagation=1.0, click_rounds=0, p_box=0.0)
    net = torch.nn.Conv2d(mc.in_channels, mc.num_classes + 1, 1)
    has = torch.ones(b, dtype=torch.bool)
    has[:8] = False  # slices without a known neighbour are never carried
    x = simulate_interaction(net, images, labels, mc, tc, gen, neighbours, has)
    k = mc.num_classes
    clicks = x[:, 1 : 1 + 2 * k].flatten(1).abs().sum(1) > 0
    prev = x[:, 1 + 2 * k : 1 + 3 * k]
    carried = (prev == one_hot_foreground(neighbours, k)).flatten(1).all(1)
    assert carried[8:].all() and not carried[:8].any()
    silent = int((~clicks[8:]).sum())
    assert 10 <= silent <= 46  # about half of the 56 carried samples get no click at all; the rest are corrected
    plain = simulate_interaction(net, images, labels, mc, TrainConfig(p_no_clicks=0.0, p_propagation=0.0), gen)
    assert not (plain[:, 1 + 2 * k : 1 + 3 * k] == one_hot_foreground(neighbours, k)).flatten(1).all(1).any()


def test_sampled_clicks_fall_in_error_regions_with_the_right_sign():
    gen = torch.Generator().manual_seed(1)
    gt = torch.zeros(4, 2, 16, 16, dtype=torch.bool)
    pred = torch.zeros_like(gt)
    gt[:, 0, 2:8, 2:8] = True  # class 1 missed -> positive
    pred[:, 1, 10:14, 10:14] = True  # class 2 false -> negative
    y, x, valid, positive = sample_error_clicks(gt, pred, torch.ones(4, 2, dtype=torch.bool), gen)
    assert valid.all()
    assert positive[:, 0].all() and not positive[:, 1].any()
    assert ((y[:, 0] >= 2) & (y[:, 0] < 8) & (x[:, 0] >= 2) & (x[:, 0] < 8)).all()
    assert ((y[:, 1] >= 10) & (y[:, 1] < 14)).all()


def test_short_training_run_is_finite_and_deterministic(tiny_model_config):
    rng = np.random.default_rng(0)
    images = rng.random((6, 32, 32)).astype(np.float32)
    labels = np.zeros((6, 32, 32), np.uint8)
    labels[:, 8:16, 8:16] = 1
    labels[:, 20:28, 4:12] = 2
    tc = TrainConfig(epochs=2, steps_per_epoch=2, batch_size=4, seed=5)
    a = train_predictor(tiny_model_config, images, labels, tc)
    b = train_predictor(tiny_model_config, images, labels, tc)
    assert np.isfinite(a.stats["final_loss"]) and a.stats["steps"] == 4
    assert a.stats["loss_history"] == b.stats["loss_history"]
    np.testing.assert_allclose(a.predictor.probabilities(images[:2]), b.predictor.probabilities(images[:2]), atol=1e-6)


def test_finetune_starts_from_parent_weights(tiny_model_config):
    images = np.random.default_rng(0).random((4, 32, 32)).astype(np.float32)
    labels = np.zeros((4, 32, 32), np.uint8)
    labels[:, 4:12, 4:12] = 1
    parent = train_predictor(tiny_model_config, images, labels, TrainConfig(epochs=1, steps_per_epoch=1, batch_size=2))
    child = train_predictor(
        tiny_model_config,
        images,
        labels,
        TrainConfig(epochs=2, mode="finetune", finetune_epochs=1, steps_per_epoch=1, batch_size=2, lr=0.0),
        parent=parent.predictor,
    )
    assert child.stats["mode"] == "finetune" and child.stats["epochs"] == 1
    for (name, p), q in zip(
        parent.predictor.network.state_dict().items(), child.predictor.network.state_dict().values(), strict=True
    ):
        if p.dtype.is_floating_point and "running" not in name:
            torch.testing.assert_close(p, q)  # lr 0: the weights are the parent's


def test_correction_weights_fall_on_what_the_interactive_input_gets_wrong():
    k, s = 2, 8
    labels = torch.zeros(2, s, s, dtype=torch.long)
    labels[:, 2:6, 2:6] = 1
    prev = one_hot_foreground(torch.zeros(2, s, s, dtype=torch.long), k)  # previous mask misses the square
    pos, neg = rasterize_clicks([[Click(1, 4, 4, True)], []], k, s, radius=1, kind="disk")
    x = encode(torch.rand(2, 1, s, s), pos, neg, prev)
    w = correction_weights(x, labels, k, weight=4.0)
    assert torch.all(w[0][labels[0] == 1] == 5.0) and torch.all(w[0][labels[0] == 0] == 1.0)
    assert torch.all(w[1] == 1.0)  # no clicks: an automatic sample, no extra weight
    logits = torch.randn(2, k + 1, s, s)
    ones = torch.ones(k + 1)
    assert focal_loss(logits, labels, ones, 2.0, torch.ones(2, s, s)) == pytest.approx(
        focal_loss(logits, labels, ones, 2.0).item()
    )
