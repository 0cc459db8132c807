"""GRPO tensor functions checked against numbers worked out by hand (written out below)."""

from __future__ import annotations

import math

import pytest
import torch

from corewarding.training.grpo import _aggregate, group_advantages, kl_k3, masked_mean, policy_loss

# ---------------------------------------------------------------- group advantages


def test_group_advantages_hand_computed_rows():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0]])
    adv = group_advantages(rewards, eps=0.0)
    # row 0: mean 0.5, unbiased std sqrt((4 * 0.25) / 3) = 0.57735 -> ±0.5 / 0.57735 = ±0.866025
    # row 1: all equal -> exactly zero
    # row 2: mean 0.25, unbiased var (3 * 0.0625 + 0.5625) / 3 = 0.25 -> std 0.5 -> [-0.5, -0.5, -0.5, 1.5]
    expected = torch.tensor(
        [[0.866025, -0.866025, -0.866025, 0.866025], [0.0, 0.0, 0.0, 0.0], [-0.5, -0.5, -0.5, 1.5]]
    )
    assert adv.shape == rewards.shape
    torch.testing.assert_close(adv, expected, atol=1e-5, rtol=0)
    assert torch.equal(adv[1], torch.zeros(4))


def test_group_advantages_uses_unbiased_std_and_eps():
    rewards = torch.tensor([[0.0, 2.0]])
    # unbiased std of [0, 2] is sqrt(2) (the biased one would be 1): (0 - 1) / (sqrt(2) + 0.1)
    adv = group_advantages(rewards, eps=0.1)
    expected = torch.tensor([[-1 / (math.sqrt(2) + 0.1), 1 / (math.sqrt(2) + 0.1)]])
    torch.testing.assert_close(adv, expected)


def test_group_advantages_constant_rows_are_exact_zeros_despite_rounding():
    # mean of three 0.1s is not exactly 0.1 in floating point; the advantages must still be exactly 0
    rewards = torch.full((1, 3), 0.1, dtype=torch.float64)
    assert torch.equal(group_advantages(rewards), torch.zeros(1, 3, dtype=torch.float64))


def test_group_advantages_ragged_groups():
    rows = [torch.tensor([1.0, 0.0]), torch.tensor([2.0, 2.0, 5.0]), torch.tensor([7.0])]
    adv = group_advantages(rows, eps=0.0)
    # [1, 0]: mean 0.5, std sqrt(0.5) -> ±0.70711; [2, 2, 5]: mean 3, var (1 + 1 + 4) / 2 = 3 -> std 1.73205
    torch.testing.assert_close(adv[0], torch.tensor([0.707107, -0.707107]), atol=1e-5, rtol=0)
    torch.testing.assert_close(adv[1], torch.tensor([-0.577350, -0.577350, 1.154701]), atol=1e-5, rtol=0)
    assert torch.equal(adv[2], torch.zeros(1))  # a group of one has nothing to compare with


def test_group_advantages_without_scaling_is_mean_centred():
    adv = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0]]), scale=False)
    torch.testing.assert_close(adv, torch.tensor([[0.75, -0.25, -0.25, -0.25]]))


def test_group_advantages_rejects_wrong_shape():
    with pytest.raises(ValueError, match="num_groups, G"):
        group_advantages(torch.zeros(4))


# ---------------------------------------------------------------- masked mean and k3


