import math
from collections import Counter

import numpy as np
import pytest
import torch

from saim.model.config import ModelConfig
from saim.model.predictor import InteractivePredictor, pixel_entropy
from saim.selection.strategies import (
    ClassStratifiedPowerEntropyStrategy,
    EntropyStrategy,
    RandomStrategy,
    make_strategy,
    top_n,
    weighted_sample,
)


def test_uniform_probabilities_have_entropy_log_c():
    probs = torch.full((2, 5, 4, 4), 0.2)
    torch.testing.assert_close(pixel_entropy(probs), torch.full((2, 4, 4), math.log(5)))


def test_one_hot_probabilities_have_zero_entropy():
    probs = torch.zeros((1, 3, 4, 4))
    probs[:, 1] = 1.0
    torch.testing.assert_close(pixel_entropy(probs), torch.zeros(1, 4, 4))


def test_mean_entropy_on_the_device_matches_the_probabilities_it_comes_from():
    predictor = InteractivePredictor(ModelConfig(classes=("a", "b"), image_size=32, encoder="resnet18"))
    images = np.random.default_rng(0).random((5, 32, 32)).astype(np.float32)
    probs = predictor.probabilities(images, batch_size=2)
    expected = -(probs * np.log(np.clip(probs, 1e-12, 1))).sum(axis=1).reshape(5, -1).mean(axis=1)
    np.testing.assert_allclose(predictor.mean_entropy(images, batch_size=2), expected, rtol=1e-5)


def test_top_n_is_ordered_and_ties_break_by_case_id():
    assert top_n({"b": 0.5, "a": 0.5, "c": 0.9, "d": 0.1}, 3) == ["c", "a", "b"]


class _FixedProbs:
    """Per-slice probabilities by the slice's marker value: 0 -> confident, 1 -> a coin toss."""

    def __init__(self):
        self.calls = []

    def mean_entropy(self, slices):
        self.calls.append(len(slices))
        probs = np.zeros((len(slices), 2, 4, 4))
        for i, s in enumerate(slices):
            probs[i] = 0.5 if s.max() == 1 else np.stack([np.ones((4, 4)), np.zeros((4, 4))])
        return pixel_entropy(torch.as_tensor(probs)).flatten(1).mean(dim=1).numpy()


def test_entropy_strategy_scores_series_by_mean_over_slices():
    mixed = np.zeros((4, 4, 4))
    mixed[:1] = 1  # one unsure slice of four
    pool = {"sure": np.zeros((2, 4, 4)), "unsure": np.ones((3, 4, 4)), "mixed": mixed}
    predictor = _FixedProbs()
    scores = EntropyStrategy().score(predictor, pool)
    assert scores["sure"] == pytest.approx(0.0, abs=1e-9)
    assert scores["unsure"] == pytest.approx(math.log(2))
    assert scores["mixed"] == pytest.approx(math.log(2) / 4)
    assert top_n(scores, 1) == ["unsure"]
    assert predictor.calls == [9]  # the series' slices share the network's batches


def test_random_strategy_draws_at_pick_from_seed_and_round():
    """Scores need no model; the draw is uniform, the same for the same (seed, round) however the table was scored
    (whole or in shards, before or after a restart), and a new one in the next round."""
    pool = {f"c{i}": None for i in range(10)}
    strategy = RandomStrategy(3)
    scores = strategy.score(None, pool)
    assert scores == dict.fromkeys(pool, 1.0)
    shards = {**strategy.score(None, {c: None for c in list(pool)[:4]}), **RandomStrategy(3).score(None, pool)}
    first = strategy.pick(scores, 3, round=1)
    assert len(set(first)) == 3
    assert RandomStrategy(3).pick(shards, 3, round=1) == first
    assert strategy.pick(scores, 3, round=2) != first or strategy.pick(scores, 3, round=3) != first
    counts = Counter(c for r in range(1, 3001) for c in strategy.pick(scores, 1, round=r))
    assert min(counts.values()) > 220 and max(counts.values()) < 380  # uniform: 300 each out of 3000


class _Foreground:
    """A predictor whose answer is foreground exactly where the image is non-zero."""

    def predict(self, images):
        return (np.asarray(images) > 0).astype(np.uint8)


def test_foreground_aware_random_draws_series_in_proportion_to_their_predicted_foreground():
    """The score is the predicted foreground share; over many rounds the series with 4x the foreground comes first
    about 4x as often; one with none is still drawn, rarely; a round's draw is fixed by (seed, round)."""
    pool = {"much": np.zeros((2, 10, 10)), "little": np.zeros((2, 10, 10)), "none": np.zeros((2, 10, 10))}
    pool["much"][:, :4] = 1  # 40 % foreground
    pool["little"][:, :1] = 1  # 10 %
    strategy = make_strategy("fg_random", seed=7)
    scores = strategy.score(_Foreground(), pool)
    assert scores == pytest.approx({"much": 0.4, "little": 0.1, "none": 0.0})
    firsts = Counter(strategy.pick(scores, 1, round=r)[0] for r in range(1, 2001))
    assert 3.0 <= firsts["much"] / firsts["little"] <= 5.5  # 40 / 10: weighted, not uniform (which would give 1)
    assert firsts["none"] < 20
    assert make_strategy("fg_random", 7).pick(scores, 2, round=5) == strategy.pick(scores, 2, round=5)
    assert sorted(strategy.pick(scores, 5, round=1)) == ["little", "much", "none"]  # n beyond the pool: all of it


def test_weighted_sample_floors_small_weights_and_is_empty_for_an_empty_pool():
    assert weighted_sample({}, 3, seed=0, round=1, floor=1e-3) == []
    heavy = Counter(weighted_sample({"a": 0.0, "b": 1.0}, 1, seed=1, round=r, floor=0.5)[0] for r in range(2000))
    assert 0.25 < heavy["a"] / 2000 < 0.42  # weight 0 counts as 0.5 against 1: a third of the draws


