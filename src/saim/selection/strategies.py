"""Data selection (paper §3.2): score the unannotated pool, pick N series.

A strategy is one small class: `score` gives each series a number, `pick` takes N of them (the top N unless the
strategy says otherwise). A strategy that picks per class (`per_class`) scores each series once per foreground class
(`score_classes`); the score table keeps those and hands them to `pick`. The selector (saim.selection.loop, through
saim.selection.scoring's table) and the emulation (saim.research.emulate) use the same classes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

import numpy as np

from saim.model.predictor import InteractivePredictor


class SelectionStrategy(ABC):
    name: str = "abstract"
    uses_model: bool = True  # False: scores need no forward pass (sharded scoring is not worth it)
    per_class: bool = False  # True: scored per foreground class (score_classes), picked from those

    @abstractmethod
    def score(self, predictor: InteractivePredictor, pool: Mapping[str, np.ndarray]) -> dict[str, float]:
        """Informativeness of each series (higher = annotate sooner). pool: case -> slices (S, H, W)."""

    def score_classes(self, predictor: InteractivePredictor, pool: Mapping[str, np.ndarray]) -> dict[str, list[float]]:
        """Per series, one score per foreground class (strategies with `per_class`)."""
        raise NotImplementedError(f"{self.name} scores series, not classes")

    def summary(self, class_scores: Sequence[float]) -> float:
        """The one number a per-class strategy's table shows for a series (the selector's status, the stored table)."""
        return float(np.sum(class_scores))

    def pick(
        self,
        scores: Mapping[str, float],
        n: int,
        class_scores: Mapping[str, Sequence[float]] | None = None,
        round: int = 1,
    ) -> list[str]:
        """The n series to annotate in selection round `round` (1, 2, ...): the n highest scores."""
        return top_n(scores, n)


class EntropyStrategy(SelectionStrategy):
    """Mean per-pixel entropy of the automatic prediction (no clicks), averaged over the series' slices."""

    name = "entropy"

    def score(self, predictor: InteractivePredictor, pool: Mapping[str, np.ndarray]) -> dict[str, float]:
        """The slices of all given series go through the network in shared batches (a series of 12 slices alone
        would fill a third of a batch of 32), then each series' slices are averaged."""
        cases = list(pool)
        if not cases:
            return {}
        per_slice = predictor.mean_entropy(np.concatenate([pool[c] for c in cases]))
        bounds = np.cumsum([len(pool[c]) for c in cases])[:-1]
        return {case: float(part.mean()) for case, part in zip(cases, np.split(per_slice, bounds), strict=True)}


class SampledStrategy(SelectionStrategy):
    """A strategy that draws its batch: each series as likely to be drawn as its score (a score below `floor`
    counts as `floor`). The draw happens at `pick`, from (seed, round) (weighted_sample), so a restarted selector
    or a pool scored in shards draws the same series."""

    floor: float = 1.0

    def __init__(self, seed: int = 0):
        self.seed = seed

    def pick(
        self,
        scores: Mapping[str, float],
        n: int,
        class_scores: Mapping[str, Sequence[float]] | None = None,
        round: int = 1,
    ) -> list[str]:
        return weighted_sample(scores, n, self.seed, round, self.floor)


class RandomStrategy(SampledStrategy):
    """Baseline: n series drawn uniformly at random; every series scores 1.0 (no forward pass)."""

    name = "random"
    uses_model = False

    def score(self, predictor: InteractivePredictor, pool: Mapping[str, np.ndarray]) -> dict[str, float]:
        return dict.fromkeys(pool, 1.0)


class ForegroundRandomStrategy(SampledStrategy):
    """Foreground-aware random (after nnActive, arXiv 2511.19183: the random baseline no method reliably beat): a
    random draw in which a series is as likely to come first as the model predicts foreground in it. The score is
    the series' predicted foreground share. A series where nothing is predicted keeps a small weight, so no series
    is never drawn."""

    name = "fg_random"
    floor = 1e-3

    def score(self, predictor: InteractivePredictor, pool: Mapping[str, np.ndarray]) -> dict[str, float]:
        return {case: float((predictor.predict(pool[case]) > 0).mean()) for case in pool}


class MCDropoutEntropyStrategy(SelectionStrategy):
    """Predictive entropy under Monte Carlo dropout (Gal and Ghahramani 2016): the mean over a series' slices of the
    per-pixel entropy of the mean of `passes` automatic predictions with dropout `p` on the decoder's input
    features (saim.model.predictor.InteractivePredictor.mc_dropout_entropy). Seeded per call, so a pool scored
    twice under one model scores the same."""

    name = "mc_dropout"
    PASSES, P = 5, 0.2

    def __init__(self, seed: int = 0, passes: int = PASSES, p: float = P):
        self.seed, self.passes, self.p = seed, passes, p

    def score(self, predictor: InteractivePredictor, pool: Mapping[str, np.ndarray]) -> dict[str, float]:
        cases = list(pool)
        if not cases:
            return {}
        slices = np.concatenate([pool[c] for c in cases])
        per_slice = predictor.mc_dropout_entropy(slices, self.passes, self.p, self.seed)
        bounds = np.cumsum([len(pool[c]) for c in cases])[:-1]
        return {case: float(part.mean()) for case, part in zip(cases, np.split(per_slice, bounds), strict=True)}


