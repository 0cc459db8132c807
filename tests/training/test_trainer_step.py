"""One trainer step on a scripted batch whose rewards are known, checked against answers worked out by hand.

Sampling is replaced by :class:`ScriptedEngine`: every prompt gets fixed responses whose ``\\boxed{}``
answers are right or wrong on purpose (``PATTERNS``), so with ``method=gt`` each group's rewards, and so its
GRPO advantages (``HAND``), are known before the step runs. The real trainer then runs on the micro-world's
model and data (``Trainer.train``, nothing of the step stubbed), and what it computes is checked:

- the advantages handed to the update are each group's own (r − mean) / std, rollout by rollout;
- the update raises the log-prob of every rewarded response and lowers that of every penalised one;
- the KL term is 0 at step 1 (policy = reference) and positive at step 2;
- the gradient is the one of the hand-written loss, for ``token-mean`` and ``seq-mean-token-mean`` at step 1
  and with its KL term at step 2 (from the weights step 1 left, the schedule advanced);
- the gradient is clipped as a whole to ``optim.grad_clip``, and its norm before clipping is reported;
- the gradient is the same for micro-batches of 1, 2, 3 and the whole batch, and for 1 or 2 processes;
- ``grpo.updates_per_step=2``: the second update is off-policy (ratio ≠ 1) and clipping acts;
- ``teacher.view=rephrased``: Co-rewarding-II's teacher is prompted with the rephrased questions.

Gradients are compared rather than weights: AdamW's first step moves every weight by about ±lr whatever the
size of its gradient, so float noise in a near-zero gradient entry could flip a weight's step, while a
gradient computed in another order differs only in its last bits. Tolerances are relative to the largest
gradient entry (``_gap``); see ``GRAD_TOL``.

Cost: the micro-world's base model (a session fixture shared with the other training tests: about 15 s on
2 idle cores), then about 25 s of tests measured on 2 cores busy with other test runs, 9 s of it the
2-process comparison. That one starts two interpreters but is not marked slow: the fast selection (what
mutation testing runs) must catch a mistake that only several processes make.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from corewarding.config import Config, load_config, save_config
from corewarding.data.prompting import prompt_token_ids
from corewarding.rollout.types import Rollout, SamplingParams
from corewarding.training import update as update_module
from corewarding.training.logprobs import pack, response_forward
from corewarding.training.sampler import StepSampler
from corewarding.training.trainer import Trainer

G = 4  # rollouts per question (rollout.n, teacher.n)
QUESTIONS = 4  # questions per step (trainer.batch_questions)
# The rewards of the G responses to each question, by the question's place in its step's batch: one right
# answer, two, three (the wrong ones not always last) and none, so the groups have different means and
# stds and a batch-wide normalisation gives other numbers than a per-group one.
PATTERNS = [(0, 0, 1, 0), (1, 0, 0, 1), (1, 1, 0, 1), (0, 0, 0, 0)]
# Their advantages by hand, (r − mean) / std with the unbiased std (divides by G − 1):
#   (0,0,1,0): mean 1/4, std 1/2       → −1/2, −1/2, 3/2, −1/2
#   (1,0,0,1): mean 1/2, std √(1/3)    → ±(1/2)/√(1/3) = ±√3/2
#   (1,1,0,1): mean 3/4, std 1/2       → 1/2, 1/2, −3/2, 1/2
#   (0,0,0,0): no signal               → 0
H = 3**0.5 / 2
HAND = [(-0.5, -0.5, 1.5, -0.5), (H, -H, -H, H), (0.5, 0.5, -1.5, 0.5), (0.0, 0.0, 0.0, 0.0)]
# grpo.adv_eps = 1e-6 is added to the std, which moves these by less than 3e-6
ADV_TOL = 1e-5
# What response j says before its boxed answer: a right one starts with RIGHT[j], a wrong one with WRONG[j]
# (words of the micro-world's vocabulary, no word in both lists, so the words of rewarded and of penalised
# responses are pushed in opposite directions and each response's log-prob moves with its advantage).
# Their lengths differ, so token-mean and seq-mean-token-mean weigh the responses differently.
RIGHT = [" The answer is", " She has", " She has apples and the answer is", " The final answer is"]
WRONG = [" He loses", " Then he returns", " Tom sells many coins", " think"]
# Largest gradient difference allowed between two ways of computing the same update, relative to the largest
# gradient entry. fp32 sums taken in another order differ in their last bits: measured, micro-batches of 1, 2
# or 3 against the whole batch (per-row passes against one pass sharing each prompt) 9e-7, 2 processes over
# gloo 4e-7, the hand-written loss on a fresh copy of the model 2e-6. A wrong sign, scale, normaliser or
# grouping moves the gradient by a sizeable fraction of itself (negated advantages: 2; the loss of 2
# processes not scaled by 2: 0.5), so 1e-4 is 50 times the noise and far below any such mistake.
GRAD_TOL = 1e-4
LR = 1e-4  # with weight_decay 0, AdamW's first step moves each weight by about ±LR: a clear change
TEMPERATURE = 0.8  # not 1, so log-probs that forget to divide the logits by it do not pass
KL_COEF = 0.05
GRAD_CLIP = 1.0  # optim.grad_clip; the step-1 gradient norm is about 12, so clipping acts


# ----------------------------------------------------------------------------- the scripted engine
def _user_text(messages: list[dict[str, str]]) -> str:
    return next(m["content"] for m in reversed(messages) if m["role"] == "user")


def response_text(j: int, gold: str, right: bool) -> str:
    return f"{RIGHT[j]} \\boxed{{{gold}}}." if right else f"{WRONG[j]} \\boxed{{{int(gold) + 1}}}."


class ScriptedEngine:
    """A rollout engine with fixed responses: ``responses[question text]`` lists the G texts it answers that
    question with (each followed by EOS). Records every call as ``(id of the module it was last synced to,
    the user texts it was asked)``."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.responses: dict[str, list[str]] = {}
        self.calls: list[tuple[int | None, list[str]]] = []
        self.holding: int | None = None

    def sync_weights(self, model) -> None:
        self.holding = id(model)

    def generate(
        self, prompts: list[list[dict[str, str]]], n: int, sampling: SamplingParams
    ) -> list[Rollout]:
        tok = self.tokenizer
        texts = [_user_text(p) for p in prompts]
        self.calls.append((self.holding, texts))
        out = []
        for i, (text, ids) in enumerate(zip(texts, prompt_token_ids(tok, prompts), strict=True)):
            responses = self.responses[text]
            assert len(responses) == n, (len(responses), n)
            for response_j in responses:
                response = [*tok.encode(response_j, add_special_tokens=False), tok.eos_token_id]
                text_j = tok.decode(response, skip_special_tokens=True)
                out.append(Rollout(prompt_ids=list(ids), response_ids=response, text=text_j, prompt_index=i))
        return out


