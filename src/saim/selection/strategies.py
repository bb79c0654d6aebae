"""Data selection (paper §3.2): score the unannotated pool, pick the top N series.

A strategy is one small class with one method, `score`; new criteria (MC-dropout, representativeness, external
metadata) plug in beside these.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping

import numpy as np

from saim.model.predictor import InteractivePredictor


class SelectionStrategy(ABC):
    name: str = "abstract"
    uses_model: bool = True  # False: scores need no forward pass (sharded scoring is not worth it)

    @abstractmethod
    def score(self, predictor: InteractivePredictor, pool: Mapping[str, np.ndarray]) -> dict[str, float]:
        """Informativeness of each series (higher = annotate sooner). pool: case -> slices (S, H, W)."""


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


class RandomStrategy(SelectionStrategy):
    """Baseline: uniform random scores from a seeded generator (a new draw each call)."""

    name = "random"
    uses_model = False

    def __init__(self, seed: int = 0):
        self._rng = np.random.default_rng(seed)

    def score(self, predictor: InteractivePredictor, pool: Mapping[str, np.ndarray]) -> dict[str, float]:
        draws = self._rng.random(len(pool))
        return {case: float(v) for case, v in zip(sorted(pool), draws, strict=True)}


class ForegroundRandomStrategy(SelectionStrategy):
    """Foreground-aware random (after nnActive, arXiv 2511.19183: the random baseline no method reliably beat): a
    random draw in which a series is as likely to come first as the model predicts foreground in it. Weighted
    sampling without replacement (Efraimidis and Spirakis): the key u ** (1 / w) with u uniform and w the series'
    predicted foreground share; the n highest keys are a weighted sample of n series. A series where nothing is
    predicted keeps a small weight, so no series is never drawn."""

    name = "fg_random"
    MIN_WEIGHT = 1e-3

    def __init__(self, seed: int = 0):
        self._rng = np.random.default_rng(seed)

    def score(self, predictor: InteractivePredictor, pool: Mapping[str, np.ndarray]) -> dict[str, float]:
        cases = sorted(pool)
        if not cases:
            return {}
        shares = [float((predictor.predict(pool[c]) > 0).mean()) for c in cases]
        draws = self._rng.random(len(cases))
        return {
            case: float(np.log(u) / max(w, self.MIN_WEIGHT))  # log of u ** (1 / w): the same order, no underflow
            for case, u, w in zip(cases, draws, shares, strict=True)
        }


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


STRATEGIES: dict[str, type[SelectionStrategy]] = {
    "entropy": EntropyStrategy,
    "random": RandomStrategy,
    "fg_random": ForegroundRandomStrategy,
    "mc_dropout": MCDropoutEntropyStrategy,
}


def make_strategy(name: str, seed: int = 0) -> SelectionStrategy:
    if name not in STRATEGIES:
        raise ValueError(f"unknown selection strategy {name!r}; choose from {sorted(STRATEGIES)}")
    if name in ("random", "fg_random", "mc_dropout"):
        return STRATEGIES[name](seed)  # type: ignore[call-arg]
    return STRATEGIES[name]()


def top_n(scores: Mapping[str, float], n: int) -> list[str]:
    """The n highest-scoring cases; ties broken by case id so the result is deterministic."""
    return [case for case, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]