class ClassStratifiedPowerEntropyStrategy(SelectionStrategy):
    """Class-stratified, scheduled power predictive entropy, after ClaSP PE (Lüth, Traub et al., arXiv 2601.13677),
    as we read its description, for whole series instead of 3D patches:

    - **class-wise predictive entropy**: per series and foreground class, the mean over its slices of the per-pixel
      entropy weighted by the class's probability (InteractivePredictor.class_entropy): the uncertainty that
      belongs to that class;
    - **class-stratified**: the batch is filled class by class in turn (a class order drawn per round), each turn
      taking the not yet chosen series with the highest noisy score of that class, so a rare structure gets its
      share of the batch however little entropy it adds to a whole series;
    - **log-scale power noise on a decaying schedule**: the noisy score is log(score) + T x Gumbel noise, which
      draws series in proportion to score ** (1 / T) (power sampling, Kirsch et al. 2023); T = `noise` x
      `decay` ** (round - 1) falls from round to round (1, 0.5, 0.25, ... by default), from diverse early picks to
      greedy ones later.

    The noise is drawn at `pick` from (seed, round): a restarted selector picks the same series again."""

    name = "clasp_pe"
    per_class = True
    NOISE, DECAY = 1.0, 0.5
    FLOOR = 1e-12  # a class the model never predicts in a series: a score of (almost) nothing, never log(0)

    def __init__(self, seed: int = 0, noise: float = NOISE, decay: float = DECAY):
        if noise < 0 or not 0 < decay <= 1:
            raise ValueError(f"need noise >= 0 and 0 < decay <= 1, got {noise} and {decay}")
        self.seed, self.noise, self.decay = seed, noise, decay

    def temperature(self, round: int) -> float:
        return self.noise * self.decay ** max(0, round - 1)

    def score_classes(self, predictor: InteractivePredictor, pool: Mapping[str, np.ndarray]) -> dict[str, list[float]]:
        cases = list(pool)
        if not cases:
            return {}
        per_slice = predictor.class_entropy(np.concatenate([pool[c] for c in cases]))
        bounds = np.cumsum([len(pool[c]) for c in cases])[:-1]
        return {
            case: [float(v) for v in part.mean(axis=0)]
            for case, part in zip(cases, np.split(per_slice, bounds), strict=True)
        }

    def score(self, predictor: InteractivePredictor, pool: Mapping[str, np.ndarray]) -> dict[str, float]:
        return score_all(self, predictor, pool)[0]

    def pick(
        self,
        scores: Mapping[str, float],
        n: int,
        class_scores: Mapping[str, Sequence[float]] | None = None,
        round: int = 1,
    ) -> list[str]:
        cases = sorted(scores)
        if not class_scores or any(c not in class_scores for c in cases):  # a table stored without them
            return top_n(scores, n)
        table = np.array([class_scores[c] for c in cases], dtype=np.float64)  # (cases, K)
        rng = np.random.default_rng([self.seed, round])
        noisy = np.log(np.maximum(table, self.FLOOR)) + self.temperature(round) * rng.gumbel(size=table.shape)
        order = rng.permutation(table.shape[1])
        chosen: list[str] = []
        free = np.ones(len(cases), bool)
        while len(chosen) < min(n, len(cases)):
            k = order[len(chosen) % len(order)]
            i = int(np.argmax(np.where(free, noisy[:, k], -np.inf)))
            free[i] = False
            chosen.append(cases[i])
        return chosen


STRATEGIES: dict[str, type[SelectionStrategy]] = {
    "entropy": EntropyStrategy,
    "random": RandomStrategy,
    "fg_random": ForegroundRandomStrategy,
    "mc_dropout": MCDropoutEntropyStrategy,
    "clasp_pe": ClassStratifiedPowerEntropyStrategy,
}


def make_strategy(name: str, seed: int = 0) -> SelectionStrategy:
    if name not in STRATEGIES:
        raise ValueError(f"unknown selection strategy {name!r}; choose from {sorted(STRATEGIES)}")
    if name in ("random", "fg_random", "mc_dropout", "clasp_pe"):
        return STRATEGIES[name](seed)  # type: ignore[call-arg]
    return STRATEGIES[name]()


def score_all(
    strategy: SelectionStrategy, predictor: InteractivePredictor, pool: Mapping[str, np.ndarray]
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Each series' score and, for a strategy that picks per class, its per-class scores (else none): what a score
    table keeps (saim.selection.scoring) and what `pick` takes."""
    if strategy.per_class:
        per_class = strategy.score_classes(predictor, pool)
        return {case: strategy.summary(v) for case, v in per_class.items()}, per_class
    return strategy.score(predictor, pool), {}


def select(
    strategy: SelectionStrategy, predictor: InteractivePredictor, pool: Mapping[str, np.ndarray], n: int, round: int
) -> tuple[list[str], dict[str, float]]:
    """Score `pool` and pick n series in one process (the emulation; the selector keeps a score table between the
    two). Returns the picked series and every series' score."""
    scores, per_class = score_all(strategy, predictor, pool)
    return strategy.pick(scores, n, per_class or None, round), scores


def top_n(scores: Mapping[str, float], n: int) -> list[str]:
    """The n highest-scoring cases; ties broken by case id so the result is deterministic."""
    return [case for case, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def weighted_sample(weights: Mapping[str, float], n: int, seed: int, round: int, floor: float) -> list[str]:
    """n cases drawn without replacement, each in proportion to its weight (a weight below `floor` > 0 counts as
    `floor`), from a generator seeded by (seed, round): the same table and round give the same draw wherever it is
    made. Efraimidis and Spirakis: the key u ** (1 / w) with u uniform; the n highest keys are the sample (compared
    as log(u) / w, the same order without underflow)."""
    cases = sorted(weights)
    if not cases:
        return []
    draws = np.random.default_rng([seed, round]).random(len(cases))
    keys = {case: float(np.log(u) / max(weights[case], floor)) for case, u in zip(cases, draws, strict=True)}
    return top_n(keys, n)