def script(trainer: Trainer, rephrased_teacher_gold: bool = False) -> ScriptedEngine:
    """Give ``trainer``'s engine the answers of ``PATTERNS`` for every question of its steps (by the
    question's place in the step's global batch, the same in every process); with
    ``rephrased_teacher_gold`` every response to a rephrased question boxes the gold answer."""
    engine = trainer.engine
    assert isinstance(engine, ScriptedEngine)
    cfg = trainer.cfg
    sampler = StepSampler(trainer.items, cfg.trainer.batch_questions, cfg.trainer.seed, cfg.data.shuffle)
    for step in range(cfg.trainer.total_steps):
        for pos, (original, rephrased) in enumerate(sampler.batch(step)):
            gold = str(original.gold)
            responses = [response_text(j, gold, bool(ok)) for j, ok in enumerate(PATTERNS[pos])]
            engine.responses[_user_text(original.messages)] = responses
            if rephrased is not None:
                all_right = [response_text(j, gold, True) for j in range(G)]
                engine.responses[_user_text(rephrased.messages)] = (
                    all_right if rephrased_teacher_gold else responses
                )
    return engine


def expected_advantages(rollouts: list[Rollout], trainer: Trainer) -> list[float]:
    """``HAND``'s advantage of each rollout, found from its question and its place in its group."""
    cfg = trainer.cfg
    sampler = StepSampler(trainer.items, cfg.trainer.batch_questions, cfg.trainer.seed, cfg.data.shuffle)
    place = {}
    for step in range(cfg.trainer.total_steps):
        for pos, (original, _) in enumerate(sampler.batch(step)):
            place[tuple(prompt_token_ids(trainer.tokenizer, [original.messages])[0])] = pos
    out = []
    for k, r in enumerate(rollouts):
        j = k % G  # groups are contiguous and in the engine's order
        out.append(HAND[place[tuple(r.prompt_ids)]][j])
    return out


