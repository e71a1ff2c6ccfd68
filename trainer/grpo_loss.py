"""The GRPO objective, in plain torch: advantages, dynamic sampling, the clipped loss.

| name                    | what it gives                                                          |
|-------------------------|------------------------------------------------------------------------|
| `GRPOLossConfig`        | every coefficient of the loss, each default with its source           |
| `group_advantages`      | outcome advantages, reward normalised per group (uniform group -> 0)  |
| `filter_uniform_groups` | dynamic sampling: the groups whose rewards all agree, to drop         |
| `process_advantages`    | per-step advantages of the failed rollouts (PAPO: the correct ones)   |
| `token_advantages`      | one rollout's token advantages: outcome + its turns' step advantages  |
| `grpo_loss`             | clipped surrogate + k3 KL + entropy bonus + MoE aux, with TIS weights |

Nothing here knows the graph, the engine or a model: tensors and lists in, tensors and plain
floats out, so every piece can be checked by hand. Log-probabilities are `[batch, tokens]`, the
`mask` marks the model's own tokens (system, user and tool tokens are False).

Three policies meet in one step: the rollout engine that sampled the tokens (`rollout_logp`),
the trainer's weights before the update (`old_logp`) and the weights being trained (`logp`).
The PPO ratio is taken against `old_logp`; the gap between `old_logp` and `rollout_logp` (the
engine computes in another kernel and maybe dtype) is corrected with truncated importance
weights and reported, never trained through.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "AGGREGATIONS",
    "GRPOLossConfig",
    "GroupFilter",
    "group_advantages",
    "filter_uniform_groups",
    "process_advantages",
    "token_advantages",
    "k3",
    "aggregate",
    "grpo_loss",
]

#: how token terms become one number: "token-mean" (every token of the batch weighs the same,
#: DAPO) or "sequence-mean" (mean over each sequence's tokens, then over sequences; GRPO paper)
AGGREGATIONS = ("token-mean", "sequence-mean")


@dataclass(frozen=True, kw_only=True, slots=True)
class GRPOLossConfig:
    """The coefficients of the GRPO loss; read the fields to learn the objective.

    loss = pg + kl_coef * KL(pi || pi_ref) - entropy_coef * H + moe_aux_coef * aux, where
    pg = -min(r * A, clip(r, 1 - clip_low, 1 + clip_high) * A) * w, r = pi / pi_old, and w the
    truncated importance weight of the trainer against the rollout engine.

    >>> GRPOLossConfig(kl_coef=0.0).kl_coef, GRPOLossConfig().aggregation
    (0.0, 'token-mean')
    """

    #: lower clip of the ratio, 1 - 0.2 (PPO's epsilon; DAPO keeps it for the low side)
    clip_low: float = 0.2
    #: upper clip, 1 + 0.28: DAPO's "clip-higher", room for unlikely tokens to grow (entropy collapse)
    clip_high: float = 0.28
    #: weight of the KL to the frozen reference, estimated per token with Schulman's k3
    #: (verl's `low_var_kl`); 0.001 as in verl's GRPO examples (DeepSeekMath used 0.04,
    #: DAPO drops it). 0 turns it off and the reference model need not be run at all
    kl_coef: float = 0.001
    #: entropy bonus on the trained tokens; 0 as verl's `entropy_coeff` default (DAPO uses none):
    #: clip-higher already keeps entropy up. Entropy is always logged when given
    entropy_coef: float = 0.0
    #: "token-mean" (DAPO: long answers are not down-weighted) or "sequence-mean" (GRPO paper)
    aggregation: str = "token-mean"
    #: cap of the token-level truncated importance weight exp(old_logp - rollout_logp)
    #: ("TIS", Yao et al. 2025, Flash-RL; verl's `tis_imp_ratio_cap` is 2.0). None: no weights
    tis_cap: float | None = 2.0
    #: drop whole sequences whose geometric-mean ratio exp(mean(old_logp - rollout_logp)) falls
    #: outside these bounds (a sequence-level mismatch mask, chosen here; a per-token mean moves
    #: little, so the bounds sit near 1). None: off
    geo_mask: tuple[float, float] | None = None
    #: weight of the process advantage added to the failed rollouts' step tokens (Agents-A1)
    process_weight: float = 0.5
    #: PAPO variant: the process advantage goes to the correct rollouts only (instead of failed)
    papo: bool = False
    #: MoE load-balancing loss weight; 0.001 is Qwen3-MoE's `router_aux_loss_coef`, as in SFT
    moe_aux_coef: float = 0.001
    #: added to the group std before dividing (TRL's and verl's 1e-4 / 1e-6 scale)
    eps: float = 1e-6

    def __post_init__(self) -> None:
        if not 0 <= self.clip_low < 1:
            raise ValueError(f"clip_low must be in [0, 1), got {self.clip_low}")
        if self.clip_high < 0:
            raise ValueError(f"clip_high must be >= 0, got {self.clip_high}")
        for name in ("kl_coef", "entropy_coef", "process_weight", "moe_aux_coef"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}")
        if self.tis_cap is not None and not self.tis_cap > 0:
            raise ValueError(f"tis_cap must be positive or None, got {self.tis_cap}")
        if self.geo_mask is not None:
            lo, hi = self.geo_mask
            if not 0 < lo < hi:
                raise ValueError(f"geo_mask must be (low, high) with 0 < low < high, got {lo, hi}")
        if not self.eps > 0:
            raise ValueError(f"eps must be positive, got {self.eps}")


def _groups(group_ids: Sequence[Hashable], n: int) -> dict[Hashable, list[int]]:
    if len(group_ids) != n:
        raise ValueError(f"{len(group_ids)} group ids for {n} rewards; give one per rollout")
    members: dict[Hashable, list[int]] = {}
    for i, g in enumerate(group_ids):
        members.setdefault(g, []).append(i)
    return members


def _as_float(values: Sequence[float] | torch.Tensor, name: str) -> torch.Tensor:
    out = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    if not torch.isfinite(out).all():
        raise ValueError(f"{name} must be finite, got {out.tolist()}")
    return out


def group_advantages(
    rewards: Sequence[float] | torch.Tensor,
    group_ids: Sequence[Hashable],
    *,
    eps: float = 1e-6,
    scale_by_std: bool = True,
) -> torch.Tensor:
    """GRPO outcome advantages: (r - group mean) / (group std + eps), float32 `[n]`.

    The std is the sample std (Bessel's correction, as `torch.std` in TRL and verl). A group whose
    rewards all agree (or a group of one) gives exactly 0, not rounding noise over `eps`.
    `scale_by_std=False` is Dr. GRPO's unscaled variant (r - mean).

    >>> [round(a, 4) for a in group_advantages([1.0, 0.0, 0.5, 0.5], ["a", "a", "b", "b"]).tolist()]
    [0.7071, -0.7071, 0.0, 0.0]
    """
    r = _as_float(rewards, "rewards")
    out = torch.zeros_like(r)
    for idx in _groups(group_ids, r.numel()).values():
        g = r[idx]
        if len(idx) < 2 or bool((g == g[0]).all()):
            continue
        centred = g - g.mean()
        out[idx] = centred / (g.std() + eps) if scale_by_std else centred
    return out.float()


@dataclass(frozen=True, slots=True)
class GroupFilter:
    """Which groups dynamic sampling keeps: `kept` / `dropped` group ids in first-seen order.

    `rollout_mask[i]` is True when rollout `i` belongs to a kept group.
    """

    kept: tuple[Hashable, ...]
    dropped: tuple[Hashable, ...]
    rollout_mask: tuple[bool, ...]

    @property
    def n_dropped(self) -> int:
        return len(self.dropped)


def filter_uniform_groups(
    rewards: Sequence[float] | torch.Tensor, group_ids: Sequence[Hashable], *, tol: float = 0.0
) -> GroupFilter:
    """Dynamic sampling (DAPO): drop the groups whose rewards all lie within `tol` of each other.

    Such a group has zero advantage everywhere and only dilutes the batch; the trainer refills
    the batch with new prompts up to its limit and counts the dropped ones.

    >>> f = filter_uniform_groups([1, 1, 0, 1, 0.5, 0.5], ["a", "a", "b", "b", "c", "c"])
    >>> f.kept, f.dropped, f.rollout_mask
    (('b',), ('a', 'c'), (False, False, True, True, False, False))
    """
    if tol < 0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    r = _as_float(rewards, "rewards")
    kept, dropped = [], []
    mask = [False] * r.numel()
    for g, idx in _groups(group_ids, r.numel()).items():
        values = r[idx]
        if float(values.max() - values.min()) <= tol:
            dropped.append(g)
        else:
            kept.append(g)
            for i in idx:
                mask[i] = True
    return GroupFilter(tuple(kept), tuple(dropped), tuple(mask))


def process_advantages(
    step_scores: Sequence[Sequence[float]],
    accepted: Sequence[bool],
    group_ids: Sequence[Hashable],
    *,
    weight: float = 0.5,
    papo: bool = False,
    eps: float = 1e-6,
) -> list[list[float]]:
    """Per-step process advantages: step scores of the FAILED rollouts of a group, normalised.

    `step_scores[i]` are rollout `i`'s per-step scores (the `tool_step` verification of each tool
    Step, in order). Within each group the steps of the failed rollouts are pooled and each gets
    `weight * (s - mean) / (std + eps)` (population std over the pooled steps); every other
    rollout's steps get 0, as do pools whose scores all agree. So a failed rollout's good steps are
    pushed up against its bad ones, and a success is never penalised for a detour (Agents-A1).
    `papo=True` is the correct-only variant: the accepted rollouts' steps are the pool instead.

    >>> adv = process_advantages([[1.0, 0.0], [1.0], [0.0]], [False, True, False], ["g"] * 3)
    >>> [[round(a, 4) for a in steps] for steps in adv]
    [[0.7071, -0.3536], [0.0], [-0.3536]]
    """
    n = len(step_scores)
    if len(accepted) != n:
        raise ValueError(f"{len(accepted)} accepted flags for {n} rollouts; give one per rollout")
    if weight < 0:
        raise ValueError(f"weight must be >= 0, got {weight}")
    out = [[0.0] * len(s) for s in step_scores]
    for idx in _groups(group_ids, n).values():
        pool = [i for i in idx if bool(accepted[i]) == papo]
        scores = [float(s) for i in pool for s in step_scores[i]]
        if not all(math.isfinite(s) for s in scores):
            raise ValueError(f"step scores must be finite, got {scores}")
        if len(scores) < 2 or max(scores) == min(scores):
            continue
        mean = sum(scores) / len(scores)
        std = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
        for i in pool:
            out[i] = [weight * (float(s) - mean) / (std + eps) for s in step_scores[i]]
    return out


def token_advantages(
    token_turns: Sequence[int] | torch.Tensor,
    outcome: float,
    *,
    step_turns: Sequence[int] = (),
    step_advantages: Sequence[float] = (),
) -> torch.Tensor:
    """One rollout's advantage per token: `outcome` everywhere, plus on the tokens of each
    assistant turn the mean process advantage of the steps that turn made.

    `token_turns[t]` is the message index of the assistant turn token `t` belongs to (-1 for
    prompt, user and tool tokens), as `trainer.data.render_turns` gives it; `step_turns[j]` the
    message index of the assistant turn that issued step `j`'s call.

    >>> token_advantages([-1, 1, 1, -1, 3], 0.5, step_turns=[1], step_advantages=[-0.25]).tolist()
    [0.5, 0.25, 0.25, 0.5, 0.5]
    """
    turns = torch.as_tensor(token_turns, dtype=torch.long).reshape(-1)
    if len(step_turns) != len(step_advantages):
        raise ValueError(f"{len(step_turns)} step turns for {len(step_advantages)} step advantages")
    out = torch.full(turns.shape, float(outcome), dtype=torch.float32)
    per_turn: dict[int, list[float]] = {}
    for turn, adv in zip(step_turns, step_advantages, strict=True):
        per_turn.setdefault(int(turn), []).append(float(adv))
    present = set(turns.tolist())
    for turn, advs in per_turn.items():
        if turn not in present:
            raise ValueError(f"step made by message {turn}, which has no assistant tokens")
        out[turns == turn] += sum(advs) / len(advs)
    return out


def k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimate of KL(pi || ref) per token from samples of pi: e^x - x - 1, x =
    ref_logp - logp; unbiased, always >= 0 (verl's `low_var_kl`, clamped to [-10, 10] like it).

    >>> round(k3(torch.tensor([0.0]), torch.tensor([math.log(0.5)])).item(), 6)
    0.193147
    """
    x = ref_logp - logp
    return (torch.exp(x) - x - 1).clamp(-10.0, 10.0)


