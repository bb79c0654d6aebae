"""The split rule (saim.data.splits.make_splits): seeded, and stratified by a pattern on the case name when asked."""

from collections import Counter

import pytest

from saim.data.splits import SplitRule, make_splits, strata
from saim.errors import DatasetError

CASES = [f"ts_ct_{i:03d}" for i in range(6)] + [f"ts_mr_{i:03d}" for i in range(4)]


def _modality(case: str) -> str:
    return case.split("_")[1]


def test_without_strata_the_split_is_the_seeded_shuffle():
    a, b = make_splits(CASES, 3), make_splits(CASES, 3)
    assert a == b and sorted(a.test + a.val + a.initial + a.pool) == sorted(CASES)
    assert make_splits(CASES, 4) != a


@pytest.mark.parametrize("seed", range(8))
def test_strata_are_mixed_in_proportion_in_test_and_the_initial_order(seed):
    rule = SplitRule(pretrain_fraction="auto", stratify="ts_(ct|mr)_")
    sp = make_splits(CASES, seed, rule)
    assert sorted(sp.test + sp.val + sp.initial + sp.pool) == sorted(CASES)
    assert Counter(map(_modality, sp.test)) == {"ct": 1, "mr": 1}  # 2 of 10 test cases: one of each
    order = sp.initial + sp.pool  # the order the auto rule grows the initial set in
    assert {_modality(c) for c in order[:2]} == {"ct", "mr"}
    assert make_splits(CASES, seed, rule) == sp  # seeded


def test_strata_come_from_the_first_group_or_the_whole_match():
    assert strata(["a_ct_1", "b_mr_2"], r"_(ct|mr)_") == {"a_ct_1": "ct", "b_mr_2": "mr"}
    assert strata(["a_ct_1", "b_mr_2"], r"ct|mr") == {"a_ct_1": "ct", "b_mr_2": "mr"}
    with pytest.raises(DatasetError, match="'c_pet_3' does not match"):
        strata(["a_ct_1", "c_pet_3"], r"_(ct|mr)_")
    with pytest.raises(DatasetError, match="not a regular expression"):
        make_splits(CASES, 0, SplitRule(stratify="ts_(ct"))
