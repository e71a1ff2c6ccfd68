"""The GRPO objective against numbers worked out by hand (trainer.grpo_loss).

Every expected value is derived in the test from the formula, on tensors small enough to check
on paper; none is copied from the code's output.
"""

from __future__ import annotations

import math

import pytest
import torch

from trainer.grpo_loss import (
    GRPOLossConfig,
    aggregate,
    filter_uniform_groups,
    group_advantages,
    grpo_loss,
    k3,
    process_advantages,
    token_advantages,
)

NO_KL = GRPOLossConfig(kl_coef=0.0, tis_cap=None)


def test_group_advantages_normalise_each_group_by_its_own_mean_and_sample_std():
    rewards = [1.0, 0.0, 0.0, 0.7, 0.7, 0.3]
    groups = ["a", "a", "a", "b", "b", "c"]
    # group a: mean 1/3; sample std sqrt(((2/3)^2 + 2 (1/3)^2) / 2) = sqrt(1/3)
    std = math.sqrt(1 / 3)
    expected = [(2 / 3) / std, (-1 / 3) / std, (-1 / 3) / std, 0.0, 0.0, 0.0]
    got = group_advantages(rewards, groups, eps=0.0).tolist()
    assert got == pytest.approx(expected, abs=1e-6)
    # Dr. GRPO: centred only
    unscaled = group_advantages(rewards, groups, scale_by_std=False).tolist()
    assert unscaled == pytest.approx([2 / 3, -1 / 3, -1 / 3, 0, 0, 0], abs=1e-6)


def test_uniform_group_gives_exact_zero_advantages_not_rounding_noise():
    # the float mean of three 0.1s is not 0.1: a naive (r - mean) / (0 + eps) gives ~1e-11
    adv = group_advantages([0.1, 0.1, 0.1], ["g", "g", "g"], eps=1e-12)
    assert adv.tolist() == [0.0, 0.0, 0.0]


def test_group_advantages_reject_mismatched_group_ids_and_non_finite_rewards():
    with pytest.raises(ValueError, match="group ids"):
        group_advantages([1.0, 0.0], ["a"])
    with pytest.raises(ValueError, match="finite"):
        group_advantages([1.0, float("nan")], ["a", "a"])


def test_dynamic_sampling_drops_groups_whose_rewards_all_agree():
    rewards = [1.0, 1.0, 0.0, 0.95, 0.45, 0.45, 0.5, 0.52]
    groups = [0, 0, 1, 1, 2, 2, 3, 3]
    f = filter_uniform_groups(rewards, groups)
    assert f.kept == (1, 3) and f.dropped == (0, 2) and f.n_dropped == 2
    assert f.rollout_mask == (False, False, True, True, False, False, True, True)
    # within tolerance 0.05, group 3 (0.50 vs 0.52) counts as uniform too
    assert filter_uniform_groups(rewards, groups, tol=0.05).dropped == (0, 2, 3)


def test_process_advantage_goes_to_failed_rollouts_normalised_over_the_failed_ones():
    # group g: rollout 0 failed (steps 1, 0), rollout 1 accepted, rollout 2 failed (step 0)
    # pool of failed steps [1, 0, 0]: mean 1/3, population std sqrt(2/9)
    std = math.sqrt(2 / 9)
    hi, lo = 0.5 * (2 / 3) / std, 0.5 * (-1 / 3) / std
    # group h: the only failed rollout has steps (0.5, 0.5): no spread, no process signal
    adv = process_advantages(
        [[1.0, 0.0], [1.0, 0.0], [0.0], [0.5, 0.5], [1.0]],
        [False, True, False, False, True],
        ["g", "g", "g", "h", "h"],
        eps=0.0,
    )
    assert adv[0] == pytest.approx([hi, lo])
    assert adv[1] == [0.0, 0.0]  # a success is never pushed by its steps
    assert adv[2] == pytest.approx([lo])
    assert adv[3] == [0.0, 0.0] and adv[4] == [0.0]


