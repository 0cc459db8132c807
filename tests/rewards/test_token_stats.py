"""Token entropy and self-certainty against direct computations on small logits."""

from __future__ import annotations

import math

import pytest
import torch

from corewarding.rewards.token_stats import masked_mean_per_row, token_entropy, token_self_certainty


def _logits(seed: int = 0, shape=(2, 3, 7)) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 3


def test_entropy_matches_categorical_entropy():
    logits = _logits()
    expected = torch.distributions.Categorical(logits=logits).entropy()
    got = token_entropy(logits)
    assert got.shape == (2, 3) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected.float(), atol=1e-5, rtol=1e-5)


def test_self_certainty_is_kl_from_uniform():
    logits = _logits(1)
    p = torch.softmax(logits, dim=-1)
    V = logits.shape[-1]
    # KL(U || p) = sum_j (1/V) * (log(1/V) - log p_j), written out term by term
    expected = ((1.0 / V) * (math.log(1.0 / V) - p.log())).sum(-1)
    torch.testing.assert_close(token_self_certainty(logits), expected.float(), atol=1e-5, rtol=1e-5)
    assert (token_self_certainty(logits) >= 0).all()


def test_uniform_and_peaked_extremes():
    V = 50
    flat = torch.zeros(1, 4, V)
    torch.testing.assert_close(token_entropy(flat), torch.full((1, 4), math.log(V)))
    torch.testing.assert_close(token_self_certainty(flat), torch.zeros(1, 4), atol=1e-6, rtol=0)
    peaked = torch.full((1, V), -1e4)
    peaked[0, 3] = 1e4  # huge logits: stable through log_softmax, no overflow
    assert token_entropy(peaked).item() == pytest.approx(0.0, abs=1e-6)
    # p_j = e^-2e4 for the rest: KL(U||p) ≈ (V-1)/V * 2e4 - log V
    assert token_self_certainty(peaked).item() == pytest.approx((V - 1) / V * 2e4 - math.log(V), rel=1e-4)


def test_minus_inf_logits():
    logits = torch.tensor([[0.0, 0.0, float("-inf")]])
    assert token_entropy(logits).item() == pytest.approx(math.log(2))  # not NaN
    assert token_self_certainty(logits).item() == math.inf  # uniform puts mass where p has none


def test_low_precision_input_and_temperature():
    logits = _logits(2)
    bf16 = token_entropy(logits.to(torch.bfloat16))
    assert bf16.dtype == torch.float32
    torch.testing.assert_close(bf16, token_entropy(logits.to(torch.bfloat16).double()), atol=1e-5, rtol=0)
    torch.testing.assert_close(token_entropy(logits, temperature=0.5), token_entropy(logits / 0.5))
    torch.testing.assert_close(
        token_self_certainty(logits, temperature=2.0), token_self_certainty(logits / 2)
    )
    with pytest.raises(ValueError, match="temperature"):
        token_entropy(logits, temperature=0.0)


@pytest.mark.parametrize("chunk_size", [1, 4, 5, 100])
def test_chunking_gives_identical_results(chunk_size):
    logits = _logits(3, shape=(3, 5, 11))
    torch.testing.assert_close(token_entropy(logits, chunk_size=chunk_size), token_entropy(logits))
    torch.testing.assert_close(
        token_self_certainty(logits, chunk_size=chunk_size), token_self_certainty(logits)
    )


def test_gradients_flow_through_chunks():
    logits = _logits(4, shape=(2, 3, 5)).float().requires_grad_(True)
    token_entropy(logits, chunk_size=2).sum().backward()
    reference = logits.detach().clone().requires_grad_(True)
    torch.distributions.Categorical(logits=reference).entropy().sum().backward()
    torch.testing.assert_close(logits.grad, reference.grad, atol=1e-5, rtol=1e-4)


def test_masked_mean_per_row():
    values = torch.tensor([[1.0, 2.0, 3.0, float("nan")], [4.0, 0.0, 0.0, 0.0], [5.0, 6.0, 7.0, 8.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    torch.testing.assert_close(masked_mean_per_row(values, mask), torch.tensor([2.0, 4.0, 0.0]))
    with pytest.raises(ValueError, match="same shape"):
        masked_mean_per_row(values, mask[:, :3])


def test_one_pass_without_a_chunk_size():
    logits = _logits(5, shape=(2, 3, 7))
    for chunk_size in (None, 0):
        torch.testing.assert_close(token_entropy(logits, chunk_size=chunk_size), token_entropy(logits))
        torch.testing.assert_close(
            token_self_certainty(logits, chunk_size=chunk_size), token_self_certainty(logits)
        )


def test_no_positions_give_an_empty_float32_result():
    for fn in (token_entropy, token_self_certainty):
        out = fn(torch.zeros(2, 0, 5, dtype=torch.float64))
        assert out.shape == (2, 0) and out.dtype == torch.float32


def test_a_single_position_and_a_single_class():
    assert token_entropy(torch.tensor([0.0, 0.0])).item() == pytest.approx(math.log(2))  # shape [V]
    # one class: all mass on it, zero entropy, and KL(U || p) = 0
    torch.testing.assert_close(token_entropy(torch.zeros(3, 1)), torch.zeros(3))
    torch.testing.assert_close(token_self_certainty(torch.zeros(3, 1)), torch.zeros(3))
    with pytest.raises(
        ValueError, match=r"^logits must have a non-empty vocabulary dimension, got shape \(2, 0\)$"
    ):
        token_entropy(torch.zeros(2, 0))
    with pytest.raises(ValueError, match="non-empty vocabulary"):
        token_self_certainty(torch.tensor(1.0))


def test_masked_mean_per_row_over_a_batch_of_rows():
    values = torch.arange(12, dtype=torch.float32).reshape(2, 2, 3)
    mask = torch.tensor([[[1, 1, 0], [0, 0, 1]], [[1, 1, 1], [0, 0, 0]]])
    torch.testing.assert_close(masked_mean_per_row(values, mask), torch.tensor([[0.5, 5.0], [7.0, 0.0]]))