def test_masked_mean_ignores_padding_even_if_nan():
    x = torch.tensor([[1.0, 2.0, float("nan")], [4.0, float("inf"), 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert masked_mean(x, mask).item() == pytest.approx((1 + 2 + 4) / 3)
    torch.testing.assert_close(masked_mean(x, mask, dim=-1), torch.tensor([1.5, 4.0]))
    assert masked_mean(x, torch.zeros_like(mask)).item() == 0.0


def test_k3_matches_exact_kl_in_expectation_and_under_sampling():
    pi = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    ref = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    exact = float((pi * (pi / ref).log()).sum())  # KL(pi || ref) = 0.2648...
    # E_{x~pi}[k3(x)] = sum_x ref_x - sum_x pi_x log(ref_x / pi_x) - 1 = KL exactly: k3 is unbiased
    per_token = kl_k3(pi.log(), ref.log()).double()
    assert float((pi * per_token).sum()) == pytest.approx(exact, rel=1e-6)
    # and its sample mean over tokens drawn from pi converges to it
    gen = torch.Generator().manual_seed(0)
    x = torch.multinomial(pi, 200_000, replacement=True, generator=gen)
    samples = kl_k3(pi.log()[x], ref.log()[x]).double()
    stderr = float(samples.std()) / math.sqrt(len(samples))
    assert abs(float(samples.mean()) - exact) < 5 * stderr
    assert (samples >= 0).all()  # unlike k1, k3 is never negative


def test_k3_is_clamped_like_verl():
    lp = torch.tensor([0.0, 0.0, 0.0])
    ref = torch.tensor([30.0, -50.0, math.log(2.0)])
    k3 = kl_k3(lp, ref)
    # d = 30 -> clamped to 20 -> e^20 - 21 -> clamped to 10; d = -50 -> -20 -> e^-20 + 19 -> 10
    # d = ln 2 -> 2 - ln 2 - 1 = 0.306853
    torch.testing.assert_close(k3, torch.tensor([10.0, 10.0, 1.0 - math.log(2.0)]))


# ---------------------------------------------------------------- policy loss


def _example():
    """Two sequences, three response tokens each; the second has one padding token.

    seq 0, A = +1, ratios [1.0, 1.5, 0.5]:
        ratio 1.0: -1.0                          (no clip)
        ratio 1.5: max(-1.5, -1.2) = -1.2        (clipped: A > 0 and ratio above 1 + 0.2)
        ratio 0.5: max(-0.5, -0.8) = -0.5        (not clipped: A > 0 below 1 - 0.2 keeps the ratio)
    seq 1, A = -2, ratios [1.5, 0.5, pad]:
        ratio 1.5: max(3.0, 2.4) = 3.0           (not clipped: A < 0 above 1 + 0.2 keeps the ratio)
        ratio 0.5: max(1.0, 1.6) = 1.6           (clipped: A < 0 and ratio below 1 - 0.2)
    token-mean = (-1 - 1.2 - 0.5 + 3 + 1.6) / 5 = 0.38; clip_frac = 2/5; ratio_mean = 5/5 = 1
    seq-mean-token-mean = mean(-2.7/3, 4.6/2) = mean(-0.9, 2.3) = 0.7
    """
    old = torch.tensor([[-1.0, -2.0, -0.5], [-1.5, -0.7, -3.0]])
    ratios = torch.tensor([[1.0, 1.5, 0.5], [1.5, 0.5, 1.1]])
    logprobs = (old + ratios.log()).requires_grad_(True)
    advantages = torch.tensor([1.0, -2.0])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    return logprobs, old, advantages, mask


def test_policy_loss_hand_computed_token_mean():
    logprobs, old, adv, mask = _example()
    loss, metrics = policy_loss(logprobs, old, adv, mask, clip_ratio=0.2)
    assert loss.item() == pytest.approx(0.38, abs=1e-6)
    assert metrics["pg_loss"] == pytest.approx(0.38, abs=1e-6)
    assert metrics["clip_frac"] == pytest.approx(0.4)
    assert metrics["ratio_mean"] == pytest.approx(1.0, abs=1e-6)
    assert "kl" not in metrics
    loss.backward()
    # d/dlogprob of -A*ratio is -A*ratio/N on unclipped tokens, 0 where the clipped branch is active
    expected_grad = torch.tensor([[-1.0 * 1.0 / 5, 0.0, -1.0 * 0.5 / 5], [2.0 * 1.5 / 5, 0.0, 0.0]])
    torch.testing.assert_close(logprobs.grad, expected_grad)


def test_policy_loss_hand_computed_seq_mean_token_mean():
    logprobs, old, adv, mask = _example()
    loss, _ = policy_loss(logprobs, old, adv, mask, loss_agg="seq-mean-token-mean")
    assert loss.item() == pytest.approx(0.7, abs=1e-6)


def test_policy_loss_clip_higher_only_widens_upper_side():
    old = torch.zeros(1, 2)
    logprobs = torch.log(torch.tensor([[1.25, 0.7]]))
    mask = torch.ones(1, 2)
    _, sym = policy_loss(logprobs, old, torch.tensor([1.0]), mask, clip_ratio=0.2)
    _, dapo = policy_loss(logprobs, old, torch.tensor([1.0]), mask, clip_ratio=0.2, clip_ratio_high=0.28)
    # 1.25 is clipped at 1.2 but not at 1.28; 0.7 is below 0.8 yet unclipped for A > 0 in both
    assert sym["clip_frac"] == pytest.approx(0.5)
    assert dapo["clip_frac"] == pytest.approx(0.0)
    assert dapo["pg_loss"] == pytest.approx(-(1.25 + 0.7) / 2, abs=1e-6)


def test_policy_loss_kl_term_is_token_mean_k3():
    logprobs, old, adv, mask = _example()
    ref = logprobs.detach() + math.log(2.0)  # every token: k3 = 2 - ln 2 - 1
    loss, metrics = policy_loss(logprobs, old, adv, mask, ref_logprobs=ref, kl_coef=0.1)
    k3 = 1.0 - math.log(2.0)
    assert metrics["kl"] == pytest.approx(k3, abs=1e-6)
    assert loss.item() == pytest.approx(0.38 + 0.1 * k3, abs=1e-6)
    with pytest.raises(ValueError, match="ref_logprobs"):
        policy_loss(logprobs, old, adv, mask, kl_coef=0.1)


@pytest.mark.parametrize(
    ("mode", "total_key", "total"),
    [("token-mean", "num_tokens_total", 5), ("seq-mean-token-mean", "num_seqs_total", 2)],
)
def test_micro_batches_with_global_normalizer_reproduce_the_full_batch(mode, total_key, total):
    logprobs, old, adv, mask = _example()
    ref = old - 0.3
    full, _ = policy_loss(logprobs, old, adv, mask, ref_logprobs=ref, kl_coef=0.05, loss_agg=mode)
    full.backward()
    full_grad = logprobs.grad.clone()
    logprobs.grad = None
    # the two sequences hold 3 and 2 tokens: a per-micro-batch mean would weight them wrongly
    parts = []
    for rows in (slice(0, 1), slice(1, 2)):
        part, m = policy_loss(
            logprobs[rows],
            old[rows],
            adv[rows],
            mask[rows],
            ref_logprobs=ref[rows],
            kl_coef=0.05,
            loss_agg=mode,
            **{total_key: total},
        )
        part.backward()
        parts.append(part.item())
        # metrics describe this micro-batch alone, whatever the loss normalizer
        _, alone = policy_loss(
            logprobs[rows],
            old[rows],
            adv[rows],
            mask[rows],
            ref_logprobs=ref[rows],
            kl_coef=0.05,
            loss_agg=mode,
        )
        assert m == pytest.approx(alone)
    assert sum(parts) == pytest.approx(full.item(), abs=1e-6)
    torch.testing.assert_close(logprobs.grad, full_grad)


def test_metrics_are_local_means_of_the_call():
    logprobs, old, adv, mask = _example()
    _, m = policy_loss(logprobs[1:], old[1:], adv[1:], mask[1:], num_tokens_total=5)
    # seq 1 alone: pg tokens [3.0, 1.6] -> 2.3; one of two tokens clipped; ratios [1.5, 0.5] -> 1.0
    assert m["pg_loss"] == pytest.approx(2.3, abs=1e-6)
    assert m["clip_frac"] == pytest.approx(0.5)
    assert m["ratio_mean"] == pytest.approx(1.0, abs=1e-6)


def test_policy_loss_validates_shapes_and_mode():
    logprobs, old, adv, mask = _example()
    with pytest.raises(ValueError, match="loss_agg"):
        policy_loss(logprobs, old, adv, mask, loss_agg="sum")
    with pytest.raises(ValueError, match="advantages"):
        policy_loss(logprobs, old, torch.ones(3), mask)
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        policy_loss(logprobs, old[:, :2], adv, mask)


# ---------------------------------------------------------------- edges


def test_group_advantages_default_eps_is_tiny():
    # std of [0, 1] is sqrt(0.5): the default eps (1e-6) leaves the advantages at ±0.5 / 0.70711
    torch.testing.assert_close(
        group_advantages(torch.tensor([[0.0, 1.0]])), torch.tensor([[-0.707106, 0.707106]]), atol=1e-5, rtol=0
    )


def test_a_constant_row_is_zero_beside_rows_with_other_values():
    # seven 0.1s do not average to exactly 0.1 in float32; the row is constant all the same, whatever the
    # other rows hold
    rewards = torch.tensor([[0.1] * 7, [0.0] * 6 + [1.0]])
    adv = group_advantages(rewards)
    assert torch.equal(adv[0], torch.zeros(7))
    assert adv[1, -1] > 0


def test_integer_and_double_rewards():
    ints = group_advantages(torch.tensor([[1, 0, 0, 1]]))
    torch.testing.assert_close(ints, group_advantages(torch.tensor([[1.0, 0.0, 0.0, 1.0]])))
    assert ints.dtype == torch.float32
    doubles = group_advantages(torch.tensor([[1.0, 0.0]], dtype=torch.float64))
    assert doubles.dtype == torch.float64


def test_ragged_groups_must_be_1d_tensors():
    with pytest.raises(ValueError, match=r"^group 1: expected a 1-D tensor of rewards, got list$"):
        group_advantages([torch.tensor([1.0, 0.0]), [1.0, 0.0]])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"^group 0: expected a 1-D tensor of rewards, got Tensor$"):
        group_advantages([torch.zeros(2, 2)])


def test_a_single_kept_token_is_its_own_mean():
    x = torch.tensor([[3.0, 5.0], [7.0, 9.0]])
    mask = torch.tensor([[0, 1], [0, 0]])
    assert masked_mean(x, mask).item() == 5.0
    torch.testing.assert_close(masked_mean(x, mask, dim=-1), torch.tensor([5.0, 0.0]))


def test_k3_of_a_token_the_policy_rules_out_is_the_cap_not_nan():
    # log pi = -inf (the policy gives the token no mass): d = +inf is clamped to 20 before exp, so k3 = 10
    k3 = kl_k3(torch.tensor([-math.inf]), torch.tensor([0.0]))
    assert k3.item() == 10.0


def test_extreme_log_ratios_are_clamped_to_20():
    logprobs = torch.tensor([[30.0, -30.0]])
    old = torch.zeros(1, 2)
    mask = torch.ones(1, 2)
    # A = -1: per token max(ratio, clip(ratio)) = max(e^20, 1.2) and max(e^-20, 0.8)
    loss, m = policy_loss(logprobs, old, torch.tensor([-1.0]), mask)
    assert loss.item() == pytest.approx((math.exp(20) + 0.8) / 2, rel=1e-6)
    assert m["ratio_mean"] == pytest.approx((math.exp(20) + math.exp(-20)) / 2, rel=1e-6)
    # A = +1: max(-e^20, -1.2) = -1.2 and max(-e^-20, -0.8) = -e^-20
    loss, _ = policy_loss(logprobs, old, torch.tensor([1.0]), mask)
    assert loss.item() == pytest.approx((-1.2 - math.exp(-20)) / 2, rel=1e-7)
    _, m = policy_loss(torch.tensor([[-30.0]]), torch.zeros(1, 1), torch.tensor([1.0]), torch.ones(1, 1))
    assert m["ratio_mean"] == pytest.approx(math.exp(-20), rel=1e-5)


def test_ppo_kl_is_the_mean_of_old_minus_new_logprobs():
    logprobs, old, adv, mask = _example()
    _, m = policy_loss(logprobs, old, adv, mask)
    # -log ratio per kept token: -[0, ln 1.5, ln 0.5], -[ln 1.5, ln 0.5]
    expected = -(2 * math.log(1.5) + 2 * math.log(0.5)) / 5
    assert m["ppo_kl"] == pytest.approx(expected, abs=1e-6)


def test_aggregation_of_single_tokens_and_single_sequences():
    logprobs = torch.zeros(1, 3)
    mask = torch.tensor([[1, 0, 0]])
    adv = torch.tensor([2.0])
    # one kept token of -A * ratio = -2, alone in its sequence and in the batch
    for mode in ("token-mean", "seq-mean-token-mean"):
        loss, m = policy_loss(logprobs, logprobs.clone(), adv, mask, loss_agg=mode)
        assert loss.item() == -2.0 and m["pg_loss"] == -2.0


def test_shape_errors_name_the_shapes():
    logprobs, old, adv, mask = _example()
    with pytest.raises(ValueError, match=r"^ref_logprobs \(2, 2\) must match logprobs \(2, 3\)$"):
        policy_loss(logprobs, old, adv, mask, ref_logprobs=old[:, :2])
    with pytest.raises(ValueError, match=r"must all be \[B, T\]"):
        policy_loss(logprobs, old, adv, mask[:, :1])  # would broadcast silently
    with pytest.raises(ValueError, match=r"^loss_agg must be one of \('token-mean', 'seq-mean-token-mean'\)"):
        _aggregate(logprobs, mask, "sum", None, None)