def test_papo_variant_gives_the_process_advantage_to_correct_rollouts_only():
    # correct pool [1, 0, 1, 1]: mean 0.75, population std sqrt(0.1875)
    std = math.sqrt(0.1875)
    adv = process_advantages(
        [[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], [True, True, False], ["g"] * 3, papo=True, eps=0.0
    )
    assert adv[0] == pytest.approx([0.5 * 0.25 / std, 0.5 * -0.75 / std])
    assert adv[1] == pytest.approx([0.5 * 0.25 / std] * 2)
    assert adv[2] == [0.0, 0.0]


def test_token_advantages_put_each_turns_mean_step_advantage_on_that_turns_tokens():
    # tokens: prompt(-1) x2, assistant message 2 x3, tool(-1), assistant message 4 x2
    turns = [-1, -1, 2, 2, 2, -1, 4, 4]
    # message 2 made two calls (steps 0 and 1), message 4 only answered
    got = token_advantages(turns, -0.5, step_turns=[2, 2], step_advantages=[0.3, -0.1]).tolist()
    assert got == pytest.approx([-0.5, -0.5, -0.4, -0.4, -0.4, -0.5, -0.5, -0.5])
    with pytest.raises(ValueError, match="message 3"):
        token_advantages(turns, 0.0, step_turns=[3], step_advantages=[0.1])


def test_k3_is_schulmans_low_variance_kl_estimate():
    # x = log(0.25 / 0.5): e^x - x - 1 = 0.5 + ln 2 - 1
    got = k3(torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)]))
    assert got.item() == pytest.approx(0.5 + math.log(2) - 1, abs=1e-6)
    assert k3(torch.tensor([0.3]), torch.tensor([0.3])).item() == 0.0


def test_aggregation_token_mean_and_sequence_mean():
    values = torch.tensor([[1.0, 2.0, 3.0], [10.0, 0.0, 0.0], [7.0, 7.0, 7.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]], dtype=torch.bool)
    assert aggregate(values, mask, "token-mean").item() == pytest.approx(16 / 4)
    # (2 + 10) / 2: the empty third sequence does not count
    assert aggregate(values, mask, "sequence-mean").item() == pytest.approx(6.0)


def _clip_batch():
    # seq 0 has A = +1 and ratios 1.5, 1.1, 0.5; seq 1 has A = -1 and ratios 0.5, 1.5 (+ pad)
    ratios = torch.tensor([[1.5, 1.1, 0.5], [0.5, 1.5, 1.0]])
    old = torch.tensor([[-1.0, -2.0, -0.5], [-0.7, -1.2, -3.0]])
    logp = (old + ratios.log()).clone().requires_grad_(True)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    return logp, old, torch.tensor([1.0, -1.0]), mask


def test_asymmetric_clipping_token_mean():
    logp, old, adv, mask = _clip_batch()
    loss, m = grpo_loss(logp, old, adv, mask, config=NO_KL)
    # per token max(-A r, -A clip(r, 0.8, 1.28)):
    # seq 0: max(-1.5, -1.28) = -1.28, -1.1, max(-0.5, -0.8) = -0.5
    # seq 1: max(0.5, 0.8) = 0.8, max(1.5, 1.28) = 1.5
    assert loss.item() == pytest.approx((-1.28 - 1.1 - 0.5 + 0.8 + 1.5) / 5, abs=1e-6)
    assert m["clip_frac"] == pytest.approx(2 / 5)
    assert m["clip_high_frac"] == pytest.approx(1 / 5) and m["clip_low_frac"] == pytest.approx(
        1 / 5
    )
    assert m["aggregation"] == 0.0 and m["n_tokens"] == 5
    loss.backward()
    # d/dlogp of -A r is -A r; clipped tokens and the pad get no gradient
    expected = torch.tensor([[0.0, -1.1, -0.5], [0.0, 1.5, 0.0]]) / 5
    assert torch.allclose(logp.grad, expected, atol=1e-6)


def test_sequence_mean_aggregation_is_explicit():
    logp, old, adv, mask = _clip_batch()
    config = GRPOLossConfig(kl_coef=0.0, tis_cap=None, aggregation="sequence-mean")
    loss, m = grpo_loss(logp, old, adv, mask, config=config)
    # seq 0 mean (-1.28 - 1.1 - 0.5) / 3, seq 1 mean (0.8 + 1.5) / 2
    assert loss.item() == pytest.approx(((-2.88 / 3) + (2.3 / 2)) / 2, abs=1e-6)
    assert m["aggregation"] == 1.0


def test_kl_to_the_reference_is_k3_weighted_by_kl_coef():
    logp = torch.zeros(1, 2, requires_grad=True)
    ref = torch.full((1, 2), math.log(0.5))
    mask = torch.ones(1, 2, dtype=torch.bool)
    config = GRPOLossConfig(kl_coef=0.1, tis_cap=None)
    loss, m = grpo_loss(logp, torch.zeros(1, 2), torch.zeros(1), mask, config=config, ref_logp=ref)
    per_token = 0.5 + math.log(2) - 1  # e^x - x - 1 at x = ln 0.5
    assert m["kl"] == pytest.approx(per_token, abs=1e-6)
    assert loss.item() == pytest.approx(0.1 * per_token, abs=1e-6)
    loss.backward()
    # d/dlogp (e^(ref - logp) + logp) = 1 - e^(ref - logp) = 0.5, token-mean over 2
    assert torch.allclose(logp.grad, torch.full((1, 2), 0.1 * 0.5 / 2))