def aggregate(values: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Reduce `[batch, tokens]` token terms over `mask` to one scalar ("token-mean" or
    "sequence-mean"; sequences without a masked token do not count). Empty: 0.

    >>> v, m = torch.tensor([[1.0, 3.0], [5.0, 0.0]]), torch.tensor([[True, True], [True, False]])
    >>> aggregate(v, m, "token-mean").item(), aggregate(v, m, "sequence-mean").item()
    (3.0, 3.5)
    """
    m = mask.to(values.dtype)
    if mode == "token-mean":
        return (values * m).sum() / m.sum().clamp_min(1.0)
    if mode == "sequence-mean":
        counts = m.sum(dim=-1)
        per_seq = (values * m).sum(dim=-1) / counts.clamp_min(1.0)
        has = (counts > 0).to(values.dtype)
        return (per_seq * has).sum() / has.sum().clamp_min(1.0)
    raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {mode!r}")


def _check_shape(name: str, t: torch.Tensor | None, shape: torch.Size) -> None:
    if t is not None and t.shape != shape:
        raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(shape)} like logp")


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    config: GRPOLossConfig = GRPOLossConfig(),
    ref_logp: torch.Tensor | None = None,
    rollout_logp: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
    moe_aux_loss: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The GRPO loss of one batch and its metrics (see `GRPOLossConfig` for the formula).

    `logp`, `old_logp`, `ref_logp`, `rollout_logp`, `entropy` and `mask` are `[batch, tokens]`;
    `advantages` is `[batch, tokens]` or `[batch]` (one per sequence). Only `logp` (and `entropy`,
    `moe_aux_loss`) carry gradients; the importance weights and the geometric mask are detached.
    `ref_logp` may be None only when `config.kl_coef` is 0 (then no reference is run).

    Metrics: `pg_loss`, `kl` (k3 to the reference, 0 when skipped), `entropy`, `clip_frac` (share
    of tokens where the clipped term won), `clip_low_frac`/`clip_high_frac`, `ratio_mean`, and,
    when `rollout_logp` is given, `mismatch_abs_logp` (mean |rollout - old|), `mismatch_k3`
    (k3-KL of the trainer against the engine on the engine's samples), `tis_weight_mean`,
    `tis_capped_frac` and `masked_frac` (share of tokens the geometric mask removed);
    `aggregation` is logged as 0 (token-mean) or 1 (sequence-mean), `n_tokens` the trained tokens.

    >>> lp = torch.zeros(1, 2, requires_grad=True)
    >>> loss, m = grpo_loss(lp, torch.zeros(1, 2), torch.tensor([1.0]), torch.ones(1, 2, dtype=torch.bool),
    ...                     config=GRPOLossConfig(kl_coef=0.0))
    >>> loss.item(), m["clip_frac"]
    (-1.0, 0.0)
    """
    if logp.dim() != 2:
        raise ValueError(f"logp must be [batch, tokens], got shape {tuple(logp.shape)}")
    shape = logp.shape
    for name, t in (
        ("old_logp", old_logp),
        ("mask", mask),
        ("ref_logp", ref_logp),
        ("rollout_logp", rollout_logp),
        ("entropy", entropy),
    ):
        _check_shape(name, t, shape)
    if advantages.dim() == 1:
        if advantages.shape[0] != shape[0]:
            raise ValueError(f"advantages has {advantages.shape[0]} rows for {shape[0]} sequences")
        advantages = advantages[:, None].expand(shape)
    _check_shape("advantages", advantages, shape)
    if config.kl_coef > 0 and ref_logp is None:
        raise ValueError("kl_coef > 0 needs ref_logp (the frozen reference's log-probs)")

    mask = mask.to(torch.bool)
    old_logp = old_logp.detach()
    advantages = advantages.detach().to(logp.dtype)
    metrics: dict[str, float] = {}
    weights = torch.ones_like(logp)
    n_valid = mask.sum().clamp_min(1)

    if rollout_logp is not None:
        gap = (old_logp - rollout_logp.detach()).to(logp.dtype)
        metrics["mismatch_abs_logp"] = float((gap.abs() * mask).sum() / n_valid)
        metrics["mismatch_k3"] = float((k3(-gap, torch.zeros_like(gap)) * mask).sum() / n_valid)
        if config.tis_cap is not None:
            raw = torch.exp(gap)
            weights = raw.clamp(max=config.tis_cap)
            metrics["tis_weight_mean"] = float((weights * mask).sum() / n_valid)
            metrics["tis_capped_frac"] = float(((raw > config.tis_cap) & mask).sum() / n_valid)
        if config.geo_mask is not None:
            lo, hi = config.geo_mask
            counts = mask.sum(dim=-1)
            geo = torch.exp((gap * mask).sum(dim=-1) / counts.clamp_min(1))
            keep_seq = (geo >= lo) & (geo <= hi)
            kept = mask & keep_seq[:, None]
            metrics["masked_frac"] = float((mask & ~kept).sum() / n_valid)
            mask = kept
        else:
            metrics["masked_frac"] = 0.0

    ratio = torch.exp(logp - old_logp)
    low, high = 1.0 - config.clip_low, 1.0 + config.clip_high
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(low, high)
    pg_tokens = torch.maximum(unclipped, clipped) * weights
    pg = aggregate(pg_tokens, mask, config.aggregation)
    loss = pg

    kl_value = torch.zeros((), dtype=logp.dtype)
    if ref_logp is not None and config.kl_coef > 0:
        kl_value = aggregate(k3(logp, ref_logp.detach()), mask, config.aggregation)
        loss = loss + config.kl_coef * kl_value
    elif ref_logp is not None:
        kl_value = aggregate(k3(logp.detach(), ref_logp), mask, config.aggregation)

    if entropy is not None:
        ent = aggregate(entropy, mask, config.aggregation)
        if config.entropy_coef > 0:
            loss = loss - config.entropy_coef * ent
        metrics["entropy"] = float(ent.detach())
    if moe_aux_loss is not None:
        if config.moe_aux_coef > 0:
            loss = loss + config.moe_aux_coef * moe_aux_loss
        metrics["moe_aux_loss"] = float(moe_aux_loss.detach())

    with torch.no_grad():
        n = mask.sum().clamp_min(1)
        won = (clipped > unclipped) & mask
        metrics["pg_loss"] = float(pg.detach())
        metrics["kl"] = float(kl_value.detach())
        metrics["clip_frac"] = float(won.sum() / n)
        metrics["clip_low_frac"] = float((won & (ratio < low)).sum() / n)
        metrics["clip_high_frac"] = float((won & (ratio > high)).sum() / n)
        metrics["ratio_mean"] = float((ratio * mask).sum() / n)
        metrics["aggregation"] = float(AGGREGATIONS.index(config.aggregation))
        metrics["n_tokens"] = float(mask.sum())
    return loss, metrics