# ----------------------------------------------------------------------------- what the step computed
class Capture:
    """Records what a trainer computes in each update, through the methods and names its step calls:
    ``Trainer._update`` (its rollouts and advantages, the policy's weights when it starts, and every
    rollout's summed log-prob under the policy just before and just after it), ``Trainer._clip_gradients``
    (the raw gradient before clipping, the norm it returns, the gradient after clipping) and
    ``update.policy_loss`` (its inputs and outputs)."""

    def __init__(self, trainer: Trainer, set_attr: Callable[[Any, str, Any], None]):
        self.trainer = trainer
        self.updates: list[dict[str, Any]] = []
        self.grads: list[dict[str, torch.Tensor]] = []
        self.clipped: list[dict[str, torch.Tensor]] = []
        self.norms: list[float | None] = []
        self.losses: list[dict[str, Any]] = []
        self.active = False
        real_update, real_clip = trainer._update, trainer._clip_gradients
        real_loss = update_module.policy_loss

        def grads() -> dict[str, torch.Tensor]:
            return {
                name: p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
                for name, p in trainer.policy.named_parameters()
            }

        def _update(rollouts, advantages, old, *, step):
            weights = {k: v.detach().clone() for k, v in trainer.policy.state_dict().items()}
            before = logprob_sums(trainer.policy, rollouts, trainer.pad_id)
            self.active = True  # policy_loss records this trainer's calls only
            try:
                out = real_update(rollouts, advantages, old, step=step)
            finally:
                self.active = False
            after = logprob_sums(trainer.policy, rollouts, trainer.pad_id)
            self.updates.append(
                {
                    "rollouts": rollouts,
                    "advantages": list(advantages),
                    "weights": weights,
                    "before": before,
                    "after": after,
                }
            )
            return out

        def _clip_gradients():
            self.grads.append(grads())
            norm = real_clip()
            self.norms.append(norm)
            self.clipped.append(grads())
            return norm

        def policy_loss(logprobs, old_logprobs, advantages, mask, **kwargs):
            loss, metrics = real_loss(logprobs, old_logprobs, advantages, mask, **kwargs)
            if not self.active:
                return loss, metrics
            self.losses.append(
                {
                    "logprobs": logprobs.detach().clone(),
                    "old": old_logprobs.detach().clone(),
                    "advantages": advantages.detach().clone(),
                    "mask": mask.detach().clone(),
                    "kwargs": kwargs,
                    "loss": float(loss.detach()),
                    "metrics": metrics,
                }
            )
            return loss, metrics

        trainer._update = _update  # the loop calls self._update: the instance attribute wins
        trainer._clip_gradients = _clip_gradients
        set_attr(update_module, "policy_loss", policy_loss)


@torch.no_grad()
def logprob_sums(model, rollouts: list[Rollout], pad_id: int) -> torch.Tensor:
    """Each rollout's summed response log-prob under ``model`` (at the rollout temperature)."""
    batch = pack(rollouts, pad_id)
    lp = response_forward(model, batch, temperature=TEMPERATURE, share_prompts=False).logprobs
    return (lp * batch.response_mask).sum(-1)


