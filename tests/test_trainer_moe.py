"""Router losses over real tokens only, and the expert load that is logged."""

from __future__ import annotations

import pytest
import torch
from transformers.models.qwen3_moe.modeling_qwen3_moe import load_balancing_loss_func

from trainer.moe import router_stats


def _logits(tokens: int, experts: int = 8, layers: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(tokens, experts, generator=g) for _ in range(layers))


def test_aux_loss_equals_transformers_load_balancing_loss_when_nothing_is_masked():
    logits = _logits(50)
    ours = router_stats(logits, top_k=2).aux_loss
    theirs = load_balancing_loss_func(logits, 8, 2, None)
    torch.testing.assert_close(ours, theirs)


def test_padding_and_masked_documents_do_not_move_the_router_losses():
    real = _logits(40, seed=1)
    junk = _logits(25, seed=2)
    padded = tuple(torch.cat([r, j * 10]) for r, j in zip(real, junk, strict=True))
    mask = torch.cat([torch.ones(40, dtype=torch.bool), torch.zeros(25, dtype=torch.bool)])
    alone = router_stats(real, top_k=2)
    masked = router_stats(padded, top_k=2, token_mask=mask)
    torch.testing.assert_close(masked.aux_loss, alone.aux_loss)
    torch.testing.assert_close(masked.z_loss, alone.z_loss)
    torch.testing.assert_close(masked.expert_load, alone.expert_load)
    unmasked = router_stats(padded, top_k=2)
    assert not torch.allclose(unmasked.aux_loss, alone.aux_loss)


def test_expert_load_is_each_experts_share_per_layer_and_losses_are_differentiable():
    logits = tuple(t.requires_grad_() for t in _logits(30, layers=2))
    stats = router_stats(logits, top_k=2)
    assert stats.expert_load.shape == (2, 8)
    torch.testing.assert_close(stats.expert_load.sum(dim=1), torch.ones(2))
    (stats.aux_loss + stats.z_loss).backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in logits)


def test_perfectly_balanced_routing_gives_top_k_and_an_empty_batch_gives_zero():
    # token i prefers experts i % 4 and (i + 1) % 4 equally strongly: even load
    logits = torch.full((8, 4), -10.0)
    for i in range(8):
        logits[i, i % 4] = logits[i, (i + 1) % 4] = 0.0
    stats = router_stats((logits,), top_k=2)
    assert stats.aux_loss.item() == pytest.approx(2.0, rel=1e-3)
    empty = router_stats((logits,), top_k=2, token_mask=torch.zeros(8, dtype=torch.bool))
    assert empty.aux_loss.item() == 0.0 and empty.z_loss.item() == 0.0
