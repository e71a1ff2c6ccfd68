"""Router losses and statistics for Mixture-of-Experts layers, over real tokens only.

| function          | what it gives                                                              |
|-------------------|----------------------------------------------------------------------------|
| `router_stats`    | `RouterStats`: load-balancing loss, router z-loss, per-layer expert load    |

Router logits come from a Hugging Face MoE model called with `output_router_logits=True`: one
`[tokens, experts]` tensor per MoE layer. Padding must not vote in the balance (a row of pad
tokens routed to one expert would otherwise push every real token away from it), so every
statistic takes a `token_mask` of the tokens that count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["RouterStats", "router_stats"]


@dataclass(frozen=True, slots=True)
class RouterStats:
    """`aux_loss` and `z_loss` are differentiable scalars; `expert_load` is `[layers, experts]`,
    the share of top-k assignments each expert got (rows sum to 1), detached."""

    aux_loss: torch.Tensor
    z_loss: torch.Tensor
    expert_load: torch.Tensor


def router_stats(
    router_logits: Sequence[torch.Tensor], *, top_k: int, token_mask: torch.Tensor | None = None
) -> RouterStats:
    """Switch-Transformer load balancing (`E * sum_e f_e * P_e`), ST-MoE z-loss, expert load.

    `f_e` is the share of tokens routed to expert `e` (counting each of the top-k choices, so the
    `f_e` sum to `top_k`) and `P_e` the mean router probability, both over the tokens where
    `token_mask` is True and accumulated over layers, exactly as transformers'
    `load_balancing_loss_func` does when no token is masked; perfectly even routing gives `top_k`.
    The z-loss is the mean squared log-sum-exp of the router logits (ST-MoE, Zoph et al. 2022).

    >>> logits = (torch.zeros(4, 2),)
    >>> router_stats(logits, top_k=1).aux_loss.item(), router_stats(logits, top_k=1).z_loss.item()
    (1.0, 0.4804530143737793)
    """
    if not router_logits:
        raise ValueError("no router logits: call the model with output_router_logits=True")
    n_experts = router_logits[0].shape[-1]
    device = router_logits[0].device
    flat_mask = None
    if token_mask is not None:
        flat_mask = token_mask.reshape(-1).to(device=device, dtype=torch.float32)
    assignments = torch.zeros(n_experts, dtype=torch.float32, device=device)
    prob_sum = torch.zeros(n_experts, dtype=torch.float32, device=device)
    z_sum = torch.zeros((), dtype=torch.float32, device=device)
    loads = []
    n_rows = torch.zeros((), dtype=torch.float32, device=device)
    for logits in router_logits:
        logits = logits.float()
        probs = torch.softmax(logits, dim=-1)
        chosen = torch.topk(probs, top_k, dim=-1).indices
        weight = flat_mask if flat_mask is not None else torch.ones_like(probs[:, 0])
        if weight.shape[0] != probs.shape[0]:
            raise ValueError(
                f"token_mask has {weight.shape[0]} tokens but the router saw {probs.shape[0]}"
            )
        counts = torch.zeros(n_experts, dtype=torch.float32, device=device).scatter_add_(
            0, chosen.reshape(-1), weight.repeat_interleave(top_k)
        )
        assignments = assignments + counts
        prob_sum = prob_sum + (probs * weight[:, None]).sum(dim=0)
        z_sum = z_sum + (torch.logsumexp(logits, dim=-1).square() * weight).sum()
        n_rows = n_rows + weight.sum()
        loads.append(counts / counts.sum().clamp_min(1.0))
    # an all-padding micro-batch has no real tokens: its losses are 0, not NaN
    denominator = n_rows.clamp_min(1.0)
    aux_loss = n_experts * torch.sum((assignments / denominator) * (prob_sum / denominator))
    return RouterStats(
        aux_loss=aux_loss,
        z_loss=z_sum / denominator,
        expert_load=torch.stack(loads).detach(),
    )
