"""Sampling metrics over k samples per question: avg@k, pass@k (unbiased), maj@k.

avg@k is the mean accuracy over all samples (the paper's "pass@1" averaged over k samples); pass@k uses
the unbiased estimator of Chen et al. (2021) so that pass@k for k < n samples is not biased upward;
maj@k is the accuracy of the equivalence-aware majority answer of the k samples.
"""

from __future__ import annotations

from collections.abc import Iterable
from math import comb


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of ``k`` samples drawn without replacement from ``n`` (``c`` correct) is
    correct: ``1 - C(n-c, k) / C(n, k)``."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def summarize(
    correct: list[list[bool]],
    majority_correct: list[bool],
    k: int | None = None,
    extra_pass_ks: Iterable[int] = (),
) -> dict[str, float]:
    """Aggregate per-question sample correctness into avg@k, pass@k and maj@k (fractions in [0, 1]).

    ``correct[i]`` holds question i's per-sample verdicts and ``majority_correct[i]`` whether its voted
    answer is right. ``k`` names the metrics (default: the fewest samples any question has). Each
    ``extra_pass_ks`` value j adds ``pass@j`` (the unbiased estimate from the same samples), so one run
    with n samples also reports the pass@1, pass@2, ... curve.
    """
    if not correct:
        return {}
    if len(majority_correct) != len(correct):
        raise ValueError(f"{len(correct)} questions but {len(majority_correct)} majority verdicts")
    if any(not row for row in correct):
        raise ValueError("every question needs at least one sample")
    n = min(len(row) for row in correct)
    k = k or n
    avg = sum(sum(row) / len(row) for row in correct) / len(correct)

    def mean_pass(j: int) -> float:
        return sum(pass_at_k(len(row), sum(row), min(j, len(row))) for row in correct) / len(correct)

    maj = sum(majority_correct) / len(majority_correct)
    out = {f"avg@{k}": avg, f"pass@{k}": mean_pass(k), f"maj@{k}": maj, "questions": float(len(correct))}
    for j in sorted(set(extra_pass_ks)):
        if 1 <= j <= n and f"pass@{j}" not in out:
            out[f"pass@{j}"] = mean_pass(j)
    return out


def pass_ks(n: int) -> list[int]:
    """The pass@k points worth reporting for ``n`` samples: powers of two below ``n`` (1, 2, 4, ...)."""
    out, j = [], 1
    while j < n:
        out.append(j)
        j *= 2
    return out
