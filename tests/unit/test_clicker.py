import numpy as np
import pytest

from saim.model.clicks import click_fidelity, click_overshoot, click_precision
from saim.model.config import ModelConfig
from saim.model.encoding import Click
from saim.training.metrics import dice_auc
from saim.training.virtual_user import VirtualUser, largest_error, next_click, worst_click


def test_missed_square_gets_positive_click_at_its_centre():
    gt = np.zeros((32, 32), np.uint8)
    gt[10:21, 4:15] = 1  # 11x11 square, centre (15, 9)
    pred = np.zeros_like(gt)
    assert next_click(gt, pred, 1) == Click(cls=1, y=15, x=9, positive=True)


def test_false_positive_gets_negative_click():
    gt = np.zeros((32, 32), np.uint8)
    pred = np.zeros_like(gt)
    pred[20:25, 20:25] = 2
    assert next_click(gt, pred, 2) == Click(cls=2, y=22, x=22, positive=False)


def test_largest_region_wins_and_border_counts_as_boundary():
    gt = np.zeros((40, 40), np.uint8)
    gt[0:3, 0:3] = 1  # small missed region in the corner
    gt[0:20, 20:40] = 1  # large region touching the top and right borders
    pred = np.zeros_like(gt)
    region = largest_error(gt, pred, 1)
    assert region.size == 400
    # farthest from the region boundary with the image border counted as boundary: the centre of the block
    assert (region.click.y, region.click.x) in {(9, 29), (9, 30), (10, 29), (10, 30)}
    assert region.depth == 10.0 and region.mask.sum() == 400


def test_an_error_regions_depth_tells_a_sliver_from_a_structure():
    """The depth the virtual annotator strokes by (tools/bench_annotate.py, at most 1.5 by default): 1 for a band one
    or two pixels wide, whatever its length; 2 for three; the half-width, rounded up, for a square."""
    gt = np.zeros((32, 32), np.uint8)
    pred = np.zeros_like(gt)
    gt[5, 2:30] = 1  # a missed border line
    assert largest_error(gt, pred, 1).depth == 1.0
    gt[6, 2:30] = 1
    assert largest_error(gt, pred, 1).depth == 1.0
    gt[7, 2:30] = 1
    assert largest_error(gt, pred, 1).depth == 2.0
    pred[10:21, 10:21] = 2  # a false 11x11 square
    assert largest_error(gt, pred, 2).depth == 6.0


def test_no_error_means_no_click():
    gt = np.zeros((16, 16), np.uint8)
    gt[4:8, 4:8] = 1
    assert next_click(gt, gt.copy(), 1) is None
    assert worst_click(gt, gt.copy(), 2) is None


def test_worst_click_picks_class_with_largest_error():
    gt = np.zeros((32, 32), np.uint8)
    gt[2:6, 2:6] = 1
    gt[10:30, 10:30] = 2
    c = worst_click(gt, np.zeros_like(gt), 2)
    assert c.cls == 2 and c.positive


class _EchoPredictor:
    """Predicts exactly the positive clicks' disks: enough to check the virtual user's loop mechanics."""

    def __init__(self):
        self.config = ModelConfig(classes=("a",), image_size=16)
        self.calls = 0

    def predict(self, images, clicks=None, prev_masks=None, boxes=None):
        self.calls += 1
        out = np.zeros(images.shape, np.uint8) if prev_masks is None else prev_masks.copy()
        for i, cl in enumerate(clicks or []):
            for c in cl:
                if c.positive:
                    out[i, max(0, c.y - 2) : c.y + 3, max(0, c.x - 2) : c.x + 3] = c.cls
        return out


def test_virtual_user_clicks_at_most_k_per_class_and_stops_when_done():
    gt = np.zeros((2, 16, 16), np.uint8)
    gt[0, 4:9, 4:9] = 1  # one 5x5 square: fixed by the first click
    images = np.zeros(gt.shape, np.float32)
    predictor = _EchoPredictor()
    result = VirtualUser(clicks_per_class=3).annotate(predictor, images, gt)
    assert (result.labels == gt).all()
    assert [len(c) for c in result.clicks] == [1, 0]
    assert result.click_counts == [[1, 0], [1, 0], [1, 0]]  # every round is kept, with the clicks it had
    assert predictor.calls == 2  # automatic prediction + one round; no further round once nothing is wrong


