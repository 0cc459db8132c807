"""The math-verify comparison itself. Runs only inside the worker processes of ``corewarding.answers.pool``.

It lives apart from the parent-side code so that the parent never imports sympy / math-verify (the pool
refers to ``compare`` by name), and so the forkserver can preload it once for every worker it forks.

math-verify's own timeouts use ``signal.alarm``, which cannot interrupt a long C-level computation
(``9^{9^{9}}`` is a single big-integer power inside CPython), so they are disabled here: the parent
kills a worker that overruns its deadline. A magnitude guard catches the commonest hostile case, a
numeric power tower or a huge factorial, before sympy tries to evaluate it, so it costs a parse and not
a timeout.
"""

from __future__ import annotations

import logging
import math
from functools import lru_cache

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
from sympy import Basic, Float, Integer, Pow, Rational, factorial, factorial2, preorder_traversal

from corewarding.answers.extraction import braces_balanced

# Timeouts are the parent's job (see module docstring); math-verify's reminder of that is noise here.
logging.getLogger("math_verify").setLevel(logging.ERROR)

_EXTRACTION = (LatexExtractionConfig(), ExprExtractionConfig())
# A number with more decimal digits than this is not a plausible answer and not something to evaluate.
MAX_DIGITS = 10_000
# A factorial argument above this has more than MAX_DIGITS digits.
_MAX_FACTORIAL_ARG = 3_000
# Expressions with more nodes than this are not answers either; walking them costs time for nothing.
_MAX_NODES = 5_000


def compare(pred: str, gold: str) -> bool:
    """Whether ``pred`` is mathematically equivalent to ``gold`` according to math-verify."""
    parsed_gold = parse_answer(gold)
    parsed_pred = parse_answer(pred)
    if not parsed_gold or not parsed_pred:
        return False
    return bool(verify(list(parsed_gold), list(parsed_pred), timeout_seconds=None))


def warm_up() -> None:
    """Run one comparison of each common kind so the first real one is not slowed by lazy set-up
    (the LaTeX grammar, sympy's caches). Called by the worker before it reports ready."""
    compare("\\frac{1}{2}", "0.5")
    compare("(1, 2]", "(1,2]")
    compare("x^2+1", "1+x^2")
    parse_answer.cache_clear()


@lru_cache(maxsize=8192)
def parse_answer(answer: str) -> tuple:
    """math-verify's parse of a bare answer; empty when it does not parse or is too large to evaluate.

    A bare answer is wrapped in ``\\boxed{}`` so math-verify's boxed extraction takes it whole (``$...$``
    when its braces are unbalanced and a box would be malformed). Cached because voting compares the same
    strings many times.
    """
    wrapped = f"\\boxed{{{answer}}}" if braces_balanced(answer) else f"${answer}$"
    parsed = parse(wrapped, extraction_config=_EXTRACTION, parsing_timeout=None)
    if any(isinstance(p, Basic) and too_large(p) for p in parsed):
        return ()
    return tuple(parsed)


def too_large(expr: Basic) -> bool:
    """Whether ``expr`` contains a number too large (or small) to evaluate: ``9^{9^{9}}``, ``10^{10^6}``,
    ``5000!``, or has more nodes than any answer would."""
    for count, node in enumerate(preorder_traversal(expr)):
        if count > _MAX_NODES:
            return True
        if isinstance(node, Pow) and node.is_number:
            log = _log10_abs(node)
            if log is not None and abs(log) > MAX_DIGITS:
                return True
        elif isinstance(node, factorial | factorial2) and node.args[0].is_number:
            log = _log10_abs(node.args[0])
            if log is not None and log > math.log10(_MAX_FACTORIAL_ARG):
                return True
    return False


def _log10_abs(x: Basic) -> float | None:
    """Estimate of ``log10(|x|)`` without evaluating ``x``; ``None`` where no cheap estimate exists.

    Handles the shapes a power tower is made of (integers, rationals, floats, powers of them, products,
    sums) in floating point, so ``9^{9^{9^{9}}}`` costs microseconds instead of the lifetime of the
    universe.
    """
    if isinstance(x, Integer):
        return _log10_int(int(x))
    if isinstance(x, Rational):
        return _log10_int(int(x.p)) - _log10_int(int(x.q))
    if isinstance(x, Float):
        value = abs(float(x))
        return math.log10(value) if value > 0 else -math.inf
    if isinstance(x, Pow):
        base_log = _log10_abs(x.base)
        exp_log = _log10_abs(x.exp)
        if base_log is None or exp_log is None:
            return None
        if base_log == 0 or base_log == -math.inf:
            return base_log
        if exp_log > 15:  # the exponent alone has more than 15 digits
            return math.inf
        try:
            exponent = float(x.exp)
        except (TypeError, ValueError, OverflowError):
            return None
        return exponent * base_log
    if x.is_Mul or x.is_Add:
        logs = [_log10_abs(arg) for arg in x.args]
        if any(log is None for log in logs):
            return None
        return sum(logs) if x.is_Mul else max(logs)  # type: ignore[arg-type]
    return None


def _log10_int(value: int) -> float:
    value = abs(value)
    if value == 0:
        return -math.inf
    if value.bit_length() < 1000:
        return math.log10(value)
    return value.bit_length() * math.log10(2)
