"""On-policy distillation losses: the student's own tokens, scored by a routed teacher.

| name                   | what it computes                                                        |
|------------------------|-------------------------------------------------------------------------|
| `OPDLossConfig`        | the objective and its settings, with sources                            |
| `sva_terms`            | salient vocabulary alignment per position: on the teacher's top-k ids,  |
|                        | both distributions renormalised, reverse KL(student || teacher)         |
| `topk_kl_terms`        | the same KL without renormalising (collapses: kept to show it does)     |
| `sampled_rkl_terms`    | sampled-token reverse KL: advantage log p_T - log p_S of the sampled id |
| `domain_mean`          | positions -> sample mean -> domain mean -> mean over the batch's domains |
| `opd_loss`             | the objective of a batch, with per-domain coverage, top-k mass, top-1    |
|                        | agreement and loss                                                      |

All tensors are `[batch, tokens]` (or `[batch, tokens, k]`), aligned like
`trainer.grpo.token_logprobs`: position t holds the prediction of token t from tokens < t, and
`mask` marks the student's own tokens (system, user and tool tokens are never trained).

Why renormalise: the unnormalised top-k reverse KL `sum_k p_S(k) (log p_S(k) - log p_T(k))`
goes to 0 as the student moves its mass *off* the teacher's top-k (every term p log p -> 0), so
minimising it can collapse the student; on the renormalised distributions the only minimum is the
teacher's shape on its salient set, and how much mass the student keeps there is reported as
`coverage` (`tests/test_opd_loss.py` shows both behaviours).

>>> import torch
>>> s = torch.log_softmax(torch.tensor([[[2.0, 1.0, 0.0]]]), -1)
>>> ids = torch.tensor([[[0, 1]]]); t = torch.log(torch.tensor([[[0.6, 0.3]]]))
>>> round(float(sva_terms(s, ids, t).kl[0, 0]), 4)
0.0097
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

__all__ = [
    "OPDLossConfig",
    "PositionTerms",
    "sva_terms",
    "topk_kl_terms",
    "sampled_rkl_terms",
    "domain_mean",
    "opd_loss",
]

Objective = Literal["sva", "sampled_rkl", "topk_kl"]


@dataclass(frozen=True, kw_only=True, slots=True)
class OPDLossConfig:
    """The distillation objective.

    >>> OPDLossConfig().objective, OPDLossConfig().top_k
    ('sva', 16)
    """

    #: "sva" (salient vocabulary alignment, the Agents-A1 recipe's OPD loss), "sampled_rkl"
    #: (the sampled-token reverse-KL policy gradient of on-policy distillation, Agarwal et al.
    #: 2024 / Thinking Machines 2025) or "topk_kl" (unnormalised top-k KL, a known-bad baseline)
    objective: Objective = "sva"
    #: teacher ids per position: 16 keeps >95% of a peaked teacher's mass at a small cost
    #: (the paper's salient set; vLLM's `logprobs` caps at 20 by default)
    top_k: int = 16
    #: weight of the MoE load-balancing loss (Qwen3-MoE's `router_aux_loss_coef`, 0.001)
    aux_coef: float = 0.001

    def __post_init__(self) -> None:
        if self.objective not in ("sva", "sampled_rkl", "topk_kl"):
            raise ValueError(
                f"objective must be 'sva', 'sampled_rkl' or 'topk_kl', got {self.objective!r}"
            )
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.aux_coef < 0:
            raise ValueError(f"aux_coef must be >= 0, got {self.aux_coef}")


@dataclass(frozen=True, slots=True)
class PositionTerms:
    """Per-position `[batch, tokens]` values: the loss term `kl` (what is averaged and
    minimised), the student's probability mass on the teacher's top-k (`coverage`), the teacher's
    own top-k mass (`teacher_mass`) and whether the student's argmax is the teacher's top-1."""

    kl: torch.Tensor
    coverage: torch.Tensor
    teacher_mass: torch.Tensor
    top1_agree: torch.Tensor


def _common(
    student_logp: torch.Tensor, topk_ids: torch.Tensor, topk_logp: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    if student_logp.dim() != 3 or topk_ids.shape != topk_logp.shape:
        raise ValueError(
            "student log-probs must be [batch, tokens, vocab] and the teacher's top-k ids and "
            f"log-probs [batch, tokens, k] alike; got {tuple(student_logp.shape)}, "
            f"{tuple(topk_ids.shape)} and {tuple(topk_logp.shape)}"
        )
    s_k = student_logp.gather(-1, topk_ids)
    coverage = s_k.exp().sum(-1)
    teacher_mass = topk_logp.exp().sum(-1)
    agree = (student_logp.argmax(-1) == topk_ids[..., 0]).float()
    return s_k, coverage, teacher_mass, agree


def sva_terms(
    student_logp: torch.Tensor, topk_ids: torch.Tensor, topk_logp: torch.Tensor
) -> PositionTerms:
    """Salient vocabulary alignment: renormalise the student's and the teacher's log-probs over
    the teacher's top-k ids, then KL(student || teacher) over that set, per position.

    `student_logp` is the student's full log-softmax `[B, T, V]`; `topk_ids`/`topk_logp` the
    teacher's top-k `[B, T, K]` (ids sorted by teacher probability, first = top-1).
    """
    s_k, coverage, teacher_mass, agree = _common(student_logp, topk_ids, topk_logp)
    s_ren = s_k - torch.logsumexp(s_k, -1, keepdim=True)
    t_ren = topk_logp - torch.logsumexp(topk_logp, -1, keepdim=True)
    kl = (s_ren.exp() * (s_ren - t_ren)).sum(-1)
    return PositionTerms(kl, coverage, teacher_mass, agree)


def topk_kl_terms(
    student_logp: torch.Tensor, topk_ids: torch.Tensor, topk_logp: torch.Tensor
) -> PositionTerms:
    """The unnormalised top-k reverse KL `sum_k p_S(k) (log p_S(k) - log p_T(k))`: lowered by
    moving student mass off the top-k, so it collapses coverage (a baseline, not a default)."""
    s_k, coverage, teacher_mass, agree = _common(student_logp, topk_ids, topk_logp)
    kl = (s_k.exp() * (s_k - topk_logp)).sum(-1)
    return PositionTerms(kl, coverage, teacher_mass, agree)


def sampled_rkl_terms(
    student_logp: torch.Tensor,
    input_ids: torch.Tensor,
    teacher_sampled_logp: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_logp: torch.Tensor,
) -> PositionTerms:
    """Sampled-token reverse KL as a policy gradient: per position the surrogate
    `-(log p_T(x_t) - log p_S(x_t)).detach() * log p_S(x_t)`, whose gradient is that of the
    reverse KL estimated at the token the student sampled. `kl` holds the surrogate; the
    reported coverage and agreement use the teacher's top-k as for SVA.
    """
    _, coverage, teacher_mass, agree = _common(student_logp, topk_ids, topk_logp)
    picked = student_logp.gather(-1, input_ids[..., None])[..., 0]
    advantage = (teacher_sampled_logp - picked).detach()
    return PositionTerms(-advantage * picked, coverage, teacher_mass, agree)


def domain_mean(values: torch.Tensor, mask: torch.Tensor, domains: Sequence[str]) -> torch.Tensor:
    """Mean over each sample's masked positions, then over the samples of each domain, then
    over the domains present (samples without a masked position count for nothing).

    >>> v = torch.tensor([[1.0, 3.0], [5.0, 0.0], [10.0, 0.0]])
    >>> m = torch.tensor([[True, True], [True, False], [True, False]])
    >>> float(domain_mean(v, m, ["a", "a", "b"]))   # ((2 + 5) / 2 + 10) / 2
    6.75
    """
    if values.shape != mask.shape or len(domains) != values.shape[0]:
        raise ValueError(
            f"values {tuple(values.shape)}, mask {tuple(mask.shape)} and {len(domains)} domains "
            "must agree"
        )
    m = mask.to(values.dtype)
    counts = m.sum(-1)
    per_sample = (values * m).sum(-1) / counts.clamp(min=1)
    per_domain = []
    for d in dict.fromkeys(domains):
        rows = [i for i, x in enumerate(domains) if x == d and counts[i] > 0]
        if rows:
            per_domain.append(per_sample[rows].mean())
    if not per_domain:
        return values.sum() * 0.0
    return torch.stack(per_domain).mean()


def opd_loss(
    student_logp: torch.Tensor,
    input_ids: torch.Tensor,
    mask: torch.Tensor,
    domains: Sequence[str],
    *,
    topk_ids: torch.Tensor,
    topk_logp: torch.Tensor,
    teacher_sampled_logp: torch.Tensor | None = None,
    config: OPDLossConfig = OPDLossConfig(),
    aux_loss: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The batch's loss (domain-normalised, see `domain_mean`) and its metrics: `loss`,
    `objective_loss`, `coverage`, `teacher_mass`, `top1_agree`, `moe_aux_loss`, and the same
    four per domain as `loss/DOMAIN`, `coverage/DOMAIN`, `teacher_mass/DOMAIN`,
    `top1_agree/DOMAIN`."""
    if config.objective == "sva":
        terms = sva_terms(student_logp, topk_ids, topk_logp)
    elif config.objective == "topk_kl":
        terms = topk_kl_terms(student_logp, topk_ids, topk_logp)
    else:
        if teacher_sampled_logp is None:
            raise ValueError(
                "the sampled_rkl objective needs the teacher's sampled-token log-probs"
            )
        terms = sampled_rkl_terms(
            student_logp, input_ids, teacher_sampled_logp, topk_ids, topk_logp
        )
    loss = domain_mean(terms.kl, mask, domains)
    total = loss
    metrics: dict[str, float] = {"objective_loss": float(loss.detach())}
    if aux_loss is not None and config.aux_coef > 0:
        total = total + config.aux_coef * aux_loss
        metrics["moe_aux_loss"] = float(aux_loss.detach())
    metrics["loss"] = float(total.detach())
    for name, values in (
        ("coverage", terms.coverage),
        ("teacher_mass", terms.teacher_mass),
        ("top1_agree", terms.top1_agree),
    ):
        metrics[name] = float(domain_mean(values.detach(), mask, domains))
    for d in dict.fromkeys(domains):
        rows = [i for i, x in enumerate(domains) if x == d]
        sub = mask[rows]
        if not bool(sub.any()):
            continue
        dom = [d] * len(rows)
        metrics[f"loss/{d}"] = float(domain_mean(terms.kl[rows].detach(), sub, dom))
        metrics[f"coverage/{d}"] = float(domain_mean(terms.coverage[rows].detach(), sub, dom))
        metrics[f"teacher_mass/{d}"] = float(
            domain_mean(terms.teacher_mass[rows].detach(), sub, dom)
        )
        metrics[f"top1_agree/{d}"] = float(domain_mean(terms.top1_agree[rows].detach(), sub, dom))
    return total, metrics