def test_number_of_clicks_counts_until_the_target_and_caps():
    from saim.training.virtual_user import number_of_clicks

    gt = np.zeros((3, 16, 16), np.uint8)
    gt[0, 4:9, 4:9] = 1  # fixed by one click of the echo predictor
    gt[1, 0:16, 0:16] = 1  # a full slice: each 5x5 click covers a little more, never 85 % within 2 clicks
    images = np.zeros(gt.shape, np.float32)
    noc = number_of_clicks(_EchoPredictor(), images, gt, targets=(0.85,), max_clicks=2)
    # slice 0: 1 click; slice 1: capped at 2; slice 2 has nothing to segment: not counted (it would be 0 clicks)
    assert noc[0.85] == (1 + 2) / 2
    assert np.isnan(number_of_clicks(_EchoPredictor(), images[2:], gt[2:], targets=(0.85,))[0.85])


def test_dice_auc_is_the_area_under_each_images_dice_over_five_click_rounds():
    """The CVPR 2025 interactive 3D challenge's DSC_AUC: trapezoids of width 1 under the Dice after clicks 1..5."""
    gt = np.zeros((2, 8, 8), np.uint8)
    gt[:, 2:4, 2:6] = 1  # 8 pixels of class 1 in both images
    miss, half, full = np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8), gt[0].copy()
    half[3:5, 2:6] = 1  # 8 pixels, 4 of them right: Dice 0.5
    rounds = [np.stack([a, full]) for a in (miss, half, full, full, full)]  # image 1: 0, .5, 1, 1, 1; image 2: 1s
    assert dice_auc(gt, rounds, 2) == pytest.approx((3.0 + 4.0) / 2)
    assert dice_auc(gt, rounds, 2) == pytest.approx(np.mean([np.trapezoid([0, 0.5, 1, 1, 1]), np.trapezoid([1] * 5)]))
    no_fg = np.zeros((1, 8, 8), np.uint8)
    assert np.isnan(dice_auc(no_fg, [no_fg] * 5, 2))  # nothing to segment: not scored


def test_click_fidelity_is_the_share_of_the_clicks_disk_the_answer_follows():
    gt = np.zeros((20, 20), np.uint8)
    gt[5:15, 5:15] = 1
    click = Click(cls=1, y=10, x=10, positive=True)
    assert click_fidelity(gt, gt, click, 3) == 1.0
    answer = gt.copy()
    answer[:10] = 0  # the disk's rows above the click (1 + 5 + 5 pixels) missed
    assert click_fidelity(answer, gt, click, 3) == pytest.approx(1 - 11 / 29)  # 29 pixels within radius 3
    assert click_fidelity(gt * 0, gt, Click(1, 1, 1, False), 2) == 1.0  # a negative click obeyed
    assert click_fidelity(gt, gt, Click(1, 10, 10, False), 2) is None  # the truth disagrees with every pixel


def test_an_answer_that_overshoots_scores_lower_fidelity_than_one_that_does_not():
    """Two answers to one positive click in a 10 x 10 square: one fills the square, one also paints the clicked class
    across the square's border (inside the disk) and far away. Recall alone cannot tell them apart."""
    gt = np.zeros((30, 30), np.uint8)
    gt[5:15, 5:15] = 1
    click = Click(cls=1, y=13, x=10, positive=True)  # two rows from the border: the disk of radius 4 crosses it
    right = gt.copy()
    over = gt.copy()
    over[15:18, 6:15] = 1  # across the border, within the disk
    over[20:28, 20:28] = 1  # far away
    before = np.zeros_like(gt)
    assert click_fidelity(right, gt, click, 4) == click_fidelity(over, gt, click, 4) == 1.0
    assert click_precision(right, gt, click, 4) == 1.0
    assert click_precision(over, gt, click, 4) < 0.85
    assert click_overshoot(before, right, gt, [click], 4) == 0.0
    # broken outside the disk (49 pixels within radius 4): the 64 far away and 14 of the 27 across the border
    assert click_overshoot(before, over, gt, [click], 4) == pytest.approx((64 + 14) / 49)
    negative = Click(cls=1, y=20, x=20, positive=False)
    assert click_precision(gt, gt, negative, 3) == 1.0  # background said where background is
    assert click_overshoot(over, over, gt, [], 3) is None
