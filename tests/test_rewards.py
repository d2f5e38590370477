import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from presrm.rewards import AGGREGATORS, aggregate, combine_with_outcome

CASES = [
    # scores, {aggregator: expected}
    ([0.9, 0.2, 0.8], {"min": 0.2, "mean": 1.9 / 3, "prod": 0.144, "last": 0.8, "gmean": 0.144 ** (1 / 3)}),
    ([0.5], {"min": 0.5, "mean": 0.5, "prod": 0.5, "last": 0.5, "gmean": 0.5}),
    ([1.0, 1.0, 1.0, 1.0], {"min": 1.0, "mean": 1.0, "prod": 1.0, "last": 1.0, "gmean": 1.0}),
    ([0.0, 1.0], {"min": 0.0, "mean": 0.5, "prod": 0.0, "last": 1.0, "gmean": 0.0}),
    ([1.0, 0.0], {"min": 0.0, "mean": 0.5, "prod": 0.0, "last": 0.0, "gmean": 0.0}),
    ([0.25, 0.25], {"min": 0.25, "mean": 0.25, "prod": 0.0625, "last": 0.25, "gmean": 0.25}),
    ([0.5] * 10, {"min": 0.5, "mean": 0.5, "prod": 0.5 ** 10, "last": 0.5, "gmean": 0.5}),  # prod punishes length
]


@pytest.mark.parametrize(("scores", "expected"), CASES)
@pytest.mark.parametrize("how", sorted(AGGREGATORS))
def test_aggregators(scores, expected, how):
    assert aggregate(scores, how) == pytest.approx(expected[how], abs=1e-12)
    assert AGGREGATORS[how](scores) == pytest.approx(expected[how], abs=1e-12)


def test_every_aggregator_has_cases():
    assert all(set(expected) == set(AGGREGATORS) for _, expected in CASES)


@pytest.mark.parametrize("how", sorted(AGGREGATORS))
@pytest.mark.parametrize(("scores", "match"), [
    ([], "empty"),
    ([0.5, 1.5], "outside"),
    ([-0.1], "outside"),
    ([0.5, math.nan], "outside"),
    ([math.inf], "outside"),
])
def test_aggregators_reject_bad_input(how, scores, match):
    with pytest.raises(ValueError, match=match):
        aggregate(scores, how)


def test_unknown_aggregator():
    with pytest.raises(ValueError, match="unknown aggregator 'median'"):
        aggregate([0.5], "median")


@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=30), st.sampled_from(sorted(AGGREGATORS)))
def test_aggregate_stays_in_range_and_below_max(scores, how):
    r = aggregate(scores, how)
    assert 0.0 <= r <= 1.0
    assert min(scores) - 1e-12 <= r or how == "prod"
    assert r <= max(scores) + 1e-12


@pytest.mark.parametrize(("reward", "correct", "weight", "expected"), [
    (0.6, True, 0.5, 0.8),
    (0.6, False, 0.5, 0.3),
    (0.6, None, 0.5, 0.6),  # unknown outcome: the process reward alone
    (0.6, True, 0.0, 0.6),
    (0.6, False, 1.0, 0.0),
    (0.6, True, 1.0, 1.0),
    (0.0, True, 0.25, 0.25),
    (1.0, False, 0.25, 0.75),
])
def test_combine_with_outcome(reward, correct, weight, expected):
    assert combine_with_outcome(reward, correct, weight) == pytest.approx(expected)


@pytest.mark.parametrize(("reward", "weight", "match"), [
    (1.2, 0.5, "process reward"),
    (-0.1, 0.5, "process reward"),
    (math.nan, 0.5, "process reward"),
    (0.5, 1.5, "weight"),
    (0.5, -0.5, "weight"),
    (0.5, math.nan, "weight"),
])
def test_combine_with_outcome_rejects_out_of_range(reward, weight, match):
    with pytest.raises(ValueError, match=match):
        combine_with_outcome(reward, True, weight)