def _no_plots(set_attr: Callable[[Any, str, Any], None]) -> None:
    """The end-of-run plots take seconds and prove nothing here."""
    import corewarding.reporting.plots as plots

    set_attr(plots, "plot_run", lambda run_dir: None)


def _gap(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest entry of a − b relative to the largest entry of b (over every parameter)."""
    assert a.keys() == b.keys()
    scale = max(float(v.abs().max()) for v in b.values())
    assert scale > 0, "the reference gradient is zero: the comparison would prove nothing"
    return max(float((a[k] - b[k]).abs().max()) for k in a) / scale


# ----------------------------------------------------------------------------- configs and runs
STEP_OVERRIDES = [
    "method=gt",
    f"trainer.batch_questions={QUESTIONS}",
    f"rollout.n={G}",
    f"teacher.n={G}",
    "trainer.total_steps=1",
    "trainer.save_every=0",
    "trainer.val_every=0",
    "validation.before_training=false",
    "trainer.sample_rollouts=0",
    "optim.weight_decay=0.0",
    f"optim.lr={LR}",
    f"grpo.kl_coef={KL_COEF}",
    f"rollout.temperature={TEMPERATURE}",
    f"optim.grad_clip={GRAD_CLIP}",
]


def step_config(setup, out: Path, name: str, *overrides: str) -> Config:
    from corewarding.microworld.experiment import Budget, train_config

    return train_config(setup, "gt", Budget(), out, name, [*STEP_OVERRIDES, *overrides])


def run_scripted(cfg: Config, set_attr, **script_kwargs) -> tuple[Trainer, Capture]:
    """Train ``cfg`` with a scripted engine, capturing every update."""
    _no_plots(set_attr)
    trainer = Trainer(cfg, progress=False, engine_factory=lambda model, tok: ScriptedEngine(tok))
    script(trainer, **script_kwargs)
    capture = Capture(trainer, set_attr)
    trainer.train()
    return trainer, capture


# The runs are function-scoped (about a second each): a mutation-testing tool that picks, for each mutant,
# the tests that reach the mutated code (mutmut) credits what a module-scoped fixture runs to the first test
# that sets it up only, and would never run the others against that mutant.
@pytest.fixture
def main_run(micro_setup, tmp_path, monkeypatch):
    """Two steps of ``gt`` on the scripted batch, whole batch in one micro-batch, one process; a cosine
    schedule over the two steps (lr LR, then LR/2)."""
    cfg = step_config(micro_setup, tmp_path, "main", "trainer.total_steps=2", "optim.schedule=cosine")
    trainer, capture = run_scripted(cfg, monkeypatch.setattr)
    rows = [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    return trainer, capture, rows


# ----------------------------------------------------------------------------- the tests
def test_advantages_are_each_groups_own_normalised_rewards(main_run):
    trainer, capture, _ = main_run
    first = capture.updates[0]
    expected = expected_advantages(first["rollouts"], trainer)
    assert len(first["advantages"]) == QUESTIONS * G
    assert first["advantages"] == pytest.approx(expected, abs=ADV_TOL)
    # and the loss got them, rollout by rollout: a rewarded response a positive one, a penalised one negative
    handed = capture.losses[0]["advantages"].tolist()
    assert handed == pytest.approx(expected, abs=ADV_TOL)
    golds = {tuple(prompt_token_ids(trainer.tokenizer, [q.messages])[0]): q.gold for q, _ in trainer.items}
    right = [r.text.endswith(f"\\boxed{{{golds[tuple(r.prompt_ids)]}}}.") for r in first["rollouts"]]
    assert sum(right) == sum(map(sum, PATTERNS))
    for a, ok in zip(first["advantages"], right, strict=True):
        assert a > 0 if ok and a != 0 else a <= 0


def test_the_step_raises_rewarded_log_probs_and_lowers_penalised_ones(main_run):
    trainer, capture, _ = main_run
    first = capture.updates[0]
    moved = first["after"] - first["before"]
    # the advantages by hand, not the ones the trainer computed: the direction is checked independently
    advantages = torch.tensor(expected_advantages(first["rollouts"], trainer))
    assert (advantages != 0).sum() == 12  # the three groups with a signal
    for a, m, r in zip(advantages.tolist(), moved.tolist(), first["rollouts"], strict=True):
        if a > 0:
            assert m > 0.01, (a, m, r.text)
        elif a < 0:
            assert m < -0.01, (a, m, r.text)
    # the objective the step climbs, Σ A·Δlog π, went up clearly
    assert float((advantages * moved).sum()) > 0.1


def test_kl_is_zero_at_the_first_step_and_positive_after(main_run):
    _, capture, rows = main_run
    by_step = {r["step"]: r for r in rows}
    # the reference is a copy of the policy: the same log-probs (measured exactly 0 on CPU; a forward with
    # gradient may run other kernels than one without, which could leave k3 ≈ d²/2 of ~1e-14)
    assert abs(by_step[1]["kl"]) < 1e-10
    assert by_step[2]["kl"] > 1e-4  # measured 0.037 after one step of lr 1e-4
    assert [c["metrics"]["kl"] for c in capture.losses] == [by_step[1]["kl"], by_step[2]["kl"]]


def _hand_gradient(
    micro_setup,
    rollouts: list[Rollout],
    advantages: list[float],
    pad_id: int,
    agg: str,
    weights: dict[str, torch.Tensor] | None = None,
    kl_coef: float = 0.0,
) -> tuple[dict[str, torch.Tensor], float]:
    """The gradient and value of an on-policy GRPO loss written out by hand, on a fresh copy of the initial
    policy (or of ``weights``), the KL reference being the initial policy.

    With one update per step the ratio is exactly 1, so nothing is clipped and the surrogate's gradient is
    that of −A_i log π(y_it); with k3_it = exp(d) − d − 1, d = log π_ref − log π, the loss is
    Σ_it (−A_i log π(y_it) + kl_coef k3_it) / Σ_i L_i (token-mean) or
    (1/N) Σ_i (1/L_i) Σ_t (−A_i log π(y_it) + kl_coef k3_it) (seq-mean-token-mean). Its value (ratio 1)
    replaces log π(y_it) by 1 in the first term: −Σ A_i L_i / Σ L_i or −mean(A) with no KL.
    """
    from transformers import AutoModelForCausalLM

    def load():
        return AutoModelForCausalLM.from_pretrained(str(micro_setup.base_model), dtype=torch.float32)

    model = load()
    if weights is not None:
        model.load_state_dict(weights)
    batch = pack(rollouts, pad_id)
    mask = batch.response_mask.bool()
    lp = response_forward(model, batch, temperature=TEMPERATURE, share_prompts=False).logprobs
    a = torch.tensor(advantages)[:, None]
    loss_tokens, value_tokens = -a * lp, -a * torch.ones_like(lp)
    if kl_coef:
        with torch.no_grad():
            ref = response_forward(load(), batch, temperature=TEMPERATURE, share_prompts=False).logprobs
        d = ref - lp
        k3 = torch.exp(d) - d - 1
        loss_tokens, value_tokens = loss_tokens + kl_coef * k3, value_tokens + kl_coef * k3.detach()
    lengths = mask.sum(-1)

    def aggregate(tokens: torch.Tensor) -> torch.Tensor:
        tokens = torch.where(mask, tokens, torch.zeros_like(tokens))
        if agg == "token-mean":
            return tokens.sum() / lengths.sum()
        return (tokens.sum(-1) / lengths).sum() / len(rollouts)

    aggregate(loss_tokens).backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    return grads, float(aggregate(value_tokens))


def _norm(grads: dict[str, torch.Tensor]) -> float:
    return float(torch.cat([g.flatten() for g in grads.values()]).norm())


def test_token_mean_gradient_is_the_hand_written_one(main_run, micro_setup):
    trainer, capture, _ = main_run
    first = capture.updates[0]
    expected = expected_advantages(first["rollouts"], trainer)
    hand, value = _hand_gradient(micro_setup, first["rollouts"], expected, trainer.pad_id, "token-mean")
    assert _gap(capture.grads[0], hand) < GRAD_TOL
    assert capture.norms[0] == pytest.approx(_norm(hand), rel=1e-4)
    assert abs(value) > 0.01  # responses of different lengths: token-mean's loss is not −mean(A) = 0
    assert capture.losses[0]["loss"] == pytest.approx(value, abs=1e-5)


@pytest.fixture
def seq_run(micro_setup, tmp_path, monkeypatch):
    """One step of ``gt`` on the scripted batch with ``grpo.loss_agg=seq-mean-token-mean``."""
    cfg = step_config(micro_setup, tmp_path, "seq", "grpo.loss_agg=seq-mean-token-mean")
    return run_scripted(cfg, monkeypatch.setattr)


def test_seq_mean_token_mean_loss_and_gradient_are_the_hand_written_ones(main_run, seq_run, micro_setup):
    _, capture0, _ = main_run
    trainer, capture = seq_run
    first = capture.updates[0]
    expected = expected_advantages(first["rollouts"], trainer)
    assert first["advantages"] == pytest.approx(expected, abs=ADV_TOL)
    assert capture.losses[0]["kwargs"]["loss_agg"] == "seq-mean-token-mean"
    seq, value = _hand_gradient(
        micro_setup, first["rollouts"], expected, trainer.pad_id, "seq-mean-token-mean"
    )
    token, _ = _hand_gradient(micro_setup, first["rollouts"], expected, trainer.pad_id, "token-mean")
    assert _gap(capture.grads[0], seq) < GRAD_TOL
    # the two aggregations differ here (response lengths differ), by far more than the tolerance
    assert _gap(token, seq) > 100 * GRAD_TOL
    assert _gap(capture.grads[0], capture0.grads[0]) > 100 * GRAD_TOL
    # each sequence's tokens averaged first: with ratio 1 every sequence contributes −A_i, and each group's
    # advantages sum to 0, so the loss is 0 (token-mean's is not: see the test above)
    assert capture.losses[0]["loss"] == pytest.approx(value, abs=1e-5)
    assert capture.losses[0]["loss"] == pytest.approx(0.0, abs=1e-5)


def test_the_gradient_is_clipped_to_grad_clip(main_run):
    _, capture, _ = main_run
    raw, clipped, norm = capture.grads[0], capture.clipped[0], capture.norms[0]
    assert norm == pytest.approx(_norm(raw), rel=1e-5)  # the norm reported is the one before clipping
    assert norm > 2 * GRAD_CLIP  # so the clipping acts
    assert _norm(clipped) == pytest.approx(GRAD_CLIP, rel=1e-5)
    # scaled as a whole, not entry by entry: the direction is kept
    scaled = {k: v * (GRAD_CLIP / norm) for k, v in raw.items()}
    assert _gap(clipped, scaled) < GRAD_TOL


def test_the_second_step_gradient_is_the_hand_written_one_with_its_kl_term(main_run, micro_setup):
    """Step 2 starts from the weights step 1 left and the reference is still the initial policy, so the KL
    term now has a gradient; the optimizer has zeroed step 1's gradient and the schedule has advanced."""
    trainer, capture, rows = main_run
    second = capture.updates[1]
    expected = expected_advantages(second["rollouts"], trainer)
    assert second["advantages"] == pytest.approx(expected, abs=ADV_TOL)
    args = (micro_setup, second["rollouts"], expected, trainer.pad_id, "token-mean", second["weights"])
    hand, value = _hand_gradient(*args, kl_coef=KL_COEF)
    assert _gap(capture.grads[1], hand) < GRAD_TOL
    assert capture.losses[1]["loss"] == pytest.approx(value, rel=1e-4)
    without_kl, _ = _hand_gradient(*args)
    assert _gap(without_kl, hand) > 10 * GRAD_TOL  # the KL term's gradient is really part of what matched
    assert [r["lr"] for r in rows] == pytest.approx([LR, LR / 2])  # cosine over 2 steps, no warm-up


@pytest.mark.parametrize("micro_batch", [1, 2, 3])
def test_micro_batches_make_the_whole_batch_update(main_run, micro_setup, tmp_path, monkeypatch, micro_batch):
    _, reference, _ = main_run
    cfg = step_config(micro_setup, tmp_path, f"mb{micro_batch}", f"optim.micro_batch_size={micro_batch}")
    _, capture = run_scripted(cfg, monkeypatch.setattr)
    # really accumulated over micro-batches (of 3: five and a last one of a single response)
    assert len(capture.losses) == -(-QUESTIONS * G // micro_batch)
    assert capture.updates[0]["advantages"] == reference.updates[0]["advantages"]
    assert _gap(capture.grads[0], reference.grads[0]) < GRAD_TOL
    assert capture.norms[0] == pytest.approx(reference.norms[0], rel=GRAD_TOL)


def test_two_updates_per_step_go_off_policy_and_clip(micro_setup, tmp_path, monkeypatch):
    cfg = step_config(micro_setup, tmp_path, "two", "grpo.updates_per_step=2", "grpo.clip_ratio=0.02")
    _, capture = run_scripted(cfg, monkeypatch.setattr)
    assert len(capture.losses) == 2 and len(capture.grads) == 2  # two optimizer steps, one micro-batch each
    first, second = capture.losses
    for call in (first, second):  # half the rollouts each, old log-probs from before the first update
        assert call["logprobs"].shape[0] == QUESTIONS * G // 2
    # the first update samples from its own weights: ratio 1 (up to the float noise of another batch shape)
    on = first["mask"].bool()
    assert float((first["logprobs"] - first["old"])[on].abs().max()) < 1e-4
    assert first["metrics"]["clip_frac"] == 0.0
    # the second runs on weights the first has moved: the ratio is off 1 and the clip acts
    mask = second["mask"].bool()
    log_ratio = (second["logprobs"] - second["old"])[mask]
    assert float(log_ratio.abs().max()) > 0.05
    assert abs(second["metrics"]["ratio_mean"] - 1.0) > 1e-3
    assert second["metrics"]["clip_frac"] > 0.0
    # its loss, by hand from what it was given: the clipped surrogate plus 0.05 × k3 KL, token-mean
    ratio = torch.exp(second["logprobs"] - second["old"])
    adv = second["advantages"][:, None]
    surrogate = torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - 0.02, 1 + 0.02))
    d = second["kwargs"]["ref_logprobs"].detach() - second["logprobs"]
    assert float(d[mask].abs().max()) < 20  # policy_loss's clamps (±20 on d, k3 ≤ 10) do not act here
    k3 = torch.exp(d) - d - 1
    assert float(k3[mask].max()) < 10
    hand = float((surrogate + 0.05 * k3)[mask].sum() / mask.sum())
    assert second["loss"] == pytest.approx(hand, rel=1e-4, abs=1e-6)


