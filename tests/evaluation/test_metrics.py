"""avg@k / pass@k / maj@k arithmetic: the unbiased pass@k estimator against its definitions."""

from __future__ import annotations

import itertools
import random
from fractions import Fraction
from math import comb, prod

import pytest

from corewarding.evaluation.metrics import pass_at_k, pass_ks, summarize


def brute_force_pass_at_k(verdicts: list[bool], k: int) -> Fraction:
    """Fraction of all k-subsets of the samples that contain at least one correct sample."""
    subsets = list(itertools.combinations(range(len(verdicts)), k))
    hits = sum(any(verdicts[i] for i in s) for s in subsets)
    return Fraction(hits, len(subsets))


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_equals_subset_enumeration(n):
    for c in range(n + 1):
        verdicts = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(float(brute_force_pass_at_k(verdicts, k)), abs=1e-12)


def test_pass_at_k_matches_closed_forms():
    # 1 - C(n-c, k)/C(n, k) written as Chen et al.'s numerically stable product
    for n, c, k in [(16, 3, 4), (64, 1, 8), (100, 37, 10), (8, 0, 8), (8, 8, 1), (200, 5, 100)]:
        stable = 1.0 if n - c < k else 1.0 - prod(1.0 - k / i for i in range(n - c + 1, n + 1))
        exact = 1 - Fraction(comb(n - c, k), comb(n, k))
        assert pass_at_k(n, c, k) == pytest.approx(stable, rel=1e-9, abs=1e-12)
        assert pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-12, abs=1e-15)
    # k = 1 is the plain accuracy, k = n is "any correct"
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(10, 1, 10) == 1.0
    assert pass_at_k(10, 0, 10) == 0.0


def test_pass_at_k_rejects_impossible_arguments():
    with pytest.raises(ValueError, match=r"need 0 <= c <= n, got n=4, c=5"):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError, match=r"need 0 <= c <= n, got n=4, c=-1"):
        pass_at_k(4, -1, 1)
    with pytest.raises(ValueError, match=r"need 1 <= k <= n, got k=5, n=4"):
        pass_at_k(4, 2, 5)
    with pytest.raises(ValueError, match=r"need 1 <= k <= n, got k=0, n=4"):
        pass_at_k(4, 2, 0)


def test_summarize_hand_computed():
    correct = [
        [True, False, False, False],  # 1/4 correct
        [True, True, True, False],  # 3/4
        [False, False, False, False],  # 0/4
    ]
    majority = [False, True, False]
    m = summarize(correct, majority, extra_pass_ks=[1, 2])
    assert m["questions"] == 3
    assert m["avg@4"] == pytest.approx((0.25 + 0.75 + 0.0) / 3)
    assert m["pass@4"] == pytest.approx((1 + 1 + 0) / 3)
    assert m["maj@4"] == pytest.approx(1 / 3)
    assert m["pass@1"] == pytest.approx(m["avg@4"])  # pass@1 is the mean accuracy
    # pass@2: 1 - C(3,2)/C(4,2) = 1/2 for c=1; 1 - 0 = 1 for c=3; 0 for c=0
    assert m["pass@2"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)


def test_summarize_random_rows_against_enumeration():
    rng = random.Random(0)
    correct = [[rng.random() < p for _ in range(6)] for p in (0.1, 0.5, 0.9, 0.3)]
    m = summarize(correct, [True, False, True, False], extra_pass_ks=pass_ks(6))
    for j in (1, 2, 4, 6):
        expected = sum(float(brute_force_pass_at_k(row, j)) for row in correct) / len(correct)
        assert m[f"pass@{j}"] == pytest.approx(expected)
    assert m["maj@6"] == 0.5


def test_summarize_edge_cases():
    assert summarize([], []) == {}
    with pytest.raises(ValueError, match="1 questions but 2 majority verdicts"):
        summarize([[True]], [True, False])
    with pytest.raises(ValueError, match=r"^every question needs at least one sample$"):
        summarize([[True], []], [True, False])


def test_extra_pass_ks_outside_the_samples_are_left_out():
    correct = [[True, False, False, False], [True, True, False, False]]
    m = summarize(correct, [False, True], extra_pass_ks=[0, 1, 4, 5, 99])
    assert sorted(m) == ["avg@4", "maj@4", "pass@1", "pass@4", "questions"]
    # with k below the sample count, pass@n is an extra point of its own, computed from all n samples
    m = summarize(correct, [False, True], k=2, extra_pass_ks=[4])
    assert sorted(m) == ["avg@2", "maj@2", "pass@2", "pass@4", "questions"]
    assert m["pass@4"] == 1.0
    assert m["pass@2"] == pytest.approx((0.5 + 5 / 6) / 2)  # 1 - C(3,2)/C(4,2); 1 - C(2,2)/C(4,2)
    assert pass_ks(1) == [] and pass_ks(8) == [1, 2, 4] and pass_ks(10) == [1, 2, 4, 8]