def test_kl_coef_zero_runs_without_a_reference_and_kl_needs_one_otherwise():
    logp, old, adv, mask = _clip_batch()
    _, m = grpo_loss(logp, old, adv, mask, config=NO_KL)
    assert m["kl"] == 0.0
    with pytest.raises(ValueError, match="ref_logp"):
        grpo_loss(logp, old, adv, mask, config=GRPOLossConfig(kl_coef=0.001))


def test_entropy_bonus_and_moe_aux_loss_enter_with_their_coefficients():
    logp = torch.zeros(1, 2, requires_grad=True)
    mask = torch.ones(1, 2, dtype=torch.bool)
    config = GRPOLossConfig(kl_coef=0.0, tis_cap=None, entropy_coef=0.01, moe_aux_coef=0.5)
    entropy = torch.tensor([[2.0, 4.0]])
    loss, m = grpo_loss(
        logp,
        torch.zeros(1, 2),
        torch.ones(1),
        mask,
        config=config,
        entropy=entropy,
        moe_aux_loss=torch.tensor(3.0),
    )
    # pg = -1 (ratio 1, A 1); entropy mean 3; aux 3
    assert loss.item() == pytest.approx(-1.0 - 0.01 * 3.0 + 0.5 * 3.0)
    assert m["entropy"] == pytest.approx(3.0) and m["moe_aux_loss"] == pytest.approx(3.0)


def test_truncated_importance_weights_and_mismatch_figures():
    old = torch.tensor([[-1.0, -1.0, -1.0]])
    # old - rollout = ln 3, ln 1.5, ln 0.5: weights min(3, 2) = 2, 1.5, 0.5
    rollout = old - torch.tensor([[math.log(3.0), math.log(1.5), math.log(0.5)]])
    logp = old.clone().requires_grad_(True)
    mask = torch.ones(1, 3, dtype=torch.bool)
    loss, m = grpo_loss(
        logp, old, torch.ones(1), mask, config=GRPOLossConfig(kl_coef=0.0), rollout_logp=rollout
    )
    assert loss.item() == pytest.approx(-(2.0 + 1.5 + 0.5) / 3, abs=1e-6)
    assert m["tis_weight_mean"] == pytest.approx(4.0 / 3, abs=1e-6)
    assert m["tis_capped_frac"] == pytest.approx(1 / 3)
    assert m["mismatch_abs_logp"] == pytest.approx(
        (math.log(3) + math.log(1.5) + math.log(2)) / 3, abs=1e-6
    )
    # k3 of the trainer against the engine on the engine's samples: e^x - x - 1, x = old - rollout
    k3s = [x - math.log(x) - 1 for x in (3.0, 1.5, 0.5)]
    assert m["mismatch_k3"] == pytest.approx(sum(k3s) / 3, abs=1e-6)
    assert m["masked_frac"] == 0.0
    loss.backward()
    # the weight is detached: gradient -A * r * w / n with r = 1
    assert torch.allclose(logp.grad, -torch.tensor([[2.0, 1.5, 0.5]]) / 3)


def test_geometric_mean_mask_drops_whole_sequences_outside_its_bounds():
    old = torch.zeros(2, 2)
    # seq 0: gaps +0.01, -0.01 -> geometric mean 1 (kept); seq 1: gaps 0.2, 0.2 -> e^0.2 (dropped)
    rollout = old - torch.tensor([[0.01, -0.01], [0.2, 0.2]])
    logp = old.clone().requires_grad_(True)
    mask = torch.ones(2, 2, dtype=torch.bool)
    config = GRPOLossConfig(kl_coef=0.0, tis_cap=None, geo_mask=(0.9, 1.1))
    loss, m = grpo_loss(
        logp, old, torch.tensor([1.0, -1.0]), mask, config=config, rollout_logp=rollout
    )
    assert m["masked_frac"] == pytest.approx(0.5)
    assert m["n_tokens"] == 2
    assert loss.item() == pytest.approx(-1.0)  # only seq 0 (A = +1, ratio 1) is left
    loss.backward()
    assert logp.grad[1].abs().sum().item() == 0.0


def test_config_rejects_bad_values_with_the_field_named():
    with pytest.raises(ValueError, match="aggregation"):
        GRPOLossConfig(aggregation="mean")
    with pytest.raises(ValueError, match="kl_coef"):
        GRPOLossConfig(kl_coef=-1.0)
    with pytest.raises(ValueError, match="geo_mask"):
        GRPOLossConfig(geo_mask=(1.1, 0.9))
    with pytest.raises(ValueError, match="advantages"):
        grpo_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3), torch.ones(2, 3))