def test_the_teacher_is_prompted_with_the_rephrased_questions(micro_setup, tmp_path, monkeypatch):
    cfg = step_config(micro_setup, tmp_path, "teacher", "method=co_rewarding_ii", "teacher.view=rephrased")
    trainer, capture = run_scripted(cfg, monkeypatch.setattr, rephrased_teacher_gold=True)
    batch = StepSampler(trainer.items, QUESTIONS, cfg.trainer.seed, cfg.data.shuffle).batch(0)
    (policy_holds, policy_asked), (teacher_holds, teacher_asked) = trainer.engine.calls
    assert policy_holds == id(trainer.policy) and teacher_holds == id(trainer.teacher.model)
    assert policy_asked == [_user_text(a.messages) for a, _ in batch]
    assert teacher_asked == [_user_text(b.messages) for _, b in batch]
    assert teacher_asked != policy_asked
    # every teacher response to a rephrased question boxes the gold answer, so the teacher's vote is the gold
    # and the policy's rewards are PATTERNS': the advantages are HAND's (a teacher asked the originals would
    # vote the patterns' majorities, mostly wrong answers)
    first = capture.updates[0]
    expected = expected_advantages(first["rollouts"], trainer)
    assert first["advantages"] == pytest.approx(expected, abs=ADV_TOL)


