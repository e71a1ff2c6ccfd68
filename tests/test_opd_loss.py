"""OPD losses against values worked out by hand: salient vocabulary alignment (SVA), coverage,
renormalisation, the domain-normalised mean, the sampled-token reverse KL, and why the
unnormalised top-k KL collapses while SVA does not."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.opd_loss import (
    OPDLossConfig,
    domain_mean,
    opd_loss,
    sampled_rkl_terms,
    sva_terms,
    topk_kl_terms,
)


def _one(probs: list[float]) -> torch.Tensor:
    return torch.log(torch.tensor([[probs]]))


def test_sva_renormalises_both_sides_on_the_teachers_top_k():
    student = _one([0.5, 0.2, 0.3])  # vocabulary of 3
    ids = torch.tensor([[[2, 0]]])  # the teacher's top-2: token 2 first, then 0
    teacher = torch.log(torch.tensor([[[0.6, 0.2]]]))
    terms = sva_terms(student, ids, teacher)
    # student on {2, 0}: 0.3, 0.5 -> renormalised 0.375, 0.625; teacher 0.6, 0.2 -> 0.75, 0.25
    kl = 0.375 * math.log(0.375 / 0.75) + 0.625 * math.log(0.625 / 0.25)
    assert float(terms.kl[0, 0]) == pytest.approx(kl, rel=1e-5)
    assert float(terms.coverage[0, 0]) == pytest.approx(0.8)
    assert float(terms.teacher_mass[0, 0]) == pytest.approx(0.8)
    assert float(terms.top1_agree[0, 0]) == 0.0  # the student's argmax is 0, the teacher's 2


def test_sva_is_zero_when_the_student_has_the_teachers_shape_at_any_mass():
    ids = torch.tensor([[[0, 1]]])
    teacher = torch.log(torch.tensor([[[0.6, 0.3]]]))
    # the same 2:1 ratio on the top-2, with only 30% of the student's mass there
    student = _one([0.2, 0.1, 0.7])
    terms = sva_terms(student, ids, teacher)
    assert float(terms.kl[0, 0]) == pytest.approx(0.0, abs=1e-6)
    assert float(terms.coverage[0, 0]) == pytest.approx(0.3)


def test_unnormalised_top_k_kl_is_the_plain_sum_over_the_top_k():
    student = _one([0.5, 0.2, 0.3])
    ids = torch.tensor([[[2, 0]]])
    teacher = torch.log(torch.tensor([[[0.6, 0.2]]]))
    terms = topk_kl_terms(student, ids, teacher)
    kl = 0.3 * math.log(0.3 / 0.6) + 0.5 * math.log(0.5 / 0.2)
    assert float(terms.kl[0, 0]) == pytest.approx(kl, rel=1e-5)


def test_domain_mean_averages_positions_then_samples_then_domains():
    values = torch.tensor([[1.0, 3.0, 9.0], [4.0, 0.0, 0.0], [10.0, 20.0, 0.0], [7.0, 7.0, 7.0]])
    mask = torch.tensor(
        [[True, True, False], [True, False, False], [True, True, False], [False, False, False]]
    )
    # a: samples (1+3)/2 = 2 and 4 -> 3; b: (10+20)/2 = 15; the last sample has no position
    got = domain_mean(values, mask, ["a", "a", "b", "b"])
    assert float(got) == pytest.approx((3 + 15) / 2)
    # one long sample does not outweigh a short one of its domain, nor a domain the other
    assert float(domain_mean(values, mask, ["a", "b", "b", "b"])) == pytest.approx(
        (2 + (4 + 15) / 2) / 2
    )
    with pytest.raises(ValueError, match="must agree"):
        domain_mean(values, mask, ["a"])


def test_opd_loss_reports_each_domain_and_counts_only_model_tokens():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, requires_grad=True)
    student = torch.log_softmax(logits, -1)
    ids = torch.tensor([[[0, 1], [2, 3], [4, 0]], [[1, 2], [3, 4], [0, 1]]])
    teacher = torch.log(torch.tensor([0.5, 0.25])).expand(2, 3, 2).contiguous()
    mask = torch.tensor([[False, True, True], [False, True, False]])
    input_ids = torch.zeros(2, 3, dtype=torch.long)
    loss, m = opd_loss(
        student, input_ids, mask, ["search", "compute"], topk_ids=ids, topk_logp=teacher
    )
    per_pos = sva_terms(student, ids, teacher).kl
    search = (per_pos[0, 1] + per_pos[0, 2]) / 2
    compute = per_pos[1, 1]
    assert float(loss.detach()) == pytest.approx(float((search + compute) / 2), rel=1e-6)
    assert m["loss/search"] == pytest.approx(float(search), rel=1e-6)
    assert m["loss/compute"] == pytest.approx(float(compute), rel=1e-6)
    assert set(m) >= {"coverage/search", "teacher_mass/compute", "top1_agree/search"}
    loss.backward()
    # position 0 of both rows and position 2 of the second are not the model's: no gradient
    assert logits.grad[0, 0].abs().sum() == 0 and logits.grad[1, 2].abs().sum() == 0
    assert logits.grad[0, 1].abs().sum() > 0


def test_sampled_token_reverse_kl_is_a_policy_gradient_on_the_sampled_token():
    logits = torch.tensor([[[1.0, 0.0, -1.0]]], requires_grad=True)
    student = torch.log_softmax(logits, -1)
    sampled = torch.tensor([[1]])
    teacher_logp = torch.tensor([[math.log(0.5)]])
    ids = torch.tensor([[[0, 1]]])
    terms = sampled_rkl_terms(
        student, sampled, teacher_logp, ids, torch.log(torch.tensor([[[0.4, 0.5]]]))
    )
    p = torch.softmax(logits.detach(), -1)[0, 0]
    advantage = math.log(0.5) - math.log(float(p[1]))
    assert float(terms.kl[0, 0]) == pytest.approx(-advantage * math.log(float(p[1])), rel=1e-5)
    terms.kl.sum().backward()
    # d/dlogits of -A * log p_1 = -A * (onehot_1 - p): the teacher likes token 1 more, so it rises
    expected = -advantage * (torch.tensor([0.0, 1.0, 0.0]) - p)
    assert torch.allclose(logits.grad[0, 0], expected, atol=1e-5)
    assert advantage > 0 and logits.grad[0, 0, 1] < 0  # gradient descent raises token 1
    with pytest.raises(ValueError, match="sampled-token"):
        opd_loss(
            student, sampled, torch.ones(1, 1, dtype=torch.bool), ["a"], topk_ids=ids,
            topk_logp=torch.zeros(1, 1, 2), config=OPDLossConfig(objective="sampled_rkl"),
        )  # fmt: skip


def _optimise(objective: str, steps: int = 500) -> tuple[float, float]:
    """Minimise an objective over a free student distribution; return (coverage, loss)."""
    torch.manual_seed(0)
    vocab, k = 12, 3
    ids = torch.tensor([[[0, 1, 2]]])
    teacher = torch.log(torch.tensor([[[0.5, 0.3, 0.1]]]))  # 0.9 of the teacher's mass
    # the student starts as the teacher: the same 0.9 on the top-k, the rest spread evenly
    start = torch.tensor([0.5, 0.3, 0.1] + [0.1 / (vocab - k)] * (vocab - k))
    logits = torch.log(start).view(1, 1, vocab).clone().requires_grad_(True)
    opt = torch.optim.SGD(
        [logits], lr=2.0
    )  # plain gradient descent: no Adam noise on a flat direction
    mask = torch.ones(1, 1, dtype=torch.bool)
    cfg = OPDLossConfig(objective=objective, top_k=k, aux_coef=0.0)  # type: ignore[arg-type]
    for _ in range(steps):
        student = torch.log_softmax(logits, -1)
        loss, m = opd_loss(
            student, torch.zeros(1, 1, dtype=torch.long), mask, ["a"],
            topk_ids=ids, topk_logp=teacher, config=cfg,
        )  # fmt: skip
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m["coverage"], m["loss"]


def test_unnormalised_top_k_kl_collapses_coverage_and_sva_does_not():
    # from a student equal to the teacher (coverage 0.9, both losses 0)
    topk_cov, topk_loss = _optimise("topk_kl")
    sva_cov, sva_loss = _optimise("sva")
    # the unnormalised loss sum_k q log(q/p) falls below 0 as the student moves mass off the
    # top-k: at mass Q in the teacher's shape it is Q log(Q / 0.9), lowest at Q = 0.9 / e
    assert topk_cov == pytest.approx(0.9 / math.e, abs=0.02)
    assert topk_loss == pytest.approx(-0.9 / math.e, abs=0.01)
    # SVA is already at its minimum there and keeps the teacher's mass
    assert sva_cov == pytest.approx(0.9, abs=1e-3) and sva_loss == pytest.approx(0.0, abs=1e-5)


def test_bad_settings_name_what_is_wrong():
    with pytest.raises(ValueError, match="objective"):
        OPDLossConfig(objective="forward_kl")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="top_k"):
        OPDLossConfig(top_k=0)
    with pytest.raises(ValueError, match="batch, tokens, vocab"):
        sva_terms(torch.zeros(2, 3), torch.zeros(2, 3, 1, dtype=torch.long), torch.zeros(2, 3, 1))
