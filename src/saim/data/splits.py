"""How a labelled dataset is split into test, validation, initial (pre-training) and pool series: the rule
(SplitRule), the split itself (Splits), and a splits JSON that fixes it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from saim.data.dataset import NnUNetDataset
from saim.errors import DatasetError
from saim.options import option


@dataclass(frozen=True)
class SplitRule:
    """How a labelled dataset is split into test, validation, initial (pre-training) and pool series."""

    test_fraction: float = option(0.15, "share of all series held out for testing")
    val_fraction: float = option(0.1, "share of all series for validation (the promotion gate)")
    pretrain_fraction: float | Literal["auto"] = option(
        0.1,
        "share of the remaining series annotated up front, or 'auto' (the emulation only: the paper's rule, the "
        "smallest initial set whose pre-trained model has every class above 0.5 IoU on validation, mIoU above 0.5 "
        "if none has)",
    )
    stratify: str | None = option(
        None,
        "a regular expression on the case name whose first group (or whole match) is the case's stratum, e.g. "
        "'ts_(ct|mr)_' for modality: test, validation and the initial set's order then mix the strata in proportion",
    )


SPLIT_NAMES = ("initial", "val", "test", "pool")


@dataclass(frozen=True)
class Splits:
    initial: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    pool: tuple[str, ...]

    def to_json(self) -> dict:
        return {k: list(v) for k, v in self.__dict__.items()}

    @classmethod
    def from_json(cls, d: dict) -> Splits:
        return cls(**{k: tuple(str(c) for c in d[k]) for k in SPLIT_NAMES})

    def all(self) -> set[str]:
        return set(self.initial) | set(self.val) | set(self.test) | set(self.pool)

    @property
    def labelled(self) -> tuple[str, ...]:
        return self.initial + self.val + self.test


def strata(cases: list[str], pattern: str) -> dict[str, str]:
    """Each case's stratum: the first group of `pattern` found in its name, or the whole match."""
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise DatasetError(f"stratify: {pattern!r} is not a regular expression ({exc})") from exc
    out = {}
    for case in cases:
        if (m := regex.search(case)) is None:
            raise DatasetError(f"stratify: case {case!r} does not match {pattern!r}")
        out[case] = m.group(1) if regex.groups else m.group(0)
    return out


def stratified_order(cases: list[str], seed: int, pattern: str) -> list[str]:
    """The cases shuffled within each stratum, then merged so that every prefix holds the strata in proportion
    (member i of a stratum of m sorts at (i + 1/2) / m): the test set, the validation set and the initial set, cut
    from the front, each get their share of every stratum."""
    rng = np.random.default_rng(seed)
    groups: dict[str, list[str]] = {}
    for case, stratum in sorted(strata(cases, pattern).items()):
        groups.setdefault(stratum, []).append(case)
    names = sorted(groups)
    tie = {name: rank for rank, name in enumerate(names[i] for i in rng.permutation(len(names)))}
    keyed = []
    for name in names:
        members = [groups[name][i] for i in rng.permutation(len(groups[name]))]
        keyed += [((i + 0.5) / len(members), tie[name], case) for i, case in enumerate(members)]
    return [case for *_, case in sorted(keyed)]


def make_splits(
    cases: list[str], seed: int, rule: SplitRule | None = None, unlabelled: list[str] | tuple[str, ...] = ()
) -> Splits:
    """The one split rule, for the services' import and the in-process emulation (saim.research.emulate.split_series).
    `cases` are labelled; `unlabelled` cases can only be in the pool."""
    rule = rule or SplitRule()
    if rule.stratify:
        shuffled = stratified_order(cases, seed, rule.stratify)
    else:
        order = np.random.default_rng(seed).permutation(len(cases))
        shuffled = [cases[i] for i in order]
    n = len(shuffled)
    if n < 3:
        raise DatasetError(f"need at least 3 labelled cases for the initial, validation and test sets, got {n}")
    n_test, n_val = max(1, round(rule.test_fraction * n)), max(1, round(rule.val_fraction * n))
    rest = shuffled[n_test + n_val :]
    reserve = 0 if unlabelled else 1  # a labelled-only pool keeps at least one case to select
    if rule.pretrain_fraction == "auto":  # the emulation grows the initial set from one series (saim.research.emulate)
        n_init = 1
    else:
        n_init = max(1, min(len(rest) - reserve, round(rule.pretrain_fraction * len(rest))))
    if n_init > len(rest):
        raise DatasetError(f"{n} labelled cases leave none for the initial set")
    return Splits(
        tuple(rest[:n_init]),
        tuple(shuffled[n_test : n_test + n_val]),
        tuple(shuffled[:n_test]),
        tuple(rest[n_init:]) + tuple(sorted(unlabelled)),
    )


def read_splits(path: Path | str, dataset: NnUNetDataset) -> Splits:
    """A splits JSON ({"initial": [...], "val": [...], "test": [...], "pool": [...]}) that fixes the split. The
    initial, validation and test cases need labels; every case of the dataset is in exactly one split."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: not a readable splits JSON ({exc})") from exc
    if not isinstance(raw, dict) or set(raw) != set(SPLIT_NAMES):
        raise DatasetError(f"{path}: expected exactly the keys {list(SPLIT_NAMES)}")
    splits = Splits.from_json(raw)
    named = [c for k in SPLIT_NAMES for c in raw[k]]
    if len(named) != len(set(named)):
        raise DatasetError(f"{path}: a case is named in more than one split")
    known = set(dataset.cases) | set(dataset.unlabelled)
    if set(named) != known:
        raise DatasetError(
            f"{path}: splits must name every case once; unknown {sorted(set(named) - known)}, "
            f"missing {sorted(known - set(named))}"
        )
    for name in ("initial", "val", "test"):
        if not getattr(splits, name):
            raise DatasetError(f"{path}: the {name} split is empty")
        unlabelled = sorted(set(getattr(splits, name)) - set(dataset.cases))
        if unlabelled:
            raise DatasetError(f"{path}: {name} cases need labels in labelsTr/: {unlabelled}")
    return splits
