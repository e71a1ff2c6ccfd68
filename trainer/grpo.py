"""One GRPO optimizer step on a transformers causal LM, readable top to bottom.

| name               | what it gives                                                          |
|--------------------|------------------------------------------------------------------------|
| `GRPOStepConfig`   | the loss (`GRPOLossConfig`) and the optimizer settings, with sources   |
| `token_logprobs`   | per-token log-probs, entropies and the MoE load-balancing loss         |
| `grpo_step`        | old/ref log-probs -> loss -> backward -> clip -> optimizer step         |

The driver (rollouts through the self-play solver, weight sync into the engine, metrics,
resume) calls `grpo_step` once per batch and then `engine.update_weights(model)`; this module
knows no engine and no graph. One optimizer step per batch of rollouts (verl's and TRL's default
`ppo_epochs=1` / `num_iterations=1`): the "old" policy is then the current one before the step,
so the ratio starts at 1 and the clipping acts only through `old_logp` given by a caller that
reuses a batch; the mismatch against the engine is what `rollout_logp` corrects.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from trainer.grpo_data import GRPOBatch
from trainer.grpo_loss import GRPOLossConfig, grpo_loss
from trainer.moe import router_stats

__all__ = ["GRPOStepConfig", "TokenLogprobs", "token_logprobs", "grpo_step"]


@dataclass(frozen=True, kw_only=True, slots=True)
class GRPOStepConfig:
    """How one GRPO step updates the model.

    >>> GRPOStepConfig().learning_rate
    1e-06
    """

    #: the objective (clipping, KL, entropy, TIS, process advantage, MoE aux)
    loss: GRPOLossConfig = field(default_factory=GRPOLossConfig)
    #: AdamW learning rate; 1e-6 as verl's GRPO examples and TRL's `GRPOConfig`
    learning_rate: float = 1e-6
    #: gradient-norm clip; 1.0 as verl's `grad_clip` and TRL's `max_grad_norm`
    max_grad_norm: float = 1.0
    #: AdamW weight decay; 0.01 as verl's actor optimizer (TRL: 0.0)
    weight_decay: float = 0.01

    def __post_init__(self) -> None:
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be positive, got {self.max_grad_norm}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")

    def build_optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        return torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad],
            lr=self.learning_rate,
            weight_decay=self.weight_decay,
        )


@dataclass(frozen=True, slots=True)
class TokenLogprobs:
    """`logp[b, t]` = log p(ids[b, t] | ids[b, :t]) (0 at t = 0), `entropy[b, t]` of that
    prediction, and the MoE load-balancing loss over the real tokens (None for a dense model)."""

    logp: torch.Tensor
    entropy: torch.Tensor
    aux_loss: torch.Tensor | None


def token_logprobs(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, with_entropy: bool = True
) -> TokenLogprobs:
    """Per-token log-probabilities of `input_ids` under `model`, aligned with the ids.

    Shifting happens here once: position t is scored by the logits at t - 1, so a loss mask over
    the ids (assistant tokens) applies to the result as is.

    >>> lp = token_logprobs(model, batch.input_ids, batch.attention_mask)  # doctest: +SKIP
    >>> lp.logp.shape == batch.input_ids.shape                            # doctest: +SKIP
    True
    """
    is_moe = getattr(model.config, "num_experts_per_tok", None) is not None
    extra = {"output_router_logits": True} if is_moe else {}
    out = model(input_ids=input_ids, attention_mask=attention_mask.long(), **extra)
    logits = out.logits[:, :-1].float()
    log_probs = torch.log_softmax(logits, dim=-1)
    picked = log_probs.gather(-1, input_ids[:, 1:, None])[..., 0]
    logp = torch.cat([torch.zeros_like(picked[:, :1]), picked], dim=1)
    if with_entropy:
        ent = -(log_probs.exp() * log_probs).sum(dim=-1)
        entropy = torch.cat([torch.zeros_like(ent[:, :1]), ent], dim=1)
    else:
        entropy = torch.zeros_like(logp)
    aux = None
    if is_moe and getattr(out, "router_logits", None):
        stats = router_stats(
            out.router_logits, top_k=model.config.num_experts_per_tok, token_mask=attention_mask
        )
        aux = stats.aux_loss
    return TokenLogprobs(logp, entropy, aux)


def grpo_step(
    model: Any,
    optimizer: torch.optim.Optimizer,
    batch: GRPOBatch,
    *,
    config: GRPOStepConfig = GRPOStepConfig(),
    ref_model: Any = None,
    old_logp: torch.Tensor | None = None,
) -> dict[str, float]:
    """One optimizer step of GRPO on `batch`; returns the loss metrics plus `grad_norm`,
    `reward_mean`, `reward_std` and seconds per phase (`time_ref_s`, `time_train_s`).

    `old_logp` defaults to the model's own log-probs before the step (one step per batch).
    `ref_model` is needed when `config.loss.kl_coef` > 0 and is never run otherwise.
    """
    loss_config = config.loss
    if loss_config.kl_coef > 0 and ref_model is None:
        raise ValueError("kl_coef > 0 needs ref_model (the frozen reference policy)")
    started = time.perf_counter()
    ref_logp = None
    if ref_model is not None and loss_config.kl_coef > 0:
        with torch.no_grad():
            ref_logp = token_logprobs(
                ref_model, batch.input_ids, batch.attention_mask, with_entropy=False
            ).logp
    ref_seconds = time.perf_counter() - started

    started = time.perf_counter()
    model.train()
    current = token_logprobs(model, batch.input_ids, batch.attention_mask)
    old = current.logp.detach() if old_logp is None else old_logp
    # where the engine's log-prob is unknown, no correction: weight exp(0) = 1
    rollout = torch.where(batch.rollout_known, batch.rollout_logp, old)
    loss, metrics = grpo_loss(
        current.logp,
        old,
        batch.advantages,
        batch.loss_mask,
        config=loss_config,
        ref_logp=ref_logp,
        rollout_logp=rollout,
        entropy=current.entropy,
        moe_aux_loss=current.aux_loss,
    )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    metrics.update(
        loss=float(loss.detach()),
        grad_norm=float(grad_norm),
        reward_mean=float(batch.rewards.mean()),
        reward_std=float(batch.rewards.std()) if batch.n_rollouts > 1 else 0.0,
        rollout_known_frac=float(batch.rollout_known.sum() / batch.loss_mask.sum().clamp_min(1)),
        time_ref_s=ref_seconds,
        time_train_s=time.perf_counter() - started,
    )
    return metrics