# ----------------------------------------------------------------------------- two processes
def _worker(out_dir: str, *config_files: str) -> None:
    """One rank of the 2-process runs: for each config, one scripted step, its raw gradient and advantages
    written to ``<run name>-rank<r>.pt``."""

    def set_attr(obj, name, value):
        setattr(obj, name, value)

    for config_file in config_files:
        cfg = load_config(config_file, [])
        trainer, capture = run_scripted(cfg, set_attr)
        rank = trainer.accelerator.process_index
        assert trainer.accelerator.num_processes == 2 and trainer.strategy == "ddp"
        torch.save(
            {
                "grads": capture.grads[0],
                "norm": capture.norms[0],
                "advantages": capture.updates[0]["advantages"],
                "rollouts": [(r.prompt_ids, r.response_ids) for r in capture.updates[0]["rollouts"]],
            },
            Path(out_dir) / f"{cfg.trainer.run_name}-rank{rank}.pt",
        )


def test_two_processes_make_the_one_process_update(main_run, seq_run, micro_setup, tmp_path, torchrun):
    """Both loss aggregations, since each has its own global normaliser (the tokens, the sequences of all
    processes)."""
    references = {"ddp-token": main_run[1], "ddp-seq": seq_run[1]}
    config_files = []
    for name, agg in (("ddp-token", "token-mean"), ("ddp-seq", "seq-mean-token-mean")):
        config_files.append(tmp_path / f"{name}.yaml")
        save_config(step_config(micro_setup, tmp_path, name, f"grpo.loss_agg={agg}"), config_files[-1])
    # the processes import the package this test imported (a mutation-testing copy, say), not the installed one
    package_root = str(Path(update_module.__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)
    env = {
        **os.environ,
        "PYTHONPATH": path,
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",
    }
    done = torchrun([__file__, tmp_path, *config_files], env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    for name, reference in references.items():
        ranks = [torch.load(tmp_path / f"{name}-rank{r}.pt", weights_only=False) for r in range(2)]
        # each process held half the groups (whole ones); together they are the one-process batch, every
        # response with the advantage it has there
        whole = reference.updates[0]
        one = {
            (tuple(r.prompt_ids), tuple(r.response_ids)): a
            for r, a in zip(whole["rollouts"], whole["advantages"], strict=True)
        }
        two = {
            (tuple(p), tuple(y)): a
            for rank in ranks
            for (p, y), a in zip(rank["rollouts"], rank["advantages"], strict=True)
        }
        assert [len(rank["rollouts"]) for rank in ranks] == [QUESTIONS * G // 2] * 2
        assert two.keys() == one.keys()
        assert [two[k] for k in one] == pytest.approx(list(one.values()), abs=ADV_TOL)
        # after DDP's all-reduce both hold the gradient of the global loss: the one-process one
        for rank in ranks:
            assert _gap(rank["grads"], reference.grads[0]) < GRAD_TOL, name
            assert rank["norm"] == pytest.approx(reference.norms[0], rel=GRAD_TOL), name


if __name__ == "__main__":
    _worker(*sys.argv[1:])