def test_mc_dropout_entropy_is_seeded_and_without_dropout_is_the_entropy():
    from saim.errors import InvalidInput
    from tests.unit.echo import echo_predictor

    torch.manual_seed(0)
    predictor = InteractivePredictor(ModelConfig(classes=("a", "b"), image_size=32, encoder="resnet18"))
    images = np.random.default_rng(0).normal(size=(3, 32, 32)).astype(np.float32)
    plain = predictor.mean_entropy(images)
    np.testing.assert_allclose(predictor.mc_dropout_entropy(images, passes=3, p=0.0), plain, rtol=1e-5)
    once = predictor.mc_dropout_entropy(images, passes=4, p=0.3, seed=1)
    np.testing.assert_array_equal(predictor.mc_dropout_entropy(images, passes=4, p=0.3, seed=1), once)
    assert not np.allclose(once, plain)  # dropout changes the answers it averages
    np.testing.assert_array_equal(predictor.mean_entropy(images), plain)  # the hook is gone afterwards
    pool = {"x": images[:1], "yz": images[1:]}
    scores = make_strategy("mc_dropout", seed=1).score(predictor, pool)
    expected = make_strategy("mc_dropout", seed=1).score(predictor, pool)
    assert scores == expected and set(scores) == {"x", "yz"}
    with pytest.raises(InvalidInput, match="needs a network with a decoder"):
        echo_predictor(ModelConfig(classes=("a",), image_size=32)).mc_dropout_entropy(images, 2, 0.2)


def test_unknown_strategy_is_rejected():
    with pytest.raises(ValueError, match="unknown selection strategy"):
        make_strategy("mc-dropout-typo")


def test_class_entropy_is_the_entropy_split_by_class_probability():
    """Summed over classes with the background's share, the class-wise entropy is the mean entropy."""
    predictor = InteractivePredictor(ModelConfig(classes=("a", "b"), image_size=32, encoder="resnet18"))
    images = np.random.default_rng(1).random((3, 32, 32)).astype(np.float32)
    probs = predictor.probabilities(images)
    per_pixel = -(probs * np.log(np.clip(probs, 1e-12, 1))).sum(axis=1)
    expected = (per_pixel[:, None] * probs[:, 1:]).reshape(3, 2, -1).mean(axis=2)
    np.testing.assert_allclose(predictor.class_entropy(images, batch_size=2), expected, rtol=1e-4)


def _clasp_pick(class_scores, n, round=1, seed=0, **kwargs):
    strategy = make_strategy("clasp_pe", seed) if not kwargs else ClassStratifiedPowerEntropyStrategy(seed, **kwargs)
    scores = {c: strategy.summary(v) for c, v in class_scores.items()}
    return strategy.pick(scores, n, class_scores, round)


def test_clasp_pe_fills_the_batch_class_by_class():
    """Class 1's uncertainty dwarfs class 2's in every series: entropy would take only class-1 series; without noise
    ClaSP PE takes the best series of each class in turn."""
    class_scores = {
        "big1": [0.9, 0.0001],
        "big2": [0.8, 0.0002],
        "big3": [0.7, 0.0003],
        "small1": [0.01, 0.004],
        "small2": [0.01, 0.003],
    }
    assert top_n({c: sum(v) for c, v in class_scores.items()}, 2) == ["big1", "big2"]
    picked = _clasp_pick(class_scores, 2, noise=0.0)
    assert sorted(picked) == ["big1", "small1"]
    assert sorted(_clasp_pick(class_scores, 4, noise=0.0)) == ["big1", "big2", "small1", "small2"]


def test_clasp_pe_noise_decays_from_round_to_round_and_is_seeded():
    """Power noise: in round 1 (temperature 1) a series with half the score of the best is drawn first about a third
    of the time (scores 2:1 -> 1/3), by round 5 (temperature 1/16: 2^16 : 1) almost never; the same seed and round
    draw the same."""
    class_scores = {"best": [0.2], "half": [0.1]}
    strategy = make_strategy("clasp_pe", 0)
    assert [strategy.temperature(r) for r in (1, 2, 3)] == [1.0, 0.5, 0.25]

    def firsts(round):
        return sum(_clasp_pick(class_scores, 1, round, seed)[0] == "half" for seed in range(600)) / 600

    assert 0.25 <= firsts(1) <= 0.42
    assert firsts(5) < 0.01
    assert _clasp_pick(class_scores, 2, 1, seed=4) == _clasp_pick(class_scores, 2, 1, seed=4)


def test_clasp_pe_scores_per_class_through_the_pool_scoring_and_picks_from_the_table():
    """The selector's path: score_pool keeps the per-class scores in the table, the table hands them to the pick."""
    from saim.selection.scoring import ScoreTable

    table = ScoreTable(
        "v1", {"a": 1.0, "b": 0.5, "c": 0.2}, 0.0, 0, {}, {"a": [1.0, 0.0], "b": [0.5, 0.0], "c": [0.0, 0.2]}
    )
    strategy = ClassStratifiedPowerEntropyStrategy(0, noise=0.0)
    assert sorted(table.pick(strategy, {"a", "b", "c"}, 2, 1)) == ["a", "c"]
    assert table.pick(strategy, {"b", "c"}, 1, 1) in (["b"], ["c"])  # only candidates
    assert table.pick(EntropyStrategy(), {"a", "b", "c"}, 2, 1) == ["a", "b"]  # the top n for the others
    merged = ScoreTable("v0", {}, 0.0, 0).merged(table)
    assert merged.class_scores == table.class_scores
